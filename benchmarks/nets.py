"""VGG-16 and ResNet-20 in CIFAR geometry as srp-np/1 graphs (random weights,
thresholds calibrated on real images so that firing rates are realistic).

Widths follow the paper / the authors' code: VGG-16 13 convs
(64,64 | 128,128 | 256×3 | 512×3 | 512×3), 2×2 average pools, classifier
512→4096→4096→10; ResNet-20 stem 16, stages [3,3,3] of basic blocks with
16/32/64 channels, act after the residual add, 1×1 conv shortcuts on
down-sampling, global average pool, fc 64→10.
"""
from __future__ import annotations

import numpy as np

from srp_np.testing import GraphBuilder, random_resnet

VGG16_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def calibration_images(n=32, shape=(3, 32, 32), seed=0):
    """Fashion-MNIST test images (the shipped data) padded to 32×32, replicated
    over channels, and normalised; random smooth images when the data is absent."""
    rng = np.random.default_rng(seed)
    try:
        from srp_np.datasets import fit_to_shape, load_shipped_test_set, to_float
        x, _ = load_shipped_test_set()[:2]
        x = to_float(np.asarray(x))[:n]
        if x.ndim == 3:
            x = x[:, None]
        x = fit_to_shape(x, (x.shape[1],) + tuple(shape[1:]))
        x = np.repeat(x, shape[0] // x.shape[1], axis=1) if x.shape[1] != shape[0] else x
    except Exception:  # pragma: no cover - fallback
        base = rng.random((n, shape[0], shape[1] // 4, shape[2] // 4))
        x = base.repeat(4, axis=2).repeat(4, axis=3)
    x = (x - 0.5) / 0.25
    return x.astype(np.float32)


def vgg16(x_cal, num_classes=10, rng=0, bias=True):
    g = GraphBuilder(tuple(x_cal.shape[1:]), num_classes, 4, rng, arch="vgg16-random")
    h = "input"
    for stage in VGG16_CFG:
        for w in stage:
            h = g.act(g.conv(h, w, bias=bias))
        h = g.pool(h, 2)
    h = g.flatten(h)
    h = g.act(g.linear(h, 4096))
    h = g.act(g.linear(h, 4096))
    out = g.linear(h, num_classes)
    return g.build(out, x_cal)


def resnet20(x_cal, num_classes=10, rng=0):
    """He et al.'s CIFAR ResNet-20: ``random_resnet`` with 16/32/64 channels and 3 blocks per stage."""
    m = random_resnet(tuple(x_cal.shape[1:]), num_classes, widths=(16, 32, 64), blocks=3, L=4, rng=rng,
                      calibrate_x=x_cal)
    m.graph["arch"] = "resnet20-random"
    return m
