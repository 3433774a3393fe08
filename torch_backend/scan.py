"""Linear scans h_t = a_t ⊙ h_{t−1} + b_t in PyTorch, with a hand-written adjoint — SPEC §3.

Mirrors reference/scan.py name by name (STYLE 6). `scan_sequential` is the definition (autograd
records its L steps); every other method computes the same numbers and differentiates through the
reverse scan of SPEC §3, so a backward pass costs about one more scan instead of an L-step graph:

    elements  e_t = (a_t, b_t) meaning h ↦ a_t h + b_t
    combine   e_i • e_j = (a_j a_i, a_j b_i + b_j)      (i earlier than j; associative, not commutative)
    adjoint   λ_{L−1} = G_{L−1},  λ_t = G_t + conj(a_{t+1}) λ_{t+1}
              ∂b_t = λ_t,  ∂a_t = λ_t conj(h_{t−1}),  ∂h0 = conj(a_0) λ_0   (torch's complex convention)

Methods (`scan(..., method=)`):
* "auto" (default): "numba" on CPU, "chunked" elsewhere (CUDA).
* "numba": the tuned `reference.kernels.scan.scan_numba` (in the tensors' own precision, writing into the output tensor's
  memory through zero-copy NumPy views) wrapped as the custom op `lrnn_spec::scan_numba`, with a fake
  impl so torch.compile traces it and an autograd formula that runs the same kernel backwards.
* "chunked": reduce-then-scan over chunks of about √L steps, all chunks advanced by each torch op (see
  `scan_reduce_then_scan`); about 3·√L small ops, two reads of b, one write of h, no transposes.
  Note: the reference's "chunked" (`scan_chunked`: local scans plus a carry, one pass that keeps every
  local product) computes the same numbers by another chunked algorithm; this one reads b twice instead
  of storing L products, which is what makes it the fast pure-torch path.
* "blelloch", "hillis_steele": the associative scans of the reference over `combine`.
* "compiled": torch._higher_order_ops.associative_scan (a torch prototype; explicit only, never auto).
Measured (CPU time, 1 thread, (b, L, N) = (8, 4096, 64) complex64, best of 7, on the shared project
machine): reference Numba kernel 3.3 ms; numba 3.3 ms forward, 16.9 ms forward+backward; chunked
11.5 / 35.6 ms (chunk 32 or 128: 13.6–15.1 ms forward); blelloch 52 / 113 ms; hillis_steele 219 /
454 ms; sequential 35 ms / 7.8 s (autograd over 4096 steps). So chunked is the pure-torch default.
None divides by a cumulative product and none works in log space.

Layout: b (b, L, S...) with time on `axis` (default 1), a broadcastable to b, h0 (b, S...) or None.
Results have the promoted dtype of the inputs (float32/complex64 unless given 64-bit inputs).
Upstream: mamba.py `pscan` (Blelloch on time-major data); S5 `apply_ssm` (associative scan).
Glossary (SPEC §1): b batch, L length, N state channels, S... any trailing state axes, Q their product.
"""
import math
from typing import Optional

import torch

from reference.kernels.scan import scan_numba as reference_scan_numba, scan_vjp_numba as reference_scan_vjp_numba

SCAN_METHODS = ("sequential", "numba", "blelloch", "hillis_steele", "chunked", "auto", "compiled")
_NUMBA_DTYPES = (torch.float32, torch.float64, torch.complex64, torch.complex128)


def combine(earlier, later):
    """The associative operator on pairs (a, b): apply `earlier` first, then `later`."""
    a_i, b_i = earlier
    a_j, b_j = later
    return a_j * a_i, a_j * b_i + b_j


# ----------------------------------------------------------------------------- validation
def _check_tensor(x, name):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor; got {type(x).__name__} (use torch.as_tensor)")
    if x.dtype == torch.bool:
        raise TypeError(f"{name} must be a real or complex numeric tensor; got dtype {x.dtype}")
    return x


