"""Dense reference simulator: the plain, time-step-major SNN of the authors' code.

Every step runs the whole network in topological order on dense NumPy
arrays, exactly as the PyTorch implementation of Algorithm 1 does. It is slow
and obviously correct; the event-driven simulator (:mod:`srp_np.simulator`)
is tested against it spike for spike.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE, check_mask_rule, if_init, if_step, srp_stage_boundary
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


def simulate_dense(model, x, tau: int, T: int, dtype=np.float64, mask_eps: float = DEFAULT_MASK_EPS,
                   mask_rule: str = DEFAULT_MASK_RULE) -> DenseResult:
    """Simulate Algorithm 1 (SRP) densely; ``tau = 0`` is plain QCFS conversion.

    Parameters
    ----------
    model : Model
    x : ndarray
        Normalised inputs N×C×H×W; the analog image is fed every step.
    tau, T : int
        Stage-1 and stage-2 lengths.
    mask_eps, mask_rule
        The SRP keep-mask (:func:`srp_np.neuron.srp_keep_mask`).
    """
    check_mask_rule(mask_rule)
    from .engine.fold import fold_batchnorm

    model = fold_batchnorm(model)      # the same exact rewrite the event-driven engine simulates
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

    static = model.static       # nodes that depend on the analog input only (computed as the ANN does)

    def step(stage2: bool):
        values = {"input": x}
        for node in model.nodes:
            name = node["name"]
            ins = [values[s] for s in node["inputs"]]
            if node["op"] == "avgpool2d" and name not in static:
                t = model.typed(node)
                values[name] = avgpool_in_tap_order(ins[0], t.kernel, t.stride)
            elif node["op"] == "qcfs":
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
            masks[name], state[name] = srp_stage_boundary(state[name], th, mask_eps, mask_rule)
        else:
            res.v_tau[name] = None
        res.mask[name] = masks[name] if masks[name] is not None else np.ones(state[name].v.shape, bool)
    for t in range(T):
        acc += step(True)
        res.outputs[t] = acc / (t + 1)
    for q in qnodes:
        res.v_final[q["name"]] = state[q["name"]].v
    return res


def avgpool_in_tap_order(x: np.ndarray, k: int, stride: int) -> np.ndarray:
    """Average pool (no padding) of N×C×H×W that sums each window in tap order (dy, dx)
    from +0, then divides by k².

    This is the order in which the event-driven simulator pools a time-varying value
    (spike maps and currents alike), so the two agree bit for bit even where a 1-ulp
    difference would flip a spike at an exact tie (NumPy's ``mean`` groups the sum
    differently). The value is the mean of Eq. 2's θ·s over the window either way.
    """
    N, C, H, W = x.shape
    Ho, Wo = (H - k) // stride + 1, (W - k) // stride + 1
    acc = np.zeros((N, C, Ho, Wo), dtype=x.dtype)
    for dy in range(k):
        for dx in range(k):
            acc += x[:, :, dy:dy + stride * (Ho - 1) + 1:stride, dx:dx + stride * (Wo - 1) + 1:stride]
    return acc / x.dtype.type(k * k)
