"""Data readers (srp_np.datasets): real formats written into tmp_path, the shipped test split."""
import gzip
import os
import pickle
import struct

import numpy as np
import pytest

from srp_np import datasets as ds
from srp_np.errors import SrpError

from conftest import returns_in_time


def write_idx(path, arr, compress=True):
    arr = np.asarray(arr)
    code = {np.dtype(np.uint8): 0x08}[arr.dtype]
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    data = header + arr.tobytes()
    with (gzip.open if compress else open)(path, "wb") as f:
        f.write(data)


def test_shipped_test_set():
    x, y = ds.load_shipped_test_set()
    assert x.shape == (10000, 1, 28, 28) and x.dtype == np.uint8
    assert y.shape == (10000,) and y.dtype == np.int64
    assert np.bincount(y).tolist() == [1000] * 10
    assert 0.25 < x.mean() / 255 < 0.32  # Fashion-MNIST mean pixel ~0.286


def test_fashion_mnist_idx_reader(tmp_path):
    rng = np.random.default_rng(0)
    xi = rng.integers(0, 256, (7, 28, 28), dtype=np.uint8)
    yi = rng.integers(0, 10, 7).astype(np.uint8)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", xi)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", yi)
    write_idx(tmp_path / "train-images-idx3-ubyte", xi[:3], compress=False)
    write_idx(tmp_path / "train-labels-idx1-ubyte", yi[:3], compress=False)
    x, y = ds.load_fashion_mnist("test", str(tmp_path))
    assert x.shape == (7, 1, 28, 28) and x.dtype == np.uint8 and y.dtype == np.int64
    np.testing.assert_array_equal(x[:, 0], xi)
    np.testing.assert_array_equal(y, yi)
    x, y = ds.load_dataset("fashion-mnist", "train", str(tmp_path))
    assert x.shape == (3, 1, 28, 28)


def test_idx_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04garbage")
    with pytest.raises(SrpError, match="bad magic"):
        ds.read_idx(tmp_path / "bad")
    write_idx(tmp_path / "short", np.zeros((4, 2), np.uint8), compress=False)
    (tmp_path / "short").write_bytes((tmp_path / "short").read_bytes()[:-3])
    with pytest.raises(SrpError, match="does not match"):
        ds.read_idx(tmp_path / "short")
    with pytest.raises(SrpError, match="no t10k-images"):
        ds.load_fashion_mnist("test", str(tmp_path))
    with pytest.raises(SrpError, match="not found"):
        ds.load_fashion_mnist("test", str(tmp_path / "nope"))


def test_real_fashion_mnist_matches_shipped():
    if not os.path.isdir(ds.DEFAULT_FMNIST_DIR):
        pytest.skip(f"{ds.DEFAULT_FMNIST_DIR} not installed (Debian package dataset-fashion-mnist)")
    x, y = ds.load_fashion_mnist("test")
    xs, ys = ds.load_shipped_test_set()
    np.testing.assert_array_equal(x, xs)
    np.testing.assert_array_equal(y, ys)


def _cifar_batch(rng, n, fine=False):
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    d = {b"batch_label": b"synthetic", b"data": data, b"filenames": [b"img%d.png" % i for i in range(n)]}
    if fine:
        d[b"fine_labels"] = rng.integers(0, 100, n).tolist()
        d[b"coarse_labels"] = rng.integers(0, 20, n).tolist()
    else:
        d[b"labels"] = rng.integers(0, 10, n).tolist()
    return d


