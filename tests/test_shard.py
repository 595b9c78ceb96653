"""``--shard i/N`` + ``srp-np merge`` give exactly the figures of a single run (issue 12, part 1)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from srp_np.cli.main import cli
from srp_np.errors import SrpError
from srp_np.shard import UNIT, parse_shard, shard_range, shard_unit

# the keys that are wall times (a merge reports their sums over the shards) or say how the work was split
TIMING = {"images_per_second", "seconds", "ann_seconds", "snn_seconds", "other_seconds", "seconds_total",
          "snn_images_per_second", "images_per_second_end_to_end", "threads", "shards"}
LIMIT = 300          # two blocks of 256 images: shard 0 = 256 images, shard 1 = 44


def invoke(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args])
    assert r.exit_code == 0, r.output
    return r


def figures(path):
    j = json.loads(path.read_text())
    return {k: v for k, v in j.items() if k not in TIMING}


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1) and parse_shard(" 3 / 8 ") == (3, 8)
    for bad in ("1/1", "-1/2", "2", "a/b", "0/0", "1/2/3"):
        with pytest.raises(SrpError):
            parse_shard(bad)


@settings(max_examples=200, deadline=None)
@given(n=st.integers(1, 5000), data=st.data(), batch=st.sampled_from([None, 1, 64, 100, 256, 300]))
def test_shards_tile_the_images_in_whole_blocks(n, data, batch):
    unit = shard_unit(batch)
    blocks = -(-n // unit)
    count = data.draw(st.integers(1, blocks))
    spans = [shard_range(n, i, count, unit) for i in range(count)]
    assert spans[0][0] == 0 and spans[-1][1] == n
    for (a, b), (c, _) in zip(spans, spans[1:]):
        assert b == c and a < b                      # contiguous, none empty
    assert all(a % unit == 0 and a % UNIT == 0 for a, _ in spans)
    assert max(b - a for a, b in spans) - min(b - a for a, b in spans[:-1] or spans) <= unit
    with pytest.raises(SrpError, match="at most"):
        shard_range(n, 0, blocks + 1, unit)


@pytest.mark.parametrize("cmd", [
    ["run", "--tau", 4, "--T", 6, "-q"],
    ["sweep", "--tau", "0,4", "--T", 8],
    ["analyze", "--tau", 4, "--batch-size", 32],
    ["report", "--tau", 2, "--T", 4],
])
def test_two_shards_merged_equal_a_single_run(cmd, tmp_path):
    """Shipped ResNet-20 on the first 300 shipped test images: every figure of the merged
    shards equals the single run's exactly (not approximately)."""
    base = cmd + ["--limit", LIMIT, "--threads", 1]
    invoke(*base, "--json", tmp_path / "plain.json")
    for i in (0, 1):
        invoke(*base, "--shard", f"{i}/2", "--json", tmp_path / f"p{i}.json")
    parts = [json.loads((tmp_path / f"p{i}.json").read_text()) for i in (0, 1)]
    assert [p["shard"]["stop"] - p["shard"]["start"] for p in parts] == [256, 44]
    r = invoke("merge", tmp_path / "p1.json", tmp_path / "p0.json", "--json", tmp_path / "merged.json")
    assert "merged from 2 shards" in " ".join(r.output.split())
    plain, merged = figures(tmp_path / "plain.json"), figures(tmp_path / "merged.json")
    assert plain == merged
    assert json.loads((tmp_path / "merged.json").read_text())["shards"] == 2
    # the check can fail: one shard's counts alone do not give the single run's figures
    j1 = {k: v for k, v in parts[0].items()}
    j1["shard"] = dict(j1["shard"], count=1, stop=LIMIT)
    (tmp_path / "alone.json").write_text(json.dumps(j1))
    invoke("merge", tmp_path / "alone.json", "--json", tmp_path / "alone_m.json", "-q")
    assert figures(tmp_path / "alone_m.json") != plain


