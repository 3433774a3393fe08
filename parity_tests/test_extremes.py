"""Numerics at the extremes, backend against reference: long sequences with |Ā| → 1, λ at 0 for ZOH, Δ from 1e-6 to 1e2,
timesteps with long runs of zeros and huge gaps, underflowed eigenvalues, and streaming drift.

At each extreme the reference's views agree (step == scan == FFT where it applies, the expected value), the
backend matches the reference in float64, and backend gradients are finite in both precisions. What the math
gives outright (λ = 0: a running sum; Ā = 0: memoryless; a huge gap forgets the past) and the reference's own
streaming drift are tested in reference_tests/test_extremes.py.

Measured (2-core CPU, this suite's inputs; float32 = torch backend, float64 = reference):
* 100 000 reference `step()` calls vs one scan, LRU with |λ| up to 0.99999: max |step − scan| 3e-15
  (max|y| ≈ 11), about 5 s. This test runs all 100 000.
* torch float32 step loop vs float32 scan over 100 000 steps (LRU, H = 1, N = 4):
  |λ| ≤ 0.9: 2.4e-7; |λ| ∈ [0.99, 0.999]: 2.2e-6; |λ| ∈ [0.9999, 0.99999]: 8.7e-6 (max|y| ≈ 4–5), i.e.
  < 2e-6 relative: streaming adds no drift beyond float32 rounding. Both float32 paths differ from the
  float64 reference by the same amount, which grows with |λ| → 1 and L (LRU, rel. to max|y|):
  |λ| = 0.999: 2e-5 (L = 1024), 5e-5 (65 536); 0.9999: 1e-5, 1.7e-4 (8192), 5.5e-4 (65 536);
  0.99999: 3e-6, 1e-4 (8192), 2e-3 (65 536). About 60 % of it is the float32 rounding of the
  parameters themselves (1 − |λ| = 1e-5 is held to ~0.6 %, the phase to 6e-8·θ per step), the rest the
  complex64 exp. S5 at the same |Ā| stays below 4e-7 (its state term is scaled by γ̄ ≈ Δ).
  The float32 step loop (~190 µs/step) is tested here over 10 000 steps.
"""
import numpy as np
import pytest

from reference import LRU, S4D, S5
from parity_tests.backend import check
from parity_tests.helpers import check_views, gappy_timesteps, inputs, with_params
from parity_tests.strategies import CONTINUOUS_METHODS, layer_class, suite_layers
from parity_tests.tolerances import assert_close

LONG_L = 65_536
FLOAT32_STREAM_STEPS = 10_000
STEP_SIZES = (1e-6, 1e-3, 1.0, 1e2)


def check_backend(backend, layer, x, tau, expected, what):
    """Backend float64 == reference; backend gradients (input and every parameter) finite in both precisions."""
    name = type(layer).__name__
    vjp, parameter_vjp = backend.require("vjp", "parameter_vjp")
    cotangent = np.random.default_rng(0).normal(size=expected.shape)
    for dtype in ("float64", "float32"):
        module = backend.build(layer, dtype)
        x_b, tau_b, g_b = backend.to(x, dtype), backend.to(tau, dtype), backend.to(cotangent, dtype)
        call = lambda m, x_in=x_b: m(x_in, integration_timesteps=tau_b)                  # noqa: E731
        y = backend.to_numpy(call(module))
        if dtype == "float64":
            check(y, expected, dtype=dtype, row=backend.row(dtype), subject=name, prop=f"extremes: {what}")
        assert np.isfinite(y).all(), f"{name}, {what}: backend {dtype} output not finite"
        (grad_x,) = vjp(lambda x_in: call(module, x_in), [x_b], g_b)
        assert np.isfinite(backend.to_numpy(grad_x)).all(), f"{name}, {what}: backend {dtype} input gradient not finite"
        for pname, grad in parameter_vjp(module, call, g_b).items():
            assert np.isfinite(backend.to_numpy(grad)).all(), f"{name}, {what}: backend {dtype} gradient of {pname} not finite"


def transition_modulus(layer):
    """|Ā| per state of a time-invariant layer (its discrete system's first entry). Returns (N,) or (H, N)."""
    return np.abs(layer.discrete_system()[0])


# ----------------------------------------------------------------------------- long sequences, |Ā| → 1
@pytest.mark.parametrize("make", [lambda: LRU(2, 2, r_min=0.99999, r_max=0.99999, seed=0),
                                  lambda: S5(2, 2, dt_min=2e-5, dt_max=2e-5, seed=0)], ids=["LRU", "S5"])
def test_long_sequence_with_slow_decay(backend, make):
    """L = 65 536 with |Ā| = 0.99999: backend float64 matches the reference; float32 input gradient finite."""
    layer = make()
    assert_close(transition_modulus(layer), np.full(2, 0.99999), what="the premise |Ā| = 0.99999")
    x = inputs(1, LONG_L, 2)
    y = layer(x, method="numba")
    vjp = backend.require("vjp")[0]
    module = backend.build(layer, "float64")
    check(backend.to_numpy(module(backend.to(x, "float64"))), y, dtype="float64", row=backend.row("float64"),
          subject=type(layer).__name__, prop=f"extremes: L={LONG_L}, |Ā|=0.99999")
    module32 = backend.build(layer, "float32")
    (grad,) = vjp(module32, [backend.to(x, "float32")], backend.to(np.ones_like(y), "float32"))
    assert np.isfinite(backend.to_numpy(grad)).all(), f"{type(layer).__name__}: float32 input gradient not finite"