def _prepare(a, b, h0, axis):
    """Validate, promote to one dtype and move time to axis 1. Returns (a, b, h0, axis), a of b's ndim."""
    a, b = _check_tensor(a, "a"), _check_tensor(b, "b")
    if b.ndim < 2:
        raise ValueError(f"b must have a batch and a time axis, e.g. (b, L, N); got shape {tuple(b.shape)}")
    if not -b.ndim <= axis < b.ndim or axis % b.ndim == 0:
        raise ValueError(f"axis must name a time axis other than the batch axis 0 of b with shape "
                         f"{tuple(b.shape)}; got {axis}")
    axis = axis % b.ndim
    if b.shape[axis] == 0:
        raise ValueError(f"the scan needs L >= 1 time steps; got L = 0 (b shape {tuple(b.shape)})")
    others = {"a": a} if h0 is None else {"a": a, "h0": _check_tensor(h0, "h0")}
    dtype = b.dtype
    for name, x in others.items():
        if x.device != b.device:
            raise ValueError(f"{name} is on device {x.device} but b is on {b.device}; move them to one device")
        dtype = torch.promote_types(dtype, x.dtype)
    if not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.get_default_dtype()
    if a.ndim > b.ndim:
        raise ValueError(f"a with shape {tuple(a.shape)} has more axes than b with shape {tuple(b.shape)}")
    a = a.reshape((1,) * (b.ndim - a.ndim) + a.shape)                   # right-aligned, as torch broadcasts
    try:
        broadcast = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError:
        raise ValueError(f"a with shape {tuple(a.shape)} does not broadcast to b with shape {tuple(b.shape)}") from None
    if broadcast != b.shape:
        raise ValueError(f"a with shape {tuple(a.shape)} must broadcast to b's shape {tuple(b.shape)} without enlarging it")
    a, b = a.to(dtype).movedim(axis, 1), b.to(dtype).movedim(axis, 1)
    if h0 is not None:
        expected = b.shape[:1] + b.shape[2:]
        if h0.shape != expected:
            raise ValueError(f"h0 must have shape {tuple(expected)} (b without its time axis); got {tuple(h0.shape)}")
        h0 = h0.to(dtype)
    return a, b, h0, axis


def _resolve(method, b):
    """Turn "auto" into a concrete method for b's device and dtype; refuse impossible requests."""
    numba_ok = b.device.type == "cpu" and b.dtype in _NUMBA_DTYPES
    if method == "auto":
        return "numba" if numba_ok else "chunked"
    if method == "numba" and not numba_ok:
        raise ValueError(f"method='numba' runs on CPU tensors of dtype float32/64 or complex64/128; got "
                         f"{b.dtype} on {b.device} (use method='auto' or 'chunked')")
    if method == "compiled" and _associative_scan is None:
        raise ValueError(f"method='compiled' needs torch._higher_order_ops.associative_scan, which torch "
                         f"{torch.__version__} does not provide; use method='auto'")
    return method


def scan(a, b, h0=None, *, method="auto", axis=1, chunk=None):
    """All states of h_t = a_t ⊙ h_{t−1} + b_t, h_{−1} = h0 (0 when None), differentiable.

    a: broadcastable to b (e.g. (N,) time-invariant or (b, L, N)); b: (b, L, S...) real or complex;
    h0: (b, S...) or None; method: one of SCAN_METHODS; axis: the time axis of b;
    chunk: steps per chunk, for method="chunked" only (None: about √L).
    Returns h with b's shape and the promoted dtype, on b's device.
    Note: the reference defaults to "sequential" (the definition); the torch default is the fastest path.
    """
    if method not in SCAN_METHODS:
        raise ValueError(f"scan method must be one of {', '.join(SCAN_METHODS)}; got {method!r}")
    if chunk is not None and method != "chunked":
        raise ValueError(f"chunk is used by method='chunked' only; got chunk={chunk!r} with method={method!r}")
    if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
        raise ValueError(f"chunk must be an integer >= 1 or None; got {chunk!r}")
    a, b, h0, axis = _prepare(a, b, h0, axis)
    method = _resolve(method, b)
    if method == "sequential":
        h = scan_sequential(a, b, h0)
    elif method == "numba":
        h = scan_numba(a, b, h0)
    else:
        h = _ParallelScan.apply(a, b, h0, method, chunk)
    return h.movedim(1, axis)


