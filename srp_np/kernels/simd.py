"""SIMD building blocks for the gather kernels, written as Numba intrinsics.

Two operations dominate an event-driven layer, and both defeat LLVM's
auto-vectoriser when written as plain Numba loops:

* **Turning a spike word into a list of weight-row offsets.** A
  count-trailing-zeros loop has a data-dependent trip count, so the branch
  predictor misses about once per word. The push intrinsics instead append
  the offsets of all set bits without branches, with the code of the
  target's path (:mod:`.isa`): on AVX-512, 16 lanes compressed in a register
  and stored whole (never ``llvm.masked.compressstore``, whose
  memory-destination ``vpcompressd`` is microcoded on AMD Zen 4, 20× slower);
  elsewhere, 8 lanes from a table of set-bit positions per byte.
* **Summing the weight rows of a list into a block of outputs.** With the
  accumulator in memory every 16 synaptic operations cost a load, an add and
  a store; a Numba loop over local scalars is not vectorised at all.
  The accumulate intrinsics keep a block of BW outputs of R rows in vector
  registers (LLVM ``<BW x float>`` values) for the whole list; the widest
  block a target uses is sized to its register file (:data:`.isa.ACC_BYTES`).

Both preserve the summation order of a sequential loop exactly (one add per
list entry, in list order, starting from +0), so results are bit-identical to
``for k: acc += w[offs[k]]``.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from ..neuron import FIRE_CMP, MASK_CMP

#: Output block widths (elements) of :func:`accumulate`, widest first, and rows per call.
BLOCKS = ((256, 1), (128, 1), (64, 1), (32, 2), (16, 4), (1, 8))


def _array_data(context, builder, arrty, value):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=value).data


def _splat(builder, vty, x):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, None), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, None), ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))


def _set_bit_table() -> tuple[bytes, bytes]:
    """For each byte value: the positions of its set bits, ascending, in 8 bytes (zero-padded);
    and its popcount."""
    pos, cnt = bytearray(256 * 8), bytearray(256)
    for b in range(256):
        k = 0
        for c in range(8):
            if (b >> c) & 1:
                pos[b * 8 + k] = c
                k += 1
        cnt[b] = k
    return bytes(pos), bytes(cnt)


_POS8, _CNT8 = _set_bit_table()


def _push_compress16(context, builder, data, n, word, nbits, b32, s32, cdata, fty, counts):
    """AVX-512 path: per 16 channels, compress the lane offsets in a register and store all
    16 lanes at ``lst + n`` (the lanes past the new entries are overwritten by the next push
    or ignored: the list buffers have slack)."""
    i32, i64 = ir.IntType(32), ir.IntType(64)
    v16 = ir.VectorType(i32, 16)
    m16 = ir.VectorType(ir.IntType(1), 16)
    mod = builder.module
    comp = cgutils.get_or_insert_function(mod, ir.FunctionType(v16, [v16, m16, v16]),
                                          "llvm.experimental.vector.compress.v16i32")
    iota = ir.Constant(v16, list(range(16)))
    sv = _splat(builder, v16, s32)
    if cdata is not None:
        vf = ir.VectorType(fty, 16)
    for ch in range(nbits // 16):
        bits = builder.trunc(builder.lshr(word, ir.Constant(i64, 16 * ch)), ir.IntType(16))
        mask = builder.bitcast(bits, m16)
        first = builder.add(b32, builder.mul(ir.Constant(i32, 16 * ch), s32))
        vals = builder.add(_splat(builder, v16, first), builder.mul(iota, sv))
        packed = builder.call(comp, [vals, mask, ir.Constant(v16, None)])
        builder.store(packed, builder.bitcast(builder.gep(data, [n], inbounds=True), v16.as_pointer()), align=4)
        if cdata is not None:
            # counts compressed as integers, then converted (a <16 x double> compress is split badly)
            cv = ir.Constant(v16, None)
            for wj in counts:
                mj = builder.bitcast(builder.trunc(builder.lshr(wj, ir.Constant(i64, 16 * ch)), ir.IntType(16)), m16)
                cv = builder.add(cv, builder.zext(mj, v16))
            cp = builder.uitofp(builder.call(comp, [cv, mask, ir.Constant(v16, None)]), vf)
            builder.store(cp, builder.bitcast(builder.gep(cdata, [n], inbounds=True), vf.as_pointer()), align=4)
        n = builder.add(n, builder.zext(builder.ctpop(bits), i64))
    return n


def _push_table8(context, builder, data, n, word, nbits, b32, s32, cdata, fty, counts, popcnt_table):
    """AVX2 and portable paths: per 8 channels, the set-bit positions of the byte from a
    256-entry table (:func:`_set_bit_table`), turned into offsets ``first + pos·stride`` and
    stored as 8 lanes at ``lst + n``; the entry count from ``ctpop`` (AVX2) or from a second
    table (portable: no ``popcnt`` instruction assumed)."""
    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    v8, b8 = ir.VectorType(i32, 8), ir.VectorType(i8, 8)
    mod = builder.module
    tab = builder.bitcast(cgutils.global_constant(mod, "srp_np_setbit_pos8",
                                                  ir.Constant(ir.ArrayType(i8, len(_POS8)), bytearray(_POS8))),
                          i8.as_pointer())
    if popcnt_table:
        ctab = builder.bitcast(cgutils.global_constant(mod, "srp_np_setbit_cnt8",
                                                       ir.Constant(ir.ArrayType(i8, 256), bytearray(_CNT8))),
                               i8.as_pointer())
    sv = _splat(builder, v8, s32)
    if cdata is not None:
        vf = ir.VectorType(fty, 8)
    for ch in range(nbits // 8):
        byte = builder.trunc(builder.lshr(word, ir.Constant(i64, 8 * ch)), i8)
        bi = builder.zext(byte, i64)
        pp = builder.gep(tab, [builder.mul(bi, ir.Constant(i64, 8))], inbounds=True)
        pos = builder.zext(builder.load(builder.bitcast(pp, b8.as_pointer()), align=1), v8)
        first = builder.add(b32, builder.mul(ir.Constant(i32, 8 * ch), s32))
        vals = builder.add(_splat(builder, v8, first), builder.mul(pos, sv))
        builder.store(vals, builder.bitcast(builder.gep(data, [n], inbounds=True), v8.as_pointer()), align=4)
        if cdata is not None:
            # entry k's count: how many window words have bit 8·ch + pos[k] set
            cv = ir.Constant(vf, None)
            for wj in counts:
                bj = builder.trunc(builder.lshr(wj, ir.Constant(i64, 8 * ch)), i32)
                hit = builder.and_(builder.lshr(_splat(builder, v8, bj), pos), ir.Constant(v8, [1] * 8))
                cv = builder.fadd(cv, builder.uitofp(hit, vf))
            builder.store(cv, builder.bitcast(builder.gep(cdata, [n], inbounds=True), vf.as_pointer()), align=4)
        if popcnt_table:
            k = builder.load(builder.gep(ctab, [bi], inbounds=True))
        else:
            k = builder.ctpop(byte)
        n = builder.add(n, builder.zext(k, i64))
    return n


#: Entries a push may write past its last new entry (list buffers need this much slack).
PUSH_SLACK = 16


def _make_push(nchunks: int, pooled: bool):
    """Intrinsic appending ``base + c·stride`` for each set bit c of a word (c ascending).

    Non-pooled: ``push(lst, n, word, base, stride) -> n'``.
    Pooled: ``push(lst, cnt, n, words, nwin, base, stride) -> n'`` where the word is the
    OR of ``words[0:nwin]`` (the spikes of a pooling window) and ``cnt`` receives,
    per appended entry, how many of those words have the bit set (as the float dtype of cnt).
    Only the low ``16·nchunks`` bits are read. The push may write up to :data:`PUSH_SLACK`
    entries past the new end. The code is that of the target's path (:mod:`.isa`); the list
    is the same on every path.
    """
    nbits = 16 * nchunks

    def codegen_common(context, builder, lst_ty, lst, n, word, base, stride, cnt_ty=None, cnt=None, counts=None):
        from .isa import simd_path

        i32 = ir.IntType(32)
        data = _array_data(context, builder, lst_ty, lst)
        b32, s32 = builder.trunc(base, i32), builder.trunc(stride, i32)
        cdata = fty = None
        if cnt is not None:
            fty = context.get_value_type(cnt_ty.dtype)
            cdata = _array_data(context, builder, cnt_ty, cnt)
        path = simd_path()
        if path == "avx512":
            return _push_compress16(context, builder, data, n, word, nbits, b32, s32, cdata, fty, counts)
        return _push_table8(context, builder, data, n, word, nbits, b32, s32, cdata, fty, counts,
                            popcnt_table=(path == "portable"))

    if not pooled:
        def push(typingctx, lst, n, word, base, stride):
            sig = types.int64(lst, types.int64, types.uint64, types.int64, types.int64)

            def codegen(context, builder, signature, args):
                lst_, n_, word_, base_, stride_ = args
                return codegen_common(context, builder, signature.args[0], lst_, n_, word_, base_, stride_)
            return sig, codegen
        return intrinsic(push)

    def push_pooled(typingctx, lst, cnt, n, words, nwin, base, stride):
        sig = types.int64(lst, cnt, types.int64, words, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            lst_, cnt_, n_, words_, nwin_, base_, stride_ = args
            i64 = ir.IntType(64)
            wdata = _array_data(context, builder, signature.args[3], words_)
            # the window has at most MAXWIN words; words beyond nwin are read as 0
            ws = []
            anyw = ir.Constant(i64, 0)
            for j in range(_MAXWIN):
                inwin = builder.icmp_signed("<", ir.Constant(i64, j), nwin_)
                wj = builder.load(builder.gep(wdata, [ir.Constant(i64, j)], inbounds=True))
                wj = builder.select(inwin, wj, ir.Constant(i64, 0))
                ws.append(wj)
                anyw = builder.or_(anyw, wj)
            return codegen_common(context, builder, signature.args[0], lst_, n_, anyw, base_, stride_,
                                  signature.args[1], cnt_, ws)
        return sig, codegen
    return intrinsic(push_pooled)


#: Largest pooling window (k·k spike words) the pooled push intrinsics read; larger pools take
#: the dense path (the one definition; the simulator reads it from here).
MAX_POOL_WINDOW = _MAXWIN = 4

push_bits16, push_bits32, push_bits64 = (_make_push(k, False) for k in (1, 2, 4))
push_pooled16, push_pooled32, push_pooled64 = (_make_push(k, True) for k in (1, 2, 4))


def _make_accumulate(BW: int, R: int, scaled: bool):
    """Intrinsic ``acc(out, obase, ostride, nrows, w, col, offs, cnt, start, r, sstride, s0, s1, zrow,
    scale, bias, has_bias, init, final)``.

    For each of the rows i < nrows (at most R), row ``r + i`` of the list table: entries
    ``offs[a : b]`` with ``a = start[(r+i)·sstride + s0]``, ``b = start[(r+i)·sstride + s1]``.
    Its block of BW outputs ``o = out[obase + i·ostride : + BW]`` becomes::

        acc = (o if init else +0) + Σ_k (cnt[k] ·) w[offs[k] + col : + BW]    (one add per entry, in order)
        o = scale·acc (+ bias[col : col + BW] if has_bias)   if final,   else acc

    so a row's list can be summed in consecutive pieces (a partial sum stored and
    reloaded is exact) with the same arithmetic as in one piece. With R > 1 the rows
    are summed side by side (independent dependency chains); a row whose piece is
    shorter than the longest adds ``w[zrow : zrow + BW]`` (zeros), which leaves its sum
    unchanged. ``start`` must be readable for rows r … r+R-1.
    """

    def acc(typingctx, out, obase, ostride, nrows, w, col, offs, cnt, start, r, sstride, s0, s1, zrow, scale, bias,
            has_bias, init, final):
        i64t = types.int64
        sig = types.void(out, i64t, i64t, i64t, w, i64t, offs, cnt, start, i64t, i64t, i64t, i64t, i64t, scale, bias,
                         types.boolean, types.boolean, types.boolean)

        def codegen(context, builder, signature, args):
            (out_, obase_, ostride_, nrows_, w_, col_, offs_, cnt_, start_, r_, sstride_, s0_, s1_, zrow_, scale_,
             bias_, hasb_, init_, final_) = args
            A = signature.args
            i64 = ir.IntType(64)
            fty = context.get_value_type(A[0].dtype)
            vty = ir.VectorType(fty, BW)
            vptr = vty.as_pointer()
            odata = _array_data(context, builder, A[0], out_)
            wdata = _array_data(context, builder, A[4], w_)
            fdata = _array_data(context, builder, A[6], offs_)
            cdata = _array_data(context, builder, A[7], cnt_) if scaled else None
            sdata = _array_data(context, builder, A[8], start_)
            wcol = builder.gep(wdata, [col_], inbounds=True)
            zero = ir.Constant(i64, 0)
            zvec = ir.Constant(vty, None)   # +0.0
            beg, n, optrs, acc0, live_row = [], [], [], [], []
            kmax = zero
            for i in range(R):
                ci = ir.Constant(i64, i)
                ok = builder.icmp_signed("<", ci, nrows_) if R > 1 else None
                row = builder.add(r_, ci)
                if R > 1:   # rows past nrows read row r's entries and output (never written)
                    row = builder.select(ok, row, r_)
                rb = builder.mul(row, sstride_)
                a = builder.load(builder.gep(sdata, [builder.add(rb, s0_)]))
                b = builder.load(builder.gep(sdata, [builder.add(rb, s1_)]))
                ni = builder.sub(b, a)
                oidx = builder.add(obase_, builder.mul(ostride_, ci))
                if R > 1:
                    ni = builder.select(ok, ni, zero)
                    oidx = builder.select(ok, oidx, obase_)
                optr = builder.bitcast(builder.gep(odata, [oidx], inbounds=True), vptr)
                beg.append(a)
                n.append(ni)
                optrs.append(optr)
                live_row.append(ok)
                acc0.append(builder.select(init_, builder.load(optr, align=1), zvec))
                kmax = builder.select(builder.icmp_signed(">", ni, kmax), ni, kmax)
            pre = builder.basic_block
            loop = builder.append_basic_block("acc.loop")
            body = builder.append_basic_block("acc.body")
            done = builder.append_basic_block("acc.done")
            builder.branch(loop)
            builder.position_at_end(loop)
            k = builder.phi(i64)
            k.add_incoming(zero, pre)
            accs = []
            for i in range(R):
                ph = builder.phi(vty)
                ph.add_incoming(acc0[i], pre)
                accs.append(ph)
            builder.cbranch(builder.icmp_signed("<", k, kmax), body, done)
            builder.position_at_end(body)
            for i in range(R):
                j = builder.add(beg[i], k)
                # past the end of its piece a row reads entries after it (the list buffer has a
                # row's worth of slack) but uses the zero row, and a count from its own piece
                off = builder.zext(builder.load(builder.gep(fdata, [j], inbounds=True)), i64)
                if R > 1:
                    live = builder.icmp_signed("<", k, n[i])
                    off = builder.select(live, off, zrow_)
                    j = builder.select(live, j, beg[i])
                wv = builder.load(builder.bitcast(builder.gep(wcol, [off], inbounds=True), vptr), align=1)
                if scaled:
                    c = builder.load(builder.gep(cdata, [j], inbounds=True))
                    wv = builder.fmul(_splat(builder, vty, c), wv)
                accs[i].add_incoming(builder.fadd(accs[i], wv), body)
            k.add_incoming(builder.add(k, ir.Constant(i64, 1)), body)
            builder.branch(loop)
            builder.position_at_end(done)
            sv = _splat(builder, vty, scale_)
            bdata = _array_data(context, builder, A[15], bias_)
            bv = builder.load(builder.bitcast(builder.gep(bdata, [col_], inbounds=True), vptr), align=1)
            for i in range(R):
                res = builder.fmul(sv, accs[i])
                res = builder.select(hasb_, builder.fadd(res, bv), res)
                res = builder.select(final_, res, accs[i])
                if R > 1:
                    with builder.if_then(live_row[i]):
                        builder.store(res, optrs[i], align=1)
                else:
                    builder.store(res, optrs[i], align=1)
            return context.get_dummy_value()

        return sig, codegen

    return intrinsic(acc)


ACC = {(BW, scaled): _make_accumulate(BW, R, scaled) for BW, R in BLOCKS for scaled in (False, True)}
acc256, acc128, acc64, acc32, acc16, acc1 = (ACC[(bw, False)] for bw, _ in BLOCKS)
acc256s, acc128s, acc64s, acc32s, acc16s, acc1s = (ACC[(bw, True)] for bw, _ in BLOCKS)


# --------------------------------------------------------------------------- IF step on 16 neurons
def _vec_ptr(builder, base, idx, vty):
    return builder.bitcast(builder.gep(base, [idx], inbounds=True), vty.as_pointer())


@intrinsic
def if_step16(typingctx, v, vb, cur, cb, theta):
    """One IF step (Eqs. 2-3, reset by subtraction) of the 16 neurons ``v[vb : vb+16]`` with
    inputs ``cur[cb : cb+16]``, as one vector of each: ``u = v + x``; spike ``s = u ≥ θ``
    (:data:`srp_np.neuron.FIRE_CMP`); ``v = u − θ`` where s, else u. Returns the spikes as
    bits 0-15 of a uint64. The same operations, in the same precision, as the scalar
    :func:`.rules.if_update`."""
    if v.dtype != cur.dtype:
        return None
    sig = types.uint64(v, types.uint64, cur, types.uint64, v.dtype)

    def codegen(context, builder, signature, args):
        v_, vb_, cur_, cb_, th_ = args
        fty = context.get_value_type(signature.args[0].dtype)
        vty = ir.VectorType(fty, 16)
        vdata = _array_data(context, builder, signature.args[0], v_)
        cdata = _array_data(context, builder, signature.args[2], cur_)
        vp = _vec_ptr(builder, vdata, vb_, vty)
        u = builder.fadd(builder.load(vp, align=1), builder.load(_vec_ptr(builder, cdata, cb_, vty), align=1))
        thv = _splat(builder, vty, th_)
        s = builder.fcmp_ordered(FIRE_CMP, u, thv)
        builder.store(builder.select(s, builder.fsub(u, thv), u), vp, align=1)
        return builder.zext(builder.bitcast(s, ir.IntType(16)), ir.IntType(64))

    return sig, codegen


def _make_keep16(op: str):
    """An intrinsic: the SRP keep test ``v(τ) op thr`` of the 16 neurons ``v[vb : vb+16]`` as
    bits 0-15 of a uint64 (one vector compare)."""

    def keep16(typingctx, v, vb, thr):
        sig = types.uint64(v, types.uint64, v.dtype)

        def codegen(context, builder, signature, args):
            v_, vb_, thr_ = args
            fty = context.get_value_type(signature.args[0].dtype)
            vty = ir.VectorType(fty, 16)
            vdata = _array_data(context, builder, signature.args[0], v_)
            s = builder.fcmp_ordered(op, builder.load(_vec_ptr(builder, vdata, vb_, vty), align=1),
                                     _splat(builder, vty, thr_))
            return builder.zext(builder.bitcast(s, ir.IntType(16)), ir.IntType(64))

        return sig, codegen

    return intrinsic(keep16)


#: The keep tests of the two mask rules (:data:`srp_np.neuron.MASK_CMP`): ``v > ε·θ`` and ``v ≥ 0``.
keep16_authors = _make_keep16(MASK_CMP["authors"])
keep16_paper = _make_keep16(MASK_CMP["paper"])
