"""A certificate that the simulation of *your* model on *your* images is right (``srp-np verify``).

Five checks, each a pure function of simulation results that returns per-layer tallies
(counts add up and largest residuals take the maximum over chunks of images, see
:func:`merge_tallies`):

1. **spike for spike** (:func:`spike_tally`, exact): the event-driven :class:`~srp_np.Simulator`
   in float64 against the dense reference :func:`srp_np.reference.simulate_dense` in float64,
   neuron by neuron: stage-1 and stage-2 spike counts, the SRP keep-mask, and the predictions.
   Differing spikes Σ|N_sim − N_dense| (0 expected). Run twice: on the requested (τ, T) and on
   the plain conversion with T = L used by check 4.
2. **Eq. 8** (:func:`eq8_tally`, exact): the first IF layer sees a constant input y (the image
   through the static layers before it), so its spike counts have a closed form. With v(0) = θ/2,
   ``N(t) = clip(⌊(t·y + θ/2)/θ⌋, 0, t)`` (Eq. 8 with the shift); stage 1 must emit N(τ),
   stage 2 N(T)·mask, and the residual is v(τ) = θ/2 + τ·y − θ·N(τ).
3. **charge balance** (:func:`charge_tally`, exact up to float64 rounding): Eq. 4/5 summed over
   the T stage-2 steps, ``θ·N(T) + v(T) = v(0) + Σ_t x(t)`` with v(0) = θ/2, for every neuron
   of every IF layer. N and Σx are the simulator's records, v(T) the dense reference's (the
   simulator does not record it). A neuron silenced by SRP keeps integrating and firing inside
   (only its output is masked), so its internal count is not recorded: for it the check is that
   (v(0) + Σx − v(T))/θ is an integer in [0, T].
4. **Theorem 1** (:func:`theorem1_tally`, exact): plain conversion (τ = 0) with T = L, every
   neuron of every IF layer. The ANN is fed the SNN's own rates, y = Σx/T = W·φ^{l-1}(T) (+b)
   (the theorem's precondition), a = QCFS(y) (Eq. 7), φ = θ·N/T; then (i) a = 0 and φ > a ⇒
   v(T) < 0, and (ii) a > 0 ⇒ (v(T) < 0 ⇔ φ > a). Since y − (N − ½)θ/T = v(T)/T exactly, the
   statements can only fail to rounding when v(T) is within rounding of 0: such neurons are
   counted as ties, and only violations off a tie fail the check.
5. **float32 against float64** (:func:`precision_tally`, informative): the share of images whose
   prediction after t steps is the same in float32 (the default mode of ``srp-np run``) as in the
   float64 oracle, and total spikes in each.

Checks 1-4 are exact: :attr:`Certificate.passed` is False when one of them fails.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .analytic import if_spike_count, qcfs
from .errors import SrpError
from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE, check_schedule
from .ops import apply_linear_node
from .reference import simulate_dense
from .simulator import Simulator

#: Relative tolerance of the float64 comparisons that are exact in real arithmetic (charge
#: balance, Eq. 8's ties, Theorem 1's ties, v(τ)): about 4.5·10⁶ ulps of the quantities compared,
#: far above the rounding of a few thousand float64 additions and far below one spike (θ).
RTOL = 1e-9

CHECKS = ("spikes", "eq8", "charge", "theorem1", "float32")
TITLES = {
    "spikes": "event-driven = dense reference (float64), spike for spike",
    "eq8": "first IF layer = Eq. 8 for its constant input",
    "charge": "charge balance θ·N + v(T) = v(0) + Σx (Eq. 4)",
    "theorem1": "Theorem 1 with T = L (τ = 0)",
    "float32": "float32 predictions = float64 predictions",
}
EXACT = {"spikes": True, "eq8": True, "charge": True, "theorem1": True, "float32": False}


# ----------------------------------------------------------------------------- tallies

def merge_tallies(a: dict, b: dict) -> dict:
    """Merge two tallies of the same check: keys starting with ``max_`` take the maximum, lists add
    element-wise, nested dicts merge recursively, other numbers add."""
    out = dict(a)
    for k, v in b.items():
        if k not in out:
            out[k] = v
        elif isinstance(v, dict):
            out[k] = merge_tallies(out[k], v)
        elif k.startswith("max_"):
            out[k] = max(out[k], v)
        elif isinstance(v, list):
            out[k] = [x + y for x, y in zip(out[k], v)]
        else:
            out[k] = out[k] + v
    return out


def _absmax(a) -> float:
    a = np.asarray(a, dtype=np.float64)
    return float(np.max(np.abs(a))) if a.size else 0.0


def spike_tally(model, sim, dense) -> dict:
    """Compare a float64 :class:`~srp_np.SimResult` (``record=True``) with a float64
    :class:`~srp_np.reference.DenseResult` of the same images, τ and T.

    Returns
    -------
    dict
        Per IF layer: ``spikes`` (stage-2 spikes of the reference), ``differing_spikes``
        Σ|N_sim − N_dense| over stage 2, ``differing_spikes_stage1`` the same over stage 1,
        ``differing_mask`` neurons whose keep-mask differs, ``max_v_tau_diff`` and
        ``max_input_sum_diff`` the largest absolute differences of v(τ) and Σx (informative);
        and under ``"_outputs"``: ``images``, ``differing_predictions`` (images whose argmax
        differs after some t) and ``max_output_diff``.
    """
    layers = {}
    for q in model.qcfs_nodes:
        n = q["name"]
        rec = sim.record[n]
        d_s = np.abs(rec["spikes"].astype(np.int64) - dense.spikes[n].astype(np.int64))
        d_s1 = np.abs(rec["spikes_stage1"].astype(np.int64) - dense.spikes_stage1[n].astype(np.int64))
        v_diff = 0.0
        if rec["v_tau"] is not None and dense.v_tau[n] is not None:
            v_diff = _absmax(rec["v_tau"] - dense.v_tau[n])
        elif (rec["v_tau"] is None) != (dense.v_tau[n] is None):
            v_diff = math.inf
        layers[n] = {"neurons": int(d_s.size), "spikes": int(dense.spikes[n].sum()),
                     "spikes_stage1": int(dense.spikes_stage1[n].sum()),
                     "differing_spikes": int(d_s.sum()), "differing_spikes_stage1": int(d_s1.sum()),
                     "differing_mask": int(np.count_nonzero(rec["mask"] != dense.mask[n])),
                     "max_v_tau_diff": v_diff,
                     "max_input_sum_diff": _absmax(rec["input_sum"] - dense.input_sum[n])}
    p_sim, p_ref = np.argmax(sim.outputs, -1), np.argmax(dense.outputs, -1)
    layers["_outputs"] = {"images": int(sim.outputs.shape[1]),
                          "differing_predictions": int(np.count_nonzero((p_sim != p_ref).any(axis=0))),
                          "max_output_diff": _absmax(sim.outputs - dense.outputs)}
    return layers


def first_if_layer(model):
    """The first IF (qcfs) node when its input depends on the image only (a constant current), else None."""
    static = {"input"}
    for node in model.nodes:
        if node["op"] == "qcfs":
            return node if node["inputs"][0] in static else None
        if all(s in static for s in node["inputs"]):
            static.add(node["name"])
    return None


def first_if_input(model, x) -> np.ndarray:
    """The constant input current y of :func:`first_if_layer`, computed in float64 by the same dense
    operators as the ANN and the simulator's static layers (:func:`srp_np.ops.apply_linear_node`)."""
    node = first_if_layer(model)
    if node is None:
        raise SrpError("the model's first IF layer is not fed by the image alone: Eq. 8 does not apply")
    values = {"input": np.asarray(x, dtype=np.float64)}
    for nd in model.nodes:
        if nd is node:
            return values[node["inputs"][0]]
        values[nd["name"]] = apply_linear_node(model, nd, [values[s] for s in nd["inputs"]])
    raise AssertionError("unreachable")  # pragma: no cover


