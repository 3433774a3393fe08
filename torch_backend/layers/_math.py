"""Shared math of the torch layers — mirror of reference/layers/_math.py: kernel powers, FFT causal
convolution, final states (SPEC §4.6), and the softplus of the selective and gated layers.

Glossary (SPEC §1): b batch, L length, S... any state axes.
"""
import torch


def final_state(states, lengths):
    """The state after the last valid step: states[:, len_b − 1] (states[:, L − 1] without lengths).

    states: (b, L, S...). Returns (b, S...).
    """
    if lengths is None:
        return states[:, -1]
    return states[torch.arange(states.shape[0], device=states.device), lengths - 1]


def final_state_by_convolution(state_kernel, drive, lengths):
    """The state after the last valid step from the kernel view: x_T = Σ_l K_l ⊙ v_{T−l}.

    state_kernel: (L, S...) the state's impulse response; drive: (b, L, S...) (or broadcastable) the
    input it responds to; lengths: (b,) or None (then T = L − 1). Returns (b, S...).
    """
    L, batch, device = state_kernel.shape[0], drive.shape[0], state_kernel.device
    last = torch.full((batch,), L - 1, device=device) if lengths is None else lengths - 1   # (b,)
    lag = last[:, None] - torch.arange(L, device=device)                                   # (b, L) lag of input s
    K_at = state_kernel[lag.clamp(min=0)]                                                  # (b, L, S...)
    K_at = K_at * (lag >= 0).reshape(lag.shape + (1,) * (K_at.ndim - 2))
    return (K_at * drive).sum(dim=1)


def fft_causal_conv(K, u, subscripts):
    """Causal convolution y_t = Σ_{l<=t} K_l ⋆ u_{t−l} through FFTs padded to >= 2L − 1 (SPEC §4.6).

    K: (L, ...) real kernel, lag first; u: (b, L, ...) real input; subscripts: the per-frequency
    contraction with `l` for the lag/frequency axis of K, e.g. "loh,blh->blo" or "lh,blh->blh".
    """
    L = u.shape[1]
    n = 1 << (2 * L - 1).bit_length()                                              # >= 2L − 1
    K_f = torch.fft.rfft(K, n=n, dim=0)                                            # (n/2+1, ...)
    u_f = torch.fft.rfft(u, n=n, dim=1)                                            # (b, n/2+1, ...)
    y_f = torch.einsum(subscripts, K_f, u_f)
    return torch.fft.irfft(y_f, n=n, dim=1)[:, :L]                                 # (b, L, ...)


def powers(Lambda_bar, L):
    """Ā^l for l = 0..L−1 by cumulative products (no complex pow; 0^0 = 1). Returns (L, S...)."""
    steps = Lambda_bar.expand((L - 1,) + Lambda_bar.shape)                          # (L−1, S...)
    return torch.cat([torch.ones_like(Lambda_bar)[None], torch.cumprod(steps, dim=0)], dim=0)


def softplus(z):
    """log(1 + e^z) = logaddexp(0, z), the reference's formula. Note: not F.softplus, whose threshold 20 differs
    from it by up to 2.1e-9 (SPEC §4.8)."""
    return torch.logaddexp(torch.zeros_like(z), z)


def softplus_(z, scratch):
    """z ← log(1 + e^z) = max(z, 0) + log1p(e^{−|z|}) (the value of logaddexp(0, z)), in place."""
    torch.abs(z, out=scratch).neg_().exp_().log1p_()
    return z.clamp_(min=0.0).add_(scratch)
