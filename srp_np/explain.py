"""Step-by-step mechanics of conversion, for teaching (``srp-np explain``).

* :func:`fig1` — the paper's Fig. 1 example: two presynaptic neurons with
  W = [2, −1], a^{l-1} = φ^{l-1} = [0.5, 0.5] (3 spikes each in T = 6 steps,
  θ^{l-1} = 1), θ^l = λ^l = 1, so the ANN output is a^l = ReLU(2·0.5 − 0.5) = 0.5.
  The same spike *counts* in three different *orders* give φ^l = 0.5 (ideal),
  4/6 (more spikes than the ANN) and 2/6 (fewer): the unevenness error.
* :func:`neuron_trace` — the same trace for one neuron of a real model, stage
  1 and stage 2 of SRP, with v(τ), the mask decision, the ANN value and the
  case of the unevenness error it falls in.
* :func:`step_frames` — that trace as one screen per step, for the
  terminal step-through ``srp-np explain step``.
* :func:`theorem1_demo` — random single-layer examples that check the
  statements of Theorem 1 neuron by neuron, with counts.
"""
from __future__ import annotations

import numpy as np

from .analysis import CASES, DEFAULT_RTOL, classify
from .analytic import qcfs, theorem1_holds
from .errors import SrpError
from .limits import check_memory
from .neuron import DEFAULT_MASK_EPS, check_mask_eps, if_init, if_step, srp_keep_mask
from .ops import apply_linear_node
from .tables import text_table

#: Bytes a neuron trace keeps per step: its record (~1.7 KiB measured) and the JSON or text made from it.
TRACE_BYTES_PER_STEP = 4096

# ----------------------------------------------------------------------------- Fig. 1

FIG1_W = (2.0, -1.0)
FIG1_A = (0.5, 0.5)
FIG1_THETA = 1.0
FIG1_T = 6
#: Spike times (1-based) of the two presynaptic neurons in each scenario. The
#: paper gives the counts (3 of 6 each); these orders reproduce its three panels.
FIG1_ORDERS = {
    "ideal": ("Fig. 1(b) ideal: spikes arrive evenly", ((1, 3, 5), (1, 3, 5))),
    "more": ("Fig. 1(c) uneven: the +2 input arrives first", ((1, 2, 3), (4, 5, 6))),
    "fewer": ("Fig. 1(d) uneven: the -1 input arrives first", ((4, 5, 6), (1, 2, 3))),
}


def if_trace(currents, theta: float, v0: float | None = None, mask: bool = True) -> list:
    """Step one IF neuron (reset by subtraction) through ``currents``; one dict per step.

    Keys: ``t`` (1-based), ``input`` x(t), ``v_before`` v(t−1), ``u`` v(t−1)+x(t),
    ``spike`` (0/1, after the mask), ``fired`` (0/1, before the mask), ``v_after`` v(t),
    ``count`` spikes so far, ``phi`` running θ·count/t.
    """
    v = theta / 2 if v0 is None else float(v0)
    rows, count = [], 0
    for t, x in enumerate(currents, start=1):
        u = v + float(x)
        fired = int(u >= theta)
        v_new = u - theta * fired
        spike = fired if mask else 0
        count += spike
        rows.append({"t": t, "input": float(x), "v_before": v, "u": u, "fired": fired, "spike": spike,
                     "v_after": v_new, "count": count, "phi": theta * count / t})
        v = v_new
    return rows


def fig1(v0: float | None = None) -> dict:
    """The three scenarios of Fig. 1(b)-(d).

    Parameters
    ----------
    v0 : float, optional
        Initial membrane; default θ/2 (Algorithm 1, line 3). With v0 = 0 the
        counts are the same (4 and 2 spikes).

    Returns
    -------
    dict
        ``{"W", "a_prev", "theta", "T", "a", "v0", "scenarios": [{"key", "title",
        "pre_spikes" (2×T 0/1 lists), "steps" (see :func:`if_trace`), "phi",
        "error", "v_T"}]}``.
    """
    W = np.array(FIG1_W)
    theta, T = FIG1_THETA, FIG1_T
    a = float(max(0.0, W @ np.array(FIG1_A)))
    scen = []
    for key, (title, times) in FIG1_ORDERS.items():
        pre = np.zeros((2, T), dtype=int)
        for i, ts in enumerate(times):
            pre[i, [t - 1 for t in ts]] = 1
        currents = W @ (pre * 1.0)  # θ^{l-1} = 1: each presynaptic spike is worth 1
        steps = if_trace(currents, theta, v0)
        phi = steps[-1]["phi"]
        scen.append({"key": key, "title": title, "pre_spikes": pre.tolist(), "steps": steps,
                     "phi": phi, "error": phi - a, "v_T": steps[-1]["v_after"]})
    return {"W": list(FIG1_W), "a_prev": list(FIG1_A), "theta": theta, "T": T, "a": a,
            "v0": theta / 2 if v0 is None else float(v0), "scenarios": scen}


