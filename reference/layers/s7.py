"""S7 — S5 made selective, with event streams (Soydan et al. 2024; `S5SSM(input_dependent=True)`), SPEC §4.10.

    [s_t | B̂_t | Ĉ_t] = x_proj(u_t)       widths r, 2NH, 2NH; B_t = B̂[…, 0] + i·B̂[…, 1] (N, H), C_t likewise (H, N)
    Δ_t = step_rescale·softplus(dt_proj(s_t))            (b, L, N): one step per state, through a rank-r bottleneck
    (Ā_t, γ̄_t) = discretize(Λ, Δ_t, method, τ)          (SPEC §2, Δ_A = τ_t·Δ_t; Λ is time-invariant)
    x_t = Ā_t ⊙ x_{t−1} + γ̄_t ⊙ (B_t u_t),   y_t = κ·Re(C_t x_t) + D ⊙ u_t,   κ = 2 with conj_sym

Input-dependent: Δ_t, B_t, C_t; fixed: Λ and D. x_proj has H(r + 4NH) weights, O(NH²) — 4.2 M at H = 128,
N = 64, far more than S5's 4NH — the price of input-dependent B and C.
Init: Λ exactly as S5 (block-diagonal HiPPO-N, conj_sym keeps one state per conjugate pair; S5's helpers);
x_proj.weight truncated normal with variance 1/H (flax lecun_normal), bias 0; dt_proj.weight
U(±step_rescale·r^−½); dt_proj.bias = softplus⁻¹(max(δ, 1e-4)), δ log-uniform in [dt_min, dt_max);
D ~ N(0, 1). reparam="stablessm" (Decision, §4.10): Re Λ = −1/(w² + ½) with w = Lambda_re (StableSSM, a = 1,
b = ½), initialised w = sqrt(−1/Re Λ₀ − ½) so Λ at init is HiPPO-N, and Re Λ ∈ [−2, 0) for every real w;
Im Λ = Lambda_im. The authors' complex map (whose init and forward are not inverse of each other, §10a) is not
reproduced. clip_eigs clamps Re Λ ≤ −1e-4 after the reparametrisation. Every §2 method but `none`
(Λ is continuous-time).
Views: no convolution view (Δ_t, B_t, C_t depend on the input): every §3 scan method, and repeated `step`.

Upstream: TaylanSoydan/S7 `event_ssm/ssm.py` (S5SSM with input_dependent=True; x_proj.kernel = x_proj.weightᵀ,
step_proj.step_proj_kernel = dt_proj.weightᵀ, step_proj.step_proj_bias = dt_proj.bias). Not lrnnx's "S7" (a different
real discrete-time model, SPEC §10). Bidirectional (SPEC §4.12): Λ, Δ_t, B_t shared (both directions compute them from u_t); the backward read-out
C^b_t (b, L, H, N) = x_proj_back(u_t) (weight (2NH, H), bias (2NH,), drawn like x_proj's Ĉ rows after every forward
parameter): y_t = κ·Re(C_t h^f_t + C^b_t h^b_t) + D ⊙ u_t. Leaves out: separate_dbc, log_a, the block around it.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (stored), P local state size, r dt_rank.
"""
import math

import numpy as np
from scipy.special import expit

from ..backward import (backward_direction_states, backward_direction_vjp, contract, diagonal_states,
                        diagonal_states_vjp, parameter_gradients, prepare_vjp)
from ..discretize import discretize
from ..init import log_uniform_dt, s5_hippo_blocks, truncated_normal
from ..scan import SCAN_METHODS, scan
from ._base import Layer
from ._bidirectional import backward_states, check_bidirectional, check_call, refuse_streaming
from ._checks import (check_choice, check_inplace, check_positive_int, check_state, check_step_input, prepare_call,
                      returned_state)
from ._math import final_state, softplus
from .s5 import CLIP_RE, check_s5_arguments

