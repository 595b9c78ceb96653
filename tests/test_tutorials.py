"""The tutorials in docs/tutorials/ run, and their key results hold.

Each notebook is executed with nbclient in a fresh kernel (its own asserts compare the library with an
independent computation: closed forms, a hand count, the dense reference). Its last cell prints
``SUMMARY {json}``; the checks below re-derive what they can here (Eq. 8, the paper's Fig. 1 values).
"""
import json
import re
import time
from pathlib import Path

import numpy as np
import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

TUTORIALS = Path(__file__).resolve().parent.parent / "docs" / "tutorials"
NOTEBOOKS = sorted(p.name for p in TUTORIALS.glob("*.ipynb"))



def _build_module():
    """docs/tutorials/build.py as a module."""
    from conftest import load_script

    return load_script(TUTORIALS / "build.py", "tutorial_build")


def test_the_six_tutorials_are_there_and_committed_without_outputs():
    assert NOTEBOOKS == ["01_if_neuron.ipynb", "02_qcfs.ipynb", "03_unevenness.ipynb", "04_srp.ipynb",
                         "05_costs.ipynb", "06_your_network.ipynb"]
    for name in NOTEBOOKS:
        nb = nbformat.read(TUTORIALS / name, as_version=4)
        nbformat.validate(nb)
        for cell in nb.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{name}: outputs committed"


def run_notebook(name: str) -> tuple:
    nb = nbformat.read(TUTORIALS / name, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=240, kernel_name="python3",
                                     resources={"metadata": {"path": str(TUTORIALS)}})
    t0 = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - t0
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs
                   if o.get("output_type") == "stream")
    m = re.search(r"^SUMMARY (.*)$", text, re.M)
    assert m, f"{name}: no SUMMARY line"
    print(f"{name}: executed in {seconds:.1f} s")
    return json.loads(m.group(1)), text


def test_01_if_neuron():
    from srp_np.analytic import if_spike_count

    s, _ = run_notebook("01_if_neuron.ipynb")
    assert s["eq8_cases"] == 225 * 3 * 16 and s["eq8_mismatches"] == 0
    assert s["charge_balance_max"] < 1e-9
    # the traced neuron (y = 0.3, θ = 1) fired as Eq. 8 says after every t
    assert s["trace_counts"] == [int(if_spike_count(0.3, 1.0, t)) for t in range(1, 9)]


def test_02_qcfs():
    s, _ = run_notebook("02_qcfs.ipynb")
    differ = {int(k): v for k, v in s["grid_differing"].items()}
    assert differ[4] == 0 and all(v > 0 for t, v in differ.items() if t != 4)
    assert s["act1_T_eq_L"] == 0.0 and s["act1_T8"] > 0 and s["deep_max_T_eq_L"] > 0


def test_03_unevenness():
    s, _ = run_notebook("03_unevenness.ipynb")
    # the paper's Fig. 1: φ = 3/6, 4/6, 2/6; the run with too many spikes ends below zero (Theorem 1)
    assert s["fig1_phi"] == pytest.approx({"ideal": 0.5, "more": 4 / 6, "fewer": 2 / 6})
    assert s["fig1_vT"]["more"] < 0 <= s["fig1_vT"]["ideal"]
    assert sum(s["recount"].values()) == pytest.approx(1.0) and s["recount"]["none"] < 1


def test_04_srp():
    s, _ = run_notebook("04_srp.ipynb")
    assert s["theorem1_holds"] == s["theorem1_examples"] == 2000 and s["theorem1_violations_L2"] > 0
    m = s["mask_counts"]
    assert m["more"] + m["harmless"] + m["rest"] == m["masked"] > 0 and 0 < m["more"] <= m["more_all"]
    for tau, acc in s["accuracy"].items():
        assert len(acc) == 8 and all(0 <= a <= 1 for a in acc)
    # accuracies are multiples of 1/256 (they count images)
    assert all(float(a * s["images"]).is_integer() for acc in s["accuracy"].values() for a in acc)