def format_steps(steps: list, extra: dict | None = None) -> str:
    """A plain-text table of :func:`if_trace` rows (``extra``: column name → list of values)."""
    head = ["t"] + list(extra or {}) + ["input x(t)", "v(t-1)", "u=v+x", "spike", "v(t)", "phi(t)"]
    rows = []
    for i, r in enumerate(steps):
        cells = [str(r["t"])] + [str(v[i]) for v in (extra or {}).values()]
        spike = "1" if r["spike"] else ("(1 masked)" if r["fired"] else "0")
        cells += [f"{r['input']:+.4g}", f"{r['v_before']:.4g}", f"{r['u']:.4g}", spike,
                  f"{r['v_after']:.4g}", f"{r['phi']:.4g}"]
        rows.append(cells)
    return "\n".join(text_table(head, rows, first_left=False))


# ----------------------------------------------------------------------------- one real neuron

def parse_index(text, shape) -> tuple:
    """``"c,y,x"`` (or a flat ``"i"``) → a tuple index into a layer of ``shape``."""
    try:
        idx = tuple(int(v) for v in str(text).replace(" ", "").split(","))
    except ValueError:
        raise SrpError(f"`index` must be comma-separated integers like 0,3,4, got {text!r}") from None
    shape = tuple(shape)
    if len(idx) == 1 and len(shape) > 1:
        if not 0 <= idx[0] < int(np.prod(shape)):
            raise SrpError(f"`index` {idx[0]} is outside the layer's {int(np.prod(shape))} neurons")
        return tuple(int(v) for v in np.unravel_index(idx[0], shape))
    if len(idx) != len(shape):
        raise SrpError(f"`index` needs {len(shape)} numbers for a layer of shape {list(shape)}, got {text!r}")
    for i, (v, n) in enumerate(zip(idx, shape)):
        if not 0 <= v < n:
            raise SrpError(f"`index` component {i} = {v} is outside 0..{n - 1} (layer shape {list(shape)})")
    return idx


def resolve_neuron(model, layer: str, index) -> tuple:
    """Check ``layer`` (a qcfs node of ``model``) and ``index`` (``"c,y,x"``, a flat ``"i"`` or a
    tuple) and return the index as a tuple; :class:`SrpError` with one line naming the problem."""
    names = [q["name"] for q in model.qcfs_nodes]
    if layer not in names:
        near = [n for n in names if str(layer) and (str(layer) in n or n in str(layer))]
        hint = f"; did you mean {', '.join(near[:3])}?" if near else ""
        raise SrpError(f"`layer` {layer!r} is not an IF (qcfs) layer of this model{hint} "
                       f"(its IF layers: {', '.join(names)})")
    shape = tuple(model.shapes[layer])
    if isinstance(index, str):
        return parse_index(index, shape)
    try:
        idx = tuple(int(v) for v in index)
    except (TypeError, ValueError):
        raise SrpError(f"`index` must be a tuple of integers, got {index!r}") from None
    return parse_index(",".join(str(v) for v in idx), shape)


def case_name(code: int) -> str:
    return CASES[int(code)]


CASE_TEXT = {
    "case1": "Case 1: a = 0 and phi > a (the SNN fires, the ANN is silent)",
    "case2": "Case 2: 0 < a < lambda and phi > a (more spikes than expected)",
    "case3": "Case 3: 0 < a < lambda and phi < a (fewer spikes than expected)",
    "case4": "Case 4: a = lambda and phi < a (fewer spikes than expected)",
    "none": "no unevenness error (phi = a, or outside the four cases)",
}


