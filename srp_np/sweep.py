"""Accuracy for a grid of τ and T (Table 4 / Fig. 6 of the paper).

One simulation per τ with the largest T gives every smaller T for free:
``SimResult.outputs[t-1]`` is the mean output over the first t stage-2 steps,
which is exactly what a run with T = t reports (stage 2 is causal).
"""
from __future__ import annotations

import numpy as np

from .errors import SrpError
from .neuron import DEFAULT_MASK_EPS


def parse_int_list(text: str, what: str = "value") -> list:
    """``"0,2,4"`` → ``[0, 2, 4]`` (sorted, unique, non-negative)."""
    try:
        vals = sorted({int(v) for v in str(text).replace(" ", "").split(",") if v != ""})
    except ValueError:
        raise SrpError(f"{what} must be a comma-separated list of integers, got {text!r}") from None
    if not vals:
        raise SrpError(f"{what}: empty list")
    if vals[0] < 0:
        raise SrpError(f"{what} must be >= 0, got {vals[0]}")
    return vals


def table_steps(T: int) -> list:
    """Columns of the paper's tables: 1, 2, 4, ... up to T (T itself included)."""
    steps, t = [], 1
    while t < T:
        steps.append(t)
        t *= 2
    steps.append(int(T))
    return steps


def ann_accuracy(model, x, y, chunk: int = 256) -> float:
    """Top-1 accuracy of the QCFS ANN on normalised images (float32, batches of ``chunk``, on all threads)."""
    from .evaluate import ann_logits

    if len(x) == 0:
        return 0.0
    logits = ann_logits(model, x, batch_size=chunk)
    return int((np.argmax(logits, axis=-1) == np.asarray(y)).sum()) / len(x)


def sweep(model, x, y, taus, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
          progress=None, simulator=None) -> dict:
    """Accuracy after every t = 1..T for each τ.

    Returns
    -------
    dict
        JSON-serialisable: ``{"taus": [...], "T": T, "images": N,
        "steps": [1, 2, 4, ..., T], "ann_accuracy": f, "accuracy": {str(τ):
        [acc after t = 1..T]}, "table": {str(τ): {str(t): acc for t in steps}},
        "seconds": {str(τ): s}}``.
    """
    from .simulator import Simulator, check_run_memory

    T = int(T)
    if T < 1:
        raise SrpError(f"T must be >= 1, got {T}")
    taus = [int(t) for t in taus]
    if taus:     # refused before the simulator is built (no kernel compilation for a run that cannot fit)
        check_run_memory(model, dtype if simulator is None else simulator.dtype, len(x), max(taus), T)
    sim = simulator or Simulator(model, dtype)
    y = np.asarray(y)
    steps = table_steps(T)
    out = {"taus": taus, "T": T, "images": int(len(x)), "steps": steps, "mask_eps": mask_eps,
           "ann_accuracy": ann_accuracy(model, x, y), "accuracy": {}, "table": {}, "seconds": {}}
    for tau in taus:
        res = sim.run(x, tau, T, mask_eps=mask_eps, record=False, progress=progress)
        acc = res.accuracy(y)
        out["accuracy"][str(tau)] = [float(a) for a in acc]
        out["table"][str(tau)] = {str(t): float(acc[t - 1]) for t in steps}
        out["seconds"][str(tau)] = float(res.seconds)
    return out


def row_label(tau: int) -> str:
    return "QCFS (τ=0)" if int(tau) == 0 else f"SRP (τ={int(tau)})"


def format_table(result: dict, arch: str = "") -> str:
    """The sweep as a plain-text table in the layout of the paper's Table 4."""
    steps = result["steps"]
    head = ["Method"] + (["Arch"] if arch else []) + ["ANN"] + [f"T={t}" for t in steps]
    rows = []
    for tau in result["taus"]:
        r = [row_label(tau)] + ([arch] if arch else []) + [f"{100 * result['ann_accuracy']:.2f}%"]
        r += [f"{100 * result['table'][str(tau)][str(t)]:.2f}%" for t in steps]
        rows.append(r)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(head), line(["-" * w for w in widths])] + [line(r) for r in rows])
