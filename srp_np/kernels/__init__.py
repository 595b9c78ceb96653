"""Numba-JIT'd kernels of the event-driven simulator.

Data layout: a time-varying value is held for F = B·S *frames* (image b,
step t → frame f = b·S + t). 3-d feature maps are stored channels-last
(flat index ``(y·W + x)·C + c``) so that the inner loops run contiguously over
output channels.

* Spikes of an IF layer are bit sets (:mod:`.spikes`): ``bits[f, p, w]``
  (uint64) holds channels 64·w … 64·w+63 of position p. IF layers write them
  directly (no dense spike map is scanned).
* Conv and linear layers fed by spikes are gather kernels (:mod:`.gather`):
  per output row, a branch-free list of the weight rows its spikes select,
  summed into output-channel blocks held in vector registers (the SIMD
  intrinsics of :mod:`.simd`).
* Currents are dense F × N arrays written once by the synaptic kernels.
* Dense values that feed a synaptic node (rare: e.g. after an average pool
  whose kernel differs from its stride) go through the generic padded event
  lists of :mod:`.events` and the scatter kernels of :mod:`.synapses`.

Every kernel is parallel over frames (or images, or output blocks) with
``prange`` and sums each output in a fixed order that does not depend on how
the work is split, so results do not depend on the batch size or the number
of threads.

Compiled kernels are kept on disk (Numba ``cache=True``); :mod:`srp_np.warmup` compiles them all
once on tiny graphs and says whether that was done for the current target.
"""

import os as _os

#: Byte alignment of the arrays the kernels stream through (one cache line / one AVX-512 vector).
ALIGN = 64


def aligned_empty(shape, dtype):
    """An uninitialised C-contiguous array whose data starts on an :data:`ALIGN`-byte boundary.

    NumPy's large allocations start 16 bytes past a page boundary, so every
    64-byte vector load of such an array straddles two cache lines; aligned
    buffers make the gather kernels about 1.3× faster.
    """
    import numpy as np

    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    buf = np.empty(n + ALIGN, np.uint8)
    off = (-buf.ctypes.data) % ALIGN
    return buf[off:off + n].view(dtype).reshape(shape)


def aligned(a):
    """``a`` itself when C-contiguous and aligned to :data:`ALIGN` bytes, else an aligned copy."""
    import numpy as np

    a = np.asarray(a)
    if a.flags.c_contiguous and a.ctypes.data % ALIGN == 0:
        return a
    out = aligned_empty(a.shape, a.dtype)
    out[...] = a
    return out


_DIGEST = None


def _intrinsics_digest() -> str:
    """SHA-256 of the files the kernels inline from elsewhere (``simd.py``, ``isa.py``, ``rules.py``
    and the rule constants of ``neuron.py``), read once per process."""
    global _DIGEST
    if _DIGEST is None:
        import hashlib

        here = _os.path.dirname(__file__)
        h = hashlib.sha256()
        for name in ("simd.py", "isa.py", "rules.py", _os.path.join("..", "neuron.py")):
            with open(_os.path.join(here, name), "rb") as f:
                h.update(f.read())
        _DIGEST = h.hexdigest()
    return _DIGEST


def flush_if_intrinsics_changed(*dispatchers) -> None:
    """Drop the disk-cached code of ``dispatchers`` when the SIMD intrinsics they inline changed.

    Numba keys a kernel's cache by the kernel's own source file only: after an
    edit of ``simd.py`` or ``isa.py`` alone (a ``git pull``, say) the kernels in
    ``gather.py`` and ``spikes.py`` would keep their old compiled code. A stamp
    (a hash of those files, see :func:`_intrinsics_digest`) next to each cache says which version compiled it;
    on a mismatch the cache is flushed (Numba's ``Cache.flush``) and the kernels
    recompile on first use. Read-only caches are left alone."""
    digest = _intrinsics_digest()
    for d in dispatchers:
        cache = getattr(d, "_cache", None)
        path = getattr(cache, "cache_path", None)
        if path is None or not _os.path.isdir(path):
            continue
        stamp = _os.path.join(path, f"srp_np_intrinsics.{d.py_func.__module__}.{d.py_func.__name__}.stamp")
        try:
            with open(stamp) as f:
                if f.read().strip() == digest:
                    continue
        except OSError:
            pass
        try:
            cache.flush()
            with open(stamp, "w") as f:
                f.write(digest + "\n")
        except OSError:   # a read-only cache
            pass
