"""RG-LRU — the Real-Gated Linear Recurrent Unit of Griffin/Hawk (De et al. 2024), SPEC §4.9.

    i_t = σ(G_in(x_t)),  r_t = σ(G_a(x_t))              block-diagonal gates G(x) = concat_h(x_h W_h + b_h)
    log a_t = −c·r_t·softplus(a_param)                  a_t ∈ (0, 1): the base a = exp(−softplus(a_param))
    h_t = a_t ⊙ h_{t−1} + sqrt(1 − a_t²) ⊙ i_t ⊙ x_t    (paper eqs. 1–4; y_t = h_t: no C, no D, real)

The normaliser n_t = sqrt(1 − a_t²) = sqrt(−expm1(2 log a_t)) keeps a white unit input at unit stationary
variance. Written as a discretisation: log a_t = Λ·r_t with the rate Λ = −c·softplus(a_param) and the selective
step Δ_t = r_t, so `discretize(Λ, r_t, "dirac", τ)` gives Ā_t = exp(τ_t Λ r_t) = a_t^{τ_t} — the event form
(Decision, §4.9): the decay is raised to the gap, the input weight n_t stays the synchronous one. a is discrete
(like LRU): there is no `discretization` argument.
Resets (`resets=` (b, L) bool, upstream `segment_pos == 0`): at a reset a_t ← 0 and n_t ← 1, so h_t = i_t ⊙ x_t.
Default: no reset anywhere (recurrentgemma resets at t = 0 of every fresh sequence: pass resets[:, 0] = True).
Init (the upstream code): a² ~ U[min_rad², max_rad²) (a ring), a_param = log(a⁻¹ − 1) = softplus⁻¹(−log a);
gate weights N(0, w_init_variance_scale/(E/heads)), biases 0.

block=True: the Griffin recurrent block (recurrentgemma `RecurrentBlock`), E = lru_width:
    y = gelu_tanh(linear_y(x)),  u_t = conv_1d.b + Σ_{s<W} conv_1d.w[W−1−s] ⊙ p_{t−s},  p = linear_x(x)
    out = linear_out(RGLRU(u) ⊙ y)                       (p_{t−s} enters only if no reset lies in (t−s, t])
τ enters only the recurrence: the convolution taps act on the event index.
State: h (b, E) float64; block=True packs the conv window with it into one array (b, W, E):
state[:, :W−1] = the last W − 1 values of p (oldest first, zeros at the start), state[:, W−1] = h.
Bidirectional (SPEC §4.12): the backward direction is the whole definition (block: linear_x, the Conv1D, the gates
and the recurrence) run on each row's reversed valid prefix with reversed gaps, sharing every weight; the read-out
takes the concatenated (h^f, h^b) with doubled input width: bare y_t = [I | I]·[h^f_t; h^b_t] = h^f_t + h^b_t (no
parameter); block y_t = [linear_out | linear_out_back]·[h^f_t ⊙ g_t; h^b_t ⊙ g_t] + bias, linear_out_back.weight
(H, E) drawn like linear_out after every forward parameter. Resets are refused with it (no backward segment rule).
Views: no convolution view (a_t depends on the input): every §3 scan method, and repeated `step`.

Upstream: google-deepmind/recurrentgemma (`torch/layers.py` RGLRU, BlockDiagonalLinear, Conv1D, rnn_param_init;
`torch/modules.py` RecurrentBlock). Leaves out: the float32 accumulator, caches as dicts, the residual blocks and
MLP around the recurrent block. Glossary (SPEC §1): b batch, L length, H d_model, E recurrence width, W conv
width; einsum letters b l h (head) i j (features in a head) e k (tap).
"""
import numpy as np
from scipy.special import expit

from ..backward import parameter_gradients, prepare_vjp
from ..discretize import discretize, discretize_vjp
from ..nn import linear_vjp
from ..init import check_real
from ..scan import SCAN_METHODS, scan, scan_vjp
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, refuse_streaming, reverse_within,
                             reversed_gaps)
from ._checks import check_inplace, check_positive_int, check_state, check_step_input, prepare_call, returned_state
from ._griffin import (block_diagonal, block_diagonal_vjp, block_params, causal_conv, check_resets, conv_windows,
                       gelu_tanh, gelu_tanh_derivative)
