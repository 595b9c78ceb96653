"""Spike maps as bit sets, and the synaptic kernels that read them.

An IF layer's spikes for F frames are held as ``bits`` (F × P × NW uint64):
P spatial positions (1 for a 1-d layer), and for each position the set of
channels that spiked, one bit per channel (channel c → word c >> 6, bit
c & 63), NW = ⌈C / 64⌉ words. The map is 16-32× smaller than a dense map
or an index list, stays in cache, and lets a consumer iterate the spikes of
one position with count-trailing-zeros.

Synaptic kernels are *gather* style: each output row (frame f, output
position) is computed once from the spikes in its receptive field, with
fixed summation order (kernel tap, then channel), so results do not depend
on the batch size or the number of threads. A spike from an IF layer of
threshold θ is worth θ, so the kernels sum raw weights and multiply by θ
once (``θ·Σw + b``).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic


@intrinsic
def cttz64(typingctx, x):
    """Count trailing zeros of a nonzero uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.cttz(args[0], ir.Constant(ir.IntType(1), 1))

    return sig, codegen


@intrinsic
def popcnt64(typingctx, x):
    """Number of set bits of a uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@njit(cache=True, inline="always")
def _lowbit_clear(w):
    return w & (w - np.uint64(1))


# --------------------------------------------------------------------------- IF → bits
@njit(parallel=True, cache=True)
def if_bits(cur, static, B, S, tau, theta, half, thr_keep, P, C, pblock, record,
            bits, counts, v_tau_out, mask_out, count1_out, count2_out, insum_out):
    """IF layer with SRP for all frames; spikes written as bit sets.

    ``cur`` is F×(P·C) channels-last (or B×(P·C) when ``static``: the same
    current every step). Work units are (image, block of ``pblock``
    positions), each running its neurons through all S steps. ``counts``
    (F × P int32) receives the number of (masked) spikes per frame and
    position. ``record`` fills the B×N arrays (v(τ), mask, stage-1/2 spike counts, Σ stage-2 current).
    """
    NW = bits.shape[2]
    nblk = (P + pblock - 1) // pblock
    for u in prange(B * nblk):
        b = np.int64(u // nblk)
        p0 = (u % nblk) * pblock
        p1 = min(P, p0 + pblock)
        n0 = p0 * C
        nn = (p1 - p0) * C
        v = np.empty(nn, cur.dtype)
        keep = np.ones(nn, np.bool_)
        for i in range(nn):
            v[i] = half
        for t in range(S):
            if (t == tau) & (tau > 0):
                for i in range(nn):
                    keep[i] = v[i] > thr_keep
                    if record:
                        v_tau_out[b, n0 + i] = v[i]
                        mask_out[b, n0 + i] = keep[i]
                    v[i] = half
            f = b * S + t
            row = b if static else f
            stage2 = t >= tau
            for p in range(p0, p1):
                base = p * C
                lb = base - n0
                cnt = 0
                for wd in range(NW):
                    word = np.uint64(0)
                    c0 = wd * 64
                    c1 = min(C, c0 + 64)
                    for c in range(c0, c1):
                        x = cur[row, base + c]
                        i = lb + c
                        u_ = v[i] + x
                        if u_ >= theta:
                            v[i] = u_ - theta
                            if (not stage2) | keep[i]:
                                word |= np.uint64(1) << np.uint64(c - c0)
                                if record:
                                    if stage2:
                                        count2_out[b, n0 + i] += 1
                                    else:
                                        count1_out[b, n0 + i] += 1
                        else:
                            v[i] = u_
                        if record & stage2:
                            insum_out[b, n0 + i] += x
                    bits[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt


@njit(parallel=True, cache=True)
def if_bits_fast(cur, static, B, S, tau, theta, half, thr_keep, P, C, pblock, bits, counts):
    """:func:`if_bits` without recording: a branch-free inner loop over the
    (up to) 64 channels of one word, which LLVM vectorises."""
    NW = bits.shape[2]
    N = P * C
    cur1 = cur.reshape(-1)
    nblk = (P + pblock - 1) // pblock
    for u in prange(B * nblk):
        b = u // nblk
        p0 = (u % nblk) * pblock
        p1 = min(P, p0 + pblock)
        n0 = p0 * C
        nn = (p1 - p0) * C
        v = np.empty(nn, cur.dtype)
        keep = np.ones(nn, np.bool_)
        for i in range(nn):
            v[i] = half
        for t in range(S):
            if (t == tau) & (tau > 0):
                for i in range(nn):
                    keep[i] = v[i] > thr_keep
                    v[i] = half
            f = b * S + t
            row = b if static else f
            rb = np.uint64(row * N)
            masked = (t >= tau) & (tau > 0)
            for p in range(p0, p1):
                cnt = 0
                for wd in range(NW):
                    c0 = wd * 64
                    c1 = min(C, c0 + 64)
                    lb = np.uint64((p - p0) * C + c0)
                    cb = rb + np.uint64(p * C + c0)
                    word = np.uint64(0)
                    for j in range(np.uint64(c1 - c0)):
                        u_ = v[lb + j] + cur1[cb + j]
                        s = u_ >= theta
                        v[lb + j] = u_ - theta if s else u_
                        if masked:
                            s = s & keep[lb + j]
                        word |= np.uint64(s) << j
                    bits[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt


# --------------------------------------------------------------------------- conv
@njit(cache=True, inline="always")
def _conv_event(out1, fb, w1, wscale, use_scale, iy, ix, c, kh, kw, pad, stride, Cin, Cout, Hout, Wout):
    """Add one input event's weights to every output it reaches; returns the ops."""
    uC = np.uint64(Cout)
    ops = 0
    if (stride == 1) & (iy + pad - kh + 1 >= 0) & (iy + pad < Hout) & (ix + pad - kw + 1 >= 0) & (ix + pad < Wout):
        # interior: every tap lands inside the output
        for ky in range(kh):
            oy = iy + pad - ky
            for kx in range(kw):
                ox = ix + pad - kx
                ob = fb + np.uint64((oy * Wout + ox) * Cout)
                wb = np.uint64(((ky * kw + kx) * Cin + c) * Cout)
                if use_scale:
                    for co in range(uC):
                        out1[ob + co] += wscale * w1[wb + co]
                else:
                    for co in range(uC):
                        out1[ob + co] += w1[wb + co]
        return kh * kw * Cout
    for ky in range(kh):
        ty = iy + pad - ky
        if (ty < 0) | (ty % stride != 0):
            continue
        oy = ty // stride
        if oy >= Hout:
            continue
        for kx in range(kw):
            tx = ix + pad - kx
            if (tx < 0) | (tx % stride != 0):
                continue
            ox = tx // stride
            if ox >= Wout:
                continue
            ob = fb + np.uint64((oy * Wout + ox) * Cout)
            wb = np.uint64(((ky * kw + kx) * Cin + c) * Cout)
            if use_scale:
                for co in range(uC):
                    out1[ob + co] += wscale * w1[wb + co]
            else:
                for co in range(uC):
                    out1[ob + co] += w1[wb + co]
            ops += Cout
    return ops


