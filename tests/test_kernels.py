"""Unit tests of the Numba kernels against NumPy, and invariance of the simulator
under batch size, chunking, thread count and kernel dispatch."""
import numba
import numpy as np
import pytest

from srp_np import ops
from srp_np.engine import execute as execmod
from srp_np.kernels import ALIGN, aligned, aligned_empty
from srp_np.warmup import cache_is_warm, warmup
from srp_np.kernels.gather import gather_bits, gather_if_bits, gather_weights, list_capacity
from srp_np.kernels.records import (ConvGeom, FusedScratch, GatherScratch, IFRecord, Residual, SpikeInput,
                                    SrpParams, Weights)
from srp_np.kernels.rules import AUTHORS
from srp_np.kernels.spikes import bits_to_dense, if_bits, if_bits_fast, pool_bits_dense, pooled_counts
from srp_np.neuron import if_init, if_step, srp_keep_mask
from srp_np.simulator import Simulator

from conftest import make_model


def pack(dense):
    """Bool F×P×C → F×P×⌈C/64⌉ uint64 bit sets."""
    F, P, C = dense.shape
    NW = (C + 63) // 64
    bits = np.zeros((F, P, NW), np.uint64)
    for c in range(C):
        bits[:, :, c // 64] |= dense[:, :, c].astype(np.uint64) << np.uint64(c % 64)
    return bits


def unpack(bits, C):
    F, P, NW = bits.shape
    out = np.zeros((F, P, C), bool)
    for c in range(C):
        out[:, :, c] = (bits[:, :, c // 64] >> np.uint64(c % 64)) & np.uint64(1)
    return out


def random_spikes(rng, F, H, W, C, rate=0.2):
    return rng.random((F, H * W, C)) < rate


# ----------------------------------------------------------------------------- IF
def if_numpy(cur, static, B, S, tau, theta, eps):
    """IF + SRP with the reference's pure functions; cur F×N (or B×N when static)."""
    N = cur.shape[1]
    spikes = np.zeros((B * S, N), bool)
    state = if_init((B, N), theta, cur.dtype)
    mask = None
    for t in range(S):
        if t == tau and tau > 0:
            mask = srp_keep_mask(state.v, theta, eps)
            state = if_init((B, N), theta, cur.dtype)
        x = cur if static else cur.reshape(B, S, N)[:, t]
        _, s, state = if_step(x, state, theta, mask)
        spikes.reshape(B, S, N)[:, t] = s
    return spikes


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("static", [False, True])
@pytest.mark.parametrize("tau", [0, 3])
@pytest.mark.parametrize("P,C,pblock", [(6, 70, 1), (6, 70, 4), (1, 130, 1), (9, 16, 9)])
def test_if_kernels_match_numpy(dtype, static, tau, P, C, pblock):
    rng = np.random.default_rng(P * C + tau)
    B, S, N = 3, tau + 5, P * C
    theta, eps = dtype(0.7), 1e-3
    cur = (rng.standard_normal((B if static else B * S, N)) * 0.5).astype(dtype)
    want = if_numpy(cur, static, B, S, tau, theta, eps)
    NW = (C + 63) // 64
    half, keep = theta / dtype(2), dtype(eps) * theta
    b1, c1 = np.empty((B * S, P, NW), np.uint64), np.empty((B * S, P), np.int32)
    if_bits_fast(cur, static, B, S, SrpParams(tau, theta, half, keep, AUTHORS), P, C, pblock, b1, c1)
    b2, c2 = np.empty_like(b1), np.empty_like(c1)
    rec = IFRecord(np.zeros((B, N), dtype), np.ones((B, N), bool), np.zeros((B, N), np.int32),
                   np.zeros((B, N), np.int32), np.zeros((B, N)))
    if_bits(cur, static, B, S, SrpParams(tau, theta, half, keep, AUTHORS), P, C, pblock, True, b2, c2, rec)
    got = unpack(b1, C).reshape(B * S, N)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(c1.sum(1), want.sum(1))
    st2 = want.reshape(B, S, N)[:, tau:].sum(1)
    np.testing.assert_array_equal(rec[3], st2)


# ----------------------------------------------------------------------------- conv / linear / pool
def fanout_sops(nz, shape_in, k, stride, pad, Cout, Hout, Wout):
    """Σ over nonzero inputs of their exact fan-out (Cout × taps landing inside)."""
    F, Cin, H, W = shape_in
    ones = np.ones((1, Cin, k, k))
    # each output position counts the nonzero inputs of its window
    cnt = ops.conv2d(nz.astype(np.float64), ones, None, stride, pad)
    return cnt.reshape(F, -1).sum(1) * Cout


KB = 256 * 1024


def gather_workspace(kh, kw, cin, rows, dtype):
    nt = numba.config.NUMBA_NUM_THREADS
    cap = list_capacity(kh, kw, cin)
    return GatherScratch(np.empty((nt, cap), np.uint32), np.empty((nt, cap), dtype), np.empty((nt, cap), np.int64),
                         np.empty((nt, 4), np.uint64))


# Cout covers every accumulator block (256, 128, 64, 32 with 2 rows, 16 with 4 rows) and the
# 1-column tail; Cin covers the 16-, 32- and 64-bit list builders and several words.
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("Cin,Cout,H,k,stride,pad,pool", [
    (5, 7, 6, 3, 1, 1, 1), (70, 12, 5, 3, 1, 1, 1), (8, 16, 7, 3, 2, 1, 1), (8, 16, 6, 1, 2, 0, 1),
    (6, 9, 8, 3, 1, 1, 2), (6, 9, 9, 3, 1, 0, 2), (6, 4, 5, 3, 1, 2, 1), (30, 40, 6, 3, 1, 1, 1),
    (16, 64, 6, 3, 2, 1, 1), (130, 128, 4, 3, 1, 1, 2), (40, 256, 3, 3, 1, 1, 1), (20, 300, 4, 3, 1, 1, 1)])
@pytest.mark.parametrize("fgroup,ncolu,kblock", [(4, 1, KB), (1, 3, 1)])   # kblock 1: one segment per group
def test_gather_conv_matches_numpy(dtype, Cin, Cout, H, k, stride, pad, pool, fgroup, ncolu, kblock):
    rng = np.random.default_rng(Cin * 100 + H)
    F = 4
    spikes = random_spikes(rng, F, H, H, Cin, 0.3)
    theta = dtype(0.8)
    w = rng.standard_normal((Cout, Cin, k, k)).astype(dtype)
    b = rng.standard_normal(Cout).astype(dtype)
    x = spikes.reshape(F, H, H, Cin).transpose(0, 3, 1, 2).astype(dtype) * theta
    Hin = H // pool
    if pool > 1:
        x = ops.avgpool2d(x, pool, pool)
    want = ops.conv2d(x, w, b, stride, pad)
    Hout = want.shape[2]
    w_hwio = np.ascontiguousarray(w.transpose(2, 3, 1, 0))
    out = np.full((F, Hout * Hout * Cout), np.nan, dtype)
    sops = np.empty(F, np.int64)
    scale = theta / dtype(pool * pool)
    gather_bits(SpikeInput(pack(spikes), H, pool, scale), Weights(gather_weights(w_hwio), b, True),
                ConvGeom(k, k, Cin, Cout, stride, pad, Hin, Hin, Hout, Hout), fgroup, ncolu, kblock, out, sops,
                gather_workspace(k, k, Cin, fgroup * Hout * Hout, dtype))
    got = out.reshape(F, Hout, Hout, Cout).transpose(0, 3, 1, 2)
    tol = 1e-12 if dtype == np.float64 else 1e-4
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)
    np.testing.assert_array_equal(sops, fanout_sops(x != 0, x.shape, k, stride, pad, Cout, Hout, Hout))


def test_gather_sums_in_tap_then_channel_order():
    """Each output is the sequential float sum over (tap, channel) from +0, then scale·Σ + bias:
    the exact arithmetic of the earlier scatter kernels (results bit-identical to them)."""
    rng = np.random.default_rng(11)
    F, H, Cin, Cout, k = 3, 5, 70, 48, 3
    spikes = random_spikes(rng, F, H, H, Cin, 0.4)
    w = (rng.standard_normal((k, k, Cin, Cout)) * 1e3).astype(np.float32)   # large: rounding shows order
    b = rng.standard_normal(Cout).astype(np.float32)
    outs = []
    for kblock in (KB, 1):     # the whole list at once, or one segment at a time (partial sums continued)
        out = np.empty((F, H * H * Cout), np.float32)
        sops = np.empty(F, np.int64)
        gather_bits(SpikeInput(pack(spikes), H, 1, np.float32(0.7)), Weights(gather_weights(w), b, True),
                    ConvGeom(k, k, Cin, Cout, 1, 1, H, H, H, H), 2, 2, kblock, out, sops,
                    gather_workspace(k, k, Cin, 2 * H * H, np.float32))
        outs.append(out)
    s = spikes.reshape(F, H, H, Cin)
    want = np.empty((F, H, H, Cout), np.float32)
    for f in range(F):
        for oy in range(H):
            for ox in range(H):
                acc = np.zeros(Cout, np.float32)
                for ky in range(k):
                    for kx in range(k):
                        iy, ix = oy - 1 + ky, ox - 1 + kx
                        if 0 <= iy < H and 0 <= ix < H:
                            for c in np.flatnonzero(s[f, iy, ix]):
                                acc = acc + w[ky, kx, c]
                want[f, oy, ox] = np.float32(0.7) * acc + b
    for out in outs:
        np.testing.assert_array_equal(out.reshape(F, H, H, Cout), want)


@pytest.mark.parametrize("n_in,n_out", [(70, 33), (200, 10), (64, 300), (20, 4096)])
def test_gather_linear_matches_numpy(n_in, n_out):
    rng = np.random.default_rng(n_in)
    F = 5
    spikes = rng.random((F, 1, n_in)) < 0.3
    w = rng.standard_normal((n_out, n_in))
    b = rng.standard_normal(n_out)
    want = ops.linear(spikes[:, 0] * 0.9, w, b)
    out = np.empty((F, n_out))
    sops = np.empty(F, np.int64)
    gather_bits(SpikeInput(pack(spikes), 1, 1, 0.9), Weights(gather_weights(np.ascontiguousarray(w.T)), b, True),
                ConvGeom(1, 1, n_in, n_out, 1, 0, 1, 1, 1, 1), F, 4, KB, out, sops, gather_workspace(1, 1, n_in, F, np.float64))
    np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(sops, spikes.sum((1, 2)) * n_out)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("tau,pool,res,pblock", [(0, 1, 0, 36), (3, 1, 0, 7), (3, 2, 0, 36), (3, 1, 1, 5), (2, 1, 2, 36),
                                                (2, 1, 2, 10)])
def test_gather_if_equals_gather_then_if(dtype, tau, pool, res, pblock):
    """The fused conv (→ residual add) → IF kernel gives the same spikes as the kernels in sequence."""
    rng = np.random.default_rng(tau + 10 * pool + 100 * res)
    B, S, H, Cin, Cout, k = 3, 6, 6, 20, 80, 3
    Hs = H * pool
    F, P = B * S, H * H
    bits = pack(random_spikes(rng, F, Hs, Hs, Cin, 0.25))
    w = gather_weights((rng.standard_normal((k, k, Cin, Cout)) * 0.5).astype(dtype))
    b = (rng.standard_normal(Cout) * 0.1).astype(dtype)
    th, eps = dtype(1.0), dtype(1e-3)
    scale = dtype(0.9) / dtype(pool * pool)
    geom = (k, k, Cin, Cout, 1, 1, H, H, H, H)
    cur = np.empty((F, P * Cout), dtype)
    s1 = np.empty(F, np.int64)
    gather_bits(SpikeInput(bits, Hs, pool, scale), Weights(w, b, True), ConvGeom(*geom), 2, 1, KB, cur, s1,
                gather_workspace(k, k, Cin, 2 * P, dtype))
    res_theta, res_bits, res_dense = dtype(0), np.zeros((1, 1, 1), np.uint64), np.zeros((1, 1), dtype)
    if res == 1:                          # identity shortcut: spikes worth 0.7
        shortcut = random_spikes(rng, F, H, H, Cout, 0.3)
        res_theta, res_bits = dtype(0.7), pack(shortcut)
        cur += shortcut.reshape(F, -1) * res_theta
    elif res == 2:                        # dense shortcut
        res_dense = rng.standard_normal((F, P * Cout)).astype(dtype)
        cur += res_dense
    NW = (Cout + 63) // 64
    b1, c1 = np.empty((F, P, NW), np.uint64), np.empty((F, P), np.int32)
    srp = SrpParams(tau, th, th / 2, eps * th, AUTHORS)
    if_bits_fast(cur, False, B, S, srp, P, Cout, 4, b1, c1)
    nt = numba.config.NUMBA_NUM_THREADS
    b2, c2, s2 = np.empty_like(b1), np.empty_like(c1), np.empty(F, np.int64)
    gather_if_bits(SpikeInput(bits, Hs, pool, scale), Weights(w, b, True), ConvGeom(*geom), KB, B, S, srp, pblock,
                   b2, c2, s2, gather_workspace(k, k, Cin, S * P, dtype),
                   FusedScratch(np.empty((nt, S * P * Cout), dtype), np.empty((nt, P * Cout), dtype),
                                np.empty((nt, P * NW), np.uint64)),
                   Residual(res, res_theta, res_bits, res_dense))
    np.testing.assert_array_equal(b1, b2)
    np.testing.assert_array_equal(c1, c2)
    np.testing.assert_array_equal(s1, s2)
    assert c1.sum() > 0


def test_aligned_buffers():
    for shape, dt in [((3, 5), np.float32), ((7,), np.uint64), ((1000, 3), np.float64)]:
        a = aligned_empty(shape, dt)
        assert a.shape == shape and a.dtype == dt and a.ctypes.data % ALIGN == 0 and a.flags.c_contiguous
    x = np.arange(10.0)[1:]
    y = aligned(x)
    assert y.ctypes.data % ALIGN == 0
    np.testing.assert_array_equal(x, y)
    assert aligned(y) is y


def test_bits_to_dense_pool_and_counts():
    rng = np.random.default_rng(3)
    F, H, C, k = 3, 7, 70, 2
    spikes = random_spikes(rng, F, H, H, C, 0.3)
    bits = pack(spikes)
    dense = np.empty((F, H * H * C))
    bits_to_dense(bits, C, 0.5, dense, False)
    np.testing.assert_array_equal(dense, spikes.reshape(F, -1) * 0.5)
    bits_to_dense(bits, C, 0.5, dense, True)
    np.testing.assert_array_equal(dense, spikes.reshape(F, -1) * 1.0)
    Ho = H // k
    pooled = np.empty((F, Ho * Ho * C))
    pool_bits_dense(bits, H, C, k, Ho, Ho, 0.5, pooled)
    x = spikes.reshape(F, H, H, C).transpose(0, 3, 1, 2) * 0.5
    want = ops.avgpool2d(x, k, k)
    np.testing.assert_allclose(pooled.reshape(F, Ho, Ho, C).transpose(0, 3, 1, 2), want, rtol=1e-15)
    cnt = np.empty(F, np.int64)
    pooled_counts(bits, H, k, Ho, Ho, cnt)
    np.testing.assert_array_equal(cnt, spikes.reshape(F, H, H, C)[:, :Ho * k, :Ho * k].sum((1, 2, 3)))


# ----------------------------------------------------------------------------- simulator invariances
def _same(a, b):
    np.testing.assert_array_equal(a.outputs, b.outputs)
    for key in ("spikes", "spikes_stage1", "sops", "sops_stage1"):
        da, db = getattr(a, key), getattr(b, key)
        assert da.keys() == db.keys()
        for k in da:
            np.testing.assert_array_equal(da[k], db[k], err_msg=f"{key}[{k}]")


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("min_work", [0, None])
def test_batch_size_chunking_and_threads_invariance(kind, dtype, min_work, monkeypatch):
    if min_work is not None:            # every kernel call parallel
        monkeypatch.setattr(execmod, "PARALLEL_MIN_WORK", min_work)
    model = make_model(kind, input_shape=(3, 16, 16), seed=4)
    x = np.random.default_rng(9).random((7, 3, 16, 16))
    sim = Simulator(model, dtype)
    full = sim.run(x, 3, 4)
    one_by_one = type(full).concatenate([sim.run(x[i:i + 1], 3, 4) for i in range(len(x))])
    _same(full, one_by_one)
    small_chunks = Simulator(model, dtype, chunk_bytes=1).run(x, 3, 4)      # one image per chunk
    _same(full, small_chunks)
    n = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = sim.run(x, 3, 4)
    finally:
        numba.set_num_threads(n)
    _same(full, single)


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_dispatch_and_record_do_not_change_results(kind, monkeypatch):
    model = make_model(kind, input_shape=(3, 16, 16), seed=5)
    x = np.random.default_rng(2).random((4, 3, 16, 16))
    sim = Simulator(model, np.float64)
    base = sim.run(x, 2, 5)
    _same(base, sim.run(x, 2, 5, record=True))
    monkeypatch.setattr(execmod, "PARALLEL_MIN_WORK", 0)
    _same(base, sim.run(x, 2, 5))
    monkeypatch.setattr(execmod, "PARALLEL_MIN_WORK", float("inf"))
    _same(base, sim.run(x, 2, 5))


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("fused", [False, True])
def test_no_record_path_matches_reference(kind, fused):
    """The fast (record=False) IF path, and the fused conv → IF kernel used for
    batches of at least 2 × threads images, agree with the dense reference too."""
    from srp_np.reference import simulate_dense
    model = make_model(kind, input_shape=(3, 12, 12), seed=8)
    n = 2 * numba.get_num_threads() + 1 if fused else 1
    x = np.random.default_rng(4).random((n, 3, 12, 12))
    dense = simulate_dense(model, x, 3, 4)
    sim = Simulator(model, np.float64).run(x, 3, 4)
    for q in model.qcfs_nodes:
        name = q["name"]
        np.testing.assert_array_equal(sim.spikes[name], dense.spikes[name].reshape(n, -1).sum(1))
        np.testing.assert_array_equal(sim.spikes_stage1[name], dense.spikes_stage1[name].reshape(n, -1).sum(1))
    np.testing.assert_allclose(sim.outputs, dense.outputs, rtol=1e-10, atol=1e-10)


def test_warmup_and_cache_flag():
    warmup(np.float64)
    assert isinstance(cache_is_warm(), bool)


def test_warmup_compiles_every_kernel(tmp_path):
    """After warmup() in an empty Numba cache the cache is complete: every dispatcher the
    simulator calls has compiled code on disk (else the first real run would compile
    without saying so)."""
    import subprocess
    import sys
    code = ("import numpy as np; from srp_np.warmup import warmup, cache_is_warm; "
            "assert not cache_is_warm(np.float32); warmup(np.float32); "
            "assert cache_is_warm(np.float32)")
    env = dict(__import__("os").environ, NUMBA_CACHE_DIR=str(tmp_path))
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)
    # a later process compiles nothing: every kernel it calls loads from the disk cache
    # (Numba's public dispatcher statistics: cache misses)
    code = ("import numpy as np, srp_np.engine.execute as ex, srp_np.ops as ops, srp_np.kernels.events as ev; "
            "from srp_np.testing import random_resnet, random_vgg; from srp_np import Simulator; "
            "x = np.random.default_rng(0).random((9, 3, 8, 8)); "
            "[Simulator(m, np.float32).run(x, 2, 2) for m in (random_vgg((3, 8, 8), widths=(4,), fc=8, calibrate_x=x), "
            "random_resnet((3, 8, 8), widths=(4, 8), calibrate_x=x))]; "
            "ds = [ex.if_bits_fast, ex.gather_bits, ex.gather_if_bits, ex.pooled_counts, ex.bits_to_dense, ops._im2col]; "
            "miss = {d.__name__: dict(d.stats.cache_misses) for d in ds if d.stats.cache_misses}; "
            "assert not miss, miss")
    subprocess.run([sys.executable, "-c", code], check=True, env=env, timeout=600)


def test_cache_is_warm_is_per_target():
    """Kernels compiled for this CPU do not make the cache warm for another Numba target (else a
    run with NUMBA_CPU_NAME / NUMBA_CPU_FEATURES would compile without saying so)."""
    import os
    import subprocess
    import sys
    warmup(np.float32)
    assert cache_is_warm(np.float32)
    code = "from srp_np.warmup import cache_is_warm; print(cache_is_warm())"
    env = dict(os.environ, NUMBA_CPU_NAME="nehalem", NUMBA_CPU_FEATURES="")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.stdout.strip() == "False", out.stderr


def test_workspace_reuse_release_and_pickle():
    """Buffers reused across runs, released, or dropped by pickling never change results."""
    import pickle
    model = make_model("resnet", input_shape=(3, 12, 12), seed=6)
    x = np.random.default_rng(3).random((5, 3, 12, 12))
    sim = Simulator(model, np.float32)
    first = sim.run(x, 2, 3)
    sim.run(x[::-1].copy(), 2, 3)                      # leave other data in the workspace
    _same(first, type(first).concatenate([sim.run(x[i:i + 1], 2, 3) for i in range(5)]))
    sim.release_workspace()
    _same(first, sim.run(x, 2, 3))
    _same(first, pickle.loads(pickle.dumps(sim)).run(x, 2, 3))


def test_cache_is_flushed_when_the_intrinsics_change(tmp_path, monkeypatch):
    """Kernels inlining simd.py's intrinsics lose their disk cache when simd.py / isa.py change
    (Numba would otherwise keep code compiled from the old intrinsics: it keys a kernel's cache
    by the kernel's own source file)."""
    import importlib
    import sys

    from srp_np.kernels import flush_if_intrinsics_changed

    (tmp_path / "mod_cached.py").write_text("from numba import njit\n\n@njit(cache=True)\ndef f(x):\n"
                                            "    return x + 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import numba.core.config
    monkeypatch.setattr(numba.core.config, "CACHE_DIR", str(tmp_path / "cache"))
    mod = importlib.import_module("mod_cached")
    try:
        assert mod.f(1) == 2
        index = lambda: mod.f._cache._cache_file._load_index()
        assert index()
        flush_if_intrinsics_changed(mod.f)          # no stamp yet: flushed, stamp written
        assert not index()
        sig = mod.f.signatures[0]
        mod.f._cache.save_overload(sig, mod.f.overloads[sig])     # as a compile would
        assert index()
        flush_if_intrinsics_changed(mod.f)          # same intrinsics: kept
        assert index()
        stamp = next((tmp_path / "cache").rglob("*.stamp"))
        stamp.write_text("an older version\n")
        flush_if_intrinsics_changed(mod.f)          # intrinsics changed: flushed
        assert not index()
    finally:
        sys.modules.pop("mod_cached", None)
