"""Pictures for sweeps, error-case analyses and the teaching traces.

matplotlib is imported lazily inside each function, with the non-interactive
Agg backend, so that the rest of srp-np never needs it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import SrpError
from .sweep import row_label

CASE_COLORS = {"case1": "#d62728", "case2": "#ff7f0e", "case3": "#1f77b4", "case4": "#9467bd"}
CASE_LABELS = {"case1": "Case 1 (a=0, φ>a)", "case2": "Case 2 (0<a<λ, φ>a)",
               "case3": "Case 3 (0<a<λ, φ<a)", "case4": "Case 4 (a=λ, φ<a)"}


def _plt():
    try:
        import matplotlib
        matplotlib.use("Agg", force=True)
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover
        raise SrpError(f"plotting needs matplotlib ({e})") from None
    return plt


def _save(fig, path) -> str:
    from .fileio import atomic_write

    p = Path(path)
    try:
        if p.parent and not p.parent.exists():
            p.parent.mkdir(parents=True, exist_ok=True)
        # written whole or not at all: an interrupted write never destroys an earlier picture
        atomic_write(p, lambda tmp: fig.savefig(tmp, dpi=120, bbox_inches="tight", format=p.suffix[1:] or "png"))
    except (OSError, ValueError) as e:
        raise SrpError(f"cannot write plot {p}: {e}") from None
    finally:
        import matplotlib.pyplot as plt
        plt.close(fig)
    return str(p)


def plot_sweep(result: dict, path, title: str = "", source: str = "QCFS") -> str:
    """Accuracy vs latency τ+T (log2 x-axis), one curve per τ, ANN accuracy dashed.

    ``source`` names the τ = 0 curve (plain conversion of that source)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    T = result["T"]
    cmap = plt.get_cmap("viridis")
    taus = result["taus"]
    for i, tau in enumerate(taus):
        acc = np.asarray(result["accuracy"][str(tau)]) * 100
        lat = np.arange(1, T + 1) + int(tau)
        label = row_label(tau, source)
        color = "black" if int(tau) == 0 else cmap(0.15 + 0.75 * i / max(1, len(taus) - 1))
        ax.plot(lat, acc, label=label, color=color, lw=1.6)
        steps = [t for t in result["steps"]]
        ax.plot([t + int(tau) for t in steps], [acc[t - 1] for t in steps], "o", color=color, ms=3.5)
    ax.axhline(100 * result["ann_accuracy"], color="gray", ls="--", lw=1.2,
               label=f"ANN ({100 * result['ann_accuracy']:.2f}%)")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("latency τ + T (time steps)")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(title or f"Accuracy vs latency ({result['images']} images)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    return _save(fig, path)


def plot_cases(result: dict, path, title: str = "") -> str:
    """Stacked bars of the four error cases per IF layer, baseline beside SRP (Figs. 3 and 5)."""
    plt = _plt()
    layers = result["layers"]
    n = len(layers)
    fig, axes = plt.subplots(2, 1, figsize=(max(6.0, 0.55 * n + 2.5), 7.0), sharex=True)
    x = np.arange(n)
    w = 0.38
    for ax, err, name in zip(axes, ("error_I", "error_II"), ("Unevenness Error I", "Unevenness Error II")):
        for off, key, hatch in ((-w / 2 - 0.01, "baseline", ""), (w / 2 + 0.01, "srp", "//")):
            bottom = np.zeros(n)
            for case in ("case1", "case2", "case3", "case4"):
                vals = np.array([100 * L[key][err][case] for L in layers])
                ax.bar(x + off, vals, w, bottom=bottom, color=CASE_COLORS[case], hatch=hatch,
                       edgecolor="white" if not hatch else "black", linewidth=0.3,
                       label=CASE_LABELS[case] if key == "baseline" else None)
                bottom += vals
        ax.set_ylabel("% of neurons")
        ax.set_title(f"{name}: left bar τ=0 (QCFS), right bar (hatched) SRP τ={result['tau']}", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, 0.955), frameon=False)
    axes[1].set_xticks(x)
    axes[1].set_xticklabels([L["name"] for L in layers], rotation=60, ha="right", fontsize=7)
    fig.suptitle(title or f"Unevenness error cases per IF layer (T={result['T']}, {result['images']} images)",
                 fontsize=10, y=0.99)
    fig.subplots_adjust(top=0.88)
    return _save(fig, path)


