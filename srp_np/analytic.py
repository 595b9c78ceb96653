"""Closed forms the simulator is verified against.

* :func:`qcfs` — the quantisation clip-floor-shift activation, Eq. (7).
* :func:`if_spike_count` / :func:`if_rate` — the spike count and average
  postsynaptic potential of an IF neuron (reset by subtraction,
  v(0) = θ/2) driven by a constant input y for T steps, Eq. (8) of the paper
  with the shift v(0) = θ/2: N(T) = clip(⌊(T·y + θ/2)/θ⌋, 0, T) and
  φ(T) = θ·N(T)/T.
* :func:`charge_balance_residual` — Eq. (4)/(5): θ·N(T) + v(T) = v(0) + Σ x(t).
* :func:`theorem1_holds` — the statements of Theorem 1.
"""
from __future__ import annotations

import numpy as np


def qcfs(y, lam, L):
    """QCFS activation, Eq. (7): ``λ · clip(⌊L·y/λ + 1/2⌋ / L, 0, 1)``.

    Parameters
    ----------
    y : array_like
        Pre-activation (the weighted input W·a).
    lam : float
        The trainable threshold λ (θ of the converted IF neuron).
    L : int
        Quantisation steps.
    """
    y = np.asarray(y)
    # same order of operations as the authors' PyTorch module (x/λ, ⌊x·L + 1/2⌋/L,
    # clamp, ·λ), so that float32 results agree bit for bit
    x = y / lam
    x = np.floor(x * L + 0.5) / L
    return np.clip(x, 0.0, 1.0) * lam


def if_spike_count(y, theta, T):
    """Spikes an IF neuron emits in T steps for constant input ``y`` (v(0) = θ/2).

    ``N(T) = clip(⌊(T·y + θ/2) / θ⌋, 0, T)``. Reset by subtraction never
    lets the membrane fall behind, so the count is exact when the neuron fires
    at most once per step (it does as long as y ≤ θ; above that it saturates at T).
    """
    y = np.asarray(y, dtype=np.float64)
    return np.clip(np.floor((T * y + theta / 2.0) / theta), 0, T).astype(np.int64)


def if_rate(y, theta, T):
    """Average postsynaptic potential φ(T) = θ·N(T)/T for constant input (Eq. 8)."""
    return theta * if_spike_count(y, theta, T) / T


def charge_balance_residual(x_seq, spikes, v_T, theta, v0):
    """Return ``θ·ΣN + v(T) − v(0) − Σx`` (zero up to rounding, Eq. 4).

    ``x_seq`` and ``spikes`` have time on axis 0.
    """
    x_seq = np.asarray(x_seq, dtype=np.float64)
    return theta * np.sum(spikes, axis=0) + v_T - v0 - np.sum(x_seq, axis=0)


def theorem1_holds(a, phi, v_T):
    """Check Theorem 1 neuron-wise; returns a boolean array (True where it holds).

    Preconditions (the caller's job): L = T, λ = θ, ANN and SNN see the same
    weighted input y. Then

    (i)  if a = 0: φ > a implies v(T) < 0 (necessity; sufficiency of
         v(T) < 0 for φ ≥ a is trivial since φ ≥ 0);
    (ii) if a > 0: v(T) < 0 ⇔ φ > a.
    """
    a, phi, v_T = (np.asarray(z, dtype=np.float64) for z in (a, phi, v_T))
    tol = 1e-9 * np.maximum(1.0, np.abs(a))
    fires_more = phi > a + tol
    neg = v_T < 0
    case_i = np.where(fires_more, neg, phi >= a - tol)
    case_ii = fires_more == neg
    return np.where(a <= tol, case_i, case_ii)
