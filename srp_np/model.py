"""The ``srp-np/1`` model file: load, validate, save.

A model is one ``.npz`` file (read with ``allow_pickle=False``):

* key ``graph``: a 0-d string array holding JSON with ``format`` (``"srp-np/1"``),
  ``input_shape`` ``[C, H, W]``, ``num_classes``, ``L`` (QCFS quantisation
  steps), ``preprocess`` ``{"mean": [C], "std": [C]}`` (applied to raw images
  in [0, 1] as ``(x - mean) / std``), optional metadata (``arch``, ``dataset``,
  ``ann_accuracy``, ...), ``nodes`` in topological order and ``output`` (the
  node whose values are the logits). The network input is called ``input``.
* every other key: a float32 array referenced by a node.

Node ops (attributes besides ``name``, ``op``, ``inputs``):

============ ==========================================================
``conv2d``    ``weight`` (Cout×Cin×kh×kw key), ``bias`` (key or null),
              ``stride``, ``padding`` (zero padding)
``linear``    ``weight`` (out×in key), ``bias`` (key or null)
``avgpool2d`` ``kernel``, ``stride`` (no padding)
``flatten``   C×H×W → C·H·W in C order
``add``       elementwise sum of its inputs (residual connections)
``qcfs``      ``threshold``: the trained λ. In the ANN this is QCFS (Eq. 7);
              in the SNN an integrate-and-fire neuron with θ = λ (Eqs. 2-3).
============ ==========================================================

:func:`load_model` checks everything (format version, unknown ops, missing
arrays, shapes, cycles and dangling references) and raises
:class:`~srp_np.errors.SrpError` with one line naming the first problem.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SrpError
from .fileio import atomic_write

FORMAT = "srp-np/1"
OPS = ("conv2d", "linear", "avgpool2d", "flatten", "add", "qcfs")


@dataclass
class Model:
    """A validated ``srp-np/1`` network.

    Attributes
    ----------
    graph : dict
        The JSON graph as loaded (metadata included).
    arrays : dict of str to ndarray
        The parameter arrays, float32 as stored.
    shapes : dict of str to tuple
        The per-sample output shape of every node (``input`` included).
    path : str or None
        Where the model was loaded from.
    """

    graph: dict
    arrays: dict
    shapes: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def nodes(self) -> list:
        return self.graph["nodes"]

    @property
    def node_by_name(self) -> dict:
        return {n["name"]: n for n in self.graph["nodes"]}

    @property
    def input_shape(self) -> tuple:
        return tuple(self.graph["input_shape"])

    @property
    def num_classes(self) -> int:
        return int(self.graph["num_classes"])

    @property
    def L(self) -> int:
        return int(self.graph["L"])

    @property
    def mean(self) -> np.ndarray:
        return np.asarray(self.graph["preprocess"]["mean"], dtype=np.float64)

    @property
    def std(self) -> np.ndarray:
        return np.asarray(self.graph["preprocess"]["std"], dtype=np.float64)

    @property
    def output(self) -> str:
        return self.graph["output"]

    @property
    def qcfs_nodes(self) -> list:
        """The activation nodes (IF layers of the SNN), in topological order."""
        return [n for n in self.nodes if n["op"] == "qcfs"]

    def weight(self, node: dict, key: str = "weight") -> np.ndarray | None:
        k = node.get(key)
        return None if k is None else self.arrays[k]

    def preprocess(self, x: np.ndarray, dtype=np.float32) -> np.ndarray:
        """Normalise raw images in [0, 1] (N×C×H×W) as ``(x - mean) / std``."""
        x = np.asarray(x, dtype=np.float64)
        c = self.mean.size
        out = (x - self.mean.reshape(1, c, 1, 1)) / self.std.reshape(1, c, 1, 1)
        return out.astype(dtype)

    def describe(self) -> str:
        g = self.graph
        n_if = len(self.qcfs_nodes)
        n_par = sum(int(a.size) for a in self.arrays.values())
        return (f"{g.get('arch', 'model')} ({g.get('dataset', '?')}), input {list(self.input_shape)}, "
                f"{self.num_classes} classes, L={self.L}, {n_if} IF layers, {n_par:,} parameters")


def _pair(v, what: str) -> int:
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
            raise SrpError(f"{what} must be a single int or a square pair, got {v!r}")
        v = v[0]
    if not isinstance(v, int) or isinstance(v, bool):
        raise SrpError(f"{what} must be an integer, got {v!r}")
    return v


def _infer_shape(model_arrays: dict, node: dict, in_shapes: list) -> tuple:
    name, op = node["name"], node["op"]
    where = f"node {name!r} ({op})"

    def arr(key):
        k = node.get(key)
        if k is None:
            return None
        if not isinstance(k, str):
            raise SrpError(f"{where}: {key} must be an array key or null")
        if k not in model_arrays:
            raise SrpError(f"{where}: array {k!r} is missing from the file")
        return model_arrays[k]

    if op in ("conv2d", "linear", "avgpool2d", "flatten", "qcfs") and len(in_shapes) != 1:
        raise SrpError(f"{where}: expects exactly one input, got {len(in_shapes)}")
    if op == "conv2d":
        (s,) = in_shapes
        w = arr("weight")
        if w is None:
            raise SrpError(f"{where}: weight is required")
        if w.ndim != 4:
            raise SrpError(f"{where}: weight must be Cout×Cin×kh×kw, got shape {w.shape}")
        if len(s) != 3:
            raise SrpError(f"{where}: input must be C×H×W, got {list(s)}")
        if w.shape[1] != s[0]:
            raise SrpError(f"{where}: weight expects {w.shape[1]} input channels, input has {s[0]}")
        b = arr("bias")
        if b is not None and b.shape != (w.shape[0],):
            raise SrpError(f"{where}: bias shape {b.shape} does not match {w.shape[0]} output channels")
        st = _pair(node.get("stride", 1), f"{where}: stride")
        pd = _pair(node.get("padding", 0), f"{where}: padding")
        if st < 1 or pd < 0:
            raise SrpError(f"{where}: stride must be >= 1 and padding >= 0")
        ho = (s[1] + 2 * pd - w.shape[2]) // st + 1
        wo = (s[2] + 2 * pd - w.shape[3]) // st + 1
        if ho < 1 or wo < 1:
            raise SrpError(f"{where}: kernel {w.shape[2]}×{w.shape[3]} does not fit input {list(s)}")
        return (w.shape[0], ho, wo)
    if op == "linear":
        (s,) = in_shapes
        w = arr("weight")
        if w is None or w.ndim != 2:
            raise SrpError(f"{where}: weight must be a 2-d out×in array")
        if len(s) != 1 or s[0] != w.shape[1]:
            raise SrpError(f"{where}: weight expects {w.shape[1]} inputs, input shape is {list(s)}")
        b = arr("bias")
        if b is not None and b.shape != (w.shape[0],):
            raise SrpError(f"{where}: bias shape {b.shape} does not match {w.shape[0]} outputs")
        return (w.shape[0],)
    if op == "avgpool2d":
        (s,) = in_shapes
        k = _pair(node.get("kernel"), f"{where}: kernel")
        st = _pair(node.get("stride", k), f"{where}: stride")
        if len(s) != 3 or k < 1 or st < 1 or k > s[1] or k > s[2]:
            raise SrpError(f"{where}: kernel {k} does not fit input {list(s)}")
        return (s[0], (s[1] - k) // st + 1, (s[2] - k) // st + 1)
    if op == "flatten":
        (s,) = in_shapes
        return (int(np.prod(s)),)
    if op == "add":
        if len(in_shapes) < 2:
            raise SrpError(f"{where}: needs at least two inputs")
        if any(tuple(s) != tuple(in_shapes[0]) for s in in_shapes):
            raise SrpError(f"{where}: input shapes differ: {[list(s) for s in in_shapes]}")
        return tuple(in_shapes[0])
    if op == "qcfs":
        th = node.get("threshold")
        if not isinstance(th, (int, float)) or isinstance(th, bool) or not np.isfinite(th) or th <= 0:
            raise SrpError(f"{where}: threshold must be a positive number, got {th!r}")
        return tuple(in_shapes[0])
    raise SrpError(f"{where}: unknown op {op!r} (known: {', '.join(OPS)})")


def validate_graph(graph: Any, arrays: dict) -> dict:
    """Check a graph against the ``srp-np/1`` contract; return the node shapes.

    Raises
    ------
    SrpError
        With one line naming the first problem found.
    """
    if not isinstance(graph, dict):
        raise SrpError("graph must be a JSON object")
    fmt = graph.get("format")
    if fmt != FORMAT:
        raise SrpError(f"unsupported model format {fmt!r} (this version reads {FORMAT!r})")
    for key in ("input_shape", "num_classes", "L", "preprocess", "nodes", "output"):
        if key not in graph:
            raise SrpError(f"graph is missing the field {key!r}")
    ish = graph["input_shape"]
    if (not isinstance(ish, list) or len(ish) != 3
            or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in ish)):
        raise SrpError(f"input_shape must be [C, H, W] of positive ints, got {ish!r}")
    k = graph["num_classes"]
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise SrpError(f"num_classes must be a positive int, got {k!r}")
    L = graph["L"]
    if not isinstance(L, int) or isinstance(L, bool) or L < 1:
        raise SrpError(f"L must be a positive int, got {L!r}")
    pre = graph["preprocess"]
    if not isinstance(pre, dict) or "mean" not in pre or "std" not in pre:
        raise SrpError("preprocess must be {\"mean\": [C], \"std\": [C]}")
    for key in ("mean", "std"):
        v = pre[key]
        if not isinstance(v, list) or len(v) != ish[0] or not all(isinstance(a, (int, float)) for a in v):
            raise SrpError(f"preprocess.{key} must list {ish[0]} numbers (one per input channel)")
    if any(s <= 0 for s in pre["std"]):
        raise SrpError("preprocess.std must be positive")
    nodes = graph["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise SrpError("nodes must be a non-empty list")
    shapes = {"input": tuple(ish)}
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or "op" not in node:
            raise SrpError(f"node #{i} must be an object with a name and an op")
        name = node["name"]
        if name in shapes:
            raise SrpError(f"node name {name!r} is used twice")
        ins = node.get("inputs")
        if not isinstance(ins, list) or not ins or not all(isinstance(s, str) for s in ins):
            raise SrpError(f"node {name!r}: inputs must be a non-empty list of node names")
        later = {n.get("name") for n in nodes[i:] if isinstance(n, dict)}
        for src in ins:
            if src not in shapes:
                if src in later:
                    raise SrpError(f"node {name!r} uses {src!r} before it is computed "
                                   "(nodes are not in topological order, or the graph has a cycle)")
                raise SrpError(f"node {name!r} uses unknown input {src!r}")
        shapes[name] = _infer_shape(arrays, node, [shapes[s] for s in ins])
    out = graph["output"]
    if out not in shapes or out == "input":
        raise SrpError(f"output node {out!r} is not a node of the graph")
    if shapes[out] != (k,):
        raise SrpError(f"output node {out!r} has shape {list(shapes[out])}, expected [{k}] (num_classes)")
    for key, a in arrays.items():
        if a.dtype.kind != "f":
            raise SrpError(f"array {key!r} must be floating point, got {a.dtype}")
        if not np.all(np.isfinite(a)):
            raise SrpError(f"array {key!r} contains NaN or infinite values")
    return shapes


def load_model(path) -> Model:
    """Load and validate an ``srp-np/1`` model file.

    Parameters
    ----------
    path : str or Path
        The ``.npz`` file.

    Returns
    -------
    Model

    Raises
    ------
    SrpError
        If the file is missing, not an ``.npz``, corrupt, or violates the format.
    """
    p = Path(path)
    if not p.exists():
        raise SrpError(f"model file not found: {p}")
    if p.is_dir():
        raise SrpError(f"model path is a directory, not an .npz file: {p}")
    try:
        with np.load(p, allow_pickle=False) as f:
            files = dict(f.items())
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise SrpError(f"cannot read model file {p}: not a valid .npz ({str(e).splitlines()[0] if str(e) else type(e).__name__})")
    if "graph" not in files:
        raise SrpError(f"{p} is not an srp-np model: it has no 'graph' entry")
    g = files.pop("graph")
    try:
        graph = json.loads(str(g.item() if g.ndim == 0 else g))
    except (ValueError, TypeError) as e:
        raise SrpError(f"{p}: the 'graph' entry is not valid JSON ({e})")
    try:
        shapes = validate_graph(graph, files)
    except SrpError as e:
        raise SrpError(f"{p}: {e}") from None
    return Model(graph=graph, arrays=files, shapes=shapes, path=str(p))


def save_model(path, graph: dict, arrays: dict) -> Model:
    """Validate and write an ``srp-np/1`` file atomically (temp file, then rename).

    Floating-point arrays are stored as float32. Returns the validated model.
    """
    graph = dict(graph)
    graph.setdefault("format", FORMAT)
    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    if "graph" in arrays:
        raise SrpError("an array may not be called 'graph'")
    shapes = validate_graph(json.loads(json.dumps(graph)), arrays)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, graph=np.array(json.dumps(graph)), **arrays)

    atomic_write(p, write)
    return Model(graph=graph, arrays=arrays, shapes=shapes, path=str(p))
