"""The hierarchical sequence classifier/regressor: a stack of (possibly different) mixers — SPEC §6, PyTorch mirror.

    h⁽⁰⁾ = embed(x)                                       token ids → Embedding (+ positions) (+ Linear),
                                                           or features → Linear(input_dim → H)
    block i:  r = h;  h = mixer_i(h, len, τ);  h = act(h);  h = dropout(h);  h = LayerNorm(h + r)
              (h, len, τ) = pool_i(h, len, τ)             intermediate pooling, SPEC §5.1
    out = head(final_pool(h, len))                         logits (b, num_classes) or values (b, output_dim)

lengths and integration timesteps flow through the stack and are changed only by pooling; every
mixer is causal and every pooling looks only at valid positions, so padding never changes the output.

Seed and its deliberate differences: as in reference/classifier.py. Differences from the reference,
each for a reason:
* a torch.nn.Module that trains: weights live in torch.nn.Linear / Embedding / LayerNorm modules and
  the mixers are torch_backend layers, so `state_dict()` keys are exactly the reference's params keys;
* initialisation builds the reference Classifier with the same arguments and seed and copies its
  parameters (one initialiser, SPEC §7); without a seed one is drawn from torch's RNG, so
  `torch.manual_seed` makes the model reproducible; exchange (`from_reference`, `to_reference`,
  `params`/`load_params`, `save`/`load`) is that of every torch layer (torch_backend.layers._base.Layer);
* `lrnn_cls` names resolve in torch_backend.layers.REGISTRY; a torch layer class stands for the
  reference class it mirrors (its `reference_class`), which builds the initial parameters;
* dropout is torch.nn.Dropout (torch's RNG, active after `train()`); masks are not shared with the reference;
* the input, lengths and τ are validated once, at the top; the blocks skip the data-dependent checks
  (each one waits for the GPU), so an overflow inside the stack is not reported as the reference does;
* float32 by default, float64 after `.double()`.

Glossary (SPEC §1): b batch, L length, H d_model, N d_state; E embedding width, V vocabulary size.
"""
import numpy as np
import torch

from reference import classifier as reference_classifier
from . import nn
from .discretize import checking_values
from .layers import REGISTRY
from .layers.lru import LRU
from .layers._base import Layer, draw_seed
from .layers._checks import (check_input, check_integration_timesteps, check_lengths, check_positive_int,
                             compiled_check, dtype_name)
from .exchange import from_reference
from .pooling import final_pool, pool
from .streaming import init_stream, stream_step


# ----------------------------------------------------------------------------- argument checks
def reference_mixer(spec, name):
    """A registry name or a torch layer class → what the reference Classifier takes (the name, or the
    reference class the torch class mirrors). Anything else is passed on for the reference to check."""
    # Note: names are checked against the torch registry (a reference layer without a torch twin fails here).
    if isinstance(spec, str):
        if spec not in REGISTRY:
            raise ValueError(f"{name} must be a class or one of {', '.join(sorted(REGISTRY)) or '(empty registry)'}; "
                             f"got {spec!r}")
        return spec
    if isinstance(spec, type) and issubclass(spec, torch.nn.Module):
        if getattr(spec, "reference_class", None) is None:
            raise TypeError(f"{name} {spec.__name__} cannot be a classifier mixer: it mirrors no reference layer "
                            "(subclass torch_backend.layers.Layer and set reference_class)")
        return spec.reference_class
    return spec


def _blank(module_class, *args, **kwargs):
    """A torch module of the given shape whose parameters are left uninitialised (no draw from torch's RNG):
    they are overwritten with the reference's values right after."""
    return torch.nn.utils.skip_init(module_class, *args, **kwargs)


