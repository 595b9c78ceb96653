"""NIR (Neural Intermediate Representation) export and import.

NIR (PyPI ``nir``, extra ``[nir]``) is the exchange format of sinabs, snnTorch,
Norse, SpikingJelly, Lava and others. ``import srp_np`` never imports it; only
the functions here do.

Export (:func:`to_nir`)
-----------------------
======================= ==========================================================
srp-np/1                 NIR
======================= ==========================================================
``input``                ``Input`` (C×H×W)
``conv2d``               ``Conv2d`` (weights × the scale of its input, see below)
``linear``               ``Affine`` (likewise; a missing bias is written as zeros)
``flatten``              ``Flatten`` (start_dim 0: NIR shapes carry no batch axis)
``avgpool2d``            ``SumPool2d``; the 1/k² is folded into the next layer
``add``                  no node: every input of the sum gets an edge into each
                         consumer (NIR sums the edges into a node)
``qcfs`` (IF, θ = λ)     ``IF(r=1, v_threshold=θ, v_reset=0)``; a spike is 1 in NIR
                         and θ in srp-np, so θ is folded into the next layer
output                   ``Output``
======================= ==========================================================

The folding keeps one number per value, its *scale* s: srp-np's value equals
s × NIR's signal (s = 1 at the input, θ after an IF, s/k² after a sum pool, s
through a flatten). A conv or linear layer fed with scale s gets the weights
``W·s`` (computed and stored in float64, so that ``W·s/s`` rounds back to the
float32 ``W`` exactly) and restores s = 1. Where a value of scale s ≠ 1 meets an
IF, the output or a sum with another scale, a ``Scale(s)`` node is inserted; a value
summed with itself (x + x) goes through ``Scale(m)``, since a NIR edge exists at most once.

NIR's IF cannot express what srp-np simulates (Eqs. 2-3 and Algorithm 1 of the
paper): reset by subtraction (NIR resets to ``v_reset``), v(0) = θ/2, firing at
``v ≥ θ`` (NIR: ``v > θ``) and SRP's two stages. Each IF node therefore carries
``metadata`` (``srp_np_reset = "subtract"``, ``srp_np_v_init = θ/2``,
``srp_np_fire = ">="``, ``srp_np_spike_value = θ``), every folded layer its
``srp_np_input_scale``, and the graph ``srp_np_graph`` (the srp-np/1 graph JSON),
``srp_np_tau``, ``srp_np_mask_eps``, ``srp_np_mask_rule``, ``srp_np_readout``,
``srp_np_neuron`` and ``srp_np_timing``. With that metadata, srp-np → NIR →
srp-np gives back the same arrays bit for bit and the same graph.

Import (:func:`from_nir`)
-------------------------
A graph with srp-np's metadata is rebuilt from it (weights and thresholds read
from the NIR nodes, unfolded). Any other graph ("foreign", as other libraries
write it) is translated node by node under these stated assumptions:

* ``IF`` is srp-np's neuron: one step per time step, ``v += r·x`` (Euler, dt = 1),
  **reset by subtraction**, **v(0) = θ/2**, **fire at v ≥ θ**, a spike worth 1.
  ``v_reset`` must be 0 (or absent), ``r`` and ``v_threshold`` uniform per node.
  That is the neuron of QCFS conversion; sinabs's ``IAF`` (``MembraneSubtract``) and
  SpikingJelly's ``IFNode(v_reset=None)`` reset the same way but start at v = 0
  unless initialised to θ/2. A library that resets to zero or starts at v = 0
  simulates a different network.
* an edge has no delay: each step, nodes run in topological order on the
  inputs of the same step; several edges into a node are summed.
* the input is analog and fed at every step, the output node's mean over the
  steps is the readout.
* ``Conv2d`` (groups 1, dilation 1), ``Affine``, ``Linear``, ``Flatten``,
  ``SumPool2d`` and ``AvgPool2d`` (no padding), and uniform ``Scale`` map
  onto srp-np ops; anything else (LIF, LI, CubaLIF, I, Delay, Threshold,
  recurrent edges, ...) is refused with one line naming the node.
* NIR does not know QCFS's L: it must be given.
"""
from __future__ import annotations

import json
import math
from typing import Dict, List, Optional

import numpy as np

from .errors import SrpError

NIR_MISSING = "NIR support needs the nir package: pip install 'srp-np[nir]'"

NEURON_TEXT = ("IF (Eqs. 2-3): v(0) = theta/2; each step v += x; spike when v >= theta; reset by subtraction "
               "(v -= theta); a spike is worth theta (folded into the next layer's weights)")
