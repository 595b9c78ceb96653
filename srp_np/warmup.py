"""Compile every kernel once, and know whether that was done (Numba's on-disk cache).

Numba compiles a kernel on its first call and, with ``cache=True``, keeps the machine code on
disk for later processes. :func:`warmup` calls every kernel the engine uses, for one
precision, on tiny graphs that take every code path; then it writes a *stamp*, a file named
by a key of everything the compiled code depends on:

* the Numba and Python versions;
* the target Numba compiles for: the CPU name and features (the host's, or
  ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``), read through public llvmlite/Numba APIs;
* the source of every file the kernels are compiled from;
* the precision.

:func:`cache_is_warm` is true when that stamp exists. Only public behaviour is used (no
Numba cache internals): a Numba upgrade or another CPU changes the key, so the next run warms
up again (and says so) instead of compiling silently in the middle of a simulation. The stamp
lives in Numba's cache folder for the kernels (``NUMBA_CACHE_DIR``, else the kernels'
``__pycache__``), so removing that folder removes the stamp with the code.
"""
from __future__ import annotations

import functools
import hashlib
import os
import platform
import tempfile
from pathlib import Path

import numpy as np

_HERE = Path(__file__).resolve().parent

#: The files the kernels are compiled from (an edit of any of them recompiles).
KERNEL_SOURCES = sorted((_HERE / "kernels").glob("*.py")) + [_HERE / "ops.py", _HERE / "neuron.py"]


def _target() -> str:
    import llvmlite.binding as llvm
    import numba

    name = numba.config.CPU_NAME or llvm.get_host_cpu_name()
    features = numba.config.CPU_FEATURES if numba.config.CPU_FEATURES is not None \
        else llvm.get_host_cpu_features().flatten()
    return f"{name}|{features}"


@functools.lru_cache(maxsize=None)
def _sources_digest() -> str:
    """SHA-256 of :data:`KERNEL_SOURCES`, read once per process (every Simulator asks for the key)."""
    h = hashlib.sha256()
    for p in KERNEL_SOURCES:
        h.update(p.name.encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def cache_key(dtype=np.float32) -> str:
    """The key of the compiled code for ``dtype`` on this target (hex)."""
    import numba

    h = hashlib.sha256()
    h.update(f"{numba.__version__}|{platform.python_version()}|{_target()}|{np.dtype(dtype).name}".encode())
    h.update(_sources_digest().encode())
    return h.hexdigest()[:32]


def stamp_dir() -> Path:
    """Where the stamps live: Numba's cache folder for the kernels."""
    import numba

    if numba.config.CACHE_DIR:
        return Path(numba.config.CACHE_DIR)
    d = _HERE / "kernels" / "__pycache__"
    try:
        d.mkdir(exist_ok=True)
        if os.access(d, os.W_OK):
            return d
    except OSError:
        pass
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "srp-np"


def _stamp(dtype) -> Path:
    return stamp_dir() / f"srp_np_warm.{cache_key(dtype)}"


def cache_is_warm(dtype=np.float32) -> bool:
    """True when :func:`warmup` ran for ``dtype`` with these kernels, Numba and target."""
    try:
        return _stamp(dtype).exists()
    except OSError:     # pragma: no cover - an unreadable cache folder: be conservative
        return False


def warmup(dtype=np.float32) -> None:
    """Compile (or load from the disk cache) every kernel for ``dtype``, then write the stamp.

    Runs the engine (not :class:`srp_np.Simulator`) on tiny VGG- and ResNet-shaped graphs that
    take every code path: spike-map convs, pooled convs, linear layers on spikes, residual adds,
    the dense fallbacks, record mode, the fused conv → IF kernels, both mask rules.
    """
    import numba

    from .engine.execute import Engine, user_threads
    from .testing import GraphBuilder, random_resnet, random_vgg

    dtype = np.dtype(dtype).type
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
        eng = Engine.prepare(m, dtype)
        xs, xbs = m.preprocess(x[:1], dtype), m.preprocess(xb, dtype)
        with user_threads():
            eng.run_chunk(xs, 1, 1, 1e-3, "authors", True)
            eng.run_chunk(xs, 0, 1, 1e-3, "authors", False)
            eng.run_chunk(xbs, 1, 1, 1e-3, "paper", False)      # ≥ 2 × threads images: the fused kernels
    try:
        d = stamp_dir()
        d.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=d)
        os.close(fd)
        os.replace(tmp, _stamp(dtype))
    except OSError:         # a read-only cache folder: the next run warms up again
        pass
