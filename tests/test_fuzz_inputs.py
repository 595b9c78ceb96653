"""Fuzz the CLI with malformed srp-np/1 model files, data files and option values (issue 11).

Hypothesis starts from a valid small model and data file and mutates them (keys dropped or
given other values and types, arrays with wrong shapes, dtypes, NaN or huge values, raw JSON
text, corrupt or truncated zip bytes). Every run of the CLI must end in success (exit 0, and a
strict-JSON ``--json`` file) or in exactly one line ``error: ...`` with exit 2: never a
traceback, never exit 1, never a hang (20 s alarm per run), never a changed input file, never a
numeric RuntimeWarning (overflow, invalid value) on the way.

About 1,800 CLI runs on 8×8 and 32×32 models with T = 1: well under a minute on a 2-core machine.
``SRP_NP_FUZZ_SCALE=N`` multiplies the number of examples (for a longer local run).
"""
from __future__ import annotations

import gzip
import hashlib
import io
import pickle
import struct
import json
import os
import signal
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from srp_np.cli.main import cli
from srp_np.model import save_model
from srp_np.testing import random_resnet, random_vgg

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

STATS = {"runs": 0, "ok": 0, "error": 0}
SETTINGS = dict(deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _base():
    rng = np.random.default_rng(11)
    x = rng.integers(0, 256, (3, 1, 8, 8)).astype(np.uint8)
    y = rng.integers(0, 10, 3)
    m = random_resnet(input_shape=(1, 8, 8), widths=(2,), blocks=1, rng=5, calibrate_x=x / 255.0)
    m.graph["dataset"] = "fashion-mnist"
    m.graph["arch"] = "fuzz-resnet"
    with tempfile.TemporaryDirectory() as d:
        save_model(Path(d) / "m.npz", m.graph, m.arrays)
        model_bytes = (Path(d) / "m.npz").read_bytes()
    return m, model_bytes, x, y


BASE, BASE_BYTES, BASE_X, BASE_Y = _base()
LAYER = BASE.qcfs_nodes[0]["name"]

# values a hostile file may hold where the format wants something else
HOSTILE = st.one_of(
    st.none(), st.booleans(),
    st.sampled_from([0, -1, 1, 2, 3, 10, 2**31, 2**63, 10**30, 10**400]),
    st.sampled_from([0.0, -0.0, -1.0, 0.5, 1e-45, 1e-310, 1e39, 1e300, float("nan"), float("inf"), -float("inf")]),
    st.sampled_from(["", "input", "conv1", "qcfs", "add", "linear", "x\n\x1b[31m", "[bold]", "srp-np/1", "é" * 3]),
    st.lists(st.sampled_from([0, 1, 3, 8, -2, "input", None, 1.5]), max_size=4),
    st.dictionaries(st.sampled_from(["mean", "std", "a"]), st.sampled_from([0, [0.5], [1.0], "x"]), max_size=2),
)
TOP_KEYS = ["format", "input_shape", "num_classes", "L", "preprocess", "nodes", "output", "arch", "dataset"]
NODE_KEYS = ["name", "op", "inputs", "weight", "bias", "stride", "padding", "kernel", "threshold"]


def _npz_bytes(graph_text, arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, graph=np.array(graph_text), **arrays)
    return buf.getvalue()


@st.composite
def bad_models(draw) -> bytes:
    graph = json.loads(json.dumps(BASE.graph))
    arrays = dict(BASE.arrays)
    kind = draw(st.sampled_from(["top", "node", "array", "text", "bytes", "mixed"]))
    if kind in ("top", "mixed"):
        key = draw(st.sampled_from(TOP_KEYS))
        if draw(st.booleans()):
            graph.pop(key, None)
        else:
            graph[key] = draw(HOSTILE)
    if kind in ("node", "mixed") and isinstance(graph.get("nodes"), list) and graph["nodes"]:
        i = draw(st.integers(0, len(graph["nodes"]) - 1))
        key = draw(st.sampled_from(NODE_KEYS))
        node = graph["nodes"][i]
        action = draw(st.sampled_from(["drop", "set", "swap", "dup"]))
        if not isinstance(node, dict):
            graph["nodes"][i] = draw(HOSTILE)
        elif action == "drop":
            node.pop(key, None)
        elif action == "set":
            node[key] = draw(HOSTILE)
        elif action == "swap" and len(graph["nodes"]) > 1:
            j = draw(st.integers(0, len(graph["nodes"]) - 1))
            graph["nodes"][i], graph["nodes"][j] = graph["nodes"][j], graph["nodes"][i]
        else:
            graph["nodes"].insert(i, json.loads(json.dumps(node)))
    if kind in ("array", "mixed"):
        key = draw(st.sampled_from(sorted(arrays)))
        a = arrays[key]
        change = draw(st.sampled_from(["nan", "inf", "huge", "tiny", "shape", "dtype", "empty", "drop", "extra",
                                       "f64", "f16", "scalar"]))
        if change == "nan":
            a = a.copy()
            a.flat[0] = np.nan
        elif change == "inf":
            a = a.copy()
            a.flat[-1] = np.inf
        elif change == "huge":
            a = a.astype(np.float64) * 1e300
        elif change == "tiny":
            a = a.astype(np.float64) * 1e-300
        elif change == "shape":
            a = a.reshape(-1)[:-1] if a.size > 1 else np.zeros((2, 2), np.float32)
        elif change == "dtype":
            a = a.astype(draw(st.sampled_from([np.int32, np.uint8, np.bool_, np.complex64])))
        elif change == "empty":
            a = np.zeros((0,) + a.shape[1:], np.float32)
        elif change == "f64":
            a = a.astype(np.float64)
        elif change == "f16":
            a = a.astype(np.float16)
        elif change == "scalar":
            a = np.float32(1.0)
        if change == "drop":
            arrays.pop(key)
        elif change == "extra":
            arrays["unused"] = np.zeros(draw(st.sampled_from([1, 1000, 2**20])), np.float32)
        else:
            arrays[key] = a
    text = json.dumps(graph)
    if kind == "text":
        how = draw(st.sampled_from(["cut", "nan", "deep", "garbage", "bigint", "nonobject"]))
        if how == "cut":
            text = text[: draw(st.integers(0, len(text) - 1))]
        elif how == "nan":
            text = text.replace('"L": 4', '"L": NaN', 1).replace('"mean": [0.0]', '"mean": [Infinity]', 1)
        elif how == "deep":
            n = draw(st.sampled_from([40, 1000, 100_000]))
            text = text[:-1] + ', "deep": ' + "[" * n + "]" * n + "}"
        elif how == "garbage":
            text = draw(st.text(max_size=40))
        elif how == "bigint":
            text = text.replace('"num_classes": 10', '"num_classes": 1' + "0" * draw(st.sampled_from([20, 5000])), 1)
        else:
            text = json.dumps(draw(HOSTILE))
    data = _npz_bytes(text, arrays)
    if kind == "bytes":
        how = draw(st.sampled_from(["truncate", "flip", "junk", "empty", "npy"]))
        if how == "truncate":
            data = data[: draw(st.integers(0, len(data) - 1))]
        elif how == "flip":
            b = bytearray(data)
            for _ in range(draw(st.integers(1, 8))):
                b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
            data = bytes(b)
        elif how == "junk":
            data = data + draw(st.binary(min_size=1, max_size=64))
        elif how == "empty":
            data = b""
        else:
            buf = io.BytesIO()
            np.save(buf, np.zeros(3, np.float32))
            data = buf.getvalue()
    return data


@st.composite
def bad_data(draw) -> bytes:
    x, y = BASE_X.copy(), BASE_Y.copy()
    arrays = {"x": x, "y": y}
    change = draw(st.sampled_from(["x_dtype", "x_float", "x_shape", "y_dtype", "y_range", "y_len", "drop", "empty",
                                   "zero_hw", "bytes", "ok_float", "small", "big_hw", "channels"]))
    if change == "x_dtype":
        arrays["x"] = x.astype(draw(st.sampled_from([np.int16, np.int64, np.bool_, np.float16, np.complex64])))
    elif change == "x_float":
        v = draw(st.sampled_from([np.nan, np.inf, -0.5, 1.5, 255.0]))
        xf = (x / 255.0).astype(np.float32)
        xf.flat[0] = v
        arrays["x"] = xf
    elif change == "ok_float":
        arrays["x"] = (x / 255.0).astype(draw(st.sampled_from([np.float32, np.float64])))
    elif change == "x_shape":
        arrays["x"] = x.reshape(draw(st.sampled_from([(3, 64), (3, 1, 64), (3, 1, 8, 8, 1), (192,)])))
    elif change == "y_dtype":
        arrays["y"] = y.astype(draw(st.sampled_from([np.float32, np.bool_, np.uint8, np.int8])))
    elif change == "y_range":
        y = y.copy()
        y[0] = draw(st.sampled_from([-1, 10, 2**40, -2**40]))
        arrays["y"] = y
    elif change == "y_len":
        arrays["y"] = y[:-1]
    elif change == "drop":
        arrays.pop(draw(st.sampled_from(["x", "y"])))
    elif change == "empty":
        arrays = {"x": x[:0], "y": y[:0]}
    elif change == "zero_hw":
        arrays["x"] = np.zeros((3, 1, 0, 0), np.uint8)
    elif change == "small":
        arrays["x"] = x[:, :, :5, :7]
    elif change == "big_hw":
        arrays["x"] = np.zeros((3, 1, 9, 8), np.uint8)
    elif change == "channels":
        arrays["x"] = np.repeat(x, 3, axis=1)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    data = buf.getvalue()
    if change == "bytes":
        data = data[: draw(st.integers(0, len(data) - 1))]
    return data


COMMANDS = {
    "run": ["run", "--tau", "1", "--T", "1", "--limit", "2", "-q"],
    "report": ["report", "--tau", "1", "--T", "1", "--limit", "2"],
    "sweep": ["sweep", "--tau", "0,1", "--T", "1", "--limit", "2"],
    "analyze": ["analyze", "--tau", "1", "--T", "1", "--limit", "2"],
    "neuron": ["explain", "neuron", "--layer", LAYER, "--index", "0,0,0", "--tau", "1", "--T", "1"],
}
JSON_COMMANDS = ("run", "report", "sweep", "analyze", "neuron")


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


class _Hang(BaseException):
    """Raised by the alarm; a BaseException, so that no ``except Exception`` in the CLI hides it."""


@pytest.fixture(scope="module", autouse=True)
def _compiled_kernels():
    """Compile the kernels (a cold cache takes minutes on 2 cores) before any run is timed."""
    from srp_np.warmup import cache_is_warm, warmup

    for dt in (np.float32, np.float64):
        if not cache_is_warm(dt):
            warmup(dt)


def _alarm(signum, frame):
    raise _Hang()


def _invoke(args):
    """Run the CLI once with a 20 s alarm (a hang fails the test), recording every warning."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(20)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            r = CliRunner().invoke(cli, args)
    except _Hang:
        pytest.fail(f"no answer within 20 s: {args}")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    STATS["runs"] += 1
    return r, caught


def check_cli(command: str, model: bytes, data: bytes, extra=()) -> None:
    """Write the inputs, run the CLI once, and assert the promise."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        mp, dp, out = d / "model.npz", d / "data.npz", d / "out.json"
        mp.write_bytes(model)
        dp.write_bytes(data)
        before = (_sha(mp), _sha(dp))
        args = COMMANDS[command] + ["-w", str(mp), "-d", str(dp), "--json", str(out)] + [str(a) for a in extra]
        r, caught = _invoke(args)
        numeric = [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]
        assert not numeric, f"{args}: RuntimeWarning {numeric}"
        assert (_sha(mp), _sha(dp)) == before, "an input file changed"
        text = r.output.strip()
        if r.exit_code == 0:
            STATS["ok"] += 1
            assert out.exists()
            json.loads(out.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON output"))
            return
        assert r.exit_code == 2, f"exit {r.exit_code}: {text[-2000:]!r} ({r.exception!r})"
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{args}: {text[-2000:]!r}"
        assert "Traceback" not in text and not out.exists()
        STATS["error"] += 1


def _report(name):
    print(f"\nfuzz {name}: {STATS['runs']} CLI runs so far ({STATS['ok']} succeeded, "
          f"{STATS['error']} refused with one error line)")


def test_base_inputs_succeed():
    """The unmutated inputs run through every command (so the fuzzer mutates something valid)."""
    ok = STATS["ok"]
    for command in COMMANDS:
        check_cli(command, BASE_BYTES, _npz_bytes_data(BASE_X, BASE_Y))
    assert STATS["ok"] - ok == len(COMMANDS)


def test_fuzz_malformed_models():
    @settings(max_examples=int(os.environ.get("SRP_NP_FUZZ_SCALE", "1")) * 1000, **SETTINGS)
    @given(bad_models(), st.sampled_from(sorted(COMMANDS)))
    def check(model, command):
        check_cli(command, model, _npz_bytes_data(BASE_X, BASE_Y))

    check()
    _report("models")


def test_fuzz_malformed_data():
    @settings(max_examples=int(os.environ.get("SRP_NP_FUZZ_SCALE", "1")) * 300, **SETTINGS)
    @given(bad_data(), st.sampled_from(sorted(COMMANDS)))
    def check(data, command):
        check_cli(command, BASE_BYTES, data)

    check()
    _report("data")


OPTION_VALUES = {
    "--T": ["0", "-1", "1", "2", str(10**18), str(2**63), "1e3", "x", ""],
    "--tau": ["0", "-1", "2", str(10**18), str(10**30), "nan"],
    "--mask-eps": ["0", "-0.5", "1", "-1", "1.0001", "1e308", "nan", "inf", "-inf", "1e-3", "x"],
    "--limit": ["0", "-3", "1", str(2**63), "1.5"],
    "--dtype": ["float64", "float16", "int8", ""],
    "--threads": ["0", "1", "-1", str(10**6)],
}


def test_fuzz_options():
    @settings(max_examples=int(os.environ.get("SRP_NP_FUZZ_SCALE", "1")) * 250, **SETTINGS)
    @given(st.sampled_from(["run", "report", "analyze", "neuron"]),
           st.lists(st.tuples(st.sampled_from(sorted(OPTION_VALUES)), st.data()), min_size=1, max_size=3))
    def check(command, opts):
        extra = []
        for name, data in opts:
            if command == "neuron" and name in ("--limit", "--dtype", "--threads"):
                continue
            extra += [name, data.draw(st.sampled_from(OPTION_VALUES[name]))]
        check_cli(command, BASE_BYTES, _npz_bytes_data(BASE_X, BASE_Y), extra)

    check()
    _report("options")


def _npz_bytes_data(x, y) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, x=x, y=y)
    return buf.getvalue()


# ----------------------------------------------------------------------------- data folders (--data-dir)

def _idx(arr, code=0x08, ndim=None, dims=None) -> bytes:
    arr = np.asarray(arr)
    dims = arr.shape if dims is None else dims
    ndim = len(dims) if ndim is None else ndim
    return bytes([0, 0, code, ndim]) + struct.pack(">" + "I" * len(dims), *dims) + arr.tobytes()


@st.composite
def bad_idx_dirs(draw) -> dict:
    """Files of a Fashion-MNIST folder (t10k images and labels, idx), one of them damaged."""
    x, y = BASE_X[:, 0], BASE_Y.astype(np.uint8)
    files = {"t10k-images-idx3-ubyte": _idx(x), "t10k-labels-idx1-ubyte": _idx(y)}
    target = draw(st.sampled_from(sorted(files)))
    how = draw(st.sampled_from(["code", "ndim", "dims", "truncate", "flip", "float", "floatbad", "int32", "gzip",
                                "gzipbad", "empty", "zero", "none"]))
    data = files[target]
    src = x if "images" in target else y
    if how == "code":
        data = data[:2] + bytes([draw(st.sampled_from([0x00, 0x07, 0x0B, 0x0D, 0x0E, 0xFF]))]) + data[3:]
    elif how == "ndim":
        data = data[:3] + bytes([draw(st.sampled_from([0, 1, 2, 4, 255]))]) + data[4:]
    elif how == "dims":
        dims = list(src.shape)
        dims[draw(st.integers(0, len(dims) - 1))] = draw(st.sampled_from([0, 1, 2**31, 2**32 - 1]))
        data = _idx(src, dims=dims)
    elif how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "flip":
        b = bytearray(data)
        b[draw(st.integers(0, len(b) - 1))] ^= draw(st.integers(1, 255))
        data = bytes(b)
    elif how in ("float", "floatbad"):
        v = src.astype(">f4") / (255.0 if how == "float" else 1.0)
        data = _idx(v, code=0x0D)
    elif how == "int32":
        data = _idx((src.astype(np.int64) * draw(st.sampled_from([1, 300, -1]))).astype(">i4"), code=0x0C)
    elif how == "zero":
        data = _idx(np.zeros((3, 0, 0), np.uint8))
    elif how == "empty":
        data = b""
    name = target
    if how in ("gzip", "gzipbad"):
        data = gzip.compress(data)
        if how == "gzipbad":
            data = data[: len(data) // 2]
        files.pop(target)
        name = target + ".gz"
    files[name] = data
    return files


def _cifar_base():
    rng = np.random.default_rng(4)
    x = rng.integers(0, 256, (3, 3, 32, 32)).astype(np.uint8)
    m = random_vgg(input_shape=(3, 32, 32), widths=(2,), fc=8, rng=2, calibrate_x=x / 255.0)
    m.graph["dataset"] = "cifar10"
    with tempfile.TemporaryDirectory() as d:
        save_model(Path(d) / "c.npz", m.graph, m.arrays)
        return (Path(d) / "c.npz").read_bytes(), x.reshape(3, -1), rng.integers(0, 10, 3)


CIFAR_MODEL, CIFAR_DATA, CIFAR_LABELS = _cifar_base()


@st.composite
def bad_cifar_batches(draw) -> bytes:
    d = {b"data": CIFAR_DATA.copy(), b"labels": CIFAR_LABELS.tolist(), b"batch_label": b"testing batch 1 of 1"}
    how = draw(st.sampled_from(["data", "labels", "drop", "notdict", "truncate", "evil", "ok"]))
    if how == "data":
        d[b"data"] = draw(st.sampled_from([
            CIFAR_DATA[:, :-1], CIFAR_DATA[:2], CIFAR_DATA.astype(np.float64), CIFAR_DATA.astype(np.int64) * 300,
            CIFAR_DATA.reshape(3, 3, 1024), CIFAR_DATA.tolist(), [[b"x"] * 3072] * 3, None, 7, "str"]))
    elif how == "labels":
        d[b"labels"] = draw(st.sampled_from([[1, 2], [1, 2, 3, 4], [1.5, 2, 3], ["a", "b", "c"], [[1], [2], [3]],
                                             [-1, 0, 1], [10, 11, 12], [2**70, 1, 2], None, {1: 2}]))
    elif how == "drop":
        d.pop(draw(st.sampled_from([b"data", b"labels"])))
    elif how == "notdict":
        d = draw(st.sampled_from([[1, 2], b"bytes", 5, None]))
    data = pickle.dumps(d, protocol=2)
    if how == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif how == "evil":
        data = pickle.dumps({b"data": {1, 2}, b"labels": [1]}, protocol=2)      # a set: refused class
    return data


def check_data_dir(command: str, model: bytes, files: dict, extra=()) -> None:
    """Like :func:`check_cli` for a --data-dir folder of files."""
    with tempfile.TemporaryDirectory() as d:
        d = Path(d)
        (d / "in").mkdir()
        for name, data in files.items():
            (d / "in" / name).write_bytes(data)
        (d / "model.npz").write_bytes(model)
        before = {p.name: _sha(p) for p in (d / "in").iterdir()}
        args = COMMANDS[command] + ["-w", str(d / "model.npz"), "--data-dir", str(d / "in")] + list(extra)
        r, caught = _invoke(args)
        assert {p.name: _sha(p) for p in (d / "in").iterdir()} == before, "an input file changed"
        assert not [w for w in caught if issubclass(w.category, RuntimeWarning)], [str(w.message) for w in caught]
        text = r.output.strip()
        if r.exit_code == 0:
            STATS["ok"] += 1
            return
        assert r.exit_code == 2, f"exit {r.exit_code}: {text[-2000:]!r} ({r.exception!r})"
        lines = text.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), f"{args}: {text[-2000:]!r}"
        STATS["error"] += 1


def test_fuzz_malformed_idx_and_cifar_folders():
    @settings(max_examples=int(os.environ.get("SRP_NP_FUZZ_SCALE", "1")) * 150, **SETTINGS)
    @given(bad_idx_dirs(), st.sampled_from(["run", "report", "neuron"]))
    def idx(files, command):
        check_data_dir(command, BASE_BYTES, files)

    @settings(max_examples=int(os.environ.get("SRP_NP_FUZZ_SCALE", "1")) * 100, **SETTINGS)
    @given(bad_cifar_batches(), st.sampled_from(["run", "report"]))
    def cifar(batch, command):
        check_data_dir(command, CIFAR_MODEL, {"test_batch": batch})

    idx()
    cifar()
    _report("data folders")