TIMING_TEXT = ("discrete steps, no inter-layer delay: each step every node runs in topological order on the inputs "
               "of the same step; the analog (normalised) image is fed to the first layer at every step")
READOUT_TEXT = ("the output node's values averaged over the T stage-2 steps; the prediction after t steps is the "
                "argmax of that mean")
MASK_RULE_TEXT = ("SRP (Algorithm 1): run tau steps from v = theta/2, keep a neuron iff v(tau) > mask_eps*theta, "
                  "reset every membrane to theta/2, run T steps with every IF output multiplied by its mask; "
                  "tau = 0 is plain conversion")
#: The keep test of each mask rule, as MASK_RULE_TEXT states it (srp_np.neuron.MASK_CMP).
KEEP_TEXT = {"authors": "v(tau) > mask_eps*theta", "paper": "v(tau) >= 0"}
ASSUMED_TEXT = ("assumed for a foreign NIR graph: IF with reset by subtraction, v(0) = theta/2, firing at v >= theta "
                "(NIR writes v > theta and a reset to v_reset = 0), dv = r*x per step, no delay on edges, analog "
                "input at every step, readout = mean of the output over the steps")


def _nir():
    try:
        import nir
    except ImportError:
        raise SrpError(NIR_MISSING) from None
    return nir


# ----------------------------------------------------------------------------- export