def neuron_trace(model, x_image, layer: str, index, tau: int, T: int, mask_eps: float = DEFAULT_MASK_EPS,
                 dtype=np.float64, rtol: float = DEFAULT_RTOL) -> dict:
    """Trace one IF neuron of ``model`` through both SRP stages on one image.

    The whole network is stepped densely (like :func:`srp_np.reference.simulate_dense`)
    on that image; the target neuron's input current, membrane and spikes are
    recorded every step.

    Parameters
    ----------
    x_image : ndarray
        One normalised image, C×H×W or 1×C×H×W.
    layer : str
        A qcfs node name.
    index : tuple or str
        Neuron index within the layer (``"c,y,x"`` or a flat index).
    """
    from .ann import ann_forward

    qn = {q["name"]: q for q in model.qcfs_nodes}
    idx = resolve_neuron(model, layer, index)
    tau, T = int(tau), int(T)
    if tau < 0 or T < 1:
        raise SrpError("need tau >= 0 and T >= 1")
    check_mask_eps(mask_eps)
    # one record per step (a dict of ~12 numbers, then its line of text or JSON)
    check_memory(TRACE_BYTES_PER_STEP * (tau + T), f"tracing τ+T = {tau}+{T} steps",
                 "use a smaller τ+T (`tau`, `T`)")
    shape = model.shapes[layer]
    x = np.asarray(x_image, dtype=dtype)
    if x.ndim == 3:
        x = x[None]
    dt = np.dtype(dtype).type
    state = {q: if_init((1,) + model.shapes[q], dt(n["threshold"]), dt) for q, n in qn.items()}
    masks = {q: None for q in qn}
    full = (0,) + idx
    stage1, stage2 = [], []
    theta = float(dt(qn[layer]["threshold"]))

    def step(rec: list, stage: int):
        values = {"input": x}
        for node in model.nodes:
            name = node["name"]
            ins = [values[s] for s in node["inputs"]]
            if node["op"] == "qcfs":
                v_before = float(state[name].v[full]) if name == layer else 0.0
                out, s, state[name] = if_step(ins[0], state[name], dt(node["threshold"]), masks[name])
                if name == layer:
                    cur = float(ins[0][full])
                    v_after = float(state[name].v[full])
                    fired = int(v_before + cur - v_after > theta / 2)  # reset subtracted θ
                    rec.append({"t": len(rec) + 1, "stage": stage, "input": cur, "v_before": v_before,
                                "u": v_before + cur, "fired": fired, "spike": int(s[full]), "v_after": v_after})
                values[name] = out
            else:
                values[name] = apply_linear_node(model, node, ins)

    for _ in range(tau):
        step(stage1, 1)
    v_tau = float(state[layer].v[full]) if tau else None
    if tau:
        for q, n in qn.items():
            th = dt(n["threshold"])
            masks[q] = srp_keep_mask(state[q].v, th, mask_eps)
            state[q] = if_init(state[q].v.shape, th, dt)
    kept = bool(masks[layer][full]) if tau else True
    for _ in range(T):
        step(stage2, 2)
    count = 0
    for r in stage2:
        count += r["spike"]
        r["count"] = count
        r["phi"] = theta * count / r["t"]
    c1 = 0
    for r in stage1:
        c1 += r["spike"]
        r["count"] = c1
        r["phi"] = theta * c1 / r["t"]
    phi = stage2[-1]["phi"]
    ybar = sum(r["input"] for r in stage2) / T
    _, acts = ann_forward(model, x, np.float64, return_activations=True)
    a_ann = float(acts[layer][1][full])
    y_ann = float(acts[layer][0][full])
    a_I = float(qcfs(ybar, theta, model.L))
    case_II = case_name(classify(a_ann, phi, theta, rtol))
    case_I = case_name(classify(a_I, phi, theta, rtol))
    return {"layer": layer, "index": list(idx), "shape": list(shape), "tau": tau, "T": T, "theta": theta,
            "L": model.L, "mask_eps": mask_eps, "stage1": stage1, "stage2": stage2, "v_tau": v_tau,
            "kept": kept, "spikes": count, "phi": phi, "ybar": ybar, "a_ann": a_ann, "y_ann": y_ann,
            "a_error_I": a_I, "case_error_II": case_II, "case_error_I": case_I, "v_T": stage2[-1]["v_after"]}


# ----------------------------------------------------------------------------- step-through

def membrane_bar(u: float, theta: float, width: int = 20) -> str:
    """``u`` as a bar of ``width`` cells spanning [0, θ): ``[#####.....]``; below 0 and at or
    above θ (the neuron fires) are marked."""
    if u < 0:
        return "[" + "." * width + "]  below 0"
    if u >= theta:
        return "[" + "#" * width + "]  >= theta"
    n = int(width * u / theta)
    return "[" + "#" * n + "." * (width - n) + "]"


