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
  torch.compile traces (see torch_backend/layers/_common.py).

Upstream: minimal-LRU (`lru/model.py`: nu_init, theta_init, gamma_log_init, LRU.__call__).
Leaves out: the surrounding MLP/GLU block, normalisation and dropout (they are not the recurrence).
Glossary (SPEC §1): b batch, L length, H d_model, N d_state; einsum letters b l h n o.
"""
import math

import torch

from reference.layers.lru import LRU as ReferenceLRU
from ..discretize import discretize
from ..scan import scan
from ._base import Layer, draw_seed
from ._checks import (LAYER_METHODS, check_input, check_integration_timesteps, check_lengths, check_method,
                      check_positive_int, check_state, check_step_input)
from ._math import fft_causal_conv, final_state, final_state_by_convolution, powers


# ----------------------------------------------------------------------------- the layer
class LRU(Layer):
    """Linear Recurrent Unit: x (b, L, H) real → y (b, L, H) in the module's dtype; complex state (b, N)."""

    reference_class = ReferenceLRU
    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceLRU(d_model, d_state, r_min, r_max, max_phase, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state = ref.d_model, ref.d_state

    # --------------------------------------------------------------------- parameters → system
    def system(self):
        """(log λ (N,), γ ⊙ B (N, H), C (H, N) complex, D (H,) real) in the module's precision."""
        # Note: the parameters are module attributes here (self.nu_log for the reference's p["nu_log"]).
        log_lambda = -torch.exp(self.nu_log) + 1j * torch.exp(self.theta_log)  # (N,)
        B = torch.exp(self.gamma_log)[:, None] * (self.B_re + 1j * self.B_im)  # (N, H)
        C = self.C_re + 1j * self.C_im                                     # (H, N)
        return log_lambda, B, C, self.D

    def init_state(self, batch):
        """Zero state (batch, N), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"), self.d_state), dtype=self.complex_dtype,
                           device=self.device)

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                return_state=False, method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, N) complex) with return_state=True.

        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0, decay λ^τ;
        initial_state: (b, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        Note: method defaults to "auto" (the fastest differentiable scan for the device); the
        reference defaults to "sequential", the definition.
        """
        x = check_input(x, self.d_model, check_finite=check_finite, like=self)       # (b, L, H)
        batch, L, _ = x.shape
        lengths = check_lengths(lengths, batch, L, like=self, check_values=check_finite)
        tau = check_integration_timesteps(integration_timesteps, batch, L, like=self, check_values=check_finite)
        check_method(method, time_invariant=tau is None and initial_state is None)
        h0 = None if initial_state is None else check_state(initial_state, (batch, self.d_state), like=self)
        log_lambda, B, C, D = self.system()
        Lambda_bar, _ = discretize(log_lambda, 1.0, "dirac", tau, check_values=check_finite)  # λ^τ: (N,) or (b, L, N)
        # Note: torch.einsum needs one dtype, so the real input is cast to the complex dtype of B.
        Bu = torch.einsum("nh,blh->bln", B, x.to(B.dtype))                           # (b, L, N)
        if method == "fft":
            y = fft_causal_conv(self.kernel(L), x, "loh,blh->blo")                   # (b, L, H)
            return (y, final_state_by_convolution(powers(Lambda_bar, L), Bu, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, Bu, h0, method=method)                             # (b, L, N)
        y = torch.einsum("hn,bln->blh", C, states).real + D * x                      # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N))."""
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep, like=self)  # (b, 1, H)
        state = check_state(state, (x.shape[0], self.d_state), name="state", like=self)
        log_lambda, B, C, D = self.system()
        Lambda_bar, _ = discretize(log_lambda, 1.0, "dirac", tau)
        Lambda_bar = torch.reshape(Lambda_bar, (-1, self.d_state))                   # (1 or b, N)
        new_state = Lambda_bar * state + torch.einsum("nh,bh->bn", B, x[:, 0].to(B.dtype))  # (b, N)
        y_t = torch.einsum("hn,bn->bh", C, new_state).real + D * x[:, 0]             # (b, H)
        return y_t, new_state

    def kernel(self, L):
        """K (L, H_out, H_in) real: K_l = Re(C diag(λ^l) γB) + [l = 0]·diag(D); y = causal_conv(K, x)."""
        L = check_positive_int(L, "L")
        log_lambda, B, C, D = self.system()
        Lambda_bar, _ = discretize(log_lambda, 1.0, "dirac")                         # (N,)
        K = torch.einsum("on,ln,nh->loh", C, powers(Lambda_bar, L), B).real          # (L, H, H)
        K[0] += torch.diag(D)
        return K
