"""The catalogue of bad inputs: every mistake a user can make, with the error the reference raises for it.

Each entry of CATALOGUE is one mistake a user can make. Its builder draws a concrete invalid call
(layer, sizes and values come from hypothesis) and returns it as a function of the side it runs on:
the reference (NumPy) or the backend under test (its native arrays in float64, through the parity
backend API of parity_tests/backend.py). reference_tests/test_error_catalogue.py checks the reference's
type and message for every entry; parity_tests/test_errors.py checks that the backend raises the documented
type (and, opted in with --exact-errors or the adapter's declaration, the message excerpts too).

Entries with `meaning` and `fix` are the README table "Errors you are most likely to meet":
`python -m parity_tests.test_errors` prints it, and reference_tests/test_error_catalogue.py keeps a
pasted copy in README.md in step with the catalogue.
"""
import inspect
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from hypothesis import strategies as st

import reference
from parity_tests.backend import Unsupported
from reference.layers import REGISTRY
from parity_tests.strategies import layer_config, rng_from, seeds

LAYERS = sorted(REGISTRY)
WITH_TIMESTEPS = [n for n in LAYERS if getattr(REGISTRY[n], "accepts_timesteps", True)]
WITH_D_STATE = [n for n in LAYERS if "d_state" in inspect.signature(REGISTRY[n]).parameters]
WITH_DISCRETIZATION = [n for n in LAYERS if "discretization" in inspect.signature(REGISTRY[n]).parameters]
WITH_DT_RANGE = [n for n in LAYERS if "dt_min" in inspect.signature(REGISTRY[n]).parameters]
WITH_KERNEL = [n for n in LAYERS if hasattr(REGISTRY[n], "kernel")]         # the time-invariant layers
README_TITLE = "## Errors you are most likely to meet"


# ----------------------------------------------------------------------------- where a call runs
class Side:
    """The reference, or the backend under test seen through the parity API (float64, native arrays)."""

    def __init__(self, name, package, to_native=None, from_reference=None, require=None, to_native_float32=None):
        self.name, self.package = name, package
        self.to_native = to_native or (lambda a: a)
        self.to_native_float32 = to_native_float32 or self.to_native
        self.from_reference = from_reference or (lambda obj: obj)
        self.require = require or (lambda what: None)

    def to(self, value):
        """NumPy arrays become native arrays; everything else (None, numbers, strings) is passed on."""
        return self.to_native(value) if isinstance(value, np.ndarray) else value

    def function(self, name):
        """A library function (discretize, scan, pool, final_pool) of the side; Unsupported when it lacks it."""
        fn = getattr(self.package, name, None)
        if fn is None:
            self.require(name)
        return fn

    def layer_class(self, name):
        cls = getattr(self.package, name, None) or getattr(getattr(self.package, "layers", None), "REGISTRY", {}).get(name)
        if cls is None:
            self.require(f"layer {name}")
        return cls

    def classifier_class(self):
        cls = getattr(self.package, "Classifier", None)
        if cls is None:
            import importlib
            try:
                cls = importlib.import_module(f"{self.package.__name__}.classifier").Classifier
            except (ImportError, AttributeError):
                self.require("Classifier")
        return cls

    def twin(self, obj):
        """The side's twin of a reference object (the reference object itself on the reference side); an
        Unsupported (the example is rejected) when the side cannot build it."""
        try:
            return self.from_reference(obj)
        except (KeyError, NotImplementedError):
            self.require(f"layer {type(obj).__name__}")
            raise


REFERENCE = Side("reference", reference)


def backend_side(backend):
    side = Side(backend.name, backend.module, to_native=lambda a: backend.to(a, "float64"),
                from_reference=lambda obj: backend.require("from_reference")[0](obj),
                require=lambda what: backend.require(what),
                to_native_float32=lambda a: backend.to(a, "float32"))
    side.function = lambda name: backend.require(name)[0]            # the adapter's API, not the package's
    return side