def step_frames(trace: dict) -> list:
    """The step-through of one :func:`neuron_trace`, as screens of text (``srp-np explain step``).

    One screen per time step of stage 1 (τ steps, v(0) = θ/2, no mask), one for the SRP
    decision at t = τ (keep iff v(τ) > ε·θ, Algorithm 1 line 12; then every membrane
    is reset to θ/2), one per step of stage 2 (T steps, the output multiplied by the
    mask) and a closing one with φ(T) = θ·N(T)/T against the ANN's a = QCFS(y) (Eq. 7).
    Each step shows the IF update of Eqs. (2)-(3): u(t) = v(t−1) + x(t),
    s(t) = [u(t) ≥ θ], v(t) = u(t) − θ·s(t), beside the running rate
    φ(t) = θ·(spikes so far)/t and the ANN value a.

    Returns
    -------
    list of dict
        ``{"kind": "step" | "mask" | "end", "stage": 1 | 2 | None, "t": int | None,
        "latency": steps since the start, "text": str}``.
    """
    th, tau, T, a = trace["theta"], trace["tau"], trace["T"], trace["a_ann"]
    eps = trace["mask_eps"]
    frames = []

    def step_text(r: dict, stage: int) -> str:
        n = tau if stage == 1 else T
        lat = r["t"] if stage == 1 else tau + r["t"]
        note = "no mask in stage 1" if stage == 1 else (
            "no stage 1 (tau = 0): plain conversion" if not tau else
            ("mask: KEEP" if trace["kept"] else "mask: SILENCED (spikes are not sent)"))
        if r["spike"]:
            fire = f"SPIKE: sends theta = {th:.6g} to the next layer"
        elif r["fired"]:
            fire = "fires, but the mask SILENCES it: sends 0"
        else:
            fire = "no spike (u < theta)"
        word = "spike" if r["count"] == 1 else "spikes"
        line = lambda what, formula, value: f"  {what:<16} {formula:<22} {value}"
        return "\n".join([
            f"stage {stage}, step t = {r['t']} of {n}  (latency {lat}; {note})",
            line("input current", "x(t)", f"= {r['input']:+.6g}"),
            line("membrane before", "v(t-1)", f"= {r['v_before']:+.6g}"),
            line("integrate", "u = v(t-1) + x(t)", f"= {r['u']:+.6g}   u/theta {membrane_bar(r['u'], th)}"),
            line("fire?", f"u >= theta = {th:.6g}", f"-> {fire}"),
            line("membrane after", "v(t) = u - theta*s(t)", f"= {r['v_after']:+.6g}"
                 + ("   (reset by subtraction)" if r["fired"] else "")),
            line("running rate", f"phi(t) = theta*{r['count']}/{r['t']}",
                 f"= {r['phi']:.6g}   ({r['count']} {word} so far)   |   ANN (QCFS) a = {a:.6g}"),
        ])

    for r in trace["stage1"]:
        frames.append({"kind": "step", "stage": 1, "t": r["t"], "latency": r["t"], "text": step_text(r, 1)})
    if tau:
        v = trace["v_tau"]
        sign = ("negative: Theorem 1 (with L = T) reads it as a neuron that fired at least as much as its "
                "ANN value, more when a > 0 (Cases 1 and 2)" if v < 0 else
                "not negative: by Theorem 1 no sign that the neuron fired more than its ANN value")
        c1 = trace["stage1"][-1]["count"]
        frames.append({"kind": "mask", "stage": None, "t": tau, "latency": tau, "text": "\n".join([
            f"end of stage 1 (t = tau = {tau}): residual membrane v(tau) = {v:+.6g}",
            f"  v(tau) is {sign}",
            f"  SRP mask: keep iff v(tau) > eps*theta = {eps:g}*{th:.6g} = {eps * th:.6g}  ->  "
            + ("KEEP: its stage-2 spikes are sent" if trace["kept"] else
               "SILENCE: its stage-2 spikes are dropped"),
            f"  stage-1 output ({c1} spike{'s' if c1 != 1 else ''}, phi(tau) = "
            f"{trace['stage1'][-1]['phi']:.6g}, ANN a = {a:.6g}) is discarded",
            f"  every membrane of the network is reset to theta/2 = {th / 2:.6g}; stage 2 starts",
        ])})
    for r in trace["stage2"]:
        frames.append({"kind": "step", "stage": 2, "t": r["t"], "latency": tau + r["t"], "text": step_text(r, 2)})
    err = trace["phi"] - a
    frames.append({"kind": "end", "stage": None, "t": None, "latency": tau + T, "text": "\n".join([
        f"end of stage 2 (T = {T} steps, latency tau+T = {tau + T})",
        f"  SNN: {trace['spikes']} spike{'s' if trace['spikes'] != 1 else ''} sent, phi(T) = theta*"
        f"{trace['spikes']}/{T} = {trace['phi']:.6g}",
        f"  ANN: y = {trace['y_ann']:.6g}, a = QCFS(y) = {a:.6g}   (Eq. 7, L = {trace['L']})",
        f"  error phi(T) - a = {err:+.6g}   ->  Error II: {CASE_TEXT[trace['case_error_II']]}",
        f"  with the SNN's own mean input ybar = {trace['ybar']:.6g}: QCFS(ybar) = {trace['a_error_I']:.6g}"
        f"  ->  Error I: {CASE_TEXT[trace['case_error_I']]}",
    ])})
    return frames


