"""The reference RG-LRU's own invariants (SPEC §4.9): recurrentgemma's golden outputs, the regression values, the
range of a_t, the LTI reduction and its stationary variance, resets, events, views (bare and Griffin block),
argument errors, and the seed library's decay-init defect (SPEC §10) shown numerically.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy.special import expit, logit

from parity_tests.golden_rglru_s7 import RGLRU_FILES, rglru_case
from parity_tests.strategies import rng_from, seeds, sequence_lengths, timesteps
from parity_tests.tolerances import assert_close
from reference.layers.rglru import RGLRU
from reference.scan import SCAN_METHODS

# Regression values of SPEC §4.9: base a = 0.9; (r_t, τ_t) -> (Ā_t, n_t), 9 digits.
A_PARAM_09 = -2.197224577
REGRESSION = {(0.5, 1.0): (0.6561, 0.754673963), (1.0, 1.0): (0.430467210, 0.902606216),
              (0.5, 2.0): (0.430467210, 0.754673963)}
REGRESSION_DIGITS = 9
SATURATED_LOGIT = 40.0                  # σ(40) rounds to 1.0 in float64: r_t = 1 exactly
# Memory horizons (SPEC §10): steps for the gate-½ transition a_t = a^{c/2} = a^4 to decay by e.
SEED_LIBRARY_LONGEST_MEMORY = 1.0       # lrnnx's sigmoid(log U[0.9, 0.999]) init: under one step for every channel
OURS_LONGEST_MEMORY_AT_LEAST = 100.0    # the ring init: the slowest channels remember hundreds of steps
OURS_SHORTEST_MEMORY_AT_LEAST = 2.0
IMPULSE_L = 20000                        # λ^{2L} < 1e-30 for the LTI variance test below


def bare_and_block(d_model=4, **kwargs):
    return [RGLRU(d_model, num_heads=2, seed=3, **kwargs),
            RGLRU(d_model, num_heads=2, block=True, lru_width=6, seed=4, **kwargs)]


def run_steps(layer, x, tau=None, resets=None, state=None):
    state = layer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t],
                                reset=None if resets is None else resets[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1), state


# ----------------------------------------------------------------------------- golden vectors (recurrentgemma)
@pytest.mark.parametrize("name", sorted(RGLRU_FILES))
@pytest.mark.parametrize("method", SCAN_METHODS)
def test_golden_outputs(name, method):
    layer, x, resets, y, h_last = rglru_case(name)
    y_ours, state = layer(x, resets=resets, return_state=True, method=method)
    assert_close(y_ours, y, "golden", what=f"{name} y, method={method}")
    if h_last is not None:
        assert_close(state, h_last, "golden", what=f"{name} h_last, method={method}")


@pytest.mark.parametrize("name", sorted(RGLRU_FILES))
def test_golden_outputs_step_by_step(name):
    layer, x, resets, y, _ = rglru_case(name)
    assert_close(run_steps(layer, x, resets=resets)[0], y, "golden", what=f"{name} repeated step()")


# ----------------------------------------------------------------------------- the discrete system
@pytest.mark.parametrize("r, tau", sorted(REGRESSION))
def test_regression_values(r, tau):
    expected = REGRESSION[r, tau]
    layer = RGLRU(2, seed=0)
    layer.params["a_param"] = np.full(2, np.log(0.1 / 0.9))
    assert np.round(layer.params["a_param"][0], REGRESSION_DIGITS) == A_PARAM_09
    layer.params["a_gate.w"][:] = 0.0
    layer.params["input_gate.w"][:] = 0.0
    layer.params["a_gate.b"][:] = SATURATED_LOGIT if r == 1.0 else logit(r)
    A_bar, gain = layer.discrete_system(np.ones((1, 1, 2)), np.full((1, 1), tau))
    n = gain / expit(0.0)                                                          # input gate σ(0) = ½
    assert np.round(A_bar[0, 0, 0], REGRESSION_DIGITS) == expected[0]
    assert np.round(n[0, 0, 0], REGRESSION_DIGITS) == expected[1]


@given(seed=seeds, scale=st.sampled_from([1.0, 3.0]), c=st.sampled_from([8.0, 0.5]))
def test_transition_is_in_the_open_unit_interval(seed, scale, c):
    rng = rng_from(seed)
    layer = RGLRU(6, num_heads=3, c=c, seed=seed)
    A_bar, gain = layer.discrete_system(scale * rng.normal(size=(2, 30, 6)))
    assert ((A_bar > 0) & (A_bar < 1)).all()
    assert np.isfinite(gain).all() and (gain >= 0).all()


@given(seed=seeds, scale=st.sampled_from([1e2, 1e4]))
def test_saturated_gates_stay_in_the_closed_unit_interval(seed, scale):
    """Gate logits far below 0 round r_t (and so log a_t) to 0: a_t = 1 in floating point, never above, never NaN."""
    layer = RGLRU(6, num_heads=3, seed=seed)
    A_bar, gain = layer.discrete_system(scale * rng_from(seed).normal(size=(2, 30, 6)))
    assert ((A_bar > 0) & (A_bar <= 1)).all()
    assert np.isfinite(gain).all() and (gain >= 0).all()


def test_zero_gap_gives_identity_transition():
    layer = RGLRU(4, num_heads=2, seed=1)
    A_bar, _ = layer.discrete_system(np.random.default_rng(0).normal(size=(2, 5, 4)), np.zeros((2, 5)))
    assert (A_bar == 1.0).all()


@pytest.mark.parametrize("layer", bare_and_block(), ids=["bare", "block"])
def test_unit_gaps_equal_the_synchronous_layer(layer):
    x = np.random.default_rng(2).normal(size=(2, 13, 4))
    assert_close(layer(x, integration_timesteps=np.ones((2, 13))), layer(x), what="τ ≡ 1")


# ----------------------------------------------------------------------------- LTI reduction (gate weights 0)
@pytest.mark.parametrize("b_in, b_a", [(0.0, 0.0), (1.5, -2.0), (-3.0, 2.5)])
def test_zero_gate_weights_give_the_lti_closed_form(b_in, b_a):
    layer = RGLRU(3, seed=5)
    for gate in ("input_gate", "a_gate"):
        layer.params[f"{gate}.w"][:] = 0.0
    layer.params["input_gate.b"][:], layer.params["a_gate.b"][:] = b_in, b_a
    lam = np.exp(-layer.c * expit(b_a) * np.logaddexp(0.0, layer.params["a_param"]))    # (E,) = a^{c σ(b_a)}
    n = np.sqrt(1 - lam ** 2)                                                           # (E,)
    x = np.random.default_rng(6).normal(size=(2, 40, 3))
    lags = np.arange(40)[:, None] - np.arange(40)[None, :]                               # (t, s)
    weights = np.where(lags[..., None] >= 0, lam ** np.maximum(lags, 0)[..., None], 0.0)   # (t, s, E)
    expected = n * expit(b_in) * np.einsum("tse,bse->bte", weights, x)                  # (b, L, E)
    assert_close(layer(x), expected, what="Σ_k λ^k n σ(b_in) x_{t−k}")


@pytest.mark.parametrize("b_in", [0.0, 1.0, -2.0])
def test_lti_stationary_variance_is_the_input_gate_squared(b_in):
    """White unit input: Var h = Σ_k (n σ(b_in) λ^k)² = σ(b_in)², read off the layer's impulse response."""
    layer = RGLRU(3, seed=7)
    for gate in ("input_gate", "a_gate"):
        layer.params[f"{gate}.w"][:] = 0.0
    layer.params["input_gate.b"][:] = b_in
    impulse = np.zeros((1, IMPULSE_L, 3))
    impulse[0, 0] = 1.0
    response = layer(impulse, method="numba")[0]                                        # (L, E)
    assert_close(np.sum(response ** 2, axis=0), np.full(3, expit(b_in) ** 2), what="stationary variance")


