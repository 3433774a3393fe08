"""MultiresConv: the multiresolution convolutional memory (Shi, Wang & Fox, ICML 2023) — SPEC §4.7.

Not a recurrence: a causal, depthwise, undecimated wavelet tree whose two filters g0 (low pass) and
g1 (high pass) are shared by every level, followed by a per-channel linear read-out of the tree's
coefficients at each time step. It takes the place of an LRNN mixer (same calling convention) but has
no state size N and no integration timesteps.

    (g ⋆_d u)_t = Σ_{j<k} g_j · u_{t−j·d}        causal, u_{<0} = 0; taps in LAG order (tap j has lag j·d)
    a⁽⁰⁾ = x;   for l = 1..J, d_l = 2^(l−1):   b⁽ˡ⁾ = g1 ⋆_{d_l} a⁽ˡ⁻¹⁾,   a⁽ˡ⁾ = g0 ⋆_{d_l} a⁽ˡ⁻¹⁾
    fading   y_t = w₀·a⁽ᴶ⁾_t + Σ_l w_{J+1−l}·b⁽ˡ⁾_t + w_{J+1}·x_t                      w (H, J + 2)
    uniform  y_t = w₀·a⁽ᴶ⁾_t + Σ_l Σ_{i<n_l} w_{c_l+i}·b⁽ˡ⁾_{t−i·2^l} + w_m·x_t          w (H, m + 1), m = memory_size

Memory (the paper's read-out of the tree):
* fading (default): the newest coefficient of every level — fine time resolution for the recent past,
  coarse for the distant past.
* uniform: from the coarsest level down, the coefficients of the last receptive window on each level's own
  grid (spacing 2^l for b⁽ˡ⁾, newest first): n_J = 1, n_{l−1} = 2(n_l − 1) + k, which are the coefficients a
  decimated wavelet transform of that window keeps. Every level read spans the whole window (the time
  resolution is uniform over it). Reading stops after `memory_size` entries (a⁽ᴶ⁾ counts as one): the last
  level read keeps its newest coefficients and finer levels are left out.
  1 <= memory_size <= 1 + J + (k−1)(2^J − 1 − J) (all levels in full; 2^J when k = 2).
Depth: `depth` J, or (give one of the two, default max_len = 1024) the smallest J >= 1 with receptive field
R = 1 + (k−1)(2^J − 1) >= max_len (integer arithmetic). max_len only chooses J: inputs of any length are
accepted; lags >= R simply have no weight.
Parameters: g0, g1 (H, k) ~ U(±1/√k); w ~ U(±1/√width); count H·(2k + J + 2) fading,
H·(2k + memory_size + 1) uniform.
Views: the tree (method="sequential", the definition, O(L·k·J) per channel) and the dense causal kernel of
length R, its impulse response (`kernel`, method="fft").
State: streaming needs the last R − 1 = (k−1)(2^J − 1) inputs per channel. Unlike an LRNN, whose state has
a fixed size N whatever the memory length, this state grows with the receptive field (about max_len).

Upstream: thjashin/multires-conv, layers/multireslayer.py (forward_fading, forward_uniform). Its filters are
weights for torch's conv1d, a cross-correlation, so its h0 is our g0 reversed (g0 = h0[..., ::-1]); the
columns of w are the same. Left out: the GELU and dropout after the read-out (the classifier block applies
its own), pywt wavelet initialisation, `indep_res_init`. Differences: J >= 1 when max_len = 1 (upstream: 0),
memory_size is checked against its maximum (upstream leaves surplus columns of w unused).
Glossary (SPEC §1): b batch, L length, H d_model, l lag (in einsum strings); k kernel_size, J depth,
R receptive field.
"""
import numpy as np

from ..backward import causal_dilated_conv_vjp, parameter_gradients, prepare_vjp
from ._base import Layer
from ._checks import (check_choice, check_inplace, check_positive_int, check_state, check_step_input, prepare_call,
                      returned_state)
from ._math import fft_causal_conv

MEMORIES = ("fading", "uniform")


# ----------------------------------------------------------------------------- sizes and read-out plan
def receptive_field(kernel_size, depth):
    """R = 1 + (k − 1)(2^J − 1): the number of lags the tree sees (its dense kernel's length)."""
    return 1 + (kernel_size - 1) * (2 ** depth - 1)


