"""The Markdown tables of ``docs/analysis.md``, rendered from the JSON files of the commands
listed there (no simulation), so that the page's tables are never typed by hand.

    python docs/results/analysis_tables.py sweep docs/results/sweep_vgg16.json
    python docs/results/analysis_tables.py cases docs/results/analyze_vgg16.json
    python docs/results/analysis_tables.py totals docs/results/analyze_vgg16.json
    python docs/results/analysis_tables.py costs docs/results/report_vgg16.json docs/results/report_resnet20.json

``sweep``: accuracy against stage-2 steps T for every τ (``srp-np sweep --json``), the paper's
Table 4 layout. ``cases``: per IF layer, the Unevenness Error I cases of plain conversion and
Error II "any error" before → after SRP (``srp-np analyze --json``; Figs. 3 and 5). ``totals``:
the four cases over all neurons of all IF layers (neuron-weighted). ``costs``: per-image spikes,
rates, synaptic operations and the energy estimate of ``srp-np report --json`` files, one
column per file. The equal-latency tables come from ``equal_latency.py``.
"""
from __future__ import annotations

import argparse
import json

CASES = ("case1", "case2", "case3", "case4")
ARCH_NAMES = {"vgg16": "VGG-16", "resnet18": "ResNet-18", "resnet20": "ResNet-20", "resnet34": "ResNet-34"}


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _pct(v: float) -> str:
    return f"{100 * v:.2f}"


def sweep_table(sweep: dict, source: str = "QCFS") -> str:
    """Method | ANN | T=... rows, one per τ (τ = 0 is plain conversion named ``source``)."""
    steps = [int(s) for s in sweep["steps"]]
    ann = f"{_pct(sweep['ann_accuracy'])}%"
    lines = ["| Method | ANN | " + " | ".join(f"T={s}" for s in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for tau in sorted(int(k) for k in sweep["accuracy"]):
        acc = sweep["accuracy"][str(tau)]
        name = f"{source} (τ=0)" if tau == 0 else f"SRP (τ={tau})"
        lines.append(f"| {name} | {ann} | " + " | ".join(f"{_pct(acc[s - 1])}%" for s in steps) + " |")
    return "\n".join(lines)


def _any(d: dict) -> float:
    return sum(d[c] for c in CASES)


def cases_table(an: dict) -> str:
    """Per layer: Error I cases (τ = 0), Error I total, Error II total τ=0 → SRP and its change."""
    lines = ["| layer | Error I case 1 | case 2 | case 3 | case 4 | Error I total | Error II total τ=0 → SRP | Δ |",
             "|---|---|---|---|---|---|---|---|"]
    for layer in an["layers"]:
        e1 = layer["baseline"]["error_I"]
        before, after = _any(layer["baseline"]["error_II"]), _any(layer["srp"]["error_II"])
        lines.append(f"| {layer['name']} | " + " | ".join(_pct(e1[c]) for c in CASES)
                     + f" | {_pct(_any(e1))} | {_pct(before)} → {_pct(after)} | {100 * (after - before):+.2f} |")
    return "\n".join(lines)


def totals(an: dict) -> dict:
    """``{(run, error): {case: fraction of all IF neurons}}``, neuron-weighted over the layers."""
    n = sum(layer["neurons"] for layer in an["layers"])
    out = {}
    for run in ("baseline", "srp"):
        for err in ("error_I", "error_II"):
            out[run, err] = {c: sum(layer["neurons"] * layer[run][err][c] for layer in an["layers"]) / n
                             for c in CASES}
    return out


def totals_table(an: dict) -> str:
    tot = totals(an)
    lines = ["| | case 1 | case 2 | case 3 | case 4 | any error |", "|---|---|---|---|---|---|"]
    for run, label in (("baseline", "τ=0"), ("srp", f"SRP τ={an['tau']}")):
        for err, name in (("error_I", "Error I"), ("error_II", "Error II")):
            d = tot[run, err]
            lines.append(f"| {name}, {label} | " + " | ".join(_pct(d[c]) for c in CASES) + f" | {_pct(_any(d))} |")
    return "\n".join(lines)


def _m(v: float) -> str:
    return f"{v / 1e6:.1f} M"


def costs_table(reports: list, names: list) -> str:
    """Per-image costs of ``srp-np report`` files, one column each."""
    rows = [("spikes, stage 1 / stage 2", lambda t: f"{t['spikes_stage1']:,.0f} / {t['spikes']:,.0f}"),
            ("firing rate (spikes per neuron per step), stage 1 / stage 2",
             lambda t: f"{t['firing_rate_stage1']:.3f} / {t['firing_rate']:.3f}"),
            ("synaptic operations, stage 1 / stage 2", lambda t: f"{_m(t['sops_stage1'])} / {_m(t['sops'])}"),
            ("ANN MACs", lambda t: _m(t["ann_macs"])),
            ("energy estimate SNN / ANN (µJ)", lambda t: f"{t['energy_snn_j'] * 1e6:.1f} / {t['energy_ann_j'] * 1e6:.1f}")]
    lines = ["| | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for label, fmt in rows:
        lines.append(f"| {label} | " + " | ".join(fmt(r["totals"]) for r in reports) + " |")
    return "\n".join(lines)


def arch_name(d: dict) -> str:
    arch = d.get("arch") or ""
    return ARCH_NAMES.get(arch, arch)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("table", choices=("sweep", "cases", "totals", "costs"))
    ap.add_argument("json", nargs="+")
    ap.add_argument("--source", default="QCFS", help="name of the source activation for the τ = 0 row")
    ap.add_argument("--names", help="costs: comma-separated column names (default: each file's arch)")
    a = ap.parse_args(argv)
    docs = [_load(p) for p in a.json]
    if a.table == "costs":
        names = a.names.split(",") if a.names else [arch_name(d) or p for d, p in zip(docs, a.json)]
        if len(names) != len(docs):
            ap.error(f"--names gives {len(names)} names for {len(docs)} files")
        print(costs_table(docs, names))
        return
    if len(docs) != 1:
        ap.error(f"{a.table} takes one JSON file")
    d = docs[0]
    print(sweep_table(d, a.source) if a.table == "sweep" else cases_table(d) if a.table == "cases"
          else totals_table(d))


if __name__ == "__main__":
    main()