# ----------------------------------------------------------------------------- the definition
def scan_sequential(a, b, h0=None):
    """The definition: a loop over t (autograd records every step). a (b|1, L|1, S...), b (b, L, S...).
    Note: the time steps are taken with one `unbind` each: indexing a[:, t] inside the loop would make
    the backward write L full-size gradients (quadratic in L); unbind's backward stacks them once."""
    a_steps, b_steps = a.unbind(1), b.unbind(1)                                     # L × (b|1, S...), L × (b, S...)
    state = torch.zeros_like(b_steps[0]) if h0 is None else h0                      # (b, S...)
    states = []
    for t, b_t in enumerate(b_steps):
        state = a_steps[min(t, len(a_steps) - 1)] * state + b_t
        states.append(state)
    return torch.stack(states, dim=1)                                               # (b, L, S...)


# ----------------------------------------------------------------------------- parallel forms
# Forward kernels on prepared inputs (one dtype, time on axis 1). `scan` runs them without autograd
# inside `_ParallelScan`, whose backward is the reverse scan; they update buffers in place.
def _default_chunk(L):
    """About √L steps per chunk: the loop inside chunks and the carry loop then take about √L steps each."""
    return max(1, math.isqrt(L))


def _addcmul_into(out, x, y, z):
    """out ← x + y·z, returned. Note: without autograd, eager writes straight into the strided view
    `out` (one pass less); torch.compile and autograd refuse such an out=, so there it is an assignment."""
    if torch.compiler.is_compiling() or torch.is_grad_enabled():
        out[...] = torch.addcmul(x, y, z)
        return out
    return torch.addcmul(x, y, z, out=out)


def scan_reduce_then_scan(a, b, h0=None, chunk=None):
    """Reduce-then-scan over n_chunks chunks of `size` steps, every chunk advanced at once by each torch op:
    1. each chunk's end value ℓ from a zero start and its total decay P = Π a_t   (one read of b);
    2. the carry between chunks, start_k = P_{k−1}·start_{k−1} + ℓ_{k−1}           (n_chunks small steps);
    3. each chunk's recurrence again from its true start, writing h              (a second read of b).
    The last L − n_chunks·size steps (fewer than size) continue from the carry. Nothing is divided.
    Time-last memory is copied to time-major first: each op then reads contiguous rows (measured 5–10×
    faster in total)."""
    if b.shape[1] > 1 and b.stride(1) == 1:                                         # (b, L, S...) view of time-last data
        a, b = a.contiguous(), b.contiguous()
    batch, L, S = b.shape[0], b.shape[1], b.shape[2:]
    size = min(L, chunk or _default_chunk(L))
    n_chunks, T = L // size, (L // size) * size                                     # full chunks, steps in them
    chunks = lambda x: x[:, :T].reshape(x.shape[0], n_chunks, size, *x.shape[2:])  # noqa: E731  (b, chunks, size, S...)
    a_chunks = chunks(a) if a.shape[1] > 1 else a[:, :, None]                      # (b|1, chunks|1, size|1, S...) view
    b_chunks = chunks(b)                                                            # (b, chunks, size, S...) view
    a_at = lambda c: a_chunks[:, :, min(c, a_chunks.shape[2] - 1)]                 # noqa: E731  (b|1, chunks|1, S...)
    end = torch.zeros_like(b_chunks[:, :, 0])                                       # ℓ (b, chunks, S...)
    decay = torch.ones_like(a_at(0))                                                # P (b|1, chunks|1, S...)
    for c in range(size):                                                           # 1. chunk ends
        end = torch.addcmul(b_chunks[:, :, c], a_at(c), end)
        decay = decay * a_at(c)
    carry = torch.zeros_like(b[:, 0]) if h0 is None else h0                         # (b, S...)
    starts = []
    for k in range(n_chunks):                                                       # 2. carry between chunks
        starts.append(carry)
        carry = torch.addcmul(end[:, k], decay[:, min(k, decay.shape[1] - 1)], carry)
    state = torch.stack(starts, dim=1)                                              # (b, chunks, S...)
    h = torch.empty_like(b)                                                         # (b, L, S...)
    h_chunks = chunks(h)                                                            # (b, chunks, size, S...) view
    for c in range(size):                                                           # 3. chunks from their starts
        state = _addcmul_into(h_chunks[:, :, c], b_chunks[:, :, c], a_at(c), state)
    for t in range(T, L):                                                           # the tail, if any
        carry = torch.addcmul(b[:, t], a[:, min(t, a.shape[1] - 1)], carry)
        h[:, t] = carry
    return h


