"""Costs (srp_np.costs): synaptic operations against an independent count, exact MACs, the report."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from srp_np.costs import E_AC, E_MAC, ann_ops, cost_report
from srp_np.neuron import if_init, if_step, srp_keep_mask
from srp_np.ops import apply_linear_node, conv2d
from srp_np.simulator import Simulator
from srp_np.testing import GraphBuilder, random_resnet, random_vgg


def _int(v):
    return int(v[0]) if isinstance(v, (list, tuple)) else int(v)


def _fanout_map(H, W, k, stride, pad):
    """Outputs reached by each input position, found by convolving one-hot images with a ones kernel."""
    onehots = np.eye(H * W).reshape(H * W, 1, H, W)
    out = conv2d(onehots, np.ones((1, 1, k, k)), None, stride, pad)
    return out.reshape(H * W, -1).sum(axis=1).reshape(H, W)


def _fanout(model, node):
    """Per input neuron (input layout), the number of outgoing synapses of ``node``."""
    op = node["op"]
    in_shape = model.shapes[node["inputs"][0]]
    if op == "conv2d":
        w = model.weight(node)
        m = _fanout_map(in_shape[1], in_shape[2], w.shape[2], _int(node.get("stride", 1)), _int(node.get("padding", 0)))
        return np.broadcast_to(w.shape[0] * np.rint(m).astype(np.int64), in_shape)
    if op == "avgpool2d":
        k = _int(node["kernel"])
        m = _fanout_map(in_shape[1], in_shape[2], k, _int(node.get("stride", k)), 0)
        return np.broadcast_to(np.rint(m).astype(np.int64), in_shape)
    if op == "linear":
        return np.full(in_shape, model.weight(node).shape[0])
    raise AssertionError(op)


def _dense_frames(model, x, tau, T):
    """Dense stepping that keeps every node's value at every step: list of dicts (stage, values)."""
    qn = model.qcfs_nodes
    state = {q["name"]: if_init((len(x),) + model.shapes[q["name"]], q["threshold"]) for q in qn}
    masks = {q["name"]: None for q in qn}
    frames = []

    def step(stage):
        vals = {"input": x.astype(np.float64)}
        for node in model.nodes:
            ins = [vals[s] for s in node["inputs"]]
            if node["op"] == "qcfs":
                vals[node["name"]], _, state[node["name"]] = if_step(ins[0], state[node["name"]], node["threshold"],
                                                                     masks[node["name"]])
            else:
                vals[node["name"]] = apply_linear_node(model, node, ins)
        frames.append((stage, vals))

    for _ in range(tau):
        step(1)
    if tau:
        for q in qn:
            masks[q["name"]] = srp_keep_mask(state[q["name"]].v, q["threshold"])
            state[q["name"]] = if_init(state[q["name"]].v.shape, q["threshold"])
    for _ in range(T):
        step(2)
    return frames


def _independent_sops(model, x, tau, T):
    """SOPs per synaptic node and image: each nonzero time-varying input × its fan-out."""
    static = {"input"}
    spiking = set()  # values that travel as spikes (IF outputs, flattened IF outputs)
    for node in model.nodes:
        if node["op"] != "qcfs" and all(s in static for s in node["inputs"]):
            static.add(node["name"])
        if node["op"] == "qcfs" or (node["op"] == "flatten" and node["inputs"][0] in spiking):
            spiking.add(node["name"])
    frames = _dense_frames(model, x, tau, T)
    out = {}
    for node in model.nodes:
        name, op = node["name"], node["op"]
        if name in static or op not in ("conv2d", "linear", "avgpool2d", "add"):
            continue
        s1 = np.zeros(len(x), np.int64)
        s2 = np.zeros(len(x), np.int64)
        for stage, vals in frames:
            if op == "add":
                n = sum((vals[s] != 0).reshape(len(x), -1).sum(axis=1) for s in node["inputs"] if s in spiking)
            else:
                fan = _fanout(model, node)
                n = ((vals[node["inputs"][0]] != 0) * fan[None]).reshape(len(x), -1).sum(axis=1)
            if stage == 1:
                s1 += n
            else:
                s2 += n
        out[name] = (s2, s1)
    return out


