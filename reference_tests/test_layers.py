"""Properties every reference layer satisfies (SPEC §4.6, §9), run over `reference.layers.REGISTRY` and the
registry's variants in `LAYER_CONFIGS` (S6-block, RGLRU-block: their conv window is part of the state).

Adding a layer to the registry adds it to every property here; its small configs come from
`parity_tests.strategies.LAYER_CONFIGS` (a registry name without an entry fails loudly, nothing is
skipped). Flags of the entry say what may be assumed: `linear` (y linear in (x, initial_state)),
`input_dependent` (the transition depends on x: no cross-input linearity in the initial state),
`timesteps` (accepts integration_timesteps, else must refuse them), `slow_decay` (|Ā| near 1), `conv_window` (the
state holds a conv window, which a zero gap does not hold and which enters the gates non-affinely).

Views: the recurrence (method="sequential") == every other method the layer lists (scans, "fft") ==
repeated step(); split + carried state == one pass; initial-state linearity; causality; batched ==
per-sequence with lengths (padding invariance, state at len − 1); τ ≡ 1 == synchronous; τ = 0 holds
the state; the kernel view refuses τ and initial_state; long sequences; an underflowed Ā gives no NaN.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.strategies import (LAYER_CONFIGS, batch_sizes, examples, layer_class, layer_config, lengths_vector,
                                     rng_from, seeds, sequence_lengths, timesteps)
from parity_tests.strategies import random_state as random_like
from parity_tests.tolerances import assert_close
from reference.layers import REGISTRY
from reference.layers._checks import LAYER_METHODS

LAYERS = sorted(set(REGISTRY) | {name for name, entry in LAYER_CONFIGS.items() if entry.variant_of})
WINDOWLESS = [name for name in LAYERS if not layer_config(name).conv_window]
TIMESTEP_LAYERS = [name for name in LAYERS if layer_config(name).timesteps]
NO_TIMESTEP_LAYERS = [name for name in LAYERS if not layer_config(name).timesteps]
# Methods whose input factor γ̄ vanishes with the step (γ̄ ∝ Δ_A = τΔ): τ = 0 ignores the input too.
INPUT_SCALES_WITH_STEP = ("zoh", "bilinear", "exp_euler")
LONG_L = 16384


# ----------------------------------------------------------------------------- helpers
def draw_case(data, name, *, max_len=130, events=None, overrides=None, min_len=1):
    """(layer, x (b, L, H), τ (b, L) or None, rng) from the layer's small configs; L >= min_len."""
    entry = layer_config(name)
    config = dict(data.draw(entry.configs(), label="config"), **(overrides or {}))
    layer = layer_class(name)(**config)
    lengths = sequence_lengths(max_len) if min_len == 1 else sequence_lengths(max_len).filter(lambda n: n >= min_len)
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(lengths, label="L")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(batch, L, config["d_model"]))                          # (b, L, H)
    use_events = entry.timesteps and (data.draw(st.booleans(), label="events") if events is None else events)
    tau = timesteps(rng, batch, L) if use_events else None                       # (b, L)
    return layer, x, tau, rng


def layer_methods(layer):
    """The methods a layer lists (all scans and "fft" unless it says otherwise)."""
    return tuple(getattr(layer, "methods", LAYER_METHODS))


def random_state(layer, batch, rng):
    """A random state of init_state's shape and dtype (complex when the layer's state is complex; a tuple state
    gets one random array per element)."""
    return random_like(rng, layer.init_state(batch))


def state_row(state, i):
    """Row i (kept as a batch of one) of a state array or of each array of a tuple state."""
    return tuple(s[i:i + 1] for s in state) if isinstance(state, tuple) else state[i:i + 1]


def all_finite(state):
    return all(np.isfinite(s).all() for s in state) if isinstance(state, tuple) else bool(np.isfinite(state).all())


def run_steps(layer, x, tau=None, state=None):
    """y (b, L, H) and the last state from repeated step() calls."""
    state = layer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1), state


def split(tau, index):
    return (None, None) if tau is None else (tau[:, :index], tau[:, index:])


