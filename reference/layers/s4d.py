"""S4D — diagonal S4 (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal
State Space Models"), SPEC §4.5.

Depthwise: every channel h has its own N complex modes (the other half of each conjugate pair is implicit).
    λ_{h,n} = −exp(log_A_re) + i·A_im,     (Ā, γ̄) = discretize(λ, Δ_h, method, τ),   Δ_h = exp(log_dt_h)
    x_{t,h,n} = Ā_{h,n} x_{t−1,h,n} + γ̄_{h,n} B_{h,n} u_{t,h}
    y_{t,h} = 2·Re Σ_n C_{h,n} x_{t,h,n} + D_h u_{t,h}                  (κ = 2)
Re λ = −exp(log_A_re) < 0 for every parameter value, so |Ā| < 1 for every method of SPEC §2.

Inits (n = 0..N−1; the same for every channel):
    legs  the negative-imaginary half of HiPPO-N of size 2N (`reference.init.hippo_n_diagonalization`),
          B = V⁻¹·B_hippo with Im B clipped to ±2 (state-spaces/s4 `nplr`, B_clip = 2)
    lin   λ = −½ + iπn                                  B = 1
    inv   λ = −½ + i(2N/π)(2N/(2n+1) − 1)               B = 1
    real  λ = −(n+1)                                    B = 1
C: complex normal (each part variance ½); D ~ N(0, 1); log Δ ~ U[log dt_min, log dt_max) per channel.

Bidirectional (SPEC §4.12): shared λ, B, Δ; the backward read-out C_back_re, C_back_im (H, N) drawn like C after
every forward parameter: y = 2 Re Σ_n (C x^f + C_back x^b) + D u.
Upstream: state-spaces/s4 (`src/models/sequence/kernels/ssm.py` SSMKernelDiag, `dplr.py`, `hippo.py`) and
its standalone `s4d.py`. Leaves out: the block around the kernel (GELU, GLU output, dropout), channels > 1,
n_ssm tying, bandlimiting and the DSS discretisation. The `none` method is refused (λ is continuous).
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (modes per channel); einsum b l h n.
"""
import numpy as np

from ..backward import complex_pair, contract, parameter_gradients, prepare_vjp
from ..discretize import METHODS, discretize, discretize_vjp
from ..init import check_dt_range, hippo_legs, hippo_n_diagonalization, log_uniform_dt
from ..kernels.adjoint import depthwise_scan_vjp_fused
from ..scan import scan
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, convolve, refuse_streaming,
                             reverse_within, reversed_gaps, two_sided_kernel)
from ._checks import (LAYER_METHODS, check_choice, check_inplace, check_positive_int, check_state, check_step_input,
                      prepare_call, returned_state)
from ._math import final_state, final_state_by_convolution, powers

S4D_METHODS = tuple(m for m in METHODS if m != "none")
S4D_INITS = ("legs", "lin", "inv", "real")
B_CLIP = 2.0


# ----------------------------------------------------------------------------- initialisers
def s4d_diagonal(init, N):
    """The N modes (λ (N,) complex128, B (N,) complex128) of one channel for an init name."""
    n = np.arange(N)                                                      # (N,)
    if init == "legs":
        Lambda, V = hippo_n_diagonalization(2 * N)                        # (2N,), (2N, 2N)
        _, B_hippo = hippo_legs(2 * N)                                    # (2N,)
        B = V[:, :N].conj().T @ B_hippo                                   # (N,) = V⁻¹B, kept half
        return Lambda[:N], B.real + 1j * np.clip(B.imag, -B_CLIP, B_CLIP)
    if init == "lin":
        Lambda = -0.5 + 1j * np.pi * n
    elif init == "inv":
        Lambda = -0.5 + 1j * (2 * N / np.pi) * (2 * N / (2 * n + 1) - 1)
    elif init == "real":
        Lambda = -(n + 1.0) + 0j
    else:
        raise ValueError(f"init must be one of {', '.join(S4D_INITS)}; got {init!r}")
    return Lambda, np.ones(N, np.complex128)


def s4d_back_params(rng, H, N):
    """The backward read-out C_back (SPEC §4.12), drawn like C right after all forward parameters."""
    return {"C_back_re": rng.normal(0.0, np.sqrt(0.5), (H, N)),           # (H, N)
            "C_back_im": rng.normal(0.0, np.sqrt(0.5), (H, N))}           # (H, N)


