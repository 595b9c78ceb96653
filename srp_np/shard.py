"""Deterministic sharding of the images and exact merging of the partial results.

``--shard i/N`` splits the evaluated images (after ``--limit``/``--subset``) into
N contiguous shards made of whole blocks of :data:`UNIT` images: with
B = ⌈n/UNIT⌉ blocks, shard i holds blocks ⌊i·B/N⌋ … ⌊(i+1)·B/N⌋ − 1. Whole
blocks keep every batched computation identical to an unsharded run (the ANN
pass works in batches of 256 images whose BLAS results depend on the batch;
``analyze`` works in chunks of ``--batch-size``; the SNN does not depend on
batching at all), so a shard computes exactly the numbers the single run
computes for its images.

Each shard writes a *partial* (JSON, format ``srp-np-partial/1``): the command,
its settings, the model's and the data's SHA-256, the shard's place, and the
exact integer counts of :mod:`srp_np.counts`. :func:`merge_partials` checks that
the parts belong together (same command, settings, model and data; shards
0..N−1 each exactly once) and sums the counts; every figure computed from the
sum is then bit for bit the figure of a single run (wall times excepted: a
merge reports their sum over the shards, i.e. compute time, not elapsed time).
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .errors import SrpError

PARTIAL_FORMAT = "srp-np-partial/1"
#: Images per shard block: the ANN's batch (see :func:`srp_np.evaluate.ann_logits`).
UNIT = 256
COMMANDS = ("run", "sweep", "analyze", "report")


def parse_shard(text) -> tuple:
    """``"i/N"`` → ``(i, N)`` with 0 ≤ i < N."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise SrpError(f"`shard` must be i/N (e.g. 0/4), got {text!r}")
    i, n = int(m.group(1)), int(m.group(2))
    if n < 1:
        raise SrpError(f"`shard` i/N needs N >= 1, got {text!r}")
    if i >= n:
        raise SrpError(f"--shard i/N needs 0 <= i < N, got {text!r}")
    return i, n


def shard_unit(batch: int | None = None) -> int:
    """Block size: :data:`UNIT`, or the least common multiple with a command's chunk size."""
    return UNIT if not batch else math.lcm(UNIT, int(batch))


