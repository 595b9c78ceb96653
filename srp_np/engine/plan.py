"""The engine's plan: what runs where, decided once per model and batch geometry.

:func:`make_plan` is a pure function of the model and ``(B, S, threads, record)``: it says
which nodes are static (computed once per image from the analog input), what kind of value
each node produces, which convs run fused with the IF layer (and residual add) they feed,
and after which step each value's buffers can be given back. :class:`srp_np.engine.Engine`
executes it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..kernels.simd import MAX_POOL_WINDOW
from .values import positions

#: The kinds of value a node produces (:mod:`.values`).
KINDS = ("static", "spikes", "pooled", "dense")


@dataclass(frozen=True)
class Step:
    """One node of the plan.

    ``how`` names the lowering: ``static`` (dense NumPy, once per image), ``if`` (IF layer with
    SRP), ``gather`` (conv / linear fed by spikes), ``gather_if`` (a conv fused with the IF layer
    ``fused_if``, and with the residual add ``fused_add`` whose other input is ``residual``),
    ``pool_spikes`` (a k = stride pool of spikes, not materialised), ``events`` (a synaptic
    node fed by dense values), ``flatten``, ``add``, ``op`` (the op's own :meth:`lower`) or
    ``fused`` (computed by an earlier step). ``frees``: values no later step reads.
    """

    node: object
    how: str
    kind: str
    fused_if: str | None = None
    fused_add: str | None = None
    residual: str | None = None
    frees: tuple = ()


@dataclass(frozen=True)
class Plan:
    steps: tuple
    kinds: dict = field(default_factory=dict)
    #: node → how many times nodes list it as an input
    consumers: dict = field(default_factory=dict)

    @property
    def static(self) -> frozenset:
        return frozenset(n for n, k in self.kinds.items() if k == "static")

    def describe(self) -> str:
        """One line per step: ``name  how  kind  [fused …]  frees …``."""
        lines = []
        for s in self.steps:
            extra = "".join(f" {k}={v}" for k, v in (("if", s.fused_if), ("add", s.fused_add), ("res", s.residual))
                            if v)
            lines.append(f"{s.node.name:<24} {s.how:<11} {s.kind:<7}{extra}"
                         + (f"  frees {', '.join(s.frees)}" if s.frees else ""))
        return "\n".join(lines)


def fused_position_blocks(B: int, threads: int, H: int, W: int) -> int:
    """Position blocks per image of a fused conv → IF kernel: one when there are enough images
    to keep the threads busy, else enough to, unless blocks would be too small to reuse weights."""
    return 1 if B >= 2 * threads else min(-(-4 * threads // B), H * W // 32)


def make_plan(model, B: int, S: int, threads: int, record: bool = False) -> Plan:
    """The plan of one chunk of ``B`` images × ``S`` steps on ``threads`` threads."""
    ops = model.ops
    by = model.op_by_name
    shapes = model.shapes
    out = model.output
    order = {"input": -1, **{n.name: i for i, n in enumerate(ops)}}
    consumers = {}
    last_use = {}
    for i, n in enumerate(ops):
        for s in n.inputs:
            consumers[s] = consumers.get(s, 0) + 1
            last_use[s] = i

    kinds = {"input": "static"}
    for n in ops:
        if n.name in model.static:
            kinds[n.name] = "static"
        elif n.op == "qcfs":
            kinds[n.name] = "spikes"
        elif n.op == "avgpool2d" and kinds[n.inputs[0]] == "spikes" and len(shapes[n.name]) == 3 \
                and n.kernel == n.stride:
            kinds[n.name] = "pooled"
        elif n.op == "flatten" and kinds[n.inputs[0]] in ("spikes", "pooled") and positions(shapes[n.inputs[0]]) == 1:
            kinds[n.name] = kinds[n.inputs[0]]
        else:
            kinds[n.name] = "dense"

    def gather_reads(name) -> bool:
        """A value the gather kernels read: a spike map or its pool (window ≤ MAX_POOL_WINDOW words)."""
        if kinds[name] == "spikes":
            return True
        if kinds[name] != "pooled":
            return False
        src = by[name]
        while src.op == "flatten":
            src = by[src.inputs[0]]
        return src.kernel * src.kernel <= MAX_POOL_WINDOW

    def fusable_conv(name) -> bool:
        return name != out and kinds.get(name) == "dense" and consumers.get(name) == 1 and by[name].op == "conv2d" \
            and gather_reads(by[name].inputs[0]) and len(shapes[by[name].inputs[0]]) == 3

    # conv → IF, and conv → add → IF (a ResNet block's later conv), when the batch keeps the threads busy
    fuse = {}        # conv name → (IF name, add name or None, residual name or None)
    if not record:
        for q in ops:
            if q.op != "qcfs":
                continue
            src = q.inputs[0]
            c, h, w = shapes[src] if len(shapes[src]) == 3 else (0, 0, 0)
            if not c or B * fused_position_blocks(B, threads, h, w) < 2 * threads:
                continue
            if fusable_conv(src):
                fuse[src] = (q.name, None, None)
                continue
            add = by.get(src)
            if add is None or add.op != "add" or len(add.inputs) != 2 or kinds[src] == "static" or src == out \
                    or consumers.get(src) != 1:
                continue
            a, o = add.inputs
            if order[a] < order[o]:      # fuse the later input, so the other one is ready by then
                a, o = o, a
            for conv, other in ((a, o), (o, a)):
                if conv != other and fusable_conv(conv):
                    okind = kinds[other]
                    if (okind == "spikes" and tuple(shapes[other]) == tuple(shapes[conv])) or okind == "dense":
                        fuse[conv] = (q.name, add.name, other)
                    break

    fused_names = {v for f in fuse.values() for v in f[:2] if v}
    steps = []
    for i, n in enumerate(ops):
        frees = tuple(s for s in dict.fromkeys(n.inputs) if last_use[s] == i and s != out)
        kind = kinds[n.name]
        if kind == "static":
            how = "static"
        elif n.name in fused_names:
            how = "fused"
        elif n.op == "qcfs":
            how = "if"
        elif n.name in fuse:
            q, add, other = fuse[n.name]
            steps.append(Step(n, "gather_if", kind, q, add, other, frees))
            continue
        elif n.op == "conv2d" and gather_reads(n.inputs[0]) and len(shapes[n.inputs[0]]) == 3:
            how = "gather"
        elif n.op == "linear" and gather_reads(n.inputs[0]) and positions(shapes[_unflattened(by, n.inputs[0])]) == 1:
            how = "gather"
        elif kind == "pooled" and n.op == "avgpool2d":
            how = "pool_spikes"
        elif n.op in ("conv2d", "linear", "avgpool2d"):
            how = "events"
        elif n.op == "flatten":
            how = "flatten"
        elif n.op == "add":
            how = "add"
        else:
            how = "op"
        steps.append(Step(n, how, kind, frees=frees))
    return Plan(steps=tuple(steps), kinds=kinds, consumers=consumers)


def _unflattened(by, name):
    """The node a spike value was made by, looking through flattens (its map shape is the one read)."""
    while name in by and by[name].op == "flatten":
        name = by[name].inputs[0]
    return name
