"""Conversions between dense frames and per-frame event lists."""
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


@njit(parallel=True, cache=True)
def scatter_add_events(out, cnt, idx, val, scale, has_val):
    """``out[f, idx] += val`` (or ``+= scale`` for spike events) for every frame."""
    F = out.shape[0]
    for f in prange(F):
        for e in range(cnt[f]):
            v = val[f, e] if has_val else scale
            out[f, idx[f, e]] += v


@njit(parallel=True, cache=True)
def permute_events(cnt, idx, perm):
    """Map event indices through ``perm`` (e.g. channels-last → C order for flatten)."""
    F = idx.shape[0]
    out = np.empty_like(idx)
    for f in prange(F):
        for e in range(cnt[f]):
            out[f, e] = perm[idx[f, e]]
    return out
