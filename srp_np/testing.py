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
from .builder import GraphBuilder as _Builder
from .model import Model
from .ops import apply_linear_node


class GraphBuilder(_Builder):
    """:class:`srp_np.builder.GraphBuilder` with random weights (He initialisation) and thresholds
    calibrated on data."""

    def __init__(self, input_shape, num_classes, L=4, rng=None, **meta):
        super().__init__(input_shape, num_classes, L, **meta)
        self.rng = np.random.default_rng(rng)
        self._n = 0

    def _name(self, prefix, name=None):
        if name is None:
            self._n += 1
            name = f"{prefix}{self._n}"
        return super()._name(prefix, name)

    def conv(self, src, cout, k=3, stride=1, padding=1, bias=True, scale=1.0):
        cin = self.shapes[src][0]
        std = scale * np.sqrt(2.0 / (cin * k * k))
        w = self.rng.standard_normal((cout, cin, k, k)) * std
        b = self.rng.standard_normal(cout) * 0.1 if bias else None
        return self.conv2d(src, w, b, stride, padding)

    def linear(self, src, out, bias=True):
        (n_in,) = self.shapes[src]
        w = self.rng.standard_normal((out, n_in)) * np.sqrt(2.0 / n_in)
        b = self.rng.standard_normal(out) * 0.1 if bias else None
        return super().linear(src, w, b)

    def act(self, src, threshold=1.0):
        return self.qcfs(src, threshold)

    def pool(self, src, k=2, stride=None):
        return self.avgpool2d(src, k, stride or k)

    def build(self, output, calibrate_x=None, percentile=99.0) -> Model:
        """Finish the graph; calibrate each threshold on ``calibrate_x`` if given (the 99th percentile
        of the layer's positive ANN pre-activations)."""
        model = super().build(output)
        if calibrate_x is None:
            return model
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
        return Model(graph=model.graph, arrays=model.arrays)      # the typed nodes with the new thresholds


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
