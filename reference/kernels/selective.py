"""Fused selective scan (S6, SPEC §4.8): a fast path, tested equal to the definition (the sequential path of
reference/layers/s6.py).

Given v (b, L, E), Δ (b, L, E), A (E, N), B_t, C_t (b, L, N), D (E,), τ (b, L) or None, h0 (b, E, N) or None
and the discretisation, the forward forms Ā_t and γ̄_t B_t v_t on the fly and contracts with C_t inside the
time loop, so no (b, L, E, N) array exists. It returns y (b, L, E) = Σ_n C_t h_t + D v_t, the state after step
len_b − 1 and the states at the chunk starts. The fused backward reruns each chunk from its stored start state
(chunk length CHUNK) and runs the reverse scan of SPEC §3 through it, with the derivatives of Ā, γ̄ with respect
to Δ and A of each method, formed from the chunk's stored Ā_t, γ̄_t without a new exponential
(φ1'(z) = (e^z − φ1(z))/z, its series ½ + z/3 + z²/8 near 0).

How it is fast (the forward is bound by one exponential per (t, e, n) update):
* tasks are (row b, block of EB channels), run in parallel (launch.parallel_kernel); inside a task the innermost
  loop runs over the block's channels e, contiguous in v, Δ, y and in the transposed Aᵀ (N, E), so it compiles
  to SIMD code with no reduction in it (the sum over n of y runs across iterations of the n loop);
* the exponential is `fast_exp` (reference/kernels/fast_exp.py), a polynomial with the exponent built from its
  bits (Cody–Waite reduction and Cephes' coefficients, float32 and float64 versions), because Numba's `np.exp` is a scalar libm call that
  stops the loop from vectorising (no SVML in this build: `numba -s` reports "SVML Operational: False");
  it is used where e^z is the whole answer (Ā of exp_euler, dirac, async and zoh), and γ̄ of zoh and async
  (φ1(z) = (e^z − 1)/z, cancelling near 0) is `fast_phi1` beside it (a Taylor polynomial for |z| < ½), so
  all five methods vectorise;
* arithmetic stays in the inputs' precision (float32 in, float32 throughout: the constants are typed
  through `dtype.type`);
* `fastmath=True` is not used: its `nnan`/`ninf` flags would drop the NaN and overflow selects of `fast_exp`,
  and `reassoc` would undo the two-step Cody–Waite reduction; the kernels are exact-IEEE code except
  `_channel_dot(3)`, the backward's sums over channels (the gradients of B_t and C_t), compiled out of line with
  "reassoc" and "contract" only: a sum in another order (and fused multiply-adds), which is what lets it vectorise;
* the backward's tasks are (row b, block of EB_BACKWARD = 4·EB channels): its reverse scan has a fixed cost per
  (t, n) (array views, loop set-ups, the two channel sums) that a wider block spreads over more channels
  (measured single-threaded at (b, L, E, N) = (8, 2048, 256, 16) float32: the backward took ≈ 3.2× the forward
  with 64-channel blocks, ≈ 2.3× with 256; its three chunk buffers are then 1.6 MB, in L2).
Gradients of B_t and C_t (shared by the E channels) are summed per channel block in their own buffers (no races).

    METHOD_CODES   discretisation name -> the integer the kernels take
    CHUNK, EB, EB_BACKWARD   steps per stored state, channels per forward task, channels per backward task
    selective_scan_fused(v, dt, A, B, C, D, tau, h0, lengths, method) -> (y, h_last, chunk_states)
    selective_scan_fused_vjp(...)  -> gradients of (v, dt, A, B, C, D, h0)
"""
import numpy as np
from numba import prange

from .fast_exp import fast_exp, fast_phi1
from .launch import njit_cached, parallel_kernel

METHOD_CODES = {"zoh": 0, "bilinear": 1, "exp_euler": 2, "async": 3, "dirac": 4}
CHUNK = 32                                   # steps between stored states (the backward reruns one chunk)
EB = 64                                      # channels per forward task (the vectorised inner loop)
EB_BACKWARD = 256                            # channels per backward task (its per-(t, n) overhead is larger)

