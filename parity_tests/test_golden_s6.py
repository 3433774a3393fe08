"""S6 (SPEC §4.8) golden vectors of the official code, reproduced by the backend (float64, through `from_reference`),
and the Mamba mixer (block=True, whose state is the pair (conv state, h)) against the reference.

The reference layer is built with `S6.from_params(config, params)` from each file's upstream-named arrays
(parity_tests/golden/README.md gives provenance and layouts); the backend twin must give the file's outputs at the
golden tolerance (rtol 1e-9, atol 1e-10·max(1, max|y|)). The bare layer's random-config parity runs in
test_parity.py through the registry; block=True is drawn here.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.golden_s6 import golden_layer, load
from parity_tests.strategies import CONTINUOUS_METHODS, batch_sizes, rng_from, seeds, sequence_lengths, timesteps
from reference.layers.s6 import S6

EVENT_METHODS = ("exp_euler", "zoh", "bilinear", "async", "dirac")


def twin(backend, reference, dtype="float64"):
    from_reference, cast = backend.require("from_reference", "cast")
    return cast(from_reference(reference), dtype, backend.device)


def test_golden_bare(backend):
    golden = load("s6_bare_L17")
    module = twin(backend, golden_layer(golden))
    y, h = module(backend.to(golden["x"], "float64"), return_state=True)
    check(backend.to_numpy(y), golden["y"], dtype="float64", subject="S6", prop="golden bare y", row="golden")
    check(backend.to_numpy(h), golden["h_last"], dtype="float64", subject="S6", prop="golden bare h_last", row="golden")


def test_golden_block(backend):
    golden = load("s6_block_L17")
    module = twin(backend, golden_layer(golden, block=True))
    y = module(backend.to(golden["x"], "float64"))
    check(backend.to_numpy(y), golden["y"], dtype="float64", subject="S6", prop="golden block y", row="golden")


@pytest.mark.parametrize("discretization", EVENT_METHODS)
def test_golden_event(backend, discretization):
    golden = load("s6_event_L17")
    module = twin(backend, golden_layer(golden, discretization))
    y = module(backend.to(golden["x"], "float64"),
               integration_timesteps=backend.to(golden["integration_timesteps"], "float64"))
    check(backend.to_numpy(y), golden[f"y_{discretization}"], dtype="float64", subject="S6",
          prop=f"golden event {discretization}", row="golden")


def test_golden_unit_timesteps_are_synchronous(backend):
    """τ ≡ 1 gives lrnnx's synchronous output (SPEC §4.8 Decision: not lrnnx's event form)."""
    golden = load("s6_lrnnx_event_L17")
    module = twin(backend, golden_layer(golden))
    y = module(backend.to(golden["x"], "float64"),
               integration_timesteps=backend.to(golden["integration_timesteps"], "float64"))
    check(backend.to_numpy(y), golden["y_synchronous"], dtype="float64", subject="S6", prop="golden τ ≡ 1",
          row="golden")


# ----------------------------------------------------------------------------- the Mamba mixer, random configs
@st.composite
def block_cases(draw):
    config = {"d_model": draw(st.integers(1, 3)), "d_state": draw(st.integers(1, 3)), "block": True,
              "expand": draw(st.integers(1, 2)), "d_conv": draw(st.integers(1, 4)),
              "conv_bias": draw(st.booleans()), "bias": draw(st.booleans()),
              "discretization": draw(st.sampled_from(CONTINUOUS_METHODS)), "seed": draw(seeds)}
    rng = rng_from(draw(seeds))
    batch, L = draw(batch_sizes), draw(sequence_lengths(20))
    x = rng.normal(size=(batch, L, config["d_model"]))                              # (b, L, H)
    tau = timesteps(rng, batch, L) if draw(st.booleans()) else None                 # (b, L)
    return config, x, tau, rng


@settings(max_examples=15)
@given(case=block_cases())
def test_block_forward_lengths_state_and_step(backend, dtype, case):
    config, x, tau, rng = case
    reference = S6(**config)
    module = twin(backend, reference, dtype)
    batch, L = x.shape[:2]
    lengths = rng.integers(1, L + 1, batch)
    zero = reference.init_state(batch)
    state = (rng.normal(size=zero[0].shape), rng.normal(size=zero[1].shape))
    y, (conv, h) = reference(x, lengths, tau, initial_state=state, return_state=True)
    y_b, (conv_b, h_b) = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype),
                                initial_state=tuple(backend.to(s, dtype) for s in state), return_state=True)
    valid = np.arange(L)[None, :] < lengths[:, None]                                # (b, L)
    check(backend.to_numpy(y_b)[valid], y[valid], dtype=dtype, subject="S6 block", prop="forward, lengths, h0")
    check(backend.to_numpy(conv_b), conv, dtype=dtype, subject="S6 block", prop="final conv state")
    check(backend.to_numpy(h_b), h, dtype=dtype, subject="S6 block", prop="final h")
    expected = reference(x, integration_timesteps=tau)
    state_b, outputs = module.init_state(batch), []
    for t in range(L):
        y_t, state_b = module.step(backend.to(x[:, t], dtype), state_b,
                                   None if tau is None else backend.to(tau[:, t], dtype))
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), expected, dtype=dtype, subject="S6 block", prop="step")
