"""Dask engine: ``--workers 1`` against ``--workers 2``, and an ImageNet ResNet-34 estimate on N nodes.

1. ``srp-np run`` (shipped ResNet-20, τ=4, T=8, ``--limit`` images) end to end, each in its own
   process: one process with 1 and 2 threads, and ``--workers 1`` / ``--workers 2`` (local Dask
   cluster, 1 Numba thread per worker; the cluster's start is included in the wall time). The
   figures of every run are checked to be identical.
2. An **estimate**, not a measurement, of evaluating ImageNet val (50,000 images) with ResNet-34
   (224×224, ImageNet widths, average pool in place of the stem's max pool, random weights with
   thresholds calibrated on smooth random images, so the firing rates are only plausible): the
   SNN time per image on one thread is *measured* here on a few images, and the estimate is
   images × seconds per image / (nodes × cores per node), i.e. it assumes the linear scaling
   over workers that part 1 measures on this machine, and no I/O or decoding cost.

    python benchmarks/dist_bench.py --limit 1024 --r34-images 2 --nodes 1,4,16 --cores 32
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

TIMING = {"images_per_second", "seconds", "ann_seconds", "snn_seconds", "other_seconds", "seconds_total",
          "snn_images_per_second", "images_per_second_end_to_end", "threads", "workers"}


def run_cli(args: list) -> tuple:
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "o.json")
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, "-m", "srp_np.cli.main", "run", *args, "-q", "--json", out],
                           capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"srp-np run {' '.join(args)} failed: {r.stderr.strip()[-400:]}")
        with open(out) as f:
            return wall, json.load(f)


def resnet34(x_cal, num_classes=1000, rng=0):
    from srp_np.testing import GraphBuilder

    g = GraphBuilder(tuple(x_cal.shape[1:]), num_classes, 4, rng, arch="resnet34-random")
    h = g.pool(g.act(g.conv("input", 64, k=7, stride=2, padding=3)), 2)
    cin = 64
    for i, (w, blocks) in enumerate(zip((64, 128, 256, 512), (3, 4, 6, 3))):
        for j in range(blocks):
            stride = 2 if (i > 0 and j == 0) else 1
            r = g.act(g.conv(h, w, stride=stride))
            r = g.conv(r, w, scale=0.5)
            sc = h if (stride == 1 and cin == w) else g.conv(h, w, k=1, stride=stride, padding=0)
            h = g.act(g.add(r, sc))
            cin = w
    c, hh, _ = g.shapes[h]
    h = g.flatten(g.pool(h, hh))
    return g.build(g.linear(h, num_classes), x_cal)


def r34_cost(n_images: int, tau: int, T: int) -> dict:
    import numba

    from srp_np.ann import ann_forward
    from srp_np.simulator import Simulator
    from srp_np.threads import blas_threads

    numba.set_num_threads(1)
    rng = np.random.default_rng(0)
    small = rng.random((n_images + 2, 3, 28, 28))
    x = ((small.repeat(8, axis=2).repeat(8, axis=3) - 0.45) / 0.225).astype(np.float32)   # smooth 224×224
    model = resnet34(x[:2].astype(np.float64))
    sim = Simulator(model, np.float32)
    sim.run(x[:1], 1, 1)                              # compile / load the kernels
    t0 = time.perf_counter()
    res = sim.run(x[2:], tau, T)
    snn = (time.perf_counter() - t0) / n_images
    with blas_threads(1):
        ann_forward(model, x[:1], np.float32)         # first call: allocations
        t0 = time.perf_counter()
        ann_forward(model, x[2:], np.float32)
        ann = (time.perf_counter() - t0) / n_images
    spikes = sum(int(v.sum()) + int(res.spikes_stage1[k].sum()) for k, v in res.spikes.items()) / n_images
    neurons = sum(res.neurons.values())
    return {"snn_s_per_image": snn, "ann_s_per_image": ann, "spikes_per_image": spikes,
            "firing_per_step": spikes / (neurons * (tau + T)), "neurons": neurons}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=1024)
    ap.add_argument("--r34-images", type=int, default=2)
    ap.add_argument("--tau", type=int, default=4)
    ap.add_argument("--T", type=int, default=8)
    ap.add_argument("--nodes", default="1,4,16")
    ap.add_argument("--cores", type=int, default=32, help="cores per node in the estimate")
    ap.add_argument("--skip-workers", action="store_true")
    a = ap.parse_args(argv)
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.1f} at start, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    if not a.skip_workers:
        base = ["--limit", str(a.limit), "--tau", str(a.tau), "--T", str(a.T)]
        ref = None
        for label, extra in (("1 process, 1 thread", ["--threads", "1"]),
                             ("1 process, 2 threads", ["--threads", "2"]),
                             ("--workers 1 (1 thread each)", ["--workers", "1", "--threads", "1"]),
                             ("--workers 2 (1 thread each)", ["--workers", "2", "--threads", "1"])):
            wall, j = run_cli(base + extra)
            figs = {k: v for k, v in j.items() if k not in TIMING}
            ref = ref or figs
            same = "identical figures" if figs == ref else "FIGURES DIFFER"
            print(f"{label:30s} {a.limit} images: {wall:6.1f} s wall, {a.limit / wall:6.1f} img/s "
                  f"(SNN compute {j['snn_seconds']:.1f} s, ANN {j['ann_seconds']:.1f} s); {same}")
    c = r34_cost(a.r34_images, a.tau, a.T)
    print(f"ResNet-34 224x224 (random weights, calibrated), τ={a.tau}, T={a.T}, 1 thread, measured on "
          f"{a.r34_images} images: SNN {c['snn_s_per_image']:.2f} s/image, ANN {c['ann_s_per_image']:.2f} s/image, "
          f"{c['spikes_per_image']:,.0f} spikes/image ({100 * c['firing_per_step']:.1f} % of neurons per step)")
    per = c["snn_s_per_image"] + c["ann_s_per_image"]
    print(f"ESTIMATE (not measured): ImageNet val, 50,000 images at {per:.2f} core-seconds per image, "
          f"{a.cores} cores per node, linear scaling:")
    for n in [int(v) for v in a.nodes.split(",")]:
        hours = 50000 * per / (n * a.cores) / 3600
        print(f"  {n:3d} node(s): {hours:7.2f} h")


if __name__ == "__main__":
    main()
