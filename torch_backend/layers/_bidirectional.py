"""Bidirectional layers (SPEC §4.12) — mirror of reference/layers/_bidirectional.py: the pieces every
layer's `bidirectional=True` path shares (reversal within lengths, reversed gaps, the backward states, the
two-sided kernel and its FFT convolution). The argument checks and refusals are the reference's.

Glossary (SPEC §1): b batch, L length, S... any state or feature axes.
"""
import torch

from reference.layers._bidirectional import check_call, refuse_streaming  # noqa: F401  (the same refusals)
from ._math import fft_causal_conv


def reversal_index(lengths, batch, L, device):
    """(b, L) int64: len−1−t for t < len (the valid prefix reversed), t for t >= len (padding stays put)."""
    t = torch.arange(L, device=device)                                           # (L,)
    if lengths is None:
        return (L - 1 - t).expand(batch, L)
    return torch.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)        # (b, L)


def reverse_within(x, lengths):
    """Each row's valid prefix reversed in time: x (b, L, S...) → (b, L, S...), padding left in place."""
    index = reversal_index(lengths, x.shape[0], x.shape[1], x.device)            # (b, L)
    return x[torch.arange(x.shape[0], device=x.device)[:, None], index]


def reversed_gaps(tau, lengths):
    """The backward direction's gaps: τ'_0 = τ_0, τ'_s = τ_{len−s} for 1 <= s < len, padding unchanged."""
    if tau is None:
        return None
    batch, L = tau.shape
    s = torch.arange(L, device=tau.device)                                       # (L,)
    length = torch.full((batch, 1), L, device=tau.device) if lengths is None else lengths[:, None]   # (b, 1)
    index = torch.where((s >= 1) & (s < length), length - s, s)                  # (b, L)
    return tau[torch.arange(batch, device=tau.device)[:, None], index]           # (b, L)


def backward_states(run, x, lengths, tau):
    """The backward direction's states h^b (b, L, S...): the forward recurrence `run(u, τ)` (from a zero
    state) on the reversed valid prefixes with the reversed gaps, its states reversed back."""
    return reverse_within(run(reverse_within(x, lengths), reversed_gaps(tau, lengths)), lengths)


def two_sided_kernel(K_forward, K_backward):
    """The two-sided kernel (2L − 1, ...): index L − 1 + l weights u_{t−l}; lag 0 holds both directions.
    K_forward (L, ...) causal with D; K_backward (L, ...) the backward direction's causal kernel without D."""
    # Note: built by concatenation (no in-place writes), so autograd reaches both kernels.
    lag0 = (K_forward[:1] + K_backward[:1])                                      # (1, ...)
    return torch.cat([K_backward[1:].flip(0), lag0, K_forward[1:]], dim=0)        # (2L − 1, ...)


def convolve(layer, K, u, lengths, subscripts):
    """The kernel view of a layer call: causal FFT convolution, or the two-sided one when bidirectional."""
    if getattr(layer, "bidirectional", False):
        return fft_two_sided_conv(K, u, lengths, subscripts)
    return fft_causal_conv(K, u, subscripts)


def fft_two_sided_conv(K, u, lengths, subscripts):
    """y_t = Σ_{l=−(L−1)}^{L−1} K_{L−1+l} ⋆ u_{t−l} through FFTs, with u zeroed at t >= len first."""
    L = u.shape[1]
    if lengths is not None:
        valid = torch.arange(L, device=u.device) < lengths[:, None]              # (b, L)
        u = u * valid.reshape(valid.shape + (1,) * (u.ndim - 2)).to(u.dtype)
    n = 1 << (3 * L - 2).bit_length()                                            # >= 3L − 2: no wrap-around
    K_f = torch.fft.rfft(K, n=n, dim=0)                                          # (n/2+1, ...)
    u_f = torch.fft.rfft(u, n=n, dim=1)                                          # (b, n/2+1, ...)
    y_f = torch.einsum(subscripts, K_f, u_f)
    return torch.fft.irfft(y_f, n=n, dim=1)[:, L - 1:2 * L - 1]                  # (b, L, ...)