def to_nir(model, tau: int = 4, mask_eps: float = 1e-3, mask_rule: str = "authors"):
    """The NIR graph of an srp-np model (see the module docstring for the mapping).

    Parameters
    ----------
    model : srp_np.Model
    tau : int
        SRP's stage-1 length recorded in the metadata (``srp_np_tau``).
    mask_eps : float
        SRP's keep-mask ε recorded in the metadata (``srp_np_mask_eps``).

    Returns
    -------
    nir.NIRGraph
    """
    from .neuron import check_schedule

    nir = _nir()
    check_schedule(tau, 1, mask_eps, mask_rule)
    nodes: Dict[str, object] = {}
    edges: List[tuple] = []
    used = {n["name"] for n in model.nodes} | {"input"}

    def uid(base):
        n, i = base, 1
        while n in used or n in nodes:
            i += 1
            n = f"{base}_{i}"
        used.add(n)
        return n

    C, H, W = model.input_shape
    nodes["input"] = nir.Input(input_type={"input": np.array([C, H, W])})
    # srcs[name]: the NIR nodes whose summed signal, times scale[name], is srp-np's value of name
    srcs = {"input": ["input"]}
    scale = {"input": 1.0}
    shape_of = {"input": tuple(model.input_shape)}      # per-sample shape of every NIR node's output

    def connect(sources, target):
        """Edges from ``sources`` into ``target``; a source listed m > 1 times (x + x) goes through
        a Scale(m) node, since NIR edges are a set (each edge at most once)."""
        from collections import Counter

        for src, m in Counter(sources).items():
            if m == 1:
                edges.append((src, target))
            else:
                sid = uid(f"{src}.times{m}.to_{target}")
                nodes[sid] = nir.Scale(scale=np.full(shape_of[src], float(m)),
                                       metadata={"srp_np_role": f"the same value summed {m} times"})
                edges.extend([(src, sid), (sid, target)])

    def at_scale_one(name, tag):
        """NIR sources of ``name`` with scale 1 (a Scale node is inserted when needed)."""
        s = scale[name]
        if s == 1.0:
            return list(srcs[name])
        sid = uid(f"{name}.{tag}.scale")
        nodes[sid] = nir.Scale(scale=np.full(model.shapes[name], s, dtype=np.float64),
                               metadata={"srp_np_role": "scale folded from upstream (spike value or 1/k^2)"})
        shape_of[sid] = model.shapes[name]
        connect(srcs[name], sid)
        return [sid]

    for node in model.nodes:
        name, op, ins = node["name"], node["op"], node["inputs"]
        if op in ("conv2d", "linear"):
            (src,) = ins
            s = scale[src]
            w = np.asarray(model.arrays[node["weight"]], dtype=np.float64) * s
            b = model.weight(node, "bias")
            bias = np.zeros(w.shape[0]) if b is None else np.asarray(b, dtype=np.float64)
            meta = {"srp_np_op": op, "srp_np_input_scale": float(s), "srp_np_bias": b is not None}
            if op == "conv2d":
                sh = model.shapes[src]
                nodes[name] = nir.Conv2d(input_shape=(int(sh[1]), int(sh[2])), weight=w,
                                         stride=_scalar(node.get("stride", 1)), padding=_scalar(node.get("padding", 0)),
                                         dilation=1, groups=1, bias=bias, metadata=meta)
            else:
                nodes[name] = nir.Affine(weight=w, bias=bias, metadata=meta)
            connect(srcs[src], name)
            shape_of[name] = model.shapes[name]
            srcs[name], scale[name] = [name], 1.0
        elif op == "flatten":
            (src,) = ins
            nodes[name] = nir.Flatten(input_type={"input": np.array(model.shapes[src])}, start_dim=0, end_dim=-1,
                                      metadata={"srp_np_op": "flatten"})
            connect(srcs[src], name)
            shape_of[name] = model.shapes[name]
            srcs[name], scale[name] = [name], scale[src]
        elif op == "avgpool2d":
            (src,) = ins
            k = _scalar(node["kernel"])
            st = _scalar(node.get("stride", k))
            nodes[name] = nir.SumPool2d(kernel_size=np.array([k, k]), stride=np.array([st, st]),
                                        padding=np.array([0, 0]),
                                        metadata={"srp_np_op": "avgpool2d", "srp_np_divide_by": float(k * k)})
            connect(srcs[src], name)
            shape_of[name] = model.shapes[name]
            srcs[name], scale[name] = [name], scale[src] / float(k * k)
        elif op == "add":
            scales = {scale[s] for s in ins}
            if len(scales) == 1:
                srcs[name] = [x for s in ins for x in srcs[s]]
                scale[name] = scales.pop()
            else:
                srcs[name] = [x for i, s in enumerate(ins) for x in at_scale_one(s, f"to_{name}_{i}")]
                scale[name] = 1.0
        elif op == "qcfs":
            (src,) = ins
            th = float(node["threshold"])
            sh = model.shapes[name]
            feed = at_scale_one(src, f"to_{name}")
            nodes[name] = nir.IF(r=np.ones(sh), v_threshold=np.full(sh, th), v_reset=np.zeros(sh),
                                 metadata={"srp_np_op": "qcfs", "srp_np_threshold": th, "srp_np_reset": "subtract",
                                           "srp_np_v_init": th / 2.0, "srp_np_fire": ">=",
                                           "srp_np_spike_value": th, "srp_np_spike_value_folded": "downstream"})
            connect(feed, name)
            shape_of[name] = sh
            srcs[name], scale[name] = [name], th
        else:  # pragma: no cover - load_model admits no other op
            raise SrpError(f"node {name!r}: op {op!r} has no NIR mapping")
    out_id = uid("output")
    nodes[out_id] = nir.Output(output_type={"output": np.array([model.num_classes])})
    connect(at_scale_one(model.output, "to_output"), out_id)
    meta = {"srp_np_format": "srp-np/1", "srp_np_graph": json.dumps(model.graph), "srp_np_tau": int(tau),
            "srp_np_mask_eps": float(mask_eps), "srp_np_mask_rule": MASK_RULE_TEXT.replace(KEEP_TEXT["authors"], KEEP_TEXT[mask_rule]),
            "srp_np_mask_rule_name": mask_rule, "srp_np_readout": READOUT_TEXT,
            "srp_np_neuron": NEURON_TEXT, "srp_np_timing": TIMING_TEXT, "srp_np_output_node": out_id}
    try:
        return nir.NIRGraph(nodes=nodes, edges=edges, metadata=meta)
    except Exception as e:  # noqa: BLE001 - nir's type checks raise several types
        raise SrpError(f"nir rejected the exported graph ({type(e).__name__}: {_first(e)})") from None


def _scalar(v) -> int:
    """An srp-np size attribute (an int or a square pair) as one int."""
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


def _first(e) -> str:
    s = str(e).strip().splitlines()
    return (s[0][:200] if s else type(e).__name__)


def write_nir(model, path, tau: int = 4, mask_eps: float = 1e-3, mask_rule: str = "authors"):
    """:func:`to_nir` written to ``path`` (HDF5, atomically). Returns the graph."""
    from .fileio import atomic_write

    nir = _nir()
    g = to_nir(model, tau=tau, mask_eps=mask_eps, mask_rule=mask_rule)

    def w(tmp):
        nir.write(tmp, g)

    atomic_write(path, w)
    return g