def test_cifar10_reader(tmp_path):
    rng = np.random.default_rng(1)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batches[name] = _cifar_batch(rng, 4)
        with open(root / name, "wb") as f:
            pickle.dump(batches[name], f, protocol=2)  # the real files are Python-2 pickles
    x, y = ds.load_cifar("cifar10", "train", str(tmp_path))  # parent folder is found too
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
    first = batches["data_batch_1"]
    # the row layout is 1024 red, 1024 green, 1024 blue values, each row-major 32x32
    np.testing.assert_array_equal(x[0, 0].ravel(), first[b"data"][0, :1024])
    np.testing.assert_array_equal(x[0, 2, 1, :], first[b"data"][0, 2048 + 32:2048 + 64])
    np.testing.assert_array_equal(y[:4], first[b"labels"])
    x, y = ds.load_dataset("cifar10", "test", str(root))
    np.testing.assert_array_equal(y, batches["test_batch"][b"labels"])
    assert x.shape == (4, 3, 32, 32)


def test_cifar100_reader(tmp_path):
    rng = np.random.default_rng(2)
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    for name, n in (("train", 6), ("test", 5)):
        with open(root / name, "wb") as f:
            pickle.dump(_cifar_batch(rng, n, fine=True), f, protocol=2)
    x, y = ds.load_cifar("cifar100", "train", str(root))
    assert x.shape == (6, 3, 32, 32) and y.max() < 100
    x, y = ds.load_cifar("cifar-100", "test", str(tmp_path))
    assert len(y) == 5


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch /tmp/srp_np_pwned_by_pickle",))


def test_cifar_reader_refuses_arbitrary_pickles(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": _Evil(), b"labels": [1]}, f)
    with pytest.raises(SrpError, match="refusing to load"):
        ds.load_cifar("cifar10", "test", str(root))
    assert not os.path.exists("/tmp/srp_np_pwned_by_pickle")
    (root / "test_batch").write_bytes(b"not a pickle at all")
    with pytest.raises(SrpError, match="not a CIFAR python batch"):
        ds.load_cifar("cifar10", "test", str(root))
    with pytest.raises(SrpError, match="no such file"):
        ds.load_cifar("cifar10", "train", str(root))
    with pytest.raises(SrpError, match="`data_dir`"):
        ds.load_cifar("cifar10", "test", None)


def test_image_folder_reader(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    colors = {"a_red": (255, 0, 0), "b_green": (0, 255, 0), "c_blue": (0, 0, 255)}
    for i, (cls, col) in enumerate(colors.items()):
        (tmp_path / cls).mkdir()
        Image.new("RGB", (300 + 20 * i, 260), col).save(tmp_path / cls / "x.png")
        Image.new("RGB", (240, 400), col).save(tmp_path / cls / "y.jpg", quality=95)
    (tmp_path / "a_red" / "notes.txt").write_text("ignored")
    x, y = ds.load_image_folder(tmp_path)
    assert x.shape == (6, 3, 224, 224) and x.dtype == np.uint8
    assert y.tolist() == [0, 0, 1, 1, 2, 2]
    for i in range(6):
        assert x[i, y[i]].mean() > 240 and np.delete(x[i], y[i], axis=0).mean() < 15
    # ImageNet layout: root/train and root/val
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "k").mkdir()
    Image.new("RGB", (224, 224), (10, 20, 30)).save(tmp_path / "val" / "k" / "z.png")
    x, y = ds.load_dataset("imagenet", "test", str(tmp_path))
    assert x.shape == (1, 3, 224, 224) and tuple(x[0, :, 100, 100]) == (10, 20, 30)
    with pytest.raises(SrpError, match="no class subfolders"):
        ds.load_image_folder(tmp_path / "val" / "k")


def test_npz_reader(tmp_path):
    x = np.random.default_rng(3).random((5, 1, 4, 4))
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(5))
    xr, yr = ds.load_npz_data(tmp_path / "f.npz")
    assert xr.dtype == np.float32 and yr.dtype == np.int64
    np.savez(tmp_path / "u.npz", x=(x * 255).astype(np.uint8), y=np.arange(5))
    assert ds.load_npz_data(tmp_path / "u.npz")[0].dtype == np.uint8
    bad = {
        "noy": dict(x=x),
        "ndim": dict(x=x[:, 0], y=np.arange(5)),
        "len": dict(x=x, y=np.arange(4)),
        "range": dict(x=x * 255, y=np.arange(5)),
        "ydtype": dict(x=x, y=np.arange(5) * 0.5),
    }
    for name, arrays in bad.items():
        np.savez(tmp_path / f"{name}.npz", **arrays)
        with pytest.raises(SrpError) as e:
            ds.load_npz_data(tmp_path / f"{name}.npz")
        assert "\n" not in str(e.value)
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(SrpError, match="not a readable"):
        ds.load_npz_data(tmp_path / "junk.npz")
    with pytest.raises(SrpError, match="no such file"):
        ds.load_npz_data(tmp_path / "missing.npz")


