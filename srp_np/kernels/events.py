"""Dense frames → per-frame event lists (for the rare dense inputs of synaptic nodes)."""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def dense_to_events(dense):
    """Nonzero entries of each frame of ``dense`` (F×N), in index order.

    Returns ``cnt`` (F,), ``idx`` (F×cap int32), ``val`` (F×cap) with cap the
    largest count.
    """
    F, N = dense.shape
    cnt = np.zeros(F, np.int64)
    for f in prange(F):
        c = 0
        for i in range(N):
            if dense[f, i] != 0:
                c += 1
        cnt[f] = c
    cap = 1
    for f in range(F):
        if cnt[f] > cap:
            cap = cnt[f]
    idx = np.empty((F, cap), np.int32)
    val = np.empty((F, cap), dense.dtype)
    for f in prange(F):
        c = 0
        for i in range(N):
            d = dense[f, i]
            if d != 0:
                idx[f, c] = i
                val[f, c] = d
                c += 1
    return cnt, idx, val
