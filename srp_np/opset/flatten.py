"""``flatten``: C×H×W → C·H·W in C order."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ..ops import flatten as _flatten
from .base import Node, register


@register
@dataclass(frozen=True)
class Flatten(Node):
    OP = "flatten"

    def infer_shape(self, in_shapes, arrays):
        return (math.prod(in_shapes[0]),)

    def dense(self, inputs, arrays, workspace=None):
        return _flatten(inputs[0])
