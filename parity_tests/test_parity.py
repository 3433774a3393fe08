"""Reference == backend for every suite layer (SPEC §7, §8, §9): one parity helper over the registry.

Each property builds a reference layer from a hypothesis-drawn config and seed, moves its parameters to the
backend with `from_reference`, runs both on the same input, and compares under the tolerance table for the
dtype (float64 tight, float32 scaled by max|y|; a declared float32 accumulator holds float64 to the float32 row;
a layer with a `readout_bound` hook — the matrix-state layers' per-head RMSNorm — has the float32 bound of its
state path's output carried through the read-out's Jacobian, element by element).
Properties apply to the layers whose LayerConfig flags allow them (parametrized, never skipped inside):

* forward; forward with τ (layers taking timesteps); lengths + initial state + final state; step by step;
  the kernel (time-invariant layers); the state path alone (feed-through parameters set to 0, so a direct
  x -> y term cannot hide a wrong recurrence); small outputs (inputs × 1e-5: the float32 tolerance scales
  with max|y|, so a 1 % error on small outputs fails);
* parity at perturbed parameters (every parameter moved, plus each layer's extremes: S5 Re Λ up to +0.1 under
  clip_eigs, Δ from 1e-6, LRU eigenvalues at the ring edges): parameters a backend ignores show here;
* every method the layer lists (FFT included) at L = 2049 and 4097 with slow decay (|Ā| near 1): a truncated
  convolution kernel shows here;
* float32 with slow modes (|λΔ| ≈ 1e-5): an inaccurate φ1 shows here; Centaurus in its four canonical modes;
* gradients: backend autograd against central finite differences of the float64 reference, for the input and
  every parameter, under exactly the reference's parameter names (missing or extra keys fail).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import Unsupported, check, check_keys
from parity_tests.helpers import finite_difference
from parity_tests.strategies import (LAYER_CONFIGS, batch_sizes, examples, layer_class, layer_config, lengths_vector,
                                     perturbed_params, random_state, rng_from, seeds, sequence_lengths, suite_layers,
                                     timesteps)

LAYERS = suite_layers()


def flagged(flag):
    """The layers whose LayerConfig flag holds (a layer without an entry stays in LAYERS, where it fails loudly)."""
    return [n for n in LAYERS if n in LAYER_CONFIGS and flag(LAYER_CONFIGS[n])]


WITH_TIMESTEPS = flagged(lambda c: c.timesteps)
TIME_INVARIANT = [n for n in flagged(lambda c: not c.input_dependent) if hasattr(layer_class(n), "kernel")]
WITH_FEEDTHROUGH = flagged(lambda c: c.feedthrough)
LONG_LENGTHS = (2049, 4097)
SLOW_MODE_DT = 1e-5                          # |λΔ| ≈ 1e-5 for |λ| ≈ 1
SMALL_SCALE = 1e-5                           # input scale of the small-output property
CATEGORICAL = ("discretization", "mode", "init", "conj_sym", "clip_eigs", "memory", "learn_A")


def build(backend, name, config, dtype, params=None):
    """(reference layer, backend module) with identical parameters (`params` replaces the initial ones)."""
    backend.supports(name, config, dtype)
    reference = layer_class(name)(**config)
    if params is not None:
        reference = type(reference).from_params(reference.config, params)
    return reference, backend.build(reference, dtype, subject=name)


def describe(config):
    """The drawn categorical options, named in a failure message (e.g. which discretisation failed)."""
    return ", ".join(f"{k}={config[k]}" for k in CATEGORICAL if k in config)


def draw_case(data, name, *, max_len=40, events=False, overrides=None, backend=None):
    """(config, x (b, L, H), τ (b, L) or None, rng); τ only for `events`, a layer taking timesteps and a
    backend declaring them."""
    config = {**data.draw(layer_config(name).configs(), label="config"), **(overrides or {})}
    batch = data.draw(batch_sizes, label="batch")
    L = data.draw(sequence_lengths(max_len), label="L")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(batch, L, config["d_model"]))                              # (b, L, H)
    declared = backend is None or backend.declarations["timesteps"]
    tau = timesteps(rng, batch, L) if events and layer_config(name).timesteps and declared else None
    return config, x, tau, rng


def reference_output(name, reference, run):
    """(run(), the bound its read-out propagates (b, L, H) or None): the layer's `readout_bound` hook, if any."""
    hook = LAYER_CONFIGS[name].readout_bound if name in LAYER_CONFIGS else None
    return (run(), None) if hook is None else hook(reference, run)


