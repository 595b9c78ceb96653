"""How many threads srp-np uses: the Numba kernels (SNN) and BLAS (ANN pass).

Results never depend on the thread count: every Numba kernel sums in a fixed
order, and the ANN pass computes each batch with the same BLAS calls whatever
thread runs them.
"""
from __future__ import annotations

import os
from contextlib import contextmanager


def available_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else ``os.cpu_count()``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def max_threads() -> int:
    """The most threads Numba can use in this process (``NUMBA_NUM_THREADS``, default: all CPUs)."""
    from numba import config

    return max(1, int(config.NUMBA_NUM_THREADS))


def busy_cpus(samples: int = 5, interval: float = 0.01) -> int:
    """CPUs other work keeps busy right now: runnable tasks besides this one (``procs_running``
    of Linux's ``/proc/stat``), the least of a few samples ``interval`` seconds apart (so a
    momentary blip does not count). 0 where that is not known."""
    import time

    seen = []
    try:
        for i in range(samples):
            with open("/proc/stat") as f:
                for line in f:
                    if line.startswith("procs_running"):
                        seen.append(int(line.split()[1]) - 1)     # minus this process
                        break
            if i + 1 < samples:
                time.sleep(interval)
    except (OSError, ValueError):
        return 0
    return max(0, min(seen)) if seen else 0


def default_threads() -> int:
    """The default of ``--threads``: the available cores, at most :func:`max_threads`, less the
    CPUs other processes keep busy (:func:`busy_cpus`) when this process may use every CPU of
    the machine (the machine-wide count then describes its own cores), and at least 1.

    A parallel kernel waits for its slowest thread: with one of two cores taken by another
    process, two threads ran the shipped ResNet-20 at batch 1 at 12-52 img/s and one thread at
    174-184 img/s (AMD EPYC Zen 4, 2 cores, 2026-12-02). Results never depend on the count."""
    n = min(available_cores(), max_threads())
    if n > 1 and available_cores() == (os.cpu_count() or 0):
        n = max(1, n - busy_cpus())
    return n


def set_threads(n: int | None = None) -> int:
    """Use ``n`` threads (default :func:`default_threads`) for the Numba kernels; returns the count set.

    ``n`` above :func:`max_threads` is capped there; ``n`` < 1 is an error. The
    ANN pass of :func:`srp_np.evaluate.evaluate` follows ``numba.get_num_threads()``.
    """
    import numba

    if n is None:
        n = default_threads()
    n = int(n)
    if n < 1:
        raise ValueError(f"thread count must be >= 1, got {n}")
    n = min(n, max_threads())
    numba.set_num_threads(n)
    return n


_BLAS = None


def blas_threads(n: int):
    """Context in which NumPy's BLAS uses at most ``n`` threads (threadpoolctl; the scan of the
    loaded libraries is done once per process, since the simulator enters this for every chunk)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController
        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=max(1, int(n)), user_api="blas")


@contextmanager
def use_threads(n: int | None = None):
    """Context that runs srp-np on ``n`` threads (see :func:`set_threads`; default :func:`default_threads`):
    Numba kernels and BLAS; both are restored on exit. Yields the count in use."""
    import numba

    before = numba.get_num_threads()
    try:
        n = set_threads(n)
        with blas_threads(n):
            yield n
    finally:
        numba.set_num_threads(before)