def _elements(a, b, h0):
    """Materialised pairs (a_t, b_t) with h0 folded into the first element: b_0 ← b_0 + a_0 h0."""
    a = a.expand_as(b).clone()                                                      # (b, L, S...)
    b = b.clone()                                                                   # (b, L, S...)
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
    a, b = _elements(a, b, h0)                                                      # (b, L, S...)
    L = b.shape[1]
    n = 1 << (L - 1).bit_length()                                                  # next power of two
    A = torch.ones((b.shape[0], n) + b.shape[2:], dtype=b.dtype, device=b.device)  # (b, n, S...)
    Bv = torch.zeros_like(A)                                                        # (b, n, S...)
    A[:, :L], Bv[:, :L] = a, b
    span = 1
    while span < n:                                                                 # up-sweep
        right, left = slice(2 * span - 1, n, 2 * span), slice(span - 1, n, 2 * span)
        A[:, right], Bv[:, right] = combine((A[:, left], Bv[:, left]), (A[:, right], Bv[:, right]))
        span *= 2
    A[:, n - 1], Bv[:, n - 1] = 1, 0                                                # identity at the root
    while span > 1:                                                                 # down-sweep
        span //= 2
        right, left = slice(2 * span - 1, n, 2 * span), slice(span - 1, n, 2 * span)
        left_sum = A[:, left].clone(), Bv[:, left].clone()
        A[:, left], Bv[:, left] = A[:, right], Bv[:, right]
        A[:, right], Bv[:, right] = combine((A[:, right], Bv[:, right]), left_sum)
    # Bv now holds the exclusive prefixes; one more combine with each element makes them inclusive.
    return a * Bv[:, :L] + b


try:  # a prototype in torch: present in recent versions only, and only ever chosen explicitly
    from torch._higher_order_ops.associative_scan import associative_scan as _associative_scan
except ImportError:  # pragma: no cover - depends on the torch version
    _associative_scan = None


def scan_compiled(a, b, h0=None):
    """torch's associative_scan higher-order op over `combine` (generated kernels under torch.compile)."""
    a, b = _elements(a, b, h0)
    mode = "pointwise" if b.is_cuda else "generic"                                  # pointwise needs CUDA
    return _associative_scan(combine, (a, b), dim=1, combine_mode=mode)[1]


_KERNELS = {"chunked": scan_reduce_then_scan, "blelloch": scan_blelloch,
            "hillis_steele": scan_hillis_steele, "compiled": scan_compiled}


# ----------------------------------------------------------------------------- the adjoint (SPEC §3)
def _flip(x):
    """Reverse the time axis 1 (a no-op for a time-invariant a of length 1)."""
    return x.flip(1) if x.shape[1] > 1 else x


