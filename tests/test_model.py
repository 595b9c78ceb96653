"""The srp-np/1 format: round trip and every validation error."""
import json

import numpy as np
import pytest

from srp_np.errors import SrpError
from srp_np.model import load_model, save_model

from conftest import make_model, returns_in_time


def _write_raw(path, graph, arrays):
    np.savez(path, graph=np.array(json.dumps(graph)), **arrays)


def _write_mutated(path, mutate):
    """A small valid VGG model file, with ``mutate(graph, arrays)`` applied before writing."""
    m = make_model("vgg")
    g = json.loads(json.dumps(m.graph))
    a = dict(m.arrays)
    mutate(g, a)
    _write_raw(path, g, a)


def test_round_trip(tmp_path):
    m = make_model("resnet")
    save_model(tmp_path / "m.npz", m.graph, m.arrays)
    m2 = load_model(tmp_path / "m.npz")
    assert m2.graph == json.loads(json.dumps(m.graph))
    assert set(m2.arrays) == set(m.arrays)
    for k in m.arrays:
        np.testing.assert_array_equal(m2.arrays[k], m.arrays[k])
    assert m2.shapes[m2.output] == (10,)
    assert "IF layers" in m2.describe()


@pytest.mark.parametrize("mutate, message", [
    (lambda g, a: g.update(format="srp-np/2"), "unsupported model format"),
    (lambda g, a: g["nodes"][0].update(op="maxpool2d"), "unknown op 'maxpool2d'"),
    (lambda g, a: a.pop(g["nodes"][0]["weight"]), "is missing from the file"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.zeros((8, 5, 3, 3), np.float32)}), "input channels"),
    (lambda g, a: g["nodes"].reverse(), "before it is computed"),
    (lambda g, a: g["nodes"][1].update(inputs=["nope"]), "unknown input 'nope'"),
    (lambda g, a: g.update(output="nope"), "output node 'nope'"),
    (lambda g, a: g.update(num_classes=7), "num_classes"),
    (lambda g, a: g.pop("L"), "missing the field 'L'"),
    (lambda g, a: g["nodes"][1].update(threshold=-1.0), "threshold must be a positive number"),
    (lambda g, a: g["preprocess"].update(mean=[0.0]), "preprocess.mean"),
    (lambda g, a: g["nodes"][1].update(name=g["nodes"][0]["name"]), "used twice"),
])
def test_validation_errors(tmp_path, mutate, message):
    _write_mutated(tmp_path / "bad.npz", mutate)
    with pytest.raises(SrpError, match=message) as e:
        load_model(tmp_path / "bad.npz")
    assert "\n" not in str(e.value)


def test_cycle_detected(tmp_path):
    m = make_model("vgg")
    g = json.loads(json.dumps(m.graph))
    g["nodes"][0]["inputs"] = [g["nodes"][1]["name"]]
    _write_raw(tmp_path / "cyc.npz", g, dict(m.arrays))
    with pytest.raises(SrpError, match="topological order, or the graph has a cycle"):
        load_model(tmp_path / "cyc.npz")


def test_file_errors(tmp_path):
    with pytest.raises(SrpError, match="not found"):
        load_model(tmp_path / "missing.npz")
    (tmp_path / "junk.npz").write_bytes(b"this is not a zip file")
    with pytest.raises(SrpError, match="not a valid .npz"):
        load_model(tmp_path / "junk.npz")
    np.savez(tmp_path / "nograph.npz", w=np.zeros(3))
    with pytest.raises(SrpError, match="no 'graph' entry"):
        load_model(tmp_path / "nograph.npz")
    np.savez(tmp_path / "badjson.npz", graph=np.array("{not json"))
    with pytest.raises(SrpError, match="not valid JSON"):
        load_model(tmp_path / "badjson.npz")
    m = make_model("vgg")
    save_model(tmp_path / "ok.npz", m.graph, m.arrays)
    data = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "truncated.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(SrpError):
        load_model(tmp_path / "truncated.npz")


def test_nan_weights_rejected(tmp_path):
    m = make_model("vgg")
    a = dict(m.arrays)
    k = m.nodes[0]["weight"]
    a[k] = a[k].copy()
    a[k][0, 0, 0, 0] = np.nan
    _write_raw(tmp_path / "nan.npz", m.graph, a)
    with pytest.raises(SrpError, match="NaN"):
        load_model(tmp_path / "nan.npz")


def test_save_is_atomic_on_error(tmp_path):
    m = make_model("vgg")
    g = dict(m.graph, num_classes=3)
    with pytest.raises(SrpError):
        save_model(tmp_path / "x.npz", g, m.arrays)
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- issue 11: hostile model files

