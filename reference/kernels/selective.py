"""Fused selective scan (S6, SPEC §4.8): a fast path, tested equal to the definition (the sequential path of
reference/layers/s6.py).

Given v (b, L, E), Δ (b, L, E), A (E, N), B_t, C_t (b, L, N), D (E,), τ (b, L) or None, h0 (b, E, N) or None
and the discretisation, the forward forms Ā_t and γ̄_t B_t v_t on the fly and contracts with C_t inside the
time loop, so no (b, L, E, N) array exists; rows (b, e) run in parallel. It returns y (b, L, E) = Σ_n C_t h_t +
D v_t, the state after step len_b − 1 and the states at the chunk starts. The fused backward reruns each chunk
from its stored start state (chunk length CHUNK) and runs the reverse scan of SPEC §3 through it, with the
derivatives of Ā, γ̄ with respect to Δ and A of each method, formed from the chunk's stored Ā_t, γ̄_t
without a new exponential (φ1'(z) = (e^z − φ1(z))/z, its series ½ + z/3 + z²/8 near 0).
Gradients of B_t and C_t (shared by the E channels) are summed over E in per-group buffers (no races).

    METHOD_CODES   discretisation name -> the integer the kernels take
    selective_scan_fused(v, dt, A, B, C, D, tau, h0, lengths, method) -> (y, h_last, chunk_states)
    selective_scan_fused_vjp(...)  -> gradients of (v, dt, A, B, C, D, h0)
"""
import numpy as np
from numba import prange

from .launch import njit_cached, parallel_kernel

METHOD_CODES = {"zoh": 0, "bilinear": 1, "exp_euler": 2, "async": 3, "dirac": 4}
CHUNK = 64
GROUPS = 8                                   # channel groups for the B/C gradient partial sums


@njit_cached(inline="always")
def _phi1(z):
    if z == 0.0:
        return 1.0
    return np.expm1(z) / z


@njit_cached(inline="always")
def _dphi1(z, exp_z, phi1_z):
    """φ1'(z) = (e^z − φ1(z))/z from e^z and φ1(z) already at hand; the series ½ + z/3 + z²/8 near 0."""
    if abs(z) < 1e-4:
        return 0.5 + z / 3.0 + z * z / 8.0
    return (exp_z - phi1_z) / z


@njit_cached(inline="always")
def _discrete(a, dt, tau, method):
    """(Ā, γ̄) for one (e, n) at one step: λ = a, Δ = dt, τ (1.0 without events)."""
    dt_A = tau * dt
    z = a * dt_A if dt_A != 0.0 else 0.0
    if method == 1:                                          # bilinear
        return (1.0 + z / 2) / (1.0 - z / 2), dt_A / (1.0 - z / 2)
    if method == 0:                                          # zoh: one expm1 gives both (Ā = 1 + (e^z − 1))
        growth = np.expm1(z)
        return 1.0 + growth, (dt_A * growth / z if z != 0.0 else dt_A)
    A_bar = np.exp(z)
    if method == 2:                                          # exp_euler
        return A_bar, dt_A
    if method == 3:                                          # async
        return A_bar, dt * _phi1(a * dt)
    return A_bar, 1.0                                        # dirac


@njit_cached(inline="always")
def _derivatives(a, dt, tau, method, A_bar, gamma_bar):
    """(∂Ā/∂Δ, ∂Ā/∂λ, ∂γ̄/∂Δ, ∂γ̄/∂λ) for one (e, n) at one step, from its (Ā, γ̄) (no new exponential)."""
    dt_A = tau * dt
    z = a * dt_A if dt_A != 0.0 else 0.0
    if method == 1:
        q = 1.0 / (1.0 - z / 2) ** 2
        return a * tau * q, dt_A * q, tau * q, dt_A * dt_A * q / 2
    dA_ddt, dA_da = a * tau * A_bar, dt_A * A_bar
    if method == 0:                                          # γ̄ = Δ_A φ1(z), e^z = Ā
        phi1_z = gamma_bar / dt_A if dt_A != 0.0 else 1.0
        return dA_ddt, dA_da, tau * A_bar, dt_A * dt_A * _dphi1(z, A_bar, phi1_z)
    if method == 2:
        return dA_ddt, dA_da, tau, 0.0
    if method == 3:                                          # γ̄ = Δ φ1(w), w = λΔ, e^w = 1 + λγ̄
        w = a * dt
        exp_w = 1.0 + a * gamma_bar
        return dA_ddt, dA_da, exp_w, dt * dt * _dphi1(w, exp_w, gamma_bar / dt)
    return dA_ddt, dA_da, 0.0, 0.0


