"""Discretisation of a diagonal (or dense) continuous-time state matrix — SPEC §2, PyTorch mirror.

Mirrors reference/discretize.py name by name (STYLE 6); the formulas are the same, written with
torch ops so gradients flow to λ, Δ and (for `discretize_dense`) A and B:

    Ā = exp(λ Δ_A)  (zoh, exp_euler, async, dirac)      Δ_A = τ·Δ with event timesteps τ, else Δ
    Ā = (1 + λΔ_A/2) / (1 − λΔ_A/2)                      (bilinear)
    γ̄ : the input normaliser, B̄ = γ̄ ⊙ B (table in SPEC §2)

Papers and upstream code: as in reference/discretize.py (LSSL, S5, Event-SSM, Centaurus; lindermanlab/S5).
Differences from the reference, each for a reason:
* precision follows the inputs (float32/complex64 by default, float64/complex128 after `.double()`);
  the reference always works in float64;
* value checks (Δ > 0, τ >= 0, finite) can be switched off with `check_values=False` — on a GPU each
  one waits for the device — and are skipped while torch.compile traces (they are data-dependent);
* no `phi1_scalar`: it is the Numba twin, and torch has no Numba kernels of its own.
φ1 uses the same real-arithmetic form as the reference, masks the division at z = 0 and returns there
the branch 1 + z/2, whose value is exactly φ1(0) = 1 and whose derivative is exactly φ1'(0) = ½.

Glossary (SPEC §1): b batch, L length, N state channels, λ `Lambda`, Δ `dt`, τ `tau`.
"""
import math

import torch

from reference.discretize import DENSE_METHODS, METHODS, check_method

__all__ = ["METHODS", "DENSE_METHODS", "check_method", "check_timesteps", "phi1", "discretize", "discretize_event",
           "discretize_dense", "all_finite"]


def checking_values(check_values=True):
    """Whether data-dependent checks run: asked for, and not inside a torch.compile trace."""
    return bool(check_values) and not torch.compiler.is_compiling()


def _as_tensor(x, name, like):
    """A tensor on `like`'s device: tensors must already be there; numbers and arrays are converted
    to `like`'s real precision (a Python float is not silently made float32)."""
    if isinstance(x, torch.Tensor):
        if x.device != like.device:
            raise ValueError(f"{name} is on device {x.device} but Lambda is on {like.device}; move it with .to()")
        return x
    real_dtype = like.real.dtype if like.is_complex() or like.is_floating_point() else torch.get_default_dtype()
    return torch.as_tensor(x, dtype=real_dtype, device=like.device)


def check_timesteps(tau, name="integration_timesteps", check_values=True):
    """Integration timesteps must be real, finite and >= 0 (SPEC §1: backward differences)."""
    if not isinstance(tau, torch.Tensor):
        tau = torch.as_tensor(tau)
    if tau.dtype == torch.bool or tau.is_complex():
        raise TypeError(f"{name} must be a real numeric array; got dtype {tau.dtype}")
    if not tau.is_floating_point():
        tau = tau.to(torch.get_default_dtype())
    if checking_values(check_values):
        bad = ~torch.isfinite(tau) | (tau < 0)
        if bad.any():
            index = tuple(int(i) for i in torch.nonzero(bad)[0])
            raise ValueError(f"{name} must be finite and >= 0; got {tau[index].item()} at index {index}")
    return tau


