"""Export QCFS networks to the srp-np/1 model format.

* :func:`model_to_graph` walks a model of :mod:`srp_np.train.models` and emits
  the graph with BatchNorm folded into the preceding conv (folding computed in
  float64, stored float32 by :func:`srp_np.model.save_model`).
* :func:`export_checkpoint` reads a checkpoint (``torch.load(...,
  weights_only=True)`` only: never arbitrary pickles) written by ``srp-np
  train`` or a state_dict saved by the authors' public code and exports it.

Key names of the authors' code (mapped onto ours by :func:`translate_key`):

* hzc1208/ANN2SNN_SRP and putshua/SNN_conversion_QCFS, ``Models/VGG.py``:
  ``layer{1..5}.{4j}`` conv, ``.{4j+1}`` BN, ``.{4j+2}`` activation (``QCFS`` /
  ``MyFloor`` with parameter ``up``; ``IF`` with ``thresh``), ``.{4j+3}``
  dropout; ``classifier.{1,4,7}`` linear, ``classifier.{2,5}`` activations.
* ``Models/ResNet.py``: ``conv1.{0,1,2}`` stem conv/BN/act;
  ``conv{2..5}_x.{b}.residual_function.{0,1,2,3,4}`` conv1/BN1/act1/conv2/BN2;
  ``.shortcut.{0,1}`` 1x1 conv/BN; ``.relu`` the activation after the add; ``fc``.
"""
from __future__ import annotations

import math
import os
import re
from typing import Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn

from srp_np import datasets as ds
from srp_np.errors import SrpError

from .models import VGG16, ResNet, build_model, ARCHS

FORMAT = "srp-np/1"


# ----------------------------------------------------------------------------- folding

def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def fold_conv_bn(conv: nn.Conv2d, bn: Optional[nn.BatchNorm2d]) -> Tuple[np.ndarray, Optional[np.ndarray]]:
    """(weight, bias) of conv followed by BN in eval mode, computed in float64."""
    w = _np64(conv.weight)
    b = _np64(conv.bias) if conv.bias is not None else None
    if bn is None:
        return w, b
    scale = _np64(bn.weight) / np.sqrt(_np64(bn.running_var) + float(bn.eps))
    shift = _np64(bn.bias) - _np64(bn.running_mean) * scale
    wf = w * scale[:, None, None, None]
    bf = shift + (b * scale if b is not None else 0.0)
    return wf, bf


def _threshold(act, name) -> float:
    th = float(act.up.detach().reshape(-1)[0])
    if not math.isfinite(th) or th <= 0:
        raise SrpError(f"activation {name!r} has a non-positive threshold (lambda = {th}); cannot export")
    return th


class _GraphBuilder:
    def __init__(self):
        self.nodes = []
        self.arrays: Dict[str, np.ndarray] = {}

    def conv(self, name, src, conv, bn):
        w, b = fold_conv_bn(conv, bn)
        self.arrays[f"{name}.weight"] = w
        if b is not None:
            self.arrays[f"{name}.bias"] = b
        self.nodes.append({"name": name, "op": "conv2d", "inputs": [src], "weight": f"{name}.weight",
                           "bias": f"{name}.bias" if b is not None else None,
                           "stride": int(conv.stride[0]), "padding": int(conv.padding[0])})
        return name

    def linear(self, name, src, lin):
        self.arrays[f"{name}.weight"] = _np64(lin.weight)
        if lin.bias is not None:
            self.arrays[f"{name}.bias"] = _np64(lin.bias)
        self.nodes.append({"name": name, "op": "linear", "inputs": [src], "weight": f"{name}.weight",
                           "bias": f"{name}.bias" if lin.bias is not None else None})
        return name

    def qcfs(self, name, src, act):
        self.nodes.append({"name": name, "op": "qcfs", "inputs": [src], "threshold": _threshold(act, name)})
        return name

    def add_op(self, name, srcs):
        self.nodes.append({"name": name, "op": "add", "inputs": list(srcs)})
        return name

    def pool(self, name, src, k, s):
        self.nodes.append({"name": name, "op": "avgpool2d", "inputs": [src], "kernel": int(k), "stride": int(s)})
        return name

    def flatten(self, name, src):
        self.nodes.append({"name": name, "op": "flatten", "inputs": [src]})
        return name


def _conv_out(size, conv):
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    return (size + 2 * p - k) // s + 1