def shard_range(n_images: int, index: int, count: int, unit: int = UNIT) -> tuple:
    """``(start, stop)`` of shard ``index`` of ``count`` over ``n_images`` images (whole blocks of ``unit``)."""
    blocks = -(-int(n_images) // unit)
    if count > blocks:
        raise SrpError(f"--shard {index}/{count}: {n_images} images make only {blocks} block(s) of {unit}; "
                       f"use at most {blocks} shards")
    b0, b1 = index * blocks // count, (index + 1) * blocks // count
    return b0 * unit, min(int(n_images), b1 * unit)


def partial(command: str, shard: tuple, span: tuple, n_total: int, model, data: dict, settings: dict,
            counts: dict, seconds: dict | None = None) -> dict:
    """The partial result of one shard (see the module docstring), JSON-serialisable."""
    from .store import model_sha256

    return {"format": PARTIAL_FORMAT, "command": command,
            "shard": {"index": int(shard[0]), "count": int(shard[1]), "start": int(span[0]), "stop": int(span[1]),
                      "images_total": int(n_total)},
            "model": {"sha256": model_sha256(model), "path": model.path, "arch": model.graph.get("arch")},
            "data": dict(data), "settings": dict(settings), "counts": counts, "seconds": dict(seconds or {})}


def read_partial(path) -> dict:
    """Read and check one partial file."""
    from .fileio import open_regular

    p = Path(path)
    if not p.exists():
        raise SrpError(f"{p}: no such file")
    try:
        with open_regular(p, "partial result") as f:
            obj = json.loads(f.read().decode("utf-8"))
    except SrpError:
        raise
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SrpError(f"{p}: not a partial result (not JSON: {type(e).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != PARTIAL_FORMAT:
        raise SrpError(f"{p}: not a partial result of srp-np --shard (format is not {PARTIAL_FORMAT})")
    for key in ("command", "shard", "model", "data", "settings", "counts"):
        if key not in obj:
            raise SrpError(f"{p}: partial result lacks {key!r}")
    if obj["command"] not in COMMANDS:
        raise SrpError(f"{p}: unknown command {obj['command']!r} in partial result")
    obj["_path"] = str(p)
    return obj


def merge_partials(parts: list) -> dict:
    """Check that ``parts`` (from :func:`read_partial`) are the N shards of one job and sum their counts.

    Returns
    -------
    dict
        The first part's command, model, data and settings, ``counts`` summed, ``seconds`` summed
        per key, and ``shards`` (N).
    """
    from .counts import RunCounts, sum_counts

    if not parts:
        raise SrpError("merge needs at least one partial result")
    first = parts[0]
    for p in parts[1:]:
        for key, what in (("command", "command"), ("settings", "settings"), ("data", "data")):
            if p[key] != first[key]:
                raise SrpError(f"{p['_path']} and {first['_path']} come from different {what} "
                               f"({_diff(p[key], first[key])}): they cannot be merged")
        if p["model"]["sha256"] != first["model"]["sha256"]:
            raise SrpError(f"{p['_path']} and {first['_path']} come from different models: they cannot be merged")
        if p["shard"]["count"] != first["shard"]["count"] or \
                p["shard"]["images_total"] != first["shard"]["images_total"]:
            raise SrpError(f"{p['_path']} and {first['_path']} split the images differently: they cannot be merged")
    count = first["shard"]["count"]
    seen = {}
    for p in parts:
        i = p["shard"]["index"]
        if i in seen:
            raise SrpError(f"shard {i}/{count} is given twice ({seen[i]} and {p['_path']})")
        seen[i] = p["_path"]
    missing = [i for i in range(count) if i not in seen]
    if missing:
        raise SrpError(f"shard(s) {', '.join(f'{i}/{count}' for i in missing[:5])} missing: "
                       f"merge needs all {count} partial results")
    ordered = sorted(parts, key=lambda p: p["shard"]["index"])
    stops = [p["shard"]["start"] for p in ordered[1:]] + [first["shard"]["images_total"]]
    if ordered[0]["shard"]["start"] != 0 or any(p["shard"]["stop"] != s for p, s in zip(ordered, stops)):
        raise SrpError("the shards' image ranges do not tile the data set: they cannot be merged")
    if first["command"] in ("run", "report"):
        counts = sum_counts(RunCounts.from_json(p["counts"]) for p in ordered)
    else:
        counts = ordered[0]["counts"]
        for p in ordered[1:]:
            counts = _add_named(counts, p["counts"], first["command"])
    seconds = {}
    for p in ordered:       # sums; None (a time not measured, e.g. per τ on a cluster) makes the sum None
        for k, v in p.get("seconds", {}).items():
            if isinstance(v, dict):
                seconds[k] = {kk: _add_time(seconds.get(k, {}).get(kk, 0.0), vv) for kk, vv in v.items()}
            else:
                seconds[k] = _add_time(seconds.get(k, 0.0), v)
    return {"command": first["command"], "model": first["model"], "data": first["data"],
            "settings": first["settings"], "counts": counts, "seconds": seconds, "shards": count}


def _add_time(a, b):
    return None if a is None or b is None else float(a) + float(b)


def _add_named(a: dict, b: dict, command: str) -> dict:
    """Sum two count dicts of ``sweep``/``analyze`` (integers added; the lists of τ kept)."""
    from .counts import add_nested

    out = {}
    for k in a:
        if k == "taus" or k == "T":
            if a[k] != b.get(k):
                raise SrpError(f"cannot merge {command} counts with different {k}")
            out[k] = a[k]
        elif k == "seconds":
            continue
        else:
            if k not in b:
                raise SrpError(f"cannot merge {command} counts: a part lacks {k!r}")
            out[k] = add_nested(a[k], b[k], k)
    return out


def _diff(a, b) -> str:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        return ", ".join(f"{k}: {a.get(k)!r} vs {b.get(k)!r}" for k in keys[:3])
    return f"{a!r} vs {b!r}"
