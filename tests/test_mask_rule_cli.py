"""``--mask-rule authors|paper`` flows from every command to the simulator and into the JSON.

The paper's rule keeps a neuron iff v(τ) ≥ 0 whatever ε; the authors' keeps it iff v(τ) > ε·θ.
So with ε = 0.5 the two differ a lot, and under the paper's rule ε changes nothing."""
import json

import pytest
from click.testing import CliRunner

from srp_np.cli.main import cli

COMMON = ["--limit", "24", "--tau", "2", "--T", "3"]


def _json(tmp_path, name, *args):
    out = tmp_path / f"{name}.json"
    r = CliRunner().invoke(cli, [*map(str, args), "--json", str(out)])
    assert r.exit_code == 0, r.output
    return json.loads(out.read_text())


def _strip(d):
    return {k: v for k, v in d.items() if "second" not in k and k not in ("mask_eps", "threads")}


@pytest.mark.parametrize("cmd,key", [("run", "spikes_per_image"), ("report", "totals"), ("sweep", "accuracy"),
                                     ("analyze", "layers")])
def test_mask_rule_reaches_the_simulation_and_the_json(tmp_path, cmd, key):
    args = [cmd, *COMMON] if cmd != "sweep" else [cmd, "--limit", "24", "--tau", "0,2", "--T", "3"]
    if cmd == "analyze":
        args = [cmd, "--limit", "8", "--tau", "2", "--T", "3"]
    paper = _json(tmp_path, "p", *args, "--mask-rule", "paper", "--mask-eps", "0.5")
    paper0 = _json(tmp_path, "p0", *args, "--mask-rule", "paper", "--mask-eps", "0")
    authors = _json(tmp_path, "a", *args, "--mask-eps", "0.5")
    assert paper["mask_rule"] == "paper" and authors["mask_rule"] == "authors"
    assert _strip(paper) == _strip(paper0)               # ε does not apply to the paper's rule
    assert paper[key] != authors[key]                    # and the rule is not the authors'


def test_unknown_mask_rule_is_one_line(tmp_path):
    r = CliRunner().invoke(cli, ["run", "--limit", "2", "--mask-rule", "strict"])
    assert r.exit_code == 2 and "strict" in r.output