def model_to_graph(model: nn.Module, input_shape, mean, std, metadata: Optional[dict] = None):
    """(graph, arrays) of a QCFS model (eval-mode semantics: BN folded, dropout dropped)."""
    C, H, W = (int(v) for v in input_shape)
    if H != W:
        raise SrpError(f"only square inputs are supported, got {H}x{W}")
    gb = _GraphBuilder()
    x = "input"
    size = H
    if isinstance(model, VGG16):
        for i, blk in enumerate(model.features):
            x = gb.conv(f"features.{i}.conv", x, blk.conv, blk.bn)
            x = gb.qcfs(f"features.{i}.act", x, blk.act)
            if i in model.stage_ends:
                x = gb.pool(f"pool{model.stage_ends.index(i) + 1}", x, 2, 2)
                size = (size - 2) // 2 + 1
        x = gb.flatten("flatten", x)
        x = gb.qcfs("act_fc1", gb.linear("fc1", x, model.fc1), model.act_fc1)
        x = gb.qcfs("act_fc2", gb.linear("fc2", x, model.fc2), model.act_fc2)
        x = gb.linear("fc3", x, model.fc3)
        num_classes = model.fc3.out_features
    elif isinstance(model, ResNet):
        x = gb.conv("conv1", x, model.conv1, model.bn1)
        size = _conv_out(size, model.conv1)
        x = gb.qcfs("act1", x, model.act1)
        for s in range(model.num_stages):
            for b, blk in enumerate(getattr(model, f"layer{s + 1}")):
                p = f"layer{s + 1}.{b}"
                inp = x
                y = gb.conv(f"{p}.conv1", inp, blk.conv1, blk.bn1)
                y = gb.qcfs(f"{p}.act1", y, blk.act1)
                y = gb.conv(f"{p}.conv2", y, blk.conv2, blk.bn2)
                if blk.has_shortcut:
                    sc = gb.conv(f"{p}.shortcut", inp, blk.shortcut.conv, blk.shortcut.bn)
                else:
                    sc = inp
                size = _conv_out(size, blk.conv1)
                y = gb.add_op(f"{p}.add", [y, sc])
                x = gb.qcfs(f"{p}.act2", y, blk.act2)
        x = gb.pool("avgpool", x, size, size)
        x = gb.flatten("flatten", x)
        x = gb.linear("fc", x, model.fc)
        num_classes = model.fc.out_features
    else:
        raise SrpError(f"cannot export a {type(model).__name__}: only srp_np.train.models networks")
    graph = {"format": FORMAT, "input_shape": [C, H, W], "num_classes": int(num_classes),
             "L": int(model.L), "preprocess": {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}}
    graph.update(metadata or {})
    graph["nodes"] = gb.nodes
    graph["output"] = x
    return graph, gb.arrays


def _model_input_shape(model):
    first = model.features[0].conv if isinstance(model, VGG16) else model.conv1
    return first.in_channels


def export_model(model: nn.Module, out, arch: str, dataset: Optional[str], L: int, width: float,
                 ann_accuracy: Optional[float] = None, input_size: Optional[int] = None,
                 extra: Optional[dict] = None, mean=None, std=None) -> dict:
    """Fold, validate and write ``out`` (atomically, through srp_np.model.save_model)."""
    from srp_np.model import save_model

    in_ch = _model_input_shape(model)
    if input_size is None:
        input_size = getattr(model, "input_size", None) or _default_input_size(arch, dataset)
    if mean is None or std is None:
        if dataset is not None:
            mean, std = ds.dataset_stats(dataset)
        else:
            mean, std = [0.0] * in_ch, [1.0] * in_ch
    if len(mean) != in_ch:
        raise SrpError(f"data set {dataset!r} has {len(mean)} channel(s), the model takes {in_ch}")
    meta = {"arch": arch, "dataset": dataset, "width": float(width)}
    if ann_accuracy is not None:
        meta["ann_accuracy"] = float(ann_accuracy)
    meta.update(extra or {})
    model.eval()
    graph, arrays = model_to_graph(model, (in_ch, input_size, input_size), mean, std, meta)
    if graph["L"] != int(L):
        raise SrpError(f"model has L={graph['L']}, asked to export with L={L}")
    save_model(out, graph, arrays)
    return graph


def _default_input_size(arch, dataset):
    if dataset == "imagenet":
        return 224
    if dataset == "fashion-mnist" and arch != "vgg16":
        return 28
    return 32


# ----------------------------------------------------------------------------- checkpoints

