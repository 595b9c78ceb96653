"""IF layer over all frames of a batch, with the SRP two-stage procedure.

For each image (``prange``) and neuron, steps t = 0..S-1 (S = τ + T):

* t < τ (stage 1): ``v += x; s = v ≥ θ; v -= θ·s`` (Eqs. 2-3), spikes emitted unmasked;
* after step τ: ``mask = v(τ) > ε·θ`` and ``v = θ/2`` (Algorithm 1, lines 11-14);
* t ≥ τ (stage 2): the same dynamics, the emitted spike multiplied by the mask
  (line 17).

With τ = 0 there is no stage 1 and every mask is 1. Spikes are emitted as
per-frame event lists in index order while the update runs: no dense spike
map is scanned afterwards.
"""
import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True)
def if_layer(cur, static, B, S, tau, theta, half, thr_keep, record,
             idx, cnt, v_tau_out, mask_out, count1_out, count2_out, insum_out):
    """Run one IF layer for all frames.

    Parameters
    ----------
    cur : F×N array, or B×N when ``static`` (the same current every step)
    theta, half, thr_keep : θ, θ/2 and ε·θ as scalars of the simulation dtype
    idx : F×N int32 output event lists; ``cnt`` (F,) their lengths
    record : when True, fill ``v_tau_out``, ``mask_out`` (B×N), ``count1_out``,
        ``count2_out`` (spike counts of stage 1 and stage 2 after masking) and
        ``insum_out`` (Σ stage-2 input current, float64).
    """
    N = idx.shape[1]
    for bb in prange(B):
        b = np.int64(bb)
        v = np.empty(N, cur.dtype)
        keep = np.ones(N, np.bool_)
        for i in range(N):
            v[i] = half
        for t in range(S):
            if t == tau and tau > 0:
                for i in range(N):
                    keep[i] = v[i] > thr_keep
                    if record:
                        v_tau_out[b, i] = v[i]
                        mask_out[b, i] = keep[i]
                    v[i] = half
            f = b * S + t
            row = f
            if static:
                row = b
            c = 0
            for i in range(N):
                x = cur[row, i]
                u = v[i] + x
                if u >= theta:
                    v[i] = u - theta
                    if t < tau or keep[i]:
                        idx[f, c] = i
                        c += 1
                        if record:
                            if t < tau:
                                count1_out[b, i] += 1
                            else:
                                count2_out[b, i] += 1
                else:
                    v[i] = u
                if record and t >= tau:
                    insum_out[b, i] += x
            cnt[f] = c