def _next_transitions(a):
    """conj(a_{t+1}) for t = 0..L−1 (the last one is unused: λ_{L−1} = G_{L−1}); (b|1, L|1, S...)."""
    if a.shape[1] == 1:
        return a.conj()
    return torch.cat([a[:, 1:].conj(), torch.ones_like(a[:, :1])], dim=1)          # cat writes the conjugates


def _unbroadcast(grad, shape):
    """Sum `grad` over the axes along which a tensor of `shape` (same ndim) was broadcast."""
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axes, keepdim=True) if axes else grad


def _adjoint(a, h0, h, grad_h, reverse_scan, needs=(True, True, True)):
    """Gradients of h = scan(a, b, h0) given ∂loss/∂h, by one reverse scan (time axis 1).

    reverse_scan(a_next, g) must return λ with λ_t = g_t + a_next_t λ_{t+1}, λ_{L−1} = g_{L−1}.
    Returns (grad_a with a's shape, grad_b, grad_h0 with h0's shape); entries not in `needs` are None.
    """
    lam = reverse_scan(_next_transitions(a), grad_h)                                # (b, L, S...)
    grad_a = grad_h0 = None
    if needs[0]:                                                                    # ∂a_t = λ_t conj(h_{t−1})
        later = lam[:, 1:] * h[:, :-1].conj()                                       # (b, L−1, S...) t >= 1
        first = None if h0 is None else lam[:, :1] * h0[:, None].conj()             # (b, 1, S...)  t = 0
        if a.shape[1] == 1:                                                         # constant in time: sum now
            grad_a = _unbroadcast(later, a.shape) + (0 if first is None else _unbroadcast(first, a.shape))
        else:
            first = torch.zeros_like(lam[:, :1]) if first is None else first
            grad_a = _unbroadcast(torch.cat([first, later], dim=1), a.shape)
    if needs[2] and h0 is not None:                                                 # ∂h0 = conj(a_0) λ_0
        grad_h0 = _unbroadcast(a[:, 0].conj() * lam[:, 0], h0.shape)
    return grad_a, (lam if needs[1] else None), grad_h0


class _ParallelScan(torch.autograd.Function):
    """A pure-torch parallel scan whose backward is the reverse scan by the same method (differentiable
    again, so double backward works). Inputs already prepared: one dtype, time on axis 1."""

    @staticmethod
    def forward(a, b, h0, method, chunk):
        if method == "chunked":
            return scan_reduce_then_scan(a, b, h0, chunk)
        return _KERNELS[method](a, b, h0)

    @staticmethod
    def setup_context(ctx, inputs, output):
        a, _, h0, ctx.method, ctx.chunk = inputs
        ctx.save_for_backward(a, h0, output)

    @staticmethod
    def backward(ctx, grad_h):
        a, h0, h = ctx.saved_tensors

        def reverse_scan(a_next, g):
            return _flip(_ParallelScan.apply(_flip(a_next), _flip(g), None, ctx.method, ctx.chunk))

        grads = _adjoint(a, h0, h, grad_h, reverse_scan, ctx.needs_input_grad[:3])
        return grads + (None, None)


# ----------------------------------------------------------------------------- the Numba kernel as a custom op
def _numpy_view(x):
    """A NumPy array sharing x's memory and strides (copies only a lazily conjugated tensor)."""
    return None if x is None else x.detach().resolve_conj().numpy()


@torch.library.custom_op("lrnn_spec::scan_numba", mutates_args=(), device_types="cpu")
def _scan_numba_op(a: torch.Tensor, b: torch.Tensor, h0: Optional[torch.Tensor], reverse: bool) -> torch.Tensor:
    """`reference.kernels.scan.scan_numba` in the tensors' own precision, writing into a tensor laid out like b.
    a (b|1, L|1, S...), b (b, L, S...), h0 (b, S...) or None; reverse=True runs h_t = a_t h_{t+1} + b_t
    from t = L−1 with h_L = h0 (the adjoint's direction)."""
    h = torch.empty_like(b)                                                         # (b, L, S...) b's strides
    reference_scan_numba(_numpy_view(a), _numpy_view(b), _numpy_view(h0), out=h.numpy(),
                         keep_dtype=True, reverse=reverse)
    return h