# ----------------------------------------------------------------------------- resets
@pytest.mark.parametrize("layer", bare_and_block(), ids=["bare", "block"])
@given(seed=seeds, reset_at=st.integers(1, 15))
def test_outputs_after_a_reset_ignore_the_past(layer, seed, reset_at):
    rng = rng_from(seed)
    x = rng.normal(size=(2, 16, 4))
    resets = np.zeros((2, 16), bool)
    resets[:, reset_at] = True
    changed = x.copy()
    changed[:, :reset_at] += rng.normal(size=(2, reset_at, 4))
    state = layer.init_state(2) + rng.normal(size=layer.init_state(2).shape)
    y = layer(x, resets=resets, initial_state=state)
    y_changed = layer(changed, resets=resets)
    assert_close(y_changed[:, reset_at:], y[:, reset_at:], what=f"outputs from the reset at {reset_at} on")


@pytest.mark.parametrize("layer", bare_and_block(), ids=["bare", "block"])
def test_reset_at_the_start_is_upstream_fresh_sequence(layer):
    """resets[:, 0] = True: h_0 = i_0 ⊙ x_0 whatever the initial state (recurrentgemma's segment_pos = 0)."""
    rng = np.random.default_rng(8)
    x, resets = rng.normal(size=(2, 7, 4)), np.zeros((2, 7), bool)
    resets[:, 0] = True
    state = rng.normal(size=layer.init_state(2).shape)
    assert_close(layer(x, resets=resets, initial_state=state), layer(x, resets=resets), what="reset at t = 0")


