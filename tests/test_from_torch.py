"""from_torch / srp-np export --module: hand-written QCFS networks that are neither VGG
nor ResNet; the NumPy ANN of the exported file equals PyTorch (eval mode) within 1e-4."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from srp_np import datasets as ds  # noqa: E402
from srp_np.ann import ann_forward  # noqa: E402
from srp_np.errors import SrpError  # noqa: E402
from srp_np.model import load_model  # noqa: E402
from srp_np.train.from_torch import export_torch, from_torch  # noqa: E402
from srp_np.train.qcfs import QCFS  # noqa: E402


# ----------------------------------------------------------------------------- networks

class MyFloor(nn.Module):  # the authors' activation: parameter `up`, L in attribute `t`
    def __init__(self, up=8.0, t=4):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = t

    def forward(self, x):
        x = x / self.up
        x = torch.floor(x * self.t + 0.5) / self.t
        return torch.clamp(x, 0, 1) * self.up


class IFAnn(nn.Module):  # QCFS repo's IF in ANN mode: parameter `thresh`, attribute `L`
    def __init__(self, L=4):
        super().__init__()
        self.thresh = nn.Parameter(torch.tensor([8.0]))
        self.L = L

    def forward(self, x):
        x = torch.clamp(torch.floor(x / self.thresh * self.L + 0.5) / self.L, 0, 1)
        return x * self.thresh


class TCL(nn.Module):  # trainable clipping layer (Ho & Chang): also a parameter `up`, no quantisation
    def __init__(self):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([4.0]))

    def forward(self, x):
        return self.up - F.relu(self.up - F.relu(x))


class PoolNet(nn.Module):
    """conv-BN-act, 2x2 avg pool, stride-2 conv without bias, adaptive pool, BN1d after linear, dropout."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 6, 5, padding=2)
        self.b1 = nn.BatchNorm2d(6)
        self.a1 = QCFS(4)
        self.p1 = nn.AvgPool2d(2)
        self.c2 = nn.Conv2d(6, 8, 3, stride=2, bias=False)
        self.b2 = nn.BatchNorm2d(8)
        self.a2 = MyFloor(t=4)
        self.gap = nn.AdaptiveAvgPool2d(2)
        self.flat = nn.Flatten()
        self.drop = nn.Dropout(0.3)
        self.f1 = nn.Linear(32, 20)
        self.bf = nn.BatchNorm1d(20)
        self.a3 = IFAnn(4)
        self.f2 = nn.Linear(20, 10)

    def forward(self, x):
        x = self.p1(self.a1(self.b1(self.c1(x))))
        x = self.gap(self.a2(self.b2(self.c2(x))))
        x = self.drop(self.flat(x))
        return self.f2(self.a3(self.bf(self.f1(x))))


class Branchy(nn.Module):
    """Three-way residual sum (two conv branches and the identity), functional pooling, global mean."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), QCFS(4))
        self.b3 = nn.Sequential(nn.Conv2d(8, 8, 3, padding="same", bias=False), nn.BatchNorm2d(8))
        self.b1 = nn.Sequential(nn.Conv2d(8, 8, 1), nn.BatchNorm2d(8))
        self.act = QCFS(4)
        self.down = nn.Conv2d(8, 12, 3, stride=2, padding=1)
        self.act2 = QCFS(4)
        self.fc = nn.Linear(12, 10)

    def forward(self, x):
        x = self.stem(x)
        x = self.act(self.b3(x) + self.b1(x) + x)
        x = F.avg_pool2d(x, 2)
        x = self.act2(self.down(x))
        x = torch.mean(x, dim=(2, 3))
        return self.fc(x)


class DenseSkip(nn.Module):
    """An MLP head with a skip between linear layers; x.view(x.size(0), -1); F.dropout."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 4, stride=4)
        self.act0 = QCFS(4)
        self.l1 = nn.Linear(4 * 7 * 7, 24)
        self.a1 = QCFS(4)
        self.l2 = nn.Linear(24, 24)
        self.a2 = QCFS(4)
        self.l3 = nn.Linear(24, 10)

    def forward(self, x):
        x = self.act0(self.conv(x))
        x = x.view(x.size(0), -1)
        h = self.a1(self.l1(x))
        h2 = self.a2(self.l2(F.dropout(h, 0.2, self.training)) + h)
        return self.l3(h2)