@parallel_kernel()
def _forward_kernel(v, dt, A, B, C, D, tau, h0, last, method, y, h_last, chunk_states):
    batch, L, E = v.shape
    N = A.shape[1]
    for row in prange(batch * E):
        i, e = np.int64(row) // E, np.int64(row) % E
        h = h0[i, e].copy()                                                     # (N,)
        for t in range(L):
            if t % CHUNK == 0:
                chunk_states[i, t // CHUNK, e] = h
            acc = 0.0
            for n in range(N):
                A_bar, gamma_bar = _discrete(A[e, n], dt[i, t, e], tau[i, t], method)
                h[n] = A_bar * h[n] + gamma_bar * B[i, t, n] * v[i, t, e]
                acc += C[i, t, n] * h[n]
            y[i, t, e] = acc + D[e] * v[i, t, e]
            if t == last[i]:
                h_last[i, e] = h


@parallel_kernel()
def _backward_kernel(v, dt, A, B, C, D, tau, last, method, chunk_states, gy, gh_last,
                     gv, gdt, gA_rows, gB_parts, gC_parts, gD, gh0):
    batch, L, E = v.shape
    N = A.shape[1]
    per_group = (E + GROUPS - 1) // GROUPS
    for task in prange(batch * GROUPS):
        i, group = np.int64(task) // GROUPS, np.int64(task) % GROUPS
        states = np.empty((CHUNK + 1, N))                                       # h_{start−1} .. h_{end}
        A_bars = np.empty((CHUNK, N))                                           # Ā_t of the chunk
        gammas = np.empty((CHUNK, N))                                           # γ̄_t of the chunk
        lam = np.zeros(N)
        for e in range(group * per_group, min(E, (group + 1) * per_group)):
            lam[:] = 0.0
            A_next = np.ones(N)                                                 # Ā_{t+1} of the step after t
            for c in range((L + CHUNK - 1) // CHUNK - 1, -1, -1):
                start, end = c * CHUNK, min(L, (c + 1) * CHUNK)
                states[0] = chunk_states[i, c, e]
                for t in range(start, end):                                     # rerun the chunk
                    for n in range(N):
                        A_bar, gamma_bar = _discrete(A[e, n], dt[i, t, e], tau[i, t], method)
                        A_bars[t - start, n], gammas[t - start, n] = A_bar, gamma_bar
                        states[t - start + 1, n] = A_bar * states[t - start, n] + gamma_bar * B[i, t, n] * v[i, t, e]
                for t in range(end - 1, start - 1, -1):                         # reverse scan through it
                    g_y = gy[i, t, e]
                    g_v = D[e] * g_y
                    g_dt = 0.0
                    gD[i, e] += g_y * v[i, t, e]
                    for n in range(N):
                        h_t, h_prev = states[t - start + 1, n], states[t - start, n]
                        lam[n] = g_y * C[i, t, n] + A_next[n] * lam[n]
                        if t == last[i]:
                            lam[n] += gh_last[i, e, n]
                        A_bar, gamma_bar = A_bars[t - start, n], gammas[t - start, n]
                        dA_ddt, dA_da, dg_ddt, dg_da = _derivatives(A[e, n], dt[i, t, e], tau[i, t], method,
                                                                    A_bar, gamma_bar)
                        g_A_bar = lam[n] * h_prev
                        g_gamma = lam[n] * B[i, t, n] * v[i, t, e]
                        g_dt += g_A_bar * dA_ddt + g_gamma * dg_ddt
                        gA_rows[i, e, n] += g_A_bar * dA_da + g_gamma * dg_da
                        g_v += lam[n] * gamma_bar * B[i, t, n]
                        gB_parts[i, group, t, n] += lam[n] * gamma_bar * v[i, t, e]
                        gC_parts[i, group, t, n] += g_y * h_t
                        A_next[n] = A_bar
                    gv[i, t, e] = g_v
                    gdt[i, t, e] = g_dt
            for n in range(N):
                gh0[i, e, n] = A_next[n] * lam[n]


def _prepare(v, dt, A, B, C, D, tau, h0, lengths, method):
    batch, L, E = v.shape
    dtype = v.dtype
    tau = np.ones((batch, L), dtype) if tau is None else np.ascontiguousarray(tau, dtype)
    h0 = np.zeros((batch, E, A.shape[1]), dtype) if h0 is None else np.ascontiguousarray(h0, dtype)
    last = np.full(batch, L - 1, np.int64) if lengths is None else np.asarray(lengths, np.int64) - 1
    arrays = [np.ascontiguousarray(a, dtype) for a in (v, dt, A, B, C, D)]
    return arrays + [tau, h0, last, METHOD_CODES[method]]


def selective_scan_fused(v, dt, A, B, C, D, tau=None, h0=None, lengths=None, method="exp_euler"):
    """(y (b, L, E), h after step len − 1 (b, E, N), chunk start states (b, ⌈L/CHUNK⌉, E, N)), in v's dtype."""
    v, dt, A, B, C, D, tau, h0, last, code = _prepare(v, dt, A, B, C, D, tau, h0, lengths, method)
    batch, L, E = v.shape
    y = np.empty_like(v)                                                        # (b, L, E)
    h_last = np.empty_like(h0)                                                  # (b, E, N)
    chunk_states = np.empty((batch, (L + CHUNK - 1) // CHUNK, E, A.shape[1]), v.dtype)
    _forward_kernel(v, dt, A, B, C, D, tau, h0, last, code, y, h_last, chunk_states)
    return y, h_last, chunk_states


def selective_scan_fused_vjp(v, dt, A, B, C, D, tau, lengths, method, chunk_states, gy, gh_last=None):
    """Gradients (gv, gdt (b, L, E), gA (E, N), gB, gC (b, L, N), gD (E,), gh0 (b, E, N)) of
    ⟨y, gy⟩ + ⟨h_last, gh_last⟩, rerunning each chunk from `chunk_states` (from selective_scan_fused)."""
    v, dt, A, B, C, D, tau, _, last, code = _prepare(v, dt, A, B, C, D, tau, None, lengths, method)
    batch, L, E = v.shape
    N = A.shape[1]
    gy = np.ascontiguousarray(gy, v.dtype)
    gh_last = np.zeros((batch, E, N), v.dtype) if gh_last is None else np.ascontiguousarray(gh_last, v.dtype)
    gv, gdt = np.empty_like(v), np.empty_like(v)
    gA_rows = np.zeros((batch, E, N), v.dtype)
    gB_parts = np.zeros((batch, GROUPS, L, N), v.dtype)
    gC_parts = np.zeros((batch, GROUPS, L, N), v.dtype)
    gD_rows = np.zeros((batch, E), v.dtype)
    gh0 = np.empty((batch, E, N), v.dtype)
    _backward_kernel(v, dt, A, B, C, D, tau, last, code, np.ascontiguousarray(chunk_states), gy, gh_last,
                     gv, gdt, gA_rows, gB_parts, gC_parts, gD_rows, gh0)
    return gv, gdt, gA_rows.sum(0), gB_parts.sum(1), gC_parts.sum(1), gD_rows.sum(0), gh0
