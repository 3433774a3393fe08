"""Torch-only checks of the streaming classifier (SPEC §6.1): the refusals name the block or the rule, as in
the reference, and a stream runs under torch.no_grad() and with gradients alike."""
import numpy as np
import pytest
import torch

from reference import Classifier as ReferenceClassifier
from torch_backend import Classifier, from_reference
from parity_tests.tolerances import assert_close


def test_active_dropout_is_refused_naming_the_rule():
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=1, dropout=0.1, seed=0)
    with pytest.raises(ValueError, match="dropout p=0.1 is active"):
        model.train().init_state(1)
    model.eval().init_state(1)


def test_wrong_event_shape_is_named():
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=1, seed=0).eval()
    state = model.init_state(2)
    with pytest.raises(ValueError, match="x_t must be one event per row"):
        model.step(torch.zeros(2, 5, 2), state)
    with pytest.raises(ValueError, match="state does not belong to this model and batch"):
        model.step(torch.zeros(3, 2), state)


def test_stream_with_gradients_matches_the_reference_stream():
    reference = ReferenceClassifier(input_dim=2, num_classes=3, d_model=4, d_state=2, n_layers=2,
                                    lrnn_cls=["S5", "LRU"], intermediate_pooling="max", pooling_factor=3,
                                    pooling="mean", seed=1)
    module = from_reference(reference)
    x = np.random.default_rng(0).normal(size=(2, 7, 2))
    state_r, state_t = reference.init_state(2), module.init_state(2)
    for t in range(7):
        y_r, state_r = reference.step(x[:, t], state_r)
        y_t, state_t = module.step(torch.as_tensor(x[:, t]), state_t)
        assert_close(y_t.detach().numpy(), y_r, "float64", what=f"event {t}")
    y_t.sum().backward()
    assert module.head.weight.grad is not None
