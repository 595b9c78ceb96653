"""Every rule of the dynamics, at its exact boundary, in every kernel path.

Dyadic weights, inputs and thresholds (multiples of 1/4, θ ∈ {0.5, 1}) make all
arithmetic exact in float32 and float64, so membranes land *exactly* on θ (firing
rule ``v ≥ θ``), on 0 and on ε·θ at t = τ (the SRP keep rule ``v(τ) > ε·θ``), and
a one-character change to any rule (``≥`` → ``>``, ``>`` → ``≥``, the initial membrane
θ/2, reset by subtraction, the stage boundary t = τ, the output averaging) changes
spikes. The event-driven simulator is compared with the dense reference, spike for
spike, through every kernel path: the IF kernel on a constant input, the record-mode
kernel, the fused conv → IF kernel (batches of ≥ 2 × threads images) with and without
a residual add, the unfused path (batch 1), 16-channel vector steps and the scalar tail
(19 channels). ``tests/mutate.py`` checks that each such change fails this suite.
"""
import numba
import numpy as np
import pytest

from srp_np.reference import simulate_dense
from srp_np.simulator import Simulator
from srp_np.testing import GraphBuilder


def dyadic_graph(seed, C):
    rng = np.random.default_rng(seed)
    g = GraphBuilder((2, 5, 5), 3, rng=seed)
    q = lambda a: np.round(a * 4) / 4
    h = g.act(g.conv("input", C, k=1, padding=0), threshold=1.0)
    c = g.conv(h, C)
    h2 = g.act(c, threshold=0.5)
    h3 = g.act(g.add(g.conv(h2, C), h2), threshold=1.0)        # fused with a residual add
    out = g.linear(g.flatten(g.pool(h3, 5)), 3)
    model = g.build(out)
    for k, a in model.arrays.items():
        a[...] = q(rng.integers(-3, 5, a.shape) / 4 if a.ndim > 1 else rng.integers(-1, 2, a.shape) / 4)
    x = q(rng.integers(0, 5, (2 * max(2, numba.get_num_threads()) + 1, 2, 5, 5)) / 4)
    return model, x


@pytest.mark.parametrize("C", [16, 19])
@pytest.mark.parametrize("tau,eps", [(0, 1e-3), (1, 0.0), (2, 0.25), (3, 0.5), (2, 0.0)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rules_at_their_boundaries_in_every_kernel(C, tau, eps, dtype):
    ties = v_ties = 0
    for seed in range(6):
        model, x = dyadic_graph(seed, C)
        T = 4
        dense = simulate_dense(model, x, tau, T, dtype=dtype, mask_eps=eps)
        sim = Simulator(model, dtype)
        fused = sim.run(x, tau, T, mask_eps=eps)                       # batch ≥ 2 × threads: fused kernels
        single = [sim.run(x[i:i + 1], tau, T, mask_eps=eps) for i in range(len(x))]   # unfused
        rec = sim.run(x, tau, T, mask_eps=eps, record=True)            # record-mode kernel
        for qn in model.qcfs_nodes:
            n, th = qn["name"], qn["threshold"]
            want = dense.spikes[n].reshape(len(x), -1)
            want1 = dense.spikes_stage1[n].reshape(len(x), -1)
            np.testing.assert_array_equal(fused.spikes[n], want.sum(1), err_msg=f"fused {n}")
            np.testing.assert_array_equal(fused.spikes_stage1[n], want1.sum(1), err_msg=f"fused stage 1 {n}")
            np.testing.assert_array_equal(np.concatenate([r.spikes[n] for r in single]), want.sum(1),
                                          err_msg=f"batch 1 {n}")
            np.testing.assert_array_equal(rec.record[n]["spikes"], dense.spikes[n], err_msg=f"record {n}")
            np.testing.assert_array_equal(rec.record[n]["mask"], dense.mask[n], err_msg=f"mask {n}")
            if tau:
                v_ties += int((dense.v_tau[n] == dtype(eps) * dtype(th)).sum())
            ties += int((dense.v_final[n] == 0).sum())
        # the output layer after a 5×5 pool is not dyadic: equal up to rounding (latency and averaging
        # rules: outputs[t-1] is the mean over stage-2 steps 1..t)
        tol = 1e-12 if dtype is np.float64 else 1e-5
        np.testing.assert_allclose(fused.outputs, dense.outputs, rtol=tol, atol=tol)
        np.testing.assert_allclose(np.concatenate([r.outputs for r in single], axis=1), dense.outputs, rtol=tol,
                                   atol=tol)
    # the boundaries are actually reached: residuals exactly at ε·θ at t = τ, membranes reset to exactly 0
    assert ties > 0
    if tau:
        assert v_ties > 0
