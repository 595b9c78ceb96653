"""NIR export and import (srp_np.nir_io, `srp-np nir`).

* srp-np -> NIR -> srp-np is bit-exact on both shipped models (arrays, graph, spikes);
* the exported NIR graph, run by an independent NumPy interpreter of NIR that follows the
  IF semantics the metadata states, gives srp-np's reference simulation spike for spike;
* a graph built with nir's own classes the way other libraries write it (IF with r = 1 and
  no v_reset, a residual as two edges into one IF, a SumPool2d) imports, and srp-np simulates
  it as the interpreter does under the stated assumptions.
"""
import json
import sys

import numpy as np
import pytest

nir = pytest.importorskip("nir")

from click.testing import CliRunner  # noqa: E402

from srp_np import load_model  # noqa: E402
from srp_np.cli.main import cli  # noqa: E402
from srp_np.errors import SrpError  # noqa: E402
from srp_np.nir_io import from_nir, to_nir  # noqa: E402
from srp_np.reference import simulate_dense  # noqa: E402

from conftest import make_model  # noqa: E402

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
#: Random graphs of tests/test_differential.py's generator run through NIR (SRP_NP_NIR_GRAPHS=300 passes too).
N_GRAPHS = int(__import__("os").environ.get("SRP_NP_NIR_GRAPHS", "24"))
SHIPPED = [ROOT / "weights" / "resnet20_fmnist.npz", ROOT / "weights" / "vgg16_fmnist.npz"]


# ----------------------------------------------------------------------------- an independent NIR interpreter

def _conv(x, w, b, stride, pad):
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]
    return np.einsum("nchwij,ocij->nohw", win, w) + b[None, :, None, None]


def _pool(x, k, s, mean):
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::s, ::s]
    out = win.sum(axis=(4, 5))
    return out / (k * k) if mean else out


def run_nir(g, x, T, nir_semantics=False):
    """Run a NIR graph for T steps on the analog input x (N×shape), in float64: IF with v(0) =
    v_threshold/2, v += r·x, a spike (worth 1) when v >= v_threshold, reset by subtraction; no delay
    on edges (topological order within a step); returns (mean output over the steps, spike counts).
    ``nir_semantics``: NIR's own IF instead (v(0) = 0, spike when v > v_threshold, v := v_reset)."""
    preds = {k: [a for a, b in g.edges if b == k] for k in g.nodes}
    order, done = [], set()
    while len(order) < len(g.nodes):
        for k in g.nodes:
            if k not in done and all(p in done for p in preds[k]):
                order.append(k)
                done.add(k)
    n = x.shape[0]
    v = {k: None for k, nd in g.nodes.items() if isinstance(nd, nir.IF)}
    counts = {k: 0 for k in v}
    out = 0.0
    for _ in range(T):
        val = {}
        for k in order:
            nd = g.nodes[k]
            if isinstance(nd, nir.Input):
                val[k] = x
                continue
            inp = sum(val[p] for p in preds[k])
            if isinstance(nd, nir.Conv2d):
                val[k] = _conv(inp, nd.weight, nd.bias, int(np.atleast_1d(nd.stride)[0]),
                               int(np.atleast_1d(nd.padding)[0]))
            elif isinstance(nd, nir.Affine):
                val[k] = inp @ nd.weight.T + nd.bias
            elif isinstance(nd, nir.Linear):
                val[k] = inp @ nd.weight.T
            elif isinstance(nd, nir.Flatten):
                val[k] = inp.reshape(n, -1)
            elif isinstance(nd, (nir.SumPool2d, nir.AvgPool2d)):
                val[k] = _pool(inp, int(nd.kernel_size[0]), int(nd.stride[0]), isinstance(nd, nir.AvgPool2d))
            elif isinstance(nd, nir.Scale):
                val[k] = inp * nd.scale
            elif isinstance(nd, nir.IF):
                if v[k] is None:
                    v[k] = np.broadcast_to(nd.v_threshold * (0.0 if nir_semantics else 0.5), inp.shape).copy()
                v[k] = v[k] + nd.r * inp
                if nir_semantics:
                    s = v[k] > nd.v_threshold
                    v[k] = np.where(s, nd.v_reset, v[k])
                else:
                    s = v[k] >= nd.v_threshold
                    v[k] = v[k] - s * nd.v_threshold
                counts[k] = counts[k] + s.astype(np.int64)
                val[k] = s.astype(np.float64)
            elif isinstance(nd, nir.Output):
                out = out + inp
                val[k] = inp
            else:
                raise AssertionError(type(nd))
    return out / T, counts


