"""Accuracy sweeps over τ and T (srp_np.sweep, ``srp-np sweep``)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np.errors import SrpError
from srp_np.simulator import Simulator
from srp_np.sweep import format_table, parse_int_list, sweep, table_steps
from srp_np.testing import random_vgg


def _setup():
    shape = (2, 8, 8)
    rng = np.random.default_rng(0)
    model = random_vgg(input_shape=shape, widths=(3, 5), fc=10, rng=0, calibrate_x=rng.random((6,) + shape))
    x = rng.random((12,) + shape).astype(np.float32)
    y = rng.integers(0, 10, 12)
    return model, x, y


def test_one_run_per_tau_gives_every_T():
    model, x, y = _setup()
    res = sweep(model, x, y, [0, 2], 8)
    assert res["steps"] == [1, 2, 4, 8]
    sim = Simulator(model)
    for tau in (0, 2):
        for t in (1, 3, 8):
            separate = sim.run(x, tau, t)
            assert res["accuracy"][str(tau)][t - 1] == pytest.approx(separate.accuracy(y)[-1])
        assert res["table"][str(tau)]["4"] == res["accuracy"][str(tau)][3]
    json.dumps(res)


def test_table_helpers():
    assert table_steps(64) == [1, 2, 4, 8, 16, 32, 64]
    assert table_steps(6) == [1, 2, 4, 6]
    assert table_steps(1) == [1]
    assert parse_int_list("16, 0,4,4") == [0, 4, 16]
    with pytest.raises(SrpError):
        parse_int_list("0,x")
    with pytest.raises(SrpError):
        parse_int_list("-1")
    model, x, y = _setup()
    text = format_table(sweep(model, x, y, [0, 4], 4), "vgg")
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["Method", "Arch", "ANN"] and "T=4" in lines[0]
    assert lines[2].startswith("QCFS (τ=0)") and lines[3].startswith("SRP (τ=4)")


def test_sweep_cli_json_and_plot(model_files, tmp_path):
    from cli.main import cli

    out, png = tmp_path / "s.json", tmp_path / "s.png"
    args = ["sweep", "--weights", str(model_files / "model.npz"), "--data", str(model_files / "data.npz"),
            "--tau", "0,2", "--T", "4", "--limit", "6"]
    r = CliRunner().invoke(cli, args + ["--json", str(out), "--plot", str(png)])
    assert r.exit_code == 0, r.output
    assert "QCFS (τ=0)" in r.output and "SRP (τ=2)" in r.output and "T=4" in r.output
    res = json.loads(out.read_text())
    assert res["taus"] == [0, 2] and len(res["accuracy"]["2"]) == 4 and res["images"] == 6
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 1024
    r = CliRunner().invoke(cli, args + ["--json"])
    assert r.exit_code == 0 and json.loads(r.output)["T"] == 4
    r = CliRunner().invoke(cli, args[:-6] + ["--tau", "0,a"])
    assert r.exit_code == 2 and "--tau" in r.output


def test_plain_conversion_row_names_the_source(tmp_path):
    """The τ = 0 row is plain conversion of the model's source (TCL, ReLU, QCFS), not always QCFS."""
    from click.testing import CliRunner

    from cli.main import cli
    from srp_np.model import save_model
    from srp_np.sweep import source_name

    model, x, y = _setup()
    assert source_name({}) == "QCFS" and source_name({"source_activation": "tcl"}) == "TCL"
    assert source_name({"source_activation": "relu"}) == "ReLU"
    res = sweep(model, x, y, [0, 4], 4)
    assert format_table(res, source="TCL").splitlines()[2].startswith("TCL (τ=0)")
    graph = dict(model.graph, source_activation="tcl")
    save_model(tmp_path / "m.npz", graph, dict(model.arrays))
    np.savez(tmp_path / "d.npz", x=x, y=y)
    r = CliRunner().invoke(cli, ["sweep", "--weights", str(tmp_path / "m.npz"), "--data", str(tmp_path / "d.npz"),
                                 "--tau", "0,2", "--T", "2"])
    assert r.exit_code == 0, r.output
    assert "TCL (τ=0)" in r.output and "QCFS (τ=0)" not in r.output
