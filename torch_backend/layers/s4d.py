"""S4D — diagonal S4 (Gu, Gupta, Goel, Ré 2022, "On the Parameterization and Initialization of Diagonal
State Space Models"), SPEC §4.5, PyTorch mirror of reference/layers/s4d.py (STYLE 6).

Depthwise: every channel h has its own N complex modes (the other half of each conjugate pair is implicit).
    λ_{h,n} = −exp(log_A_re) + i·A_im,     (Ā, γ̄) = discretize(λ, Δ_h, method, τ),   Δ_h = exp(log_dt_h)
    x_{t,h,n} = Ā_{h,n} x_{t−1,h,n} + γ̄_{h,n} B_{h,n} u_{t,h}
    y_{t,h} = 2·Re Σ_n C_{h,n} x_{t,h,n} + D_h u_{t,h}                  (κ = 2)
Re λ = −exp(log_A_re) < 0 for every parameter value, so |Ā| < 1 for every method of SPEC §2.
Initialisation (legs, lin, inv, real) and argument checks: the reference's; the reference layer is built
with the same seed and its params copied. The `none` method is refused (λ is continuous).

Differences from the reference, each for a reason:
* precision follows the parameters (float32/complex64 by default, float64/complex128 after .double());
* `method` defaults to "auto" (the fastest differentiable scan for the device); the reference's default
  is "sequential", the definition;
* value checks (finite input, τ >= 0, lengths in range, Δ > 0) follow `check_finite` and are skipped while
  torch.compile traces (see torch_backend/layers/_checks.py).

Upstream: state-spaces/s4 (`src/models/sequence/kernels/ssm.py` SSMKernelDiag, `dplr.py`, `hippo.py`) and
its standalone `s4d.py`. Leaves out: the block around the kernel (GELU, GLU output, dropout), channels > 1,
n_ssm tying, bandlimiting and the DSS discretisation.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state (modes per channel); einsum b l h n.
"""
import torch

from reference.layers.s4d import S4D as ReferenceS4D
from ..discretize import discretize
from ..discretize_event import discretize_event
from ..scan import scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, convolve, refuse_streaming, two_sided_kernel
from ._checks import LAYER_METHODS, check_inplace, check_positive_int, prepare_call
from ._math import final_state, final_state_by_convolution, powers