def test_05_costs():
    s, _ = run_notebook("05_costs.ipynb")
    assert s["sops_by_hand"] == pytest.approx(s["sops_report"], rel=1e-12)
    # 3×3 conv, padding 1, 16 → 16 channels on 28×28: 16·16·(Σ covered rows)² with 26 rows of 3 and 2 of 2
    assert s["macs"] == 16 * 16 * (26 * 3 + 2 * 2) ** 2
    rows = s["rows"]
    assert rows[1]["sops"] > rows[0]["sops"] and rows[3]["sops"] > rows[2]["sops"]
    assert 0 < s["energy_ratio"] < 10


def test_06_your_network():
    pytest.importorskip("torch")
    s, text = run_notebook("06_your_network.ipynb")
    assert s["same_prediction"] >= 0.998 and s["cli_rc"] == 0
    assert s["torch_accuracy"] > 0.5            # it learned (10 classes: chance is 0.1)
    assert abs(s["ann_accuracy"] - s["torch_accuracy"]) <= 0.002
    assert "identical" in text and "SNN accuracy" in text
    for tau, acc in s["snn_accuracy"].items():
        assert len(acc) == 8 and np.all(np.array(acc) > 0.1)


def test_readme_links_every_rendered_tutorial():
    readme = (TUTORIALS.parent.parent / "README.md").read_text(encoding="utf-8")
    for name in NOTEBOOKS:
        page = f"docs/tutorials/html/{Path(name).stem}.html"
        assert page in readme, f"README does not link {page}"
        assert (TUTORIALS.parent.parent / page).is_file(), f"{page} is not built (python docs/tutorials/build.py)"


def test_build_page_is_small_and_linked(tmp_path):
    pytest.importorskip("nbconvert")
    build = _build_module()
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# 2. A <title>\n\ntext"),
                                         nbformat.v4.new_code_cell("print(1)")])
    nb.cells[1].outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    html = build.page(nb, "02_b", ["01_a", "02_b", "03_c"])
    assert "<title>2. A &lt;title&gt;</title>" in html
    assert 'href="01_a.html"' in html and 'href="03_c.html"' in html and 'href="index.html"' in html
    assert "print" in html and ">1\n<" in html.replace("</pre>", "<")
    assert len(html) < 30_000                     # no inlined 250 KiB theme
    assert build.main(["--out", str(tmp_path), str(tmp_path / "missing.ipynb")]) == 2


def test_equations_become_mathml_and_pages_need_no_network():
    """TeX in markdown is MathML in the page (no MathJax, no CDN); code and \\$ keep their dollars."""
    pytest.importorskip("nbconvert")
    pytest.importorskip("latex2mathml")
    import xml.etree.ElementTree as ET

    build = _build_module()
    out = build.markdown_math_to_mathml("pay \\$5; `echo $HOME` and $v(0)=\\theta/2$, then $$\\frac{a}{b}$$")
    assert "\\$5" in out and "`echo $HOME`" in out
    assert out.count("<math") == 2 and 'display="block"' in out and "&#x003B8;" in out
    with pytest.raises(ValueError, match="cannot convert"):
        build.markdown_math_to_mathml("$\\left( x$")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T\n\nspike count $\\lfloor T y/\\theta \\rfloor$")])
    html = build.page(nb, "a", ["a"])
    maths = re.findall(r"<math.*?</math>", html, re.S)
    assert len(maths) == 1 and ET.fromstring(maths[0]).tag.endswith("math")
    assert "<script" not in html and "http" not in html.replace("http://www.w3.org/1998/Math/MathML", "")
    for page in (TUTORIALS / "html").glob("*.html"):   # the shipped pages too
        text = page.read_text(encoding="utf-8")
        assert "cdn." not in text and "<script src" not in text, f"{page.name} loads a script from the network"
