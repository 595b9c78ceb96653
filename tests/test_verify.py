"""``srp-np verify``: the certificate passes on correct simulations and each check fails on a wrong one."""
import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import srp_np.verify as V
from srp_np import load_model
from srp_np.analytic import qcfs
from srp_np.cli.main import cli
from srp_np.reference import simulate_dense
from srp_np.simulator import Simulator

from conftest import make_model

ROOT = Path(__file__).resolve().parent.parent


def small_model(kind="vgg"):
    return make_model(kind, seed=11)


def small_x(n=4):
    return np.random.default_rng(5).random((n, 3, 12, 12))


def run(*args):
    return CliRunner().invoke(cli, list(map(str, args)))


# ----------------------------------------------------------------------------- passes on correct simulations

@pytest.mark.parametrize("kind", ["vgg", "resnet"])
@pytest.mark.parametrize("tau,T", [(3, 5), (0, 4), (2, 4)])
def test_certificate_passes_on_random_models(kind, tau, T):
    model = small_model(kind)
    assert model.L == 4
    cert = V.certify(model, small_x(), tau, T, chunk=3)
    assert cert.passed, {k: c.figure for k, c in cert.checks.items()}
    # the checks looked at something: spikes fired, SRP masked neurons, layers took part
    sp = cert.checks["spikes"].tally
    assert V._sum(sp, "spikes") > 100
    if tau:
        assert V._sum(cert.checks["charge"].tally, "masked") > 0
    assert len(cert.checks["theorem1"].tally) == len(model.qcfs_nodes)
    assert V._sum(cert.checks["theorem1"].tally, "negative") > 0
    assert len(cert.checks["eq8"].tally) == 1
    d = json.loads(json.dumps(cert.to_dict(), allow_nan=False))
    assert d["passed"] is True and set(d["checks"]) == set(V.CHECKS)


@pytest.mark.parametrize("kind", ["vgg", "resnet"])
def test_certificate_passes_with_the_papers_mask_rule(kind):
    model = small_model(kind)
    cert = V.certify(model, small_x(), 2, 4, chunk=3, mask_rule="paper")
    assert cert.passed, {k: c.figure for k, c in cert.checks.items()}
    assert cert.to_dict()["mask_rule"] == "paper"
    assert V._sum(cert.checks["charge"].tally, "masked") > 0


def test_eq8_mask_check_follows_the_rule(monkeypatch):
    """The first layer's mask, computed here from Eq. 8's v(τ), is judged by the rule in force: the
    authors' rule applied to a paper-rule run differs wherever 0 ≤ v(τ) ≤ ε·θ (here ε = 0.5)."""
    model = small_model("vgg")
    x = small_x()
    sim = Simulator(model, np.float64).run(x, 3, 2, record=True, mask_eps=0.5, mask_rule="paper")
    ok = V.eq8_tally(model, x, sim, 3, 2, 0.5, "paper")
    bad = V.eq8_tally(model, x, sim, 3, 2, 0.5, "authors")
    first = next(iter(ok))
    assert ok[first]["differing_mask"] == 0 and bad[first]["differing_mask"] > 0


@pytest.mark.parametrize("weights,tau,T", [("vgg16_fmnist.npz", 4, 4), ("resnet20_fmnist.npz", 4, 8)])
def test_certificate_passes_on_shipped_models(weights, tau, T):
    from srp_np.datasets import load_shipped_test_set
    from srp_np.evaluate import prepare_inputs

    model = load_model(ROOT / "weights" / weights)
    x_raw, y = load_shipped_test_set()
    x = prepare_inputs(model, x_raw[:2])
    cert = V.certify(model, x, tau, T, y=y[:2])
    assert cert.passed, {k: c.figure for k, c in cert.checks.items()}
    assert all(c.passed for c in cert.checks.values())
    assert V._sum(cert.checks["theorem1"].tally, "neurons") == 2 * sum(
        np.prod(model.shapes[q["name"]]) for q in model.qcfs_nodes)
    # Theorem 1 is not vacuous here: many neurons end negative, some of them with a > 0
    t1 = cert.checks["theorem1"].tally
    assert V._sum(t1, "negative_apos_case2") > 0 and V._sum(t1, "negative_a0") > 0


