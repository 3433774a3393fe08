"""The discretisation of one event per row, for a streaming `step` — torch only (the reference's step calls
`discretize` with L = 1; this module exists for the memory of a step, `benchmarks/streaming.py`).

    discretize_event(Lambda, dt, method, tau, gamma_bar=None, *, out=None, scratch=None) -> (Ā_t, γ̄_t)
        `discretize(Lambda, dt, method, tau[:, None])[:, 0]` with few temporaries, or (out=) none at all
    matrix_exp_into(A, scale, workspace, out, norm_A=None) -> expm(scale·A) in given buffers (LSSL's dense
        transition per event: torch.linalg.matrix_exp has no out=)

Both equal their allocating forms to rounding (torch_tests/test_streaming.py). Glossary (SPEC §1): b batch, S...
a layer's state axes, N state size; λ `Lambda`, Δ `dt`, τ `tau`.
"""
import torch

from .discretize import _as_tensor, all_finite, discretize

__all__ = ["discretize_event", "matrix_exp_into"]


def discretize_event(Lambda, dt, method, tau, gamma_bar=None, *, out=None, scratch=None):
    """(Ā_t, γ̄_t) of one event per row — `discretize(Lambda, dt, method, tau[:, None])[:, 0]` in the form a
    streaming `step` needs: the formulas of SPEC §2, evaluated with few temporaries.

    Lambda: (S...) complex or real; dt: Δ > 0 broadcastable to Lambda, parameter-derived (S...) or a selective
    Δ_t (b, S...); tau: (b,) >= 0, already checked (no value checks here), or None (Δ_A = Δ);
    gamma_bar: the γ̄ of `async` and `dirac` (`discretize(Lambda, dt, method)[1]`, τ-independent), returned
    as it is for those methods (None: formed here).
    Returns Ā_t (b, S...) and γ̄_t (b, S...) (complex when Lambda is), or γ̄ as given for async and dirac.
    Note: torch only, for the memory of a step (benchmarks/streaming.py): the per-event arrays are formed in
    place from z = λΔ_A (x = Re z, y = Im z), Ā_t = e^z gives φ1's imaginary numerator e^x sin y, and φ1's
    series is 1 + z/2 (z²/6 is below rounding where |z| < sqrt(ε)). Equal to `discretize` to
    rounding, not bit for bit. `none`, autograd recording (the in-place products would overwrite values its
    backward needs) and a λΔ_A that overflows (a huge gap: `discretize` then gives Ā = 0) are handed to
    `discretize`.

    out: None, or a pair of tensors (b, S...) of Ā_t's dtype (a layer's `_workspace`, for `step(...,
    inplace=True)`): Ā_t is written into out[0] and γ̄_t into out[1] — for async and dirac the γ̄ given
    (τ-independent; out[1] may then be None) or, when none is given, γ̄ formed there (dirac 1, async
    Δ φ1(λΔ), the zoh formulas without τ: a selective Δ_t); those same tensors are returned, and nothing (b, S...)-sized is allocated on the way: the real temporaries go into the real and
    imaginary parts of out[1] and, for zoh and bilinear, into `scratch`, a real tensor (b, S...) of λ's real
    dtype. For zoh a boolean mask of the entries with |λΔ_A| < sqrt(ε) is formed (1 byte per entry), and
    the series is written at those entries only. `none` and a λΔ_A that overflows take `discretize` and are
    copied in. Autograd must be off.
    """
    dt = _as_tensor(dt, "dt", Lambda)                                                # a number: Lambda's precision
    if out is not None:
        return _event_into(Lambda, dt, method, tau, gamma_bar, out, scratch)
    if method in ("async", "dirac") and gamma_bar is None:
        gamma_bar = discretize(Lambda, dt, method, check_values=False)[1]           # (S...)
    recording = torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad
                                                 for t in (Lambda, dt, tau))
    if method == "none" or recording:
        return _event_by_discretize(Lambda, dt, method, tau, gamma_bar)
    dt_A = dt if tau is None else tau.reshape(tau.shape + (1,) * Lambda.ndim) * dt  # (b, S...) Δ_A = τΔ, real
    at_zero = dt_A == 0                                                              # τ = 0: λΔ_A is exactly 0
    if method == "bilinear":
        # Δ_A > 1: numerator and denominator divided by Δ_A (as in `discretize`): Ā = (w + λv/2)/(w − λv/2),
        # γ̄ = v/(w − λv/2) with (w, v) = (1, Δ_A) for Δ_A <= 1 and (1/Δ_A, 1) above.
        large = dt_A > 1
        v = torch.where(large, 1.0, dt_A)                                            # (b, S...)
        w = torch.reciprocal(dt_A).masked_fill_(~large, 1.0)                          # (b, S...)
        half = torch.mul(Lambda, v.mul_(0.5)).masked_fill_(at_zero, 0)               # (b, S...) λv/2, complex
        denominator = torch.neg(half).add_(w)                                        # (b, S...) w − λv/2
        return half.add_(w).div_(denominator), denominator.reciprocal_().mul_(v.mul_(2.0))
    z = torch.mul(Lambda, dt_A).masked_fill_(at_zero, 0)                             # (b, S...) λΔ_A
    if not all_finite(z):                                                           # λΔ_A overflowed (a huge gap):
        return _event_by_discretize(Lambda, dt, method, tau, gamma_bar)              # Ā = 0 as in `discretize`
    Lambda_bar = torch.exp(z)                                                        # (b, S...)
    if method in ("async", "dirac"):
        return Lambda_bar, gamma_bar
    if method == "exp_euler":
        return Lambda_bar, dt_A.to(Lambda_bar.dtype)                                 # (b, S...) γ̄ = Δ_A
    small = torch.abs(z) < torch.finfo(dt_A.dtype).eps ** 0.5                        # (b, S...)
    if not z.is_complex():                                                           # zoh, real λ: φ1 = expm1(z)/z
        phi = torch.expm1(z).div_(z)                                                 # (b, S...)
        torch.where(small, z.mul_(0.5).add_(1), phi, out=phi)                        # the series where |z| is tiny
        return Lambda_bar, phi.mul_(dt_A)                                            # (b, S...) γ̄ = Δ_A φ1(z)
    x, y = z.real, z.imag                                                            # views
    # zoh: γ̄ = Δ_A·φ1(z), φ1(z) = [expm1(x) cos y − 2 sin²(y/2) + i e^x sin y]/z, 1 + z/2 where |z| is tiny
    numerator_re = torch.expm1(x).mul_(torch.cos(y)).sub_(torch.div(y, 2).sin_().square_().mul_(2.0))
    phi = torch.complex(numerator_re, Lambda_bar.imag).div_(z)                       # (b, S...) φ1(z)
    torch.where(small, z.mul_(0.5).add_(1), phi, out=phi)                            # the series where |z| is tiny
    return Lambda_bar, phi.mul_(dt_A)                                                # (b, S...) γ̄ = Δ_A φ1(z)