@njit_cached(inline="always")
def _dphi1(z, exp_z, phi1_z):
    """φ1'(z) = (e^z − φ1(z))/z from e^z and φ1(z) already at hand; the series ½ + z/3 + z²/8 near 0."""
    if abs(z) < 1e-4:
        return 0.5 + z / 3.0 + z * z / 8.0
    return (exp_z - phi1_z) / z


@njit_cached(inline="always")
def _discrete_row(method, a, dt, tau_t, A_bar, gamma_bar):
    """(Ā, γ̄) of one state index n at one step for a block of channels: a = Aᵀ[n] and Δ_t of the block (EB,),
    τ_t (1 without events) → A_bar, gamma_bar (EB,) filled in place. One loop per method (each vectorises)."""
    zero, one, half = A_bar.dtype.type(0.0), A_bar.dtype.type(1.0), A_bar.dtype.type(0.5)
    if method == 2:                                          # exp_euler: (e^z, Δ_A)
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            A_bar[e] = fast_exp(a[e] * dt_A if dt_A != 0 else zero)
            gamma_bar[e] = dt_A
    elif method == 4:                                        # dirac: (e^z, 1)
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            A_bar[e] = fast_exp(a[e] * dt_A if dt_A != 0 else zero)
            gamma_bar[e] = one
    elif method == 1:                                        # bilinear
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            z = a[e] * dt_A if dt_A != 0 else zero
            A_bar[e] = (one + z * half) / (one - z * half)
            gamma_bar[e] = dt_A / (one - z * half)
    elif method == 0:                                        # zoh: Ā = e^z, γ̄ = Δ_A φ1(z)
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            z = a[e] * dt_A if dt_A != 0 else zero
            A_bar[e] = fast_exp(z)
            gamma_bar[e] = dt_A * fast_phi1(z)
    else:                                                    # async: Ā = e^z, γ̄ = Δ φ1(λΔ)
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            A_bar[e] = fast_exp(a[e] * dt_A if dt_A != 0 else zero)
            gamma_bar[e] = dt[e] * fast_phi1(a[e] * dt[e])


@njit_cached(inline="always")
def _derivative_row(method, a, dt, tau_t, A_bar, gamma_bar, dA_ddt, dA_da, dg_ddt, dg_da):
    """(∂Ā/∂Δ, ∂Ā/∂λ, ∂γ̄/∂Δ, ∂γ̄/∂λ) of one n at one step for a block of channels (each (EB,), in place),
    from its (Ā, γ̄) (no new exponential)."""
    zero, one, half = A_bar.dtype.type(0.0), A_bar.dtype.type(1.0), A_bar.dtype.type(0.5)
    if method == 1:
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            z = a[e] * dt_A if dt_A != 0 else zero
            q = one / ((one - z * half) * (one - z * half))
            dA_ddt[e], dA_da[e], dg_ddt[e], dg_da[e] = a[e] * tau_t * q, dt_A * q, tau_t * q, dt_A * dt_A * q * half
        return
    for e in range(a.shape[0]):
        dA_ddt[e] = a[e] * tau_t * A_bar[e]
        dA_da[e] = tau_t * dt[e] * A_bar[e]
    if method == 2:
        for e in range(a.shape[0]):
            dg_ddt[e], dg_da[e] = tau_t, zero
    elif method == 4:
        for e in range(a.shape[0]):
            dg_ddt[e], dg_da[e] = zero, zero
    elif method == 0:                                        # γ̄ = Δ_A φ1(z), e^z = Ā
        for e in range(a.shape[0]):
            dt_A = tau_t * dt[e]
            z = a[e] * dt_A if dt_A != 0 else zero
            phi1_z = gamma_bar[e] / dt_A if dt_A != 0 else one
            dg_ddt[e], dg_da[e] = tau_t * A_bar[e], dt_A * dt_A * _dphi1(z, A_bar[e], phi1_z)
    else:                                                    # async: γ̄ = Δ φ1(w), w = λΔ, e^w = 1 + λγ̄
        for e in range(a.shape[0]):
            w = a[e] * dt[e]
            exp_w = one + a[e] * gamma_bar[e]
            dg_ddt[e], dg_da[e] = exp_w, dt[e] * dt[e] * _dphi1(w, exp_w, gamma_bar[e] / dt[e])


