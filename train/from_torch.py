"""Export any traceable QCFS network to the srp-np/1 format (torch.fx).

:func:`from_torch` traces a module with :mod:`torch.fx` (QCFS activations are
kept as leaves), propagates the shapes of ``example_input`` through it and maps
every traced operation onto an srp-np/1 node:

======================================== =====================================
PyTorch                                   srp-np/1
======================================== =====================================
``nn.Conv2d`` (groups 1, dilation 1,      ``conv2d``
zero padding, square stride/padding)
``nn.BatchNorm2d`` / ``nn.BatchNorm1d``   folded into the preceding conv/linear
                                          (eval mode, float64):
                                          ``W' = W·γ/√(σ²+ε)``,
                                          ``b' = (b − μ)·γ/√(σ²+ε) + β``
``nn.Linear``                             ``linear``
``nn.AvgPool2d``, ``F.avg_pool2d``        ``avgpool2d`` (no padding, no ceil mode)
``nn.AdaptiveAvgPool2d``, ``mean(2,3)``   ``avgpool2d`` with kernel = stride = H/out
``nn.Flatten``, ``torch.flatten(x, 1)``,  ``flatten`` (C order), dropped when the
``x.view(n, -1)``, ``x.reshape(n, -1)``   input is already flat
``nn.Dropout*``, ``nn.Identity``          dropped (eval semantics)
``a + b`` (any number of terms)           ``add``
QCFS activation                           ``qcfs`` with ``threshold`` = λ (Eq. 7)
``nn.MaxPool2d``                          refused, or ``avgpool2d`` with
                                          ``maxpool="avg"``
======================================== =====================================

A QCFS activation is any module with a single-element parameter ``up`` (this
package's :class:`~srp_np.train.qcfs.QCFS`, the authors' ``QCFS`` / ``MyFloor``)
or ``thresh`` (the QCFS repository's ``IF`` in ANN mode), whose forward pass is
checked numerically to be ``λ·clip(⌊L·y/λ + 1/2⌋/L, 0, 1)`` (Eq. 7) before it is
accepted: a TCL clip (also a parameter ``up``) or any other activation is refused.
L is read from the module's ``L`` or ``t`` attribute.

Everything else (ReLU, concatenation, max pooling, multiplication, ...) is
refused with a one-line :class:`~srp_np.errors.SrpError` naming the operation.
"""
from __future__ import annotations

import math
import operator
import re
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import fx, nn

from srp_np.errors import SrpError

from .qcfs import QCFS

FORMAT = "srp-np/1"

MAXPOOL_MESSAGE = ("max pooling cannot be converted: an IF neuron's spikes cannot be max-pooled exactly. "
                   "srp-np (like the paper's conversion) uses average pooling; retrain with nn.AvgPool2d, "
                   "or export with maxpool='avg' (CLI: --replace-maxpool) to replace it by an average pool "
                   "of the same window, which changes the network")

_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity)


# ----------------------------------------------------------------------------- activations

def qcfs_parameter(mod: nn.Module) -> Optional[torch.Tensor]:
    """The threshold parameter of a QCFS-like module (``up`` or ``thresh``), or None."""
    for attr in ("up", "thresh"):
        # read the registry directly: during fx tracing, getattr on a module returns a proxy
        p = mod._parameters.get(attr)
        if p is None:
            p = mod._buffers.get(attr)
        if isinstance(p, torch.Tensor) and p.numel() == 1:
            return p
    return None


def _module_L(mod: nn.Module) -> Optional[int]:
    for attr in ("L", "t"):
        v = getattr(mod, attr, None)
        if isinstance(v, (int, np.integer)) and not isinstance(v, bool) and int(v) >= 1:
            return int(v)
        if isinstance(v, float) and v.is_integer() and v >= 1:
            return int(v)
    return None


def qcfs_reference(y: np.ndarray, lam: float, L: int) -> np.ndarray:
    """Eq. 7: ``λ·clip(⌊L·y/λ + 1/2⌋/L, 0, 1)`` in float64."""
    return lam * np.clip(np.floor(L * y / lam + 0.5) / L, 0.0, 1.0)


