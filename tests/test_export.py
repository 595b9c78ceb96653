"""Export to srp-np/1: the NumPy ANN forward of the exported file equals the
PyTorch model in eval mode, for every architecture; checkpoints of the
authors' code (ANN2SNN_SRP / QCFS key names) are imported."""
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

from srp_np import datasets as ds  # noqa: E402
from srp_np.ann import ann_forward  # noqa: E402
from srp_np.errors import SrpError  # noqa: E402
from srp_np.model import load_model  # noqa: E402
from srp_np.train.export import export_checkpoint, export_model, fold_conv_bn  # noqa: E402
from srp_np.train.models import build_model, qcfs_modules  # noqa: E402
from srp_np.train.qcfs import QCFS  # noqa: E402

MEAN, STD = ds.dataset_stats("fashion-mnist")


def real_images(n, size):
    x, y = ds.load_shipped_test_set()
    idx = np.random.default_rng(0).choice(len(x), n, replace=False)
    xf = ds.to_float(ds.fit_to_shape(x[idx], (1, size, size))).astype(np.float64)
    return (xf - MEAN[0]) / STD[0], y[idx]


def update_bn_stats(model, xn, passes=3):
    model.train()
    with torch.no_grad():
        for i in range(passes):
            model(torch.from_numpy(xn[i::passes].astype(np.float32)))
    model.eval()