NETS = {"poolnet": PoolNet, "branchy": Branchy, "denseskip": DenseSkip}


def images(n=24, size=28, seed=0):
    x, _ = ds.load_shipped_test_set()
    idx = np.random.default_rng(seed).choice(len(x), n, replace=False)
    xf = ds.to_float(ds.fit_to_shape(x[idx], (1, size, size))).astype(np.float64)
    return (xf - 0.286) / 0.353


def exactify(model, xn, seed=0):
    """Realistic BN statistics from real images, then rounded so that folding is exact in
    float32 (variance a power of 4 with eps 0, gamma ±2^k, beta and mean multiples of 2^-8) and
    thresholds multiples of 1/16: the float64 torch forward and the NumPy forward of the float32
    file then compute the same function up to summation order."""
    g = torch.Generator().manual_seed(seed)
    model.train()
    with torch.no_grad():
        for i in range(3):
            model(torch.from_numpy(xn[i::3].astype(np.float32)))
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
                k = torch.round(torch.log2(m.running_var.clamp_min(1e-6)) / 2)
                m.running_var.copy_(4.0 ** k)
                m.eps = 0.0
                m.running_mean.copy_(torch.round(m.running_mean * 256) / 256)
                sign = torch.where(torch.rand(m.weight.shape, generator=g) < 0.9, 1.0, -1.0)
                m.weight.copy_(sign * 2.0 ** torch.randint(-1, 2, m.weight.shape, generator=g))
                m.bias.copy_(torch.round(torch.randn(m.bias.shape, generator=g) * 0.3 * 256) / 256)
            elif isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                m.bias.copy_(torch.round(m.bias * 256) / 256)
            p = getattr(m, "up", None)
            p = getattr(m, "thresh", None) if p is None else p
            if isinstance(p, torch.Tensor):
                p.fill_(float(torch.randint(6, 25, (1,), generator=g)) / 16)
    model.eval()


def torch_logits(model, xn):
    m = model.double().eval()
    with torch.no_grad():
        out = m(torch.from_numpy(xn)).numpy()
    model.float()
    return out


@pytest.mark.parametrize("name", sorted(NETS))
def test_ann_equals_torch(tmp_path, name):
    torch.manual_seed(3)
    model = NETS[name]()
    xn = images()
    exactify(model, xn)
    graph = export_torch(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.npz", mean=[0.286], std=[0.353],
                         metadata={"arch": name})
    m = load_model(tmp_path / "m.npz")
    assert m.graph["arch"] == name and m.L == 4 and list(m.input_shape) == [1, 28, 28]
    assert m.graph["preprocess"] == {"mean": [0.286], "std": [0.353]}
    ops = [n["op"] for n in m.nodes]
    n_act = sum(1 for mod in model.modules() if isinstance(mod, (QCFS, MyFloor, IFAnn)))
    assert ops.count("qcfs") == n_act
    assert "batchnorm" not in json.dumps(graph).lower()            # every BN folded
    ref = torch_logits(model, xn)
    got = ann_forward(m, xn, dtype=np.float64)
    assert np.abs(ref).max() > 0.1, "degenerate test network"
    assert np.abs(ref - got).max() < 1e-4
    # the activations are not trivial: several quantisation levels occur in every layer
    _, acts = ann_forward(m, xn, return_activations=True)
    for lname, (_, a) in acts.items():
        lam = m.node_by_name[lname]["threshold"]
        assert len(np.unique(np.round(a / lam * 4))) >= 3, lname


def test_structure_of_branchy():
    model = Branchy().eval()
    graph, arrays = from_torch(model, torch.zeros(2, 1, 16, 16))
    by = {n["name"]: n for n in graph["nodes"]}
    adds = [n for n in graph["nodes"] if n["op"] == "add"]
    # (b3 + b1) + x: the identity term is the stem's activation
    assert len(adds) == 2 and "stem.2" in adds[1]["inputs"] + adds[0]["inputs"]
    assert by["b3.0"]["padding"] == 1 and by["b3.0"]["bias"] is not None      # BN gave the conv a bias
    pools = [n for n in graph["nodes"] if n["op"] == "avgpool2d"]
    assert [(p["kernel"], p["stride"]) for p in pools] == [(2, 2), (4, 4)]    # F.avg_pool2d, mean over 4x4
    assert graph["preprocess"] == {"mean": [0.0], "std": [1.0]} and graph["num_classes"] == 10


