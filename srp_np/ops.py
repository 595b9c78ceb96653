"""Dense NumPy implementations of the graph's linear operators.

These are the plain, obviously-correct versions used by the ANN forward pass
(:mod:`srp_np.ann`) and the dense reference simulator
(:mod:`srp_np.reference`). The event-driven kernels in
:mod:`srp_np.kernels` must agree with them. Only :func:`conv2d` has help for
speed: two small Numba copy kernels write its im2col matrix and its result.
"""
from __future__ import annotations

import math

import numba
import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


class Workspace:
    """Scratch arrays that :func:`conv2d` reuses from call to call (one per thread).

    The im2col matrix of a big batch is large (ResNet-20's first layers: 0.45 MB
    per image); allocating it afresh for every layer costs page faults that take
    as long as filling it.
    """

    def __init__(self):
        self._bufs = {}

    def get(self, role: str, shape: tuple, dtype) -> np.ndarray:
        """An uninitialised C-contiguous ``shape`` array of ``dtype`` for ``role``."""
        dtype = np.dtype(dtype)
        n = math.prod(shape)
        buf = self._bufs.get((role, dtype))
        if buf is None or buf.size < n:
            buf = self._bufs[(role, dtype)] = np.empty(max(n, 1), dtype)
        return buf[:n].reshape(shape)


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, padding: int,
           workspace: Workspace | None = None) -> np.ndarray:
    """2-d cross-correlation with zero padding: ``y = W ⋆ x + b``.

    ``x`` is N×Cin×H×W, ``w`` Cout×Cin×kh×kw; returns N×Cout×Ho×Wo (C-contiguous) in the dtype of ``x``.

    One BLAS product of the im2col matrix (rows ``(n, ho, wo)``, columns
    ``(c, i, j)``, C-contiguous) with the weights as a ``(c, i, j)`` × Cout view,
    which is what ``np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))`` computes
    for the sliding windows ``win`` of the zero-padded input. The im2col matrix
    (padding included) and the channels-first result plus bias are written by two
    copy kernels: NumPy's strided copies of the same arrays took about 3/4 of the
    time (ResNet-20's 16-channel layers). The product itself is the same BLAS call
    on the same matrices as before, so every output is the same sum rounded the
    same way, bit for bit (``tests/test_ann.py`` keeps the NumPy version as its
    reference). A batch whose im2col matrix would pass :data:`IM2COL_BYTES` is
    multiplied in groups of whole images (:func:`im2col_groups`): BLAS
    gives a row the same rounded sum in a product of fewer rows as long as the
    products stay large (checked bit for bit against the single product in
    ``tests/test_ann.py`` and on the shipped models' 10,000 test images, float32
    and float64). ``workspace`` lends the scratch
    arrays (see :class:`Workspace`).
    """
    N, C, H, W = x.shape
    Cout, _, kh, kw = w.shape
    Ho = (H + 2 * padding - kh) // stride + 1
    Wo = (W + 2 * padding - kw) // stride + 1
    wmat = w.astype(x.dtype, copy=False).transpose(1, 2, 3, 0).reshape(C * kh * kw, Cout)
    if _im2col_is_view(x, kh, kw, stride, padding):
        # NumPy's strided im2col needs no copy here (a 1×1 conv of a single image, ...): multiply that view,
        # as before, since BLAS may sum differently for another memory layout of the same matrix
        if padding:
            x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
        y = (_im2col_strided(x, kh, kw, stride) @ wmat).reshape(N, Ho, Wo, Cout)
        y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
        if b is not None:
            y += b.astype(x.dtype, copy=False).reshape(1, -1, 1, 1)
        return y
    ws = workspace if workspace is not None else Workspace()
    x = np.ascontiguousarray(x)
    out = np.empty((N, Cout, Ho, Wo), x.dtype)
    bias = np.zeros(0, x.dtype) if b is None else b.astype(x.dtype, copy=False)
    for n0, n1 in im2col_groups(N, Ho * Wo, C * kh * kw, x.dtype.itemsize):
        rows = (n1 - n0) * Ho * Wo
        cols = ws.get("cols", (rows, C * kh * kw), x.dtype)
        _im2col(x[n0:n1], kh, kw, stride, padding, Ho, Wo, cols)
        y = np.matmul(cols, wmat, out=ws.get("rows", (rows, Cout), x.dtype))
        _rows_to_nchw(y, bias, out[n0:n1].reshape(n1 - n0, Cout, Ho * Wo))
    return out


#: Bytes of one im2col matrix (per thread), roughly: a bigger batch is multiplied in several products
#: of whole images. Without a bound it grew with the batch (ResNet-20's 16-channel layers: 115 MB for
#: 256 images), once per ANN thread.
IM2COL_BYTES = 32 * 2**20
#: Fewest rows of one product when the batch has more: BLAS may take another code path (and round
#: differently) for small matrices, so the products stay large.
IM2COL_MIN_ROWS = 8192


