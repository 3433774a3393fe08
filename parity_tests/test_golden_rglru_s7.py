"""The backend reproduces the official RG-LRU (recurrentgemma) and S7 (the authors' code) golden outputs (SPEC §4.9,
§4.10), in float64 through `from_reference`: whole sequences, resets, the Griffin block, event timesteps, and the
streaming view of the block (conv window carried in the state). Tolerance: the "golden" row.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.golden_rglru_s7 import RGLRU_FILES, S7_FILES, rglru_case, s7_case
from parity_tests.strategies import (batch_sizes, examples, lengths_vector, rng_from, seeds, sequence_lengths,
                                     timesteps)
from reference.layers.rglru import RGLRU

DTYPE = "float64"


@pytest.mark.parametrize("name", sorted(RGLRU_FILES))
def test_rglru_golden(backend, name):
    backend.require_reset_convention("RG-LRU resets (segment_pos == 0)")
    reference, x, resets, y, h_last = rglru_case(name)
    module = backend.build(reference, DTYPE, subject="RGLRU")
    resets_native = backend.to(resets, DTYPE)
    y_b, state_b = module(backend.to(x, DTYPE), resets=resets_native, return_state=True)
    check(backend.to_numpy(y_b), y, dtype=DTYPE, row="golden", subject="RGLRU", prop=f"golden {name}")
    if h_last is not None:
        check(backend.to_numpy(state_b), h_last, dtype=DTYPE, row="golden", subject="RGLRU", prop=f"golden {name} h")


@pytest.mark.parametrize("name", sorted(RGLRU_FILES))
def test_rglru_golden_step_by_step(backend, name):
    backend.require_reset_convention("RG-LRU resets (segment_pos == 0)")
    reference, x, resets, y, _ = rglru_case(name)
    module = backend.build(reference, DTYPE, subject="RGLRU")
    state, outputs = module.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = module.step(backend.to(x[:, t], DTYPE), state, reset=backend.to(resets[:, t], DTYPE))
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), y, dtype=DTYPE, row="golden", subject="RGLRU", prop=f"golden {name} step")


@pytest.mark.parametrize("name", sorted(S7_FILES))
def test_s7_golden(backend, name):
    reference, x, tau, y = s7_case(name)
    module = backend.build(reference, DTYPE, subject="S7")
    y_b = module(backend.to(x, DTYPE), integration_timesteps=backend.to(tau, DTYPE))
    check(backend.to_numpy(y_b), y, dtype=DTYPE, row="golden", subject="S7", prop=f"golden {name}")


@pytest.mark.parametrize("name", sorted(S7_FILES))
def test_s7_golden_step_by_step(backend, name):
    reference, x, tau, y = s7_case(name)
    module = backend.build(reference, DTYPE, subject="S7")
    state, outputs = module.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = module.step(backend.to(x[:, t], DTYPE), state, backend.to(tau[:, t], DTYPE))
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), y, dtype=DTYPE, row="golden", subject="S7", prop=f"golden {name} step")


# ----------------------------------------------------------------------------- the Griffin block beyond the files
@settings(max_examples=examples(20))
@given(data=st.data())
def test_rglru_block_parity(backend, dtype, data):
    """Random Griffin blocks (outside the registry: their state carries the conv window): forward with τ, resets,
    lengths and an initial state, the final state (conv window + h), and repeated step()."""
    backend.require_reset_convention("RG-LRU resets and conv window")
    rng = rng_from(data.draw(seeds, label="data seed"))
    width, heads = data.draw(st.sampled_from([(2, 1), (4, 2), (6, 3)]), label="lru_width, num_heads")
    config = {"d_model": data.draw(st.integers(1, 4), label="d_model"), "num_heads": heads, "block": True,
              "lru_width": width, "conv1d_temporal_width": data.draw(st.integers(1, 4), label="conv width"),
              "seed": data.draw(seeds, label="seed")}
    reference = RGLRU(**config)
    module = backend.build(reference, dtype, subject="RGLRU")
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(sequence_lengths(20), label="L")
    x = rng.normal(size=(batch, L, config["d_model"]))                                  # (b, L, H)
    tau, lengths = timesteps(rng, batch, L), lengths_vector(rng, batch, L)
    resets = rng.uniform(size=(batch, L)) < 0.2                                         # (b, L)
    state0 = rng.normal(size=reference.init_state(batch).shape)                         # (b, W, E)
    y, final = reference(x, lengths, tau, initial_state=state0, return_state=True, resets=resets)
    y_b, final_b = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype),
                          initial_state=backend.to(state0, dtype), return_state=True, resets=backend.to(resets, dtype))
    valid = np.arange(L)[None, :] < lengths[:, None]                                    # (b, L)
    check(backend.to_numpy(y_b)[valid], y[valid], dtype=dtype, subject="RGLRU", prop="block forward")
    check(backend.to_numpy(final_b), final, dtype=dtype, subject="RGLRU", prop="block final state")
    y_full = reference(x, None, tau, resets=resets)
    state, outputs = module.init_state(batch), []
    for t in range(L):
        y_t, state = module.step(backend.to(x[:, t], dtype), state, backend.to(tau[:, t], dtype),
                                 reset=backend.to(resets[:, t], dtype))
        outputs.append(backend.to_numpy(y_t))
    check(np.stack(outputs, axis=1), y_full, dtype=dtype, subject="RGLRU", prop="block step")