# ----------------------------------------------------------------------------- the catalogue's form
@dataclass
class Call:
    """A drawn invalid call: `run(side)` makes it; `fmt` fills the {placeholders} of the excerpts."""
    run: Callable
    fmt: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Case:
    name: str                          # what the user did wrong
    build: Callable                    # draw -> Call
    error: type                        # the documented exception type (both backends)
    expect: tuple                      # excerpts the message must contain; the first names the argument
    meaning: str = ""                  # README: what it means (only the most likely errors have one)
    fix: str = ""                      # README: what to do
    sides: tuple = ("reference", "backend")
    shown: str = ""                    # README: the excerpt as shown, when expect[0] has a placeholder to spell out


@dataclass
class Drawn:
    name: str
    config: dict
    x: np.ndarray                      # a valid input (b, L, H)
    state_shape: tuple
    rng: np.random.Generator

    @property
    def batch(self):
        return self.x.shape[0]

    @property
    def L(self):
        return self.x.shape[1]


def draw_layer(draw, names=LAYERS):
    name = draw(st.sampled_from(names))
    config = draw(layer_config(name).configs())
    rng = rng_from(draw(seeds))
    batch, L = draw(st.integers(1, 3)), draw(st.integers(2, 9))
    x = rng.normal(size=(batch, L, config["d_model"]))                              # (b, L, H)
    state_shape = REGISTRY[name](**config).init_state(batch).shape
    return Drawn(name, config, x, state_shape, rng)


def layer_call(mutate, names=LAYERS):
    """A valid layer called with one argument made invalid: mutate(drawn) -> the call's keyword arguments."""
    def build(draw):
        d = draw_layer(draw, names)
        kwargs = mutate(d)

        def run(side):
            layer = side.twin(REGISTRY[d.name](**d.config))
            layer(**{k: side.to(v) for k, v in kwargs.items()})
        return Call(run, {"name": d.name, "L": d.L, "batch": d.batch})
    return build


def step_call(mutate, names=LAYERS):
    """layer.step with one argument invalid: mutate(drawn) -> kwargs (x_t, and state / integration_timestep)."""
    def build(draw):
        d = draw_layer(draw, names)
        kwargs = mutate(d)

        def run(side):
            layer = side.twin(REGISTRY[d.name](**d.config))
            state = kwargs.get("state", layer.init_state(d.batch))
            layer.step(**{**{k: side.to(v) for k, v in kwargs.items()}, "state": side.to(state)})
        return Call(run, {"name": d.name})
    return build


def method_call(method_name, args, names=LAYERS):
    """Another method of a valid layer (e.g. kernel) with invalid arguments."""
    def build(draw):
        d = draw_layer(draw, names)

        def run(side):
            getattr(side.twin(REGISTRY[d.name](**d.config)), method_name)(*args)
        return Call(run, {"name": d.name})
    return build


def construct(overrides, names=LAYERS):
    """A layer constructor with one argument invalid: overrides(drawn) -> the arguments to change."""
    def build(draw):
        d = draw_layer(draw, names)
        kwargs = {**d.config, **overrides(d)}
        return Call(lambda side: side.layer_class(d.name)(**kwargs), {"name": d.name})
    return build


def from_params(mutate, names=LAYERS):
    """Layer.from_params(config, params) with params or config spoiled: mutate(config, params, key) changes
    them in place (key: a parameter name drawn at random) or returns a list to pass instead of the config."""
    def build(draw):
        d = draw_layer(draw, names)
        ref = REGISTRY[d.name](**d.config)
        config, params = dict(ref.config), {k: v.copy() for k, v in ref.params.items()}
        key = draw(st.sampled_from(sorted(params)))
        replaced = mutate(config, params, key)                                    # in place, or a new config
        config = replaced if isinstance(replaced, list) else config
        return Call(lambda side: side.layer_class(d.name).from_params(config, params), {"name": d.name, "key": key})
    return build


def classifier_kwargs(draw, tokens=False, names=LAYERS):
    name = draw(st.sampled_from(names))
    kwargs = {"input_dim": 2, "num_classes": 3, "d_model": 4, "d_state": 4, "n_layers": 2, "lrnn_cls": name,
              "pooling": draw(st.sampled_from(["last", "mean", "max"])), "seed": draw(seeds)}
    if name == "Centaurus":
        kwargs["lrnn_params"] = {"sub_state_dim": 2}
    if tokens:
        kwargs.update(vocab_size=5, max_position_embeddings=8)
    return kwargs