# ----------------------------------------------------------------------------- export semantics

@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_exported_graph_runs_like_srp_np(kind):
    model = make_model(kind, input_shape=(2, 12, 12), seed=5)
    g = to_nir(model, tau=0)
    # the mapping the issue asks for
    types = {type(nd).__name__ for nd in g.nodes.values()}
    assert "SumPool2d" in types and "IF" in types and "Affine" in types and "Conv2d" in types
    for k, nd in g.nodes.items():
        if isinstance(nd, nir.IF):
            th = model.node_by_name[k]["threshold"]
            assert np.all(nd.r == 1) and np.all(nd.v_reset == 0) and np.all(nd.v_threshold == th)
            assert nd.metadata["srp_np_reset"] == "subtract" and nd.metadata["srp_np_fire"] == ">="
            assert nd.metadata["srp_np_v_init"] == th / 2
    assert not any(model.node_by_name.get(k, {}).get("op") == "add" for k in g.nodes)   # adds are fan-in edges
    x = np.random.default_rng(1).random((3,) + model.input_shape)
    ref = simulate_dense(model, x, tau=0, T=6)
    got, counts = run_nir(g, x, 6)
    for q in model.qcfs_nodes:
        np.testing.assert_array_equal(counts[q["name"]], ref.spikes[q["name"]], err_msg=q["name"])
    assert sum(int(c.sum()) for c in counts.values()) > 0
    np.testing.assert_allclose(got, ref.outputs[-1], rtol=0, atol=1e-9)
    # the library's interpreter (srp-np nir simulate) agrees, in both semantics
    from srp_np.nir_io import simulate_nir

    outs, sp = simulate_nir(g, x, 6)
    for q in model.qcfs_nodes:
        np.testing.assert_array_equal(sp[q["name"]], ref.spikes[q["name"]])
    np.testing.assert_allclose(outs, ref.outputs, rtol=0, atol=1e-9)
    want, wcounts = run_nir(g, x, 6, nir_semantics=True)
    outs, sp = simulate_nir(g, x, 6, semantics="nir")
    assert any((sp[k] != counts[k]).any() for k in sp)           # the semantics differ on this network
    for k in sp:
        np.testing.assert_array_equal(sp[k], wcounts[k])
    np.testing.assert_allclose(outs[-1], want, rtol=0, atol=1e-9)