# ----------------------------------------------------------------------------- the layer
class S4D(Layer):
    """Diagonal S4: x (b, L, H) real → y (b, L, H) in the module's dtype; complex state (b, H, N)."""

    reference_class = ReferenceS4D
    kappa = 2
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, init="legs", discretization="zoh", dt_min=1e-3, dt_max=1e-1, bidirectional=False,
                 seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceS4D(d_model, d_state, init, discretization, dt_min, dt_max, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.d_state, self.discretization = ref.d_model, ref.d_state, ref.discretization
        self.state_shape, self.bidirectional = ref.state_shape, ref.bidirectional

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None, check_values=True):
        """(Ā, γ̄, B (H, N), C (H, N) complex, D (H,) real) for timesteps τ (b, L) or None, in the module's
        precision; Ā, γ̄: (H, N) without τ, (b, L, H, N) with τ.
        Note: `check_values` (Δ and τ by value, a device sync on GPU) is torch's; forward passes check_finite."""
        # Note: the parameters are module attributes here (self.log_dt for the reference's p["log_dt"]).
        Lambda = -torch.exp(self.log_A_re) + 1j * self.A_im                  # (H, N)
        dt = torch.exp(self.log_dt)[:, None]                                  # (H, 1)
        Lambda_bar, gamma_bar = discretize(Lambda, dt, self.discretization, tau, check_values=check_values)
        return Lambda_bar, gamma_bar, self.B_re + 1j * self.B_im, self.C_re + 1j * self.C_im, self.D

    def read_out(self, states, x, states_back=None):
        """y = 2 Re Σ_n C x_t + D ⊙ u_t: states (b, L, H, N) complex, x (b, L, H) → y (b, L, H) (or one step).
        Bidirectional: + 2 Re Σ_n C_back h^b_t, states_back (b, L, H, N) (SPEC §4.12)."""
        # Note: while autograd is off κ·C is formed once (Layer._cached); κ = 2 scales exactly.
        kappa_C = self._cached("kappa_C", lambda: self.kappa * (self.C_re + 1j * self.C_im))   # (H, N)
        y = torch.addcmul(torch.einsum("hn,...hn->...h", kappa_C, states).real, self.D, x)    # (b, L, H)
        if states_back is not None:
            y = y + self.kappa * torch.einsum("hn,...hn->...h", self.C_back_re + 1j * self.C_back_im, states_back).real
        return y

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                return_state=False, method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, H, N) complex) with return_state=True.

        Gu et al. 2022 (S4D): the diagonal state space x' = Λx + Bu, y = Cx + Du (eq. (1) of S4) per
        channel, discretised by SPEC §2, with the kernel K_l = 2 Re Σ_n C Ā^l γ̄ B of the Vandermonde
        view (§3 of the S4D paper); with τ the event-stream form of SPEC §4.5.
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, H, N); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        Note: method defaults to "auto": the FFT view when time-invariant (no τ, no initial_state)
        and the input is finite, else the fastest differentiable scan for the device. A depthwise S4D
        has H·N states per step, so its scan streams N times more memory than its output; the FFT view
        works on (b, L, H) (measured 3× faster at (b, L, H, N) = (32, 1024, 128, 64)). The reference
        defaults to "sequential", the definition.
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        if method == "auto" and tau is None and h0 is None:
            # Note: a NaN would spread over the whole FFT, where the scan keeps it causal; unchecked input
            # (check_finite=False, e.g. inside the Classifier) is tested here with one read of x.
            finite = check_finite or (not torch.compiler.is_compiling() and bool(torch.isfinite(x).all()))
            method = "fft" if finite else method
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system(tau, check_values=check_finite)  # (H, N) or (b, L, H, N)
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "lh,blh->blh")   # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar * B            # (L, H, N): response to u
            return (y, final_state_by_convolution(state_kernel, x[..., None], lengths)) if return_state else y
        # Note: torch.einsum needs one dtype, so the real input is cast to the complex dtype of B.
        Bu = torch.einsum("hn,blh->blhn", B, x.to(B.dtype))                          # (b, L, H, N)
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * Bu, h0, method=method)                 # (b, L, H, N)
        states_back = None
        if self.bidirectional:                                                       # SPEC §4.12
            def run(u, t):                                                           # the recurrence from a zero state
                Lambda_bar_t, gamma_bar_t, _, _, _ = self.discrete_system(t, check_values=check_finite)
                return scan(Lambda_bar_t, gamma_bar_t * torch.einsum("hn,blh->blhn", B, u.to(B.dtype)), method=method)
            states_back = backward_states(run, x, lengths, tau)                      # (b, L, H, N)
        y = self.read_out(states, x, states_back)                                    # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, H, N), τ (b,) or None → (y_t (b, H), new state (b, H, N)).
        inplace=True: the new state is written into `state` itself, which is returned (autograd off)."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, self.state_shape)  # (b, 1, H), (b, H, N)
        # Note: Λ, Δ and the discrete system without τ are formed once while autograd is off (Layer._cached);
        # with τ only Ā_t, γ̄_t (b, H, N) are formed per event (discretize_event), and the new state is written
        # into the buffer of B u.
        Lambda, dt, Lambda_bar, gamma_bar, B = self._cached("step_system", self._step_system)  # (H, N), (H, 1), …
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x[:, 0], state, tau, Lambda, dt, Lambda_bar, gamma_bar, B)
        if tau is not None:
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar)  # (b, H, N)
        Bu = torch.einsum("hn,bh->bhn", B, x[:, 0].to(B.dtype))                    # (b, H, N)
        new_state = Bu.mul_(gamma_bar).addcmul_(Lambda_bar, state)                   # (b, H, N): γ̄ ⊙ Bu + Ā ⊙ x
        return self.read_out(new_state, x[:, 0]), new_state

    def _step_inplace(self, x, state, tau, Lambda, dt, Lambda_bar, gamma_bar, B):
        """`step(..., inplace=True)`: x (b, H), the checked state (b, H, N), written over and returned.
        Note: torch only: Ā_t, γ̄_t (discretize_event's out=), the event in the complex dtype and B u are
        formed in workspaces (Layer._workspace), so nothing state-sized is allocated per event; the reference
        forms the new state, then copies it into the given array."""
        if tau is not None:
            out, scratch = self._event_workspaces(state)
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar,
                                                     out=out, scratch=scratch)        # (b, H, N)
        u = self._workspace("u", x.shape, B.dtype).copy_(x)                          # (b, H) complex
        drive = torch.mul(B, u[:, :, None], out=self._workspace("drive", state.shape, state.dtype))  # (b, H, N) B u
        state.mul_(Lambda_bar).add_(drive.mul_(gamma_bar))                       # (b, H, N): Ā ⊙ x + γ̄ ⊙ B u
        return self.read_out(state, x), state

    def _step_system(self):
        """(Λ (H, N), Δ (H, 1), Ā, γ̄, B (H, N)) of `step`: the τ-independent arrays (Ā, γ̄ without τ; γ̄
        complex)."""
        Lambda = -torch.exp(self.log_A_re) + 1j * self.A_im                  # (H, N)
        dt = torch.exp(self.log_dt)[:, None]                                  # (H, 1)
        Lambda_bar, gamma_bar, B, _, _ = self.discrete_system()              # (H, N) ×3
        # γ̄ in the complex dtype (it is real for exp_euler and dirac): a real factor would be converted on
        # every event by the in-place product.
        return Lambda, dt, Lambda_bar, gamma_bar.to(Lambda_bar.dtype), B

    def kernel(self, L):
        """K (L, H) real: K_{l,h} = 2 Re Σ_n C Ā^l γ̄ B + [l = 0]·D_h; y = depthwise causal_conv(K, x)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, B, C, D = self.discrete_system()                      # (H, N)
        K = self.kappa * torch.einsum("hn,lhn->lh", C * gamma_bar * B, powers(Lambda_bar, L)).real  # (L, H)
        K[0] += D
        if self.bidirectional:                                                       # (2L − 1, H), SPEC §4.12
            C_back = self.C_back_re + 1j * self.C_back_im                            # (H, N)
            K = two_sided_kernel(K, self.kappa * torch.einsum("hn,lhn->lh", C_back * gamma_bar * B,
                                                              powers(Lambda_bar, L)).real)
        return K

    def init_state(self, batch):
        """Zero state (batch, H, N), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"),) + self.state_shape, dtype=self.complex_dtype,
                           device=self.device)