@_scan_numba_op.register_fake
def _scan_numba_fake(a, b, h0, reverse):
    return torch.empty_like(b)


@torch.library.custom_op("lrnn_spec::scan_numba_vjp", mutates_args=(), device_types="cpu")
def _scan_numba_vjp_op(a: torch.Tensor, h0: Optional[torch.Tensor], h: torch.Tensor,
                       grad_h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`reference.kernels.scan.scan_vjp_numba`: (∂a with a's shape, λ = ∂b) in one backward pass, same precision."""
    grad_a, lam, _ = reference_scan_vjp_numba(_numpy_view(a), _numpy_view(h), _numpy_view(h0), _numpy_view(h),
                                              _numpy_view(grad_h), keep_dtype=True)
    return torch.from_numpy(grad_a), torch.from_numpy(lam)


@_scan_numba_vjp_op.register_fake
def _scan_numba_vjp_fake(a, h0, h, grad_h):
    return torch.empty_like(a), torch.empty_like(h)


def _scan_numba_setup(ctx, inputs, output):
    a, _, h0, ctx.reverse = inputs
    ctx.save_for_backward(a, h0, output)


def _scan_numba_backward(ctx, grad_h):
    a, h0, h = ctx.saved_tensors

    def reverse_scan(a_next, g):
        return _scan_numba_op(a_next, g, None, True)

    needs = ctx.needs_input_grad[:3]
    if not ctx.reverse and not torch.is_grad_enabled():                             # first-order: one fused pass
        grad_a, lam = _scan_numba_vjp_op(a, h0, h, grad_h)
        grad_h0 = None if h0 is None or not needs[2] else _unbroadcast(a[:, 0].conj() * lam[:, 0], h0.shape)
        return grad_a, lam, grad_h0, None
    if not ctx.reverse:                                                             # create_graph: differentiable
        return _adjoint(a, h0, h, grad_h, reverse_scan, needs) + (None,)
    # Note: the reversed scan (met only in double backward) is the forward one on flipped time.
    grad_a, grad_b, grad_h0 = _adjoint(_flip(a), h0, h.flip(1), grad_h.flip(1), reverse_scan, needs)
    return (None if grad_a is None else _flip(grad_a)), (None if grad_b is None else grad_b.flip(1)), grad_h0, None


_scan_numba_op.register_autograd(_scan_numba_backward, setup_context=_scan_numba_setup)


def scan_numba(a, b, h0=None):
    """Same semantics as `scan_sequential`, by the tuned Numba kernels of `reference.kernels` on CPU (differentiable).
    a (b|1, L|1, S...), b (b, L, S...), h0 (b, S...) or None, one dtype. Time-last memory (a view of
    (b, S..., L) data) runs the reference's time-last kernel without a copy."""
    return _scan_numba_op(a, b, h0, False)


# ----------------------------------------------------------------------------- public adjoint helpers
def scan_reverse(a, g, *, axis=1, method="auto", chunk=None):
    """The adjoint scan run backwards: λ_{L−1} = g_{L−1}, λ_t = g_t + conj(a_{t+1}) λ_{t+1}.

    a: broadcastable to g (b, L, S...); g: (b, L, S...). Returns λ with g's shape.
    """
    a, g, _, axis = _prepare(a, g, None, axis)
    lam = _flip(scan(_flip(_next_transitions(a)), _flip(g), method=method, chunk=chunk))  # (b, L, S...)
    return lam.movedim(1, axis)


def scan_vjp(a, b, h0, h, grad_h, *, method="auto"):
    """Vector-Jacobian product of `scan` (time axis 1), written by hand — what the autograd Function
    and the custom op run in their backward. Same arguments and results as reference `scan_vjp`."""
    a_in, b_in = a, b
    a, b, h0_p, _ = _prepare(a, b, h0, 1)
    reverse_scan = lambda a_next, g: _flip(scan(_flip(a_next), _flip(g), method=method))  # noqa: E731
    grad_a, grad_b, grad_h0 = _adjoint(a, h0_p, h.to(b.dtype), grad_h.to(b.dtype), reverse_scan)
    grad_a = grad_a.reshape(a_in.shape)                                             # drop the aligning 1s
    real = lambda g, x: g if g is None or x.is_complex() else g.real               # noqa: E731
    return real(grad_a, a_in), real(grad_b, b_in), real(grad_h0, h0)


# ----------------------------------------------------------------------------- dense transitions (LSSL)
def scan_dense(A, b, h0=None):
    """h_t = A_t h_{t−1} + b_t with matrix transitions; combine is (A_j A_i, A_j b_i + b_j).

    A: (N, N) or (b, L, N, N); b: (b, L, N); h0: (b, N) or None. Returns h (b, L, N). Any trailing
    axes S... between L and N scan independently (one matmul a step for all of them): b (b, L, S..., N)
    with A (S..., N, N) or (b, L, S..., N, N). Autograd records the loop; the time steps are taken
    with `unbind` so that its backward stays linear in L.
    """
    A, b = _check_tensor(A, "A"), _check_tensor(b, "b")
    dtype = torch.promote_types(A.dtype, b.dtype)
    A, b = A.to(dtype), b.to(dtype)
    if b.ndim < 3 or b.shape[1] == 0:
        raise ValueError(f"b must have shape (b, L, N) with L >= 1; got {tuple(b.shape)}")
    N = b.shape[-1]
    constant, per_step = tuple(b.shape[2:]) + (N,), tuple(b.shape) + (N,)
    if tuple(A.shape) not in (constant, per_step):
        raise ValueError(f"A must have shape {constant} or {per_step}; got {tuple(A.shape)}")
    if torch.compiler.is_compiling():
        # Note: traced code takes the log-depth associative form (⌈log2 L⌉ batched matmuls) rather than the
        # loop, which torch.compile unrolls L times (182 s to compile LSSL at L = 32, growing with L).
        return _scan_dense_associative(A.expand(per_step), b, None if h0 is None else h0.to(dtype))
    b_steps = b.unbind(1)                                                           # L × (b, S..., N)
    state = torch.zeros_like(b_steps[0]) if h0 is None else h0.to(dtype)           # (b, S..., N)
    states = []
    if tuple(A.shape) == per_step:
        for A_t, b_t in zip(A.unbind(1), b_steps):                                  # A_t (b, S..., N, N)
            state = (A_t @ state[..., None])[..., 0] + b_t
            states.append(state)
    else:                                                                           # the batch as matmul columns
        for b_t in b_steps:
            state = (A @ state.movedim(0, -1)).movedim(-1, 0) + b_t                 # (S..., N, b) -> (b, S..., N)
            states.append(state)
    return torch.stack(states, dim=1)                                               # (b, L, S..., N)


def _scan_dense_associative(A, b, h0):
    """`scan_dense` as a Hillis–Steele scan over the pairs (A_t, b_t) with combine (A_j A_i, A_j b_i + b_j):
    round d combines every element with the one 2^d earlier. A (b, L, S..., N, N), b (b, L, S..., N)."""
    if h0 is not None:                                               # fold h0 into the first element
        b = torch.cat([b[:, :1] + (A[:, :1] @ h0[:, None, ..., None])[..., 0], b[:, 1:]], dim=1)
    offset, L = 1, b.shape[1]
    while offset < L:
        A_later, A_earlier = A[:, offset:], A[:, :-offset]                         # (b, L − d, S..., N, N)
        b = torch.cat([b[:, :offset], (A_later @ b[:, :-offset, ..., None])[..., 0] + b[:, offset:]], dim=1)
        A = torch.cat([A[:, :offset], A_later @ A_earlier], dim=1)
        offset *= 2
    return b                                                                        # (b, L, S..., N)
