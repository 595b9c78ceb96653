"""Peak memory of ``srp-np run`` on an image folder: streamed (block by block) against in memory.

Creates (once) a folder of synthetic 224×224 JPEGs in 10 class subfolders and a small random
VGG-shaped model on 3×224×224 inputs that names the data set ``imagenet``, then runs, each in its
own process under ``/usr/bin/time -v``:

* ``srp-np run --data-dir FOLDER --limit N`` (streams: blocks of 256 images decoded, simulated,
  counted and dropped) for several N, and
* ``srp-np report --data-dir FOLDER --limit N`` (reads every selected image into memory first),

and prints the maximum resident set size of each. The model is tiny on purpose: the figure
measured is the data path's memory, not the network's.

    python benchmarks/stream_memory.py --images 2000 --dir /tmp/srp_stream
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def make_folder(root: Path, n: int, classes: int = 10, size: int = 224) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    done = sum(1 for _ in root.glob("*/*.jpg")) if root.is_dir() else 0
    if done >= n:
        return
    for i in range(n):
        c = i % classes
        d = root / f"class{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        # smooth random colours (a JPEG of white noise would be unrealistically large)
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        im = Image.fromarray(small).resize((size + int(rng.integers(0, 64)), size), Image.BILINEAR)
        im.save(d / f"img{i:05d}.jpg", quality=90)


def make_model(path: Path) -> None:
    from srp_np.model import save_model
    from srp_np.testing import random_vgg

    x = np.random.default_rng(1).random((4, 3, 224, 224))
    m = random_vgg(input_shape=(3, 224, 224), widths=(4, 4), fc=16, rng=0, calibrate_x=x)
    m.graph["dataset"] = "imagenet"
    m.graph["arch"] = "tiny-vgg-224"
    save_model(path, m.graph, m.arrays)


def peak_rss(cmd: list) -> tuple:
    t0 = time.perf_counter()
    r = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        return None, wall, r.stderr.strip().splitlines()[-1:] or [""]
    kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", r.stderr).group(1))
    return kb / 1024, wall, ""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--dir", default="/tmp/srp_stream")
    ap.add_argument("--limits", default="256,2000", help="--limit values for the streamed run")
    ap.add_argument("--memory-limits", default="256,1000", help="--limit values for the in-memory report")
    a = ap.parse_args(argv)
    root = Path(a.dir)
    folder = root / "val"
    make_folder(folder, a.images)
    model = root / "tiny224.npz"
    if not model.exists():
        make_model(model)
    mb = sum(p.stat().st_size for p in folder.glob("*/*.jpg")) / 2**20
    print(f"{sum(1 for _ in folder.glob('*/*.jpg'))} JPEGs, 224x224 (+ up to 64 px wider), {mb:.1f} MB on disk")
    srp = [sys.executable, "-m", "srp_np.cli.main"]
    common = ["--weights", str(model), "--data-dir", str(root), "--tau", "1", "--T", "2", "--threads", "1"]
    for n in [int(v) for v in a.limits.split(",")]:
        rss, wall, err = peak_rss(srp + ["run", *common, "--limit", str(n), "-q"])
        print(f"run (streamed)     --limit {n:5d}: peak RSS {rss if rss is None else f'{rss:.0f} MB'}, "
              f"{wall:.1f} s {err}")
    for n in [int(v) for v in a.memory_limits.split(",")]:
        rss, wall, err = peak_rss(srp + ["report", *common, "--limit", str(n)])
        print(f"report (in memory) --limit {n:5d}: peak RSS {rss if rss is None else f'{rss:.0f} MB'}, "
              f"{wall:.1f} s {err}")


if __name__ == "__main__":
    main()