def read_nir(path):
    """``nir.read`` of a regular file, with one-line errors."""
    from pathlib import Path

    from .fileio import open_regular

    nir = _nir()
    with open_regular(Path(path), "NIR file"):
        pass
    try:
        import h5py

        from .limits import check_memory, format_bytes

        total = 0

        def visit(_name, obj):
            nonlocal total
            if isinstance(obj, h5py.Dataset):
                total += int(obj.size or 0) * int(obj.dtype.itemsize)

        with h5py.File(str(path), "r") as f:
            f.visititems(visit)
    except SrpError:
        raise
    except Exception as e:  # noqa: BLE001 - h5py raises many types
        raise SrpError(f"cannot read NIR file {path} ({type(e).__name__}: {_first(e)})") from None
    # every array is decompressed by nir.read, then copied once or twice on the way to a model
    check_memory(3 * total, f"{path}: the NIR arrays ({format_bytes(total)} declared)",
                 "this NIR graph is too large for this machine")
    try:
        return nir.read(str(path))
    except Exception as e:  # noqa: BLE001 - h5py and nir raise many types
        raise SrpError(f"cannot read NIR file {path} ({type(e).__name__}: {_first(e)})") from None


# ----------------------------------------------------------------------------- import

def _meta(node) -> dict:
    m = getattr(node, "metadata", None)
    return m if isinstance(m, dict) else {}


def _py(v):
    if isinstance(v, bytes):
        return v.decode("utf-8")
    if isinstance(v, np.ndarray) and v.shape == ():
        v = v[()]
    if isinstance(v, np.generic):
        return v.item()
    return v


def _uniform(a, what, where) -> float:
    a = np.asarray(a, dtype=np.float64)
    if a.size == 0:
        raise SrpError(f"{where}: {what} is empty")
    v = float(a.reshape(-1)[0])
    if not np.all(a == v):
        raise SrpError(f"{where}: {what} differs between neurons; srp-np has one value per layer")
    return v


def _int_pair(v, what, where) -> int:
    a = np.asarray(v).reshape(-1)
    if a.size == 0 or not np.all(a == a[0]):
        raise SrpError(f"{where}: {what} {a.tolist()} is not square; srp-np supports square {what}s only")
    return int(a[0])


def _topo(g) -> List[str]:
    preds = {n: [] for n in g.nodes}
    succ = {n: [] for n in g.nodes}
    for a, b in g.edges:
        if a not in g.nodes or b not in g.nodes:
            raise SrpError(f"edge {a!r} -> {b!r} names a node that does not exist")
        preds[b].append(a)
        succ[a].append(b)
    indeg = {n: len(p) for n, p in preds.items()}
    order, ready = [], sorted(n for n, d in indeg.items() if d == 0)
    while ready:
        n = ready.pop(0)
        order.append(n)
        for m in succ[n]:
            indeg[m] -= 1
            if indeg[m] == 0:
                ready.append(m)
    if len(order) != len(g.nodes):
        stuck = sorted(n for n, d in indeg.items() if d > 0)
        raise SrpError(f"the NIR graph has a cycle (recurrent edges through {stuck[0]!r}); srp-np simulates "
                       f"feed-forward networks only")
    return order, preds, succ


def from_nir(g, L: Optional[int] = None, mean=None, std=None, use_metadata: bool = True,
             metadata: Optional[dict] = None):
    """(graph, arrays) of the srp-np/1 model a NIR graph describes.

    Parameters
    ----------
    g : nir.NIRGraph
    L : int, optional
        QCFS steps; required for a foreign graph (NIR does not store it).
    mean, std : sequence of float, optional
        Preprocessing; a foreign graph defaults to 0 and 1 (inputs used as given).
    use_metadata : bool
        Rebuild from srp-np's metadata when present (bit-exact round trip);
        False translates the NIR nodes as for any foreign graph.
    metadata : dict, optional
        Extra graph fields for a foreign graph (``dataset``, ...).

    Raises
    ------
    SrpError
        One line naming the first node or edge that cannot be imported.
    """
    gm = {k: _py(v) for k, v in _meta(g).items()}
    ours = gm.get("srp_np_format") == "srp-np/1" and "srp_np_graph" in gm
    if use_metadata and ours:
        return _from_srp_np_metadata(g, gm, L, mean, std)
    if ours and (L is None or mean is None):      # translated node by node: L and preprocessing still known
        from .model import parse_graph_json

        src = parse_graph_json(gm["srp_np_graph"], "NIR metadata srp_np_graph")
        if isinstance(src, dict):
            L = L if L is not None else src.get("L")
            pre = src.get("preprocess") or {}
            if mean is None and isinstance(pre, dict):
                mean, std = pre.get("mean"), pre.get("std")
    return _from_foreign(g, L, mean, std, metadata)


