"""The rules of the dynamics for the Numba kernels, each written once (inline helpers).

The comparisons are built from the constants of :mod:`srp_np.neuron` (the
specification), so the NumPy reference, these scalar helpers and the 16-lane
vector intrinsics of :mod:`.simd` cannot disagree about a rule:

=================  ====================================  ==============================
rule               scalar (here)                         16 lanes (:mod:`.simd`)
=================  ====================================  ==============================
fire, Eq. 3        :func:`if_update` (``FIRE_CMP``)      ``if_step16`` (``FIRE_CMP``)
reset, Eq. 2       :func:`if_update` (``u − θ``)         ``if_step16`` (``u − θ``)
keep, Alg. 1 l.12  :func:`keeps` (``MASK_CMP``)          ``keep16_*`` (``MASK_CMP``)
stage boundary     :func:`reads_mask`, :func:`masked`, :func:`in_stage2`
v(0) = θ/2         :func:`reset_membranes` with :func:`srp_np.neuron.initial_membrane` (``half``)
=================  ====================================  ==============================

The SRP schedule of one block of neurons at step t (0-based, S = τ + T steps)::

    if reads_mask(t, τ):  keep = keeps(v, thr, rule); v = θ/2    # Algorithm 1, lines 11-13
    s = if_update(v, x, θ)                                       # Eqs. 2-3
    out = s & keep  if masked(t, τ)  else s                      # Algorithm 1, line 17
"""
from numba import njit
from numba.core import types
from numba.extending import intrinsic

from ..neuron import FIRE_CMP, MASK_CMP, MASK_RULES

#: Integer codes of the mask rules in the kernels.
AUTHORS = MASK_RULES.index("authors")
PAPER = MASK_RULES.index("paper")


def _scalar_cmp(op: str):
    """An intrinsic ``a op b`` on two floats of one type, as one ordered LLVM ``fcmp``."""

    @intrinsic
    def cmp(typingctx, a, b):
        if not isinstance(a, types.Float) or a != b:
            return None
        sig = types.boolean(a, b)

        def codegen(context, builder, signature, args):
            return builder.fcmp_ordered(op, args[0], args[1])

        return sig, codegen

    return cmp


_fires = _scalar_cmp(FIRE_CMP)
_keeps_authors = _scalar_cmp(MASK_CMP["authors"])
_keeps_paper = _scalar_cmp(MASK_CMP["paper"])


@njit(cache=True, inline="always")
def if_update(v, i, x, theta):
    """One IF step of neuron ``v[i]`` with input ``x`` (Eqs. 2-3): ``u = v + x``; spike when
    ``u ≥ θ``; reset by subtraction ``v = u − θ``. Returns the spike (bool)."""
    u = v[i] + x
    s = _fires(u, theta)
    v[i] = u - theta if s else u
    return s


@njit(cache=True, inline="always")
def reset_membranes(v, n0, n1, half):
    """``v[n0 : n1] = half``: v(0) = θ/2 at the start (Algorithm 1, line 3) and at the stage
    boundary (line 13); ``half`` is :func:`srp_np.neuron.initial_membrane`."""
    for i in range(n0, n1):
        v[i] = half


@njit(cache=True, inline="always")
def keeps(v, thr, rule):
    """The SRP keep test of one residual membrane (Algorithm 1, line 12): ``v > thr`` for
    :data:`AUTHORS` (thr = ε·θ), ``v ≥ thr`` for :data:`PAPER` (thr = 0)."""
    return _keeps_authors(v, thr) if rule == AUTHORS else _keeps_paper(v, thr)


@njit(cache=True, inline="always")
def reads_mask(t, tau):
    """True at the stage boundary: after τ steps (t = τ, 0-based) the residual membrane is
    read and every membrane reset to θ/2 (Algorithm 1, lines 11-13); never when τ = 0."""
    return (t == tau) & (tau > 0)


@njit(cache=True, inline="always")
def in_stage2(t, tau):
    """True for the T reported steps t ≥ τ."""
    return t >= tau


@njit(cache=True, inline="always")
def masked(t, tau):
    """True where the keep-mask applies to the spikes: stage 2 of a run with τ > 0."""
    return in_stage2(t, tau) & (tau > 0)
