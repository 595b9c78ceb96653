"""NumPy forward pass of the source ANN (QCFS activations, Eq. 7)."""
from __future__ import annotations

import numpy as np

from .ops import Workspace, apply_linear_node


def ann_forward(model, x, dtype=np.float64, return_activations: bool = False, workspace: Workspace | None = None):
    """Run the QCFS ANN on already-normalised inputs.

    Parameters
    ----------
    model : Model
    x : ndarray
        N×C×H×W inputs, already passed through :meth:`Model.preprocess`.
    dtype : numpy dtype
        Arithmetic precision.
    return_activations : bool
        Also return ``{qcfs node name: (pre-activation y, activation a)}``.
    workspace : ops.Workspace, optional
        Scratch arrays reused by the convolutions (pass one per thread to reuse
        them across calls); results do not depend on it.

    Returns
    -------
    logits : ndarray, N×K
    acts : dict, only if ``return_activations``

    Every value is computed exactly as :func:`srp_np.analytic.qcfs` and the
    operators of :mod:`srp_np.ops` compute it; values are dropped once no later
    node reads them, so memory stays at a few layers' worth.
    """
    dtype = np.dtype(dtype).type
    ws = workspace if workspace is not None else Workspace()
    values = {"input": np.asarray(x, dtype=dtype)}
    last_use = {}
    for i, node in enumerate(model.nodes):
        for s in node["inputs"]:
            last_use[s] = i
    last_use[model.output] = len(model.nodes)
    acts = {}
    L = model.L
    for i, node in enumerate(model.nodes):
        ins = [values[s] for s in node["inputs"]]
        if node["op"] == "qcfs":
            a = model.typed(node).dense(ins, model.arrays, L=L)
            if return_activations:
                acts[node["name"]] = (ins[0], a)
            values[node["name"]] = a
        else:
            values[node["name"]] = apply_linear_node(model, node, ins, ws)
        del ins
        for s in set(node["inputs"]):
            if last_use[s] == i:
                del values[s]
    logits = values[model.output]
    return (logits, acts) if return_activations else logits