def test_realistic_bn_float32(tmp_path):
    """Unrounded BN statistics (eps 1e-5) and float32 storage: logits within 1e-4 on most images
    (a QCFS floor may flip on float32 rounding for a rare unit)."""
    torch.manual_seed(5)
    model = PoolNet()
    xn = images(32, seed=1)
    model.train()
    with torch.no_grad():
        for i in range(4):
            model(torch.from_numpy(xn[i::4].astype(np.float32)))
        for mod in model.modules():
            if hasattr(mod, "up"):
                mod.up.fill_(1.0)
            if hasattr(mod, "thresh"):
                mod.thresh.fill_(1.0)
    model.eval()
    export_torch(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.npz")
    ref = torch_logits(model, xn)
    got = ann_forward(load_model(tmp_path / "m.npz"), xn, dtype=np.float64)
    per_image = np.abs(ref - got).max(axis=1)
    assert np.abs(ref).max() > 0.1
    assert np.mean(per_image < 1e-4) >= 0.9, per_image


class WithMax(nn.Module):
    def __init__(self, functional=False):
        super().__init__()
        self.functional = functional
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.a = QCFS(4)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 14 * 14, 10)

    def forward(self, x):
        x = self.a(self.c(x))
        x = F.max_pool2d(x, 2) if self.functional else self.mp(x)
        return self.fc(torch.flatten(x, 1))


@pytest.mark.parametrize("functional", [False, True])
def test_maxpool_refused_or_replaced(functional):
    model = WithMax(functional)
    with pytest.raises(SrpError, match="average pool") as e:
        from_torch(model, torch.zeros(1, 1, 28, 28))
    assert "\n" not in str(e.value) and "--replace-maxpool" in str(e.value)
    graph, _ = from_torch(model, torch.zeros(1, 1, 28, 28), maxpool="avg")
    assert [n["op"] for n in graph["nodes"]] == ["conv2d", "qcfs", "avgpool2d", "flatten", "linear"]


def test_replaced_maxpool_equals_avgpool_network(tmp_path):
    torch.manual_seed(0)
    model = WithMax()
    exactify(model, images())
    export_torch(model, torch.zeros(1, 1, 28, 28), tmp_path / "m.npz", maxpool="avg")
    model.mp = nn.AvgPool2d(2)
    xn = images(8)
    assert np.abs(torch_logits(model, xn) - ann_forward(load_model(tmp_path / "m.npz"), xn)).max() < 1e-4


class Wrap(nn.Module):
    def __init__(self, act=None, extra=None, bn_after_add=False, relu=False):
        super().__init__()
        self.c = nn.Conv2d(1, 4, 3, padding=1)
        self.c2 = nn.Conv2d(1, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.act = act if act is not None else QCFS(4)
        self.extra = extra
        self.bn_after_add = bn_after_add
        self.relu = relu
        self.fc = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x):
        y = self.c(x)
        if self.bn_after_add:
            y = self.bn(y + self.c2(x))
        if self.extra is not None:
            y = self.extra(y)
        if self.relu:
            y = F.relu(y)
        return self.fc(self.act(y).flatten(1))


class Branching(nn.Module):
    def forward(self, x):
        if x.sum() > 0:
            return x
        return -x


@pytest.mark.parametrize("model,match", [
    (Wrap(act=TCL()), "not QCFS"),
    (Wrap(act=nn.ReLU()), "does not convert to an IF neuron"),
    (Wrap(relu=True), "ReLU"),
    (Wrap(extra=nn.LayerNorm([4, 8, 8])), "LayerNorm is not supported"),
    (Wrap(bn_after_add=True), "BatchNorm must directly follow"),
    (Wrap(act=MyFloor(t=8)), None),
    (Branching(), "cannot trace"),
])
def test_refusals(model, match):
    if match is None:   # MyFloor(t=8): fine alone, but L=4 asked
        graph, _ = from_torch(model, torch.zeros(1, 1, 8, 8))
        assert graph["L"] == 8
        with pytest.raises(SrpError, match="has L=8, asked to export with L=4"):
            from_torch(model, torch.zeros(1, 1, 8, 8), L=4)
        return
    with pytest.raises(SrpError, match=match) as e:
        from_torch(model, torch.zeros(1, 1, 8, 8), L=4)     # even with L given: TCL is not QCFS
    assert "\n" not in str(e.value)