def test_fit_to_shape_and_to_float():
    x = np.full((2, 1, 28, 28), 7, np.uint8)
    p = ds.fit_to_shape(x, [1, 32, 32])
    assert p.shape == (2, 1, 32, 32) and p.dtype == np.uint8
    assert (p[:, :, 2:30, 2:30] == 7).all() and p.sum() == x.sum()
    assert ds.fit_to_shape(x, (1, 28, 28)) is x
    with pytest.raises(SrpError, match="channel"):
        ds.fit_to_shape(x, [3, 32, 32])
    with pytest.raises(SrpError, match="do not fit"):
        ds.fit_to_shape(x, [1, 16, 16])
    f = ds.to_float(np.array([0, 255], np.uint8))
    assert f.dtype == np.float32 and f.tolist() == [0.0, 1.0]


def test_names_and_stats():
    assert ds.normalize_name("Fashion_MNIST") == "fashion-mnist"
    assert ds.normalize_name("CIFAR-10") == "cifar10"
    mean, std = ds.dataset_stats("cifar100")
    assert len(mean) == len(std) == 3
    assert ds.dataset_stats("fashion-mnist") == ([0.2860], [0.3530])
    with pytest.raises(SrpError, match="unknown data set"):
        ds.normalize_name("mnist")


# ----------------------------------------------------------------------------- issue 11: hostile data files

def test_fifo_inputs_refused_without_blocking(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for fn in (lambda: ds.load_npz_data(fifo), lambda: ds.read_idx(fifo)):
        out = returns_in_time(fn)
        assert isinstance(out.get("error"), SrpError) and "not a regular file" in str(out["error"])
    root = tmp_path / "c"
    root.mkdir()
    os.mkfifo(root / "test_batch")
    out = returns_in_time(lambda: ds.load_cifar("cifar10", "test", str(root)))
    assert isinstance(out.get("error"), SrpError) and "not a regular file" in str(out["error"])


def _write_idx_typed(path, arr, code):
    arr = np.asarray(arr)
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(">" + "I" * arr.ndim, *arr.shape)
    path.write_bytes(header + arr.astype(arr.dtype.newbyteorder(">")).tobytes())


def test_float_idx_images_kept_or_refused(tmp_path):
    rng = np.random.default_rng(3)
    xf = rng.random((5, 28, 28)).astype(np.float32)
    _write_idx_typed(tmp_path / "t10k-images-idx3-ubyte", xf, 0x0D)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.arange(5, dtype=np.uint8), compress=False)
    x, y = ds.load_fashion_mnist("test", str(tmp_path))
    assert x.dtype == np.float32 and x.shape == (5, 1, 28, 28)
    np.testing.assert_array_equal(x[:, 0], xf)            # not turned black by a uint8 cast
    _write_idx_typed(tmp_path / "t10k-images-idx3-ubyte", xf * 255, 0x0D)
    with pytest.raises(SrpError, match=r"float idx images must hold raw pixels in \[0, 1\]"):
        ds.load_fashion_mnist("test", str(tmp_path))
    _write_idx_typed(tmp_path / "t10k-images-idx3-ubyte", (xf * 1000).astype(np.int32), 0x0C)
    with pytest.raises(SrpError, match="0..255"):
        ds.load_fashion_mnist("test", str(tmp_path))
    _write_idx_typed(tmp_path / "t10k-images-idx3-ubyte", np.zeros((5, 0, 0), np.uint8), 0x08)
    with pytest.raises(SrpError, match="empty"):
        ds.load_fashion_mnist("test", str(tmp_path))


