"""QCFS networks of the SRP paper: VGG-16 (CIFAR variant), ResNet-18/20/34.

Every ReLU is a :class:`~srp_np.train.qcfs.QCFS`.  Module names are chosen to
be readable in the exported graph (``features.0.conv``, ``layer1.0.act2``).
``width`` scales every channel count (and VGG's 4096-wide classifier); 1.0 is
the paper's width.  Checkpoints of the authors' code are mapped onto these
names by :mod:`srp_np.train.checkpoint`.
"""
from __future__ import annotations

from typing import List

import torch
from torch import nn

from .activations import make_activation
from .qcfs import QCFS

ARCHS = ("vgg16", "resnet18", "resnet20", "resnet34")

# VGG-16: 5 stages of 3x3 convs, each followed by a 2x2 average pool.
VGG16_CFG = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]


def _scaled(c: int, width: float) -> int:
    return max(1, int(round(c * width)))


class ConvBNAct(nn.Module):
    def __init__(self, cin, cout, L, stride=1, bias=True, act=QCFS):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.act = act(L)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class VGG16(nn.Module):
    """CIFAR VGG-16: 13 x (conv3x3 + bias, BN, QCFS), AvgPool2d(2, 2) after each
    stage, classifier flatten -> 4096w -> 4096w -> K with QCFS in between.

    The input must be 32x32 (5 poolings down to 1x1), or a multiple thereof
    (then the flattened size is 512w * (H/32) * (W/32)).
    """

    arch = "vgg16"

    def __init__(self, in_channels=3, num_classes=10, L=4, width=1.0, dropout=0.0, input_size=32,
                 activation="qcfs"):
        super().__init__()
        act = make_activation(activation)
        self.activation = activation
        self.width = float(width)
        self.L = int(L)
        self.stage_ends = []
        layers = []
        cin = in_channels
        for stage in VGG16_CFG:
            for c in stage:
                cout = _scaled(c, width)
                layers.append(ConvBNAct(cin, cout, L, act=act))
                cin = cout
            self.stage_ends.append(len(layers) - 1)
        self.features = nn.ModuleList(layers)
        self.pool = nn.AvgPool2d(2, 2)
        if input_size % 32:
            raise ValueError(f"VGG-16 needs an input size divisible by 32, got {input_size}")
        spatial = (input_size // 32) ** 2
        hidden = _scaled(4096, width)
        self.fc1 = nn.Linear(cin * spatial, hidden)
        self.act_fc1 = act(L)
        self.fc2 = nn.Linear(hidden, hidden)
        self.act_fc2 = act(L)
        self.fc3 = nn.Linear(hidden, num_classes)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        _init(self)

    def forward(self, x):
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in self.stage_ends:
                x = self.pool(x)
        x = torch.flatten(x, 1)
        x = self.dropout(self.act_fc1(self.fc1(x)))
        x = self.dropout(self.act_fc2(self.fc2(x)))
        return self.fc3(x)


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, L, act=QCFS):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.act1 = act(L)
        self.conv2 = nn.Conv2d(cout, cout, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.has_shortcut = stride != 1 or cin != cout
        if self.has_shortcut:
            self.shortcut = nn.Sequential()
            self.shortcut.add_module("conv", nn.Conv2d(cin, cout, 1, stride=stride, bias=False))
            self.shortcut.add_module("bn", nn.BatchNorm2d(cout))
        self.act2 = act(L)

    def forward(self, x):
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        sc = self.shortcut(x) if self.has_shortcut else x
        return self.act2(out + sc)


class ResNet(nn.Module):
    """CIFAR-style ResNet: 3x3 stride-1 stem (no max-pool), basic blocks with QCFS
    after the residual add, 1x1 conv + BN shortcut when the shape changes,
    global average pool, linear."""

    def __init__(self, arch, blocks: List[int], channels: List[int], in_channels=3,
                 num_classes=10, L=4, width=1.0, activation="qcfs"):
        super().__init__()
        act = make_activation(activation)
        self.activation = activation
        self.arch = arch
        self.width = float(width)
        self.L = int(L)
        chans = [_scaled(c, width) for c in channels]
        self.conv1 = nn.Conv2d(in_channels, chans[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(chans[0])
        self.act1 = act(L)
        cin = chans[0]
        self.num_stages = len(blocks)
        for s, (n, c) in enumerate(zip(blocks, chans)):
            stride = 1 if s == 0 else 2
            stage = []
            for b in range(n):
                stage.append(BasicBlock(cin, c, stride if b == 0 else 1, L, act=act))
                cin = c
            setattr(self, f"layer{s + 1}", nn.Sequential(*stage))
        self.fc = nn.Linear(cin, num_classes)
        _init(self)

    def forward(self, x):
        x = self.act1(self.bn1(self.conv1(x)))
        for s in range(self.num_stages):
            x = getattr(self, f"layer{s + 1}")(x)
        x = torch.mean(x, dim=(2, 3))
        return self.fc(x)


def _init(model):
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.zeros_(m.bias)


def build_model(arch: str, in_channels: int = 3, num_classes: int = 10, L: int = 4,
                width: float = 1.0, input_size: int = 32, dropout: float = 0.0,
                activation: str = "qcfs") -> nn.Module:
    """Build one of :data:`ARCHS` with source activation ``activation`` (see :mod:`.activations`)."""
    arch = arch.lower().replace("-", "")
    a = activation
    if arch == "vgg16":
        return VGG16(in_channels, num_classes, L, width, dropout=dropout, input_size=input_size, activation=a)
    if arch == "resnet18":
        return ResNet(arch, [2, 2, 2, 2], [64, 128, 256, 512], in_channels, num_classes, L, width, activation=a)
    if arch == "resnet34":
        return ResNet(arch, [3, 4, 6, 3], [64, 128, 256, 512], in_channels, num_classes, L, width, activation=a)
    if arch == "resnet20":
        return ResNet(arch, [3, 3, 3], [16, 32, 64], in_channels, num_classes, L, width, activation=a)
    raise ValueError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")


def qcfs_modules(model):
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QCFS)]