# ----------------------------------------------------------------------------- λ at or near 0 (ZOH)
NEAR_ZERO = np.array([0.0, 1e-300, -1e-12 + 1e-12j, -1e-8, 1e-6j])               # λ per state channel


@pytest.mark.parametrize("method", CONTINUOUS_METHODS)
def test_lambda_at_and_near_zero(backend, method):
    layer = with_params(S5(2, len(NEAR_ZERO), discretization=method, seed=0),
                        Lambda_re=NEAR_ZERO.real, Lambda_im=NEAR_ZERO.imag, log_dt=np.log(0.1))
    x = inputs(2, 40, 2)
    y = check_views(layer, x, what=f"λ near 0, {method}")
    check_backend(backend, layer, x, None, y, f"λ near 0, {method}")
    tau = np.abs(inputs(2, 40, 1, seed=1)[..., 0])                                  # (b, L)
    tau[:, ::3] = 0.0
    check_backend(backend, layer, x, tau, check_views(layer, x, tau, what=f"λ near 0 with τ, {method}"),
                  f"λ near 0 with τ, {method}")


# ----------------------------------------------------------------------------- Δ from 1e-6 to 1e2
@pytest.mark.parametrize("make", [S5, S4D], ids=["S5", "S4D"])
@pytest.mark.parametrize("method", CONTINUOUS_METHODS)
@pytest.mark.parametrize("dt", STEP_SIZES)
def test_extreme_step_sizes(backend, make, dt, method):
    layer = make(2, 3, discretization=method, dt_min=dt, dt_max=dt, seed=1)
    x = inputs(2, 30, 2)
    y = check_views(layer, x, what=f"Δ={dt}, {method}")
    check_backend(backend, layer, x, None, y, f"Δ={dt}, {method}")


# ----------------------------------------------------------------------------- τ: zero runs and huge gaps
def _gappy_config(name):
    config = {"d_model": 2, "seed": 2, "d_state": 4 if name == "Centaurus" else 3}
    if name == "Centaurus":
        config["sub_state_dim"] = 2
    return config


GAPPY_LAYERS = [n for n in ("LRU", "S5", "S4D", "Centaurus", "LSSL") if n in suite_layers()]


@pytest.mark.parametrize("name", GAPPY_LAYERS)
def test_timesteps_with_zero_runs_and_huge_gaps(backend, name):
    layer = layer_class(name)(**_gappy_config(name))
    x, tau = inputs(2, 200, 2), gappy_timesteps(2, 200)
    check_backend(backend, layer, x, tau, check_views(layer, x, tau, what=f"{name} with gappy τ"), "gappy τ")


# ----------------------------------------------------------------------------- underflowed λ
# Parameters making Ā = 0 exactly in float64 and float32 while every parameter and λ stay finite in both
# (a λ that is itself ±inf, e.g. exp(log_A_re = 690) in float32, is out of scope: inf·0 = NaN in complex products).
UNDERFLOWED = {
    "LRU": lambda: with_params(LRU(2, 3, seed=4), nu_log=np.log(1e3)),                       # |λ| = e^-1000
    "S5": lambda: with_params(S5(2, 3, seed=4), Lambda_re=-1e30),                            # λΔ <= −1e27
    "S4D": lambda: with_params(S4D(2, 3, seed=4), log_A_re=80.0),                            # λ = −e^80 = −5.5e34
}


@pytest.mark.parametrize("name", sorted(UNDERFLOWED))
def test_underflowed_lambda(backend, name):
    """Ā = 0: backend parity and finite gradients, without and with τ (zeros included)."""
    layer = UNDERFLOWED[name]()
    assert (transition_modulus(layer) == 0).all()                                 # the premise
    x = inputs(2, 25, 2)
    check_backend(backend, layer, x, None, check_views(layer, x, what=f"{name} underflowed"), "underflowed λ")
    tau = np.ones((2, 25))                                                          # (b, L)
    tau[:, 5:12] = 0.0
    check_backend(backend, layer, x, tau, check_views(layer, x, tau, what=f"{name} underflowed, τ"), "underflowed λ, τ")


# ----------------------------------------------------------------------------- streaming drift
def test_streaming_drift_float32(backend):
    """The backend's float32 step loop stays within the float32 tolerance of its float32 scan and of the
    float64 reference over 10 000 steps (|λ| up to 0.999; measured drift in the module docstring)."""
    layer = LRU(1, 4, r_min=0.9, r_max=0.999, seed=5)
    module = backend.build(layer, "float32")
    x = inputs(1, FLOAT32_STREAM_STEPS, 1)
    x_b = backend.to(x, "float32")
    y_scan = backend.to_numpy(module(x_b))[0, :, 0]                                 # (L,)
    state, y_step = module.init_state(1), np.empty(FLOAT32_STREAM_STEPS)
    for t in range(FLOAT32_STREAM_STEPS):
        y_t, state = module.step(x_b[:, t], state)
        y_step[t] = backend.to_numpy(y_t)[0, 0]
    check(y_step, y_scan, dtype="float32", subject="LRU", prop="float32 steps vs float32 scan")
    check(y_step, layer(x, method="numba")[0, :, 0], dtype="float32", subject="LRU", prop="float32 steps vs reference")
