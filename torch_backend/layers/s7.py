"""S7 — S5 made selective, with event streams (Soydan et al. 2024; `S5SSM(input_dependent=True)`), SPEC §4.10,
PyTorch mirror of reference/layers/s7.py (STYLE 6).

    [s_t | B̂_t | Ĉ_t] = x_proj(u_t)       widths r, 2NH, 2NH; B_t = B̂[…, 0] + i·B̂[…, 1] (N, H), C_t likewise (H, N)
    Δ_t = step_rescale·softplus(dt_proj(s_t))            (b, L, N): one step per state, through a rank-r bottleneck
    (Ā_t, γ̄_t) = discretize(Λ, Δ_t, method, τ)          (SPEC §2, Δ_A = τ_t·Δ_t; Λ is time-invariant)
    x_t = Ā_t ⊙ x_{t−1} + γ̄_t ⊙ (B_t u_t),   y_t = κ·Re(C_t x_t) + D ⊙ u_t,   κ = 2 with conj_sym

x_proj has H(r + 4NH) weights, O(NH²) (4.2 M at H = 128, N = 64). reparam="stablessm": Re Λ = −1/(w² + ½),
w = Lambda_re; clip_eigs clamps Re Λ ≤ −1e-4 after it. Initialisation and argument checks: the reference's (the
reference layer is built with the same seed and its params copied).

Differences from the reference, each for a reason:
* precision follows the parameters (float32/complex64 by default, float64/complex128 after .double());
* `method` defaults to "auto" (the fastest differentiable scan for the device); the reference's is "sequential".

Upstream: TaylanSoydan/S7 `event_ssm/ssm.py` (S5SSM with input_dependent=True).
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (stored), r dt_rank.
"""
import torch

from reference.layers.s5 import CLIP_RE
from reference.layers.s7 import S7 as ReferenceS7, STABLESSM_A, STABLESSM_B
from ..discretize import discretize
from ..discretize_event import discretize_event
from ..scan import SCAN_METHODS, scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, refuse_streaming
from ._checks import check_inplace, check_positive_int, prepare_call
from ._math import final_state, softplus, softplus_


def stablessm(w):
    """Re Λ = −1/(a·w² + b) (a = 1, b = ½): in [−2, 0) for every real w."""
    return -1.0 / (STABLESSM_A * w ** 2 + STABLESSM_B)


