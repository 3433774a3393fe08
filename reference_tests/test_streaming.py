"""The streaming classifier (SPEC §6.1): one event at a time, the output after every event equals the
whole-sequence forward on the events seen so far — for random mixer stacks, every intermediate pooling mode
and factor, every final pooling, token and feature input, τ with zeros."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference import Classifier
from parity_tests.strategies import classifier_configs, classifier_inputs
from parity_tests.tolerances import assert_close


def stream(model, x, tau):
    """Outputs (b, n, out) after each of the L events, and the states after each event."""
    state, outputs, states = model.init_state(x.shape[0]), [], []
    for t in range(x.shape[1]):
        y, state = model.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y)
        states.append(state)
    return np.stack(outputs, axis=1), states


@settings(max_examples=30)
@given(data=st.data())
def test_step_by_step_equals_forward_on_every_prefix(data):
    config = data.draw(classifier_configs(max_layers=3, max_width=4), label="config")
    x, _, tau = data.draw(classifier_inputs(config, max_len=14, with_lengths=False), label="inputs")
    model = Classifier(**config)
    outputs, _ = stream(model, x, tau)
    for n in range(1, x.shape[1] + 1):
        expected = model(x[:, :n], integration_timesteps=None if tau is None else tau[:, :n])
        assert_close(outputs[:, n - 1], expected, "float64", what=f"output after {n} events")


@settings(max_examples=10)
@given(data=st.data())
def test_a_state_carries_and_is_not_changed_by_step(data):
    """Stepping twice from the same saved state gives the same outputs: the state after n events
    carries everything the rest of the stream needs, and `step` never modifies the state it is given."""
    config = data.draw(classifier_configs(max_layers=3, max_width=4), label="config")
    x, _, tau = data.draw(classifier_inputs(config, max_len=10, with_lengths=False), label="inputs")
    model = Classifier(**config)
    whole, states = stream(model, x, tau)
    n = data.draw(st.integers(1, x.shape[1]), label="split")
    state = states[n - 1]
    for _ in range(2):                                                       # the same saved state, twice
        rest, carried = [], state
        for t in range(n, x.shape[1]):
            y, carried = model.step(x[:, t], carried, None if tau is None else tau[:, t])
            rest.append(y)
        if rest:
            assert_close(np.stack(rest, axis=1), whole[:, n:], "float64", what=f"continued after {n} events")


def test_positional_embeddings_use_the_running_index():
    model = Classifier(input_dim=1, num_classes=3, d_model=4, d_state=2, n_layers=2, vocab_size=5,
                       max_position_embeddings=6, lrnn_cls=["LRU", "S5"], intermediate_pooling="mean",
                       pooling_factor=2, pooling="mean", seed=3)
    x = np.array([[1, 4, 2, 0, 3, 3]])
    outputs, _ = stream(model, x, None)
    assert_close(outputs[:, -1], model(x), "float64", what="token stream")
    with pytest.raises(ValueError, match="max_position_embeddings"):
        _, state = stream(model, x, None)
        model.step(x[:, 0], state[-1])


class NoStep:
    """A causal mixer without `step`."""

    def __init__(self, d_model, seed=None):
        self.d_model, self.params, self.config = d_model, {}, {"d_model": d_model, "seed": seed}

    def __call__(self, x, lengths=None, integration_timesteps=None):
        return x


class Bidirectional(NoStep):
    bidirectional = True

    def step(self, x_t, state, integration_timestep=None):
        return x_t, state


@pytest.mark.parametrize("mixer, rule", [(NoStep, "block 1 \\(NoStep\\) has no step"),
                                         (Bidirectional, "block 1 \\(Bidirectional\\) is bidirectional=True")])
def test_unstreamable_blocks_are_named(mixer, rule):
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=2, lrnn_cls=["LRU", mixer], seed=0)
    with pytest.raises(ValueError, match=rule):
        model.init_state(1)


def test_active_dropout_is_refused():
    model = Classifier(input_dim=2, num_classes=2, d_model=3, d_state=2, n_layers=1, dropout=0.1, seed=0).train()
    with pytest.raises(ValueError, match="dropout p=0.1 is active"):
        model.init_state(1)
    model.eval().init_state(1)
