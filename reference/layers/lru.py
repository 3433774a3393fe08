"""LRU — the Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks"), SPEC §4.1.

    λ = exp(−exp(ν) + i·exp(θ))            (discrete, stable: |λ| = exp(−exp(ν)) < 1 for every ν)
    x_t = λ ⊙ x_{t−1} + (γ ⊙ B) u_t,      γ = exp(gamma_log), initialised to sqrt(1 − |λ|²)
    y_t = Re(C x_t) + D ⊙ u_t              (κ = 1: every state is stored, no conjugate pairs)

λ is already discrete, so the layer has no `discretization` argument. It is written as λ = exp(log λ)
with log λ = −exp(ν) + i·exp(θ); then `discretize(log λ, 1, "dirac", τ)` returns Ā_t = λ^{τ_t} and γ̄ = 1,
which is the event-stream form (SPEC §4.1): the decay is raised to the gap τ_t, the input term is unchanged.
The ring initialisation draws |λ|² uniformly in [r_min², r_max²) and arg λ in [0, max_phase).

Bidirectional (SPEC §4.12): shared λ, γ, B; the backward read-out C_back_re, C_back_im (H, N) drawn like C after
every forward parameter: y_t = Re(C x^f_t + C_back x^b_t) + D ⊙ u_t.
Upstream: minimal-LRU (`lru/model.py`: nu_init, theta_init, gamma_log_init, LRU.__call__).
Leaves out: the surrounding MLP/GLU block, normalisation and dropout (they are not the recurrence).
Glossary (SPEC §1): b batch, L length, H d_model, N d_state; einsum letters b l h n o.
"""
import numpy as np

from ..backward import (backward_direction_states, backward_direction_vjp, complex_pair, contract, diagonal_states,
                        diagonal_states_vjp, parameter_gradients, prepare_vjp)
from ..discretize import discretize
from ..init import check_real
from ..scan import scan
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, convolve, refuse_streaming,
                             two_sided_kernel)
from ._checks import (LAYER_METHODS, check_inplace, check_positive_int, check_state, check_step_input, prepare_call,
                      returned_state)
from ._math import final_state, final_state_by_convolution, powers


# ----------------------------------------------------------------------------- initialisers
def nu_log_init(rng, N, r_min, r_max):
    """nu_log (N,) with |λ|² = u·(r_max² − r_min²) + r_min², u ~ U[0, 1), so |λ| ∈ [r_min, r_max].

    |λ|² is kept in [tiny, 1 − 2⁻⁵³] so nu_log stays finite (u = 0 with r_min = 0 would give +inf).
    """
    u = rng.uniform(0.0, 1.0, N)                                          # (N,)
    radius_sq = np.clip(u * (r_max ** 2 - r_min ** 2) + r_min ** 2, np.finfo(float).tiny, np.nextafter(1.0, 0.0))
    return np.log(-0.5 * np.log(radius_sq))


def theta_log_init(rng, N, max_phase):
    """theta_log (N,) with arg λ = max_phase·u, u ~ U[0, 1) (u = 0 replaced by the smallest float)."""
    u = np.maximum(rng.uniform(0.0, 1.0, N), np.finfo(float).tiny)        # (N,)
    return np.log(max_phase * u)


def gamma_log_init(nu_log, theta_log):
    """gamma_log (N,) = log sqrt(1 − |λ|²): the normaliser that gives unit stationary variance per state."""
    modulus_sq = np.exp(-2 * np.exp(nu_log))                              # |λ|², (N,)
    return 0.5 * np.log1p(-modulus_sq)


def lru_params(rng, H, N, r_min, r_max, max_phase):
    """All LRU parameters (SPEC §4.1), drawn in a fixed order from `rng`."""
    nu_log = nu_log_init(rng, N, r_min, r_max)
    theta_log = theta_log_init(rng, N, max_phase)
    return {
        "nu_log": nu_log,                                                 # (N,)
        "theta_log": theta_log,                                           # (N,)
        "gamma_log": gamma_log_init(nu_log, theta_log),                   # (N,)
        "B_re": rng.normal(0.0, np.sqrt(1 / (2 * H)), (N, H)),            # (N, H)
        "B_im": rng.normal(0.0, np.sqrt(1 / (2 * H)), (N, H)),            # (N, H)
        "C_re": rng.normal(0.0, np.sqrt(1 / N), (H, N)),                  # (H, N)
        "C_im": rng.normal(0.0, np.sqrt(1 / N), (H, N)),                  # (H, N)
        "D": rng.normal(0.0, 1.0, H),                                     # (H,)
    }


