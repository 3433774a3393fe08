"""S6 (SPEC §4.8), reference: golden vectors of the official code, regression values, views that must agree
(bare and block, with the block's conv state), event-form limits, selectivity, the LTI reduction, errors.

The registry-driven properties of reference_tests/test_layers.py run over the bare layer as well; this file
adds what is S6's own and everything with block=True (whose state is the pair (conv state, h)).
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity_tests.golden_s6 import BLOCK_KEYS, golden_layer, load
from parity_tests.tolerances import assert_close
from reference import Classifier
from reference.discretize import discretize
from reference.layers.s6 import S6, S6_METHODS, softplus_inverse
from reference.scan import SCAN_METHODS

REGRESSION_DIGITS = 1e-9            # the SPEC prints the regression values to 9 decimals
LRNNX_EVENT_GAP = 1.0               # lrnnx's event mode at τ ≡ 1 differs from its synchronous output by 1.56
SEEDS = (0, 1, 2)


def small_layer(seed, block, discretization="exp_euler", **overrides):
    config = dict(d_model=3, d_state=4, dt_rank=2, discretization=discretization, block=block, seed=seed,
                  dt_min=0.01, dt_max=1.0)
    if block:
        config.update(expand=2, d_conv=3)
    return S6(**{**config, **overrides})


def inputs(seed, batch=2, L=13, H=3, events=True):
    rng = np.random.default_rng(100 + seed)
    x = rng.normal(size=(batch, L, H))                                              # (b, L, H)
    tau = np.exp(rng.uniform(-2, 1.5, (batch, L))) if events else None              # (b, L)
    if events:
        tau[rng.uniform(size=tau.shape) < 0.3] = 0.0
    return x, tau, rng


def random_state(layer, batch, rng):
    zero = layer.init_state(batch)
    if layer.block:
        return rng.normal(size=zero[0].shape), rng.normal(size=zero[1].shape)
    return rng.normal(size=zero.shape)


def assert_state_close(actual, expected, what):
    if isinstance(expected, tuple):
        assert_close(actual[0], expected[0], what=f"{what} (conv state)")
        assert_close(actual[1], expected[1], what=f"{what} (h)")
    else:
        assert_close(actual, expected, what=what)


def run_steps(layer, x, tau=None, state=None):
    state = layer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1), state


# ----------------------------------------------------------------------------- golden vectors
@pytest.mark.parametrize("method", SCAN_METHODS)
def test_golden_bare(method):
    golden = load("s6_bare_L17")
    layer = golden_layer(golden)
    dt, B, C = layer.selection(golden["x"])
    assert_close(dt, golden["delta"], dtype="golden", what="Δ_t vs mamba-minimal")
    assert_close(B, golden["B"], dtype="golden", what="B_t vs mamba-minimal")
    assert_close(C, golden["C"], dtype="golden", what="C_t vs mamba-minimal")
    y, h = layer(golden["x"], return_state=True, method=method)
    assert_close(y, golden["y"], dtype="golden", what=f"y vs mamba-minimal (method={method})")
    assert_close(h, golden["h_last"], dtype="golden", what=f"h_last vs state-spaces (method={method})")


@pytest.mark.parametrize("method", SCAN_METHODS)
def test_golden_block(method):
    golden = load("s6_block_L17")
    y = golden_layer(golden, block=True)(golden["x"], method=method)
    assert_close(y, golden["y"], dtype="golden", what=f"Mamba mixer vs mamba-minimal MambaBlock (method={method})")


@pytest.mark.parametrize("discretization", S6_METHODS)
def test_golden_event_every_method(discretization):
    golden = load("s6_event_L17")
    layer = golden_layer(golden, discretization)
    y = layer(golden["x"], integration_timesteps=golden["integration_timesteps"])
    assert_close(y, golden[f"y_{discretization}"], dtype="golden", what=f"event form, {discretization}")


def test_golden_lrnnx_event_form_is_not_ours():
    """τ ≡ 1: our event form is the synchronous layer exactly; lrnnx's event mode is not (SPEC §4.8 Decision)."""
    golden = load("s6_lrnnx_event_L17")
    layer = golden_layer(golden)
    y = layer(golden["x"], integration_timesteps=golden["integration_timesteps"])
    assert np.all(golden["integration_timesteps"] == 1.0)
    assert_close(y, golden["y_synchronous"], dtype="golden", what="τ ≡ 1 vs lrnnx's synchronous output")
    assert_close(layer(golden["x"]), golden["y_synchronous"], dtype="golden", what="synchronous vs lrnnx")
    assert np.max(np.abs(golden["y"] - y)) > LRNNX_EVENT_GAP


