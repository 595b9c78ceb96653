"""Small random ``srp-np/1`` networks for tests, examples and benchmarks.

:func:`random_vgg` and :func:`random_resnet` build VGG- and ResNet-shaped
graphs (conv, avgpool, flatten, linear, residual add with identity and 1×1
conv shortcuts) with random weights. Thresholds are calibrated on the data
passed in (the 99th percentile of each layer's ANN pre-activation), so that
the SNN fires at realistic rates.
"""
from __future__ import annotations

import numpy as np

from .analytic import qcfs
from .model import FORMAT, Model, validate_graph
from .ops import apply_linear_node


class GraphBuilder:
    """Append nodes to an ``srp-np/1`` graph under construction."""

    def __init__(self, input_shape, num_classes, L=4, rng=None, **meta):
        self.rng = np.random.default_rng(rng)
        self.graph = {"format": FORMAT, "input_shape": list(input_shape), "num_classes": num_classes, "L": L,
                      "preprocess": {"mean": [0.0] * input_shape[0], "std": [1.0] * input_shape[0]},
                      "nodes": [], **meta}
        self.arrays = {}
        self.shapes = {"input": tuple(input_shape)}
        self._n = 0

    def _name(self, prefix):
        self._n += 1
        return f"{prefix}{self._n}"

    def _add(self, node, shape):
        self.graph["nodes"].append(node)
        self.shapes[node["name"]] = tuple(shape)
        return node["name"]

    def conv(self, src, cout, k=3, stride=1, padding=1, bias=True, scale=1.0):
        cin, h, w = self.shapes[src]
        name = self._name("conv")
        std = scale * np.sqrt(2.0 / (cin * k * k))
        self.arrays[f"{name}.weight"] = (self.rng.standard_normal((cout, cin, k, k)) * std).astype(np.float32)
        node = {"name": name, "op": "conv2d", "inputs": [src], "weight": f"{name}.weight",
                "bias": None, "stride": stride, "padding": padding}
        if bias:
            self.arrays[f"{name}.bias"] = (self.rng.standard_normal(cout) * 0.1).astype(np.float32)
            node["bias"] = f"{name}.bias"
        return self._add(node, (cout, (h + 2 * padding - k) // stride + 1, (w + 2 * padding - k) // stride + 1))

    def linear(self, src, out, bias=True):
        (n_in,) = self.shapes[src]
        name = self._name("fc")
        self.arrays[f"{name}.weight"] = (self.rng.standard_normal((out, n_in)) * np.sqrt(2.0 / n_in)).astype(np.float32)
        node = {"name": name, "op": "linear", "inputs": [src], "weight": f"{name}.weight", "bias": None}
        if bias:
            self.arrays[f"{name}.bias"] = (self.rng.standard_normal(out) * 0.1).astype(np.float32)
            node["bias"] = f"{name}.bias"
        return self._add(node, (out,))

    def act(self, src, threshold=1.0):
        return self._add({"name": self._name("act"), "op": "qcfs", "inputs": [src], "threshold": float(threshold)},
                         self.shapes[src])

    def pool(self, src, k=2, stride=None):
        c, h, w = self.shapes[src]
        stride = stride or k
        return self._add({"name": self._name("pool"), "op": "avgpool2d", "inputs": [src], "kernel": k,
                          "stride": stride}, (c, (h - k) // stride + 1, (w - k) // stride + 1))

    def flatten(self, src):
        return self._add({"name": self._name("flat"), "op": "flatten", "inputs": [src]},
                         (int(np.prod(self.shapes[src])),))

    def add(self, *srcs):
        return self._add({"name": self._name("add"), "op": "add", "inputs": list(srcs)}, self.shapes[srcs[0]])

    def build(self, output, calibrate_x=None, percentile=99.0) -> Model:
        """Finish the graph; calibrate each threshold on ``calibrate_x`` if given."""
        self.graph["output"] = output
        model = Model(graph=self.graph, arrays=self.arrays, shapes=validate_graph(self.graph, self.arrays))
        if calibrate_x is not None:
            values = {"input": np.asarray(calibrate_x, np.float64)}
            for node in model.nodes:
                ins = [values[s] for s in node["inputs"]]
                if node["op"] == "qcfs":
                    pos = ins[0][ins[0] > 0]
                    lam = float(np.percentile(pos, percentile)) if pos.size else 1.0
                    node["threshold"] = max(lam, 1e-3)
                    values[node["name"]] = qcfs(ins[0], node["threshold"], model.L)
                else:
                    values[node["name"]] = apply_linear_node(model, node, ins)
        return model


def random_vgg(input_shape=(3, 16, 16), num_classes=10, widths=(8, 16), fc=32, L=4, rng=0,
               calibrate_x=None) -> Model:
    """A small VGG-shaped net: [conv-act]×2 + avgpool per stage, then fc-act-fc."""
    g = GraphBuilder(input_shape, num_classes, L, rng, arch="random-vgg")
    h = "input"
    for w in widths:
        h = g.act(g.conv(h, w))
        h = g.act(g.conv(h, w))
        h = g.pool(h, 2)
    h = g.flatten(h)
    h = g.act(g.linear(h, fc))
    out = g.linear(h, num_classes)
    return g.build(out, calibrate_x)


def random_resnet(input_shape=(3, 16, 16), num_classes=10, widths=(8, 16), blocks=1, L=4, rng=0,
                  calibrate_x=None) -> Model:
    """A small ResNet-shaped net: stem, basic blocks (act after the add), 1×1 shortcuts, global pool, fc."""
    g = GraphBuilder(input_shape, num_classes, L, rng, arch="random-resnet")
    h = g.act(g.conv("input", widths[0]))
    cin = widths[0]
    for i, w in enumerate(widths):
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            r = g.act(g.conv(h, w, stride=stride))
            r = g.conv(r, w, scale=0.5)
            sc = h if (stride == 1 and cin == w) else g.conv(h, w, k=1, stride=stride, padding=0)
            h = g.act(g.add(r, sc))
            cin = w
    c, hh, ww = g.shapes[h]
    h = g.pool(h, hh)
    out = g.linear(g.flatten(h), num_classes)
    return g.build(out, calibrate_x)