def make_fold_exact(model, seed=0, eps_zero=True):
    """Make BN folding exactly representable in float32 while keeping it
    non-trivial: running_var -> nearest power of 4 (eps = 0), gamma -> +-2^k,
    beta / running_mean / conv biases -> multiples of 2^-8; thresholds -> random
    multiples of 1/16 in [0.5, 2.5], linear weights x 8, so that many activations are non-zero and
    unclipped.  Then a float64 PyTorch forward and the NumPy forward of the
    float32 file compute the same function up to summation order, and no QCFS
    floor can flip on rounding noise."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                k = torch.round(torch.log2(m.running_var.clamp_min(1e-6)) / 2)
                m.running_var.copy_(4.0 ** k)
                if eps_zero:
                    m.eps = 0.0
                m.running_mean.copy_(torch.round(m.running_mean * 256) / 256)
                sign = torch.where(torch.rand(m.weight.shape, generator=g) < 0.9, 1.0, -1.0)
                m.weight.copy_(sign * 2.0 ** torch.randint(-1, 2, m.weight.shape, generator=g))
                m.bias.copy_(torch.round(torch.randn(m.bias.shape, generator=g) * 0.3 * 256) / 256)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.round(m.bias * 256) / 256)
            elif isinstance(m, nn.Linear):  # no BN after them: scale up (exactly) so signals survive
                m.weight.mul_(8.0)
            elif isinstance(m, QCFS) or hasattr(m, "up") or hasattr(m, "thresh"):
                p = m.up if hasattr(m, "up") else m.thresh
                p.fill_(float(torch.randint(8, 41, (1,), generator=g)) / 16)


def torch_logits(model, xn):
    model = model.double().eval()
    with torch.no_grad():
        out = model(torch.from_numpy(xn)).numpy()
    model.float()
    return out


CASES = [("resnet20", 0.5, 28), ("resnet18", 0.125, 28), ("resnet34", 0.0625, 28), ("vgg16", 0.125, 32)]


@pytest.mark.parametrize("arch,width,size", CASES)
def test_export_equivalence(tmp_path, arch, width, size):
    torch.manual_seed(0)
    xn, _ = real_images(24, size)
    model = build_model(arch, in_channels=1, num_classes=10, L=4, width=width, input_size=size)
    update_bn_stats(model, xn)
    make_fold_exact(model)
    out = tmp_path / f"{arch}.npz"
    export_model(model, out, arch=arch, dataset="fashion-mnist", L=4, width=width, ann_accuracy=0.5,
                 input_size=size)
    m = load_model(out)
    assert m.graph["arch"] == arch and m.graph["dataset"] == "fashion-mnist"
    assert m.graph["L"] == 4 and m.graph["width"] == width and m.graph["ann_accuracy"] == 0.5
    assert list(m.input_shape) == [1, size, size] and m.num_classes == 10
    assert m.graph["preprocess"] == {"mean": MEAN, "std": STD}
    assert all(np.asarray(a).dtype == np.float32 for a in m.arrays.values())
    ops = [n["op"] for n in m.nodes]
    n_act = len(qcfs_modules(model))
    assert ops.count("qcfs") == n_act
    if arch == "vgg16":
        assert ops.count("conv2d") == 13 and ops.count("avgpool2d") == 5 and ops.count("linear") == 3
        assert m.nodes[0]["name"] == "features.0.conv" and m.nodes[1]["name"] == "features.0.act"
    else:
        blocks = {"resnet20": 9, "resnet18": 8, "resnet34": 16}[arch]
        assert ops.count("add") == blocks and ops.count("linear") == 1
        assert ops.count("conv2d") == 1 + 2 * blocks + (2 if arch == "resnet20" else 3)
        assert "layer1.0.act2" in m.node_by_name and m.nodes[-1]["name"] == "fc"
    ref = torch_logits(model, xn)
    got = ann_forward(m, xn, dtype=np.float64)
    assert np.abs(ref).max() > 0.1, "degenerate test network"
    assert np.abs(ref - got).max() < 1e-4
    # the activations are not trivial: several quantisation levels occur
    _, acts = ann_forward(m, xn[:4], return_activations=True)
    levels = set()
    for name, (_, a) in acts.items():
        lam = m.node_by_name[name]["threshold"]
        levels |= set(np.unique(np.round(a / lam * 4)).tolist())
    assert levels == {0.0, 1.0, 2.0, 3.0, 4.0}


def test_bn_folding_realistic_float32():
    """Folding with unrounded, realistic BN statistics (float32 storage)."""
    torch.manual_seed(1)
    conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
    bn = nn.BatchNorm2d(8)
    x = torch.randn(16, 3, 10, 10) * 2 + 1
    bn.train()
    with torch.no_grad():
        for _ in range(5):
            bn(conv(x))
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-1, 1)
    bn.eval()
    w, b = fold_conv_bn(conv, bn)
    with torch.no_grad():
        ref = bn(conv(x)).double()
        got = nn.functional.conv2d(x.double(), torch.from_numpy(w.astype(np.float32)).double(),
                                   torch.from_numpy(b.astype(np.float32)).double(), padding=1)
    assert (ref - got).abs().max() < 1e-5 * max(1.0, float(ref.abs().max()))


def test_export_rejects_nonpositive_threshold(tmp_path):
    model = build_model("resnet20", 1, 10, 4, 0.25, 28)
    with torch.no_grad():
        model.layer1[0].act1.up.fill_(-1.0)
    with pytest.raises(SrpError, match="layer1.0.act1"):
        export_model(model, tmp_path / "m.npz", "resnet20", "fashion-mnist", 4, 0.25)
    assert not (tmp_path / "m.npz").exists()


# ----------------------------------------------------------------------------- authors' checkpoints
# Replicas of the module layout of hzc1208/ANN2SNN_SRP and putshua/SNN_conversion_QCFS
# (Models/ResNet.py, Models/VGG.py after their ReLU -> QCFS / MyFloor / IF replacement
# and max-pool -> avg-pool), to produce state_dicts with their key names.

class AuthorsQCFS(nn.Module):  # ANN2SNN_SRP modules.QCFS / QCFS repo MyFloor: parameter `up`
    def __init__(self, L=4, up=8.0):
        super().__init__()
        self.up = nn.Parameter(torch.tensor([up]))
        self.t = L

    def forward(self, x):
        x = x / self.up
        x = torch.floor(x * self.t + 0.5) / self.t
        return torch.clamp(x, 0, 1) * self.up


class AuthorsIF(nn.Module):  # QCFS repo's IF in ANN mode (T=0): parameter `thresh`
    def __init__(self, L=4, thresh=8.0):
        super().__init__()
        self.thresh = nn.Parameter(torch.tensor([thresh]))
        self.L = L

    def forward(self, x):
        x = x / self.thresh
        x = torch.clamp(torch.floor(x * self.L + 0.5) / self.L, 0, 1)
        return x * self.thresh


class AuthorsBasicBlock(nn.Module):
    def __init__(self, cin, cout, stride, act):
        super().__init__()
        self.residual_function = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout), act(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout))
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))
        self.relu = act()

    def forward(self, x):
        return self.relu(self.residual_function(x) + self.shortcut(x))


class AuthorsResNet4Cifar(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, act=AuthorsQCFS):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), act())
        cin, layers = 16, []
        for c, s in ((16, 1), (32, 2), (64, 2)):
            blocks = []
            for b in range(3):
                blocks.append(AuthorsBasicBlock(cin, c, s if b == 0 else 1, act))
                cin = c
            layers.append(nn.Sequential(*blocks))
        self.conv2_x, self.conv3_x, self.conv4_x = layers
        self.avg_pool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(64, num_classes)

    def forward(self, x):
        x = self.conv4_x(self.conv3_x(self.conv2_x(self.conv1(x))))
        return self.fc(self.avg_pool(x).flatten(1))


class AuthorsVGG16(nn.Module):
    def __init__(self, in_channels=1, num_classes=10, width=0.125, act=AuthorsIF):
        super().__init__()
        cfg = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
        cin = in_channels
        for k, stage in enumerate(cfg):
            mods = []
            for c in stage:
                c = int(c * width)
                mods += [nn.Conv2d(cin, c, 3, padding=1), nn.BatchNorm2d(c), act(), nn.Dropout(0.0)]
                cin = c
            mods.append(nn.AvgPool2d(2, 2))
            setattr(self, f"layer{k + 1}", nn.Sequential(*mods))
        h = int(4096 * width)
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(cin, h), act(), nn.Dropout(0.0),
                                        nn.Linear(h, h), act(), nn.Dropout(0.0), nn.Linear(h, num_classes))

    def forward(self, x):
        for k in range(5):
            x = getattr(self, f"layer{k + 1}")(x)
        return self.classifier(x)


@pytest.mark.parametrize("arch,factory,size,prefix", [
    ("resnet20", lambda: AuthorsResNet4Cifar(1, 10, AuthorsQCFS), 28, ""),
    ("vgg16", lambda: AuthorsVGG16(1, 10, 0.125, AuthorsIF), 32, "module."),
])
def test_import_authors_state_dict(tmp_path, arch, factory, size, prefix):
    torch.manual_seed(2)
    net = factory()
    xn, _ = real_images(16, size)
    update_bn_stats(net, xn)
    # BN's eps is not part of a state_dict: the exporter uses PyTorch's default
    # 1e-5 like the authors' models, so the fold is only float32-accurate here.
    make_fold_exact(net, seed=3, eps_zero=False)
    sd = {prefix + k: v for k, v in net.state_dict().items()}
    ck = tmp_path / "authors.pth"
    torch.save(sd, ck)
    out = tmp_path / "m.npz"
    graph = export_checkpoint(str(ck), arch, str(out), dataset="fashion-mnist", L=4)
    m = load_model(out)
    assert graph["arch"] == arch and list(m.input_shape) == [1, size, size]
    ref = torch_logits(net, xn)
    got = ann_forward(m, xn)
    assert np.abs(ref).max() > 0.1
    # A QCFS floor may flip on float32 rounding of the folded weights for a rare
    # unit; a wrong key mapping would change every image.
    per_image = np.abs(ref - got).max(axis=1)
    assert np.mean(per_image < 1e-4) >= 0.75, per_image
    assert np.median(per_image) < 1e-6
    # the thresholds came from `up` / `thresh`
    ths = sorted(n["threshold"] for n in m.nodes if n["op"] == "qcfs")
    mine = sorted(float((mod.up if hasattr(mod, "up") else mod.thresh).detach()) for mod in net.modules()
                  if isinstance(mod, (AuthorsQCFS, AuthorsIF)))
    assert ths == pytest.approx(mine)
    # a {"state_dict": ...} wrapper works too
    torch.save({"state_dict": sd, "epoch": 3}, tmp_path / "wrapped.pth")
    export_checkpoint(str(tmp_path / "wrapped.pth"), arch, str(tmp_path / "m2.npz"), dataset="fashion-mnist", L=4)


def test_authors_checkpoint_errors(tmp_path):
    net = AuthorsResNet4Cifar(1, 10)
    sd = net.state_dict()
    missing = dict(sd)
    del missing["conv3_x.0.shortcut.1.running_var"]
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(SrpError) as e:
        export_checkpoint(str(tmp_path / "missing.pth"), "resnet20", str(tmp_path / "o.npz"))
    msg = str(e.value)
    assert "missing key 'conv3_x.0.shortcut.1.running_var'" in msg and "\n" not in msg
    with pytest.raises(SrpError, match=r"key 'conv1\.0\.weight' has shape \[16, 1, 3, 3\]"):
        export_checkpoint(str(tmp_path / "missing.pth"), "resnet20", str(tmp_path / "o.npz"), in_channels=3)
    extra = dict(sd)
    extra["conv5_x.0.relu.up"] = torch.tensor([1.0])
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(SrpError, match="unexpected key 'conv5_x.0.relu.up'"):
        export_checkpoint(str(tmp_path / "extra.pth"), "resnet20", str(tmp_path / "o.npz"))
    torch.save(sd, tmp_path / "r20.pth")
    with pytest.raises(SrpError, match="missing key"):
        export_checkpoint(str(tmp_path / "r20.pth"), "resnet18", str(tmp_path / "o.npz"))
    assert not (tmp_path / "o.npz").exists()


class NotATensor:
    pass


def test_checkpoint_is_never_unpickled(tmp_path):
    torch.save({"model": NotATensor()}, tmp_path / "obj.pth")
    with pytest.raises(SrpError, match="weights-only"):
        export_checkpoint(str(tmp_path / "obj.pth"), "resnet20", str(tmp_path / "o.npz"))
    (tmp_path / "junk.pth").write_bytes(b"\x00junk")
    with pytest.raises(SrpError, match="cannot load"):
        export_checkpoint(str(tmp_path / "junk.pth"), "resnet20", str(tmp_path / "o.npz"))
    torch.save([1, 2, 3], tmp_path / "list.pth")
    with pytest.raises(SrpError, match="not a state_dict"):
        export_checkpoint(str(tmp_path / "list.pth"), "resnet20", str(tmp_path / "o.npz"))
    with pytest.raises(SrpError, match="no such file"):
        export_checkpoint(str(tmp_path / "nope.pth"), "resnet20", str(tmp_path / "o.npz"))


def test_export_cli(tmp_path):
    from click.testing import CliRunner

    from srp_np.cli.train_cmds import export_cmd

    net = AuthorsResNet4Cifar(1, 10)
    torch.save(net.state_dict(), tmp_path / "r20.pth")
    r = CliRunner().invoke(export_cmd, ["--checkpoint", str(tmp_path / "r20.pth"), "--arch", "resnet20",
                                        "--dataset", "fashion-mnist", "--L", "4", "--out", str(tmp_path / "m.npz")])
    assert r.exit_code == 0, r.output
    assert "wrote" in r.output
    g = load_model(tmp_path / "m.npz").graph
    assert g["dataset"] == "fashion-mnist" and g["L"] == 4
    json.dumps(g)
    r = CliRunner().invoke(export_cmd, ["--checkpoint", str(tmp_path / "r20.pth"), "--arch", "vgg16",
                                        "--out", str(tmp_path / "v.npz")])
    assert r.exit_code == 2
    lines = r.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing key" in lines[0]
    assert "Traceback" not in r.output and not (tmp_path / "v.npz").exists()


# ----------------------------------------------------------------------------- authors' preprocessing and L

# The constants of their data loaders, as written in hzc1208/ANN2SNN_SRP dataprocess.py (and
# putshua/SNN_conversion_QCFS Preprocess/getdataloader.py): transforms.Normalize(...) after ToTensor.
THEIR_NORMALIZE = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ([n / 255. for n in [129.3, 124.1, 112.4]], [n / 255. for n in [68.2, 65.4, 70.4]]),
    "imagenet": ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
}


@pytest.mark.parametrize("dataset", ["cifar10", "cifar100"])
def test_authors_preprocessing_and_L(tmp_path, dataset):
    torch.manual_seed(4)
    k = 10 if dataset == "cifar10" else 100
    net = AuthorsResNet4Cifar(3, k)
    torch.save(net.state_dict(), tmp_path / "a.pth")
    out = tmp_path / "m.npz"
    with pytest.raises(SrpError, match="does not store L.*pass --L") as e:
        export_checkpoint(str(tmp_path / "a.pth"), "resnet20", str(out), dataset=dataset)
    assert "\n" not in str(e.value) and not out.exists()
    export_checkpoint(str(tmp_path / "a.pth"), "resnet20", str(out), dataset=dataset, L=8)
    m = load_model(out)
    mean, std = THEIR_NORMALIZE[dataset]
    assert m.L == 8 and m.num_classes == k
    assert m.graph["preprocess"]["mean"] == pytest.approx(list(mean), abs=1e-12)
    assert m.graph["preprocess"]["std"] == pytest.approx(list(std), abs=1e-12)
    # the file's preprocessing applied to raw images gives what their pipeline feeds the network
    raw = np.random.default_rng(0).random((2, 3, 32, 32))
    theirs = (raw - np.array(mean)[:, None, None]) / np.array(std)[:, None, None]
    assert np.abs(m.preprocess(raw, np.float64) - theirs).max() < 1e-12
    # --mean/--std override
    export_checkpoint(str(tmp_path / "a.pth"), "resnet20", str(out), dataset=dataset, L=8,
                      mean=[0.5] * 3, std=[0.5] * 3)
    assert load_model(out).graph["preprocess"] == {"mean": [0.5] * 3, "std": [0.5] * 3}
    with pytest.raises(SrpError, match="3 value"):
        export_checkpoint(str(tmp_path / "a.pth"), "resnet20", str(out), dataset=dataset, L=8,
                          mean=[0.5], std=[0.5])


def test_srp_np_checkpoint_keeps_its_own_stats_and_L(tmp_path):
    """A checkpoint of `srp-np train` (with its config) was trained with srp-np's statistics and says L."""
    net = build_model("resnet20", 3, 10, L=2, width=0.25)
    config = {"arch": "resnet20", "dataset": "cifar10", "L": 2, "width": 0.25, "in_channels": 3,
              "num_classes": 10, "input_size": 32, "limit_batches": 1}
    torch.save({"model": net.state_dict(), "config": config, "history": []}, tmp_path / "c.pth")
    export_checkpoint(str(tmp_path / "c.pth"), "resnet20", str(tmp_path / "m.npz"))
    g = load_model(tmp_path / "m.npz").graph
    assert g["L"] == 2 and g["preprocess"]["std"] == list(ds.DATASET_STATS["cifar10"][1])


def test_export_cli_L_and_stats(tmp_path):
    from click.testing import CliRunner

    from srp_np.cli.main import cli

    torch.save(AuthorsResNet4Cifar(3, 10).state_dict(), tmp_path / "a.pth")
    base = ["export", "--checkpoint", str(tmp_path / "a.pth"), "--arch", "resnet20", "--dataset", "cifar10",
            "--out", str(tmp_path / "m.npz")]
    r = CliRunner().invoke(cli, base)
    lines = r.output.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and "--L" in lines[0] and "L=8" in lines[0], r.output
    r = CliRunner().invoke(cli, base + ["--L", "4"])
    assert r.exit_code == 0 and "std 0.2023,0.1994,0.201" in r.output, r.output
    r = CliRunner().invoke(cli, base + ["--L", "4", "--std", "0,1,1", "--mean", "0,0,0"])
    assert r.exit_code == 2 and "must be positive" in r.output
