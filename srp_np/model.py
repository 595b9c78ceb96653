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
``batchnorm2d`` ``mean``, ``var`` (C keys), ``weight`` (γ), ``bias`` (β) (keys or
              null), ``eps`` (1e-5): per-channel affine (folded into the conv
              or linear layer before it where that is exact)
============ ==========================================================

Each op, its attributes and their defaults are declared once, in :mod:`srp_np.opset`.

:func:`load_model` checks everything (format version, unknown ops, missing
arrays, shapes, cycles and dangling references) and raises
:class:`~srp_np.errors.SrpError` with one line naming the first problem.
"""
from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SrpError
from .fileio import READ_ERRORS, atomic_write, npy_member_header, open_regular, read_npy_member
from .limits import MAX_INT, check_memory, format_bytes
from .opset import OPS as _OPSET, parse_node
from .opset.base import F32_MAX as _F32_MAX, F32_TINY as _F32_TINY, as_float as _as_float, is_number as _is_number
from .opset.base import short as _short

#: Deepest JSON nesting a graph may have (a valid one has 4 levels: graph, nodes, node, inputs).
MAX_JSON_DEPTH = 32

#: Largest ``graph`` entry (JSON text) read from a model file.
MAX_GRAPH_BYTES = 256 * 2**20


FORMAT = "srp-np/1"
OPS = _OPSET


@dataclass
class Model:
    """A validated ``srp-np/1`` network: ``Model(graph, arrays)`` checks the graph against the
    arrays (:func:`validate_graph`) and raises :class:`SrpError` on the first problem.

    Attributes
    ----------
    graph : dict
        The JSON graph as loaded (metadata included).
    arrays : dict of str to ndarray
        The parameter arrays, float32 as stored.
    shapes : dict of str to tuple
        The per-sample output shape of every node (``input`` included); computed on construction.
    path : str or None
        Where the model was loaded from.
    ops : list of srp_np.opset.Node
        The nodes parsed once into typed nodes (attributes checked, defaults filled in).
    """

    graph: dict
    arrays: dict
    shapes: dict = field(default_factory=dict)
    path: str | None = None
    ops: list = field(default_factory=list, repr=False)

    def __post_init__(self):
        try:
            self.shapes, self.ops = _validate(self.graph, self.arrays)
        except SrpError as e:
            raise SrpError(f"{self.path}: {e}" if self.path else str(e)) from None
        self._op_by_name = {n.name: n for n in self.ops}
        static = {"input"}
        for n in self.ops:
            if n.op != "qcfs" and all(s in static for s in n.inputs):
                static.add(n.name)
        self._static = frozenset(static)

    @property
    def static(self) -> frozenset:
        """Nodes that depend on the analog input only (no IF layer upstream), ``input`` included:
        in the SNN they carry the same value at every step and are computed once per image."""
        return self._static

    @property
    def op_by_name(self) -> dict:
        """node name → typed node (:mod:`srp_np.opset`)."""
        return self._op_by_name

    def typed(self, node):
        """The typed node of a node (its JSON dict, its name, or the typed node itself)."""
        if isinstance(node, str):
            return self._op_by_name[node]
        return node if not isinstance(node, dict) else self._op_by_name[node["name"]]

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


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_array_values(key: str, a: np.ndarray) -> None:
    """A parameter array must be floating point and hold float32 numbers: finite, within
    float32's range, and every nonzero value a normal float32 (no overflow, no underflow)."""
    if a.dtype.kind != "f":
        raise SrpError(f"array {_short(key)} must be floating point, got {a.dtype}")
    with np.errstate(all="ignore"):
        if not np.all(np.isfinite(a)):
            raise SrpError(f"array {_short(key)} contains NaN or infinite values")
        mag = np.abs(a)
        if a.size and float(mag.max()) > _F32_MAX:
            raise SrpError(f"array {_short(key)} has values beyond float32's range (|v| > {_F32_MAX:.3g})")
        if np.any((mag < _F32_TINY) & (mag != 0)):
            raise SrpError(f"array {_short(key)} has nonzero values below float32's smallest normal number "
                           f"({_F32_TINY:.3g}): they would underflow")


