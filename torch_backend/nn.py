"""The activations the classifier and LSSL dispatch on — PyTorch mirror of reference/nn.py.

    gelu        y = x·Φ(x) = ½x(1 + erf(x/√2))                      (the exact form, not the tanh one)

Differences from the reference, each for a reason: the classifier holds its weights in torch.nn.Linear /
LayerNorm / Embedding / Dropout modules (so its `state_dict()` names match the reference's params), and
those modules compute what the reference's `linear`, `layer_norm` and `dropout` functions define, so
those functions have no twin here (torch's dropout draws its mask from torch's RNG: parity is compared
in evaluation mode); no `init_linear`: parameters are initialised by the reference and copied over.

Elementwise: no glossary letters.
"""
import torch
import torch.nn.functional as F

from reference.nn import LAYER_NORM_EPS

__all__ = ["LAYER_NORM_EPS", "gelu", "identity", "ACTIVATIONS", "ACTIVATIONS_INPLACE", "layer_norm_"]


def gelu(x):
    """The exact GELU ½x(1 + erf(x/√2)), elementwise."""
    return F.gelu(x, approximate="none")


def identity(x):
    return x


ACTIVATIONS = {"gelu": gelu, "none": identity}


# In place, for a streaming step that owns its activations (torch only: the memory of an event).
def gelu_(x):
    """`gelu` written over x itself (the same kernel: equal bit for bit)."""
    return torch.ops.aten.gelu_(x, approximate="none")


ACTIVATIONS_INPLACE = {"gelu": gelu_, "none": identity}


def layer_norm_(x, norm):
    """torch.nn.LayerNorm `norm` over the last axis of x (b, H), written over x itself: (x − mean)/sqrt(var + ε)
    · weight + bias with the biased variance, as LayerNorm computes it (equal to rounding; only (b, 1)
    statistics are new tensors)."""
    x.sub_(x.mean(dim=-1, keepdim=True))                                                # centred
    scale = torch.linalg.vector_norm(x, dim=-1, keepdim=True)                           # (b, 1) sqrt(H·var)
    scale.square_().div_(x.shape[-1]).add_(norm.eps).rsqrt_()                          # 1/sqrt(var + ε)
    return x.mul_(scale).mul_(norm.weight).add_(norm.bias)

