"""The ANN forward pass: the im2col convolution and the batched, threaded pass give exactly the
results of the original NumPy implementation (kept here as the reference), bit for bit."""
import itertools
from pathlib import Path

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from srp_np import ops
from srp_np.analytic import qcfs
from srp_np.ann import ann_forward
from srp_np.evaluate import ann_logits, prepare_inputs
from srp_np.model import load_model

from conftest import make_model

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def reference_conv2d(x, w, b, stride, padding):
    """ops.conv2d before issue 9: NumPy's strided im2col (np.pad + sliding windows) and one product."""
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = w.shape[2], w.shape[3]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,kh,kw
    N, C, Ho, Wo = win.shape[:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)
    y = (cols @ w.astype(x.dtype, copy=False).transpose(1, 2, 3, 0).reshape(C * kh * kw, -1)).reshape(N, Ho, Wo, -1)
    y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    if b is not None:
        y += b.astype(x.dtype, copy=False).reshape(1, -1, 1, 1)
    return y


def reference_ann_forward(model, x, dtype):
    """ann.ann_forward before issue 9 (every value kept, analytic.qcfs, the reference convolution)."""
    dtype = np.dtype(dtype).type
    values = {"input": np.asarray(x, dtype=dtype)}
    acts = {}
    for node in model.nodes:
        ins = [values[s] for s in node["inputs"]]
        if node["op"] == "qcfs":
            a = qcfs(ins[0], dtype(node["threshold"]), model.L).astype(dtype)
            acts[node["name"]] = (ins[0], a)
            values[node["name"]] = a
        elif node["op"] == "conv2d":
            values[node["name"]] = reference_conv2d(ins[0], model.weight(node), model.weight(node, "bias"),
                                                    model.typed(node).stride, model.typed(node).padding)
        else:
            values[node["name"]] = ops.apply_linear_node(model, node, ins)
    return values[model.output], acts


def assert_same_forward(model, x, dtype):
    want_logits, want_acts = reference_ann_forward(model, x, dtype)
    logits, acts = ann_forward(model, x, dtype, return_activations=True)
    assert logits.dtype == want_logits.dtype
    np.testing.assert_array_equal(logits, want_logits)
    assert acts.keys() == want_acts.keys()
    for k in acts:
        for got, want in zip(acts[k], want_acts[k]):
            assert got.dtype == want.dtype and got.shape == want.shape
            np.testing.assert_array_equal(got, want, err_msg=k)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_equals_reference_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    ws = ops.Workspace()      # shared across shapes: a smaller call after a bigger one reuses the buffers
    cases = itertools.product((1, 3), (1, 3, 16), (1, 2, 5, 8), (1, 4, 17), (1, 2, 3, 5), (1, 2), (0, 1, 2))
    n = 0
    for N, C, H, Cout, k, stride, pad in cases:
        if H + 2 * pad < k:
            continue
        x = rng.standard_normal((N, C, H, H + 1)).astype(dtype)
        w = rng.standard_normal((Cout, C, k, k)).astype(np.float32)
        b = rng.standard_normal(Cout).astype(np.float32) if n % 2 else None
        want = reference_conv2d(x, w, b, stride, pad)
        for got in (ops.conv2d(x, w, b, stride, pad), ops.conv2d(x, w, b, stride, pad, ws)):
            assert got.shape == want.shape and got.dtype == want.dtype and got.flags.c_contiguous
            np.testing.assert_array_equal(got, want, err_msg=str((N, C, H, Cout, k, stride, pad)))
        n += 1
    assert n > 500


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_in_several_products_equals_reference(monkeypatch, dtype):
    """A batch whose im2col matrix passes ops.IM2COL_BYTES is multiplied a group of images at a
    time: the scratch stays one group's size and every output is still the reference's, bit for bit."""
    monkeypatch.setattr(ops, "IM2COL_BYTES", 1)          # groups of IM2COL_MIN_ROWS rows
    rng = np.random.default_rng(2)
    for N, stride, b in ((24, 1, None), (90, 2, rng.standard_normal(8).astype(np.float32))):
        x = rng.standard_normal((N, 16, 28, 28)).astype(dtype)
        w = rng.standard_normal((8, 16, 3, 3)).astype(np.float32)
        groups = ops.im2col_groups(N, (28 // stride) ** 2, 16 * 9, np.dtype(dtype).itemsize)
        assert len(groups) == 2 and groups[0][0] == 0 and groups[-1][1] == N
        ws = ops.Workspace()
        got = ops.conv2d(x, w, b, stride, 1, ws)
        np.testing.assert_array_equal(got, reference_conv2d(x, w, b, stride, 1))
        assert ws._bufs["cols", np.dtype(dtype)].size == max(e - s for s, e in groups) * (28 // stride) ** 2 * 144


def test_im2col_groups_cover_the_batch_in_large_products():
    for n, rows, cols, item in ((256, 784, 144, 4), (256, 1024, 198, 4), (7, 784, 144, 8), (1000, 1, 9, 4),
                                (256, 50176, 27, 4), (3, 200000, 576, 4)):
        g = ops.im2col_groups(n, rows, cols, item)
        assert g[0][0] == 0 and g[-1][1] == n and all(a[1] == b[0] for a, b in zip(g, g[1:]))
        sizes = [e - s for s, e in g]
        assert max(sizes) - min(sizes) <= 1 and min(sizes) >= 1
        if len(g) > 1:
            assert min(sizes) * rows >= ops.IM2COL_MIN_ROWS
            one_image = rows * cols * item                 # a group holds at least one image
            assert max(sizes) * one_image < 2 * max(ops.IM2COL_BYTES, ops.IM2COL_MIN_ROWS * cols * item, one_image)
        else:
            fit = max(ops.IM2COL_BYTES // (rows * cols * item), -(-ops.IM2COL_MIN_ROWS // rows), 1)
            assert n < 2 * fit


def test_conv2d_non_contiguous_input():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 6, 9, 9)).astype(np.float32)[:, ::2, 1:, ::-1]
    w = rng.standard_normal((5, 3, 3, 3)).astype(np.float32)
    for stride, pad in ((1, 0), (1, 1), (2, 1)):
        np.testing.assert_array_equal(ops.conv2d(x, w, None, stride, pad), reference_conv2d(x, w, None, stride, pad))


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 5])
def test_ann_forward_equals_reference_random_models(kind, dtype, n):
    m = make_model(kind)
    x = np.random.default_rng(3).random((n,) + m.input_shape)
    assert_same_forward(m, x, dtype)