@njit(cache=True, inline="always")
def _conv_event_s1(out1, fb, w1, wscale, use_scale, iy, ix, c, kh, kw, pad, Cin, Cout, Hout, Wout):
    """Stride-1 conv event with the kx taps merged: ``w1`` is laid out kh×Cin×kw×Cout
    with kx reversed, so the kw taps of one kernel row hit kw *adjacent* output
    positions and are one contiguous run of kw·Cout additions."""
    ox0 = ix + pad - kw + 1
    j0 = 0 if ox0 >= 0 else -ox0
    j1 = kw if ox0 + kw <= Wout else Wout - ox0
    if j1 <= j0:
        return 0
    n = np.uint64((j1 - j0) * Cout)
    ops = 0
    for ky in range(kh):
        oy = iy + pad - ky
        if (oy < 0) | (oy >= Hout):
            continue
        ob = fb + np.uint64((oy * Wout + ox0 + j0) * Cout)
        wb = np.uint64(((ky * Cin + c) * kw + j0) * Cout)
        if use_scale:
            for q in range(n):
                out1[ob + q] += wscale * w1[wb + q]
        else:
            for q in range(n):
                out1[ob + q] += w1[wb + q]
        ops += (j1 - j0) * Cout
    return ops


@njit(cache=True, inline="always")
def _event(out1, fb, w1, wscale, use_scale, iy, ix, c, kh, kw, pad, stride, Cin, Cout, Hout, Wout):
    if stride == 1:
        return _conv_event_s1(out1, fb, w1, wscale, use_scale, iy, ix, c, kh, kw, pad, Cin, Cout, Hout, Wout)
    return _conv_event(out1, fb, w1, wscale, use_scale, iy, ix, c, kh, kw, pad, stride, Cin, Cout, Hout, Wout)


def conv_weight_layout(w_hwio: np.ndarray, stride: int) -> np.ndarray:
    """Flat weight in the layout :func:`conv_bits` expects for this stride."""
    if stride == 1:
        return np.ascontiguousarray(w_hwio[:, ::-1].transpose(0, 2, 1, 3)).reshape(-1)
    return np.ascontiguousarray(w_hwio).reshape(-1)


