"""LRU — the Linear Recurrent Unit (Orvieto et al. 2023, "Resurrecting Recurrent Neural Networks"), SPEC §4.1,
PyTorch mirror of reference/layers/lru.py (STYLE 6).

    λ = exp(−exp(ν) + i·exp(θ))            (discrete, stable: |λ| = exp(−exp(ν)) < 1 for every ν)
    x_t = λ ⊙ x_{t−1} + (γ ⊙ B) u_t,      γ = exp(gamma_log), initialised to sqrt(1 − |λ|²)
    y_t = Re(C x_t) + D ⊙ u_t              (κ = 1: every state is stored, no conjugate pairs)

λ is already discrete, so the layer has no `discretization` argument. It is written as λ = exp(log λ)
with log λ = −exp(ν) + i·exp(θ); then `discretize(log λ, 1, "dirac", τ)` returns Ā_t = λ^{τ_t} and γ̄ = 1,
which is the event-stream form (SPEC §4.1): the decay is raised to the gap τ_t, the input term is unchanged.
Initialisation: the reference's (the reference layer is built with the same seed and its params copied).

Differences from the reference, each for a reason:
* precision follows the parameters (float32/complex64 by default, float64/complex128 after .double());
* `method` defaults to "auto" (the fastest differentiable scan for the device); the reference's default
  is "sequential", the definition;
* value checks (finite input, τ >= 0, lengths in range) follow `check_finite` and are skipped while
  torch.compile traces (see torch_backend/layers/_checks.py).

Upstream: minimal-LRU (`lru/model.py`: nu_init, theta_init, gamma_log_init, LRU.__call__).
Leaves out: the surrounding MLP/GLU block, normalisation and dropout (they are not the recurrence).
Glossary (SPEC §1): b batch, L length, H d_model, N d_state; einsum letters b l h n o.
"""
import math

import torch

from reference.layers.lru import LRU as ReferenceLRU
from ..discretize import discretize
from ..discretize_event import discretize_event
from ..scan import scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, convolve, refuse_streaming, two_sided_kernel
from ._checks import LAYER_METHODS, check_inplace, check_positive_int, prepare_call
from ._math import final_state, final_state_by_convolution, powers


