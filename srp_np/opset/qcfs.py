"""``qcfs``: the activation. In the ANN, QCFS (Eq. 7):
``a = λ·clip(⌊L·y/λ + 1/2⌋/L, 0, 1)``; in the SNN, an integrate-and-fire layer with θ = λ
(Eqs. 2-3, :mod:`srp_np.neuron`)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .base import Node, attr, register


@register
@dataclass(frozen=True)
class Qcfs(Node):
    """Attribute: ``threshold`` (the trained λ = θ)."""

    OP = "qcfs"
    threshold: float = attr("positive")

    def infer_shape(self, in_shapes, arrays):
        return tuple(in_shapes[0])

    def dense(self, inputs, arrays, workspace=None, L: int = 1):
        """Eq. 7 (:func:`srp_np.analytic.qcfs` operation for operation) on ``inputs[0]``."""
        y = inputs[0]
        lam = y.dtype.type(self.threshold)
        out = np.divide(y, lam)
        np.multiply(out, L, out=out)
        np.add(out, 0.5, out=out)
        np.floor(out, out=out)
        np.divide(out, L, out=out)
        np.clip(out, 0.0, 1.0, out=out)
        np.multiply(out, lam, out=out)
        return out
