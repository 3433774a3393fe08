"""LSSL — the dense, continuous-time Linear State-Space Layer with a HiPPO-LegS matrix (SPEC §4.4), PyTorch mirror.

Mirrors reference/layers/lssl.py name by name (STYLE 6); the equations and the initialisation are the
reference's (imported, never re-derived). Each feature h is its own single-input system with N real
states, all sharing A and B:

    x_{t,h} = Ā_h x_{t−1,h} + B̄_h u_{t,h}               (Ā_h, B̄_h = discretize_dense(A, B, Δ_h), dense N×N)
    z_{t,h,m} = C_{h,m}·x_{t,h} + D_{h,m} u_{t,h}       (M = channels outputs per feature)
    y_t = W_out · gelu(z_t flattened over (h, m)) + b_out

Paper, upstream and what it leaves out: as in reference/layers/lssl.py. A and B are the reference's
`frozen` params: here they are persistent buffers (so `state_dict()` keys still equal the reference
params keys), and A becomes an nn.Parameter with learn_A=True. Methods: "sequential" (`scan_dense`,
the default, as in the reference) and "fft" (kernel view). Differences from the reference, each for a reason:
* precision follows the parameters (float32 by default, float64 after .double());
* `discretize_per_step` discretises every step in one batched call instead of once per distinct value
  (np.unique has a data-dependent size: a device sync, and a graph break under torch.compile);
* value checks can be switched off with check_finite=False and are skipped while torch.compile traces.

Glossary (SPEC §1): b batch, l lag/time, h feature (H = d_model), n state (N = d_state),
m output channel (M = channels), o output feature.
"""
import torch

from reference.layers.lssl import LSSL as ReferenceLSSL
from ..discretize import discretize_dense
from ..nn import gelu
from ..scan import scan_dense
from ._base import Layer, draw_seed
from ._checks import (check_input, check_integration_timesteps, check_lengths, check_method, check_positive_int,
                      check_state, check_step_input)
from ._math import fft_causal_conv, final_state, final_state_by_convolution

__all__ = ["discretize_per_step", "LSSL"]


def discretize_per_step(A, B, dt, method):
    """Dense (Ā, B̄) for every step size in the tensor `dt` (any shape S); a zero step gives (I, 0).
    Returns (S..., N, N) and (S..., N)."""
    # Note: one batched discretize_dense over all steps (no np.unique, see the module docstring); a zero
    # step is discretised at the safe Δ = 1 and then replaced, so neither the value nor its gradient is NaN.
    positive = dt > 0                                                             # (S...)
    safe_dt = torch.where(positive, dt, torch.ones_like(dt))                      # (S...)
    A_bar, B_bar = discretize_dense(A, B, safe_dt, method, check_values=False)    # (S..., N, N), (S..., N)
    identity = torch.eye(A.shape[0], dtype=A_bar.dtype, device=A_bar.device)     # (N, N)
    A_bar = torch.where(positive[..., None, None], A_bar, identity)
    B_bar = torch.where(positive[..., None], B_bar, torch.zeros_like(B_bar))
    return A_bar, B_bar


