"""Linear scans h_t = a_t ⊙ h_{t−1} + b_t, their associative forms, and their adjoint — SPEC §3.

`scan_sequential` is the definition (STYLE 5). Every other method computes the same numbers:
`scan_numba` (its @njit twin), `scan_hillis_steele` and `scan_blelloch` (associative scans over the
named `combine` operator), `scan_chunked` (local scans in chunks plus a carried state). None divides
by a cumulative product and none works in log space, so an underflowed product gives 0, never NaN.

    elements  e_t = (a_t, b_t) meaning h ↦ a_t h + b_t
    combine   e_i • e_j = (a_j a_i, a_j b_i + b_j)      (i earlier than j; associative, not commutative)
    adjoint   λ_{L−1} = G_{L−1},  λ_t = G_t + conj(a_{t+1}) λ_{t+1}
              ∂b_t = λ_t,  ∂a_t = λ_t conj(h_{t−1}),  ∂h0 = conj(a_0) λ_0   (torch's complex convention)

Layout: b (b, L, S...) with time on `axis` (default 1), a broadcastable to b, h0 of b's shape without
the time axis. Results are float64/complex128 (the reference precision).
Upstream: mamba.py `pscan` (Blelloch on time-major data); S5 `apply_ssm` (associative scan).
Glossary (SPEC §1): b batch, L length, N state channels.
"""
import numpy as np
from numba import prange
from .kernels.launch import parallel_kernel  # the serial twin for small inputs and forked workers

SCAN_METHODS = ("sequential", "numba", "blelloch", "hillis_steele", "chunked")


def combine(earlier, later):
    """The associative operator on pairs (a, b): apply `earlier` first, then `later`."""
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


# ----------------------------------------------------------------------------- validation
def _as_numeric(x, name):
    x = np.asarray(x)
    if x.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be a real or complex numeric array; got dtype {x.dtype}")
    return x


def _prepare(a, b, h0, axis):
    """Validate, promote to 64-bit and move time to axis 1. Returns (a, b, h0, axis) with a of b's ndim."""
    a, b = _as_numeric(a, "a"), _as_numeric(b, "b")
    if b.ndim < 2:
        raise ValueError(f"b must have a batch and a time axis, e.g. (b, L, N); got shape {b.shape}")
    if not -b.ndim <= axis < b.ndim or axis % b.ndim == 0:
        raise ValueError(f"axis must name a time axis other than the batch axis 0 of b with shape {b.shape}; got {axis}")
    axis = axis % b.ndim
    if b.shape[axis] == 0:
        raise ValueError(f"the scan needs L >= 1 time steps; got L = 0 (b shape {b.shape})")
    dtype = np.result_type(a, b, np.float64) if h0 is None else np.result_type(a, b, _as_numeric(h0, "h0"), np.float64)
    dtype = np.complex128 if dtype.kind == "c" else np.float64
    if a.ndim > b.ndim:
        raise ValueError(f"a with shape {a.shape} has more axes than b with shape {b.shape}")
    a = a.reshape((1,) * (b.ndim - a.ndim) + a.shape)        # right-aligned, as numpy broadcasts
    try:
        np.broadcast_shapes(a.shape, b.shape)
    except ValueError:
        raise ValueError(f"a with shape {a.shape} does not broadcast to b with shape {b.shape}") from None
    if np.broadcast_shapes(a.shape, b.shape) != b.shape:
        raise ValueError(f"a with shape {a.shape} must broadcast to b's shape {b.shape} without enlarging it")
    a = np.moveaxis(a.astype(dtype, copy=False), axis, 1)
    b = np.moveaxis(b.astype(dtype, copy=False), axis, 1)
    if h0 is not None:
        h0 = np.asarray(h0).astype(dtype, copy=False)
        expected = b.shape[:1] + b.shape[2:]
        if h0.shape != expected:
            raise ValueError(f"h0 must have shape {expected} (b without its time axis); got {h0.shape}")
    return a, b, h0, axis


