"""The hierarchical classifier (SPEC §6) over hypothesis-drawn stacks of registry layers."""
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from parity_tests.helpers import INVALID_CLASSIFIER_CONFIGS as INVALID_CONFIGS, CumulativeMixer, small_classifier_config as small
from parity_tests.strategies import examples, classifier_configs, classifier_inputs, rng_from, seeds
from parity_tests.tolerances import assert_close
from reference import nn
from reference.classifier import Classifier, HierarchicalClassifier
from reference.layers import REGISTRY
from reference.pooling import final_pool, pool


def garbage_in_padding(rng, x, lengths, tau, vocab_size=None):
    """Copies of x and τ with fresh random values at every padded position t >= len."""
    padded = np.arange(x.shape[1])[None, :] >= lengths[:, None]                      # (b, L)
    if vocab_size is not None:
        x = np.where(padded, rng.integers(0, vocab_size, x.shape), x)
    else:
        x = np.where(padded[..., None], rng.normal(0, 100, x.shape), x)
    if tau is not None:
        tau = np.where(padded, rng.uniform(0, 100, tau.shape), tau)
    return x, tau


def out_width(config):
    return config["num_classes"] if config["num_classes"] > 0 else config["output_dim"]


@given(data=st.data())
def test_output_shape_and_finite_values(data):
    config = data.draw(classifier_configs())
    x, lengths, tau = data.draw(classifier_inputs(config))
    y = Classifier(**config)(x, lengths, tau)
    assert y.shape == (x.shape[0], out_width(config)) and y.dtype == np.float64
    assert np.all(np.isfinite(y))


@given(data=st.data(), seed=seeds)
def test_padding_never_changes_the_output(data, seed):
    config = data.draw(classifier_configs())
    x, lengths, tau = data.draw(classifier_inputs(config, with_lengths=True))
    model = Classifier(**config)
    x_pad, tau_pad = garbage_in_padding(rng_from(seed), x, lengths, tau, config.get("vocab_size"))
    assert_close(model(x_pad, lengths, tau_pad), model(x, lengths, tau), what="logits with garbage padding")


@settings(max_examples=examples(10))
@given(data=st.data())
def test_sequence_alone_equals_sequence_in_padded_batch(data):
    config = data.draw(classifier_configs())
    x, lengths, tau = data.draw(classifier_inputs(config, with_lengths=True))
    model = Classifier(**config)
    batched = model(x, lengths, tau)
    for b, n in enumerate(lengths):
        alone = model(x[b:b + 1, :n], None, None if tau is None else tau[b:b + 1, :n])
        assert_close(alone[0], batched[b], what=f"sequence {b} alone vs in the batch")


@settings(max_examples=examples(10))
@given(data=st.data())
def test_one_block_follows_the_definition(data):
    """h = LN(act(mixer(W_in x)) + W_in x) → pool → final pool → head, computed by hand."""
    config = {**data.draw(classifier_configs(max_layers=1)), "vocab_size": None, "embedding_dim": None,
              "max_position_embeddings": None}
    x, lengths, tau = data.draw(classifier_inputs(config))
    model = Classifier(**config)
    P = model.params
    prefix = "blocks.0.mixer."
    mixer = type(model.mixers[0]).from_params(model.mixers[0].config,
                                              {k[len(prefix):]: v for k, v in P.items() if k.startswith(prefix)})
    h0 = x @ P["input_proj.weight"].T + P["input_proj.bias"]                         # (b, L, H)
    y = mixer(h0, lengths) if tau is None else mixer(h0, lengths, tau)
    y = nn.gelu(y) if config["activation"] == "gelu" else y
    h1 = nn.layer_norm(y + h0, P["blocks.0.norm.weight"], P["blocks.0.norm.bias"])
    factor = config["pooling_factor"]
    mode = config["intermediate_pooling"]
    h2, lengths2, _ = pool(h1, lengths, tau, mode=mode if isinstance(mode, str) else mode[0],
                           stride=factor if isinstance(factor, int) else factor[0])
    expected = final_pool(h2, lengths2, mode=config["pooling"]) @ P["head.weight"].T + P["head.bias"]
    assert_close(model(x, lengths, tau), expected, what="classifier vs the block equations")


