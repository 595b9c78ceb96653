"""Dense NumPy implementations of the graph's linear operators.

These are the plain, obviously-correct versions used by the ANN forward pass
(:mod:`srp_np.ann`) and the dense reference simulator
(:mod:`srp_np.reference`). The event-driven kernels in
:mod:`srp_np.kernels` must agree with them.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def conv2d(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: int, padding: int) -> np.ndarray:
    """2-d cross-correlation with zero padding: ``y = W ⋆ x + b``.

    ``x`` is N×Cin×H×W, ``w`` Cout×Cin×kh×kw; returns N×Cout×Ho×Wo in the dtype of ``x``.
    """
    if padding:
        x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    kh, kw = w.shape[2], w.shape[3]
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))[:, :, ::stride, ::stride]  # N,C,Ho,Wo,kh,kw
    N, C, Ho, Wo = win.shape[:4]
    # what np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])) computes (same matrices, same product), without
    # its overhead: im2col rows (n, ho, wo) × columns (c, i, j), times the weights as (c, i, j) × Cout
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, C * kh * kw)
    y = (cols @ w.astype(x.dtype, copy=False).transpose(1, 2, 3, 0).reshape(C * kh * kw, -1)).reshape(N, Ho, Wo, -1)
    y = np.ascontiguousarray(y.transpose(0, 3, 1, 2))
    if b is not None:
        y += b.astype(x.dtype, copy=False).reshape(1, -1, 1, 1)
    return y


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


def apply_linear_node(model, node: dict, inputs: list) -> np.ndarray:
    """Apply a non-activation node (conv2d, linear, avgpool2d, flatten, add) densely."""
    op = node["op"]
    if op == "conv2d":
        return conv2d(inputs[0], model.weight(node), model.weight(node, "bias"),
                      _int(node.get("stride", 1)), _int(node.get("padding", 0)))
    if op == "linear":
        return linear(inputs[0], model.weight(node), model.weight(node, "bias"))
    if op == "avgpool2d":
        k = _int(node["kernel"])
        return avgpool2d(inputs[0], k, _int(node.get("stride", k)))
    if op == "flatten":
        return flatten(inputs[0])
    if op == "add":
        out = inputs[0].copy()
        for extra in inputs[1:]:
            out += extra
        return out
    raise ValueError(f"not a linear op: {op}")


def _int(v) -> int:
    """A node's int attribute, written as ``k`` or as a square pair ``[k, k]``."""
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)