def _event_into(Lambda, dt, method, tau, gamma_bar, out, scratch):
    """`discretize_event` written into out = (Ā_t, γ̄_t) (b, S...): the same formulas, each temporary in a
    part of the two outputs (or `scratch`), so that an in-place step allocates nothing state-sized.
    Δ_A = τΔ enters as (λΔ)·τ (equal to λ(τΔ) to rounding)."""
    if torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in (Lambda, dt, tau)):
        raise ValueError("discretize_event(out=...) writes in place, which autograd cannot follow: call it under "
                         "torch.no_grad(), or leave out= out to get new tensors")
    if (method in ("zoh", "bilinear") or method == "async" and gamma_bar is None) and scratch is None:
        raise ValueError(f"discretize_event(out=...) with method={method!r} needs scratch=, a real tensor shaped "
                         "like out[0] (its temporaries go there)")
    A, g = out                                                                       # (b, S...) each
    if method == "dirac" and gamma_bar is None:                                      # γ̄ = 1
        gamma_bar = g.fill_(1)
    elif method == "async" and gamma_bar is None:                                    # γ̄ = Δ φ1(λΔ): zoh's, τ = 1
        gamma_bar = _event_into(Lambda, dt, "zoh", None, None, out, scratch)[1]
    g_re, g_im = (g.real, g.imag) if g is not None and g.is_complex() else (g, None)  # views
    tau_r = None if tau is None else tau.reshape(tau.shape + (1,) * Lambda.ndim)    # (b, 1...)
    at_zero = None if tau_r is None else tau_r == 0                                  # (b, 1...) τ = 0: λΔ_A is 0
    if method == "none":                                                             # handed to `discretize`
        Lambda_bar, gamma_t = _event_by_discretize(Lambda, dt, method, tau, gamma_bar)
        return A.copy_(Lambda_bar), g.copy_(gamma_t)
    if method == "bilinear":                                                         # the formulas of discretize_event
        dt_A = scratch.copy_(dt)                                                     # (b, S...) Δ_A = τΔ
        if tau_r is not None:
            dt_A.mul_(tau_r)
        torch.clamp(dt_A, min=1.0, out=g_re).reciprocal_()                           # w = 1/max(Δ_A, 1)
        v = dt_A.clamp_(max=1.0)                                                     # v = min(Δ_A, 1)
        half = _scale(A.copy_(Lambda), v).mul_(0.5)                                  # λv/2
        if at_zero is not None:
            half.masked_fill_(at_zero, 0)
        if g_im is not None:
            torch.neg(half.imag, out=g_im)
        g_re.sub_(half.real)                                                         # g = w − λv/2
        A.real.mul_(2.0).add_(g_re)                                                  # A = w + λv/2
        return A.div_(g), _scale(g.reciprocal_(), v)                                 # Ā, γ̄ = v/(w − λv/2)
    z = _scale(A.copy_(Lambda), dt)                                                  # (b, S...) λΔ
    if tau_r is not None:
        _scale(z, tau_r).masked_fill_(at_zero, 0)                                    # λΔ_A, exactly 0 where τ = 0
    if not all_finite(z):                                                           # λΔ_A overflowed (a huge gap):
        Lambda_bar, gamma_t = _event_by_discretize(Lambda, dt, method, tau, gamma_bar)  # Ā = 0 as in `discretize`
        return A.copy_(Lambda_bar), (gamma_t if method in ("async", "dirac") else g.copy_(gamma_t))
    if method in ("async", "dirac"):
        return z.exp_(), gamma_bar
    if method == "zoh":
        size = torch.abs(z, out=scratch if z.is_complex() else g)                    # (b, S...) |z|, real
        small = size < torch.finfo(z.real.dtype).eps ** 0.5                          # (b, S...) bool
        if not z.is_complex():                                                       # real λ: φ1 = expm1(z)/z
            torch.expm1(z, out=g).div_(z)
        else:                                                                        # φ1's numerator, as above
            x, y = z.real, z.imag                                                    # views
            torch.sin(y, out=g_im).mul_(torch.exp(x, out=scratch))                   # e^x sin y
            torch.expm1(x, out=g_re).mul_(torch.cos(y, out=scratch))                 # expm1(x) cos y
            g_re.sub_(torch.div(y, 2, out=scratch).sin_().square_().mul_(2.0))       # − 2 sin²(y/2)
            g.div_(z)                                                                # φ1(z)
        if small.any():
            g[small] = z[small].mul_(0.5).add_(1)                                    # the series where |z| is tiny
    else:                                                                            # exp_euler: γ̄ = Δ_A
        g.fill_(1)
    _scale(g, dt)                                                                    # γ̄ = Δ_A φ1(z), or Δ_A
    if tau_r is not None:
        _scale(g, tau_r)
    return z.exp_(), g


