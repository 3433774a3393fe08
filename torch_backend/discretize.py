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
import torch

from reference.discretize import DENSE_METHODS, METHODS, check_method

__all__ = ["METHODS", "DENSE_METHODS", "check_method", "check_timesteps", "phi1", "discretize", "discretize_dense",
           "all_finite"]


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
