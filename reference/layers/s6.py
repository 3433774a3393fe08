"""S6 — Mamba's selective state space model (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Algorithm 2 and §3.5), SPEC §4.8.

    [δ̃_t | B_t | C_t] = v_t·x_projᵀ                      (widths r, N, N; B_t, C_t shared by the E channels)
    Δ_t = softplus(δ̃_t·dt_projᵀ + dt_proj.bias)  (b, L, E),   A = −exp(A_log)  (E, N)
    (Ā_t, γ̄_t) = discretize(A, Δ_t, method, τ_t)                                         (SPEC §2)
    h_t[e, n] = Ā_t[e, n]·h_{t−1}[e, n] + γ̄_t[e, n]·B_t[n]·v_t[e]
    y_t[e] = Σ_n C_t[n]·h_t[e, n] + D[e]·v_t[e]

Bare layer (the default, the classifier's mixer): v = x, E = H. `block=True` is the whole Mamba mixer
(E = expand·H): [p | z] = x·in_projᵀ, v = SiLU(causal depthwise conv1d(p)), the SSM above, then
out = (y ⊙ SiLU(z))·out_projᵀ. Parameter names and (out, in) layouts are mamba_ssm's own, so upstream
state dicts load. Discretisation: Mamba's rule is `exp_euler` (Ā = exp(ΔA), γ̄ = Δ); every continuous
method of §2 is accepted, `none` is refused (A is continuous-time). Events: Δ_A,t = τ_t·Δ_t, the input step
per §2 (the decay stays selective; τ ≡ 1 is the synchronous layer exactly).
State: bare h (b, E, N); block the pair (conv state (b, d_conv − 1, E): the last d_conv − 1 values of p,
oldest first, zeros at the start; h (b, E, N)). With lengths the state is the one after step len − 1.
Time-varying Ā_t: there is no convolution view (no `kernel`, method="fft" refused).
Δ_t is kept in [the smallest normal float, the largest float] (softplus(z) underflows to 0 for z below about
−745, and §2's discretize needs a finite Δ > 0): at the floor Ā_t = 1 and γ̄_t = 2.2e-308, the Δ_t = 0 limit to
every representable digit.
Bidirectional (SPEC §4.12): only the SSM runs both ways, sharing A_log, Δ_t, B_t (x_proj, dt_proj) and, for the
block, in_proj, the causal conv and the gate z; h^b is the recurrence above on each row's reversed valid prefix of
v with the reversed gaps, read out by C^b_t = v_t·x_proj_backᵀ (x_proj_back.weight (N, E), no bias, drawn like
x_proj's C rows after every forward parameter): y_t[e] = Σ_n C_t[n] h^f_t[e, n] + Σ_n C^b_t[n] h^b_t[e, n] + D[e] v_t[e],
then mix_out. The block's backward part is anti-causal in v, so through the causal conv it sees x from t − (K − 1)
on (flipping the whole mixer, conv included, would not share Δ_t and B_t as §4.12 asks). The vjp's block ends
(out_proj and the gate; the conv and in_proj) are in _s6_backward.py.

Upstream: state-spaces/mamba (`Mamba`, `selective_scan_ref`), johnma2006/mamba-minimal (`MambaBlock`).
Leaves out: the residual block and norm around the mixer, the CUDA kernels, Mamba-2.
Glossary (SPEC §1): b batch, L length, H d_model, N d_state; E channels of the SSM, r dt_rank,
K d_conv; einsum letters b l h e n r k.
"""
import numpy as np
from scipy.special import expit

from ..backward import (backward_direction_states, backward_direction_vjp, contract, diagonal_states,
                        diagonal_states_vjp, parameter_gradients, prepare_vjp)
from ..discretize import METHODS, discretize
from ..init import check_dt_range, check_real, log_uniform_dt
from ..scan import SCAN_METHODS, scan
from ._base import Layer
from ._bidirectional import backward_states, check_bidirectional, check_call, refuse_streaming
from ._checks import (check_choice, check_inplace, check_positive_int, check_state, check_step_input, prepare_call,
                      returned_state)
from ._math import softplus
from ._s6_backward import mix_in_vjp, mix_out_vjp

