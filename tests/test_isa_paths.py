"""The same spikes on every CPU: the kernels compiled for the AVX-512, AVX2 and portable
paths (:mod:`srp_np.kernels.isa`) agree with the float64 dense reference spike for spike and
with each other bit for bit (float32 and float64 outputs, spike counts).

Each target is compiled in a subprocess whose ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES``
select it (Numba caches each target separately); the host's own target is one of them.
"""
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from srp_np.kernels.isa import PATHS, _path_for, simd_path

HERE = Path(__file__).resolve().parent

#: (label, environment) of each target; the generic one also runs on one thread.
TARGETS = [
    ("host", {}),
    ("haswell", {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""}),
    ("generic", {"NUMBA_CPU_NAME": "generic", "NUMBA_NUM_THREADS": "1"}),
]


def test_path_is_what_llvm_generates_for_the_target():
    assert simd_path() in PATHS
    if sys.platform.startswith("linux") and os.uname().machine == "x86_64":
        assert _path_for("generic", "") == "portable"
        assert _path_for("haswell", "") == "avx2"
        assert _path_for("skylake-avx512", "") == "avx512"
        assert _path_for("znver4", "") == "avx512"
        # features override the name, as they do in Numba
        assert _path_for("znver4", "-avx512f") == "avx2"


@pytest.fixture(scope="module")
def per_target(tmp_path_factory):
    d = tmp_path_factory.mktemp("isa")
    results = {}
    for label, env in TARGETS:
        out = d / f"{label}.npz"
        full = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_CPU")}
        full.update(env)
        p = subprocess.run([sys.executable, str(HERE / "isa_worker.py"), str(out)], env=full, capture_output=True,
                           text=True, timeout=1200)
        assert p.returncode == 0, f"{label}: {p.stdout}\n{p.stderr[-3000:]}"
        results[label] = dict(np.load(out))
    return results


@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the named targets are x86 CPUs")
def test_every_path_matches_the_reference_and_each_other(per_target):
    paths = {label: str(r["path"]) for label, r in per_target.items()}
    assert paths["haswell"] == "avx2" and paths["generic"] == "portable"
    host = per_target["host"]
    keys = [k for k in host if k != "path"]
    assert len(keys) > 100
    for label, r in per_target.items():
        assert sorted(k for k in r if k != "path") == sorted(keys)
        for k in keys:
            np.testing.assert_array_equal(r[k], host[k], err_msg=f"{label} ({paths[label]}) differs from the host "
                                                                 f"({paths['host']}) in {k}")
