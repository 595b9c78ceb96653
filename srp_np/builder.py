"""Build an ``srp-np/1`` model in Python from your own arrays.

>>> import numpy as np
>>> from srp_np.builder import GraphBuilder
>>> g = GraphBuilder(input_shape=(1, 4, 4), num_classes=2, L=4)
>>> h = g.qcfs(g.conv2d("input", np.ones((3, 1, 3, 3), np.float32), padding=1), threshold=1.0)
>>> out = g.linear(g.flatten(g.avgpool2d(h, 4)), np.ones((2, 3), np.float32))
>>> model = g.build(out)
>>> model.shapes[out]
(2,)

Each method appends one node (the ops of :mod:`srp_np.opset`), checks it at once against
its inputs (a wrong shape is an :class:`~srp_np.errors.SrpError` naming the node) and returns
its name; :meth:`GraphBuilder.build` returns a validated :class:`~srp_np.model.Model`, and
:func:`srp_np.save_model` writes it.
"""
from __future__ import annotations

import numpy as np

from .errors import SrpError
from .model import FORMAT, Model
from .opset import parse_node


class GraphBuilder:
    """Append nodes to an ``srp-np/1`` graph.

    Parameters
    ----------
    input_shape : (C, H, W)
    num_classes : int
    L : int
        QCFS quantisation steps of the source ANN.
    mean, std : sequence of C floats, optional
        Input normalisation ``(x − mean)/std`` of raw images in [0, 1] (default 0 and 1).
    **meta
        Extra graph metadata (``arch``, ``dataset``, ...).
    """

    def __init__(self, input_shape, num_classes: int, L: int = 4, mean=None, std=None, **meta):
        c = int(input_shape[0])
        self.graph = {"format": FORMAT, "input_shape": [int(v) for v in input_shape], "num_classes": int(num_classes),
                      "L": int(L), "preprocess": {"mean": [0.0] * c if mean is None else [float(v) for v in mean],
                                                  "std": [1.0] * c if std is None else [float(v) for v in std]},
                      "nodes": [], **meta}
        self.arrays = {}
        self.shapes = {"input": tuple(int(v) for v in input_shape)}
        self._counts = {}

    # ------------------------------------------------------------------ plumbing
    def _name(self, prefix: str, name: str | None) -> str:
        if name is None:
            self._counts[prefix] = self._counts.get(prefix, 0) + 1
            name = f"{prefix}{self._counts[prefix]}"
        if name in self.shapes:
            raise SrpError(f"node name {name!r} is used twice")
        return name

    def _array(self, name: str, role: str, a) -> str | None:
        if a is None:
            return None
        key = f"{name}.{role}"
        self.arrays[key] = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
        return key

    def add_node(self, node: dict) -> str:
        """Append a node given as its JSON object; checked against its inputs at once."""
        for s in node["inputs"]:
            if s not in self.shapes:
                raise SrpError(f"node {node['name']!r} uses unknown input {s!r}")
        t = parse_node(node)
        self.shapes[node["name"]] = tuple(t.infer_shape([self.shapes[s] for s in node["inputs"]], self.arrays))
        self.graph["nodes"].append(node)
        return node["name"]

    # ------------------------------------------------------------------ ops
    def conv2d(self, src: str, weight, bias=None, stride: int = 1, padding: int = 0, name: str | None = None) -> str:
        """2-d convolution; ``weight`` Cout×Cin×kh×kw, ``bias`` Cout."""
        name = self._name("conv", name)
        return self.add_node({"name": name, "op": "conv2d", "inputs": [src], "weight": self._array(name, "weight", weight),
                              "bias": self._array(name, "bias", bias), "stride": int(stride), "padding": int(padding)})

    def linear(self, src: str, weight, bias=None, name: str | None = None) -> str:
        """Fully connected layer; ``weight`` out×in, ``bias`` out."""
        name = self._name("fc", name)
        return self.add_node({"name": name, "op": "linear", "inputs": [src],
                              "weight": self._array(name, "weight", weight), "bias": self._array(name, "bias", bias)})

    def qcfs(self, src: str, threshold: float, name: str | None = None) -> str:
        """QCFS activation with λ = ``threshold`` (an IF layer with θ = λ in the SNN)."""
        return self.add_node({"name": self._name("act", name), "op": "qcfs", "inputs": [src],
                              "threshold": float(threshold)})

    def avgpool2d(self, src: str, kernel: int, stride: int | None = None, name: str | None = None) -> str:
        """Average pool without padding (stride defaults to the kernel)."""
        node = {"name": self._name("pool", name), "op": "avgpool2d", "inputs": [src], "kernel": int(kernel)}
        if stride is not None:
            node["stride"] = int(stride)
        return self.add_node(node)

    def flatten(self, src: str, name: str | None = None) -> str:
        return self.add_node({"name": self._name("flat", name), "op": "flatten", "inputs": [src]})

    def add(self, *srcs: str, name: str | None = None) -> str:
        """Elementwise sum (a residual connection)."""
        return self.add_node({"name": self._name("add", name), "op": "add", "inputs": list(srcs)})

    def batchnorm2d(self, src: str, mean, var, weight=None, bias=None, eps: float = 1e-5,
                    name: str | None = None) -> str:
        """Batch normalisation at inference (per-channel affine)."""
        name = self._name("bn", name)
        return self.add_node({"name": name, "op": "batchnorm2d", "inputs": [src],
                              "mean": self._array(name, "mean", mean), "var": self._array(name, "var", var),
                              "weight": self._array(name, "weight", weight), "bias": self._array(name, "bias", bias),
                              "eps": float(eps)})

    def build(self, output: str) -> Model:
        """The validated model whose logits are node ``output``."""
        graph = dict(self.graph, nodes=[dict(n) for n in self.graph["nodes"]], output=output)
        return Model(graph=graph, arrays=dict(self.arrays))
