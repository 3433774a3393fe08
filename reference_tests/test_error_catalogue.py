"""The reference raises the catalogue's documented exception type and message for every mistake a user can make
(parity_tests/error_catalogue.py), and README.md's table "Errors you are most likely to meet" matches it."""
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.error_catalogue import CATALOGUE, LAYERS, README_TITLE, REFERENCE, expect_error, \
    readme_table
from parity_tests.strategies import examples, layer_config
from reference.layers import REGISTRY

REFERENCE_CASES = [case for case in CATALOGUE if "reference" in case.sides]


@pytest.mark.parametrize("case", REFERENCE_CASES, ids=[c.name for c in REFERENCE_CASES])
@settings(max_examples=examples(3))
@given(data=st.data())
def test_bad_input_raises_documented_error(case, data):
    expect_error(case, case.build(data.draw), REFERENCE)


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(3))
@given(data=st.data())
def test_check_finite_opt_out_computes_on(name, data):
    """check_finite=False lets non-finite input through, causally: NaN from its timestep on, finite before."""
    config = data.draw(layer_config(name).configs(), label="config")
    x = np.ones((1, 4, config["d_model"]))                                          # (b, L, H)
    x[0, 2, -1] = np.nan
    with np.errstate(invalid="ignore"):                                             # NaN in, by request
        y = REGISTRY[name](**config)(x, check_finite=False)
    assert np.isnan(y[0, 2:]).any() and np.isfinite(y[0, :2]).all()


def test_readme_table_matches_catalogue():
    """README.md's section "Errors you are most likely to meet" lists exactly the catalogue's rows."""
    readme = Path(__file__).resolve().parent.parent / "README.md"
    text = readme.read_text(encoding="utf-8")
    assert README_TITLE in text, f"README.md has no section {README_TITLE!r} (python -m parity_tests.test_errors)"
    assert readme_table() in text, "README error table is out of date: paste `python -m parity_tests.test_errors`"