def scan(a, b, h0=None, *, method="sequential", axis=1, chunk=None):
    """All states of h_t = a_t ⊙ h_{t−1} + b_t, h_{−1} = h0 (0 when None).

    a: broadcastable to b (e.g. (N,) time-invariant or (b, L, N)); b: (b, L, S...) real or complex;
    h0: (b, S...) or None; method: one of SCAN_METHODS; axis: the time axis of b; chunk: steps per
    chunk, for method="chunked" only (None: 64). Returns h with b's shape, float64 or complex128.
    """
    if method not in SCAN_METHODS:
        raise ValueError(f"scan method must be one of {', '.join(SCAN_METHODS)}; got {method!r}")
    if chunk is not None and method != "chunked":
        raise ValueError(f"chunk is used by method='chunked' only; got chunk={chunk!r} with method={method!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, (int, np.integer)) or chunk < 1):
        raise ValueError(f"chunk must be an integer >= 1 or None; got {chunk!r}")
    a, b, h0, axis = _prepare(a, b, h0, axis)
    if method == "chunked":
        h = scan_chunked(a, b, h0, chunk=64 if chunk is None else int(chunk))
    else:
        h = _METHODS[method](a, b, h0)
    return np.moveaxis(h, 1, axis)


# ----------------------------------------------------------------------------- the definition
def scan_sequential(a, b, h0=None):
    """The definition: a loop over t. a (b|1, L|1, S...), b (b, L, S...), h0 (b, S...) or None."""
    h = np.empty(np.broadcast_shapes(a.shape, b.shape), dtype=np.result_type(a, b))   # (b, L, S...)
    state = np.zeros_like(h[:, 0]) if h0 is None else h0                              # (b, S...)
    for t in range(b.shape[1]):
        state = a[:, min(t, a.shape[1] - 1)] * state + b[:, t]
        h[:, t] = state
    return h


@parallel_kernel()
def _scan_rows(a, b, h0):
    """@njit twin of the loop on time-last rows: a, b (R, L), h0 (R,); one row (one chain) per task."""
    h = np.empty_like(b)                                                               # (R, L)
    for r in prange(b.shape[0]):
        state = h0[r]
        for t in range(b.shape[1]):
            state = a[r, t] * state + b[r, t]
            h[r, t] = state
    return h


def scan_numba(a, b, h0=None):
    """`scan_sequential` compiled, one (batch, state) row per task (`reference.kernels` has faster twins)."""
    rows = lambda x: np.moveaxis(np.broadcast_to(x, b.shape), 1, -1).reshape(-1, b.shape[1])  # noqa: E731 (b·S, L)
    h0_rows = np.zeros(b[:, 0].size, b.dtype) if h0 is None else h0.reshape(-1)       # (b·S,)
    h = _scan_rows(rows(a), rows(b), h0_rows)                                          # (b·S, L)
    return np.moveaxis(h.reshape(b.shape[:1] + b.shape[2:] + b.shape[1:2]), -1, 1)     # (b, L, S...)


# ----------------------------------------------------------------------------- associative forms
def _elements(a, b, h0):
    """Materialised pairs (a_t, b_t) with h0 folded into the first element: b_0 ← b_0 + a_0 h0."""
    a = np.broadcast_to(a, b.shape).copy()                                             # (b, L, S...)
    b = b.copy()                                                                       # (b, L, S...)
    if h0 is not None:
        b[:, 0] += a[:, 0] * h0
    return a, b


def scan_hillis_steele(a, b, h0=None):
    """Inclusive scan in ⌈log2 L⌉ rounds; round d combines each element with the one 2^d earlier."""
    a, b = _elements(a, b, h0)
    offset = 1
    while offset < b.shape[1]:
        a_new, b_new = combine((a[:, :-offset], b[:, :-offset]), (a[:, offset:], b[:, offset:]))
        a[:, offset:], b[:, offset:] = a_new, b_new
        offset *= 2
    return b


def scan_blelloch(a, b, h0=None):
    """Work-efficient up-sweep/down-sweep on the time axis, padded with the identity (1, 0) to 2^k."""
    a, b = _elements(a, b, h0)
    L = b.shape[1]
    n = 1 << (L - 1).bit_length()                                                     # next power of two
    pad = [(0, 0), (0, n - L)] + [(0, 0)] * (b.ndim - 2)
    A, Bv = np.pad(a, pad, constant_values=1), np.pad(b, pad, constant_values=0)      # (b, n, S...)
    span = 1
    while span < n:                                                                    # up-sweep
        right, left = slice(2 * span - 1, n, 2 * span), slice(span - 1, n, 2 * span)
        A[:, right], Bv[:, right] = combine((A[:, left], Bv[:, left]), (A[:, right], Bv[:, right]))
        span *= 2
    A[:, n - 1], Bv[:, n - 1] = 1, 0                                                   # identity at the root
    while span > 1:                                                                    # down-sweep
        span //= 2
        right, left = slice(2 * span - 1, n, 2 * span), slice(span - 1, n, 2 * span)
        left_sum = A[:, left].copy(), Bv[:, left].copy()
        A[:, left], Bv[:, left] = A[:, right], Bv[:, right]
        A[:, right], Bv[:, right] = combine((A[:, right], Bv[:, right]), left_sum)
    # Bv now holds the exclusive prefixes; one more combine with each element makes them inclusive.
    return a * Bv[:, :L] + b


def scan_chunked(a, b, h0=None, chunk=64):
    """Local scans inside all chunks of `chunk` steps at once, then a carry between chunks:
    h_t = ℓ_t + p_t·h_{chunk start − 1}, with ℓ the local scan from 0 and p the local product of a."""
    batch, L = b.shape[:2]
    n_chunks = -(-L // chunk)
    a, b = _elements(a, b, h0)                                                         # (b, L, S...)
    pad, blocks = [(0, 0), (0, n_chunks * chunk - L)] + [(0, 0)] * (b.ndim - 2), (batch, n_chunks, chunk) + b.shape[2:]
    a = np.pad(a, pad, constant_values=1).reshape(blocks)                              # (b, chunks, chunk, S...)
    b = np.pad(b, pad, constant_values=0).reshape(blocks)                              # (b, chunks, chunk, S...)
    local, prod = np.empty_like(b), np.empty_like(a)                                   # ℓ, p
    local[:, :, 0], prod[:, :, 0] = b[:, :, 0], a[:, :, 0]
    for c in range(1, chunk):                                                          # all chunks at once
        local[:, :, c] = a[:, :, c] * local[:, :, c - 1] + b[:, :, c]
        prod[:, :, c] = a[:, :, c] * prod[:, :, c - 1]
    carry = np.zeros_like(local[:, 0, 0])                                              # (b, S...)
    for k in range(n_chunks):                                                          # carry between chunks
        local[:, k] += prod[:, k] * carry[:, None]
        carry = local[:, k, -1]
    return local.reshape((batch, n_chunks * chunk) + b.shape[3:])[:, :L]


_METHODS = {"sequential": scan_sequential, "numba": scan_numba, "blelloch": scan_blelloch, "hillis_steele": scan_hillis_steele}


# ----------------------------------------------------------------------------- dense transitions (LSSL)
def scan_dense(A, b, h0=None):
    """h_t = A_t h_{t−1} + b_t with matrix transitions; combine is (A_j A_i, A_j b_i + b_j).

    A: (N, N) or (b, L, N, N); b: (b, L, N); h0: (b, N) or None. Returns h (b, L, N). Any trailing
    axes S... between L and N scan independently: b (b, L, S..., N) with A (S..., N, N) or
    (b, L, S..., N, N) (LSSL scans all its features at once this way).
    """
    A, b = _as_numeric(A, "A"), _as_numeric(b, "b")
    if b.ndim < 3 or b.shape[1] == 0:
        raise ValueError(f"b must have shape (b, L, N) with L >= 1; got {b.shape}")
    constant, per_step = b.shape[2:] + b.shape[-1:], b.shape + b.shape[-1:]            # (S..., N, N), (b, L, S..., N, N)
    if A.shape not in (constant, per_step):
        raise ValueError(f"A must have shape {constant} or {per_step}; got {A.shape}")
    A = np.broadcast_to(A, per_step)                                                   # (b, L, S..., N, N)
    h = np.empty(b.shape, np.result_type(A, b, np.float64))                            # (b, L, S..., N)
    state = np.zeros_like(h[:, 0]) if h0 is None else np.asarray(h0)                   # (b, S..., N)
    for t in range(b.shape[1]):
        state = np.einsum("...nm,...m->...n", A[:, t], state) + b[:, t]
        h[:, t] = state
    return h


# ----------------------------------------------------------------------------- the adjoint
def _next_transitions(a):
    """conj(a_{t+1}) for t = 0..L−1 (the last one is unused: λ_{L−1} = G_{L−1})."""
    return np.conj(a if a.shape[1] == 1 else np.concatenate([a[:, 1:], np.ones_like(a[:, :1])], axis=1))


def scan_reverse(a, g, *, axis=1):
    """The adjoint scan run backwards: λ_{L−1} = g_{L−1}, λ_t = g_t + conj(a_{t+1}) λ_{t+1}.

    a: broadcastable to g (b, L, S...); g: (b, L, S...). Returns λ with g's shape.
    """
    a, g, _, axis = _prepare(a, g, None, axis)
    a_next = _next_transitions(a)                                                   # (b|1, L|1, S...)
    lam = scan_sequential(a_next[:, ::-1], g[:, ::-1])[:, ::-1]                        # (b, L, S...)
    return np.moveaxis(lam, 1, axis)


def _unbroadcast(grad, shape):
    """Sum `grad` over the axes along which an array of `shape` was broadcast."""
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1), keepdims=True).reshape(shape)


