"""The engine's structure: typed nodes and the op registry, the pure plan, the public graph
builder, Model validation on construction, library errors in library terms, no import cycles."""
import ast
import collections
from pathlib import Path

import numpy as np
import pytest

from srp_np import Model, SrpError, ann_forward
from srp_np.builder import GraphBuilder
from srp_np.engine.plan import make_plan
from srp_np.opset import OPS, REGISTRY, parse_node
from srp_np.testing import random_resnet, random_vgg

ROOT = Path(__file__).resolve().parent.parent


def test_every_op_declares_shape_semantics_and_cost():
    assert set(OPS) >= {"conv2d", "linear", "avgpool2d", "flatten", "add", "qcfs", "batchnorm2d"}
    for name, cls in REGISTRY.items():
        assert cls.OP == name
        for method in ("infer_shape", "dense", "ann_ops"):
            assert getattr(cls, method) is not getattr(REGISTRY["flatten"].__mro__[1], method) or method == "ann_ops"


def test_attribute_defaults_live_in_the_op():
    pool = parse_node({"name": "p", "op": "avgpool2d", "inputs": ["x"], "kernel": 3})
    assert pool.stride == 3                                   # stride defaults to the kernel
    conv = parse_node({"name": "c", "op": "conv2d", "inputs": ["x"], "weight": "w"})
    assert (conv.stride, conv.padding, conv.bias) == (1, 0, None)
    assert parse_node({"name": "c", "op": "conv2d", "inputs": ["x"], "weight": "w", "stride": [2, 2]}).stride == 2
    with pytest.raises(SrpError, match="square pair"):
        parse_node({"name": "c", "op": "conv2d", "inputs": ["x"], "weight": "w", "stride": [1, 2]})


def test_model_validates_on_construction():
    m = random_vgg()
    graph = dict(m.graph, nodes=[dict(n) for n in m.nodes])
    graph["nodes"][0]["weight"] = "missing"
    with pytest.raises(SrpError, match="missing from the file"):
        Model(graph=graph, arrays=m.arrays)


def test_builder_takes_real_arrays_and_checks_each_node():
    rng = np.random.default_rng(0)
    g = GraphBuilder((1, 4, 4), 2, L=2, mean=[0.5], std=[0.25], arch="mine")
    w = rng.normal(size=(3, 1, 3, 3))
    h = g.qcfs(g.conv2d("input", w, np.zeros(3), padding=1), 1.0)
    with pytest.raises(SrpError, match="expects 4 input channels|input channels"):
        g.conv2d(h, np.ones((2, 4, 3, 3)))
    with pytest.raises(SrpError, match="unknown input"):
        g.flatten("nope")
    out = g.linear(g.flatten(g.avgpool2d(h, 2)), rng.normal(size=(2, 12)))
    m = g.build(out)
    np.testing.assert_array_equal(m.arrays[m.op_by_name["conv1"].weight], w.astype(np.float32))
    x = rng.random((2, 1, 4, 4))
    # the ANN of the built model, written out with NumPy
    from numpy.lib.stride_tricks import sliding_window_view
    xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    conv = np.einsum("nchwij,ocij->nohw", sliding_window_view(xp, (3, 3), axis=(2, 3)), w.astype(np.float32))
    act = np.clip(np.floor(2 * conv + 0.5) / 2, 0, 1)
    pooled = act.reshape(2, 3, 2, 2, 2, 2).mean(axis=(3, 5)).reshape(2, -1)
    want = pooled @ m.arrays[m.op_by_name[out].weight].T.astype(np.float64)
    np.testing.assert_allclose(ann_forward(m, x), want, rtol=1e-6, atol=1e-6)


def test_plan_is_pure_and_decides_fusion_by_geometry():
    m = random_resnet(calibrate_x=np.random.default_rng(0).random((4, 3, 16, 16)))
    big = make_plan(m, 16, 4, 2)
    assert make_plan(m, 16, 4, 2) == big                       # a pure function of its arguments
    hows = collections.Counter(s.how for s in big.steps)
    assert hows["gather_if"] >= 3 and hows["fused"] >= 3
    res = [s for s in big.steps if s.fused_add]
    assert res and all(s.residual for s in res)
    # one image on two threads: a fused conv splits its map into blocks of ≥ 32 positions and needs
    # 2 × threads of them: the 16×16 maps fuse, the 8×8 maps (2 blocks) do not
    one = {s.node.name: s.how for s in make_plan(m, 1, 4, 2).steps}
    for s in big.steps:
        if s.how == "gather_if":
            h, w = m.shapes[s.node.name][1:]
            assert one[s.node.name] == ("gather_if" if h * w // 32 >= 4 else "gather"), s.node.name
    assert set(one.values()) >= {"gather_if", "gather"}
    assert "gather_if" not in {s.how for s in make_plan(m, 16, 4, 2, record=True).steps}
    # every value is freed after its last reader, the output never
    freed = [n for s in big.steps for n in s.frees]
    assert len(freed) == len(set(freed)) and m.output not in freed
    assert set(freed) | {m.output} == {"input"} | {s.node.name for s in big.steps}


def test_library_errors_name_parameters_and_the_cli_names_flags():
    from srp_np.cli.main import cli, cli_terms
    from srp_np.simulator import check_run_memory

    m = random_vgg()
    with pytest.raises(SrpError) as e:
        check_run_memory(m, np.float32, 10, 10 ** 12, 10 ** 12)
    assert "`tau`" in str(e.value) and "--tau" not in str(e.value)
    assert "--tau, --T" in cli_terms(e.value, cli)
    assert cli_terms("`data_dir` and `nope`", cli) == "--data-dir and nope"


def _imports(root: Path):
    mods = {}
    for p in root.rglob("*.py"):
        name = ".".join(p.with_suffix("").relative_to(root.parent).parts)
        mods[name[:-9] if name.endswith(".__init__") else name] = p
    edges = collections.defaultdict(set)
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1] if node.level else []
                tgt = ".".join(base + ([node.module] if node.module else []))
                for c in [tgt] + [f"{tgt}.{a.name}" for a in node.names]:
                    if c in mods and c != name and not name.startswith(c + "."):
                        edges[name].add(c)
            elif isinstance(node, ast.Import):
                edges[name].update(a.name for a in node.names if a.name in mods and a.name != name)
    return mods, edges


@pytest.mark.parametrize("package", ["srp_np", "cli", "train"])
def test_no_import_cycles(package):
    """No module imports (at module level or inside a function) a module that imports it back,
    through any chain; a package's own ``__init__`` re-exporting its submodules is not a cycle."""
    mods, edges = _imports(ROOT / package)
    state = {}

    def visit(n, path):
        state[n] = 1
        for m in edges[n]:
            if state.get(m) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(m):] + [m]))
            if m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in mods:
        if n not in state:
            visit(n, [n])
