"""SIMD building blocks for the gather kernels, written as Numba intrinsics.

Two operations dominate an event-driven layer, and both defeat LLVM's
auto-vectoriser when written as plain Numba loops:

* **Turning a spike word into a list of weight-row offsets.** A
  count-trailing-zeros loop has a data-dependent trip count, so the branch
  predictor misses about once per word. :func:`push_bits` instead appends
  the offsets of all set bits with masked *compress-stores* of 16 lanes
  (``llvm.masked.compressstore``; one instruction per 16 channels on
  AVX-512, a scalar expansion elsewhere): no branches.
* **Summing the weight rows of a list into a block of outputs.** With the
  accumulator in memory every 16 synaptic operations cost a load, an add and
  a store; a Numba loop over local scalars is not vectorised at all.
  :func:`accumulate` keeps a block of BW outputs of R rows in vector
  registers (LLVM ``<BW x float>`` values) for the whole list.

Both preserve the summation order of a sequential loop exactly (one add per
list entry, in list order, starting from +0), so results are bit-identical to
``for k: acc += w[offs[k]]``.
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

#: Output block widths (elements) of :func:`accumulate`, widest first, and rows per call.
BLOCKS = ((256, 1), (128, 1), (64, 1), (32, 2), (16, 4), (1, 8))


def _array_data(context, builder, arrty, value):
    return cgutils.create_struct_proxy(arrty)(context, builder, value=value).data


def _splat(builder, vty, x):
    i32 = ir.IntType(32)
    v = builder.insert_element(ir.Constant(vty, None), x, ir.Constant(i32, 0))
    return builder.shuffle_vector(v, ir.Constant(vty, None), ir.Constant(ir.VectorType(i32, vty.count), [0] * vty.count))


def _make_push(nchunks: int, pooled: bool):
    """Intrinsic appending ``base + c·stride`` for each set bit c of a word (c ascending).

    Non-pooled: ``push(lst, n, word, base, stride) -> n'``.
    Pooled: ``push(lst, cnt, n, words, nwin, base, stride) -> n'`` where the word is the
    OR of ``words[0:nwin]`` (the spikes of a pooling window) and ``cnt`` receives,
    per appended entry, how many of those words have the bit set (as the float dtype of cnt).
    Only the low ``16·nchunks`` bits are read.
    """

    def codegen_common(context, builder, lst_ty, lst, n, word, base, stride, cnt_ty=None, cnt=None, counts=None):
        i32, i64 = ir.IntType(32), ir.IntType(64)
        v16 = ir.VectorType(i32, 16)
        m16 = ir.VectorType(ir.IntType(1), 16)
        mod = builder.module
        st = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [v16, i32.as_pointer(), m16]),
                                            "llvm.masked.compressstore.v16i32")
        data = _array_data(context, builder, lst_ty, lst)
        iota = ir.Constant(v16, list(range(16)))
        b32, s32 = builder.trunc(base, i32), builder.trunc(stride, i32)
        sv = _splat(builder, v16, s32)
        if cnt is not None:
            fty = context.get_value_type(cnt_ty.dtype)
            vf = ir.VectorType(fty, 16)
            fptr = fty.as_pointer()
            stf = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [vf, fptr, m16]),
                                                 f"llvm.masked.compressstore.v16{'f32' if fty == ir.FloatType() else 'f64'}")
            cdata = _array_data(context, builder, cnt_ty, cnt)
        for ch in range(nchunks):
            bits = builder.trunc(builder.lshr(word, ir.Constant(i64, 16 * ch)), ir.IntType(16))
            mask = builder.bitcast(bits, m16)
            first = builder.add(b32, builder.mul(ir.Constant(i32, 16 * ch), s32))
            vals = builder.add(_splat(builder, v16, first), builder.mul(iota, sv))
            builder.call(st, [vals, builder.gep(data, [n], inbounds=True), mask])
            if cnt is not None:
                cv = ir.Constant(vf, None)
                for wj in counts:
                    mj = builder.bitcast(builder.trunc(builder.lshr(wj, ir.Constant(i64, 16 * ch)), ir.IntType(16)), m16)
                    cv = builder.fadd(cv, builder.uitofp(mj, vf))
                builder.call(stf, [cv, builder.gep(cdata, [n], inbounds=True), mask])
            n = builder.add(n, builder.zext(builder.ctpop(bits), i64))
        return n

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


#: Largest pooling window (k·k words) :func:`push_pooled4` handles.
_MAXWIN = 4

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
