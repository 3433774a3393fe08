"""Tuned Numba scans and their fused adjoint — fast paths, tested equal to `reference.scan`'s definitions.

`scan_numba` computes `scan_sequential`'s numbers in the fastest layout for the memory it gets: time-last
memory (b, S..., L) runs a kernel that advances four rows (four independent dependency chains) per
task with L innermost, anything else a time-major kernel. Unlike the spec's `scan`, it can write into
a preallocated `out=` buffer, compute in the inputs' own precision (`keep_dtype=True`: float32 and
complex64 stay 32-bit), run backwards (`reverse=True`) and decides how many threads to wake.
`scan_vjp_numba` is `scan_vjp` in one compiled backward pass. Users: the torch backend's CPU custom
ops (`torch_backend/scan.py`) and `benchmarks/`.
Glossary (SPEC §1): b batch, L length, S... trailing state axes, Q their product, R = b·Q rows.
"""
import numpy as np
from numba import prange

from .launch import PARALLEL_MIN_SIZE, parallel_kernel  # noqa: F401 (re-exported)
from ..scan import _unbroadcast, _vjp_results


@parallel_kernel()
def _scan_kernel(a, b, h0, out, reverse):
    """@njit twin of the loop on time-major (P, L, Q) arrays, Q contiguous; a (P|1, L|1, Q), h0 (P|1, Q).

    Parallel over P; the state lives in a small buffer and the inner loop runs over contiguous Q
    (vectorised: one pass over memory). `reverse` runs t = L−1 … 0.
    Note: splitting Q across threads was measured 2× slower (half-used prefetched lines); not done.
    """
    P, L, Q = b.shape
    a_step = 1 if a.shape[1] > 1 else 0                              # 0 when a is constant in time
    for p in prange(P):
        p = np.int64(p)                    # Note: prange may yield an unsigned index; keep int64 arithmetic
        a_p = a[p % a.shape[0]]                                                        # (L|1, Q)
        state = h0[p % h0.shape[0]].copy()                                             # (Q,)
        for s in range(L):
            t = L - 1 - s if reverse else s
            a_t, b_t, out_t = a_p[t * a_step], b[p, t], out[p, t]                      # (Q,) views
            for q in range(Q):
                state[q] = a_t[q] * state[q] + b_t[q]
                out_t[q] = state[q]
    return out


@parallel_kernel()
def _scan_kernel_time_last(a, b, h0, out, reverse):
    """@njit twin of the loop on time-last (R, L) rows, L contiguous; a (R or a divisor of R, L|1), h0 (R|1,).

    A row is one dependency chain, so one row at a time is latency-bound (~12 cycles a step); each
    task advances four rows at once (four independent chains in flight), parallel over groups of
    four rows. `reverse` runs t = L−1 … 0. (Two rows at once reached ~80% of the bandwidth bound
    in complex64; four reach it.)
    """
    R, L = b.shape
    a_step = 1 if a.shape[1] > 1 else 0                              # 0 when a is constant in time
    for group in prange((R + 3) // 4):
        r0 = 4 * np.int64(group)           # Note: prange may yield an unsigned index; keep int64 arithmetic
        r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)   # a short last group repeats row R−1
        a0, a1, a2, a3 = a[r0 % a.shape[0]], a[r1 % a.shape[0]], a[r2 % a.shape[0]], a[r3 % a.shape[0]]  # (L|1,)
        x0, x1, x2, x3 = h0[r0 % h0.shape[0]], h0[r1 % h0.shape[0]], h0[r2 % h0.shape[0]], h0[r3 % h0.shape[0]]
        for s in range(L):
            t = L - 1 - s if reverse else s
            ta = t * a_step
            x0 = a0[ta] * x0 + b[r0, t]
            x1 = a1[ta] * x1 + b[r1, t]
            x2 = a2[ta] * x2 + b[r2, t]
            x3 = a3[ta] * x3 + b[r3, t]
            out[r0, t], out[r1, t], out[r2, t], out[r3, t] = x0, x1, x2, x3
    return out


# Below PARALLEL_MIN_SIZE elements the kernels run their serial twins (reference/kernels/launch.py).