def phi1(z):
    """φ1(z) = (e^z − 1)/z, elementwise, with φ1(0) = 1 and no cancellation near 0.

    z: real or complex tensor (any shape). Returns a tensor of z's shape and dtype.
    Real z: expm1(z)/z. Complex z = x + iy: e^z − 1 = [expm1(x)·cos y − 2 sin²(y/2)] + i·e^x sin y.
    Below |z| = sqrt(ε) of z's precision the series 1 + z/2 + z²/6 is used: dividing by a subnormal
    complex z overflows, so φ1 of a tiny valid step must never reach the division.
    """
    if z.is_complex():
        x, y = z.real, z.imag
        numerator = torch.complex(torch.expm1(x) * torch.cos(y) - 2.0 * torch.sin(y / 2) ** 2,
                                  torch.exp(x) * torch.sin(y))
    else:
        z = z if z.is_floating_point() else z.to(torch.get_default_dtype())
        numerator = torch.expm1(z)
    # Note: the threshold is sqrt(ε) of the tensor's precision (the reference's is float64's); the series'
    # value and gradient (½ + z/3) are then exact to rounding, and its gradient at 0 is φ1'(0) = ½.
    small = torch.abs(z) < torch.finfo(z.real.dtype).eps ** 0.5
    safe_z = torch.where(small, torch.ones_like(z), z)        # mask the division, not only the result
    return torch.where(small, 1 + z / 2 + z * z / 6, numerator / safe_z)


