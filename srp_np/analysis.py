"""Unevenness error cases per IF layer (Figs. 3 and 5 of the paper).

For every neuron of every IF layer and every image, compare the SNN's
average postsynaptic potential with an ANN value ``a`` and sort the neuron
into one of the paper's four cases (Section "Dividing Unevenness Error into
Four Situations"):

* ``case1``: a = 0 and φ > a (the SNN fires, the ANN is silent),
* ``case2``: 0 < a < λ and φ > a,
* ``case3``: 0 < a < λ and φ < a,
* ``case4``: a = λ and φ < a,
* ``none``: the rest (no error, i.e. a = φ).

Definitions used here (issue 4; exactly these):

* φ = θ · (stage-2 spikes the neuron emitted, after the SRP mask) / T,
* ȳ = (Σ of the neuron's stage-2 input currents) / T, the mean of what its IF
  update adds each step,
* **Error II**: a = the ANN's QCFS activation of the neuron for the same image
  (:func:`srp_np.ann.ann_forward`), the cumulative error;
* **Error I**: a = QCFS(ȳ; λ, L) with the model's L: the ANN layer fed the
  SNN's own inputs (the paper's a^{l-1} = φ^{l-1}), the error made by this
  layer alone.

Floating-point comparisons use a tolerance ``tol = rtol·λ`` (default
``rtol = 1e-6``): a = 0 means a ≤ tol, a = λ means a ≥ λ − tol, φ > a means
φ > a + tol and φ < a means φ < a − tol. φ and a both live on grids of step
λ/T and λ/L, so exact ties (the ``none`` case) are common and must not be
misclassified by float32 rounding of λ or of the ANN activations; the grid
steps are many orders of magnitude larger than ``tol``.
"""
from __future__ import annotations

import numpy as np

from .analytic import qcfs
from .ann import ann_forward
from .errors import SrpError
from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE

CASES = ("case1", "case2", "case3", "case4", "none")
ERRORS = ("error_I", "error_II")
DEFAULT_RTOL = 1e-6


def classify(a, phi, lam, rtol: float = DEFAULT_RTOL) -> np.ndarray:
    """Case code per neuron: 0..3 for case1..case4, 4 for ``none``.

    Parameters
    ----------
    a, phi : array_like
        ANN value and SNN average postsynaptic potential (same shape).
    lam : float
        The layer's λ (= θ).
    rtol : float
        Tolerance relative to λ for the equalities a = 0, a = λ, a = φ.
    """
    a = np.asarray(a, dtype=np.float64)
    phi = np.asarray(phi, dtype=np.float64)
    tol = rtol * float(lam)
    zero = a <= tol
    full = a >= float(lam) - tol
    mid = ~zero & ~full
    more = phi > a + tol
    less = phi < a - tol
    code = np.full(a.shape, 4, dtype=np.int8)
    code[zero & more] = 0
    code[mid & more] = 1
    code[mid & less] = 2
    code[full & less] = 3
    return code


def count_cases(code) -> np.ndarray:
    """Counts of codes 0..4 (case1..case4, none) as an int64 array of length 5."""
    return np.bincount(np.asarray(code).ravel(), minlength=5).astype(np.int64)


def fractions(counts) -> dict:
    """``{case: fraction}`` from counts of length 5."""
    counts = np.asarray(counts, dtype=np.float64)
    tot = counts.sum()
    return {c: (float(counts[i] / tot) if tot else 0.0) for i, c in enumerate(CASES)}


def layer_cases(phi, a_ann, ybar, lam, L, rtol: float = DEFAULT_RTOL):
    """Counts for Error I and Error II of one layer: ``{"error_I": counts, "error_II": counts}``."""
    a_I = qcfs(np.asarray(ybar, dtype=np.float64), float(lam), L)
    return {"error_I": count_cases(classify(a_I, phi, lam, rtol)),
            "error_II": count_cases(classify(a_ann, phi, lam, rtol))}


