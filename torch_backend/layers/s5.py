"""S5 — simplified state space layer (Smith, Warrington, Linderman 2023), with event streams (Event-SSM), SPEC §4.2,
PyTorch mirror of reference/layers/s5.py (STYLE 6).

    (Ā_t, γ̄_t) = discretize(Λ, Δ, method, τ_t),   Δ = step_rescale·exp(log_dt)        (SPEC §2)
    x_t = Ā_t ⊙ x_{t−1} + γ̄_t ⊙ (B̃ u_t)
    y_t = κ·Re(C̃ x_t) + D ⊙ u_t,    κ = 2 with conj_sym (one state per conjugate pair stored), else 1

One class serves fixed-step sequences (τ = None) and event streams (integration_timesteps τ, the gap
before each event; Schöne et al. 2024, "Scalable event-by-event processing ... with deep SSMs").
Initialisation and argument checks: the reference's (block-diagonal HiPPO-N, C_init choices, blocks rule);
the reference layer is built with the same seed and its params copied.
clip_eigs clamps Re Λ ≤ −1e-4 in the forward pass (the parameters are left as they are).
The `none` method is refused: Λ here is continuous-time, and using it as a discrete Ā would be unstable.

Differences from the reference, each for a reason:
* precision follows the parameters (float32/complex64 by default, float64/complex128 after .double());
* `method` defaults to "auto" (the fastest differentiable scan for the device); the reference's default
  is "sequential", the definition;
* value checks (finite input, τ >= 0, lengths in range, Δ > 0) follow `check_finite` and are skipped while
  torch.compile traces (see torch_backend/layers/_checks.py).

Upstream: lindermanlab/S5 (`ssm.py` S5SSM, `ssm_init.py`); Event-SSM (`event_ssm/ssm.py`) for τ.
Leaves out: the bidirectional variant, the surrounding block (norm, GLU, dropout) and per-block dt sharing.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (stored), P local state size; einsum b l h n o p.
"""
import torch

from reference.layers.s5 import CLIP_RE, S5 as ReferenceS5
from ..discretize import discretize
from ..discretize_event import discretize_event
from ..scan import scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, convolve, refuse_streaming, two_sided_kernel
from ._checks import LAYER_METHODS, check_inplace, check_positive_int, prepare_call
from ._math import final_state, final_state_by_convolution, powers


