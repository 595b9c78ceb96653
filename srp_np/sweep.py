"""Accuracy for a grid of τ and T (Table 4 / Fig. 6 of the paper).

One simulation per τ with the largest T gives every smaller T for free:
``SimResult.outputs[t-1]`` is the mean output over the first t stage-2 steps,
which is exactly what a run with T = t reports (stage 2 is causal).
"""
from __future__ import annotations

import numpy as np

from .errors import SrpError
from .neuron import DEFAULT_MASK_EPS, DEFAULT_MASK_RULE
from .tables import text_table


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


def sweep_counts(model, x, y, taus, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
                 progress=None, simulator=None, batch_size: int = 256, store=None, engine=None,
                 mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Exact counts of a sweep: correct predictions after t = 1..T for each τ, batch by batch.

    Parameters
    ----------
    model, x, y, taus, T, dtype, mask_eps, mask_rule
        As for :func:`sweep` (``x`` normalised).
    batch_size : int
        Images per unit of work (one cell = one τ on one batch); the counts do not depend on it.
    store : ResultStore, optional
        Finished units are read from and written to it (:mod:`srp_np.store`), keyed by the
        model's hash, the batch's hash and the settings, so an interrupted sweep resumes
        without recomputing finished cells.
    engine : DaskEngine, optional
        Run the cells that are not in the store as Dask tasks, one per cell and batch
        (:class:`srp_np.distributed.DaskEngine`); each is stored as soon as it finishes.

    Returns
    -------
    dict
        ``{"taus", "T", "n_images", "ann_correct": int, "correct": {str(τ): [int] * T},
        "seconds": {str(τ): s}}``; accuracy after t steps = ``correct[τ][t-1] / n_images``.
    """
    import time

    from .simulator import Simulator, check_run_memory

    T = int(T)
    if T < 1:
        raise SrpError(f"`T` must be >= 1, got {T}")
    taus = [int(t) for t in taus]
    n = int(len(x))
    batch_size = max(1, int(batch_size))
    if taus and n:   # refused before the simulator is built (no kernel compilation for a run that cannot fit)
        check_run_memory(model, dtype if simulator is None else simulator.dtype, min(n, batch_size), max(taus), T)
    y = np.asarray(y)
    starts = list(range(0, n, batch_size))
    dt_name = np.dtype(dtype if simulator is None else simulator.dtype).name
    keys = {}
    if store is not None:
        from .store import data_sha256, model_sha256

        m_hash = model_sha256(model)
        d_hash = {s: data_sha256(np.asarray(x[s:s + batch_size], np.float32), y[s:s + batch_size]) for s in starts}
        keys["ann"] = {s: store.key(kind="ann", model=m_hash, data=d_hash[s]) for s in starts}
        for tau in taus:
            keys[tau] = {s: store.key(kind="sweep-cell", model=m_hash, data=d_hash[s], tau=tau, T=T, dtype=dt_name,
                                      mask_eps=float(mask_eps), mask_rule=mask_rule) for s in starts}

    def cached(kind, s):
        return None if store is None else store.get(keys[kind][s])

    ann_correct = 0
    for s in starts:
        c = cached("ann", s)
        if c is None:
            c = _ann_correct(model, x[s:s + batch_size], y[s:s + batch_size])
            if store is not None:
                store.put(keys["ann"][s], c, {"kind": "ann", "images": [s, min(n, s + batch_size)]})
        ann_correct += int(c)
    sim = simulator
    out = {"taus": taus, "T": T, "n_images": n, "ann_correct": ann_correct, "correct": {}, "seconds": {}}
    done, todo = {}, []
    for tau in taus:
        for s in starts:
            c = cached(tau, s)
            if c is None:
                todo.append((tau, s))
            else:
                done[(tau, s)] = [int(v) for v in c]
                if progress is not None:
                    progress(len(x[s:s + batch_size]))

    def finished(cell, c):
        tau, s = cell
        done[cell] = c
        if store is not None:
            store.put(keys[tau][s], c, {"kind": "sweep-cell", "tau": tau, "T": T,
                                        "images": [s, min(n, s + batch_size)]})

    seconds = {tau: 0.0 for tau in taus}
    if engine is not None and todo:
        # the cells run at once on the cluster: no wall time per τ
        engine.sweep_cells(model, x, y, taus, T, dtype, mask_eps, batch_size, todo, progress, finished,
                           mask_rule=mask_rule)
        seconds = {tau: None for tau in taus}
    else:
        for tau, s in todo:
            xb, yb = x[s:s + batch_size], y[s:s + batch_size]
            if sim is None:
                sim = Simulator(model, dtype)
            t0 = time.perf_counter()
            res = sim.run(xb, tau, T, mask_eps=mask_eps, record=False, mask_rule=mask_rule)
            seconds[tau] += time.perf_counter() - t0
            finished((tau, s), [int(v) for v in (res.predictions() == yb[None, :]).sum(axis=1)])
            if progress is not None:
                progress(len(xb))
    for tau in taus:
        correct = [0] * T
        for s in starts:
            correct = [a + b for a, b in zip(correct, done[(tau, s)])]
        out["correct"][str(tau)] = correct
        out["seconds"][str(tau)] = seconds[tau]
    return out


def _ann_correct(model, x, y) -> int:
    """Images the QCFS ANN classifies correctly (float32, batches of 256)."""
    from .evaluate import ann_logits

    if len(x) == 0:
        return 0
    return int((np.argmax(ann_logits(model, x, batch_size=256), axis=-1) == np.asarray(y)).sum())


def sweep_figures(counts: dict, mask_eps: float, mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """The sweep's figures from its counts (:func:`sweep_counts`, possibly summed over shards).

    accuracy[τ][t-1] = correct[τ][t-1] / N, table[τ][t] for t in 1, 2, 4, ..., T,
    ann_accuracy = ann_correct / N.
    """
    n, T = counts["n_images"], int(counts["T"])
    steps = table_steps(T)
    out = {"taus": list(counts["taus"]), "T": T, "images": n, "steps": steps, "mask_eps": mask_eps,
           "mask_rule": mask_rule,
           "ann_accuracy": counts["ann_correct"] / n if n else 0.0, "accuracy": {}, "table": {},
           "seconds": dict(counts.get("seconds", {}))}
    for tau in counts["taus"]:
        acc = [c / n if n else 0.0 for c in counts["correct"][str(tau)]]
        out["accuracy"][str(tau)] = acc
        out["table"][str(tau)] = {str(t): acc[t - 1] for t in steps}
    return out


def sweep(model, x, y, taus, T: int, dtype=np.float32, mask_eps: float = DEFAULT_MASK_EPS,
          progress=None, simulator=None, batch_size: int = 256, store=None, engine=None,
          mask_rule: str = DEFAULT_MASK_RULE) -> dict:
    """Accuracy after every t = 1..T for each τ.

    Accuracy after t steps = (correct predictions after t stage-2 steps) / N, from
    :func:`sweep_counts` (see there for ``batch_size`` and ``store``).

    Returns
    -------
    dict
        JSON-serialisable: ``{"taus": [...], "T": T, "images": N,
        "steps": [1, 2, 4, ..., T], "ann_accuracy": f, "accuracy": {str(τ):
        [acc after t = 1..T]}, "table": {str(τ): {str(t): acc for t in steps}},
        "seconds": {str(τ): s}}``.
    """
    counts = sweep_counts(model, x, y, taus, T, dtype=dtype, mask_eps=mask_eps, progress=progress,
                          simulator=simulator, batch_size=batch_size, store=store, engine=engine,
                          mask_rule=mask_rule)
    return sweep_figures(counts, mask_eps, mask_rule)


#: Names of the source activations a model file can record (``source_activation``,
#: written by ``srp-np train --activation``); τ = 0 is plain conversion of that source.
SOURCE_NAMES = {"qcfs": "QCFS", "tcl": "TCL", "relu": "ReLU"}


def source_name(graph: dict) -> str:
    """Display name of a model graph's source activation (``QCFS`` when the file does not say)."""
    src = graph.get("source_activation") or "qcfs"
    return SOURCE_NAMES.get(str(src), str(src))


def row_label(tau: int, source: str = "QCFS") -> str:
    """Row name: plain conversion of the source at τ = 0, SRP otherwise."""
    return f"{source} (τ=0)" if int(tau) == 0 else f"SRP (τ={int(tau)})"


def format_table(result: dict, arch: str = "", source: str = "QCFS") -> str:
    """The sweep as a plain-text table in the layout of the paper's Table 4.

    ``source`` names the τ = 0 row (plain conversion of that source, see :func:`source_name`)."""
    steps = result["steps"]
    head = ["Method"] + (["Arch"] if arch else []) + ["ANN"] + [f"T={t}" for t in steps]
    rows = []
    for tau in result["taus"]:
        r = [row_label(tau, source)] + ([arch] if arch else []) + [f"{100 * result['ann_accuracy']:.2f}%"]
        r += [f"{100 * result['table'][str(tau)][str(t)]:.2f}%" for t in steps]
        rows.append(r)
    return "\n".join(text_table(head, rows))
