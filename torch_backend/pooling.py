"""Sequence pooling for the hierarchical classifier — SPEC §5, PyTorch mirror of reference/pooling.py.

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

Upstream and deliberate differences from the seed: as in reference/pooling.py. Differences from the
reference, each for a reason:
* precision follows x (float32 by default, float64 after `.double()`); the reference works in float64;
* every operation is a differentiable torch op on x's device (no CPU round trip, no host sync besides
  the value checks of lengths and τ, which torch.compile skips);
* `check_values=False` skips those value checks (the classifier validates once, at its input);
  lengths and τ must be on x's device and τ in x's dtype (TypeError/ValueError naming the fix);
* `valid_mask` takes the device its mask lives on.

Glossary (SPEC §1): b batch, L length, H width, s stride; primes mark pooled quantities.
"""
import torch
import torch.nn.functional as F

from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES
from .layers._checks import check_choice, check_input, check_integration_timesteps, check_lengths, check_positive_int

__all__ = ["INTERMEDIATE_MODES", "FINAL_MODES", "valid_mask", "pool", "final_pool"]


def _check_sequence(x):
    """x: real (b, L, H) with b, L >= 1. Returns a floating tensor; padded positions may hold anything."""
    x = torch.as_tensor(x)
    if x.ndim != 3:
        raise ValueError(f"x must have shape (b, L, H); got shape {tuple(x.shape)} ({x.ndim} axes)")
    return check_input(x, x.shape[2], check_finite=False)


def valid_mask(lengths, batch, L, device=None):
    """True where t < len_b (everywhere without lengths). Returns bool (b, L) on `device` (lengths' device)."""
    # Note: torch needs the device of the mask; with lengths it is theirs.
    if lengths is None:
        return torch.ones((batch, L), dtype=torch.bool, device=device)
    return torch.arange(L, device=lengths.device)[None, :] < lengths[:, None]      # (b, L)


def pool(x, lengths=None, integration_timesteps=None, *, mode, stride, check_values=True):
    """Intermediate pooling (SPEC §5.1): returns (x', lengths', timesteps').

    x: real (b, L, H); lengths: None or integer (b,) in [1, L]; integration_timesteps: None or
    real (b, L) >= 0. mode: "none" (the identity whatever the stride), "stride", "mean" or "max";
    stride: integer s >= 1. Returns x' (b, L', H) in x's dtype with L' = ⌈L/s⌉, lengths' int64 (b,) =
    ⌈len/s⌉ and timesteps' (b, L') in τ's dtype — each None when its input was None. Padded output
    positions (k >= len') are 0 in x' and τ'; with s = 1 a pooling mode returns x on the valid
    positions and 0 on the padded ones. lengths and τ must be on x's device, τ in x's dtype;
    check_values=False skips the checks of their values (1 <= len <= L, τ finite and >= 0).
    """
    check_choice(mode, "mode", INTERMEDIATE_MODES)
    s = check_positive_int(stride, "stride")
    x = _check_sequence(x)
    batch, L, H = x.shape
    # Note: like=x puts lengths on x's device and τ in x's dtype; check_values is torch's (GPU syncs).
    lengths = check_lengths(lengths, batch, L, like=x, check_values=check_values)
    tau = check_integration_timesteps(integration_timesteps, batch, L, like=x, check_values=check_values)
    if mode == "none":
        return x, lengths, tau

    s = min(s, L)               # a window longer than the sequence is the whole sequence: memory follows L, not s
    L_out = -(-L // s)                                                              # ⌈L/s⌉
    extra = L_out * s - L                                                           # invalid tail slots
    valid = F.pad(valid_mask(lengths, batch, L, x.device), (0, extra))              # (b, L'·s)
    windows = F.pad(x, (0, 0, 0, extra)).reshape(batch, L_out, s, H)                # (b, L', s, H)
    valid = valid.reshape(batch, L_out, s)                                          # (b, L', s)
    count = valid.sum(dim=2)                                                        # (b, L') |V_k|
    nonempty = (count > 0)[..., None]                                               # (b, L', 1)

    if mode == "stride":
        # valid positions are a prefix of every window, so the last valid one sits at |V_k| − 1
        last = torch.clamp(count - 1, min=0)                                        # (b, L')
        picked = torch.take_along_dim(windows, last[:, :, None, None], dim=2)[:, :, 0]  # (b, L', H)
    elif mode == "mean":
        total = torch.where(valid[..., None], windows, 0.0).sum(dim=2)              # (b, L', H)
        picked = total / torch.clamp(count, min=1)[..., None]                       # (b, L', H)
    elif mode == "max":
        picked = torch.where(valid[..., None], windows, -torch.inf).amax(dim=2)     # (b, L', H)
    else:
        raise ValueError(f"mode must be one of {', '.join(INTERMEDIATE_MODES)}; got {mode!r}")
    x_out = torch.where(nonempty, picked, 0.0)                                      # (b, L', H)

    lengths_out = None if lengths is None else -(-lengths // s)                     # (b,) ⌈len/s⌉
    tau_out = None
    if tau is not None:
        tau_windows = F.pad(tau, (0, extra)).reshape(batch, L_out, s)               # (b, L', s)
        tau_out = torch.where(valid, tau_windows, 0.0).sum(dim=2)                   # (b, L')
    return x_out, lengths_out, tau_out


def final_pool(x, lengths=None, *, mode, check_values=True):
    """Final pooling (SPEC §5.2): one vector per sequence from its valid positions t < len.

    x: real (b, L, H); lengths: None (all L positions) or integer (b,) with 1 <= len <= L;
    mode: "last", "mean" or "max"; check_values=False skips the range check of lengths.
    Returns (b, H) in x's dtype.
    """
    check_choice(mode, "mode", FINAL_MODES)
    x = _check_sequence(x)
    batch, L, _ = x.shape
    lengths = check_lengths(lengths, batch, L, like=x, check_values=check_values)
    n_valid = torch.full((batch,), L, device=x.device) if lengths is None else lengths  # (b,)
    valid = valid_mask(lengths, batch, L, x.device)[..., None]                      # (b, L, 1)
    if mode == "last":
        return x[torch.arange(batch, device=x.device), n_valid - 1]                 # (b, H)
    if mode == "mean":
        return torch.where(valid, x, 0.0).sum(dim=1) / n_valid[:, None]             # (b, H)
    if mode == "max":
        return torch.where(valid, x, -torch.inf).amax(dim=1)                        # (b, H)
    raise ValueError(f"mode must be one of {', '.join(FINAL_MODES)}; got {mode!r}")