# ----------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.stem)
def test_round_trip_shipped_models_bit_exact(tmp_path, path):
    r = CliRunner().invoke(cli, ["nir", "export", str(path), str(tmp_path / "m.nir"), "--tau", "4"])
    assert r.exit_code == 0, r.output
    g = nir.read(str(tmp_path / "m.nir"))
    assert g.metadata["srp_np_tau"] == 4 and g.metadata["srp_np_mask_eps"] == pytest.approx(1e-3)
    r = CliRunner().invoke(cli, ["nir", "import", str(tmp_path / "m.nir"), str(tmp_path / "back.npz")])
    assert r.exit_code == 0, r.output
    a, b = load_model(path), load_model(tmp_path / "back.npz")
    assert json.dumps(a.graph, sort_keys=True) == json.dumps(b.graph, sort_keys=True)
    assert sorted(a.arrays) == sorted(b.arrays)
    for k in a.arrays:
        assert a.arrays[k].dtype == b.arrays[k].dtype and np.array_equal(a.arrays[k], b.arrays[k]), k
    from srp_np.datasets import load_shipped_test_set
    from srp_np.evaluate import prepare_inputs

    x_raw, _ = load_shipped_test_set()
    x = prepare_inputs(a, x_raw[:2])
    ra, rb = simulate_dense(a, x, tau=2, T=2), simulate_dense(b, x, tau=2, T=2)
    for q in a.qcfs_nodes:
        np.testing.assert_array_equal(ra.spikes[q["name"]], rb.spikes[q["name"]])
    np.testing.assert_array_equal(ra.outputs, rb.outputs)
    # the same file translated node by node (ignoring the metadata) computes the same network
    c, _ = from_nir(g, use_metadata=False, L=a.L)
    from srp_np.model import save_model
    mc = save_model(tmp_path / "c.npz", c, _)
    rc = simulate_dense(mc, x, tau=2, T=2)
    np.testing.assert_allclose(rc.outputs, ra.outputs, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- foreign graphs

def foreign_graph(th=(2.0, 1.5, 0.5), v_reset=True, extra=None):
    """Input 2×8×8 -> conv -> IF1 -> conv -> IF2 (+ an identity edge from IF1: a residual of spikes)
    -> SumPool2d 2 -> Flatten -> Affine -> IF3 -> Affine -> Output, as sinabs/snnTorch write it."""
    rng = np.random.default_rng(11)

    def IF(shape, t):
        if v_reset:
            return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, t), v_reset=np.zeros(shape))
        return nir.IF(r=np.ones(shape), v_threshold=np.full(shape, t))

    nodes = {
        "in": nir.Input(input_type={"input": np.array([2, 8, 8])}),
        "c1": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0, 0.8, (4, 2, 3, 3)), stride=1, padding=1,
                         dilation=1, groups=1, bias=rng.normal(0, 0.3, 4)),
        "if1": IF((4, 8, 8), th[0]),
        "c2": nir.Conv2d(input_shape=(8, 8), weight=rng.normal(0, 0.6, (4, 4, 3, 3)), stride=1, padding=1,
                         dilation=1, groups=1, bias=rng.normal(0, 0.3, 4)),
        "if2": IF((4, 8, 8), th[1]),
        "pool": nir.SumPool2d(kernel_size=np.array([2, 2]), stride=np.array([2, 2]), padding=np.array([0, 0])),
        "flat": nir.Flatten(input_type={"input": np.array([4, 4, 4])}, start_dim=0, end_dim=-1),
        "fc1": nir.Affine(weight=rng.normal(0, 0.4, (16, 64)), bias=rng.normal(0, 0.2, 16)),
        "if3": IF((16,), th[2]),
        "fc2": nir.Affine(weight=rng.normal(0, 0.5, (5, 16)), bias=rng.normal(0, 0.2, 5)),
        "out": nir.Output(output_type={"output": np.array([5])}),
    }
    edges = [("in", "c1"), ("c1", "if1"), ("if1", "c2"), ("c2", "if2"), ("if1", "if2"), ("if2", "pool"),
             ("pool", "flat"), ("flat", "fc1"), ("fc1", "if3"), ("if3", "fc2"), ("fc2", "out")]
    if extra:
        extra(nodes, edges)
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False)


def test_import_foreign_graph(tmp_path):
    g = foreign_graph(v_reset=False)          # sinabs-style: IF(r, v_threshold), v_reset left out
    nir.write(str(tmp_path / "f.nir"), g)
    r = CliRunner(mix_stderr=False).invoke(cli, ["nir", "import", str(tmp_path / "f.nir"), str(tmp_path / "f.npz"),
                                                 "--L", "4"]) if "mix_stderr" in CliRunner.__init__.__code__.co_varnames \
        else CliRunner().invoke(cli, ["nir", "import", str(tmp_path / "f.nir"), str(tmp_path / "f.npz"), "--L", "4"])
    assert r.exit_code == 0, r.output
    assert "reset by subtraction" in (r.stderr if hasattr(r, "stderr") and r.stderr else r.output)
    m = load_model(tmp_path / "f.npz")
    assert m.L == 4 and list(m.input_shape) == [2, 8, 8] and m.num_classes == 5
    assert [n["op"] for n in m.nodes].count("add") == 1 and len(m.qcfs_nodes) == 3
    assert "subtraction" in m.graph["nir_import"]
    x = np.random.default_rng(2).normal(0.5, 1.0, (4, 2, 8, 8))
    ref_out, counts = run_nir(g, x, 10)
    res = simulate_dense(m, x, tau=0, T=10)
    for name in ("if1", "if2", "if3"):
        np.testing.assert_array_equal(res.spikes[name], counts[name], err_msg=name)
        assert counts[name].sum() > 0 and (counts[name] < 10).any(), name
    # the model file stores float32 weights (the NIR graph float64): outputs agree to float32 precision
    np.testing.assert_allclose(res.outputs[-1], ref_out, rtol=0, atol=1e-5)


