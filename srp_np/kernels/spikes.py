"""Spike maps as bit sets: the IF kernels that write them and the conversions that read them.

An IF layer's spikes for F frames are held as ``bits`` (F × P × NW uint64):
P spatial positions (1 for a 1-d layer), and for each position the set of
channels that spiked, one bit per channel (channel c → word c >> 6, bit
c & 63), NW = ⌈C / 64⌉ words. The map is 16-32× smaller than a dense map
or an index list, stays in cache, and is what the synaptic kernels of
:mod:`.gather` read. A spike from an IF layer of threshold θ is worth θ, so
synaptic kernels sum raw weights and multiply by θ once (``θ·Σw + b``).
"""
import numpy as np
from llvmlite import ir
from numba import njit, prange
from numba.core import types
from numba.extending import intrinsic

from . import flush_if_intrinsics_changed
from .rules import AUTHORS, if_update, in_stage2, keeps, masked, reads_mask, reset_membranes
from .simd import if_step16, keep16_authors, keep16_paper


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
def if_bits(cur, static, B, S, srp, P, C, pblock, record, bits, counts, rec):
    """IF layer with SRP for all frames; spikes written as bit sets (the schedule of :mod:`.rules`;
    ``srp``: :class:`.records.SrpParams`).

    ``cur`` is F×(P·C) channels-last (or B×(P·C) when ``static``: the same
    current every step). Work units are (image, block of ``pblock``
    positions), each running its neurons through all S steps. ``counts``
    (F × P int32) receives the number of (masked) spikes per frame and
    position. ``record`` fills the B×N arrays of ``rec`` (:class:`.records.IFRecord`).
    """
    tau, theta, half, thr_keep, rule = srp
    v_tau_out, mask_out, count1_out, count2_out, insum_out = rec
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
        reset_membranes(v, 0, nn, half)
        for t in range(S):
            if reads_mask(t, tau):
                for i in range(nn):
                    keep[i] = keeps(v[i], thr_keep, rule)
                    if record:
                        v_tau_out[b, n0 + i] = v[i]
                        mask_out[b, n0 + i] = keep[i]
                reset_membranes(v, 0, nn, half)
            f = b * S + t
            row = b if static else f
            stage2 = in_stage2(t, tau)
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
                        if if_update(v, i, x, theta):
                            if (not masked(t, tau)) | keep[i]:
                                word |= np.uint64(1) << np.uint64(c - c0)
                                if record:
                                    if stage2:
                                        count2_out[b, n0 + i] += 1
                                    else:
                                        count1_out[b, n0 + i] += 1
                        if record & stage2:
                            insum_out[b, n0 + i] += x
                    bits[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt


@njit(cache=True, inline="always")
def if_word(v, vb, cur, cb, n, theta):
    """One IF step (Eqs. 2-3, reset by subtraction) of the n ≤ 64 neurons ``v[vb + j]``
    with inputs ``cur[cb + j]``; returns their spikes as bits j of a word. Each full 16
    neurons are one vector step (:func:`.simd.if_step16`: a compare gives the 16 spike
    bits at once), the rest :func:`.rules.if_update`; both compute ``u = v + x``, ``u ≥ θ``,
    ``u − θ`` in the same precision."""
    word = np.uint64(0)
    n16 = np.uint64(n) & ~np.uint64(15)
    for k in range(np.uint64(0), n16, np.uint64(16)):
        word |= if_step16(v, vb + k, cur, cb + k, theta) << k
    for j in range(n16, np.uint64(n)):
        word |= np.uint64(if_update(v, vb + j, cur[cb + j], theta)) << j
    return word


@njit(cache=True, inline="always")
def keep_word(v, vb, n, thr_keep, rule):
    """SRP keep-mask (:func:`.rules.keeps`) of the n ≤ 64 neurons ``v[vb + j]`` as bits j of a
    word (16 at a time with :func:`.simd.keep16_authors` / :func:`.simd.keep16_paper`)."""
    word = np.uint64(0)
    n16 = np.uint64(n) & ~np.uint64(15)
    for k in range(np.uint64(0), n16, np.uint64(16)):
        if rule == AUTHORS:
            word |= keep16_authors(v, vb + k, thr_keep) << k
        else:
            word |= keep16_paper(v, vb + k, thr_keep) << k
    for j in range(n16, np.uint64(n)):
        word |= np.uint64(keeps(v[vb + j], thr_keep, rule)) << j
    return word


@njit(cache=True, inline="always")
def srp_boundary(v, keepw, p0, p1, C, NW, n0, n1, half, thr_keep, rule):
    """The stage boundary of the neurons of positions p0 ≤ p < p1 (Algorithm 1, lines 11-13).

    Neuron (p, c) is ``v[n0 + (p − p0)·C + c]``. Writes the keep words (:func:`keep_word`)
    to ``keepw[(p − p0)·NW + w]``, then resets ``v[n0 : n1]`` to v(0) = ``half``."""
    for p in range(p0, p1):
        for wd in range(NW):
            c0 = wd * 64
            keepw[(p - p0) * NW + wd] = keep_word(v, np.uint64(n0 + (p - p0) * C + c0), min(C, c0 + 64) - c0,
                                                  thr_keep, rule)
    reset_membranes(v, np.uint64(n0), np.uint64(n1), half)


@njit(parallel=True, cache=True)
def if_bits_fast(cur, static, B, S, srp, P, C, pblock, bits, counts):
    """:func:`if_bits` without recording: the neurons of a spike word are updated by
    :func:`if_word` (vectorised) and the SRP mask is applied as a word (:func:`keep_word`)."""
    tau, theta, half, thr_keep, rule = srp
    NW = bits.shape[2]
    N = P * C
    cur1 = cur.reshape(-1)
    nblk = (P + pblock - 1) // pblock
    for u in prange(B * nblk):
        b = u // nblk
        p0 = (u % nblk) * pblock
        p1 = min(P, p0 + pblock)
        nn = (p1 - p0) * C
        v = np.empty(nn, cur.dtype)
        keepw = np.empty((p1 - p0) * NW, np.uint64)
        reset_membranes(v, 0, nn, half)
        for t in range(S):
            if reads_mask(t, tau):
                srp_boundary(v, keepw, p0, p1, C, NW, 0, nn, half, thr_keep, rule)
            f = b * S + t
            row = b if static else f
            rb = np.uint64(row * N)
            mask_on = masked(t, tau)
            for p in range(p0, p1):
                cnt = 0
                for wd in range(NW):
                    c0 = wd * 64
                    word = if_word(v, np.uint64((p - p0) * C + c0), cur1, rb + np.uint64(p * C + c0),
                                   min(C, c0 + 64) - c0, theta)
                    if mask_on:
                        word &= keepw[(p - p0) * NW + wd]
                    bits[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt


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


flush_if_intrinsics_changed(if_bits_fast)