def _scale(c, r):
    """c *= r in place for a real r (broadcast to c), by real and imaginary parts when c is complex: a mixed
    complex-by-real in-place product would first form r in the complex dtype. Returns c."""
    if c.is_complex():
        c.real.mul_(r)
        c.imag.mul_(r)
        return c
    return c.mul_(r)


def _event_by_discretize(Lambda, dt, method, tau, gamma_bar):
    """`discretize_event`'s result from `discretize` itself (one event per row: L = 1)."""
    if tau is None:
        Lambda_bar, full_gamma = discretize(Lambda, dt, method, check_values=False)       # (b, S...)
    else:
        dt_L = dt[:, None] if dt.ndim > Lambda.ndim else dt                               # a selective Δ_t: (b, 1, S...)
        Lambda_bar, full_gamma = discretize(Lambda, dt_L, method, tau[:, None], check_values=False)
        Lambda_bar, full_gamma = Lambda_bar[:, 0], full_gamma[:, 0]                      # (b, S...)
    return Lambda_bar, (gamma_bar if method in ("async", "dirac") else full_gamma)


# Padé [13/13] coefficients and its θ₁₃ (Higham 2005, "The scaling and squaring method for the matrix exponential
# revisited", Table 2.3 and eq. 2.4): r₁₃(X) = q(X)⁻¹ p(X) meets expm(X) to unit roundoff for ‖X‖₁ <= θ₁₃.
_PADE13 = (64764752532480000.0, 32382376266240000.0, 7771770303897600.0, 1187353796428800.0,
           129060195264000.0, 10559470521600.0, 670442572800.0, 33522128640.0, 1323241920.0, 40840800.0,
           960960.0, 16380.0, 182.0, 1.0)