REPARAMS = ("none", "stablessm")
STABLESSM_A, STABLESSM_B = 1.0, 0.5
DT_INIT_FLOOR = 1e-4
DT_FLOOR = np.finfo(np.float64).tiny
NO_FFT_REASON = "Δ_t, B_t and C_t depend on the input (a selective system), so there is no convolution kernel view"


def softplus_inverse(y):
    """softplus⁻¹(y) = y + log(−expm1(−y)) for y > 0."""
    return y + np.log(-np.expm1(-y))


def stablessm(w):
    """Re Λ = −1/(a·w² + b) (a = 1, b = ½): in [−2, 0) for every real w."""
    return -1.0 / (STABLESSM_A * w ** 2 + STABLESSM_B)


def stablessm_inverse(Lambda_re):
    """The w with stablessm(w) = Re Λ (Re Λ ∈ [−2, 0)): w = sqrt((−1/Re Λ − b)/a)."""
    return np.sqrt((-1.0 / Lambda_re - STABLESSM_B) / STABLESSM_A)


def resolve_dt_rank(dt_rank, d_model):
    """"auto" → ⌈H/16⌉, else a positive integer."""
    if isinstance(dt_rank, str):
        check_choice(dt_rank, "dt_rank", ("auto",))
        return math.ceil(d_model / 16)
    return check_positive_int(dt_rank, "dt_rank")


# ----------------------------------------------------------------------------- initialisers
def s7_params(rng, H, N, r, conj_sym, blocks, dt_min, dt_max, step_rescale, reparam):
    """All S7 parameters (SPEC §4.10), drawn in a fixed order (x_proj, dt_proj, D) from `rng`."""
    Lambda, _ = s5_hippo_blocks(N, blocks, conj_sym)                                 # (N,)
    Lambda_re = stablessm_inverse(Lambda.real) if reparam == "stablessm" else Lambda.real
    dt = np.maximum(np.exp(log_uniform_dt(rng, N, dt_min, dt_max)), DT_INIT_FLOOR)  # (N,)
    return {
        "Lambda_re": np.array(Lambda_re, dtype=np.float64), "Lambda_im": Lambda.imag.copy(),          # (N,)
        "x_proj.weight": truncated_normal(rng, (r + 4 * N * H, H), 1.0 / H),                          # (r + 4NH, H)
        "x_proj.bias": np.zeros(r + 4 * N * H),                                                       # (r + 4NH,)
        "dt_proj.weight": rng.uniform(-step_rescale / np.sqrt(r), step_rescale / np.sqrt(r), (N, r)),  # (N, r)
        "dt_proj.bias": softplus_inverse(dt),                                                         # (N,)
        "D": rng.normal(0.0, 1.0, H),                                                                 # (H,)
    }