def _from_srp_np_metadata(g, gm, L, mean, std):
    from .model import parse_graph_json

    nir = _nir()
    graph = parse_graph_json(gm["srp_np_graph"], "NIR metadata srp_np_graph")
    if not isinstance(graph, dict) or not isinstance(graph.get("nodes"), list):
        raise SrpError("NIR metadata srp_np_graph is not an srp-np/1 graph")
    arrays = {}
    for node in graph["nodes"]:
        if not isinstance(node, dict):
            raise SrpError("NIR metadata srp_np_graph holds a node that is not an object")
        name, op = node.get("name"), node.get("op")
        if op in ("conv2d", "linear", "qcfs", "avgpool2d", "flatten"):
            n = g.nodes.get(name)
            want = {"conv2d": nir.Conv2d, "linear": nir.Affine, "qcfs": nir.IF, "avgpool2d": nir.SumPool2d,
                    "flatten": nir.Flatten}[op]
            if not isinstance(n, want):
                raise SrpError(f"the NIR graph does not match its srp-np metadata: node {name!r} should be a "
                               f"{want.__name__} (to translate the NIR nodes instead, import ignoring the metadata: `use_metadata`)")
        if op in ("conv2d", "linear"):
            m = {k: _py(v) for k, v in _meta(n).items()}
            s = float(m.get("srp_np_input_scale", 1.0))
            w = np.asarray(n.weight, dtype=np.float64) / s
            key = node.get("weight")
            arrays[key] = w.astype(np.float32)
            if node.get("bias") is not None:
                arrays[node["bias"]] = np.asarray(n.bias, dtype=np.float64).astype(np.float32)
        elif op == "qcfs":
            node["threshold"] = _uniform(n.v_threshold, "v_threshold", f"NIR node {name!r}")
    if L is not None:
        graph["L"] = int(L)
    if mean is not None:
        graph["preprocess"] = {"mean": [float(v) for v in mean], "std": [float(v) for v in std]}
    return graph, arrays


class _Val:
    """A NIR node's output in srp-np terms: NIR signal = factor × srp-np value of ``ref``.
    ``free`` names an srp-np conv/linear node whose scale may still be chosen (its output
    feeds only this value)."""

    def __init__(self, ref, shape, factor, free=None):
        factor = float(factor)
        # a product of folded scales that should be 1 (θ·(1/θ), k²·(1/k²)) is taken as 1: rounding
        # would otherwise move every threshold behind it by an ulp
        if abs(factor - 1.0) <= 1e-12:
            factor = 1.0
        self.ref, self.shape, self.factor, self.free = ref, tuple(int(s) for s in shape), factor, free