# ----------------------------------------------------------------------------- fails on wrong simulations

class Perturb:
    """Wrap Simulator.run and simulate_dense (as verify.py calls them) to corrupt their results."""

    def __init__(self, monkeypatch, sim=None, dense=None):
        self.sim, self.dense = sim, dense
        real_run, real_dense = Simulator.run, V.simulate_dense

        def run_(this, x, tau, T, *a, **k):
            res = real_run(this, x, tau, T, *a, **k)
            if self.sim is not None and np.dtype(this.dtype) == np.float64:
                self.sim(res, tau, T)
            return res

        def dense_(model, x, tau, T, *a, **k):
            res = real_dense(model, x, tau, T, *a, **k)
            if self.dense is not None:
                self.dense(res, tau, T)
            return res

        monkeypatch.setattr(Simulator, "run", run_)
        monkeypatch.setattr(V, "simulate_dense", dense_)


def _last_if(model):
    return model.qcfs_nodes[-2]["name"]


def _first_if(model):
    return model.qcfs_nodes[0]["name"]


def test_spike_check_fails_on_one_extra_spike(monkeypatch):
    model = small_model()
    name = _last_if(model)

    def add_spike(res, tau, T):
        if tau:
            res.record[name]["spikes"].flat[7] += 1
    Perturb(monkeypatch, sim=add_spike)
    cert = V.certify(model, small_x(), 3, 5)
    assert not cert.passed and not cert.checks["spikes"].passed
    assert cert.checks["spikes"].tally[name]["differing_spikes"] == 1
    assert "1 differing spikes" in cert.checks["spikes"].figure


def test_spike_check_fails_on_a_wrong_mask(monkeypatch):
    model = small_model("resnet")
    name = _last_if(model)

    def flip(res, tau, T):
        if tau:
            res.mask[name].flat[3] = ~res.mask[name].flat[3]
    Perturb(monkeypatch, dense=flip)
    cert = V.certify(model, small_x(), 3, 5)
    assert not cert.checks["spikes"].passed and cert.checks["spikes"].tally[name]["differing_mask"] == 1


@pytest.mark.parametrize("stage", ["spikes_stage1", "spikes"])
def test_eq8_check_fails_when_both_simulators_agree_on_a_wrong_count(monkeypatch, stage):
    """A first-layer count off by one in *both* simulators: spike for spike passes, Eq. 8 does not."""
    model = small_model()
    name = _first_if(model)

    def bump_rec(res, tau, T):
        if tau:
            res.record[name][stage].flat[11] += 1

    def bump_dense(res, tau, T):
        if tau:
            getattr(res, "spikes_stage1" if stage == "spikes_stage1" else "spikes")[name].flat[11] += 1
    Perturb(monkeypatch, sim=bump_rec, dense=bump_dense)
    cert = V.certify(model, small_x(), 3, 5)
    assert cert.checks["spikes"].passed
    assert not cert.checks["eq8"].passed and not cert.passed
    t = cert.checks["eq8"].tally[name]
    assert t["differing_stage1" if stage == "spikes_stage1" else "differing_stage2"] == 1


def test_eq8_check_fails_on_a_wrong_residual(monkeypatch):
    model = small_model()
    name = _first_if(model)

    def shift(res, tau, T):
        if tau:
            res.record[name]["v_tau"].flat[5] += 1e-6
    Perturb(monkeypatch, sim=shift)
    cert = V.certify(model, small_x(), 3, 5)
    assert not cert.checks["eq8"].passed
    assert cert.checks["eq8"].tally[name]["differing_v_tau"] == 1