# ----------------------------------------------------------------------------- the layer
class S7(Layer):
    """S7: x (b, L, H) real → y (b, L, H) float64; complex state (b, N)."""

    methods = SCAN_METHODS
    no_fft_reason = NO_FFT_REASON

    def __init__(self, d_model, d_state, discretization="zoh", conj_sym=False, blocks=1, dt_min=1e-3, dt_max=0.1,
                 step_rescale=1.0, clip_eigs=False, reparam="none", dt_rank="auto", bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        if discretization == "none":
            raise ValueError("discretization='none' is refused for S7: Λ is continuous-time (Re Λ < 0), and "
                             "using it as the discrete Ā would be unstable; "
                             "use zoh, bilinear, exp_euler, async or dirac")
        self.discretization, blocks, dt_min, dt_max, step_rescale = check_s5_arguments(
            discretization, conj_sym, clip_eigs, blocks, self.d_state, dt_min, dt_max, step_rescale)
        check_choice(reparam, "reparam", REPARAMS)
        self.dt_rank = resolve_dt_rank(dt_rank, self.d_model)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.kappa = 2 if conj_sym else 1
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "discretization": discretization,
                       "conj_sym": bool(conj_sym), "blocks": blocks, "dt_min": dt_min, "dt_max": dt_max,
                       "step_rescale": step_rescale, "clip_eigs": bool(clip_eigs), "reparam": reparam,
                       "dt_rank": dt_rank, "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = s7_params(rng, self.d_model, self.d_state, self.dt_rank, bool(conj_sym), blocks, dt_min, dt_max,
                                step_rescale, reparam)
        if self.bidirectional:       # the backward read-out C^b_t = x_proj_back(u_t) (SPEC §4.12)
            width = 2 * self.d_state * self.d_model
            self.params["x_proj_back.weight"] = truncated_normal(rng, (width, self.d_model), 1.0 / self.d_model)  # (2NH, H)
            self.params["x_proj_back.bias"] = np.zeros(width)                                                   # (2NH,)

    def init_state(self, batch):
        """Zero state (batch, N) complex128."""
        return np.zeros((check_positive_int(batch, "batch"), self.d_state), np.complex128)

    # --------------------------------------------------------------------- the discrete system
    def Lambda(self):
        """Λ (N,) complex128: reparametrised (stablessm), then clipped (clip_eigs)."""
        p = self.params
        Lambda_re = stablessm(p["Lambda_re"]) if self.config["reparam"] == "stablessm" else p["Lambda_re"]
        if self.config["clip_eigs"]:
            Lambda_re = np.minimum(Lambda_re, CLIP_RE)
        return Lambda_re + 1j * p["Lambda_im"]                                           # (N,)

    def discrete_system(self, x, tau=None):
        """(Ā_t (b, L, N), B̄_t u_t = γ̄_t ⊙ (B_t u_t) (b, L, N), C_t (b, L, H, N)) for the input x (b, L, H)."""
        p, N, H, r = self.params, self.d_state, self.d_model, self.dt_rank
        proj = x @ p["x_proj.weight"].T + p["x_proj.bias"]                               # (b, L, r + 4NH)
        s, B_hat, C_hat = proj[..., :r], proj[..., r:r + 2 * N * H], proj[..., r + 2 * N * H:]
        B_hat = B_hat.reshape(x.shape[:2] + (N, H, 2))                                   # (b, L, N, H, 2)
        C_hat = C_hat.reshape(x.shape[:2] + (H, N, 2))                                   # (b, L, H, N, 2)
        B = B_hat[..., 0] + 1j * B_hat[..., 1]                                           # (b, L, N, H)
        C = C_hat[..., 0] + 1j * C_hat[..., 1]                                           # (b, L, H, N)
        dt = self.config["step_rescale"] * softplus(s @ p["dt_proj.weight"].T + p["dt_proj.bias"])   # (b, L, N)
        # softplus underflows to 0 below z ≈ −745: Δ_t >= the smallest normal float (same Ā = 1, γ̄ ≈ 0).
        # A NaN Δ_t comes only from a NaN input (check_finite=False), which reaches y through B_t u_t anyway.
        dt = np.nan_to_num(np.maximum(dt, DT_FLOOR), nan=1.0)                            # (b, L, N)
        Lambda_bar, gamma_bar = discretize(self.Lambda(), dt, self.discretization, tau)  # (b, L, N)
        Bu = gamma_bar * np.einsum("blnh,blh->bln", B, x)                                # (b, L, N)
        return Lambda_bar, Bu, C

    def C_back(self, x):
        """The backward read-out C^b_t = x_proj_back(u_t): x (b, L, H) → (b, L, H, N) complex (SPEC §4.12)."""
        C_hat = x @ self.params["x_proj_back.weight"].T + self.params["x_proj_back.bias"]  # (b, L, 2NH)
        C_hat = C_hat.reshape(x.shape[:2] + (self.d_model, self.d_state, 2))             # (b, L, H, N, 2)
        return C_hat[..., 0] + 1j * C_hat[..., 1]                                        # (b, L, H, N)

    def read_out(self, states, x, C, states_back=None, C_back=None):
        """y = κ·Re(C_t x_t) + D ⊙ u_t: states (b, L, N), x (b, L, H), C (b, L, H, N) → (b, L, H).
        Bidirectional: + κ·Re(C^b_t h^b_t), states_back (b, L, N), C_back (b, L, H, N) (SPEC §4.12)."""
        y = self.kappa * np.einsum("blhn,bln->blh", C, states).real + self.params["D"] * x   # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * np.einsum("blhn,bln->blh", C_back, states_back).real
        return y

    # --------------------------------------------------------------------- calls
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, N) complex128) with return_state=True (S5 paper eqs. 2–6
        with input-dependent Δ_t, B_t, C_t; Event-SSM's τ).

        x: real (b, L, H); lengths: (b,) ints (state after step len−1; valid outputs ignore the padding);
        integration_timesteps τ: (b, L) >= 0 (event gaps); initial_state: (b, N); method: a §3 scan method
        ("fft" is refused: no convolution view).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method,
                                           check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, Bu, C = self.discrete_system(x, tau)                                 # (b, L, N), (b, L, H, N)
        # ---- the recurrence
        states = scan(Lambda_bar, Bu, h0, method=method)                                 # (b, L, N)
        states_back = backward_states(lambda u, t: scan(*self.discrete_system(u, t)[:2], method=method),
                                      x, lengths, tau) if self.bidirectional else None   # (b, L, N), SPEC §4.12
        y = self.read_out(states, x, C, states_back, self.C_back(x) if self.bidirectional else None)  # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N)).
        inplace=True writes the new state into the given array itself and returns that array (values as
        inplace=False; the state must be a writeable complex128 ndarray)."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        given, state = state, check_state(state, (x.shape[0], self.d_state), name="state")
        if inplace:
            check_inplace(given, state, name="state")
        Lambda_bar, Bu, C = self.discrete_system(x, tau)                                 # (b, 1, N)
        new_state = Lambda_bar[:, 0] * state + Bu[:, 0]                                  # (b, N)
        y_t = self.read_out(new_state[:, None], x, C)[:, 0]                              # (b, H)
        return y_t, returned_state(given, new_state, inplace)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 (b, N) complex or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__. Re-runs the
        forward, then: y = κ Re(C_t x_t) + D u → the reverse scan (SPEC §3) → γ̄_t ⊙ B_t u_t and the discretisation
        at the selective Δ_t → softplus, dt_proj → x_proj (Δ, B_t, C_t all come from it) → u; Λ through
        clip_eigs and the stablessm map. Bidirectional: x_proj_back (the backward read-out C^b_t), and
        `backward_direction_vjp`'s G_λ, G_Δt, G_drive added to the forward direction's (SPEC §4.12, §11).
        """
        check_call(self, initial_state, False)                                             # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p, N, H, r = self.params, self.d_state, self.d_model, self.dt_rank
        batch, L, _ = x.shape
        proj = contract("blh,fh->blf", x, p["x_proj.weight"]) + p["x_proj.bias"]         # (b, L, r + 4NH)
        s, B_hat, C_hat = proj[..., :r], proj[..., r:r + 2 * N * H], proj[..., r + 2 * N * H:]
        B_hat, C_hat = B_hat.reshape(batch, L, N, H, 2), C_hat.reshape(batch, L, H, N, 2)
        B, C = B_hat[..., 0] + 1j * B_hat[..., 1], C_hat[..., 0] + 1j * C_hat[..., 1]     # (b, L, N, H), (b, L, H, N)
        z = s @ p["dt_proj.weight"].T + p["dt_proj.bias"]                                  # (b, L, N)
        dt = np.maximum(self.config["step_rescale"] * softplus(z), DT_FLOOR)              # (b, L, N)
        Lambda = self.Lambda()                                                             # (N,)
        drive = contract("blnh,blh->bln", B, x)                                            # (b, L, N) = B_t u_t
        states = diagonal_states(Lambda, dt, self.discretization, tau, drive, h0)          # (b, L, N)
        # y = κ Re(C_t x_t) + D u_t
        grad_C = self.kappa * grad_y[..., None] * np.conj(states)[:, :, None, :]           # (b, L, H, N)
        grad_states = self.kappa * contract("blhn,blh->bln", np.conj(C), grad_y)           # (b, L, N)
        grads = {"D": contract("blh,blh->h", grad_y, x)}                                   # (H,)
        grad_Lambda, grad_dt, grad_drive, grad_h0 = diagonal_states_vjp(
            Lambda, dt, self.discretization, tau, drive, h0, states, grad_states)          # (N,), (b, L, N), …
        if self.bidirectional:          # + κ Re(C^b_t h^b_t), C^b_t = x_proj_back(u_t); Λ, Δ_t, B_t shared (SPEC §4.12)
            states_back = backward_direction_states(Lambda, dt, self.discretization, tau, drive, lengths)  # (b, L, N)
            grad_C_back = self.kappa * grad_y[..., None] * np.conj(states_back)[:, :, None, :]   # (b, L, H, N)
            grad_C_hat = np.stack([grad_C_back.real, grad_C_back.imag], axis=-1).reshape(batch, L, 2 * H * N)
            grads["x_proj_back.weight"] = contract("blf,blh->fh", grad_C_hat, x)            # (2NH, H)
            grads["x_proj_back.bias"] = grad_C_hat.sum(axis=(0, 1))                         # (2NH,)
            grad_back, grad_dt_back, grad_drive_back = backward_direction_vjp(
                Lambda, dt, self.discretization, tau, drive, lengths, states_back,
                self.kappa * contract("blhn,blh->bln", np.conj(self.C_back(x)), grad_y))     # (N,), (b, L, N), …
            grad_Lambda, grad_dt, grad_drive = grad_Lambda + grad_back, grad_dt + grad_dt_back, grad_drive + grad_drive_back
            grad_x = contract("blf,fh->blh", grad_C_hat, p["x_proj_back.weight"])          # (b, L, H)
        else:
            grad_x = 0.0
        grad_B = grad_drive[..., None] * x[:, :, None, :]                                  # (b, L, N, H)
        grad_x = grad_x + contract("bln,blnh->blh", grad_drive, np.conj(B)).real + p["D"] * grad_y  # (b, L, H)
        # Δ_t = max(step_rescale·softplus(z), floor): softplus' = sigmoid, no gradient where the floor holds
        grad_z = grad_dt * self.config["step_rescale"] * expit(z) * (self.config["step_rescale"] * softplus(z) >= DT_FLOOR)
        grads["dt_proj.weight"] = contract("bln,blr->nr", grad_z, s)                       # (N, r)
        grads["dt_proj.bias"] = grad_z.sum(axis=(0, 1))                                    # (N,)
        grad_proj = np.concatenate([
            grad_z @ p["dt_proj.weight"],                                                  # (b, L, r)
            np.stack([grad_B.real, grad_B.imag], axis=-1).reshape(batch, L, 2 * N * H),   # B̂ (N, H, 2)
            np.stack([grad_C.real, grad_C.imag], axis=-1).reshape(batch, L, 2 * H * N)],  # Ĉ (H, N, 2)
            axis=-1)                                                                       # (b, L, r + 4NH)
        grads["x_proj.weight"] = contract("blf,blh->fh", grad_proj, x)                     # (r + 4NH, H)
        grads["x_proj.bias"] = grad_proj.sum(axis=(0, 1))                                  # (r + 4NH,)
        grad_x = grad_x + contract("blf,fh->blh", grad_proj, p["x_proj.weight"])          # (b, L, H)
        # Λ: Re Λ = clip(stablessm(w) or w), Im Λ = Lambda_im
        w = p["Lambda_re"]
        grad_re = grad_Lambda.real                                                         # (N,)
        if self.config["clip_eigs"]:
            # Note: the clamp passes the gradient where Re Λ <= −1e-4 (torch.clamp's rule at the boundary).
            grad_re = grad_re * (Lambda.real <= CLIP_RE)
        if self.config["reparam"] == "stablessm":
            grad_re = grad_re * 2 * STABLESSM_A * w / (STABLESSM_A * w ** 2 + STABLESSM_B) ** 2
        grads["Lambda_re"], grads["Lambda_im"] = grad_re, grad_Lambda.imag
        return grad_x, parameter_gradients(self, grads), grad_h0