# ----------------------------------------------------------------------------- the layer
class S5(Layer):
    """S5 / event S5: x (b, L, H) real → y (b, L, H) in the module's dtype; complex state (b, N)."""

    reference_class = ReferenceS5
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, discretization="zoh", conj_sym=False, blocks=1, dt_min=1e-3, dt_max=0.1,
                 step_rescale=1.0, C_init="trunc_standard_normal", clip_eigs=False, bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceS5(d_model, d_state, discretization, conj_sym, blocks, dt_min, dt_max, step_rescale, C_init,
                          clip_eigs, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state, self.discretization = ref.d_model, ref.d_state, ref.discretization
        self.kappa, self.bidirectional = ref.kappa, ref.bidirectional

    # --------------------------------------------------------------------- parameters → system
    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None, check_values=True):
        """(Ā, γ̄, B̃ (N, H), C̃ (H, N) complex, D (H,) real) for timesteps τ (b, L) or None, in the module's
        precision; Ā, γ̄: (N,) without τ, (b, L, N) with τ; clip_eigs clamps Re Λ <= −1e-4 first.
        Note: `check_values` (Δ and τ by value, a device sync on GPU) is torch's; forward passes check_finite."""
        # Note: the parameters are module attributes here (self.log_dt for the reference's p["log_dt"]).
        Lambda_re = torch.clamp(self.Lambda_re, max=CLIP_RE) if self.config["clip_eigs"] else self.Lambda_re
        Lambda = Lambda_re + 1j * self.Lambda_im                             # (N,)
        dt = self.config["step_rescale"] * torch.exp(self.log_dt)            # (N,)
        Lambda_bar, gamma_bar = discretize(Lambda, dt, self.discretization, tau, check_values=check_values)
        return Lambda_bar, gamma_bar, self.B_re + 1j * self.B_im, self.C_re + 1j * self.C_im, self.D

    def read_out(self, states, x, states_back=None, scratch=None):
        """y = κ Re(C̃ x_t) + D ⊙ u_t: states (b, L, N) complex, x (b, L, H) → y (b, L, H) (or one step).
        Bidirectional: + κ Re(C_back h^b_t), states_back (b, L, N) (SPEC §4.12).
        scratch: None, or a complex (b, H) workspace that receives κ C̃ x_t (one step, autograd off; torch only:
        the memory of an in-place step)."""
        # Note: while autograd is off κ·C is formed once (Layer._cached); κ ∈ {1, 2} scales exactly.
        kappa_C = self._cached("kappa_C", lambda: self.kappa * (self.C_re + 1j * self.C_im))   # (H, N)
        Cx = torch.einsum("hn,...n->...h", kappa_C, states) if scratch is None else \
            torch.mm(states, kappa_C.t(), out=scratch)                                       # (b, L, H) or (b, H)
        y = torch.addcmul(Cx.real, self.D, x)                                                # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * torch.einsum("hn,...n->...h", self.C_back_re + 1j * self.C_back_im, states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                return_state=False, method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, N) complex) with return_state=True.

        Smith et al. 2023 (S5), §2–3: the continuous diagonalised MIMO system, its discretisation and
        the discrete recurrence with the read-out y = κ Re(C̃ x) + D u (κ = 2 under conj_sym); with τ the
        event-stream (Event-SSM) form of SPEC §4.2.
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        Note: method defaults to "auto" (the fastest differentiable scan for the device); the
        reference defaults to "sequential", the definition.
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau, check_values=check_finite)  # (N,) or (b, L, N)
        # Note: torch.einsum needs one dtype, so the real input is cast to the complex dtype of B.
        Bu = torch.einsum("nh,blh->bln", B, x.to(B.dtype))                           # (b, L, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")  # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar                # (L, N)
            return (y, final_state_by_convolution(state_kernel, Bu, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * Bu, h0, method=method)                 # (b, L, N)
        states_back = None
        if self.bidirectional:                                                       # SPEC §4.12
            def run(u, t):                                                           # the recurrence from a zero state
                Lambda_bar_t, gamma_bar_t, _, _, _ = self.discrete_system(t, check_values=check_finite)  # (N,) or (b, L, N)
                return scan(Lambda_bar_t, gamma_bar_t * torch.einsum("nh,blh->bln", B, u.to(B.dtype)), method=method)
            states_back = backward_states(run, x, lengths, tau)                      # (b, L, N)
        y = self.read_out(states, x, states_back)                                    # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N)).
        inplace=True: the new state is written into `state` itself, which is returned (autograd off)."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, (self.d_state,))  # (b, 1, H), (b, N)
        # Note: Λ, Δ and the discrete system without τ are formed once while autograd is off (Layer._cached);
        # with τ only Ā_t, γ̄_t (b, N) are formed per event (discretize_event), and the new state is written
        # into the buffer of B̃ u.
        Lambda, dt, Lambda_bar, gamma_bar, B = self._cached("step_system", self._step_system)  # (N,) ×4, (N, H)
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x[:, 0], state, tau, Lambda, dt, Lambda_bar, gamma_bar, B)
        if tau is not None:
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar)  # (b, N)
        Bu = torch.einsum("nh,bh->bn", B, x[:, 0].to(B.dtype))                     # (b, N)
        new_state = Bu.mul_(gamma_bar).addcmul_(Lambda_bar, state)                   # (b, N): γ̄ ⊙ B̃u + Ā ⊙ x
        return self.read_out(new_state, x[:, 0]), new_state

    def _step_inplace(self, x, state, tau, Lambda, dt, Lambda_bar, gamma_bar, B):
        """`step(..., inplace=True)`: x (b, H), the checked state (b, N), written over and returned.
        Note: torch only: Ā_t, γ̄_t (discretize_event's out=), the event in the complex dtype, B̃u and C̃ x_t
        are formed in workspaces (Layer._workspace), so nothing state-sized is allocated per event; the
        reference forms the new state, then copies it into the given array."""
        if tau is not None:
            out, scratch = self._event_workspaces(state)
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar,
                                                     out=out, scratch=scratch)        # (b, N)
        u = self._workspace("u", x.shape, B.dtype).copy_(x)                          # (b, H) complex
        drive = torch.mm(u, B.t(), out=self._workspace("drive", state.shape, state.dtype)).mul_(gamma_bar)  # (b, N)
        state.mul_(Lambda_bar).add_(drive)                                           # (b, N): Ā ⊙ x + γ̄ ⊙ B̃u
        return self.read_out(state, x, scratch=self._workspace("Cx", u.shape, u.dtype)), state

    def _step_system(self):
        """(Λ, Δ, Ā, γ̄ (N,), B̃ (N, H)) of `step`: the τ-independent arrays (Ā, γ̄ without τ, complex)."""
        Lambda_re = torch.clamp(self.Lambda_re, max=CLIP_RE) if self.config["clip_eigs"] else self.Lambda_re
        Lambda = Lambda_re + 1j * self.Lambda_im                             # (N,)
        dt = self.config["step_rescale"] * torch.exp(self.log_dt)            # (N,)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system()              # (N,), (N,), (N, H)
        # γ̄ in the complex dtype (it is real for exp_euler and dirac): a real factor would be converted on
        # every event by the in-place product.
        return Lambda, dt, Lambda_bar, gamma_bar.to(Lambda_bar.dtype), B

    def kernel(self, L):
        """K (L, H_out, H_in) real: K_l = κ Re(C̃ diag(Ā^l γ̄) B̃) + [l = 0]·diag(D), y = conv(K, x)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, B, C, D = self.discrete_system()                      # (N,)
        K = self.kappa * torch.einsum("on,ln,nh->loh", C, powers(Lambda_bar, L) * gamma_bar, B).real  # (L, H, H)
        K[0] += torch.diag(D)
        if self.bidirectional:                                                       # (2L − 1, H, H), SPEC §4.12
            C_back = self.C_back_re + 1j * self.C_back_im                            # (H, N)
            K = two_sided_kernel(K, self.kappa * torch.einsum("on,ln,nh->loh", C_back, powers(Lambda_bar, L) * gamma_bar,
                                                              B).real)
        return K

    def init_state(self, batch):
        """Zero state (batch, N), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"), self.d_state), dtype=self.complex_dtype,
                           device=self.device)
