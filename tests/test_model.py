"""The srp-np/1 format: round trip and every validation error."""
import json

import numpy as np
import pytest

from srp_np.errors import SrpError
from srp_np.model import load_model, save_model

from conftest import make_model


def _write_raw(path, graph, arrays):
    np.savez(path, graph=np.array(json.dumps(graph)), **arrays)


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
    m = make_model("vgg")
    g = json.loads(json.dumps(m.graph))
    a = dict(m.arrays)
    mutate(g, a)
    _write_raw(tmp_path / "bad.npz", g, a)
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
