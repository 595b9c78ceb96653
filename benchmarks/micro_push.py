"""Micro-benchmark of the list builders: append the offsets of the set bits of 64-bit spike words.

Variants (each checked against a Python list before timing):

* ``cstore``   masked compress-store of 16 lanes (``llvm.masked.compressstore``; session 2's kernels)
* ``compress`` compress in a register + a plain 16-lane store (the ``avx512`` path)
* ``table``    8 lanes from a 256-entry table of set-bit positions, ``ctpop`` (the ``avx2`` path)
* ``tablec``   the same with the popcount from a table too (the ``portable`` path)
* ``cttz``     a count-trailing-zeros loop

Usage::

    python benchmarks/micro_push.py              # every variant on the host, haswell (AVX2) and generic x86-64
    python benchmarks/micro_push.py table 0.15   # one variant, one density, this process's Numba target
"""
import os
import subprocess
import sys
import time
import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent.parent))
from srp_np.kernels.simd import _CNT8, _POS8, _array_data as _arr_ty, _splat  # noqa: E402
from srp_np.kernels.spikes import cttz64 as cttz  # noqa: E402


def _arr(context, builder, ty, val):
    return _arr_ty(context, builder, ty, val)


def make(variant):
    def push(typingctx, lst, n, word, base, stride):
        sig = types.int64(lst, types.int64, types.uint64, types.int64, types.int64)
        def codegen(context, builder, signature, args):
            lst_, n, word, base, stride = args
            i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
            data = _arr(context, builder, signature.args[0], lst_)
            b32, s32 = builder.trunc(base, i32), builder.trunc(stride, i32)
            mod = builder.module
            if variant in ("cstore", "compress"):
                v16 = ir.VectorType(i32, 16); m16 = ir.VectorType(ir.IntType(1), 16)
                if variant == "cstore":
                    fn = cgutils.get_or_insert_function(mod, ir.FunctionType(ir.VoidType(), [v16, i32.as_pointer(), m16]), "llvm.masked.compressstore.v16i32")
                else:
                    fn = cgutils.get_or_insert_function(mod, ir.FunctionType(v16, [v16, m16, v16]), "llvm.experimental.vector.compress.v16i32")
                iota = ir.Constant(v16, list(range(16)))
                sv = _splat(builder, v16, s32)
                for ch in range(4):
                    bits = builder.trunc(builder.lshr(word, ir.Constant(i64, 16 * ch)), ir.IntType(16))
                    mask = builder.bitcast(bits, m16)
                    first = builder.add(b32, builder.mul(ir.Constant(i32, 16 * ch), s32))
                    vals = builder.add(_splat(builder, v16, first), builder.mul(iota, sv))
                    p = builder.gep(data, [n], inbounds=True)
                    if variant == "cstore":
                        builder.call(fn, [vals, p, mask])
                    else:
                        c = builder.call(fn, [vals, mask, ir.Constant(v16, ir.Undefined)])
                        builder.store(c, builder.bitcast(p, v16.as_pointer()), align=4)
                    n = builder.add(n, builder.zext(builder.ctpop(bits), i64))
                return n
            # table
            v8 = ir.VectorType(i32, 8); b8 = ir.VectorType(i8, 8)
            if variant == "tablec":
                ctab = cgutils.global_constant(mod, "srp_cnt8", ir.Constant(ir.ArrayType(i8, 256), bytearray(_CNT8)))
                ctabp = builder.bitcast(ctab, i8.as_pointer())
            tab = cgutils.global_constant(mod, "srp_tab8", ir.Constant(ir.ArrayType(i8, 2048), bytearray(_POS8)))
            tabp = builder.bitcast(tab, i8.as_pointer())
            sv = _splat(builder, v8, s32)
            for ch in range(8):
                byte = builder.trunc(builder.lshr(word, ir.Constant(i64, 8 * ch)), i8)
                ip = builder.gep(tabp, [builder.mul(builder.zext(byte, i64), ir.Constant(i64, 8))], inbounds=True)
                idx = builder.zext(builder.load(builder.bitcast(ip, b8.as_pointer()), align=1), v8)
                first = builder.add(b32, builder.mul(ir.Constant(i32, 8 * ch), s32))
                vals = builder.add(_splat(builder, v8, first), builder.mul(idx, sv))
                p = builder.gep(data, [n], inbounds=True)
                builder.store(vals, builder.bitcast(p, v8.as_pointer()), align=4)
                if variant == "tablec":
                    n = builder.add(n, builder.zext(builder.load(builder.gep(ctabp, [builder.zext(byte, i64)])), i64))
                else:
                    n = builder.add(n, builder.zext(builder.ctpop(byte), i64))
            return n
        return sig, codegen
    return intrinsic(push)

TARGETS = [("host", {}), ("haswell (AVX2)", {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}),
           ("generic x86-64", {"NUMBA_CPU_NAME": "generic"})]
VARIANTS = ["cstore", "compress", "table", "tablec", "cttz"]

if len(sys.argv) < 2:
    dens = ["0.10", "0.15", "0.25"]
    print("ns per 64-bit word | " + " | ".join(f"{v} @{d}" for v in VARIANTS for d in dens[1:2]))
    for label, env in TARGETS:
        cells = []
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, v, "0.15"], env=dict(os.environ, **env),
                                 capture_output=True, text=True)
            cells.append(out.stdout.split()[1] if out.returncode == 0 else "error")
        print(f"{label:18s} | " + " | ".join(cells))
    sys.exit(0)

variant = sys.argv[1]
if variant == "cttz":
    @njit(inline="always")
    def P(lst, n, word, base, stride):
        while word != 0:
            c = np.int64(cttz(word))
            lst[n] = base + c * stride
            n += 1
            word &= word - np.uint64(1)
        return n
else:
    P = make(variant)

@njit
def run(words, lst, reps):
    tot = 0
    for r in range(reps):
        n = 0
        for i in range(words.shape[0]):
            n = P(lst, n, words[i], i * 64 * 16, 16)
        tot += n
    return tot

rng = np.random.default_rng(0)
dens = float(sys.argv[2]) if len(sys.argv) > 2 else 0.15
W = 1024
bits = rng.random((W, 64)) < dens
words = np.zeros(W, np.uint64)
for j in range(64):
    words |= bits[:, j].astype(np.uint64) << np.uint64(j)
lst = np.zeros(W * 64 + 64, np.uint32)
run(words, lst, 1)
ref = []
for i in range(W):
    for j in range(64):
        if bits[i, j]: ref.append(i * 64 * 16 + j * 16)
n = run(words, lst, 1)
assert n == len(ref) and (lst[:n] == np.array(ref)).all(), variant
reps = 2000
t = time.perf_counter(); run(words, lst, reps); dt = time.perf_counter() - t
print(f"{variant:9s} {dt / reps / W * 1e9:6.2f} ns/word")