def multires_depth(kernel_size, max_len):
    """The smallest J >= 1 with receptive_field(k, J) >= max_len (integers only, no log2 rounding)."""
    depth = 1
    while receptive_field(kernel_size, depth) < max_len:
        depth += 1
    return depth


def uniform_memory_max(kernel_size, depth):
    """Entries of the full uniform memory: a⁽ᴶ⁾ plus n_l = 1 + (k−1)(2^(J−l) − 1) coefficients per level."""
    return 1 + depth + (kernel_size - 1) * (2 ** depth - 1 - depth)


def readout_plan(kernel_size, depth, memory, memory_size):
    """Which coefficients the memory reads: ((l, n_l, c_l), ...) and the width of w.

    Level l contributes Σ_{i<n_l} w[:, c_l + i] · b⁽ˡ⁾_{t − i·2^l}; column 0 reads a⁽ᴶ⁾, the last column x.
    """
    check_choice(memory, "memory", MEMORIES)
    if memory == "fading":
        if memory_size is not None:
            raise ValueError(f"memory_size applies only to memory='uniform' (fading reads J + 1 = {depth + 1} "
                             f"entries); got memory_size={memory_size!r} with memory='fading'")
        return tuple((l, 1, depth + 1 - l) for l in range(1, depth + 1)), depth + 2
    largest = uniform_memory_max(kernel_size, depth)
    if memory_size is None:
        raise ValueError(f"memory='uniform' needs memory_size, an integer in [1, {largest}] for kernel_size="
                         f"{kernel_size}, depth={depth}")
    memory_size = check_positive_int(memory_size, "memory_size")
    if memory_size > largest:
        raise ValueError(f"memory_size must be <= {largest} (the full uniform memory for kernel_size={kernel_size}, "
                         f"depth={depth}); got {memory_size}")
    plan, column, count = [], 1, 1
    for l in range(depth, 0, -1):
        if column == memory_size:
            break
        used = min(count, memory_size - column)
        plan.append((l, used, column))
        column += used
        count = 2 * (count - 1) + kernel_size
    return tuple(plan), memory_size + 1


# ----------------------------------------------------------------------------- initialisers
def init_filter(rng, d_model, kernel_size):
    """g0 or g1: (H, k) ~ U(−1/√k, 1/√k), lag order."""
    bound = 1.0 / np.sqrt(kernel_size)
    return rng.uniform(-bound, bound, (d_model, kernel_size))                     # (H, k)


def init_readout(rng, d_model, width):
    """w: (H, width) ~ U(−1/√width, 1/√width)."""
    bound = 1.0 / np.sqrt(width)
    return rng.uniform(-bound, bound, (d_model, width))                           # (H, width)


