"""One error path for the whole CLI (issue 11): user errors, click's own included, print one line
``error: ...`` and exit 2; an internal error exits 1 with a short line; control characters
never reach the terminal raw."""
import pytest
from click.testing import CliRunner

from srp_np.cli.main import _one_line, cli


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


@pytest.mark.parametrize("args", [["run", "--tau", "abc"], ["run", "--threads", "0"], ["run", "--no-such-option"],
                                  ["sweep", "--T", "1.5"], ["no-such-command"], ["run", "--json"],
                                  ["explain", "neuron", "--T", "x"]])
def test_usage_errors_are_one_line(args):
    r = run(*args)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ") and "Usage:" not in out, out


def test_help_and_version_still_exit_0():
    assert run("--help").exit_code == 0
    assert run("run", "--help").exit_code == 0
    assert run("--version").exit_code == 0


def test_internal_error_is_one_line_exit_1(model_files, monkeypatch):
    import srp_np.evaluate

    def boom(*a, **k):
        raise ZeroDivisionError("deliberate")

    monkeypatch.setattr(srp_np.evaluate, "evaluate_source", boom)   # what `run` calls
    d = model_files
    r = run("run", "-w", d / "model.npz", "-d", d / "data.npz", "--T", 1)
    assert r.exit_code == 1, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("internal error: ZeroDivisionError") and "report" in out


def test_control_characters_are_escaped():
    assert _one_line("op 'a\nb\x1b[31m'") == "op 'a b\\x1b[31m'"


# ----------------------------------------------------------------------------- issue 11 items 5-8 through the CLI

def _one_error_line(r):
    assert r.exit_code == 2, (r.exit_code, r.output, r.exception)
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: "), out
    return out


BIG = 10 ** 18


@pytest.mark.parametrize("cmd", [
    ["run", "--T", BIG], ["run", "--tau", BIG], ["run", "--T", 10 ** 30],
    ["sweep", "--T", BIG, "--tau", "0"], ["sweep", "--T", 2, "--tau", f"0,{BIG}"],
    ["analyze", "--T", BIG, "--tau", 1], ["analyze", "--T", 2, "--tau", BIG],
    ["report", "--T", BIG], ["report", "--tau", BIG],
])
def test_huge_tau_T_fail_fast(model_files, cmd, monkeypatch):
    import time

    import srp_np.simulator

    def no_simulator(*a, **k):
        raise AssertionError("a simulator was built (kernels compiled) for a run that cannot fit")

    monkeypatch.setattr(srp_np.simulator.Simulator, "__init__", no_simulator)
    d = model_files
    t = time.perf_counter()
    out = _one_error_line(run(*cmd, "-w", d / "model.npz", "-d", d / "data.npz", "--limit", 2))
    assert "memory" in out and ("--T" in out or "--tau" in out)
    assert time.perf_counter() - t < 30


def test_explain_huge_T_fails_fast(model_files):
    import time

    from srp_np.model import load_model

    d = model_files
    layer = load_model(d / "model.npz").qcfs_nodes[0]["name"]
    t = time.perf_counter()
    for opt in ("--T", "--tau"):
        out = _one_error_line(run("explain", "neuron", "-w", d / "model.npz", "-d", d / "data.npz", "--layer", layer,
                                  "--index", "0,0,0", opt, BIG))
        assert "memory" in out
    out = _one_error_line(run("explain", "theorem1", "--T", BIG))
    assert "memory" in out
    assert time.perf_counter() - t < 30


def test_tau_T_limit_follows_available_memory(model_files, monkeypatch):
    """The bound on τ+T is the machine's memory, not a constant: the same run fits or not."""
    d = model_files
    args = ["run", "-w", d / "model.npz", "-d", d / "data.npz", "--limit", 2, "--tau", 0, "--T", 4000, "-q"]
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(32 * 2**20))
    out = _one_error_line(run(*args))
    assert "more than the 32.0 MiB available" in out
    monkeypatch.delenv("SRP_NP_MEMORY_LIMIT")
    assert run(*args).exit_code == 0


@pytest.mark.parametrize("value", ["nan", "inf", "-inf"])
@pytest.mark.parametrize("cmd", [["run"], ["sweep", "--tau", "0,1", "--T", 2], ["analyze", "--T", 2],
                                 ["report", "--T", 2]])
def test_mask_eps_must_be_finite(model_files, cmd, value):
    d = model_files
    out = _one_error_line(run(*cmd, "-w", d / "model.npz", "-d", d / "data.npz", "--limit", 2, "--mask-eps", value))
    assert "--mask-eps" in out and "finite number in [-1, 1]" in out


@pytest.mark.parametrize("args", [["--e-ac", "nan"], ["--e-mac", "inf"]])
def test_energy_options_must_be_finite(model_files, args):
    d = model_files
    _one_error_line(run("report", "-w", d / "model.npz", "-d", d / "data.npz", "--limit", 2, "--T", 1, *args))