def check_qcfs_module(mod: nn.Module, name: str, L: Optional[int]) -> tuple:
    """(λ, L) of a QCFS activation after checking its forward pass against Eq. 7.

    The probe is a grid of inputs from −λ to 2λ between the quantisation steps
    (never on a rounding boundary), in float64.

    Raises
    ------
    SrpError
        When the module has no single-element ``up``/``thresh``, no L can be
        found, or its output is not QCFS (e.g. TCL, ReLU, a clip without floor).
    """
    p = qcfs_parameter(mod)
    kind = type(mod).__name__
    if p is None:
        raise SrpError(f"activation {name!r} ({kind}) is not a QCFS activation (no one-element parameter "
                       f"'up' or 'thresh'): only QCFS activations convert to IF neurons")
    lam = float(p.detach().reshape(-1)[0])
    if not math.isfinite(lam) or lam <= 0:
        raise SrpError(f"activation {name!r} has a non-positive threshold (lambda = {lam}); cannot export")
    mL = _module_L(mod)
    if mL is None and L is None:
        raise SrpError(f"activation {name!r} ({kind}) does not say its L (no attribute 'L' or 't'): pass L "
                       f"(CLI: --L)")
    if mL is not None and L is not None and mL != L:
        raise SrpError(f"activation {name!r} has L={mL}, asked to export with L={L}")
    Lx = mL if mL is not None else int(L)
    # probe points strictly inside the quantisation steps: y/λ = (j + 0.25)/(2L) for j in [-2L, 4L)
    j = np.arange(-2 * Lx, 4 * Lx, dtype=np.float64)
    y = lam * (j + 0.25) / (2 * Lx)
    want = qcfs_reference(y, lam, Lx)
    was_training = mod.training
    try:
        mod.eval()
        with torch.no_grad():
            dev = p.device
            got = mod(torch.from_numpy(y).to(device=dev, dtype=p.dtype).reshape(1, -1, 1, 1))
        got = got.detach().cpu().to(torch.float64).numpy().reshape(-1)
    except Exception as e:  # noqa: BLE001 - arbitrary user modules
        raise SrpError(f"activation {name!r} ({kind}) could not be probed ({type(e).__name__}: "
                       f"{(str(e).splitlines() or [''])[0]})") from None
    finally:
        mod.train(was_training)
    tol = 1e-5 * lam if p.dtype != torch.float64 else 1e-12 * lam
    if got.shape != want.shape or not np.all(np.abs(got - want) <= tol):
        raise SrpError(f"activation {name!r} ({kind}) is not QCFS with L={Lx} (Eq. 7): its output differs "
                       f"(TCL, a plain clip or ReLU do not convert with srp-np's IF neuron)")
    return lam, Lx


def _is_qcfs_like(mod: nn.Module) -> bool:
    return isinstance(mod, QCFS) or (qcfs_parameter(mod) is not None and not isinstance(mod, (nn.Conv2d, nn.Linear)))


class _Tracer(fx.Tracer):
    def is_leaf_module(self, m, qualname):
        if _is_qcfs_like(m):
            return True
        return super().is_leaf_module(m, qualname)


# ----------------------------------------------------------------------------- helpers

