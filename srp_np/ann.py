"""NumPy forward pass of the source ANN (QCFS activations, Eq. 7)."""
from __future__ import annotations

import numpy as np

from .analytic import qcfs
from .ops import apply_linear_node


def ann_forward(model, x, dtype=np.float64, return_activations: bool = False):
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

    Returns
    -------
    logits : ndarray, N×K
    acts : dict, only if ``return_activations``
    """
    dtype = np.dtype(dtype).type
    values = {"input": np.asarray(x, dtype=dtype)}
    acts = {}
    L = model.L
    for node in model.nodes:
        ins = [values[s] for s in node["inputs"]]
        if node["op"] == "qcfs":
            lam = dtype(node["threshold"])
            a = qcfs(ins[0], lam, L).astype(dtype)
            if return_activations:
                acts[node["name"]] = (ins[0], a)
            values[node["name"]] = a
        else:
            values[node["name"]] = apply_linear_node(model, node, ins)
    logits = values[model.output]
    return (logits, acts) if return_activations else logits
