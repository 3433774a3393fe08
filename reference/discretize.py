"""Discretisation of a diagonal (or dense) continuous-time state matrix — SPEC §2.

One function family, used by every layer (STYLE 4): a layer never re-derives a formula.

    Ā = exp(λ Δ_A)  (zoh, exp_euler, async, dirac)      Δ_A = τ·Δ with event timesteps τ, else Δ
    Ā = (1 + λΔ_A/2) / (1 − λΔ_A/2)                      (bilinear)
    γ̄ : the input normaliser, B̄ = γ̄ ⊙ B (table in SPEC §2)

Papers: LSSL (Gu et al. 2021) for zoh/bilinear of dense matrices, S5 (Smith et al. 2023) for the
diagonal forms, Event-SSM (Schöne et al. 2024) for `async` and `dirac`, Centaurus for `exp_euler`.
Upstream code: lindermanlab/S5 `ssm.py` (discretize_zoh / discretize_bilinear).

φ1(z) = (e^z − 1)/z is evaluated without cancellation and exactly at z = 0 (SPEC §2); the complex
form uses real arithmetic only, so the Numba twin `phi1_scalar` gives the same numbers.

Glossary (SPEC §1): b batch, L length, N state channels, λ `Lambda`, Δ `dt`, τ `tau`.
"""
import numpy as np

from .kernels.launch import njit_cached

METHODS = ("zoh", "bilinear", "exp_euler", "async", "dirac", "none")
DENSE_METHODS = ("zoh", "bilinear")
PHI1_SERIES_BELOW = float(np.sqrt(np.finfo(np.float64).eps))   # |z| below which φ1 uses its series


def check_method(method, methods=METHODS):
    """Raise ValueError naming the valid methods unless `method` is one of them."""
    if not isinstance(method, str) or method not in methods:
        raise ValueError(f"discretization must be one of {', '.join(methods)}; got {method!r}")
    return method


def check_timesteps(tau, name="integration_timesteps"):
    """Integration timesteps must be real, finite and >= 0 (SPEC §1: backward differences)."""
    tau = np.asarray(tau)
    if tau.dtype.kind not in "iuf":                           # bool is not a time
        raise TypeError(f"{name} must be a real numeric array; got dtype {tau.dtype}")
    tau = tau.astype(np.float64)
    bad = ~np.isfinite(tau) | (tau < 0)
    if bad.any():
        index = tuple(int(i) for i in np.argwhere(bad)[0])
        raise ValueError(f"{name} must be finite and >= 0; got {tau[index]} at index {index}")
    return tau


def phi1(z):
    """φ1(z) = (e^z − 1)/z, elementwise, with φ1(0) = 1 and no cancellation near 0.

    z: real or complex array (any shape). Returns an array of the same shape and kind, float64/complex128.
    Real z: expm1(z)/z. Complex z = x + iy: e^z − 1 = [expm1(x)·cos y − 2 sin²(y/2)] + i·e^x sin y.
    Below |z| = PHI1_SERIES_BELOW the series 1 + z/2 + z²/6 is used (error < ε³ᐟ²): dividing by a
    subnormal complex z overflows, so φ1 of a tiny valid step must never reach the division.
    """
    z = np.asarray(z)
    if np.iscomplexobj(z):
        x, y = z.real, z.imag
        numerator = (np.expm1(x) * np.cos(y) - 2.0 * np.sin(y / 2) ** 2) + 1j * (np.exp(x) * np.sin(y))
    else:
        z = z.astype(np.float64)
        numerator = np.expm1(z)
    small = np.abs(z) < PHI1_SERIES_BELOW
    safe_z = np.where(small, 1.0, z)                         # mask the division, not only the result
    return np.where(small, 1.0 + z / 2 + z * z / 6, numerator / safe_z)


@njit_cached()
def phi1_scalar(z):
    """Numba twin of `phi1` for one complex128 value (same real-arithmetic formula)."""
    if abs(z) < PHI1_SERIES_BELOW:
        return 1.0 + z / 2 + z * z / 6
    x, y = z.real, z.imag
    s = np.sin(y / 2)
    numerator = complex(np.expm1(x) * np.cos(y) - 2.0 * s * s, np.exp(x) * np.sin(y))
    return numerator / z