def classifier_construct(overrides, names=LAYERS):
    """Classifier(...) with one argument invalid: overrides(kwargs) -> the arguments to change."""
    def build(draw):
        kwargs = classifier_kwargs(draw, names=names)
        kwargs.update(overrides(kwargs))
        name = kwargs["lrnn_cls"] if isinstance(kwargs["lrnn_cls"], str) else "?"
        return Call(lambda side: side.classifier_class()(**kwargs), {"name": name})
    return build


def classifier_call(mutate, tokens=False, names=LAYERS):
    """A valid Classifier called with one argument invalid: mutate(x, rng) -> the call's keyword arguments."""
    def build(draw):
        kwargs = classifier_kwargs(draw, tokens, names)
        rng = rng_from(draw(seeds))
        batch, L = draw(st.integers(1, 3)), draw(st.integers(2, 8))
        x = rng.integers(0, 5, (batch, L)) if tokens else rng.normal(size=(batch, L, 2))
        call_kwargs = mutate(x, rng)

        def run(side):
            model = side.twin(reference.Classifier(**kwargs))
            model(**{k: side.to(v) for k, v in call_kwargs.items()})
        return Call(run, {"L": L})
    return build


def function_call(make):
    """A library function (discretize, scan, pool, final_pool) with invalid arguments:
    make(draw) -> (function name, args, kwargs)."""
    def build(draw):
        function, args, kwargs = make(draw)

        def run(side):
            side.function(function)(*[side.to(a) for a in args], **{k: side.to(v) for k, v in kwargs.items()})
        return Call(run)
    return build


# ----------------------------------------------------------------------------- small helpers of the entries
def with_value(x, value, rng):
    """A copy of x with `value` at a random position."""
    x = x.copy()
    x[tuple(int(rng.integers(n)) for n in x.shape)] = value
    return x


def taus(d, value=None):
    tau = np.ones((d.batch, d.L))
    return tau if value is None else with_value(tau, value, d.rng)


def lengths_with(d, value):
    lengths = np.full(d.batch, d.L)
    lengths[int(d.rng.integers(d.batch))] = value
    return lengths


def complex_params(config, params, key):
    params[key] = params[key] + 0j


def wrong_shape(config, params, key):
    params[key] = np.zeros(params[key].shape + (2,))


def _discretize_args(draw, **change):
    args = {"Lambda": np.array([-0.5 + 1j, -1.0 + 0j]), "dt": np.array([0.1, 0.2]), "method": "zoh", "tau": None}
    args.update(change)
    return "discretize", (args.pop("Lambda"), args.pop("dt"), args.pop("method")), args


def _scan_args(a_shape=(3,), b_shape=(2, 5, 3), h0_shape=None, **kwargs):
    rng = np.random.default_rng(0)
    h0 = None if h0_shape is None else rng.normal(size=h0_shape)
    return "scan", (rng.uniform(0, 0.9, a_shape), rng.normal(size=b_shape), h0), kwargs


def _pool_args(draw, final=False, **change):
    rng = rng_from(draw(seeds))
    x = rng.normal(size=(2, 7, 3))                                                  # (b, L, H)
    args = {"lengths": None, "mode": "last" if final else "mean"}
    if not final:
        args.update(integration_timesteps=None, stride=2)
    args.update(change)
    return ("final_pool" if final else "pool"), (x,), args


