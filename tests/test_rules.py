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


CASES = [(0, 1e-3, "authors"), (1, 0.0, "authors"), (2, 0.25, "authors"), (3, 0.5, "authors"), (2, 0.0, "authors"),
         (1, 0.25, "paper"), (2, 0.0, "paper")]


@pytest.mark.parametrize("C", [16, 19])
@pytest.mark.parametrize("tau,eps,rule", CASES)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_rules_at_their_boundaries_in_every_kernel(C, tau, eps, rule, dtype):
    ties = v_ties = 0
    kw = dict(mask_eps=eps, mask_rule=rule)
    for seed in range(6):
        model, x = dyadic_graph(seed, C)
        T = 4
        dense = simulate_dense(model, x, tau, T, dtype=dtype, **kw)
        sim = Simulator(model, dtype)
        fused = sim.run(x, tau, T, **kw)                       # batch ≥ 2 × threads: fused kernels
        single = [sim.run(x[i:i + 1], tau, T, **kw) for i in range(len(x))]   # unfused
        rec = sim.run(x, tau, T, record=True, **kw)            # record-mode kernel
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
            if tau:      # residuals exactly on the keep boundary: ε·θ (authors), 0 (paper)
                v_ties += int((dense.v_tau[n] == (dtype(eps) * dtype(th) if rule == "authors" else 0)).sum())
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


# --------------------------------------------------------------------------- the specification itself
# The kernels and the dense reference read one definition of each rule (srp_np.neuron's constants), so
# comparing them cannot notice a change of that definition. These tests pin the definition against the
# paper's rules written out here, with exact (dyadic) values on each boundary.

@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spec_fires_at_exactly_theta_and_resets_by_subtraction(dtype):
    from srp_np.neuron import if_init, if_step

    theta = dtype(0.5)
    state = if_init((4,), theta, dtype)
    assert np.all(state.v == dtype(0.25))                                  # v(0) = θ/2
    x = np.array([0.25, 0.0, 0.5, 0.75], dtype)                            # u = 0.5, 0.25, 0.75, 1.0
    out, s, state = if_step(x, state, theta)
    np.testing.assert_array_equal(s, [True, False, True, True])          # u ≥ θ fires, at θ too
    np.testing.assert_array_equal(state.v, np.array([0.0, 0.25, 0.25, 0.5], dtype))   # u − θ·s
    np.testing.assert_array_equal(out, np.array([0.5, 0, 0.5, 0.5], dtype))            # each spike is worth θ


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_spec_keep_mask_at_its_boundary(dtype):
    from srp_np.neuron import IFState, srp_keep_mask, srp_stage_boundary

    theta = dtype(0.5)
    v = np.array([-0.25, 0.0, 0.125, 0.25], dtype)
    # authors: v(τ) > ε·θ (ε·θ = 0.125 for ε = 0.25; 0 for ε = 0)
    np.testing.assert_array_equal(srp_keep_mask(v, theta, 0.25), [False, False, False, True])
    np.testing.assert_array_equal(srp_keep_mask(v, theta, 0.0), [False, False, True, True])
    # paper: v(τ) ≥ 0, whatever ε
    np.testing.assert_array_equal(srp_keep_mask(v, theta, 0.25, "paper"), [False, True, True, True])
    mask, state = srp_stage_boundary(IFState(v=v), theta, 0.0, "paper")
    np.testing.assert_array_equal(mask, [False, True, True, True])
    assert np.all(state.v == dtype(0.25))                                  # back to θ/2


def test_paper_rule_differs_from_authors_rule_only_on_the_boundary():
    """On one model: the paper's rule keeps the neurons with 0 ≤ v(τ) ≤ ε·θ that the authors'
    rule silences, and nothing else changes."""
    model, x = dyadic_graph(0, 16)
    a = simulate_dense(model, x, 2, 4, mask_eps=0.25)
    p = simulate_dense(model, x, 2, 4, mask_eps=0.25, mask_rule="paper")
    first = model.qcfs_nodes[0]["name"]
    th = model.qcfs_nodes[0]["threshold"]
    band = (a.v_tau[first] >= 0) & (a.v_tau[first] <= 0.25 * th)
    assert band.any()
    np.testing.assert_array_equal(p.mask[first] & ~a.mask[first], band)


def test_unknown_mask_rule_is_refused():
    from srp_np.errors import SrpError

    model, x = dyadic_graph(0, 16)
    with pytest.raises(SrpError, match="mask rule"):
        Simulator(model).run(x[:1], 1, 1, mask_rule="strict")


def test_case_classification_at_exact_ties():
    """The four cases of the unevenness error (Fig. 1) at exact equalities, with no tolerance:
    a = 0 is 'zero' (≤), a = λ is 'full' (≥), φ = a is neither more nor less (strict)."""
    from srp_np.analysis import CASES, classify

    lam = 0.5
    a = np.array([0.0, 0.0, lam, lam, 0.25, 0.25, 0.25])
    phi = np.array([0.0, 0.0625, lam, 0.25, 0.25, 0.375, 0.125])
    got = [CASES[c] for c in classify(a, phi, lam, rtol=0.0)]
    assert got == ["none", "case1", "none", "case4", "none", "case2", "case3"]