from ._math import final_state, softplus

MIN_SQRT_ARGUMENT = 1e-6     # d sqrt(v)/dv = 1/sqrt(max(4v, 1e-6)) <= 1000 (upstream SqrtBoundDerivative)
NO_FFT_REASON = "a_t depends on the input (a selective transition), so the layer has no convolution kernel view"


# ----------------------------------------------------------------------------- initialisers
def a_param_init(rng, E, min_rad, max_rad):
    """a_param (E,) with base a = σ(−a_param) = √u, u ~ U[min_rad² + 1e-8, max_rad² + 1e-8) (upstream's ring)."""
    u = rng.uniform(min_rad ** 2 + 1e-8, max_rad ** 2 + 1e-8, E)                 # (E,) = a²
    return np.log(u ** -0.5 - 1.0)


def gate_params(rng, prefix, heads, width, variance_scale):
    """Block-diagonal gate `prefix`.w (heads, E/heads, E/heads) ~ N(0, scale/(E/heads)), `prefix`.b = 0."""
    w = rng.normal(0.0, np.sqrt(variance_scale / width), (heads, width, width))    # (heads, i, j)
    return {f"{prefix}.w": w, f"{prefix}.b": np.zeros((heads, width))}              # (heads, i, j), (heads, j)


def rglru_params(rng, E, heads, min_rad, max_rad, variance_scale, prefix=""):
    """a_param and the two gates of the recurrence (names prefixed with `prefix`, e.g. "rg_lru.")."""
    params = {f"{prefix}a_param": a_param_init(rng, E, min_rad, max_rad)}          # (E,)
    params.update(gate_params(rng, f"{prefix}input_gate", heads, E // heads, variance_scale))
    params.update(gate_params(rng, f"{prefix}a_gate", heads, E // heads, variance_scale))
    return params


# ----------------------------------------------------------------------------- the backward pass
def recurrence_tape(layer, x, tau, resets, h0):
    """The forward of one direction kept for `recurrence_vjp`: from x (b, L, H), τ (b, L) or None, resets and
    the initial state (or None: zero), the recurrence input u, its conv windows (block), gates, Ā_t and states."""
    p, q = layer.params, layer.prefix
    start = layer.init_state(x.shape[0]) if h0 is None else h0
    window0, h_start = (start[:, :-1], start[:, -1]) if layer.block else (None, start)
    u, windows = layer.recurrence_input(x, window0, resets)                               # (b, L, E)
    A_bar, gain = layer.discrete_system(u, tau, resets)                                  # (b, L, E)
    h_start = None if h0 is None else h_start
    return {"x": x, "tau": tau, "resets": resets, "h_start": h_start, "window0": window0, "u": u,
            "windows": windows, "A_bar": A_bar, "gain": gain, "states": scan(A_bar, gain * u, h_start),   # (b, L, E)
            "i": expit(block_diagonal(u, p[q + "input_gate.w"], p[q + "input_gate.b"])),               # (b, L, E)
            "r": expit(block_diagonal(u, p[q + "a_gate.w"], p[q + "a_gate.b"]))}                       # (b, L, E)


def recurrence_vjp(layer, tape, grad_states, grads):
    """The adjoint of one direction's recurrence (the tape of `recurrence_tape`) from G_h (b, L, E): the reverse
    scan (SPEC §3) → n_t ⊙ i_t ⊙ u_t and Ā_t = a_t^τ (`discretize_vjp`, dirac) → the sigmoid gates, a_param → u
    (block: Conv1D, linear_x). Adds the parameter gradients into `grads`; returns (G_x (b, L, H), G of the
    initial state or None).
    Note: d sqrt(v)/dv is upstream's bounded 1/sqrt(max(4v, 1e-6)) (SqrtBoundDerivative), as the torch backend."""
    p, q, c = layer.params, layer.prefix, layer.c
    u, i, r, gain, resets = tape["u"], tape["i"], tape["r"], tape["gain"], tape["resets"]

    def add(name, grad):
        grads[name] = grads[name] + grad if name in grads else grad

    rate = -c * softplus(p[q + "a_param"])                                                # (E,)
    step = np.maximum(r, np.finfo(r.dtype).tiny)                                          # (b, L, E)
    grad_A_bar, grad_drive, grad_h = scan_vjp(tape["A_bar"], gain * u, tape["h_start"], tape["states"], grad_states)
    grad_u = grad_drive * gain                                                            # (b, L, E)
    grad_gain = grad_drive * u                                                            # (b, L, E)
    n = np.sqrt(-np.expm1(2 * rate * r))                                                  # (b, L, E)
    grad_n, grad_i = grad_gain * i, grad_gain * n                                         # gain = n ⊙ i
    if resets is not None:                                                                # Ā_t = 0, n_t = 1 there
        at_reset = resets[..., None]                                                      # (b, L, 1)
        grad_A_bar, grad_n = np.where(at_reset, 0.0, grad_A_bar), np.where(at_reset, 0.0, grad_n)
        grad_i = np.where(at_reset, grad_gain, grad_i)
    grad_rate, grad_step = discretize_vjp(rate, step, "dirac", tape["tau"], grad_A_bar, 0.0)  # (E,), (b, L, E)
    # n = sqrt(v), v = −expm1(2q), q = rate·r:  dn/dq = −2 e^{2q} / sqrt(max(4v, 1e-6))
    grad_q = grad_n * (-2 * np.exp(2 * rate * r)) / np.sqrt(np.maximum(4 * n ** 2, MIN_SQRT_ARGUMENT))
    grad_r = grad_step * (r >= np.finfo(r.dtype).tiny) + grad_q * rate                    # (b, L, E)
    grad_rate = grad_rate + np.einsum("ble,ble->e", grad_q, r)                            # (E,)
    add(q + "a_param", grad_rate * -c * expit(p[q + "a_param"]))                          # softplus' = sigmoid
    for name, gate_value, grad_gate in (("input_gate", i, grad_i), ("a_gate", r, grad_r)):
        grad_logit = grad_gate * gate_value * (1 - gate_value)                            # (b, L, E)
        grad_from_gate, grad_w, grad_b = block_diagonal_vjp(grad_logit, u, p[q + name + ".w"])
        add(q + name + ".w", grad_w)
        add(q + name + ".b", grad_b)
        grad_u = grad_u + grad_from_gate                                                  # (b, L, E)
    if not layer.block:
        return grad_u, grad_h
    # u = conv_1d.b + Σ_k conv_1d.w[k] ⊙ windows[k];  windows from p = linear_x(x) (cut at resets)
    batch, L, W = u.shape[0], u.shape[1], layer.conv_width
    add("conv_1d.w", np.einsum("ble,blke->ke", grad_u, tape["windows"]))                  # (W, E)
    add("conv_1d.b", grad_u.sum(axis=(0, 1)))                                             # (E,)
    keep = conv_windows(np.ones_like(u), np.ones_like(tape["window0"]), resets)           # (b, L, W, E) 0/1
    grad_windows = grad_u[:, :, None, :] * p["conv_1d.w"] * keep                          # (b, L, W, E)
    grad_extended = np.zeros((batch, W - 1 + L, layer.width))                             # (b, W − 1 + L, E)
    for k in range(W):
        grad_extended[:, k:k + L] += grad_windows[:, :, k]
    grad_x, grad_w, grad_b = linear_vjp(grad_extended[:, W - 1:], tape["x"], p["linear_x.weight"], p["linear_x.bias"])
    add("linear_x.weight", grad_w)
    add("linear_x.bias", grad_b)
    grad_state = None if tape["h_start"] is None else np.concatenate([grad_extended[:, :W - 1], grad_h[:, None]], axis=1)
    return grad_x, grad_state


# ----------------------------------------------------------------------------- the layer
class RGLRU(Layer):
    """RG-LRU (or the Griffin recurrent block): x (b, L, H) real → y (b, L, H) float64; real state."""

    kappa = 1
    methods = SCAN_METHODS
    no_fft_reason = NO_FFT_REASON

    def __init__(self, d_model, num_heads=1, c=8.0, min_rad=0.9, max_rad=0.999, w_init_variance_scale=1.0,
                 block=False, lru_width=None, conv1d_temporal_width=None, final_w_init_variance_scale=None,
                 bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        num_heads = check_positive_int(num_heads, "num_heads")
        c = check_real(c, "c", 0.0, low_open=True)
        max_rad = check_real(max_rad, "max_rad", 0.0, 1.0, low_open=True)
        min_rad = check_real(min_rad, "min_rad", 0.0, max_rad, low_open=True)
        if max_rad == 1.0:
            raise ValueError("max_rad must be < 1 (a = 1 never forgets and a_param would be -inf); got 1.0")
        w_init_variance_scale = check_real(w_init_variance_scale, "w_init_variance_scale", 0.0, low_open=True)
        if not isinstance(block, (bool, np.bool_)):
            raise TypeError(f"block must be a bool; got {block!r}")
        block_only = {"lru_width": lru_width, "conv1d_temporal_width": conv1d_temporal_width,
                      "final_w_init_variance_scale": final_w_init_variance_scale}
        if not block and any(v is not None for v in block_only.values()):
            name = next(k for k, v in block_only.items() if v is not None)
            raise ValueError(f"{name} applies only to the recurrent block: pass block=True or leave it None; "
                             f"got {name}={block_only[name]!r} with block=False")
        self.block = bool(block)
        self.bidirectional = check_bidirectional(bidirectional)
        self.width = check_positive_int(lru_width, "lru_width") if lru_width is not None else self.d_model
        self.conv_width = (check_positive_int(conv1d_temporal_width, "conv1d_temporal_width")
                           if conv1d_temporal_width is not None else 4)
        final_scale = (check_real(final_w_init_variance_scale, "final_w_init_variance_scale", 0.0, low_open=True)
                       if final_w_init_variance_scale is not None else 1.0)
        if self.width % num_heads:
            raise ValueError(f"num_heads must divide the recurrence width {'lru_width' if self.block else 'd_model'}"
                             f" = {self.width} (block-diagonal gates); got num_heads={num_heads}")
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.num_heads, self.c = num_heads, c
        self.prefix = "rg_lru." if self.block else ""
        self.config = {"d_model": self.d_model, "num_heads": num_heads, "c": c, "min_rad": min_rad,
                       "max_rad": max_rad, "w_init_variance_scale": w_init_variance_scale, "block": self.block,
                       **block_only, "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = rglru_params(rng, self.width, num_heads, min_rad, max_rad, w_init_variance_scale, self.prefix)
        if self.block:
            self.params.update(block_params(rng, self.d_model, self.width, self.conv_width, final_scale))
        if self.block and self.bidirectional:     # the backward half of the doubled-width read-out (SPEC §4.12)
            self.params["linear_out_back.weight"] = rng.normal(0.0, np.sqrt(final_scale / self.width),
                                                               (self.d_model, self.width))              # (H, E)

    def state_shape(self, batch):
        """(b, E), or (b, W, E) with block=True (conv window and h packed)."""
        return (batch, self.conv_width, self.width) if self.block else (batch, self.width)

    def init_state(self, batch):
        """Zero state, float64: (batch, E), or (batch, W, E) with block=True (see the module docstring)."""
        return np.zeros(self.state_shape(check_positive_int(batch, "batch")))

    # --------------------------------------------------------------------- the discrete system
    def recurrence_input(self, x, window0, resets):
        """The recurrence's input u (b, L, E) and the conv windows (b, L, W, E) (block), or (x, None)."""
        if not self.block:
            return x, None
        p = self.params
        windows = conv_windows(x @ p["linear_x.weight"].T + p["linear_x.bias"], window0, resets)   # (b, L, W, E)
        return causal_conv(p["conv_1d.w"], p["conv_1d.b"], windows), windows                      # (b, L, E)

    def discrete_system(self, u, tau=None, resets=None):
        """(Ā_t, n_t ⊙ i_t) for the recurrence input u (b, L, E): Ā_t = a_t^{τ_t}, both (b, L, E) float64."""
        p, q = self.params, self.prefix
        i = expit(block_diagonal(u, p[q + "input_gate.w"], p[q + "input_gate.b"]))          # (b, L, E)
        r = expit(block_diagonal(u, p[q + "a_gate.w"], p[q + "a_gate.b"]))                  # (b, L, E)
        rate = -self.c * softplus(p[q + "a_param"])                                       # (E,) = log a / r
        # r_t underflows to 0 for gate logits below about −745; the smallest normal step gives the same Ā_t = 1.
        # A NaN r_t comes only from a NaN input (check_finite=False), which reaches h through n_t ⊙ i_t ⊙ x_t.
        step = np.nan_to_num(np.maximum(r, np.finfo(r.dtype).tiny), nan=1.0)            # (b, L, E)
        A_bar, _ = discretize(rate, step, "dirac", tau)                                   # (b, L, E) = a_t^τ
        n = np.sqrt(-np.expm1(2 * rate * r))                                      # (b, L, E) = sqrt(1 − a_t²)
        if resets is not None:
            A_bar = np.where(resets[..., None], 0.0, A_bar)
            n = np.where(resets[..., None], 1.0, n)
        return A_bar, n * i

    def read_out(self, states, x, states_back=None):
        """y = h (bare), or linear_out(h ⊙ gelu_tanh(linear_y(x))) (block). states (b, L, E) → (b, L, H).
        Bidirectional: states_back (b, L, E) enters with [I | I] (bare) or linear_out_back (block) (SPEC §4.12)."""
        if not self.block:
            return states if states_back is None else states + states_back
        p = self.params
        gate = gelu_tanh(x @ p["linear_y.weight"].T + p["linear_y.bias"])                 # (b, L, E)
        y = (states * gate) @ p["linear_out.weight"].T + p["linear_out.bias"]             # (b, L, H)
        if states_back is not None:
            y = y + (states_back * gate) @ p["linear_out_back.weight"].T                  # (b, L, H)
        return y

    # --------------------------------------------------------------------- calls
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", check_finite=True, resets=None):
        """y (b, L, H) float64, or (y, final state) with return_state=True (paper eqs. 1–4; Griffin Fig. 2).

        x: real (b, L, H); lengths: (b,) ints (state after step len−1; valid outputs ignore the padding);
        integration_timesteps τ: (b, L) >= 0 (Ā_t = a_t^τ); initial_state: like init_state(b); method: a §3
        scan method ("fft" is refused: no convolution view); resets: (b, L) bool or None (a_t ← 0, n_t ← 1).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method,
                                           check_finite)
        check_call(self, initial_state, return_state)
        batch, L, _ = x.shape
        resets = check_resets(resets, (batch, L))
        if resets is not None:
            refuse_streaming(self, "resets", "a segment start has no backward counterpart in this layer")
        zero = self.init_state(batch)
        start = zero if h0 is None else h0
        window0, h_start = (start[:, :-1], start[:, -1]) if self.block else (None, start)
        u, windows = self.recurrence_input(x, window0, resets)                            # (b, L, E)
        A_bar, gain = self.discrete_system(u, tau, resets)                               # (b, L, E)
        # ---- the recurrence
        states = scan(A_bar, gain * u, h_start if h0 is not None else None, method=method)   # (b, L, E)
        states_back = None
        if self.bidirectional:                                                            # SPEC §4.12
            def run(v, t):                                                                # from a zero state
                u_v, _ = self.recurrence_input(v, window0, None)                          # (b, L, E)
                A_v, gain_v = self.discrete_system(u_v, t)                                # (b, L, E)
                return scan(A_v, gain_v * u_v, method=method)                             # (b, L, E)
            states_back = backward_states(run, x, lengths, tau)                           # (b, L, E)
        y = self.read_out(states, x, states_back)                                         # (b, L, H)
        if not return_state:
            return y
        h_last = final_state(states, lengths)                                             # (b, E)
        if not self.block:
            return y, h_last
        return y, np.concatenate([final_state(windows, lengths)[:, 1:], h_last[:, None]], axis=1)   # (b, W, E)

    def step(self, x_t, state, integration_timestep=None, reset=None, *, inplace=False):
        """One step: x_t (b, H), state like init_state(b), τ (b,) or None, reset (b,) bool or None
        → (y_t (b, H), new state). A reset also empties the conv window (block=True).
        inplace=True writes the new state into the given array itself and returns that array (values as
        inplace=False; the state must be a writeable float64 ndarray)."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        batch = x.shape[0]
        given, state = state, check_state(state, self.state_shape(batch), np.float64, name="state")
        if inplace:
            check_inplace(given, state, name="state")
        resets = None if reset is None else check_resets(reset, (batch,), name="reset")[:, None]  # (b, 1)
        window0, h = (state[:, :-1], state[:, -1]) if self.block else (None, state)
        u, windows = self.recurrence_input(x, window0, resets)                            # (b, 1, E)
        A_bar, gain = self.discrete_system(u, tau, resets)                               # (b, 1, E)
        new_h = A_bar[:, 0] * h + gain[:, 0] * u[:, 0]                                   # (b, E)
        y_t = self.read_out(new_h[:, None], x)[:, 0]                                      # (b, H)
        if self.block:
            new_h = np.concatenate([windows[:, 0, 1:], new_h[:, None]], axis=1)           # (b, W, E)
        return y_t, returned_state(given, new_h, inplace)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None, resets=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G of initial_state or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__. Re-runs the
        forward, then: (block: linear_out, the gelu_tanh gate) → `recurrence_vjp` (the reverse scan, the gates,
        a_param, block: Conv1D and linear_x). Bidirectional: the backward read-out (linear_out_back), then the same
        `recurrence_vjp` on the reversed prefixes with the reversed gaps, its G_x reversed back (SPEC §4.12, §11).
        """
        check_call(self, initial_state, False)                                             # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p = self.params
        resets = check_resets(resets, x.shape[:2])
        if resets is not None:
            refuse_streaming(self, "resets", "a segment start has no backward counterpart in this layer")
        tape = recurrence_tape(self, x, tau, resets, h0)
        states = tape["states"]                                                           # (b, L, E)
        if self.bidirectional:          # the whole definition on the reversed prefixes (SPEC §4.12)
            x_r = reverse_within(x, lengths)                                              # (b, L, H)
            tape_r = recurrence_tape(self, x_r, reversed_gaps(tau, lengths), None, None)
            states_back = reverse_within(tape_r["states"], lengths)                       # (b, L, E)
        grads = {}
        if self.block:                  # y = linear_out(h ⊙ g) (+ linear_out_back(h^b ⊙ g)), g = gelu_tanh(linear_y(x))
            pre = x @ p["linear_y.weight"].T + p["linear_y.bias"]                         # (b, L, E)
            gate = gelu_tanh(pre)                                                         # (b, L, E)
            _, grads["linear_out.weight"], grads["linear_out.bias"] = linear_vjp(
                grad_y, states * gate, p["linear_out.weight"], p["linear_out.bias"])
            grad_product = grad_y @ p["linear_out.weight"]                                # (b, L, E)
            grad_states, grad_gate = grad_product * gate, grad_product * states           # (b, L, E) each
            if self.bidirectional:
                _, grads["linear_out_back.weight"], _ = linear_vjp(grad_y, states_back * gate,
                                                                   p["linear_out_back.weight"])
                grad_product_back = grad_y @ p["linear_out_back.weight"]                  # (b, L, E)
                grad_states_back = grad_product_back * gate                               # (b, L, E)
                grad_gate = grad_gate + grad_product_back * states_back                   # (b, L, E)
            grad_x, grads["linear_y.weight"], grads["linear_y.bias"] = linear_vjp(
                grad_gate * gelu_tanh_derivative(pre), x, p["linear_y.weight"], p["linear_y.bias"])
        else:                           # y = h (+ h^b)
            grad_states = grad_states_back = grad_y
            grad_x = 0.0
        grad_through, grad_state = recurrence_vjp(self, tape, grad_states, grads)        # (b, L, H)
        grad_x = grad_x + grad_through
        if self.bidirectional:          # the backward direction's adjoint runs forward in time
            grad_through_r, _ = recurrence_vjp(self, tape_r, reverse_within(grad_states_back, lengths), grads)
            grad_x = grad_x + reverse_within(grad_through_r, lengths)                     # (b, L, H)
        return grad_x, parameter_gradients(self, grads), grad_state
