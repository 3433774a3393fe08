"""Reliability of the reference where real use goes beyond the conformance suite: valid but extreme
timesteps, token ids of every integer dtype, configs that must stay saveable, inputs that must be
refused (bool timesteps and states, NaN states) and padding that may hold anything.

Each test pins a failure that was reproduced before it was fixed:
* S5/S4D zoh with τ = 1e-310 returned NaN (φ1 divided by a subnormal complex z); LRU and Centaurus
  returned NaN at τ near the float maximum (e^z with Re z = −inf, Im z = ±inf); LRU with an underflowed
  λ (Re log λ = −inf) and τ = 0 returned NaN (−inf·0);
* NumPy integers inside `lrnn_params` made `save()` fail after training ("int64 is not JSON serializable");
* bool `integration_timesteps` / `initial_state` were used as 0/1; a NaN `initial_state` flowed into the
  output; the Classifier refused NaN at padded positions and had no `check_finite=False`.
"""
import os
import tempfile

import numpy as np
import pytest

from reference import LRU, S4D, S5, Centaurus, Classifier
from reference.discretize import METHODS, discretize, phi1

# every finite τ >= 0 the validator accepts: zero, subnormal, tiny, ordinary, huge, the largest float
TINY_TAUS = (5e-324, 1e-310, 1e-300, 1e-20)
HUGE_TAUS = (1e20, 1e300, 1.7e308)
CONTINUOUS = tuple(m for m in METHODS if m != "none")
# exp_euler's input factor is Δ_A itself (SPEC §2): it grows with τ by definition, so a huge gap
# multiplies the input by up to 1e308 — finite outputs at huge τ are promised for the bounded methods.
BOUNDED_AT_HUGE_TAU = tuple(m for m in CONTINUOUS if m != "exp_euler")


def extreme_layers(methods):
    """(id, layer) for every layer with a continuous λ and each of `methods`, plus LRU."""
    cases = [("LRU", LRU(3, 4, seed=0))]
    for method in methods:
        cases += [(f"S5-{method}", S5(3, 4, discretization=method, seed=0)),
                  (f"S5-conj-{method}", S5(3, 4, discretization=method, conj_sym=True, seed=1)),
                  (f"S4D-{method}", S4D(3, 4, discretization=method, seed=0)),
                  (f"Centaurus-{method}", Centaurus(3, 4, sub_state_dim=2, discretization=method, seed=0))]
    return cases


def constant_tau(value, batch=2, L=5):
    tau = np.full((batch, L), value)                                             # (b, L)
    tau[:, 0] = 1.0                                                              # one ordinary gap first
    return tau


X = np.random.default_rng(0).normal(size=(2, 5, 3))                             # (b, L, H)


# ----------------------------------------------------------------------------- tiny and huge τ
@pytest.mark.parametrize("tau", TINY_TAUS)
@pytest.mark.parametrize("name, layer", extreme_layers(CONTINUOUS), ids=lambda v: v if isinstance(v, str) else "")
def test_tiny_timesteps_give_finite_outputs_close_to_tau_zero(name, layer, tau):
    """A gap of 1e-310 is a gap of (almost) nothing: finite, and equal to τ = 0 within float64 rounding."""
    with np.errstate(over="raise", invalid="raise"):                             # no overflow, no NaN on the way
        y = layer(X, integration_timesteps=constant_tau(tau))
    y0 = layer(X, integration_timesteps=constant_tau(0.0))
    assert np.isfinite(y).all(), name
    np.testing.assert_allclose(y, y0, rtol=1e-9, atol=1e-12 * np.abs(y0).max() + tau * 1e6, err_msg=name)


