"""``linear``: fully connected layer ``y = W x + b``."""
from __future__ import annotations

from dataclasses import dataclass

from ..ops import linear as _linear
from ..errors import SrpError
from .base import Node, attr, register


@register
@dataclass(frozen=True)
class Linear(Node):
    """Attributes: ``weight`` (out×in key), ``bias`` (key or null)."""

    OP = "linear"
    SYNAPTIC = True
    weight: str | None = attr("array", None, "out×in")
    bias: str | None = attr("array", None, "out")

    def infer_shape(self, in_shapes, arrays):
        (s,) = in_shapes
        w = self.array(arrays, "weight")
        if w is None or w.ndim != 2:
            raise SrpError(f"{self.where}: weight must be a 2-d out×in array")
        if len(s) != 1 or s[0] != w.shape[1]:
            raise SrpError(f"{self.where}: weight expects {w.shape[1]} inputs, input shape is {list(s)}")
        b = self.array(arrays, "bias")
        if b is not None and b.shape != (w.shape[0],):
            raise SrpError(f"{self.where}: bias shape {b.shape} does not match {w.shape[0]} outputs")
        return (w.shape[0],)

    def dense(self, inputs, arrays, workspace=None):
        return _linear(inputs[0], arrays[self.weight], None if self.bias is None else arrays[self.bias])

    def ann_ops(self, in_shapes, out_shape, arrays):
        w = arrays[self.weight]
        return int(w.shape[0] * w.shape[1]), 0