def test_L_required_when_module_does_not_say():
    class Up(nn.Module):
        def __init__(self):
            super().__init__()
            self.up = nn.Parameter(torch.tensor([2.0]))

        def forward(self, x):
            return torch.clamp(torch.floor(x / self.up * 8 + 0.5) / 8, 0, 1) * self.up

    model = Wrap(act=Up())
    with pytest.raises(SrpError, match="does not say its L"):
        from_torch(model, torch.zeros(1, 1, 8, 8))
    assert from_torch(model, torch.zeros(1, 1, 8, 8), L=8)[0]["L"] == 8
    with pytest.raises(SrpError, match="not QCFS with L=4"):       # a wrong L is caught by the probe
        from_torch(model, torch.zeros(1, 1, 8, 8), L=4)


MODULE_SRC = '''
import torch
from torch import nn
from srp_np.train.qcfs import QCFS


class Tiny(nn.Module):
    def __init__(self, pool="avg"):
        super().__init__()
        self.c = nn.Conv2d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm2d(4)
        self.a = QCFS(8)
        self.p = nn.AvgPool2d(2) if pool == "avg" else nn.MaxPool2d(2)
        self.fc = nn.Linear(4 * 16 * 16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.p(self.a(self.bn(self.c(x)))), 1))


def make():
    return Tiny()


def make_max():
    return Tiny("max")
'''


