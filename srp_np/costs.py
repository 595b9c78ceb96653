"""Costs of a converted SNN: spikes, firing rates, synaptic operations, MACs, energy.

* **Spikes** per IF layer: stage 2 (after the SRP mask) and stage 1 (τ steps).
* **Firing rate**: spikes per neuron per step (stage 2: divided by T, stage 1 by τ).
* **Synaptic operations (SOPs)** per synaptic node (conv2d, linear,
  avgpool2d, add): each nonzero time-varying input value times its exact number of
  outgoing synapses (zero padding and borders counted exactly), as counted by
  :class:`srp_np.simulator.Simulator`, both stages.
* **ANN MACs** per node, exact: the number of (input, output) pairs joined by
  a weight, i.e. taps that fall on zero padding are not counted (so the SOPs
  of an SNN in which every input spikes once equal the ANN's MACs). Average
  pooling counts k² accumulates per output (a conv with constant weights),
  ``add`` nodes count (inputs − 1) additions per element as accumulates.
* **Analog layers**: nodes that see only the analog image (the first conv,
  ...) have no spikes to propagate; an SNN with direct input encoding
  computes them with MACs. The energy estimate charges their MACs once per
  time step (τ + T times), as hardware fed the image every step would.
* **Energy** (an *estimate*, not a measurement): SNN = E_AC·SOPs +
  E_MAC·analog MACs·(τ+T); ANN = E_MAC·MACs + E_AC·adds. Defaults
  E_AC = 0.9 pJ and E_MAC = 4.6 pJ: 32-bit floating-point add and
  multiply+add (3.7 + 0.9 pJ) in 45 nm CMOS, M. Horowitz, "Computing's
  energy problem (and what we can do about it)", ISSCC 2014. Memory access
  and data movement are not included.

Everything is reported per image (mean over the simulated images).
"""
from __future__ import annotations

import numpy as np

from .opset import REGISTRY

#: Energy per accumulate (J): 32-bit float add, 45 nm (Horowitz, ISSCC 2014).
E_AC = 0.9e-12
#: Energy per multiply-accumulate (J): 32-bit float mult (3.7 pJ) + add (0.9 pJ), 45 nm (Horowitz, ISSCC 2014).
E_MAC = 4.6e-12
ENERGY_SOURCE = ("estimate: E_AC per accumulate and E_MAC per multiply-accumulate; defaults 0.9 pJ and 4.6 pJ "
                 "are 32-bit float add and mult+add in 45 nm CMOS (M. Horowitz, ISSCC 2014); "
                 "memory access is not included")

#: The ops whose operations are synaptic operations of the SNN (declared by each op: ``SYNAPTIC``).
SYNAPTIC_OPS = tuple(op for op, cls in REGISTRY.items() if cls.SYNAPTIC)


def ann_ops(model, node) -> tuple:
    """``(macs, adds)`` of one node of the ANN for one image (exact, padding taps excluded):
    the op's own count (:meth:`srp_np.opset.Node.ann_ops`)."""
    t = model.typed(node)
    return t.ann_ops([model.shapes[s] for s in t.inputs], model.shapes[t.name], model.arrays)


def ann_cost(model, e_ac: float = E_AC, e_mac: float = E_MAC) -> dict:
    """ANN MACs/adds per synaptic node and in total, and its energy estimate (per image)."""
    layers = []
    macs = adds = 0
    for node in model.nodes:
        if node["op"] in SYNAPTIC_OPS:
            m, a = ann_ops(model, node)
            layers.append({"name": node["name"], "op": node["op"], "ann_macs": m, "ann_adds": a})
            macs += m
            adds += a
    return {"layers": layers, "ann_macs": macs, "ann_adds": adds, "energy_ann_j": macs * e_mac + adds * e_ac}


def cost_report(model, res, e_ac: float = E_AC, e_mac: float = E_MAC) -> dict:
    """Per-layer and total costs of a simulation, per image, JSON-serialisable.

    Parameters
    ----------
    model : Model
    res : SimResult or RunCounts
        From :meth:`srp_np.simulator.Simulator.run` (``record`` not needed), or the
        exact counts of one (:class:`srp_np.counts.RunCounts`, e.g. summed over shards):
        every per-image figure is Σ over images / N.
    e_ac, e_mac : float
        Energy (J) per accumulate and per multiply-accumulate.

    Returns
    -------
    dict
        ``{"images", "tau", "T", "energy_is_estimate": True, "energy_source",
        "e_ac_j", "e_mac_j", "if_layers": [...], "synaptic_layers": [...],
        "totals": {...}}``; all counts are means per image.
    """
    from .counts import RunCounts

    if not isinstance(res, RunCounts):
        res = RunCounts.from_result(res)
    tau, T = int(res.tau), int(res.T)
    n = res.n_images
    static = model.static
    if_layers = []
    tot_sp = tot_sp1 = 0.0
    tot_neurons = 0
    for q in model.qcfs_nodes:
        name = q["name"]
        neurons = int(res.neurons.get(name, int(np.prod(model.shapes[name]))))
        sp, sp1 = res.spikes_mean(name), res.spikes_mean(name, stage1=True)
        if_layers.append({"name": name, "neurons": neurons, "spikes": sp, "spikes_stage1": sp1,
                          "firing_rate": sp / (neurons * T),
                          "firing_rate_stage1": (sp1 / (neurons * tau)) if tau else None})
        tot_sp += sp
        tot_sp1 += sp1
        tot_neurons += neurons
    syn = []
    tot = dict(sops=0.0, sops_stage1=0.0, ann_macs=0, ann_adds=0, analog_macs=0)
    for node in model.nodes:
        if node["op"] not in SYNAPTIC_OPS:
            continue
        name = node["name"]
        m, a = ann_ops(model, node)
        analog = name in static
        s2, s1 = res.sops_mean(name), res.sops_mean(name, stage1=True)
        entry = {"name": name, "op": node["op"], "analog": analog, "sops": s2, "sops_stage1": s1,
                 "ann_macs": m, "ann_adds": a}
        if analog:
            entry["analog_macs_per_step"] = m
            entry["energy_snn_j"] = (m * e_mac + a * e_ac) * (tau + T)
            tot["analog_macs"] += m
        else:
            entry["energy_snn_j"] = (s1 + s2) * e_ac
        entry["energy_ann_j"] = m * e_mac + a * e_ac
        syn.append(entry)
        tot["sops"] += s2
        tot["sops_stage1"] += s1
        tot["ann_macs"] += m
        tot["ann_adds"] += a
    e_snn = sum(e["energy_snn_j"] for e in syn)
    e_ann = sum(e["energy_ann_j"] for e in syn)
    totals = {"neurons": tot_neurons, "spikes": tot_sp, "spikes_stage1": tot_sp1,
              "firing_rate": tot_sp / (tot_neurons * T) if tot_neurons else 0.0,
              "firing_rate_stage1": (tot_sp1 / (tot_neurons * tau)) if (tau and tot_neurons) else None,
              **tot, "energy_snn_j": e_snn, "energy_ann_j": e_ann,
              "energy_ratio_snn_over_ann": (e_snn / e_ann) if e_ann else None}
    return {"images": n, "tau": tau, "T": T, "per": "image (mean)", "energy_is_estimate": True,
            "energy_source": ENERGY_SOURCE, "e_ac_j": float(e_ac), "e_mac_j": float(e_mac),
            "analog_mac_steps": tau + T, "if_layers": if_layers, "synaptic_layers": syn, "totals": totals}
