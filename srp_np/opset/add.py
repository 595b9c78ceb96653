"""``add``: elementwise sum of two or more inputs (residual connections)."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import SrpError
from .base import Node, register, short


@register
@dataclass(frozen=True)
class Add(Node):
    OP = "add"
    ARITY = None
    SYNAPTIC = True

    def infer_shape(self, in_shapes, arrays):
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise SrpError(f"{self.where}: input shapes differ: {short([list(s) for s in in_shapes], 120)}")
        return tuple(in_shapes[0])

    def dense(self, inputs, arrays, workspace=None):
        out = inputs[0].copy()
        for extra in inputs[1:]:
            out += extra
        return out

    def ann_ops(self, in_shapes, out_shape, arrays):
        return 0, math.prod(out_shape) * (len(self.inputs) - 1)
