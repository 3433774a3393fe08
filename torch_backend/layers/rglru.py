"""RG-LRU — the Real-Gated Linear Recurrent Unit of Griffin/Hawk (De et al. 2024), SPEC §4.9,
PyTorch mirror of reference/layers/rglru.py (STYLE 6).

    i_t = σ(G_in(x_t)),  r_t = σ(G_a(x_t))              block-diagonal gates G(x) = concat_h(x_h W_h + b_h)
    log a_t = −c·r_t·softplus(a_param)                  a_t ∈ (0, 1): the base a = exp(−softplus(a_param))
    h_t = a_t ⊙ h_{t−1} + sqrt(1 − a_t²) ⊙ i_t ⊙ x_t    (paper eqs. 1–4; y_t = h_t: no C, no D, real)

Ā_t = a_t^{τ_t} comes from `discretize(Λ, r_t, "dirac", τ)` with Λ = −c·softplus(a_param) (event form, §4.9);
resets (`resets=` (b, L) bool): a_t ← 0, n_t ← 1. block=True: the Griffin recurrent block, state (b, W, E) =
(conv window of W − 1 values, h) packed. Initialisation and argument checks: the reference's (the reference layer
is built with the same seed and its params copied).

Differences from the reference, each for a reason:
* precision follows the parameters (float32 by default, float64 after .double());
* `method` defaults to "auto" (the fastest differentiable scan for the device); the reference's is "sequential";
* the normaliser's square root has a bounded derivative (upstream `SqrtBoundDerivative`): d sqrt(v)/dv is taken
  as 1/sqrt(max(4v, 1e-6)) ≤ 1000, so a → 1 (1 − a² → 0) cannot blow up a gradient; the forward value is exact.

Upstream: google-deepmind/recurrentgemma (`torch/layers.py` RGLRU, SqrtBoundDerivative, BlockDiagonalLinear, Conv1D;
`torch/modules.py` RecurrentBlock). Glossary (SPEC §1): b batch, L length, H d_model, E recurrence width, W conv
width; einsum letters b l h (head) i j (features in a head) e k (tap).
"""
import torch

from reference.layers.rglru import RGLRU as ReferenceRGLRU
from ..discretize import discretize
from ..scan import SCAN_METHODS, scan
from ._base import Layer, check_step, draw_seed
from ._bidirectional import backward_states, check_call, refuse_streaming
from ._checks import check_inplace, check_positive_int, prepare_call
from ._griffin import block_diagonal, block_diagonal_, causal_conv, check_resets, conv_windows, gelu_tanh
from ._math import final_state, softplus, softplus_

MAX_SQRT_GRADIENT = 1000.0


class BoundedSqrt(torch.autograd.Function):
    """sqrt(v) whose derivative is clipped: 1/sqrt(max(4v, MAX_SQRT_GRADIENT⁻²)) instead of 1/(2 sqrt v)."""

    @staticmethod
    def forward(ctx, v):
        ctx.save_for_backward(v)
        return torch.sqrt(v)

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * v, min=MAX_SQRT_GRADIENT ** -2))