def validate_graph(graph: Any, arrays: dict) -> dict:
    """Check a graph against the ``srp-np/1`` contract; return the node shapes.

    (:class:`Model` runs this on construction.)

    Runs in time linear in the number of nodes. Besides the structure, every size
    (input shape, node outputs) is checked against :data:`srp_np.limits.MAX_INT` and
    one image's values against the memory available (:func:`srp_np.limits.check_memory`).

    Raises
    ------
    SrpError
        With one line naming the first problem found.
    """
    return _validate(graph, arrays)[0]


def _validate(graph: Any, arrays: dict) -> tuple:
    """:func:`validate_graph`, also returning the typed nodes."""
    if not isinstance(graph, dict):
        raise SrpError("graph must be a JSON object")
    fmt = graph.get("format")
    if fmt != FORMAT:
        raise SrpError(f"unsupported model format {_short(fmt)} (this version reads {FORMAT!r})")
    for key in ("input_shape", "num_classes", "L", "preprocess", "nodes", "output"):
        if key not in graph:
            raise SrpError(f"graph is missing the field {key!r}")
    for key in ("arch", "dataset"):
        if graph.get(key) is not None and not isinstance(graph[key], str):
            raise SrpError(f"{key} must be a string, got {_short(graph[key])}")
        if isinstance(graph.get(key), str) and not graph[key].isprintable():
            raise SrpError(f"{key} holds control characters: {_short(graph[key])}")
    ish = graph["input_shape"]
    if (not isinstance(ish, list) or len(ish) != 3
            or not all(_is_int(v) and 0 < v <= MAX_INT for v in ish)):
        raise SrpError(f"input_shape must be [C, H, W] of positive ints (at most {MAX_INT}), got {_short(ish)}")
    k = graph["num_classes"]
    if not _is_int(k) or not 1 <= k <= MAX_INT:
        raise SrpError(f"num_classes must be a positive int, got {_short(k)}")
    L = graph["L"]
    if not _is_int(L) or not 1 <= L <= MAX_INT:
        raise SrpError(f"L must be a positive int, got {_short(L)}")
    pre = graph["preprocess"]
    if not isinstance(pre, dict) or "mean" not in pre or "std" not in pre:
        raise SrpError("preprocess must be {\"mean\": [C], \"std\": [C]}")
    for key in ("mean", "std"):
        v = pre[key]
        if not isinstance(v, list) or len(v) != ish[0] or not all(_is_number(a) for a in v):
            raise SrpError(f"preprocess.{key} must list {ish[0]} numbers (one per input channel)")
        if not all(math.isfinite(_as_float(a)) for a in v):
            raise SrpError(f"preprocess.{key} must be finite numbers, got {_short(v)}")
    for m, s in zip(pre["mean"], pre["std"]):
        m, s = _as_float(m), _as_float(s)
        if not s > 0:
            raise SrpError("preprocess.std must be positive")
        # a raw pixel in [0, 1] must normalise to a finite float32 number
        if max(abs(m), abs(1.0 - m)) / s > _F32_MAX or s < _F32_TINY:
            raise SrpError(f"preprocess mean {m:g} / std {s:g} would overflow float32 on pixels in [0, 1]")
    nodes = graph["nodes"]
    if not isinstance(nodes, list) or not nodes:
        raise SrpError("nodes must be a non-empty list")
    out = graph["output"]
    if not isinstance(out, str):
        raise SrpError(f"output must be the name of a node, got {_short(out)}")
    shapes = {"input": tuple(ish)}
    typed = []
    for i, node in enumerate(nodes):
        if not isinstance(node, dict) or not isinstance(node.get("name"), str) or "op" not in node:
            raise SrpError(f"node #{i} must be an object with a name and an op")
        name = node["name"]
        if not name.isprintable():       # names are printed in tables: no newline or terminal escape
            raise SrpError(f"node #{i}: name {_short(name)} holds control characters")
        if name in shapes:
            raise SrpError(f"node name {_short(name)} is used twice")
        ins = node.get("inputs")
        if not isinstance(ins, list) or not ins or not all(isinstance(s, str) for s in ins):
            raise SrpError(f"node {_short(name)}: inputs must be a non-empty list of node names")
        for src in ins:
            if src not in shapes:
                # only on error: is it a later node (order or cycle) or no node at all?
                later = any(isinstance(n, dict) and n.get("name") == src for n in nodes[i:])
                if later:
                    raise SrpError(f"node {_short(name)} uses {_short(src)} before it is computed "
                                   "(nodes are not in topological order, or the graph has a cycle)")
                raise SrpError(f"node {_short(name)} uses unknown input {_short(src)}")
        t = parse_node(node)
        shape = tuple(t.infer_shape([shapes[s] for s in ins], arrays))
        typed.append(t)
        size = math.prod(shape)
        if size < 1 or size > MAX_INT:
            raise SrpError(f"node {_short(name)}: output shape {list(shape)} has {size} values per image "
                           f"(must be 1 to {MAX_INT})")
        shapes[name] = shape
    if out not in shapes or out == "input":
        raise SrpError(f"output node {_short(out)} is not a node of the graph")
    if shapes[out] != (k,):
        raise SrpError(f"output node {_short(out)} has shape {list(shapes[out])}, expected [{k}] (num_classes)")
    for key, a in arrays.items():
        _check_array_values(key, a)
    # one image, every node's values in float64 at once, or the largest conv's im2col matrix
    # (input windows × kernel, float64 in the exact modes): the least any simulation needs
    per_image = 8 * sum(math.prod(s) for s in shapes.values())
    for t in typed:
        if t.op == "conv2d":
            w = arrays[t.weight]
            per_image = max(per_image, 8 * math.prod(w.shape[1:]) * math.prod(shapes[t.name][1:]))
    check_memory(per_image, f"one image through this model ({len(nodes)} nodes)",
                 "the model's input_shape or layer sizes are too large for this machine")
    return shapes, typed