def test_dense_blocks_by_their_definitions():
    rng = rng_from(0)
    x = rng.normal(size=(2, 5, 4))
    assert_close(nn.gelu(x), x * norm.cdf(x), what="exact GELU")
    weight, bias = rng.normal(size=4), rng.normal(size=4)
    z = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + nn.LAYER_NORM_EPS)
    assert_close(nn.layer_norm(x, weight, bias), z * weight + bias, what="LayerNorm")
    W, c = nn.init_linear(rng, 4, 3)
    assert W.shape == (3, 4) and c.shape == (3,) and np.all(np.abs(W) <= 0.5) and np.all(np.abs(c) <= 0.5)
    assert_close(nn.linear(x, W, c), x @ W.T + c, what="Linear")


@settings(max_examples=examples(10))
@given(config=classifier_configs())
def test_same_seed_same_parameters(config):
    first, second = Classifier(**config).params, Classifier(**config).params
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    other = Classifier(**{**config, "seed": config["seed"] + 1}).params
    assert any(not np.array_equal(first[n], other[n]) for n in first if n.endswith("weight") and "norm" not in n)


@settings(max_examples=examples(10))
@given(data=st.data())
def test_from_params_and_save_load_round_trip(data):
    config = data.draw(classifier_configs())
    x, lengths, tau = data.draw(classifier_inputs(config))
    model = Classifier(**config)
    rng = rng_from(config["seed"])
    params = {name: value + rng.normal(size=value.shape) for name, value in model.params.items()}
    rebuilt = Classifier.from_params(model.config, params)
    for i, mixer in enumerate(rebuilt.mixers):
        for name, value in mixer.params.items():
            np.testing.assert_array_equal(value, params[f"blocks.{i}.mixer.{name}"], err_msg=name)
    with tempfile.TemporaryDirectory() as folder:
        rebuilt.save(os.path.join(folder, "model.npz"))
        loaded = Classifier.load(os.path.join(folder, "model.npz"))
    for name in params:
        np.testing.assert_array_equal(loaded.params[name], params[name], err_msg=name)
    assert_close(loaded(x, lengths, tau), rebuilt(x, lengths, tau), what="saved and loaded classifier")


def test_parameter_names_and_token_embedding():
    model = Classifier(**small(vocab_size=7, embedding_dim=3, max_position_embeddings=9, padding_idx=2,
                               num_classes=5))
    P = model.params
    assert P["embedding.weight"].shape == (7, 3) and np.all(P["embedding.weight"][2] == 0)
    assert P["position_embedding.weight"].shape == (9, 3)
    assert P["embedding_proj.weight"].shape == (4, 3) and P["head.weight"].shape == (5, 4)
    assert "input_proj.weight" not in P
    for i in range(2):
        np.testing.assert_array_equal(P[f"blocks.{i}.norm.weight"], np.ones(4))
        assert any(name.startswith(f"blocks.{i}.mixer.") for name in P)
    assert Classifier(**small()).params["input_proj.weight"].shape == (4, 3)
    assert HierarchicalClassifier is Classifier


def test_lrnn_params_reach_each_mixer_and_d_state_only_where_accepted():
    names = sorted(REGISTRY)
    model = Classifier(**small(n_layers=len(names), lrnn_cls=names))
    for name, mixer in zip(names, model.mixers):
        assert type(mixer) is REGISTRY[name]
        assert mixer.config.get("d_state", 2) == 2 and mixer.config["d_model"] == 4
    if "MultiresConv" in REGISTRY:
        mixer = Classifier(**small(lrnn_cls="MultiresConv", lrnn_params=[{"max_len": 8}, {"kernel_size": 3}])).mixers
        assert mixer[0].config["max_len"] == 8 and mixer[1].config["kernel_size"] == 3
        assert "d_state" not in mixer[0].config


