"""Unevenness-error case fractions (srp_np.analysis) against an independent dense computation."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np.analysis import CASES, analyze, classify, fractions
from srp_np.ops import apply_linear_node
from srp_np.reference import simulate_dense
from srp_np.testing import random_resnet, random_vgg


def _model(kind, seed=0, shape=(2, 10, 10)):
    x = np.random.default_rng(seed + 50).random((6,) + shape)
    if kind == "vgg":
        return random_vgg(input_shape=shape, widths=(4, 6), fc=12, rng=seed, calibrate_x=x)
    return random_resnet(input_shape=shape, widths=(4, 6), rng=seed, calibrate_x=x)


def _images(shape, n=5, seed=1):
    return np.random.default_rng(seed).random((n,) + shape).astype(np.float32)


def _ann_activations(model, x):
    """The QCFS ANN, written out here: λ·clip(floor(y·L/λ + 1/2)/L, 0, 1)."""
    vals = {"input": x.astype(np.float64)}
    acts = {}
    for node in model.nodes:
        ins = [vals[s] for s in node["inputs"]]
        if node["op"] == "qcfs":
            lam, L = float(node["threshold"]), model.L
            a = lam * np.minimum(np.maximum(np.floor(ins[0] * L / lam + 0.5), 0), L) / L
            acts[node["name"]] = a
            vals[node["name"]] = a
        else:
            vals[node["name"]] = apply_linear_node(model, node, ins)
    return acts


def _dense_fractions(model, x, tau, T):
    """Fractions per layer from simulate_dense, with the case rules written out independently."""
    d = simulate_dense(model, x, tau, T, dtype=np.float64)
    acts = _ann_activations(model, x)
    out = {}
    for q in model.qcfs_nodes:
        name, lam, L = q["name"], float(q["threshold"]), model.L
        phi = lam * d.spikes[name] / T
        ybar = d.input_sum[name] / T
        a1 = lam * np.minimum(np.maximum(np.floor(ybar * L / lam + 0.5), 0), L) / L
        res = {}
        for err, a in (("error_I", a1), ("error_II", acts[name])):
            tol = 1e-6 * lam
            is0, isl = np.abs(a) <= tol, np.abs(a - lam) <= tol
            mid = (a > tol) & (a < lam - tol)
            gt, lt = phi - a > tol, a - phi > tol
            n = a.size
            c = {"case1": np.sum(is0 & gt) / n, "case2": np.sum(mid & gt) / n,
                 "case3": np.sum(mid & lt) / n, "case4": np.sum(isl & lt) / n}
            c["none"] = 1 - sum(c.values())
            res[err] = c
        out[name] = res
    return out


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_fractions_match_independent_dense_computation(kind):
    model = _model(kind)
    x = _images(model.input_shape)
    tau, T = 3, 4
    res = analyze(model, x, tau, T, dtype=np.float64, chunk=2)  # chunks: counts must add up over chunks
    ref0 = _dense_fractions(model, x, 0, T)
    ref1 = _dense_fractions(model, x, tau, T)
    assert [L["name"] for L in res["layers"]] == [q["name"] for q in model.qcfs_nodes]
    for L in res["layers"]:
        for key, ref in (("baseline", ref0), ("srp", ref1)):
            for err in ("error_I", "error_II"):
                for c in CASES:
                    assert L[key][err][c] == pytest.approx(ref[L["name"]][err][c], abs=1e-12), (L["name"], key, err, c)


def test_float32_simulation_agrees_with_dense_up_to_rounding():
    model = _model("vgg", seed=2)
    x = _images(model.input_shape, seed=3)
    res = analyze(model, x, 2, 4, dtype=np.float32)
    ref = _dense_fractions(model, x, 2, 4)
    for L in res["layers"]:
        for err in ("error_I", "error_II"):
            for c in CASES:
                # a handful of neurons may sit exactly on a rounding boundary in float32
                assert abs(L["srp"][err][c] - ref[L["name"]][err][c]) <= 3 / (L["neurons"] * len(x))


def test_constant_input_layer_has_no_error_when_T_equals_L():
    # the first IF layer sees the analog image, constant over time: with T = L the
    # SNN's φ equals QCFS(ȳ) exactly, so Error I is 'none' everywhere (the equality case)
    model = _model("vgg", seed=4)
    x = _images(model.input_shape, seed=5)
    res = analyze(model, x, 2, model.L, dtype=np.float32)
    first = res["layers"][0]
    assert first["baseline"]["error_I"]["none"] == 1.0
    assert first["baseline"]["error_II"]["none"] == 1.0


def test_classify_rules_and_tolerance():
    lam = np.float32(0.7)
    L = 4
    a = np.array([0, 0, lam / L, 2 * lam / L, lam, lam, lam, 0], dtype=np.float32)
    phi = np.array([0, lam / 8, 2 * lam / 8, lam / 8, lam, 7 * lam / 8, lam, 0], dtype=np.float64)
    # entries 2 and 6 are equalities computed in different precisions
    code = classify(a, phi, float(lam))
    assert [CASES[c] for c in code] == ["none", "case1", "none", "case3", "none", "case4", "none", "none"]
    assert classify([0.35], [0.7], 0.7)[0] == 1  # case2
    f = fractions(np.bincount(code, minlength=5))
    assert sum(f.values()) == pytest.approx(1.0)


def test_json_shape_and_plot(tmp_path):
    from srp_np.plots import plot_cases

    model = _model("resnet", seed=1)
    x = _images(model.input_shape, n=3)
    res = analyze(model, x, 2, 4, y=np.zeros(3, int))
    s = json.loads(json.dumps(res))
    for L in s["layers"]:
        assert set(L) >= {"name", "baseline", "srp"}
        for key in ("baseline", "srp"):
            assert set(L[key]) == {"error_I", "error_II"}
            for err in L[key].values():
                assert set(err) == set(CASES)
                assert sum(err.values()) == pytest.approx(1.0)
    assert set(s["accuracy"]) == {"baseline", "srp"}
    p = plot_cases(res, tmp_path / "cases.png")
    data = open(p, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024


def test_analyze_cli(model_files, tmp_path):
    from cli.main import cli

    out, png = tmp_path / "a.json", tmp_path / "a.png"
    r = CliRunner().invoke(cli, ["analyze", "--weights", str(model_files / "model.npz"), "--data",
                                 str(model_files / "data.npz"), "--tau", "2", "--limit", "4",
                                 "--json", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "Unevenness Error I" in r.output and "case1" in r.output
    res = json.loads(out.read_text())
    assert res["T"] == 4 and res["images"] == 4  # T defaults to the model's L
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1024
    r = CliRunner().invoke(cli, ["analyze", "--weights", str(model_files / "model.npz"), "--data",
                                 str(model_files / "data.npz"), "--tau", "0"])
    assert r.exit_code == 2 and "tau" in r.output