def plot_fig1(result: dict, path) -> str:
    """Fig. 1(b)-(d): presynaptic rasters, membrane trace with threshold, output spikes."""
    plt = _plt()
    scen = result["scenarios"]
    T, theta = result["T"], result["theta"]
    fig, axes = plt.subplots(3, len(scen), figsize=(4.0 * len(scen), 6.2),
                             gridspec_kw={"height_ratios": [1, 2.4, 0.8]}, sharex=True)
    t = np.arange(1, T + 1)
    for j, s in enumerate(scen):
        ax = axes[0, j]
        for i, (row, wgt) in enumerate(zip(s["pre_spikes"], result["W"])):
            ts = t[np.asarray(row) > 0]
            ax.vlines(ts, i + 0.6, i + 1.4, color="tab:green" if wgt > 0 else "tab:red", lw=2.5)
        ax.set_yticks([1, 2])
        ax.set_yticklabels([f"w={result['W'][0]:+g}", f"w={result['W'][1]:+g}"], fontsize=8)
        ax.set_ylim(0.3, 2.7)
        ax.set_title(s["title"], fontsize=9)
        ax = axes[1, j]
        st = s["steps"]
        # membrane: v(0), then for each step u(t) (before reset) and v(t) (after)
        xs, vs = [0], [result["v0"]]
        for r in st:
            xs += [r["t"], r["t"]]
            vs += [r["u"], r["v_after"]]
        ax.plot(xs, vs, color="tab:blue", lw=1.5, marker=".", label="membrane (u before, v after reset)")
        ax.axhline(theta, color="tab:red", ls="--", lw=1, label="threshold θ")
        ax.axhline(0, color="gray", lw=0.6)
        ax.set_ylabel("membrane")
        ax.text(0.02, 0.95, f"φ = {s['phi']:.3f}, a = {result['a']:.3f}\nerror φ−a = {s['error']:+.3f}, "
                f"v(T) = {s['v_T']:+.2f}", transform=ax.transAxes, va="top", fontsize=8,
                bbox=dict(facecolor="white", alpha=0.8, lw=0))
        if j == 0:
            ax.legend(fontsize=7, loc="lower right")
        ax = axes[2, j]
        out = [r["t"] for r in st if r["spike"]]
        ax.vlines(out, 0.2, 1.0, color="black", lw=2.5)
        ax.set_yticks([])
        ax.set_ylim(0, 1.2)
        ax.set_ylabel("output", fontsize=8)
        ax.set_xlabel("time step t")
        ax.set_xticks(t)
        ax.set_xlim(-0.3, T + 0.5)
    fig.suptitle(f"Unevenness error (paper Fig. 1): W = {result['W']}, a = {result['a_prev']}, θ = {theta}, "
                 f"T = {T}; ANN output a = {result['a']}", fontsize=10)
    return _save(fig, path)


def plot_neuron(trace: dict, path) -> str:
    """One real neuron through both SRP stages: input, membrane with threshold, spikes, running φ."""
    plt = _plt()
    rows = trace["stage1"] + trace["stage2"]
    tau, T, theta = trace["tau"], trace["T"], trace["theta"]
    steps = np.arange(1, len(rows) + 1)
    fig, axes = plt.subplots(4, 1, figsize=(max(6.5, 0.12 * len(rows) + 4), 7.5), sharex=True,
                             gridspec_kw={"height_ratios": [1, 2, 0.6, 1.2]})
    ax = axes[0]
    ax.bar(steps, [r["input"] for r in rows], color="tab:gray", width=0.8)
    ax.set_ylabel("input x(t)")
    ax.set_title(f"{trace['layer']}{tuple(trace['index'])}: τ={tau}, T={T}, θ={theta:.4g}; "
                 f"{'kept' if trace['kept'] else 'MASKED'} by SRP; case (Error II): {trace['case_error_II']}",
                 fontsize=9)
    ax = axes[1]
    xs, vs = [0], [theta / 2]
    for i, r in enumerate(rows):
        if r["stage"] == 2 and r["t"] == 1 and tau:
            xs.append(i + 0.5)
            vs.append(theta / 2)  # reset to θ/2 after stage 1
        xs += [i + 1, i + 1]
        vs += [r["u"], r["v_after"]]
    ax.plot(xs, vs, color="tab:blue", lw=1.2, marker=".", ms=3)
    ax.axhline(theta, color="tab:red", ls="--", lw=1, label="θ")
    ax.axhline(0, color="gray", lw=0.6)
    if tau:
        ax.axvline(tau + 0.5, color="black", lw=1)
        tr = ax.get_xaxis_transform()
        ax.text((tau + 1) / 2, 1.02, "stage 1", transform=tr, ha="center", fontsize=8)
        ax.text(tau + (T + 1) / 2, 1.02, "stage 2 (after mask and reset to θ/2)", transform=tr, ha="center",
                fontsize=8)
        ax.annotate(f"v(τ) = {trace['v_tau']:.3g}", (tau, trace["v_tau"]), fontsize=8,
                    xytext=(5, 10), textcoords="offset points")
    ax.set_ylabel("membrane")
    ax.legend(fontsize=7, loc="upper left")
    ax = axes[2]
    for i, r in enumerate(rows):
        if r["spike"]:
            ax.vlines(i + 1, 0.1, 0.9, color="black", lw=2)
        elif r["fired"]:
            ax.vlines(i + 1, 0.1, 0.9, color="tab:orange", lw=2, alpha=0.6)
    ax.set_yticks([])
    ax.set_ylabel("spikes", fontsize=8)
    ax = axes[3]
    ph = [r["phi"] for r in trace["stage2"]]
    ax.plot(np.arange(tau + 1, tau + T + 1), ph, color="tab:blue", label="running φ (stage 2)")
    ax.axhline(trace["a_ann"], color="tab:green", ls="--", label=f"ANN a = {trace['a_ann']:.3g}")
    ax.set_ylabel("φ")
    ax.set_xlabel("time step (stage 1 then stage 2)")
    ax.legend(fontsize=7)
    return _save(fig, path)