def s4d_params(rng, H, N, init, dt_min, dt_max):
    """All S4D parameters (SPEC §4.5), drawn in a fixed order (C, D, log_dt) from `rng`."""
    Lambda, B = s4d_diagonal(init, N)                                     # (N,), (N,)
    return {
        "log_A_re": np.tile(np.log(-Lambda.real), (H, 1)),                # (H, N)
        "A_im": np.tile(Lambda.imag, (H, 1)),                             # (H, N)
        "B_re": np.tile(B.real, (H, 1)), "B_im": np.tile(B.imag, (H, 1)),  # (H, N)
        "C_re": rng.normal(0.0, np.sqrt(0.5), (H, N)),                    # (H, N)
        "C_im": rng.normal(0.0, np.sqrt(0.5), (H, N)),                    # (H, N)
        "D": rng.normal(0.0, 1.0, H),                                     # (H,)
        "log_dt": log_uniform_dt(rng, H, dt_min, dt_max),                 # (H,)
    }


# ----------------------------------------------------------------------------- the layer
class S4D(Layer):
    """Diagonal S4: x (b, L, H) real → y (b, L, H) float64; complex state (b, H, N)."""

    kappa = 2
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, init="legs", discretization="zoh", dt_min=1e-3, dt_max=1e-1, bidirectional=False,
                 seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        check_choice(init, "init", S4D_INITS)
        self.discretization = check_choice(discretization, "discretization", S4D_METHODS)
        dt_min, dt_max = check_dt_range(dt_min, dt_max)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.state_shape = (self.d_model, self.d_state)
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "init": init,
                       "discretization": discretization, "dt_min": dt_min, "dt_max": dt_max,
                       "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = s4d_params(rng, self.d_model, self.d_state, init, dt_min, dt_max)
        if self.bidirectional:
            self.params.update(s4d_back_params(rng, self.d_model, self.d_state))

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, γ̄, B (H, N), C (H, N) complex128, D (H,) float64) for timesteps τ (b, L) or None.

        Ā, γ̄ = discretize(λ, Δ_h, discretization, τ): (H, N) without τ, (b, L, H, N) with τ.
        """
        p = self.params
        Lambda = -np.exp(p["log_A_re"]) + 1j * p["A_im"]                     # (H, N)
        dt = np.exp(p["log_dt"])[:, None]                                     # (H, 1)
        Lambda_bar, gamma_bar = discretize(Lambda, dt, self.discretization, tau)   # (H, N) or (b, L, H, N)
        return Lambda_bar, gamma_bar, p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"], p["D"]

    def read_out(self, states, x, states_back=None):
        """y = 2 Re Σ_n C x_t + D ⊙ u_t: states (b, L, H, N) complex, x (b, L, H) → y (b, L, H) (or one step).
        Bidirectional: + 2 Re Σ_n C_back h^b_t, states_back (b, L, H, N) (SPEC §4.12)."""
        p = self.params
        y = self.kappa * np.einsum("hn,...hn->...h", p["C_re"] + 1j * p["C_im"], states).real + p["D"] * x  # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * np.einsum("hn,...hn->...h", p["C_back_re"] + 1j * p["C_back_im"], states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                 return_state=False, method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, H, N) complex128) with return_state=True.

        Gu et al. 2022 (S4D): the diagonal state space x' = Λx + Bu, y = Cx + Du (eq. (1) of S4) per
        channel, discretised by SPEC §2, with the kernel K_l = 2 Re Σ_n C Ā^l γ̄ B of the Vandermonde
        view (§3 of the S4D paper); with τ the event-stream form of SPEC §4.5.
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, H, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau)                   # (H, N) or (b, L, H, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "lh,blh->blh")   # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar * B            # (L, H, N): response to u
            return (y, final_state_by_convolution(state_kernel, x[..., None], lengths)) if return_state else y
        Bu = np.einsum("hn,blh->blhn", B, x)                                         # (b, L, H, N)
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * Bu, h0, method=method)                 # (b, L, H, N)
        states_back = None
        if self.bidirectional:                                                       # SPEC §4.12
            def run(u, t):                                                           # the recurrence from a zero state
                Lambda_bar_t, gamma_bar_t, _, _, _ = self.discrete_system(t)         # (H, N) or (b, L, H, N)
                return scan(Lambda_bar_t, gamma_bar_t * np.einsum("hn,blh->blhn", B, u), method=method)
            states_back = backward_states(run, x, lengths, tau)                      # (b, L, H, N)
        y = self.read_out(states, x, states_back)                                    # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, H, N), τ (b,) or None → (y_t (b, H), new state (b, H, N)).
        inplace=True: the new state is written into `state` itself (a writeable array of the state's dtype),
        which is returned."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        given = state
        state = check_state(state, (x.shape[0],) + self.state_shape, name="state")
        if inplace:
            check_inplace(given, state)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau)
        Lambda_bar = np.reshape(Lambda_bar, (-1,) + self.state_shape)                # (1 or b, H, N)
        gamma_bar = np.reshape(gamma_bar, (-1,) + self.state_shape)                  # (1 or b, H, N)
        new_state = Lambda_bar * state + gamma_bar * np.einsum("hn,bh->bhn", B, x[:, 0])   # (b, H, N)
        y = self.read_out(new_state, x[:, 0])
        return y, returned_state(given, new_state, inplace)

    def kernel(self, L):
        """K (L, H) float64: K_{l,h} = 2 Re Σ_n C Ā^l γ̄ B + [l = 0]·D_h; y = depthwise causal_conv(K, x)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, B, C, D = self.discrete_system()                      # (H, N)
        K = self.kappa * np.einsum("hn,lhn->lh", C * gamma_bar * B, powers(Lambda_bar, L)).real   # (L, H)
        K[0] += D
        if self.bidirectional:                                                       # (2L − 1, H), SPEC §4.12
            C_back = self.params["C_back_re"] + 1j * self.params["C_back_im"]        # (H, N)
            K = two_sided_kernel(K, self.kappa * np.einsum("hn,lhn->lh", C_back * gamma_bar * B, powers(Lambda_bar, L)).real)
        return K

    def init_state(self, batch):
        """Zero state (batch, H, N) complex128."""
        return np.zeros((check_positive_int(batch, "batch"),) + self.state_shape, np.complex128)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 (b, H, N) complex or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__.
        Discretises, then the recurrence's adjoint (read-out → reverse scan of SPEC §3 → B u), whose definition is
        `reference.backward.depthwise_scan_vjp`, runs as its fused fast path (`reference.kernels.adjoint`, tested
        equal to it); then the discretisation → log_A_re, A_im, log_dt, B, C, D.
        """
        check_call(self, initial_state, False)                                         # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p, method = self.params, self.discretization
        Lambda = -np.exp(p["log_A_re"]) + 1j * p["A_im"]                                   # (H, N)
        dt = np.exp(p["log_dt"])[:, None]                                                  # (H, 1)
        B, C = p["B_re"] + 1j * p["B_im"], p["C_re"] + 1j * p["C_im"]                      # (H, N)
        # x_t = Ā x_{t−1} + γ̄ B u_t,  y = 2 Re Σ_n C x_t + D u_t
        Lambda_bar, gamma_bar = discretize(Lambda, dt, method, tau)                        # (H, N) or (b, L, H, N)
        grad_Lambda_bar, grad_gamma_bar, grad_B, grad_C, grad_x, grad_h0 = depthwise_scan_vjp_fused(
            Lambda_bar, gamma_bar, B, C, self.kappa, x, grad_y, h0)                         # …, (b, L, H), (b, H, N)
        grad_Lambda, grad_dt = discretize_vjp(Lambda, dt, method, tau, grad_Lambda_bar, grad_gamma_bar)
        grads = complex_pair("C", grad_C)                                                  # (H, N)
        if self.bidirectional:          # + 2 Re Σ_n C_back h^b_t: shared λ, B, Δ (SPEC §4.12)
            # the backward direction is the same recurrence on each row's reversed valid prefix with the reversed
            # gaps; a reversal within lengths is its own inverse
            tau_back = reversed_gaps(tau, lengths)                                         # (b, L) or None
            Lambda_bar, gamma_bar = discretize(Lambda, dt, method, tau_back)               # (H, N) or (b, L, H, N)
            grad_Lambda_bar, grad_gamma_bar, grad_B_back, grad_C_back, grad_x_back, _ = depthwise_scan_vjp_fused(
                Lambda_bar, gamma_bar, B, p["C_back_re"] + 1j * p["C_back_im"], self.kappa,
                reverse_within(x, lengths), reverse_within(grad_y, lengths))
            grad_Lambda_back, grad_dt_back = discretize_vjp(Lambda, dt, method, tau_back, grad_Lambda_bar,
                                                            grad_gamma_bar)
            grads.update(complex_pair("C_back", grad_C_back))                             # (H, N)
            grad_Lambda, grad_dt = grad_Lambda + grad_Lambda_back, grad_dt + grad_dt_back
            grad_B, grad_x = grad_B + grad_B_back, grad_x + reverse_within(grad_x_back, lengths)
        grads["D"] = contract("blh,blh->h", grad_y, x)                                     # (H,)
        grads["log_A_re"] = -np.exp(p["log_A_re"]) * grad_Lambda.real                       # (H, N)
        grads["A_im"] = grad_Lambda.imag                                                    # (H, N)
        grads["log_dt"] = (grad_dt * dt)[:, 0]                                              # (H,)
        grads.update(complex_pair("B", grad_B))                                            # (H, N)
        grad_x = grad_x + p["D"] * grad_y                                                   # (b, L, H)
        return grad_x, parameter_gradients(self, grads), grad_h0
