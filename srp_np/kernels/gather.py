"""Gather-style synaptic kernels: conv and linear layers fed by spike bit sets.

For every output row (frame f, output position p) the kernel first lists the
weight rows its receptive field activates: each input spike of channel c at
kernel tap (ky, kx) selects row ``(ky·kw + kx)·Cin + c`` of the kh×kw×Cin×Cout
weight (Eq. 2's W^l s^{l-1}(t): a spike contributes its weight, scaled by θ
once). The lists are built branch-free from the bit words
(:func:`.simd.push_bits64` …) and then summed into blocks of output channels
held in vector registers (:func:`.simd.accumulate` …), each output in the
order (tap, channel), from +0. That is the order the earlier scatter kernels
used, so the currents are bit-identical to theirs, and they do not depend on
how frames, rows or channels are split between threads.

An average pool with kernel = stride k in front of the layer is not
materialised: each pooled nonzero is one list entry whose weight row is
multiplied by its spike count (``count·w``, then added), and the layer's
scale is θ/k².

A linear layer is the 1×1 case on a single position.
"""
import numba
import numpy as np
from numba import njit, prange

from .simd import (BLOCKS, acc1, acc1s, acc16, acc16s, acc32, acc32s, acc64, acc64s, acc128, acc128s, acc256, acc256s,
                   push_bits16, push_bits32, push_bits64, push_pooled16, push_pooled32, push_pooled64)
from . import aligned, flush_if_intrinsics_changed
from .isa import ACC_BYTES, simd_path
from .rules import masked, reads_mask, reset_membranes
from .spikes import if_word, popcnt64, srp_boundary


#: Bytes of accumulator registers an output block may take on this target (:data:`.isa.ACC_BYTES`).
ACC_BLOCK_BYTES = ACC_BYTES[simd_path()]

#: Default bytes of weights per segment group and output block (about a quarter of a 1-2 MB L2 cache).
DEFAULT_KBLOCK = 256 * 1024


