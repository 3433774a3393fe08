"""The few dense building blocks the classifier needs, written out in NumPy (float64, no autograd).

    linear      y = x Wᵀ + b                 W (out, in), b (out,)   (torch's layout and initialiser)
    layer_norm  y = (x − μ)/sqrt(σ² + ε)·w + b over the last axis   (σ² biased, ε = 1e-5, as torch)
    gelu        y = x·Φ(x) = ½x(1 + erf(x/√2))                      (the exact form, not the tanh one)
    dropout     y = x·m/(1 − p), m ~ Bernoulli(1 − p)               (inverted dropout, training only)

Initialisers follow torch's defaults so both backends start from the same numbers: Linear weight and
bias ~ U(−1/√in, 1/√in); embeddings ~ N(0, 1); LayerNorm weight 1, bias 0.

Glossary (SPEC §1): b batch, L length, H width; `i`/`o` input/output features of a Linear.
"""
import numpy as np
from scipy.special import erf

LAYER_NORM_EPS = 1e-5


def linear(x, weight, bias=None):
    """x (..., i) → (..., o) with weight (o, i) and bias (o,) or None."""
    y = np.einsum("...i,oi->...o", x, weight)                                       # (..., o)
    return y if bias is None else y + bias


def layer_norm(x, weight, bias, eps=LAYER_NORM_EPS):
    """Normalise the last axis of x (..., H) to zero mean and unit (biased) variance, then scale and shift."""
    mean = x.mean(axis=-1, keepdims=True)                                           # (..., 1)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)                            # (..., 1)
    return (x - mean) / np.sqrt(var + eps) * weight + bias                          # (..., H)


def gelu(x):
    """The exact GELU ½x(1 + erf(x/√2)), elementwise."""
    return 0.5 * x * (1.0 + erf(x / np.sqrt(2.0)))


def identity(x):
    return x


ACTIVATIONS = {"gelu": gelu, "none": identity}


def dropout(x, p, rng):
    """Inverted dropout with drop probability p in [0, 1] drawn from `rng` (a numpy Generator)."""
    if p == 0.0:
        return x
    if p == 1.0:
        return np.zeros_like(x)
    keep = rng.random(x.shape) >= p                                                 # same shape as x
    return np.where(keep, x / (1.0 - p), 0.0)


def init_linear(rng, in_features, out_features):
    """torch's default Linear initialiser: weight (o, i) and bias (o,) ~ U(−1/√i, 1/√i)."""
    bound = 1.0 / np.sqrt(in_features)
    weight = rng.uniform(-bound, bound, (out_features, in_features))                # (o, i)
    bias = rng.uniform(-bound, bound, out_features)                                 # (o,)
    return weight, bias
