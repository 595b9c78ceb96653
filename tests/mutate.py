"""Mutation check: every rule of the dynamics, in every place it is written, has a test that fails
when the rule changes by one character.

For each mutation (file, the text of one rule, a changed text) the repository's tracked files
are copied to a temporary folder (modification times kept, so Numba's on-disk cache of the
unchanged kernels stays valid there), the change is applied, and the rule tests run there
(``tests/test_rules.py``, ``test_neuron.py``, ``test_simulator.py``, ``test_kernels.py``, stopping
at the first failure). A mutation the suite does not notice ("survived") is a missing test.

Usage::

    python tests/mutate.py              # every mutation; exit 1 if any survives
    python tests/mutate.py --list       # the mutations
    python tests/mutate.py if-fire-vec keep-ref   # some of them

Not part of the test suite (it runs the suite once per mutation: about a minute each).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TESTS = ["tests/test_rules.py", "tests/test_neuron.py", "tests/test_simulator.py", "tests/test_kernels.py"]

#: (name, file, original text, mutated text, which occurrence (0-based) of the original)
MUTATIONS = [
    # firing at exactly θ: v ≥ θ
    ("if-fire-vec", "srp_np/kernels/simd.py", 's = builder.fcmp_ordered(">=", u, thv)',
     's = builder.fcmp_ordered(">", u, thv)', 0),
    ("if-fire-tail", "srp_np/kernels/spikes.py", "        s = u_ >= theta\n", "        s = u_ > theta\n", 0),
    ("if-fire-record", "srp_np/kernels/spikes.py", "if u_ >= theta:", "if u_ > theta:", 0),
    ("if-fire-ref", "srp_np/neuron.py", "s = u >= theta", "s = u > theta", 0),
    # reset by subtraction
    ("reset-vec", "srp_np/kernels/simd.py", "builder.select(s, builder.fsub(u, thv), u)",
     "builder.select(s, builder.fsub(u, u), u)", 0),
    ("reset-tail", "srp_np/kernels/spikes.py", "v[vb + j] = u_ - theta if s else u_",
     "v[vb + j] = u_ - u_ if s else u_", 0),
    ("reset-record", "srp_np/kernels/spikes.py", "v[i] = u_ - theta", "v[i] = u_ - u_", 0),
    ("reset-ref", "srp_np/neuron.py", "v = u - theta * s.astype(dtype)", "v = u - u * s.astype(dtype)", 0),
    # the SRP keep-mask at exactly v(τ) = ε·θ: v(τ) > ε·θ
    ("keep-vec", "srp_np/kernels/simd.py", 'fcmp_ordered(">", builder.load(', 'fcmp_ordered(">=", builder.load(', 0),
    ("keep-tail", "srp_np/kernels/spikes.py", "np.uint64(v[vb + j] > thr_keep)", "np.uint64(v[vb + j] >= thr_keep)", 0),
    ("keep-record", "srp_np/kernels/spikes.py", "keep[i] = v[i] > thr_keep", "keep[i] = v[i] >= thr_keep", 0),
    ("keep-ref", "srp_np/neuron.py", "return v_tau > v_tau.dtype.type(eps)", "return v_tau >= v_tau.dtype.type(eps)",
     0),
    # the initial membrane v(0) = θ/2 (also the reset to θ/2 at the stage boundary)
    ("v0-record", "srp_np/simulator.py", "th / dt(2)", "th / dt(4)", 0),
    ("v0-fast", "srp_np/simulator.py", "th / dt(2)", "th / dt(4)", 1),
    ("v0-fused", "srp_np/simulator.py", "th / dt(2)", "th / dt(4)", 2),
    ("v0-ref", "srp_np/neuron.py", "np.full(shape, theta / 2", "np.full(shape, theta / 4", 0),
    # the stage boundary t = τ: the mask is read and membranes reset at t = τ, applied from t = τ on
    ("stage-read-fused", "srp_np/kernels/gather.py", "if (t == tau) & (tau > 0):", "if (t == tau - 1) & (tau > 0):",
     0),
    ("stage-read-record", "srp_np/kernels/spikes.py", "if (t == tau) & (tau > 0):",
     "if (t == tau - 1) & (tau > 0):", 0),
    ("stage-read-fast", "srp_np/kernels/spikes.py", "if (t == tau) & (tau > 0):", "if (t == tau - 1) & (tau > 0):",
     1),
    ("stage-apply-fused", "srp_np/kernels/gather.py", "masked = (t >= tau) & (tau > 0)",
     "masked = (t > tau) & (tau > 0)", 0),
    ("stage-apply-fast", "srp_np/kernels/spikes.py", "masked = (t >= tau) & (tau > 0)",
     "masked = (t > tau) & (tau > 0)", 0),
    ("stage-apply-record", "srp_np/kernels/spikes.py", "stage2 = t >= tau", "stage2 = t > tau", 0),
    ("stage-ref", "srp_np/reference.py", "for _ in range(tau):", "for _ in range(tau + 1):", 0),
    # latency and output averaging: outputs[t-1] is the mean of stage-2 steps 1..t
    ("latency", "srp_np/simulator.py", "[:, tau:, :]", "[:, tau + 1:, :]", 0),
    ("averaging", "srp_np/simulator.py", "res.outputs[t] = acc / (t + 1)", "res.outputs[t] = acc / (t + 2)", 0),
]


def _replace_nth(text: str, old: str, new: str, n: int) -> str:
    i = -1
    for _ in range(n + 1):
        i = text.find(old, i + 1)
        if i < 0:
            raise SystemExit(f"mutation text not found (occurrence {n}): {old!r}")
    return text[:i] + new + text[i + len(old):]


def _copy_tree(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files += [str(p.relative_to(ROOT)) for p in (ROOT / "srp_np").rglob("__pycache__/*") if p.is_file()]
    for f in files:
        src = ROOT / f
        if not src.is_file():
            continue
        (dst / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst / f)


def run_one(name, path, old, new, n, keep_output=False):
    with tempfile.TemporaryDirectory(prefix=f"srp-mut-{name}-") as d:
        d = Path(d)
        _copy_tree(d)
        f = d / path
        text = f.read_text()
        mutated = _replace_nth(text, old, new, n)
        assert mutated != text
        f.write_text(mutated)
        if path.startswith("srp_np/kernels/") and Path(path).name in ("simd.py", "isa.py"):
            # Numba's cache is keyed by each kernel's own source file: the kernels that inline
            # these intrinsics must be recompiled by hand
            for c in (d / "srp_np" / "kernels" / "__pycache__").glob("*.nb[ic]"):
                c.unlink()
        env = dict(os.environ, PYTHONPATH=str(d) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   PYTHONDONTWRITEBYTECODE="1")
        t0 = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *TESTS], cwd=d,
                           env=env, capture_output=True, text=True)
        # make sure the copy was the code under test
        check = subprocess.run([sys.executable, "-c", "import srp_np; print(srp_np.__file__)"], cwd=d, env=env,
                               capture_output=True, text=True).stdout.strip()
        if not check.startswith(str(d)):
            raise SystemExit(f"the mutated copy was not imported (got {check})")
        last = (p.stdout.strip().splitlines() or ["?"])[-1]
        # killed: tests ran and one failed (not a collection error or a crash before any test)
        killed = p.returncode == 1 and " failed" in last
        if p.returncode not in (0, 1):
            last = f"pytest exit {p.returncode}: {last}"
        return killed, time.perf_counter() - t0, last


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", help="mutations to run (default: all)")
    ap.add_argument("--list", action="store_true")
    args = ap.parse_args()
    muts = [m for m in MUTATIONS if not args.names or m[0] in args.names]
    if args.list:
        for name, path, old, new, n in MUTATIONS:
            print(f"{name:20s} {path}: {old!r} -> {new!r}" + (f" (occurrence {n + 1})" if n else ""))
        return 0
    survived = []
    print(f"{'mutation':20s} {'result':9s} {'s':>6s}  last line of the test run")
    for name, path, old, new, n in muts:
        killed, dt, last = run_one(name, path, old, new, n)
        print(f"{name:20s} {'killed' if killed else 'SURVIVED':9s} {dt:6.0f}  {last}", flush=True)
        if not killed:
            survived.append(name)
    print(f"{len(muts) - len(survived)} of {len(muts)} mutations killed" +
          (f"; survived: {', '.join(survived)}" if survived else ""))
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
