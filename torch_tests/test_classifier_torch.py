"""torch_backend's Classifier and layers as torch modules: the float64 exchange round trip is exact, construction
errors match the reference's, same seed → the same parameters and state_dict names, a few training steps on
CPU lower the loss, and torch.compile gives the eager outputs. (Parity with the reference is the conformance
suite's business: parity_tests/test_parity_pooling_classifier.py.)
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings

from parity_tests.backend import check
from parity_tests.helpers import INVALID_CLASSIFIER_CONFIGS, small_classifier_config as small
from parity_tests.strategies import classifier_configs, examples, rng_from
from reference.classifier import Classifier
from reference.layers import REGISTRY

import torch_backend


def torch_twin(backend, reference):
    """(torch, the float64 torch twin of a reference object on CPU)."""
    return torch, torch_backend.from_reference(reference).cpu()


@settings(max_examples=examples(5))
@given(config=classifier_configs())
def test_classifier_exchange_round_trip_is_exact(config):
    reference = Classifier(**config)
    module = torch_backend.from_reference(reference)
    twin = module.to_reference()
    assert twin.config == reference.config
    assert sorted(twin.params) == sorted(reference.params)
    for name, value in reference.params.items():
        np.testing.assert_array_equal(twin.params[name], value, err_msg=f"round trip of {name}")


@pytest.mark.parametrize("overrides, error, message", INVALID_CLASSIFIER_CONFIGS)
def test_classifier_configuration_errors_match_reference(overrides, error, message):
    module_class = torch_backend.Classifier
    with pytest.raises(error, match=message):
        Classifier(**small(**overrides))
    with pytest.raises(error, match=message):
        module_class(**small(**overrides))




def test_torch_classifier_seed_names_and_training_mode():
    """seed= gives the reference's parameters (rounded once to float32), under the reference's names;
    without a seed torch.manual_seed reproduces the model; dropout acts in train() only."""
    config = small(dropout=0.5, vocab_size=6, embedding_dim=3, max_position_embeddings=8, seed=11)
    reference = Classifier(**config)
    torch, twin = torch_twin(None, reference)
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


def test_torch_classifier_training_lowers_the_loss():
    """A few Adam steps on CPU lower the cross-entropy of a small classifier on a learnable toy task."""
    reference = Classifier(input_dim=2, num_classes=2, d_model=8, d_state=4, n_layers=2, dropout=0.0,
                           intermediate_pooling="mean", pooling="mean", seed=0)
    torch, model = torch_twin(None, reference)
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


def test_torch_compile_classifier_matches_eager():
    """Smoke test: one small classifier under torch.compile, captured as one graph, gives the eager outputs."""
    reference = Classifier(input_dim=3, num_classes=3, d_model=4, d_state=2, n_layers=2,
                           intermediate_pooling="stride", seed=2)
    torch, model = torch_twin(None, reference)
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
def test_torch_compile_layer_matches_eager(name):
    """Smoke test: one layer under torch.compile (one graph, with lengths and τ where it takes them) == eager."""
    config = {"LRU": {"d_state": 3}, "S5": {"d_state": 4, "conj_sym": True}, "MultiresConv": {"max_len": 16}}[name]
    reference = REGISTRY[name](d_model=3, seed=5, **config)
    torch, model = torch_twin(None, reference)
    model = model.float()
    rng = rng_from(6)
    x = torch.as_tensor(rng.normal(size=(2, 11, 3)), dtype=torch.float32)
    tau = torch.as_tensor(rng.uniform(0, 2, (2, 11)), dtype=torch.float32) if getattr(reference, "accepts_timesteps", True) else None
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    check(compiled(x, integration_timesteps=tau).detach().numpy(), model(x, integration_timesteps=tau).detach().numpy(),
          dtype="float32", subject=name, prop="torch.compile == eager")
