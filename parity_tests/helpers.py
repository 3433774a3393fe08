"""Helpers shared by the three test folders (test modules never import from each other).

Finite differences, the classifier's small configuration and its invalid variants, a stand-in mixer, and the
builders of the numerics-at-the-extremes tests (layers with replaced parameters, the streaming view, the
agreement of a reference layer's views).
"""
import numpy as np
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from parity_tests.tolerances import FD_STEP, assert_close
from reference.layers import REGISTRY


def finite_difference(f, x):
    """Central differences of a scalar function f at x (any shape, real), step FD_STEP."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        step = np.zeros_like(x)
        step[index] = FD_STEP
        grad[index] = (f(x + step) - f(x - step)) / (2 * FD_STEP)
    return grad


# ----------------------------------------------------------------------------- classifier (SPEC §6)
class CumulativeMixer:
    """A stand-in mixer that is not in the registry: y_t = W Σ_{s<=t} τ_s x_s (causal, accepts τ)."""

    def __init__(self, d_model, d_state, seed=None):
        self.config = {"d_model": d_model, "d_state": d_state, "seed": seed}
        self.params = {"W": np.random.default_rng(seed).normal(0, d_model ** -0.5, (d_model, d_model))}

    def __call__(self, x, lengths=None, integration_timesteps=None):
        weights = 1.0 if integration_timesteps is None else integration_timesteps[..., None]
        return np.cumsum(weights * x, axis=1) @ self.params["W"].T


def small_classifier_config(**overrides):
    """A small valid configuration over the registry, feature input."""
    return {"input_dim": 3, "d_model": 4, "d_state": 2, "n_layers": 2, "lrnn_cls": sorted(REGISTRY)[0],
            "seed": 0, **overrides}


INVALID_CLASSIFIER_CONFIGS = [
    (dict(lrnn_cls="GRU"), ValueError, "lrnn_cls\\[0\\] must be a class or one of"),
    (dict(lrnn_cls=[CumulativeMixer]), ValueError, "lrnn_cls given as a list must have one entry per layer"),
    (dict(lrnn_cls=3), TypeError, "lrnn_cls\\[0\\] must be a class or a registry name"),
    (dict(intermediate_pooling=["mean"]), ValueError, "intermediate_pooling given as a list"),
    (dict(intermediate_pooling="avg"), ValueError, "intermediate_pooling\\[0\\] must be one of none, stride"),
    (dict(pooling_factor=[2, 0]), ValueError, "pooling_factor\\[1\\] must be >= 1"),
    (dict(pooling_factor=[2]), ValueError, "pooling_factor given as a list"),
    (dict(pooling="first"), ValueError, "pooling must be one of last, mean, max"),
    (dict(dropout=1.5), ValueError, "dropout must be a probability in \\[0, 1\\]"),
    (dict(activation="relu"), ValueError, "activation must be one of gelu, none"),
    (dict(d_model=0), ValueError, "d_model must be >= 1"),
    (dict(n_layers=2.0), TypeError, "n_layers must be an integer"),
    (dict(num_classes=-1), ValueError, "num_classes must be >= 0"),
    (dict(input_dim=None), TypeError, "input_dim must be an integer"),
    (dict(embedding_dim=8), ValueError, "embedding_dim and max_position_embeddings need token input"),
    (dict(vocab_size=5, padding_idx=5), ValueError, "padding_idx must be in \\[0, vocab_size=5\\)"),
    (dict(lrnn_params=[{}]), ValueError, "lrnn_params given as a list"),
    (dict(lrnn_params={"no_such_argument": 1}), ValueError, "argument 'no_such_argument' that .* does not accept"),
    (dict(lrnn_params={"seed": 1}), ValueError, "must not set 'seed'"),
    (dict(lrnn_params={"d_model": 8}), ValueError, "every mixer must have the classifier's width d_model=4"),
    (dict(lrnn_params=[{}, 3]), TypeError, "lrnn_params for layer 1 .* must be a dict"),
    (dict(seed=-1), ValueError, "seed must be >= 0"),
]


# ----------------------------------------------------------------------------- numerics at the extremes
def with_params(layer, **changes):
    """The layer rebuilt with some parameters replaced (arrays broadcast to the stored shapes)."""
    params = {k: np.broadcast_to(np.asarray(changes.get(k, v), float), v.shape).copy() for k, v in layer.params.items()}
    return type(layer).from_params(layer.config, params)


def stepped(layer, x, tau=None):
    """Outputs of repeated layer.step (the streaming view). Returns (b, L, H)."""
    state, outputs = layer.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1)


def check_views(layer, x, tau=None, what=""):
    """Finite output; sequential scan == numba scan == repeated step (== FFT without τ). Returns y."""
    y = layer(x, integration_timesteps=tau)
    assert np.isfinite(y).all(), f"{what}: non-finite output"
    assert_close(stepped(layer, x, tau), y, what=f"{what}: step vs scan")
    if "numba" in getattr(layer, "methods", ()):
        assert_close(layer(x, integration_timesteps=tau, method="numba"), y, what=f"{what}: numba vs sequential")
    if tau is None and "fft" in getattr(layer, "methods", ("fft",)):
        assert_close(layer(x, method="fft"), y, what=f"{what}: fft vs scan")
    return y


def inputs(batch, L, H, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, L, H))                  # (b, L, H)


def gappy_timesteps(batch, L):
    """τ with a 100-step run of zeros, a gap of 1e8, a run of tiny gaps and a gap of 1e12."""
    tau = np.ones((batch, L))                                                       # (b, L)
    tau[:, 10:110] = 0.0
    tau[:, 110] = 1e8
    tau[:, 111:150] = 1e-9
    tau[:, 150] = 1e12
    tau[-1, 160:] = 0.0
    return tau


# ----------------------------------------------------------------------------- calling a property directly
def run_property(prop, strategies=None, **kwargs):
    """Run a backend property's body as the suite does (examples rejected on Unsupported) with hypothesis drawing
    `strategies` (default: `data`), stopping at the first failing example: the suite's self-tests assert the
    message of that failure, not a minimal example, so there is no shrinking. The ci profile's other settings."""
    from parity_tests.backend import counted
    first_failure = settings(parent=settings.get_profile("ci"), phases=(Phase.explicit, Phase.generate),
                             max_examples=20)
    body = counted(prop.hypothesis.inner_test)
    return first_failure(given(**(strategies or {"data": st.data()}))(body))(**kwargs)
