"""Random-graph differential test: the event-driven simulator against the float64 dense
reference, spike for spike, on graphs that use every pattern the srp-np/1 format admits:
duplicate-input adds (x + x), adds that read ``input``, residual adds of spikes and of
currents, 2×2, 3×3 and overlapping average pools (with and without an IF layer right after),
pools of currents, flatten anywhere (then linear layers), 1×1 and strided convs.

``SRP_NP_DIFF_GRAPHS=N`` runs N graphs (default 40 in the suite; thousands by hand).
"""
import os

import numpy as np
import pytest

from srp_np.reference import simulate_dense
from srp_np.simulator import Simulator
from srp_np.testing import GraphBuilder

N_GRAPHS = int(os.environ.get("SRP_NP_DIFF_GRAPHS", "40"))

#: Seeds whose graphs have exact ties after a pool of time-varying values: a reference that
#: pools with NumPy's mean (another summation grouping) differs there by one spike (12 of the
#: first 3000 graphs); kept in every run.
TIE_SEEDS = [524, 600, 702, 905, 925, 1025, 1776, 1777, 2272, 2387, 2874, 2908]


def random_graph(seed):
    """A random valid graph, its inputs, and the list of patterns it uses."""
    rng = np.random.default_rng(seed)
    C0, H0 = int(rng.integers(1, 4)), int(rng.choice([6, 8, 9]))
    g = GraphBuilder((C0, H0, H0), int(rng.integers(2, 6)), rng=seed)
    x = rng.random((int(rng.integers(3, 7)), C0, H0, H0)) * 1.5 - 0.25
    used = set()
    h = "input"
    if rng.random() < 0.3:                     # a residual add that reads the analog input
        h = g.add(g.conv("input", C0), "input")
        used.add("add-input")
    h = g.act(g.conv(h, int(rng.integers(2, 12))))
    for _ in range(int(rng.integers(1, 5))):
        c, hh, _w = g.shapes[h]
        r = rng.random()
        if r < 0.25:
            k = int(rng.choice([1, 3]))
            pad = 1 if (k == 3 and hh < 3) else int(rng.choice([0, 1]))
            h = g.act(g.conv(h, int(rng.integers(2, 70)), k=k, stride=int(rng.choice([1, 1, 2])), padding=pad))
            used.add("conv")
        elif r < 0.45 and hh >= 2:
            k, st = [(2, 2), (3, 3), (3, 1), (2, 1), (3, 2)][int(rng.integers(0, 5))]
            if hh < k:
                continue
            h = g.pool(h, k, st)
            used.add(f"pool{k}s{st}")
            if rng.random() < 0.5:
                h = g.act(h)                   # an IF layer fed by the pooled spikes directly
                used.add("pool-act")
        elif r < 0.6:
            h = g.act(g.add(h, h))             # x + x of spikes
            used.add("add-dup")
        elif r < 0.75:
            cur = g.conv(h, c, scale=0.7)
            if rng.random() < 0.5:
                h = g.act(g.add(cur, h))       # identity shortcut
                used.add("add-res")
            else:
                h = g.act(g.add(cur, cur))     # x + x of currents
                used.add("add-dup-cur")
        elif r < 0.85 and hh >= 3:
            cur = g.conv(h, int(rng.integers(2, 10)))
            h = g.act(g.pool(cur, 3, int(rng.choice([1, 3]))))   # a pool of currents
            used.add("pool-cur")
        else:
            break
    if rng.random() < 0.5:
        h = g.flatten(h)
        used.add("flatten")
        if rng.random() < 0.5:
            h = g.act(g.linear(h, int(rng.integers(3, 40))))
    else:
        c, hh, _w = g.shapes[h]
        h = g.flatten(g.pool(h, hh))
    out = g.linear(h, g.graph["num_classes"])
    return g.build(out, x), x, used


@pytest.mark.parametrize("seed", sorted(set(range(N_GRAPHS)) | set(TIE_SEEDS)))
def test_random_graph_spike_for_spike(seed):
    model, x, used = random_graph(seed)
    rng = np.random.default_rng(seed + 7)
    tau, T = int(rng.integers(0, 4)), int(rng.integers(1, 5))
    dense = simulate_dense(model, x, tau, T)
    sim = Simulator(model, np.float64)
    for batch in (len(x), 1):
        parts = [sim.run(x[i:i + batch], tau, T) for i in range(0, len(x), batch)]
        rec = sim.run(x, tau, T, record=True)
        for q in model.qcfs_nodes:
            n = q["name"]
            want = dense.spikes[n].reshape(len(x), -1)
            got = np.concatenate([p.spikes[n] for p in parts])
            np.testing.assert_array_equal(got, want.sum(1), err_msg=f"{n}; patterns {sorted(used)}")
            np.testing.assert_array_equal(rec.record[n]["spikes"], dense.spikes[n], err_msg=n)
            np.testing.assert_array_equal(rec.record[n]["spikes_stage1"], dense.spikes_stage1[n], err_msg=n)
        np.testing.assert_allclose(np.concatenate([p.outputs for p in parts], axis=1), dense.outputs,
                                   rtol=1e-9, atol=1e-9)


def test_the_generator_covers_every_pattern():
    seen = set()
    for seed in range(N_GRAPHS):
        seen |= random_graph(seed)[2]
    assert {"add-input", "add-dup", "add-dup-cur", "add-res", "pool2s2", "pool3s3", "pool3s1", "pool-act",
            "pool-cur", "flatten", "conv"} <= seen, seen
