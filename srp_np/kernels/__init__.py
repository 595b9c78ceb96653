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

:func:`cache_is_warm` says whether compiled kernels are on disk (Numba
``cache=True``); :func:`warmup` compiles them all on tiny graphs.
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


def _dispatchers():
    """The Numba dispatchers the simulator calls (inline helpers excluded)."""
    from .. import ops
    from . import events, gather, spikes, synapses
    return [ops._im2col, ops._rows_to_nchw, events.dense_to_events, spikes.if_bits, spikes.if_bits_fast, spikes.bits_to_dense, spikes.pool_bits_dense,
            spikes.pooled_counts, gather.gather_bits, gather.gather_if_bits, synapses.conv2d_events,
            synapses.linear_events, synapses.avgpool_events]


def cache_is_warm(dtype=None) -> bool:
    """True when every kernel has compiled code in Numba's on-disk cache.

    Checks that each dispatcher's cache index file exists, is current
    (Numba discards an index whose source file changed) and has entries for
    the target Numba compiles for (the host CPU, or ``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES``: each target is compiled separately); with ``dtype``
    (float32 or float64), also that each kernel whose signatures depend on
    the precision has an entry for that precision.
    """
    import numpy as np

    want = None if dtype is None else np.dtype(dtype).name
    try:
        for d in _dispatchers():
            cache_file = getattr(d._cache, "_cache_file", None)
            path = getattr(cache_file, "_index_path", None)
            if path is None or not _os.path.exists(path):
                return False
            index = cache_file._load_index()
            # entries compiled for this target (CPU name and features: NUMBA_CPU_NAME / _FEATURES)
            magic = d.targetctx.codegen().magic_tuple()
            index = [key for key in index if len(key) > 1 and key[1] == magic]
            if not index:
                return False
            if want is not None:
                sigs = [str(key[0]) for key in index]
                if any(("float32" in s or "float64" in s) for s in sigs) and not any(want in s for s in sigs):
                    return False
        return True
    except Exception:  # pragma: no cover - be conservative
        return False


_WARMING = False


def warmup(dtype=None) -> None:
    """Compile (or load from the disk cache) every kernel for ``dtype``.

    Runs the simulator on tiny VGG- and ResNet-shaped graphs that exercise
    every code path (spike-map convs, pooled convs, linear layers on spikes,
    residual adds, the dense fallbacks, record mode).
    """
    global _WARMING
    import numpy as np

    dtype = np.float32 if dtype is None else dtype
    if _WARMING:
        return
    _WARMING = True
    try:
        _warmup(dtype)
    finally:
        _WARMING = False


def _warmup(dtype) -> None:
    import numba
    import numpy as np

    from ..simulator import Simulator
    from ..testing import GraphBuilder, random_resnet, random_vgg

    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 8, 8))
    models = [random_vgg((3, 8, 8), widths=(4,), fc=8, calibrate_x=x),
              random_resnet((3, 8, 8), widths=(4, 8), calibrate_x=x)]
    # dense fallbacks: a pool with kernel != stride and a conv after a dense value
    g = GraphBuilder((3, 8, 8), 3, rng=0)
    h = g.act(g.conv("input", 4))
    h = g.pool(h, 3, 1)
    h = g.act(g.conv(h, 4))
    h = g.conv(h, 4)
    h = g.pool(h, 2)
    h = g.act(g.flatten(h))
    models.append(g.build(g.linear(h, 3), x))
    # a map pooled to 1×1 feeding a linear layer
    g = GraphBuilder((3, 8, 8), 3, rng=1)
    h = g.act(g.conv("input", 4))
    h = g.act(g.conv(g.pool(h, 2), 4))
    h = g.act(g.conv(g.pool(h, 2), 4))
    h = g.flatten(g.pool(h, 2))
    models.append(g.build(g.linear(h, 3), x))
    xb = rng.random((2 * numba.get_num_threads(), 3, 8, 8))
    for m in models:
        sim = Simulator(m, dtype, warm_cache=False)
        sim.run(x[:1], 1, 1, record=True)
        sim.run(x[:1], 0, 1)
        sim.run(xb, 1, 1)      # batches of ≥ 2 × threads images take the fused conv → IF kernels