def forward_parity(backend, dtype, name, config, x, prop, reference, module, tau=None, method=None):
    expected, propagated = reference_output(name, reference, lambda: reference(x, integration_timesteps=tau))
    kwargs = {} if method is None else {"method": method}
    actual = module(backend.to(x, dtype), integration_timesteps=backend.to(tau, dtype), **kwargs)
    check(backend.to_numpy(actual), expected, dtype=dtype, row=backend.row(dtype), subject=name, prop=prop,
          detail=describe(config), propagated=propagated)


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_forward(backend, dtype, name, data):
    config, x, _, _ = draw_case(data, name)
    reference, module = build(backend, name, config, dtype)
    forward_parity(backend, dtype, name, config, x, "forward", reference, module)


@pytest.mark.parametrize("name", WITH_TIMESTEPS)
@given(data=st.data())
def test_forward_with_timesteps(backend, dtype, name, data):
    if not backend.declarations["timesteps"]:
        raise Unsupported("integration timesteps not declared")
    config, x, tau, _ = draw_case(data, name, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    forward_parity(backend, dtype, name, config, x, "forward with τ", reference, module, tau=tau)


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_lengths_initial_state_and_final_state(backend, dtype, name, data):
    backend.require_reset_convention("lengths, initial and final state")
    config, x, tau, rng = draw_case(data, name, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    lengths = lengths_vector(rng, x.shape[0], x.shape[1])
    state = random_state(rng, reference.init_state(x.shape[0]))
    (y, final), propagated = reference_output(
        name, reference, lambda: reference(x, lengths, tau, initial_state=state, return_state=True))
    y_b, final_b = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype),
                          initial_state=backend.to(backend.state_in(reference, state), dtype), return_state=True)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]                       # (b, L)
    row, detail = backend.row(dtype), describe(config)
    check(backend.to_numpy(y_b)[valid], y[valid], dtype=dtype, row=row, subject=name,
          prop="forward with lengths, h0", detail=detail, propagated=None if propagated is None else propagated[valid])
    check(backend.state_out(reference, backend.to_numpy(final_b)), final, dtype=dtype, row=row, subject=name,
          prop="final state", detail=detail)


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_step_by_step(backend, dtype, name, data):
    config, x, tau, _ = draw_case(data, name, max_len=12, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    expected, propagated = reference_output(name, reference, lambda: reference(x, integration_timesteps=tau))
    state, outputs = module.init_state(x.shape[0]), []
    zero = backend.state_in(reference, reference.init_state(x.shape[0]))
    check(backend.to_numpy(state), zero, dtype=dtype, subject=name, prop="init_state", detail=describe(config))
    for t in range(x.shape[1]):
        tau_t = None if tau is None else backend.to(tau[:, t], dtype)
        y_t, state = module.step(backend.to(x[:, t], dtype), state, tau_t)
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), expected, dtype=dtype, row=backend.row(dtype), subject=name, prop="step",
          detail=describe(config), propagated=propagated)


@pytest.mark.parametrize("name", TIME_INVARIANT)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_kernel(backend, dtype, name, data):
    config, x, _, _ = draw_case(data, name)
    reference, module = build(backend, name, config, dtype)
    L = x.shape[1]
    check(backend.to_numpy(module.kernel(L)), reference.kernel(L), dtype=dtype, row=backend.row(dtype),
          subject=name, prop="kernel", detail=describe(config))