def _np64(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy()


def _square(v, what: str, name: str) -> int:
    if isinstance(v, (tuple, list)):
        if len(v) == 0 or any(int(a) != int(v[0]) for a in v):
            raise SrpError(f"{name}: {what} {tuple(v)} is not square; srp-np supports square {what}s only")
        v = v[0]
    return int(v)


_NAME_RE = re.compile(r"[^0-9A-Za-z_.\-]")


def _clean(name: str) -> str:
    return _NAME_RE.sub("_", name) or "node"


class _Value:
    """What a traced fx node stands for: an srp-np node name (or 'input'), its
    per-sample shape, and whether it is the output of a conv/linear that a BN may fold into."""

    def __init__(self, ref: str, shape: tuple, foldable: Optional[dict] = None):
        self.ref = ref
        self.shape = tuple(int(s) for s in shape)
        self.foldable = foldable


class _Builder:
    def __init__(self, maxpool: str, L: Optional[int]):
        self.nodes: List[dict] = []
        self.arrays: Dict[str, np.ndarray] = {}
        self.names = {"input"}
        self.maxpool = maxpool
        self.L = L
        self.Ls = {}

    def unique(self, name: str) -> str:
        base = _clean(name)
        n, i = base, 1
        while n in self.names:
            i += 1
            n = f"{base}_{i}"
        self.names.add(n)
        return n

    def add(self, node: dict, shape, foldable=None) -> _Value:
        self.nodes.append(node)
        return _Value(node["name"], shape, foldable)

    # -- ops
    def conv(self, name, src: _Value, w, b, stride, padding, shape):
        n = self.unique(name)
        self.arrays[f"{n}.weight"] = w
        if b is not None:
            self.arrays[f"{n}.bias"] = b
        node = {"name": n, "op": "conv2d", "inputs": [src.ref], "weight": f"{n}.weight",
                "bias": f"{n}.bias" if b is not None else None, "stride": int(stride), "padding": int(padding)}
        return self.add(node, shape, foldable=node)

    def linear(self, name, src: _Value, w, b, shape):
        n = self.unique(name)
        self.arrays[f"{n}.weight"] = w
        if b is not None:
            self.arrays[f"{n}.bias"] = b
        node = {"name": n, "op": "linear", "inputs": [src.ref], "weight": f"{n}.weight",
                "bias": f"{n}.bias" if b is not None else None}
        return self.add(node, shape, foldable=node)

    def fold_bn(self, name, src: _Value, bn, users: int):
        if src.foldable is None or users != 1:
            raise SrpError(f"{name}: a BatchNorm must directly follow a conv or linear layer whose output "
                           f"nothing else uses (it is folded into that layer's weights); this one does not")
        node = src.foldable
        w = self.arrays[node["weight"]]
        b = self.arrays.get(node["bias"]) if node["bias"] else None
        if bn.running_mean is None or bn.running_var is None:
            raise SrpError(f"{name}: BatchNorm without running statistics cannot be folded")
        c = w.shape[0]
        if bn.num_features != c:
            raise SrpError(f"{name}: BatchNorm over {bn.num_features} features follows a layer with {c} outputs")
        gamma = _np64(bn.weight) if bn.weight is not None else np.ones(c)
        beta = _np64(bn.bias) if bn.bias is not None else np.zeros(c)
        scale = gamma / np.sqrt(_np64(bn.running_var) + float(bn.eps))
        shift = beta - _np64(bn.running_mean) * scale
        self.arrays[node["weight"]] = w * scale.reshape((c,) + (1,) * (w.ndim - 1))
        bf = shift + (b * scale if b is not None else 0.0)
        key = f"{node['name']}.bias"
        self.arrays[key] = bf
        node["bias"] = key
        return _Value(src.ref, src.shape, None)

    def pool(self, name, src: _Value, k, s, shape):
        n = self.unique(name)
        return self.add({"name": n, "op": "avgpool2d", "inputs": [src.ref], "kernel": int(k), "stride": int(s)},
                        shape)

    def flatten(self, name, src: _Value):
        if len(src.shape) == 1:
            return src
        n = self.unique(name)
        return self.add({"name": n, "op": "flatten", "inputs": [src.ref]}, (int(np.prod(src.shape)),))

    def add_op(self, name, srcs: Sequence[_Value]):
        shapes = {v.shape for v in srcs}
        if len(shapes) != 1:
            raise SrpError(f"{name}: adds tensors of different shapes {sorted(shapes)} (no broadcasting in srp-np)")
        n = self.unique(name)
        return self.add({"name": n, "op": "add", "inputs": [v.ref for v in srcs]}, srcs[0].shape)

    def qcfs(self, name, src: _Value, mod):
        lam, L = check_qcfs_module(mod, name, self.L)
        self.Ls[name] = L
        n = self.unique(name)
        return self.add({"name": n, "op": "qcfs", "inputs": [src.ref], "threshold": lam}, src.shape)


# ----------------------------------------------------------------------------- the walk

def _shape_of(node: fx.Node) -> Optional[tuple]:
    tm = node.meta.get("tensor_meta")
    if tm is None or not hasattr(tm, "shape"):
        return None
    return tuple(int(s) for s in tm.shape)


def _describe(node: fx.Node, modules) -> str:
    if node.op == "call_module":
        return f"{node.target} ({type(modules[node.target]).__name__})"
    if node.op == "call_function":
        return f"{node.name} ({getattr(node.target, '__name__', str(node.target))})"
    return f"{node.name} ({node.op} {node.target})"


def _arg(node, i, key, default=None):
    if len(node.args) > i:
        return node.args[i]
    return node.kwargs.get(key, default)


def _adaptive(name, src: _Value, out_size):
    C, H, W = src.shape
    if isinstance(out_size, (tuple, list)):
        oh, ow = out_size
    else:
        oh = ow = out_size
    oh = H if oh is None else int(oh)
    ow = W if ow is None else int(ow)
    if H != W or oh != ow or H % oh:
        raise SrpError(f"{name}: adaptive average pooling from {H}x{W} to {oh}x{ow} is not a fixed square "
                       f"window; srp-np needs H = W divisible by the output size")
    k = H // oh
    return k, k, (C, oh, oh)


def from_torch(module: nn.Module, example_input: torch.Tensor, *, L: Optional[int] = None,
               mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
               maxpool: str = "refuse", metadata: Optional[dict] = None):
    """Translate a traceable QCFS network into an srp-np/1 graph.

    The network is taken in eval mode (BatchNorm uses its running statistics
    and is folded; dropout is dropped), so the exported ANN computes
    ``module.eval()(x)`` for inputs normalised as ``(x_raw − mean)/std``; its
    QCFS activations (Eq. 7, ``a = λ·clip(⌊L·y/λ + 1/2⌋/L, 0, 1)``) become IF
    neurons with θ = λ in the SNN (Eqs. 2-3).

    Parameters
    ----------
    module : nn.Module
        The network. It is traced with :mod:`torch.fx`, so its ``forward`` must
        not branch on tensor values.
    example_input : Tensor
        One batch ``N×C×H×W`` (N ≥ 1) with the input size the model file will
        declare; only its shape matters.
    L : int, optional
        QCFS quantisation steps; required when the activations do not say it.
    mean, std : sequence of float, optional
        Preprocessing stored in the file (default 0 and 1 per channel: the
        inputs are used as given).
    maxpool : {"refuse", "avg"}
        ``"avg"`` replaces every max pool by an average pool of the same
        window (a different network); the default refuses it.
    metadata : dict, optional
        Extra graph fields (``arch``, ``dataset``, ...).

    Returns
    -------
    graph : dict
        The srp-np/1 graph (JSON-ready).
    arrays : dict of str to ndarray
        Folded parameters in float64 (:func:`srp_np.model.save_model` stores them as float32).

    Raises
    ------
    SrpError
        With one line naming the first operation that cannot be exported.
    """
    if maxpool not in ("refuse", "avg"):
        raise SrpError(f"maxpool must be 'refuse' or 'avg', got {maxpool!r}")
    if not isinstance(example_input, torch.Tensor) or example_input.ndim != 4:
        raise SrpError("example_input must be one N×C×H×W tensor")
    p = next(iter(module.parameters()), None)
    if p is not None:                       # trace where the module lives (CPU or GPU)
        example_input = example_input.to(device=p.device, dtype=p.dtype)
    was_training = module.training
    module.eval()
    try:
        try:
            graph_module = fx.GraphModule(module, _Tracer().trace(module))
        except Exception as e:  # noqa: BLE001 - fx raises many types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SrpError(f"cannot trace {type(module).__name__} with torch.fx ({type(e).__name__}: "
                           f"{first[:200]}); its forward must not branch on tensor values") from None
        from torch.fx.passes.shape_prop import ShapeProp

        try:
            with torch.no_grad():
                ShapeProp(graph_module).propagate(example_input)
        except Exception as e:  # noqa: BLE001
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise SrpError(f"{type(module).__name__} does not run on an input of shape "
                           f"{list(example_input.shape)} ({type(e).__name__}: {first[:200]})") from None
        graph, arrays = _walk(graph_module, example_input, L, maxpool)
    finally:
        module.train(was_training)
    C = graph["input_shape"][0]
    mean = [0.0] * C if mean is None else [float(v) for v in mean]
    std = [1.0] * C if std is None else [float(v) for v in std]
    if len(mean) != C or len(std) != C:
        raise SrpError(f"mean/std need {C} value(s) (one per input channel), got {len(mean)} and {len(std)}")
    graph["preprocess"] = {"mean": mean, "std": std}
    for k, v in (metadata or {}).items():
        if k not in ("nodes", "output", "input_shape", "num_classes", "L", "preprocess", "format"):
            graph[k] = v
    return graph, arrays


