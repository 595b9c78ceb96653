"""docs/results/analysis_tables.py: the tables of docs/analysis.md are the ones its JSON files give."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def _mod():
    from conftest import load_script

    return load_script(RESULTS / "analysis_tables.py", "analysis_tables")


def _layer(name, neurons, c1_before, c1_after):
    def cases(c1):
        return {"case1": c1, "case2": 0.0, "case3": 0.0, "case4": 0.0, "none": 1.0 - c1}

    return {"name": name, "neurons": neurons,
            "baseline": {"error_I": cases(c1_before), "error_II": cases(c1_before)},
            "srp": {"error_I": cases(c1_after), "error_II": cases(c1_after)}}


def test_totals_are_weighted_by_neurons():
    m = _mod()
    an = {"tau": 4, "layers": [_layer("a", 300, 0.10, 0.0), _layer("b", 100, 0.50, 0.20)]}
    tot = m.totals(an)
    assert tot["baseline", "error_I"]["case1"] == pytest.approx((300 * 0.10 + 100 * 0.50) / 400)
    assert tot["srp", "error_II"]["case1"] == pytest.approx(100 * 0.20 / 400)
    rows = m.cases_table(an).splitlines()
    assert rows[2] == "| a | 10.00 | 0.00 | 0.00 | 0.00 | 10.00 | 10.00 → 0.00 | -10.00 |"
    assert m.totals_table(an).splitlines()[2] == "| Error I, τ=0 | 20.00 | 0.00 | 0.00 | 0.00 | 20.00 |"


def test_sweep_table_reads_the_listed_steps():
    m = _mod()
    sw = {"steps": [1, 4], "ann_accuracy": 0.9, "accuracy": {"0": [0.1, 0.2, 0.3, 0.4], "4": [0.5, 0.6, 0.7, 0.8]}}
    rows = m.sweep_table(sw, "TCL").splitlines()
    assert rows[0] == "| Method | ANN | T=1 | T=4 |"
    assert rows[2] == "| TCL (τ=0) | 90.00% | 10.00% | 40.00% |"
    assert rows[3] == "| SRP (τ=4) | 90.00% | 50.00% | 80.00% |"


@pytest.mark.parametrize("arch", ["vgg16", "resnet20"])
def test_analysis_page_shows_its_json_files(arch):
    """Every table of docs/analysis.md for the shipped models is the rendering of the JSON file
    its command wrote: a figure typed or left stale in the page fails here."""
    m = _mod()
    page = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    sweep = m._load(RESULTS / f"sweep_{arch}.json")
    an = m._load(RESULTS / f"analyze_{arch}.json")
    for table in (m.sweep_table(sweep), m.cases_table(an), m.totals_table(an)):
        assert table in page, table.splitlines()[2]
    costs = m.costs_table([m._load(RESULTS / "report_vgg16.json"), m._load(RESULTS / "report_resnet20.json")],
                          ["VGG-16", "ResNet-20"])
    assert costs in page


@pytest.mark.parametrize("arch", ["vgg16", "resnet20"])
def test_equal_latency_tables_in_the_page(arch, capsys):
    from conftest import load_script

    eq = load_script(RESULTS / "equal_latency.py", "equal_latency")
    eq.main([str(RESULTS / f"sweep_{arch}.json")])
    out = capsys.readouterr().out
    table = "\n".join(line for line in out.splitlines() if line.startswith("|"))
    assert table in (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")


def test_finer_L_figures_of_the_page_are_reproduced(capsys):
    """docs/results/ann_finer_L.py re-evaluates the shipped ResNet-20's ANN at other L: its L = 4 row is
    the ANN accuracy of the sweep file, and the committed output (quoted by docs/analysis.md) is what it
    prints now; a script that failed to change L would print the L = 4 figure in every row."""
    import json

    from conftest import load_script

    mod = load_script(RESULTS / "ann_finer_L.py", "ann_finer_L")
    mod.main([str(ROOT / "weights" / "resnet20_fmnist.npz"), "--limit", "2000", "--L", "4,8,16,10000"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("|")]
    committed = [line for line in (RESULTS / "ann_finer_L_resnet20.txt").read_text().splitlines()
                 if line.startswith("|")]
    assert rows == committed
    sweep = json.loads((RESULTS / "sweep_resnet20.json").read_text())
    assert rows[2] == f"| 4 (trained) | {100 * sweep['ann_accuracy']:.2f}% |"
    assert len({row.split("|")[2] for row in rows[2:]}) > 1
    page = (ROOT / "docs" / "analysis.md").read_text(encoding="utf-8")
    assert "93.20 %, 93.10 %, 93.10 % against 93.00 % at L = 4" in page