def _near_integer(z, scale) -> np.ndarray:
    """Where ``z`` lies within ``RTOL·scale`` of an integer (a tie that float rounding may tip)."""
    return np.abs(z - np.round(z)) <= RTOL * scale


def eq8_tally(model, x, sim, tau: int, T: int, mask_eps: float = DEFAULT_MASK_EPS,
              mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Check the first IF layer's spike counts against Eq. 8 for its constant input.

    With a constant input y and v(0) = θ/2 an IF neuron (reset by subtraction) emits
    ``N(t) = clip(⌊(t·y + θ/2)/θ⌋, 0, t)`` spikes in t steps (:func:`srp_np.analytic.if_spike_count`)
    and keeps v(t) = θ/2 + t·y − θ·N(t). Stage 1 must emit N(τ); stage 2 restarts from θ/2 and,
    after the SRP mask, must emit N(T)·mask; the mask must be v(τ) > ε·θ for that closed-form v(τ).

    Parameters
    ----------
    model : Model
    x : ndarray
        The normalised images the simulation ``sim`` ran on.
    sim : SimResult
        With ``record=True`` (any precision; float64 for an exact check).

    Returns
    -------
    dict
        For the first IF layer only (empty if it is not fed by the image alone):
        ``neurons``, ``differing_stage1``/``differing_stage2`` (neurons whose count differs from
        Eq. 8, off a tie), ``ties`` (neurons where t·y + θ/2 lies within rounding of a multiple of
        θ, where the count may go either way), ``differing_mask`` and ``differing_v_tau`` (off a tie:
        |v(τ) − closed form| > RTOL·θ·(1 + |τ·y/θ|)), ``max_v_tau_residual``.
    """
    node = first_if_layer(model)
    if node is None:
        return {}
    name, th = node["name"], float(node["threshold"])
    y = first_if_input(model, x)
    rec = sim.record[name]
    scale = 1.0 + np.abs(max(tau, T) * y / th)
    out = {"neurons": int(y.size), "differing_stage1": 0, "differing_stage2": 0, "differing_mask": 0,
           "differing_v_tau": 0, "ties": 0, "max_v_tau_residual": 0.0}
    tie = np.zeros(y.shape, bool)
    mask = rec["mask"]
    if tau > 0:
        n1 = if_spike_count(y, th, tau)
        tie1 = _near_integer((tau * y + th / 2) / th, scale)
        tie |= tie1
        out["differing_stage1"] = int(np.count_nonzero((rec["spikes_stage1"] != n1) & ~tie1))
        v_tau = th / 2 + tau * y - th * n1
        # the keep rule written out: authors v(τ) > ε·θ, paper v(τ) ≥ 0 (Algorithm 1)
        thr = mask_eps * th if mask_rule == "authors" else 0.0
        keep = v_tau > thr if mask_rule == "authors" else v_tau >= 0.0
        v_tie = np.abs(v_tau - thr) <= RTOL * th * scale
        tie |= v_tie
        out["differing_mask"] = int(np.count_nonzero((mask != keep) & ~tie))
        dv = np.where(tie1, 0.0, rec["v_tau"] - v_tau)
        out["differing_v_tau"] = int(np.count_nonzero(~(np.abs(dv) <= RTOL * th * scale)))
        out["max_v_tau_residual"] = _absmax(dv)
    else:
        out["differing_stage1"] = int(np.count_nonzero(rec["spikes_stage1"]))
        out["differing_mask"] = int(np.count_nonzero(~mask))
    n2 = if_spike_count(y, th, T)
    tie2 = _near_integer((T * y + th / 2) / th, scale)
    tie |= tie2
    out["differing_stage2"] = int(np.count_nonzero((rec["spikes"] != n2 * mask) & ~tie))
    out["ties"] = int(np.count_nonzero(tie))
    return {name: out}


def charge_tally(model, sim, dense, T: int) -> dict:
    """Charge balance (Eq. 4, summed over the T stage-2 steps) for every neuron of every IF layer.

    ``r = θ·N + v(T) − θ/2 − Σ_t x(t)`` must vanish: N and Σx from the simulator's record, v(T)
    from the dense reference (``v_final``). For a neuron silenced by the SRP mask the recorded N is
    0 while the neuron keeps integrating and resetting, so N is taken as the integer in [0, T]
    nearest to (θ/2 + Σx − v(T))/θ: the check is then that this quantity is an integer in range.

    Returns
    -------
    dict
        Per IF layer: ``neurons``, ``masked`` (checked through the integer rule), ``failing``
        (neurons with |r| > RTOL·(θ + θ·N + |Σx| + |v(T)|)), ``max_residual`` (the largest |r|)
        and ``max_residual_over_theta``.
    """
    out = {}
    for q in model.qcfs_nodes:
        n, th = q["name"], float(q["threshold"])
        rec = sim.record[n]
        N = rec["spikes"].astype(np.float64)
        sx = rec["input_sum"].astype(np.float64)
        vT = np.asarray(dense.v_final[n], dtype=np.float64)
        keep = rec["mask"]
        implied = np.clip(np.round((th / 2 + sx - vT) / th), 0, T)
        N = np.where(keep, N, implied)
        r = th * N + vT - th / 2 - sx
        tol = RTOL * (th + th * N + np.abs(sx) + np.abs(vT))
        m = _absmax(r)
        out[n] = {"neurons": int(r.size), "masked": int(np.count_nonzero(~keep)),
                  "failing": int(np.count_nonzero(~(np.abs(r) <= tol))),
                  "max_residual": m, "max_residual_over_theta": m / th}
    return out


def theorem1_tally(model, sim, dense, rtol: float = RTOL) -> dict:
    """Theorem 1 on every neuron of every IF layer of a plain-conversion run (τ = 0) with T = L.

    Per neuron: y = Σx/T (the weighted input W·φ^{l-1}(T) + b the ANN is fed, the theorem's
    precondition), a = QCFS(y; θ, L) (Eq. 7), φ = θ·N/T, v(T) the final membrane. Checked:
    (i) a = 0 and φ > a ⇒ v(T) < 0; (ii) a > 0 ⇒ (v(T) < 0 ⇔ φ > a)
    (:func:`srp_np.analytic.theorem1_holds`). Because y − (N − ½)·θ/T = v(T)/T, a violation is
    possible in floating point only where |v(T)| is within rounding of 0 (a *tie*).

    Parameters
    ----------
    sim : SimResult
        ``record=True``, τ = 0, T = L (N and Σx).
    dense : DenseResult
        The same run of the dense reference (v(T)).

    Returns
    -------
    dict
        Per IF layer: ``neurons``, ``violations`` (off a tie), ``violations_at_ties``,
        ``negative`` (v(T) < 0), ``negative_a0`` (v(T) < 0 and a = 0), ``negative_a0_case1``
        (those where φ > a, the paper's Case 1; the rest fire exactly like the ANN), and
        ``negative_apos_case2`` (v(T) < 0, a > 0: all must have φ > a).
    """
    from .analytic import theorem1_holds

    if sim.tau != 0:
        raise SrpError("Theorem 1 is checked on a plain-conversion run (tau = 0)")
    T, L = sim.T, model.L
    if T != L:
        raise SrpError(f"Theorem 1 needs T = L = {L}, got T = {T}")
    out = {}
    for q in model.qcfs_nodes:
        n, th = q["name"], float(q["threshold"])
        rec = sim.record[n]
        sx = rec["input_sum"].astype(np.float64)
        y = sx / T
        a = qcfs(y, th, L)
        phi = th * rec["spikes"].astype(np.float64) / T
        vT = np.asarray(dense.v_final[n], dtype=np.float64)
        holds = theorem1_holds(a, phi, vT)
        tie = np.abs(vT) <= rtol * (th + np.abs(sx))
        neg = vT < 0
        a0 = a <= 1e-9 * th
        more = phi > a + 1e-9 * th
        out[n] = {"neurons": int(vT.size), "violations": int(np.count_nonzero(~holds & ~tie)),
                  "violations_at_ties": int(np.count_nonzero(~holds & tie)),
                  "negative": int(np.count_nonzero(neg)), "negative_a0": int(np.count_nonzero(neg & a0)),
                  "negative_a0_case1": int(np.count_nonzero(neg & a0 & more)),
                  "negative_apos_case2": int(np.count_nonzero(neg & ~a0 & more))}
    return out


def precision_tally(sim32, sim64) -> dict:
    """float32 against float64: per step t = 1..T, images with the same prediction; total spikes.

    Returns
    -------
    dict
        ``images``, ``same_prediction`` (list over t), ``spikes_float32``, ``spikes_float64``
        (stage-2 spikes summed over layers and images).
    """
    p32, p64 = np.argmax(sim32.outputs, -1), np.argmax(sim64.outputs, -1)
    return {"_outputs": {"images": int(p32.shape[1]),
                         "same_prediction": [int(v) for v in (p32 == p64).sum(axis=1)],
                         "spikes_float32": int(sum(int(v.sum()) for v in sim32.spikes.values())),
                         "spikes_float64": int(sum(int(v.sum()) for v in sim64.spikes.values()))}}


# ----------------------------------------------------------------------------- verdicts

@dataclass
class Check:
    """One line of the certificate: a verdict, its headline figure and per-layer tallies."""

    key: str
    title: str
    exact: bool
    passed: bool
    figure: str
    tally: dict

    def to_dict(self) -> dict:
        return {"title": self.title, "exact": self.exact, "passed": self.passed, "figure": self.figure,
                "layers": {k: v for k, v in self.tally.items() if not k.startswith("_")},
                **{k[1:]: v for k, v in self.tally.items() if k.startswith("_")}}


def _layers(t: dict) -> list:
    return [v for k, v in t.items() if not k.startswith("_")]


def _sum(t: dict, key: str) -> int:
    return int(sum(v.get(key, 0) for v in _layers(t)))


def _max(t: dict, key: str) -> float:
    return float(max((v.get(key, 0.0) for v in _layers(t)), default=0.0))


def judge(key: str, tally: dict) -> Check:
    """Turn a merged tally of check ``key`` into a :class:`Check` (verdict and headline figure)."""
    if key == "spikes":
        diff = _sum(tally, "differing_spikes") + _sum(tally, "differing_spikes_stage1")
        masks = _sum(tally, "differing_mask")
        preds = sum(v["differing_predictions"] for k, v in tally.items() if k.startswith("_outputs"))
        total = _sum(tally, "spikes") + _sum(tally, "spikes_stage1")
        passed = diff == 0 and masks == 0 and preds == 0
        fig = f"{diff:,} differing spikes of {total:,}; {masks:,} differing masks; {preds:,} differing predictions"
    elif key == "eq8":
        if not _layers(tally):
            return Check(key, TITLES[key], True, True, "not applicable: the first IF layer is not fed by the "
                                                       "image alone", tally)
        d = _sum(tally, "differing_stage1") + _sum(tally, "differing_stage2")
        m = _sum(tally, "differing_mask") + _sum(tally, "differing_v_tau")
        passed = d == 0 and m == 0
        fig = (f"{d:,} counts differ of {_sum(tally, 'neurons'):,} neurons ({_sum(tally, 'ties'):,} at a rounding "
               f"tie); {m:,} masks or v(τ) differ; largest |v(τ) − closed form| {_max(tally, 'max_v_tau_residual'):.3g}")
    elif key == "charge":
        f = _sum(tally, "failing")
        passed = f == 0
        fig = (f"largest residual {_max(tally, 'max_residual'):.3g} ({_max(tally, 'max_residual_over_theta'):.3g} θ)"
               f" over {_sum(tally, 'neurons'):,} neurons ({_sum(tally, 'masked'):,} masked); {f:,} beyond rounding")
    elif key == "theorem1":
        v = _sum(tally, "violations")
        passed = v == 0
        fig = (f"{v:,} violations of {_sum(tally, 'neurons'):,} neurons ({_sum(tally, 'violations_at_ties'):,} "
               f"more at a rounding tie |v(T)| ≈ 0)")
    elif key == "float32":
        o = tally["_outputs"]
        same = o["same_prediction"]
        n = max(o["images"], 1)
        passed = True
        fig = (f"{same[-1]:,} of {o['images']:,} images ({100 * same[-1] / n:.2f}%) same prediction at t = T "
               f"(lowest over t: {100 * min(same) / n:.2f}%); spikes {o['spikes_float32']:,} vs "
               f"{o['spikes_float64']:,}")
    else:
        raise SrpError(f"unknown check {key!r}")
    return Check(key, TITLES[key], EXACT[key], bool(passed), fig, tally)


@dataclass
class Certificate:
    """What :func:`certify` returns: the five checks and what they were run on."""

    model: str
    n_images: int
    tau: int
    T: int
    L: int
    mask_eps: float
    checks: dict = field(default_factory=dict)
    mask_rule: str = DEFAULT_MASK_RULE
    snn_accuracy: float | None = None
    seconds: float = 0.0

    @property
    def passed(self) -> bool:
        """True when every exact check passed."""
        return all(c.passed for c in self.checks.values() if c.exact)

    def to_dict(self) -> dict:
        return {"format": "srp-np-verify/1", "model": self.model, "images": self.n_images, "tau": self.tau,
                "T": self.T, "L": self.L, "mask_eps": self.mask_eps, "mask_rule": self.mask_rule,
                "passed": self.passed,
                "snn_accuracy_float64": self.snn_accuracy, "seconds": self.seconds,
                "checks": {k: c.to_dict() for k, c in self.checks.items()}}


def verify_memory_needed(model, n: int, tau: int, T: int) -> int:
    """Bytes :func:`certify` holds for ``n`` images at once: per neuron, the float64 records of the
    simulator and of the dense reference for two runs, plus the dense reference's step values."""
    neurons = sum(math.prod(model.shapes[q["name"]]) for q in model.qcfs_nodes)
    widest = max((math.prod(s) for s in model.shapes.values()), default=0)
    return n * (2 * 2 * 60 * neurons + 16 * widest * len(model.nodes))


def certify(model, x, tau: int = 4, T: int = 8, mask_eps: float = DEFAULT_MASK_EPS, y=None, chunk: int = 8,
            progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> Certificate:
    """Run the five checks on normalised images ``x`` (N×C×H×W, see :func:`srp_np.evaluate.prepare_inputs`).

    The images are processed ``chunk`` at a time; per chunk: the Simulator in float64 with records
    and the dense reference at (τ, T) and at (0, L) (one run when they coincide), and the
    Simulator in float32 at (τ, T).

    Parameters
    ----------
    y : array_like, optional
        Labels, for the float64 SNN's accuracy after T steps (informative).
    progress : callable, optional
        Called with the number of images finished after each chunk.
    """
    import time

    from .limits import check_memory

    t0 = time.perf_counter()
    tau, T = check_schedule(tau, T, mask_eps, mask_rule)
    kw = dict(mask_eps=mask_eps, mask_rule=mask_rule)
    if not model.qcfs_nodes:
        raise SrpError("the model has no IF (qcfs) layer: there is nothing to verify")
    x = np.asarray(x)
    if x.ndim != 4 or tuple(x.shape[1:]) != tuple(model.input_shape):
        raise SrpError(f"input shape {list(x.shape[1:])} does not match the model's input_shape "
                       f"{list(model.input_shape)}")
    if x.shape[0] == 0:
        raise SrpError("no images to verify")
    chunk = max(1, int(chunk))
    L = model.L
    check_memory(verify_memory_needed(model, min(chunk, x.shape[0]), tau, T),
                 f"verifying {min(chunk, x.shape[0])} images at once", "verify fewer images at once")
    sim64, sim32 = Simulator(model, np.float64), Simulator(model, np.float32)
    tallies = {k: {} for k in CHECKS}
    correct = 0
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk].astype(np.float64)
        run = sim64.run(xb, tau, T, record=True, **kw)
        ref = simulate_dense(model, xb, tau, T, **kw)
        if (tau, T) == (0, L):
            run0, ref0 = run, ref
        else:
            run0 = sim64.run(xb, 0, L, record=True)
            ref0 = simulate_dense(model, xb, 0, L)
        spikes = spike_tally(model, run, ref)
        if run0 is not run:
            spikes0 = spike_tally(model, run0, ref0)
            spikes = merge_tallies(spikes, {f"{k} (τ=0, T=L)" if not k.startswith("_") else "_outputs_plain": v
                                            for k, v in spikes0.items()})
        new = {"spikes": spikes, "eq8": eq8_tally(model, xb, run, tau, T, mask_eps, mask_rule),
               "charge": charge_tally(model, run, ref, T), "theorem1": theorem1_tally(model, run0, ref0),
               "float32": precision_tally(sim32.run(x[s:s + chunk], tau, T, **kw), run)}
        if run0 is not run:
            # charge balance also on the plain run, where no neuron is masked
            new["charge"] = merge_tallies(new["charge"], {f"{k} (τ=0, T=L)": v
                                                          for k, v in charge_tally(model, run0, ref0, L).items()})
        for k in CHECKS:
            tallies[k] = merge_tallies(tallies[k], new[k])
        if y is not None:
            correct += int(np.count_nonzero(np.argmax(run.outputs[-1], -1) == np.asarray(y)[s:s + chunk]))
        del run, ref, run0, ref0
        if progress is not None:
            progress(xb.shape[0])
    cert = Certificate(model=str(getattr(model, "path", "") or ""), n_images=int(x.shape[0]), tau=tau, T=T, L=L,
                       mask_eps=float(mask_eps), mask_rule=mask_rule, checks={k: judge(k, tallies[k]) for k in CHECKS},
                       snn_accuracy=None if y is None else correct / x.shape[0])
    cert.seconds = time.perf_counter() - t0
    return cert
