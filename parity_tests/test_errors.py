"""Every bad input raises the documented exception type in the backend too (SPEC §7; the catalogue of mistakes
is parity_tests/error_catalogue.py, and the reference's own errors are tested in reference_tests/).

A conformant error is the catalogue's exception type (ValueError / TypeError), raised by the backend for the same
drawn invalid call; the message must also contain the catalogue's excerpts only when exact errors are opted in
(`--exact-errors`, or `exact_error_messages` in the adapter's DECLARATIONS): wording is house style, not
conformance. `python -m parity_tests.test_errors` prints the README table "Errors you are most likely to meet".
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.error_catalogue import CATALOGUE, LAYERS, README_TITLE, backend_side, expect_error, \
    readme_table
from parity_tests.strategies import examples, layer_class, layer_config

BACKEND_CASES = [case for case in CATALOGUE if "backend" in case.sides]


@pytest.mark.parametrize("case", BACKEND_CASES, ids=[c.name for c in BACKEND_CASES])
@settings(max_examples=examples(3))
@given(data=st.data())
def test_bad_input_raises_documented_error(backend, exact_errors, case, data):
    call = case.build(data.draw)
    expect_error(case, call, backend_side(backend), messages=exact_errors)


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(3))
@given(data=st.data())
def test_check_finite_opt_out(backend, name, data):
    """The backend takes `check_finite=False` under that name and then computes on (non-finite) input."""
    config = data.draw(layer_config(name).configs(), label="config")
    backend.supports(name, config, "float64")
    x = np.ones((1, 4, config["d_model"]))                                          # (b, L, H)
    x[0, 2, -1] = np.nan
    ref = layer_class(name)(**config)
    with np.errstate(invalid="ignore"):                                             # NaN in, by request
        y = ref(x, check_finite=False)
    side = backend_side(backend)
    module = side.twin(ref)
    assert "check_finite" in inspect.signature(module.forward if hasattr(module, "forward") else module).parameters
    y_b = backend.to_numpy(module(side.to(x), check_finite=False))
    assert y_b.shape == y.shape, f"{name}: check_finite=False must compute on"
    if layer_config(name).nan_causal:
        assert np.array_equal(np.isfinite(y_b), np.isfinite(y)), f"{name}: check_finite=False must compute on"
    else:   # a chunkwise method may carry the NaN back to its chunk's earlier outputs, never make one finite
        assert not np.isfinite(y_b[~np.isfinite(y)]).any(), f"{name}: a non-finite reference output came out finite"


if __name__ == "__main__":
    print(README_TITLE + "\n")
    print(readme_table())
