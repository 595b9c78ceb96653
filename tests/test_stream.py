"""Streaming data: lazy image folders, block-by-block evaluation, --subset first|balanced (issue 12, part 3)."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from srp_np import datasets as ds
from srp_np.cli.main import cli
from srp_np.evaluate import evaluate, evaluate_source
from srp_np.testing import random_vgg


def _balanced_by_hand(labels, limit):
    """Round k takes the k-th image of every class (classes in label order) until ``limit`` are taken."""
    per_class = {c: [i for i, v in enumerate(labels) if v == c] for c in sorted(set(labels))}
    chosen, k = [], 0
    while len(chosen) < limit:
        for c in sorted(per_class):
            if k < len(per_class[c]) and len(chosen) < limit:
                chosen.append(per_class[c][k])
        k += 1
    return sorted(chosen)


@settings(max_examples=150, deadline=None)
@given(labels=st.lists(st.integers(0, 6), min_size=1, max_size=80), data=st.data())
def test_subsets(labels, data):
    limit = data.draw(st.integers(1, len(labels)))
    first = ds.subset_indices(labels, limit, "first")
    assert first.tolist() == list(range(limit))
    bal = ds.subset_indices(labels, limit, "balanced")
    assert bal.tolist() == _balanced_by_hand(labels, limit)
    assert np.array_equal(bal, ds.subset_indices(labels, limit, "balanced"))      # deterministic
    counts = np.bincount(np.asarray(labels)[bal], minlength=7)
    avail = np.bincount(labels, minlength=7)
    short = counts < avail                                  # classes not exhausted differ by at most one
    if short.any():
        assert counts.max() <= counts[short].min() + 1      # no class is more than one round ahead


def _folder(tmp_path, n_per_class=5, classes=3, size=16):
    Image = pytest.importorskip("PIL.Image")

    rng = np.random.default_rng(0)
    for c in range(classes):
        d = tmp_path / "val" / f"c{c}"
        d.mkdir(parents=True)
        for i in range(n_per_class):
            Image.fromarray(rng.integers(0, 256, (size, size + 4 * (i % 2), 3), dtype=np.uint8)).save(d / f"{i}.png")
    return tmp_path / "val"


def test_image_folder_is_decoded_lazily_and_streams_like_memory(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    decoded = []
    real = ds._decode_image
    monkeypatch.setattr(ds, "_decode_image", lambda p, s, r: decoded.append(p) or real(p, s, r))
    src = ds.ImageFolderSource(root, size=16, resize=16)
    assert len(src) == 15 and decoded == []                 # listing reads no image
    assert src.labels.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    sub = src.take(ds.subset_indices(src.labels, 6, "balanced"))
    assert sub.labels.tolist() == [0, 0, 1, 1, 2, 2] and decoded == []
    x4, y4 = sub.read(2, 4)
    assert len(decoded) == 2 and x4.shape == (2, 3, 16, 16) and y4.tolist() == [1, 1]
    x_all, y_all = ds.load_image_folder(root, size=16, resize=16)
    np.testing.assert_array_equal(src.read(0, 15)[0], x_all)
    assert [len(x) for x, _ in src.batches(4)] == [4, 4, 4, 3]

    model = random_vgg(input_shape=(3, 16, 16), widths=(3, 4), fc=8, rng=0,
                       calibrate_x=np.random.default_rng(1).random((4, 3, 16, 16)))
    streamed = evaluate_source(model, src, 2, 3, batch_size=4)
    whole = evaluate(model, x_all, y_all, 2, 3, batch_size=4)
    keep = lambda d: {k: v for k, v in d.items() if "second" not in k and k != "threads"}
    assert keep(streamed.to_dict()) == keep(whole.to_dict())


def test_cli_subset_balanced_equals_that_subset_as_data(model_files, tmp_path):
    d = model_files
    with np.load(d / "data.npz") as f:
        x, y = f["x"], f["y"]
    idx = _balanced_by_hand(y.tolist(), 10)
    np.savez(tmp_path / "sub.npz", x=x[idx], y=y[idx])
    out = {}
    for name, extra in (("bal", ["-d", d / "data.npz", "--limit", 10, "--subset", "balanced"]),
                        ("sub", ["-d", tmp_path / "sub.npz"])):
        r = CliRunner().invoke(cli, [str(a) for a in ["run", "-w", d / "model.npz", *extra, "--tau", 1, "--T", 3,
                                                      "-q", "--json", tmp_path / f"{name}.json"]])
        assert r.exit_code == 0, r.output
        j = json.loads((tmp_path / f"{name}.json").read_text())
        out[name] = {k: v for k, v in j.items() if "second" not in k and k not in ("threads", "data")}
    assert out["bal"] == out["sub"] and out["bal"]["n_images"] == 10
    r = CliRunner().invoke(cli, ["run", "-w", str(d / "model.npz"), "--subset", "odd"])
    assert r.exit_code == 2 and r.output.startswith("error: ")


@pytest.mark.parametrize("limit,subset,expect", [(6, "first", [0] * 5 + [1]), (6, "balanced", [0, 0, 1, 1, 2, 2])])
def test_subset_on_a_folder_through_the_cli_loader(tmp_path, limit, subset, expect):
    from srp_np.cli.common import load_source_option

    _folder(tmp_path)
    model = random_vgg(input_shape=(3, 224, 224), widths=(2,), fc=4, rng=0)
    model.graph["dataset"] = "imagenet"
    src, origin = load_source_option(model, None, str(tmp_path), limit, subset)
    assert isinstance(src, ds.ImageFolderSource) and src.labels.tolist() == expect
    assert ("balanced" in origin) == (subset == "balanced")