def discretize(Lambda, dt, method, tau=None):
    """Discretise a diagonal continuous-time system (SPEC §2).

    Lambda: (S...) complex or real — the diagonal λ (for `none`, already the discrete Ā).
    dt:     Δ > 0, broadcastable to Lambda (e.g. (N,) per state or a scalar).
            A selective step Δ_t may carry leading (b, L) axes: dt (b, L, S...) with tau (b, L).
    method: one of METHODS.
    tau:    None, or integration timesteps (b, L) >= 0; then Δ_A = τ·Δ.
    Returns (Lambda_bar, gamma_bar): shape (S...) without tau, (b, L, S...) with tau.
    """
    check_method(method)
    Lambda = np.asarray(Lambda)
    if Lambda.dtype.kind not in "biufc":
        raise TypeError(f"Lambda must be numeric; got dtype {Lambda.dtype}")
    Lambda = Lambda.astype(np.complex128 if np.iscomplexobj(Lambda) else np.float64)
    dt = np.asarray(dt, dtype=np.float64)
    if not np.all(np.isfinite(dt)) or np.any(dt <= 0):
        raise ValueError(f"dt must be finite and > 0; got min {dt.min()}")
    dt = np.broadcast_to(dt, np.broadcast_shapes(dt.shape, Lambda.shape))   # (S...) or selective (b, L, S...)
    if tau is None:
        dt_A = dt                                             # (S...)
    else:
        tau = check_timesteps(tau)
        if tau.ndim != 2:
            raise ValueError(f"integration_timesteps must have shape (b, L); got {tau.shape}")
        tau = tau.reshape(tau.shape + (1,) * Lambda.ndim)     # (b, L, 1...)
        dt_A = tau * dt                                       # (b, L, S...)
    one = np.ones_like(dt_A)
    z = _exponent(Lambda, dt_A)                               # λΔ_A, exactly 0 where Δ_A = 0
    gone = np.exp(z.real) == 0                                # |e^z| underflows: Ā = 0, the past is forgotten
    z_live = np.where(gone, 0.0, z)                           # e^z of Re z = −inf with Im z = ±inf is NaN
    decay = np.where(gone, 0.0, np.exp(z_live))               # e^{λΔ_A}: (S...) or (b, L, S...)

    if method == "zoh":
        Lambda_bar = decay
        minus_inverse = -1 / np.where(gone, Lambda, 1.0)      # γ̄ = (e^z − 1)/λ → −1/λ as e^z → 0
        gamma_bar = np.where(gone, minus_inverse, dt_A * phi1(z_live))
    elif method == "bilinear":
        # Δ_A > 1: the same fractions divided through by Δ_A, so that λΔ_A/2 never overflows (Ā → −1).
        large = dt_A > 1
        inverse = 1 / np.where(large, dt_A, 1.0)              # 1/Δ_A where large
        half = _exponent(Lambda, np.where(large, 1.0, dt_A)) / 2
        Lambda_bar = np.where(large, (inverse + Lambda / 2) / (inverse - Lambda / 2), (1 + half) / (1 - half))
        gamma_bar = np.where(large, 1 / (inverse - Lambda / 2), dt_A / (1 - half))
    elif method == "exp_euler":
        Lambda_bar = decay
        gamma_bar = dt_A * one
    elif method == "async":
        Lambda_bar = decay
        gamma_bar = np.broadcast_to(dt * phi1(Lambda * dt), Lambda_bar.shape)
    elif method == "dirac":
        Lambda_bar = decay
        gamma_bar = one
    else:  # "none": Lambda is already discrete; under events the decay is raised to the power τ
        Lambda_bar = Lambda * one if tau is None else _power(Lambda, tau)
        gamma_bar = one
    return Lambda_bar, np.asarray(gamma_bar)


def _exponent(Lambda, dt_A):
    """λ·Δ_A elementwise, exactly 0 where Δ_A = 0, formed from the real and imaginary parts separately.

    A complex product λ·Δ_A multiplies Im(Δ_A) = 0 by Re λ; for an underflowed λ (Re λ = −inf) that is
    NaN, and τ = 0 must still give Ā = 1 (0⁰ = 1).
    """
    # a huge gap may overflow λΔ_A to ±inf (the decay is then 0); inf·0 lands in the masked branch
    with np.errstate(invalid="ignore", over="ignore"):
        if not np.iscomplexobj(Lambda):
            return np.where(dt_A == 0, 0.0, Lambda * dt_A)
        re = np.where(dt_A == 0, 0.0, Lambda.real * dt_A)
        im = np.where(dt_A == 0, 0.0, Lambda.imag * dt_A)
    z = np.empty(np.shape(re), np.complex128)                 # (S...) or (b, L, S...)
    z.real, z.imag = re, im
    return z


