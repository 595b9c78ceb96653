"""Mutation check: every rule of the dynamics, in every place it is written, has a test that fails
when the rule changes by one character.

For each mutation (file, the text of one rule, a changed text) the repository's tracked files
are copied to a temporary folder (modification times kept, so Numba's on-disk cache of the
unchanged kernels stays valid there), the change is applied, and the rule tests run there
(``tests/test_rules.py``, ``test_neuron.py``, ``test_simulator.py``, ``test_kernels.py``, stopping
at the first failure). Since each rule is one constant or helper read by every kernel, one
mutation changes the rule everywhere; ``test_rules.py`` pins the rules written out by hand. A mutation the suite does not notice ("survived") is a missing test.

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
    # firing at exactly θ: u ≥ θ (one constant read by the NumPy spec, the scalar and the vector kernels)
    ("fire", "srp_np/neuron.py", 'FIRE_CMP = ">="', 'FIRE_CMP = ">"', 0),
    # reset by subtraction: written once per form (NumPy, scalar kernel helper, 16 lanes)
    ("reset-vec", "srp_np/kernels/simd.py", "builder.select(s, builder.fsub(u, thv), u)",
     "builder.select(s, builder.fsub(u, u), u)", 0),
    ("reset-scalar", "srp_np/kernels/rules.py", "v[i] = u - theta if s else u", "v[i] = u - u if s else u", 0),
    ("reset-ref", "srp_np/neuron.py", "v = u - theta * s.astype(dtype)", "v = u - u * s.astype(dtype)", 0),
    # the SRP keep rules at exactly their boundary: authors v(τ) > ε·θ, paper v(τ) ≥ 0
    ("keep-authors", "srp_np/neuron.py", 'MASK_CMP = {"authors": ">"', 'MASK_CMP = {"authors": ">="', 0),
    ("keep-paper", "srp_np/neuron.py", '"paper": ">="}', '"paper": ">"}', 0),
    ("keep-threshold", "srp_np/neuron.py", "dt(eps) * dt(theta) if", "dt(eps) + dt(theta) if", 0),
    ("keep-rule-code", "srp_np/kernels/rules.py", "if rule == AUTHORS else", "if rule != AUTHORS else", 0),
    ("keep-rule-vec", "srp_np/kernels/spikes.py", "        if rule == AUTHORS:", "        if rule != AUTHORS:", 0),
    # the initial membrane v(0) = θ/2 (also the reset to θ/2 at the stage boundary)
    ("v0", "srp_np/neuron.py", "V0_FRACTION = 0.5", "V0_FRACTION = 0.25", 0),
    # the stage boundary t = τ: the mask is read and membranes reset at t = τ, applied from t = τ on
    ("stage-read", "srp_np/kernels/rules.py", "return (t == tau) & (tau > 0)", "return (t == tau - 1) & (tau > 0)", 0),
    ("stage-apply", "srp_np/kernels/rules.py", "return t >= tau", "return t > tau", 0),
    ("stage-masked", "srp_np/kernels/rules.py", "return in_stage2(t, tau) & (tau > 0)",
     "return in_stage2(t, tau) & (tau > 1)", 0),
    ("v0-kernels", "srp_np/kernels/rules.py", "        v[i] = half\n", "        v[i] = -half\n", 0),
    ("stage-ref", "srp_np/reference.py", "for _ in range(tau):", "for _ in range(tau + 1):", 0),
    # latency and output averaging: outputs[t-1] is the mean of stage-2 steps 1..t
    ("latency", "srp_np/engine/execute.py", "[:, tau:, :]", "[:, tau + 1:, :]", 0),
    ("averaging", "srp_np/engine/execute.py", "res.outputs[t] = acc / (t + 1)", "res.outputs[t] = acc / (t + 2)", 0),
    ("averaging-ref", "srp_np/reference.py", "res.outputs[t] = acc / (t + 1)", "res.outputs[t] = acc / (t + 2)", 0),
    # the cases of the unevenness error at exact ties (analysis)
    ("case-zero", "srp_np/analysis.py", "zero = a <= tol", "zero = a < tol", 0),
    ("case-full", "srp_np/analysis.py", "full = a >= float(lam) - tol", "full = a > float(lam) - tol", 0),
    ("case-more", "srp_np/analysis.py", "more = phi > a + tol", "more = phi >= a + tol", 0),
    ("case-less", "srp_np/analysis.py", "less = phi < a - tol", "less = phi <= a - tol", 0),
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
        if Path(path).name in ("simd.py", "isa.py", "rules.py", "neuron.py"):
            # Numba's cache is keyed by each kernel's own source file: the kernels that inline
            # these helpers must be recompiled (the stamp of kernels.flush_if_intrinsics_changed
            # does it too; removing the cache makes sure)
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