S6_METHODS = tuple(m for m in METHODS if m != "none")
DT_INITS = ("random", "constant")
BLOCK_DEFAULTS = {"expand": 2, "d_conv": 4, "conv_bias": True, "bias": False}
DT_FLOOR = np.finfo(np.float64).tiny   # Δ_t >= the smallest normal float: softplus underflows to 0 below z ≈ −745


def softplus_inverse(y):
    """The z with softplus(z) = y > 0: y + log(−expm1(−y))."""
    return y + np.log(-np.expm1(-y))


def silu(z):
    """z·σ(z)."""
    return z * expit(z)


def silu_derivative(z):
    """d SiLU/dz = σ(z)·(1 + z·(1 − σ(z)))."""
    sigma = expit(z)
    return sigma * (1 + z * (1 - sigma))


# ----------------------------------------------------------------------------- initialisers
def uniform(rng, bound, shape):
    """U(±bound): torch's default Linear/Conv init with bound = 1/√fan_in."""
    return rng.uniform(-bound, bound, shape)


def dt_bias_init(rng, E, dt_min, dt_max, dt_init_floor):
    """dt_proj.bias (E,) = softplus⁻¹(max(δ, dt_init_floor)), δ = exp(U[log dt_min, log dt_max)): Δ starts in range."""
    dt = np.maximum(np.exp(log_uniform_dt(rng, E, dt_min, dt_max)), dt_init_floor)   # (E,)
    return softplus_inverse(dt)


def s6_params(rng, H, N, r, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, block, expand, d_conv, conv_bias,
              bias):
    """All S6 parameters (SPEC §4.8) under mamba_ssm's names, drawn in its module order."""
    E = expand * H if block else H
    params = {}
    if block:
        params["in_proj.weight"] = uniform(rng, H ** -0.5, (2 * E, H))                  # (2E, H)
        if bias:
            params["in_proj.bias"] = uniform(rng, H ** -0.5, (2 * E,))                  # (2E,)
        params["conv1d.weight"] = uniform(rng, d_conv ** -0.5, (E, 1, d_conv))          # (E, 1, K)
        if conv_bias:
            params["conv1d.bias"] = uniform(rng, d_conv ** -0.5, (E,))                  # (E,)
    params["x_proj.weight"] = uniform(rng, E ** -0.5, (r + 2 * N, E))                   # (r + 2N, E)
    dt_std = dt_scale * r ** -0.5
    params["dt_proj.weight"] = (uniform(rng, dt_std, (E, r)) if dt_init == "random"
                                else np.full((E, r), dt_std))                           # (E, r)
    params["dt_proj.bias"] = dt_bias_init(rng, E, dt_min, dt_max, dt_init_floor)       # (E,)
    params["A_log"] = np.log(np.tile(np.arange(1, N + 1, dtype=np.float64), (E, 1)))   # (E, N): A = −(1..N)
    params["D"] = np.ones(E)                                                            # (E,)
    if block:
        params["out_proj.weight"] = uniform(rng, E ** -0.5, (H, E))                     # (H, E)
        if bias:
            params["out_proj.bias"] = uniform(rng, E ** -0.5, (H,))                     # (H,)
    return params


def check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be a bool; got {value!r}")
    return bool(value)


