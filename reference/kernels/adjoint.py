"""The fused adjoint of a depthwise diagonal recurrence (S4D, SPEC §4.5 and §11) — a fast path, tested equal to
the definition `reference.backward.depthwise_scan_vjp`.

The definition keeps four (b, L, H, N) complex arrays (the drive B u, the states, their adjoint, the drive's
gradient) and makes several passes over each; at (b, L, H, N) = (8, 1024, 64, 64) one such array is 537 MB.
Here one task owns one row (batch p, channel h) and its N modes and does everything in two passes over time:

    forward   h_t = Ā_t h_{t−1} + γ̄_t (B u_t), kept in the task's (L, N) buffer;   G_C += g_t conj(h_t)
    reverse   λ_t = κ conj(C) g_t + conj(Ā_{t+1}) λ_{t+1};   G_Ā += λ_t conj(h_{t−1});
              G_γ̄ += λ_t conj(B u_t);   G_B += λ_t conj(γ̄_t) u_t;   G_u_t = Re Σ_n λ_t conj(γ̄_t) conj(B)

so the adjoint states λ are never stored, and no (b, L, H, N) array exists unless Ā is per step (event
timesteps τ): then G_Ā and G_γ̄ are per step too, as the discretisation's adjoint needs them. Rows run in
parallel (serial twin below PARALLEL_MIN_SIZE elements and in forked workers: `launch.py`).

    depthwise_scan_vjp_fused(Lambda_bar, gamma_bar, B, C, kappa, u, grad_y, h0) -> same results as the definition
Glossary (SPEC §1): b batch, L length, H d_model (channels), N d_state (modes per channel).
"""
import numpy as np
from numba import prange

from .launch import parallel_kernel
from ..backward import sum_to_shape


@parallel_kernel()
def _depthwise_vjp_kernel(A_bar, gamma_bar, B, C_adj, u, g, h0, grad_u, grad_C, grad_A_bar, grad_gamma_bar,
                          grad_B, grad_h0):
    """@njit twin of the definition on one (p, h) row per task.

    A_bar, gamma_bar (P, La, H, N) with P ∈ {1, b}, La ∈ {1, L}; B, C_adj = κ conj(C) (H, N); u, g (b, L, H);
    h0 (b|1, H, N). Writes grad_u (b, L, H) and, per batch row, grad_C, grad_B, grad_h0 (b, H, N) and
    grad_A_bar, grad_gamma_bar (b, La, H, N) (summed over time in the task when La = 1; each task owns its
    rows, so no races).
    """
    batch, L, H = u.shape
    N = B.shape[1]
    step = 1 if A_bar.shape[1] > 1 else 0                            # 0 when Ā is constant in time
    for task in prange(batch * H):
        task = np.int64(task)              # Note: prange may yield an unsigned index; keep int64 arithmetic
        p, h = task // H, task % H
        pa = p if A_bar.shape[0] > 1 else 0
        B_h, C_h = B[h], C_adj[h]                                                      # (N,)
        h_init = h0[p % h0.shape[0], h]                                                # (N,)
        states = np.empty((L, N), np.complex128)                                       # this row's h_t
        state = h_init.copy()                                                          # (N,)
        acc_C = np.zeros(N, np.complex128)
        for t in range(L):
            a_t, c_t = A_bar[pa, t * step, h], gamma_bar[pa, t * step, h]              # (N,)
            u_t, g_t = u[p, t, h], g[p, t, h]
            for n in range(N):
                state[n] = a_t[n] * state[n] + c_t[n] * (B_h[n] * u_t)
                states[t, n] = state[n]
                acc_C[n] += g_t * np.conj(state[n])
        lam = np.zeros(N, np.complex128)                                               # λ_{t+1}; λ_L = 0
        acc_A, acc_gamma, acc_B = np.zeros(N, np.complex128), np.zeros(N, np.complex128), np.zeros(N, np.complex128)
        for s in range(L):
            t = L - 1 - s
            a_next = A_bar[pa, min(t + 1, L - 1) * step, h]                            # unused at t = L−1 (λ_L = 0)
            c_t = gamma_bar[pa, t * step, h]                                           # (N,)
            u_t, g_t = u[p, t, h], g[p, t, h]
            total = 0.0
            for n in range(N):
                lam[n] = C_h[n] * g_t + np.conj(a_next[n]) * lam[n]
                h_prev = states[t - 1, n] if t > 0 else h_init[n]
                d_A, d_gamma = lam[n] * np.conj(h_prev), lam[n] * np.conj(B_h[n] * u_t)
                d_drive = lam[n] * np.conj(c_t[n])
                acc_B[n] += d_drive * u_t
                total += (d_drive * np.conj(B_h[n])).real
                if step:
                    grad_A_bar[p, t, h, n], grad_gamma_bar[p, t, h, n] = d_A, d_gamma
                else:
                    acc_A[n] += d_A
                    acc_gamma[n] += d_gamma
            grad_u[p, t, h] = total
        a_0 = A_bar[pa, 0, h]                                                          # (N,)
        for n in range(N):
            grad_h0[p, h, n] = np.conj(a_0[n]) * lam[n]
            grad_C[p, h, n], grad_B[p, h, n] = acc_C[n], acc_B[n]
            if not step:
                grad_A_bar[p, 0, h, n], grad_gamma_bar[p, 0, h, n] = acc_A[n], acc_gamma[n]