def _vgg_key_table():
    table = {}
    i = 0
    for k, stage in enumerate([2, 2, 3, 3, 3]):
        for j in range(stage):
            table[f"layer{k + 1}.{4 * j}"] = f"features.{i}.conv"
            table[f"layer{k + 1}.{4 * j + 1}"] = f"features.{i}.bn"
            table[f"layer{k + 1}.{4 * j + 2}"] = f"features.{i}.act"
            i += 1
    table.update({"classifier.1": "fc1", "classifier.2": "act_fc1", "classifier.4": "fc2",
                  "classifier.5": "act_fc2", "classifier.7": "fc3"})
    return table


_VGG_TABLE = _vgg_key_table()
_RES_STEM = {"conv1.0": "conv1", "conv1.1": "bn1", "conv1.2": "act1"}
_RES_BLOCK = {"residual_function.0": "conv1", "residual_function.1": "bn1", "residual_function.2": "act1",
              "residual_function.3": "conv2", "residual_function.4": "bn2",
              "shortcut.0": "shortcut.conv", "shortcut.1": "shortcut.bn", "relu": "act2"}
_RES_RE = re.compile(r"^conv(\d+)_x\.(\d+)\.(.+)\.([^.]+)$")


def translate_key(arch: str, key: str) -> str:
    """Map one state_dict key of the authors' code to ours (keys that are
    already ours, or unknown, come back unchanged).  Activation parameters
    ``up`` (QCFS / MyFloor) and ``thresh`` (QCFS repo's IF) both become ``up``."""
    mod, _, leaf = key.rpartition(".")
    if leaf == "thresh":
        leaf = "up"
    if arch == "vgg16":
        mod = _VGG_TABLE.get(mod, mod)
    else:
        if mod in _RES_STEM:
            mod = _RES_STEM[mod]
        else:
            m = _RES_RE.match(key)
            if m:
                stage, block, sub, _leaf = m.groups()
                if sub in _RES_BLOCK:
                    mod = f"layer{int(stage) - 1}.{block}.{_RES_BLOCK[sub]}"
    return f"{mod}.{leaf}" if mod else leaf


_VGG_INV = {v: k for k, v in _VGG_TABLE.items()}
_RES_STEM_INV = {v: k for k, v in _RES_STEM.items()}
_RES_BLOCK_INV = {v: k for k, v in _RES_BLOCK.items()}
_OURS_RES_RE = re.compile(r"^layer(\d+)\.(\d+)\.(.+)\.([^.]+)$")


def authors_key(arch: str, key: str) -> str:
    """Inverse of :func:`translate_key`: our key in the authors' naming (``up`` kept)."""
    mod, _, leaf = key.rpartition(".")
    if arch == "vgg16":
        return f"{_VGG_INV.get(mod, mod)}.{leaf}"
    if mod in _RES_STEM_INV:
        return f"{_RES_STEM_INV[mod]}.{leaf}"
    m = _OURS_RES_RE.match(key)
    if m and m.group(3) in _RES_BLOCK_INV:
        return f"conv{int(m.group(1)) + 1}_x.{m.group(2)}.{_RES_BLOCK_INV[m.group(3)]}.{leaf}"
    return key


def _unwrap_checkpoint(obj, path):
    """(state_dict, config or None, history) from whatever torch.load returned."""
    config, history = None, []
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict) and "config" in obj:
        config, history = obj["config"], obj.get("history", [])
        obj = obj["model"]
    elif isinstance(obj, dict):
        for k in ("state_dict", "model_state_dict", "model", "net"):
            if k in obj and isinstance(obj[k], dict):
                obj = obj[k]
                break
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SrpError(f"{path}: not a state_dict (a dict of tensors) nor an srp-np checkpoint")
    sd = {}
    for k, v in obj.items():
        k = k[len("module."):] if k.startswith("module.") else k
        sd[k] = v
    return sd, config, history