# ----------------------------------------------------------------------------- the layer
class S7(Layer):
    """S7: x (b, L, H) real → y (b, L, H) in the module's dtype; complex state (b, N)."""

    reference_class = ReferenceS7
    methods = SCAN_METHODS
    no_fft_reason = ReferenceS7.no_fft_reason

    def __init__(self, d_model, d_state, discretization="zoh", conj_sym=False, blocks=1, dt_min=1e-3, dt_max=0.1,
                 step_rescale=1.0, clip_eigs=False, reparam="none", dt_rank="auto", bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceS7(d_model, d_state, discretization, conj_sym, blocks, dt_min, dt_max, step_rescale, clip_eigs,
                          reparam, dt_rank, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state, self.discretization = ref.d_model, ref.d_state, ref.discretization
        self.dt_rank, self.kappa, self.bidirectional = ref.dt_rank, ref.kappa, ref.bidirectional

    def init_state(self, batch):
        """Zero state (batch, N), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"), self.d_state), dtype=self.complex_dtype,
                           device=self.device)

    # --------------------------------------------------------------------- the discrete system
    def Lambda(self):
        """Λ (N,) complex: reparametrised (stablessm), then clipped (clip_eigs)."""
        Lambda_re = stablessm(self.Lambda_re) if self.config["reparam"] == "stablessm" else self.Lambda_re
        if self.config["clip_eigs"]:
            Lambda_re = torch.clamp(Lambda_re, max=CLIP_RE)
        return Lambda_re + 1j * self.Lambda_im                                           # (N,)

    def discrete_system(self, x, tau=None, check_values=True):
        """(Ā_t (b, L, N), B̄_t u_t = γ̄_t ⊙ (B_t u_t) (b, L, N), C_t (b, L, H, N)) for the input x (b, L, H)."""
        N, H, r = self.d_state, self.d_model, self.dt_rank
        proj = x @ self.x_proj.weight.T + self.x_proj.bias                               # (b, L, r + 4NH)
        s, B_hat, C_hat = proj[..., :r], proj[..., r:r + 2 * N * H], proj[..., r + 2 * N * H:]
        B_hat = B_hat.reshape(x.shape[:2] + (N, H, 2))                                   # (b, L, N, H, 2)
        C_hat = C_hat.reshape(x.shape[:2] + (H, N, 2))                                   # (b, L, H, N, 2)
        B = torch.complex(B_hat[..., 0], B_hat[..., 1])                                  # (b, L, N, H)
        C = torch.complex(C_hat[..., 0], C_hat[..., 1])                                  # (b, L, H, N)
        dt = self.config["step_rescale"] * softplus(s @ self.dt_proj.weight.T + self.dt_proj.bias)   # (b, L, N)
        # Note: Δ_t >= the smallest normal float of the dtype, as in the reference; a NaN Δ_t (NaN input under
        # check_finite=False) stays NaN here, where discretize does not refuse it.
        dt = torch.clamp(dt, min=torch.finfo(dt.dtype).tiny)                             # (b, L, N)
        Lambda_bar, gamma_bar = discretize(self.Lambda(), dt, self.discretization, tau,
                                           check_values=check_values)                   # (b, L, N)
        # Note: torch.einsum needs one dtype, so the real input is cast to the complex dtype of B.
        Bu = gamma_bar * torch.einsum("blnh,blh->bln", B, x.to(B.dtype))                 # (b, L, N)
        return Lambda_bar, Bu, C

    def C_back(self, x):
        """The backward read-out C^b_t = x_proj_back(u_t): x (b, L, H) → (b, L, H, N) complex (SPEC §4.12)."""
        C_hat = x @ self.x_proj_back.weight.T + self.x_proj_back.bias                    # (b, L, 2NH)
        C_hat = C_hat.reshape(x.shape[:2] + (self.d_model, self.d_state, 2))             # (b, L, H, N, 2)
        return torch.complex(C_hat[..., 0], C_hat[..., 1])                               # (b, L, H, N)

    def read_out(self, states, x, C, states_back=None, C_back=None):
        """y = κ·Re(C_t x_t) + D ⊙ u_t: states (b, L, N), x (b, L, H), C (b, L, H, N) → (b, L, H).
        Bidirectional: + κ·Re(C^b_t h^b_t), states_back (b, L, N), C_back (b, L, H, N) (SPEC §4.12)."""
        y = self.kappa * torch.einsum("blhn,bln->blh", C, states).real + self.D * x       # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * torch.einsum("blhn,bln->blh", C_back, states_back).real
        return y

    # --------------------------------------------------------------------- calls
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, N) complex) with return_state=True (S5 paper eqs. 2–6 with
        input-dependent Δ_t, B_t, C_t; Event-SSM's τ).

        x: real (b, L, H); lengths: (b,) ints (state after step len−1; valid outputs ignore the padding);
        integration_timesteps τ: (b, L) >= 0 (event gaps); initial_state: (b, N); method: a §3 scan method
        ("fft" is refused: no convolution view).
        Note: method defaults to "auto" (the fastest differentiable scan); the reference's is "sequential".
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method,
                                           check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, Bu, C = self.discrete_system(x, tau, check_finite)                   # (b, L, N), (b, L, H, N)
        # ---- the recurrence
        states = scan(Lambda_bar, Bu, h0, method=method)                                 # (b, L, N)
        states_back = backward_states(lambda u, t: scan(*self.discrete_system(u, t, check_finite)[:2], method=method),
                                      x, lengths, tau) if self.bidirectional else None   # (b, L, N), SPEC §4.12
        y = self.read_out(states, x, C, states_back, self.C_back(x) if self.bidirectional else None)  # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, N), τ (b,) or None → (y_t (b, H), new state (b, N)).
        inplace=True (autograd off): the new state is written into `state` itself and `state` is returned (values as
        inplace=False, to rounding); x_proj's output, Δ_t, Ā_t, γ̄_t and B_t u_t go to workspace buffers."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, (self.d_state,))  # (b, 1, H), (b, N)
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x[:, 0], None if tau is None else tau[:, 0], state), state
        # Note: the formulas of discrete_system and read_out for one event, without forming the complex B_t
        # (N, H) and C_t (H, N) (2NH numbers each, H times the state): B_t u_t and Re(C_t x_t) are contracted
        # from the real and imaginary halves of x_proj's output, and Λ is formed once while autograd is off
        # (Layer._cached). Equal to the definition to rounding (the sums run in another order).
        (b, _, H), N, r = x.shape, self.d_state, self.dt_rank
        u = x[:, 0]                                                                      # (b, H)
        # x_proj's three row blocks one by one, so that each output is contiguous (b, N) merge into one batch axis
        W, bias, widths = self.x_proj.weight, self.x_proj.bias, [r, 2 * N * H, 2 * N * H]
        s, B_hat, C_hat = (torch.addmm(c, u, w.T) for w, c in zip(W.split(widths), bias.split(widths)))
        B_hat, C_hat = B_hat.reshape(b, N, H, 2), C_hat.reshape(b, H, N, 2)             # B_t's and C_t's parts
        dt = self.config["step_rescale"] * softplus(torch.addmm(self.dt_proj.bias, s, self.dt_proj.weight.T))
        dt = torch.clamp(dt, min=torch.finfo(dt.dtype).tiny)                            # (b, N)
        Lambda = self._cached("Lambda", self.Lambda)                                     # (N,)
        Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization,
                                                 None if tau is None else tau[:, 0])     # (b, N), (b, N)
        # B_t u_t = Σ_h B̂[n, h, c] u_h as one product per row: B̂ (N, 2H) times u ⊗ I₂ (2H, 2), nothing copied
        u_pairs = torch.diag_embed(u[:, :, None].expand(b, H, 2)).reshape(b, 2 * H, 2)  # (b, 2H, 2)
        Bu = torch.bmm(B_hat.reshape(b, N, 2 * H), u_pairs)                              # (b, N, 2) real, imaginary
        new_state = torch.view_as_complex(Bu).mul_(gamma_bar).addcmul_(Lambda_bar, state)  # (b, N)
        C_hat[..., 1].neg_()                                                             # Re(C x) = Ĉ_0 Re x − Ĉ_1 Im x
        Cx = torch.matmul(C_hat.reshape(b, H, 2 * N), torch.view_as_real(new_state).reshape(b, 2 * N, 1))  # (b, H, 1)
        return torch.addcmul(Cx[..., 0].mul_(self.kappa), self.D, u), new_state

    def _step_inplace(self, u, tau, state):
        """The step of `step(..., inplace=True)`: state (b, N) ← the new state for the event u (b, H) and τ (b,) or
        None; returns y_t (b, H), the one new tensor.
        Note: torch only: the formulas of `step` (B_t u_t and Re(C_t x_t) from the real and imaginary halves of
        x_proj's output) with x_proj's three blocks, Δ_t, Ā_t, γ̄_t (discretize_event's out= form) and B_t u_t in
        workspace buffers (Layer._workspace), and the state updated in place. Equal to step to rounding."""
        (b, H), N, r = u.shape, self.d_state, self.dt_rank
        def scratch(name, *shape, dtype=u.dtype):                        # the module's (checked)
            return self._workspace(name, shape, dtype)
        W, bias, widths = self.x_proj.weight, self.x_proj.bias, [r, 2 * N * H, 2 * N * H]
        s, B_hat, C_hat = (torch.addmm(c, u, w.T, out=scratch(name, b, width)) for w, c, name, width in
                           zip(W.split(widths), bias.split(widths), ("s", "B_hat", "C_hat"), widths))   # (b, ·)
        dt = torch.addmm(self.dt_proj.bias, s, self.dt_proj.weight.T, out=scratch("dt", b, N))          # (b, N)
        softplus_(dt, scratch("dt_scratch", b, N)).mul_(self.config["step_rescale"])
        dt.clamp_(min=torch.finfo(dt.dtype).tiny)                                                        # Δ_t
        Lambda = self._cached("Lambda", self.Lambda)                                                     # (N,)
        complex_ = state.dtype                                                                          # (checked)
        out = (scratch("A_bar", b, N, dtype=complex_), scratch("gamma_bar", b, N, dtype=complex_))       # (b, N)
        work = scratch("discretize", b, N)                                                               # (b, N)
        Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau, out=out,
                                                 scratch=work)                                           # (b, N)
        # B_t u_t = B̂ (N, 2H) times u ⊗ I₂ (2H, 2) per row, u ⊗ I₂ written into a zeroed buffer
        u_pairs = scratch("u_pairs", b, H, 2, 2).zero_()                                                 # (b, H, 2, 2)
        u_pairs[:, :, 0, 0].copy_(u)
        u_pairs[:, :, 1, 1].copy_(u)
        Bu = torch.bmm(B_hat.view(b, N, 2 * H), u_pairs.view(b, 2 * H, 2), out=scratch("Bu", b, N, 2))  # (b, N, 2)
        state.mul_(Lambda_bar).add_(torch.view_as_complex(Bu).mul_(gamma_bar))                           # (b, N)
        C_hat = C_hat.view(b, H, N, 2)                                                                   # C_t's parts
        C_hat[..., 1].neg_()                                                             # Re(C x) = Ĉ_0 Re x − Ĉ_1 Im x
        Cx = torch.matmul(C_hat.view(b, H, 2 * N), torch.view_as_real(state).reshape(b, 2 * N, 1))      # (b, H, 1)
        return Cx[..., 0].mul_(self.kappa).addcmul_(self.D, u)                                           # (b, H)
