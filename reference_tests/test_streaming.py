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


# ----------------------------------------------------------------------------- inplace=True
# The mixers whose step takes inplace=True here, each with its discretisations (the classifier's in-place
# stream below stacks them).
INPLACE_MIXERS = [("LRU", {}), ("S5", {"discretization": "zoh"}), ("S5", {"discretization": "bilinear"}),
                  ("S4D", {"discretization": "zoh"}), ("S4D", {"discretization": "exp_euler"}),
                  ("Centaurus", {"sub_state_dim": 2}), ("Centaurus", {"sub_state_dim": 2, "discretization": "zoh"}),
                  ("LSSL", {}), ("LSSL", {"discretization": "zoh"}), ("MultiresConv", {})]


def build_inplace_mixer(name, kwargs):
    import reference
    sizes = {"d_model": 3} if name == "MultiresConv" else {"d_model": 3, "d_state": 4}
    return getattr(reference, name)(**sizes, **kwargs, seed=1)


@pytest.mark.parametrize("name, kwargs, with_tau", [(name, kwargs, with_tau) for name, kwargs in INPLACE_MIXERS
                                                     for with_tau in (False, True)
                                                     if not (with_tau and name == "MultiresConv")])   # no τ
def test_an_inplace_mixer_step_writes_the_functional_step_into_the_given_state(name, kwargs, with_tau):
    layer = build_inplace_mixer(name, kwargs)
    rng = np.random.default_rng(0)
    x, tau = rng.normal(size=(2, 5, 3)), np.exp(rng.uniform(-3, 1, (2, 5)))
    tau[0, 2] = 0.0                                                               # a dropped gap
    functional, given = layer.init_state(2), layer.init_state(2)
    for t in range(5):
        tau_t = tau[:, t] if with_tau else None
        y_f, functional = layer.step(x[:, t], functional, tau_t)
        y_i, returned = layer.step(x[:, t], given, tau_t, inplace=True)
        assert returned is given
        assert_close(y_i, y_f, "float64", what=f"{name} output at event {t}")
        assert_close(given, functional, "float64", what=f"{name} state at event {t}")


@pytest.mark.parametrize("name, kwargs", INPLACE_MIXERS)
def test_an_inplace_mixer_step_refuses_a_state_of_another_dtype(name, kwargs):
    layer = build_inplace_mixer(name, kwargs)
    state = layer.init_state(2)
    other = state.astype(np.complex64 if np.iscomplexobj(state) else np.float32)
    with pytest.raises(ValueError, match="inplace=True"):
        layer.step(np.zeros((2, 3)), other, inplace=True)
    state.flags.writeable = False
    with pytest.raises(ValueError, match="inplace=True"):
        layer.step(np.zeros((2, 3)), state, inplace=True)


def inplace_stream_model(pooling, intermediate, factor):
    """A classifier of the in-place mixers (every intermediate pooling stage, the given final pooling)."""
    return Classifier(input_dim=2, num_classes=3, d_model=4, d_state=3, n_layers=4,
                      lrnn_cls=["LRU", "S5", "S4D", "Centaurus"], lrnn_params=[{}, {}, {}, {"sub_state_dim": 1}],
                      intermediate_pooling=intermediate, pooling_factor=factor, pooling=pooling, seed=3)


@pytest.mark.parametrize("with_tau", [False, True])
@pytest.mark.parametrize("factor", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("pooling, intermediate", [("mean", ["mean", "max", "none", "stride"]),
                                                   ("max", ["stride", "mean", "max", "none"]),
                                                   ("last", ["max", "none", "stride", "mean"])])
def test_an_inplace_stream_equals_forward_on_every_prefix_and_returns_the_given_state(pooling, intermediate,
                                                                                       factor, with_tau):
    model = inplace_stream_model(pooling, intermediate, factor)
    rng = np.random.default_rng(factor)
    x, tau = rng.normal(size=(2, 13, 2)), rng.uniform(0, 2, (2, 13))
    tau[0, 3] = tau[1, 0] = tau[1, 7] = 0.0                                      # dropped gaps
    state = model.init_state(2)
    mixer_arrays = list(state["mixers"])
    for n in range(1, 14):
        y, returned = model.step(x[:, n - 1], state, tau[:, n - 1] if with_tau else None, inplace=True)
        assert returned is state
        assert all(a is b for a, b in zip(state["mixers"], mixer_arrays))       # the committed states, changed in place
        expected = model(x[:, :n], integration_timesteps=tau[:, :n] if with_tau else None)
        assert_close(y, expected, "float64", what=f"output after {n} events")
