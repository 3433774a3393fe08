"""Sequence pooling for the hierarchical classifier — SPEC §5.

Intermediate pooling shortens a sequence by a stride s in ceil mode; final pooling turns a sequence
into one vector. Both look only at valid positions t < len, so padding never changes a result.

    windows      W_k = [k·s, k·s + s),  k = 0..L'−1,  L' = ⌈L/s⌉   (the partial tail window is kept)
    valid        V_k = {t ∈ W_k : t < len},           len' = ⌈len/s⌉
    stride       x'_k = x_{max V_k}                    (the last valid element: the state that saw the window)
    mean         x'_k = Σ_{t∈V_k} x_t / |V_k|          (divide by the valid count, not by s)
    max          x'_k = max_{t∈V_k} x_t
    timesteps    τ'_k = Σ_{t∈V_k} τ_t                  (elapsed time is preserved exactly, every mode)
    empty V_k    x'_k = 0, τ'_k = 0                    (the padded output positions k ≥ len')

Final pooling: `last` x_{len−1}, `mean` Σ_{t<len} x_t / len, `max` max_{t<len} x_t.

Upstream: the pooling of the seed's `HierarchicalClassifier` (lrnnx `SequencePooling`, after
Event-SSM). Deliberate differences (SPEC §5, §10): `stride` keeps the last valid element of a
window (the seed keeps the first, x[:, ::s]); stride 1 is the identity on valid positions (the seed
collapses); windows are ceil mode and masked (the seed drops tail tokens and divides partial windows
by s); len = 0 is an error (the seed reads index 0).

Glossary (SPEC §1): b batch, L length, H width, s stride; primes mark pooled quantities.
"""
import numpy as np

from .layers._checks import check_choice, check_input, check_integration_timesteps, check_lengths, check_positive_int

INTERMEDIATE_MODES = ("none", "stride", "mean", "max")
FINAL_MODES = ("last", "mean", "max")


