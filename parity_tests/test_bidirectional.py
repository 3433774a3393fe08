"""Reference == backend for bidirectional layers (SPEC §4.12), over the suite layers whose constructor has
`bidirectional`: forward with lengths (random padding values) and τ, every method the layer lists (the
two-sided FFT included), the two-sided kernel, and gradients (backend autograd against central finite
differences of the float64 reference) for the input and every parameter, the `_back` read-out included.

The registry-driven properties of test_parity.py never draw bidirectional=True (they call `step` and pass
initial states, which a bidirectional layer refuses); this module adds the option to the same configs.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check, check_keys
from parity_tests.helpers import finite_difference
from parity_tests.strategies import (batch_sizes, examples, layer_class, layer_config, lengths_vector, rng_from, seeds,
                                     sequence_lengths, suite_layers, timesteps)

LAYERS = [name for name in suite_layers() if "bidirectional" in inspect.signature(layer_class(name)).parameters]
TIME_INVARIANT = [name for name in LAYERS if not layer_config(name).input_dependent and hasattr(layer_class(name), "kernel")]
# Variants the registry configs do not draw (name, constructor overrides): the Griffin recurrent block.
VARIANTS = [pytest.param(name, None, id=name) for name in LAYERS] + \
    ([pytest.param("RGLRU", {"block": True, "num_heads": 1, "lru_width": 3, "conv1d_temporal_width": 3},
                   id="RGLRU-block")] if "RGLRU" in LAYERS else [])


def draw_case(data, name, *, max_len=40, events=True, overrides=None):
    """(config with bidirectional=True, x (b, L, H) with random padding values, lengths, τ or None, rng)."""
    config = {**data.draw(layer_config(name).configs(), label="config"), **(overrides or {}), "bidirectional": True}
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(sequence_lengths(max_len), label="L")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(batch, L, config["d_model"]))                              # (b, L, H)
    lengths = lengths_vector(rng, batch, L)                                          # (b,)
    x[np.arange(L)[None, :] >= lengths[:, None]] = 10 * rng.normal()                # garbage in the padding
    tau = timesteps(rng, batch, L) if events and layer_config(name).timesteps else None
    return config, x, lengths, tau, rng


def build(backend, name, config, dtype):
    backend.supports(name, config, dtype)
    reference = layer_class(name)(**config)
    return reference, backend.build(reference, dtype, subject=name)


@pytest.mark.parametrize("name, overrides", VARIANTS)
@given(data=st.data())
def test_forward_with_lengths_and_timesteps(backend, dtype, name, overrides, data):
    config, x, lengths, tau, _ = draw_case(data, name, events=data.draw(st.booleans(), label="events"),
                                           overrides=overrides)
    reference, module = build(backend, name, config, dtype)
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]                       # (b, L)
    expected = reference(x, lengths, tau)
    for method in [m for m in reference.methods if tau is None or m != "fft"]:
        backend.supports(name, config, dtype, method=method)
        actual = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype), method=method)
        check(backend.to_numpy(actual)[valid], expected[valid], dtype=dtype, row=backend.row(dtype), subject=name,
              prop=f"bidirectional forward ({method})")


@pytest.mark.parametrize("name", TIME_INVARIANT)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_two_sided_kernel(backend, dtype, name, data):
    config, x, _, _, _ = draw_case(data, name, events=False)
    reference, module = build(backend, name, config, dtype)
    L = x.shape[1]
    check(backend.to_numpy(module.kernel(L)), reference.kernel(L), dtype=dtype, row=backend.row(dtype),
          subject=name, prop="two-sided kernel")


@pytest.mark.parametrize("name, overrides", VARIANTS)
@settings(max_examples=examples(4))
@given(data=st.data())
def test_gradients_match_reference_finite_differences(backend, name, overrides, data):
    dtype = "float64"
    config, x, lengths, tau, rng = draw_case(data, name, max_len=6, overrides=overrides)
    reference, module = build(backend, name, config, dtype)
    vjp, parameter_vjp = backend.require("vjp", "parameter_vjp")
    G = rng.normal(size=x.shape) * (np.arange(x.shape[1])[None, :] < lengths[:, None])[..., None]   # valid only
    row = backend.row(dtype)
    fd_row = "finite_difference" if row == "float64" else row
    lengths_b, tau_b = backend.to(lengths, dtype), backend.to(tau, dtype)

    def loss_x(x_):
        return float(np.sum(G * reference(x_, lengths, tau)))

    grads = vjp(lambda x_: module(x_, lengths_b, tau_b), [backend.to(x, dtype)], backend.to(G, dtype))
    check(backend.to_numpy(grads[0]), finite_difference(loss_x, x), dtype=dtype, subject=name,
          prop="bidirectional grad x", row=fd_row)
    backend_grads = parameter_vjp(module, lambda m: m(backend.to(x, dtype), lengths_b, tau_b), backend.to(G, dtype))
    trainable = backend.trainable(reference, name)
    check_keys(backend_grads, trainable, subject=name, prop="bidirectional parameter gradients")
    for pname in trainable:
        def loss_p(v, pname=pname):
            perturbed = type(reference).from_params(reference.config, {**reference.params, pname: v})
            return float(np.sum(G * perturbed(x, lengths, tau)))

        check(backend.to_numpy(backend_grads[pname]), finite_difference(loss_p, reference.params[pname]),
              dtype=dtype, subject=name, prop=f"bidirectional grad {pname}", row=fd_row)
