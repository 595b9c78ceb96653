"""Limits that follow the machine: memory checked before anything big is allocated.

τ + T, the input size, the number of images and the arrays declared in a model
file all scale what srp-np allocates. Instead of fixed caps, each is checked
against the memory this process can use (:func:`available_memory`) *before* the
allocation or decompression, and refused with an :class:`~srp_np.errors.SrpError`
that says what to change.
"""
from __future__ import annotations

import os

from .errors import SrpError

#: Largest integer accepted for a size or count in a model file or an option (2**31 - 1):
#: every index the kernels use fits in 32 bits.
MAX_INT = 2**31 - 1


def _cgroup_limit() -> int | None:
    """Bytes left under this process's cgroup (v2 or v1) memory limit, if it has one."""
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit_file) as f:
                raw = f.read().strip()
            if raw == "max":
                continue
            limit = int(raw)
            if limit >= 2**60:          # v1 "no limit"
                continue
            with open(usage_file) as f:
                usage = int(f.read().strip())
            return max(0, limit - usage)
        except (OSError, ValueError):
            continue
    return None


def available_memory() -> int:
    """Bytes of memory this process can still allocate: the smaller of the system's
    available memory (``MemAvailable``) and what its cgroup limit leaves. The
    environment variable ``SRP_NP_MEMORY_LIMIT`` (bytes) lowers it further."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            avail = 2**40
    cg = _cgroup_limit()
    if cg is not None:
        avail = min(avail, cg)
    env = os.environ.get("SRP_NP_MEMORY_LIMIT")
    if env:
        try:
            avail = min(avail, int(float(env)))
        except ValueError:
            pass
    return int(avail)


def format_bytes(n: float) -> str:
    """``1.5 GiB`` style."""
    n = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if n < 1024 or unit == "EiB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} EiB"  # pragma: no cover


def check_memory(nbytes: int, what: str, hint: str) -> None:
    """Refuse ``what`` when it needs more than :func:`available_memory`.

    Parameters
    ----------
    nbytes : int
        Estimated bytes (a Python int: no overflow however large).
    what : str
        What needs the memory ("τ+T = 10 steps on 3 images").
    hint : str
        What to change ("use a smaller --T").
    """
    nbytes = int(nbytes)
    if nbytes <= 0:
        return
    avail = available_memory()
    if nbytes > avail:
        raise SrpError(f"{what} needs about {format_bytes(nbytes)} of memory, more than the "
                       f"{format_bytes(avail)} available: {hint}")