def _time_is_contiguous(x):
    """True when x (b, L, S...) is a view of C-ordered (b, S..., L) memory (time-last data)."""
    return x.shape[1] > 1 and x.strides[1] == x.itemsize and np.moveaxis(x, 1, -1).flags.c_contiguous


def scan_numba(a, b, h0=None, out=None, *, axis=1, keep_dtype=False, reverse=False):
    """Same semantics as `reference.scan.scan_sequential`, compiled, in the fastest layout for the memory it gets.

    a: broadcastable to b, right-aligned; b: (b, L, S...) with time on `axis`; h0: b's shape without
    the time axis, or None; out: None or a preallocated array of b's shape and the result dtype.
    Time-last memory (b, S..., L) runs the four-row kernel with L innermost, anything else the
    time-major kernel (after a copy if b is not C-contiguous). Results are float64/complex128 as in
    every reference method; keep_dtype=True computes in the inputs' own precision instead (float32 and
    complex64 stay 32-bit: for benchmarks and the torch backend). reverse=True runs the recurrence
    backwards, h_t = a_t h_{t+1} + b_t from t = L−1 with h_L = h0 (the adjoint's direction).
    Returns h with b's shape and time on `axis` (`out` itself when given).
    """
    a, b = np.asarray(a), np.asarray(b)
    operands = (a, b) if h0 is None else (a, b, np.asarray(h0))
    dtype = np.result_type(*operands, np.float32 if keep_dtype else np.float64)
    if not keep_dtype:
        dtype = np.dtype(np.complex128 if dtype.kind == "c" else np.float64)
    if dtype not in (np.float32, np.float64, np.complex64, np.complex128):
        raise TypeError(f"scan_numba computes in float32/64 or complex64/128; the inputs promote to {dtype}")
    try:
        broadcast = np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        broadcast = None
    if b.ndim < 2 or broadcast != b.shape:
        raise ValueError(f"a with shape {a.shape} must broadcast to b's shape {b.shape} (b, L, S...)")
    if not -b.ndim <= axis < b.ndim or axis % b.ndim == 0:
        raise ValueError(f"axis must name a time axis other than the batch axis 0 of b {b.shape}; got {axis}")
    if out is not None and (out.shape != b.shape or out.dtype != dtype):
        raise ValueError(f"out must have b's shape {b.shape} and dtype {dtype}; got {out.shape} {out.dtype}")
    a = a.reshape((1,) * (b.ndim - a.ndim) + a.shape).astype(dtype, copy=False)
    a, b = np.moveaxis(a, axis, 1), np.moveaxis(b.astype(dtype, copy=False), axis, 1)  # (b|1, L|1, S...), (b, L, S...)
    batch, S = b.shape[0], b.shape[2:]
    Q = int(np.prod(S, dtype=np.int64))
    if h0 is not None and np.shape(h0) != (batch,) + S:
        raise ValueError(f"h0 must have shape {(batch,) + S} (b without its time axis); got {np.shape(h0)}")
    h0 = np.zeros((1, Q), dtype) if h0 is None else np.asarray(h0, dtype).reshape(batch, Q)  # (b|1, Q)
    a = np.broadcast_to(a, a.shape[:2] + S)                                            # (b|1, L|1, S...)
    target = None if out is None else np.moveaxis(out, axis, 1)                        # (b, L, S...)
    h, in_place = _run_kernel(a, b, h0, target, dtype, reverse)    # serial twin below PARALLEL_MIN_SIZE
    if target is None:
        return np.moveaxis(h, 1, axis)
    if not in_place:
        target[...] = h
    return out


