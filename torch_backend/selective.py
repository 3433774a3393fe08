"""The fused selective scan of S6 (SPEC §4.8) as the CPU custom op `lrnn_spec::selective_scan`, with an autograd
formula running the fused recomputing backward of `reference.kernels.selective` (no (b, L, E, N) array in either
direction). Registered like `lrnn_spec::scan_numba` in torch_backend/scan.py: a fake impl for torch.compile, the
Numba kernels on NumPy views of CPU tensors, computed in the tensors' own precision (float32 arithmetic for float32
tensors: the kernels' SIMD loops and their exponential follow the dtype). The op's third output, the chunk start
states (b, ⌈L/CHUNK⌉, N, E) in the kernels' channel-last layout, is kept for the backward only.

    selective_scan(v, dt, A, B, C, D, tau, h0, lengths, method) -> (y (b, L, E), h after step len − 1 (b, E, N))

Off the CPU (or with method="blocked"), `selective_scan_blocked` computes the same numbers in torch operations,
block by block in time with recomputation in the backward pass, so no (b, L, E, N) array of the whole sequence
exists there either.

Glossary (SPEC §1): b batch, L length, E channels, N d_state.
"""
from typing import Optional

import torch

from reference.kernels.selective import CHUNK, selective_scan_fused, selective_scan_fused_vjp
from .scan import scan


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


# ----------------------------------------------------------------------------- the pure-torch path (any device)
BLOCK = 256    # time steps per block of `selective_scan_blocked`


def selective_scan_blocked(v, dt, B, C, D, discrete_system, tau=None, h0=None, last=None, block=BLOCK):
    """The same numbers as the fused op with torch operations only (GPU, or any device): time blocks of `block`
    steps, each forming its own (b, T, E, N) arrays Ā_t, γ̄_t B_t v_t from `discrete_system(dt, τ)`, scanned from the
    carried state by the chunked scan and read out by C_t at once. Under autograd each block runs in
    torch.utils.checkpoint, so the backward pass recomputes the block instead of keeping its states: memory
    O(b·T·E·N + b·L·E) in both directions instead of O(b·L·E·N) — it follows the data, not the block count.

    v, dt (b, L, E); B, C (b, L, N); D (E,); τ (b, L) or None; h0 (b, E, N) or None; last (b,) the step whose
    state is returned (len − 1), or None. Returns (y (b, L, E) = Σ_n C_t h_t + D v_t, h at `last` (b, E, N) or None).
    """
    batch, L, E = v.shape
    h = v.new_zeros((batch, E, B.shape[-1])) if h0 is None else h0                        # (b, E, N)
    picked = None if last is None else torch.zeros_like(h)                                 # (b, E, N)
    rows = torch.arange(batch, device=v.device)

    def run_block(v_, dt_, B_, C_, tau_, h_):
        A_bar, gamma_bar = discrete_system(dt_, tau_)                                      # (b, T, E, N) each
        states = scan(A_bar, gamma_bar * B_[:, :, None, :] * v_[..., None], h_, method="chunked")   # (b, T, E, N)
        return torch.einsum("blen,bln->ble", states, C_), states                           # (b, T, E), (b, T, E, N)

    outputs = []
    for start in range(0, L, block):
        part = slice(start, start + block)
        T = v[:, part].shape[1]
        tau_part = None if tau is None else tau[:, part]
        if last is None:
            def ends(*args):                                                         # y, the last state only
                y, states = run_block(*args)
                return y, states[:, -1]
        else:
            at = torch.clamp(last - start, 0, T - 1)                                        # (b,)

            def ends(*args, at=at):                                                  # y, last state, state at len − 1
                y, states = run_block(*args)
                return y, states[:, -1], states[rows, at]
        arguments = (v[:, part], dt[:, part], B[:, part], C[:, part], tau_part, h)
        if torch.is_grad_enabled():
            results = torch.utils.checkpoint.checkpoint(ends, *arguments, use_reentrant=False)
        else:
            results = ends(*arguments)
        outputs.append(results[0])
        h = results[1]
        if last is not None:
            inside = ((last >= start) & (last < start + T))[:, None, None]                  # (b, 1, 1)
            picked = torch.where(inside, results[2], picked)
    return torch.cat(outputs, dim=1) + D * v, picked                                       # (b, L, E), (b, E, N)