@pytest.mark.parametrize("kind", ["vgg", "resnet"])  # resnet: stride-2 and 1×1 convs, identity adds
def test_sops_match_independent_count(kind):
    shape = (2, 9, 9)  # odd size: borders and strides do not divide evenly
    xc = np.random.default_rng(3).random((6,) + shape)
    if kind == "vgg":
        model = random_vgg(input_shape=shape, widths=(3, 5), fc=10, rng=1, calibrate_x=xc)
    else:
        model = random_resnet(input_shape=shape, widths=(3, 5), rng=1, calibrate_x=xc)
    x = np.random.default_rng(4).random((3,) + shape).astype(np.float64)
    tau, T = 2, 3
    res = Simulator(model, np.float64).run(x, tau, T)
    ref = _independent_sops(model, x, tau, T)
    assert set(ref) == set(res.sops)
    assert sum(int(s2.sum()) for s2, _ in ref.values()) > 0
    for name, (s2, s1) in ref.items():
        np.testing.assert_array_equal(res.sops[name], s2, err_msg=name)
        np.testing.assert_array_equal(res.sops_stage1[name], s1, err_msg=name)


def test_conv_macs_exact_with_padding_and_stride():
    g = GraphBuilder((3, 7, 7), 4, rng=0)
    h = g.act(g.conv("input", 5, k=3, stride=2, padding=1))
    h = g.act(g.conv(h, 6, k=3, stride=1, padding=0))
    h = g.act(g.conv(h, 2, k=1, stride=1, padding=0))
    out = g.linear(g.flatten(h), 4)
    model = g.build(out)
    for node in model.nodes:
        if node["op"] == "conv2d":
            cin = model.weight(node).shape[1]
            # MACs = Σ over input neurons of their outgoing synapses
            assert ann_ops(model, node)[0] == cin * int(_fanout(model, node)[0].sum())
    c2 = model.nodes[2]
    w = model.weight(c2)
    _, ho, wo = model.shapes[c2["name"]]
    assert ann_ops(model, c2)[0] == w.size * ho * wo  # no padding: the textbook formula
    assert ann_ops(model, model.nodes[0])[0] < model.weight(model.nodes[0]).size * 4 * 4  # padding taps excluded


def test_cost_report_json_and_consistency():
    shape = (2, 8, 8)
    xc = np.random.default_rng(0).random((4,) + shape)
    model = random_resnet(input_shape=shape, widths=(3, 4), rng=2, calibrate_x=xc)
    res = Simulator(model).run(xc.astype(np.float32), 2, 4)
    rep = json.loads(json.dumps(cost_report(model, res)))
    assert rep["energy_is_estimate"] is True and "Horowitz" in rep["energy_source"]
    assert rep["e_ac_j"] == E_AC == 0.9e-12 and rep["e_mac_j"] == E_MAC == 4.6e-12
    t = rep["totals"]
    assert t["spikes"] == pytest.approx(sum(float(v.mean()) for v in res.spikes.values()))
    assert t["sops"] == pytest.approx(sum(float(v.mean()) for v in res.sops.values()))
    for L in rep["if_layers"]:
        assert L["firing_rate"] == pytest.approx(L["spikes"] / (L["neurons"] * 4))
        assert L["firing_rate_stage1"] == pytest.approx(L["spikes_stage1"] / (L["neurons"] * 2))
    spiking = [L for L in rep["synaptic_layers"] if not L["analog"]]
    assert t["energy_snn_j"] == pytest.approx(E_AC * sum(L["sops"] + L["sops_stage1"] for L in spiking)
                                              + E_MAC * t["analog_macs"] * 6)
    assert any(L["analog"] for L in rep["synaptic_layers"])
    rep2 = cost_report(model, res, e_ac=2 * E_AC, e_mac=0.0)
    assert rep2["totals"]["energy_snn_j"] == pytest.approx(2 * E_AC * sum(L["sops"] + L["sops_stage1"]
                                                                          for L in spiking))


def test_report_cli(model_files, tmp_path):
    from cli.main import cli

    args = ["report", "--weights", str(model_files / "model.npz"), "--data", str(model_files / "data.npz"),
            "--tau", "2", "--T", "4", "--limit", "5"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    assert "ESTIMATE" in r.output and "Horowitz" in r.output and "total" in r.output
    r = CliRunner().invoke(cli, args + ["--json", "--e-ac", "1.5"])
    assert r.exit_code == 0, r.output
    rep = json.loads(r.output)
    assert rep["e_ac_j"] == pytest.approx(1.5e-12) and rep["images"] == 5
    r = CliRunner().invoke(cli, args + ["--e-mac", "-1"])
    assert r.exit_code == 2
