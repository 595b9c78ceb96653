"""srp-np train --device/--amp/--workers/--autoaugment (CPU only), and the AutoAugment
operations checked against PIL, the library the authors' policy runs on."""
import numpy as np
import pytest
from click.testing import CliRunner

torch = pytest.importorskip("torch")

from srp_np import datasets as ds  # noqa: E402
from srp_np.errors import SrpError  # noqa: E402
from srp_np.train import autoaugment as aa  # noqa: E402

from test_train import write_fmnist_dir  # noqa: E402


def colour_image():
    """A 3×32×32 uint8 image with structure (three shipped Fashion-MNIST images as channels)."""
    x, _ = ds.load_shipped_test_set()
    b = ds.fit_to_shape(x[:3], (1, 32, 32))[:, 0].astype(np.float64)
    return np.stack([b[0], b[1] * 0.7 + 40, 255 - b[2] * 0.8], -1).astype(np.uint8)


def _pil_ops():
    Image = pytest.importorskip("PIL.Image")
    from PIL import ImageEnhance, ImageOps
    fill = (128, 128, 128)

    def rot(img, m):
        r = img.convert("RGBA").rotate(m)
        return Image.composite(r, Image.new("RGBA", r.size, (128,) * 4), r).convert(img.mode)

    # exactly the lambdas of the authors' SubPolicy (dataprocess.py), with the sign passed in
    return {
        "shearX": lambda img, m: img.transform(img.size, Image.AFFINE, (1, m, 0, 0, 1, 0), Image.BICUBIC,
                                               fillcolor=fill),
        "shearY": lambda img, m: img.transform(img.size, Image.AFFINE, (1, 0, 0, m, 1, 0), Image.BICUBIC,
                                               fillcolor=fill),
        "translateX": lambda img, m: img.transform(img.size, Image.AFFINE, (1, 0, m * img.size[0], 0, 1, 0),
                                                   fillcolor=fill),
        "translateY": lambda img, m: img.transform(img.size, Image.AFFINE, (1, 0, 0, 0, 1, m * img.size[1]),
                                                   fillcolor=fill),
        "rotate": rot,
        "color": lambda img, m: ImageEnhance.Color(img).enhance(1 + m),
        "posterize": lambda img, m: ImageOps.posterize(img, int(m)),
        "solarize": lambda img, m: ImageOps.solarize(img, m),
        "contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1 + m),
        "sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + m),
        "brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1 + m),
        "autocontrast": lambda img, m: ImageOps.autocontrast(img),
        "equalize": lambda img, m: ImageOps.equalize(img),
        "invert": lambda img, m: ImageOps.invert(img),
    }


@pytest.mark.parametrize("op", sorted(aa.OPS))
def test_autoaugment_ops_match_pil(op):
    from PIL import Image

    pil_ops = _pil_ops()
    img = colour_image()
    t = torch.from_numpy(img).permute(2, 0, 1).double() / 255
    for idx, sign in ((9, 1), (4, -1), (7, 1)):
        m = aa.RANGES[op][idx]
        m = float(m) * sign if op in aa.SIGNED else m
        want = np.asarray(pil_ops[op](Image.fromarray(img), m)).astype(int)
        got = np.round(aa.apply_op(t, op, idx, sign).permute(1, 2, 0).numpy() * 255).astype(int)
        d = np.abs(want - got)
        # every pixel within one 8-bit level of PIL (float rounding in the blends and bicubic sums)
        assert d.max() <= 1 and (d > 0).mean() < 0.3, (op, idx, sign, d.max(), (d > 0).mean())
        if op in ("translateX", "translateY", "rotate", "posterize", "solarize", "autocontrast", "equalize",
                  "invert"):
            assert d.max() == 0, op


def test_policy_is_the_authors_and_reproducible():
    assert len(aa.CIFAR10_POLICY) == 25
    assert all(op1 in aa.OPS and op2 in aa.OPS for _, op1, _, _, op2, _ in aa.CIFAR10_POLICY)
    x = torch.from_numpy(np.stack([colour_image()] * 6)).permute(0, 3, 1, 2).float() / 255
    pol = aa.CIFAR10Policy()
    a = pol.batch(x, torch.Generator().manual_seed(3))
    b = pol.batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and a.shape == x.shape and a.dtype == x.dtype
    assert float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.allclose(a * 255, torch.round(a * 255), atol=1e-4)          # 8-bit levels
    assert not torch.equal(a, x)
    # over many draws every sub-policy is chosen and the images change in different ways
    seen = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(400):
        seen.add(int(torch.randint(0, 25, (1,), generator=g)))
    assert seen == set(range(25))


def test_qcfs_computes_in_float32_under_mixed_precision():
    from srp_np.analytic import qcfs as qcfs_np
    from srp_np.train.qcfs import QCFS

    act = QCFS(L=8)
    with torch.no_grad():
        act.up.fill_(3.0)
    y = torch.linspace(-1, 4, 301)
    out = act(y.half())
    assert out.dtype == torch.float32
    np.testing.assert_allclose(out.detach().numpy(), qcfs_np(y.half().float().numpy().astype(np.float64), 3.0, 8),
                               atol=1e-6)


def test_device_resolution(monkeypatch):
    from srp_np.train.train import resolve_device

    assert resolve_device("cpu").type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(SrpError, match="PyTorch sees no CUDA device"):
        resolve_device("cuda")
    with pytest.raises(SrpError, match="auto, cpu, cuda"):
        resolve_device("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("auto").type == "cuda"
    with pytest.raises(SrpError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


def _train_args(data, out, *extra):
    return ["train", "--arch", "resnet20", "--dataset", "fashion-mnist", "--data-dir", data, "--epochs", "1",
            "--batch-size", "8", "--width", "0.125", "--threads", "1", "--limit-batches", "2", "--no-progress",
            "--out", str(out), *extra]


def test_train_workers_autoaugment_cpu(tmp_path):
    from srp_np.cli.main import cli
    from srp_np.model import load_model

    data = write_fmnist_dir(tmp_path / "fm", n_train=32, n_test=16)
    outs = {}
    for w in (1, 2):
        out = tmp_path / f"w{w}.npz"
        r = CliRunner().invoke(cli, _train_args(data, out, "--device", "cpu", "--workers", str(w), "--autoaugment"))
        assert r.exit_code == 0, r.output
        outs[w] = load_model(out)
    # each batch's augmentation is seeded by (seed, epoch, batch): the same model for any worker count
    assert outs[1].graph["train"]["autoaugment"] is True
    for k in outs[1].arrays:
        np.testing.assert_array_equal(outs[1].arrays[k], outs[2].arrays[k])
    r = CliRunner().invoke(cli, _train_args(data, tmp_path / "w0.npz", "--device", "cpu"))
    assert r.exit_code == 0, r.output
    # the augmentation matters: without AutoAugment the weights differ
    m0 = load_model(tmp_path / "w0.npz")
    assert any(not np.array_equal(m0.arrays[k], outs[1].arrays[k]) for k in m0.arrays)


def test_train_device_errors(tmp_path, monkeypatch):
    from srp_np.cli.main import cli

    data = write_fmnist_dir(tmp_path / "fm", n_train=16, n_test=8)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for extra, match in ((["--device", "cuda"], "PyTorch sees no CUDA device"),
                         (["--device", "cpu", "--amp"], "needs --device cuda"),
                         (["--device", "gpu0"], "auto, cpu, cuda")):
        r = CliRunner().invoke(cli, _train_args(data, tmp_path / "m.npz", *extra))
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and match in lines[0], r.output
    assert not (tmp_path / "m.npz").exists()
