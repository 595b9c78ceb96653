"""Exact graph rewrites applied before simulation.

:func:`fold_batchnorm` folds each ``batchnorm2d`` into the conv or linear layer that feeds it
when nothing else reads that layer: the affine ``y = a·x + c`` of the normalisation
(:meth:`srp_np.opset.batchnorm2d.BatchNorm2d.affine`) becomes ``W' = a·W`` and
``b' = a·b + c`` (computed in float64, stored in float32 like every array). This is the same
network; the spiking network then runs one layer instead of two. A batch norm that cannot be
folded (after an add, a pool, an IF layer) stays and is applied to the values it receives.
"""
from __future__ import annotations

import numpy as np

from ..model import Model


def fold_batchnorm(model: Model) -> Model:
    """``model`` with every foldable ``batchnorm2d`` folded into the layer before it (the model
    itself when there is none). Consumers of a folded node read the layer instead; if the batch
    norm was the output, the layer becomes the output."""
    by = model.op_by_name
    consumers = {}
    for n in model.ops:
        for s in n.inputs:
            consumers[s] = consumers.get(s, 0) + 1
    folds = {}          # batch-norm name → the conv / linear it folds into
    for n in model.ops:
        if n.op != "batchnorm2d":
            continue
        src = by.get(n.inputs[0])
        if src is not None and src.op in ("conv2d", "linear") and consumers.get(src.name) == 1 \
                and src.name != model.output and src.name not in folds.values():
            folds[n.name] = src.name
    if not folds:
        return model
    arrays = dict(model.arrays)
    into = {v: by[k] for k, v in folds.items()}          # layer name → its batch norm
    nodes = []
    for raw in model.nodes:
        name = raw["name"]
        if name in folds:
            continue
        raw = dict(raw, inputs=[folds.get(s, s) for s in raw["inputs"]])
        if name in into:
            a, c = into[name].affine(model.arrays)
            w = model.arrays[raw["weight"]].astype(np.float64)
            b = np.zeros(w.shape[0]) if raw.get("bias") is None else model.arrays[raw["bias"]].astype(np.float64)
            shape = (-1,) + (1,) * (w.ndim - 1)
            wk, bk = _fresh(arrays, f"{name}.weight+bn"), None
            arrays[wk] = (w * a.reshape(shape)).astype(np.float32)
            bk = _fresh(arrays, f"{name}.bias+bn")
            arrays[bk] = (b * a + c).astype(np.float32)
            raw.update(weight=wk, bias=bk)
        nodes.append(raw)
    graph = dict(model.graph, nodes=nodes, output=folds.get(model.output, model.output))
    used = {k for t in Model(graph=graph, arrays=arrays).ops for k in t.array_keys()}
    return Model(graph=graph, arrays={k: v for k, v in arrays.items() if k in used}, path=model.path)


def _fresh(arrays: dict, key: str) -> str:
    k, i = key, 1
    while k in arrays:
        i += 1
        k = f"{key}{i}"
    return k
