"""Per-kernel time profile of srp-np (where does the time go?).

Wraps every kernel call the simulator makes and prints ms per image per
(kernel, layer shape), with the achieved G synaptic ops/s of each conv::

    python benchmarks/profile_kernels.py vgg16 --batch 64 --images 64 --steps 8
    python benchmarks/profile_kernels.py resnet20 --batch 1 --images 8
"""
from __future__ import annotations

import argparse
import collections
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import get_images, get_model  # noqa: E402

import srp_np.engine.execute as E  # noqa: E402
import srp_np.simulator as S  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="vgg16, resnet20 or a file name in weights/ without .npz")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--steps", type=int, default=8, help="tau+T (tau = 4)")
    ap.add_argument("--top", type=int, default=20)
    args = ap.parse_args()

    acc, ops = collections.defaultdict(float), collections.defaultdict(float)
    orig_pick = E.pick

    def pick(kernel, work):
        k = orig_pick(kernel, work)
        par = work >= E.PARALLEL_MIN_WORK

        def timed(*a):
            t0 = time.perf_counter()
            r = k(*a)
            dt = time.perf_counter() - t0
            if kernel.__name__ in ("gather_bits", "gather_if_bits"):
                src, g = a[0], a[2]          # SpikeInput, ConvGeom (srp_np.kernels.records)
                kh, cin, cout, st, hout, wout = g.kh, g.cin, g.cout, g.stride, g.hout, g.wout
                kind = "linear" if (kh == 1 and hout * wout == 1 and g.hin == 1) else f"conv k{kh} s{st} @{hout}×{wout}"
                key = (f"{kind} {cin}→{cout}" + (" (pooled in)" if src.pool > 1 else "")
                       + (" + IF (fused)" if kernel.__name__ == "gather_if_bits" else ""))
                sops = a[7] if kernel.__name__ == "gather_bits" else a[10]
                key += "" if par else " [1 thread]"
                ops[key] += sops.sum()
            else:
                key = kernel.__name__ + ("" if par else " [1 thread]")
            acc[key] += dt
            return r
        return timed

    E.pick = pick
    model = get_model(args.model)
    x = get_images(model, args.images)
    sim = S.Simulator(model, np.float32)
    sim.run(x[:1], 4, args.steps - 4)
    acc.clear()
    ops.clear()
    t0 = time.perf_counter()
    for i in range(0, args.images, args.batch):
        sim.run(x[i:i + args.batch], 4, args.steps - 4)
    total = time.perf_counter() - t0
    n = args.images
    print(f"{args.model}: batch {args.batch}, tau+T={args.steps}: {n / total:.1f} img/s, "
          f"{total / n * 1e3:.2f} ms/img, of which kernels {sum(acc.values()) / n * 1e3:.2f}")
    for k, v in sorted(acc.items(), key=lambda kv: -kv[1])[:args.top]:
        rate = f"{ops[k] / v / 1e9:6.1f} G sops/s" if k in ops and v > 0 else ""
        print(f"  {k:45s} {v / n * 1e3:8.3f} ms/img  {rate}")


if __name__ == "__main__":
    main()
