"""``batchnorm2d``, the op added through the op registry: parsed, validated, its ANN semantics,
folded into the conv / linear before it where that is exact, applied to currents elsewhere, and
simulated spike for spike like the dense reference."""
import numpy as np
import pytest

from srp_np import Simulator, SrpError, ann_forward, save_model, load_model
from srp_np.builder import GraphBuilder
from srp_np.engine.fold import fold_batchnorm
from srp_np.engine.plan import make_plan
from srp_np.reference import simulate_dense


def bn_params(rng, c):
    return dict(mean=rng.normal(0, 0.3, c), var=rng.uniform(0.5, 2.0, c), weight=rng.uniform(0.5, 1.5, c),
                bias=rng.normal(0, 0.2, c))


def bn_model(seed=0):
    """conv → bn → IF (foldable); a residual add → bn → IF (not foldable); IF → bn → conv (not
    foldable: applied to spikes); then pool, flatten, linear."""
    rng = np.random.default_rng(seed)
    g = GraphBuilder((2, 6, 6), 3, L=4)
    w = lambda *s: rng.normal(0, 0.6, s)
    h = g.conv2d("input", w(8, 2, 3, 3), rng.normal(0, 0.1, 8), padding=1)
    h = g.qcfs(g.batchnorm2d(h, **bn_params(rng, 8), name="bn_stem"), 1.0)
    r = g.conv2d(h, w(8, 8, 3, 3), None, padding=1, name="conv_a")
    r = g.qcfs(g.batchnorm2d(r, **bn_params(rng, 8), name="bn_a"), 0.8)
    r = g.conv2d(r, w(8, 8, 3, 3), rng.normal(0, 0.1, 8), padding=1, name="conv_b")
    r = g.batchnorm2d(g.add(r, h), **bn_params(rng, 8), name="bn_after_add")
    h = g.qcfs(r, 1.2)
    h = g.batchnorm2d(h, **bn_params(rng, 8), name="bn_on_spikes")
    h = g.qcfs(g.conv2d(h, w(8, 8, 3, 3), None, padding=1), 1.0)
    out = g.linear(g.flatten(g.avgpool2d(h, 2)), w(3, 72), rng.normal(0, 0.1, 3))
    return g.build(out), rng.random((9, 2, 6, 6))


def test_ann_semantics_and_fold_are_the_same_network():
    model, x = bn_model()
    folded = fold_batchnorm(model)
    assert {n.op for n in folded.ops} >= {"batchnorm2d"}
    assert "bn_stem" not in folded.op_by_name and "bn_a" not in folded.op_by_name
    assert {"bn_after_add", "bn_on_spikes"} <= set(folded.op_by_name)
    # ANN: γ·(x − μ)/√(σ² + eps) + β written out here, against the op and against the folded layers
    y64 = ann_forward(model, x, np.float64)
    np.testing.assert_allclose(ann_forward(folded, x, np.float64), y64, rtol=1e-5, atol=1e-5)
    bn = model.op_by_name["bn_stem"]
    xs = np.random.default_rng(1).normal(size=(2, 8, 3, 3))
    a = {k: v.astype(np.float64) for k, v in model.arrays.items()}
    want = (a[bn.weight][None, :, None, None] * (xs - a[bn.mean][None, :, None, None])
            / np.sqrt(a[bn.var][None, :, None, None] + 1e-5) + a[bn.bias][None, :, None, None])
    np.testing.assert_allclose(bn.dense([xs], model.arrays), want, rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("tau", [0, 2])
def test_event_driven_matches_the_reference_spike_for_spike(dtype, tau):
    model, x = bn_model(1)
    dense = simulate_dense(model, x, tau, 4, dtype=dtype)
    sim = Simulator(model, dtype)
    for res in (sim.run(x, tau, 4), sim.run(x[:1], tau, 4), sim.run(x, tau, 4, record=True)):
        n = res.outputs.shape[1]
        for q in model.qcfs_nodes:
            name = q["name"]
            np.testing.assert_array_equal(res.spikes[name], dense.spikes[name][:n].reshape(n, -1).sum(1))
        tol = 1e-12 if dtype is np.float64 else 1e-5
        np.testing.assert_allclose(res.outputs, dense.outputs[:, :n], rtol=tol, atol=tol)


def test_plan_lowers_unfolded_batchnorm_through_the_op():
    model, x = bn_model()
    plan = make_plan(fold_batchnorm(model), 9, 6, 2)
    how = {s.node.name: s.how for s in plan.steps}
    assert how["bn_after_add"] == "op" and how["bn_on_spikes"] == "op"
    assert "bn_stem" not in how


def test_batchnorm_survives_save_and_load(tmp_path):
    model, x = bn_model()
    save_model(tmp_path / "m.npz", model.graph, model.arrays)
    m2 = load_model(tmp_path / "m.npz")
    np.testing.assert_array_equal(ann_forward(m2, x), ann_forward(model, x))


@pytest.mark.parametrize("edit,msg", [
    (lambda n: n.pop("mean"), "mean is required"),
    (lambda n: n.update(eps=-1.0), "eps must be >= 0"),
    (lambda n: n.update(eps="x"), "eps must be a finite number"),
])
def test_bad_batchnorm_nodes_are_refused(edit, msg):
    model, _ = bn_model()
    graph = dict(model.graph, nodes=[dict(n) for n in model.nodes])
    edit(next(n for n in graph["nodes"] if n["op"] == "batchnorm2d"))
    from srp_np import Model
    with pytest.raises(SrpError, match=msg):
        Model(graph=graph, arrays=model.arrays)


def test_batchnorm_shape_mismatch_is_refused():
    g = GraphBuilder((2, 4, 4), 2)
    h = g.conv2d("input", np.ones((3, 2, 1, 1)))
    with pytest.raises(SrpError, match="does not match 3 channels"):
        g.batchnorm2d(h, mean=np.zeros(4), var=np.ones(4))