@njit_cached(fastmath={"reassoc", "contract"})
def _channel_dot(a, b):
    """Σ_e a[e]·b[e] over a block of channels. Reassociated (fastmath "reassoc"), so the sum vectorises; the
    only change is the order of the additions (rounding, within the float tolerance rows). Kept out of line so
    the flags reach no other code."""
    total = a[0] - a[0]
    for e in range(a.shape[0]):
        total += a[e] * b[e]
    return total


@njit_cached(fastmath={"reassoc", "contract"})
def _channel_dot3(a, b, c):
    """Σ_e a[e]·b[e]·c[e] over a block of channels, reassociated as `_channel_dot`."""
    total = a[0] - a[0]
    for e in range(a.shape[0]):
        total += a[e] * b[e] * c[e]
    return total


@parallel_kernel()
def _forward_kernel(v, dt, A_T, B, C, D, tau, h0, last, method, y, h_last, chunk_states):
    batch, L, E = v.shape
    N = A_T.shape[0]
    blocks = (E + EB - 1) // EB
    for task in prange(batch * blocks):
        i, e0 = np.int64(task) // blocks, (np.int64(task) % blocks) * EB
        e1 = min(E, e0 + EB)
        h = h0[i, :, e0:e1].copy()                                              # (N, EB)
        A_bar, gamma_bar = np.empty(e1 - e0, v.dtype), np.empty(e1 - e0, v.dtype)   # (EB,) each
        acc = np.empty(e1 - e0, v.dtype)                                         # (EB,)
        for t in range(L):
            if t % CHUNK == 0:
                chunk_states[i, t // CHUNK, :, e0:e1] = h
            v_t, dt_t, tau_t = v[i, t, e0:e1], dt[i, t, e0:e1], tau[i, t]
            for e in range(e1 - e0):
                acc[e] = D[e0 + e] * v_t[e]
            for n in range(N):
                _discrete_row(method, A_T[n, e0:e1], dt_t, tau_t, A_bar, gamma_bar)
                b_n, c_n = B[i, t, n], C[i, t, n]
                h_n = h[n]
                for e in range(e1 - e0):
                    h_n[e] = A_bar[e] * h_n[e] + gamma_bar[e] * b_n * v_t[e]
                    acc[e] += c_n * h_n[e]
            y[i, t, e0:e1] = acc
            if t == last[i]:
                h_last[i, :, e0:e1] = h


@parallel_kernel()
def _backward_kernel(v, dt, A_T, B, C, D, tau, last, method, chunk_states, gy, gh_last,
                     gv, gdt, gA_T, gB_parts, gC_parts, gD, gh0):
    batch, L, E = v.shape
    N = A_T.shape[0]
    blocks = (E + EB_BACKWARD - 1) // EB_BACKWARD
    zero = v.dtype.type(0.0)
    for task in prange(batch * blocks):
        i, block = np.int64(task) // blocks, np.int64(task) % blocks
        e0 = block * EB_BACKWARD
        e1 = min(E, e0 + EB_BACKWARD)
        width = e1 - e0
        states = np.empty((CHUNK + 1, N, width), v.dtype)                       # h_{start−1} .. h_{end}
        A_bars = np.empty((CHUNK, N, width), v.dtype)                           # Ā_t of the chunk
        gammas = np.empty((CHUNK, N, width), v.dtype)                           # γ̄_t of the chunk
        lam = np.zeros((N, width), v.dtype)                                     # adjoint λ_t
        A_next = np.ones((N, width), v.dtype)                                   # Ā_{t+1} of the step after t
        g_A = np.zeros((N, width), v.dtype)                                     # ∂/∂Aᵀ of the block
        # ∂Ā/∂Δ, ∂Ā/∂λ, ∂γ̄/∂Δ, ∂γ̄/∂λ (width,) each: four arrays (rows of one array would stop the vectorising)
        dA_ddt, dA_da, dg_ddt, dg_da = (np.empty(width, v.dtype), np.empty(width, v.dtype),
                                        np.empty(width, v.dtype), np.empty(width, v.dtype))
        g_v, g_dt, g_D = np.empty(width, v.dtype), np.empty(width, v.dtype), np.zeros(width, v.dtype)  # (width,)
        for c in range((L + CHUNK - 1) // CHUNK - 1, -1, -1):
            start, end = c * CHUNK, min(L, (c + 1) * CHUNK)
            states[0] = chunk_states[i, c, :, e0:e1]
            for t in range(start, end):                                         # rerun the chunk
                s, v_t = t - start, v[i, t, e0:e1]
                for n in range(N):
                    _discrete_row(method, A_T[n, e0:e1], dt[i, t, e0:e1], tau[i, t], A_bars[s, n], gammas[s, n])
                    b_n, h_prev, h_t = B[i, t, n], states[s, n], states[s + 1, n]
                    A_bar, gamma_bar = A_bars[s, n], gammas[s, n]
                    for e in range(width):
                        h_t[e] = A_bar[e] * h_prev[e] + gamma_bar[e] * b_n * v_t[e]
            for t in range(end - 1, start - 1, -1):                             # reverse scan through it
                s, v_t, dt_t, gy_t, tau_t = t - start, v[i, t, e0:e1], dt[i, t, e0:e1], gy[i, t, e0:e1], tau[i, t]
                for e in range(width):
                    g_v[e] = D[e0 + e] * gy_t[e]
                    g_dt[e] = zero
                    g_D[e] += gy_t[e] * v_t[e]
                for n in range(N):
                    A_bar, gamma_bar, h_prev, h_t = A_bars[s, n], gammas[s, n], states[s, n], states[s + 1, n]
                    _derivative_row(method, A_T[n, e0:e1], dt_t, tau_t, A_bar, gamma_bar,
                                    dA_ddt, dA_da, dg_ddt, dg_da)
                    b_n, c_n = B[i, t, n], C[i, t, n]
                    lam_n, A_next_n, g_A_n = lam[n], A_next[n], g_A[n]
                    for e in range(width):
                        lam_n[e] = gy_t[e] * c_n + A_next_n[e] * lam_n[e]
                    if t == last[i]:
                        for e in range(width):
                            lam_n[e] += gh_last[i, n, e0 + e]
                    for e in range(width):
                        g_A_bar = lam_n[e] * h_prev[e]                                   # ∂/∂Ā_t
                        g_gamma = lam_n[e] * b_n * v_t[e]                                # ∂/∂γ̄_t
                        g_dt[e] += g_A_bar * dA_ddt[e] + g_gamma * dg_ddt[e]
                        g_A_n[e] += g_A_bar * dA_da[e] + g_gamma * dg_da[e]
                        g_v[e] += lam_n[e] * gamma_bar[e] * b_n
                        A_next_n[e] = A_bar[e]
                    gB_parts[i, block, t, n] = _channel_dot3(lam_n, gamma_bar, v_t)
                    gC_parts[i, block, t, n] = _channel_dot(gy_t, h_t)
                gv[i, t, e0:e1] = g_v
                gdt[i, t, e0:e1] = g_dt
        gA_T[i, :, e0:e1] = g_A
        gD[i, e0:e1] = g_D
        for n in range(N):
            for e in range(width):
                gh0[i, n, e0 + e] = A_next[n, e] * lam[n, e]


def _prepare(v, dt, A, B, C, D, tau, h0, lengths, method):
    """The kernels' arguments: contiguous arrays in v's dtype, Aᵀ (N, E), h0 as (b, N, E), last steps."""
    batch, L, E = v.shape
    dtype = v.dtype
    N = A.shape[1]
    tau = np.ones((batch, L), dtype) if tau is None else np.ascontiguousarray(tau, dtype)        # (b, L)
    h0_T = np.zeros((batch, N, E), dtype) if h0 is None else \
        np.ascontiguousarray(np.swapaxes(np.asarray(h0, dtype), 1, 2))                          # (b, N, E)
    last = np.full(batch, L - 1, np.int64) if lengths is None else np.asarray(lengths, np.int64) - 1   # (b,)
    A_T = np.ascontiguousarray(np.asarray(A, dtype).T)                                           # (N, E)
    v, dt, B, C, D = (np.ascontiguousarray(a, dtype) for a in (v, dt, B, C, D))
    return v, dt, A_T, B, C, D, tau, h0_T, last, METHOD_CODES[method]


def selective_scan_fused(v, dt, A, B, C, D, tau=None, h0=None, lengths=None, method="exp_euler"):
    """(y (b, L, E), h after step len − 1 (b, E, N), chunk start states (b, ⌈L/CHUNK⌉, N, E)), in v's dtype.
    The chunk states are the backward's input (note the (N, E) order: the kernels' layout)."""
    v, dt, A_T, B, C, D, tau, h0_T, last, code = _prepare(v, dt, A, B, C, D, tau, h0, lengths, method)
    batch, L, E = v.shape
    N = A_T.shape[0]
    y = np.empty_like(v)                                                        # (b, L, E)
    h_last = np.empty((batch, N, E), v.dtype)                                   # (b, N, E)
    chunk_states = np.empty((batch, (L + CHUNK - 1) // CHUNK, N, E), v.dtype)   # (b, ⌈L/CHUNK⌉, N, E)
    _forward_kernel(v, dt, A_T, B, C, D, tau, h0_T, last, code, y, h_last, chunk_states)
    return y, np.ascontiguousarray(np.swapaxes(h_last, 1, 2)), chunk_states    # h_last (b, E, N)


def selective_scan_fused_vjp(v, dt, A, B, C, D, tau, lengths, method, chunk_states, gy, gh_last=None):
    """Gradients (gv, gdt (b, L, E), gA (E, N), gB, gC (b, L, N), gD (E,), gh0 (b, E, N)) of
    ⟨y, gy⟩ + ⟨h_last, gh_last⟩, rerunning each chunk from `chunk_states` (from selective_scan_fused)."""
    v, dt, A_T, B, C, D, tau, _, last, code = _prepare(v, dt, A, B, C, D, tau, None, lengths, method)
    batch, L, E = v.shape
    N = A_T.shape[0]
    blocks = (E + EB_BACKWARD - 1) // EB_BACKWARD
    gy = np.ascontiguousarray(gy, v.dtype)                                      # (b, L, E)
    gh_last_T = np.zeros((batch, N, E), v.dtype) if gh_last is None else \
        np.ascontiguousarray(np.swapaxes(np.asarray(gh_last, v.dtype), 1, 2))  # (b, N, E)
    gv, gdt = np.empty_like(v), np.empty_like(v)                                # (b, L, E) each
    gA_rows = np.empty((batch, N, E), v.dtype)                                  # (b, N, E)
    gB_parts = np.empty((batch, blocks, L, N), v.dtype)                         # (b, E/EB_BACKWARD, L, N)
    gC_parts = np.empty((batch, blocks, L, N), v.dtype)                         # (b, E/EB_BACKWARD, L, N)
    gD_rows = np.empty((batch, E), v.dtype)                                     # (b, E)
    gh0_T = np.empty((batch, N, E), v.dtype)                                    # (b, N, E)
    _backward_kernel(v, dt, A_T, B, C, D, tau, last, code, np.ascontiguousarray(chunk_states, v.dtype), gy,
                     gh_last_T, gv, gdt, gA_rows, gB_parts, gC_parts, gD_rows, gh0_T)
    return (gv, gdt, np.ascontiguousarray(gA_rows.sum(0).T), gB_parts.sum(1), gC_parts.sum(1), gD_rows.sum(0),
            np.ascontiguousarray(np.swapaxes(gh0_T, 1, 2)))
