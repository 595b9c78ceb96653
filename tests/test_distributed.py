"""The Dask engine on loopback: figures identical to one process, also when a worker dies (issue 12, part 4)."""
import json
import os
import signal

import numpy as np
import pytest
from click.testing import CliRunner

pytest.importorskip("distributed")

from srp_np.cli.main import cli  # noqa: E402
from srp_np.datasets import ArraySource  # noqa: E402
from srp_np.evaluate import block_size, evaluate_source  # noqa: E402
from srp_np.model import save_model  # noqa: E402
from srp_np.testing import random_vgg  # noqa: E402

TIMING = {"images_per_second", "seconds", "ann_seconds", "snn_seconds", "other_seconds", "seconds_total",
          "snn_images_per_second", "images_per_second_end_to_end", "threads", "workers"}


@pytest.fixture(scope="module")
def big_input(tmp_path_factory):
    """A tiny network on 3×160×160 inputs, so that a block is 32 images: 96 images make 3 tasks."""
    d = tmp_path_factory.mktemp("dask")
    rng = np.random.default_rng(5)
    x = rng.integers(0, 256, (96, 3, 160, 160)).astype(np.uint8)
    y = rng.integers(0, 10, 96)
    m = random_vgg(input_shape=(3, 160, 160), widths=(2,), fc=8, rng=2, calibrate_x=x[:4] / 255.0)
    m.graph["dataset"] = "imagenet"
    save_model(d / "m.npz", m.graph, m.arrays)
    np.savez(d / "d.npz", x=x, y=y)
    from srp_np.model import load_model

    return d, load_model(d / "m.npz"), x, y


def test_workers_2_equal_one_process(big_input, tmp_path):
    d, model, _, _ = big_input
    assert block_size(model) == 32
    runner = CliRunner()
    out = {}
    for name, extra in (("plain", []), ("dask", ["--workers", 2])):
        for cmd in (["run", "--tau", 2, "--T", 3, "-q"], ["sweep", "--tau", "0,2", "--T", 3]):
            path = tmp_path / f"{cmd[0]}_{name}.json"
            r = runner.invoke(cli, [str(a) for a in [*cmd, "-w", d / "m.npz", "-d", d / "d.npz", "--threads", 1,
                                                     *extra, "--json", path]])
            assert r.exit_code == 0, r.output
            j = json.loads(path.read_text())
            j.pop("seconds") if cmd[0] == "sweep" else None
            out[cmd[0], name] = {k: v for k, v in j.items() if k not in TIMING}
    assert out["run", "plain"] == out["run", "dask"]
    assert out["sweep", "plain"] == out["sweep", "dask"]
    assert json.loads((tmp_path / "run_dask.json").read_text())["workers"] == 2


def test_a_worker_killed_mid_run_changes_nothing(big_input):
    from srp_np.distributed import DaskEngine

    _, model, x, y = big_input
    src = ArraySource(x, y)
    local = evaluate_source(model, src, 2, 3, batch_size=16)
    killed = []
    with DaskEngine(workers=2, threads=1) as engine:
        before = engine.worker_pids()

        def progress(_):
            if killed:
                return
            busy = [a for a, keys in engine.client.processing().items() if keys]
            if busy:                                  # a worker in the middle of a task: kill it
                os.kill(before[busy[0]], signal.SIGKILL)
                killed.append(busy[0])

        ev = evaluate_source(model, src, 2, 3, batch_size=16, progress=progress, engine=engine)
        engine.client.wait_for_workers(2, timeout=60)
        after = set(engine.worker_pids().values())
    assert killed, "no worker was busy after the first task: nothing was tested"
    assert before[killed[0]] not in after              # the process really died (the nanny started another)
    keep = lambda e: {k: v for k, v in e.to_dict().items() if k not in TIMING}
    assert keep(ev) == keep(local)
    assert ev.counts == local.counts


def test_engine_option_errors(model_files):
    d = model_files
    r = CliRunner().invoke(cli, ["run", "-w", str(d / "model.npz"), "--workers", "2", "--scheduler",
                                 "tcp://127.0.0.1:1"])
    assert r.exit_code == 2 and r.output.startswith("error: ") and "only one" in r.output
    from srp_np.distributed import DaskEngine
    from srp_np.errors import SrpError

    with pytest.raises(SrpError, match="cannot reach the Dask scheduler tcp://127.0.0.1:9"):
        DaskEngine(scheduler="tcp://127.0.0.1:9", connect_timeout="1s")
    with pytest.raises(SrpError, match="not both"):
        DaskEngine(workers=1, scheduler="tcp://127.0.0.1:9")


def test_workers_2_on_the_shipped_model(tmp_path):
    """Shipped ResNet-20 and test set, 512 images = 2 tasks of 256: every figure of `run` identical."""
    out = {}
    for name, extra in (("plain", []), ("dask", ["--workers", 2])):
        r = CliRunner().invoke(cli, [str(a) for a in ["run", "--limit", 512, "--tau", 4, "--T", 4, "--threads", 1,
                                                      "-q", *extra, "--json", tmp_path / f"{name}.json"]])
        assert r.exit_code == 0, r.output
        j = json.loads((tmp_path / f"{name}.json").read_text())
        out[name] = {k: v for k, v in j.items() if k not in TIMING}
    assert out["plain"] == out["dask"] and out["plain"]["n_images"] == 512