def test_merge_refuses_parts_that_do_not_belong_together(tmp_path):
    base = ["run", "--tau", 2, "--T", 3, "-q", "--limit", LIMIT, "--threads", 1]
    invoke(*base, "--shard", "0/2", "--json", tmp_path / "a0.json")
    invoke(*base, "--shard", "1/2", "--json", tmp_path / "a1.json")
    invoke(*base[:-4], "--mask-eps", 0, "--limit", LIMIT, "--shard", "1/2", "--json", tmp_path / "b1.json")
    runner = CliRunner()

    def err(*args):
        r = runner.invoke(cli, [str(a) for a in args])
        assert r.exit_code == 2, r.output
        out = r.output.strip()
        assert out.startswith("error: ") and len(out.splitlines()) == 1 and "Traceback" not in out, out
        return out

    assert "mask_eps" in err("merge", tmp_path / "a0.json", tmp_path / "b1.json")
    assert "missing" in err("merge", tmp_path / "a0.json")
    before = (tmp_path / "a1.json").read_text()
    assert "input file" in err("merge", tmp_path / "a0.json", tmp_path / "a1.json", "--json", tmp_path / "a1.json")
    assert (tmp_path / "a1.json").read_text() == before
    assert "twice" in err("merge", tmp_path / "a0.json", tmp_path / "a0.json", tmp_path / "a1.json")
    (tmp_path / "junk.json").write_text('{"accuracy": [1]}')
    assert "not a partial result" in err("merge", tmp_path / "junk.json")
    assert "--shard needs --json" in err(*base, "--shard", "0/2")
    assert "i/N" in err(*base, "--shard", "2/2", "--json", tmp_path / "x.json")
    assert "at most 2 shards" in err(*base, "--shard", "0/3", "--json", tmp_path / "x.json")
    assert "--plot" in err("sweep", "--T", 2, "--shard", "0/2", "--json", tmp_path / "x.json",
                           "--plot", tmp_path / "x.png")
    # another model than the shards ran
    from srp_np.model import load_model, save_model

    m = load_model(json.loads((tmp_path / "a0.json").read_text())["model"]["path"])
    arrays = dict(m.arrays)
    k = sorted(arrays)[0]
    arrays[k] = arrays[k] * np.float32(0.5)
    save_model(tmp_path / "other.npz", m.graph, arrays)
    assert "SHA-256" in err("merge", tmp_path / "a0.json", tmp_path / "a1.json", "--weights", tmp_path / "other.npz")
    assert not (tmp_path / "x.json").exists()


def test_merge_sums_counts_exactly_and_unknown_times_stay_unknown():
    from srp_np.shard import merge_partials

    def part(i, correct, ann, secs):
        return {"_path": f"p{i}", "command": "sweep", "settings": {"T": 2}, "data": {"sha256": "d"},
                "model": {"sha256": "m"}, "shard": {"index": i, "count": 2, "start": 256 * i,
                                                    "stop": [256, 300][i], "images_total": 300},
                "counts": {"taus": [0, 3], "T": 2, "n_images": [256, 44][i], "ann_correct": ann,
                           "correct": {"0": correct[0], "3": correct[1]}}, "seconds": {"tau": secs}}

    big = 2 ** 60 + 1                                  # beyond float precision: the sum must stay exact
    m = merge_partials([part(1, ([1, 2], [3, 4]), 40, {"0": 1.5, "3": None}),
                        part(0, ([big, 6], [7, 8]), 200, {"0": 2.0, "3": 1.0})])
    assert m["counts"]["correct"] == {"0": [big + 1, 8], "3": [10, 12]}
    assert m["counts"]["ann_correct"] == 240 and m["counts"]["n_images"] == 300 and m["shards"] == 2
    assert m["seconds"] == {"tau": {"0": 3.5, "3": None}}
    bad = part(1, ([1, 2], [3, 4]), 40, {})
    bad["shard"]["start"] = 200
    with pytest.raises(SrpError, match="tile"):
        merge_partials([part(0, ([1, 2], [3, 4]), 1, {}), bad])
