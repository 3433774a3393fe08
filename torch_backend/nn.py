"""The activations the classifier and LSSL dispatch on — PyTorch mirror of reference/nn.py.

    gelu        y = x·Φ(x) = ½x(1 + erf(x/√2))                      (the exact form, not the tanh one)

Differences from the reference, each for a reason: the classifier holds its weights in torch.nn.Linear /
LayerNorm / Embedding / Dropout modules (so its `state_dict()` names match the reference's params), and
those modules compute what the reference's `linear`, `layer_norm` and `dropout` functions define, so
those functions have no twin here (torch's dropout draws its mask from torch's RNG: parity is compared
in evaluation mode); no `init_linear`: parameters are initialised by the reference and copied over.

Elementwise: no glossary letters.
"""
import torch.nn.functional as F

from reference.nn import LAYER_NORM_EPS

__all__ = ["LAYER_NORM_EPS", "gelu", "identity", "ACTIVATIONS"]


def gelu(x):
    """The exact GELU ½x(1 + erf(x/√2)), elementwise."""
    return F.gelu(x, approximate="none")


def identity(x):
    return x


ACTIVATIONS = {"gelu": gelu, "none": identity}

