"""``srp-np run`` end to end, and every bad-input path (one line, exit 2, no traceback)."""
import json
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np.cli.main import cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


def assert_one_line_error(result, fragment):
    assert result.exit_code == 2, result.output
    out = result.output.strip()
    assert "Traceback" not in out
    assert len(out.splitlines()) == 1, out
    assert out.startswith("error: ") and fragment in out, out


def test_run_end_to_end(model_files, tmp_path):
    d = model_files
    r = run("run", "--weights", d / "model.npz", "--data", d / "data.npz", "--tau", 2, "--T", 5,
            "--batch-size", 7, "--json", tmp_path / "o.json", "--save-outputs", tmp_path / "o.npz")
    assert r.exit_code == 0, r.output
    assert "latency" in r.output and "ANN (QCFS" in r.output
    j = json.loads((tmp_path / "o.json").read_text())
    for key in ("ann_accuracy", "accuracy", "latency", "tau", "T", "spikes_per_image", "sops_per_image",
                "firing_rate", "images_per_second"):
        assert key in j
    assert j["latency"] == [3, 4, 5, 6, 7] and len(j["accuracy"]) == 5 and j["tau"] == 2 and j["T"] == 5
    assert j["spikes_per_image"] > 0 and j["sops_per_image"] > j["spikes_per_image"]
    assert all(0 <= v <= 1 for v in j["firing_rate"].values())
    with np.load(tmp_path / "o.npz") as f:
        assert f["outputs"].shape == (5, 24, 10) and f["ann"].shape == (24, 10) and f["y"].shape == (24,)
        acc = (f["outputs"].argmax(-1) == f["y"]).mean(axis=1)
    np.testing.assert_allclose(acc, j["accuracy"])


def test_run_reports_ann_and_snn_time(model_files, tmp_path):
    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--tau", 1, "--T", 2, "--threads", 1,
            "--json", tmp_path / "o.json")
    assert r.exit_code == 0, r.output
    assert "time: ANN " in r.output and ", SNN " in r.output and "end to end" in r.output
    j = json.loads((tmp_path / "o.json").read_text())
    n = j["n_images"]
    for key in ("ann_seconds", "snn_seconds", "other_seconds", "seconds_total", "snn_images_per_second",
                "images_per_second_end_to_end", "images_per_second", "seconds"):
        assert isinstance(j[key], float), key
    assert j["ann_seconds"] > 0 and j["snn_seconds"] > 0 and j["other_seconds"] >= 0
    assert j["ann_seconds"] + j["snn_seconds"] <= j["seconds_total"]
    assert j["ann_seconds"] + j["snn_seconds"] + j["other_seconds"] == pytest.approx(j["seconds_total"], rel=1e-9)
    # images_per_second keeps its meaning: the SNN's throughput
    assert j["seconds"] == j["snn_seconds"]
    assert j["images_per_second"] == j["snn_images_per_second"] == pytest.approx(n / j["snn_seconds"])
    assert j["images_per_second_end_to_end"] == pytest.approx(n / j["seconds_total"])
    assert j["images_per_second_end_to_end"] < j["snn_images_per_second"]
    assert j["threads"] == 1


def test_run_results_independent_of_threads(model_files, tmp_path):
    import numba

    d = model_files
    before = numba.get_num_threads()
    out = {}
    for threads in (1, 2):
        r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--tau", 2, "--T", 3, "-b", 8, "-q",
                "--threads", threads, "--json", tmp_path / f"t{threads}.json",
                "--save-outputs", tmp_path / f"t{threads}.npz")
        assert r.exit_code == 0, r.output
        assert numba.get_num_threads() == before      # the command restores the caller's thread count
        out[threads] = json.loads((tmp_path / f"t{threads}.json").read_text())
    assert out[1]["threads"] == 1 and out[2]["threads"] == min(2, numba.config.NUMBA_NUM_THREADS)
    for key in ("ann_accuracy", "accuracy", "spikes_per_image", "sops_per_image", "firing_rate", "costs"):
        assert out[1][key] == out[2][key], key
    with np.load(tmp_path / "t1.npz") as a, np.load(tmp_path / "t2.npz") as b:
        for key in ("outputs", "ann", "y"):
            np.testing.assert_array_equal(a[key], b[key])