def test_export_module_by_import_path(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from srp_np.cli.main import cli

    (tmp_path / "usernet_mod.py").write_text(MODULE_SRC)
    monkeypatch.syspath_prepend(str(tmp_path))
    r = CliRunner().invoke(cli, ["export", "--module", "usernet_mod:make", "--input-size", "32",
                                 "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.output
    m = load_model(tmp_path / "m.npz")
    assert m.graph["arch"] == "Tiny" and m.graph["preprocess"] == {"mean": [0.0] * 3, "std": [1.0] * 3}
    r = CliRunner().invoke(cli, ["export", "--module", "no_such_module_xyz:make", "--out", str(tmp_path / "n.npz")])
    assert r.exit_code == 2 and "cannot import no_such_module_xyz" in r.output


def test_export_module_cli(tmp_path):
    from click.testing import CliRunner

    from srp_np.cli.main import cli

    (tmp_path / "usernet.py").write_text(MODULE_SRC)
    import importlib.util
    spec = importlib.util.spec_from_file_location("usernet_t", tmp_path / "usernet.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(1)
    net = mod.make()
    with torch.no_grad():
        net.bn.running_mean.uniform_(-0.2, 0.2)
        net.bn.running_var.uniform_(0.5, 2)
        net.a.up.fill_(1.5)
    torch.save({"state_dict": {"module." + k: v for k, v in net.state_dict().items()}}, tmp_path / "ck.pth")
    spec_arg = f"{tmp_path / 'usernet.py'}:make"
    out = tmp_path / "m.npz"
    r = CliRunner().invoke(cli, ["export", "--module", spec_arg, "--checkpoint", str(tmp_path / "ck.pth"),
                                 "--dataset", "cifar10", "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = load_model(out)
    assert m.L == 8 and list(m.input_shape) == [3, 32, 32] and m.graph["dataset"] == "cifar10"
    # --module follows the authors' CIFAR-10 normalisation by default
    assert m.graph["preprocess"]["std"] == [0.2023, 0.1994, 0.2010]
    x = np.random.default_rng(0).normal(size=(6, 3, 32, 32))
    with torch.no_grad():
        ref = net.double().eval()(torch.from_numpy(x)).numpy()
    per_image = np.abs(ann_forward(m, x) - ref).max(axis=1)
    assert np.median(per_image) < 1e-4
    # --mean/--std override
    r = CliRunner().invoke(cli, ["export", "--module", spec_arg, "--checkpoint", str(tmp_path / "ck.pth"),
                                 "--mean", "0.5,0.5,0.5", "--std", "0.25,0.25,0.25", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert load_model(out).graph["preprocess"] == {"mean": [0.5] * 3, "std": [0.25] * 3}
    # one-line errors: max pooling (and its replacement), a wrong checkpoint, both --arch and --module
    torch.save(net.state_dict(), tmp_path / "plain.pth")
    cases = [
        (["--module", f"{tmp_path / 'usernet.py'}:make_max", "--checkpoint", str(tmp_path / "plain.pth")],
         "average pool"),
        (["--module", f"{tmp_path / 'usernet.py'}:nope", "--checkpoint", str(tmp_path / "plain.pth")],
         "no callable 'nope'"),
        (["--module", spec_arg, "--arch", "vgg16", "--checkpoint", str(tmp_path / "plain.pth")], "exactly one"),
        (["--module", spec_arg, "--checkpoint", str(tmp_path / "plain.pth"), "--mean", "0.5"], "go together"),
        (["--module", spec_arg, "--checkpoint", str(tmp_path / "plain.pth"), "--mean", "0.5", "--std", "1"],
         "3 value"),
    ]
    bad = tmp_path / "bad.npz"
    for args, match in cases:
        r = CliRunner().invoke(cli, ["export", *args, "--out", str(bad)])
        lines = r.output.strip().splitlines()
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:") and match in lines[0], r.output
        assert not bad.exists()
    r = CliRunner().invoke(cli, ["export", "--module", f"{tmp_path / 'usernet.py'}:make_max", "--checkpoint",
                                 str(tmp_path / "plain.pth"), "--replace-maxpool", "--out", str(bad)])
    assert r.exit_code == 0, r.output
    sd = net.state_dict()
    sd["extra.weight"] = torch.zeros(1)
    torch.save(sd, tmp_path / "extra.pth")
    r = CliRunner().invoke(cli, ["export", "--module", spec_arg, "--checkpoint", str(tmp_path / "extra.pth"),
                                 "--out", str(tmp_path / "e.npz")])
    assert r.exit_code == 2 and "unexpected key 'extra.weight'" in r.output


@pytest.mark.parametrize("arch,size", [("resnet20", 28), ("vgg16", 32)])
def test_agrees_with_the_architecture_exporter(tmp_path, arch, size):
    """The generic exporter and the VGG/ResNet one (export_model) write the same network."""
    from srp_np.train.export import export_model
    from srp_np.train.models import build_model

    torch.manual_seed(2)
    model = build_model(arch, in_channels=1, num_classes=10, L=4, width=0.25, input_size=size)
    xn = images(12, size)
    exactify(model, xn)
    export_model(model, tmp_path / "a.npz", arch=arch, dataset="fashion-mnist", L=4, width=0.25, input_size=size)
    export_torch(model, torch.zeros(1, 1, size, size), tmp_path / "b.npz", mean=[0.286], std=[0.353])
    a, b = load_model(tmp_path / "a.npz"), load_model(tmp_path / "b.npz")
    assert [n["op"] for n in a.nodes] == [n["op"] for n in b.nodes]
    assert [n.get("threshold") for n in a.nodes] == [n.get("threshold") for n in b.nodes]
    wa = [a.arrays[n["weight"]] for n in a.nodes if n.get("weight")]
    wb = [b.arrays[n["weight"]] for n in b.nodes if n.get("weight")]
    assert all(np.array_equal(u, v) for u, v in zip(wa, wb)) and len(wa) == len(wb)
    np.testing.assert_array_equal(ann_forward(a, xn), ann_forward(b, xn))


def test_authors_classes_through_from_torch(tmp_path):
    """The authors' own module layout (nn.Sequential stems, AdaptiveAvgPool2d + flatten, their QCFS
    with `up`/`t` and IF with `thresh`/`L`) exports without a key table."""
    from test_export import (AuthorsIF, AuthorsQCFS, AuthorsResNet4Cifar, AuthorsVGG16, make_fold_exact,
                             update_bn_stats)

    for net, size in ((AuthorsResNet4Cifar(1, 10, AuthorsQCFS), 28), (AuthorsVGG16(1, 10, 0.125, AuthorsIF), 32)):
        torch.manual_seed(0)
        xn = images(12, size)
        update_bn_stats(net, xn)
        make_fold_exact(net, seed=1)
        export_torch(net, torch.zeros(1, 1, size, size), tmp_path / "m.npz")
        got = ann_forward(load_model(tmp_path / "m.npz"), xn)
        ref = torch_logits(net, xn)
        assert np.abs(ref).max() > 0.1 and np.abs(ref - got).max() < 1e-4