# ----------------------------------------------------------------------------- views that must agree
@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_every_view_equals_the_recurrence(name, data):
    layer, x, tau, _ = draw_case(data, name)
    y, state = layer(x, integration_timesteps=tau, return_state=True, method="sequential")
    for method in layer_methods(layer):
        if method == "sequential" or (method == "fft" and tau is not None):
            continue
        y_m, state_m = layer(x, integration_timesteps=tau, return_state=True, method=method)
        assert_close(y_m, y, what=f"{name} method={method} vs sequential")
        assert_close(state_m, state, what=f"{name} final state, method={method}")
    y_steps, state_steps = run_steps(layer, x, tau)
    assert_close(y_steps, y, what=f"{name} repeated step() vs sequential")
    assert_close(state_steps, state, what=f"{name} step() state")


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_split_with_carried_state_equals_one_pass(name, data):
    layer, x, tau, _ = draw_case(data, name, min_len=2)
    L = x.shape[1]
    k = data.draw(st.integers(1, L - 1), label="split")
    method = data.draw(st.sampled_from([m for m in layer_methods(layer) if m != "fft"]), label="method")
    y, state = layer(x, integration_timesteps=tau, return_state=True, method=method)
    tau_head, tau_tail = split(tau, k)
    y_head, carried = layer(x[:, :k], integration_timesteps=tau_head, return_state=True, method=method)
    y_tail, state_tail = layer(x[:, k:], integration_timesteps=tau_tail, initial_state=carried,
                               return_state=True, method=method)
    assert_close(np.concatenate([y_head, y_tail], axis=1), y, what=f"{name} split at {k} + carry")
    assert_close(state_tail, state, what=f"{name} final state after split")


@pytest.mark.parametrize("name", WINDOWLESS)
@given(data=st.data())
def test_initial_state_enters_affinely_at_a_fixed_input(name, data):
    """At a fixed input the state is affine in the initial state (every layer here, gated ones included):
    f(x, αs1 + βs2) − f(x, 0) == α(f(x, s1) − f(x, 0)) + β(f(x, s2) − f(x, 0)), for the final state, and for the
    output where the read-out is linear (`linear`)."""
    layer, x, tau, rng = draw_case(data, name)
    s1, s2, zero = random_state(layer, x.shape[0], rng), random_state(layer, x.shape[0], rng), layer.init_state(x.shape[0])
    alpha, beta = rng.normal(size=2)
    method = data.draw(st.sampled_from([m for m in layer_methods(layer) if m != "fft"]), label="method")
    run = lambda s: layer(x, integration_timesteps=tau, initial_state=s, return_state=True, method=method)  # noqa: E731
    r0, r1, r2, r12 = run(zero), run(s1), run(s2), run(alpha * s1 + beta * s2)
    for part, what in ((1, "final state"),) + (((0, "output"),) if layer_config(name).linear else ()):
        assert_close(r12[part] - r0[part], alpha * (r1[part] - r0[part]) + beta * (r2[part] - r0[part]),
                     what=f"{name} {what} is affine in the initial state")


@pytest.mark.parametrize("name", [n for n in LAYERS if not layer_config(n).input_dependent])
@given(data=st.data())
def test_initial_state_enters_linearly(name, data):
    """Time-invariant transitions: y(x, s) − y(x, 0) == y(0, s) − y(0, 0) (linear layers), and the same for the
    final state (all). Input-dependent transitions (gated layers) are excluded by their flag: their state
    contribution depends on x, which the affine property above covers instead."""
    layer, x, tau, rng = draw_case(data, name)
    s, zero, x0 = random_state(layer, x.shape[0], rng), layer.init_state(x.shape[0]), np.zeros_like(x)
    method = data.draw(st.sampled_from([m for m in layer_methods(layer) if m != "fft"]), label="method")
    runs = {(xi, si): layer(inp, integration_timesteps=tau, initial_state=st_, return_state=True, method=method)
            for xi, inp in (("x", x), ("0", x0)) for si, st_ in (("s", s), ("0", zero))}
    for part, what in ((1, "final state"),) + (((0, "output"),) if layer_config(name).linear else ()):
        assert_close(runs["x", "s"][part] - runs["x", "0"][part], runs["0", "s"][part] - runs["0", "0"][part],
                     what=f"{name} initial-state {what} is linear")