@njit(cache=True, inline="always")
def _conv_frame(bits, f, Ws, pool, scale, w1, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin, Win, Hout,
                Wout, out1, fb):
    """Currents of frame ``f`` into ``out1[fb : fb + Hout·Wout·Cout]``; returns the synaptic ops."""
    NW = bits.shape[2]
    size = Hout * Wout * Cout
    one = w1.dtype.type(1)
    for i in range(np.uint64(size)):
        out1[fb + i] = 0
    ops = 0
    for iy in range(Hin):
        for ix in range(Win):
            for wd in range(NW):
                if pool == 1:
                    word = bits[f, iy * Ws + ix, wd]
                    while word != 0:
                        c = wd * 64 + np.int64(cttz64(word))
                        word = _lowbit_clear(word)
                        ops += _event(out1, fb, w1, one, False, iy, ix, c, kh, kw, pad, stride, Cin, Cout,
                                      Hout, Wout)
                else:
                    anyw = np.uint64(0)
                    for dy in range(pool):
                        for dx in range(pool):
                            anyw |= bits[f, (iy * pool + dy) * Ws + ix * pool + dx, wd]
                    while anyw != 0:
                        bit = np.int64(cttz64(anyw))
                        anyw = _lowbit_clear(anyw)
                        m = np.uint64(1) << np.uint64(bit)
                        k = 0
                        for dy in range(pool):
                            for dx in range(pool):
                                if bits[f, (iy * pool + dy) * Ws + ix * pool + dx, wd] & m:
                                    k += 1
                        ops += _event(out1, fb, w1, w1.dtype.type(k), True, iy, ix, wd * 64 + bit, kh, kw,
                                      pad, stride, Cin, Cout, Hout, Wout)
    uC = np.uint64(Cout)
    for p in range(Hout * Wout):
        ob = fb + np.uint64(p * Cout)
        if has_bias:
            for co in range(uC):
                out1[ob + co] = scale * out1[ob + co] + bias[co]
        else:
            for co in range(uC):
                out1[ob + co] = scale * out1[ob + co]
    return ops


@njit(parallel=True, cache=True)
def conv_bits(bits, Ws, pool, scale, w1, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin, Win, Hout, Wout,
              out, sops):
    """Convolution of a spike map (optionally average-pooled) into dense currents.

    ``bits`` holds the spikes of an Hs×Ws×Cin map. With ``pool`` = k > 1 the
    conv input is the k×k / stride-k average pool of that map (Hin×Win) and
    each pooled nonzero is one merged event weighted by its spike count: the
    pooled map never materialises. Each frame (``prange``) scatters its events
    (raster order, then channel) into its output, which stays in cache; per
    output the summation order is (tap, channel), the same as a gather.
    ``w1`` is the flat weight from :func:`conv_weight_layout`, ``scale`` θ (or θ/k²).
    Writes ``out`` (F × Hout·Wout·Cout channels-last) = scale·Σ w + bias and
    ``sops`` (F,) = Σ nonzero inputs × their fan-out.
    """
    F = bits.shape[0]
    size = Hout * Wout * Cout
    out1 = out.reshape(-1)
    for f in prange(F):
        sops[f] = _conv_frame(bits, f, Ws, pool, scale, w1, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin,
                              Win, Hout, Wout, out1, np.uint64(f * size))