def discretize(Lambda, dt, method, tau=None, *, check_values=True):
    """Discretise a diagonal continuous-time system (SPEC §2).

    Lambda: (S...) complex or real tensor — the diagonal λ (for `none`, already the discrete Ā).
    dt:     Δ > 0, broadcastable to Lambda (e.g. (N,) per state, or a scalar).
            A selective step Δ_t may carry leading (b, L) axes: dt (b, L, S...) with tau (b, L).
    method: one of METHODS.
    tau:    None, or integration timesteps (b, L) >= 0; then Δ_A = τ·Δ.
    check_values: check Δ and τ by value (a device sync on GPU; layers pass their `check_finite`).
    Returns (Lambda_bar, gamma_bar): shape (S...) without tau, (b, L, S...) with tau, in the promoted
    precision of the inputs (complex when Lambda is complex).
    """
    check_method(method)
    if not isinstance(Lambda, torch.Tensor):
        raise TypeError(f"Lambda must be a torch.Tensor; got {type(Lambda).__name__}")
    if Lambda.dtype == torch.bool:
        raise TypeError(f"Lambda must be numeric; got dtype {Lambda.dtype}")
    if not (Lambda.is_complex() or Lambda.is_floating_point()):
        Lambda = Lambda.to(torch.get_default_dtype())
    dt = _as_tensor(dt, "dt", Lambda)
    if dt.is_complex() or dt.dtype == torch.bool:
        raise TypeError(f"dt must be real; got dtype {dt.dtype}")
    if checking_values(check_values) and (~torch.isfinite(dt) | (dt <= 0)).any():
        raise ValueError(f"dt must be finite and > 0; got min {dt.min().item()}")
    dt = torch.broadcast_to(dt, torch.broadcast_shapes(dt.shape, Lambda.shape))   # (S...) or selective (b, L, S...)
    if tau is None:
        dt_A = dt                                                  # (S...)
    else:
        tau = check_timesteps(_as_tensor(tau, "integration_timesteps", Lambda), check_values=check_values)
        if tau.ndim != 2:
            raise ValueError(f"integration_timesteps must have shape (b, L); got {tuple(tau.shape)}")
        tau = tau.reshape(tau.shape + (1,) * Lambda.ndim)          # (b, L, 1...)
        dt_A = tau * dt                                            # (b, L, S...)
    one = torch.ones_like(dt_A)
    z = _exponent(Lambda, dt_A)                                    # λΔ_A, exactly 0 where Δ_A = 0
    gone = torch.exp(z.real) == 0                                  # |e^z| underflows: Ā = 0, the past is forgotten
    z_live = torch.where(gone, torch.zeros_like(z), z)             # e^z of Re z = −inf, Im z = ±inf is NaN
    decay = torch.where(gone, torch.zeros_like(z), torch.exp(z_live))

    if method == "zoh":
        Lambda_bar = decay
        minus_inverse = -1 / torch.where(gone, Lambda, torch.ones_like(Lambda))   # γ̄ → −1/λ as e^z → 0
        gamma_bar = torch.where(gone, minus_inverse, dt_A * phi1(z_live))
    elif method == "bilinear":
        # Δ_A > 1: the same fractions divided through by Δ_A, so that λΔ_A/2 never overflows (Ā → −1).
        large = dt_A > 1
        inverse = 1 / torch.where(large, dt_A, one)                # 1/Δ_A where large
        half = _exponent(Lambda, torch.where(large, one, dt_A)) / 2
        Lambda_bar = torch.where(large, (inverse + Lambda / 2) / (inverse - Lambda / 2), (1 + half) / (1 - half))
        gamma_bar = torch.where(large, 1 / (inverse - Lambda / 2), dt_A / (1 - half))
    elif method == "exp_euler":
        Lambda_bar = decay
        gamma_bar = dt_A * one
    elif method == "async":
        Lambda_bar = decay
        gamma_bar = torch.broadcast_to(dt * phi1(Lambda * dt), Lambda_bar.shape)
    elif method == "dirac":
        Lambda_bar = decay
        gamma_bar = one
    else:  # "none": Lambda is already discrete; under events the decay is raised to the power τ
        Lambda_bar = Lambda * one if tau is None else _power(Lambda, tau)
        gamma_bar = one
    return Lambda_bar, gamma_bar


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
    inplace=True)`): Ā_t is written into out[0] and, where it depends on τ (zoh, bilinear, exp_euler, none),
    γ̄_t into out[1] (None will do for async and dirac, whose γ̄ is returned as given); those same tensors are
    returned, and nothing (b, S...)-sized is allocated on the way: the real temporaries go into the real and
    imaginary parts of out[1] and, for zoh and bilinear, into `scratch`, a real tensor (b, S...) of λ's real
    dtype. For zoh a boolean mask of the entries with |λΔ_A| < sqrt(ε) is formed (1 byte per entry), and
    the series is written at those entries only. `none` and a λΔ_A that overflows take `discretize` and are
    copied in. Autograd must be off.
    """
    dt = _as_tensor(dt, "dt", Lambda)                                                # a number: Lambda's precision
    if method in ("async", "dirac") and gamma_bar is None:
        gamma_bar = discretize(Lambda, dt, method, check_values=False)[1]           # (S...)
    if out is not None:
        return _event_into(Lambda, dt, method, tau, gamma_bar, out, scratch)
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
    A, g = out                                                                       # (b, S...) each
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


def all_finite(value):
    """True when `value` is a non-empty real or complex tensor without NaN or ±inf, read from its minimum and
    maximum (one reduction to two numbers: no tensor-sized temporary, where `torch.isfinite(x).all()` makes
    a bool and an absolute value per element); False for anything else, and while torch.compile traces."""
    if not isinstance(value, torch.Tensor) or not (value.is_floating_point() or value.is_complex()) \
            or value.numel() == 0 or torch.compiler.is_compiling():
        return False
    low, high = torch.aminmax(torch.view_as_real(value) if value.is_complex() else value)   # NaN propagates
    return bool(torch.isfinite(low) & torch.isfinite(high))


def _exponent(Lambda, dt_A):
    """λ·Δ_A elementwise, exactly 0 where Δ_A = 0, formed from the real and imaginary parts separately.

    A complex product λ·Δ_A multiplies Im(Δ_A) = 0 by Re λ; for an underflowed λ (Re λ = −inf) that is
    NaN, and τ = 0 must still give Ā = 1 (0⁰ = 1).
    """
    zero = dt_A == 0
    safe_dt = torch.where(zero, torch.ones_like(dt_A), dt_A)
    if not Lambda.is_complex():
        return torch.where(zero, torch.zeros_like(dt_A), Lambda * safe_dt)
    re = torch.where(zero, torch.zeros_like(dt_A), Lambda.real * safe_dt)
    im = torch.where(zero, torch.zeros_like(dt_A), Lambda.imag * safe_dt)
    return torch.complex(re, im)                                   # (S...) or (b, L, S...)


def _power(Lambda_bar, tau):
    """Ā^τ for real τ >= 0 with 0^0 = 1 (an underflowed Ā must not give NaN, nor its gradient)."""
    is_zero = Lambda_bar == 0
    complex_dtype = (Lambda_bar.new_zeros(()) + 0j).dtype
    safe = torch.where(is_zero, torch.ones_like(Lambda_bar), Lambda_bar).to(complex_dtype)
    powered = torch.exp(tau * torch.log(safe))
    powered = torch.where(is_zero, (tau == 0).to(powered.dtype), powered)
    return powered if Lambda_bar.is_complex() else powered.real


def discretize_dense(A, B, dt, method, *, check_values=True):
    """Discretise a dense system x' = A x + B u (LSSL, SPEC §2 last bullet).

    A: (N, N) real; B: (N,) or (N, H); dt: Δ > 0, a scalar or a tensor of any shape (D...);
    method: "zoh" or "bilinear".
    zoh:      Ā = expm(ΔA),                 B̄ = A⁻¹(Ā − I)B      (solve, never invert)
    bilinear: Ā = (I − ΔA/2)⁻¹(I + ΔA/2),  B̄ = (I − ΔA/2)⁻¹ΔB
    Returns (A_bar (D..., N, N), B_bar (D..., *B.shape)).
    """
    check_method(method, DENSE_METHODS)
    if not isinstance(A, torch.Tensor) or not isinstance(B, torch.Tensor):
        raise TypeError(f"A and B must be torch.Tensors; got {type(A).__name__} and {type(B).__name__}")
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (N, N) matrix; got shape {tuple(A.shape)}")
    if B.ndim not in (1, 2) or B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have N={A.shape[0]} rows; got shape {tuple(B.shape)}")
    dt = _as_tensor(dt, "dt", A).to(torch.promote_types(A.dtype, B.dtype))
    if checking_values(check_values) and (~torch.isfinite(dt) | (dt <= 0)).any():
        raise ValueError(f"dt must be finite and > 0; got {dt.min().item()}")
    dt_mat = dt[..., None, None]                                     # (D..., 1, 1)
    B_col = B if B.ndim == 2 else B[:, None]                         # (N, H|1)
    I = torch.eye(A.shape[0], dtype=A.dtype, device=A.device)        # (N, N)
    if method == "zoh":
        A_bar = torch.linalg.matrix_exp(dt_mat * A)                  # (D..., N, N)
        B_bar = torch.linalg.solve(A, (A_bar - I) @ B_col)           # (D..., N, H|1)
    else:
        left = I - dt_mat / 2 * A                                    # (D..., N, N)
        A_bar = torch.linalg.solve(left, I + dt_mat / 2 * A)         # (D..., N, N)
        B_bar = torch.linalg.solve(left, dt_mat * B_col)             # (D..., N, H|1)
    return A_bar, (B_bar if B.ndim == 2 else B_bar[..., 0])


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
    out: (D..., N, N), returned; norm_A: ‖A‖₁ if the caller keeps it (else computed). Higham's scaling and squaring with r₁₃: X = 2^-s·scale·A,
    U = X[X6(b13 X6 + b11 X4 + b9 X2) + b7 X6 + b5 X4 + b3 X2 + b1 I],
    V = X6(b12 X6 + b10 X4 + b8 X2) + b6 X6 + b4 X4 + b2 X2 + b0 I, r₁₃ = (V − U)⁻¹(V + U), squared s times.
    Note: torch only; torch.linalg.matrix_exp (what `discretize_dense` calls) has no out=. Each matrix has its
    own s (from ‖scale·A‖₁); the batch runs max(s) squarings and a matrix keeps its value once its own are done.
    Equal to matrix_exp to rounding (tested)."""
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