@pytest.mark.parametrize("tau", HUGE_TAUS)
@pytest.mark.parametrize("name, layer", extreme_layers(BOUNDED_AT_HUGE_TAU),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_huge_timesteps_give_finite_outputs(name, layer, tau):
    """A gap near the float maximum forgets the past (|Ā| → 0, or → 1 in modulus −1 for bilinear) — never NaN."""
    y = layer(X, integration_timesteps=constant_tau(tau))
    assert np.isfinite(y).all(), f"{name} at τ = {tau}"


def test_huge_timestep_forgets_the_past_exactly_for_zoh():
    """zoh at τ = 1e300 with Re λ < 0: Ā = 0 and γ̄ = −1/λ (the limit of (e^{λΔ_A} − 1)/λ)."""
    Lambda = np.array([-0.5 + 2j, -1.0, -3.0 - 1j])
    Lambda_bar, gamma_bar = discretize(Lambda, 0.1, "zoh", np.full((1, 1), 1e300))
    assert np.array_equal(Lambda_bar[0, 0], np.zeros(3))
    np.testing.assert_allclose(gamma_bar[0, 0], -1 / Lambda, rtol=1e-15)


def test_bilinear_at_huge_step_tends_to_minus_one():
    Lambda = np.array([-0.5 + 2j, -1.0 + 0j])
    Lambda_bar, gamma_bar = discretize(Lambda, 1.0, "bilinear", np.full((1, 1), 1.7e308))
    np.testing.assert_allclose(Lambda_bar[0, 0], [-1, -1], atol=1e-15)
    np.testing.assert_allclose(gamma_bar[0, 0], -2 / Lambda, rtol=1e-15)


def test_bilinear_large_step_branch_is_the_same_function():
    """The Δ_A > 1 branch divides the fractions through by Δ_A: same values on both sides of Δ_A = 1."""
    Lambda = np.array([-0.3 + 1j, -2.0 + 0j])
    tau = np.array([[0.999999, 1.000001, 3.0, 40.0]])
    Lambda_bar, gamma_bar = discretize(Lambda, 1.0, "bilinear", tau)
    dt_A = tau[0][:, None]
    np.testing.assert_allclose(Lambda_bar[0], (1 + Lambda * dt_A / 2) / (1 - Lambda * dt_A / 2), rtol=1e-14,
                               atol=1e-16)
    np.testing.assert_allclose(gamma_bar[0], dt_A / (1 - Lambda * dt_A / 2), rtol=1e-14)


@pytest.mark.parametrize("z", [5e-324, 1e-310 + 1e-310j, -1e-300j, 1e-9 - 1e-9j, 1.4e-8])
def test_phi1_of_tiny_arguments_is_its_series(z):
    """φ1 of a subnormal or tiny z is 1 + z/2 to float64 rounding (it divided by z before)."""
    assert np.isfinite(phi1(np.array([z]))).all()
    np.testing.assert_allclose(phi1(np.array([z])), 1 + np.array([z]) / 2, rtol=1e-16, atol=0)


def test_underflowed_lru_eigenvalue_with_zero_gap_keeps_the_state():
    """|λ| = exp(−exp(800)) underflows (Re log λ = −inf); τ = 0 still means Ā = λ⁰ = 1 (0⁰ = 1)."""
    layer = LRU(3, 4, seed=0)
    params = dict(layer.params, nu_log=np.full(4, 800.0))
    layer = LRU.from_params(layer.config, params)
    tau = np.zeros((2, 5))
    with np.errstate(over="ignore"):                                             # exp(800) = inf, on purpose
        y = layer(X, integration_timesteps=tau)
        y1 = layer(X, integration_timesteps=np.ones((2, 5)))                     # τ = 1: λ = 0, no memory
    assert np.isfinite(y).all()
    assert np.isfinite(y1).all()
    with np.errstate(over="ignore"):
        first = layer(X[:, :1], integration_timesteps=tau[:, :1])
    np.testing.assert_allclose(first, y[:, :1], rtol=1e-15)


# ----------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_token_ids_of_every_integer_dtype(dtype):
    """The same ids in every integer dtype give the same logits; uint8 id 255 with vocab_size 256 is valid."""
    model = Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=256, padding_idx=None, seed=0)
    top = 127 if dtype == "int8" else 255
    ids = np.array([[1, top, 3], [0, 2, 100]])
    np.testing.assert_array_equal(model(ids.astype(dtype)), model(ids))