def _run_kernel(a, b, h0, target, dtype, reverse):
    """Pick the layout for b's memory, run the kernel; returns (h (b, L, S...), whether h is target)."""
    batch, L, S = b.shape[0], b.shape[1], b.shape[2:]
    Q = h0.shape[1]
    if _time_is_contiguous(b):
        in_place = target is not None and _time_is_contiguous(target)
        h = np.moveaxis(target, 1, -1) if in_place else np.empty((batch,) + S + (L,), dtype)  # (b, S..., L)
        a_rows = np.ascontiguousarray(np.moveaxis(a, 1, -1)).reshape(-1, a.shape[1])   # (b·Q | Q, L|1)
        rows = np.moveaxis(b, 1, -1).reshape(batch * Q, L)                             # (b·Q, L), a view
        _scan_kernel_time_last(a_rows, rows, h0.reshape(-1), h.reshape(batch * Q, L), reverse)
        h = np.moveaxis(h, -1, 1)                                                      # (b, L, S...), a view
    else:
        in_place = target is not None and target.flags.c_contiguous
        h = target if in_place else np.empty(b.shape, dtype)                           # (b, L, S...)
        a3 = np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], Q)                # (b|1, L|1, Q)
        b3 = np.ascontiguousarray(b).reshape(batch, L, Q)                              # (b, L, Q)
        _scan_kernel(a3, b3, h0, h.reshape(batch, L, Q), reverse)
    return h, in_place


# ----------------------------------------------------------------------------- the adjoint, compiled
@parallel_kernel()
def _vjp_kernel(a, h0, h, g, lam, grad_a):
    """@njit twin of `scan_vjp` on time-major (P, L, Q) arrays: one backward pass writes λ and ∂a.
    a (P|1, L|1, Q), h0 (P|1, Q), h, g, lam (P, L, Q), grad_a (P, L|1, Q): summed over time in
    place when a is constant in time (each p owns its rows, so no races)."""
    P, L, Q = g.shape
    a_step = 1 if a.shape[1] > 1 else 0
    for p in prange(P):
        p = np.int64(p)
        a_p, h0_p = a[p % a.shape[0]], h0[p % h0.shape[0]]                             # (L|1, Q), (Q,)
        grad_a[p] = 0
        lam_next = np.zeros(Q, g.dtype)                                                # λ_{t+1}; λ_L = 0
        for s in range(L):
            t = L - 1 - s
            a_next = a_p[min(t + 1, L - 1) * a_step]                                   # unused at t = L−1
            h_prev = h[p, t - 1] if t > 0 else h0_p
            g_t, lam_t, grad_a_t = g[p, t], lam[p, t], grad_a[p, t * a_step]
            for q in range(Q):
                lam_next[q] = g_t[q] + np.conj(a_next[q]) * lam_next[q]
                lam_t[q] = lam_next[q]
                grad_a_t[q] += lam_next[q] * np.conj(h_prev[q])
    return lam, grad_a