# ----------------------------------------------------------------------------- regression values (SPEC §4.8)
REGRESSION = {  # (method, τ): (Ā, γ̄) at A = −1, Δ_t = 0.1
    ("exp_euler", None): (0.904837418, 0.1), ("zoh", None): (0.904837418, 0.095162582),
    ("exp_euler", 3.0): (0.740818221, 0.3), ("zoh", 3.0): (0.740818221, 0.259181779),
    ("async", 3.0): (0.740818221, 0.095162582), ("dirac", 3.0): (0.740818221, 1.0),
}


@pytest.mark.parametrize("method,tau", sorted(REGRESSION, key=str))
def test_regression_values(method, tau):
    layer = S6(d_model=2, d_state=1, discretization=method, seed=0)
    layer.params["A_log"][:] = 0.0                                                  # A = −1
    dt = np.full((1, 1, 2), 0.1)                                                    # Δ_t (b, L, E)
    A_bar, gamma_bar = layer.discrete_system(dt, None if tau is None else np.array([[tau]]))
    expected_A, expected_gamma = REGRESSION[(method, tau)]
    np.testing.assert_allclose(A_bar, expected_A, atol=REGRESSION_DIGITS)
    np.testing.assert_allclose(gamma_bar, expected_gamma, atol=REGRESSION_DIGITS)


@pytest.mark.parametrize("method", S6_METHODS)
def test_transition_is_stable(method):
    """|Ā_t| < 1 for Δ > 0; 0 < Ā_t < 1 except bilinear, which is negative for Δ|A| > 2."""
    layer = small_layer(0, False, method)
    dt = np.exp(np.linspace(-8, 4, 30)).reshape(1, 30, 1) * np.ones((1, 1, 3))     # (1, L, E)
    A_bar, _ = layer.discrete_system(dt)
    assert np.all(np.abs(A_bar) < 1)
    if method != "bilinear":
        assert np.all(A_bar > 0)
    else:
        A = -np.exp(layer.params["A_log"])                                          # (E, N)
        assert np.all((A_bar < 0) == (dt[..., None] * np.abs(A) > 2))


# ----------------------------------------------------------------------------- views that must agree
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_every_scan_method_and_step_equal_the_sequential_loop(block, seed):
    layer = small_layer(seed, block, S6_METHODS[seed % len(S6_METHODS)])
    x, tau, rng = inputs(seed)
    state0 = random_state(layer, x.shape[0], rng)
    y, state = layer(x, integration_timesteps=tau, initial_state=state0, return_state=True)
    for method in SCAN_METHODS:
        y_m, state_m = layer(x, integration_timesteps=tau, initial_state=state0, return_state=True, method=method)
        assert_close(y_m, y, what=f"method={method}")
        assert_state_close(state_m, state, f"final state, method={method}")
    y_steps, state_steps = run_steps(layer, x, tau, state0)
    assert_close(y_steps, y, what="repeated step()")
    assert_state_close(state_steps, state, "state after repeated step()")


@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("split", [1, 2, 7, 12])
def test_split_with_carried_state_equals_one_pass(block, split):
    layer = small_layer(split, block, "zoh")
    x, tau, _ = inputs(split)
    y, state = layer(x, integration_timesteps=tau, return_state=True)
    y_head, carried = layer(x[:, :split], integration_timesteps=tau[:, :split], return_state=True)
    y_tail, state_tail = layer(x[:, split:], integration_timesteps=tau[:, split:], initial_state=carried,
                               return_state=True, method="chunked")
    assert_close(np.concatenate([y_head, y_tail], axis=1), y, what=f"split at {split} + carry")
    assert_state_close(state_tail, state, "final state after split")


