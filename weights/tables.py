"""Markdown tables of ``weights/README.md`` from the outputs they summarise.

    python weights/tables.py run MODEL_tau0.json MODEL_tau4.json [--name "VGG-16 (width 0.35)"]
    python weights/tables.py log TRAIN.log

``run``: the accuracy-per-step table of two ``srp-np run --json`` outputs of one model (τ = 0, plain
conversion, and τ > 0, SRP), the comparison at equal total latency τ + t, spikes, synaptic operations
and throughput. ``log``: the per-epoch table of an ``srp-np train`` log (the last record of each epoch
wins, so a log of a resumed run gives each epoch once).

Nothing is typed by hand: the README's tables are the output of these commands.
"""
from __future__ import annotations

import argparse
import json
import re
import sys

from srp_np.sweep import row_label


def _load(path: str) -> dict:
    with open(path, encoding="utf-8") as f:
        r = json.load(f)
    for k in ("tau", "T", "accuracy", "ann_accuracy", "n_images"):
        if k not in r:
            raise SystemExit(f"error: {path} is not an `srp-np run --json` output (no {k!r})")
    return r


def run_tables(plain: dict, srp: dict, name: str) -> str:
    """Markdown: the two rows (latency t and τ + t), then equal-latency pairs, then the costs."""
    if plain["tau"] != 0 or srp["tau"] <= 0:
        raise SystemExit("error: give the τ = 0 run first, then the SRP run (τ > 0)")
    if plain["n_images"] != srp["n_images"] or plain.get("data") != srp.get("data"):
        raise SystemExit("error: the two runs used different images")
    tau, T = int(srp["tau"]), min(len(plain["accuracy"]), len(srp["accuracy"]))
    pct = lambda a: f"{100 * a:.2f}"   # noqa: E731
    out = [f"### {name}: ANN {100 * srp['ann_accuracy']:.2f}%", "",
           "| | " + " | ".join(f"t={t}" for t in range(1, T + 1)) + " |",
           "|---|" + "---:|" * T,
           f"| {row_label(0)}, latency t | " + " | ".join(pct(a) for a in plain["accuracy"][:T]) + " |",
           f"| {row_label(tau)}, latency {tau}+t | " + " | ".join(pct(a) for a in srp["accuracy"][:T]) + " |", ""]
    pairs = [(lat, plain["accuracy"][lat - 1], srp["accuracy"][lat - tau - 1])
             for lat in range(tau + 1, T + 1)]
    pairs = [p for p in pairs if p[0] in (tau + 1, tau + 2, 2 * tau, 3 * tau, 4 * tau) or p[0] == T]
    if pairs:
        out.append("At equal total latency: " + "; ".join(
            f"{lat} steps: QCFS {pct(q)}% vs SRP {pct(s)}%" for lat, q, s in pairs) + ".")
        out.append("")
    out.append(f"SRP (τ={tau}) at t = {min(T, 4)} against the ANN: "
               f"{100 * (srp['accuracy'][min(T, 4) - 1] - srp['ann_accuracy']):+.2f} points "
               f"({srp['n_images']:,} images, {srp.get('dtype', 'float32')}, mask rule "
               f"{srp.get('mask_rule', 'authors')}, ε = {srp.get('mask_eps')}).")
    out.append("")
    out.append(f"Spikes per image (both stages): {plain['spikes_per_image']:,.0f} (τ=0, {plain['T']} steps), "
               f"{srp['spikes_per_image']:,.0f} (τ={tau}, {tau + srp['T']} steps); synaptic operations per image: "
               f"{plain['sops_per_image']:,.0f} / {srp['sops_per_image']:,.0f}; SNN throughput "
               f"{plain['snn_images_per_second']:.1f} / {srp['snn_images_per_second']:.1f} images/s on "
               f"{srp.get('threads', '?')} thread(s) (machine shared with other jobs).")
    return "\n".join(out)


_EPOCH = re.compile(r"^epoch (\d+)/(\d+) loss ([\d.]+) train_acc ([\d.]+) test_acc ([\d.]+) lr ([\d.e-]+) "
                    r"time (\d+)s")


def log_table(path: str) -> str:
    """Markdown: one row per epoch of an ``srp-np train`` log (epoch, schedule length, loss, accuracies, s)."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            m = _EPOCH.match(line.strip())
            if m:
                rows[int(m.group(1))] = m.groups()
    if not rows:
        raise SystemExit(f"error: {path} has no epoch lines of `srp-np train`")
    out = ["| epoch | schedule | loss | train acc | test acc | lr at end | seconds |",
           "|---:|---:|---:|---:|---:|---:|---:|"]
    for e in sorted(rows):
        _, of, loss, tr, te, lr, sec = rows[e]
        out.append(f"| {e} | {of} | {float(loss):.4f} | {100 * float(tr):.2f}% | {100 * float(te):.2f}% | "
                   f"{float(lr):.5f} | {sec} |")
    return "\n".join(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    r = sub.add_parser("run", help="accuracy tables from srp-np run --json outputs")
    r.add_argument("plain", help="the τ = 0 run's JSON")
    r.add_argument("srp", help="the SRP run's JSON (τ > 0)")
    r.add_argument("--name", default="model")
    g = sub.add_parser("log", help="per-epoch table of an srp-np train log")
    g.add_argument("log")
    a = ap.parse_args(argv)
    try:
        text = run_tables(_load(a.plain), _load(a.srp), a.name) if a.what == "run" else log_table(a.log)
    except OSError as e:
        print(f"error: {e.filename}: {e.strerror}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