def test_idx_declared_size_checked_before_reading(tmp_path, monkeypatch):
    header = bytes([0, 0, 0x08, 3]) + struct.pack(">III", 2**31, 2**16, 2**16)
    with gzip.open(tmp_path / "huge.gz", "wb") as f:
        f.write(header + b"\0" * 100)
    with pytest.raises(SrpError, match="more than the .* available"):
        ds.read_idx(tmp_path / "huge.gz")


@pytest.mark.parametrize("batch, message", [
    ({b"data": ["a", "b"], b"labels": [1, 2]}, "integer data"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": {"a": 1}}, "integer data|malformed"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1, 2], [3]]}, "malformed|integer"),
    ({b"data": np.full((2, 3072), 300), b"labels": [1, 2]}, "0..255"),
    ({b"data": np.zeros((2, 3072), np.float64), b"labels": [1, 2]}, "integer data"),
    ({b"data": np.zeros((2, 3071), np.uint8), b"labels": [1, 2]}, "shape"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [1, 2, 3]}, "shape"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [[1], [2]]}, "shape"),
    ({b"data": [[10 ** 30] * 3072] * 2, b"labels": [1, 2]}, "integer data|malformed|0..255"),
    ([1, 2, 3], "not a dict"),
])
def test_malformed_cifar_batches(tmp_path, batch, message):
    root = tmp_path / "c"
    root.mkdir()
    with open(root / "test_batch", "wb") as f:
        pickle.dump(batch, f, protocol=2)
    with pytest.raises(SrpError, match=message) as e:
        ds.load_cifar("cifar10", "test", str(root))
    assert "\n" not in str(e.value)


def test_npz_data_hostile(tmp_path, monkeypatch):
    np.savez(tmp_path / "empty_images.npz", x=np.zeros((3, 1, 0, 0), np.uint8), y=np.zeros(3, np.int64))
    with pytest.raises(SrpError, match="empty images"):
        ds.load_npz_data(tmp_path / "empty_images.npz")
    with pytest.raises(SrpError, match="empty file name"):
        ds.load_npz_data("")
    np.save(tmp_path / "x.npy", np.zeros(3))
    with pytest.raises(SrpError, match="not a readable .npz"):
        ds.load_npz_data(tmp_path / "x.npy")
    with pytest.raises(SrpError, match="empty"):
        ds.fit_to_shape(np.zeros((2, 1, 0, 0), np.uint8), (1, 28, 28))
    # only x and y are read, after their declared sizes were checked
    np.savez_compressed(tmp_path / "big.npz", x=np.zeros((4, 1, 512, 512), np.uint8), y=np.zeros(4, np.int64),
                        junk=np.zeros(2**24, np.float32))
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(4 * 2**20))
    x, y = ds.load_npz_data(tmp_path / "big.npz")
    assert x.shape == (4, 1, 512, 512)
    monkeypatch.setenv("SRP_NP_MEMORY_LIMIT", str(2**20))
    with pytest.raises(SrpError, match="more than the .* available"):
        ds.load_npz_data(tmp_path / "big.npz")


def test_image_folder_fifo_and_broken_images(tmp_path):
    Image = pytest.importorskip("PIL.Image")
    (tmp_path / "a").mkdir()
    Image.new("RGB", (32, 32), (1, 2, 3)).save(tmp_path / "a" / "ok.png")
    os.mkfifo(tmp_path / "a" / "p.jpg")
    out = returns_in_time(lambda: ds.load_image_folder(tmp_path))
    assert isinstance(out.get("error"), SrpError) and "not a regular file" in str(out["error"])
    os.unlink(tmp_path / "a" / "p.jpg")
    (tmp_path / "a" / "q.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    with pytest.raises(SrpError, match="cannot read image"):
        ds.load_image_folder(tmp_path)
