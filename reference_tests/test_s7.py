"""The reference S7's own invariants (SPEC §4.10, §10a): the authors' golden outputs, the stablessm Decision
(ours differs from the upstream map and equals the SPEC formula), the LTI reduction to S5, conj_sym half system ==
explicit full system, stability of Ā_t, events, views, argument errors.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity_tests.golden_rglru_s7 import S7_FILES, S7_UPSTREAM_STABLESSM, load, s7_case, upstream_stablessm_Lambda
from parity_tests.strategies import CONTINUOUS_METHODS, rng_from, seeds, sequence_lengths, timesteps
from parity_tests.tolerances import allowed_error, assert_close
from reference.layers.s5 import S5
from reference.layers.s7 import DT_INIT_FLOOR, S7, stablessm, stablessm_inverse
from reference.scan import SCAN_METHODS

# SPEC §4.10 / §10a regression values.
STABLESSM_W_INIT = 1.224744871                  # sqrt(1.5): Re Λ₀ = −½ under a = 1, b = ½
UPSTREAM_MAP_AT_HIPPO = -0.506801467 - 1.144016020j   # the authors' forward map at init for Λ₀ = −½ + 2i
DIGITS = 9


def run_steps(layer, x, tau=None):
    state, outputs = layer.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1), state


# ----------------------------------------------------------------------------- golden vectors (the authors' code)
@pytest.mark.parametrize("name", sorted(S7_FILES))
@pytest.mark.parametrize("method", SCAN_METHODS)
def test_golden_outputs(name, method):
    layer, x, tau, y = s7_case(name)
    assert_close(layer(x, integration_timesteps=tau, method=method), y, "golden", what=f"{name}, method={method}")


@pytest.mark.parametrize("name", sorted(S7_FILES))
def test_golden_outputs_step_by_step(name):
    layer, x, tau, y = s7_case(name)
    assert_close(run_steps(layer, x, tau)[0], y, "golden", what=f"{name} repeated step()")


# ----------------------------------------------------------------------------- reparam="stablessm" (Decision)
def test_golden_stablessm_file_pins_the_upstream_map():
    """The file's y is reproduced by a plain layer whose Λ is the authors' complex map of the stored (w_re, w_im)."""
    name, arguments = S7_UPSTREAM_STABLESSM
    data = load(name)
    Lambda = upstream_stablessm_Lambda(data["Lambda_re"], data["Lambda_im"])
    layer, x, tau, y = s7_case(name, arguments)
    layer.params["Lambda_re"], layer.params["Lambda_im"] = Lambda.real, Lambda.imag
    assert_close(layer(x, integration_timesteps=tau), y, "golden", what="upstream stablessm map")


def test_our_stablessm_differs_from_upstream_and_equals_the_spec_formula():
    name, arguments = S7_UPSTREAM_STABLESSM
    ours, x, tau, y = s7_case(name, arguments, reparam="stablessm")
    y_ours = ours(x, integration_timesteps=tau)
    assert (np.abs(y_ours - y) > allowed_error(y, "golden")).any(), "ours must not reproduce the upstream map"
    plain, _, _, _ = s7_case(name, arguments)
    plain.params["Lambda_re"] = -1.0 / (ours.params["Lambda_re"] ** 2 + 0.5)           # SPEC: −1/(a w² + b)
    assert_close(y_ours, plain(x, integration_timesteps=tau), what="Re Λ = −1/(w² + ½), Im Λ = Lambda_im")


def test_stablessm_regression_values():
    assert np.round(stablessm_inverse(np.array(-0.5)), DIGITS) == STABLESSM_W_INIT
    hippo = -0.5 + 2j
    w_upstream = np.sqrt(-1 / hippo - 0.5)                                            # the authors' (complex) init
    assert np.round(upstream_stablessm_Lambda(w_upstream.real, w_upstream.imag), DIGITS) == UPSTREAM_MAP_AT_HIPPO
    w = np.linspace(-1e3, 1e3, 20001)
    assert ((stablessm(w) >= -2.0) & (stablessm(w) < 0)).all()
    layer, hippo = S7(3, 8, reparam="stablessm", seed=1), S7(3, 8, seed=1)
    assert_close(stablessm(layer.params["Lambda_re"]), hippo.params["Lambda_re"], what="Λ at init is HiPPO-N")


# ----------------------------------------------------------------------------- LTI reduction: x_proj.weight = 0 ⇒ S5
def s5_from_frozen_s7(layer):
    """The S5 layer that S7 with x_proj.weight = 0 reduces to (SPEC §4.10): Δ, B, C from x_proj.bias."""
    p, N, H, r = layer.params, layer.d_state, layer.d_model, layer.dt_rank
    bias = p["x_proj.bias"]
    s_bar = bias[:r]
    B = bias[r:r + 2 * N * H].reshape(N, H, 2)                                         # (N, H, 2)
    C = bias[r + 2 * N * H:].reshape(H, N, 2)                                          # (H, N, 2)
    dt = layer.config["step_rescale"] * np.logaddexp(0.0, p["dt_proj.weight"] @ s_bar + p["dt_proj.bias"])   # (N,)
    Lambda = layer.Lambda()                                                            # (N,)
    config = {k: layer.config[k] for k in ("d_model", "d_state", "discretization", "conj_sym", "blocks")}
    return S5.from_params(config, {"Lambda_re": Lambda.real, "Lambda_im": Lambda.imag, "B_re": B[..., 0],
                                   "B_im": B[..., 1], "C_re": C[..., 0], "C_im": C[..., 1], "D": p["D"],
                                   "log_dt": np.log(dt)})


@given(seed=seeds, method=st.sampled_from(CONTINUOUS_METHODS), conj_sym=st.booleans(),
       reparam=st.sampled_from(["none", "stablessm"]), events=st.booleans(), L=sequence_lengths(30))
def test_frozen_projection_equals_s5(seed, method, conj_sym, reparam, events, L):
    rng = rng_from(seed)
    layer = S7(3, 4, discretization=method, conj_sym=conj_sym, blocks=2, reparam=reparam, step_rescale=0.5, seed=seed)
    layer.params["x_proj.weight"][:] = 0.0
    layer.params["x_proj.bias"] = rng.normal(size=layer.params["x_proj.bias"].shape)
    s5 = s5_from_frozen_s7(layer)
    x = rng.normal(size=(2, L, 3))
    tau = timesteps(rng, 2, L) if events else None
    assert_close(layer(x, integration_timesteps=tau), s5(x, integration_timesteps=tau), what="S7 frozen == S5")
    if tau is None:                                                                    # then S5's kernel view applies
        assert_close(layer(x), s5(x, method="fft"), what="S7 frozen == S5 convolution view")


# ----------------------------------------------------------------------------- conj_sym half system == full system
def full_system(layer):
    """The conj_sym=False layer with 2N states [x, conj x] equal to a conj_sym layer (κ = 2 ⇒ κ = 1)."""
    p, N, H, r = layer.params, layer.d_state, layer.d_model, layer.dt_rank
    conj = np.array([1.0, -1.0])

    def doubled(rows):                                                      # rows (r + 4NH, ...) → (r + 8NH, ...)
        tail = rows.shape[1:]
        s = rows[:r]
        B = rows[r:r + 2 * N * H].reshape((N, H, 2) + tail)
        C = rows[r + 2 * N * H:].reshape((H, N, 2) + tail)
        flip = conj.reshape((1, 1, 2) + (1,) * len(tail))
        B2 = np.concatenate([B, B * flip], axis=0)                                     # (2N, H, 2, ...)
        C2 = np.concatenate([C, C * flip], axis=1)                                     # (H, 2N, 2, ...)
        return np.concatenate([s, B2.reshape((-1,) + tail), C2.reshape((-1,) + tail)])

    params = {"Lambda_re": np.tile(p["Lambda_re"], 2), "Lambda_im": np.concatenate([p["Lambda_im"], -p["Lambda_im"]]),
              "x_proj.weight": doubled(p["x_proj.weight"]), "x_proj.bias": doubled(p["x_proj.bias"]),
              "dt_proj.weight": np.tile(p["dt_proj.weight"], (2, 1)), "dt_proj.bias": np.tile(p["dt_proj.bias"], 2),
              "D": p["D"]}
    config = dict(layer.config, d_state=2 * N, conj_sym=False, blocks=1)
    return S7.from_params(config, params)


@given(seed=seeds, method=st.sampled_from(CONTINUOUS_METHODS), events=st.booleans(),
       reparam=st.sampled_from(["none", "stablessm"]), L=sequence_lengths(30))
def test_conj_sym_half_system_equals_the_full_system(seed, method, events, reparam, L):
    rng = rng_from(seed)
    layer = S7(3, 2, discretization=method, conj_sym=True, reparam=reparam, seed=seed)
    x = rng.normal(size=(2, L, 3))
    tau = timesteps(rng, 2, L) if events else None
    assert_close(layer(x, integration_timesteps=tau), full_system(layer)(x, integration_timesteps=tau),
                 what="κ = 2 half system == explicit conjugate pairs")


# ----------------------------------------------------------------------------- the discrete system
@given(seed=seeds, method=st.sampled_from(CONTINUOUS_METHODS), scale=st.sampled_from([1.0, 30.0]))
def test_transition_is_stable(seed, method, scale):
    rng = rng_from(seed)
    layer = S7(3, 4, discretization=method, seed=seed)
    Lambda_bar, Bu, _ = layer.discrete_system(scale * rng.normal(size=(2, 20, 3)), timesteps(rng, 2, 20))
    assert (np.abs(Lambda_bar) <= 1).all() and np.isfinite(Bu).all()
    Lambda_bar, _, _ = layer.discrete_system(rng.normal(size=(2, 20, 3)))
    assert (np.abs(Lambda_bar) < 1).all()


def test_zero_gap_gives_identity_transition():
    layer = S7(3, 4, seed=2)
    Lambda_bar, _, _ = layer.discrete_system(np.random.default_rng(0).normal(size=(2, 5, 3)), np.zeros((2, 5)))
    assert (Lambda_bar == 1.0).all()


@given(seed=seeds, method=st.sampled_from(CONTINUOUS_METHODS), L=sequence_lengths(30))
def test_unit_gaps_equal_the_synchronous_layer(seed, method, L):
    layer = S7(3, 4, discretization=method, seed=seed)
    x = rng_from(seed).normal(size=(2, L, 3))
    assert_close(layer(x, integration_timesteps=np.ones((2, L))), layer(x), what="τ ≡ 1")


@given(seed=seeds, L=sequence_lengths(30), events=st.booleans())
def test_views_agree(seed, L, events):
    rng = rng_from(seed)
    layer = S7(3, 4, conj_sym=True, blocks=2, discretization="async", seed=seed)
    x = rng.normal(size=(2, L, 3))
    tau = timesteps(rng, 2, L) if events else None
    y, state = layer(x, integration_timesteps=tau, return_state=True)
    for method in SCAN_METHODS:
        y_m, state_m = layer(x, integration_timesteps=tau, return_state=True, method=method)
        assert_close(y_m, y, what=f"method={method}")
        assert_close(state_m, state, what=f"final state, method={method}")
    y_steps, state_steps = run_steps(layer, x, tau)
    assert_close(y_steps, y, what="repeated step()")
    assert_close(state_steps, state, what="step() state")


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, error, match", [
    ({"discretization": "none"}, ValueError, "discretization='none' is refused"),
    ({"discretization": "euler"}, ValueError, "discretization must be one of"),
    ({"reparam": "exp"}, ValueError, "reparam must be one of"),
    ({"dt_rank": 0}, ValueError, "dt_rank must be >= 1"),
    ({"dt_rank": "full"}, ValueError, "dt_rank must be one of"),
    ({"conj_sym": True, "blocks": 3}, ValueError, "blocks must divide"),
    ({"dt_min": 0.2, "dt_max": 0.1}, ValueError, "dt_min must be <= dt_max"),
    ({"clip_eigs": "yes"}, TypeError, "clip_eigs must be a bool"),
])
def test_bad_arguments_raise_naming_the_rule(kwargs, error, match):
    with pytest.raises(error, match=match):
        S7(4, 4, **kwargs)


def test_no_convolution_view():
    layer = S7(2, 2, seed=0)
    with pytest.raises(ValueError, match="no convolution kernel view"):
        layer(np.zeros((1, 3, 2)), method="fft")
    assert not hasattr(layer, "kernel")


# ----------------------------------------------------------------------------- initialisation
@given(seed=seeds, dt_min=st.sampled_from([1e-5, 1e-3, 0.05]), ratio=st.sampled_from([1.0, 10.0, 100.0]))
def test_initial_step_is_in_range(seed, dt_min, ratio):
    """softplus(dt_proj.bias) = max(δ, 1e-4) with δ log-uniform in [dt_min, dt_max) (Δ_t at zero input)."""
    layer = S7(3, 4, dt_min=dt_min, dt_max=dt_min * ratio, seed=seed)
    dt = np.logaddexp(0.0, layer.params["dt_proj.bias"])
    low, high = max(dt_min, DT_INIT_FLOOR), max(dt_min * ratio, DT_INIT_FLOOR)
    assert_close(np.clip(dt, low, high), dt, what=f"Δ in [{low}, {high}]")
    assert (layer.params["x_proj.bias"] == 0).all()
    bound = layer.config["step_rescale"] / np.sqrt(layer.dt_rank)
    assert (np.abs(layer.params["dt_proj.weight"]) <= bound).all()