@pytest.mark.parametrize("tau", [0, 3])
def test_charge_balance_fails_on_a_perturbed_membrane(monkeypatch, tau):
    model = small_model("resnet")
    name = _last_if(model)
    th = float(next(q["threshold"] for q in model.qcfs_nodes if q["name"] == name))

    def shift(res, t, T):
        if t == tau:
            res.v_final[name].flat[2] += 1e-6 * th
    Perturb(monkeypatch, dense=shift)
    cert = V.certify(model, small_x(), tau, 5)
    assert cert.checks["spikes"].passed
    assert not cert.checks["charge"].passed and not cert.passed
    assert cert.checks["charge"].tally[name]["failing"] == 1
    assert 0.9e-6 * th < cert.checks["charge"].tally[name]["max_residual"] < 1.1e-6 * th


def test_charge_balance_fails_on_a_masked_neuron_with_a_fractional_count(monkeypatch):
    """A silenced neuron's internal count is not recorded; its charge must still come out whole."""
    model = small_model()
    name = _last_if(model)
    state = {}

    def shift(res, tau, T):
        if tau:
            m = ~res.mask[name]
            i = int(np.flatnonzero(m.ravel())[0])
            state["i"] = i
            res.v_final[name].flat[i] += 0.25 * float(next(q["threshold"] for q in model.qcfs_nodes
                                                           if q["name"] == name))
    Perturb(monkeypatch, dense=shift)
    cert = V.certify(model, small_x(), 3, 5)
    assert cert.checks["spikes"].passed
    assert "i" in state and not cert.checks["charge"].passed
    assert cert.checks["charge"].tally[name]["failing"] == 1


def test_theorem1_fails_when_a_case1_neuron_ends_positive(monkeypatch):
    """Flip v(T) of a neuron with a = 0 and φ > 0 (Case 1) to positive: statement (i) is violated."""
    model = small_model()
    x = small_x()
    L = model.L
    # find such a neuron independently: dense reference with τ = 0, T = L
    ref = simulate_dense(model, x, 0, L)
    target = None
    for q in model.qcfs_nodes[1:]:
        n, th = q["name"], float(q["threshold"])
        a = qcfs(ref.input_sum[n] / L, th, L)
        hit = np.flatnonzero(((a == 0) & (ref.spikes[n] > 0)).ravel())
        if hit.size:
            target = (n, int(hit[0]))
            break
    assert target is not None, "the random model has no Case-1 neuron"
    n, i = target

    def flip(res, tau, T):
        if tau == 0 and T == L:
            assert res.v_final[n].flat[i] < 0
            res.v_final[n].flat[i] = -res.v_final[n].flat[i]
    Perturb(monkeypatch, dense=flip)
    cert = V.certify(model, x, 3, 5)
    assert not cert.checks["theorem1"].passed and not cert.passed
    assert cert.checks["theorem1"].tally[n]["violations"] == 1


def test_theorem1_tally_counts_statement_ii():
    """(ii) a > 0: v(T) < 0 must coincide with φ > a; a wrong spike count breaks it."""
    model = small_model()
    x = small_x()
    L = model.L
    sim = Simulator(model, np.float64).run(x, 0, L, record=True)
    ref = simulate_dense(model, x, 0, L)
    assert V._sum(V.theorem1_tally(model, sim, ref), "violations") == 0
    n = model.qcfs_nodes[1]["name"]
    th = float(model.qcfs_nodes[1]["threshold"])
    a = qcfs(sim.record[n]["input_sum"] / L, th, L)
    i = int(np.flatnonzero(((a > 0) & (a < th) & (ref.v_final[n] > 0.01 * th)).ravel())[0])
    sim.record[n]["spikes"].flat[i] += 1        # φ > a now, but v(T) stays positive
    t = V.theorem1_tally(model, sim, ref)
    assert t[n]["violations"] == 1