# ----------------------------------------------------------------------------- the catalogue
CATALOGUE = [
    # ---- layer input x
    Case("x has the wrong rank", layer_call(lambda d: {"x": d.x[..., 0]}), ValueError, ("x must have shape (b, L, H=",),
         "x is not batch-first (b, L, H)", "add the batch axis (x[None]) or the feature axis (x[..., None])"),
    Case("x has the wrong width", layer_call(lambda d: {"x": np.concatenate([d.x, d.x[..., :1]], -1)}), ValueError,
         ("x must have width H = d_model",),
         "the last axis of x is not the layer's d_model", "project the input to d_model first (the Classifier does)"),
    Case("x is empty (L = 0)", layer_call(lambda d: {"x": d.x[:, :0]}), ValueError, ("x must have b >= 1 and L >= 1",)),
    Case("x is complex", layer_call(lambda d: {"x": d.x + 0j}), TypeError, ("x must be a real floating-point array",)),
    Case("x holds NaN", layer_call(lambda d: {"x": with_value(d.x, np.nan, d.rng)}), ValueError,
         ("x must be finite", "check_finite=False"),
         "the input holds NaN or ±inf (the index of the first one is given)",
         "clean the data; `check_finite=False` skips the check for speed, "
         "torch_backend.debug.check_finite finds where a model makes them"),
    Case("x holds inf", layer_call(lambda d: {"x": with_value(d.x, -np.inf, d.rng)}), ValueError, ("x must be finite",)),
    # ---- lengths
    Case("lengths have the wrong shape", layer_call(lambda d: {"x": d.x, "lengths": np.full(d.batch + 1, d.L)}),
         ValueError, ("lengths must have shape (b={batch},)",)),
    Case("lengths are floats", layer_call(lambda d: {"x": d.x, "lengths": np.full(d.batch, float(d.L))}), TypeError,
         ("lengths must be an integer array",)),
    Case("a length is 0", layer_call(lambda d: {"x": d.x, "lengths": lengths_with(d, 0)}), ValueError,
         ("lengths must satisfy 1 <= lengths <= L={L}", "got 0"),
         "a sequence is empty, or lengths count something else than valid time steps",
         "drop empty sequences; lengths[i] is the number of valid steps of row i (padding at the end)"),
    Case("a length exceeds L", layer_call(lambda d: {"x": d.x, "lengths": lengths_with(d, d.L + 1)}), ValueError,
         ("lengths must satisfy 1 <= lengths <= L={L}",)),
    # ---- integration timesteps τ
    Case("timesteps have the wrong shape",
         layer_call(lambda d: {"x": d.x, "integration_timesteps": np.ones((d.batch, d.L + 1))}, WITH_TIMESTEPS), ValueError,
         ("integration_timesteps must have shape (b, L)",),
         "τ must give one gap per event, aligned with x",
         "pass a (b, L) array of gaps; not (L,), not time stamps of another length"),
    Case("a timestep is negative", layer_call(lambda d: {"x": d.x, "integration_timesteps": taus(d, -0.5)}, WITH_TIMESTEPS),
         ValueError, ("integration_timesteps must be finite and >= 0", "got -0.5"),
         "τ holds absolute times or unsorted events: timesteps are gaps (backward differences)",
         "sort events by time and pass np.diff(times, prepend=times[:, :1]) (τ_0 = 0 or 1)"),
    Case("a timestep is NaN", layer_call(lambda d: {"x": d.x, "integration_timesteps": taus(d, np.nan)}, WITH_TIMESTEPS),
         ValueError, ("integration_timesteps must be finite and >= 0",)),
    Case("a timestep is infinite", layer_call(lambda d: {"x": d.x, "integration_timesteps": taus(d, np.inf)},
                                              WITH_TIMESTEPS), ValueError, ("integration_timesteps must be finite and >= 0",)),
    Case("timesteps given to a convolution", layer_call(lambda d: {"x": d.x, "integration_timesteps": taus(d)},
                                                        [n for n in LAYERS if n not in WITH_TIMESTEPS] or LAYERS[:1]),
         ValueError, ("integration_timesteps",)),
    # ---- method, state
    Case("unknown method", layer_call(lambda d: {"x": d.x, "method": "parallel"}), ValueError,
         ("method must be one of", "sequential"),
         "the `method` string is not one of the listed ones", "pick one from the list"),
    Case("method='fft' with timesteps", layer_call(lambda d: {"x": d.x, "integration_timesteps": taus(d), "method": "fft"},
                                                   [n for n in WITH_TIMESTEPS if n in WITH_KERNEL]), ValueError,
         ("method='fft'", "integration_timesteps"),
         "the convolution view needs a time-invariant layer", "use a scan method with event streams or initial states"),
    Case("initial_state has the wrong shape",
         layer_call(lambda d: {"x": d.x, "initial_state": np.zeros(d.state_shape[:-1] + (d.state_shape[-1] + 1,))}),
         ValueError, ("initial_state must have shape",)),
    # ---- step and kernel
    Case("step: x_t has the wrong rank", step_call(lambda d: {"x_t": d.x}), ValueError, ("x_t must have shape (b, H=",),
         "step() takes one time step (b, H), not a sequence", "loop over t with x[:, t], or call the layer on x"),
    Case("step: x_t holds NaN", step_call(lambda d: {"x_t": with_value(d.x[:, 0], np.nan, d.rng)}), ValueError,
         ("x_t must be finite",)),
    Case("step: state has the wrong shape",
         step_call(lambda d: {"x_t": d.x[:, 0], "state": np.zeros((d.batch + 1,) + d.state_shape[1:])}), ValueError,
         ("state must have shape",)),
    Case("step: negative timestep", step_call(lambda d: {"x_t": d.x[:, 0], "integration_timestep": -np.ones(d.batch)},
                                              WITH_TIMESTEPS), ValueError, ("integration_timestep must be finite and >= 0",)),
    Case("kernel(L) with L = 0", method_call("kernel", (0,), WITH_KERNEL), ValueError, ("L must be >= 1",)),
    # ---- layer constructors
    Case("d_model is 0", construct(lambda d: {"d_model": 0}), ValueError, ("d_model must be >= 1",)),
    Case("d_model is not an integer", construct(lambda d: {"d_model": 2.5}), TypeError, ("d_model must be an integer",)),
    Case("d_state is 0", construct(lambda d: {"d_state": 0}, WITH_D_STATE), ValueError, ("d_state must be >= 1",)),
    Case("unknown discretization", construct(lambda d: {"discretization": "foh"}, WITH_DISCRETIZATION), ValueError,
         ("discretization must be one of", "zoh", "'foh'"),
         "the discretisation name is not one the layer supports", "pick one from the list (SPEC §2)"),
    Case("unknown S4D init", construct(lambda d: {"init": "hippo"}, ["S4D"]), ValueError, ("init must be one of", "legs")),
    Case("unknown S5 C_init", construct(lambda d: {"C_init": "normal"}, ["S5"]), ValueError, ("C_init must be one of",)),
    Case("unknown Centaurus mode", construct(lambda d: {"mode": "conv"}, ["Centaurus"]), ValueError,
         ("mode must be one of", "neck", "pointwise")),
    Case("Centaurus dws with d_state != d_model",
         construct(lambda d: {"mode": "dws", "d_state": d.config["d_model"] + 1}, ["Centaurus"]), ValueError,
         ("needs d_state == d_model",),
         "mode='dws' keeps one block per channel", "pass d_state=d_model, or use mode='neck'/'pointwise'"),
    Case("Centaurus full with d_state != d_model**2",
         construct(lambda d: {"mode": "full", "d_state": d.config["d_model"] ** 2 + 1}, ["Centaurus"]), ValueError,
         ("needs d_state == d_model**2",)),
    Case("S5 blocks do not divide the state", construct(lambda d: {"blocks": 2 * d.config["d_state"] + 1}, ["S5"]),
         ValueError, ("blocks must divide",)),
    Case("LRU r_min > r_max", construct(lambda d: {"r_min": 0.9, "r_max": 0.5}, ["LRU"]), ValueError, ("r_min must be",)),
    Case("dt_min > dt_max", construct(lambda d: {"dt_min": 0.5, "dt_max": 0.1}, WITH_DT_RANGE), ValueError,
         ("dt_min must be <= dt_max",)),
    Case("MultiresConv kernel_size < 2", construct(lambda d: {"kernel_size": 1}, ["MultiresConv"]), ValueError,
         ("kernel_size must be >= 2",)),
    Case("unknown MultiresConv memory", construct(lambda d: {"memory": "long", "memory_size": None}, ["MultiresConv"]),
         ValueError, ("memory must be one of", "fading")),
    Case("negative seed", construct(lambda d: {"seed": -1}), ValueError, ("seed must be >= 0",)),
    # ---- parameters: from_params (load goes through it)
    Case("a parameter is missing", from_params(lambda c, p, k: p.pop(k)), ValueError,
         ("params are missing parameter '{key}'",),
         "the weights were saved from another layer class or configuration",
         "build the layer with the configuration saved beside the weights (Layer.load reads both)"),
    Case("an extra parameter", from_params(lambda c, p, k: p.update(bogus=p[k])), ValueError,
         ("have unexpected parameter 'bogus'",)),
    Case("a parameter has the wrong shape", from_params(wrong_shape), ValueError, ("parameter '{key}' must have shape",),
         "the weights come from a model with other sizes (d_model, d_state, ...)",
         "use the saved configuration; the message names the first parameter that differs"),
    Case("a parameter is complex", from_params(complex_params), TypeError, ("parameter '{key}' must be a real array",)),
    Case("config lacks a required argument", from_params(lambda c, p, k: c.pop("d_model")), TypeError, ("'d_model'",)),
    Case("config has an unknown argument", from_params(lambda c, p, k: c.update(bogus=1)), TypeError, ("'bogus'",)),
    Case("config is not a dict", from_params(lambda c, p, k: list(c.items())), TypeError, ("config must be a dict",)),
    # ---- Classifier constructor
    Case("unknown layer name", classifier_construct(lambda k: {"lrnn_cls": "GRU"}), ValueError,
         ("lrnn_cls[0] must be a class or one of", "LRU", "'GRU'"),
         "the layer name is not in the registry", "use one of the listed names or pass a layer class"),
    Case("unknown final pooling", classifier_construct(lambda k: {"pooling": "first"}), ValueError,
         ("pooling must be one of", "last")),
    Case("unknown intermediate pooling", classifier_construct(lambda k: {"intermediate_pooling": "avg"}), ValueError,
         ("intermediate_pooling[0] must be one of", "stride")),
    Case("pooling_factor < 1", classifier_construct(lambda k: {"intermediate_pooling": "mean", "pooling_factor": 0}),
         ValueError, ("pooling_factor[0] must be >= 1",),
         "the stride of intermediate pooling is 0 or negative", "use 1 (no shortening) or more"),
    Case("lrnn_cls list of the wrong length", classifier_construct(lambda k: {"lrnn_cls": [k["lrnn_cls"]] * 3}), ValueError,
         ("lrnn_cls given as a list must have one entry per layer", "(n_layers=2)"),
         "a per-layer list does not have n_layers entries", "give one entry per layer, or one value for all"),
    Case("intermediate_pooling list of the wrong length",
         classifier_construct(lambda k: {"intermediate_pooling": ["mean"]}), ValueError,
         ("intermediate_pooling given as a list must have one entry per layer",)),
    Case("pooling_factor list of the wrong length", classifier_construct(lambda k: {"pooling_factor": [2, 2, 2]}),
         ValueError, ("pooling_factor given as a list must have one entry per layer",)),
    Case("lrnn_params list of the wrong length", classifier_construct(lambda k: {"lrnn_params": [{}]}), ValueError,
         ("lrnn_params given as a list must have one entry per layer",)),
    Case("lrnn_params with an unknown key", classifier_construct(lambda k: {"lrnn_params": {"d_hidden": 8}}), ValueError,
         ("has an argument 'd_hidden' that {name} does not accept",),
         "a mixer argument is misspelt or belongs to another layer", "use one of the arguments the message lists",
         shown="has an argument '…' that <Layer> does not accept"),
    Case("lrnn_params sets the seed", classifier_construct(lambda k: {"lrnn_params": {"seed": 1}}), ValueError,
         ("must not set 'seed'",)),
    Case("lrnn_params sets another d_model", classifier_construct(lambda k: {"lrnn_params": {"d_model": 3}}), ValueError,
         ("every mixer must have the classifier's width d_model=4",)),
    Case("Centaurus dws in a Classifier with d_state != d_model",
         classifier_construct(lambda k: {"d_state": 3, "lrnn_params": {"mode": "dws"}}, ["Centaurus"]), ValueError,
         ("building layer 0 (Centaurus)", "needs d_state == d_model")),
    Case("dropout outside [0, 1]", classifier_construct(lambda k: {"dropout": 1.5}), ValueError,
         ("dropout must be a probability in [0, 1]",)),
    Case("padding_idx outside the vocabulary", classifier_construct(lambda k: {"vocab_size": 4, "padding_idx": 4}),
         ValueError, ("padding_idx must be in [0, vocab_size=4)",)),
    Case("embedding_dim without vocab_size", classifier_construct(lambda k: {"embedding_dim": 3}), ValueError,
         ("set vocab_size",)),
    # ---- Classifier call
    Case("integer x for feature input", classifier_call(lambda x, rng: {"x": np.round(x * 3).astype(np.int64)}),
         TypeError, ("x must be float features",),
         "the model takes features, the data are integers (token ids?)",
         "cast features to float, or build the model with vocab_size for token ids"),
    Case("float x for token input", classifier_call(lambda x, rng: {"x": x.astype(np.float64)}, tokens=True), TypeError,
         ("x must be integer token ids",),
         "the model was built with vocab_size, so x must hold token ids", "pass integer ids (b, L)"),
    Case("token id >= vocab_size", classifier_call(lambda x, rng: {"x": with_value(x, 5, rng)}, tokens=True), ValueError,
         ("token ids must be in [0, vocab_size=", "vocab_size=5)", "got 5"),
         "an id is outside the embedding table", "set vocab_size to the tokenizer's size (ids 0 .. V−1)"),
    Case("negative token id", classifier_call(lambda x, rng: {"x": with_value(x, -1, rng)}, tokens=True), ValueError,
         ("token ids must be in [0, vocab_size=5)",)),
    Case("L > max_position_embeddings", classifier_call(lambda x, rng: {"x": np.tile(x, (1, 5))}, tokens=True),
         ValueError, ("exceeds max_position_embeddings=", "max_position_embeddings=8"),
         "the sequence is longer than the learned positional table", "crop the sequence or build with a larger value"),
    Case("feature width != input_dim", classifier_call(lambda x, rng: {"x": x[..., :1]}), ValueError,
         ("x must have shape (b, L, input_dim=2)",)),
    Case("NaN features", classifier_call(lambda x, rng: {"x": with_value(x, np.nan, rng)}), ValueError,
         ("x must be finite",)),
    Case("classifier lengths out of range", classifier_call(lambda x, rng: {"x": x, "lengths": np.zeros(len(x), np.int64)}),
         ValueError, ("lengths must satisfy 1 <= lengths <= L={L}",)),
    Case("classifier negative timestep",
         classifier_call(lambda x, rng: {"x": x, "integration_timesteps": -np.ones(x.shape[:2])}, names=WITH_TIMESTEPS),
         ValueError, ("integration_timesteps must be finite and >= 0",)),
    Case("classifier timesteps with a convolution mixer",
         classifier_call(lambda x, rng: {"x": x, "integration_timesteps": np.ones(x.shape[:2])},
                         names=[n for n in LAYERS if n not in WITH_TIMESTEPS] or LAYERS[:1]),
         ValueError, ("integration_timesteps",)),
    # ---- pooling
    Case("unknown pooling mode", function_call(lambda draw: _pool_args(draw, mode="avg")), ValueError,
         ("mode must be one of", "stride")),
    Case("pooling stride 0", function_call(lambda draw: _pool_args(draw, stride=0)), ValueError, ("stride must be >= 1",)),
    Case("unknown final pooling mode", function_call(lambda draw: _pool_args(draw, final=True, mode="first")), ValueError,
         ("mode must be one of", "last")),
    Case("final pooling with length 0", function_call(lambda draw: _pool_args(draw, final=True, lengths=np.array([0, 7]))),
         ValueError, ("lengths must satisfy 1 <= lengths <= L=7", "got 0")),
    Case("pooling timesteps of the wrong shape",
         function_call(lambda draw: _pool_args(draw, integration_timesteps=np.ones((2, 6)))), ValueError,
         ("integration_timesteps must have shape (b, L) = (2, 7)",)),
    # ---- discretize and scan
    Case("discretize: unknown method", function_call(lambda draw: _discretize_args(draw, method="foh")), ValueError,
         ("discretization must be one of", "bilinear")),
    Case("discretize: dt <= 0", function_call(lambda draw: _discretize_args(draw, dt=np.array([0.1, 0.0]))), ValueError,
         ("dt must be finite and > 0",)),
    Case("discretize: dt is NaN", function_call(lambda draw: _discretize_args(draw, dt=np.array([np.nan, 0.1]))),
         ValueError, ("dt must be finite and > 0",)),
    Case("discretize: negative tau", function_call(lambda draw: _discretize_args(draw, tau=-np.ones((1, 3)))), ValueError,
         ("integration_timesteps must be finite and >= 0",)),
    Case("discretize: tau of rank 1", function_call(lambda draw: _discretize_args(draw, tau=np.ones(3))), ValueError,
         ("integration_timesteps must have shape (b, L)",)),
    Case("scan: unknown method", function_call(lambda draw: _scan_args(method="parallel")), ValueError,
         ("scan method must be one of",)),
    Case("scan: a does not broadcast", function_call(lambda draw: _scan_args(a_shape=(4,))), ValueError,
         ("a with shape",)),
    Case("scan: h0 of the wrong shape", function_call(lambda draw: _scan_args(h0_shape=(2, 4))), ValueError,
         ("h0 must have shape",)),
    Case("scan: L = 0", function_call(lambda draw: _scan_args(b_shape=(2, 0, 3))), ValueError, ("L >= 1",)),
    Case("scan: b without a time axis", function_call(lambda draw: _scan_args(a_shape=(3,), b_shape=(3,))), ValueError,
         ("b must have a batch and a time axis",)),
]


