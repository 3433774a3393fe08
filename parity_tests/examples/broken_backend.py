"""A deliberately broken backend adapter: torch_backend with two defects a published peer shipped (SPEC §10).

    pytest parity_tests --backend parity_tests.examples.broken_backend -k "bilinear or stride"

(run from the repository root) must FAIL: the parity suite catches both defects with a readable message.
It is also the smallest example of an adapter — a module exposing the names listed in
parity_tests/backend.py. Everything is re-exported from torch_backend's own adapter except

* `discretize`: the bilinear (Tustin) rule inverted, Ā = (1 − λΔ/2)/(1 + λΔ/2) and γ̄ = Δ/(1 + λΔ/2),
  which maps the stable half-plane Re λ < 0 *outside* the unit disk (|Ā| > 1);
* `pool`: "stride" keeps the FIRST element of each window, x[:, ::s], instead of the last valid one.

Glossary (SPEC §1): b batch, L length, H width, N states, s stride.
"""
import torch

import torch_backend
from torch_backend.testing import asarray, cast, device_available, final_pool, from_reference, parameter_vjp, \
    scan, to_numpy, vjp

__all__ = ["asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp",
           "from_reference", "cast", "pool", "final_pool"]


def discretize(Lambda, dt, method, tau=None):
    """torch_backend.discretize, except that "bilinear" has its signs swapped (the defect)."""
    if method != "bilinear":
        return torch_backend.discretize(Lambda, dt, method, tau)
    dt = torch.as_tensor(dt, dtype=Lambda.real.dtype)
    dt_A = dt if tau is None else tau[..., None] * dt                    # (N,) or (b, L, N)
    half = Lambda * dt_A / 2
    return (1 - half) / (1 + half), dt_A / (1 + half)                    # inverted: should be (1 + half)/(1 − half)


def pool(x, lengths=None, integration_timesteps=None, *, mode, stride):
    """torch_backend.pool, except that "stride" keeps the first element of each window (the defect)."""
    x_out, lengths_out, tau_out = torch_backend.pool(x, lengths, integration_timesteps, mode=mode, stride=stride)
    if mode != "stride":
        return x_out, lengths_out, tau_out
    first = x[:, ::stride]                                               # (b, L', H): x[k·s], not x[max V_k]
    if lengths_out is not None:
        first = torch.where(torch.arange(first.shape[1])[None, :, None] < lengths_out[:, None, None], first, 0.0)
    return first, lengths_out, tau_out