def _power(Lambda_bar, tau):
    """Ā^τ for real τ >= 0 with 0^0 = 1 (an underflowed Ā must not give NaN)."""
    safe = np.where(Lambda_bar == 0, 1.0, Lambda_bar)
    powered = np.exp(tau * np.log(safe.astype(np.complex128)))
    powered = np.where(Lambda_bar == 0, np.where(tau == 0, 1.0, 0.0), powered)
    return powered if np.iscomplexobj(Lambda_bar) else powered.real


def discretize_dense(A, B, dt, method):
    """Discretise a dense system x' = A x + B u (LSSL, SPEC §2 last bullet).

    A: (N, N) real; B: (N,) or (N, H); dt: Δ > 0, a scalar or an array of any shape (D...) (one
    discretisation per entry, in one batched call); method: "zoh" or "bilinear".
    zoh:      Ā = expm(ΔA),                 B̄ = A⁻¹(Ā − I)B      (solve, never invert)
    bilinear: Ā = (I − ΔA/2)⁻¹(I + ΔA/2),  B̄ = (I − ΔA/2)⁻¹ΔB
    Returns (A_bar (D..., N, N), B_bar (D..., *B.shape)).
    """
    check_method(method, DENSE_METHODS)
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (N, N) matrix; got shape {A.shape}")
    if B.ndim not in (1, 2) or B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have N={A.shape[0]} rows; got shape {B.shape}")
    dt = np.asarray(dt, dtype=np.float64)
    if not np.all(np.isfinite(dt) & (dt > 0)):
        raise ValueError(f"dt must be finite and > 0; got {dt.min() if dt.size else dt}")
    dt_mat = dt[..., None, None]                                # (D..., 1, 1)
    B_col = B if B.ndim == 2 else B[:, None]                    # (N, H|1)
    I = np.eye(A.shape[0])                                      # (N, N)
    if method == "zoh":
        from scipy.linalg import expm
        A_bar = expm(dt_mat * A)                                # (D..., N, N): SciPy's expm takes stacks
        B_bar = np.linalg.solve(A, (A_bar - I) @ B_col)         # (D..., N, H|1)
    else:
        left = I - dt_mat / 2 * A                               # (D..., N, N)
        A_bar = np.linalg.solve(left, I + dt_mat / 2 * A)       # (D..., N, N)
        B_bar = np.linalg.solve(left, dt_mat * B_col)           # (D..., N, H|1)
    return A_bar, (B_bar if B.ndim == 2 else B_bar[..., 0])


# ============================================================================= derivatives (SPEC §11)
# The backward pass of every method above, written once, beside the forward. Ā and γ̄ are holomorphic in λ
# and real-differentiable in Δ, so a gradient G of a real loss with respect to Ā (torch's convention,
# G = ∂L/∂Re Ā + i ∂L/∂Im Ā) reaches λ as G·conj(∂Ā/∂λ) and Δ as Re(G·conj(∂Ā/∂Δ)).  With τ, Δ_A = τ·Δ.
#
#   method     ∂Ā/∂λ        ∂Ā/∂Δ         ∂γ̄/∂λ               ∂γ̄/∂Δ
#   zoh        Δ_A Ā        τ λ Ā         Δ_A² φ1'(λΔ_A)       τ e^{λΔ_A}
#   bilinear   Δ_A/(1−h)²   τ λ/(1−h)²    Δ_A²/(2(1−h)²)       τ/(1−h)²          h = λΔ_A/2
#   exp_euler  Δ_A Ā        τ λ Ā         0                    τ
#   async      Δ_A Ā        τ λ Ā         Δ² φ1'(λΔ)           e^{λΔ}            (γ̄ ignores τ)
#   dirac      Δ_A Ā        τ λ Ā         0                    0
#   none       τ Ā/λ        0             0                    0                 (Ā = λ^τ; λ = 0 ⇒ [τ = 1])
PHI1_SERIES_RADIUS = 1.0         # |z| below which φ1' is summed as a series (no cancellation)
PHI1_SERIES_TERMS = 26           # the first omitted term is below 1e-26 for |z| < 1