def _backend_precision_case(draw):
    """Backend only: a float32 array given to a float64 module (precisions are never mixed silently)."""
    d = draw_layer(draw)

    def run(side):
        layer = side.twin(REGISTRY[d.name](**d.config))
        layer(side.to_native_float32(d.x))
    return Call(run, {"name": d.name})


CATALOGUE.append(Case("x in another precision than the module", _backend_precision_case, TypeError,
                      ("x has dtype", "but the module computes in"),
                      "torch: the input's precision differs from the module's (float32 data, .double() module)",
                      "convert one of them: x.to(model.dtype), or model.float() / model.double()",
                      sides=("backend",)))


# ----------------------------------------------------------------------------- checking one side
def expect_error(case, call, side, messages=True):
    """Run the call on `side`; assert the documented type (and, with `messages`, the excerpts). Returns the exception."""
    try:
        call.run(side)
    except Unsupported:                                           # the side lacks it: the example is rejected
        raise
    except Exception as raised:                                   # noqa: BLE001 (checked below)
        error = raised
    else:
        raise AssertionError(f"{case.name} on {side.name}: no error raised (expected {case.error.__name__})")
    message = str(error)
    assert isinstance(error, case.error), (
        f"{case.name} on {side.name}: expected {case.error.__name__}, got {type(error).__name__}: {message}")
    for excerpt in case.expect if messages else ():
        assert excerpt.format(**call.fmt) in message, (
            f"{case.name} on {side.name}: message does not contain {excerpt.format(**call.fmt)!r}: {message}")
    return error



# ----------------------------------------------------------------------------- the README table
def readme_table():
    """The markdown table of the entries with a meaning (the errors users meet most), in catalogue order."""
    rows = ["| message contains | exception | what it means | what to do |", "|---|---|---|---|"]
    for case in CATALOGUE:
        if case.meaning:
            excerpt = (case.shown or re.sub(r"\{\w+\}", "…", case.expect[0])).replace("|", "\\|")
            torch_only = " (torch)" if case.sides == ("backend",) else ""
            rows.append(f"| `{excerpt}`{torch_only} | {case.error.__name__} | {case.meaning} | {case.fix} |")
    return "\n".join(rows)
