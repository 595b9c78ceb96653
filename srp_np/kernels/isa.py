"""Which SIMD code path the kernels are compiled for.

The gather kernels' building blocks (:mod:`.simd`) have one implementation
per instruction-set family, chosen when Numba compiles them, for the target
Numba compiles for: the host CPU, or the one named by ``NUMBA_CPU_NAME`` /
``NUMBA_CPU_FEATURES``. Numba's on-disk cache is keyed by that target too,
so each target gets its own compiled kernels.

=========== ============================================================
path        how a spike word becomes a list of weight-row offsets
=========== ============================================================
``avx512``  16 lanes at a time compressed *in a register*
            (``llvm.experimental.vector.compress``, one ``vpcompressd``)
            and stored whole; never the memory-destination compress,
            which AMD Zen 4 runs as microcode (21 ns against 1.2 ns per
            16 lanes)
``avx2``    8 lanes at a time from a 256-entry table of set-bit
            positions (one 8-byte load, a widening move, a multiply-add
            and a full 8-lane store per byte of the word)
``portable`` the same table, with the popcounts from a table too (no
            ``popcnt`` needed): SSE2, aarch64 NEON, anything LLVM targets
=========== ============================================================

The path is decided by asking LLVM what it generates for the target (a
probe function compiled for Numba's CPU name and features), not by parsing
CPU names: a ``vpcompressd`` in the probe means ``avx512``, a 256-bit
integer add means ``avx2``. Every path sums in the same order, so spikes and
currents are bit-identical across paths (tested in subprocesses per target).
"""
from __future__ import annotations

import functools

#: The code paths, fastest first.
PATHS = ("avx512", "avx2", "portable")

#: Bytes of accumulator registers one output block may use per path (about half the vector
#: register file: 32×64 B on AVX-512, 16×32 B on AVX2, 16×16 B on SSE2 / 32×16 B on NEON).
ACC_BYTES = {"avx512": 1024, "avx2": 256, "portable": 128}

_PROBE = r"""
declare <16 x i32> @llvm.experimental.vector.compress.v16i32(<16 x i32>, <16 x i1>, <16 x i32>)
define <16 x i32> @probe_compress(<16 x i32> %v, i16 %m) {
  %mask = bitcast i16 %m to <16 x i1>
  %r = call <16 x i32> @llvm.experimental.vector.compress.v16i32(<16 x i32> %v, <16 x i1> %mask, <16 x i32> zeroinitializer)
  ret <16 x i32> %r
}
define void @probe_add(<8 x i32>* %p, <8 x i32>* %q) {
  %a = load <8 x i32>, <8 x i32>* %p, align 32
  %b = load <8 x i32>, <8 x i32>* %q, align 32
  %c = add <8 x i32> %a, %b
  store <8 x i32> %c, <8 x i32>* %p, align 32
  ret void
}
"""


def target_cpu() -> tuple[str, str]:
    """(CPU name, feature string) Numba compiles for: ``NUMBA_CPU_NAME`` /
    ``NUMBA_CPU_FEATURES`` when set (as Numba reads them), else the host's."""
    import llvmlite.binding as ll
    from numba.core import config

    name = config.CPU_NAME or ll.get_host_cpu_name()
    if config.CPU_FEATURES is not None:
        feats = config.CPU_FEATURES
    else:
        from numba.core.codegen import get_host_cpu_features
        feats = get_host_cpu_features()
    return name, feats


def _probe_assembly(name: str, feats: str) -> tuple[str, str]:
    import llvmlite.binding as ll
    import numba  # noqa: F401  (initialises LLVM's native target)

    triple = ll.get_process_triple()
    mod = ll.parse_assembly(_PROBE)
    mod.triple = triple
    tm = ll.Target.from_triple(triple).create_target_machine(cpu=name, features=feats, opt=2)
    return triple, tm.emit_assembly(mod)


@functools.lru_cache(maxsize=None)
def _path_for(name: str, feats: str) -> str:
    try:
        triple, asm = _probe_assembly(name, feats)
    except Exception:   # pragma: no cover - an LLVM without the compress intrinsic
        return "portable"
    if not triple.startswith(("x86_64", "i686", "i386")):
        return "portable"
    if "vpcompressd" in asm:
        return "avx512"
    if "ymm" in asm.split("probe_add", 1)[-1] and "vpaddd" in asm:
        return "avx2"
    return "portable"


def simd_path() -> str:
    """The code path (one of :data:`PATHS`) for the target Numba compiles for."""
    return _path_for(*target_cpu())


def describe() -> str:
    """One line for logs and benchmark headers, e.g. ``'avx512 (znver4)'``."""
    from numba.core import config

    name, _ = target_cpu()
    return f"{simd_path()} ({name}{', custom features' if config.CPU_FEATURES else ''})"