def test_empty_file_names_are_errors(model_files):
    d = model_files
    out = _one_error_line(run("run", "-w", "", "-d", d / "data.npz", "--limit", 2, "--T", 1))
    assert "--weights needs a file name" in out
    out = _one_error_line(run("run", "-w", d / "model.npz", "-d", "", "--limit", 2, "--T", 1))
    assert "--data needs a file name" in out
    _one_error_line(run("run", "-w", d / "model.npz", "--data-dir", "", "--limit", 2, "--T", 1))


def test_fifo_weights_and_data_refused(model_files, tmp_path):
    import os
    import threading

    fifo = tmp_path / "fifo.npz"
    os.mkfifo(fifo)
    d = model_files
    for args in (["-w", fifo, "-d", d / "data.npz"], ["-w", d / "model.npz", "-d", fifo]):
        res = {}
        t = threading.Thread(target=lambda: res.update(r=run("run", *args, "--T", 1)), daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "blocked on a FIFO"
        assert "not a regular file" in _one_error_line(res["r"])


def test_model_problems_are_one_line(model_files, tmp_path):
    """A .npy as a model, output as a list, a non-string dataset, JSON 100,000 deep, huge
    input_shape and integers: one line each, no traceback."""
    import json

    import numpy as np

    from srp_np.model import load_model

    d = model_files
    m = load_model(d / "model.npz")
    np.save(tmp_path / "a.npy", np.zeros(4))
    bad = {"npy": tmp_path / "a.npy"}

    def write(name, graph_text):
        np.savez(tmp_path / f"{name}.npz", graph=np.array(graph_text), **m.arrays)
        bad[name] = tmp_path / f"{name}.npz"

    g = json.dumps(m.graph)
    write("output_list", json.dumps(dict(m.graph, output=[m.output])))
    write("dataset_int", json.dumps(dict(m.graph, dataset=5)))
    write("deep", g[:-1] + ', "x": ' + "[" * 100_000 + "]" * 100_000 + "}")
    write("huge_shape", json.dumps(dict(m.graph, input_shape=[1, 10 ** 12, 10 ** 12])))
    write("huge_int", json.dumps(dict(m.graph, num_classes=10 ** 200)))
    write("nan_mean", g.replace('"mean": [', '"mean": [NaN, ', 1).replace('"mean": [NaN, 0.0', '"mean": [NaN', 1))
    for name, p in bad.items():
        with warnings_recorded() as w:
            out = _one_error_line(run("run", "-w", p, "-d", d / "data.npz", "--T", 1))
        assert len(out) < 400, (name, out)
        assert not [x for x in w if issubclass(x.category, RuntimeWarning)], (name, w)


def warnings_recorded():
    import warnings

    class _Ctx:
        def __enter__(self):
            self._c = warnings.catch_warnings(record=True)
            w = self._c.__enter__()
            warnings.simplefilter("always")
            return w

        def __exit__(self, *exc):
            return self._c.__exit__(*exc)

    return _Ctx()


def test_json_output_never_holds_nan_or_infinity(tmp_path):
    import json

    import numpy as np

    from srp_np.cli.common import json_text, write_json

    obj = {"a": float("nan"), "b": [np.float32(np.inf), -float("inf"), 1.5], "c": np.int64(3),
           "d": {"e": np.array([np.nan, 2.0])}, "f": None}
    write_json(tmp_path / "o.json", obj)
    text = (tmp_path / "o.json").read_text()
    strict = json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
    assert strict == {"a": None, "b": [None, None, 1.5], "c": 3, "d": {"e": [None, 2.0]}, "f": None}
    assert json.loads(json_text(obj)) == strict


@pytest.mark.parametrize("args", [["explain", "theorem1", "--seed", "-1"], ["explain", "theorem1", "--n", 10 ** 18],
                                  ["explain", "theorem1", "--inputs", 10 ** 18], ["explain", "fig1", "--v0", "nan"]])
def test_explain_options_are_one_line(args):
    _one_error_line(run(*args))


def test_malformed_cifar_batch_through_the_cli(tmp_path):
    import pickle

    import numpy as np

    from srp_np.model import save_model
    from srp_np.testing import random_vgg

    m = random_vgg(input_shape=(3, 32, 32), widths=(2,), fc=8, rng=0)
    m.graph["dataset"] = "cifar10"
    save_model(tmp_path / "c.npz", m.graph, m.arrays)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for batch in ({b"data": [["x"] * 3072], b"labels": [1]}, {b"data": np.zeros((1, 3072)), b"labels": ["a"]},
                  {b"data": np.zeros((2, 3072), np.int64) + 999, b"labels": [1, 2]}, [1, 2]):
        with open(root / "test_batch", "wb") as f:
            pickle.dump(batch, f, protocol=2)
        out = _one_error_line(run("run", "-w", tmp_path / "c.npz", "--data-dir", tmp_path, "--T", 1))
        assert "CIFAR" in out
