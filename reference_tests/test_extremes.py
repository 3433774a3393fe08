"""Numerics at the extremes, the reference alone: where the math gives the answer outright (λ = 0 under ZOH is a
running sum; Ā = 0 is memoryless; a gap of 1e12 forgets the past), every view agrees at L = 65 536 with
|Ā| = 0.99999, and 100 000 step() calls equal one scan. The backend side is parity_tests/test_extremes.py.
"""
import numpy as np
import pytest

from reference import LRU, S4D, S5
from parity_tests.helpers import check_views, gappy_timesteps, inputs, with_params
from parity_tests.tolerances import assert_close

LONG_L = 65_536
STREAM_STEPS = 100_000


@pytest.mark.parametrize("make", [lambda: LRU(2, 2, r_min=0.99999, r_max=0.99999, seed=0),
                                  lambda: S5(2, 2, dt_min=2e-5, dt_max=2e-5, seed=0)], ids=["LRU", "S5"])
def test_long_sequence_with_slow_decay_every_view_agrees(make):
    layer = make()
    x = inputs(1, LONG_L, 2)
    y = layer(x, method="numba")
    assert np.isfinite(y).all()
    for method in ("sequential", "chunked", "fft"):
        assert_close(layer(x, method=method), y, what=f"L={LONG_L}: {method} vs numba")


def test_zoh_at_lambda_zero_is_a_running_sum():
    """λ = 0: Ā = 1, γ̄ = Δ, so y_t = Δ·Σ_{s<=t} u_s (B = C = 1, D = 0) — no 0/0 anywhere."""
    dt = 0.3
    layer = with_params(S5(1, 1, seed=0), Lambda_re=0.0, Lambda_im=0.0, B_re=1.0, B_im=0.0, C_re=1.0, C_im=0.0,
                        D=0.0, log_dt=np.log(dt))
    x = inputs(2, 50, 1)
    assert_close(check_views(layer, x, what="λ = 0"), dt * np.cumsum(x, axis=1), what="running sum")


@pytest.mark.parametrize("method", ("zoh", "exp_euler", "async", "dirac"))
def test_a_huge_gap_forgets_the_past(method):
    """exp(λ·τΔ) = 0 after a gap of 1e12 (Re λ < 0): outputs from the gap on equal a fresh run from there."""
    layer = S5(2, 3, discretization=method, seed=3)
    x, tau = inputs(2, 200, 2), gappy_timesteps(2, 200)
    y = layer(x, integration_timesteps=tau)
    assert_close(layer(x[:, 150:], integration_timesteps=tau[:, 150:]), y[:, 150:], what=f"{method}: past forgotten")


UNDERFLOWED = {
    "LRU": lambda: with_params(LRU(2, 3, seed=4), nu_log=np.log(1e3)),                       # |λ| = e^-1000
    "S5": lambda: with_params(S5(2, 3, seed=4), Lambda_re=-1e30),                            # λΔ <= −1e27
    "S4D": lambda: with_params(S4D(2, 3, seed=4), log_A_re=80.0),                            # λ = −e^80 = −5.5e34
}


@pytest.mark.parametrize("name", sorted(UNDERFLOWED))
def test_underflowed_lambda_is_memoryless(name):
    """Ā = 0: every view finite, and each output depends on its own input only."""
    layer = UNDERFLOWED[name]()
    x = inputs(2, 25, 2)
    y = check_views(layer, x, what=f"{name} underflowed")
    one_by_one = layer(x.reshape(-1, 1, 2)).reshape(x.shape)                       # (b·L, 1, H) → (b, L, H)
    assert_close(y, one_by_one, what=f"{name}: Ā = 0 is memoryless")


def test_streaming_drift_float64():
    """100 000 step() calls == one scan in float64 (LRU, |λ| from 0.9 to 0.99999)."""
    layer = LRU(1, 4, r_min=0.9, r_max=0.99999, seed=5)
    x = inputs(1, STREAM_STEPS, 1)
    y_scan = layer(x, method="numba")[0, :, 0]                                     # (L,)
    state, y_step = layer.init_state(1), np.empty(STREAM_STEPS)
    for t in range(STREAM_STEPS):
        y_t, state = layer.step(x[:, t], state)
        y_step[t] = y_t[0, 0]
    assert_close(y_step, y_scan, what=f"{STREAM_STEPS} steps vs scan")