def depthwise_scan_vjp_fused(Lambda_bar, gamma_bar, B, C, kappa, u, grad_y, h0=None):
    """`reference.backward.depthwise_scan_vjp` in two compiled passes per row: same arguments, same results.

    Lambda_bar, gamma_bar: (H, N) or (b, L, H, N) complex; B, C: (H, N) complex; kappa: κ; u, grad_y: (b, L, H)
    real; h0: (b, H, N) or None. Returns (G_Ā like Lambda_bar, G_γ̄ like gamma_bar, G_B (H, N), G_C (H, N),
    G_u (b, L, H) real, G_h0 (b, H, N) or None).
    """
    u = np.ascontiguousarray(u, dtype=np.float64)                                      # (b, L, H)
    g = np.ascontiguousarray(grad_y, dtype=np.float64)                                 # (b, L, H)
    batch, L, H = u.shape
    Lambda_bar = np.asarray(Lambda_bar)
    gamma_shape = np.shape(gamma_bar)
    per_step = Lambda_bar.ndim == 4                                                    # (b, L, H, N): Ā_t under τ
    rows = Lambda_bar.shape if per_step else (1, 1) + Lambda_bar.shape                 # (P, La, H, N)
    N = rows[-1]
    A_rows = np.ascontiguousarray(np.broadcast_to(Lambda_bar, rows), dtype=np.complex128)   # (P, La, H, N)
    gamma_rows = np.ascontiguousarray(np.broadcast_to(gamma_bar, rows), dtype=np.complex128)  # (P, La, H, N)
    B = np.ascontiguousarray(B, dtype=np.complex128)                                   # (H, N)
    C_adj = np.ascontiguousarray(kappa * np.conj(C), dtype=np.complex128)              # (H, N)
    h0_rows = np.zeros((1, H, N), np.complex128) if h0 is None else np.ascontiguousarray(h0, dtype=np.complex128)
    grad_u = np.empty((batch, L, H))                                                   # (b, L, H)
    grad_C, grad_B, grad_h0 = (np.empty((batch, H, N), np.complex128) for _ in range(3))   # (b, H, N)
    grad_A_bar = np.empty((batch, rows[1], H, N), np.complex128)                       # (b, La, H, N)
    grad_gamma_bar = np.empty((batch, rows[1], H, N), np.complex128)                   # (b, La, H, N)
    _depthwise_vjp_kernel(A_rows, gamma_rows, B, C_adj, u, g, h0_rows, grad_u, grad_C, grad_A_bar, grad_gamma_bar,
                          grad_B, grad_h0)
    if not per_step:
        grad_A_bar, grad_gamma_bar = grad_A_bar.sum(axis=(0, 1)), grad_gamma_bar.sum(axis=(0, 1))   # (H, N)
    grad_gamma_bar = sum_to_shape(grad_gamma_bar, gamma_shape)                              # like γ̄
    return (grad_A_bar, grad_gamma_bar, grad_B.sum(axis=0), kappa * grad_C.sum(axis=0), grad_u,
            None if h0 is None else grad_h0)

