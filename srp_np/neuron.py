"""The integrate-and-fire neuron and the SRP mask, as small pure functions.

State and parameters are plain data; one step is a pure function, in the
style of Norse's functional neuron modules. These NumPy versions are the
specification: the dense reference simulator uses them directly and the
Numba kernels implement the same arithmetic through :mod:`srp_np.kernels.rules`.

Each rule is written **once**, here, as data that every implementation reads:

* :data:`FIRE_CMP` — the firing comparison ``u ≥ θ`` (Eq. 3 with H(0) = 1);
* :data:`MASK_CMP` — the SRP keep comparison of each mask rule (Algorithm 1, line 12);
* :data:`V0_FRACTION` — v(0) = θ/2, also the membrane at the stage boundary.

The NumPy functions below, the scalar Numba helpers (:mod:`srp_np.kernels.rules`)
and the 16-lane vector intrinsics (:mod:`srp_np.kernels.simd`) all build their
comparisons from these constants: a change here changes every kernel.

IF dynamics with reset by subtraction (Eqs. 2-3 of the paper)::

    u(t) = v(t-1) + x(t)          # integrate the input current
    s(t) = H(u(t) - θ)            # spike when u ≥ θ
    v(t) = u(t) - θ·s(t)          # reset by subtraction
    out(t) = θ·s(t)               # each spike is worth θ

with v(0) = θ/2 (Algorithm 1, line 3).
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

#: Default ε of the SRP keep-mask ``v(τ) > ε·θ`` (the authors' code; the
#: paper's Algorithm 1 writes ``v(τ) ≥ 0``).
DEFAULT_MASK_EPS = 1e-3

#: The IF firing rule (Eq. 3, s = H(u − θ) with H(0) = 1): a neuron spikes when ``u FIRE_CMP θ``.
#: An LLVM ``fcmp`` predicate as llvmlite spells it, and a Python comparison operator.
FIRE_CMP = ">="

#: The SRP keep rules (Algorithm 1, line 12): a neuron keeps its stage-2 spikes when
#: ``v(τ) MASK_CMP[rule] threshold``, the threshold being ε·θ (``authors``, their code) or 0
#: (``paper``, Algorithm 1's ``v(τ) ≥ 0``; ε does not apply); see :func:`keep_threshold`.
MASK_CMP = {"authors": ">", "paper": ">="}

#: The mask rules in the order of their integer codes in the kernels (0: authors, 1: paper).
MASK_RULES = ("authors", "paper")

#: The default mask rule: the authors' code, whose results we match.
DEFAULT_MASK_RULE = "authors"

#: v(0) = V0_FRACTION·θ (Algorithm 1, line 3); membranes return to it at the stage boundary.
V0_FRACTION = 0.5

_NP_CMP = {">=": np.greater_equal, ">": np.greater}


def initial_membrane(theta, dtype=np.float64):
    """v(0) = θ/2 (Algorithm 1, line 3) in ``dtype`` (exact: a product by 1/2)."""
    dt = np.dtype(dtype).type
    return dt(theta) * dt(V0_FRACTION)


def fires(u, theta):
    """The firing rule ``u ≥ θ`` (Eq. 3) on arrays (:data:`FIRE_CMP`)."""
    return _NP_CMP[FIRE_CMP](u, theta)


def check_mask_rule(rule) -> int:
    """The kernels' integer code of a mask rule name (:data:`MASK_RULES`); SrpError for others."""
    from .errors import SrpError

    if rule not in MASK_RULES:
        raise SrpError(f"mask rule must be one of {', '.join(MASK_RULES)}, got {rule!r}")
    return MASK_RULES.index(rule)


def check_schedule(tau, T, eps=DEFAULT_MASK_EPS, rule=DEFAULT_MASK_RULE) -> tuple:
    """Check an SRP schedule (τ ≥ 0 stage-1 steps, T ≥ 1 reported steps, the keep-mask's ε and
    rule); returns ``(int(τ), int(T))``. :class:`~srp_np.errors.SrpError` on the first problem."""
    from .errors import SrpError

    tau, T = int(tau), int(T)
    if tau < 0:
        raise SrpError(f"`tau` must be >= 0, got {tau}")
    if T < 1:
        raise SrpError(f"`T` must be >= 1, got {T}")
    check_mask_eps(eps)
    check_mask_rule(rule)
    return tau, T