# ----------------------------------------------------------------------------- the layer
class S6(Layer):
    """Selective SSM (bare) or Mamba mixer (block=True): x (b, L, H) real → y (b, L, H) float64; real state."""

    methods = SCAN_METHODS
    no_fft_reason = ("S6 is time-varying (Ā_t, B_t, C_t depend on the input), so it has no convolution kernel; "
                     "use a scan method")

    def __init__(self, d_model, d_state=16, dt_rank="auto", dt_min=1e-3, dt_max=0.1, dt_init="random",
                 dt_scale=1.0, dt_init_floor=1e-4, discretization="exp_euler", block=False, expand=None,
                 d_conv=None, conv_bias=None, bias=None, bidirectional=False, seed=None):
        """Arguments of SPEC §4.8 (bidirectional: §4.12). The block-only arguments (expand, d_conv, conv_bias, bias)
        default to None: with block=True None means Mamba's default (2, 4, True, False); with block=False giving
        any is a ValueError (the bare layer has no projections or convolution to apply them to)."""
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        if discretization == "none":
            raise ValueError("discretization='none' is refused for S6: A = −exp(A_log) is a continuous-time "
                             f"matrix and Δ_t is its step; choose one of {', '.join(S6_METHODS)}")
        self.discretization = check_choice(discretization, "discretization", S6_METHODS)
        self.block = check_flag(block, "block")
        block_args = {"expand": expand, "d_conv": d_conv, "conv_bias": conv_bias, "bias": bias}
        if not self.block:
            given = [name for name, value in block_args.items() if value is not None]
            if given:
                raise ValueError(f"{given[0]} applies to the Mamba mixer only: pass block=True with it "
                                 f"(the bare S6 has no in_proj, conv1d or out_proj); got {given[0]}={block_args[given[0]]!r}")
        else:
            block_args = {name: BLOCK_DEFAULTS[name] if value is None else value for name, value in block_args.items()}
            block_args["expand"] = check_positive_int(block_args["expand"], "expand")
            block_args["d_conv"] = check_positive_int(block_args["d_conv"], "d_conv")
            block_args["conv_bias"] = check_flag(block_args["conv_bias"], "conv_bias")
            block_args["bias"] = check_flag(block_args["bias"], "bias")
        self.d_inner = block_args["expand"] * self.d_model if self.block else self.d_model     # E
        if dt_rank == "auto":
            r = -(-self.d_model // 16)                                                        # ⌈H/16⌉
        else:
            r = check_positive_int(dt_rank, "dt_rank (an integer >= 1 or 'auto')")
        self.dt_rank = r
        dt_min, dt_max = check_dt_range(dt_min, dt_max)
        check_choice(dt_init, "dt_init", DT_INITS)
        dt_scale = check_real(dt_scale, "dt_scale", 0.0, low_open=True)
        dt_init_floor = check_real(dt_init_floor, "dt_init_floor", 0.0, low_open=True)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "dt_rank": dt_rank, "dt_min": dt_min,
                       "dt_max": dt_max, "dt_init": dt_init, "dt_scale": dt_scale, "dt_init_floor": dt_init_floor,
                       "discretization": discretization, "block": self.block,
                       **(block_args if self.block else {}), "bidirectional": self.bidirectional, "seed": seed}
        self.d_conv = block_args["d_conv"]
        rng = np.random.default_rng(seed)
        self.params = s6_params(rng, self.d_model, self.d_state, r, dt_min, dt_max, dt_init, dt_scale, dt_init_floor,
                                self.block, block_args["expand"], block_args["d_conv"], block_args["conv_bias"],
                                block_args["bias"])
        if self.bidirectional:       # the backward read-out C^b_t = v_t·x_proj_backᵀ, drawn like x_proj (SPEC §4.12)
            self.params["x_proj_back.weight"] = uniform(rng, self.d_inner ** -0.5, (self.d_state, self.d_inner))  # (N, E)

    # --------------------------------------------------------------------- input → selective system
    def mix_in(self, x, conv_state=None):
        """Block: ([p | z] = in_proj(x), v = SiLU(conv1d(p)), z, p with the carried conv state prepended);
        bare: (v = x, None, None). x (b, L, H); conv_state (b, K − 1, E) or None (zeros)."""
        if not self.block:
            return x, None, None
        params = self.params
        E, K = self.d_inner, self.d_conv
        pz = np.einsum("blh,fh->blf", x, params["in_proj.weight"]) + params.get("in_proj.bias", 0.0)   # (b, L, 2E)
        p, z = pz[..., :E], pz[..., E:]                                                        # (b, L, E) each
        past = np.zeros((x.shape[0], K - 1, E)) if conv_state is None else conv_state          # (b, K − 1, E)
        p_ext = np.concatenate([past, p], axis=1)                                              # (b, K − 1 + L, E)
        windows = np.stack([p_ext[:, k:k + x.shape[1]] for k in range(K)], axis=2)            # (b, L, K, E)
        c = np.einsum("blke,ek->ble", windows, params["conv1d.weight"][:, 0]) + params.get("conv1d.bias", 0.0)  # (b, L, E)
        return silu(c), z, p_ext

    def selection(self, v):
        """(Δ_t (b, L, E), B_t (b, L, N), C_t (b, L, N)) from v (b, L, E): the input-dependent part."""
        params = self.params
        r, N = self.dt_rank, self.d_state
        x_dbl = np.einsum("ble,fe->blf", v, params["x_proj.weight"])                               # (b, L, r + 2N)
        dt_low, B, C = x_dbl[..., :r], x_dbl[..., r:r + N], x_dbl[..., r + N:]
        dt = softplus(np.einsum("blr,er->ble", dt_low, params["dt_proj.weight"]) + params["dt_proj.bias"])   # (b, L, E)
        # A NaN Δ comes only from a NaN input (check_finite=False), which reaches y through B_t v_t anyway.
        return np.nan_to_num(np.maximum(dt, DT_FLOOR), nan=1.0), B, C

    def discrete_system(self, dt, tau=None):
        """(Ā_t, γ̄_t), each (b, L, E, N) float64 = discretize(A, Δ_t, method, τ) with Δ_t (b, L, E), τ (b, L) or None."""
        A = -np.exp(self.params["A_log"])                                                      # (E, N)
        return discretize(A, dt[..., None], self.discretization, tau)                          # (b, L, E, N) each

    def recurrence(self, v, tau=None, h0=None, method="sequential"):
        """(h (b, L, E, N), C_t (b, L, N)): the selective system of v (b, L, E) scanned from h0 (b, E, N) or zero."""
        dt, B, C = self.selection(v)
        A_bar, gamma_bar = self.discrete_system(dt, tau)                                       # (b, L, E, N)
        return scan(A_bar, gamma_bar * B[:, :, None, :] * v[..., None], h0, method=method), C  # (b, L, E, N)

    def C_back(self, v):
        """The backward read-out C^b_t = v_t·x_proj_backᵀ: v (b, L, E) → (b, L, N) (SPEC §4.12)."""
        return np.einsum("ble,ne->bln", v, self.params["x_proj_back.weight"])                # (b, L, N)

    def read_out(self, states, v, C, z=None, states_back=None):
        """y_t[e] = Σ_n C_t[n] h_t[e, n] + D[e] v_t[e], then mix_out. states (b, L, E, N).
        Bidirectional: + Σ_n C^b_t[n] h^b_t[e, n], states_back (b, L, E, N) (SPEC §4.12)."""
        y = np.einsum("blen,bln->ble", states, C) + self.params["D"] * v                       # (b, L, E)
        if states_back is not None:
            y = y + np.einsum("blen,bln->ble", states_back, self.C_back(v))
        return self.mix_out(y, z)                                                              # (b, L, H)

    def mix_out(self, y, z=None):
        """Block: out_proj(y ⊙ SiLU(z)) (b, L, H); bare: y itself."""
        if not self.block:
            return y
        params = self.params
        return np.einsum("ble,he->blh", y * silu(z), params["out_proj.weight"]) + params.get("out_proj.bias", 0.0)  # (b, L, H)

    # --------------------------------------------------------------------- calls
    def init_state(self, batch):
        """Zero state: bare h (batch, E, N) float64; block the pair (conv state (batch, K − 1, E), h)."""
        h = np.zeros((check_positive_int(batch, "batch"), self.d_inner, self.d_state))
        return (np.zeros((batch, self.d_conv - 1, self.d_inner)), h) if self.block else h

    def check_state(self, state, batch, name="initial_state"):
        """(conv state or None, h) from a state shaped like init_state(batch); a pair for block=True."""
        zero = self.init_state(batch)
        if not self.block:
            return None, check_state(state, zero.shape, np.float64, name=name)
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"{name} of S6(block=True) must be a pair (conv state (b, d_conv − 1, E), h (b, E, N)); "
                            f"got {type(state).__name__}")
        return (check_state(state[0], zero[0].shape, np.float64, name=f"{name}[0] (conv state)"),
                check_state(state[1], zero[1].shape, np.float64, name=f"{name}[1] (h)"))

    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None,
                 return_state=False, method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state) with return_state=True (Mamba, Algorithm 2; eqs. (2a)–(2b)
        with the selective Δ, B, C of §3.2 and the ZOH/Euler discretisation of eq. (4)).

        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid outputs
        do not depend on the padding); integration_timesteps τ: (b, L) >= 0, Δ_A = τ·Δ_t (convolution taps of
        the block act on the event index); initial_state: as init_state; method: a scan method ("fft" is refused).
        """
        # Note: initial_state is checked by the layer (a pair for block=True), not by prepare_call.
        x, lengths, tau, _ = prepare_call(self, x, lengths, integration_timesteps, None, method, check_finite)
        check_call(self, initial_state, return_state)
        conv0, h0 = (None, None) if initial_state is None else self.check_state(initial_state, x.shape[0])
        v, z, p_ext = self.mix_in(x, conv0)                                                    # (b, L, E)
        # ---- the recurrence
        states, C = self.recurrence(v, tau, h0, method)                                        # (b, L, E, N)
        states_back = backward_states(lambda u, t: self.recurrence(u, t, None, method)[0],
                                      v, lengths, tau) if self.bidirectional else None        # (b, L, E, N), §4.12
        y = self.read_out(states, v, C, z, states_back)                                        # (b, L, H)
        if not return_state:
            return y
        last = np.full(x.shape[0], x.shape[1] - 1) if lengths is None else lengths - 1        # (b,)
        h = states[np.arange(x.shape[0]), last]                                                # (b, E, N)
        if not self.block:
            return y, h
        conv = np.stack([p_ext[i, n + 1:n + self.d_conv] for i, n in enumerate(last)])        # (b, K − 1, E)
        return y, (conv, h)

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state as init_state, τ (b,) or None → (y_t (b, H), new state).
        inplace=True writes the new state into the given state's own arrays (each element of a pair) and returns
        those same arrays (values as inplace=False; the state must be a writeable float64 ndarray)."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)   # (b, 1, H)
        conv0, h = self.check_state(state, x.shape[0], name="state")
        if inplace:
            check_inplace(state, (conv0, h) if self.block else h, name="state")
        v, z, p_ext = self.mix_in(x, conv0)                                                    # (b, 1, E)
        dt, B, C = self.selection(v)
        A_bar, gamma_bar = self.discrete_system(dt, tau)                                       # (b, 1, E, N)
        new_h = A_bar[:, 0] * h + gamma_bar[:, 0] * B[:, 0, None, :] * v[:, 0, :, None]       # (b, E, N)
        y_t = self.read_out(new_h[:, None], v, C, z)[:, 0]                                     # (b, H)
        new_state = (p_ext[:, 1:], new_h) if self.block else new_h
        return y_t, returned_state(state, new_state, inplace)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G of initial_state or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__. Re-runs the
        forward, then: (block: out_proj, the SiLU gate) → y = Σ_n C_t h_t + D v → the reverse scan (SPEC §3) →
        γ̄_t B_t v_t and the discretisation at the selective Δ_t → softplus → dt_proj, x_proj → v (block: SiLU,
        the causal conv1d, in_proj) → x. The initial state's gradient has the state's form (a pair for block).
        Bidirectional: x_proj_back (the read-out C^b_t), and `backward_direction_vjp`'s G_A, G_Δt, G_drive added
        to the forward direction's (SPEC §4.12, §11).
        """
        check_call(self, initial_state, False)                                                 # bidirectional: no h0
        grad_y, x, lengths, tau, _ = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, None)
        conv0, h0 = (None, None) if initial_state is None else self.check_state(initial_state, x.shape[0])
        p, r, N = self.params, self.dt_rank, self.d_state
        v, z, p_ext = self.mix_in(x, conv0)                                                    # (b, L, E)
        x_dbl = contract("ble,fe->blf", v, p["x_proj.weight"])                                 # (b, L, r + 2N)
        dt_low, B, C = x_dbl[..., :r], x_dbl[..., r:r + N], x_dbl[..., r + N:]
        s = contract("blr,er->ble", dt_low, p["dt_proj.weight"]) + p["dt_proj.bias"]           # (b, L, E)
        dt = np.maximum(softplus(s), DT_FLOOR)                                                 # (b, L, E)
        A = -np.exp(p["A_log"])                                                                # (E, N)
        drive = B[:, :, None, :] * v[..., None]                                                # (b, L, E, N)
        states = diagonal_states(A, dt[..., None], self.discretization, tau, drive, h0)        # (b, L, E, N)
        y_ssm = contract("blen,bln->ble", states, C) + p["D"] * v                              # (b, L, E)
        if self.bidirectional:          # + Σ_n C^b_t h^b_t, C^b_t = v_t·x_proj_backᵀ; A, Δ_t, B_t shared (SPEC §4.12)
            states_back = backward_direction_states(A, dt[..., None], self.discretization, tau, drive, lengths)  # (b, L, E, N)
            C_back = contract("ble,ne->bln", v, p["x_proj_back.weight"])                       # (b, L, N)
            y_ssm = y_ssm + contract("blen,bln->ble", states_back, C_back)                     # (b, L, E)
        grads = {}
        # block: out = (y ⊙ SiLU(z))·out_projᵀ + bias
        grad_y_ssm, grad_z = mix_out_vjp(p, grad_y, y_ssm, z, grads) if self.block else (grad_y, None)  # (b, L, E)
        # y = Σ_n C_t h_t + D v
        grads["D"] = contract("ble,ble->e", grad_y_ssm, v)                                     # (E,)
        grad_C = contract("ble,blen->bln", grad_y_ssm, states)                                 # (b, L, N)
        grad_states = grad_y_ssm[..., None] * C[:, :, None, :]                                 # (b, L, E, N)
        grad_A, grad_dt, grad_drive, grad_h0 = diagonal_states_vjp(
            A, dt[..., None], self.discretization, tau, drive, h0, states, grad_states)        # (E, N), (b, L, E, 1), …
        grad_v = p["D"] * grad_y_ssm                                                           # (b, L, E)
        if self.bidirectional:          # the backward direction's adjoint runs forward in time
            grad_C_back = contract("ble,blen->bln", grad_y_ssm, states_back)                   # (b, L, N)
            grads["x_proj_back.weight"] = contract("bln,ble->ne", grad_C_back, v)              # (N, E)
            grad_v = grad_v + contract("bln,ne->ble", grad_C_back, p["x_proj_back.weight"])    # (b, L, E)
            grad_A_back, grad_dt_back, grad_drive_back = backward_direction_vjp(
                A, dt[..., None], self.discretization, tau, drive, lengths, states_back,
                grad_y_ssm[..., None] * C_back[:, :, None, :])                                 # (E, N), (b, L, E, 1), …
            grad_A, grad_dt, grad_drive = grad_A + grad_A_back, grad_dt + grad_dt_back, grad_drive + grad_drive_back
        grads["A_log"] = grad_A * A                                                            # (E, N)
        grad_B = contract("blen,ble->bln", grad_drive, v)                                      # (b, L, N)
        grad_v = grad_v + contract("blen,bln->ble", grad_drive, B)                             # (b, L, E)
        # Δ_t = max(softplus(s), floor): softplus' = sigmoid; no gradient where the floor holds
        grad_s = grad_dt[..., 0] * expit(s) * (softplus(s) >= DT_FLOOR)                       # (b, L, E)
        grads["dt_proj.weight"] = contract("ble,blr->er", grad_s, dt_low)                      # (E, r)
        grads["dt_proj.bias"] = grad_s.sum(axis=(0, 1))                                        # (E,)
        grad_x_dbl = np.concatenate([contract("ble,er->blr", grad_s, p["dt_proj.weight"]), grad_B, grad_C],
                                    axis=-1)                                                   # (b, L, r + 2N)
        grads["x_proj.weight"] = contract("blf,ble->fe", grad_x_dbl, v)                        # (r + 2N, E)
        grad_v = grad_v + contract("blf,fe->ble", grad_x_dbl, p["x_proj.weight"])              # (b, L, E)
        if not self.block:
            return grad_v, parameter_gradients(self, grads), grad_h0
        # v = SiLU(c), c_t = bias + Σ_k w_k p_{t−(K−1)+k};  [p | z] = x·in_projᵀ + bias
        grad_x, grad_conv0 = mix_in_vjp(p, grad_v, grad_z, x, p_ext, grads)                   # (b, L, H), (b, K − 1, E)
        return grad_x, parameter_gradients(self, grads), None if initial_state is None else (grad_conv0, grad_h0)