def _json_depth_ok(obj, limit: int) -> bool:
    """True when ``obj`` nests no deeper than ``limit`` (iterative: no recursion)."""
    stack = [(obj, 1)]
    while stack:
        o, d = stack.pop()
        if d > limit:
            return False
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return True


def _no_constant(name):
    raise ValueError(f"{name} is not a JSON number")


def parse_graph_json(text: str, where: str = "graph") -> Any:
    """Parse the ``graph`` JSON strictly: no ``NaN``/``Infinity`` literals, nesting at most
    :data:`MAX_JSON_DEPTH` levels (deeper input is refused, never a recursion error)."""
    try:
        graph = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise SrpError(f"{where}: the 'graph' JSON is nested too deeply") from None
    except (ValueError, TypeError) as e:
        raise SrpError(f"{where}: the 'graph' entry is not valid JSON ({_short(str(e), 120)})") from None
    if not _json_depth_ok(graph, MAX_JSON_DEPTH):
        raise SrpError(f"{where}: the 'graph' JSON is nested deeper than {MAX_JSON_DEPTH} levels")
    return graph


_READ_ERRORS = READ_ERRORS


def graph_array_keys(graph) -> set:
    """The array keys a (possibly invalid) graph references: the array attributes of its nodes'
    ops (:mod:`srp_np.opset`), read before the graph is validated."""
    from .opset import REGISTRY

    keys = set()
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    for node in nodes if isinstance(nodes, list) else ():
        if isinstance(node, dict):
            cls = REGISTRY.get(node.get("op")) if isinstance(node.get("op"), str) else None
            for f in cls.attributes() if cls is not None else ():
                if f.metadata["kind"] == "array" and isinstance(node.get(f.name), str):
                    keys.add(node[f.name])
    return keys