# ----------------------------------------------------------------------------- the layer
class LRU(Layer):
    """Linear Recurrent Unit: x (b, L, H) real → y (b, L, H) in the module's dtype; complex state (b, N)."""

    reference_class = ReferenceLRU
    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceLRU(d_model, d_state, r_min, r_max, max_phase, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state, self.bidirectional = ref.d_model, ref.d_state, ref.bidirectional

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None, check_values=True):
        """(Ā, γ ⊙ B (N, H), C (H, N) complex, D (H,) real) for timesteps τ (b, L) or None, in the module's
        precision. Ā = λ^τ: (N,) without τ, (b, L, N) with τ.
        Note: `check_values` (τ by value, a device sync on GPU) is torch's; forward passes its check_finite."""
        # Note: the parameters are module attributes here (self.nu_log for the reference's p["nu_log"]).
        log_lambda = -torch.exp(self.nu_log) + 1j * torch.exp(self.theta_log)  # (N,)
        Lambda_bar, _ = discretize(log_lambda, 1.0, "dirac", tau, check_values=check_values)  # (N,) or (b, L, N)
        B = torch.exp(self.gamma_log)[:, None] * (self.B_re + 1j * self.B_im)  # (N, H)
        C = self.C_re + 1j * self.C_im                                     # (H, N)
        return Lambda_bar, B, C, self.D

    def read_out(self, states, x, states_back=None, scratch=None):
        """y = Re(C x_t) + D ⊙ u_t: states (b, L, N) complex, x (b, L, H) → y (b, L, H) (or one step: (b, N), (b, H)).
        Bidirectional: + Re(C_back h^b_t), states_back (b, L, N) (SPEC §4.12).
        scratch: None, or a complex (b, H) workspace that receives C x_t (one step, autograd off; torch only:
        the memory of an in-place step)."""
        # Note: while autograd is off the complex C is formed once (Layer._cached), not on every call.
        C = self._cached("C", lambda: self.C_re + 1j * self.C_im)                 # (H, N)
        Cx = torch.einsum("hn,...n->...h", C, states) if scratch is None else \
            torch.mm(states, C.t(), out=scratch)                                     # (b, L, H) or (b, H) complex
        y = torch.addcmul(Cx.real, self.D, x)                                        # (b, L, H)
        if states_back is not None:
            y = y + torch.einsum("hn,...n->...h", self.C_back_re + 1j * self.C_back_im, states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                return_state=False, method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, N) complex) with return_state=True.

        Orvieto et al. 2023: the recurrence of eq. (1) made linear and diagonal (§3.1–3.2), with the
        exponential parametrisation of λ (§3.3) and the γ normalisation (§3.4).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0, decay λ^τ;
        initial_state: (b, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        Note: method defaults to "auto" (the fastest differentiable scan for the device); the
        reference defaults to "sequential", the definition.
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, B, _, _ = self.discrete_system(tau, check_values=check_finite)   # λ^τ: (N,) or (b, L, N)
        # Note: torch.einsum needs one dtype, so the real input is cast to the complex dtype of B.
        Bu = torch.einsum("nh,blh->bln", B, x.to(B.dtype))                           # (b, L, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")  # (b, L, H)
            return (y, final_state_by_convolution(powers(Lambda_bar, x.shape[1]), Bu, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, Bu, h0, method=method)                             # (b, L, N)
        states_back = backward_states(lambda u, t: scan(self.discrete_system(t, check_values=check_finite)[0],
                                                        torch.einsum("nh,blh->bln", B, u.to(B.dtype)), method=method),
                                      x, lengths, tau) if self.bidirectional else None
        y = self.read_out(states, x, states_back)                                    # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N)).
        inplace=True: the new state is written into `state` itself, which is returned (autograd off)."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, (self.d_state,))  # (b, 1, H), (b, N)
        # Note: log λ, λ and γB are formed once while autograd is off (Layer._cached); with τ only λ^τ (b, N)
        # is formed per event (discretize_event), and the new state is written into the buffer of B u.
        log_lambda, Lambda_bar, B = self._cached("step_system", self._step_system)   # (N,), (N,), (N, H)
        if not inplace:
            if tau is not None:
                Lambda_bar, _ = discretize_event(log_lambda, 1.0, "dirac", tau[:, 0], gamma_bar=1.0)  # (b, N) λ^τ
            new_state = torch.einsum("nh,bh->bn", B, x[:, 0].to(B.dtype)).addcmul_(Lambda_bar, state)  # (b, N)
            return self.read_out(new_state, x[:, 0]), new_state
        check_inplace(given, state)
        # Note: torch's in-place path forms λ^τ, the event in the complex dtype, γB u and C x_t in workspaces
        # (Layer._workspace) and writes λ ⊙ x + γB u over the given state; the reference forms the new state,
        # then copies it into the given array.
        if tau is not None:
            out = (self._workspace("Lambda_bar_t", state.shape, state.dtype), None)   # dirac: γ̄ = 1 is not formed
            Lambda_bar, _ = discretize_event(log_lambda, 1.0, "dirac", tau[:, 0], gamma_bar=1.0, out=out)  # (b, N)
        u = self._workspace("u", x[:, 0].shape, B.dtype).copy_(x[:, 0])              # (b, H) complex
        drive = torch.mm(u, B.t(), out=self._workspace("drive", state.shape, state.dtype))  # (b, N) γB u
        state.mul_(Lambda_bar).add_(drive)                                           # (b, N) λ ⊙ x + γB u
        return self.read_out(state, x[:, 0], scratch=self._workspace("Cx", u.shape, u.dtype)), state

    def _step_system(self):
        """(log λ (N,), λ (N,), γ ⊙ B (N, H)) of `step`: the τ-independent arrays, complex."""
        log_lambda = -torch.exp(self.nu_log) + 1j * torch.exp(self.theta_log)      # (N,)
        Lambda_bar, B, _, _ = self.discrete_system()                                 # (N,), (N, H)
        return log_lambda, Lambda_bar, B

    def kernel(self, L):
        """K (L, H_out, H_in) real: K_l = Re(C diag(λ^l) γB) + [l = 0]·diag(D); y = causal_conv(K, x)."""
        L = check_positive_int(L, "L")
        Lambda_bar, B, C, D = self.discrete_system()                                 # (N,)
        K = torch.einsum("on,ln,nh->loh", C, powers(Lambda_bar, L), B).real          # (L, H, H)
        K[0] += torch.diag(D)
        if self.bidirectional:                                                       # (2L − 1, H, H), SPEC §4.12
            C_back = self.C_back_re + 1j * self.C_back_im                            # (H, N)
            K = two_sided_kernel(K, torch.einsum("on,ln,nh->loh", C_back, powers(Lambda_bar, L), B).real)
        return K

    def init_state(self, batch):
        """Zero state (batch, N), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"), self.d_state), dtype=self.complex_dtype,
                           device=self.device)