def _from_foreign(g, L, mean, std, metadata):
    import re

    nir = _nir()
    if L is None:
        raise SrpError("a NIR graph does not store QCFS's L: pass --L (the L the source network was trained with)")
    order, preds, succ = _topo(g)
    ins = [k for k, v in g.nodes.items() if isinstance(v, nir.Input)]
    outs = [k for k, v in g.nodes.items() if isinstance(v, nir.Output)]
    if len(ins) != 1 or len(outs) != 1:
        raise SrpError(f"the NIR graph must have one Input and one Output node, has {len(ins)} and {len(outs)}")
    nodes, arrays, vals = [], {}, {}
    names = {"input"}
    by_name = {}

    def uid(base):
        base = re.sub(r"[^0-9A-Za-z_.\-]", "_", str(base)) or "node"
        n, i = base, 1
        while n in names:
            i += 1
            n = f"{base}_{i}"
        names.add(n)
        return n

    def emit(node):
        nodes.append(node)
        by_name[node["name"]] = node
        return node["name"]

    def rescale(v: _Val, factor: float) -> _Val:
        """The same NIR signal expressed with another factor: rescale a free conv/linear."""
        node = by_name[v.free]
        c = v.factor / factor          # srp_new = srp_old * c
        arrays[node["weight"]] = arrays[node["weight"]] * c
        if node.get("bias"):
            arrays[node["bias"]] = arrays[node["bias"]] * c
        return _Val(v.ref, v.shape, factor, v.free)

    def gather(name) -> _Val:
        """The summed input of NIR node ``name`` (an srp-np add node when several edges arrive)."""
        ps = preds[name]
        if not ps:
            raise SrpError(f"NIR node {name!r} has no input edge")
        vs = [vals[p] for p in ps]
        if len(vs) == 1:
            v = vs[0]
            # a free producer with other consumers must not be rescaled later
            if v.free is not None and len(succ[ps[0]]) > 1:
                v = _Val(v.ref, v.shape, v.factor)
            return v
        shapes = {v.shape for v in vs}
        if len(shapes) != 1:
            raise SrpError(f"NIR node {name!r} sums inputs of different shapes {sorted(shapes)}")
        fixed = {v.factor for v, p in zip(vs, ps) if v.free is None or len(succ[p]) > 1}
        if len(fixed) > 1:
            raise SrpError(f"NIR node {name!r} sums spike trains (or pools of them) of different scales "
                           f"{sorted(fixed)}; srp-np cannot weight the terms of a sum")
        target = fixed.pop() if fixed else 1.0
        vs = [v if v.factor == target else rescale(v, target) for v in vs]
        ref = emit({"name": uid(f"{name}.sum"), "op": "add", "inputs": [v.ref for v in vs]})
        return _Val(ref, vs[0].shape, target)

    for name in order:
        n = g.nodes[name]
        where = f"NIR node {name!r} ({type(n).__name__})"
        if isinstance(n, nir.Input):
            shp = [int(s) for s in np.asarray(n.input_type["input"]).reshape(-1)]
            if len(shp) == 3:
                input_shape = shp
                vals[name] = _Val("input", shp, 1.0)
            elif len(shp) == 1:
                input_shape = [shp[0], 1, 1]
                ref = emit({"name": uid(f"{name}.flatten"), "op": "flatten", "inputs": ["input"]})
                vals[name] = _Val(ref, shp, 1.0)
            else:
                raise SrpError(f"{where}: input shape {shp} must be C×H×W or a vector")
            continue
        if isinstance(n, nir.Output):
            v = gather(name)
            if len(v.shape) != 1:
                raise SrpError(f"{where}: the output must be a vector of logits, got shape {list(v.shape)}")
            if v.free is not None and v.factor != 1.0:
                v = rescale(v, 1.0)
            out = v
            continue
        v = gather(name)
        if isinstance(n, (nir.Conv2d, nir.Affine, nir.Linear)):
            w = np.asarray(n.weight, dtype=np.float64)
            b = np.asarray(n.bias, dtype=np.float64) if isinstance(n, (nir.Conv2d, nir.Affine)) else None
            if isinstance(n, nir.Conv2d):
                if int(n.groups) != 1 or _int_pair(n.dilation, "dilation", where) != 1:
                    raise SrpError(f"{where}: grouped or dilated convolutions are not supported")
                if len(v.shape) != 3 or w.ndim != 4 or w.shape[1] != v.shape[0]:
                    raise SrpError(f"{where}: weight {list(w.shape)} does not fit input {list(v.shape)}")
                stride = _int_pair(n.stride, "stride", where)
                pad = n.padding
                if isinstance(pad, (str, bytes)):
                    pad = _py(pad)
                    if pad == "valid":
                        pad = 0
                    elif pad == "same" and stride == 1 and w.shape[2] == w.shape[3] and w.shape[2] % 2:
                        pad = w.shape[2] // 2
                    else:
                        raise SrpError(f"{where}: padding {pad!r} is not a symmetric zero padding")
                pad = _int_pair(pad, "padding", where)
                Ho = (v.shape[1] + 2 * pad - w.shape[2]) // stride + 1
                Wo = (v.shape[2] + 2 * pad - w.shape[3]) // stride + 1
                shape = (w.shape[0], Ho, Wo)
                node = {"name": uid(name), "op": "conv2d", "inputs": [v.ref], "stride": stride, "padding": pad}
            else:
                if len(v.shape) != 1 or w.ndim != 2 or w.shape[1] != v.shape[0]:
                    raise SrpError(f"{where}: weight {list(w.shape)} does not fit input {list(v.shape)}")
                shape = (w.shape[0],)
                node = {"name": uid(name), "op": "linear", "inputs": [v.ref]}
            # NIR: y = W x_nir + b with x_nir = f·x_srp  ->  srp-np weights W·f, output factor 1
            arrays[f"{node['name']}.weight"] = w * v.factor
            node["weight"] = f"{node['name']}.weight"
            if b is not None and np.any(b != 0):
                arrays[f"{node['name']}.bias"] = b.reshape(-1)
                node["bias"] = f"{node['name']}.bias"
            else:
                node["bias"] = None
            vals[name] = _Val(emit(node), shape, 1.0, free=node["name"])
        elif isinstance(n, nir.Flatten):
            if len(v.shape) == 1:
                vals[name] = _Val(v.ref, v.shape, v.factor)
            else:
                ref = emit({"name": uid(name), "op": "flatten", "inputs": [v.ref]})
                vals[name] = _Val(ref, (int(np.prod(v.shape)),), v.factor)
        elif isinstance(n, (nir.SumPool2d, nir.AvgPool2d)):
            k = _int_pair(n.kernel_size, "kernel", where)
            s = _int_pair(n.stride, "stride", where)
            if _int_pair(n.padding, "padding", where) != 0:
                raise SrpError(f"{where}: padded pooling is not supported")
            if len(v.shape) != 3:
                raise SrpError(f"{where}: pooling a flat input")
            ref = emit({"name": uid(name), "op": "avgpool2d", "inputs": [v.ref], "kernel": k, "stride": s})
            C, H, W = v.shape
            f = v.factor * (k * k if isinstance(n, nir.SumPool2d) else 1)   # sum = k²·mean
            vals[name] = _Val(ref, (C, (H - k) // s + 1, (W - k) // s + 1), f)
        elif isinstance(n, nir.Scale):
            c = _uniform(n.scale, "scale", where)
            if not c > 0:
                raise SrpError(f"{where}: a non-positive scale cannot be folded")
            vals[name] = _Val(v.ref, v.shape, v.factor * c, v.free)
        elif type(n) is nir.IF:
            r = _uniform(n.r, "r", where)
            th = _uniform(n.v_threshold, "v_threshold", where)
            vr = 0.0 if n.v_reset is None else _uniform(n.v_reset, "v_reset", where)
            if vr != 0.0:
                raise SrpError(f"{where}: v_reset = {vr:g}; srp-np resets by subtraction and can only take "
                               f"v_reset = 0 as that")
            if not (r > 0 and th > 0):
                raise SrpError(f"{where}: r and v_threshold must be positive")
            # v += r·x_nir = r·f·x_srp: the same spikes as v += x_srp with threshold th/(r·f)
            th_srp = th / (r * v.factor)
            ref = emit({"name": uid(name), "op": "qcfs", "inputs": [v.ref], "threshold": th_srp})
            vals[name] = _Val(ref, v.shape, 1.0 / th_srp)     # a NIR spike (1) is θ_srp in srp-np
        else:
            raise SrpError(f"{where}: no srp-np counterpart (srp-np simulates the IF neurons of converted QCFS "
                           f"networks: Conv2d, Affine, Linear, Flatten, SumPool2d, AvgPool2d, Scale, IF)")
    C = input_shape[0]
    mean = [0.0] * C if mean is None else [float(v) for v in mean]
    std = [1.0] * C if std is None else [float(v) for v in std]
    if len(mean) != C or len(std) != C:
        raise SrpError(f"mean/std need {C} value(s) (one per input channel)")
    if out.ref == "input" or out.ref not in by_name:
        raise SrpError("the NIR graph's output is its input")
    graph = {"format": "srp-np/1", "input_shape": input_shape, "num_classes": int(out.shape[0]), "L": int(L),
             "preprocess": {"mean": mean, "std": std}, "nir_import": ASSUMED_TEXT}
    if out.factor != 1.0:
        graph["nir_output_factor"] = out.factor     # NIR's output = factor × srp-np's (argmax unchanged)
    graph.update(metadata or {})
    graph["nodes"] = nodes
    graph["output"] = out.ref
    return graph, arrays


def import_nir(path, out, **kw):
    """Read ``path``, translate it with :func:`from_nir` and write ``out`` (validated, atomic).
    Returns ``(graph, foreign)``: foreign is True when the graph was translated under the
    assumptions of :data:`ASSUMED_TEXT`."""
    from .model import save_model

    g = read_nir(path)
    gm = {k: _py(v) for k, v in _meta(g).items()}
    foreign = not (kw.get("use_metadata", True) and gm.get("srp_np_format") == "srp-np/1")
    graph, arrays = from_nir(g, **kw)
    m = save_model(out, graph, arrays)
    return m.graph, foreign


# ----------------------------------------------------------------------------- a NIR interpreter

#: The neuron semantics :func:`simulate_nir` can run: srp-np's (what the metadata states) and
#: what a consumer reading only NIR's IF definition runs (v(0) = 0, fire at v > θ, reset to v_reset).
SEMANTICS = {
    "srp-np": {"v_init": "half", "fire": ">=", "reset": "subtract"},
    "nir": {"v_init": "zero", "fire": ">", "reset": "to_v_reset"},
}


def _conv_nchw(x, w, b, stride, pad):
    from numpy.lib.stride_tricks import sliding_window_view

    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(x, w.shape[2:], axis=(2, 3))[:, :, ::stride, ::stride]   # N,C,Ho,Wo,kh,kw
    y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3]))                                # N,Ho,Wo,O
    return np.ascontiguousarray(y.transpose(0, 3, 1, 2)) + b[None, :, None, None]