@given(data=st.data())
def test_lru_initial_state_contribution_is_explicit(data):
    """LRU: y(x, s) − y(x, 0) = κ Re(C Ā^{t+1} s) with Ā_t = λ^{τ_t} (products over time under events)."""
    layer, x, tau, rng = draw_case(data, "LRU")
    s = random_state(layer, x.shape[0], rng)
    difference = layer(x, integration_timesteps=tau, initial_state=s) - layer(x, integration_timesteps=tau)
    log_lambda = -np.exp(layer.params["nu_log"]) + 1j * np.exp(layer.params["theta_log"])     # (N,)
    steps = np.ones(x.shape[:2]) if tau is None else tau                                         # (b, L)
    decay = np.exp(np.cumsum(steps, axis=1)[..., None] * log_lambda)                             # (b, L, N)
    C = layer.params["C_re"] + 1j * layer.params["C_im"]                                         # (H, N)
    expected = layer.kappa * np.einsum("hn,bln->blh", C, decay * s[:, None]).real                # (b, L, H)
    assert_close(difference, expected, what="LRU initial-state contribution")


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_causality(name, data):
    layer, x, tau, rng = draw_case(data, name)
    L = x.shape[1]
    t = data.draw(st.integers(0, L - 1), label="perturbed step")
    method = data.draw(st.sampled_from([m for m in layer_methods(layer) if tau is None or m != "fft"]), label="method")
    perturbed = x.copy()
    perturbed[:, t:] += rng.normal(size=perturbed[:, t:].shape)
    y, y_perturbed = layer(x, integration_timesteps=tau, method=method), layer(perturbed, integration_timesteps=tau,
                                                                                method=method)
    assert_close(y_perturbed[:, :t], y[:, :t], what=f"{name} outputs before step {t} (method={method})")


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_batched_equals_per_sequence_with_lengths(name, data):
    """Padding invariance: y[i, :len_i] and the state at len_i − 1 equal the unpadded sequence's."""
    layer, x, tau, rng = draw_case(data, name)
    batch, L = x.shape[:2]
    lengths = lengths_vector(rng, batch, L)
    method = data.draw(st.sampled_from([m for m in layer_methods(layer) if tau is None or m != "fft"]), label="method")
    x[np.arange(L)[None, :] >= lengths[:, None]] = 1e3 * rng.normal()             # garbage in the padding
    y, state = layer(x, lengths, integration_timesteps=tau, return_state=True, method=method)
    for i, n in enumerate(lengths):
        tau_i = None if tau is None else tau[i:i + 1, :n]
        y_i, state_i = layer(x[i:i + 1, :n], integration_timesteps=tau_i, return_state=True, method="sequential")
        assert_close(y[i:i + 1, :n], y_i, what=f"{name} batch row {i}, length {n}")
        assert_close(state_row(state, i), state_i, what=f"{name} state at len − 1 for row {i}")


# ----------------------------------------------------------------------------- event streams
@pytest.mark.parametrize("name", TIMESTEP_LAYERS)
@given(data=st.data())
def test_unit_timesteps_equal_the_synchronous_layer(name, data):
    layer, x, _, _ = draw_case(data, name, events=False)
    y_sync, state_sync = layer(x, return_state=True)
    y_tau, state_tau = layer(x, integration_timesteps=np.ones(x.shape[:2]), return_state=True)
    assert_close(y_tau, y_sync, what=f"{name} τ ≡ 1")
    assert_close(state_tau, state_sync, what=f"{name} state with τ ≡ 1")


@pytest.mark.parametrize("name", [n for n in TIMESTEP_LAYERS if n in WINDOWLESS])
@given(data=st.data())
def test_zero_timestep_holds_the_state(name, data):
    """τ = 0 gives Ā = 1: the state does not decay and only the input term (if any) is added."""
    layer, x, _, rng = draw_case(data, name, events=False)
    batch = x.shape[0]
    s, zero_gap = random_state(layer, batch, rng), np.zeros(batch)
    _, held = layer.step(np.zeros_like(x[:, 0]), s, zero_gap)
    assert_close(held, s, what=f"{name} state after a zero gap with zero input")
    if layer.config.get("discretization") in INPUT_SCALES_WITH_STEP:
        _, input_only = layer.step(x[:, 0], layer.init_state(batch), zero_gap)
        assert_close(input_only, np.zeros_like(input_only), what=f"{name} zero gap: γ̄ ∝ Δ_A = 0")