class RGLRU(Layer):
    """RG-LRU (or the Griffin recurrent block): x (b, L, H) real → y (b, L, H) in the module's dtype; real state."""

    reference_class = ReferenceRGLRU
    kappa = 1
    methods = SCAN_METHODS
    no_fft_reason = ReferenceRGLRU.no_fft_reason

    def __init__(self, d_model, num_heads=1, c=8.0, min_rad=0.9, max_rad=0.999, w_init_variance_scale=1.0,
                 block=False, lru_width=None, conv1d_temporal_width=None, final_w_init_variance_scale=None,
                 bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceRGLRU(d_model, num_heads, c, min_rad, max_rad, w_init_variance_scale, block, lru_width,
                             conv1d_temporal_width, final_w_init_variance_scale, bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.num_heads, self.c, self.block = ref.d_model, ref.num_heads, ref.c, ref.block
        self.width, self.conv_width, self.prefix = ref.width, ref.conv_width, ref.prefix
        self.bidirectional = ref.bidirectional

    def _param(self, name):
        """The parameter named like the reference's params key. Note: module attributes here, a dict there."""
        return self.get_parameter(name)

    def state_shape(self, batch):
        """(b, E), or (b, W, E) with block=True (conv window and h packed)."""
        return (batch, self.conv_width, self.width) if self.block else (batch, self.width)

    def init_state(self, batch):
        """Zero state in the module's dtype: (batch, E), or (batch, W, E) with block=True."""
        return torch.zeros(self.state_shape(check_positive_int(batch, "batch")), dtype=self.dtype, device=self.device)

    # --------------------------------------------------------------------- the discrete system
    def recurrence_input(self, x, window0, resets):
        """The recurrence's input u (b, L, E) and the conv windows (b, L, W, E) (block), or (x, None)."""
        if not self.block:
            return x, None
        p = x @ self._param("linear_x.weight").T + self._param("linear_x.bias")                # (b, L, E)
        windows = conv_windows(p, window0, resets)                                        # (b, L, W, E)
        return causal_conv(self._param("conv_1d.w"), self._param("conv_1d.b"), windows), windows   # (b, L, E)

    def discrete_system(self, u, tau=None, resets=None, check_values=True):
        """(Ā_t, n_t ⊙ i_t) for the recurrence input u (b, L, E): Ā_t = a_t^{τ_t}, both (b, L, E)."""
        q = self.prefix
        i = torch.sigmoid(block_diagonal(u, self._param(q + "input_gate.w"), self._param(q + "input_gate.b")))
        r = torch.sigmoid(block_diagonal(u, self._param(q + "a_gate.w"), self._param(q + "a_gate.b")))
        # i, r: (b, L, E)
        rate = -self.c * softplus(self._param(q + "a_param"))                                 # (E,) = log a / r
        # r_t underflows to 0 for very negative gate logits; the smallest normal step gives the same Ā_t = 1.
        # Note: a NaN r_t (NaN input under check_finite=False) stays NaN here, where discretize does not refuse it.
        A_bar, _ = discretize(rate, torch.clamp(r, min=torch.finfo(r.dtype).tiny), "dirac", tau,
                              check_values=check_values)                                 # (b, L, E) = a_t^τ
        n = BoundedSqrt.apply(-torch.expm1(2 * rate * r))                                # (b, L, E) = sqrt(1 − a_t²)
        if resets is not None:
            A_bar = torch.where(resets[..., None], torch.zeros_like(A_bar), A_bar)
            n = torch.where(resets[..., None], torch.ones_like(n), n)
        return A_bar, n * i

    def read_out(self, states, x, states_back=None):
        """y = h (bare), or linear_out(h ⊙ gelu_tanh(linear_y(x))) (block). states (b, L, E) → (b, L, H).
        Bidirectional: states_back (b, L, E) enters with [I | I] (bare) or linear_out_back (block) (SPEC §4.12)."""
        if not self.block:
            return states if states_back is None else states + states_back
        gate = gelu_tanh(x @ self._param("linear_y.weight").T + self._param("linear_y.bias"))     # (b, L, E)
        y = (states * gate) @ self._param("linear_out.weight").T + self._param("linear_out.bias")   # (b, L, H)
        if states_back is not None:
            y = y + (states_back * gate) @ self._param("linear_out_back.weight").T                  # (b, L, H)
        return y

    # --------------------------------------------------------------------- calls
    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="auto", check_finite=True, resets=None):
        """y (b, L, H), or (y, final state) with return_state=True (paper eqs. 1–4; Griffin Fig. 2).

        x: real (b, L, H); lengths: (b,) ints (state after step len−1; valid outputs ignore the padding);
        integration_timesteps τ: (b, L) >= 0 (Ā_t = a_t^τ); initial_state: like init_state(b); method: a §3
        scan method ("fft" is refused: no convolution view); resets: (b, L) bool or None (a_t ← 0, n_t ← 1).
        Note: method defaults to "auto" (the fastest differentiable scan); the reference's is "sequential".
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method,
                                           check_finite)
        check_call(self, initial_state, return_state)
        batch, L, _ = x.shape
        resets = check_resets(resets, (batch, L), like=self)
        if resets is not None:
            refuse_streaming(self, "resets", "a segment start has no backward counterpart in this layer")
        start = self.init_state(batch) if h0 is None else h0
        window0, h_start = (start[:, :-1], start[:, -1]) if self.block else (None, start)
        u, windows = self.recurrence_input(x, window0, resets)                            # (b, L, E)
        A_bar, gain = self.discrete_system(u, tau, resets, check_finite)                 # (b, L, E)
        # ---- the recurrence
        states = scan(A_bar, gain * u, h_start if h0 is not None else None, method=method)   # (b, L, E)
        states_back = None
        if self.bidirectional:                                                            # SPEC §4.12
            def run(v, t):                                                                # from a zero state
                u_v, _ = self.recurrence_input(v, window0, None)                          # (b, L, E)
                A_v, gain_v = self.discrete_system(u_v, t, None, check_finite)            # (b, L, E)
                return scan(A_v, gain_v * u_v, method=method)                             # (b, L, E)
            states_back = backward_states(run, x, lengths, tau)                           # (b, L, E)
        y = self.read_out(states, x, states_back)                                         # (b, L, H)
        if not return_state:
            return y
        h_last = final_state(states, lengths)                                             # (b, E)
        if not self.block:
            return y, h_last
        return y, torch.cat([final_state(windows, lengths)[:, 1:], h_last[:, None]], dim=1)   # (b, W, E)

    def step(self, x_t, state, integration_timestep=None, reset=None, *, inplace=False):
        """One step: x_t (b, H), state like init_state(b), τ (b,) or None, reset (b,) bool or None
        → (y_t (b, H), new state). A reset also empties the conv window (block=True).
        inplace=True (autograd off): the new state is written into `state` itself and `state` is returned (values as
        inplace=False, to rounding); its per-event vectors go to workspace buffers."""
        refuse_streaming(self, "step")
        given = state
        # Note: check_step reads finiteness with one min/max reduction (no state-sized temporaries).
        x, tau, state = check_step(self, x_t, state, integration_timestep, self.state_shape(1)[1:], self.dtype)
        batch = x.shape[0]                                                                # x (b, 1, H)
        resets = None if reset is None else check_resets(reset, (batch,), name="reset", like=self)[:, None]  # (b, 1)
        if inplace:
            check_inplace(given, state)
            return self._step_inplace(x[:, 0], tau, None if resets is None else resets[:, 0], state), state
        window0, h = (state[:, :-1], state[:, -1]) if self.block else (None, state)
        u, windows = self.recurrence_input(x, window0, resets)                            # (b, 1, E)
        A_bar, gain = self.discrete_system(u, tau, resets)                               # (b, 1, E)
        new_h = A_bar[:, 0] * h + gain[:, 0] * u[:, 0]                                   # (b, E)
        y_t = self.read_out(new_h[:, None], x)[:, 0]                                      # (b, H)
        if not self.block:
            return y_t, new_h
        return y_t, torch.cat([windows[:, 0, 1:], new_h[:, None]], dim=1)                 # (b, W, E)

    def _step_inplace(self, x, tau, resets, state):
        """The step of `step(..., inplace=True)`: state (b, E) or (b, W, E) ← the new state for the event x (b, H),
        τ (b, 1) or None and resets (b,) bool or None; returns y_t (b, H), the one new tensor.
        Note: torch only: the formulas of recurrence_input, discrete_system and read_out for one event, with the
        projections, gates, Ā_t and n_t ⊙ i_t in workspace buffers (Layer._workspace; out= products, in-place
        maps, torch's own σ), the conv window shifted in place and h updated in place. Equal to step to rounding."""
        (b, _), E, q = x.shape, self.width, self.prefix
        def scratch(name, *shape):
            return self._workspace(name, shape, x.dtype)                                # the module's (checked)
        h = state[:, -1] if self.block else state                                         # (b, E), a view
        if self.block:
            W = self.conv_width
            window = state[:, :-1]                                                        # (b, W − 1, E), a view
            if resets is not None:
                window.masked_fill_(resets[:, None, None], 0.0)                           # a reset empties the window
            p = torch.addmm(self._param("linear_x.bias"), x, self._param("linear_x.weight").T,
                            out=scratch("p", b, E))                                       # (b, E)
            w = self._param("conv_1d.w")                                                  # (W, E)
            taps = torch.mul(window, w[:-1], out=scratch("taps", b, W - 1, E))            # (b, W − 1, E)
            u = torch.sum(taps, dim=1, out=scratch("u", b, E)).addcmul_(p, w[-1]).add_(self._param("conv_1d.b"))
            for k in range(W - 2):                                                        # the window moves by one
                window[:, k].copy_(window[:, k + 1])
            window[:, W - 2].copy_(p)                                                     # (b, W − 1, E)
        else:
            u = x                                                                         # (b, E)
        heads, width = self.num_heads, E // self.num_heads
        i = block_diagonal_(u, self._param(q + "input_gate.w"), self._param(q + "input_gate.b"),
                            scratch("i", heads, b, width)).sigmoid_()                     # (b, heads, j)
        r = block_diagonal_(u, self._param(q + "a_gate.w"), self._param(q + "a_gate.b"),
                            scratch("r", heads, b, width)).sigmoid_()                     # (b, heads, j)
        rate = self._cached("rate", lambda: -self.c * softplus(self._param(q + "a_param")))   # (E,) log a / r
        z = r.clamp_(min=torch.finfo(r.dtype).tiny).mul_(rate.view(heads, width))         # (b, heads, j) log a_t
        gain = torch.mul(z, 2.0, out=scratch("n", heads, b, width).transpose(0, 1))       # (b, heads, j)
        gain.expm1_().neg_().sqrt_().mul_(i)                                              # n_t ⊙ i_t
        A_bar = (z if tau is None else z.mul_(tau[:, :, None])).exp_()                    # (b, heads, j) a_t^τ
        if resets is not None:                                                            # a_t ← 0, n_t ← 1
            A_bar.masked_fill_(resets[:, None, None], 0.0)
            torch.where(resets[:, None, None], i, gain, out=gain)
        h.unflatten(-1, (heads, width)).mul_(A_bar).addcmul_(gain, u.reshape(b, heads, width))   # (b, heads, j) views
        if not self.block:
            return h.clone()                # y = h (b, H), a copy: the next event overwrites the state
        gate = torch.addmm(self._param("linear_y.bias"), x, self._param("linear_y.weight").T,
                           out=scratch("gate", b, E))                                     # (b, E)
        torch.ops.aten.gelu_(gate, approximate="tanh").mul_(h)                            # h ⊙ gelu_tanh(linear_y x)
        return torch.addmm(self._param("linear_out.bias"), gate, self._param("linear_out.weight").T)   # (b, H)