_THETA13 = 5.371920351148152


def matrix_exp_into(A, scale, workspace, out, norm_A=None):
    """expm(scale·A) for a batch of scales, with every array in given buffers (nothing allocated but scalars):
    the per-event transition of a dense system (LSSL with zoh and event gaps) in an in-place step.

    A: (N, N); scale: (D...) >= 0; workspace(name, shape, dtype) -> a scratch tensor (Layer._workspace);
    out: (D..., N, N), returned; norm_A: ‖A‖₁ if the caller keeps it (else computed).
    Higham's scaling and squaring with r₁₃: X = 2^-s·scale·A,
    U = X[X6(b13 X6 + b11 X4 + b9 X2) + b7 X6 + b5 X4 + b3 X2 + b1 I],
    V = X6(b12 X6 + b10 X4 + b8 X2) + b6 X6 + b4 X4 + b2 X2 + b0 I, r₁₃ = (V − U)⁻¹(V + U), squared s times.
    Note: torch only; torch.linalg.matrix_exp (what `discretize_dense` calls) has no out=. Each matrix has its
    own s (from ‖scale·A‖₁); the batch runs max(s) squarings and a matrix keeps its value once its own are done.
    Tested against SciPy's expm at the float64 and float32 rows."""
    shape, dtype = tuple(scale.shape) + tuple(A.shape), A.dtype
    norm_A = float(torch.linalg.matrix_norm(A, ord=1)) if norm_A is None else norm_A
    squarings = torch.mul(scale, norm_A / _THETA13, out=workspace("expm_s", scale.shape, dtype))   # (D...)
    squarings.log2_().ceil_().clamp_(min=0)                                                   # s >= 0
    most = int(squarings.max()) if squarings.numel() else 0
    b = _PADE13

    def buffer(name):
        return workspace("expm_" + name, shape, dtype)                                       # (D..., N, N)

    factor = torch.neg(squarings, out=workspace("expm_factor", scale.shape, dtype)).exp2_().mul_(scale)  # 2^-s·scale
    X = torch.mul(A, factor[..., None, None], out=buffer("X"))                                 # (D..., N, N)
    X2 = torch.matmul(X, X, out=buffer("X2"))
    X4 = torch.matmul(X2, X2, out=buffer("X4"))
    X6 = torch.matmul(X4, X2, out=buffer("X6"))
    T = buffer("T")

    def polynomial(c6, c4, c2, d6, d4, d2, d0, into):
        """into ← X6 (c6 X6 + c4 X4 + c2 X2) + d6 X6 + d4 X4 + d2 X2 + d0 I."""
        torch.mul(X6, c6, out=T).add_(X4, alpha=c4).add_(X2, alpha=c2)
        torch.matmul(X6, T, out=into).add_(X6, alpha=d6).add_(X4, alpha=d4).add_(X2, alpha=d2)
        into.diagonal(dim1=-2, dim2=-1).add_(d0)
        return into

    U = torch.matmul(X, polynomial(b[13], b[11], b[9], b[7], b[5], b[3], b[1], buffer("W")),
                     out=buffer("U"))                                                          # (D..., N, N)
    V = polynomial(b[12], b[10], b[8], b[6], b[4], b[2], b[0], buffer("V"))                   # (D..., N, N)
    P, Q = torch.add(V, U, out=X2), torch.sub(V, U, out=X4)                                  # V + U, V − U
    # LAPACK factorises column-major matrices: the LU workspace is one, seen transposed (.mT).
    factors = (buffer("lu").mT, workspace("expm_pivots", shape[:-1], torch.int32),
               workspace("expm_info", shape[:-2], torch.int32))
    LU, pivots, _ = torch.linalg.lu_factor_ex(Q, out=factors)                                 # (D..., N, N)
    R, other = (out, X6) if most % 2 == 0 else (X6, out)     # the squarings alternate, ending in `out`
    torch.linalg.lu_solve(LU, pivots, P, out=R)                                               # r₁₃ (D..., N, N)
    unfinished = workspace("expm_unfinished", scale.shape, torch.bool)                       # (D...) s > k
    for k in range(most):
        torch.gt(squarings, k, out=unfinished)
        torch.where(unfinished[..., None, None], torch.matmul(R, R, out=other), R, out=other)
        R, other = other, R
    return out