def load_state_dict_into(model: nn.Module, arch: str, sd: Dict[str, torch.Tensor], path="checkpoint"):
    """Load ``sd`` (our key names or the authors') into ``model``; a one-line
    SrpError names the first missing, unexpected or mismatched key."""
    translated, origin = {}, {}
    authors = any(translate_key(arch, k) != k for k in sd)
    for k, v in sd.items():
        if k.endswith("num_batches_tracked"):
            continue
        nk = translate_key(arch, k)
        translated[nk], origin[nk] = v, k
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    for k, v in target.items():
        if k not in translated:
            alias = authors_key(arch, k)
            named = f"{alias!r} (ours: {k!r})" if authors and alias != k else repr(k)
            raise SrpError(f"{path}: missing key {named} for {arch} (the first missing key; wrong --arch, "
                           f"or a network this exporter does not know)")
        got = translated[k]
        if k.endswith(".up"):
            got = got.reshape(-1)
            if got.numel() != 1:
                raise SrpError(f"{path}: key {origin[k]!r} should hold one threshold, has shape {list(sd[origin[k]].shape)}")
        if tuple(got.shape) != tuple(v.shape):
            raise SrpError(f"{path}: key {origin[k]!r} has shape {list(got.shape)}, {arch} expects {list(v.shape)} "
                           f"(check --arch/--width/--num-classes/--in-channels/--input-size)")
        translated[k] = got
    for k in translated:
        if k not in target:
            raise SrpError(f"{path}: unexpected key {origin[k]!r} for {arch} (wrong --arch?)")
    with torch.no_grad():
        model.load_state_dict({k: translated[k].to(target[k].dtype) for k in target}, strict=False)
    return model


def _infer(arch, sd):
    """(in_channels, num_classes, width, fc1_in) guessed from a translated state_dict."""
    t = {translate_key(arch, k): v for k, v in sd.items()}
    if arch == "vgg16":
        w = t.get("features.0.conv.weight")
        last = t.get("fc3.weight")
        base = 64
    else:
        w = t.get("conv1.weight")
        last = t.get("fc.weight")
        base = 16 if arch == "resnet20" else 64
    if w is None or last is None or w.ndim != 4 or last.ndim != 2:
        return None, None, None, None
    fc1 = t.get("fc1.weight")
    return int(w.shape[1]), int(last.shape[0]), w.shape[0] / base, (int(fc1.shape[1]) if fc1 is not None else None)


# Normalisation of the authors' data loaders (hzc1208/ANN2SNN_SRP dataprocess.py, and the same constants in
# putshua/SNN_conversion_QCFS Preprocess/getdataloader.py): transforms.Normalize(mean, std) after ToTensor.
# CIFAR-10's std is the widely copied (0.2023, 0.1994, 0.2010), not the data set's per-pixel std
# (0.2470, 0.2435, 0.2616) that srp-np's own training uses; CIFAR-100 is n/255 for their listed values.
# They have no Fashion-MNIST loader: srp-np's statistics are used there.
AUTHORS_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": (tuple(n / 255.0 for n in (129.3, 124.1, 112.4)), tuple(n / 255.0 for n in (68.2, 65.4, 70.4))),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}

# L of the paper's authors' released models is not in their state_dicts; these are what the paper uses.
PAPER_L_HINT = "the paper uses L=4 for CIFAR-10, L=8 for ResNet-20 on CIFAR-100 and L=16 for ImageNet"


def preprocessing_for(dataset: Optional[str], in_channels: int, authors: bool):
    """(mean, std) lists for images in [0, 1]: the authors' data-loading constants for a
    checkpoint of their code (``authors=True``), srp-np's own (:data:`srp_np.datasets.DATASET_STATS`)
    for one of ``srp-np train``; 0 and 1 (inputs used as given) without a data set."""
    if dataset is None:
        return [0.0] * in_channels, [1.0] * in_channels
    key = ds.normalize_name(dataset)
    if authors and key in AUTHORS_STATS:
        mean, std = AUTHORS_STATS[key]
        return [float(v) for v in mean], [float(v) for v in std]
    return ds.dataset_stats(key)


def load_checkpoint_object(path):
    """``torch.load(path, weights_only=True)`` (never arbitrary pickles) with one-line errors."""
    from srp_np.fileio import open_regular

    if not os.path.exists(path):
        raise SrpError(f"{path}: no such file")
    try:
        with open_regular(path, "checkpoint") as f:       # a FIFO or device is refused, never read
            return torch.load(f, map_location="cpu", weights_only=True)
    except SrpError:
        raise
    except FileNotFoundError:
        raise SrpError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise SrpError(f"{path}: is a directory") from None
    except Exception as e:  # noqa: BLE001 - unpickling errors come in many types
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SrpError(f"{path}: cannot load as a weights-only torch checkpoint ({first})") from None


