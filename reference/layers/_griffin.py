"""The Griffin pieces of the RG-LRU layer (SPEC §4.9), beside `rglru.py`: the tanh GELU of the block's
gate, the block's initialiser, block-diagonal gate projections, the causal Conv1D over input windows cut at resets, and the adjoints the
hand-written backward pass needs. Glossary as in rglru.py: b batch, L length, E recurrence width, W conv width;
einsum letters h (head) i j (features in a head) e k (tap).
"""
import numpy as np


def block_params(rng, H, E, width, final_scale):
    """The Griffin recurrent block's projections and Conv1D (torch (out, in) layout)."""
    return {
        "linear_y.weight": rng.normal(0.0, np.sqrt(1.0 / H), (E, H)), "linear_y.bias": np.zeros(E),    # (E, H), (E,)
        "linear_x.weight": rng.normal(0.0, np.sqrt(1.0 / H), (E, H)), "linear_x.bias": np.zeros(E),    # (E, H), (E,)
        "linear_out.weight": rng.normal(0.0, np.sqrt(final_scale / E), (H, E)),                         # (H, E)
        "linear_out.bias": np.zeros(H),                                                                 # (H,)
        "conv_1d.w": rng.normal(0.0, np.sqrt(0.01 / width), (width, E)), "conv_1d.b": np.zeros(E),     # (W, E), (E,)
    }


def gelu_tanh(x):
    """GELU in its tanh form (Griffin's gate nonlinearity)."""
    return 0.5 * x * (1.0 + np.tanh(np.sqrt(2.0 / np.pi) * (x + 0.044715 * x ** 3)))


def gelu_tanh_derivative(x):
    """d gelu_tanh/dx = ½(1 + t) + ½x(1 − t²)·√(2/π)(1 + 3·0.044715x²), t = tanh(√(2/π)(x + 0.044715x³))."""
    k = np.sqrt(2.0 / np.pi)
    t = np.tanh(k * (x + 0.044715 * x ** 3))
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t ** 2) * k * (1.0 + 3 * 0.044715 * x ** 2)


def block_diagonal_vjp(grad_g, x, w):
    """The adjoint of `block_diagonal`: (G_x (..., E), G_w (heads, i, j), G_b (heads, j)) from G_g (..., E)."""
    heads, width, _ = w.shape
    x_h = x.reshape(-1, heads, width)                                               # (·, heads, i)
    g_h = grad_g.reshape(-1, heads, width)                                          # (·, heads, j)
    grad_x = np.einsum("nhj,hij->nhi", g_h, w).reshape(x.shape)                     # (..., E)
    return grad_x, np.einsum("nhi,nhj->hij", x_h, g_h), g_h.sum(axis=0)


def block_diagonal(x, w, b):
    """G(x) = concat_h(x_h·W_h + b_h): x (..., E), w (heads, E/heads, E/heads), b (heads, E/heads) → (..., E)."""
    heads, width, _ = w.shape
    x_h = x.reshape(x.shape[:-1] + (heads, width))                                  # (..., heads, i)
    return (np.einsum("...hi,hij->...hj", x_h, w) + b).reshape(x.shape)             # (..., E)


def conv_windows(p, window0, resets):
    """The Conv1D's input windows: windows[:, t, k] = p_{t−(W−1)+k}, zeroed when a reset lies in (t−(W−1)+k, t].

    p: (b, L, E); window0: (b, W−1, E) the values before t = 0 (oldest first); resets: (b, L) bool or None.
    Returns (b, L, W, E).
    """
    batch, L, _ = p.shape
    W = window0.shape[1] + 1
    extended = np.concatenate([window0, p], axis=1)                                 # (b, W−1+L, E)
    index = np.arange(L)[:, None] + np.arange(W)[None, :]                           # (L, W) extended position
    windows = extended[:, index]                                                    # (b, L, W, E)
    if resets is None:
        return windows
    count = np.concatenate([np.zeros((batch, W - 1), np.int64), np.cumsum(resets, axis=1)], axis=1)   # (b, W−1+L)
    keep = count[:, index[:, -1:]] == count[:, index]                               # (b, L, W): no reset in (s, t]
    return windows * keep[..., None]


def causal_conv(w, b, windows):
    """u_t = b + Σ_s w[W−1−s] ⊙ p_{t−s} = b + Σ_k w[k] ⊙ windows[..., k, :].

    windows (..., W, E) → (..., E)."""
    return np.einsum("ke,...ke->...e", w, windows) + b


def check_resets(resets, shape, name="resets"):
    """None or a bool array of `shape` (upstream segment_pos == 0). Returns it as bool or None."""
    if resets is None:
        return None
    resets = np.asarray(resets)
    if resets.dtype != bool:
        raise TypeError(f"{name} must be a bool array of shape {shape} (True where a segment starts); "
                        f"got dtype {resets.dtype}")
    if resets.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {resets.shape}")
    return resets
