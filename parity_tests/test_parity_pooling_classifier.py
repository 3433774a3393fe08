"""Reference == backend for pooling (SPEC §5) and the classifier (SPEC §6, §7), through the backend API.

Pooling: `pool` for every intermediate mode and `final_pool` for every final mode on random strides in
[1, L + 2], lengths and τ; gradients of `pool` against finite differences of the reference. Classifier:
hypothesis-drawn layer mixes moved to the backend with `from_reference` and run in evaluation mode with
lengths and τ; bad inputs raise the reference's exception type (and, opted in, its message). The torch
classes' own behaviour (seeds, training, torch.compile, exchange) is tested in torch_tests/.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.helpers import finite_difference, small_classifier_config as small
from parity_tests.strategies import classifier_configs, classifier_inputs, examples, pooling_inputs, rng_from, seeds
from reference.classifier import Classifier
from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES, final_pool, pool

POOLING_MODES = tuple(m for m in INTERMEDIATE_MODES if m != "none")


def backend_classifier(backend, reference, dtype):
    """The backend twin of a reference Classifier, cast to dtype."""
    return backend.build(reference, dtype, subject="Classifier")


# ----------------------------------------------------------------------------- pooling (SPEC §5)
@pytest.mark.parametrize("mode", INTERMEDIATE_MODES)
@given(case=pooling_inputs())
def test_pool(backend, dtype, mode, case):
    backend.supports("pool", {"mode": mode}, dtype)
    x, lengths, tau, s = case
    x_ref, lengths_ref, tau_ref = pool(x, lengths, tau, mode=mode, stride=s)
    x_b, lengths_b, tau_b = backend.to_numpy(backend.pool(backend.to(x, dtype), backend.to(lengths, dtype),
                                                          backend.to(tau, dtype), mode=mode, stride=s))
    check(x_b, x_ref, dtype=dtype, subject=f"pool {mode}", prop="x'")
    assert (lengths_b is None) == (lengths_ref is None) and (tau_b is None) == (tau_ref is None)
    if lengths_ref is not None:
        np.testing.assert_array_equal(lengths_b, lengths_ref, err_msg=f"pool {mode}: lengths' (s={s})")
    if tau_ref is not None:
        check(tau_b, tau_ref, dtype=dtype, subject=f"pool {mode}", prop="τ'")


@pytest.mark.parametrize("mode", FINAL_MODES)
@given(case=pooling_inputs())
def test_final_pool(backend, dtype, mode, case):
    backend.supports("final_pool", {"mode": mode}, dtype)
    x, lengths, _, _ = case
    actual = backend.final_pool(backend.to(x, dtype), backend.to(lengths, dtype), mode=mode)
    check(backend.to_numpy(actual), final_pool(x, lengths, mode=mode), dtype=dtype, subject=f"final_pool {mode}",
          prop="vector")


@pytest.mark.parametrize("mode", POOLING_MODES)
@settings(max_examples=examples(5))
@given(case=pooling_inputs(max_len=12), seed=seeds)
def test_pool_gradient_matches_reference_finite_differences(backend, mode, case, seed):
    dtype = "float64"
    backend.supports("pool", {"mode": mode}, dtype)
    x, lengths, tau, s = case
    G = rng_from(seed).normal(size=pool(x, lengths, tau, mode=mode, stride=s)[0].shape)   # (b, L', H)
    pool_b, vjp = backend.require("pool", "vjp")
    grads = vjp(lambda x_: pool_b(x_, backend.to(lengths, dtype), backend.to(tau, dtype), mode=mode, stride=s)[0],
                [backend.to(x, dtype)], backend.to(G, dtype))
    expected = finite_difference(lambda x_: float(np.sum(G * pool(x_, lengths, tau, mode=mode, stride=s)[0])), x)
    check(backend.to_numpy(grads[0]), expected, dtype=dtype, subject=f"pool {mode}", prop="grad x",
          row="finite_difference")


# ----------------------------------------------------------------------------- classifier (SPEC §6, §7)
@given(data=st.data())
def test_classifier(backend, dtype, data):
    config = data.draw(classifier_configs(), label="config")
    x, lengths, tau = data.draw(classifier_inputs(config, max_len=24), label="inputs")
    reference = Classifier(**config)
    module = backend_classifier(backend, reference, dtype)
    actual = module(backend.to(x, dtype), backend.to(lengths, dtype), backend.to(tau, dtype))
    prop = "forward" + (" with lengths" if lengths is not None else "") + (" with τ" if tau is not None else "")
    check(backend.to_numpy(actual), reference(x, lengths, tau), dtype=dtype, subject="Classifier", prop=prop)


def test_classifier_input_errors_match_reference(backend, exact_errors):
    """The reference's exception type for each bad input (its message too when exact errors are opted in)."""
    features = Classifier(**small())
    tokens = Classifier(**small(vocab_size=5, max_position_embeddings=4))
    x = rng_from(3).normal(size=(2, 4, 3))
    cases = [
        (features, (x.astype(int),), TypeError, "x must be float features"),
        (features, (x[..., :2],), ValueError, "x must have shape \\(b, L, input_dim=3\\)"),
        (features, (x, np.array([0, 4])), ValueError, "1 <= lengths <= L=4, got 0"),
        (features, (x, np.array([2, 4.0])), TypeError, "lengths must be an integer array"),
        (features, (x, None, np.ones((2, 3))), ValueError, "integration_timesteps must have shape"),
        (features, (x, None, -np.ones((2, 4))), ValueError, "integration_timesteps must be finite and >= 0"),
        (tokens, (np.ones((2, 4)),), TypeError, "x must be integer token ids"),
        (tokens, (np.full((2, 4), 5),), ValueError, "token ids must be in \\[0, vocab_size=5\\)"),
        (tokens, (np.ones((2, 5), int),), ValueError, "L=5 exceeds max_position_embeddings=4"),
        (tokens, (np.ones((2, 4, 1), int),), ValueError, "token ids of shape \\(b, L\\)"),
    ]
    for reference, args, error, message in cases:
        module = backend_classifier(backend, reference, "float64")
        with pytest.raises(error, match=message):
            reference(*args)
        with pytest.raises(error, match=message if exact_errors else None):
            module(*(backend.to(a, "float64") for a in args))
