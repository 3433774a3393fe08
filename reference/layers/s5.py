"""S5 — simplified state space layer (Smith, Warrington, Linderman 2023), with event streams (Event-SSM), SPEC §4.2.

    (Ā_t, γ̄_t) = discretize(Λ, Δ, method, τ_t),   Δ = step_rescale·exp(log_dt)        (SPEC §2)
    x_t = Ā_t ⊙ x_{t−1} + γ̄_t ⊙ (B̃ u_t)
    y_t = κ·Re(C̃ x_t) + D ⊙ u_t,    κ = 2 with conj_sym (one state per conjugate pair stored), else 1

One class serves fixed-step sequences (τ = None) and event streams (integration_timesteps τ, the gap
before each event; Schöne et al. 2024, "Scalable event-by-event processing ... with deep SSMs").
Initialisation: block-diagonal HiPPO-N (Λ, V from `reference.init.s5_hippo_blocks`), B̃ = V⁻¹B₀ with
B₀ truncated lecun normal (variance 1/P), C̃ = C₀V, D ~ N(0, 1), log Δ ~ U[log dt_min, log dt_max) per state.
P = 2N with conj_sym, else N; block size b = P / blocks.

C_init (as in the S5 repository):
    trunc_standard_normal  C₀ (H, P) complex, each part truncated normal with variance 1/P; C̃ = C₀V
    lecun_normal           as above with variance 1/(H·P) (jax's fan_in of the (H, P, 2) array); C̃ = C₀V
    complex_normal         C̃ (H, N) drawn directly, each part N(0, ½) (no V)
clip_eigs clamps Re Λ ≤ −1e-4 in the forward pass (the parameters are left as they are).
The `none` method is refused: Λ here is continuous-time, and using it as a discrete Ā would be unstable.

Upstream: lindermanlab/S5 (`ssm.py` S5SSM, `ssm_init.py`); Event-SSM (`event_ssm/ssm.py`) for τ.
Bidirectional (SPEC §4.12): shared Λ, B̃, Δ; the backward read-out C_back drawn like C̃ after the forward params.
Leaves out: the surrounding block (norm, GLU, dropout) and per-block dt sharing.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (stored), P local state size; einsum b l h n o p.
"""
import numpy as np

from ..backward import (backward_direction_states, backward_direction_vjp, complex_pair, contract, diagonal_states,
                        diagonal_states_vjp, parameter_gradients, prepare_vjp)
from ..discretize import METHODS, discretize
from ..init import check_dt_range, check_real, log_uniform_dt, s5_hippo_blocks, truncated_normal
from ..scan import scan
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, convolve, refuse_streaming,
                             two_sided_kernel)
from ._checks import (LAYER_METHODS, check_choice, check_inplace, check_positive_int, check_state, check_step_input,
                      prepare_call, returned_state)
from ._math import final_state, final_state_by_convolution, powers

S5_METHODS = tuple(m for m in METHODS if m != "none")
C_INITS = ("trunc_standard_normal", "lecun_normal", "complex_normal")
CLIP_RE = -1e-4


# ----------------------------------------------------------------------------- initialisers
def check_s5_arguments(discretization, conj_sym, clip_eigs, blocks, d_state, dt_min, dt_max, step_rescale):
    """The constructor arguments S5 and S7 share (S7 is S5 made selective), each checked with an error naming
    the rule. Returns (discretization, blocks, dt_min, dt_max, step_rescale)."""
    discretization = check_choice(discretization, "discretization", S5_METHODS)
    for name, flag in (("conj_sym", conj_sym), ("clip_eigs", clip_eigs)):
        if not isinstance(flag, (bool, np.bool_)):
            raise TypeError(f"{name} must be a bool; got {flag!r}")
    blocks = check_positive_int(blocks, "blocks")
    check_blocks(d_state, blocks, bool(conj_sym))
    dt_min, dt_max = check_dt_range(dt_min, dt_max)
    step_rescale = check_real(step_rescale, "step_rescale", 0.0, low_open=True)
    return discretization, blocks, dt_min, dt_max, step_rescale