def _raw_graph_file(path, text: str, arrays):
    np.savez(path, graph=np.array(text), **arrays)


def test_fifo_and_device_refused_without_blocking(tmp_path):
    import os

    fifo = tmp_path / "model.npz"
    os.mkfifo(fifo)
    for p in (fifo, "/dev/zero"):
        out = returns_in_time(lambda: load_model(p))
        assert isinstance(out.get("error"), SrpError) and "not a regular file" in str(out["error"])


def test_npy_and_empty_name_refused(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros(3))
    with pytest.raises(SrpError, match="single .npy array"):
        load_model(tmp_path / "a.npy")
    with pytest.raises(SrpError, match="empty file name"):
        load_model("")


_F32_TINY = float(np.finfo(np.float32).tiny)


@pytest.mark.parametrize("mutate, message", [
    (lambda g, a: g["preprocess"].update(std=[True] * len(g["preprocess"]["std"])), "preprocess.std"),
    (lambda g, a: g["preprocess"].update(mean=[False] * len(g["preprocess"]["mean"])), "preprocess.mean"),
    (lambda g, a: g["preprocess"].update(std=[1e-310] * len(g["preprocess"]["std"])), "overflow float32"),
    (lambda g, a: g["nodes"][1].update(threshold=1e39), "representable in float32"),
    (lambda g, a: g["nodes"][1].update(threshold=1e-45), "representable in float32"),
    (lambda g, a: g["nodes"][1].update(threshold=10 ** 400), "representable in float32"),
    (lambda g, a: g["nodes"][1].update(threshold=True), "threshold"),
    (lambda g, a: g.update(output=[g["output"]]), "output must be the name of a node"),
    (lambda g, a: g.update(dataset=7), "dataset must be a string"),
    (lambda g, a: g.update(arch={"a": 1}), "arch must be a string"),
    (lambda g, a: g.update(arch="vgg\x1b[2J"), "control characters"),
    (lambda g, a: g["nodes"][1].update(name="act\nx"), "control characters"),
    (lambda g, a: g.update(num_classes=10 ** 30), "num_classes"),
    (lambda g, a: g.update(L=10 ** 30), "L must be"),
    (lambda g, a: g.update(input_shape=[3, 10 ** 30, 12]), "input_shape"),
    (lambda g, a: g.update(input_shape=[3, 2 ** 20, 2 ** 20]), "values per image|memory"),
    (lambda g, a: g["nodes"][0].update(stride=10 ** 30), "out of range"),
    (lambda g, a: g["nodes"][0].update(padding=2 ** 40), "out of range"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.full((8, 3, 3, 3), 1e300)}), "beyond float32's range"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.full((8, 3, 3, 3), 1e-300)}), "underflow"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.full((8, 3, 3, 3), 1e-42, np.float32)}), "underflow"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.zeros((0, 3, 3, 3), np.float32)}), "is empty"),
    (lambda g, a: a.update({g["nodes"][0]["weight"]: np.ones((8, 3, 3, 3), np.int32)}), "floating point"),
])
def test_hostile_values_refused(tmp_path, mutate, message):
    _write_mutated(tmp_path / "bad.npz", mutate)
    with np.errstate(all="raise"):           # validation itself must not trip a floating-point warning
        with pytest.raises(SrpError, match=message) as e:
            load_model(tmp_path / "bad.npz")
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_json_constants_refused(tmp_path, literal):
    m = make_model("vgg")
    text = json.dumps(m.graph).replace('"mean": [0.0', f'"mean": [{literal}', 1)
    assert literal in text
    _raw_graph_file(tmp_path / "c.npz", text, m.arrays)
    with pytest.raises(SrpError, match="not valid JSON"):
        load_model(tmp_path / "c.npz")


def test_deep_and_huge_json_refused(tmp_path):
    m = make_model("vgg")
    for depth in (100, 100_000):
        g = json.loads(json.dumps(m.graph))
        text = json.dumps(g)[:-1] + ', "extra": ' + "[" * depth + "]" * depth + "}"
        _raw_graph_file(tmp_path / "deep.npz", text, m.arrays)
        with pytest.raises(SrpError, match="nested"):
            load_model(tmp_path / "deep.npz")
    g = json.loads(json.dumps(m.graph))
    text = json.dumps(g).replace('"L": 4', '"L": ' + "9" * 5000, 1)
    _raw_graph_file(tmp_path / "bigint.npz", text, m.arrays)
    with pytest.raises(SrpError, match="not valid JSON"):
        load_model(tmp_path / "bigint.npz")
    np.savez(tmp_path / "notstr.npz", graph=np.zeros(3), **m.arrays)
    with pytest.raises(SrpError, match="must be a JSON string"):
        load_model(tmp_path / "notstr.npz")


