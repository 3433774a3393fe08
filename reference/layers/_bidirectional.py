"""Bidirectional layers (SPEC §4.12): the pieces every layer's `bidirectional=True` path shares.

A bidirectional layer keeps its forward recurrence and adds a backward one over each row's valid prefix:
the forward definition run on the prefix reversed in time, with the gaps reversed (the **Decision** of
§4.12: τ'_0 = τ_0, τ'_s = τ_{len−s}), its states reversed back. Both directions share the transition and
input map; the backward states have their own read-out (`C_back_…`), and there is one D term. The layer
is non-causal, so it cannot stream: `step`, `initial_state` and `return_state` are refused.
Time-invariant layers also get the two-sided kernel (2L − 1, ...) and its FFT convolution.

Glossary (SPEC §1): b batch, L length, S... any state or feature axes.
"""
import numpy as np

from ._math import fft_causal_conv


def check_bidirectional(value):
    """`bidirectional` must be a bool (numpy bools too). Returns a Python bool."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"bidirectional must be a bool; got {value!r} of type {type(value).__name__}")
    return bool(value)


NO_STATE = "the backward direction reads the whole sequence, so there is no state to carry or step"


def refuse_streaming(layer, what, reason=NO_STATE):
    """ValueError naming bidirectional=True when a non-causal layer is asked for `what` (a state it cannot
    have, or a path not written for it: then `reason` says so)."""
    if getattr(layer, "bidirectional", False):
        raise ValueError(f"{what} is not available for {type(layer).__name__} with bidirectional=True: {reason}")


def check_call(layer, initial_state, return_state):
    """The bidirectional refusals of a layer call: initial_state and return_state need a causal layer."""
    if initial_state is not None:
        refuse_streaming(layer, "initial_state")
    if return_state:
        refuse_streaming(layer, "return_state=True")


def reversal_index(lengths, batch, L):
    """(b, L) int64: len−1−t for t < len (the valid prefix reversed), t for t >= len (padding stays put).
    An involution: applying it twice gives the identity."""
    t = np.arange(L)                                                             # (L,)
    if lengths is None:
        return np.broadcast_to(L - 1 - t, (batch, L))
    return np.where(t < lengths[:, None], lengths[:, None] - 1 - t, t)           # (b, L)


def reverse_within(x, lengths):
    """Each row's valid prefix reversed in time: x (b, L, S...) → (b, L, S...), padding left in place."""
    index = reversal_index(lengths, x.shape[0], x.shape[1])                      # (b, L)
    return x[np.arange(x.shape[0])[:, None], index]


def reversed_gaps(tau, lengths):
    """The backward direction's gaps (SPEC §4.12 Decision): τ'_0 = τ_0, τ'_s = τ_{len−s} for 1 <= s < len,
    padding unchanged. tau: (b, L) or None (then None)."""
    if tau is None:
        return None
    batch, L = tau.shape
    s = np.arange(L)                                                             # (L,)
    length = np.full((batch, 1), L) if lengths is None else lengths[:, None]     # (b, 1)
    index = np.where((s >= 1) & (s < length), length - s, s)                     # (b, L)
    return tau[np.arange(batch)[:, None], index]                                 # (b, L)


def backward_states(run, x, lengths, tau):
    """The backward direction's states h^b (b, L, S...): `run(u, τ)` is the layer's forward recurrence from a
    zero state (u (b, L, H), τ (b, L) or None → states (b, L, S...)); it is run on the reversed valid
    prefixes with the reversed gaps, and its states are reversed back, so h^b_t has seen u_t … u_{len−1}."""
    return reverse_within(run(reverse_within(x, lengths), reversed_gaps(tau, lengths)), lengths)


def two_sided_kernel(K_forward, K_backward):
    """The two-sided kernel (2L − 1, ...): index L − 1 + l weights u_{t−l}, l ∈ [−(L−1), L−1].

    K_forward (L, ...) the causal kernel (lag 0 holding the forward term and D); K_backward (L, ...) the
    backward direction's causal kernel without D (its lag l weights u_{t+l}); lag 0 holds both.
    """
    L = K_forward.shape[0]
    K = np.zeros((2 * L - 1,) + K_forward.shape[1:], np.result_type(K_forward, K_backward))   # (2L − 1, ...)
    K[L - 1:] = K_forward
    K[:L] += K_backward[::-1]
    return K


def convolve(layer, K, u, lengths, subscripts):
    """The kernel view of a layer call: the causal FFT convolution, or the two-sided one when the layer is
    bidirectional (then K is (2L − 1, ...) and u is zeroed past each row's length first)."""
    if getattr(layer, "bidirectional", False):
        return fft_two_sided_conv(K, u, lengths, subscripts)
    return fft_causal_conv(K, u, subscripts)


def fft_two_sided_conv(K, u, lengths, subscripts):
    """y_t = Σ_{l=−(L−1)}^{L−1} K_{L−1+l} ⋆ u_{t−l} through FFTs, with u zeroed at t >= len first.

    K: (2L − 1, ...) two-sided kernel; u: (b, L, ...); subscripts as in `fft_causal_conv` (e.g. "loh,blh->blo").
    """
    L = u.shape[1]
    if lengths is not None:
        valid = np.arange(L) < lengths[:, None]                                  # (b, L)
        u = u * valid.reshape(valid.shape + (1,) * (u.ndim - 2))
    n = 1 << (3 * L - 2).bit_length()                                            # >= 3L − 2: no wrap-around
    K_f = np.fft.rfft(K, n=n, axis=0)                                            # (n/2+1, ...)
    u_f = np.fft.rfft(u, n=n, axis=1)                                            # (b, n/2+1, ...)
    y_f = np.einsum(subscripts, K_f, u_f)
    return np.fft.irfft(y_f, n=n, axis=1)[:, L - 1:2 * L - 1]                    # (b, L, ...)
