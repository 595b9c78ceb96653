"""Property-based tests of the IF neuron against the paper's closed forms."""
import math
from fractions import Fraction

import numpy as np
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from srp_np.analytic import charge_balance_residual, if_rate, if_spike_count, qcfs, theorem1_holds
from srp_np.neuron import if_init, if_step, srp_keep_mask

# Dyadic rationals (k / 2^m) make every IF update exact in float64, so the
# closed forms must hold *exactly*, boundaries included.
dyadic = st.integers(-512, 1024).map(lambda k: k / 128.0)
dyadic_theta = st.integers(1, 64).map(lambda k: k / 16.0)
steps = st.integers(1, 64)


def run_if(xs, theta, mask=None):
    """Step one population through the inputs xs (time on axis 0)."""
    xs = np.asarray(xs, dtype=np.float64)
    state = if_init(xs.shape[1:], theta)
    spikes = []
    for x in xs:
        _, s, state = if_step(x, state, theta, mask)
        spikes.append(s)
    return np.array(spikes), state.v


@settings(max_examples=300, deadline=None)
@given(y=dyadic, theta=dyadic_theta, T=steps)
def test_constant_input_spike_count_exact(y, theta, T):
    """Eq. (8): N(T) = clip(⌊(T·y + θ/2)/θ⌋, 0, T) for a constant input."""
    spikes, _ = run_if(np.full((T, 1), y), theta)
    assert spikes.sum() == if_spike_count(y, theta, T)


@settings(max_examples=300, deadline=None)
@given(y=st.floats(-10, 10, allow_nan=False), theta=st.floats(0.05, 8.0), T=steps)
def test_constant_input_spike_count_any_float(y, theta, T):
    """The same for arbitrary floats, away from the measure-zero rounding boundaries."""
    q = (T * y + theta / 2) / theta
    assume(abs(q - round(q)) > 1e-9 * max(1.0, abs(q)))
    spikes, _ = run_if(np.full((T, 1), y), theta)
    assert spikes.sum() == if_spike_count(y, theta, T)


@settings(max_examples=200, deadline=None)
@given(xs=st.lists(st.floats(-5, 5, allow_nan=False), min_size=1, max_size=64), theta=st.floats(0.05, 4.0))
def test_charge_balance_any_sequence(xs, theta):
    """Eq. (4): θ·N(T) + v(T) = v(0) + Σ x(t) for any input sequence."""
    spikes, v = run_if(np.asarray(xs)[:, None], theta)
    r = charge_balance_residual(np.asarray(xs)[:, None], spikes, v, theta, theta / 2)
    assert abs(r[0]) <= 1e-9 * (1 + np.abs(xs).sum())


def qcfs_level_exact(y, theta, L):
    """k of a = λ·k/L in Eq. (7), in exact rational arithmetic."""
    return min(max(math.floor(Fraction(y) * L / Fraction(theta) + Fraction(1, 2)), 0), L)


@settings(max_examples=300, deadline=None)
@given(y=dyadic, theta=dyadic_theta, T=steps)
@example(y=0.21875, theta=3.4375, T=55)  # y·L/λ + 1/2 = 4 exactly; float y/λ rounds below
def test_even_input_with_L_equal_T_matches_qcfs(y, theta, T):
    """With L = T and λ = θ, an evenly driven IF layer outputs exactly the QCFS activation."""
    spikes, _ = run_if(np.full((T, 1), y), theta)
    n = spikes.sum()
    assert n == qcfs_level_exact(y, theta, T)          # exact, boundaries included
    assert theta * n / T == if_rate(y, theta, T)
    # the float QCFS agrees except where y·L/λ + 1/2 is an integer and y/λ rounds
    q = Fraction(y) * T / Fraction(theta) + Fraction(1, 2)
    if q.denominator != 1:
        assert np.isclose(theta * n / T, qcfs(y, theta, T), rtol=1e-12, atol=0)


@settings(max_examples=300, deadline=None)
@given(xs=st.lists(dyadic, min_size=1, max_size=32), theta=dyadic_theta)
def test_theorem1_on_uneven_inputs(xs, theta):
    """Theorem 1 for any (uneven) input sequence with mean y, L = T, λ = θ."""
    T = len(xs)
    spikes, v = run_if(np.asarray(xs)[:, None], theta)
    phi = theta * spikes.sum() / T
    # the ANN level k of a = θ·k/T (Eq. 7 with L = T), in exact rational arithmetic
    k = qcfs_level_exact(sum(Fraction(x) for x in xs) / T, theta, T)
    a = theta * k / T
    assert theorem1_holds(a, phi, v[0])
    # The statements themselves, spelled out on integer levels (a = θ·k/T, φ = θ·N/T):
    n = spikes.sum()
    if k == 0 and n > 0:
        assert v[0] < 0                      # (i) necessity
    if k > 0:
        assert (v[0] < 0) == (n > k)          # (ii)


def test_theorem1_holds_rejects_violations():
    assert not theorem1_holds(0.0, 0.5, 0.2)   # a = 0, φ > a, but v(T) ≥ 0
    assert not theorem1_holds(0.5, 0.75, 0.1)  # a > 0, φ > a, v(T) ≥ 0
    assert not theorem1_holds(0.5, 0.5, -0.1)  # a > 0, v(T) < 0 but φ = a


def test_fig1_unevenness_example():
    """Fig. 1(b)-(d): W = [2, -1], both inputs fire 3 of 6 steps (φ = 0.5), θ = 1, T = 6.

    The ANN gives a = ReLU(2·0.5 - 0.5) = 0.5. Even arrival gives φ = 0.5;
    the positive input arriving first gives more spikes, the negative first fewer.
    """
    W = np.array([2.0, -1.0])
    orders = {
        "ideal": ([1, 0, 1, 0, 1, 0], [1, 0, 1, 0, 1, 0]),
        "positive first": ([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]),
        "negative first": ([0, 0, 0, 1, 1, 1], [1, 1, 1, 0, 0, 0]),
    }
    phis = {}
    for name, (s1, s2) in orders.items():
        pre = np.stack([s1, s2], axis=1).astype(float)
        assert np.all(pre.mean(axis=0) == 0.5)
        spikes, _ = run_if((pre @ W)[:, None], 1.0)
        phis[name] = spikes.sum() / 6
    assert phis["ideal"] == 0.5
    assert phis["positive first"] > 0.5
    assert phis["negative first"] < 0.5
    assert phis == {"ideal": 0.5, "positive first": 4 / 6, "negative first": 2 / 6}


@settings(max_examples=100, deadline=None)
@given(v=st.lists(st.floats(-4, 4, allow_nan=False), min_size=1, max_size=20), theta=st.floats(0.1, 4.0),
       eps=st.sampled_from([0.0, 1e-3, 0.1]))
def test_srp_mask_definition(v, theta, eps):
    v = np.asarray(v)
    np.testing.assert_array_equal(srp_keep_mask(v, theta, eps), v > eps * theta)


def test_masked_neuron_keeps_its_dynamics():
    """The SRP mask only silences the output; the membrane still integrates and resets."""
    xs = np.full((5, 2), 0.7)
    mask = np.array([True, False])
    spikes, v = run_if(xs, 1.0, mask)
    spikes_free, v_free = run_if(xs, 1.0)
    assert spikes[:, 1].sum() == 0 and spikes[:, 0].sum() == spikes_free[:, 0].sum()
    np.testing.assert_array_equal(v, v_free)