def test_float32_figure_reflects_disagreement():
    model = small_model()
    x = small_x()
    s64 = Simulator(model, np.float64).run(x, 2, 3)
    s32 = Simulator(model, np.float32).run(x, 2, 3)
    same = V.precision_tally(s32, s64)["_outputs"]["same_prediction"]
    assert len(same) == 3
    wrong = Simulator(model, np.float32).run(x, 2, 3)
    wrong.outputs = wrong.outputs[..., ::-1].copy()       # every prediction changes (distinct logits)
    p = np.argmax(s64.outputs, -1)
    expected = (np.argmax(wrong.outputs, -1) == p).sum(axis=1)
    assert V.precision_tally(wrong, s64)["_outputs"]["same_prediction"] == expected.tolist()
    assert V.judge("float32", V.precision_tally(wrong, s64)).passed      # informative, never fails the certificate


def test_merge_tallies():
    a = {"l": {"n": 2, "max_r": 0.5, "same": [1, 2]}}
    b = {"l": {"n": 3, "max_r": 0.25, "same": [1, 1]}, "m": {"n": 1}}
    assert V.merge_tallies(a, b) == {"l": {"n": 5, "max_r": 0.5, "same": [2, 3]}, "m": {"n": 1}}


def _counts(d):
    """The integer figures and verdicts of a certificate (the largest residuals are float64 rounding,
    which the dense reference's BLAS may group differently for another number of images)."""
    if isinstance(d, dict):
        return {k: _counts(v) for k, v in d.items() if not k.startswith("max_") and k not in ("figure", "seconds")}
    return d


def test_chunking_does_not_change_the_certificate():
    model = small_model("resnet")
    x = small_x(5)
    a = V.certify(model, x, 2, 3, chunk=2)
    b = V.certify(model, x, 2, 3, chunk=5)
    assert _counts(a.to_dict()) == _counts(b.to_dict())
    assert V._sum(a.checks["spikes"].tally, "spikes") > 0


# ----------------------------------------------------------------------------- CLI

def test_cli_verify_passes_and_writes_json(model_files, tmp_path):
    d = model_files
    r = run("verify", "--weights", d / "model.npz", "--data", d / "data.npz", "--images", 5, "--tau", 2, "--T", 3,
            "--batch-size", 2, "--json", tmp_path / "c.json")
    assert r.exit_code == 0, r.output
    assert "every exact check passed" in r.output and "Theorem 1" in r.output
    j = json.loads((tmp_path / "c.json").read_text())
    assert j["passed"] is True and j["images"] == 5 and j["tau"] == 2 and j["T"] == 3
    assert j["checks"]["spikes"]["layers"] and j["checks"]["theorem1"]["exact"] is True
    assert j["checks"]["float32"]["exact"] is False


def test_cli_verify_exits_3_when_a_check_fails(model_files, tmp_path, monkeypatch):
    d = model_files
    model = load_model(d / "model.npz")
    name = model.qcfs_nodes[-1]["name"]

    def add_spike(res, tau, T):
        res.record[name]["spikes"].flat[0] += 1
    Perturb(monkeypatch, sim=add_spike)
    r = run("verify", "--weights", d / "model.npz", "--data", d / "data.npz", "--images", 2, "--tau", 1, "--T", 2,
            "--json", tmp_path / "c.json")
    assert r.exit_code == 3, r.output
    assert "FAIL" in r.output and "exact check failed: spikes" in r.output
    assert json.loads((tmp_path / "c.json").read_text())["passed"] is False


@pytest.mark.parametrize("args,fragment", [
    (["--images", "0"], "'--images' / '-n': 0 is not in the range x>=1"),
    (["--tau", "-1"], "'--tau': -1 is not in the range x>=0"),
    (["--T", "0"], "'--T': 0 is not in the range x>=1"),
    (["--mask-eps", "nan"], "finite"),
])
def test_cli_verify_bad_input(model_files, args, fragment):
    d = model_files
    r = run("verify", "--weights", d / "model.npz", "--data", d / "data.npz", *args)
    assert r.exit_code == 2, r.output
    out = r.output.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ") and fragment in out, out
