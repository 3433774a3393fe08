"""The fused selective scan of S6 (SPEC §4.8) as the CPU custom op `lrnn_spec::selective_scan`, with an autograd
formula running the fused recomputing backward of `reference.kernels.selective` (no (b, L, E, N) array in either
direction). Registered like `lrnn_spec::scan_numba` in torch_backend/scan.py: a fake impl for torch.compile, the
Numba kernels on NumPy views of CPU tensors, computed in the tensors' own precision (float32 arithmetic for float32
tensors: the kernels' SIMD loops and their exponential follow the dtype). The op's third output, the chunk start
states (b, ⌈L/CHUNK⌉, N, E) in the kernels' channel-last layout, is kept for the backward only.

    selective_scan(v, dt, A, B, C, D, tau, h0, lengths, method) -> (y (b, L, E), h after step len − 1 (b, E, N))

Glossary (SPEC §1): b batch, L length, E channels, N d_state.
"""
from typing import Optional

import torch

from reference.kernels.selective import CHUNK, selective_scan_fused, selective_scan_fused_vjp


def _np(x):
    return None if x is None else x.detach().contiguous().numpy()


@torch.library.custom_op("lrnn_spec::selective_scan", mutates_args=(), device_types="cpu")
def _selective_scan_op(v: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor, C: torch.Tensor,
                       D: torch.Tensor, tau: Optional[torch.Tensor], h0: Optional[torch.Tensor],
                       lengths: Optional[torch.Tensor], method: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    y, h_last, chunk_states = selective_scan_fused(_np(v), _np(dt), _np(A), _np(B), _np(C), _np(D), _np(tau), _np(h0),
                                                   _np(lengths), method)
    return torch.from_numpy(y), torch.from_numpy(h_last), torch.from_numpy(chunk_states)


@_selective_scan_op.register_fake
def _selective_scan_fake(v, dt, A, B, C, D, tau, h0, lengths, method):
    batch, L, E = v.shape
    return (v.new_empty(v.shape), v.new_empty((batch, E, A.shape[1])),
            v.new_empty((batch, (L + CHUNK - 1) // CHUNK, A.shape[1], E)))


def _setup(ctx, inputs, output):
    v, dt, A, B, C, D, tau, h0, lengths, method = inputs
    ctx.save_for_backward(v, dt, A, B, C, D, tau, lengths, output[2])
    ctx.method, ctx.has_h0 = method, h0 is not None


def _backward(ctx, gy, gh_last, _):
    v, dt, A, B, C, D, tau, lengths, chunk_states = ctx.saved_tensors
    grads = selective_scan_fused_vjp(_np(v), _np(dt), _np(A), _np(B), _np(C), _np(D), _np(tau), _np(lengths),
                                     ctx.method, _np(chunk_states), _np(gy), _np(gh_last))
    gv, gdt, gA, gB, gC, gD, gh0 = (torch.from_numpy(g) for g in grads)
    return gv, gdt, gA, gB, gC, gD, None, gh0 if ctx.has_h0 else None, None, None


_selective_scan_op.register_autograd(_backward, setup_context=_setup)


def selective_scan(v, dt, A, B, C, D, tau=None, h0=None, lengths=None, method="exp_euler"):
    """(y = Σ_n C_t h_t + D v_t (b, L, E), h after step len − 1 (b, E, N)) of the S6 recurrence, fused (CPU)."""
    y, h_last, _ = _selective_scan_op(v, dt, A, B, C, D, tau, h0, lengths, method)
    return y, h_last
