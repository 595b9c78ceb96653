"""The integrate-and-fire neuron and the SRP mask, as small pure functions.

State and parameters are plain data; one step is a pure function, in the
style of Norse's functional neuron modules. These NumPy versions are the
specification: the dense reference simulator uses them directly and the
Numba kernels in :mod:`srp_np.kernels.spikes` (``if_bits``) implement the same arithmetic.

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


class IFState(NamedTuple):
    """Membrane potential of a population of IF neurons."""

    v: np.ndarray


def if_init(shape, theta, dtype=np.float64) -> IFState:
    """Initial state v(0) = θ/2 (Algorithm 1, line 3)."""
    theta = np.asarray(theta, dtype=dtype)
    return IFState(v=np.full(shape, theta / 2, dtype=dtype) if theta.ndim == 0
                   else np.broadcast_to(theta / 2, shape).astype(dtype))


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
    s = u >= theta
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


def srp_keep_mask(v_tau, theta, eps=DEFAULT_MASK_EPS):
    """SRP keep-mask from the residual membrane after τ steps (Algorithm 1, line 12).

    Returns ``v(τ) > ε·θ``. The authors' code uses ε = 1e-3; ε = 0 with ``>=``
    would be the paper's text (``v(τ) ≥ 0``). A neuron with v(τ) ≤ ε·θ is
    silenced: Theorem 1 says a negative residual marks a neuron that fired
    more than its ANN counterpart (Case 1 or 2 of the unevenness error).
    """
    v_tau = np.asarray(v_tau)
    return v_tau > v_tau.dtype.type(eps) * v_tau.dtype.type(theta)
