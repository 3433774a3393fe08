"""Centaurus — diagonal SSM blocks with sub-states, in four connectivity modes (SPEC §4.3), PyTorch mirror.

Mirrors reference/layers/centaurus.py name by name (STYLE 6); the equations, the mode table, the size
rules and the initialisation are the reference's (imported, never re-derived):

    λ_m = −softplus(A_re_raw) + i·A_im,   init A_re_raw = softplus⁻¹(0.5), A_im = π·m (m = 0..M−1)
    x_t = Ā ⊙ x_{t−1} + γ̄ ⊙ (W_in u_t),   y_t = W_out · Re x_t        (κ = 1, real read-out)

| mode      | state    | W_in (letters)          | W_out (letters)                 |
|-----------|----------|-------------------------|---------------------------------|
| neck      | (R, M)   | B repeated over m (nmh) | C_{o,n} E_{n,m} (onm)           |
| pointwise | (R·M,)   | B (nh)                  | C (on)                          |
| dws       | (H, M)   | ones (hm)               | W_mix_{o,h} E_{h,m} (ohm)       |
| full      | (H, H, M)| ones (ohm)              | E (ohm)                         |

Upstream and what it leaves out: as in reference/layers/centaurus.py (no norm/activation/dropout, no D
term, E applied at the read-out, "none" discretisation refused). Differences from the reference, each
for a reason:
* precision follows the parameters (float32/complex64 by default, float64/complex128 after .double());
* `forward` defaults to method="auto" (the fast differentiable scan of torch_backend.scan); the
  reference defaults to "sequential", the definition;
* value checks (finite x, τ >= 0, lengths in range) can be switched off with check_finite=False — on a
  GPU each one waits for the device — and are skipped while torch.compile traces.

Glossary (SPEC §1): b batch, l lag/time, h input channel, o output channel, H d_model,
n block (R = d_state), m sub-state (M = sub_state_dim).
"""
import torch

from reference.layers.centaurus import (CENTAURUS_METHODS, EINSUM_LETTERS, MODE_ALIASES, MODES, check_sizes,
                                        mode_shapes, resolve_mode)
from reference.layers.centaurus import Centaurus as ReferenceCentaurus
from ..discretize import discretize
from ..scan import scan
from ._base import Layer, draw_seed
from ._checks import (LAYER_METHODS, check_input, check_integration_timesteps, check_lengths, check_method,
                      check_positive_int, check_state, check_step_input)
from ._math import fft_causal_conv, final_state, final_state_by_convolution, powers

__all__ = ["MODES", "MODE_ALIASES", "CENTAURUS_METHODS", "EINSUM_LETTERS", "resolve_mode", "check_sizes",
           "mode_shapes", "softplus", "io_maps", "Centaurus"]


def softplus(x):
    """log(1 + e^x), without overflow."""
    return torch.logaddexp(torch.zeros_like(x), x)


# Note: no inverse_softplus / init_centaurus here: parameters are initialised by the reference layer
# (same seed, same NumPy initialisers) and copied (SPEC §7).


def io_maps(params, mode, shapes):
    """The real maps (W_in, W_out) of the module table, from the parameters of one mode."""
    state = shapes["state"]
    if mode == "neck":
        return params["B"][:, None, :].expand(state + tuple(params["B"].shape[1:])), \
            params["C"][:, :, None] * params["E"]                                        # (R, M, H), (H, R, M)
    if mode == "pointwise":
        return params["B"], params["C"]                                                  # (R·M, H), (H, R·M)
    if mode == "dws":
        # Note: new_ones (for np.ones) makes the constant W_in in the parameters' dtype and on their device.
        return params["E"].new_ones(state), params["W_mix"][:, :, None] * params["E"]    # (H, M), (H, H, M)
    if mode == "full":
        return params["E"].new_ones(state), params["E"]                                  # (H, H, M), (H, H, M)
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


