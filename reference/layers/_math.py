"""Shared math of the reference layers: kernel powers, FFT causal convolution, final states (SPEC §4.6), and the
softplus of the selective and gated layers.

Glossary (SPEC §1): b batch, L length, S... any state axes.
"""
import numpy as np


def final_state(states, lengths):
    """The state after the last valid step: states[:, len_b − 1] (states[:, L − 1] without lengths).

    states: (b, L, S...). Returns (b, S...).
    """
    if lengths is None:
        return states[:, -1]
    return states[np.arange(states.shape[0]), lengths - 1]


def final_state_by_convolution(state_kernel, drive, lengths):
    """The state after the last valid step from the kernel view: x_T = Σ_l K_l ⊙ v_{T−l}.

    state_kernel: (L, S...) the state's impulse response; drive: (b, L, S...) (or broadcastable) the
    input it responds to; lengths: (b,) or None (then T = L − 1). Returns (b, S...).
    """
    L = state_kernel.shape[0]
    batch = drive.shape[0]
    last = np.full(batch, L - 1) if lengths is None else lengths - 1                     # (b,)
    lag = last[:, None] - np.arange(L)                                                    # (b, L) lag of input s
    K_at = state_kernel[np.clip(lag, 0, None)]                                            # (b, L, S...)
    K_at = K_at * (lag >= 0).reshape(lag.shape + (1,) * (K_at.ndim - 2))
    return (K_at * drive).sum(axis=1)


def fft_causal_conv(K, u, subscripts):
    """Causal convolution y_t = Σ_{l<=t} K_l ⋆ u_{t−l} through FFTs padded to >= 2L − 1 (SPEC §4.6).

    K: (L, ...) kernel, lag first; u: (b, L, ...) input; subscripts: the per-frequency contraction with
    `l` for the lag/frequency axis of K, e.g. "loh,blh->blo" (MIMO) or "lh,blh->blh" (depthwise).
    """
    L = u.shape[1]
    n = 1 << (2 * L - 1).bit_length()                                             # >= 2L − 1
    K_f = np.fft.rfft(K, n=n, axis=0)                                             # (n/2+1, ...)
    u_f = np.fft.rfft(u, n=n, axis=1)                                             # (b, n/2+1, ...)
    y_f = np.einsum(subscripts, K_f, u_f)
    return np.fft.irfft(y_f, n=n, axis=1)[:, :L]                                  # (b, L, ...)


def powers(Lambda_bar, L):
    """Ā^l for l = 0..L−1 by cumulative products (no complex pow; 0^0 = 1). Returns (L, S...)."""
    steps = np.broadcast_to(Lambda_bar, (L - 1,) + np.shape(Lambda_bar))
    return np.concatenate([np.ones((1,) + np.shape(Lambda_bar), np.result_type(Lambda_bar)),
                           np.cumprod(steps, axis=0)], axis=0)


def softplus(z):
    """log(1 + e^z) = logaddexp(0, z), without overflow (SPEC §4.8–§4.11: the same formula in both backends)."""
    return np.logaddexp(0.0, z)
