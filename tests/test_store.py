"""Resumable sweeps: finished cells stored by model, data and settings (issue 12, part 2)."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
from click.testing import CliRunner

from srp_np.cli.main import cli
from srp_np.store import ResultStore
from srp_np.sweep import sweep, sweep_counts
from srp_np.testing import random_vgg


def _setup(seed=0):
    shape = (2, 8, 8)
    rng = np.random.default_rng(seed)
    model = random_vgg(input_shape=shape, widths=(3, 5), fc=10, rng=seed, calibrate_x=rng.random((6,) + shape))
    x = rng.random((20,) + shape).astype(np.float32)
    y = rng.integers(0, 10, 20)
    return model, x, y


def test_store_hits_give_the_same_counts_and_every_change_misses(tmp_path):
    model, x, y = _setup()
    kw = dict(taus=[0, 2], T=4, batch_size=8)       # 3 batches: 3 ANN units + 2·3 cells
    fresh = sweep_counts(model, x, y, **kw)
    store = ResultStore(tmp_path / "s")
    first = sweep_counts(model, x, y, **kw, store=store)
    assert (store.hits, store.misses, len(store)) == (0, 9, 9)
    assert first == {**fresh, "seconds": first["seconds"]}
    again = ResultStore(tmp_path / "s")
    second = sweep_counts(model, x, y, **kw, store=again)
    assert (again.hits, again.misses) == (9, 0)
    assert second["correct"] == fresh["correct"] and second["ann_correct"] == fresh["ann_correct"]

    def misses(**change):
        s = ResultStore(tmp_path / "s")
        args = dict(model=model, x=x, y=y, **kw)
        args.update(change)
        out = sweep_counts(args.pop("model"), args.pop("x"), args.pop("y"), **args, store=s)
        return s.misses, out

    assert misses(mask_eps=0.0)[0] == 6                  # every cell; the ANN does not depend on ε
    assert misses(mask_rule="paper")[0] == 6
    assert misses(T=5)[0] == 6
    assert misses(taus=[0, 3])[0] == 3                   # τ = 0 cells are reused
    assert misses(dtype=np.float64)[0] == 6
    x2 = x.copy()
    x2[9, 0, 0, 0] += 0.25                               # one pixel of batch 1
    assert misses(x=x2)[0] == 3                          # its ANN unit and its two cells
    y2 = y.copy()
    y2[0] = (y2[0] + 1) % 10
    assert misses(y=y2)[0] == 3
    arrays = dict(model.arrays)
    k = sorted(arrays)[0]
    arrays[k] = arrays[k] * np.float32(0.5)
    from srp_np.model import Model

    other = Model(model.graph, arrays, model.shapes)
    n, out = misses(model=other)
    assert n == 9
    assert out["correct"] == sweep_counts(other, x, y, **kw)["correct"]
    # a corrupt entry is a miss (recomputed), never an error or a wrong figure
    sweep_counts(model, x, y, **kw, store=ResultStore(tmp_path / "c"))
    for p in sorted((tmp_path / "c").glob("*.json"))[:3]:
        p.write_text("{not json")
    s = ResultStore(tmp_path / "c")
    out = sweep_counts(model, x, y, **kw, store=s)
    assert (s.hits, s.misses) == (6, 3) and out["correct"] == fresh["correct"]
    assert sweep(model, x, y, [0, 2], 4, batch_size=8, store=ResultStore(tmp_path / "s"))["accuracy"] == \
        sweep(model, x, y, [0, 2], 4)["accuracy"]


def test_interrupted_sweep_resumes_without_redoing_finished_cells(tmp_path):
    """A real ``srp-np sweep`` (shipped ResNet-20, 768 images = 3 batches, τ ∈ {0, 4}) sent SIGINT after
    some cells are stored; the rerun reuses exactly those, computes the rest, and writes the figures of
    an uninterrupted run."""
    store = tmp_path / "store"
    args = ["sweep", "--tau", "0,4", "--T", "4", "--limit", "768", "--threads", "1", "--store", str(store)]
    total = 3 + 2 * 3                                    # 3 ANN units + 2 τ × 3 batches
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    # A shell's background job starts with SIGINT ignored, and Python then installs no handler for it:
    # give the child the default disposition, as a terminal would, whatever started pytest.
    proc = subprocess.Popen([sys.executable, "-m", "srp_np.cli.main", *args, "--json", str(tmp_path / "x.json")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if store.is_dir() and len(list(store.glob("*.json"))) >= 5:
                break
            time.sleep(0.02)
        assert proc.poll() is None, "the sweep finished before it could be interrupted"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    assert not (tmp_path / "x.json").exists()
    done = {p.name: p.stat().st_mtime_ns for p in store.glob("*.json")}
    assert 5 <= len(done) < total
    assert not [p for p in store.iterdir() if not p.name.endswith(".json")]   # no half-written entry

    r = subprocess.run([sys.executable, "-m", "srp_np.cli.main", *args, "--json", str(tmp_path / "resumed.json")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"reused {len(done)} finished unit(s), computed {total - len(done)}" in r.stderr
    assert all(store.joinpath(n).stat().st_mtime_ns == t for n, t in done.items())   # not rewritten
    assert len(list(store.glob("*.json"))) == total

    r = CliRunner().invoke(cli, args[:-2] + ["--json", str(tmp_path / "plain.json")])
    assert r.exit_code == 0, r.output
    resumed = json.loads((tmp_path / "resumed.json").read_text())
    plain = json.loads((tmp_path / "plain.json").read_text())
    resumed.pop("seconds"), plain.pop("seconds")
    assert resumed == plain


def test_store_option_errors(tmp_path):
    (tmp_path / "f").write_text("x")
    for bad, msg in ((tmp_path / "f", "is a file"), (tmp_path / "no" / "s", "cannot create")):
        r = CliRunner().invoke(cli, ["sweep", "--T", "2", "--limit", "4", "--store", str(bad)])
        assert r.exit_code == 2 and r.output.startswith("error: ") and msg in r.output, r.output
        assert len(r.output.strip().splitlines()) == 1
