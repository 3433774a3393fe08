"""MultiresConv: the multiresolution convolutional memory (Shi, Wang & Fox, ICML 2023) — SPEC §4.7, PyTorch mirror.

Mirrors reference/layers/multiresconv.py name by name (STYLE 6); the equations, the read-out plan, the depth
rule and the initialisation are the reference's (imported, never re-derived):

    (g ⋆_d u)_t = Σ_{j<k} g_j · u_{t−j·d}        causal, u_{<0} = 0; taps in LAG order (tap j has lag j·d)
    a⁽⁰⁾ = x;   for l = 1..J, d_l = 2^(l−1):   b⁽ˡ⁾ = g1 ⋆_{d_l} a⁽ˡ⁻¹⁾,   a⁽ˡ⁾ = g0 ⋆_{d_l} a⁽ˡ⁻¹⁾
    fading   y_t = w₀·a⁽ᴶ⁾_t + Σ_l w_{J+1−l}·b⁽ˡ⁾_t + w_{J+1}·x_t
    uniform  y_t = w₀·a⁽ᴶ⁾_t + Σ_l Σ_{i<n_l} w_{c_l+i}·b⁽ˡ⁾_{t−i·2^l} + w_m·x_t

Differences from the reference, each for a reason:
* the tree runs channels first, (b, H, L), so that every shift is along the contiguous axis; `tree`
  transposes once in and once out (the shift-and-add itself is the reference's; upstream code calls a
  dilated conv1d, a cross-correlation, so it stores its filters flipped: its h0 is our g0 reversed);
* precision follows the parameters (float32 by default, float64 after .double()).
State: the last R − 1 = (k−1)(2^J − 1) inputs per channel — it grows with the receptive field, unlike an LRNN.
Glossary (SPEC §1): b batch, L length, H d_model, l lag (in einsum strings); k kernel_size, J depth,
R receptive field.
"""
import numpy as np
import torch
import torch.nn.functional as F

from reference.layers.multiresconv import MultiresConv as ReferenceMultiresConv, check_no_timesteps
from ..discretize import all_finite
from ._base import Layer, draw_seed
from ._checks import check_inplace, check_positive_int, check_state, check_step_input, prepare_call
from ._math import fft_causal_conv


# ----------------------------------------------------------------------------- the tree
def causal_dilated_conv(u, g, dilation):
    """(g ⋆_d u)_t = Σ_j g[:, j] · u_{t − j·d}, u_{<0} = 0. u (b, H, L), g (H, k) lag order. Returns (b, H, L)."""
    # Note: shift-and-add, one elementwise op per tap. torch's dilated depthwise conv1d has the same forward
    # speed, but its CPU backward opens many small parallel regions: 6 s instead of 0.7 s per training step
    # at (b, L, H) = (32, 1024, 128) with OMP_WAIT_POLICY=PASSIVE (0.9 s instead of 0.7 s without it).
    L = u.shape[-1]
    y = g[:, 0, None] * u                                                           # (b, H, L)
    for j in range(1, g.shape[1]):
        lag = j * dilation
        if lag < L:
            y = y + g[:, j, None] * F.pad(u[..., :L - lag], (lag, 0))               # u_{t − lag}, zeros before 0
    return y


def multires_tree(x, g0, g1, depth):
    """The undecimated tree: (a⁽ᴶ⁾ (b, H, L), [b⁽¹⁾, ..., b⁽ᴶ⁾] each (b, H, L)). Note: channels first."""
    approximation, details = x, []
    for l in range(1, depth + 1):
        dilation = 2 ** (l - 1)
        details.append(causal_dilated_conv(approximation, g1, dilation))           # b⁽ˡ⁾ (b, H, L)
        approximation = causal_dilated_conv(approximation, g0, dilation)          # a⁽ˡ⁾ (b, H, L)
    return approximation, details