def case_counts(model, x, tau: int, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
                rtol: float = DEFAULT_RTOL, chunk: int = 64, simulator=None, progress=None,
                mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Case counts per IF layer for one τ, over all images of ``x``.

    Images are processed in chunks of ``chunk`` so that the per-neuron
    records never need more memory than one chunk.

    Returns
    -------
    dict
        ``{qcfs name: {"error_I": int64[5], "error_II": int64[5]}}`` plus the
        key ``"_accuracy_outputs"`` holding the T×N×K outputs (for accuracy).
    """
    from .simulator import Simulator

    sim = simulator or Simulator(model, dtype)
    x = np.asarray(x)
    if x.shape[0] == 0:
        raise SrpError("no images to analyse")
    counts = {q["name"]: {e: np.zeros(5, np.int64) for e in ERRORS} for q in model.qcfs_nodes}
    outputs = []
    for s in range(0, x.shape[0], chunk):
        xb = x[s:s + chunk]
        res = sim.run(xb, tau, T, mask_eps=mask_eps, record=True, mask_rule=mask_rule)
        _, acts = ann_forward(model, xb, np.float64, return_activations=True)
        outputs.append(res.outputs)
        for q in model.qcfs_nodes:
            name, lam = q["name"], float(q["threshold"])
            rec = res.record[name]
            phi = lam * rec["spikes"].astype(np.float64) / T
            ybar = rec["input_sum"].astype(np.float64) / T
            c = layer_cases(phi, acts[name][1], ybar, lam, model.L, rtol)
            for e in ERRORS:
                counts[name][e] += c[e]
        if progress is not None:
            progress(xb.shape[0])
    counts["_accuracy_outputs"] = np.concatenate(outputs, axis=1)
    return counts


def analyze_counts(model, x, tau: int, T: int, y=None, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
                   rtol: float = DEFAULT_RTOL, chunk: int = 64, progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Exact counts behind :func:`analyze`: neurons·images per case, per IF layer, baseline and SRP.

    Returns
    -------
    dict
        JSON-serialisable: ``{"n_images": N, "cases": {"baseline"|"srp": {layer: {"error_I"|"error_II":
        [case1, case2, case3, case4, none]}}}, "correct": {"baseline"|"srp": int} (with ``y``)}``.
        Counts of disjoint sets of images add up to the counts of their union.
    """
    tau, T = int(tau), int(T)
    if tau < 1:
        raise SrpError(f"`tau` must be >= 1 for the SRP side of the comparison, got {tau}")
    from .simulator import Simulator, check_run_memory

    n = int(np.asarray(x).shape[0])
    # refused before the simulator is built: one chunk's run with records, plus every chunk's outputs
    check_run_memory(model, dtype, min(n, int(chunk)), tau, T, record=True,
                     extra=2 * 8 * T * n * model.num_classes)
    sim = Simulator(model, dtype)
    runs = {"baseline": case_counts(model, x, 0, T, dtype, mask_eps, rtol, chunk, sim, progress),
            "srp": case_counts(model, x, tau, T, dtype, mask_eps, rtol, chunk, sim, progress, mask_rule=mask_rule)}
    out = {"n_images": n,
           "cases": {k: {q["name"]: {e: [int(v) for v in c[q["name"]][e]] for e in ERRORS}
                         for q in model.qcfs_nodes} for k, c in runs.items()}}
    if y is not None:
        y = np.asarray(y)
        out["correct"] = {k: int((np.argmax(c["_accuracy_outputs"][T - 1], axis=-1) == y).sum())
                          for k, c in runs.items()}
    return out


def analysis_figures(model, counts: dict, tau: int, T: int, rtol: float = DEFAULT_RTOL,
                     mask_eps: float = DEFAULT_MASK_EPS, mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Fractions from :func:`analyze_counts` (possibly summed over shards): case count / Σ counts
    per layer and error; accuracy after T = correct / N."""
    layers = []
    for q in model.qcfs_nodes:
        name = q["name"]
        entry = {"name": name, "neurons": int(np.prod(model.shapes[name])), "threshold": float(q["threshold"])}
        for key, c in counts["cases"].items():
            entry[key] = {e: fractions(c[name][e]) for e in ERRORS}
        layers.append(entry)
    n = int(counts["n_images"])
    out = {"layers": layers, "tau": int(tau), "T": int(T), "images": n, "L": model.L,
           "rtol": rtol, "mask_eps": mask_eps, "mask_rule": mask_rule}
    if "correct" in counts:
        out["accuracy"] = {k: (c / n if n else 0.0) for k, c in counts["correct"].items()}
    return out


def analyze(model, x, tau: int, T: int, y=None, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
            rtol: float = DEFAULT_RTOL, chunk: int = 64, progress=None, mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Fractions of the four cases of Unevenness Error I/II per IF layer, baseline vs SRP.

    A case's fraction is (neurons·images in the case) / (neurons·images) over all images,
    from the integer counts of :func:`analyze_counts`.

    Parameters
    ----------
    model : Model
    x : ndarray
        Normalised images N×C×H×W.
    tau : int
        SRP's stage-1 length (the ``srp`` entry); the ``baseline`` entry is τ = 0.
    T : int
        Stage-2 steps (φ and ȳ are averages over them).
    y : array_like, optional
        Labels; when given, the accuracies after T steps are added.

    Returns
    -------
    dict
        JSON-serialisable: ``{"layers": [{"name", "neurons", "baseline":
        {"error_I": {case: f}, "error_II": {...}}, "srp": {...}}, ...],
        "tau", "T", "images", "L", "rtol", "mask_eps", "mask_rule"}`` (+ ``accuracy``).
    """
    counts = analyze_counts(model, x, tau, T, y=y, dtype=dtype, mask_eps=mask_eps, rtol=rtol, chunk=chunk,
                            progress=progress, mask_rule=mask_rule)
    return analysis_figures(model, counts, tau, T, rtol=rtol, mask_eps=mask_eps, mask_rule=mask_rule)


def error_total(frac: dict) -> float:
    """Fraction of neurons with any error (1 − none)."""
    return float(sum(frac[c] for c in CASES[:4]))