# ----------------------------------------------------------------------------- views (bare and block)
@pytest.mark.parametrize("layer", bare_and_block(), ids=["bare", "block"])
@given(seed=seeds, L=sequence_lengths(40), events=st.booleans(), with_resets=st.booleans())
def test_views_agree(layer, seed, L, events, with_resets):
    """Every scan method == the repeated step(); split + carried state == one pass (with τ and resets)."""
    rng = rng_from(seed)
    x = rng.normal(size=(2, L, 4))
    tau = timesteps(rng, 2, L) if events else None
    resets = rng.uniform(size=(2, L)) < 0.2 if with_resets else None
    y, state = layer(x, integration_timesteps=tau, resets=resets, return_state=True)
    for method in SCAN_METHODS:
        y_m, state_m = layer(x, integration_timesteps=tau, resets=resets, return_state=True, method=method)
        assert_close(y_m, y, what=f"method={method}")
        assert_close(state_m, state, what=f"final state, method={method}")
    y_steps, state_steps = run_steps(layer, x, tau, resets)
    assert_close(y_steps, y, what="repeated step()")
    assert_close(state_steps, state, what="step() state")
    k = int(rng.integers(0, L + 1))
    part = lambda a, s: None if a is None else a[:, s]                                  # noqa: E731
    y_head, carried = layer(x[:, :k + 1], integration_timesteps=part(tau, slice(0, k + 1)),
                            resets=part(resets, slice(0, k + 1)), return_state=True)
    pieces = [y_head]
    if k + 1 < L:
        y_tail, state_tail = layer(x[:, k + 1:], integration_timesteps=part(tau, slice(k + 1, None)),
                                   resets=part(resets, slice(k + 1, None)), initial_state=carried, return_state=True)
        pieces.append(y_tail)
        assert_close(state_tail, state, what=f"final state after split at {k + 1}")
    assert_close(np.concatenate(pieces, axis=1), y, what=f"split at {k + 1} + carry")


