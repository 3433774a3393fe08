"""The hierarchical sequence classifier/regressor: a stack of (possibly different) mixers — SPEC §6.

    h⁽⁰⁾ = embed(x)                                       token ids → Embedding (+ positions) (+ Linear),
                                                           or features → Linear(input_dim → H)
    block i:  r = h;  h = mixer_i(h, len, τ);  h = act(h);  h = dropout(h);  h = LayerNorm(h + r)
              (h, len, τ) = pool_i(h, len, τ)             intermediate pooling, SPEC §5.1
    out = head(final_pool(h, len))                         logits (b, num_classes) or values (b, output_dim)

lengths and integration timesteps flow through the stack and are changed only by pooling; every
mixer is causal and every pooling looks only at valid positions, so padding never changes the output.

Seed: the `HierarchicalClassifier` of lrnnx (after Event-SSM's classifier), same signature and
defaults. Deliberate differences (SPEC §6, §10): each mixer is built from {d_model, d_state} updated
by `lrnn_params` (the seed passes d_model twice and cannot be built); unknown mixer arguments are an
error naming the key; pooling follows SPEC §5 (see reference/pooling.py). Left out: the seed's
embedding dropout. The reference is inference-only (no autograd); dropout acts only after `train()`.

Parameters are one flat dict with dotted names, the torch backend's `state_dict()` keys:
`embedding.weight`, `embedding_proj.{weight,bias}`, `position_embedding.weight`,
`input_proj.{weight,bias}`, `blocks.{i}.mixer.<name>`, `blocks.{i}.norm.{weight,bias}`, `head.{weight,bias}`.

Glossary (SPEC §1): b batch, L length, H d_model, N d_state; E embedding width, V vocabulary size.
"""
import copy
import inspect

import numpy as np

from . import nn
from .backward import classifier_loss_and_grad
from .layers import REGISTRY
from .layers.lru import LRU
from .layers._base import Layer
from .layers._checks import check_choice, check_input, check_integration_timesteps, check_lengths, check_positive_int
from .pooling import FINAL_MODES, INTERMEDIATE_MODES, final_pool, pool
from .streaming import init_stream, stream_step


# ----------------------------------------------------------------------------- argument checks
def _per_layer(value, name, n_layers):
    """A value for every layer, or a list with one entry per layer."""
    if isinstance(value, (list, tuple)):
        if len(value) != n_layers:
            raise ValueError(f"{name} given as a list must have one entry per layer (n_layers={n_layers}); "
                             f"got {len(value)} entries")
        return list(value)
    return [value] * n_layers


def _optional_int(value, name, minimum=1):
    return None if value is None else check_positive_int(value, name, minimum)