def test_threads_option(model_files, tmp_path):
    import numba

    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--limit", 4, "--threads", 0)
    assert r.exit_code == 2 and "--threads" in r.output and "x>=1" in r.output
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--limit", 4, "--threads", 10 ** 6,
            "-q", "--json", tmp_path / "o.json")
    assert r.exit_code == 0, r.output        # above Numba's maximum: capped, no error
    assert json.loads((tmp_path / "o.json").read_text())["threads"] == numba.config.NUMBA_NUM_THREADS
    from srp_np.threads import default_threads

    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--limit", 4, "-q",
            "--json", tmp_path / "d.json")
    assert r.exit_code == 0, r.output
    assert 1 <= json.loads((tmp_path / "d.json").read_text())["threads"] <= max(default_threads(), 2)
    for cmd in ("sweep", "analyze", "report"):
        r = run(cmd, "--help")
        assert r.exit_code == 0 and "--threads" in r.output, cmd
    r = run("report", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1, "--limit", 4, "--threads", 1,
            "--json", "-")
    assert r.exit_code == 0, r.output


def test_run_results_independent_of_batch_size(model_files, tmp_path):
    d = model_files
    for b in (1, 24):
        r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--tau", 3, "--T", 3, "-b", b, "-q",
                "--save-outputs", tmp_path / f"b{b}.npz")
        assert r.exit_code == 0, r.output
    with np.load(tmp_path / "b1.npz") as a, np.load(tmp_path / "b24.npz") as b:
        np.testing.assert_array_equal(a["outputs"], b["outputs"])


def test_run_limit_and_float64(model_files, tmp_path):
    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--tau", 0, "--T", 2, "--limit", 5,
            "--dtype", "float64", "--json", tmp_path / "o.json", "-q")
    assert r.exit_code == 0, r.output
    j = json.loads((tmp_path / "o.json").read_text())
    assert j["n_images"] == 5 and j["dtype"] == "float64" and j["tau"] == 0


def test_bad_inputs(model_files, tmp_path):
    d = model_files
    w, data = d / "model.npz", d / "data.npz"
    assert_one_line_error(run("run", "-w", tmp_path / "nope.npz", "-d", data), "not found")
    (tmp_path / "corrupt.npz").write_bytes(b"PK\x03\x04garbage")
    assert_one_line_error(run("run", "-w", tmp_path / "corrupt.npz", "-d", data), "not a valid .npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    assert_one_line_error(run("run", "-w", tmp_path / "other.npz", "-d", data), "no 'graph' entry")
    assert_one_line_error(run("run", "-w", w, "-d", tmp_path / "nodata.npz"), "no such file")
    np.savez(tmp_path / "rgb.npz", x=np.zeros((2, 3, 28, 28), np.uint8), y=np.zeros(2, np.int64))
    assert_one_line_error(run("run", "-w", w, "-d", tmp_path / "rgb.npz"), "input channel")
    np.savez(tmp_path / "big.npz", x=np.zeros((2, 1, 40, 40), np.uint8), y=np.zeros(2, np.int64))
    assert_one_line_error(run("run", "-w", w, "-d", tmp_path / "big.npz"), "do not fit")
    np.savez(tmp_path / "labels.npz", x=np.zeros((2, 1, 28, 28), np.uint8), y=np.array([0, 42]))
    assert_one_line_error(run("run", "-w", w, "-d", tmp_path / "labels.npz"), "labels must lie in")
    assert_one_line_error(run("run", "-w", w, "-d", data, "--tau", -1), "'--tau': -1 is not in the range x>=0")
    assert_one_line_error(run("run", "-w", w, "-d", data, "--T", 0), "'--T': 0 is not in the range x>=1")
    assert_one_line_error(run("run", "-w", w, "-d", data, "--dtype", "int8"), "--dtype")
    assert_one_line_error(run("run", "-w", w, "-d", data, "--batch-size", 0), "--batch-size")
    out = tmp_path / "missing_dir" / "o.json"
    assert_one_line_error(run("run", "-w", w, "-d", data, "--T", 1, "--json", out), "does not exist")
    assert not out.parent.exists()


def test_console_script_error_has_no_traceback(tmp_path):
    p = subprocess.run([sys.executable, "-m", "srp_np.cli.main", "run", "--weights", str(tmp_path / "x.npz")],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert p.stderr.strip().splitlines() == [f"error: model file not found: {tmp_path / 'x.npz'}"]


def test_import_does_not_import_torch():
    code = ("import sys, srp_np, srp_np.simulator, srp_np.evaluate, srp_np.cli.main; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
