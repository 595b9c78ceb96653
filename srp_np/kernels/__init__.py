"""Numba-JIT'd kernels of the event-driven simulator.

Data layout: a time-varying value is held for F = B·S *frames* (image b,
step t → frame f = b·S + t). 3-d feature maps are stored channels-last
(flat index ``(y·W + x)·C + c``) so that the inner loops run contiguously over
output channels. Events are kept per frame in padded lists: ``cnt[f]``
events at ``idx[f, :cnt[f]]`` with values ``val[f, :cnt[f]]`` (or one scalar
value θ for spikes of an IF layer).

Every kernel is parallel over frames (or images) with ``prange`` and does a
fixed, input-order summation inside a frame, so results do not depend on the
batch size or the number of threads.
"""
