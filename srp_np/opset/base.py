"""Typed nodes: attribute kinds, parsing and the op registry."""
from __future__ import annotations

import math
from dataclasses import MISSING, dataclass, field, fields
from typing import ClassVar

import numpy as np

from ..errors import SrpError
from ..limits import MAX_INT

_F32 = np.finfo(np.float32)
F32_TINY, F32_MAX = float(_F32.tiny), float(_F32.max)

#: op name → node class
REGISTRY: dict = {}


def register(cls):
    """Class decorator: add an op (a :class:`Node` subclass with ``OP`` set) to the registry."""
    if cls.OP in REGISTRY:
        raise ValueError(f"op {cls.OP!r} registered twice")
    REGISTRY[cls.OP] = cls
    return cls


def attr(kind: str, default=MISSING, doc: str = ""):
    """A node attribute: ``kind`` is ``"int"`` (an int or a square pair ``[k, k]``), ``"array"``
    (the key of a parameter array, or null when there is a default), ``"positive"`` (a positive
    number float32 holds as a normal number) or ``"number"`` (a finite number)."""
    return field(default=default, metadata={"kind": kind, "doc": doc})


def short(v, n: int = 60) -> str:
    """``repr(v)`` cut to ``n`` characters (error lines stay short whatever the file holds)."""
    try:
        r = repr(v)
    except (ValueError, RecursionError):      # e.g. an int too long to print
        r = f"<{type(v).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def as_float(v) -> float:
    """``float(v)``, with a JSON integer too large for a float becoming ``inf``."""
    try:
        return float(v)
    except OverflowError:
        return math.inf if v > 0 else -math.inf


def _parse_int(v, what: str) -> int:
    if isinstance(v, (list, tuple)):
        if len(v) != 2 or v[0] != v[1]:
            raise SrpError(f"{what} must be a single int or a square pair, got {short(v)}")
        v = v[0]
    if not isinstance(v, int) or isinstance(v, bool):
        raise SrpError(f"{what} must be an integer, got {short(v)}")
    if abs(v) > MAX_INT:
        raise SrpError(f"{what} is out of range: {short(v)}")
    return v


def _parse_value(kind: str, v, what: str):
    if kind == "int":
        return _parse_int(v, what)
    if kind == "array":
        if v is not None and not isinstance(v, str):
            raise SrpError(f"{what} must be an array key or null")
        return v
    if kind == "positive":
        ok = is_number(v) and math.isfinite(as_float(v)) and F32_TINY <= as_float(v) <= F32_MAX
        if not ok:
            raise SrpError(f"{what} must be a positive number representable in float32 "
                           f"({F32_TINY:.3g} to {F32_MAX:.3g}), got {short(v)}")
        return as_float(v)
    if kind == "number":
        if not (is_number(v) and math.isfinite(as_float(v))):
            raise SrpError(f"{what} must be a finite number, got {short(v)}")
        return as_float(v)
    raise AssertionError(kind)


@dataclass(frozen=True)
class Node:
    """A typed graph node. Subclasses set ``OP`` and ``ARITY`` (inputs: an int, or None for two or more)
    and declare their attributes with :func:`attr`."""

    OP: ClassVar[str] = ""
    ARITY: ClassVar[int | None] = 1

    name: str
    inputs: tuple

    @property
    def op(self) -> str:
        return self.OP

    @property
    def where(self) -> str:
        return f"node {short(self.name)} ({self.OP})"

    @classmethod
    def attributes(cls) -> list:
        """The op's attribute fields (name, kind, default)."""
        return [f for f in fields(cls) if "kind" in f.metadata]

    @classmethod
    def parse(cls, raw: dict) -> "Node":
        """The typed node of a JSON node object (attributes checked; defaults filled in)."""
        where = f"node {short(raw['name'])} ({cls.OP})"
        ins = tuple(raw["inputs"])
        if cls.ARITY is None:
            if len(ins) < 2:
                raise SrpError(f"{where}: needs at least two inputs")
        elif len(ins) != cls.ARITY:
            raise SrpError(f"{where}: expects exactly {'one input' if cls.ARITY == 1 else f'{cls.ARITY} inputs'}, "
                           f"got {len(ins)}")
        values = {}
        for f in cls.attributes():
            kind = f.metadata["kind"]
            if f.name in raw and not (raw[f.name] is None and f.default is not MISSING):
                values[f.name] = _parse_value(kind, raw[f.name], f"{where}: {f.name}")
            elif f.default is MISSING:
                raise SrpError(f"{where}: {f.name} is required")
        node = cls(name=raw["name"], inputs=ins, **values)
        node.check()
        return node

    def check(self) -> None:
        """Checks between attributes (after parsing); raise SrpError."""

    # ---------------------------------------------------------------- the op's behaviour
    def infer_shape(self, in_shapes: list, arrays: dict) -> tuple:
        raise NotImplementedError

    def dense(self, inputs: list, arrays: dict, workspace=None) -> np.ndarray:
        """NumPy semantics on a batch (N × shape); inputs keep their dtype."""
        raise NotImplementedError

    def ann_ops(self, in_shapes: list, out_shape: tuple, arrays: dict) -> tuple:
        """``(MACs, adds)`` of the ANN for one image (exact, padding taps excluded)."""
        return 0, 0

    #: Whether the node's operations count as synaptic operations of the SNN.
    SYNAPTIC: ClassVar[bool] = False

    # ---------------------------------------------------------------- helpers for the ops
    def array(self, arrays: dict, key_attr: str, required: bool = False):
        """The parameter array an attribute names (None when the attribute is null)."""
        k = getattr(self, key_attr)
        if k is None:
            if required:
                raise SrpError(f"{self.where}: {key_attr} is required")
            return None
        if k not in arrays:
            raise SrpError(f"{self.where}: array {short(k)} is missing from the file")
        a = arrays[k]
        if a.size == 0:
            raise SrpError(f"{self.where}: array {short(k)} is empty (shape {a.shape})")
        return a

    def array_keys(self) -> list:
        """The array keys this node references."""
        return [getattr(self, f.name) for f in self.attributes()
                if f.metadata["kind"] == "array" and getattr(self, f.name) is not None]


def parse_node(raw: dict) -> Node:
    """The typed node of one JSON node object (``name``, ``op``, ``inputs`` already checked)."""
    cls = REGISTRY.get(raw["op"]) if isinstance(raw["op"], str) else None
    if cls is None:
        raise SrpError(f"node {short(raw['name'])} ({short(raw['op'], 20)}): unknown op {short(raw['op'])} "
                       f"(known: {', '.join(REGISTRY)})")
    return cls.parse(raw)


def covered(n_in: int, k: int, stride: int, pad: int, n_out: int) -> int:
    """Σ over output positions of the kernel taps that land inside the input (1-d)."""
    total = 0
    for o in range(n_out):
        start = o * stride - pad
        total += max(0, min(start + k, n_in) - max(start, 0))
    return total