class LSSL(Layer):
    """LSSL layer: real (b, L, H) -> (b, L, H) in the module's dtype; real state of shape (b, H, N)."""

    reference_class = ReferenceLSSL
    methods = ("sequential", "fft")

    def __init__(self, d_model, d_state, channels=1, dt_min=1e-3, dt_max=0.1, discretization="bilinear",
                 learn_A=False, seed=None):
        super().__init__()
        ref = ReferenceLSSL(d_model, d_state, channels, dt_min, dt_max, discretization, learn_A,
                            seed=draw_seed(seed))
        self._init_from_reference(ref, buffers=ref.frozen)     # frozen params become persistent buffers
        self.d_model, self.d_state, self.channels = ref.d_model, ref.d_state, ref.channels
        self.discretization, self.learn_A, self.frozen = ref.discretization, ref.learn_A, ref.frozen
        self.state_shape = ref.state_shape

    # --------------------------------------------------------------------- options resolved up front
    def discretized(self, tau=None):
        """(Ā, B̄): (H, N, N), (H, N) without τ; (b, L, H, N, N), (b, L, H, N) with τ (b, L)."""
        dt = torch.exp(self.log_dt)                                              # (H,)
        dt = dt if tau is None else tau[:, :, None] * dt                       # (H,) or (b, L, H)
        return discretize_per_step(self.A, self.B, dt, self.discretization)

    def check_scan_method(self, method, time_invariant):
        if method not in self.methods:
            raise ValueError(f"LSSL method must be one of {', '.join(self.methods)} (its transitions are dense "
                             f"N×N matrices, so the diagonal scans do not apply); got {method!r}")
        return check_method(method, time_invariant)

    def read_out(self, z):
        """y = W_out · gelu(z flattened over (h, m)) + b_out: z (b, L, H, M) -> (b, L, H)."""
        W_out = self.W_out.reshape(self.d_model, self.d_model, self.channels)            # (H, H, M)
        return torch.einsum("ohm,blhm->blo", W_out, gelu(z)) + self.b_out

    def init_state(self, batch):
        return torch.zeros((check_positive_int(batch, "batch"),) + self.state_shape, dtype=self.dtype,
                           device=self.device)

    # --------------------------------------------------------------------- the recurrence
    def scan_states(self, A_bar, drive, h0=None):
        """All states x_{t,h} = Ā_h x_{t−1,h} + drive_{t,h}: one dense scan, every feature h at once.

        A_bar: (H, N, N) or (b, L, H, N, N); drive: (b, L, H, N); h0: (b, H, N) or None. Returns (b, L, H, N).
        """
        return scan_dense(A_bar, drive, h0)

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="sequential", check_finite=True):
        x = check_input(x, self.d_model, check_finite=check_finite, like=self)           # (b, L, H)
        batch, L, _ = x.shape
        lengths = check_lengths(lengths, batch, L, like=self, check_values=check_finite)
        tau = check_integration_timesteps(integration_timesteps, batch, L, like=self,
                                          check_values=check_finite)                    # (b, L) or None
        self.check_scan_method(method, time_invariant=tau is None and initial_state is None)
        h0 = None if initial_state is None else check_state(initial_state, (batch,) + self.state_shape, self.dtype,
                                                            like=self)
        C, D = self.C, self.D
        if method == "fft":
            z = fft_causal_conv(self.kernel(L), x, "lhm,blh->blhm")                        # (b, L, H, M)
            y = self.read_out(z)                                                           # (b, L, H)
            return (y, final_state_by_convolution(self.state_kernel(L), x[..., None], lengths)) if return_state else y
        A_bar, B_bar = self.discretized(tau)                                               # (…, H, N, N), (…, H, N)
        states = self.scan_states(A_bar, B_bar * x[..., None], h0)                         # (b, L, H, N)
        z = torch.einsum("hmn,blhn->blhm", C, states) + D * x[..., None]                   # (b, L, H, M)
        y = self.read_out(z)                                                               # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None):
        """One update: x_t real (b, H), state real (b, H, N), τ (b,) or None -> (y_t (b, H), state (b, H, N))."""
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep, like=self)
        state = check_state(state, (x.shape[0],) + self.state_shape, self.dtype, name="state", like=self)
        A_bar, B_bar = self.discretized(tau)                                               # (…, H, N, N), (…, H, N)
        new_state = torch.einsum("...nk,...k->...n", A_bar, state[:, None]) + B_bar * x[..., None]  # (b, 1, H, N)
        z = torch.einsum("hmn,blhn->blhm", self.C, new_state) + self.D * x[..., None]
        return self.read_out(z)[:, 0], new_state[:, 0]

    # --------------------------------------------------------------------- the kernel view
    def state_kernel(self, L):
        """Impulse response of the state, Ā_h^l B̄_h: (L, H, N), from the same dense scan."""
        A_bar, B_bar = self.discretized()                                                  # (H, N, N), (H, N)
        impulse = B_bar.new_zeros((1, L, self.d_model, self.d_state))                      # (1, L, H, N)
        impulse[0, 0] = B_bar
        return self.scan_states(A_bar, impulse)[0]                                         # (L, H, N)

    def kernel(self, L):
        """Kernel of the pre-activation z: K_l = C·Ā^l B̄ + D·[l = 0], (L, H, M); then y = read_out(z)."""
        L = check_positive_int(L, "L")
        K = torch.einsum("hmn,lhn->lhm", self.C, self.state_kernel(L))                     # (L, H, M)
        K[0] += self.D
        return K
