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

from reference.layers.centaurus import (CENTAURUS_METHODS, EINSUM_LETTERS, MODE_ALIASES, MODES, OUT_NAMES, check_sizes,
                                        mode_shapes, resolve_mode)
from reference.layers.centaurus import Centaurus as ReferenceCentaurus
from ..discretize import discretize
from ..discretize_event import discretize_event
from ..scan import scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, convolve, refuse_streaming, two_sided_kernel
from ._checks import LAYER_METHODS, check_inplace, check_positive_int, prepare_call
from ._math import final_state, final_state_by_convolution, powers, softplus

__all__ = ["MODES", "MODE_ALIASES", "CENTAURUS_METHODS", "EINSUM_LETTERS", "resolve_mode", "check_sizes",
           "mode_shapes", "softplus", "io_maps", "Centaurus"]


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


def back_maps(params, mode, shapes):
    """(W_in, W_out_back): the mode's maps with the `_back` twins in place of the read-out parameters."""
    return io_maps({**params, **{name: params[f"{name}_back"] for name in OUT_NAMES[mode]}}, mode, shapes)


class Centaurus(Layer):
    """Centaurus layer: real (b, L, H) -> (b, L, H) in the module's dtype; complex state (b, *state_shape)."""

    reference_class = ReferenceCentaurus
    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, sub_state_dim=16, mode="pointwise", discretization="exp_euler",
                 bidirectional=False, seed=None):
        super().__init__()
        ref = ReferenceCentaurus(d_model, d_state, sub_state_dim, mode, discretization, bidirectional,
                                 seed=draw_seed(seed))
        self._init_from_reference(ref)                                                 # config and parameters
        self.d_model, self.d_state, self.sub_state_dim = ref.d_model, ref.d_state, ref.sub_state_dim
        self.mode, self.discretization, self.bidirectional = ref.mode, ref.discretization, ref.bidirectional
        self.shapes, self.state_shape, self.subscripts = ref.shapes, ref.state_shape, ref.subscripts

    # --------------------------------------------------------------------- options resolved up front
    def continuous_eigenvalues(self):
        """λ = −softplus(A_re_raw) + i·A_im, complex of the state shape."""
        return -softplus(self.A_re_raw) + 1j * self.A_im

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None, check_values=True):
        """(Ā, γ̄, W_in, W_out): Ā, γ̄ complex state-shaped without τ, (b, L, *state_shape) with τ (b, L);
        W_in, W_out the real maps of the mode, in the module's precision.
        Note: `check_values` (Δ and τ by value, a device sync on GPU) is torch's; forward passes check_finite."""
        dt = torch.exp(self.log_dt).reshape(self.shapes["dt_view"])                      # broadcasts to the state
        Lambda_bar, gamma_bar = discretize(self.continuous_eigenvalues(), dt, self.discretization, tau,
                                           check_values=check_values)
        # Note: io_maps gets the parameters as a dict of tensors (`params` is a method returning NumPy copies here).
        return (Lambda_bar, gamma_bar) + io_maps(dict(self.named_parameters()), self.mode, self.shapes)

    def read_out(self, states, x, states_back=None):
        """y = W_out Re x_t: states (b, L, *state_shape) complex → y (b, L, H); x is unused (no D term).
        Bidirectional: + W_out_back Re h^b_t, states_back like states (SPEC §4.12)."""
        # Note: while autograd is off W_out is formed once (Layer._cached), not on every call.
        W_out = self._cached("W_out", lambda: io_maps(dict(self.named_parameters()), self.mode, self.shapes)[1])
        y = torch.einsum(self.subscripts["out"], W_out, states.real)                        # (b, L, H)
        if states_back is not None:
            W_out_back = back_maps(dict(self.named_parameters()), self.mode, self.shapes)[1]
            y = y + torch.einsum(self.subscripts["out"], W_out_back, states_back.real)
        return y

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="auto", check_finite=True):
        """y (b, L, H), or (y, final state (b, *state_shape) complex) with return_state=True.

        Centaurus ("Let SSMs be ConvNets", §3: diagonal SSM blocks with sub-states and the contraction
        order of each mode; the paper's equation numbers were not re-checked here): x_t = Ā ⊙ x_{t−1} +
        γ̄ ⊙ (W_in u_t), y_t = W_out Re x_t, in the mode's letters of SPEC §4.3 (no D term).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, *state_shape); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        Note: method defaults to "auto" (the fast differentiable scan); the reference's default is "sequential".
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, gamma_bar, W_in, _ = self.discrete_system(tau, check_values=check_finite)  # (S...) or (b, L, S...)
        drive = torch.einsum(self.subscripts["in"], W_in, x)                                # (b, L, S...) W_in u_t
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")         # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar                       # (L, S...)
            return (y, final_state_by_convolution(state_kernel, drive, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * drive, h0, method=method)                     # (b, L, S...)
        states_back = None
        if self.bidirectional:                                                              # SPEC §4.12
            def run(u, t):                                                                  # from a zero state
                Lambda_bar_t, gamma_bar_t, _, _ = self.discrete_system(t, check_values=check_finite)
                return scan(Lambda_bar_t, gamma_bar_t * torch.einsum(self.subscripts["in"], W_in, u), method=method)
            states_back = backward_states(run, x, lengths, tau)                             # (b, L, S...)
        y = self.read_out(states, x, states_back)                                           # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One update: x_t real (b, H), state complex (b, *state_shape), τ (b,) or None -> (y_t (b, H), state).
        inplace=True: the new state is written into `state` itself, which is returned (autograd off)."""
        refuse_streaming(self, "step")
        given = state
        x, tau, state = check_step(self, x_t, state, integration_timestep, self.state_shape)  # (b, 1, H), (b, S...)
        # Note: λ, Δ, the discrete system without τ and W_in in the complex dtype are formed once while
        # autograd is off (Layer._cached); with τ only Ā_t, γ̄_t (b, S...) are formed per event
        # (discretize_event). The new state is written into the buffer of W_in u (the real read-out may copy
        # Re x, half a state).
        Lambda, dt, Lambda_bar, gamma_bar, W_in = self._cached("step_system", self._step_system)  # (S...), …
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x[:, 0], state, tau, Lambda, dt, Lambda_bar, gamma_bar, W_in)
        if tau is not None:
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar)
            Lambda_bar = Lambda_bar[:, None]                                                # (b, 1, S...)
            gamma_bar = gamma_bar[:, None] if gamma_bar.ndim > Lambda.ndim else gamma_bar  # (b, 1, S...) or (S...)
        drive = torch.einsum(self.subscripts["in"], W_in, x.to(W_in.dtype))                 # (b, 1, S...) W_in u_t
        new_state = drive.mul_(gamma_bar).addcmul_(Lambda_bar, state[:, None])              # (b, 1, S...)
        return self.read_out(new_state, x)[:, 0], new_state[:, 0]

    def _step_inplace(self, x, state, tau, Lambda, dt, Lambda_bar, gamma_bar, W_in):
        """`step(..., inplace=True)`: x (b, H), the checked state (b, S...), written over and returned.
        Note: torch only: Ā_t, γ̄_t (discretize_event's out=), the event in the complex dtype, W_in u and Re x
        are formed in workspaces (Layer._workspace), so nothing state-sized is allocated per event; the
        reference forms the new state, then copies it into the given array."""
        if tau is not None:
            out, scratch = self._event_workspaces(state)
            Lambda_bar, gamma_bar = discretize_event(Lambda, dt, self.discretization, tau[:, 0], gamma_bar,
                                                     out=out, scratch=scratch)        # (b, S...)
        u = self._workspace("u", x.shape, W_in.dtype).copy_(x)                       # (b, H) complex
        drive = self._workspace("drive", state.shape, state.dtype)                   # (b, S...)
        letters = EINSUM_LETTERS[self.mode]["state"]
        if "h" in letters:                                                           # dws, full: W_in u is a broadcast
            torch.mul(W_in, u.reshape((u.shape[0],) + tuple(self.d_model if c == "h" else 1 for c in letters)),
                      out=drive)                                                     # (b, S...)
        else:                                                                        # neck, pointwise: a product over h
            torch.mm(u, W_in.reshape(-1, self.d_model).t(), out=drive.view(u.shape[0], -1))  # (b, S...)
        state.mul_(Lambda_bar).add_(drive.mul_(gamma_bar))                     # (b, S...): Ā ⊙ x + γ̄ ⊙ W_in u
        real = self._workspace("state_real", state.shape, self.dtype).copy_(state.real)  # (b, S...) Re x
        if self.mode == "full":
            return self.read_out(real[:, None], x[:, None])[:, 0], state
        # Note: read_out's y = W_out Re x as one matrix product over the flattened state (the other modes sum
        # over every state axis), which torch.einsum would reach through a copy of W_out.
        W_out = self._cached("W_out", lambda: io_maps(dict(self.named_parameters()), self.mode, self.shapes)[1])
        return torch.mm(real.view(x.shape[0], -1), W_out.reshape(self.d_model, -1).t()), state  # (b, H)

    def _step_system(self):
        """(λ, Δ, Ā, γ̄, W_in) of `step`: the τ-independent arrays (Ā, γ̄ without τ), γ̄ and W_in in the
        complex dtype (γ̄ is real for exp_euler; a real factor would be converted on every event by the
        in-place product)."""
        dt = torch.exp(self.log_dt).reshape(self.shapes["dt_view"])                      # broadcasts to the state
        Lambda_bar, gamma_bar, W_in, _ = self.discrete_system()                            # (S...)
        return (self.continuous_eigenvalues(), dt, Lambda_bar, gamma_bar.to(Lambda_bar.dtype),
                W_in.to(Lambda_bar.dtype).contiguous())                                     # W_in: the mode's map

    def kernel(self, L):
        """MIMO kernel K_l = W_out Re(Ā^l γ̄) W_in, (L, H_out, H_in); no D term (Centaurus has none)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, W_in, W_out = self.discrete_system()                        # (S...)
        basis = (powers(Lambda_bar, L) * gamma_bar).real                                    # (L, S...)
        K = torch.einsum(self.subscripts["kernel"], W_out, basis, W_in)                     # (L, H, H)
        if self.bidirectional:                                                              # (2L − 1, H, H)
            W_out_back = back_maps(dict(self.named_parameters()), self.mode, self.shapes)[1]
            K = two_sided_kernel(K, torch.einsum(self.subscripts["kernel"], W_out_back, basis, W_in))
        return K

    def init_state(self, batch):
        """Zero state (batch, *state_shape), complex64 (complex128 after .double()), on the module's device."""
        return torch.zeros((check_positive_int(batch, "batch"),) + self.state_shape, dtype=self.complex_dtype,
                           device=self.device)
