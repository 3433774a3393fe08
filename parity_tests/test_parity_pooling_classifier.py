"""Reference == backend for pooling (SPEC §5) and the classifier (SPEC §6, §7), through the backend API.

Pooling: `pool` for every intermediate mode and `final_pool` for every final mode on random strides in
[1, L + 2], lengths and τ; gradients of `pool` against finite differences of the reference. Classifier:
hypothesis-drawn layer mixes moved to the backend with `from_reference` and run in evaluation mode with
lengths and τ; the float64 exchange round trip is exact; construction and input errors have the
reference's types and messages. The last tests are torch's own (they skip for a backend that is not a
torch module): same seed → the same parameters and state_dict names, a few training steps on CPU lower
the loss, and torch.compile gives the eager outputs.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.strategies import classifier_configs, classifier_inputs, pooling_inputs, rng_from, seeds
from parity_tests.test_classifier import INVALID_CONFIGS, small
from parity_tests.test_parity import _finite_difference
from reference.classifier import Classifier
from reference.layers import REGISTRY
from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES, final_pool, pool

POOLING_MODES = tuple(m for m in INTERMEDIATE_MODES if m != "none")


def backend_classifier(backend, reference, dtype):
    """The backend twin of a reference Classifier, cast to dtype; skips when the backend lacks a mixer."""
    from_reference, cast = backend.require("from_reference", "cast")
    try:
        module = from_reference(reference)
    except (KeyError, NotImplementedError) as missing:
        names = ", ".join(sorted({type(m).__name__ for m in reference.mixers}))
        backend.require(f"Classifier over {names}")      # counts and skips: a mixer has no backend twin
        raise missing
    return cast(module, dtype, backend.device)


# ----------------------------------------------------------------------------- pooling (SPEC §5)
@pytest.mark.parametrize("mode", INTERMEDIATE_MODES)
@given(case=pooling_inputs())
def test_pool(backend, dtype, mode, case):
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
    x, lengths, _, _ = case
    actual = backend.final_pool(backend.to(x, dtype), backend.to(lengths, dtype), mode=mode)
    check(backend.to_numpy(actual), final_pool(x, lengths, mode=mode), dtype=dtype, subject=f"final_pool {mode}",
          prop="vector")


@pytest.mark.parametrize("mode", POOLING_MODES)
@settings(max_examples=5)
@given(case=pooling_inputs(max_len=12), seed=seeds)
def test_pool_gradient_matches_reference_finite_differences(backend, mode, case, seed):
    dtype = "float64"
    x, lengths, tau, s = case
    G = rng_from(seed).normal(size=pool(x, lengths, tau, mode=mode, stride=s)[0].shape)   # (b, L', H)
    pool_b, vjp = backend.require("pool", "vjp")
    grads = vjp(lambda x_: pool_b(x_, backend.to(lengths, dtype), backend.to(tau, dtype), mode=mode, stride=s)[0],
                [backend.to(x, dtype)], backend.to(G, dtype))
    expected = _finite_difference(lambda x_: float(np.sum(G * pool(x_, lengths, tau, mode=mode, stride=s)[0])), x)
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


@settings(max_examples=5)
@given(config=classifier_configs())
def test_classifier_exchange_round_trip_is_exact(backend, config):
    reference = Classifier(**config)
    module = backend_classifier(backend, reference, "float64")
    if not callable(getattr(module, "to_reference", None)):
        backend.require("Classifier.to_reference")
    twin = module.to_reference()
    assert twin.config == reference.config
    assert sorted(twin.params) == sorted(reference.params)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(twin.params[name], value, err_msg=f"round trip of {name}")


@pytest.mark.parametrize("overrides, error, message", INVALID_CONFIGS)
def test_classifier_configuration_errors_match_reference(backend, overrides, error, message):
    module_class = type(backend_classifier(backend, Classifier(**small()), "float64"))
    with pytest.raises(error, match=message):
        Classifier(**small(**overrides))
    with pytest.raises(error, match=message):
        module_class(**small(**overrides))


def test_classifier_input_errors_match_reference(backend):
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
        with pytest.raises(error, match=message):
            module(*(backend.to(a, "float64") for a in args))


# ----------------------------------------------------------------------------- torch's own
def torch_twin(backend, reference):
    """(torch, the torch twin on CPU); skips unless the backend gives torch modules."""
    torch = pytest.importorskip("torch")
    module = backend_classifier(backend, reference, "float64").cpu()
    if not isinstance(module, torch.nn.Module):
        backend.require("a torch.nn.Module classifier")
    return torch, module


def test_torch_classifier_seed_names_and_training_mode(backend):
    """seed= gives the reference's parameters (rounded once to float32), under the reference's names;
    without a seed torch.manual_seed reproduces the model; dropout acts in train() only."""
    config = small(dropout=0.5, vocab_size=6, embedding_dim=3, max_position_embeddings=8, seed=11)
    reference = Classifier(**config)
    torch, twin = torch_twin(backend, reference)
    module = type(twin)(**config)
    state = module.state_dict()
    assert sorted(state) == sorted(reference.params)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(state[name].numpy(), value.astype(np.float32), err_msg=name)
    assert twin.training is False and module.training is True
    drawn = []
    for _ in range(2):
        torch.manual_seed(5)
        drawn.append(type(twin)(**{**config, "seed": None}))
    assert drawn[0].config["seed"] == drawn[1].config["seed"]
    for (name, a), b in zip(drawn[0].state_dict().items(), drawn[1].state_dict().values()):
        assert torch.equal(a, b), name
    ids = torch.as_tensor(rng_from(0).integers(0, 6, (2, 8)))
    assert torch.equal(twin(ids), twin(ids))                                         # eval: deterministic
    twin.train()
    assert not torch.equal(twin(ids), twin(ids))                                     # train: dropout masks


def test_torch_classifier_training_lowers_the_loss(backend):
    """A few Adam steps on CPU lower the cross-entropy of a small classifier on a learnable toy task."""
    reference = Classifier(input_dim=2, num_classes=2, d_model=8, d_state=4, n_layers=2, dropout=0.0,
                           intermediate_pooling="mean", pooling="mean", seed=0)
    torch, model = torch_twin(backend, reference)
    model = model.float().train()
    rng = rng_from(1)
    x = torch.as_tensor(rng.normal(size=(16, 20, 2)), dtype=torch.float32)          # (b, L, input_dim)
    lengths = torch.as_tensor(rng.integers(5, 21, 16))                              # (b,)
    labels = (x[..., 0].cumsum(dim=1)[torch.arange(16), lengths - 1] > 0).long()    # sign of Σ x_t,0
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        loss = torch.nn.functional.cross_entropy(model(x, lengths), labels)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    assert all(np.isfinite(losses))
    assert losses[-1] < losses[0], f"training did not lower the loss: {losses}"


def test_torch_compile_classifier_matches_eager(backend):
    """Smoke test: one small classifier under torch.compile, captured as one graph, gives the eager outputs."""
    reference = Classifier(input_dim=3, num_classes=3, d_model=4, d_state=2, n_layers=2,
                           intermediate_pooling="stride", seed=2)
    torch, model = torch_twin(backend, reference)
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    model = model.float().eval()
    rng = rng_from(4)
    x = torch.as_tensor(rng.normal(size=(2, 9, 3)), dtype=torch.float32)
    lengths, tau = torch.as_tensor([9, 4]), torch.as_tensor(rng.uniform(0, 2, (2, 9)), dtype=torch.float32)
    # aot_eager: dynamo must capture the whole forward in one graph (fullgraph) and AOT autograd trace it;
    # inductor's C++ code generation alone takes ~30 s on a 2-core CI machine and tests torch, not us.
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    eager = model(x, lengths, tau).detach().numpy()
    check(compiled(x, lengths, tau).detach().numpy(), eager, dtype="float32", subject="Classifier",
          prop="torch.compile == eager")


@pytest.mark.parametrize("name", ["LRU", "S5", "MultiresConv"])
def test_torch_compile_layer_matches_eager(backend, name):
    """Smoke test: one layer under torch.compile (one graph, with lengths and τ where it takes them) == eager."""
    config = {"LRU": {"d_state": 3}, "S5": {"d_state": 4, "conj_sym": True}, "MultiresConv": {"max_len": 16}}[name]
    reference = REGISTRY[name](d_model=3, seed=5, **config)
    torch, model = torch_twin(backend, reference)
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available")
    model = model.float()
    rng = rng_from(6)
    x = torch.as_tensor(rng.normal(size=(2, 11, 3)), dtype=torch.float32)
    tau = torch.as_tensor(rng.uniform(0, 2, (2, 11)), dtype=torch.float32) if getattr(reference, "accepts_timesteps", True) else None
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    check(compiled(x, integration_timesteps=tau).detach().numpy(), model(x, integration_timesteps=tau).detach().numpy(),
          dtype="float32", subject=name, prop="torch.compile == eager")