def scan_vjp(a, b, h0, h, grad_h):
    """Vector-Jacobian product of `scan` (time axis 1), written by hand (no autograd).

    a, b, h0: the scan's inputs (h0 may be None); h: its output; grad_h: ∂loss/∂h (b, L, S...).
    Returns (grad_a with a's shape, grad_b with b's shape, grad_h0 with h0's shape or None).
    A real input receives the real part of its complex gradient (torch's convention).
    """
    a_in, b_in, h = np.asarray(a), np.asarray(b), np.asarray(h)
    lam = scan_reverse(a_in, grad_h)                                                   # (b, L, S...)
    first = np.zeros_like(h[:, :1]) if h0 is None else np.asarray(h0)[:, None]
    h_prev = np.concatenate([first, h[:, :-1]], axis=1)                                # (b, L, S...)
    grad_a = _unbroadcast(lam * np.conj(h_prev), a_in.shape)
    return _vjp_results(a_in, b_in, h0, grad_a, lam)


def _vjp_results(a, b, h0, grad_a, lam):
    """(∂a, ∂b = λ, ∂h0 = conj(a_0) λ_0), each projected to its real part where the input is real
    (torch's convention). a, b: the scan's inputs; grad_a already has a's shape."""
    a_0 = np.broadcast_to(a.reshape((1,) * (b.ndim - a.ndim) + a.shape), b.shape)[:, 0]  # (b, S...)
    grad_h0 = None if h0 is None else np.conj(a_0) * lam[:, 0]
    real = lambda g, x: g if g is None or np.iscomplexobj(x) else g.real                # noqa: E731
    return real(grad_a, a), real(lam, b), real(grad_h0, h0)

