"""``srp-np explain step``: the terminal step-through of one neuron (srp_np.explain.step_frames).

The trace is checked against the event-driven Simulator (an independent implementation of the
same dynamics), and the command is driven through a pseudo-terminal, one key press per step.
"""
import os
import re
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np import Simulator, load_model
from srp_np.errors import SrpError
from srp_np.evaluate import prepare_inputs
from srp_np.explain import neuron_trace, resolve_neuron, step_frames

TAU, T = 2, 3


def _picks(rec, name, img):
    """A neuron with many stage-2 spikes, a silenced one and one that is silent in both stages."""
    sp = rec[name]["spikes"][img]
    picks = [np.unravel_index(np.argmax(sp + rec[name]["spikes_stage1"][img]), sp.shape)]
    off = np.argwhere(~rec[name]["mask"][img])
    if len(off):
        picks.append(tuple(off[len(off) // 2]))
    quiet = np.argwhere((sp == 0) & (rec[name]["spikes_stage1"][img] == 0))
    if len(quiet):
        picks.append(tuple(quiet[0]))
    return [tuple(int(i) for i in p) for p in picks]


def _check_against_simulator(model, x, names, img, tau, T):
    res = Simulator(model, np.float64).run(x, tau, T, record=True)
    rec = res.record
    checked = {"silenced": 0, "kept": 0}
    for name in names:
        for idx in _picks(rec, name, img):
            tr = neuron_trace(model, x[img], name, idx, tau, T)
            full = (img,) + idx
            # spike counts: stage 1 (before any mask) and stage 2 (after it)
            assert sum(r["spike"] for r in tr["stage1"]) == rec[name]["spikes_stage1"][full]
            assert tr["spikes"] == sum(r["spike"] for r in tr["stage2"]) == rec[name]["spikes"][full]
            assert tr["kept"] == bool(rec[name]["mask"][full])
            assert tr["v_tau"] == pytest.approx(float(rec[name]["v_tau"][full]), abs=1e-9)
            assert sum(r["input"] for r in tr["stage2"]) == pytest.approx(float(rec[name]["input_sum"][full]),
                                                                          abs=1e-9)
            checked["kept" if tr["kept"] else "silenced"] += 1
            # each step is Eqs. 2-3; charge balance (Eq. 4) over stage 2 counts fired spikes, masked or not
            for r in tr["stage1"] + tr["stage2"]:
                assert r["u"] == pytest.approx(r["v_before"] + r["input"])
                assert r["fired"] == int(r["u"] >= tr["theta"])
                assert r["v_after"] == pytest.approx(r["u"] - tr["theta"] * r["fired"])
            fired = sum(r["fired"] for r in tr["stage2"])
            assert tr["theta"] * fired + tr["v_T"] == pytest.approx(tr["theta"] / 2 + tr["ybar"] * T)
            frames = step_frames(tr)
            assert [f["kind"] for f in frames] == ["step"] * tau + ["mask"] * bool(tau) + ["step"] * T + ["end"]
            assert [f["latency"] for f in frames if f["kind"] == "step"] == list(range(1, tau + T + 1))
            mask_text = frames[tau]["text"]
            assert ("KEEP" if tr["kept"] else "SILENCE") in mask_text
            assert f"{tr['spikes']} spike" in frames[-1]["text"]
    return checked


def test_trace_agrees_with_simulator_random_model():
    from srp_np.testing import random_vgg

    shape = (2, 10, 10)
    rng = np.random.default_rng(3)
    model = random_vgg(input_shape=shape, widths=(4, 6), fc=12, rng=2, calibrate_x=rng.random((6,) + shape))
    x = rng.random((3,) + shape)
    names = [q["name"] for q in model.qcfs_nodes]
    checked = _check_against_simulator(model, x, names, 1, TAU, T)
    assert checked["kept"] > 0 and checked["silenced"] > 0      # both sides of the mask were exercised


def test_trace_agrees_with_simulator_shipped_model(shipped_resnet):
    from srp_np.datasets import load_shipped_test_set

    model = shipped_resnet
    x_raw, _ = load_shipped_test_set()
    x = prepare_inputs(model, x_raw[:1]).astype(np.float64)
    checked = _check_against_simulator(model, x, ["layer1.0.act1", "layer2.1.act2", "layer3.2.act2"], 0, 4, 4)
    assert checked["kept"] > 0 and checked["silenced"] > 0


@pytest.fixture(scope="module")
def shipped_resnet():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return load_model(os.path.join(root, "weights", "resnet20_fmnist.npz"))


def test_resolve_neuron_errors(shipped_resnet):
    assert resolve_neuron(shipped_resnet, "layer2.0.act1", "3,5,5") == (3, 5, 5)
    assert resolve_neuron(shipped_resnet, "layer2.0.act1", (3, 5, 5)) == (3, 5, 5)
    assert resolve_neuron(shipped_resnet, "layer2.0.act1", "15") == (0, 1, 1)
    with pytest.raises(SrpError, match="did you mean layer2.0.act1"):
        resolve_neuron(shipped_resnet, "layer2.0.act", "0")
    with pytest.raises(SrpError, match="outside 0..13"):
        resolve_neuron(shipped_resnet, "layer2.0.act1", "3,5,14")
    with pytest.raises(SrpError, match="outside 0..13"):
        resolve_neuron(shipped_resnet, "layer2.0.act1", (3, 5, 14))
    with pytest.raises(SrpError, match="6272 neurons"):
        resolve_neuron(shipped_resnet, "layer2.0.act1", "6272")
    with pytest.raises(SrpError, match="needs 3 numbers"):
        resolve_neuron(shipped_resnet, "layer2.0.act1", "1,2")


def _cli_args(model_files, *extra):
    return ["explain", "step", "--weights", str(model_files / "model.npz"), "--data", str(model_files / "data.npz"),
            "--layer", "act2", "--index", "1,10,12", "--image", "3", "--tau", str(TAU), "--T", str(T), *extra]


def _simulator_count(model_files, image, layer, idx, tau, T):
    from srp_np.datasets import load_npz_data

    model = load_model(model_files / "model.npz")
    x_raw, _ = load_npz_data(model_files / "data.npz")
    x = prepare_inputs(model, x_raw[image:image + 1]).astype(np.float64)
    rec = Simulator(model, np.float64).run(x, tau, T, record=True).record[layer]
    return int(rec["spikes"][(0,) + idx]), int(rec["spikes_stage1"][(0,) + idx]), bool(rec["mask"][(0,) + idx])


def test_no_pause_prints_every_step_and_agrees_with_simulator(model_files):
    from cli.main import cli

    r = CliRunner().invoke(cli, _cli_args(model_files, "--no-pause"))
    assert r.exit_code == 0, r.output
    out = r.output
    assert len(re.findall(r"^stage 1, step t = \d", out, re.M)) == TAU
    assert len(re.findall(r"^stage 2, step t = \d", out, re.M)) == T
    assert "end of stage 1" in out and "end of stage 2" in out and "-- step" not in out
    n2, n1, kept = _simulator_count(model_files, 3, "act2", (1, 10, 12), TAU, T)
    assert re.search(rf"SNN: {n2} spikes? sent", out)
    assert re.search(r"stage-1 output \((\d+) spike", out).group(1) == str(n1)
    assert ("KEEP" if kept else "SILENCE") in out
    # without a terminal on stdin (CliRunner) the command does not wait either
    r2 = CliRunner().invoke(cli, _cli_args(model_files))
    assert r2.exit_code == 0 and r2.output == out


@pytest.mark.parametrize("args,msg", [
    (["--layer", "act2x"], "is not an IF (qcfs) layer"),
    (["--index", "1,10,99"], "outside 0..27"),
    (["--index", "1,10"], "needs 3 numbers"),
    (["--index", "x"], "comma-separated integers"),
    (["--image", "99"], "out of range"),
    (["--tau", "-1"], "'--tau': -1 is not in the range x>=0"),
])
def test_errors_are_one_line(model_files, args, msg):
    from cli.main import cli

    base = _cli_args(model_files, "--no-pause")
    for i in range(0, len(args), 2):
        j = base.index(args[i])
        base[j + 1] = args[i + 1]
    r = CliRunner().invoke(cli, base)
    assert r.exit_code == 2, r.output
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.output


# ----------------------------------------------------------------------------- in a pseudo-terminal

pexpect = pytest.importorskip("pexpect")


def _spawn(model_files, *extra):
    env = dict(os.environ, COLUMNS="120", LINES="40", TERM="xterm")
    cmd = [sys.executable, "-m", "srp_np.cli.main"] + _cli_args(model_files, *extra)
    return pexpect.spawn(cmd[0], cmd[1:], env=env, encoding="utf-8", timeout=60, dimensions=(40, 120))


def test_pty_one_step_per_key(model_files):
    child = _spawn(model_files)
    n_frames = TAU + 1 + T + 1
    child.expect(r"stage 1, step t = 1 of 2")
    for k in range(1, n_frames):
        child.expect(rf"-- step {k}/{n_frames} --")
        # nothing of the next screen is printed before the key press
        assert "step t = 2" not in child.before or k > 1
        child.send("\r" if k % 2 else " ")
        if k == 1:
            child.expect(r"stage 1, step t = 2 of 2")
        elif k == TAU:
            child.expect(r"end of stage 1 \(t = tau = 2\)")
        elif k == TAU + 1:
            child.expect(r"stage 2, step t = 1 of 3")
    child.expect(r"end of stage 2 \(T = 3 steps, latency tau\+T = 5\)")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    n2, _, _ = _simulator_count(model_files, 3, "act2", (1, 10, 12), TAU, T)
    assert re.search(rf"SNN: {n2} spikes? sent", child.before)


def test_pty_waits_for_a_key(model_files):
    child = _spawn(model_files)
    child.expect(r"-- step 1/7 --")
    with pytest.raises(pexpect.TIMEOUT):        # no key: the next step is not shown
        child.expect(r"stage 1, step t = 2", timeout=1.5)
    child.send("x")                             # an unbound key is ignored
    with pytest.raises(pexpect.TIMEOUT):
        child.expect(r"stage 1, step t = 2", timeout=1.0)
    child.send("c")                             # c: run to the end without further pauses
    child.expect(r"end of stage 2")
    child.expect(pexpect.EOF)
    assert "-- step 2/" not in child.before
    child.close()
    assert child.exitstatus == 0


def test_pty_quit_and_interrupt(model_files):
    child = _spawn(model_files)
    child.expect(r"-- step 1/7 --")
    child.send("\r")
    child.expect(r"-- step 2/7 --")
    child.send("q")
    child.expect(r"stopped after screen 2 of 7")
    child.expect(pexpect.EOF)
    assert "end of stage" not in child.before
    child.close()
    assert child.exitstatus == 0

    child = _spawn(model_files)
    child.expect(r"-- step 1/7 --")
    child.sendintr()
    child.expect(r"interrupted")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 130
    assert "Traceback" not in child.before
