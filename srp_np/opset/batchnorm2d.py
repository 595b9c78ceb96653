"""``batchnorm2d``: per-channel affine of a C×H×W map (batch normalisation at inference).

``y = γ·(x − μ)/√(σ² + eps) + β``, computed as ``y = a·x + c`` with
``a = γ/√(σ² + eps)`` and ``c = β − μ·a`` (float64, then the run's precision).

In the SNN it is linear, so it is exact to fold it into the conv or linear layer that
feeds it when nothing else reads that layer (:func:`srp_np.engine.fold.fold_batchnorm`:
``W' = a·W``, ``b' = a·b + c``). Elsewhere (after an add, a pool or an IF layer) the
engine applies it to the values it receives, step by step (:meth:`BatchNorm2d.lower`).
It is not a synaptic op: the cost reports count no operations for it (none when folded).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import SrpError
from .base import Node, attr, register


@register
@dataclass(frozen=True)
class BatchNorm2d(Node):
    """Attributes: ``weight`` (γ), ``bias`` (β), ``mean`` (μ), ``var`` (σ²): C-vector keys;
    ``eps`` (1e-5). γ and β may be null (1 and 0)."""

    OP = "batchnorm2d"
    mean: str | None = attr("array", None, "C")
    var: str | None = attr("array", None, "C")
    weight: str | None = attr("array", None, "C")
    bias: str | None = attr("array", None, "C")
    eps: float = attr("number", 1e-5)

    def check(self):
        for key in ("mean", "var"):
            if getattr(self, key) is None:
                raise SrpError(f"{self.where}: {key} is required")
        if not self.eps >= 0:
            raise SrpError(f"{self.where}: eps must be >= 0, got {self.eps}")

    def infer_shape(self, in_shapes, arrays):
        (s,) = in_shapes
        if len(s) != 3:
            raise SrpError(f"{self.where}: input must be C×H×W, got {list(s)}")
        for key in ("mean", "var", "weight", "bias"):
            a = self.array(arrays, key)
            if a is not None and a.shape != (s[0],):
                raise SrpError(f"{self.where}: {key} shape {a.shape} does not match {s[0]} channels")
        if np.any(arrays[self.var] + self.eps <= 0):
            raise SrpError(f"{self.where}: var + eps must be positive")
        return tuple(s)

    def affine(self, arrays) -> tuple:
        """``(a, c)`` (float64, C-vectors) with ``y = a·x + c``."""
        mu = arrays[self.mean].astype(np.float64)
        a = 1.0 / np.sqrt(arrays[self.var].astype(np.float64) + self.eps)
        if self.weight is not None:
            a = a * arrays[self.weight].astype(np.float64)
        c = -mu * a
        if self.bias is not None:
            c = c + arrays[self.bias].astype(np.float64)
        return a, c

    def dense(self, inputs, arrays, workspace=None):
        x = inputs[0]
        a, c = self.affine(arrays)
        dt = x.dtype.type
        shape = (1, -1) + (1,) * (x.ndim - 2)
        return x * a.astype(dt).reshape(shape) + c.astype(dt).reshape(shape)

    def lower(self, ctx, ins):
        """Engine lowering: the affine on the dense values of its input, frame by frame."""
        x = ctx.dense_copy(ins[0])                   # F × (H·W·C), channels-last
        a, c = self.affine(ctx.arrays)
        dt = x.dtype.type
        C = a.size
        xv = x.reshape(x.shape[0], -1, C)
        xv *= a.astype(dt)
        xv += c.astype(dt)
        return ctx.dense_value(x)