# ----------------------------------------------------------------------------- Theorem 1

def theorem1_demo(n: int = 2000, T: int = 8, L: int | None = None, n_in: int = 4, theta: float = 1.0,
                  rng=0) -> dict:
    """Check Theorem 1 on random single-layer examples.

    Each example is one postsynaptic IF neuron (θ = λ = ``theta``, v(0) = θ/2)
    with ``n_in`` presynaptic IF neurons (θ^{l-1} = 1) that each emit a random
    number of spikes k_i ∈ {0..T} at random times, so a^{l-1} = φ^{l-1} = k/T
    exactly and the ANN and SNN see the same weighted input
    y = W·φ^{l-1} (the theorem's precondition). Random weights W. The ANN value
    is a = QCFS(y; λ, L); the SNN gives φ(T) and v(T).

    ``L`` defaults to T (the theorem's other precondition); pass a different L
    to see the statements fail.

    Returns counts (JSON-serialisable).
    """
    L = int(T if L is None else L)
    T = int(T)
    if n < 1 or T < 1 or n_in < 1 or L < 1:
        raise SrpError("need n, T, n_in and L >= 1")
    # spikes (n × n_in × T), currents and temporaries, float64
    check_memory(8 * int(n) * int(T) * (int(n_in) + 4), f"{n} examples × {n_in} inputs × T = {T} steps",
                 "use a smaller `n`, `n_in` or `T`")
    g = np.random.default_rng(rng)
    W = g.normal(0.15, 0.7, size=(n, n_in))
    k = g.integers(0, T + 1, size=(n, n_in))
    spikes = np.zeros((n, n_in, T))
    for e in range(n):
        for i in range(n_in):
            spikes[e, i, g.choice(T, size=k[e, i], replace=False)] = 1.0
    currents = np.einsum("ni,nit->nt", W, spikes)  # x(t) = W·θ^{l-1}·s^{l-1}(t), θ^{l-1} = 1
    y = (W * (k / T)).sum(axis=1)
    state = if_init((n,), theta, np.float64)
    N = np.zeros(n, np.int64)
    for t in range(T):
        _, s, state = if_step(currents[:, t], state, theta)
        N += s
    vT = state.v
    phi = theta * N / T
    a = qcfs(y, theta, L)
    tol = 1e-9
    zero = a <= tol
    more = phi > a + tol
    neg = vT < 0
    holds = theorem1_holds(a, phi, vT)
    codes = classify(a, phi, theta)
    cnt = lambda m: int(np.count_nonzero(m))
    res = {
        "examples": n, "T": T, "L": L, "n_in": n_in, "theta": theta, "preconditions_met": L == T,
        "a_zero": {
            "examples": cnt(zero),
            "phi_gt_a": cnt(zero & more),
            "phi_gt_a_and_v_neg": cnt(zero & more & neg),
            "necessity_violations": cnt(zero & more & ~neg),
            "v_neg": cnt(zero & neg),
            "v_neg_and_phi_ge_a": cnt(zero & neg & (phi >= a - tol)),
            "sufficiency_violations": cnt(zero & neg & (phi < a - tol)),
        },
        "a_positive": {
            "examples": cnt(~zero),
            "v_neg_and_phi_gt_a": cnt(~zero & neg & more),
            "v_nonneg_and_phi_le_a": cnt(~zero & ~neg & ~more),
            "v_neg_but_phi_le_a": cnt(~zero & neg & ~more),
            "phi_gt_a_but_v_nonneg": cnt(~zero & ~neg & more),
        },
        "holds": cnt(holds),
        "violations": cnt(~holds),
        "cases": {c: cnt(codes == i) for i, c in enumerate(CASES)},
    }
    return res