@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("seed", SEEDS)
def test_lengths_state_after_len_minus_one_and_padding_invariance(block, seed):
    layer = small_layer(seed, block, "async")
    x, tau, rng = inputs(seed, batch=3)
    lengths = np.array([1, x.shape[1], 5])
    x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 1e3                    # garbage in the padding
    y, state = layer(x, lengths, tau, return_state=True, method="numba")
    for i, n in enumerate(lengths):
        y_i, state_i = layer(x[i:i + 1, :n], integration_timesteps=tau[i:i + 1, :n], return_state=True)
        assert_close(y[i:i + 1, :n], y_i, what=f"row {i}, length {n}")
        if block:
            assert_state_close((state[0][i:i + 1], state[1][i:i + 1]), state_i, f"state at len − 1, row {i}")
        else:
            assert_close(state[i:i + 1], state_i, what=f"state at len − 1, row {i}")


def test_block_conv_state_holds_the_last_inputs_oldest_first():
    layer = small_layer(0, True, d_conv=4)
    x, _, _ = inputs(0, L=2, events=False)
    _, (conv, _) = layer(x, return_state=True)
    p = np.einsum("blh,fh->blf", x, layer.params["in_proj.weight"])[..., :layer.d_inner]   # (b, L, E)
    assert_close(conv, np.concatenate([np.zeros((2, 1, layer.d_inner)), p], axis=1), what="conv state, L < d_conv")


@pytest.mark.parametrize("block", [False, True])
def test_causality(block):
    layer = small_layer(0, block, "bilinear")
    x, tau, rng = inputs(0)
    t = 6
    perturbed = x.copy()
    perturbed[:, t:] += rng.normal(size=perturbed[:, t:].shape)
    assert_close(layer(perturbed, integration_timesteps=tau)[:, :t], layer(x, integration_timesteps=tau)[:, :t],
                 what="outputs before the perturbed step")


@pytest.mark.parametrize("block", [False, True])
def test_batched_equals_per_sequence(block):
    layer = small_layer(1, block, "dirac")
    x, tau, _ = inputs(1, batch=3)
    y = layer(x, integration_timesteps=tau)
    for i in range(3):
        assert_close(y[i:i + 1], layer(x[i:i + 1], integration_timesteps=tau[i:i + 1]), what=f"row {i}")


# ----------------------------------------------------------------------------- event form and limits
@pytest.mark.parametrize("block", [False, True])
@pytest.mark.parametrize("method", S6_METHODS)
def test_unit_timesteps_equal_the_synchronous_layer(block, method):
    layer = small_layer(2, block, method)
    x, _, _ = inputs(2, events=False)
    y, state = layer(x, return_state=True)
    y_tau, state_tau = layer(x, integration_timesteps=np.ones(x.shape[:2]), return_state=True)
    assert_close(y_tau, y, what="τ ≡ 1")
    assert_state_close(state_tau, state, "state with τ ≡ 1")


@pytest.mark.parametrize("method", S6_METHODS)
def test_zero_timestep_gives_unit_transition(method):
    layer = small_layer(0, False, method)
    x, _, _ = inputs(0, events=False)
    dt, _, _ = layer.selection(x)
    A_bar, gamma_bar = layer.discrete_system(dt, np.zeros(x.shape[:2]))
    assert np.all(A_bar == 1.0)
    if method in ("zoh", "bilinear", "exp_euler"):
        assert np.all(gamma_bar == 0.0)                                             # γ̄ ∝ Δ_A = 0: nothing added


def constant_step_layer(method, dt, block=False):
    """A layer whose Δ_t is the constant dt: the δ̃ rows of x_proj.weight are 0, dt_proj.bias = softplus⁻¹(dt)."""
    layer = small_layer(3, block, method)
    layer.params["x_proj.weight"][:layer.dt_rank] = 0.0
    layer.params["dt_proj.bias"][:] = softplus_inverse(dt)
    return layer


def test_zero_selection_rows_give_a_constant_step():
    layer = constant_step_layer("zoh", 0.37)
    x, _, _ = inputs(3, events=False)
    dt, _, _ = layer.selection(x)
    assert_close(dt, np.full(dt.shape, 0.37), what="Δ_t = softplus(dt_proj.bias)")


@pytest.mark.parametrize("method", [m for m in S6_METHODS if m != "dirac"])
def test_vanishing_step_gives_the_skip_connection(method):
    """Δ → 0 ⇒ y → D ⊙ v (the state receives nothing)."""
    layer = constant_step_layer(method, 1e-13)
    x, _, _ = inputs(3, events=False)
    assert_close(layer(x), layer.params["D"] * x, what="y at Δ = 1e-13")