def phi1_derivative(z):
    """φ1'(z) = (e^z (z − 1) + 1)/z², elementwise, with its own branch near z = 0.

    The closed form cancels catastrophically as z → 0 (numerator ~ z²/2), so for |z| < 1 it is summed as
    φ1'(z) = Σ_{k≥1} k z^{k−1}/(k+1)!  (φ1'(0) = ½). z: real or complex array; returns the same shape and kind.
    """
    z = np.asarray(z)
    z = z.astype(np.complex128 if np.iscomplexobj(z) else np.float64)
    small = np.abs(z) < PHI1_SERIES_RADIUS
    safe_z = np.where(small, 1.0, z)                          # mask the division, not only the result
    closed = (np.exp(safe_z) * (safe_z - 1) + 1) / safe_z ** 2
    series, power, factorial = np.zeros_like(z), np.ones_like(z), 1.0
    for k in range(1, PHI1_SERIES_TERMS + 1):                 # Horner would do too; the terms are explicit
        factorial *= k + 1                                    # (k+1)!
        series = series + k * power / factorial
        power = power * z
    return np.where(small, series, closed)


def discretize_derivatives(Lambda, dt, method, tau=None):
    """The four partial derivatives of `discretize` (SPEC §11), elementwise.

    Same arguments as `discretize`. Returns (dA_dLambda, dA_ddt, dgamma_dLambda, dgamma_ddt), each of
    discretize's output shape ((S...) without τ, (b, L, S...) with τ), complex128 when Lambda is complex.
    """
    check_method(method)
    Lambda_bar, _ = discretize(Lambda, dt, method, tau)
    Lambda = np.asarray(Lambda)
    Lambda = Lambda.astype(np.complex128 if np.iscomplexobj(Lambda) else np.float64)
    dt = np.asarray(dt, dtype=np.float64)
    dt = np.broadcast_to(dt, np.broadcast_shapes(dt.shape, Lambda.shape))        # (S...) or selective (b, L, S...)
    if tau is None:
        tau_, dt_A = np.ones_like(dt), dt                                        # (S...)
    else:
        tau_ = check_timesteps(tau).reshape(np.shape(tau) + (1,) * Lambda.ndim)  # (b, L, 1...)
        dt_A = tau_ * dt                                                         # (b, L, S...)
    zero = np.zeros(Lambda_bar.shape, Lambda_bar.dtype)
    z = _exponent(Lambda, dt_A)                                                  # λΔ_A as in discretize
    gone = np.exp(z.real) == 0                                                   # e^z underflowed: Ā = 0

    if method in ("zoh", "exp_euler", "async", "dirac"):
        dA_dLambda = dt_A * Lambda_bar
        dA_ddt = tau_ * (Lambda * Lambda_bar)                                    # λĀ first: a huge τ times 0
        if method == "zoh":
            # e^z → 0: γ̄ → −1/λ, so ∂γ̄/∂λ → 1/λ² (Δ_A²·φ1' would be inf·0) and ∂γ̄/∂Δ = τe^z → 0
            with np.errstate(over="ignore", invalid="ignore"):
                regular = dt_A ** 2 * phi1_derivative(np.where(gone, 0.0, z))
            dgamma_dLambda = np.where(gone, 1 / np.where(gone, Lambda, 1.0) ** 2, regular)
            dgamma_ddt = tau_ * np.where(gone, 0.0, np.exp(np.where(gone, 0.0, z)))
        elif method == "exp_euler":
            dgamma_dLambda, dgamma_ddt = zero, tau_ + zero
        elif method == "async":
            dgamma_dLambda = dt ** 2 * phi1_derivative(Lambda * dt) + zero
            dgamma_ddt = np.exp(Lambda * dt) + zero
        else:
            dgamma_dLambda, dgamma_ddt = zero, zero
    elif method == "bilinear":
        # Δ_A > 1: divided through by Δ_A² as in discretize, q = (1/Δ_A − λ/2)² = (1 − λΔ_A/2)²/Δ_A²
        large = dt_A > 1
        inverse, small_dt = 1 / np.where(large, dt_A, 1.0), np.where(large, 1.0, dt_A)
        small_tau = np.where(large, 0.0, tau_)
        denominator = (1 - _exponent(Lambda, small_dt) / 2) ** 2
        q = (inverse - Lambda / 2) ** 2
        dA_dLambda = np.where(large, inverse / q, small_dt / denominator)
        dA_ddt = np.where(large, Lambda * inverse / (dt * q), small_tau * Lambda / denominator)
        dgamma_dLambda = np.where(large, 1 / (2 * q), small_dt ** 2 / (2 * denominator))
        dgamma_ddt = np.where(large, inverse / (dt * q), small_tau / denominator)
    else:  # "none": Ā = λ^τ, d/dλ = τ λ^(τ−1) = τ Ā/λ (λ = 0: 1 where τ = 1, else 0)
        safe = np.where(Lambda == 0, 1.0, Lambda)
        dA_dLambda = np.where(Lambda == 0, (tau_ == 1) * 1.0, tau_ * Lambda_bar / safe) + zero
        dA_ddt, dgamma_dLambda, dgamma_ddt = zero, zero, zero
    return tuple(np.broadcast_to(d, Lambda_bar.shape) for d in (dA_dLambda, dA_ddt, dgamma_dLambda, dgamma_ddt))


