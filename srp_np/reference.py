"""Dense reference simulator: the plain, time-step-major SNN of the authors' code.

Every step runs the whole network in topological order on dense NumPy
arrays, exactly as the PyTorch implementation of Algorithm 1 does. It is slow
and obviously correct; the event-driven simulator (:mod:`srp_np.simulator`)
is tested against it spike for spike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .neuron import DEFAULT_MASK_EPS, if_init, if_step, srp_keep_mask
from .ops import apply_linear_node


@dataclass
class DenseResult:
    """What :func:`simulate_dense` returns.

    ``outputs[t-1]`` is the mean of the output node over the first t stage-2
    steps (N×K). Per IF layer (keyed by qcfs node name, arrays N×shape):
    ``spikes`` stage-2 spike counts after masking, ``spikes_stage1``,
    ``input_sum`` Σ of the stage-2 input currents, ``v_tau`` the residual
    membrane after stage 1 (None when τ = 0), ``mask`` the keep-mask (all True when τ = 0),
    ``v_final`` the membrane after the last step.
    """

    outputs: np.ndarray
    spikes: dict = field(default_factory=dict)
    spikes_stage1: dict = field(default_factory=dict)
    input_sum: dict = field(default_factory=dict)
    v_tau: dict = field(default_factory=dict)
    mask: dict = field(default_factory=dict)
    v_final: dict = field(default_factory=dict)


def simulate_dense(model, x, tau: int, T: int, dtype=np.float64, mask_eps: float = DEFAULT_MASK_EPS) -> DenseResult:
    """Simulate Algorithm 1 (SRP) densely; ``tau = 0`` is plain QCFS conversion.

    Parameters
    ----------
    model : Model
    x : ndarray
        Normalised inputs N×C×H×W; the analog image is fed every step.
    tau, T : int
        Stage-1 and stage-2 lengths.
    """
    dtype = np.dtype(dtype).type
    x = np.asarray(x, dtype=dtype)
    n = x.shape[0]
    qnodes = model.qcfs_nodes
    state = {q["name"]: if_init((n,) + model.shapes[q["name"]], dtype(q["threshold"]), dtype) for q in qnodes}
    masks = {q["name"]: None for q in qnodes}
    res = DenseResult(outputs=np.zeros((T, n, model.num_classes), dtype=np.float64))
    for q in qnodes:
        shp = (n,) + model.shapes[q["name"]]
        res.spikes[q["name"]] = np.zeros(shp, np.int64)
        res.spikes_stage1[q["name"]] = np.zeros(shp, np.int64)
        res.input_sum[q["name"]] = np.zeros(shp, np.float64)
    acc = np.zeros((n, model.num_classes), dtype=np.float64)

    def step(stage2: bool):
        values = {"input": x}
        for node in model.nodes:
            name = node["name"]
            ins = [values[s] for s in node["inputs"]]
            if node["op"] == "qcfs":
                cur = ins[0]
                out, s, state[name] = if_step(cur, state[name], dtype(node["threshold"]), masks[name])
                if stage2:
                    res.spikes[name] += s
                    res.input_sum[name] += cur
                else:
                    res.spikes_stage1[name] += s
                values[name] = out
            else:
                values[name] = apply_linear_node(model, node, ins)
        return values[model.output]

    for _ in range(tau):
        step(False)
    for q in qnodes:
        name, th = q["name"], dtype(q["threshold"])
        if tau > 0:
            res.v_tau[name] = state[name].v.copy()
            masks[name] = srp_keep_mask(state[name].v, th, mask_eps)
            state[name] = if_init(state[name].v.shape, th, dtype)
        else:
            res.v_tau[name] = None
        res.mask[name] = masks[name] if masks[name] is not None else np.ones(state[name].v.shape, bool)
    for t in range(T):
        acc += step(True)
        res.outputs[t] = acc / (t + 1)
    for q in qnodes:
        res.v_final[q["name"]] = state[q["name"]].v
    return res