def plain(value):
    """NumPy scalars → Python scalars, through dicts, lists and tuples: a config must stay JSON (save)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {key: plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(plain(item) for item in value)
    return value


def resolve_mixer(spec, name):
    """A registry name or a class → (class, what the config stores: the registry name, else the class)."""
    if isinstance(spec, str):
        if spec not in REGISTRY:
            raise ValueError(f"{name} must be a class or one of {', '.join(sorted(REGISTRY)) or '(empty registry)'}; "
                             f"got {spec!r}")
        return REGISTRY[spec], spec
    if isinstance(spec, type):
        mirrored = getattr(spec, "reference_class", None)            # a torch_backend layer class
        if mirrored is not None:
            raise TypeError(f"{name} {spec.__module__}.{spec.__name__} is a torch layer; the reference Classifier "
                            f"takes reference layer classes or registry names (use {mirrored.__name__!r} or "
                            f"reference.{mirrored.__name__})")
        registered = [key for key, cls in REGISTRY.items() if cls is spec]
        return spec, registered[0] if registered else spec
    raise TypeError(f"{name} must be a class or a registry name (str); got {spec!r} of type {type(spec).__name__}")


def mixer_arguments(cls, d_model, d_state, extra, name):
    """{d_model, d_state} updated by `extra`; d_state only if cls takes it. Unknown keys raise naming them."""
    if not isinstance(extra, dict):
        raise TypeError(f"{name} must be a dict of mixer arguments; got {type(extra).__name__}")
    accepted = inspect.signature(cls).parameters
    open_ended = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    known = set(accepted) - {"seed"}
    for key in ("d_model", "seed"):
        if key not in accepted and not open_ended:
            raise TypeError(f"lrnn_cls {cls.__name__} cannot be a classifier mixer: its constructor has no {key!r}")
    for key in extra:
        if key == "seed":
            raise ValueError(f"{name} must not set 'seed': mixer seeds are derived from the classifier's seed")
        if key not in known and not open_ended:
            raise ValueError(f"{name} has an argument {key!r} that {cls.__name__} does not accept; "
                             f"it accepts {', '.join(sorted(known))}")
    if extra.get("d_model", d_model) != d_model:
        raise ValueError(f"{name} sets d_model={extra['d_model']!r}; every mixer must have the classifier's "
                         f"width d_model={d_model} (the residual adds its input to its output)")
    arguments = {"d_model": d_model}
    if "d_state" in accepted or open_ended:
        arguments["d_state"] = d_state
    return {**arguments, **extra}


# ----------------------------------------------------------------------------- the model
class Classifier(Layer):
    """Sequence classifier (num_classes > 0) or regressor over a stack of linear-RNN mixers (SPEC §6).

    Args:
        input_dim: feature width of float input x (b, L, input_dim); with token input (vocab_size set) it is
            not used and may be None or 0.
        num_classes: number of classes (> 0: logits (b, num_classes)); 0 selects regression.
        output_dim: width of the regression output (b, output_dim), used when num_classes = 0.
        d_model: H, the width of every block.  d_state: N, passed to mixers whose constructor has it.
        n_layers: number of blocks.
        lrnn_cls: mixer class or registry name (reference.layers.REGISTRY), or a list of n_layers of them.
        pooling: final pooling, "last", "mean" or "max" (SPEC §5.2).
        dropout: drop probability p in [0, 1] after each block's activation (training mode only).
        intermediate_pooling: "none", "stride", "mean" or "max" after each block, or a per-layer list.
        pooling_factor: stride s >= 1 of the intermediate pooling, or a per-layer list.
        vocab_size: V; when set, x holds token ids (b, L) in [0, V) instead of features.
        embedding_dim: E, the embedding width (default d_model; a Linear E → d_model when they differ).
        max_position_embeddings: when set, learned positional embeddings for L up to this value.
        padding_idx: token id whose embedding row starts at zero (None: no such row); always checked
            (None or an integer >= 0, below vocab_size with token input).
        lrnn_params: extra mixer arguments, a dict for every layer or a list of n_layers dicts.
        activation: "gelu" (exact erf form) or "none".
        seed: integer seed; parameters, per-layer mixer seeds and dropout masks all derive from it.

    Call `model(x, lengths=None, integration_timesteps=None)`; returns float64 (b, num_classes or output_dim).
    """

    def __init__(self, input_dim, num_classes=0, output_dim=1, d_model=128, d_state=64, n_layers=4,
                 lrnn_cls=LRU, pooling="last", dropout=0.1, intermediate_pooling="none", pooling_factor=2,
                 vocab_size=None, embedding_dim=None, max_position_embeddings=None, padding_idx=0,
                 lrnn_params=None, activation="gelu", seed=None):
        vocab_size = _optional_int(vocab_size, "vocab_size")
        if vocab_size is None or input_dim is not None:      # token input: input_dim is not used (None or 0 allowed)
            input_dim = check_positive_int(input_dim, "input_dim", minimum=1 if vocab_size is None else 0)
        num_classes = check_positive_int(num_classes, "num_classes", minimum=0)
        output_dim = check_positive_int(output_dim, "output_dim")
        d_model, d_state = check_positive_int(d_model, "d_model"), check_positive_int(d_state, "d_state")
        n_layers = check_positive_int(n_layers, "n_layers")
        check_choice(pooling, "pooling", FINAL_MODES)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float, np.floating)) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a probability in [0, 1]; got {dropout!r}")
        modes = _per_layer(intermediate_pooling, "intermediate_pooling", n_layers)
        for i, mode in enumerate(modes):
            check_choice(mode, f"intermediate_pooling[{i}]", INTERMEDIATE_MODES)
        strides = [check_positive_int(s, f"pooling_factor[{i}]")
                   for i, s in enumerate(_per_layer(pooling_factor, "pooling_factor", n_layers))]
        embedding_dim = _optional_int(embedding_dim, "embedding_dim")
        max_position_embeddings = _optional_int(max_position_embeddings, "max_position_embeddings")
        if vocab_size is None and (embedding_dim is not None or max_position_embeddings is not None):
            raise ValueError("embedding_dim and max_position_embeddings need token input: set vocab_size "
                             f"(got embedding_dim={embedding_dim}, max_position_embeddings={max_position_embeddings})")
        if padding_idx is not None:
            padding_idx = check_positive_int(padding_idx, "padding_idx", minimum=0)
            if vocab_size is not None and padding_idx >= vocab_size:
                raise ValueError(f"padding_idx must be in [0, vocab_size={vocab_size}); got {padding_idx}")
        check_choice(activation, "activation", tuple(nn.ACTIVATIONS))
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)

        specs = _per_layer(lrnn_cls, "lrnn_cls", n_layers)
        resolved = [resolve_mixer(spec, f"lrnn_cls[{i}]") for i, spec in enumerate(specs)]
        extras = _per_layer({} if lrnn_params is None else lrnn_params, "lrnn_params", n_layers)
        arguments = [mixer_arguments(cls, d_model, d_state, {} if extra is None else extra,
                                     f"lrnn_params for layer {i} ({cls.__name__})")
                     for i, ((cls, _), extra) in enumerate(zip(resolved, extras))]
        stored_cls = [stored for _, stored in resolved]
        self.config = dict(
            input_dim=input_dim, num_classes=num_classes, output_dim=output_dim, d_model=d_model,
            d_state=d_state, n_layers=n_layers,
            lrnn_cls=stored_cls if isinstance(lrnn_cls, (list, tuple)) else stored_cls[0],
            pooling=pooling, dropout=float(dropout),
            intermediate_pooling=list(modes) if isinstance(intermediate_pooling, (list, tuple)) else modes[0],
            pooling_factor=strides if isinstance(pooling_factor, (list, tuple)) else strides[0],
            vocab_size=vocab_size, embedding_dim=embedding_dim, max_position_embeddings=max_position_embeddings,
            padding_idx=padding_idx, lrnn_params=plain(copy.deepcopy(lrnn_params)),
            activation=activation, seed=seed)
        self.modes, self.strides = modes, strides

        # seeds: child 0 → this model's own parameters, child 1 → dropout masks, child 2 + i → mixer i
        own, masks, *mixer_seeds = np.random.SeedSequence(seed).spawn(n_layers + 2)
        rng = np.random.default_rng(own)
        params = {}
        if vocab_size is not None:
            width = d_model if embedding_dim is None else embedding_dim                # E
            params["embedding.weight"] = rng.normal(0.0, 1.0, (vocab_size, width))   # (V, E)
            if padding_idx is not None:
                params["embedding.weight"][padding_idx] = 0.0
            if max_position_embeddings is not None:
                params["position_embedding.weight"] = rng.normal(0.0, 1.0, (max_position_embeddings, width))
            if width != d_model:
                params["embedding_proj.weight"], params["embedding_proj.bias"] = nn.init_linear(rng, width, d_model)
        else:
            params["input_proj.weight"], params["input_proj.bias"] = nn.init_linear(rng, input_dim, d_model)
        self.mixers = []
        for i, ((cls, _), kwargs) in enumerate(zip(resolved, arguments)):
            try:
                mixer = cls(**kwargs, seed=int(mixer_seeds[i].generate_state(1)[0]))
            except (ValueError, TypeError) as error:
                raise type(error)(f"building layer {i} ({cls.__name__}) with {kwargs}: {error}") from error
            self.mixers.append(mixer)
            params.update({f"blocks.{i}.mixer.{key}": value for key, value in mixer.params.items()})
            params[f"blocks.{i}.norm.weight"] = np.ones(d_model)                       # (H,)
            params[f"blocks.{i}.norm.bias"] = np.zeros(d_model)                        # (H,)
        out = num_classes if num_classes > 0 else output_dim
        params["head.weight"], params["head.bias"] = nn.init_linear(rng, d_model, out)  # (out, H), (out,)
        self.params = params
        self.training = False
        self.dropout_rng = np.random.default_rng(masks)

    @classmethod
    def from_params(cls, config, params):
        """Rebuild a classifier from its config and a flat params dict; every name and shape is checked."""
        model = super().from_params(config, params)
        model.sync_mixers()
        return model

    def sync_mixers(self):
        """Give every mixer its slice of `self.params` (the one source of truth; done at every call)."""
        for i, mixer in enumerate(self.mixers):
            prefix = f"blocks.{i}.mixer."
            mixer.params = {key[len(prefix):]: value for key, value in self.params.items() if key.startswith(prefix)}

    # ------------------------------------------------------------------------- modes
    def train(self, mode=True):
        """Training mode (dropout active) or, with mode=False, evaluation mode. Returns self."""
        self.training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    # ------------------------------------------------------------------------- forward
    def embed(self, x, start=0, lengths=None, check_finite=True):
        """Token ids (b, L) or features (b, L, input_dim) → h (b, L, H) float64, validated.

        `start`: the position of x[:, 0] for positional embeddings (a stream's running index).
        `lengths`: features at t >= len are padding: set to 0 before anything reads them, so they may
        hold anything (NaN included); the finiteness check (`check_finite`) covers valid positions."""
        cfg, P = self.config, self.params
        x = np.asarray(x)
        if cfg["vocab_size"] is None:
            if x.dtype.kind != "f":
                raise TypeError(f"x must be float features (b, L, input_dim={cfg['input_dim']}); got dtype {x.dtype} "
                                "(token ids need vocab_size)")
            if x.ndim != 3 or x.shape[2] != cfg["input_dim"]:
                raise ValueError(f"x must have shape (b, L, input_dim={cfg['input_dim']}); got shape {x.shape}")
            x = check_input(x, cfg["input_dim"], check_finite=False)                 # (b, L, input_dim)
            lengths = check_lengths(lengths, x.shape[0], x.shape[1])
            if lengths is not None:
                valid = np.arange(x.shape[1]) < lengths[:, None]                     # (b, L)
                x = np.where(valid[..., None], x, 0.0)                               # (b, L, input_dim)
            x = check_input(x, cfg["input_dim"], check_finite=check_finite)          # (b, L, input_dim)
            return nn.linear(x, P["input_proj.weight"], P["input_proj.bias"])        # (b, L, H)
        if x.dtype.kind not in "iu":
            raise TypeError(f"x must be integer token ids (b, L) because vocab_size is set; got dtype {x.dtype}")
        if x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"x must be token ids of shape (b, L) with b, L >= 1; got shape {x.shape}")
        x = x.astype(np.int64)        # every integer dtype: uint8 ids reach 255, int8 ids may be negative
        bad = (x < 0) | (x >= cfg["vocab_size"])
        if bad.any():
            index = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(f"token ids must be in [0, vocab_size={cfg['vocab_size']}); "
                             f"got {x[index]} at index {index}")
        L, max_positions = x.shape[1], cfg["max_position_embeddings"]
        if max_positions is not None and start + L > max_positions:
            raise ValueError(f"L={start + L} exceeds max_position_embeddings={max_positions}")
        h = P["embedding.weight"][x]                                                 # (b, L, E)
        if max_positions is not None:
            h = h + P["position_embedding.weight"][start:start + L]                  # (b, L, E)
        if "embedding_proj.weight" in P:
            h = nn.linear(h, P["embedding_proj.weight"], P["embedding_proj.bias"])   # (b, L, H)
        return h

    def stages(self, x, lengths=None, integration_timesteps=None, check_finite=True):
        """[(h, lengths, τ)] after the embedding and after every block (pooling included)."""
        h = self.embed(x, lengths=lengths, check_finite=check_finite)                # (b, L, H)
        batch, L, _ = h.shape
        lengths = check_lengths(lengths, batch, L)
        tau = check_integration_timesteps(integration_timesteps, batch, L)
        if tau is not None:
            for i, mixer in enumerate(self.mixers):
                if not getattr(mixer, "accepts_timesteps", True):
                    raise ValueError(f"integration_timesteps were given but layer {i} ({type(mixer).__name__}) "
                                     "does not accept them")
        activation, p, P = nn.ACTIVATIONS[self.config["activation"]], self.config["dropout"], self.params
        stages = [(h, lengths, tau)]
        self.sync_mixers()
        for i, mixer in enumerate(self.mixers):
            r = h
            unchecked = {} if check_finite else {"check_finite": False}
            h = mixer(h, lengths, **unchecked) if tau is None else mixer(h, lengths, tau, **unchecked)  # (b, L_i, H)
            h = activation(h)
            if self.training:
                h = nn.dropout(h, p, self.dropout_rng)
            h = nn.layer_norm(h + r, P[f"blocks.{i}.norm.weight"], P[f"blocks.{i}.norm.bias"])
            h, lengths, tau = pool(h, lengths, tau, mode=self.modes[i], stride=self.strides[i])  # (b, L_i+1, H)
            stages.append((h, lengths, tau))
        return stages

    def __call__(self, x, lengths=None, integration_timesteps=None, check_finite=True):
        """x: token ids (b, L) or features (b, L, input_dim); lengths (b,) in [1, L]; τ (b, L) >= 0.
        Padded positions (t >= len) may hold anything; check_finite=False skips the finiteness checks.

        Returns float64 logits (b, num_classes), or values (b, output_dim) when num_classes = 0.
        """
        h, lengths, _ = self.stages(x, lengths, integration_timesteps, check_finite)[-1]
        pooled = final_pool(h, lengths, mode=self.config["pooling"])                 # (b, H)
        return nn.linear(pooled, self.params["head.weight"], self.params["head.bias"])

    # ------------------------------------------------------------------------- streaming (SPEC §6.1)
    def init_state(self, batch):
        """The streaming state before the first event (reference/streaming.py); causal mixers, eval mode."""
        return init_stream(self, check_positive_int(batch, "batch"))

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One event per row → (output equal to the forward on the events seen so far, new state).
        inplace=True: the state's arrays are updated in place and the given state dict is returned."""
        return stream_step(self, x_t, state, integration_timestep, inplace=inplace)

    def save(self, path):
        """Write config and params to an .npz file (every mixer must be a registry entry)."""
        for cls in np.atleast_1d(np.asarray(self.config["lrnn_cls"], dtype=object)):
            if not isinstance(cls, str):
                raise TypeError(f"cannot save: lrnn_cls {cls.__name__} is not in reference.layers.REGISTRY "
                                f"(registered: {', '.join(REGISTRY)}); register it to make the config JSON")
        super().save(path)

    # ------------------------------------------------------------------------- training (SPEC §11)
    def loss_and_grad(self, x, labels, lengths=None, integration_timesteps=None):
        """(loss, {param: gradient}) by the hand-written backward pass (reference/backward.py), no autograd.

        labels: integer classes (b,) with num_classes > 0 (cross-entropy, mean over the batch), else real
        targets (b, output_dim) (mean squared error). In training mode the dropout masks are drawn as in
        the forward and reused backwards. Frozen mixer params (LSSL's buffers) get no entry.
        """
        return classifier_loss_and_grad(self, x, labels, lengths, integration_timesteps)


HierarchicalClassifier = Classifier
