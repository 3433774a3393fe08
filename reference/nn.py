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


# ============================================================================= backward (SPEC §11)
# Each op's vector-Jacobian product, by hand: given G_y = ∂loss/∂y, return the gradients of its inputs.
def linear_vjp(grad_y, x, weight, bias=None):
    """y = x Wᵀ + b: G_x = G_y W, G_W = Σ G_yᵀ x, G_b = Σ G_y (sums over every leading axis).

    grad_y (..., o), x (..., i), weight (o, i). Returns (G_x (..., i), G_W (o, i), G_b (o,) or None).
    """
    grad_x = np.einsum("...o,oi->...i", grad_y, weight)                            # (..., i)
    grad_weight = grad_y.reshape(-1, grad_y.shape[-1]).T @ x.reshape(-1, x.shape[-1])  # (o, i)
    grad_bias = None if bias is None else grad_y.reshape(-1, grad_y.shape[-1]).sum(axis=0)  # (o,)
    return grad_x, grad_weight, grad_bias


def layer_norm_vjp(grad_y, x, weight, eps=LAYER_NORM_EPS):
    """y = x̂·w + b with x̂ = (x − μ)/σ, σ = sqrt(var + ε) over the last axis (H):
    G_x = (G_x̂ − mean(G_x̂) − x̂·mean(G_x̂ ⊙ x̂))/σ with G_x̂ = G_y ⊙ w;  G_w = Σ G_y ⊙ x̂,  G_b = Σ G_y.

    grad_y, x: (..., H); weight (H,). Returns (G_x (..., H), G_w (H,), G_b (H,)).
    """
    mean = x.mean(axis=-1, keepdims=True)                                           # (..., 1)
    sigma = np.sqrt(((x - mean) ** 2).mean(axis=-1, keepdims=True) + eps)           # (..., 1)
    x_hat = (x - mean) / sigma                                                      # (..., H)
    grad_x_hat = grad_y * weight                                                    # (..., H)
    grad_x = (grad_x_hat - grad_x_hat.mean(axis=-1, keepdims=True)
              - x_hat * (grad_x_hat * x_hat).mean(axis=-1, keepdims=True)) / sigma  # (..., H)
    H = x.shape[-1]
    return grad_x, (grad_y * x_hat).reshape(-1, H).sum(axis=0), grad_y.reshape(-1, H).sum(axis=0)


def gelu_vjp(grad_y, x):
    """y = x Φ(x): G_x = G_y ⊙ (Φ(x) + x φ(x)), φ the standard normal density. Same shape as x."""
    return grad_y * (0.5 * (1.0 + erf(x / np.sqrt(2.0))) + x * np.exp(-0.5 * x ** 2) / np.sqrt(2 * np.pi))


def identity_vjp(grad_y, x):
    return grad_y


ACTIVATION_VJPS = {"gelu": gelu_vjp, "none": identity_vjp}


def dropout_mask(shape, p, rng):
    """The keep mask `dropout` draws (True = kept), from the same generator calls. bool of `shape`."""
    if p == 0.0:
        return np.ones(shape, dtype=bool)
    if p == 1.0:
        return np.zeros(shape, dtype=bool)
    return rng.random(shape) >= p


def dropout_with_mask(x, keep, p):
    """Inverted dropout with a given keep mask: x·m/(1 − p) (0 everywhere when p = 1). Same shape as x."""
    return np.where(keep, x / (1.0 - p), 0.0) if p < 1.0 else np.zeros_like(x)


def dropout_vjp(grad_y, keep, p):
    """The adjoint of `dropout_with_mask`: the same mask and scale applied to G_y."""
    return dropout_with_mask(grad_y, keep, p)


def embedding_vjp(grad_h, ids, num_embeddings, padding_idx=None):
    """h = W[ids]: G_W[v] = Σ_{ids = v} G_h; the padding row gets none (torch's padding_idx rule).

    grad_h (b, L, E); ids (b, L) int. Returns G_W (V, E).
    """
    grad_weight = np.zeros((num_embeddings, grad_h.shape[-1]))                      # (V, E)
    np.add.at(grad_weight, ids.reshape(-1), grad_h.reshape(-1, grad_h.shape[-1]))
    if padding_idx is not None:
        grad_weight[padding_idx] = 0.0
    return grad_weight


def position_embedding_vjp(grad_h, num_positions):
    """h = e + P[:L]: G_P[t] = Σ_b G_h[:, t] for t < L, 0 beyond. grad_h (b, L, E). Returns (num_positions, E)."""
    grad_weight = np.zeros((num_positions, grad_h.shape[-1]))                       # (max positions, E)
    grad_weight[:grad_h.shape[1]] = grad_h.sum(axis=0)
    return grad_weight