def check_blocks(d_state, blocks, conj_sym):
    """blocks must divide P = (2N if conj_sym else N), and b = P / blocks must be even under conj_sym."""
    local_P = 2 * d_state if conj_sym else d_state
    if local_P % blocks:
        raise ValueError(f"blocks must divide the local state size P = {'2·d_state' if conj_sym else 'd_state'} "
                         f"= {local_P}; got blocks={blocks}")
    if conj_sym and (local_P // blocks) % 2:
        raise ValueError(f"with conj_sym=True the block size P/blocks = {local_P // blocks} must be even (each "
                         f"block keeps half of its conjugate pairs): choose blocks dividing d_state={d_state}; "
                         f"got blocks={blocks}")
    return local_P


def s5_read_out_init(rng, H, V, C_init):
    """C̃ (H, N) complex for `C_init` (module table); V (P, N) the eigenvectors of the HiPPO blocks."""
    local_P, N = V.shape
    if C_init == "complex_normal":
        return rng.normal(0.0, np.sqrt(0.5), (H, N)) + 1j * rng.normal(0.0, np.sqrt(0.5), (H, N))   # (H, N)
    variance = 1 / local_P if C_init == "trunc_standard_normal" else 1 / (H * local_P)
    C0 = truncated_normal(rng, (H, local_P), variance) + 1j * truncated_normal(rng, (H, local_P), variance)  # (H, P)
    return C0 @ V                                                         # (H, N)


def s5_back_params(rng, H, N, conj_sym, blocks, C_init):
    """The backward read-out C_back (SPEC §4.12), drawn like C̃ right after all forward parameters."""
    C_back = s5_read_out_init(rng, H, s5_hippo_blocks(N, blocks, conj_sym)[1], C_init)   # (H, N)
    return {"C_back_re": C_back.real.copy(), "C_back_im": C_back.imag.copy()}           # (H, N)


def s5_params(rng, H, N, conj_sym, blocks, dt_min, dt_max, C_init):
    """All S5 parameters (SPEC §4.2), drawn in a fixed order (B₀, C, D, log_dt) from `rng`."""
    Lambda, V = s5_hippo_blocks(N, blocks, conj_sym)                      # (N,), (P, N)
    local_P = V.shape[0]
    B0 = truncated_normal(rng, (local_P, H), 1 / local_P)                  # (P, H)
    B = V.conj().T @ B0                                                   # (N, H) = V⁻¹B₀
    C = s5_read_out_init(rng, H, V, C_init)                              # (H, N)
    return {
        "Lambda_re": Lambda.real.copy(), "Lambda_im": Lambda.imag.copy(),  # (N,)
        "B_re": B.real.copy(), "B_im": B.imag.copy(),                      # (N, H)
        "C_re": C.real.copy(), "C_im": C.imag.copy(),                      # (H, N)
        "D": rng.normal(0.0, 1.0, H),                                      # (H,)
        "log_dt": log_uniform_dt(rng, N, dt_min, dt_max),                  # (N,)
    }


# ----------------------------------------------------------------------------- the layer
class S5(Layer):
    """S5 / event S5: x (b, L, H) real → y (b, L, H) float64; complex state (b, N)."""

    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, discretization="zoh", conj_sym=False, blocks=1, dt_min=1e-3, dt_max=0.1,
                 step_rescale=1.0, C_init="trunc_standard_normal", clip_eigs=False, bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        self.discretization, blocks, dt_min, dt_max, step_rescale = check_s5_arguments(
            discretization, conj_sym, clip_eigs, blocks, self.d_state, dt_min, dt_max, step_rescale)
        check_choice(C_init, "C_init", C_INITS)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.kappa = 2 if conj_sym else 1
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "discretization": discretization,
                       "conj_sym": bool(conj_sym), "blocks": blocks, "dt_min": dt_min, "dt_max": dt_max,
                       "step_rescale": step_rescale, "C_init": C_init, "clip_eigs": bool(clip_eigs),
                       "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = s5_params(rng, self.d_model, self.d_state, bool(conj_sym), blocks, dt_min, dt_max, C_init)
        if self.bidirectional:
            self.params.update(s5_back_params(rng, self.d_model, self.d_state, bool(conj_sym), blocks, C_init))

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, γ̄, B̃ (N, H), C̃ (H, N) complex128, D (H,) float64) for timesteps τ (b, L) or None.

        Ā, γ̄ = discretize(Λ, Δ, discretization, τ): (N,) without τ, (b, L, N) with τ; Δ =
        step_rescale·exp(log_dt); clip_eigs clamps Re Λ <= −1e-4 first.
        """
        p = self.params
        Lambda_re = np.minimum(p["Lambda_re"], CLIP_RE) if self.config["clip_eigs"] else p["Lambda_re"]
        Lambda = Lambda_re + 1j * p["Lambda_im"]                             # (N,)
        dt = self.config["step_rescale"] * np.exp(p["log_dt"])               # (N,)
        Lambda_bar, gamma_bar = discretize(Lambda, dt, self.discretization, tau)   # (N,) or (b, L, N)
        return Lambda_bar, gamma_bar, p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"], p["D"]

    def read_out(self, states, x, states_back=None):
        """y = κ Re(C̃ x_t) + D ⊙ u_t: states (b, L, N) complex, x (b, L, H) → y (b, L, H) (or one step).
        Bidirectional: + κ Re(C_back h^b_t), states_back (b, L, N) (SPEC §4.12)."""
        p = self.params
        y = self.kappa * np.einsum("hn,...n->...h", p["C_re"] + 1j * p["C_im"], states).real + p["D"] * x  # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * np.einsum("hn,...n->...h", p["C_back_re"] + 1j * p["C_back_im"], states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                 return_state=False, method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, N) complex128) with return_state=True.

        Smith et al. 2023 (S5), §2–3: the continuous diagonalised MIMO system, its discretisation and
        the discrete recurrence with the read-out y = κ Re(C̃ x) + D u (κ = 2 under conj_sym); with τ the
        event-stream (Event-SSM) form of SPEC §4.2.
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau)                   # (N,) or (b, L, N)
        Bu = np.einsum("nh,blh->bln", B, x)                                          # (b, L, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")  # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar                # (L, N)
            return (y, final_state_by_convolution(state_kernel, Bu, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * Bu, h0, method=method)                 # (b, L, N)
        states_back = None
        if self.bidirectional:                                                       # SPEC §4.12
            def run(u, t):                                                           # the recurrence from a zero state
                Lambda_bar_t, gamma_bar_t, _, _, _ = self.discrete_system(t)         # (N,) or (b, L, N)
                return scan(Lambda_bar_t, gamma_bar_t * np.einsum("nh,blh->bln", B, u), method=method)  # (b, L, N)
            states_back = backward_states(run, x, lengths, tau)                      # (b, L, N)
        y = self.read_out(states, x, states_back)                                    # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N)).
        inplace=True: the new state is written into `state` itself (a writeable array of the state's dtype),
        which is returned."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        given = state
        state = check_state(state, (x.shape[0], self.d_state), name="state")
        if inplace:
            check_inplace(given, state)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau)
        Lambda_bar = np.reshape(Lambda_bar, (-1, self.d_state))                      # (1 or b, N)
        gamma_bar = np.reshape(gamma_bar, (-1, self.d_state))                        # (1 or b, N)
        new_state = Lambda_bar * state + gamma_bar * np.einsum("nh,bh->bn", B, x[:, 0])   # (b, N)
        y = self.read_out(new_state, x[:, 0])
        return y, returned_state(given, new_state, inplace)

    def kernel(self, L):
        """K (L, H_out, H_in) float64: K_l = κ Re(C̃ diag(Ā^l γ̄) B̃) + [l = 0]·diag(D), y = conv(K, x)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, B, C, D = self.discrete_system()                      # (N,)
        K = self.kappa * np.einsum("on,ln,nh->loh", C, powers(Lambda_bar, L) * gamma_bar, B).real   # (L, H, H)
        K[0] += np.diag(D)
        if self.bidirectional:                                                       # (2L − 1, H, H), SPEC §4.12
            C_back = self.params["C_back_re"] + 1j * self.params["C_back_im"]        # (H, N)
            K = two_sided_kernel(K, self.kappa * np.einsum("on,ln,nh->loh", C_back, powers(Lambda_bar, L) * gamma_bar,
                                                           B).real)
        return K

    def init_state(self, batch):
        """Zero state (batch, N) complex128."""
        return np.zeros((check_positive_int(batch, "batch"), self.d_state), np.complex128)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 (b, N) complex or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__.
        Re-runs the recurrence, then: read-out → reverse scan (SPEC §3) → B̃ u and the discretisation
        (∂Ā/∂Λ, ∂γ̄/∂Λ, ∂Ā/∂Δ, ∂γ̄/∂Δ of `discretize_vjp`) → Λ, log_dt, B̃, C̃, D.
        """
        check_call(self, initial_state, False)                                         # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p, method = self.params, self.discretization
        clipped = self.config["clip_eigs"]
        Lambda_re = np.minimum(p["Lambda_re"], CLIP_RE) if clipped else p["Lambda_re"]    # (N,)
        Lambda = Lambda_re + 1j * p["Lambda_im"]                                           # (N,)
        dt = self.config["step_rescale"] * np.exp(p["log_dt"])                             # (N,)
        B, C = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]                      # (N, H), (H, N)
        drive = contract("nh,blh->bln", B, x)                                             # (b, L, N)
        states = diagonal_states(Lambda, dt, method, tau, drive, h0)                       # (b, L, N)
        # y = κ Re(C̃ x_t) + D u_t
        grads = complex_pair("C", self.kappa * contract("blh,bln->hn", grad_y, np.conj(states)))  # (H, N)
        grads["D"] = contract("blh,blh->h", grad_y, x)                                     # (H,)
        grad_states = self.kappa * contract("hn,blh->bln", np.conj(C), grad_y)            # (b, L, N)
        grad_Lambda, grad_dt, grad_drive, grad_h0 = diagonal_states_vjp(
            Lambda, dt, method, tau, drive, h0, states, grad_states)                        # (N,), (N,), (b, L, N)
        if self.bidirectional:          # + κ Re(C_back h^b_t): shared Λ, B̃, Δ (SPEC §4.12)
            states_back = backward_direction_states(Lambda, dt, method, tau, drive, lengths)   # (b, L, N)
            C_back = p["C_back_re"] + 1j * p["C_back_im"]                                  # (H, N)
            grads.update(complex_pair("C_back", self.kappa * contract("blh,bln->hn", grad_y, np.conj(states_back))))
            grad_back, grad_dt_back, grad_drive_back = backward_direction_vjp(
                Lambda, dt, method, tau, drive, lengths, states_back,
                self.kappa * contract("hn,blh->bln", np.conj(C_back), grad_y))
            grad_Lambda, grad_dt, grad_drive = grad_Lambda + grad_back, grad_dt + grad_dt_back, grad_drive + grad_drive_back
        # Note: the clamp passes the gradient where Re Λ <= −1e-4 (torch.clamp's rule at the boundary).
        grads["Lambda_re"] = grad_Lambda.real * (p["Lambda_re"] <= CLIP_RE if clipped else 1.0)  # (N,)
        grads["Lambda_im"] = grad_Lambda.imag                                               # (N,)
        grads["log_dt"] = grad_dt * dt                                                      # (N,)
        grads.update(complex_pair("B", contract("bln,blh->nh", grad_drive, x)))            # (N, H)
        grad_x = contract("bln,nh->blh", grad_drive, np.conj(B)).real + p["D"] * grad_y    # (b, L, H)
        return grad_x, parameter_gradients(self, grads), grad_h0