def lru_back_params(rng, H, N):
    """The backward read-out C_back (SPEC §4.12), drawn like C right after all forward parameters."""
    return {"C_back_re": rng.normal(0.0, np.sqrt(1 / N), (H, N)),         # (H, N)
            "C_back_im": rng.normal(0.0, np.sqrt(1 / N), (H, N))}         # (H, N)


# ----------------------------------------------------------------------------- the layer
class LRU(Layer):
    """Linear Recurrent Unit: x (b, L, H) real → y (b, L, H) float64; complex state (b, N)."""

    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * np.pi, bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        r_max = check_real(r_max, "r_max", 0.0, 1.0)
        r_min = check_real(r_min, "r_min", 0.0, r_max)
        if r_min == 1.0:
            raise ValueError("r_min must be < 1 (|λ| = 1 is not stable and nu_log would be -inf); got 1.0")
        max_phase = check_real(max_phase, "max_phase", 0.0, low_open=True)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "r_min": r_min, "r_max": r_max,
                       "max_phase": max_phase, "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = lru_params(rng, self.d_model, self.d_state, r_min, r_max, max_phase)
        if self.bidirectional:
            self.params.update(lru_back_params(rng, self.d_model, self.d_state))

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, γ ⊙ B (N, H), C (H, N) complex128, D (H,) float64) for timesteps τ (b, L) or None.

        Ā = λ^τ: (N,) without τ, (b, L, N) with τ (the log λ form, `discretize(log λ, 1, "dirac", τ)`).
        """
        p = self.params
        log_lambda = -np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"])    # (N,)
        Lambda_bar, _ = discretize(log_lambda, 1.0, "dirac", tau)         # (N,) or (b, L, N)
        B = np.exp(p["gamma_log"])[:, None] * (p["B_re"] + 1j * p["B_im"])   # (N, H)
        C = p["C_re"] + 1j * p["C_im"]                                     # (H, N)
        return Lambda_bar, B, C, p["D"]

    def read_out(self, states, x, states_back=None):
        """y = Re(C x_t) + D ⊙ u_t: states (b, L, N) complex, x (b, L, H) → y (b, L, H) (or one step: (b, N), (b, H)).
        Bidirectional: + Re(C_back h^b_t), states_back (b, L, N) (SPEC §4.12)."""
        p = self.params
        y = np.einsum("hn,...n->...h", p["C_re"] + 1j * p["C_im"], states).real + p["D"] * x    # (b, L, H)
        if states_back is not None:
            y = y + np.einsum("hn,...n->...h", p["C_back_re"] + 1j * p["C_back_im"], states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                 return_state=False, method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, N) complex128) with return_state=True.

        Orvieto et al. 2023: the recurrence of eq. (1) made linear and diagonal (§3.1–3.2), with the
        exponential parametrisation of λ (§3.3) and the γ normalisation (§3.4).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0, decay λ^τ;
        initial_state: (b, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, B, _, _ = self.discrete_system(tau)                              # λ^τ: (N,) or (b, L, N)
        Bu = np.einsum("nh,blh->bln", B, x)                                          # (b, L, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")  # (b, L, H)
            return (y, final_state_by_convolution(powers(Lambda_bar, x.shape[1]), Bu, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, Bu, h0, method=method)                             # (b, L, N)
        states_back = backward_states(lambda u, t: scan(self.discrete_system(t)[0], np.einsum("nh,blh->bln", B, u),
                                                        method=method), x, lengths, tau) if self.bidirectional else None
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
        Lambda_bar, B, _, _ = self.discrete_system(tau)
        Lambda_bar = np.reshape(Lambda_bar, (-1, self.d_state))                      # (1 or b, N)
        new_state = Lambda_bar * state + np.einsum("nh,bh->bn", B, x[:, 0])         # (b, N)
        y = self.read_out(new_state, x[:, 0])
        return y, returned_state(given, new_state, inplace)

    def kernel(self, L):
        """K (L, H_out, H_in) float64: K_l = Re(C diag(λ^l) γB) + [l = 0]·diag(D); y = causal_conv(K, x).
        Bidirectional: the two-sided kernel (2L − 1, H, H), index L − 1 + l weighting u_{t−l} (SPEC §4.12)."""
        L = check_positive_int(L, "L")
        Lambda_bar, B, C, D = self.discrete_system()                                 # (N,)
        K = np.einsum("on,ln,nh->loh", C, powers(Lambda_bar, L), B).real             # (L, H, H)
        K[0] += np.diag(D)
        if self.bidirectional:
            C_back = self.params["C_back_re"] + 1j * self.params["C_back_im"]        # (H, N)
            K = two_sided_kernel(K, np.einsum("on,ln,nh->loh", C_back, powers(Lambda_bar, L), B).real)  # (2L − 1, H, H)
        return K

    def init_state(self, batch):
        """Zero state (batch, N) complex128."""
        return np.zeros((check_positive_int(batch, "batch"), self.d_state), np.complex128)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 (b, N) complex or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__.
        Re-runs the recurrence, then: read-out → reverse scan (SPEC §3) → γB and log λ → the stored params.
        """
        check_call(self, initial_state, False)                                         # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p = self.params
        log_lambda = -np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"])                    # (N,)
        gamma = np.exp(p["gamma_log"])                                                     # (N,)
        B, C = gamma[:, None] * (p["B_re"] + 1j * p["B_im"]), p["C_re"] + 1j * p["C_im"]    # (N, H), (H, N)
        drive = contract("nh,blh->bln", B, x)                                             # (b, L, N)
        states = diagonal_states(log_lambda, 1.0, "dirac", tau, drive, h0)                  # (b, L, N)
        # y = Re(C x_t) + D u_t
        grads = complex_pair("C", contract("blh,bln->hn", grad_y, np.conj(states)))        # (H, N)
        grads["D"] = contract("blh,blh->h", grad_y, x)                                     # (H,)
        grad_states = contract("hn,blh->bln", np.conj(C), grad_y)                         # (b, L, N)
        grad_log_lambda, _, grad_drive, grad_h0 = diagonal_states_vjp(
            log_lambda, 1.0, "dirac", tau, drive, h0, states, grad_states)                  # (N,), (b, L, N)
        if self.bidirectional:          # + Re(C_back h^b_t): the backward direction shares λ and γB (SPEC §4.12)
            states_back = backward_direction_states(log_lambda, 1.0, "dirac", tau, drive, lengths)   # (b, L, N)
            C_back = p["C_back_re"] + 1j * p["C_back_im"]                                  # (H, N)
            grads.update(complex_pair("C_back", contract("blh,bln->hn", grad_y, np.conj(states_back))))
            grad_back, _, grad_drive_back = backward_direction_vjp(
                log_lambda, 1.0, "dirac", tau, drive, lengths, states_back,
                contract("hn,blh->bln", np.conj(C_back), grad_y))
            grad_log_lambda, grad_drive = grad_log_lambda + grad_back, grad_drive + grad_drive_back
        grad_B = contract("bln,blh->nh", grad_drive, x)                                    # (N, H) of γ ⊙ B
        grads["nu_log"] = -np.exp(p["nu_log"]) * grad_log_lambda.real                       # (N,)
        grads["theta_log"] = np.exp(p["theta_log"]) * grad_log_lambda.imag                  # (N,)
        grads["gamma_log"] = contract("nh,nh->n", grad_B, np.conj(B)).real                 # (N,)
        grads.update(complex_pair("B", grad_B * gamma[:, None]))                            # (N, H)
        grad_x = contract("bln,nh->blh", grad_drive, np.conj(B)).real + p["D"] * grad_y    # (b, L, H)
        return grad_x, parameter_gradients(self, grads), grad_h0
