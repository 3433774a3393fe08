"""The few dense building blocks the classifier needs — PyTorch mirror of reference/nn.py.

    linear      y = x Wᵀ + b                 W (out, in), b (out,)   (torch's layout and initialiser)
    layer_norm  y = (x − μ)/sqrt(σ² + ε)·w + b over the last axis   (σ² biased, ε = 1e-5, as torch)
    gelu        y = x·Φ(x) = ½x(1 + erf(x/√2))                      (the exact form, not the tanh one)
    dropout     y = x·m/(1 − p), m ~ Bernoulli(1 − p)               (inverted dropout, training only)

The classifier holds its weights in torch.nn.Linear / LayerNorm / Embedding / Dropout modules (so its
`state_dict()` names match the reference's params); these functions are what those modules compute,
and the activation table the classifier dispatches on. Differences from the reference, each for a reason:
* the functions are torch's own fused kernels (F.linear, F.layer_norm, F.gelu with approximate="none");
* `dropout` draws its mask from torch's RNG (the reference takes a numpy Generator), so dropout masks
  are not shared between the backends — parity is compared in evaluation mode;
* no `init_linear`: parameters are initialised by the reference's NumPy initialisers and copied over.

Glossary (SPEC §1): b batch, L length, H width; `i`/`o` input/output features of a Linear.
"""
import torch
import torch.nn.functional as F

from reference.nn import LAYER_NORM_EPS

__all__ = ["LAYER_NORM_EPS", "linear", "layer_norm", "gelu", "identity", "ACTIVATIONS", "dropout"]


def linear(x, weight, bias=None):
    """x (..., i) → (..., o) with weight (o, i) and bias (o,) or None."""
    return F.linear(x, weight, bias)                                                # (..., o)


def layer_norm(x, weight, bias, eps=LAYER_NORM_EPS):
    """Normalise the last axis of x (..., H) to zero mean and unit (biased) variance, then scale and shift."""
    return F.layer_norm(x, x.shape[-1:], weight, bias, eps)                         # (..., H)


def gelu(x):
    """The exact GELU ½x(1 + erf(x/√2)), elementwise."""
    return F.gelu(x, approximate="none")


def identity(x):
    return x


ACTIVATIONS = {"gelu": gelu, "none": identity}


def dropout(x, p, training=True):
    """Inverted dropout with drop probability p in [0, 1], active only when `training`."""
    # Note: torch's RNG draws the mask (the reference's third argument is a numpy Generator).
    return F.dropout(x, p, training)
