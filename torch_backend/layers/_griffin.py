"""The Griffin pieces of the RG-LRU layer (SPEC §4.9), PyTorch mirror of reference/layers/_griffin.py: the tanh
GELU of the block's gate, block-diagonal gate projections, the causal Conv1D over input windows cut at
resets. Glossary as in rglru.py: b batch, L length, E recurrence width, W conv width; einsum letters h (head)
i j (features in a head) e k (tap).
"""
import numpy as np
import torch
import torch.nn.functional as F


def gelu_tanh(x):
    """GELU in its tanh form (Griffin's gate nonlinearity)."""
    return F.gelu(x, approximate="tanh")


def block_diagonal(x, w, b):
    """G(x) = concat_h(x_h·W_h + b_h): x (..., E), w (heads, E/heads, E/heads), b (heads, E/heads) → (..., E)."""
    heads, width, _ = w.shape
    x_h = x.reshape(x.shape[:-1] + (heads, width))                                  # (..., heads, i)
    return (torch.einsum("...hi,hij->...hj", x_h, w) + b).reshape(x.shape)          # (..., E)


def block_diagonal_(x, w, b, out):
    """G(x) written into `out`: x (b, E), w (heads, E/heads, E/heads), b (heads, E/heads), out (heads, b, E/heads)
    a scratch buffer; returns its (b, heads, E/heads) view. Note: torch only, for step(..., inplace=True)."""
    heads, width, _ = w.shape
    torch.baddbmm(b[:, None, :], x.reshape(-1, heads, width).transpose(0, 1), w, out=out)   # (heads, b, j)
    return out.transpose(0, 1)                                                      # (b, heads, j)


def conv_windows(p, window0, resets):
    """The Conv1D's input windows: windows[:, t, k] = p_{t−(W−1)+k}, zeroed when a reset lies in (t−(W−1)+k, t].

    p: (b, L, E); window0: (b, W−1, E) the values before t = 0 (oldest first); resets: (b, L) bool or None.
    Returns (b, L, W, E).
    """
    batch, L, _ = p.shape
    W = window0.shape[1] + 1
    extended = torch.cat([window0, p], dim=1)                                       # (b, W−1+L, E)
    index = (torch.arange(L, device=p.device)[:, None] + torch.arange(W, device=p.device)[None, :])  # (L, W)
    windows = extended[:, index]                                                    # (b, L, W, E)
    if resets is None:
        return windows
    count = torch.cat([torch.zeros((batch, W - 1), dtype=torch.int64, device=p.device),
                       torch.cumsum(resets.to(torch.int64), dim=1)], dim=1)          # (b, W−1+L)
    keep = count[:, index[:, -1:]] == count[:, index]                               # (b, L, W): no reset in (s, t]
    return windows * keep[..., None].to(windows.dtype)


def causal_conv(w, b, windows):
    """u_t = b + Σ_k w[k] ⊙ windows[..., k, :]; windows (..., W, E) → (..., E)."""
    return torch.einsum("ke,...ke->...e", w, windows) + b


def check_resets(resets, shape, name="resets", like=None):
    """None or a bool array/tensor of `shape` (upstream segment_pos == 0), on the module's device."""
    if resets is None:
        return None
    device = like.device if like is not None else None
    if isinstance(resets, torch.Tensor):
        if device is not None and resets.device != device:
            raise ValueError(f"{name} is on device {resets.device} but the module's parameters are on {device}; "
                             f"move it with {name}.to({str(device)!r})")
    else:
        resets = torch.as_tensor(np.asarray(resets), device=device)
    if resets.dtype != torch.bool:
        # Note: the dtype is printed in torch's spelling (torch.int64 where the reference says int64).
        raise TypeError(f"{name} must be a bool array of shape {tuple(shape)} (True where a segment starts); "
                        f"got dtype {resets.dtype}")
    if tuple(resets.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(resets.shape)}")
    return resets


# ----------------------------------------------------------------------------- the layer
