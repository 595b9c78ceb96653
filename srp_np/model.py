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
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import SrpError
from .fileio import READ_ERRORS, atomic_write, npy_member_header, open_regular, read_npy_member
from .limits import MAX_INT, check_memory, format_bytes

#: Deepest JSON nesting a graph may have (a valid one has 4 levels: graph, nodes, node, inputs).
MAX_JSON_DEPTH = 32

#: Largest ``graph`` entry (JSON text) read from a model file.
MAX_GRAPH_BYTES = 256 * 2**20

_F32 = np.finfo(np.float32)
_F32_TINY, _F32_MAX = float(_F32.tiny), float(_F32.max)   # Python floats: comparisons never warn

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
        raise SrpError(f"{what} must be an integer, got {_short(v)}")
    if abs(v) > MAX_INT:
        raise SrpError(f"{what} is out of range: {_short(v)}")
    return v


def _short(v, n: int = 60) -> str:
    """``repr(v)`` cut to ``n`` characters (error lines stay short whatever the file holds)."""
    try:
        r = repr(v)
    except (ValueError, RecursionError):      # e.g. an int too long to print
        r = f"<{type(v).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _as_float(v) -> float:
    """``float(v)``, with a JSON integer too large for a float becoming ``inf``."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _check_threshold(th, where: str) -> None:
    """θ must be a finite positive number that float32 holds as a normal number."""
    ok = _is_number(th)
    if ok:
        f = _as_float(th)
        ok = math.isfinite(f) and _F32_TINY <= f <= _F32_MAX
    if not ok:
        raise SrpError(f"{where}: threshold must be a positive number representable in float32 "
                       f"({_F32_TINY:.3g} to {_F32_MAX:.3g}), got {_short(th)}")


def _infer_shape(model_arrays: dict, node: dict, in_shapes: list) -> tuple:
    name, op = node["name"], node["op"]
    where = f"node {_short(name)} ({_short(op, 20)})"

    def arr(key):
        k = node.get(key)
        if k is None:
            return None
        if not isinstance(k, str):
            raise SrpError(f"{where}: {key} must be an array key or null")
        if k not in model_arrays:
            raise SrpError(f"{where}: array {_short(k)} is missing from the file")
        a = model_arrays[k]
        if a.size == 0:
            raise SrpError(f"{where}: array {_short(k)} is empty (shape {a.shape})")
        return a

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
            raise SrpError(f"{where}: input shapes differ: {_short([list(s) for s in in_shapes], 120)}")
        return tuple(in_shapes[0])
    if op == "qcfs":
        _check_threshold(node.get("threshold"), where)
        return tuple(in_shapes[0])
    raise SrpError(f"{where}: unknown op {_short(op)} (known: {', '.join(OPS)})")


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

    Runs in time linear in the number of nodes. Besides the structure, every size
    (input shape, node outputs) is checked against :data:`srp_np.limits.MAX_INT` and
    one image's values against the memory available (:func:`srp_np.limits.check_memory`).

    Raises
    ------
    SrpError
        With one line naming the first problem found.
    """
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
        shape = _infer_shape(arrays, node, [shapes[s] for s in ins])
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
    for node in nodes:
        if node["op"] == "conv2d":
            w = arrays[node["weight"]]
            per_image = max(per_image, 8 * math.prod(w.shape[1:]) * math.prod(shapes[node["name"]][1:]))
    check_memory(per_image, f"one image through this model ({len(nodes)} nodes)",
                 "the model's input_shape or layer sizes are too large for this machine")
    return shapes


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
    """The array keys a (possibly invalid) graph references: ``weight`` and ``bias`` of its nodes."""
    keys = set()
    nodes = graph.get("nodes") if isinstance(graph, dict) else None
    for node in nodes if isinstance(nodes, list) else ():
        if isinstance(node, dict):
            for attr in ("weight", "bias"):
                if isinstance(node.get(attr), str):
                    keys.add(node[attr])
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
    try:
        shapes = validate_graph(graph, arrays)
    except SrpError as e:
        raise SrpError(f"{p}: {e}") from None
    return Model(graph=graph, arrays=arrays, shapes=shapes, path=str(p))


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
    shapes = validate_graph(json.loads(json.dumps(graph)), arrays)
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, graph=np.array(json.dumps(graph)), **arrays)

    atomic_write(p, write)
    return Model(graph=graph, arrays=arrays, shapes=shapes, path=str(p))