def im2col_groups(n_images: int, rows_per_image: int, cols: int, itemsize: int) -> list:
    """The ``(first, end)`` image ranges that :func:`conv2d` multiplies one BLAS product at a time.

    One range if the batch's im2col matrix fits in :data:`IM2COL_BYTES`; else near-equal ranges
    (sizes differ by at most one image) of at least ``max(IM2COL_BYTES, IM2COL_MIN_ROWS rows)``
    worth of images each, so each matrix is under twice the budget. It depends only on the shapes,
    never on threads.
    """
    rows_per_image = max(1, rows_per_image)
    fit = max(1, IM2COL_BYTES // max(1, rows_per_image * cols * itemsize))
    fit = max(fit, -(-IM2COL_MIN_ROWS // rows_per_image))
    groups = max(1, n_images // fit)
    return [(n_images * i // groups, n_images * (i + 1) // groups) for i in range(groups)]


def _im2col_strided(x, kh, kw, stride):
    """NumPy's im2col of (already padded) ``x``: a view of it where strides allow, else a C-contiguous copy."""
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,kh,kw
    N, C, Ho, Wo = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)


def _im2col_is_view(x, kh, kw, stride, padding) -> bool:
    """Whether :func:`_im2col_strided` of ``x`` zero-padded by ``padding`` is a view (no copy)."""
    N, C, H, W = x.shape
    if padding:   # np.pad returns a new C-contiguous array: test that layout, without its memory
        shape = (N, C, H + 2 * padding, W + 2 * padding)
        x = np.lib.stride_tricks.as_strided(np.zeros(1, x.dtype), shape, _c_strides(shape, x.itemsize),
                                            writeable=False)
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]
    Ho, Wo = win.shape[2:4]
    t = win.transpose(0, 2, 3, 1, 4, 5)
    shape = (N * Ho * Wo, C * kh * kw)
    try:
        np.reshape(t, shape, copy=False)
    except ValueError:
        return False
    except TypeError:   # NumPy < 2.1 (no copy argument): setting the shape fails where a copy is needed
        v = t.view()
        try:
            v.shape = shape
        except AttributeError:
            return False
    return True


def _c_strides(shape, itemsize) -> tuple:
    strides, step = [], itemsize
    for n in reversed(shape):
        strides.append(step)
        step *= n
    return tuple(reversed(strides))


@numba.njit(cache=True, nogil=True)
def _im2col(x, kh, kw, stride, pad, Ho, Wo, cols):
    """``cols[(n, ho, wo), (c, i, j)] = x[n, c, ho·stride + i − pad, wo·stride + j − pad]`` (0 outside)."""
    N, C, H, W = x.shape
    xp = np.zeros((C, H + 2 * pad, W + 2 * pad), x.dtype)   # one image with its zero border
    for n in range(N):
        for c in range(C):
            for iy in range(H):
                for ix in range(W):
                    xp[c, pad + iy, pad + ix] = x[n, c, iy, ix]
        for oy in range(Ho):
            y0 = oy * stride
            for ox in range(Wo):
                x0 = ox * stride
                row = cols[(n * Ho + oy) * Wo + ox]
                if kh == 3 and kw == 3:     # the common case, unrolled (2× faster)
                    for c in range(C):
                        r0 = xp[c, y0]
                        r1 = xp[c, y0 + 1]
                        r2 = xp[c, y0 + 2]
                        k = 9 * c
                        row[k] = r0[x0]
                        row[k + 1] = r0[x0 + 1]
                        row[k + 2] = r0[x0 + 2]
                        row[k + 3] = r1[x0]
                        row[k + 4] = r1[x0 + 1]
                        row[k + 5] = r1[x0 + 2]
                        row[k + 6] = r2[x0]
                        row[k + 7] = r2[x0 + 1]
                        row[k + 8] = r2[x0 + 2]
                else:
                    k = 0
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                row[k] = xp[c, y0 + i, x0 + j]
                                k += 1


@numba.njit(cache=True, nogil=True)
def _rows_to_nchw(y, bias, out):
    """``out[n, c, p] = y[n·P + p, c] (+ bias[c])`` for ``out`` of shape N×C×P (no bias when it is empty)."""
    N, C, P = out.shape
    if bias.shape[0] == 0:
        for n in range(N):
            for c in range(C):
                for p in range(P):
                    out[n, c, p] = y[n * P + p, c]
    else:
        for n in range(N):
            for c in range(C):
                bc = bias[c]
                for p in range(P):
                    out[n, c, p] = y[n * P + p, c] + bc


def linear(x: np.ndarray, w: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """Fully connected layer ``y = x Wᵀ + b`` for ``x`` of shape N×in."""
    y = x @ w.astype(x.dtype, copy=False).T
    if b is not None:
        y = y + b.astype(x.dtype, copy=False)
    return y


def avgpool2d(x: np.ndarray, kernel: int, stride: int) -> np.ndarray:
    """Average pooling without padding over N×C×H×W."""
    win = sliding_window_view(x, (kernel, kernel), axis=(2, 3))[:, :, ::stride, ::stride]
    return win.mean(axis=(4, 5)).astype(x.dtype, copy=False)


def flatten(x: np.ndarray) -> np.ndarray:
    """N×C×H×W → N×(C·H·W), C order."""
    return x.reshape(x.shape[0], -1)


def apply_linear_node(model, node, inputs: list, workspace: Workspace | None = None) -> np.ndarray:
    """Apply a non-activation node densely: its op's NumPy semantics (:meth:`srp_np.opset.Node.dense`).

    ``node`` is a typed node or a node of ``model.graph`` (its JSON dict)."""
    t = model.typed(node)
    if t.op == "qcfs":
        raise ValueError("not a linear op: qcfs")
    return t.dense(inputs, model.arrays, workspace)