def test_large_step_is_memoryless():
    """Δ large ⇒ Ā ≈ 0 and h_t = Δ_t B_t v_t (exp_euler): y_t = Δ (C_t·B_t) v_t + D v_t."""
    layer = constant_step_layer("exp_euler", 1e3)
    x, _, _ = inputs(3, events=False)
    _, B, C = layer.selection(x)
    expected = 1e3 * np.einsum("bln,bln->bl", B, C)[..., None] * x + layer.params["D"] * x
    assert_close(layer(x), expected, what="memoryless y at Δ = 1e3")


@pytest.mark.parametrize("method", [m for m in S6_METHODS if m != "bilinear"])
def test_selectivity_a_large_step_erases_the_past(method):
    """Δ → ∞ at one step k in (s, t]: v_s no longer influences y_t (bilinear excluded: its Ā → −1)."""
    layer = small_layer(0, False, method, dt_rank=1)
    layer.params["x_proj.weight"][0] = [1.0, 0.0, 0.0]                              # δ̃_t = x_t[0]
    layer.params["dt_proj.weight"][:] = 1.0
    x, _, rng = inputs(0, events=False)
    k = 6
    x[:, k, 0] = 1e4                                                                # Δ_k ≈ 1e4: Ā_k = 0
    perturbed = x.copy()
    perturbed[:, :k] += rng.normal(size=perturbed[:, :k].shape)
    assert_close(layer(perturbed)[:, k:], layer(x)[:, k:], what=f"y_t, t >= {k}, after a large step at {k}")


@pytest.mark.parametrize("method", S6_METHODS)
def test_lti_reduction_equals_a_diagonal_ssm(method):
    """δ̃ rows of x_proj.weight = 0 and B/C rows reading only a constant input channel ⇒ an LTI diagonal SSM,
    computed here independently as a causal convolution with kernel K_l[e] = Σ_n C_n Ā_{en}^l γ̄_{en} B_n."""
    layer = constant_step_layer(method, 0.3)
    r, N = layer.dt_rank, layer.d_state
    rng = np.random.default_rng(7)
    W = layer.params["x_proj.weight"]
    W[r:, 1:] = 0.0                                                                 # B, C read channel 0 only
    x = rng.normal(size=(2, 11, 3))
    x[..., 0] = 1.0                                                                 # the constant channel
    B, C = W[r:r + N, 0], W[r + N:, 0]                                              # (N,) each
    A = -np.exp(layer.params["A_log"])                                              # (E, N)
    A_bar, gamma_bar = discretize(A, 0.3, method)                                   # (E, N) time-invariant
    lags = np.arange(x.shape[1])
    K = np.einsum("n,len,en,n->le", C, A_bar[None] ** lags[:, None, None], gamma_bar, B)   # (L, E)
    y = np.stack([np.einsum("le,ble->be", K[:t + 1], x[:, t::-1]) for t in lags], axis=1)   # (b, L, E)
    assert_close(layer(x), y + layer.params["D"] * x, what=f"LTI reduction ({method})")


# ----------------------------------------------------------------------------- construction and errors
def test_init_follows_mamba():
    layer = S6(d_model=20, d_state=5, seed=3, dt_min=1e-3, dt_max=0.1)
    p = layer.params
    assert layer.dt_rank == 2 and p["x_proj.weight"].shape == (12, 20) and p["dt_proj.weight"].shape == (20, 2)
    assert_close(p["A_log"], np.log(np.tile(np.arange(1.0, 6.0), (20, 1))), what="A_log = log n")
    assert_close(p["D"], np.ones(20), what="D = 1")
    dt = np.logaddexp(0, p["dt_proj.bias"])
    assert np.all((dt >= 1e-3) & (dt < 0.1))
    assert np.all(np.abs(p["dt_proj.weight"]) <= 2 ** -0.5)
    block = S6(d_model=4, block=True, seed=0)
    assert sorted(block.params) == sorted(BLOCK_KEYS)
    assert block.params["in_proj.weight"].shape == (16, 4) and block.params["conv1d.weight"].shape == (8, 1, 4)


