"""The event-driven simulator against the dense reference and the closed forms."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from srp_np.analytic import if_spike_count
from srp_np.ann import ann_forward
from srp_np.errors import SrpError
from srp_np.reference import simulate_dense
from srp_np.simulator import Simulator

from conftest import make_model


def assert_same_spikes(dense, sim, model):
    for q in model.qcfs_nodes:
        n = q["name"]
        rec = sim.record[n]
        np.testing.assert_array_equal(rec["spikes"], dense.spikes[n], err_msg=f"stage-2 spikes of {n}")
        np.testing.assert_array_equal(rec["spikes_stage1"], dense.spikes_stage1[n], err_msg=f"stage-1 spikes of {n}")
        np.testing.assert_array_equal(rec["mask"], dense.mask[n], err_msg=f"mask of {n}")
        np.testing.assert_allclose(rec["input_sum"], dense.input_sum[n], rtol=1e-12, atol=1e-12)
        if dense.v_tau[n] is None:
            assert rec["v_tau"] is None
        else:
            np.testing.assert_allclose(rec["v_tau"], dense.v_tau[n], rtol=1e-12, atol=1e-12)
        np.testing.assert_array_equal(sim.spikes[n], dense.spikes[n].reshape(len(dense.spikes[n]), -1).sum(1))
    np.testing.assert_allclose(sim.outputs, dense.outputs, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("tau,T", [(0, 7), (3, 5), (8, 2)])
def test_event_driven_equals_dense_reference(kind, tau, T):
    model = make_model(kind, seed=11)
    x = np.random.default_rng(5).random((6, 3, 12, 12))
    dense = simulate_dense(model, x, tau, T)
    sim = Simulator(model, np.float64).run(x, tau, T, record=True)
    assert_same_spikes(dense, sim, model)
    # the network is actually spiking, unevenly, and SRP actually masks something
    total = sum(s.sum() for s in dense.spikes.values())
    assert total > 100
    if tau:
        assert any((~m).any() for m in dense.mask.values())


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 10_000), tau=st.integers(0, 6), T=st.integers(1, 6),
       kind=st.sampled_from(["vgg", "resnet"]), eps=st.sampled_from([0.0, 1e-3, 0.05]))
def test_oracle_property(seed, tau, T, kind, eps):
    model = make_model(kind, input_shape=(2, 8, 8), seed=seed, widths=(4, 6))
    x = np.random.default_rng(seed).random((3, 2, 8, 8)) * 2 - 0.5
    dense = simulate_dense(model, x, tau, T, mask_eps=eps)
    sim = Simulator(model, np.float64).run(x, tau, T, mask_eps=eps, record=True)
    assert_same_spikes(dense, sim, model)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_results_do_not_depend_on_batching_or_threads(dtype):
    model = make_model("resnet", seed=2)
    x = np.random.default_rng(3).random((9, 3, 12, 12))
    ref = Simulator(model, dtype).run(x, 4, 4, record=True)
    small_chunks = Simulator(model, dtype, chunk_bytes=1)  # one image per chunk
    parts = [small_chunks.run(x[i:i + 2], 4, 4, record=True) for i in range(0, 9, 2)]
    outs = np.concatenate([p.outputs for p in parts], axis=1)
    np.testing.assert_array_equal(outs, ref.outputs)
    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        single = Simulator(model, dtype).run(x, 4, 4, record=True)
    finally:
        numba.set_num_threads(old)
    np.testing.assert_array_equal(single.outputs, ref.outputs)
    for k in ref.record:
        np.testing.assert_array_equal(single.record[k]["spikes"], ref.record[k]["spikes"])


def test_float32_close_to_float64():
    model = make_model("vgg", seed=4)
    x = np.random.default_rng(4).random((8, 3, 12, 12))
    r64 = Simulator(model, np.float64).run(x, 2, 8)
    r32 = Simulator(model, np.float32).run(x, 2, 8)
    assert np.abs(r64.outputs - r32.outputs).max() < 1e-3 * (1 + np.abs(r64.outputs).max())


def test_first_layer_matches_closed_form():
    """The first IF layer sees a constant current: its counts follow Eq. (8) exactly."""
    model = make_model("vgg", seed=9)
    x = np.random.default_rng(9).random((4, 3, 12, 12))
    T = 16
    res = Simulator(model, np.float64).run(x, 0, T, record=True)
    _, acts = ann_forward(model, x, return_activations=True)
    first = model.qcfs_nodes[0]
    y = acts[first["name"]][0]
    theta = first["threshold"]
    q = (T * y + theta / 2) / theta
    safe = np.abs(q - np.round(q)) > 1e-9          # away from rounding boundaries
    expected = if_spike_count(y, theta, T)
    np.testing.assert_array_equal(res.record[first["name"]]["spikes"][safe], expected[safe])
    assert safe.mean() > 0.99


def test_snn_approaches_ann_for_long_runs():
    """With many steps the SNN's prediction converges towards the ANN's (the point of conversion)."""
    model = make_model("vgg", seed=1)
    x = np.random.default_rng(1).random((32, 3, 12, 12))
    logits = ann_forward(model, x)
    res = Simulator(model, np.float64).run(x, 0, 128)
    agree = (res.predictions()[-1] == logits.argmax(1)).mean()
    assert agree >= 0.8


def test_cost_counters():
    model = make_model("vgg", seed=6)
    x = np.random.default_rng(6).random((3, 3, 12, 12))
    res = Simulator(model, np.float64).run(x, 2, 3, record=True)
    for k, s in res.spikes.items():
        np.testing.assert_array_equal(s, res.record[k]["spikes"].reshape(3, -1).sum(1))
        np.testing.assert_array_equal(res.spikes_stage1[k], res.record[k]["spikes_stage1"].reshape(3, -1).sum(1))
    # the fc layer's synaptic operations are its input events times its fan-out
    fc = [n for n in model.nodes if n["op"] == "linear"][-1]
    src = fc["inputs"][0]
    fan_out = model.arrays[fc["weight"]].shape[0]
    np.testing.assert_array_equal(res.sops[fc["name"]], res.spikes[src] * fan_out)


def test_bad_arguments():
    model = make_model("vgg")
    sim = Simulator(model, np.float64)
    x = np.zeros((1, 3, 12, 12))
    with pytest.raises(SrpError, match="tau"):
        sim.run(x, -1, 4)
    with pytest.raises(SrpError, match="`T` must be"):
        sim.run(x, 0, 0)
    with pytest.raises(SrpError, match="does not match"):
        sim.run(np.zeros((1, 3, 10, 10)), 0, 4)
    with pytest.raises(SrpError, match="dtype"):
        Simulator(model, np.int32)


@pytest.mark.parametrize("kind,widths", [("vgg", (20, 40, 70)), ("resnet", (16, 32, 64))])
def test_wide_layers_match_reference(kind, widths):
    """Channel counts that take the vector-block paths of the gather kernels (16-, 32-, 64-wide
    blocks, multi-word spike sets), with the fused conv → IF kernel (a batch of ≥ 2 × threads images)."""
    model = make_model(kind, input_shape=(3, 16, 16), seed=21, widths=widths)
    n = 2 * numba.get_num_threads() + 1
    x = np.random.default_rng(3).random((n, 3, 16, 16))
    dense = simulate_dense(model, x, 3, 4)
    sim = Simulator(model, np.float64).run(x, 3, 4)
    for q in model.qcfs_nodes:
        name = q["name"]
        np.testing.assert_array_equal(sim.spikes[name], dense.spikes[name].reshape(n, -1).sum(1), err_msg=name)
        np.testing.assert_array_equal(sim.spikes_stage1[name], dense.spikes_stage1[name].reshape(n, -1).sum(1))
    np.testing.assert_allclose(sim.outputs, dense.outputs, rtol=1e-10, atol=1e-10)
    assert sum(s.sum() for s in sim.spikes.values()) > 1000


def test_large_pool_window_matches_reference():
    """A 3×3 / stride-3 average pool in front of a conv (more than the gather kernel's
    window of 4 words) takes the dense path, with the same results."""
    from srp_np.testing import GraphBuilder
    rng = np.random.default_rng(0)
    x = rng.random((4, 3, 12, 12))
    g = GraphBuilder((3, 12, 12), 5, rng=1)
    h = g.act(g.conv("input", 8))
    h = g.act(g.conv(g.pool(h, 3), 8))
    h = g.act(g.flatten(h))
    model = g.build(g.linear(h, 5), x)
    dense = simulate_dense(model, x, 2, 4)
    sim = Simulator(model, np.float64).run(x, 2, 4, record=True)
    assert_same_spikes(dense, sim, model)


def test_pool_to_one_position_then_linear_matches_reference(monkeypatch):
    """A 2×2 map average-pooled to 1×1, flattened and fed to a linear layer (VGG-16's
    classifier on 32×32 inputs) takes the pooled-gather path, with the same results."""
    from srp_np.engine import execute as simmod
    from srp_np.testing import GraphBuilder
    rng = np.random.default_rng(1)
    x = rng.random((5, 3, 4, 4))
    g = GraphBuilder((3, 4, 4), 6, rng=2)
    h = g.act(g.conv("input", 20))
    h = g.act(g.conv(g.pool(h, 2), 40))
    h = g.flatten(g.pool(h, 2))
    h = g.act(g.linear(h, 24))
    model = g.build(g.linear(h, 6), x)

    def no_dense_path(*a):
        raise AssertionError("the linear layer after the pool took the dense path")
    monkeypatch.setattr(simmod, "linear_events", no_dense_path)
    dense = simulate_dense(model, x, 2, 5)
    sim = Simulator(model, np.float64).run(x, 2, 5, record=True)
    assert_same_spikes(dense, sim, model)


def _graph_with(kind):
    from srp_np.testing import GraphBuilder
    rng = np.random.default_rng(21)
    x = rng.random((5, 3, 8, 8))
    g = GraphBuilder((3, 8, 8), 4, rng=3)
    h = g.act(g.conv("input", 6))
    if kind == "duplicate":        # x + x, spikes and dense currents
        h = g.act(g.add(h, h))
        c = g.conv(h, 6)
        h = g.act(g.add(c, c))
    else:                          # a residual add that reads the analog input directly
        h = g.act(g.add(g.conv(h, 3), "input"))
    h = g.flatten(g.pool(h, 2))
    return g.build(g.linear(h, 4), x), x


@pytest.mark.parametrize("kind", ["duplicate", "input"])
@pytest.mark.parametrize("batch", [1, 5])
def test_add_patterns_equal_dense_reference(kind, batch):
    """An add listing one input twice is 2x (it was x); an add of ``input`` runs (it was a KeyError)."""
    model, x = _graph_with(kind)
    dense = simulate_dense(model, x, 2, 3)
    sim = Simulator(model, np.float64)
    parts = [sim.run(x[i:i + batch], 2, 3, record=True) for i in range(0, len(x), batch)]
    from srp_np.simulator import SimResult
    assert_same_spikes(dense, SimResult.concatenate(parts), model)
    fast = SimResult.concatenate([sim.run(x[i:i + batch], 2, 3) for i in range(0, len(x), batch)])
    np.testing.assert_allclose(fast.outputs, dense.outputs, rtol=1e-10, atol=1e-10)