def export_checkpoint(path, arch: str, out, dataset: Optional[str] = None, num_classes: Optional[int] = None,
                      in_channels: Optional[int] = None, input_size: Optional[int] = None,
                      L: Optional[int] = None, width: Optional[float] = None,
                      data_dir: Optional[str] = None, mean=None, std=None) -> dict:
    """Export a checkpoint of ``srp-np train`` or a state_dict of the authors' code.

    A checkpoint of ``srp-np train`` says everything (its config). A bare state_dict
    (the authors' code) stores neither L nor the preprocessing nor which activation
    was trained: ``L`` is then required, and the preprocessing defaults to the
    authors' data-loading constants for ``dataset`` (:data:`AUTHORS_STATS`; ``mean``
    and ``std`` override it). A state_dict cannot tell QCFS from a TCL clip (both
    store ``up``): exporting it with ``L`` states that it is QCFS; for anything
    else use ``srp-np export --module`` (the activation is then checked).
    """
    arch = arch.lower()
    if arch not in ARCHS:
        raise SrpError(f"unknown architecture {arch!r}; choose from {', '.join(ARCHS)}")
    if dataset is not None:
        dataset = ds.normalize_name(dataset)
    obj = load_checkpoint_object(path)
    sd, config, history = _unwrap_checkpoint(obj, path)
    config = config or {}
    if config.get("arch") and config["arch"] != arch:
        raise SrpError(f"{path}: checkpoint is a {config['arch']}, not a {arch}")
    dataset = dataset or config.get("dataset")
    g_in, g_cls, g_width, g_fc1 = _infer(arch, sd)
    in_channels = in_channels or config.get("in_channels") or g_in or (1 if dataset == "fashion-mnist" else 3)
    num_classes = num_classes or config.get("num_classes") or g_cls or ds.NUM_CLASSES.get(dataset, 10)
    if width is None:
        width = config.get("width") or (round(g_width, 4) if g_width else 1.0)
    if L is None:
        L = config.get("L")
    if (mean is None) != (std is None):
        raise SrpError("--mean and --std go together")
    if mean is None:
        mean, std = preprocessing_for(dataset, in_channels, authors=not config)
    if len(mean) != in_channels or len(std) != in_channels:
        raise SrpError(f"--mean/--std need {in_channels} value(s) (one per input channel), "
                       f"got {len(mean)} and {len(std)}")
    if input_size is None:
        input_size = config.get("input_size")
    if input_size is None and arch == "vgg16" and g_fc1 and g_width:
        c_last = max(1, int(round(512 * g_width)))
        spatial = g_fc1 // c_last
        r = int(round(math.sqrt(spatial)))
        input_size = 32 * r if r * r * c_last == g_fc1 else None
    if input_size is None:
        input_size = _default_input_size(arch, dataset)
    activation = config.get("activation", "qcfs")
    if activation == "relu" and not config.get("calibrated"):
        raise SrpError(f"{path}: a ReLU-source checkpoint saved before its thresholds were calibrated; "
                       "finish its training (srp-np train ... --resume), which calibrates and exports")
    try:
        model = build_model(arch, in_channels=in_channels, num_classes=num_classes, L=L or 4, width=width,
                            input_size=input_size, activation=activation)
    except ValueError as e:
        raise SrpError(str(e)) from None
    load_state_dict_into(model, arch, sd, path)
    if L is None:   # checked after the keys: a wrong --arch is the first thing to report
        raise SrpError(f"{path}: the checkpoint does not store L (a state_dict of the authors' code): pass --L "
                       f"({PAPER_L_HINT})")
    model.eval()
    acc, extra = None, {}
    if data_dir is not None or (dataset == "fashion-mnist" and config.get("limit_batches") is None and history):
        if data_dir is not None:
            if dataset is None:
                raise SrpError("--data-dir needs --dataset")
            from .accuracy import Normalizer, evaluate
            x, y = ds.load_dataset(dataset, "test", data_dir)
            x = ds.fit_to_shape(x, (in_channels, input_size, input_size))
            acc, count = evaluate(model, x, y, Normalizer(mean, std))
            extra["ann_accuracy_images"] = int(count)
        else:
            acc = float(history[-1]["test_acc"])
    if history:
        extra["epochs"] = int(history[-1]["epoch"])
    if config:
        extra["train"] = config
        extra["source_activation"] = activation
    return export_model(model, out, arch=arch, dataset=dataset, L=L, width=width, ann_accuracy=acc,
                        input_size=input_size, extra=extra, mean=mean, std=std)