def test_negative_int8_token_id_is_refused_naming_it():
    model = Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=10, seed=0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=10\); got -3 at index \(0, 1\)"):
        model(np.array([[1, -3]], np.int8))


# ----------------------------------------------------------------------------- configs stay saveable
def test_numpy_integers_in_lrnn_params_are_saved_as_python_numbers():
    model = Classifier(np.int64(3), np.int64(2), d_model=np.int64(4), d_state=np.int32(4), n_layers=np.int64(2),
                       lrnn_cls="S5", lrnn_params={"blocks": np.int64(2), "dt_min": np.float32(1e-3),
                                                   "conj_sym": np.bool_(False)}, seed=np.int64(0))
    kinds = {type(v) for v in model.config["lrnn_params"].values()}
    assert kinds <= {int, float, bool}, kinds
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        model.save(path)
        loaded = Classifier.load(path)
    x = np.random.default_rng(1).normal(size=(2, 4, 3))
    np.testing.assert_array_equal(loaded(x), model(x))


def test_per_layer_lrnn_params_with_numpy_values_are_plain():
    model = Classifier(3, 2, d_model=4, d_state=4, n_layers=2, lrnn_cls=["S5", "LRU"],
                       lrnn_params=[{"blocks": np.int16(1)}, {"r_max": np.float64(0.9)}], seed=0)
    assert type(model.config["lrnn_params"][0]["blocks"]) is int
    assert type(model.config["lrnn_params"][1]["r_max"]) is float


# ----------------------------------------------------------------------------- refused inputs
def test_bool_timesteps_are_refused():
    layer = S5(3, 4, seed=0)
    with pytest.raises(TypeError, match="integration_timesteps must be a real numeric array; got dtype bool"):
        layer(X, integration_timesteps=np.ones((2, 5), bool))


def test_bool_initial_state_is_refused():
    layer = LRU(3, 4, seed=0)
    with pytest.raises(TypeError, match=r"initial_state must be a numeric array \(not bool\); got dtype bool"):
        layer(X, initial_state=np.zeros((2, 4), bool))


@pytest.mark.parametrize("layer", [LRU(3, 4, seed=0), S5(3, 4, seed=0), S4D(3, 2, seed=0)],
                         ids=lambda layer: type(layer).__name__)
def test_nan_initial_state_is_refused_like_x(layer):
    h0 = layer.init_state(2)
    h0[1].flat[1] = np.nan
    with pytest.raises(ValueError, match=r"initial_state must be finite; got \(?nan"):
        layer(X, initial_state=h0)
    assert np.isnan(layer(X, initial_state=h0, check_finite=False)).any()     # skipped on request


# ----------------------------------------------------------------------------- padding holds anything
def padded_with_nan():
    x = np.random.default_rng(2).normal(size=(2, 6, 3))                          # (b, L, input_dim)
    lengths = np.array([6, 3])
    x_nan = x.copy()
    x_nan[1, 3:] = np.nan
    return x, x_nan, lengths


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_ignores_nan_in_padded_positions(pooling):
    x, x_nan, lengths = padded_with_nan()
    model = Classifier(3, 2, d_model=4, d_state=2, n_layers=2, lrnn_cls=["S5", "LRU"], pooling=pooling,
                       intermediate_pooling=["mean", "none"], seed=0)
    np.testing.assert_array_equal(model(x_nan, lengths), model(x, lengths))


def test_classifier_refuses_nan_at_valid_positions_unless_told_not_to_check():
    x, _, lengths = padded_with_nan()
    x[0, 2, 1] = np.nan
    model = Classifier(3, 2, d_model=4, d_state=2, n_layers=1, lrnn_cls="LRU", seed=0)
    with pytest.raises(ValueError, match=r"x must be finite; got nan at index \(0, 2, 1\)"):
        model(x, lengths)
    assert np.isnan(model(x, lengths, check_finite=False)[0]).all()