@pytest.mark.parametrize("name", WITH_FEEDTHROUGH)
@given(data=st.data())
def test_state_path_without_feedthrough(backend, dtype, name, data):
    """Feed-through parameters (D) set to 0: y is the state path alone, so the tolerance (scaled by max|y|) is
    not set by a direct x -> y term that a wrong recurrence would hide behind."""
    config, x, tau, _ = draw_case(data, name, events=True, backend=backend)
    params = dict(layer_class(name)(**config).params)
    params.update({k: np.zeros_like(params[k]) for k in layer_config(name).feedthrough if k in params})
    reference, module = build(backend, name, config, dtype, params=params)
    forward_parity(backend, dtype, name, config, x, "state path (D = 0)", reference, module, tau=tau)


@pytest.mark.parametrize("name", flagged(lambda c: c.linear))
@given(data=st.data())
def test_forward_at_small_scale(backend, dtype, name, data):
    """Inputs × SMALL_SCALE, so every output is small (y is linear in x): the float32 tolerance scales with
    max|y| (SPEC §8), so a relative error that a tolerance floored at 1 would let through fails here."""
    config, x, tau, _ = draw_case(data, name, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    forward_parity(backend, dtype, name, config, SMALL_SCALE * x, "forward at small scale", reference, module,
                   tau=tau)


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_forward_at_perturbed_parameters(backend, dtype, name, data):
    """Parity away from the initialisation: every parameter moved, plus the layer's extremes."""
    config, x, tau, rng = draw_case(data, name, events=True, backend=backend)
    params = perturbed_params(name, layer_class(name)(**config).params, rng)
    reference, module = build(backend, name, config, dtype, params=params)
    forward_parity(backend, dtype, name, config, x, "forward at perturbed parameters", reference, module, tau=tau)


def _long_cases():
    return [(name, method, L) for name in flagged(lambda c: c.slow_decay)
            for method in layer_class(name).methods for L in LONG_LENGTHS]


@pytest.mark.parametrize("name, method, L", _long_cases())
def test_every_method_at_long_length_with_slow_decay(backend, name, method, L):
    """Each method the layer lists (FFT included) at L = 2049 / 4097 with |Ā| near 1, float64: every lag of the
    recurrence matters (a convolution kernel cut at 2048 lags fails here)."""
    backend.supports(name, {}, "float64", method=method)
    config = {**_first_config(name), **layer_config(name).slow_decay}
    reference, module = build(backend, name, config, "float64")
    x = rng_from(L).normal(size=(1, L, config["d_model"]))                          # (1, L, H)
    forward_parity(backend, "float64", name, config, x, f"method {method} at long L", reference, module,
                   method=method)


@pytest.mark.parametrize("name", flagged(lambda c: "dt_min" in c.slow_decay))
@given(data=st.data())
def test_float32_with_slow_modes(backend, name, data):
    """float32 with Δ = 1e-5 (|λΔ| ≈ 1e-5) and the feed-through set to 0: γ̄ = Δ·φ1(λΔ) must be accurate where
    (e^z − 1)/z cancels catastrophically (a direct x -> y term would otherwise set the tolerance and hide it)."""
    overrides = {**layer_config(name).slow_decay, "dt_min": SLOW_MODE_DT, "dt_max": SLOW_MODE_DT}
    config, x, tau, _ = draw_case(data, name, overrides=overrides)
    params = dict(layer_class(name)(**config).params)
    params.update({k: np.zeros_like(params[k]) for k in layer_config(name).feedthrough if k in params})
    reference, module = build(backend, name, config, "float32", params=params)
    forward_parity(backend, "float32", name, config, x, "float32 slow modes", reference, module)


CENTAURUS_MODES = ("neck", "pointwise", "dws", "full") if "Centaurus" in LAYERS else ()


@pytest.mark.parametrize("mode", CENTAURUS_MODES)
@given(data=st.data())
def test_centaurus_modes(backend, dtype, mode, data):
    """Centaurus in each canonical mode with H >= 2 (the aliases pw, s5 are the reference's own business)."""
    d_model = data.draw(st.integers(2, 3), label="d_model")
    d_state = {"dws": d_model, "full": d_model ** 2}.get(mode, data.draw(st.integers(1, 4), label="d_state"))
    overrides = {"mode": mode, "d_model": d_model, "d_state": d_state}
    config, x, tau, _ = draw_case(data, "Centaurus", events=True, overrides=overrides, backend=backend)
    reference, module = build(backend, "Centaurus", config, dtype)
    forward_parity(backend, dtype, "Centaurus", config, x, f"mode {mode}", reference, module, tau=tau)


def _first_config(name):
    """A small deterministic config of a layer (the strategy's simplest example, width >= 2)."""
    from hypothesis import find
    return find(layer_config(name).configs(), lambda c: c["d_model"] >= 2)


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(6))
@given(data=st.data())
def test_gradients_match_reference_vjp(backend, name, data):
    """Backend gradients (float64) == the reference's hand-written VJP (SPEC §11), the exact oracle: for x and
    every parameter, with lengths and τ, at the tight table tolerance (finite differences below check the
    reference's forward without trusting its VJP)."""
    dtype = "float64"
    config, x, tau, rng = draw_case(data, name, max_len=12, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    vjp, parameter_vjp = backend.require("vjp", "parameter_vjp")
    lengths = lengths_vector(rng, x.shape[0], x.shape[1])
    G = rng.normal(size=x.shape) * (np.arange(x.shape[1])[None, :, None] < lengths[:, None, None])
    row, detail = backend.row(dtype), describe(config)
    grad_x, grad_params, _ = reference.vjp(G, x, lengths, tau)

    def call(m, x_=None):
        return m(backend.to(x, dtype) if x_ is None else x_, backend.to(lengths, dtype), backend.to(tau, dtype))

    grads = vjp(lambda x_: call(module, x_), [backend.to(x, dtype)], backend.to(G, dtype))
    check(backend.to_numpy(grads[0]), grad_x, dtype=dtype, subject=name, prop="vjp x", row=row, detail=detail)
    backend_grads = parameter_vjp(module, call, backend.to(G, dtype))            # {name: gradient}
    trainable = backend.trainable(reference, name)
    check_keys(backend_grads, trainable, subject=name, prop="parameter gradients")
    for pname in trainable:
        check(backend.to_numpy(backend_grads[pname]), grad_params[pname], dtype=dtype, subject=name,
              prop=f"vjp {pname}", row=row, detail=detail)


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(4))
@given(data=st.data())
def test_gradients_match_reference_finite_differences(backend, name, data):
    """Backend autograd (float64) == central differences of the reference forward, for x and every parameter,
    keyed by exactly the reference's parameter names (minus frozen ones and declared buffers)."""
    dtype = "float64"
    config, x, tau, rng = draw_case(data, name, max_len=6, events=True, backend=backend)
    reference, module = build(backend, name, config, dtype)
    vjp, parameter_vjp = backend.require("vjp", "parameter_vjp")
    G = rng.normal(size=x.shape)
    row, detail = backend.row(dtype), describe(config)
    fd_row = "finite_difference" if row == "float64" else row

    def loss_x(x_):
        return float(np.sum(G * reference(x_, integration_timesteps=tau)))

    grads = vjp(lambda x_: module(x_, integration_timesteps=backend.to(tau, dtype)), [backend.to(x, dtype)],
                backend.to(G, dtype))
    check(backend.to_numpy(grads[0]), finite_difference(loss_x, x), dtype=dtype, subject=name, prop="grad x",
          row=fd_row, detail=detail)

    call = lambda m: m(backend.to(x, dtype), integration_timesteps=backend.to(tau, dtype))  # noqa: E731
    backend_grads = parameter_vjp(module, call, backend.to(G, dtype))            # {name: gradient}
    trainable = backend.trainable(reference, name)
    check_keys(backend_grads, trainable, subject=name, prop="parameter gradients")
    for pname in trainable:
        def loss_p(v, pname=pname):
            perturbed = type(reference).from_params(reference.config, {**reference.params, pname: v})
            return float(np.sum(G * perturbed(x, integration_timesteps=tau)))

        check(backend.to_numpy(backend_grads[pname]), finite_difference(loss_p, reference.params[pname]),
              dtype=dtype, subject=name, prop=f"grad {pname}", row=fd_row, detail=detail)
