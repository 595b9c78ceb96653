"""Run by tests/test_isa_paths.py in a subprocess whose environment selects a Numba target
(NUMBA_CPU_NAME / NUMBA_CPU_FEATURES): simulate a set of random graphs that reach every
gather code path (16-, 32- and 64-bit list builders, pooled inputs, every accumulator block
width, the fused conv → IF kernel with identity and 1×1 shortcuts, the linear kernels), check
float64 spike for spike against the dense reference, and save every output and spike count
so that the parent can compare targets bit for bit.

Usage: python tests/isa_worker.py OUT.npz
"""
import sys

import numpy as np


def graphs():
    from srp_np.testing import GraphBuilder, random_resnet, random_vgg

    rng = np.random.default_rng(3)
    x = rng.random((12, 3, 12, 12))
    yield "vgg", random_vgg((3, 12, 12), widths=(12, 40), fc=24, rng=1, calibrate_x=x), x
    yield "resnet", random_resnet((3, 12, 12), widths=(16, 32), blocks=2, rng=2, calibrate_x=x), x
    # wide layers: 70 and 130 input channels (several spike words), 256- and 272-channel outputs
    # (256- and 128-wide blocks plus the 16-wide and 1-wide tails), a pooled 130-channel input
    g = GraphBuilder((3, 8, 8), 10, rng=4)
    h = g.act(g.conv("input", 70))
    h = g.act(g.conv(h, 130))
    h = g.act(g.conv(g.pool(h, 2), 256))
    h = g.act(g.conv(h, 272, k=1, padding=0))
    h = g.act(g.linear(g.flatten(g.pool(h, 2)), 100))
    xw = rng.random((6, 3, 8, 8))
    yield "wide", g.build(g.linear(h, 10), xw), xw


def main(out):
    from srp_np.kernels.isa import describe, simd_path
    from srp_np.reference import simulate_dense
    from srp_np.simulator import Simulator

    saved = {"path": np.array(simd_path())}
    print(describe(), flush=True)
    for name, model, x in graphs():
        for tau, T in ((0, 3), (2, 3)):
            dense = simulate_dense(model, x, tau, T)
            for dt in (np.float64, np.float32):
                r = Simulator(model, dt).run(x, tau, T)
                key = f"{name}_{tau}_{np.dtype(dt).name}"
                saved[key + "_outputs"] = r.outputs
                for q in model.qcfs_nodes:
                    n = q["name"]
                    saved[f"{key}_{n}_spikes"] = r.spikes[n]
                    saved[f"{key}_{n}_spikes1"] = r.spikes_stage1[n]
                    if dt is np.float64:
                        # spike for spike against the float64 dense reference
                        want = dense.spikes[n].reshape(len(x), -1).sum(1)
                        want1 = dense.spikes_stage1[n].reshape(len(x), -1).sum(1)
                        if not (np.array_equal(r.spikes[n], want) and np.array_equal(r.spikes_stage1[n], want1)):
                            raise SystemExit(f"{key}: spikes of {n} differ from the dense reference")
                if dt is np.float64:
                    rec = Simulator(model, dt).run(x, tau, T, record=True)
                    for q in model.qcfs_nodes:
                        n = q["name"]
                        if not np.array_equal(rec.record[n]["spikes"], dense.spikes[n]):
                            raise SystemExit(f"{key}: recorded spikes of {n} differ from the dense reference")
                    if not np.allclose(r.outputs, dense.outputs, rtol=1e-10, atol=1e-10):
                        raise SystemExit(f"{key}: outputs differ from the dense reference")
    np.savez(out, **saved)


if __name__ == "__main__":
    main(sys.argv[1])
