"""``conv2d``: 2-d cross-correlation with zero padding, ``y = W ⋆ x + b`` (the W^l of Eq. 2)."""
from __future__ import annotations

from dataclasses import dataclass

from ..ops import conv2d as _conv2d
from ..errors import SrpError
from .base import Node, attr, covered, register


@register
@dataclass(frozen=True)
class Conv2d(Node):
    """Attributes: ``weight`` (Cout×Cin×kh×kw key), ``bias`` (key or null), ``stride`` (1), ``padding`` (0)."""

    OP = "conv2d"
    SYNAPTIC = True
    weight: str | None = attr("array", None, "Cout×Cin×kh×kw")
    bias: str | None = attr("array", None, "Cout")
    stride: int = attr("int", 1)
    padding: int = attr("int", 0)

    def check(self):
        if self.weight is None:
            raise SrpError(f"{self.where}: weight is required")
        if self.stride < 1 or self.padding < 0:
            raise SrpError(f"{self.where}: stride must be >= 1 and padding >= 0")

    def infer_shape(self, in_shapes, arrays):
        (s,) = in_shapes
        w = self.array(arrays, "weight", required=True)
        if w.ndim != 4:
            raise SrpError(f"{self.where}: weight must be Cout×Cin×kh×kw, got shape {w.shape}")
        if len(s) != 3:
            raise SrpError(f"{self.where}: input must be C×H×W, got {list(s)}")
        if w.shape[1] != s[0]:
            raise SrpError(f"{self.where}: weight expects {w.shape[1]} input channels, input has {s[0]}")
        b = self.array(arrays, "bias")
        if b is not None and b.shape != (w.shape[0],):
            raise SrpError(f"{self.where}: bias shape {b.shape} does not match {w.shape[0]} output channels")
        ho = (s[1] + 2 * self.padding - w.shape[2]) // self.stride + 1
        wo = (s[2] + 2 * self.padding - w.shape[3]) // self.stride + 1
        if ho < 1 or wo < 1:
            raise SrpError(f"{self.where}: kernel {w.shape[2]}×{w.shape[3]} does not fit input {list(s)}")
        return (w.shape[0], ho, wo)

    def dense(self, inputs, arrays, workspace=None):
        return _conv2d(inputs[0], arrays[self.weight], None if self.bias is None else arrays[self.bias],
                          self.stride, self.padding, workspace)

    def ann_ops(self, in_shapes, out_shape, arrays):
        cout, cin, kh, kw = arrays[self.weight].shape
        _, h, wd = in_shapes[0]
        _, ho, wo = out_shape
        return cout * cin * covered(h, kh, self.stride, self.padding, ho) * \
            covered(wd, kw, self.stride, self.padding, wo), 0