def _add(kind):
    def f(nodes, edges):
        if kind == "lif":
            nodes["lif"] = nir.LIF(tau=np.ones(5), r=np.ones(5), v_leak=np.zeros(5), v_threshold=np.ones(5))
            edges.remove(("fc2", "out"))
            edges.extend([("fc2", "lif"), ("lif", "out")])
        elif kind == "cycle":
            edges.append(("if2", "c2"))
    return f


@pytest.mark.parametrize("kwargs,L,match", [
    ({}, None, "pass --L"),
    ({"extra": _add("lif")}, 4, "'lif' \\(LIF\\): no srp-np counterpart"),
    ({"extra": _add("cycle")}, 4, "cycle"),
])
def test_foreign_refusals(kwargs, L, match):
    with pytest.raises(SrpError, match=match) as e:
        from_nir(foreign_graph(**kwargs), L=L)
    assert "\n" not in str(e.value)


def test_foreign_refusals_neuron_parameters():
    g = foreign_graph()
    g.nodes["if1"].v_reset = np.full((4, 8, 8), -0.5)
    with pytest.raises(SrpError, match="v_reset = -0.5; srp-np resets by subtraction"):
        from_nir(g, L=4)
    g = foreign_graph()
    g.nodes["if3"].v_threshold = np.linspace(0.5, 1, 16)
    with pytest.raises(SrpError, match="v_threshold differs between neurons"):
        from_nir(g, L=4)
    g = foreign_graph(th=(2.0, 1.5, 0.5))
    g.nodes["if2"].r = np.full((4, 8, 8), 2.0)       # r folds into the threshold: same spikes as θ/r
    graph, _ = from_nir(g, L=4)
    assert {n["name"]: n.get("threshold") for n in graph["nodes"]}["if2"] == pytest.approx(1.5 / 2 * 2.0)