def _walk(gm: fx.GraphModule, example_input, L, maxpool):
    modules = dict(gm.named_modules())
    b = _Builder(maxpool, L)
    vals: Dict[fx.Node, object] = {}
    input_shape = None
    output = None

    def val(a, where):
        if isinstance(a, fx.Node):
            v = vals.get(a)
            if isinstance(v, _Value):
                return v
            raise SrpError(f"{where}: its input {a.name} is not a tensor srp-np can represent")
        raise SrpError(f"{where}: expects a tensor input, got a constant {a!r}")

    for node in gm.graph.nodes:
        where = _describe(node, modules)
        shape = _shape_of(node)
        per = shape[1:] if shape else None
        if node.op == "placeholder":
            if input_shape is not None:
                raise SrpError(f"the network takes more than one input ({node.name}); srp-np has one input")
            if shape is None or len(shape) != 4:
                raise SrpError("the network input must be N×C×H×W")
            input_shape = list(shape[1:])
            if input_shape[1] != input_shape[2]:
                raise SrpError(f"only square inputs are supported, got {input_shape[1]}x{input_shape[2]}")
            vals[node] = _Value("input", shape[1:])
            continue
        if node.op == "get_attr":
            raise SrpError(f"{where}: uses a stored tensor directly; only modules and additions are exported")
        if node.op == "output":
            out = node.args[0]
            if not isinstance(out, fx.Node):
                raise SrpError("the network must return one tensor (the logits)")
            output = val(out, "output")
            continue
        if node.op == "call_module":
            mod = modules[node.target]
            name = str(node.target)
            if _is_qcfs_like(mod):
                vals[node] = b.qcfs(name, val(node.args[0], where), mod)
            elif isinstance(mod, _DROPPED):
                vals[node] = val(node.args[0], where)
            elif isinstance(mod, nn.Conv2d):
                src = val(node.args[0], where)
                vals[node] = _conv(b, name, src, mod, per)
            elif isinstance(mod, nn.Linear):
                src = val(node.args[0], where)
                if len(src.shape) != 1:
                    raise SrpError(f"{where}: a linear layer on a {len(src.shape) + 1}-d tensor; flatten first")
                vals[node] = b.linear(name, src, _np64(mod.weight),
                                      _np64(mod.bias) if mod.bias is not None else None, per)
            elif isinstance(mod, (nn.BatchNorm2d, nn.BatchNorm1d)):
                vals[node] = b.fold_bn(name, val(node.args[0], where), mod, len(node.args[0].users))
            elif isinstance(mod, nn.AvgPool2d):
                vals[node] = _avgpool(b, name, val(node.args[0], where), mod.kernel_size, mod.stride, mod.padding,
                                      mod.ceil_mode, per)
            elif isinstance(mod, nn.AdaptiveAvgPool2d):
                src = val(node.args[0], where)
                k, s, sh = _adaptive(where, src, mod.output_size)
                vals[node] = b.pool(name, src, k, s, sh)
            elif isinstance(mod, nn.MaxPool2d):
                if maxpool != "avg":
                    raise SrpError(f"{where}: {MAXPOOL_MESSAGE}")
                if mod.dilation not in (1, (1, 1)):
                    raise SrpError(f"{where}: dilated max pooling cannot be replaced")
                vals[node] = _avgpool(b, name, val(node.args[0], where), mod.kernel_size, mod.stride, mod.padding,
                                      mod.ceil_mode, per)
            elif isinstance(mod, nn.Flatten):
                src = val(node.args[0], where)
                if mod.start_dim != 1 or mod.end_dim != -1:
                    raise SrpError(f"{where}: only flattening every dimension but the batch is supported")
                vals[node] = b.flatten(name, src)
            elif isinstance(mod, (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh,
                                  nn.Hardtanh)):
                raise SrpError(f"{where}: a {type(mod).__name__} does not convert to an IF neuron; "
                               f"train with QCFS activations (srp_np.train.qcfs.QCFS)")
            else:
                raise SrpError(f"{where}: module type {type(mod).__name__} is not supported (supported: Conv2d, "
                               f"BatchNorm2d, Linear, AvgPool2d, AdaptiveAvgPool2d, Flatten, Dropout, QCFS, "
                               f"residual additions)")
            continue
        # call_function / call_method
        tgt = node.target
        fname = tgt if isinstance(tgt, str) else getattr(tgt, "__name__", str(tgt))
        name = node.name
        if node.op == "call_method" and fname == "size" or node.op == "call_function" and tgt is getattr:
            vals[node] = ("meta", None)          # shape queries feed view/reshape only
            continue
        if tgt in (operator.add, operator.iadd, torch.add) or (node.op == "call_method" and fname in ("add", "add_")):
            if "alpha" in node.kwargs and node.kwargs["alpha"] != 1:
                raise SrpError(f"{where}: torch.add with alpha != 1 is not supported")
            vals[node] = b.add_op(name, [val(a, where) for a in node.args[:2]])
            continue
        if tgt in (torch.flatten,) or (node.op == "call_method" and fname == "flatten"):
            src = val(node.args[0], where)
            start = _arg(node, 1, "start_dim", 0)
            end = _arg(node, 2, "end_dim", -1)
            if start != 1 or end != -1:
                raise SrpError(f"{where}: only flatten(x, 1) (every dimension but the batch) is supported")
            vals[node] = b.flatten(name, src)
            continue
        if node.op == "call_method" and fname in ("view", "reshape") or tgt is torch.reshape:
            src = val(node.args[0], where)
            if per is not None and len(per) == 1 and per[0] == int(np.prod(src.shape)):
                vals[node] = b.flatten(name, src)
                continue
            if per is not None and tuple(per) == src.shape:
                vals[node] = src
                continue
            raise SrpError(f"{where}: a reshape to {list(per) if per else '?'} is not a flatten; not supported")
        if node.op == "call_method" and fname in ("contiguous", "clone", "detach"):
            vals[node] = val(node.args[0], where)
            continue
        if tgt in (F.dropout, F.dropout1d, F.dropout2d, F.alpha_dropout):
            vals[node] = val(node.args[0], where)
            continue
        if tgt is F.avg_pool2d:
            src = val(node.args[0], where)
            k = _arg(node, 1, "kernel_size")
            s = _arg(node, 2, "stride", None)
            p = _arg(node, 3, "padding", 0)
            ceil = _arg(node, 4, "ceil_mode", False)
            vals[node] = _avgpool(b, name, src, k, s if s not in (None, []) else k, p, ceil, per)
            continue
        if tgt is F.adaptive_avg_pool2d:
            src = val(node.args[0], where)
            k, s, sh = _adaptive(where, src, _arg(node, 1, "output_size"))
            vals[node] = b.pool(name, src, k, s, sh)
            continue
        if tgt in (F.max_pool2d, torch.max_pool2d) or fname in ("max_pool2d", "max_pool2d_with_indices"):
            if maxpool != "avg":
                raise SrpError(f"{where}: {MAXPOOL_MESSAGE}")
            src = val(node.args[0], where)
            k = _arg(node, 1, "kernel_size")
            s = _arg(node, 2, "stride", None)
            vals[node] = _avgpool(b, name, src, k, s if s not in (None, []) else k, _arg(node, 3, "padding", 0),
                                  _arg(node, 5, "ceil_mode", False), per)
            continue
        if tgt is torch.mean or (node.op == "call_method" and fname == "mean"):
            src = val(node.args[0], where)
            dims = _arg(node, 1, "dim")
            keep = _arg(node, 2, "keepdim", False)
            dims = tuple(sorted(int(d) % 4 for d in (dims if isinstance(dims, (tuple, list)) else [dims])))
            if dims != (2, 3) or len(src.shape) != 3:
                raise SrpError(f"{where}: only a mean over the two spatial dimensions (global average pool) "
                               f"is supported")
            C, H, W = src.shape
            if H != W:
                raise SrpError(f"{where}: global average pool of a non-square {H}x{W} map")
            v = b.pool(name, src, H, H, (C, 1, 1))
            vals[node] = v if keep else b.flatten(name + "_flat", v)
            continue
        if tgt in (F.relu, torch.relu) or fname in ("relu", "relu_"):
            raise SrpError(f"{where}: ReLU does not convert to an IF neuron; train with QCFS activations")
        raise SrpError(f"{where}: operation not supported (supported: conv, BN, linear, average pooling, "
                       f"flatten, dropout, additions, QCFS)")
    if input_shape is None or output is None:
        raise SrpError("the traced network has no input or no output")
    if output.ref == "input":
        raise SrpError("the network returns its input unchanged")
    if len(output.shape) != 1:
        raise SrpError(f"the network's output has per-sample shape {list(output.shape)}: it must be a vector "
                       f"of logits")
    Ls = set(b.Ls.values())
    if len(Ls) > 1:
        raise SrpError(f"the activations use different L ({sorted(Ls)}); srp-np models have one L")
    if not Ls:
        raise SrpError("the network has no QCFS activation: nothing to convert to IF neurons")
    graph = {"format": FORMAT, "input_shape": input_shape, "num_classes": int(output.shape[0]),
             "L": int(Ls.pop()), "nodes": b.nodes, "output": output.ref}
    _prune(graph, b.arrays)
    return graph, b.arrays