@pytest.mark.parametrize("name", [n for n in TIMESTEP_LAYERS if layer_config(n).additive_input and n in WINDOWLESS])
@given(data=st.data())
def test_zero_timestep_adds_the_input_term_to_the_held_state(name, data):
    """τ = 0 with an input: the held state plus the input term alone (the delta rule's write is not additive;
    its τ = 0 step is tested with the matrix-state layers)."""
    layer, x, _, rng = draw_case(data, name, events=False)
    batch = x.shape[0]
    s, zero_gap = random_state(layer, batch, rng), np.zeros(batch)
    _, with_input = layer.step(x[:, 0], s, zero_gap)
    _, input_only = layer.step(x[:, 0], layer.init_state(batch), zero_gap)
    assert_close(with_input, s + input_only, what=f"{name} zero gap: state + input term")


@pytest.mark.parametrize("name", TIMESTEP_LAYERS)
@given(data=st.data())
def test_kernel_view_refuses_timesteps_and_initial_state(name, data):
    layer, x, _, rng = draw_case(data, name, events=False, max_len=20)
    with pytest.raises(ValueError, match="fft"):
        layer(x, integration_timesteps=timesteps(rng, *x.shape[:2]), method="fft")
    with pytest.raises(ValueError, match="fft"):
        layer(x, initial_state=random_state(layer, x.shape[0], rng), method="fft")


@pytest.mark.parametrize("name", NO_TIMESTEP_LAYERS)
@given(data=st.data())
def test_layers_without_timesteps_refuse_them(name, data):
    layer, x, _, rng = draw_case(data, name, events=False, max_len=20)
    tau = timesteps(rng, *x.shape[:2])
    with pytest.raises(ValueError, match="integration_timestep"):
        layer(x, integration_timesteps=tau)
    with pytest.raises(ValueError, match="integration_timestep"):
        layer.step(x[:, 0], layer.init_state(x.shape[0]), tau[:, 0])


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(2))
@given(data=st.data())
def test_long_sequence_is_finite_and_step_equals_scan(name, data):
    """L = 16384 with |Ā| near 1 (the entry's slow_decay overrides): finite, and step() == the fast scan."""
    entry = layer_config(name)
    config = dict(data.draw(entry.configs(), label="config"), **entry.slow_decay)
    layer = layer_class(name)(**config)
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(1, LONG_L, config["d_model"]))                          # (1, L, H)
    tau = timesteps(rng, 1, LONG_L) if entry.timesteps and data.draw(st.booleans(), label="events") else None
    method = "numba" if "numba" in layer_methods(layer) else "sequential"
    y, state = layer(x, integration_timesteps=tau, return_state=True, method=method)
    assert np.isfinite(y).all() and all_finite(state)
    y_steps, state_steps = run_steps(layer, x, tau)
    assert_close(y_steps, y, what=f"{name} step() vs {method} at L = {LONG_L}")
    assert_close(state_steps, state, what=f"{name} final state at L = {LONG_L}")


# Parameter values that make Ā underflow to exactly 0 (|Ā| = exp(−1000) or smaller).
UNDERFLOW = {"LRU": {"nu_log": 7.0}, "S5": {"log_dt": 10.0}, "S4D": {"log_dt": 10.0}}


@pytest.mark.parametrize("name", sorted(UNDERFLOW))
@settings(max_examples=examples(10))
@given(data=st.data())
def test_underflowed_transition_gives_no_nan(name, data):
    layer, x, tau, rng = draw_case(data, name, max_len=40)
    for key, value in UNDERFLOW[name].items():
        layer.params[key] = np.full_like(layer.params[key], value)
    outputs = [layer(x, integration_timesteps=tau, method=m) for m in layer_methods(layer) if tau is None or m != "fft"]
    outputs.append(run_steps(layer, x, tau)[0])
    for y in outputs:
        assert np.isfinite(y).all()
        assert_close(y, outputs[0], what=f"{name} views agree with Ā = 0")
    if tau is None:
        assert np.isfinite(layer.kernel(x.shape[1])).all()