@parallel_kernel()
def _vjp_kernel_time_last(a, h0, h, g, lam, grad_a):
    """@njit twin of `scan_vjp` on time-last (R, L) rows, four rows per task as in the forward kernel.
    a (R or a divisor of R, L|1), h0 (R|1,), h, g, lam (R, L), grad_a (R, L|1). A short last group
    repeats row R−1, so every write is an assignment (sums over time live in locals)."""
    R, L = g.shape
    a_step = 1 if a.shape[1] > 1 else 0
    for group in prange((R + 3) // 4):
        r0 = 4 * np.int64(group)
        r1, r2, r3 = min(r0 + 1, R - 1), min(r0 + 2, R - 1), min(r0 + 3, R - 1)
        a0, a1, a2, a3 = a[r0 % a.shape[0]], a[r1 % a.shape[0]], a[r2 % a.shape[0]], a[r3 % a.shape[0]]  # (L|1,)
        l0 = l1 = l2 = l3 = g[r0, 0] * 0                                                 # λ_L = 0
        s0 = s1 = s2 = s3 = g[r0, 0] * 0                                                 # Σ_t ∂a_t
        for s in range(L):
            t = L - 1 - s
            tn = min(t + 1, L - 1) * a_step
            l0 = g[r0, t] + np.conj(a0[tn]) * l0
            l1 = g[r1, t] + np.conj(a1[tn]) * l1
            l2 = g[r2, t] + np.conj(a2[tn]) * l2
            l3 = g[r3, t] + np.conj(a3[tn]) * l3
            lam[r0, t], lam[r1, t], lam[r2, t], lam[r3, t] = l0, l1, l2, l3
            if t > 0:
                d0, d1 = l0 * np.conj(h[r0, t - 1]), l1 * np.conj(h[r1, t - 1])
                d2, d3 = l2 * np.conj(h[r2, t - 1]), l3 * np.conj(h[r3, t - 1])
            else:
                d0, d1 = l0 * np.conj(h0[r0 % h0.shape[0]]), l1 * np.conj(h0[r1 % h0.shape[0]])
                d2, d3 = l2 * np.conj(h0[r2 % h0.shape[0]]), l3 * np.conj(h0[r3 % h0.shape[0]])
            if a_step:
                grad_a[r0, t], grad_a[r1, t], grad_a[r2, t], grad_a[r3, t] = d0, d1, d2, d3
            else:
                s0, s1, s2, s3 = s0 + d0, s1 + d1, s2 + d2, s3 + d3
        if not a_step:
            grad_a[r0, 0], grad_a[r1, 0], grad_a[r2, 0], grad_a[r3, 0] = s0, s1, s2, s3
    return lam, grad_a


def scan_vjp_numba(a, b, h0, h, grad_h, *, keep_dtype=False):
    """`reference.scan.scan_vjp` compiled: λ and ∂a in one backward pass (the torch backend's backward on CPU).

    Same arguments and results as `scan_vjp` (time axis 1); keep_dtype=True computes in the inputs'
    own precision as in `scan_numba`. Time-last memory of h and grad_h runs the four-row kernel,
    anything else the time-major one (after a copy if not C-contiguous).
    """
    a_in, b_in, h, g = np.asarray(a), np.asarray(b), np.asarray(h), np.asarray(grad_h)
    dtype = np.result_type(a_in, b_in, h, g, *(() if h0 is None else (np.asarray(h0),)), np.float32)
    if not keep_dtype:
        dtype = np.dtype(np.complex128 if dtype.kind == "c" else np.float64)
    if h.shape != b_in.shape or g.shape != b_in.shape or b_in.ndim < 2:
        raise ValueError(f"h and grad_h must have b's shape {b_in.shape} (b, L, S...); got {h.shape} and {g.shape}")
    a = a_in.reshape((1,) * (b_in.ndim - a_in.ndim) + a_in.shape).astype(dtype, copy=False)  # (b|1, L|1, S...)
    batch, L, S = b_in.shape[0], b_in.shape[1], b_in.shape[2:]
    Q = int(np.prod(S, dtype=np.int64))
    a = np.broadcast_to(a, a.shape[:2] + S)                                            # (b|1, L|1, S...)
    h, g = h.astype(dtype, copy=False), g.astype(dtype, copy=False)
    h0_rows = np.zeros((1, Q), dtype) if h0 is None else np.asarray(h0, dtype).reshape(batch, Q)  # (b|1, Q)
    if _time_is_contiguous(h) and _time_is_contiguous(g):
        lam = np.empty((batch,) + S + (L,), dtype)                                     # (b, S..., L)
        grad_a = np.empty((batch,) + S + (a.shape[1],), dtype)                         # (b, S..., L|1)
        a_rows = np.ascontiguousarray(np.moveaxis(a, 1, -1)).reshape(-1, a.shape[1])   # (b·Q | Q, L|1)
        _vjp_kernel_time_last(a_rows, h0_rows.reshape(-1), np.moveaxis(h, 1, -1).reshape(batch * Q, L),
                              np.moveaxis(g, 1, -1).reshape(batch * Q, L), lam.reshape(batch * Q, L),
                              grad_a.reshape(batch * Q, a.shape[1]))
        lam, grad_a = np.moveaxis(lam, -1, 1), np.moveaxis(grad_a, -1, 1)              # (b, L, S...) views
    else:
        lam = np.empty(b_in.shape, dtype)                                              # (b, L, S...)
        grad_a = np.empty((batch, a.shape[1]) + S, dtype)                              # (b, L|1, S...)
        _vjp_kernel(np.ascontiguousarray(a).reshape(a.shape[0], a.shape[1], Q), h0_rows,
                    np.ascontiguousarray(h).reshape(batch, L, Q), np.ascontiguousarray(g).reshape(batch, L, Q),
                    lam.reshape(batch, L, Q), grad_a.reshape(batch, a.shape[1], Q))
    grad_a = grad_a if grad_a.shape == a_in.shape else _unbroadcast(grad_a, a_in.shape)
    return _vjp_results(a_in, b_in, h0, grad_a, lam)