def read_memory(x, approximation, details, w, plan):
    """y_t = w₀·a⁽ᴶ⁾_t + Σ_(l, n, c) Σ_{i<n} w_{c+i}·b⁽ˡ⁾_{t−i·2^l} + w_last·x_t. Returns (b, H, L) (channels first)."""
    y = w[:, 0, None] * approximation + w[:, -1, None] * x                       # (b, H, L)
    for l, count, column in plan:
        y = y + causal_dilated_conv(details[l - 1], w[:, column:column + count], 2 ** l)
    return y


# ----------------------------------------------------------------------------- the layer
class MultiresConv(Layer):
    """Multiresolution convolution mixer (SPEC §4.7), depthwise over H channels; parameters g0, g1, w."""

    reference_class = ReferenceMultiresConv
    accepts_timesteps = False
    no_timesteps_reason = ReferenceMultiresConv.no_timesteps_reason
    methods = ("sequential", "fft")

    def __init__(self, d_model, kernel_size=2, depth=None, max_len=None, memory="fading", memory_size=None,
                 seed=None):
        super().__init__()
        ref = ReferenceMultiresConv(d_model, kernel_size, depth, max_len, memory, memory_size, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.kernel_size, self.depth = ref.d_model, ref.kernel_size, ref.depth
        self.plan, self.receptive_field = ref.plan, ref.receptive_field

    # --------------------------------------------------------------------- the system
    def discrete_system(self, tau=None):
        """(g0 (H, k), g1 (H, k), w (H, width)): the tree's filters and the read-out weights. MultiresConv
        is discrete by construction and has no timesteps: tau must be None."""
        check_no_timesteps(tau, "integration_timesteps")
        return self.g0, self.g1, self.w

    def read_out(self, states, x):
        """y_t = w₀·a⁽ᴶ⁾_t + Σ_(l, n, c) Σ_{i<n} w_{c+i}·b⁽ˡ⁾_{t−i·2^l} + w_last·x_t: states = (a⁽ᴶ⁾, [b⁽¹⁾…b⁽ᴶ⁾]).
        Note: states and x channels first, (b, H, L), as the tree runs here; returns (b, H, L)."""
        approximation, details = states
        return read_memory(x, approximation, details, self.w, self.plan)

    def tree(self, x):
        """The definition: tree then read-out. x (b, L, H) -> y (b, L, H)."""
        # Note: one transpose in and one out; the tree itself runs channels first (see causal_dilated_conv).
        g0, g1, _ = self.discrete_system()
        u = x.transpose(1, 2)                                                      # (b, H, L)
        return self.read_out(multires_tree(u, g0, g1, self.depth), u).transpose(1, 2)

    # --------------------------------------------------------------------- the views
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="sequential", check_finite=True):
        """x real (b, L, H) -> y (b, L, H); with return_state also the last R − 1 inputs (b, R − 1, H).

        Shi, Wang & Fox 2023, §3: the causal undecimated wavelet tree a⁽ˡ⁾ = g0 ⋆ a⁽ˡ⁻¹⁾, b⁽ˡ⁾ = g1 ⋆ a⁽ˡ⁻¹⁾
        with dilation 2^(l−1), read by the fading or uniform memory (the paper's equation numbers were
        not re-checked here; the formulas are those of the module docstring and SPEC §4.7).
        initial_state: the R − 1 inputs preceding x (oldest first), default zeros. With lengths the returned
        history ends at x[:, len − 1]; valid outputs never depend on padding (the tree is causal), padded
        positions hold whatever the padding gives. method: "sequential" (the tree) or "fft" (the kernel).
        """
        x, lengths, _, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        batch, L, _ = x.shape
        if method == "fft":
            y = fft_causal_conv(self.kernel(L), x, "lh,blh->blh")                  # (b, L, H)
        else:
            u = x if h0 is None else torch.cat([h0, x], dim=1)                     # (b, R − 1 + L, H)
            y = self.tree(u)[:, -L:]                                                # (b, L, H)
        if not return_state:
            return y
        # the zero history (b, R − 1, H) follows max_len, not the data: built only when the state is asked for
        history = self.init_state(batch) if h0 is None else h0                     # (b, R − 1, H)
        ends = torch.full((batch,), L, device=x.device) if lengths is None else lengths
        u = torch.cat([history, x], dim=1)                                         # (b, R − 1 + L, H); x_t at t + R − 1
        window = ends[:, None] + torch.arange(self.receptive_field - 1, device=x.device)  # (b, R − 1)
        return y, u[torch.arange(batch, device=x.device)[:, None], window]          # (b, R − 1, H)

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One output from the history: y_t = Σ_{l<R} K_l ⊙ x_{t−l}. x_t (b, H), state (b, R − 1, H).
        inplace=True: the new history is written into `state` itself, which is returned (autograd off)."""
        check_no_timesteps(integration_timestep, "integration_timestep")
        # Note: finiteness is first read with all_finite (no temporaries; the full checks run if it fails), and
        # the kernel is formed once while autograd is off (Layer._cached), not on every event.
        x, _ = check_step_input(x_t, self.d_model, like=self, check_finite=not all_finite(x_t))   # (b, 1, H)
        history = self.check_history(state, x.shape[0], "state", check_finite=not all_finite(state))  # (b, R − 1, H)
        if inplace:
            check_inplace(state, history)
            return self._step_inplace(x[:, 0], history)
        window = torch.cat([history, x], dim=1)                                    # (b, R, H)
        K_oldest_first = self._cached("step_kernel", lambda: self.kernel(self.receptive_field).flip(0))  # (R, H)
        y_t = torch.einsum("lh,blh->bh", K_oldest_first, window)                   # (b, H); window is oldest first
        return y_t, window[:, 1:]

    def _step_inplace(self, x, history):
        """`step(..., inplace=True)`: x (b, H), the checked history (b, R − 1, H), shifted in place and returned.
        Note: torch only: the products K_l ⊙ x_{t−l} and the shifted history pass through one workspace
        (Layer._workspace), so nothing history-sized is allocated per event; the reference forms the new
        history, then copies it into the given array."""
        K_oldest_first = self._cached("step_kernel", lambda: self.kernel(self.receptive_field).flip(0))  # (R, H)
        work = self._workspace("window", history.shape, history.dtype)                   # (b, R − 1, H)
        y_t = torch.mul(K_oldest_first[:-1], history, out=work).sum(dim=1)               # (b, H) the past
        y_t.addcmul_(K_oldest_first[-1], x)                                              # (b, H) + K_0 ⊙ x_t
        work[:, :-1].copy_(history[:, 1:])                                               # (b, R − 2, H)
        history[:, :-1].copy_(work[:, :-1])
        history[:, -1].copy_(x)                                                          # the event joins, newest last
        return y_t, history

    def kernel(self, L):
        """The dense causal kernel (L, H), lag first: the tree's impulse response, zero from lag R on."""
        L = check_positive_int(L, "L")
        impulse = torch.zeros((1, L, self.d_model), dtype=self.dtype, device=self.device)  # (1, L, H)
        impulse[:, 0] = 1.0
        return self.tree(impulse)[0]                                               # (L, H)

    def init_state(self, batch):
        """Zero input history, real (b, R − 1, H), oldest first."""
        batch = check_positive_int(batch, "batch")
        return torch.zeros((batch, self.receptive_field - 1, self.d_model), dtype=self.dtype, device=self.device)

    def check_history(self, state, batch, name="initial_state", check_finite=True):
        """A real input history (b, R − 1, H) in the module's dtype and device."""
        if state.is_complex() if isinstance(state, torch.Tensor) else np.iscomplexobj(state):
            raise TypeError(f"{name} must be real (MultiresConv's state is its input history); got a complex array")
        return check_state(state, (batch, self.receptive_field - 1, self.d_model), self.dtype, name, like=self,
                           check_finite=check_finite)