@njit(parallel=True, cache=True)
def conv_if_bits(bits, Ws, pool, scale, w1, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin, Win, Hout, Wout,
                 B, S, tau, theta, half, thr_keep, bits_out, counts, sops, ws_cur, ws_v, ws_keepw):
    """A conv followed by its IF layer, fused: each image (``prange``) runs its S
    frames through the conv into a per-image current buffer that stays in
    cache and straight into the IF update, so the currents never go to memory.
    Same arithmetic as :func:`conv_bits` then :func:`if_bits_fast` (identical
    results); the SRP keep-mask is held as bit words and applied to each spike
    word. ``ws_cur``, ``ws_v`` (B × N, the dtype) and ``ws_keepw`` (B × P·NW
    uint64) are workspaces. (No Python ``and``/``or`` here: short-circuit
    branches in the loop body stop LLVM from vectorising the enclosing loops.)"""
    P = Hout * Wout
    C = Cout
    N = P * C
    NW = bits_out.shape[2]
    cur1 = ws_cur.reshape(-1)
    v = ws_v.reshape(-1)
    keepw = ws_keepw.reshape(-1)
    for b in prange(B):
        base = np.uint64(b * N)
        kb = np.uint64(b * P * NW)
        for i in range(np.uint64(N)):
            v[base + i] = half
        for t in range(S):
            f = b * S + t
            sops[f] = _conv_frame(bits, f, Ws, pool, scale, w1, bias, has_bias, kh, kw, Cin, Cout, stride, pad,
                                  Hin, Win, Hout, Wout, cur1, base)
            if (t == tau) & (tau > 0):
                for p in range(P):
                    for wd in range(NW):
                        c0 = wd * 64
                        c1 = min(C, c0 + 64)
                        lb = base + np.uint64(p * C + c0)
                        word = np.uint64(0)
                        for j in range(np.uint64(c1 - c0)):
                            word |= np.uint64(v[lb + j] > thr_keep) << j
                        keepw[kb + np.uint64(p * NW + wd)] = word
                for i in range(np.uint64(N)):
                    v[base + i] = half
            masked = (t >= tau) & (tau > 0)
            for p in range(P):
                cnt = 0
                for wd in range(NW):
                    c0 = wd * 64
                    c1 = min(C, c0 + 64)
                    lb = base + np.uint64(p * C + c0)
                    word = np.uint64(0)
                    for j in range(np.uint64(c1 - c0)):
                        u_ = v[lb + j] + cur1[lb + j]
                        s = u_ >= theta
                        v[lb + j] = u_ - theta if s else u_
                        word |= np.uint64(s) << j
                    if masked:
                        word &= keepw[kb + np.uint64(p * NW + wd)]
                    bits_out[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt


# --------------------------------------------------------------------------- linear (gather)
@njit(parallel=True, cache=True)
def linear_bits(bits, scale, w_t, bias, has_bias, jblock, out, sops):
    """Fully connected layer on a 1-d spike map (P = 1): ``out = scale·Σ w_t[i] + b``.

    Parallel over blocks of ``jblock`` outputs; each block loops over all
    frames so its slice of the weight matrix stays in cache.
    """
    F = bits.shape[0]
    NW = bits.shape[2]
    n_out = w_t.shape[1]
    nblk = (n_out + jblock - 1) // jblock
    for jb in prange(nblk):
        j0 = jb * jblock
        j1 = min(n_out, j0 + jblock)
        for f in range(F):
            acc = out[f, j0:j1]
            acc[:] = 0
            for wd in range(NW):
                word = bits[f, 0, wd]
                while word != 0:
                    i = wd * 64 + np.int64(cttz64(word))
                    word = _lowbit_clear(word)
                    wr = w_t[i, j0:j1]
                    for j in range(j1 - j0):
                        acc[j] += wr[j]
            if has_bias:
                for j in range(j1 - j0):
                    acc[j] = scale * acc[j] + bias[j0 + j]
            else:
                for j in range(j1 - j0):
                    acc[j] = scale * acc[j]
    for f in prange(F):
        c = 0
        for wd in range(NW):
            c += popcnt64(bits[f, 0, wd])
        sops[f] = c * n_out


# --------------------------------------------------------------------------- conversions
@njit(parallel=True, cache=True)
def bits_to_dense(bits, C, theta, out, accumulate):
    """``out[f, p·C + c] (+)= θ`` for every spike (channels-last)."""
    F, P, NW = bits.shape
    for f in prange(F):
        if not accumulate:
            out[f, :] = 0
        for p in range(P):
            for wd in range(NW):
                word = bits[f, p, wd]
                while word != 0:
                    c = wd * 64 + np.int64(cttz64(word))
                    word = _lowbit_clear(word)
                    out[f, p * C + c] += theta


@njit(parallel=True, cache=True)
def pool_bits_dense(bits, Ws, C, k, Hout, Wout, theta, out):
    """k×k / stride-k average pool of a spike map into dense values (F × Hout·Wout·C).

    Each value is (spike count in the window)·θ / k², i.e. the mean of the
    window's θ·s values.
    """
    F, P, NW = bits.shape
    kk = k * k
    for f in prange(F):
        out[f, :] = 0
        for oy in range(Hout):
            for ox in range(Wout):
                ob = (oy * Wout + ox) * C
                for dy in range(k):
                    for dx in range(k):
                        pos = (oy * k + dy) * Ws + ox * k + dx
                        for wd in range(NW):
                            word = bits[f, pos, wd]
                            while word != 0:
                                c = wd * 64 + np.int64(cttz64(word))
                                word = _lowbit_clear(word)
                                out[f, ob + c] += theta
                for c in range(C):
                    out[f, ob + c] = out[f, ob + c] / kk


@njit(parallel=True, cache=True)
def pooled_counts(bits, Ws, k, Hout, Wout, out):
    """Spikes inside the pooled windows, per frame (the avgpool node's synaptic ops)."""
    F, P, NW = bits.shape
    for f in prange(F):
        c = 0
        for oy in range(Hout):
            for ox in range(Wout):
                for dy in range(k):
                    for dx in range(k):
                        pos = (oy * k + dy) * Ws + ox * k + dx
                        for wd in range(NW):
                            c += popcnt64(bits[f, pos, wd])
        out[f] = c