def list_capacity(kh: int, kw: int, cin: int) -> int:
    """Entries of a per-thread list buffer: at least one full row plus slack."""
    maxrow = kh * kw * ((cin + 63) // 64) * 64
    return max(1 << 16, 2 * maxrow + 256)


def gather_weights(w_hwio: np.ndarray) -> np.ndarray:
    """Flat kh×kw×Cin×Cout weight followed by one zero row of Cout (the padding row)."""
    cout = w_hwio.shape[-1]
    return aligned(np.concatenate([np.ascontiguousarray(w_hwio).reshape(-1), np.zeros(cout, w_hwio.dtype)]))


@njit(cache=True, inline="always")
def _acc(BW, scaled, out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias,
         has_bias, init, final):
    if scaled:
        if BW == 256:
            acc256s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 128:
            acc128s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 64:
            acc64s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 32:
            acc32s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 16:
            acc16s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        else:
            acc1s(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
    else:
        if BW == 256:
            acc256(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 128:
            acc128(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 64:
            acc64(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 32:
            acc32(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        elif BW == 16:
            acc16(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)
        else:
            acc1(out1, obase, ostride, nrows, w1, col, offs, cnt, start, r, ss, s0, s1, zrow, scale, bias, has_bias, init, final)


@njit(cache=True, inline="always")
def _block_width(Cout, itemsize):
    """Output-channel block of the vector accumulators: the widest of 256 … 16 that divides the
    multiple-of-16 part of Cout and fits :data:`ACC_BLOCK_BYTES` (the remaining Cout % 16
    columns take the 1-wide block). The block width does not change any sum."""
    m16 = Cout - Cout % 16
    BW = 256
    while (BW > 16) & (((m16 % BW) != 0) | (BW * itemsize > ACC_BLOCK_BYTES)):
        BW //= 2
    return BW


@njit(cache=True, inline="always")
def _rows_per_call(BW):
    """Rows one accumulate call sums side by side for block width BW (:data:`.simd.BLOCKS`)."""
    for bw, r in BLOCKS:
        if bw == BW:
            return r
    return 1


@njit(cache=True, inline="always")
def _push_narrow(Cin, offs, n, word, base, stride):
    """The entries of one ≤ 32-channel spike word."""
    if Cin <= 16:
        return push_bits16(offs, n, word, base, stride)
    return push_bits32(offs, n, word, base, stride)


@njit(cache=True, inline="always")
def _push_row(bits, f, Ws, pool, iy, ix, tb, Cin, Cout, offs, cnt, n, win, start, sb, segs):
    """Append the list entries of input position (iy, ix) at tap base row ``tb``, one
    segment per spike word (a single segment when Cin ≤ 32); with ``segs``,
    ``start[sb + q]`` receives where segment q begins."""
    NW = bits.shape[2]
    if pool == 1:
        pos = iy * Ws + ix
        if Cin <= 32:
            if segs:
                start[sb] = n
            n = _push_narrow(Cin, offs, n, bits[f, pos, 0], tb * Cout, Cout)
        else:
            for wd in range(NW):
                if segs:
                    start[sb + wd] = n
                n = push_bits64(offs, n, bits[f, pos, wd], (tb + wd * 64) * Cout, Cout)
    else:
        for wd in range(NW):
            j = 0
            for dy in range(pool):
                for dx in range(pool):
                    win[j] = bits[f, (iy * pool + dy) * Ws + ix * pool + dx, wd]
                    j += 1
            if segs:
                start[sb + wd] = n
            if Cin <= 16:
                n = push_pooled16(offs, cnt, n, win, pool * pool, tb * Cout, Cout)
            elif Cin <= 32:
                n = push_pooled32(offs, cnt, n, win, pool * pool, tb * Cout, Cout)
            else:
                n = push_pooled64(offs, cnt, n, win, pool * pool, (tb + wd * 64) * Cout, Cout)
    return n


@njit(cache=True)
def _gather_frames(bits, Ws, pool, f0, f1, p0, p1, w1, scale, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin,
                   Win, Hout, Wout, col0, col1, kblock, out1, obase, offs, cnt, start, win, sops, count_sops):
    """Currents of frames f0 … f1-1, output positions p0 … p1-1 and channels [col0, col1),
    into ``out1[obase + ((f - f0)·P + p)·Cout + c]``; with ``count_sops`` adds each
    frame's synaptic ops (list entries × Cout) to ``sops[f]``.

    Phase 1 lists the entries of as many rows as the buffers hold, in segments
    (kernel tap × spike word); phase 2 sums them, a group of segments at a time
    whose weight rows span about ``kblock`` bytes per output block, so that those
    weights stay in cache while every row is summed (partial sums continue exactly)."""
    NW = bits.shape[2]
    cap = offs.shape[0]
    scap = start.shape[0]
    maxrow = kh * kw * NW * 64
    zrow = kh * kw * Cin * Cout
    P = Hout * Wout
    nrows = (f1 - f0) * (p1 - p0)
    full = (p0 == 0) & (p1 == P)      # rows of consecutive frames are contiguous in out1
    m16 = Cout - Cout % 16
    BW = _block_width(Cout, w1.itemsize)
    R = _rows_per_call(BW)
    scaled = pool > 1
    segs_tap = 1 if (Cin <= 32) & (pool == 1) else NW
    seg_rows = min(Cin, 64)
    G = max(1, kblock // (seg_rows * BW * w1.itemsize))
    # segments (tap × spike word) are only recorded when the weights need more than one group
    grouped = G < kh * kw * segs_tap
    nseg = kh * kw * segs_tap if grouped else 1
    ss = nseg + 1
    # a same-size 3×3 conv (stride 1, padding 1) of a ≤ 32-channel spike map
    narrow3 = (Cin <= 32) & (pool == 1) & (kh == 3) & (kw == 3) & (stride == 1) & (pad == 1) & (Hin == Hout) \
        & (Win == Wout)
    r0 = 0
    f = f0          # (frame, position, oy, ox) of row r1, advanced without divisions
    p = p0
    oy = p0 // Wout
    ox = p0 - oy * Wout
    while r0 < nrows:
        # phase 1: the lists of rows r0 … r1-1 (as many as the buffers hold; one frame's
        # positions at most unless all positions are computed)
        n = 0
        r1 = r0
        ob = obase + ((f - f0) * P + p) * Cout
        endblk = False
        while (r1 < nrows) & (n + maxrow + 64 <= cap) & ((r1 - r0 + 1) * ss <= scap):
            if endblk:
                break
            sb = (r1 - r0) * ss
            start[sb] = n
            if grouped:
                for ky in range(kh):
                    iy = oy * stride - pad + ky
                    for kx in range(kw):
                        ix = ox * stride - pad + kx
                        q = sb + (ky * kw + kx) * segs_tap
                        if (iy < 0) | (iy >= Hin) | (ix < 0) | (ix >= Win):
                            for j in range(segs_tap):
                                start[q + j] = n
                        else:
                            n = _push_row(bits, f, Ws, pool, iy, ix, (ky * kw + kx) * Cin, Cin, Cout, offs, cnt, n,
                                          win, start, q, True)
            elif narrow3 & (oy >= 1) & (oy < Hout - 1) & (ox >= 1) & (ox < Wout - 1):
                # ≤ 32 channels, 3×3 kernel inside the map: unrolled (10-20 % faster)
                pos = (oy - 1) * Ws + ox - 1
                C2 = Cin * Cout
                n = _push_narrow(Cin, offs, n, bits[f, pos, 0], 0, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 1, 0], C2, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 2, 0], 2 * C2, Cout)
                pos += Ws
                n = _push_narrow(Cin, offs, n, bits[f, pos, 0], 3 * C2, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 1, 0], 4 * C2, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 2, 0], 5 * C2, Cout)
                pos += Ws
                n = _push_narrow(Cin, offs, n, bits[f, pos, 0], 6 * C2, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 1, 0], 7 * C2, Cout)
                n = _push_narrow(Cin, offs, n, bits[f, pos + 2, 0], 8 * C2, Cout)
            else:           # (a separate loop: the narrow layers are sensitive to its code)
                for ky in range(kh):
                    iy = oy * stride - pad + ky
                    if (iy < 0) | (iy >= Hin):
                        continue
                    for kx in range(kw):
                        ix = ox * stride - pad + kx
                        if (ix < 0) | (ix >= Win):
                            continue
                        n = _push_row(bits, f, Ws, pool, iy, ix, (ky * kw + kx) * Cin, Cin, Cout, offs, cnt, n,
                                      win, start, 0, False)
            start[sb + nseg] = n
            if count_sops:
                sops[f] += (n - start[sb]) * Cout
            r1 += 1
            p += 1
            ox += 1
            if ox == Wout:
                ox = 0
                oy += 1
            if p == p1:
                p = p0
                oy = p0 // Wout
                ox = p0 - oy * Wout
                f += 1
                endblk = not full
        nb = r1 - r0
        # phase 2: sum the lists into blocks of output channels, a group of segments at a time
        for g0 in range(0, nseg, G):
            g1 = min(nseg, g0 + G)
            init = g0 > 0
            final = g1 == nseg
            c = col0
            while c + BW <= min(col1, m16):
                for rr in range(0, nb, R):
                    _acc(BW, scaled, out1, ob + rr * Cout + c, Cout, min(R, nb - rr), w1, c, offs, cnt, start, rr,
                         ss, g0, g1, zrow, scale, bias, has_bias, init, final)
                c += BW
            R1 = _rows_per_call(1)
            while c < col1:
                for rr in range(0, nb, R1):
                    _acc(1, scaled, out1, ob + rr * Cout + c, Cout, min(R1, nb - rr), w1, c, offs, cnt, start, rr,
                         ss, g0, g1, zrow, scale, bias, has_bias, init, final)
                c += 1
        r0 = r1


@njit(parallel=True, cache=True)
def gather_bits(src, wts, geom, fgroup, ncolu, kblock, out, sops, scratch):
    """Conv (or linear: 1×1 on one position) of a spike map, optionally average-pooled.

    ``src`` (:class:`.records.SpikeInput`) holds the spikes F×(Hs·Ws)×NW and what one is
    worth (θ, or θ/k² when pooled); ``wts`` (:class:`.records.Weights`) the weights;
    ``geom`` (:class:`.records.ConvGeom`) the conv. Writes ``out`` (F × Hout·Wout·Cout
    channels-last) = scale·Σ w + bias and ``sops`` (F,). Work units: groups of ``fgroup``
    frames × ``ncolu`` slices of the output channels; ``kblock`` (bytes) sizes the weight
    blocks kept in cache (see :func:`_gather_frames`). ``scratch``:
    :class:`.records.GatherScratch`.
    """
    bits, Ws, pool, scale = src
    w1, bias, has_bias = wts
    kh, kw, Cin, Cout, stride, pad, Hin, Win, Hout, Wout = geom
    ws_offs, ws_cnt, ws_start, ws_win = scratch
    F = bits.shape[0]
    P = Hout * Wout
    N = P * Cout
    nfg = (F + fgroup - 1) // fgroup
    out1 = out.reshape(-1)
    m16 = Cout - Cout % 16
    BW = _block_width(Cout, w1.itemsize)
    nblk = m16 // BW if m16 > 0 else 0
    ncolu = max(1, min(ncolu, nblk))
    per = (nblk + ncolu - 1) // ncolu
    for f in range(F):
        sops[f] = 0
    sc = out.dtype.type(scale)
    for u in prange(nfg * ncolu):
        g = u // ncolu
        cu = u - g * ncolu
        f0 = g * fgroup
        f1 = min(F, f0 + fgroup)
        col0 = min(cu * per, nblk) * BW
        col1 = Cout if cu == ncolu - 1 else min((cu + 1) * per, nblk) * BW
        if col1 <= col0:
            continue
        tid = numba.get_thread_id()
        _gather_frames(bits, Ws, pool, f0, f1, 0, P, w1, sc, bias, has_bias, kh, kw, Cin, Cout, stride, pad, Hin,
                       Win, Hout, Wout, col0, col1, kblock, out1, f0 * N, ws_offs[tid], ws_cnt[tid], ws_start[tid],
                       ws_win[tid], sops, cu == 0)


@njit(parallel=True, cache=True)
def gather_if_bits(src, wts, geom, kblock, B, S, srp, pblock, bits_out, counts, sops, scratch, fscratch, res):
    """:func:`gather_bits` followed by its IF layer, fused: a work unit is one image
    and a block of ``pblock`` output positions; its S frames of currents go to a
    per-thread buffer (``fscratch.cur``, ≥ S·N) and straight into the IF update with SRP
    (``srp``: :class:`.records.SrpParams`; the schedule of :mod:`.rules`, with
    :func:`.spikes.if_word` and :func:`.spikes.srp_boundary`, as in
    :func:`.spikes.if_bits_fast`: identical results). Writes the IF layer's spikes ``bits_out``
    (F×P×NWo) and ``counts`` (F×P), and ``sops``.

    A residual add between the conv and the IF (a ResNet block) is fused too (``res``:
    :class:`.records.Residual`). Each current is ``conv + shortcut`` (one addition), as
    in the unfused add node."""
    bits, Ws, pool, scale = src
    w1, bias, has_bias = wts
    kh, kw, Cin, Cout, stride, pad, Hin, Win, Hout, Wout = geom
    tau, theta, half, thr_keep, rule = srp
    ws_offs, ws_cnt, ws_start, ws_win = scratch
    ws_cur, ws_v, ws_keepw = fscratch
    res_kind, res_theta, res_bits, res_dense = res
    P = Hout * Wout
    C = Cout
    N = P * C
    NWo = bits_out.shape[2]
    F = B * S
    npb = (P + pblock - 1) // pblock
    parts = np.zeros((F, npb), np.int64)       # synaptic ops per frame and position block
    sc = ws_cur.dtype.type(scale)
    for u in prange(B * npb):
        b = u // npb
        pb = u - b * npb
        p0 = pb * pblock
        p1 = min(P, p0 + pblock)
        tid = numba.get_thread_id()
        cur1 = ws_cur[tid]
        v = ws_v[tid]
        keepw = ws_keepw[tid]
        _gather_frames(bits, Ws, pool, b * S, b * S + S, p0, p1, w1, sc, bias, has_bias, kh, kw, Cin, Cout, stride,
                       pad, Hin, Win, Hout, Wout, 0, Cout, kblock, cur1, 0, ws_offs[tid], ws_cnt[tid], ws_start[tid],
                       ws_win[tid], parts[:, pb], True)
        if res_kind == 1:          # branch-free: a select per channel (adds θ exactly where a bit is set)
            for t in range(S):
                f = b * S + t
                for p in range(p0, p1):
                    for wd in range(NWo):
                        word = res_bits[f, p, wd]
                        c0 = wd * 64
                        lb = np.uint64(t * N + p * C + c0)
                        for j in range(np.uint64(min(C, c0 + 64) - c0)):
                            x = cur1[lb + j]
                            cur1[lb + j] = x + res_theta if (word >> j) & np.uint64(1) else x
        elif res_kind == 2:
            for t in range(S):
                f = b * S + t
                for i in range(np.uint64(p0 * C), np.uint64(p1 * C)):
                    cur1[np.uint64(t * N) + i] += res_dense[f, i]
        reset_membranes(v, np.uint64(p0 * C), np.uint64(p1 * C), half)
        for t in range(S):
            f = b * S + t
            cb = np.uint64(t * N)
            if reads_mask(t, tau):
                srp_boundary(v, keepw, p0, p1, C, NWo, p0 * C, p1 * C, half, thr_keep, rule)
            mask_on = masked(t, tau)
            for p in range(p0, p1):
                cnt = 0
                for wd in range(NWo):
                    c0 = wd * 64
                    lb = np.uint64(p * C + c0)
                    word = if_word(v, lb, cur1, cb + lb, min(C, c0 + 64) - c0, theta)
                    if mask_on:
                        word &= keepw[(p - p0) * NWo + wd]
                    bits_out[f, p, wd] = word
                    cnt += popcnt64(word)
                counts[f, p] = cnt
    for f in range(F):
        sops[f] = parts[f].sum()


flush_if_intrinsics_changed(gather_bits, gather_if_bits, _gather_frames)
