"""Weights survive round trips in the reference (SPEC §7): Layer.save / Layer.load (.npz: `__config__` JSON
plus one array per parameter) is exact for every registry layer and the Classifier. The torch formats and the
files crossing backends are tested in torch_tests/test_weights.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference.layers import REGISTRY
from parity_tests.strategies import examples, classifier_configs, classifier_inputs, layer_config, rng_from, seeds

LAYERS = sorted(REGISTRY)


def assert_same_params(actual, expected):
    """Identical names, shapes and bits."""
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(np.asarray(actual[name]), expected[name], err_msg=name)


def draw_layer(data, name):
    config = data.draw(layer_config(name).configs(), label="config")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(2, 7, config["d_model"]))                                 # (b, L, H)
    return REGISTRY[name](**config), x


# ----------------------------------------------------------------------------- reference
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(3))
@given(data=st.data())
def test_reference_layer_save_load_is_exact(tmp_path_factory, name, data):
    layer, x = draw_layer(data, name)
    path = tmp_path_factory.mktemp("w") / "layer.npz"
    layer.save(path)
    loaded = REGISTRY[name].load(path)
    assert loaded.config == layer.config
    assert_same_params(loaded.params, layer.params)
    np.testing.assert_array_equal(loaded(x), layer(x))


@settings(max_examples=examples(5))
@given(data=st.data())
def test_reference_classifier_save_load_is_exact(tmp_path_factory, data):
    config = data.draw(classifier_configs(), label="config")
    x, lengths, tau = data.draw(classifier_inputs(config), label="inputs")
    model = reference.Classifier(**config)
    path = tmp_path_factory.mktemp("w") / "model.npz"
    model.save(path)
    loaded = reference.Classifier.load(path)
    assert loaded.config == model.config
    assert_same_params(loaded.params, model.params)
    np.testing.assert_array_equal(loaded(x, lengths, tau), model(x, lengths, tau))