def load_model(path) -> Model:
    """Load and validate an ``srp-np/1`` model file.

    Only the arrays the graph references are read; each one's declared size (its
    ``.npy`` header inside the zip) is checked against the memory available before
    it is decompressed, so a small file cannot expand into a huge unused array.
    A FIFO, device or folder is refused before anything is read.

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
        If the file is missing, not an ``.npz``, corrupt, too large for the memory
        available, or violates the format.
    """
    if str(path) == "":
        raise SrpError("model file: empty file name")
    p = Path(path)
    with open_regular(p, "model file") as f:
        if f.read(6) == b"\x93NUMPY":
            raise SrpError(f"{p} is a single .npy array, not an srp-np model (.npz)")
        f.seek(0)
        try:
            zf = zipfile.ZipFile(f)
        except _READ_ERRORS as e:
            raise SrpError(f"cannot read model file {p}: not a valid .npz ({_reason(e)})") from None
        with zf:
            try:
                members = {}
                for info in zf.infolist():
                    key = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
                    members[key] = info
                if "graph" not in members:
                    raise SrpError(f"{p} is not an srp-np model: it has no 'graph' entry")
                ginfo = members.pop("graph")
                if ginfo.file_size > MAX_GRAPH_BYTES:
                    raise SrpError(f"{p}: the 'graph' entry declares {format_bytes(ginfo.file_size)} "
                                   f"(at most {format_bytes(MAX_GRAPH_BYTES)})")
                # parsed JSON takes several times its text's size in Python objects
                check_memory(8 * ginfo.file_size, f"{p}: the 'graph' entry ({format_bytes(ginfo.file_size)})",
                             "this model's graph is too large for this machine")
                gshape, gdtype = npy_member_header(zf, ginfo)
                if gdtype.kind not in "US" or gshape not in ((), (1,)) or not 0 < gdtype.itemsize <= MAX_GRAPH_BYTES:
                    raise SrpError(f"{p}: the 'graph' entry must be a JSON string, got a {gdtype} array "
                                   f"of shape {gshape}")
                g = read_npy_member(zf, ginfo)
                text = g.reshape(()).item()
                if isinstance(text, bytes):
                    text = text.decode("utf-8")
                graph = parse_graph_json(text, str(p))
                wanted = sorted(k for k in graph_array_keys(graph) if k in members)
                headers = {k: npy_member_header(zf, members[k]) for k in wanted}
                total = 0
                for k, (shape, dtype) in headers.items():
                    if dtype.kind != "f":
                        raise SrpError(f"{p}: array {_short(k)} must be floating point, got {dtype}")
                    total += math.prod(shape) * dtype.itemsize
                check_memory(2 * total, f"{p}: the arrays the graph uses ({format_bytes(total)} declared)",
                             "this model is too large for this machine")
                arrays = {k: read_npy_member(zf, members[k]) for k in wanted}
            except SrpError:
                raise
            except _READ_ERRORS as e:
                raise SrpError(f"cannot read model file {p}: not a valid .npz ({_reason(e)})") from None
    for k, a in arrays.items():
        if a.dtype == np.float16:
            arrays[k] = a.astype(np.float32)
    return Model(graph=graph, arrays=arrays, path=str(p))


def _reason(e: BaseException) -> str:
    s = str(e).splitlines()
    return (s[0][:117] + "..." if len(s[0]) > 120 else s[0]) if s and s[0] else type(e).__name__


def save_model(path, graph: dict, arrays: dict) -> Model:
    """Validate and write an ``srp-np/1`` file atomically (temp file, then rename).

    Floating-point arrays are stored as float32. Returns the validated model.
    """
    graph = dict(graph)
    graph.setdefault("format", FORMAT)
    arrays = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32)) for k, v in arrays.items()}
    if "graph" in arrays:
        raise SrpError("an array may not be called 'graph'")
    Model(graph=json.loads(json.dumps(graph)), arrays=arrays)       # validate before writing anything
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, graph=np.array(json.dumps(graph)), **arrays)

    atomic_write(p, write)
    return Model(graph=graph, arrays=arrays, path=str(p))
