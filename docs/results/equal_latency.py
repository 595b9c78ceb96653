"""Accuracy at equal latency τ + t from an ``srp-np sweep --json`` file (no simulation).

The sweep records, for every τ, the accuracy after every stage-2 step t = 1..T; SRP with τ
reaches latency τ + t after t stage-2 steps, plain conversion (τ = 0) after t = τ + t steps.
This prints one row per latency with every τ's accuracy at that latency (a dash where
t < 1 or t > T), the best SRP τ, and its gain over plain conversion, as a Markdown table.

    python docs/results/equal_latency.py docs/results/sweep_vgg16.json [MORE.json ...] [--latency 2,3,4,...]

Several files of the same model and images are merged: for each τ the longest run is used
(a longer run of the same τ repeats the shorter one's first steps exactly, stage 2 being causal).
"""
from __future__ import annotations

import argparse
import json
import math


def rows(sweep: dict, latencies: list) -> list:
    acc = {int(k): v for k, v in sweep["accuracy"].items()}
    taus = sorted(acc)
    out = []
    for lat in latencies:
        cells = {}
        for tau in taus:
            t = lat - tau
            cells[tau] = acc[tau][t - 1] if 1 <= t <= len(acc[tau]) else None
        srp = {tau: a for tau, a in cells.items() if tau > 0 and a is not None}
        best = max(srp, key=lambda k: srp[k]) if srp else None
        out.append((lat, cells, best))
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_json", nargs="+")
    ap.add_argument("--latency", default="2,3,4,5,6,8,10,12,16,20,24,32,48,64")
    ap.add_argument("--source", default="QCFS", help="name of the source activation for the τ = 0 column")
    a = ap.parse_args(argv)
    sweep = None
    for path in a.sweep_json:
        with open(path, encoding="utf-8") as f:
            d = json.load(f)
        if sweep is None:
            sweep = d
            continue
        if (d["images"], d.get("model"), d.get("mask_eps")) != (sweep["images"], sweep.get("model"), sweep.get("mask_eps")):
            raise SystemExit(f"{path}: not the same model, images and mask_eps as {a.sweep_json[0]}")
        for tau, acc in d["accuracy"].items():
            if len(acc) > len(sweep["accuracy"].get(tau, [])):
                sweep["accuracy"][tau] = acc
    lats = [int(v) for v in a.latency.split(",")]
    taus = sorted(int(k) for k in sweep["accuracy"])
    n = sweep["images"]
    print(f"{sweep.get('arch', '')}: accuracy (%) at equal latency τ + t, {n} images, ANN "
          f"{100 * sweep['ann_accuracy']:.2f}% (from {', '.join(a.sweep_json)})")
    print()
    head = ["latency"] + [(f"{a.source} (τ=0)" if t == 0 else f"SRP τ={t}") for t in taus] + [f"best SRP − {a.source}"]
    print("| " + " | ".join(head) + " |")
    print("|" + "---:|" * len(head))
    for lat, cells, best in rows(sweep, lats):
        c = [f"{100 * cells[t]:.2f}" if cells[t] is not None else "–" for t in taus]
        q = cells.get(0)
        gain = (f"{100 * (cells[best] - q):+.2f} (τ={best})" if best is not None and q is not None else "–")
        print(f"| {lat} | " + " | ".join(c) + f" | {gain} |")
    p = sweep["ann_accuracy"]
    print()
    print(f"Standard error of one accuracy near {100 * p:.0f}% on {n} images: "
          f"{100 * math.sqrt(p * (1 - p) / n):.2f} points.")


if __name__ == "__main__":
    main()