def test_block_state_with_lengths_is_the_step_state():
    layer = bare_and_block()[1]
    rng = np.random.default_rng(9)
    x, lengths = rng.normal(size=(3, 11, 4)), np.array([11, 2, 6])
    resets = np.zeros((3, 11), bool)
    resets[2, 4] = True
    _, state = layer(x, lengths, resets=resets, return_state=True)
    for i, n in enumerate(lengths):
        _, state_i = run_steps(layer, x[i:i + 1, :n], resets=resets[i:i + 1, :n])
        assert_close(state[i:i + 1], state_i, what=f"row {i}: conv window and h after step len − 1")


# ----------------------------------------------------------------------------- the seed library's defect (SPEC §10)
def test_seed_library_decay_init_has_one_step_of_memory():
    """lrnnx: a_log = log U[0.9, 0.999] but a = sigmoid(a_log) ∈ [0.474, 0.4998], so at the gate value r_t = ½
    (c·r_t = 4) a_t ≈ 0.05–0.06: under one step of memory. The ring init (ours, recurrentgemma's) keeps
    a ∈ [0.9, 0.999] and the slowest channels hundreds of steps."""
    layer = RGLRU(256, seed=10)
    c_r = layer.c * 0.5
    ours = np.exp(-c_r * np.logaddexp(0.0, layer.params["a_param"]))                    # (E,) a_t = a^{c r}
    u = np.random.default_rng(10).uniform(0.9, 0.999, 256)
    seed_library = expit(np.log(u)) ** c_r                                              # (E,) sigmoid(log U)^{c r}
    horizon = lambda a: -1.0 / np.log(a)                                                # noqa: E731  e-folding steps
    assert horizon(seed_library).max() < SEED_LIBRARY_LONGEST_MEMORY
    assert horizon(ours).max() > OURS_LONGEST_MEMORY_AT_LEAST
    assert horizon(ours).min() > OURS_SHORTEST_MEMORY_AT_LEAST


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kwargs, error, match", [
    ({"d_model": 6, "num_heads": 4}, ValueError, "num_heads must divide"),
    ({"d_model": 4, "lru_width": 8}, ValueError, "lru_width applies only to the recurrent block"),
    ({"d_model": 4, "block": True, "lru_width": 6, "num_heads": 4}, ValueError, "num_heads must divide"),
    ({"d_model": 4, "max_rad": 1.0}, ValueError, "max_rad must be < 1"),
    ({"d_model": 4, "min_rad": 0.99, "max_rad": 0.9}, ValueError, "min_rad"),
    ({"d_model": 4, "c": 0.0}, ValueError, "c must be"),
    ({"d_model": 4, "block": 1}, TypeError, "block must be a bool"),
    ({"d_model": 4, "d_state": 2}, TypeError, "d_state"),
])
def test_bad_arguments_raise_naming_the_rule(kwargs, error, match):
    with pytest.raises(error, match=match):
        RGLRU(**kwargs)


def test_bad_calls_raise_naming_the_rule():
    layer = RGLRU(4, seed=0)
    x = np.zeros((2, 5, 4))
    with pytest.raises(ValueError, match="no convolution kernel view"):
        layer(x, method="fft")
    with pytest.raises(TypeError, match="resets must be a bool array"):
        layer(x, resets=np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"resets must have shape \(2, 5\)"):
        layer(x, resets=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="state must have shape"):
        layer.step(x[:, 0], np.zeros((2, 3)))
    assert not hasattr(layer, "kernel")


def test_classifier_builds_rglru_without_d_state():
    """RG-LRU has no d_state: the classifier passes it only to mixers whose signature has it (SPEC §6)."""
    from reference import Classifier
    model = Classifier(3, num_classes=2, d_model=4, d_state=5, n_layers=2, lrnn_cls=["RGLRU", "S7"], dropout=0.0,
                       lrnn_params=[{"num_heads": 2}, {}], seed=0)
    logits = model(np.random.default_rng(0).normal(size=(2, 6, 3)))
    assert logits.shape == (2, 2) and np.isfinite(logits).all()
