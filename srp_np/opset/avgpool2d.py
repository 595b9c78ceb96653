"""``avgpool2d``: average pooling without padding (the authors' VGG/ResNet use it instead of max pooling)."""
from __future__ import annotations

from dataclasses import dataclass

from ..ops import avgpool2d as _avgpool2d
from ..errors import SrpError
from .base import Node, attr, register


@register
@dataclass(frozen=True)
class AvgPool2d(Node):
    """Attributes: ``kernel``, ``stride`` (default: the kernel)."""

    OP = "avgpool2d"
    SYNAPTIC = True
    kernel: int = attr("int")
    stride: int | None = attr("int", None, "default: kernel")

    def check(self):
        if self.stride is None:
            object.__setattr__(self, "stride", self.kernel)     # the default, in one place

    def infer_shape(self, in_shapes, arrays):
        (s,) = in_shapes
        k, st = self.kernel, self.stride
        if len(s) != 3 or k < 1 or st < 1 or k > s[1] or k > s[2]:
            raise SrpError(f"{self.where}: kernel {k} does not fit input {list(s)}")
        return (s[0], (s[1] - k) // st + 1, (s[2] - k) // st + 1)

    def dense(self, inputs, arrays, workspace=None):
        return _avgpool2d(inputs[0], self.kernel, self.stride)

    def ann_ops(self, in_shapes, out_shape, arrays):
        c, ho, wo = out_shape
        return int(c * ho * wo * self.kernel * self.kernel), 0