def test_unregistered_mixer_class():
    model = Classifier(**small(lrnn_cls=[CumulativeMixer, sorted(REGISTRY)[0]], intermediate_pooling="mean"))
    x, lengths, tau = rng_from(1).normal(size=(2, 6, 3)), np.array([6, 4]), np.ones((2, 6))
    if getattr(REGISTRY[sorted(REGISTRY)[0]], "accepts_timesteps", True):
        assert np.all(np.isfinite(model(x, lengths, tau)))
    assert model.config["lrnn_cls"][0] is CumulativeMixer
    with tempfile.TemporaryDirectory() as folder, pytest.raises(TypeError, match="CumulativeMixer is not in"):
        model.save(os.path.join(folder, "model.npz"))


def test_dropout_acts_only_in_training_mode():
    model = Classifier(**small(dropout=0.5, lrnn_cls=CumulativeMixer))
    x = rng_from(2).normal(size=(2, 6, 3))
    evaluated = model(x)
    assert not model.training and model.train() is model and model.training
    assert not np.allclose(model(x), evaluated)
    np.testing.assert_array_equal(model.eval()(x), evaluated)
    unchanged = Classifier(**small(dropout=0.0, lrnn_cls=CumulativeMixer)).train()
    np.testing.assert_array_equal(unchanged(x), Classifier(**small(dropout=0.0, lrnn_cls=CumulativeMixer))(x))


@pytest.mark.parametrize("overrides, error, message", INVALID_CONFIGS)
def test_invalid_configurations_raise_naming_the_argument(overrides, error, message):
    with pytest.raises(error, match=message):
        Classifier(**small(**overrides))


def test_invalid_inputs_raise_naming_the_argument():
    features = Classifier(**small(lrnn_cls=CumulativeMixer))
    tokens = Classifier(**small(lrnn_cls=CumulativeMixer, vocab_size=5, max_position_embeddings=4))
    x = rng_from(3).normal(size=(2, 4, 3))
    cases = [
        (features, (x.astype(int),), TypeError, "x must be float features"),
        (features, (x[..., :2],), ValueError, "x must have shape \\(b, L, input_dim=3\\)"),
        (features, (x, np.array([0, 4])), ValueError, "1 <= lengths <= L=4, got 0"),
        (features, (x, None, np.ones((2, 3))), ValueError, "integration_timesteps must have shape"),
        (tokens, (np.ones((2, 4)),), TypeError, "x must be integer token ids"),
        (tokens, (np.full((2, 4), 5),), ValueError, "token ids must be in \\[0, vocab_size=5\\)"),
        (tokens, (np.ones((2, 5), int),), ValueError, "L=5 exceeds max_position_embeddings=4"),
        (tokens, (np.ones((2, 4, 1), int),), ValueError, "token ids of shape \\(b, L\\)"),
    ]
    for model, args, error, message in cases:
        with pytest.raises(error, match=message):
            model(*args)
    if "MultiresConv" in REGISTRY:
        model = Classifier(**small(lrnn_cls=[CumulativeMixer, "MultiresConv"]))
        with pytest.raises(ValueError, match="layer 1 \\(MultiresConv\\) does not accept"):
            model(x, None, np.ones((2, 4)))


def test_from_params_names_the_parameter():
    model = Classifier(**small())
    params = dict(model.params)
    with pytest.raises(ValueError, match="missing parameter 'head.bias'"):
        Classifier.from_params(model.config, {k: v for k, v in params.items() if k != "head.bias"})
    with pytest.raises(ValueError, match="parameter 'head.weight' must have shape"):
        Classifier.from_params(model.config, {**params, "head.weight": np.ones((2, 2))})
    with pytest.raises(ValueError, match="unexpected parameter 'blocks.9.norm.weight'"):
        Classifier.from_params(model.config, {**params, "blocks.9.norm.weight": np.ones(4)})