class Centaurus(Layer):
    """Centaurus layer: real (b, L, H) -> (b, L, H) in the module's dtype; complex state (b, *state_shape)."""

    reference_class = ReferenceCentaurus
    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, sub_state_dim=16, mode="pointwise", discretization="exp_euler",
                 seed=None):
        super().__init__()
        ref = ReferenceCentaurus(d_model, d_state, sub_state_dim, mode, discretization, seed=draw_seed(seed))
        self._init_from_reference(ref)                                                 # config and parameters
        self.d_model, self.d_state, self.sub_state_dim = ref.d_model, ref.d_state, ref.sub_state_dim
        self.mode, self.discretization = ref.mode, ref.discretization
        self.shapes, self.state_shape, self.subscripts = ref.shapes, ref.state_shape, ref.subscripts

    # --------------------------------------------------------------------- options resolved up front
    def continuous_eigenvalues(self):
        """λ = −softplus(A_re_raw) + i·A_im, complex of the state shape."""
        return -softplus(self.A_re_raw) + 1j * self.A_im

    def discretized(self, tau=None, check_values=True):
        """(Ā, γ̄): state-shaped without τ, (b, L, *state_shape) with τ (b, L)."""
        # Note: check_values (forward passes its check_finite) lets a GPU forward skip the device sync of Δ's check.
        dt = torch.exp(self.log_dt).reshape(self.shapes["dt_view"])                      # broadcasts to the state
        return discretize(self.continuous_eigenvalues(), dt, self.discretization, tau, check_values=check_values)

    def init_state(self, batch):
        return torch.zeros((check_positive_int(batch, "batch"),) + self.state_shape, dtype=self.complex_dtype,
                           device=self.device)

    # --------------------------------------------------------------------- the recurrence
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="auto", check_finite=True):
        # Note: method defaults to "auto" (the fast differentiable scan); the reference's default is "sequential".
        x = check_input(x, self.d_model, check_finite=check_finite, like=self)           # (b, L, H)
        batch, L, _ = x.shape
        lengths = check_lengths(lengths, batch, L, like=self, check_values=check_finite)
        tau = check_integration_timesteps(integration_timesteps, batch, L, like=self,
                                          check_values=check_finite)                    # (b, L) or None
        check_method(method, time_invariant=tau is None and initial_state is None)
        h0 = None if initial_state is None else check_state(initial_state, (batch,) + self.state_shape, like=self)
        # Note: io_maps gets the parameters as a dict of tensors (`params` is a method returning NumPy copies here).
        W_in, W_out = io_maps(dict(self.named_parameters()), self.mode, self.shapes)
        Lambda_bar, gamma_bar = self.discretized(tau, check_values=check_finite)         # (S...) or (b, L, S...)
        drive = torch.einsum(self.subscripts["in"], W_in, x)                                # (b, L, S...) W_in u_t
        if method == "fft":
            y = fft_causal_conv(self.kernel(L), x, "loh,blh->blo")                          # (b, L, H)
            state_kernel = powers(Lambda_bar, L) * gamma_bar                                # (L, S...)
            return (y, final_state_by_convolution(state_kernel, drive, lengths)) if return_state else y
        states = scan(Lambda_bar, gamma_bar * drive, h0, method=method)                     # (b, L, S...)
        y = torch.einsum(self.subscripts["out"], W_out, states.real)                        # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None):
        """One update: x_t real (b, H), state complex (b, *state_shape), τ (b,) or None -> (y_t (b, H), state)."""
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep, like=self)
        state = check_state(state, (x.shape[0],) + self.state_shape, name="state", like=self)
        W_in, W_out = io_maps(dict(self.named_parameters()), self.mode, self.shapes)
        Lambda_bar, gamma_bar = self.discretized(tau)                                      # (S...) or (b, 1, S...)
        new_state = Lambda_bar * state[:, None] + gamma_bar * torch.einsum(self.subscripts["in"], W_in, x)
        y = torch.einsum(self.subscripts["out"], W_out, new_state.real)                     # (b, 1, H)
        return y[:, 0], new_state[:, 0]

    def kernel(self, L):
        """MIMO kernel K_l = W_out Re(Ā^l γ̄) W_in, (L, H_out, H_in); no D term (Centaurus has none)."""
        L = check_positive_int(L, "L")
        W_in, W_out = io_maps(dict(self.named_parameters()), self.mode, self.shapes)
        Lambda_bar, gamma_bar = self.discretized()                                         # (S...)
        basis = (powers(Lambda_bar, L) * gamma_bar).real                                    # (L, S...)
        return torch.einsum(self.subscripts["kernel"], W_out, basis, W_in)                  # (L, H, H)