def simulate_nir(g, x, T: int, semantics: str = "srp-np"):
    """Run a NIR graph for T steps, densely in float64 (a reference for what a consumer computes).

    Each step every node runs in topological order on the inputs of the same step (no delay);
    the edges into a node are summed; the analog input ``x`` (N×shape, already normalised) is
    fed at every step. An IF node integrates ``v += r·x`` and emits 1 per spike:

    * ``semantics="srp-np"``: v(0) = θ/2, spike when v ≥ θ, reset by subtraction (Eqs. 2-3);
    * ``semantics="nir"``: v(0) = 0, spike when v > θ, reset to ``v_reset`` (NIR's IF).

    Conv2d, Affine, Linear, Flatten, SumPool2d, AvgPool2d, Scale, IF, Input and Output only.

    Returns
    -------
    outputs : ndarray
        T×N×K: the mean of the Output node's input over the first t steps.
    spikes : dict
        Spike counts per IF node (N×shape).
    """
    nir = _nir()
    if semantics not in SEMANTICS:
        raise SrpError(f"semantics must be one of {', '.join(SEMANTICS)}, got {semantics!r}")
    sem = SEMANTICS[semantics]
    order, preds, _ = _topo(g)
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    v, spikes = {}, {}
    outs, acc = [], None
    for _t in range(int(T)):
        val = {}
        for k in order:
            nd = g.nodes[k]
            if isinstance(nd, nir.Input):
                val[k] = x
                continue
            inp = val[preds[k][0]]
            for p in preds[k][1:]:
                inp = inp + val[p]
            if isinstance(nd, nir.Conv2d):
                val[k] = _conv_nchw(inp, np.asarray(nd.weight, np.float64), np.asarray(nd.bias, np.float64),
                                    _int_pair(nd.stride, "stride", k), _int_pair(nd.padding, "padding", k))
            elif isinstance(nd, nir.Affine):
                val[k] = inp @ np.asarray(nd.weight, np.float64).T + nd.bias
            elif isinstance(nd, nir.Linear):
                val[k] = inp @ np.asarray(nd.weight, np.float64).T
            elif isinstance(nd, nir.Flatten):
                val[k] = inp.reshape(n, -1)
            elif isinstance(nd, (nir.SumPool2d, nir.AvgPool2d)):
                from numpy.lib.stride_tricks import sliding_window_view

                kk, s = _int_pair(nd.kernel_size, "kernel", k), _int_pair(nd.stride, "stride", k)
                win = sliding_window_view(inp, (kk, kk), axis=(2, 3))[:, :, ::s, ::s].sum(axis=(4, 5))
                val[k] = win / (kk * kk) if isinstance(nd, nir.AvgPool2d) else win
            elif isinstance(nd, nir.Scale):
                val[k] = inp * nd.scale
            elif type(nd) is nir.IF:
                th = np.asarray(nd.v_threshold, np.float64)
                if k not in v:
                    v[k] = np.broadcast_to(th / 2 if sem["v_init"] == "half" else 0 * th, inp.shape).copy()
                    spikes[k] = np.zeros(inp.shape, np.int64)
                v[k] += np.asarray(nd.r, np.float64) * inp
                s = v[k] >= th if sem["fire"] == ">=" else v[k] > th
                if sem["reset"] == "subtract":
                    v[k] -= s * th
                else:
                    vr = 0.0 if nd.v_reset is None else np.asarray(nd.v_reset, np.float64)
                    v[k] = np.where(s, vr, v[k])
                spikes[k] += s
                val[k] = s.astype(np.float64)
            elif isinstance(nd, nir.Output):
                acc = inp if acc is None else acc + inp
                outs.append(acc / (_t + 1))
            else:
                raise SrpError(f"NIR node {k!r} ({type(nd).__name__}): not simulated here")
    return np.stack(outs), spikes
