"""weights/tables.py: the README's tables come from run JSONs and training logs, not from typing."""
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _tables():
    from conftest import load_script

    return load_script(ROOT / "weights" / "tables.py", "weights_tables")


def _run(tau, acc, **kw):
    r = {"tau": tau, "T": len(acc), "accuracy": acc, "ann_accuracy": 0.9, "n_images": 10, "data": "d",
         "spikes_per_image": 1000.0, "sops_per_image": 5000.0, "snn_images_per_second": 10.0, "threads": 2,
         "mask_rule": "authors", "mask_eps": 0.001, "dtype": "float32"}
    r.update(kw)
    return r


def test_run_table_rows_and_equal_latency(tmp_path):
    t = _tables()
    text = t.run_tables(_run(0, [0.1 * i for i in range(1, 9)]), _run(4, [0.5, 0.6, 0.7, 0.8, 0.85, 0.86, 0.87, 0.88]),
                        "Net")
    lines = text.splitlines()
    assert lines[0] == "### Net: ANN 90.00%"
    assert lines[4].startswith("| QCFS (τ=0), latency t | 10.00 | 20.00 |")
    assert lines[5].startswith("| SRP (τ=4), latency 4+t | 50.00 | 60.00 |")
    # latency 5 = plain t=5 (50 %) against SRP t=1 (50 %); latency 8 = plain 80 % against SRP t=4 (80 %)
    assert "5 steps: QCFS 50.00% vs SRP 50.00%" in text and "8 steps: QCFS 80.00% vs SRP 80.00%" in text
    assert "at t = 4 against the ANN: -10.00 points" in text
    p0, p4 = tmp_path / "a.json", tmp_path / "b.json"
    p0.write_text(json.dumps(_run(0, [0.5] * 4)))
    p4.write_text(json.dumps(_run(4, [0.5] * 4, n_images=11)))
    with pytest.raises(SystemExit, match="different images"):
        t.main(["run", str(p0), str(p4)])
    with pytest.raises(SystemExit, match="τ = 0 run first"):
        t.main(["run", str(p4), str(p0)])


def test_log_table_keeps_the_last_record_of_each_epoch(tmp_path):
    t = _tables()
    log = tmp_path / "train.log"
    line = "epoch {e}/{n} loss 0.5000 train_acc 0.8000 test_acc {a} lr 0.04000 time 100s lambda [1.0]\n"
    log.write_text(line.format(e=1, n=60, a="0.7000") + line.format(e=2, n=60, a="0.7100") + "resumed\n"
                   + line.format(e=2, n=40, a="0.7200") + line.format(e=3, n=40, a="0.7300"))
    rows = t.log_table(str(log)).splitlines()[2:]
    assert len(rows) == 3
    assert rows[1] == "| 2 | 40 | 0.5000 | 80.00% | 72.00% | 0.04000 | 100 |"
    (tmp_path / "empty.log").write_text("nothing\n")
    with pytest.raises(SystemExit, match="no epoch lines"):
        t.log_table(str(tmp_path / "empty.log"))