# ----------------------------------------------------------------------------- the model
class Classifier(Layer):
    """Sequence classifier (num_classes > 0) or regressor over a stack of linear-RNN mixers (SPEC §6).

    Args: exactly those of reference.classifier.Classifier (see its docstring), with `lrnn_cls` a
    torch_backend layer class, a registry name (torch_backend.layers.REGISTRY) or a list of n_layers of them.

    Call `model(x, lengths=None, integration_timesteps=None)` with x float (b, L, input_dim) in the
    model's dtype or integer token ids (b, L), lengths integer (b,), τ (b, L) in the model's dtype, all on
    the model's device; returns (b, num_classes), or (b, output_dim) when num_classes = 0, in the model's dtype.
    """

    reference_class = reference_classifier.Classifier
    autocast_inside = True        # its Linear layers follow torch.autocast; each mixer runs in float32 (README)

    def __init__(self, input_dim, num_classes=0, output_dim=1, d_model=128, d_state=64, n_layers=4,
                 lrnn_cls=LRU, pooling="last", dropout=0.1, intermediate_pooling="none", pooling_factor=2,
                 vocab_size=None, embedding_dim=None, max_position_embeddings=None, padding_idx=0,
                 lrnn_params=None, activation="gelu", seed=None):
        super().__init__()
        if isinstance(lrnn_cls, (list, tuple)):
            lrnn_cls = [reference_mixer(spec, f"lrnn_cls[{i}]") for i, spec in enumerate(lrnn_cls)]
        else:
            lrnn_cls = reference_mixer(lrnn_cls, "lrnn_cls[0]")
        ref = reference_classifier.Classifier(
            input_dim=input_dim, num_classes=num_classes, output_dim=output_dim, d_model=d_model, d_state=d_state,
            n_layers=n_layers, lrnn_cls=lrnn_cls, pooling=pooling, dropout=dropout,
            intermediate_pooling=intermediate_pooling, pooling_factor=pooling_factor, vocab_size=vocab_size,
            embedding_dim=embedding_dim, max_position_embeddings=max_position_embeddings, padding_idx=padding_idx,
            lrnn_params=lrnn_params, activation=activation, seed=draw_seed(seed))
        self.modes, self.strides = list(ref.modes), list(ref.strides)
        P, dtype = ref.params, torch.get_default_dtype()

        # the modules, in the reference's shapes; _init_from_reference then copies every parameter in
        if vocab_size is not None:
            self.embedding = _blank(torch.nn.Embedding, *P["embedding.weight"].shape, padding_idx=padding_idx)
            if max_position_embeddings is not None:
                self.position_embedding = _blank(torch.nn.Embedding, *P["position_embedding.weight"].shape)
            if "embedding_proj.weight" in P:
                self.embedding_proj = _blank(torch.nn.Linear, *P["embedding_proj.weight"].shape[::-1])
        else:
            self.input_proj = _blank(torch.nn.Linear, input_dim, d_model)
        self.blocks = torch.nn.ModuleList(
            torch.nn.ModuleDict({"mixer": from_reference(mixer, dtype=dtype),
                                 "norm": torch.nn.LayerNorm(d_model, eps=nn.LAYER_NORM_EPS)})
            for mixer in ref.mixers)
        self.dropout = torch.nn.Dropout(ref.config["dropout"])
        self.head = _blank(torch.nn.Linear, *P["head.weight"].shape[::-1])
        self._init_from_reference(ref)

    # ------------------------------------------------------------------------- exchange (SPEC §7)
    @classmethod
    def from_reference(cls, ref, dtype=None, device=None):
        """The torch twin of a reference Classifier (float64 unless `dtype` is given: exact)."""
        # Note: the twin takes the reference's mode (a reference starts in evaluation mode; torch modules in training).
        return super().from_reference(ref, dtype=dtype, device=device).train(ref.training)

    def to_reference(self):
        """The reference twin: same config, parameters (exact when float64) and training mode."""
        return super().to_reference().train(self.training)

    # ------------------------------------------------------------------------- forward
    def _as_tensor(self, x):
        """Tensors as they are (checked below); arrays and lists to the model's device (floats in its dtype)."""
        if isinstance(x, torch.Tensor):
            return x
        x = np.asarray(x)
        return torch.as_tensor(x, dtype=self.dtype if x.dtype.kind == "f" else None, device=self.device)

    def embed(self, x, start=0, lengths=None, check_finite=True):
        """Token ids (b, L) or features (b, L, input_dim) → h (b, L, H) in the model's dtype, validated.

        `start`: the position of x[:, 0] for positional embeddings (a stream's running index).
        `lengths`: features at t >= len are padding: set to 0 before anything reads them, so they may
        hold anything (NaN included); the finiteness check (`check_finite`) covers valid positions."""
        cfg = self.config
        numeric = isinstance(x, torch.Tensor) or np.asarray(x).dtype.kind in "biufc"   # strings: no torch tensor
        kind = dtype_name(x.dtype) if isinstance(x, torch.Tensor) else np.asarray(x).dtype
        x = self._as_tensor(x) if numeric else x
        if cfg["vocab_size"] is None:
            if not numeric or not x.is_floating_point():
                raise TypeError(f"x must be float features (b, L, input_dim={cfg['input_dim']}); got dtype {kind} "
                                "(token ids need vocab_size)")
            if x.ndim != 3 or x.shape[2] != cfg["input_dim"]:
                raise ValueError(f"x must have shape (b, L, input_dim={cfg['input_dim']}); got shape {tuple(x.shape)}")
            x = check_input(x, cfg["input_dim"], check_finite=False, like=self)      # (b, L, input_dim)
            lengths = check_lengths(lengths, x.shape[0], x.shape[1], like=self)
            if lengths is not None:
                valid = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (b, L)
                x = torch.where(valid[..., None], x, torch.zeros_like(x))            # (b, L, input_dim)
            x = check_input(x, cfg["input_dim"], check_finite=check_finite, like=self)   # (b, L, input_dim)
            return self.input_proj(x)                                                # (b, L, H)
        if not numeric or x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
            raise TypeError(f"x must be integer token ids (b, L) because vocab_size is set; got dtype {kind}")
        if x.ndim != 2 or 0 in x.shape:
            raise ValueError(f"x must be token ids of shape (b, L) with b, L >= 1; got shape {tuple(x.shape)}")
        # Note: ids of every integer dtype become int64 before the range check (a uint8 comparison with
        # vocab_size = 256 wraps; F.embedding and uint16/32/64 comparisons take int64 only).
        x = x.to(torch.int64)
        if x.device != self.device:
            raise ValueError(f"x is on device {x.device} but the module's parameters are on {self.device}; "
                             f"move it with x.to({str(self.device)!r}) or the module with .to()")
        if checking_values():
            bad = (x < 0) | (x >= cfg["vocab_size"])
            if bad.any():
                index = tuple(int(i) for i in torch.nonzero(bad)[0])
                raise ValueError(f"token ids must be in [0, vocab_size={cfg['vocab_size']}); "
                                 f"got {int(x[index])} at index {index}")
        else:
            compiled_check(((x >= 0) & (x < cfg["vocab_size"])).all(),
                           f"token ids must be in [0, vocab_size={cfg['vocab_size']})")
        L, max_positions = x.shape[1], cfg["max_position_embeddings"]
        if max_positions is not None and start + L > max_positions:
            raise ValueError(f"L={start + L} exceeds max_position_embeddings={max_positions}")
        h = self.embedding(x)                                                        # (b, L, E)
        if max_positions is not None:
            h = h + self.position_embedding.weight[start:start + L]                  # (b, L, E)
        if "embedding_proj" in self._modules:
            h = self.embedding_proj(h)                                               # (b, L, H)
        return h

    def stages(self, x, lengths=None, integration_timesteps=None, check_finite=True):
        """[(h, lengths, τ)] after the embedding and after every block (pooling included)."""
        h = self.embed(x, lengths=lengths, check_finite=check_finite)                # (b, L, H)
        batch, L, _ = h.shape
        lengths = check_lengths(lengths, batch, L, like=self)
        tau = check_integration_timesteps(integration_timesteps, batch, L, like=self, check_values=check_finite)
        if tau is not None:
            for i, block in enumerate(self.blocks):
                if not getattr(block["mixer"], "accepts_timesteps", True):
                    raise ValueError(f"integration_timesteps were given but layer {i} "
                                     f"({type(block['mixer']).__name__}) does not accept them")
        activation = nn.ACTIVATIONS[self.config["activation"]]
        stages = [(h, lengths, tau)]
        for i, block in enumerate(self.blocks):
            r = h
            # Note: check_finite=False / check_values=False — inputs were validated above, once.
            h = block["mixer"](h, lengths, tau, check_finite=False)                  # (b, L_i, H)
            h = activation(h)
            h = self.dropout(h)                                                      # identity in eval()
            h = block["norm"](h + r)
            h, lengths, tau = pool(h, lengths, tau, mode=self.modes[i], stride=self.strides[i],
                                   check_values=False)                               # (b, L_i+1, H)
            stages.append((h, lengths, tau))
        return stages

    def forward(self, x, lengths=None, integration_timesteps=None, check_finite=True):
        """x: token ids (b, L) or features (b, L, input_dim); lengths (b,) in [1, L]; τ (b, L) >= 0.
        Padded positions (t >= len) may hold anything; check_finite=False skips the finiteness checks.
        Under torch.autocast the Linear layers follow autocast and every mixer runs in float32 (README).

        Returns logits (b, num_classes), or values (b, output_dim) when num_classes = 0.
        """
        h, lengths, _ = self.stages(x, lengths, integration_timesteps, check_finite)[-1]
        pooled = final_pool(h, lengths, mode=self.config["pooling"], check_values=False)  # (b, H)
        return self.head(pooled)

    # ------------------------------------------------------------------------- streaming (SPEC §6.1)
    def init_state(self, batch):
        """The streaming state before the first event (torch_backend/streaming.py); causal mixers, eval mode."""
        return init_stream(self, check_positive_int(batch, "batch"))

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One event per row → (output equal to the forward on the events seen so far, new state).
        inplace=True: the state's arrays are updated in place and the given state dict is returned."""
        return stream_step(self, x_t, state, integration_timestep, inplace=inplace)


HierarchicalClassifier = Classifier