def _prune(graph, arrays):
    """Drop nodes the output does not depend on (e.g. an unused branch) and their arrays."""
    needed = {graph["output"]}
    for n in reversed(graph["nodes"]):
        if n["name"] in needed:
            needed.update(n["inputs"])
    graph["nodes"] = [n for n in graph["nodes"] if n["name"] in needed]
    keep = set()
    for n in graph["nodes"]:
        for k in ("weight", "bias"):
            if n.get(k):
                keep.add(n[k])
    for k in list(arrays):
        if k not in keep:
            del arrays[k]


def _conv(b: _Builder, name, src: _Value, mod: nn.Conv2d, per):
    if mod.groups != 1:
        raise SrpError(f"{name}: grouped/depthwise convolutions (groups={mod.groups}) are not supported")
    if _square(mod.dilation, "dilation", name) != 1:
        raise SrpError(f"{name}: dilated convolutions are not supported")
    if mod.padding_mode != "zeros":
        raise SrpError(f"{name}: padding mode {mod.padding_mode!r} is not supported (zero padding only)")
    if len(src.shape) != 3:
        raise SrpError(f"{name}: a conv on a flat input")
    stride = _square(mod.stride, "stride", name)
    pad = mod.padding
    if isinstance(pad, str):
        if pad == "valid":
            pad = 0
        else:  # 'same' with stride 1: odd square kernels only
            k = _square(mod.kernel_size, "kernel", name)
            if k % 2 == 0:
                raise SrpError(f"{name}: padding='same' with an even kernel is asymmetric; not supported")
            pad = k // 2
    pad = _square(pad, "padding", name)
    return b.conv(name, src, _np64(mod.weight), _np64(mod.bias) if mod.bias is not None else None, stride, pad,
                  per)


