"""srp-np train: a tiny end-to-end run (train -> checkpoint -> export -> load_model
-> ann_forward agrees with PyTorch), resume/determinism, QCFS, errors."""
import gzip
import struct
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np import datasets as ds


def write_fmnist_dir(d, n_train=96, n_test=48):
    """A Fashion-MNIST folder in the real idx.gz format, cut from the shipped test split."""
    x, y = ds.load_shipped_test_set()
    d.mkdir(parents=True, exist_ok=True)
    parts = {"train": (x[:n_train], y[:n_train]), "t10k": (x[-n_test:], y[-n_test:])}
    for prefix, (xi, yi) in parts.items():
        for kind, arr in (("images-idx3", xi[:, 0]), ("labels-idx1", yi.astype(np.uint8))):
            header = bytes([0, 0, 0x08, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
            with gzip.open(d / f"{prefix}-{kind}-ubyte.gz", "wb") as f:
                f.write(header + np.ascontiguousarray(arr).tobytes())
    return str(d)


def test_torch_missing_message(monkeypatch):
    from srp_np.cli.train_cmds import export_cmd, train_cmd

    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    for cmd, args in ((train_cmd, ["--arch", "resnet20", "--dataset", "fashion-mnist", "--out", "x.npz"]),
                      (export_cmd, ["--checkpoint", "c.pth", "--arch", "resnet20", "--out", "x.npz"])):
        r = CliRunner().invoke(cmd, args)
        assert r.exit_code == 2
        assert r.output.strip() == "error: PyTorch is not installed: pip install 'srp-np[train]'"


def test_qcfs_forward_and_gradient():
    torch = pytest.importorskip("torch")
    from srp_np.analytic import qcfs as qcfs_np
    from srp_np.train.qcfs import QCFS

    act = QCFS(L=4)
    assert act.up.shape == (1,) and float(act.up.detach()) == 8.0
    with torch.no_grad():
        act.up.fill_(2.0)
    y = torch.linspace(-1, 3, 41, dtype=torch.float64, requires_grad=True)
    out = act(y)
    np.testing.assert_allclose(out.detach().numpy(), qcfs_np(y.detach().numpy(), 2.0, 4), atol=1e-12)
    out.sum().backward()
    g = y.grad.numpy()
    yy = y.detach().numpy()
    # straight-through: gradient 1 inside the (rounded) clip range, 0 where clamped
    inside = (yy / 2 * 4 + 0.5 >= 1) & (yy / 2 * 4 + 0.5 < 4)
    assert np.all(g[inside] == 1.0) and np.all(g[yy <= -0.5] == 0) and np.all(g[yy > 2.5] == 0)
    assert act.up.grad is not None and float(act.up.grad) != 0.0


def _train(tmp_path, name, epochs, **kw):
    from srp_np.train.train import train

    return train(arch=kw.pop("arch", "resnet20"), dataset="fashion-mnist", out=str(tmp_path / f"{name}.npz"),
                 data_dir=kw.pop("data_dir"), L=4, epochs=epochs, batch_size=16, width=kw.pop("width", 0.25),
                 seed=0, threads=1, limit_batches=2, progress=False, log=kw.pop("log", lambda s: None), **kw)


def test_tiny_training_end_to_end(tmp_path):
    torch = pytest.importorskip("torch")
    from srp_np.ann import ann_forward
    from srp_np.cli.train_cmds import train_cmd
    from srp_np.model import load_model
    from srp_np.train.export import load_state_dict_into
    from srp_np.train.models import build_model

    data = write_fmnist_dir(tmp_path / "fm")
    out, ck = tmp_path / "m.npz", tmp_path / "ck.pth"
    r = CliRunner().invoke(train_cmd, [
        "--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir", data, "--L", "4",
        "--epochs", "2", "--batch-size", "16", "--width", "0.25", "--threads", "1",
        "--limit-batches", "2", "--out", str(out), "--checkpoint", str(ck), "--no-progress"])
    assert r.exit_code == 0, r.output
    assert "epoch 1/2 loss" in r.output and "epoch 2/2 loss" in r.output and "lambda [" in r.output
    assert "final ANN test accuracy" in r.output
    m = load_model(out)
    g = m.graph
    assert g["arch"] == "resnet20" and g["dataset"] == "fashion-mnist" and g["L"] == 4 and g["width"] == 0.25
    assert 0.0 <= g["ann_accuracy"] <= 1.0 and g["epochs"] == 2
    assert g["preprocess"]["mean"] == [0.2860] and list(m.input_shape) == [1, 28, 28]
    # checkpoint: plain state dicts, loadable with weights_only=True
    ckd = torch.load(ck, weights_only=True)
    assert ckd["epoch"] == 2 and ckd["config"]["arch"] == "resnet20"
    model = build_model("resnet20", 1, 10, 4, 0.25, 28)
    load_state_dict_into(model, "resnet20", ckd["model"])
    x, _ = ds.load_shipped_test_set()
    xn = (ds.to_float(x[:32]).astype(np.float64) - 0.2860) / 0.3530
    with torch.no_grad():
        ref = model.double().eval()(torch.from_numpy(xn)).numpy()
    got = ann_forward(m, xn)
    per_image = np.abs(ref - got).max(axis=1)
    # a QCFS floor may flip on float32 rounding of the folded weights for a rare unit
    assert np.mean(per_image < 1e-4) >= 0.9, per_image
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.9
    # export from the checkpoint gives the same model file contents
    from srp_np.cli.train_cmds import export_cmd
    r = CliRunner().invoke(export_cmd, ["--checkpoint", str(ck), "--arch", "resnet20", "--out", str(tmp_path / "e.npz")])
    assert r.exit_code == 0, r.output
    m2 = load_model(tmp_path / "e.npz")
    assert m2.graph["L"] == 4 and m2.graph["dataset"] == "fashion-mnist" and m2.graph["width"] == 0.25
    for k, a in m.arrays.items():
        np.testing.assert_array_equal(a, m2.arrays[k])


def test_resume_is_deterministic(tmp_path):
    pytest.importorskip("torch")
    from srp_np.model import load_model

    data = write_fmnist_dir(tmp_path / "fm", n_train=64, n_test=16)
    _train(tmp_path, "straight", 2, data_dir=data)
    ck = str(tmp_path / "ck.pth")
    assert _train(tmp_path, "cut", 2, data_dir=data, checkpoint=ck, _stop_after=1) is None
    assert not (tmp_path / "cut.npz").exists()
    logs = []
    _train(tmp_path, "cut", 2, data_dir=data, checkpoint=ck, resume=True, log=logs.append)
    assert any("resumed" in s for s in logs)
    a, b = load_model(tmp_path / "straight.npz"), load_model(tmp_path / "cut.npz")
    for k in a.arrays:
        np.testing.assert_array_equal(a.arrays[k], b.arrays[k])
    assert [n.get("threshold") for n in a.nodes] == [n.get("threshold") for n in b.nodes]


def test_vgg_training_pads_to_32(tmp_path):
    pytest.importorskip("torch")
    from srp_np.model import load_model

    data = write_fmnist_dir(tmp_path / "fm", n_train=32, n_test=16)
    _train(tmp_path, "v", 1, data_dir=data, arch="vgg16", width=0.0625)
    m = load_model(tmp_path / "v.npz")
    assert list(m.input_shape) == [1, 32, 32] and m.graph["arch"] == "vgg16"


def test_augmentation():
    torch = pytest.importorskip("torch")
    from srp_np.train.augment import augment, cutout, random_crop

    g = torch.Generator().manual_seed(0)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.float32).reshape(2, 1, 6, 6) + 1
    c = random_crop(x, 2, g)
    assert c.shape == x.shape
    for i in range(2):  # every crop is a shifted window of the zero-padded image
        xp = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        assert any(torch.equal(c[i], xp[:, dy:dy + 6, dx:dx + 6]) for dy in range(5) for dx in range(5))
    h = cutout(torch.ones(4, 1, 8, 8), 4, g)
    assert ((h == 0).sum(dim=(1, 2, 3)) <= 16).all() and (h == 0).any()
    a1 = augment(x, torch.Generator().manual_seed(5), 2, True, 3)
    a2 = augment(x, torch.Generator().manual_seed(5), 2, True, 3)
    assert torch.equal(a1, a2)


def test_train_errors(tmp_path):
    pytest.importorskip("torch")
    from srp_np.cli.train_cmds import train_cmd

    r = CliRunner().invoke(train_cmd, ["--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir",
                                       str(tmp_path / "none"), "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "not found" in lines[0]
    r = CliRunner().invoke(train_cmd, ["--arch", "resnet20", "--dataset", "fashion-mnist", "--resume",
                                       "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 2 and "--resume needs --checkpoint" in r.output
    assert not (tmp_path / "m.npz").exists()


def test_tiny_cifar10_training(tmp_path):
    """3-channel path: CIFAR python batches (synthetic, real format), Cutout, CIFAR mean/std."""
    pytest.importorskip("torch")
    import pickle

    from srp_np.cli.train_cmds import train_cmd
    from srp_np.model import load_model

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with open(root / name, "wb") as f:
            pickle.dump({b"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8),
                         b"labels": rng.integers(0, 10, 8).tolist()}, f, protocol=2)
    out = tmp_path / "c.npz"
    r = CliRunner().invoke(train_cmd, ["--arch", "resnet18", "--dataset", "cifar10", "--data-dir", str(tmp_path),
                                       "--epochs", "1", "--batch-size", "8", "--width", "0.0625", "--limit-batches",
                                       "2", "--out", str(out), "--no-progress"])
    assert r.exit_code == 0, r.output
    g = load_model(out).graph
    assert g["input_shape"] == [3, 32, 32] and g["preprocess"]["mean"] == [0.4914, 0.4822, 0.4465]
    r = CliRunner().invoke(train_cmd, ["--arch", "resnet18", "--dataset", "fashion-mnist", "--download",
                                       "--data-dir", str(tmp_path), "--out", str(tmp_path / "x.npz")])
    assert r.exit_code == 2 and "--download is only for cifar" in r.output


def test_foreign_or_fifo_checkpoint_is_one_error_line(tmp_path):
    """issue 11: train --resume from a foreign checkpoint, or a FIFO as --checkpoint (train and
    export): one 'error:' line, exit 2, nothing blocks."""
    torch = pytest.importorskip("torch")
    import os

    from srp_np.cli.main import cli

    data = write_fmnist_dir(tmp_path / "fm", n_train=16, n_test=8)
    base = ["train", "--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir", data, "--epochs", "1",
            "--limit-batches", "1", "--width", "0.125", "--no-progress", "--out", str(tmp_path / "m.npz")]
    for i, obj in enumerate(({"weight": torch.zeros(3)}, {"config": 5, "model": {}, "optimizer": {},
                                                           "generator": torch.zeros(1), "epoch": 1}, [1, 2])):
        ck = tmp_path / f"foreign{i}.pth"
        torch.save(obj, ck)
        r = CliRunner().invoke(cli, base + ["--checkpoint", str(ck), "--resume"])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: "), r.output
        assert "checkpoint" in lines[0]
    fifo = tmp_path / "fifo.pth"
    os.mkfifo(fifo)
    for args in (base + ["--checkpoint", str(fifo), "--resume"],
                 ["export", "--checkpoint", str(fifo), "--arch", "resnet20", "--out", str(tmp_path / "e.npz")]):
        r = CliRunner().invoke(cli, args)
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and "not a regular file" in lines[0], r.output
    assert not (tmp_path / "m.npz").exists()
