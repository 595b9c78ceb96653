"""Event-driven synaptic propagation: for each incoming event, scatter its weights.

Each kernel writes the postsynaptic current of every frame,
``out[f] = b + Σ_events val·W[:, event]`` (Eq. 2's W^l θ^{l-1} s^{l-1}(t)),
and counts synaptic operations (events × their exact fan-out, borders
included) per frame.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def conv2d_events(cnt, idx, val, w_hwio, bias, has_bias,
                  Win, Cin, stride, pad, Hout, Wout, out):
    """Scatter events of a channels-last Hin×Win×Cin map through a conv.

    ``w_hwio`` is kh×kw×Cin×Cout, ``out`` F×(Hout·Wout·Cout) channels-last.
    Returns synaptic operations per frame.
    """
    F = out.shape[0]
    kh, kw, _, Cout = w_hwio.shape
    sops = np.zeros(F, np.int64)
    for f in prange(F):
        o = out[f]
        if has_bias:
            for p in range(Hout * Wout):
                for co in range(Cout):
                    o[p * Cout + co] = bias[co]
        else:
            o[:] = 0
        ops = 0
        for e in range(cnt[f]):
            i = idx[f, e]
            v = val[f, e]
            c = i % Cin
            yx = i // Cin
            y = yx // Win
            x = yx - y * Win
            for ky in range(kh):
                ty = y + pad - ky
                if (ty < 0) | (ty % stride != 0):
                    continue
                oy = ty // stride
                if oy >= Hout:
                    continue
                for kx in range(kw):
                    tx = x + pad - kx
                    if (tx < 0) | (tx % stride != 0):
                        continue
                    ox = tx // stride
                    if ox >= Wout:
                        continue
                    ob = (oy * Wout + ox) * Cout
                    for co in range(Cout):
                        o[ob + co] += v * w_hwio[ky, kx, c, co]
                    ops += Cout
        sops[f] = ops
    return sops


@njit(parallel=True, cache=True)
def linear_events(cnt, idx, val, w_t, bias, has_bias, out):
    """Fully connected layer on events; ``w_t`` is in×out (transposed weight)."""
    F = out.shape[0]
    n_out = w_t.shape[1]
    sops = np.zeros(F, np.int64)
    for f in prange(F):
        o = out[f]
        if has_bias:
            for j in range(n_out):
                o[j] = bias[j]
        else:
            o[:] = 0
        for e in range(cnt[f]):
            i = idx[f, e]
            v = val[f, e]
            for j in range(n_out):
                o[j] += v * w_t[i, j]
        sops[f] = cnt[f] * n_out
    return sops


@njit(parallel=True, cache=True)
def avgpool_events(cnt, idx, val, Win, C, k, stride, Hout, Wout, out):
    """Average pooling (no padding) on channels-last events: sums, then divides by k²."""
    F = out.shape[0]
    sops = np.zeros(F, np.int64)
    kk = float(k * k)
    for f in prange(F):
        o = out[f]
        o[:] = 0
        ops = 0
        for e in range(cnt[f]):
            i = idx[f, e]
            v = val[f, e]
            c = i % C
            yx = i // C
            y = yx // Win
            x = yx - y * Win
            # output rows oy with oy*stride <= y < oy*stride + k
            oy0 = (y - k + stride) // stride
            if oy0 < 0:
                oy0 = 0
            for oy in range(oy0, min(Hout - 1, y // stride) + 1):
                ox0 = (x - k + stride) // stride
                if ox0 < 0:
                    ox0 = 0
                for ox in range(ox0, min(Wout - 1, x // stride) + 1):
                    o[(oy * Wout + ox) * C + c] += v
                    ops += 1
        for j in range(o.shape[0]):
            o[j] = o[j] / kk
        sops[f] = ops
    return sops
