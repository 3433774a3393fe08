"""Reference == backend for every registered layer (SPEC §7, §8, §9): one parity helper over the registry.

Each property builds a reference layer from a hypothesis-drawn config and seed, moves its parameters
to the backend with `from_reference`, runs both on the same input, and compares under the tolerance
table for the dtype (float64 tight, float32 scaled). Gradients: backend autograd against central
finite differences of the float64 reference forward, for the input and every parameter.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.layers import REGISTRY
from parity_tests.backend import check
from parity_tests.strategies import batch_sizes, layer_config, lengths_vector, rng_from, seeds, sequence_lengths, timesteps
from parity_tests.tolerances import FD_STEP

LAYERS = sorted(REGISTRY)


def build(backend, name, config, dtype):
    """(reference layer, backend module) with identical parameters; skips when the backend lacks the layer."""
    from_reference, cast = backend.require("from_reference", "cast")
    reference = REGISTRY[name](**config)
    try:
        module = from_reference(reference)
    except (KeyError, NotImplementedError) as missing:
        backend.require(f"layer {name}")          # counts and skips: the backend does not provide this layer
        raise missing
    return reference, cast(module, dtype, backend.device)


def draw_case(data, name, *, max_len=40, events=False):
    config = data.draw(layer_config(name).configs(), label="config")
    batch = data.draw(batch_sizes, label="batch")
    L = data.draw(sequence_lengths(max_len), label="L")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(batch, L, config["d_model"]))
    tau = timesteps(rng, batch, L) if events and layer_config(name).timesteps else None
    return config, x, tau, rng


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_forward(backend, dtype, name, data):
    config, x, _, _ = draw_case(data, name)
    reference, module = build(backend, name, config, dtype)
    expected = reference(x)
    check(backend.to_numpy(module(backend.to(x, dtype))), expected, dtype=dtype, subject=name, prop="forward")


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_forward_with_timesteps(backend, dtype, name, data):
    if not layer_config(name).timesteps:
        return
    config, x, tau, _ = draw_case(data, name, events=True)
    reference, module = build(backend, name, config, dtype)
    expected = reference(x, integration_timesteps=tau)
    actual = module(backend.to(x, dtype), integration_timesteps=backend.to(tau, dtype))
    check(backend.to_numpy(actual), expected, dtype=dtype, subject=name, prop="forward with τ")


@pytest.mark.parametrize("name", LAYERS)
@given(data=st.data())
def test_lengths_initial_state_and_final_state(backend, dtype, name, data):
    config, x, tau, rng = draw_case(data, name, events=True)
    reference, module = build(backend, name, config, dtype)
    lengths = lengths_vector(rng, x.shape[0], x.shape[1])
    zero = reference.init_state(x.shape[0])
    state = rng.normal(size=zero.shape) + (1j * rng.normal(size=zero.shape) if np.iscomplexobj(zero) else 0)
    y, final = reference(x, lengths, tau, initial_state=state, return_state=True)
    y_b, final_b = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype),
                          initial_state=backend.to(state, dtype), return_state=True)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]                       # (b, L)
    check(backend.to_numpy(y_b)[valid], y[valid], dtype=dtype, subject=name, prop="forward with lengths, h0")
    check(backend.to_numpy(final_b), final, dtype=dtype, subject=name, prop="final state")


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=10)
@given(data=st.data())
def test_step_by_step(backend, dtype, name, data):
    config, x, tau, _ = draw_case(data, name, max_len=12, events=True)
    reference, module = build(backend, name, config, dtype)
    expected = reference(x, integration_timesteps=tau)
    state, outputs = module.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        tau_t = None if tau is None else backend.to(tau[:, t], dtype)
        y_t, state = module.step(backend.to(x[:, t], dtype), state, tau_t)
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), expected, dtype=dtype, subject=name, prop="step")


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=10)
@given(data=st.data())
def test_kernel(backend, dtype, name, data):
    config, x, _, _ = draw_case(data, name)
    reference, module = build(backend, name, config, dtype)
    if not hasattr(reference, "kernel"):
        return
    L = x.shape[1]
    check(backend.to_numpy(module.kernel(L)), reference.kernel(L), dtype=dtype, subject=name, prop="kernel")


def _finite_difference(f, x):
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = FD_STEP
        grad[index] = (f(x + step) - f(x - step)) / (2 * FD_STEP)
    return grad


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=4)
@given(data=st.data())
def test_gradients_match_reference_finite_differences(backend, name, data):
    """Backend autograd (float64) == central differences of the reference forward, for x and every parameter."""
    dtype = "float64"
    config, x, tau, rng = draw_case(data, name, max_len=6, events=True)
    reference, module = build(backend, name, config, dtype)
    G = rng.normal(size=x.shape)

    def loss_x(x_):
        return float(np.sum(G * reference(x_, integration_timesteps=tau)))

    grads = backend.require("vjp")[0](lambda x_: module(x_, integration_timesteps=backend.to(tau, dtype)),
                                      [backend.to(x, dtype)], backend.to(G, dtype))
    check(backend.to_numpy(grads[0]), _finite_difference(loss_x, x), dtype=dtype, subject=name, prop="grad x",
          row="finite_difference")


    parameter_vjp = backend.require("parameter_vjp")[0]
    call = lambda m: m(backend.to(x, dtype), integration_timesteps=backend.to(tau, dtype))  # noqa: E731
    backend_grads = parameter_vjp(module, call, backend.to(G, dtype))            # {name: gradient}
    for pname, value in reference.params.items():
        if pname not in backend_grads:                                            # a buffer (e.g. LSSL's fixed A)
            continue

        def loss_p(v, pname=pname):
            perturbed = type(reference).from_params(reference.config, {**reference.params, pname: v})
            return float(np.sum(G * perturbed(x, integration_timesteps=tau)))

        check(backend.to_numpy(backend_grads[pname]), _finite_difference(loss_p, value), dtype=dtype,
              subject=name, prop=f"grad {pname}", row="finite_difference")