def test_unreferenced_array_never_decompressed(tmp_path, monkeypatch):
    """A small file holding a big unused array: the array is not read (its declared size does not
    even count), while a referenced array larger than the memory available is refused unread."""
    m = make_model("vgg")
    big = np.zeros(16 * 2**20, np.float32)            # 64 MiB, compresses to ~64 KiB
    np.savez_compressed(tmp_path / "m.npz", graph=np.array(json.dumps(m.graph)), unused=big, **m.arrays)
    del big
    assert (tmp_path / "m.npz").stat().st_size < 2**20
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(8 * 2**20))
    import zipfile

    opened = []
    real_open = zipfile.ZipFile.open
    monkeypatch.setattr(zipfile.ZipFile, "open",
                        lambda self, name, *a, **k: opened.append(getattr(name, "filename", name))
                        or real_open(self, name, *a, **k))
    m2 = load_model(tmp_path / "m.npz")
    assert "unused" not in m2.arrays and set(m2.arrays) == set(m.arrays)
    assert "unused.npy" not in opened
    g = json.loads(json.dumps(m.graph))
    g["nodes"][0]["weight"] = "unused"                 # now referenced (and of the wrong shape)
    np.savez_compressed(tmp_path / "m2.npz", graph=np.array(json.dumps(g)), unused=np.zeros(16 * 2**20, np.float32),
                        **m.arrays)
    opened.clear()
    with pytest.raises(SrpError, match="more than the .* available"):
        load_model(tmp_path / "m2.npz")
    assert opened.count("unused.npy") <= 1              # the header only


def test_validation_and_setup_linear_in_nodes(tmp_path):
    """32k nodes load and set up in seconds (quadratic scans took 138 s)."""
    import time

    from srp_np.simulator import Simulator

    n = 32_000
    nodes = [{"name": "f0", "op": "flatten", "inputs": ["input"]}]
    nodes += [{"name": f"a{i}", "op": "qcfs", "inputs": [nodes[-1]["name"] if i == 0 else f"a{i - 1}"],
               "threshold": 1.0} for i in range(n)]
    nodes.append({"name": "out", "op": "linear", "inputs": [f"a{n - 1}"], "weight": "w", "bias": None})
    g = {"format": "srp-np/1", "input_shape": [1, 1, 2], "num_classes": 2, "L": 4,
         "preprocess": {"mean": [0.0], "std": [1.0]}, "nodes": nodes, "output": "out"}
    save_model(tmp_path / "long.npz", g, {"w": np.eye(2, dtype=np.float32)})
    t = time.perf_counter()
    m = load_model(tmp_path / "long.npz")
    Simulator(m, warm_cache=False)
    assert time.perf_counter() - t < 20
    # an error found late still costs one scan
    g["nodes"][-1]["inputs"] = ["nope"]
    _write_raw(tmp_path / "bad.npz", g, {"w": np.eye(2, dtype=np.float32)})
    t = time.perf_counter()
    with pytest.raises(SrpError, match="unknown input 'nope'"):
        load_model(tmp_path / "bad.npz")
    assert time.perf_counter() - t < 20


def test_per_image_memory_counts_the_im2col_matrix(tmp_path, monkeypatch):
    """A conv whose im2col matrix (windows × kernel) cannot fit for even one image is refused at load."""
    g = {"format": "srp-np/1", "input_shape": [64, 32, 32], "num_classes": 2, "L": 4,
         "preprocess": {"mean": [0.0] * 64, "std": [1.0] * 64},
         "nodes": [{"name": "c", "op": "conv2d", "inputs": ["input"], "weight": "w", "bias": None, "stride": 1,
                    "padding": 4},
                   {"name": "f", "op": "flatten", "inputs": ["c"]},
                   {"name": "o", "op": "linear", "inputs": ["f"], "weight": "v", "bias": None}],
         "output": "o"}
    arrays = {"w": np.full((1, 64, 9, 9), 0.01, np.float32), "v": np.full((2, 1024), 0.01, np.float32)}
    _write_raw(tmp_path / "m.npz", g, arrays)
    assert load_model(tmp_path / "m.npz").shapes["c"] == (1, 32, 32)
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(16 * 2**20))      # im2col: 64·81·1024·8 B = 40.5 MiB
    with pytest.raises(SrpError, match="one image through this model .* more than the 16.0 MiB available"):
        load_model(tmp_path / "m.npz")
