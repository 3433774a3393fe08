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
from numba import njit

METHODS = ("zoh", "bilinear", "exp_euler", "async", "dirac", "none")
DENSE_METHODS = ("zoh", "bilinear")


def check_method(method, methods=METHODS):
    """Raise ValueError naming the valid methods unless `method` is one of them."""
    if not isinstance(method, str) or method not in methods:
        raise ValueError(f"discretization must be one of {', '.join(methods)}; got {method!r}")
    return method


def check_timesteps(tau, name="integration_timesteps"):
    """Integration timesteps must be real, finite and >= 0 (SPEC §1: backward differences)."""
    tau = np.asarray(tau)
    if tau.dtype.kind not in "biuf":
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
    """
    z = np.asarray(z)
    if np.iscomplexobj(z):
        x, y = z.real, z.imag
        numerator = (np.expm1(x) * np.cos(y) - 2.0 * np.sin(y / 2) ** 2) + 1j * (np.exp(x) * np.sin(y))
    else:
        z = z.astype(np.float64)
        numerator = np.expm1(z)
    is_zero = z == 0
    safe_z = np.where(is_zero, 1.0, z)                       # mask the division, not only the result
    return np.where(is_zero, 1.0, numerator / safe_z)


@njit(cache=True)
def phi1_scalar(z):
    """Numba twin of `phi1` for one complex128 value (same real-arithmetic formula)."""
    if z == 0:
        return 1.0 + 0.0j
    x, y = z.real, z.imag
    s = np.sin(y / 2)
    numerator = complex(np.expm1(x) * np.cos(y) - 2.0 * s * s, np.exp(x) * np.sin(y))
    return numerator / z


def discretize(Lambda, dt, method, tau=None):
    """Discretise a diagonal continuous-time system (SPEC §2).

    Lambda: (S...) complex or real — the diagonal λ (for `none`, already the discrete Ā).
    dt:     Δ > 0, broadcastable to Lambda (e.g. (N,) per state or a scalar).
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
    dt = np.broadcast_to(dt, Lambda.shape)
    if tau is None:
        dt_A = dt                                             # (S...)
    else:
        tau = check_timesteps(tau)
        if tau.ndim != 2:
            raise ValueError(f"integration_timesteps must have shape (b, L); got {tau.shape}")
        tau = tau.reshape(tau.shape + (1,) * Lambda.ndim)     # (b, L, 1...)
        dt_A = tau * dt                                       # (b, L, S...)
    one = np.ones_like(dt_A)

    if method == "zoh":
        Lambda_bar = np.exp(Lambda * dt_A)
        gamma_bar = dt_A * phi1(Lambda * dt_A)
    elif method == "bilinear":
        half = Lambda * dt_A / 2
        Lambda_bar = (1 + half) / (1 - half)
        gamma_bar = dt_A / (1 - half)
    elif method == "exp_euler":
        Lambda_bar = np.exp(Lambda * dt_A)
        gamma_bar = dt_A * one
    elif method == "async":
        Lambda_bar = np.exp(Lambda * dt_A)
        gamma_bar = np.broadcast_to(dt * phi1(Lambda * dt), Lambda_bar.shape)
    elif method == "dirac":
        Lambda_bar = np.exp(Lambda * dt_A)
        gamma_bar = one
    else:  # "none": Lambda is already discrete; under events the decay is raised to the power τ
        Lambda_bar = Lambda * one if tau is None else _power(Lambda, tau)
        gamma_bar = one
    return Lambda_bar, np.asarray(gamma_bar)


def _power(Lambda_bar, tau):
    """Ā^τ for real τ >= 0 with 0^0 = 1 (an underflowed Ā must not give NaN)."""
    safe = np.where(Lambda_bar == 0, 1.0, Lambda_bar)
    powered = np.exp(tau * np.log(safe.astype(np.complex128)))
    powered = np.where(Lambda_bar == 0, np.where(tau == 0, 1.0, 0.0), powered)
    return powered if np.iscomplexobj(Lambda_bar) else powered.real


def discretize_dense(A, B, dt, method):
    """Discretise a dense system x' = A x + B u (LSSL, SPEC §2 last bullet).

    A: (N, N) real; B: (N,) or (N, H); dt: scalar Δ > 0; method: "zoh" or "bilinear".
    zoh:      Ā = expm(ΔA),                 B̄ = A⁻¹(Ā − I)B      (solve, never invert)
    bilinear: Ā = (I − ΔA/2)⁻¹(I + ΔA/2),  B̄ = (I − ΔA/2)⁻¹ΔB
    Returns (A_bar (N, N), B_bar like B).
    """
    check_method(method, DENSE_METHODS)
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    if A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise ValueError(f"A must be a square (N, N) matrix; got shape {A.shape}")
    if B.shape[0] != A.shape[0]:
        raise ValueError(f"B must have N={A.shape[0]} rows; got shape {B.shape}")
    if not (np.isfinite(dt) and dt > 0):
        raise ValueError(f"dt must be finite and > 0; got {dt}")
    I = np.eye(A.shape[0])                                      # (N, N)
    if method == "zoh":
        from scipy.linalg import expm
        A_bar = expm(dt * A)
        B_bar = np.linalg.solve(A, (A_bar - I) @ B)
    else:
        left = I - dt / 2 * A
        A_bar = np.linalg.solve(left, I + dt / 2 * A)
        B_bar = np.linalg.solve(left, dt * B)
    return A_bar, B_bar