@pytest.mark.parametrize("name", ["resnet20_fmnist.npz", "vgg16_fmnist.npz"])
def test_ann_forward_equals_reference_shipped_models(name):
    """The shipped models on shipped test images, as `srp-np run` (float32, 256 a batch; the last
    batch of the 10k test split has 16 images), `analyze` (float64, 64) and `explain` (float64, 1)
    compute them. All 10,000 images were compared when the pass was rewritten (issue 9)."""
    from srp_np.datasets import load_shipped_test_set

    m = load_model(WEIGHTS / name)
    x_raw, _ = load_shipped_test_set()
    x = prepare_inputs(m, x_raw[:80])
    assert_same_forward(m, x[:16], np.float32)
    assert_same_forward(m, x[16:80], np.float64)
    assert_same_forward(m, x[:1], np.float64)
    want = np.concatenate([reference_ann_forward(m, x[s:s + 32], np.float32)[0] for s in range(0, 80, 32)])
    for threads in (1, 2, 3):
        np.testing.assert_array_equal(ann_logits(m, x, batch_size=32, threads=threads), want.astype(np.float64))


def test_ann_logits_independent_of_threads():
    m = make_model("resnet")
    x = np.random.default_rng(4).random((37,) + m.input_shape).astype(np.float32)
    ref = ann_logits(m, x, batch_size=8, threads=1)
    assert ref.shape == (37, 10)
    for threads in (2, 4, 64):
        np.testing.assert_array_equal(ann_logits(m, x, batch_size=8, threads=threads), ref)


def test_threads_helpers():
    import numba

    from srp_np import threads

    assert 1 <= threads.default_threads() <= threads.max_threads()
    assert threads.default_threads() <= threads.available_cores()
    before = numba.get_num_threads()
    with threads.use_threads(10 ** 6) as n:
        assert n == threads.max_threads() == numba.get_num_threads()
    with threads.use_threads(1) as n:
        assert n == 1 == numba.get_num_threads()
    assert numba.get_num_threads() == before
    with pytest.raises(ValueError):
        threads.set_threads(0)


def test_default_threads_leave_busy_cpus_alone(monkeypatch):
    """The default thread count does not count CPUs that other processes keep busy (a parallel
    kernel would wait for a descheduled thread), and is at least 1."""
    from srp_np import threads

    assert threads.busy_cpus(samples=2, interval=0) >= 0
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    monkeypatch.setattr(threads, "max_threads", lambda: 4)
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 0)
    assert threads.default_threads() == 4
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1)
    assert threads.default_threads() == 3
    monkeypatch.setattr(threads, "busy_cpus", lambda: 9)
    assert threads.default_threads() == 1
    # a process limited to some CPUs of a bigger machine: the machine-wide count says nothing of them
    monkeypatch.setattr(threads.os, "cpu_count", lambda: 64)
    assert threads.default_threads() == 4