def keep_threshold(theta, eps=DEFAULT_MASK_EPS, rule=DEFAULT_MASK_RULE, dtype=np.float64):
    """The threshold the keep comparison uses: ε·θ for ``authors``, 0 for ``paper``."""
    dt = np.dtype(dtype).type
    check_mask_rule(rule)
    return dt(eps) * dt(theta) if rule == "authors" else dt(0)


class IFState(NamedTuple):
    """Membrane potential of a population of IF neurons."""

    v: np.ndarray


def if_init(shape, theta, dtype=np.float64) -> IFState:
    """Initial state v(0) = θ/2 (Algorithm 1, line 3)."""
    theta = np.asarray(theta, dtype=dtype)
    v0 = theta * np.dtype(dtype).type(V0_FRACTION)
    return IFState(v=np.full(shape, v0, dtype=dtype) if theta.ndim == 0 else np.broadcast_to(v0, shape).astype(dtype))


def if_step(x, state: IFState, theta, mask=None):
    """One IF step (Eqs. 2-3): returns ``(out, spikes, new_state)``.

    Parameters
    ----------
    x : ndarray
        Input current x(t) = W·θ^{l-1}·s^{l-1}(t) (+ bias).
    state : IFState
        v(t-1).
    theta : float
        Threshold θ.
    mask : ndarray of bool, optional
        SRP keep-mask; the neuron's dynamics are unchanged but its output
        spike is multiplied by the mask (Algorithm 1, line 17).

    Returns
    -------
    out : ndarray
        θ·s(t)·mask, what the next layer receives.
    spikes : ndarray of bool
        s(t)·mask.
    new_state : IFState
    """
    dtype = state.v.dtype
    theta = dtype.type(theta)
    u = state.v + x.astype(dtype, copy=False)
    s = fires(u, theta)
    v = u - theta * s.astype(dtype)
    if mask is not None:
        s = s & mask
    return theta * s.astype(dtype), s, IFState(v=v)


def check_mask_eps(eps) -> None:
    """Refuse an ε of the keep-mask ``v(τ) > ε·θ`` that is not a finite fraction of θ in [-1, 1]
    (NaN would silence every stage-2 spike; a huge ε overflows float32)."""
    from .errors import SrpError

    if not (np.isfinite(eps) and -1.0 <= eps <= 1.0):
        raise SrpError(f"mask_eps must be a finite number in [-1, 1] (a fraction of θ), got {eps}")


def srp_keep_mask(v_tau, theta, eps=DEFAULT_MASK_EPS, rule=DEFAULT_MASK_RULE):
    """SRP keep-mask from the residual membrane after τ steps (Algorithm 1, line 12).

    ``rule="authors"`` (their code, the default) returns ``v(τ) > ε·θ`` with ε = 1e-3 by
    default; ``rule="paper"`` returns ``v(τ) ≥ 0`` (Algorithm 1 as printed; ε is ignored).
    A silenced neuron's stage-2 spikes are dropped. Theorem 1 (T = L, the ANN fed the SNN's
    own rates): where a > 0, v(T) < 0 exactly when the neuron fired more than the ANN
    (Case 2); where a = 0, every neuron that fired (Case 1) ends with v(T) < 0, but v(T) < 0
    does not imply it fired: most such neurons are silent like the ANN, and silencing them
    keeps their output at a = 0.
    """
    v_tau = np.asarray(v_tau)
    thr = keep_threshold(theta, eps, rule, v_tau.dtype)
    return _NP_CMP[MASK_CMP[rule]](v_tau, thr)


def srp_stage_boundary(state: IFState, theta, eps=DEFAULT_MASK_EPS, rule=DEFAULT_MASK_RULE):
    """The SRP stage boundary after τ steps (Algorithm 1, lines 11-13): read the residual
    membrane, compute the keep-mask (:func:`srp_keep_mask`) and reset every membrane to
    v(0) = θ/2. Returns ``(mask, new_state)``."""
    mask = srp_keep_mask(state.v, theta, eps, rule)
    return mask, if_init(state.v.shape, theta, state.v.dtype)