# ----------------------------------------------------------------------------- the tree
def causal_dilated_conv(u, g, dilation):
    """(g ⋆_d u)_t = Σ_j g[:, j] · u_{t − j·d}, u_{<0} = 0. u (b, L, H), g (H, k) lag order. Returns (b, L, H)."""
    L = u.shape[1]
    y = np.zeros(np.broadcast_shapes(u.shape, g.shape[:1]), np.result_type(u, g))  # (b, L, H)
    for j in range(min(g.shape[1], (L - 1) // dilation + 1)):                      # taps with lag < L
        y[:, j * dilation:] += g[:, j] * u[:, :L - j * dilation]
    return y


def multires_tree(x, g0, g1, depth):
    """The undecimated tree: (a⁽ᴶ⁾ (b, L, H), [b⁽¹⁾, ..., b⁽ᴶ⁾] each (b, L, H))."""
    approximation, details = x, []
    for l in range(1, depth + 1):
        dilation = 2 ** (l - 1)
        details.append(causal_dilated_conv(approximation, g1, dilation))           # b⁽ˡ⁾ (b, L, H)
        approximation = causal_dilated_conv(approximation, g0, dilation)          # a⁽ˡ⁾ (b, L, H)
    return approximation, details


def read_memory(x, approximation, details, w, plan):
    """y_t = w₀·a⁽ᴶ⁾_t + Σ_(l, n, c) Σ_{i<n} w_{c+i}·b⁽ˡ⁾_{t−i·2^l} + w_last·x_t. Returns (b, L, H)."""
    y = w[:, 0] * approximation + w[:, -1] * x                                   # (b, L, H)
    for l, count, column in plan:
        y = y + causal_dilated_conv(details[l - 1], w[:, column:column + count], 2 ** l)
    return y


# ----------------------------------------------------------------------------- the layer
class MultiresConv(Layer):
    """Multiresolution convolution mixer (SPEC §4.7); float64, depthwise over H channels."""

    accepts_timesteps = False
    no_timesteps_reason = ("it is not a recurrence and has no timesteps (use a recurrent layer such as S5 or LRU "
                           "for event streams)")
    methods = ("sequential", "fft")

    def __init__(self, d_model, kernel_size=2, depth=None, max_len=None, memory="fading", memory_size=None,
                 seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.kernel_size = check_positive_int(kernel_size, "kernel_size", minimum=2)
        if depth is not None and max_len is not None:
            raise ValueError(f"give depth or max_len, not both (max_len only chooses the depth); got depth={depth!r} "
                             f"and max_len={max_len!r}")
        if depth is None:
            max_len = 1024 if max_len is None else check_positive_int(max_len, "max_len")
            self.depth = multires_depth(self.kernel_size, max_len)
        else:
            depth = self.depth = check_positive_int(depth, "depth")
        self.plan, width = readout_plan(self.kernel_size, self.depth, memory, memory_size)
        self.receptive_field = receptive_field(self.kernel_size, self.depth)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.config = {"d_model": self.d_model, "kernel_size": self.kernel_size, "depth": depth,
                       "max_len": max_len, "memory": memory, "memory_size": memory_size, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = {"g0": init_filter(rng, self.d_model, self.kernel_size),
                       "g1": init_filter(rng, self.d_model, self.kernel_size),
                       "w": init_readout(rng, self.d_model, width)}

    # --------------------------------------------------------------------- the system
    def discrete_system(self, tau=None):
        """(g0 (H, k), g1 (H, k), w (H, width)): the tree's filters and the read-out weights. MultiresConv
        is discrete by construction and has no timesteps: tau must be None."""
        check_no_timesteps(tau, "integration_timesteps")
        return self.params["g0"], self.params["g1"], self.params["w"]

    def read_out(self, states, x):
        """y_t = w₀·a⁽ᴶ⁾_t + Σ_(l, n, c) Σ_{i<n} w_{c+i}·b⁽ˡ⁾_{t−i·2^l} + w_last·x_t: states = (a⁽ᴶ⁾, [b⁽¹⁾…b⁽ᴶ⁾])
        each (b, L, H), x (b, L, H) -> y (b, L, H)."""
        approximation, details = states
        return read_memory(x, approximation, details, self.params["w"], self.plan)

    def tree(self, x):
        """The definition: tree then read-out. x (b, L, H) float64 -> y (b, L, H)."""
        g0, g1, _ = self.discrete_system()
        return self.read_out(multires_tree(x, g0, g1, self.depth), x)

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", check_finite=True):
        """x real (b, L, H) -> y float64 (b, L, H); with return_state also the last R − 1 inputs (b, R − 1, H).

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
            u = x if h0 is None else np.concatenate([h0, x], axis=1)               # (b, R − 1 + L, H)
            y = self.tree(u)[:, -L:]                                                # (b, L, H)
        if not return_state:
            return y
        # the zero history (b, R − 1, H) follows max_len, not the data: built only when the state is asked for
        history = self.init_state(batch) if h0 is None else h0                     # (b, R − 1, H)
        ends = np.full(batch, L) if lengths is None else lengths
        u = np.concatenate([history, x], axis=1)                                   # (b, R − 1 + L, H); x_t at t + R − 1
        window = ends[:, None] + np.arange(self.receptive_field - 1)               # (b, R − 1): x_{len−R+1..len−1}
        return y, u[np.arange(batch)[:, None], window]                              # (b, R − 1, H)

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One output from the history: y_t = Σ_{l<R} K_l ⊙ x_{t−l}. x_t (b, H), state (b, R − 1, H).
        inplace=True: the new history is written into `state` itself (a writeable float64 array), which is
        returned."""
        check_no_timesteps(integration_timestep, "integration_timestep")
        x, _ = check_step_input(x_t, self.d_model)                                 # (b, 1, H)
        history = self.check_history(state, x.shape[0], "state")                   # (b, R − 1, H)
        if inplace:
            check_inplace(state, history)
        window = np.concatenate([history, x], axis=1)                              # (b, R, H)
        K = self.kernel(self.receptive_field)                                      # (R, H) lag first
        y_t = np.einsum("lh,blh->bh", K[::-1], window)                             # (b, H); window is oldest first
        return y_t, returned_state(state, window[:, 1:], inplace)

    def kernel(self, L):
        """The dense causal kernel (L, H), lag first: the tree's impulse response, zero from lag R on."""
        L = check_positive_int(L, "L")
        impulse = np.zeros((1, L, self.d_model))                                   # (1, L, H)
        impulse[:, 0] = 1.0
        return self.tree(impulse)[0]                                               # (L, H)

    def init_state(self, batch):
        """Zero input history, real (b, R − 1, H), oldest first."""
        batch = check_positive_int(batch, "batch")
        return np.zeros((batch, self.receptive_field - 1, self.d_model))           # (b, R − 1, H)

    def check_history(self, state, batch, name="initial_state"):
        """A real input history (b, R − 1, H)."""
        if np.iscomplexobj(state):
            raise TypeError(f"{name} must be real (MultiresConv's state is its input history); got a complex array")
        return check_state(state, (batch, self.receptive_field - 1, self.d_model), np.float64, name)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {g0, g1, w}, G_history (b, R − 1, H) or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); initial_state: the input history, as in
        __call__. Re-runs the tree keeping every level, then runs it backwards: the read-out, then level by
        level from J to 1 the adjoint of each dilated convolution (`causal_dilated_conv_vjp`).
        """
        check_no_timesteps(integration_timesteps, "integration_timesteps")
        grad_y, x, lengths, _, history = prepare_vjp(self, grad_y, x, lengths, None, initial_state)
        p, L = self.params, x.shape[1]
        u = x if history is None else np.concatenate([history, x], axis=1)                # (b, R − 1 + L, H)
        grad_out = np.zeros_like(u)                                                        # (b, R − 1 + L, H)
        grad_out[:, -L:] = grad_y
        levels = [u]                                                                       # a⁽⁰⁾ … a⁽ᴶ⁻¹⁾
        approximation, details = u, []
        for l in range(1, self.depth + 1):
            details.append(causal_dilated_conv(approximation, p["g1"], 2 ** (l - 1)))      # b⁽ˡ⁾ (b, ·, H)
            approximation = causal_dilated_conv(approximation, p["g0"], 2 ** (l - 1))     # a⁽ˡ⁾ (b, ·, H)
            levels.append(approximation)
        # y = w₀ a⁽ᴶ⁾ + Σ (w-columns ⋆ b⁽ˡ⁾) + w_last u
        grad_w = np.zeros_like(p["w"])                                                     # (H, width)
        grad_w[:, 0] = np.einsum("blh,blh->h", grad_out, approximation)
        grad_w[:, -1] = np.einsum("blh,blh->h", grad_out, u)
        grad_approximation = p["w"][:, 0] * grad_out                                       # (b, ·, H)
        grad_details = [np.zeros_like(u) for _ in details]
        for l, count, column in self.plan:
            grad_details[l - 1], grad_w[:, column:column + count] = causal_dilated_conv_vjp(
                details[l - 1], p["w"][:, column:column + count], 2 ** l, grad_out)
        grad_g0, grad_g1 = np.zeros_like(p["g0"]), np.zeros_like(p["g1"])                   # (H, k)
        for l in range(self.depth, 0, -1):
            grad_from_a, grad_g = causal_dilated_conv_vjp(levels[l - 1], p["g0"], 2 ** (l - 1), grad_approximation)
            grad_g0 += grad_g
            grad_from_b, grad_g = causal_dilated_conv_vjp(levels[l - 1], p["g1"], 2 ** (l - 1), grad_details[l - 1])
            grad_g1 += grad_g
            grad_approximation = grad_from_a + grad_from_b                                 # G of a⁽ˡ⁻¹⁾
        grad_u = grad_approximation + p["w"][:, -1] * grad_out                             # (b, R − 1 + L, H)
        grads = {"g0": grad_g0, "g1": grad_g1, "w": grad_w}
        return grad_u[:, -L:], parameter_gradients(self, grads), None if history is None else grad_u[:, :-L]


def check_no_timesteps(tau, name):
    """MultiresConv is a convolution: integration timesteps have no meaning and are refused, never ignored."""
    if tau is not None:
        raise ValueError(f"MultiresConv is not a recurrence and has no timesteps: {name} must be None "
                         "(use a recurrent layer such as S5 or LRU for event streams)")