def discretize_vjp(Lambda, dt, method, tau, grad_Lambda_bar, grad_gamma_bar):
    """Pull the gradients of (Ā, γ̄) back to (λ, Δ) (SPEC §11; torch's complex convention).

    grad_Lambda_bar, grad_gamma_bar: broadcastable to discretize's output. Returns grad_Lambda with
    Lambda's shape (complex when Lambda is complex, else real) and grad_dt with dt's shape (real): the
    axes the forward broadcast over (batch, time, states sharing a Δ) are summed.
    """
    dA_dLambda, dA_ddt, dg_dLambda, dg_ddt = discretize_derivatives(Lambda, dt, method, tau)
    grad_Lambda = grad_Lambda_bar * np.conj(dA_dLambda) + grad_gamma_bar * np.conj(dg_dLambda)  # (…, S...)
    grad_dt = (grad_Lambda_bar * np.conj(dA_ddt) + grad_gamma_bar * np.conj(dg_ddt)).real       # (…, S...)
    Lambda, dt = np.asarray(Lambda), np.asarray(dt, dtype=np.float64)
    grad_Lambda = _sum_to_shape(grad_Lambda, Lambda.shape)
    return (grad_Lambda if np.iscomplexobj(Lambda) else grad_Lambda.real), _sum_to_shape(grad_dt, dt.shape)


def _sum_to_shape(grad, shape):
    """Sum `grad` over the axes a broadcast to it added or stretched, leaving `shape`."""
    grad = np.asarray(grad)
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape)))) if grad.ndim > len(shape) else grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True) if stretched else grad


def discretize_dense_vjp(A, B, dt, method, grad_A_bar, grad_B_bar):
    """Pull the gradients of discretize_dense's (Ā (N, N), B̄ (N,)) back to (A, B, Δ) (SPEC §11).

    zoh:      Ā = expm(ΔA): the adjoint of expm is its Fréchet derivative at (ΔA)ᵀ applied to the
              gradient, G_M = L_expm((ΔA)ᵀ, G_Ā); B̄ = A⁻¹(Ā − I)B: with w = A⁻ᵀ G_B̄,
              G_A −= w B̄ᵀ, G_Ā += w Bᵀ, G_B = (Ā − I)ᵀ w.
    bilinear: Ā = P⁻¹Q, B̄ = P⁻¹ΔB, P = I − ΔA/2, Q = I + ΔA/2: W = P⁻ᵀ G_Ā, v = P⁻ᵀ G_B̄,
              G_P = −W Āᵀ − v B̄ᵀ, G_Q = W, G_(ΔB) = v.
    Returns (grad_A (N, N), grad_B (N,), grad_dt float). Solves only, never an inverse.
    """
    check_method(method, DENSE_METHODS)
    A, B = np.asarray(A, dtype=np.float64), np.asarray(B, dtype=np.float64)
    A_bar, B_bar = discretize_dense(A, B, dt, method)
    I = np.eye(A.shape[0])                                                          # (N, N)
    if method == "zoh":
        from scipy.linalg import expm_frechet
        w = np.linalg.solve(A.T, grad_B_bar)                                        # (N,)
        grad_A = -np.outer(w, B_bar)                                                # (N, N)
        grad_B = (A_bar - I).T @ w                                                  # (N,)
        grad_M = expm_frechet((dt * A).T, grad_A_bar + np.outer(w, B), compute_expm=False)  # (N, N)
        return grad_A + dt * grad_M, grad_B, float(np.sum(grad_M * A))
    P = I - dt / 2 * A                                                              # (N, N)
    W = np.linalg.solve(P.T, grad_A_bar)                                            # (N, N)
    v = np.linalg.solve(P.T, grad_B_bar)                                            # (N,)
    grad_P = -W @ A_bar.T - np.outer(v, B_bar)                                      # (N, N)
    grad_A = dt / 2 * (W - grad_P)                                                  # (N, N): Q and P paths
    grad_dt = float(np.sum((W - grad_P) * A) / 2 + v @ B)
    return grad_A, dt * v, grad_dt
