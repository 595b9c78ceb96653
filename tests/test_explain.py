"""Teaching traces (srp_np.explain, ``srp-np explain``)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np.errors import SrpError
from srp_np.explain import fig1, neuron_trace, parse_index, theorem1_demo
from srp_np.reference import simulate_dense
from srp_np.testing import random_resnet

PNG = b"\x89PNG\r\n\x1a\n"


def test_fig1_reproduces_the_paper():
    r = fig1()
    assert r["a"] == 0.5
    phis = {s["key"]: s["phi"] for s in r["scenarios"]}
    assert phis["ideal"] == pytest.approx(0.5)
    assert phis["more"] == pytest.approx(4 / 6)
    assert phis["fewer"] == pytest.approx(2 / 6)
    for s in r["scenarios"]:
        assert np.sum(s["pre_spikes"], axis=1).tolist() == [3, 3]  # a^{l-1} = [0.5, 0.5]
        # charge balance (Eq. 4): θ·N + v(T) = v(0) + Σx
        assert s["steps"][-1]["count"] + s["v_T"] == pytest.approx(r["v0"] + sum(t["input"] for t in s["steps"]))
    # Theorem 1: the run with too many spikes ends with a negative membrane
    assert [s["v_T"] < 0 for s in r["scenarios"]] == [False, True, False]
    assert [s["phi"] for s in fig1(v0=0.0)["scenarios"]] == pytest.approx([0.5, 4 / 6, 2 / 6])


def test_neuron_trace_matches_dense_reference():
    shape = (2, 8, 8)
    rng = np.random.default_rng(0)
    model = random_resnet(input_shape=shape, widths=(3, 4), rng=1, calibrate_x=rng.random((6,) + shape))
    x = rng.random((3,) + shape)
    tau, T = 3, 5
    d = simulate_dense(model, x, tau, T)
    for q in model.qcfs_nodes[1:3]:
        name = q["name"]
        # pick the neuron with the most stage-2 spikes in image 2 and a silenced one if any
        picks = [np.unravel_index(np.argmax(d.spikes[name][2]), d.spikes[name][2].shape)]
        off = np.argwhere(~d.mask[name][2])
        if len(off):
            picks.append(tuple(off[0]))
        for idx in picks:
            tr = neuron_trace(model, x[2], name, tuple(int(i) for i in idx), tau, T)
            full = (2,) + tuple(idx)
            assert tr["spikes"] == d.spikes[name][full]
            assert sum(r["fired"] for r in tr["stage1"]) == d.spikes_stage1[name][full]
            assert tr["v_tau"] == pytest.approx(d.v_tau[name][full])
            assert tr["kept"] == bool(d.mask[name][full])
            assert tr["ybar"] * T == pytest.approx(d.input_sum[name][full])
            assert tr["v_T"] == pytest.approx(d.v_final[name][full])
            assert len(tr["stage1"]) == tau and len(tr["stage2"]) == T
            assert tr["case_error_II"] in ("case1", "case2", "case3", "case4", "none")
    json.dumps(tr)


def test_parse_index():
    assert parse_index("1,2,3", (4, 5, 6)) == (1, 2, 3)
    assert parse_index("7", (4, 5, 6)) == (0, 1, 1)
    for bad in ("1,2", "9,0,0", "a"):
        with pytest.raises(SrpError):
            parse_index(bad, (4, 5, 6))


def test_theorem1_holds_iff_preconditions():
    r = theorem1_demo(n=1500, T=8, rng=1)
    assert r["violations"] == 0 and r["holds"] == 1500
    assert r["a_zero"]["phi_gt_a"] > 0 and r["a_positive"]["v_neg_and_phi_gt_a"] > 0  # non-trivial
    assert r["a_zero"]["necessity_violations"] == 0 and r["a_positive"]["v_neg_but_phi_le_a"] == 0
    broken = theorem1_demo(n=1500, T=8, L=2, rng=1)
    assert broken["violations"] > 0 and not broken["preconditions_met"]


def test_explain_cli(model_files, tmp_path):
    from cli.main import cli

    run = CliRunner().invoke
    png = tmp_path / "fig1.png"
    r = run(cli, ["explain", "fig1", "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "0.6667" in r.output and "0.3333" in r.output
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1024
    png = tmp_path / "neuron.png"
    args = ["explain", "neuron", "--weights", str(model_files / "model.npz"), "--data", str(model_files / "data.npz"),
            "--layer", "act2", "--index", "1,10,12", "--image", "3", "--tau", "2", "--T", "4"]
    r = run(cli, args + ["--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "v(tau)" in r.output and "Error II" in r.output and "stage 2" in r.output
    assert png.read_bytes()[:8] == PNG and png.stat().st_size > 1024
    r = run(cli, args[:6] + ["--layer", "nope", "--index", "0"])
    assert r.exit_code == 2 and "nope" in r.output
    r = run(cli, ["explain", "theorem1", "--n", "300"])
    assert r.exit_code == 0 and "0 violations" in r.output
    r = run(cli, ["explain", "theorem1", "--n", "300", "--json"])
    assert json.loads(r.output)["examples"] == 300