def test_cli_errors(tmp_path):
    (tmp_path / "junk.nir").write_bytes(b"not hdf5")
    for args, match in [
        (["nir", "import", str(tmp_path / "junk.nir"), str(tmp_path / "o.npz")], "cannot read NIR file"),
        (["nir", "import", str(tmp_path / "none.nir"), str(tmp_path / "o.npz")], "not found"),
        (["nir", "export", str(tmp_path / "junk.nir"), str(tmp_path / "o.nir")], "junk.nir"),
        (["nir", "export", str(SHIPPED[0]), str(tmp_path / "nodir" / "o.nir")], "does not exist"),
    ]:
        r = CliRunner().invoke(cli, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.output
    assert not (tmp_path / "o.npz").exists() and not (tmp_path / "o.nir").exists()


def test_import_srp_np_does_not_import_nir():
    import subprocess

    out = subprocess.run([sys.executable, "-c", "import sys, srp_np, srp_np.cli.main; "
                          "print('nir' in sys.modules, 'h5py' in sys.modules, 'torch' in sys.modules)"],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


def test_cli_simulate(tmp_path, model_files):
    """`srp-np nir simulate` prints the accuracy the reference simulation gives (tau = 0)."""
    from srp_np.datasets import fit_to_shape, load_npz_data, to_float

    m = load_model(model_files / "model.npz")
    r = CliRunner().invoke(cli, ["nir", "export", str(model_files / "model.npz"), str(tmp_path / "m.nir")])
    assert r.exit_code == 0, r.output
    r = CliRunner().invoke(cli, ["nir", "simulate", str(tmp_path / "m.nir"), "--data", str(model_files / "data.npz"),
                                 "--T", "3"])
    assert r.exit_code == 0, r.output
    x, y = load_npz_data(model_files / "data.npz")
    res = simulate_dense(m, m.preprocess(fit_to_shape(to_float(x), m.input_shape), np.float64), tau=0, T=3)
    acc = (res.outputs.argmax(-1) == y[None]).mean(axis=1)
    want = ", ".join(f"t={t + 1}: {100 * a:.2f}%" for t, a in enumerate(acc))
    assert want in r.output, (want, r.output)


def test_nir_missing_message(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "nir", None)      # `import nir` raises ImportError
    r = CliRunner().invoke(cli, ["nir", "export", str(SHIPPED[0]), str(tmp_path / "o.nir")])
    assert r.exit_code == 2 and r.output.strip() == "error: NIR support needs the nir package: pip install 'srp-np[nir]'"


def test_huge_declared_arrays_refused(tmp_path, monkeypatch):
    """A NIR file is sized (its datasets' declared bytes) against the memory available before nir.read."""
    import h5py

    with h5py.File(tmp_path / "big.nir", "w") as f:      # 8 GB declared, a few bytes on disk
        f.create_dataset("node/x", shape=(2 ** 30,), dtype="f8", compression="gzip", chunks=(2 ** 20,))
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(2 ** 30))
    r = CliRunner().invoke(cli, ["nir", "import", str(tmp_path / "big.nir"), str(tmp_path / "o.npz"), "--L", "4"])
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "declared" in lines[0], r.output
    assert (tmp_path / "big.nir").stat().st_size < 2 ** 20


@pytest.mark.parametrize("seed", range(N_GRAPHS))
def test_random_graphs_every_pattern(tmp_path, seed):
    """Every pattern the format admits (tests/test_differential.py's generator: adds of the input,
    x + x of spikes and currents, pools of spikes and currents with an IF right after, flatten
    anywhere): the exported graph runs like srp-np spike for spike, the metadata round trip is
    bit-exact, and the node-by-node translation back (use_metadata=False) gives the same spikes."""
    from test_differential import random_graph

    from srp_np.model import save_model

    model, x, used = random_graph(seed)
    T = 4
    ref = simulate_dense(model, x, tau=0, T=T)
    g = to_nir(model, tau=0)
    _, counts = run_nir(g, x, T)
    for q in model.qcfs_nodes:
        np.testing.assert_array_equal(counts[q["name"]], ref.spikes[q["name"]], err_msg=f"{q['name']} {used}")
    graph, arrays = from_nir(g)
    assert json.dumps(graph, sort_keys=True) == json.dumps(model.graph, sort_keys=True)
    assert set(arrays) == set(model.arrays) and all(np.array_equal(arrays[k], model.arrays[k]) for k in arrays)
    graph, arrays = from_nir(g, use_metadata=False)
    back = save_model(tmp_path / "back.npz", graph, arrays)
    res = simulate_dense(back, x, tau=0, T=T)
    for q in model.qcfs_nodes:     # the translation keeps the IF nodes' names
        np.testing.assert_array_equal(res.spikes[q["name"]], ref.spikes[q["name"]], err_msg=f"{q['name']} {used}")
    np.testing.assert_allclose(res.outputs, ref.outputs, rtol=0, atol=1e-5)


def test_import_foreign_mlp_with_vector_input(tmp_path):
    """A vector input (an MLP, as snnTorch/Norse examples write it) becomes input [N, 1, 1] + flatten."""
    rng = np.random.default_rng(5)
    nodes = {"in": nir.Input(input_type={"input": np.array([6])}),
             "fc1": nir.Affine(weight=rng.normal(0, 1, (12, 6)), bias=rng.normal(0, 0.3, 12)),
             "if1": nir.IF(r=np.ones(12), v_threshold=np.full(12, 0.75)),
             "fc2": nir.Linear(weight=rng.normal(0, 1, (3, 12))),
             "out": nir.Output(output_type={"output": np.array([3])})}
    g = nir.NIRGraph(nodes=nodes, edges=[("in", "fc1"), ("fc1", "if1"), ("if1", "fc2"), ("fc2", "out")])
    graph, arrays = from_nir(g, L=2)
    from srp_np.model import save_model

    m = save_model(tmp_path / "mlp.npz", graph, arrays)
    assert list(m.input_shape) == [6, 1, 1] and [n["op"] for n in m.nodes] == ["flatten", "linear", "qcfs", "linear"]
    x = rng.normal(0.5, 1, (5, 6))
    want, counts = run_nir(g, x, 8)
    res = simulate_dense(m, x.reshape(5, 6, 1, 1), tau=0, T=8)
    np.testing.assert_array_equal(res.spikes["if1"], counts["if1"])
    assert 0 < counts["if1"].sum() < 8 * counts["if1"].size
    np.testing.assert_allclose(res.outputs[-1], want, rtol=0, atol=1e-5)