def _check_sequence(x):
    """x: real (b, L, H) with b, L >= 1. Returns float64; padded positions may hold anything."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (b, L, H); got shape {x.shape} ({x.ndim} axes)")
    return check_input(x, x.shape[2], check_finite=False)


def valid_mask(lengths, batch, L):
    """True where t < len_b (everywhere without lengths). Returns bool (b, L)."""
    if lengths is None:
        return np.ones((batch, L), dtype=bool)
    return np.arange(L)[None, :] < lengths[:, None]                                 # (b, L)


def pool(x, lengths=None, integration_timesteps=None, *, mode, stride):
    """Intermediate pooling (SPEC §5.1): returns (x', lengths', timesteps').

    x: real (b, L, H); lengths: None or integer (b,) in [1, L]; integration_timesteps: None or
    real (b, L) >= 0. mode: "none" (the identity whatever the stride), "stride", "mean" or "max";
    stride: integer s >= 1. Returns x' float64 (b, L', H) with L' = ⌈L/s⌉, lengths' int64 (b,) =
    ⌈len/s⌉ and timesteps' float64 (b, L') — each None when its input was None. Padded output
    positions (k >= len') are 0 in x' and τ'; with s = 1 a pooling mode returns x on the valid
    positions and 0 on the padded ones.
    """
    check_choice(mode, "mode", INTERMEDIATE_MODES)
    s = check_positive_int(stride, "stride")
    x = _check_sequence(x)
    batch, L, H = x.shape
    lengths = check_lengths(lengths, batch, L)
    tau = check_integration_timesteps(integration_timesteps, batch, L)
    if mode == "none":
        return x, lengths, tau

    s = min(s, L)               # a window longer than the sequence is the whole sequence: memory follows L, not s
    L_out = -(-L // s)                                                              # ⌈L/s⌉
    extra = L_out * s - L                                                           # invalid tail slots
    valid = np.pad(valid_mask(lengths, batch, L), ((0, 0), (0, extra)))             # (b, L'·s)
    windows = np.pad(x, ((0, 0), (0, extra), (0, 0))).reshape(batch, L_out, s, H)   # (b, L', s, H)
    valid = valid.reshape(batch, L_out, s)                                          # (b, L', s)
    count = valid.sum(axis=2)                                                       # (b, L') |V_k|
    nonempty = (count > 0)[..., None]                                               # (b, L', 1)

    if mode == "stride":
        # valid positions are a prefix of every window, so the last valid one sits at |V_k| − 1
        last = np.maximum(count - 1, 0)                                             # (b, L')
        picked = np.take_along_axis(windows, last[:, :, None, None], axis=2)[:, :, 0]  # (b, L', H)
    elif mode == "mean":
        total = np.where(valid[..., None], windows, 0.0).sum(axis=2)                 # (b, L', H)
        picked = total / np.maximum(count, 1)[..., None]                            # (b, L', H)
    elif mode == "max":
        picked = np.where(valid[..., None], windows, -np.inf).max(axis=2)           # (b, L', H)
    else:
        raise ValueError(f"mode must be one of {', '.join(INTERMEDIATE_MODES)}; got {mode!r}")
    x_out = np.where(nonempty, picked, 0.0)                                         # (b, L', H)

    lengths_out = None if lengths is None else -(-lengths // s)                     # (b,) ⌈len/s⌉
    tau_out = None
    if tau is not None:
        tau_windows = np.pad(tau, ((0, 0), (0, extra))).reshape(batch, L_out, s)    # (b, L', s)
        tau_out = np.where(valid, tau_windows, 0.0).sum(axis=2)                     # (b, L')
    return x_out, lengths_out, tau_out


def final_pool(x, lengths=None, *, mode):
    """Final pooling (SPEC §5.2): one vector per sequence from its valid positions t < len.

    x: real (b, L, H); lengths: None (all L positions) or integer (b,) with 1 <= len <= L;
    mode: "last", "mean" or "max". Returns float64 (b, H).
    """
    check_choice(mode, "mode", FINAL_MODES)
    x = _check_sequence(x)
    batch, L, _ = x.shape
    lengths = check_lengths(lengths, batch, L)
    n_valid = np.full(batch, L) if lengths is None else lengths                     # (b,)
    valid = valid_mask(lengths, batch, L)[..., None]                                # (b, L, 1)
    if mode == "last":
        return x[np.arange(batch), n_valid - 1]                                     # (b, H)
    if mode == "mean":
        return np.where(valid, x, 0.0).sum(axis=1) / n_valid[:, None]               # (b, H)
    if mode == "max":
        return np.where(valid, x, -np.inf).max(axis=1)                              # (b, H)
    raise ValueError(f"mode must be one of {', '.join(FINAL_MODES)}; got {mode!r}")


# ============================================================================= backward (SPEC §11)
def pool_vjp(grad_out, x, lengths=None, integration_timesteps=None, *, mode, stride):
    """The adjoint of `pool` with respect to x: G_x (b, L, H) float64 from G_x' (b, L', H).

    stride: G_x' goes to the window's last valid element; mean: G_x'/|V_k| to each valid element; max: to
    the valid maxima, shared equally among ties (torch's amax rule); none: the identity. Padded output
    positions (k >= len') and padded inputs (t >= len) carry no gradient (except through "none", which returns
    x as it is); τ' = Σ τ is data and gets none.
    """
    check_choice(mode, "mode", INTERMEDIATE_MODES)
    s = check_positive_int(stride, "stride")
    x = _check_sequence(x)
    batch, L, H = x.shape
    lengths = check_lengths(lengths, batch, L)
    check_integration_timesteps(integration_timesteps, batch, L)
    valid = valid_mask(lengths, batch, L)                                           # (b, L)
    if mode == "none":                                                              # the identity, padding included
        return np.asarray(grad_out, dtype=np.float64).reshape(x.shape)
    L_out = -(-L // s)                                                              # ⌈L/s⌉
    grad_out = np.asarray(grad_out, dtype=np.float64)
    if grad_out.shape != (batch, L_out, H):
        raise ValueError(f"grad_out must have the pooled shape {(batch, L_out, H)}; got {grad_out.shape}")
    extra = L_out * s - L
    valid = np.pad(valid, ((0, 0), (0, extra))).reshape(batch, L_out, s)            # (b, L', s)
    count = valid.sum(axis=2)                                                       # (b, L')
    grad_out = grad_out * (count > 0)[..., None]                                    # padded outputs: none
    if mode == "stride":
        last = np.maximum(count - 1, 0)                                             # (b, L')
        share = (np.arange(s)[None, None, :] == last[..., None]) & valid            # (b, L', s)
        grad_windows = share[..., None] * grad_out[:, :, None, :]                   # (b, L', s, H)
    elif mode == "mean":
        grad_windows = valid[..., None] * (grad_out / np.maximum(count, 1)[..., None])[:, :, None, :]
    else:  # max
        windows = np.pad(x, ((0, 0), (0, extra), (0, 0))).reshape(batch, L_out, s, H)  # (b, L', s, H)
        masked = np.where(valid[..., None], windows, -np.inf)                        # (b, L', s, H)
        is_max = masked == masked.max(axis=2, keepdims=True)                         # (b, L', s, H)
        grad_windows = is_max * (grad_out / np.maximum(is_max.sum(axis=2), 1))[:, :, None, :]
    return grad_windows.reshape(batch, L_out * s, H)[:, :L]                         # (b, L, H)


def final_pool_vjp(grad_out, x, lengths=None, *, mode):
    """The adjoint of `final_pool`: G_x (b, L, H) float64 from G (b, H); zero at t >= len.

    last: G at t = len − 1; mean: G/len at every valid t; max: G to the valid maxima, shared among ties.
    """
    check_choice(mode, "mode", FINAL_MODES)
    x = _check_sequence(x)
    batch, L, H = x.shape
    lengths = check_lengths(lengths, batch, L)
    grad_out = np.asarray(grad_out, dtype=np.float64)
    if grad_out.shape != (batch, H):
        raise ValueError(f"grad_out must have shape (b, H) = {(batch, H)}; got {grad_out.shape}")
    n_valid = np.full(batch, L) if lengths is None else lengths                     # (b,)
    valid = valid_mask(lengths, batch, L)[..., None]                                # (b, L, 1)
    grad_x = np.zeros_like(x)                                                       # (b, L, H)
    if mode == "last":
        grad_x[np.arange(batch), n_valid - 1] = grad_out
    elif mode == "mean":
        grad_x = valid * (grad_out / n_valid[:, None])[:, None, :]
    else:  # max
        masked = np.where(valid, x, -np.inf)                                        # (b, L, H)
        is_max = masked == masked.max(axis=1, keepdims=True)                        # (b, L, H)
        grad_x = is_max * (grad_out / is_max.sum(axis=1))[:, None, :]
    return grad_x