def _avgpool(b: _Builder, name, src: _Value, k, s, p, ceil, per):
    k = _square(k, "kernel", name)
    s = _square(s if s is not None else k, "stride", name)
    if _square(p, "padding", name) != 0:
        raise SrpError(f"{name}: padded pooling is not supported (srp-np's avgpool2d has no padding)")
    if len(src.shape) != 3:
        raise SrpError(f"{name}: pooling a flat input")
    C, H, W = src.shape
    sh = (C, (H - k) // s + 1, (W - k) // s + 1)
    if ceil and per is not None and tuple(per) != sh:
        raise SrpError(f"{name}: ceil_mode pooling with a partial window is not supported")
    return b.pool(name, src, k, s, sh)


def export_torch(module: nn.Module, example_input: torch.Tensor, out, **kw) -> dict:
    """:func:`from_torch`, then validate and write ``out`` atomically (float32). Returns the graph."""
    from srp_np.model import save_model

    graph, arrays = from_torch(module, example_input, **kw)
    save_model(out, graph, arrays)
    return graph


# ----------------------------------------------------------------------------- srp-np export --module

def load_factory(spec: str):
    """The callable named by ``pkg.mod:factory`` or ``path/to/file.py:factory``."""
    import importlib
    import importlib.util
    import os
    import sys

    mod_name, sep, attr = spec.rpartition(":")
    if not sep or not mod_name or not attr:
        raise SrpError(f"--module {spec!r}: expected 'package.module:factory' or 'file.py:factory'")
    try:
        if mod_name.endswith(".py") or os.sep in mod_name:
            if not os.path.isfile(mod_name):
                raise SrpError(f"--module: {mod_name}: no such file")
            name = "_srp_np_user_" + re.sub(r"\W", "_", os.path.basename(mod_name)[:-3])
            s = importlib.util.spec_from_file_location(name, mod_name)
            m = importlib.util.module_from_spec(s)
            sys.modules[name] = m
            s.loader.exec_module(m)
        else:
            if os.getcwd() not in sys.path and "" not in sys.path:
                sys.path.insert(0, os.getcwd())
            m = importlib.import_module(mod_name)
    except SrpError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's module may raise anything
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SrpError(f"--module: cannot import {mod_name} ({type(e).__name__}: {first[:200]})") from None
    fn = getattr(m, attr, None)
    if fn is None or not callable(fn):
        raise SrpError(f"--module: {mod_name} has no callable {attr!r}")
    return fn


def export_module_checkpoint(spec: str, checkpoint: Optional[str], out, dataset: Optional[str] = None,
                             in_channels: Optional[int] = None, input_size: Optional[int] = None,
                             L: Optional[int] = None, mean=None, std=None, maxpool: str = "refuse") -> dict:
    """``srp-np export --module``: build the network with the factory, load the
    checkpoint (weights only, strict), trace it with :func:`from_torch` and write ``out``."""
    from srp_np import datasets as ds

    from .export import _unwrap_checkpoint, load_checkpoint_object, preprocessing_for

    fn = load_factory(spec)
    try:
        module = fn()
    except Exception as e:  # noqa: BLE001
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise SrpError(f"--module: {spec}() failed ({type(e).__name__}: {first[:200]})") from None
    if not isinstance(module, nn.Module):
        raise SrpError(f"--module: {spec}() returned a {type(module).__name__}, not a torch.nn.Module")
    extra = {}
    if checkpoint is not None:
        sd, config, _ = _unwrap_checkpoint(load_checkpoint_object(checkpoint), checkpoint)
        sd = {k: v for k, v in sd.items()}
        try:
            missing, unexpected = module.load_state_dict(sd, strict=False)
        except RuntimeError as e:
            msg = [ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln]
            raise SrpError(f"{checkpoint}: does not fit {spec}() "
                           f"({msg[0] if msg else (str(e).splitlines() or [''])[0][:200]})") from None
        missing = [k for k in missing if not k.endswith("num_batches_tracked")]
        if missing:
            raise SrpError(f"{checkpoint}: missing key {missing[0]!r} for {spec}() (the first of {len(missing)})")
        if unexpected:
            raise SrpError(f"{checkpoint}: unexpected key {unexpected[0]!r} for {spec}() "
                           f"(the first of {len(unexpected)})")
        if config and config.get("L") and L is None:
            L = int(config["L"])
    if dataset is not None:
        dataset = ds.normalize_name(dataset)
    first_conv = next((m for m in module.modules() if isinstance(m, nn.Conv2d)), None)
    if in_channels is None:
        in_channels = (first_conv.in_channels if first_conv is not None
                       else (1 if dataset == "fashion-mnist" else 3))
    if input_size is None:
        input_size = {"fashion-mnist": 28, "imagenet": 224}.get(dataset, 32)
    if (mean is None) != (std is None):
        raise SrpError("--mean and --std go together")
    if mean is None:
        mean, std = preprocessing_for(dataset, in_channels, authors=True)
    p = next(iter(module.parameters()), None)
    x = torch.zeros(1, int(in_channels), int(input_size), int(input_size),
                    dtype=p.dtype if p is not None else torch.float32)
    meta = {"arch": type(module).__name__, "dataset": dataset, "source": f"--module {spec}"}
    meta.update(extra)
    return export_torch(module, x, out, L=L, mean=mean, std=std, maxpool=maxpool,
                        metadata={k: v for k, v in meta.items() if v is not None})