def test_errors_name_the_rule():
    with pytest.raises(ValueError, match="none.*continuous"):
        S6(d_model=2, discretization="none")
    with pytest.raises(ValueError, match="expand.*block=True"):
        S6(d_model=2, expand=2)
    with pytest.raises(ValueError, match="dt_init"):
        S6(d_model=2, dt_init="normal")
    with pytest.raises(TypeError, match="dt_rank"):
        S6(d_model=2, dt_rank=1.5)
    layer = S6(d_model=2, d_state=3, seed=0)
    with pytest.raises(ValueError, match="fft.*convolution kernel"):
        layer(np.ones((1, 4, 2)), method="fft")
    assert not hasattr(layer, "kernel")
    block = S6(d_model=2, d_state=3, block=True, seed=0)
    with pytest.raises(TypeError, match="pair"):
        block(np.ones((1, 4, 2)), initial_state=np.zeros((1, 4, 3)))
    with pytest.raises(ValueError, match="conv state"):
        block(np.ones((1, 4, 2)), initial_state=(np.zeros((1, 2, 4)), np.zeros((1, 4, 3))))


def test_classifier_builds_s6_mixers():
    model = Classifier(input_dim=3, num_classes=2, d_model=4, d_state=3, n_layers=2, lrnn_cls=["S6", "S6"],
                       lrnn_params=[{}, {"block": True}], dropout=0.0, seed=0)
    logits = model(np.random.default_rng(0).normal(size=(2, 7, 3)), lengths=np.array([7, 4]))
    assert logits.shape == (2, 2) and np.isfinite(logits).all()


# ----------------------------------------------------------------------------- the fused CPU kernel (a fast path)
@pytest.mark.parametrize("method", S6_METHODS)
@pytest.mark.parametrize("events", [False, True])
def test_fused_kernel_equals_the_sequential_path(method, events):
    """reference.kernels.selective == the layer's definition: y, the state after len − 1 (L spans several chunks)."""
    from reference.kernels.selective import CHUNK, selective_scan_fused
    layer = small_layer(4, False, method)
    x, tau, rng = inputs(4, L=2 * CHUNK + 5, events=events)
    h0, lengths = random_state(layer, 2, rng), np.array([2 * CHUNK + 5, CHUNK + 1])
    y, h = layer(x, lengths, tau, initial_state=h0, return_state=True)
    dt, B, C = layer.selection(x)
    y_f, h_f, _ = selective_scan_fused(x, dt, -np.exp(layer.params["A_log"]), B, C, layer.params["D"], tau, h0,
                                       lengths, method)
    assert_close(y_f, y, what=f"fused y ({method})")
    assert_close(h_f, h, what=f"fused state at len − 1 ({method})")


def test_streaming_classifier_with_s6_mixers():
    """SPEC §6.1: step() over events == the forward on every prefix, with a bare and a block S6 (pair state)."""
    model = Classifier(input_dim=3, num_classes=2, d_model=4, d_state=3, n_layers=2, lrnn_cls=["S6", "S6"],
                       lrnn_params=[{"discretization": "zoh"}, {"block": True}], dropout=0.0, seed=1)
    x, tau, _ = inputs(5, L=6)
    state = model.init_state(2)
    for n in range(1, 7):
        output, state = model.step(x[:, n - 1], state, tau[:, n - 1])
        assert_close(output, model(x[:, :n], integration_timesteps=tau[:, :n]), what=f"stream after {n} events")


@given(dt_min=st.floats(1e-5, 1.0), ratio=st.floats(1.0, 100.0), floor=st.sampled_from([1e-4, 1e-6]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_initial_step_within_range_or_at_the_floor(dt_min, ratio, floor, seed):
    """softplus(dt_proj.bias) = max(Δ₀, dt_init_floor) with Δ₀ ∈ [dt_min, dt_max) log-uniform (Mamba's dt init)."""
    dt_max = dt_min * ratio
    layer = S6(d_model=5, d_state=2, dt_min=dt_min, dt_max=dt_max, dt_init_floor=floor, seed=seed)
    dt = np.logaddexp(0, layer.params["dt_proj.bias"])
    low, high = max(dt_min, floor), max(dt_max, floor)
    assert np.all((dt >= low * (1 - REGRESSION_DIGITS)) & (dt <= high * (1 + REGRESSION_DIGITS)))
