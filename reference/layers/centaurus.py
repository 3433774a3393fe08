"""Centaurus — diagonal SSM blocks with sub-states, in four connectivity modes (SPEC §4.3).

Paper: "Let SSMs be ConvNets: State-space Modeling with Optimal Tensor Contractions" (Centaurus).
Upstream: Brainchip-Inc/Centaurus `centaurus/ssm.py` (SSMLayer); SPEC §4.3 gives the formulas that
reproduce its outputs. Each block r (or channel, or channel pair) owns M sub-states with

    λ_m = −softplus(A_re_raw) + i·A_im,   init A_re_raw = softplus⁻¹(0.5), A_im = π·m (m = 0..M−1)
    x_t = Ā ⊙ x_{t−1} + γ̄ ⊙ (W_in u_t),   y_t = W_out · Re x_t        (κ = 1, real read-out)

so Re λ = −softplus(·) < 0 always and |Ā| < 1 for every continuous discretisation (exp_euler by
default: Ā = exp(λΔ), γ̄ = Δ). The modes differ only in the state shape and the real maps W_in, W_out:

| mode      | state    | W_in (letters)          | W_out (letters)                 |
|-----------|----------|-------------------------|---------------------------------|
| neck      | (R, M)   | B repeated over m (nmh) | C_{o,n} E_{n,m} (onm)           |
| pointwise | (R·M,)   | B (nh)                  | C (on)                          |
| dws       | (H, M)   | ones (hm)               | W_mix_{o,h} E_{h,m} (ohm)       |
| full      | (H, H, M)| ones (ohm)              | E (ohm)                         |

Leaves out: the public code's norm/activation/dropout around the layer, its FFT training path (the
kernel view here is `kernel` + fft_causal_conv) and any D (skip) term — Centaurus has none, so the
lag-0 kernel is only W_out Re(γ̄) W_in. The public neck mode multiplies E into the state on the input
side; SPEC applies it at the read-out (the same outputs; the state differs by the factor E).
Bidirectional (SPEC §4.12): y_t = [W_out | W_out_back] · Re[h^f_t; h^b_t], a read-out of doubled input width whose
backward half W_out_back (H, *state) is built by the mode's W_out formula from `_back` twins of the parameters that
enter W_out only (`OUT_NAMES`: neck C_back (H, R), E_back (R, M); pointwise C_back (H, R·M); dws W_mix_back (H, H),
E_back (H, M); full E_back (H, H, M)), drawn like them after all forward parameters; Λ, Δ and W_in are shared.
Mode aliases: "pw" and "s5" mean "pointwise"; `config["mode"]` stores the canonical name.
`discretization="none"` is refused (as in S5 and S4D): λ is continuous-time, and using it as the
discrete Ā would be unstable (|−½ + iπm| > 1 for m >= 1).

Glossary (SPEC §1): b batch, l lag/time, h input channel, o output channel, H d_model,
n block (R = d_state), m sub-state (M = sub_state_dim).
"""
import numpy as np
from scipy.special import expit

from ..backward import (backward_direction_states, backward_direction_vjp, contract, diagonal_states,
                        diagonal_states_vjp, parameter_gradients, prepare_vjp)
from ..discretize import METHODS, discretize
from ..scan import scan
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, convolve, refuse_streaming,
                             two_sided_kernel)
from ._checks import (LAYER_METHODS, check_choice, check_inplace, check_positive_int, check_state, check_step_input,
                      prepare_call, returned_state)
from ._math import final_state_by_convolution, final_state, powers, softplus

MODES = ("neck", "pointwise", "dws", "full")
MODE_ALIASES = {"pw": "pointwise", "s5": "pointwise"}
CENTAURUS_METHODS = tuple(m for m in METHODS if m != "none")      # every §2 method for a continuous λ

# Letters of one state and of the real input/output maps per mode (see the module table).
EINSUM_LETTERS = {
    "neck":      {"state": "nm",  "w_in": "nmh", "w_out": "onm"},
    "pointwise": {"state": "n",   "w_in": "nh",  "w_out": "on"},
    "dws":       {"state": "hm",  "w_in": "hm",  "w_out": "ohm"},
    "full":      {"state": "ohm", "w_in": "ohm", "w_out": "ohm"},
}


def resolve_mode(mode):
    """The canonical mode name; aliases pw and s5 mean pointwise."""
    check_choice(mode, "mode", MODES + tuple(MODE_ALIASES))
    return MODE_ALIASES.get(mode, mode)


def check_sizes(d_model, d_state, mode):
    """dws needs one block per channel (d_state == d_model); full one per channel pair (d_model**2)."""
    if mode == "dws" and d_state != d_model:
        raise ValueError(f"Centaurus mode='dws' needs d_state == d_model (one block per channel); got d_state="
                         f"{d_state}, d_model={d_model}: pass d_state={d_model} or use mode='neck'/'pointwise'")
    if mode == "full" and d_state != d_model ** 2:
        raise ValueError(f"Centaurus mode='full' needs d_state == d_model**2 (one block per input-output channel "
                         f"pair); got d_state={d_state}, d_model={d_model}: pass d_state={d_model ** 2} or use "
                         "mode='neck'/'pointwise'")


def mode_shapes(d_model, d_state, sub_state_dim, mode):
    """Shapes per mode: one state, A_re_raw/A_im, log_dt, and the view of Δ that broadcasts to the state."""
    H, R, M = d_model, d_state, sub_state_dim
    state = {"neck": (R, M), "pointwise": (R * M,), "dws": (H, M), "full": (H, H, M)}[mode]
    log_dt = {"neck": (R,), "pointwise": (R * M,), "dws": (H, M), "full": (H, M)}[mode]
    dt_view = {"neck": (R, 1), "pointwise": (R * M,), "dws": (H, M), "full": (H, 1, M)}[mode]
    return {"state": state, "log_dt": log_dt, "dt_view": dt_view}


def inverse_softplus(y):
    """softplus⁻¹(y) = y + log(−expm1(−y)) for y > 0."""
    return y + np.log(-np.expm1(-y))


def init_centaurus(d_model, d_state, sub_state_dim, mode, rng):
    """Parameters of SPEC §4.3 for a canonical mode. Returns a dict of float64 arrays."""
    H, R, M = d_model, d_state, sub_state_dim
    shapes = mode_shapes(H, R, M, mode)
    blocks = shapes["state"][:-1] if mode != "pointwise" else (R,)        # blocks carrying their own M
    params = {
        "A_re_raw": np.full(blocks + (M,), inverse_softplus(0.5)).reshape(shapes["state"]),              # (S...)
        "A_im": np.broadcast_to(np.pi * np.arange(M), blocks + (M,)).reshape(shapes["state"]).copy(),  # (S...)
    }
    n_dt = {"neck": R, "pointwise": R, "dws": H, "full": H}[mode]     # Δ over blocks, channels or outputs
    log_dt = np.log(np.geomspace(1e-3, 1e-1, n_dt))                      # (n_dt,)
    params["log_dt"] = np.repeat(log_dt, np.prod(shapes["log_dt"]) // n_dt).reshape(shapes["log_dt"])
    if mode == "neck":
        params["E"] = rng.normal(0.0, np.sqrt(2.0), (R, M))
        params["B"] = np.full((R, H), 1 / np.sqrt(H))
        params["C"] = rng.normal(0.0, np.sqrt(2.0 / (R * M)), (H, R))
    elif mode == "pointwise":
        params["B"] = np.full((R * M, H), 1 / np.sqrt(H))
        params["C"] = rng.normal(0.0, np.sqrt(2.0 / (R * M)), (H, R * M))
    elif mode == "dws":
        params["E"] = np.full((H, M), 1 / np.sqrt(M))
        # Note: W_mix is the public code's bias-free Conv1d(H, H, 1); its default init is U(±1/√fan_in).
        params["W_mix"] = rng.uniform(-1 / np.sqrt(H), 1 / np.sqrt(H), (H, H))
    elif mode == "full":
        params["E"] = np.full((H, H, M), 1 / np.sqrt(H))
    else:
        raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
    return params


# The parameters that enter W_out only (not W_in), per mode: a bidirectional layer has a `_back` twin of each.
OUT_NAMES = {"neck": ("C", "E"), "pointwise": ("C",), "dws": ("W_mix", "E"), "full": ("E",)}


def centaurus_back_params(d_model, d_state, sub_state_dim, mode, rng):
    """The `_back` twins of OUT_NAMES[mode] (SPEC §4.12), drawn like them right after all forward parameters."""
    drawn = init_centaurus(d_model, d_state, sub_state_dim, mode, rng)
    return {f"{name}_back": drawn[name] for name in OUT_NAMES[mode]}


def back_maps(params, mode, shapes):
    """(W_in, W_out_back): the mode's maps with the `_back` twins in place of the read-out parameters."""
    return io_maps({**params, **{name: params[f"{name}_back"] for name in OUT_NAMES[mode]}}, mode, shapes)


def io_maps(params, mode, shapes):
    """The real maps (W_in, W_out) of the module table, from the parameters of one mode."""
    state = shapes["state"]
    if mode == "neck":
        return np.broadcast_to(params["B"][:, None, :], state + params["B"].shape[1:]), \
            params["C"][:, :, None] * params["E"]                                        # (R, M, H), (H, R, M)
    if mode == "pointwise":
        return params["B"], params["C"]                                                  # (R·M, H), (H, R·M)
    if mode == "dws":
        return np.ones(state), params["W_mix"][:, :, None] * params["E"]                 # (H, M), (H, H, M)
    if mode == "full":
        return np.ones(state), params["E"]                                               # (H, H, M), (H, H, M)
    raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")


def out_param_grads(grad_W_out, params, mode):
    """The gradients of the parameters in OUT_NAMES[mode] from G_{W_out} (the mode's W_out formula run back)."""
    if mode == "neck":                   # W_out = C_{o,n} E_{n,m}
        return {"C": contract("onm,nm->on", grad_W_out, params["E"]),                      # (H, R)
                "E": contract("onm,on->nm", grad_W_out, params["C"])}                      # (R, M)
    if mode == "pointwise":              # W_out = C
        return {"C": grad_W_out}                                                           # (H, R·M)
    if mode == "dws":                    # W_out = W_mix_{o,h} E_{h,m}
        return {"W_mix": contract("ohm,hm->oh", grad_W_out, params["E"]),                  # (H, H)
                "E": contract("ohm,oh->hm", grad_W_out, params["W_mix"])}                  # (H, M)
    return {"E": grad_W_out}             # full: W_out = E (H, H, M)


class Centaurus(Layer):
    """Centaurus layer: real (b, L, H) -> float64 (b, L, H); complex128 state of shape (b, *state_shape)."""

    kappa = 1
    methods = LAYER_METHODS

    def __init__(self, d_model, d_state, sub_state_dim=16, mode="pointwise", discretization="exp_euler",
                 bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        self.sub_state_dim = check_positive_int(sub_state_dim, "sub_state_dim")
        self.mode = resolve_mode(mode)
        check_sizes(self.d_model, self.d_state, self.mode)
        self.discretization = check_choice(discretization, "discretization", CENTAURUS_METHODS)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "sub_state_dim": self.sub_state_dim,
                       "mode": self.mode, "discretization": discretization, "bidirectional": self.bidirectional, "seed": seed}
        self.shapes = mode_shapes(self.d_model, self.d_state, self.sub_state_dim, self.mode)
        self.state_shape = self.shapes["state"]
        letters = EINSUM_LETTERS[self.mode]
        self.subscripts = {"in": f"{letters['w_in']},blh->bl{letters['state']}",        # W_in u_t
                           "out": f"{letters['w_out']},bl{letters['state']}->blo",      # W_out Re x_t
                           "kernel": f"{letters['w_out']},l{letters['state']},{letters['w_in']}->loh"}
        rng = np.random.default_rng(seed)
        self.params = init_centaurus(self.d_model, self.d_state, self.sub_state_dim, self.mode, rng)
        if self.bidirectional:
            self.params.update(centaurus_back_params(self.d_model, self.d_state, self.sub_state_dim, self.mode, rng))

    # --------------------------------------------------------------------- options resolved up front
    def continuous_eigenvalues(self):
        """λ = −softplus(A_re_raw) + i·A_im, complex128 of the state shape."""
        return -softplus(self.params["A_re_raw"]) + 1j * self.params["A_im"]

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, γ̄, W_in, W_out): Ā, γ̄ complex128 state-shaped without τ, (b, L, *state_shape) with τ (b, L);
        W_in, W_out the real maps of the mode (module table)."""
        dt = np.exp(self.params["log_dt"]).reshape(self.shapes["dt_view"])                 # broadcasts to the state
        Lambda_bar, gamma_bar = discretize(self.continuous_eigenvalues(), dt, self.discretization, tau)
        return (Lambda_bar, gamma_bar) + io_maps(self.params, self.mode, self.shapes)

    def read_out(self, states, x, states_back=None):
        """y = W_out Re x_t: states (b, L, *state_shape) complex → y (b, L, H); x is unused (no D term).
        Bidirectional: + W_out_back Re h^b_t, states_back like states (SPEC §4.12)."""
        _, W_out = io_maps(self.params, self.mode, self.shapes)
        y = np.einsum(self.subscripts["out"], W_out, states.real)                           # (b, L, H)
        if states_back is not None:
            y = y + np.einsum(self.subscripts["out"], back_maps(self.params, self.mode, self.shapes)[1], states_back.real)
        return y

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, *state_shape) complex128) with return_state=True.

        Centaurus ("Let SSMs be ConvNets", §3: diagonal SSM blocks with sub-states and the contraction
        order of each mode; the paper's equation numbers were not re-checked here): x_t = Ā ⊙ x_{t−1} +
        γ̄ ⊙ (W_in u_t), y_t = W_out Re x_t, in the mode's letters of SPEC §4.3 (no D term).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, *state_shape); method: a scan method, or "fft" (kernel view, no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        Lambda_bar, gamma_bar, W_in, _ = self.discrete_system(tau)                         # (S...) or (b, L, S...)
        drive = np.einsum(self.subscripts["in"], W_in, x)                                   # (b, L, S...) W_in u_t
        if method == "fft":
            y = convolve(self, self.kernel(x.shape[1]), x, lengths, "loh,blh->blo")         # (b, L, H)
            state_kernel = powers(Lambda_bar, x.shape[1]) * gamma_bar                       # (L, S...)
            return (y, final_state_by_convolution(state_kernel, drive, lengths)) if return_state else y
        # ---- the recurrence
        states = scan(Lambda_bar, gamma_bar * drive, h0, method=method)                     # (b, L, S...)
        states_back = None
        if self.bidirectional:                                                              # SPEC §4.12
            def run(u, t):                                                                  # from a zero state
                Lambda_bar_t, gamma_bar_t, _, _ = self.discrete_system(t)                   # (S...) or (b, L, S...)
                return scan(Lambda_bar_t, gamma_bar_t * np.einsum(self.subscripts["in"], W_in, u), method=method)
            states_back = backward_states(run, x, lengths, tau)                             # (b, L, S...)
        y = self.read_out(states, x, states_back)                                           # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One update: x_t real (b, H), state complex (b, *state_shape), τ (b,) or None -> (y_t (b, H), state).
        inplace=True: the new state is written into `state` itself (a writeable array of the state's dtype),
        which is returned."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        given = state
        state = check_state(state, (x.shape[0],) + self.state_shape, name="state")
        if inplace:
            check_inplace(given, state)
        Lambda_bar, gamma_bar, W_in, _ = self.discrete_system(tau)                         # (S...) or (b, 1, S...)
        new_state = Lambda_bar * state[:, None] + gamma_bar * np.einsum(self.subscripts["in"], W_in, x)  # (b, 1, S...)
        y = self.read_out(new_state, x)[:, 0]
        return y, returned_state(given, new_state[:, 0], inplace)

    def kernel(self, L):
        """MIMO kernel K_l = W_out Re(Ā^l γ̄) W_in, float64 (L, H_out, H_in); no D term (Centaurus has none)."""
        L = check_positive_int(L, "L")
        Lambda_bar, gamma_bar, W_in, W_out = self.discrete_system()                        # (S...)
        basis = (powers(Lambda_bar, L) * gamma_bar).real                                    # (L, S...)
        K = np.einsum(self.subscripts["kernel"], W_out, basis, W_in)                        # (L, H, H)
        if self.bidirectional:                                                              # (2L − 1, H, H)
            W_out_back = back_maps(self.params, self.mode, self.shapes)[1]
            K = two_sided_kernel(K, np.einsum(self.subscripts["kernel"], W_out_back, basis, W_in))
        return K

    def init_state(self, batch):
        """Zero state (batch, *state_shape) complex128."""
        return np.zeros((check_positive_int(batch, "batch"),) + self.state_shape, np.complex128)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 complex or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__.
        Re-runs the recurrence, then: y = W_out Re x_t → reverse scan (SPEC §3) → W_in u_t and the
        discretisation → A_re_raw (through softplus' = sigmoid), A_im, log_dt, and the mode's maps.
        Bidirectional: the `_back` read-out parameters, and `backward_direction_vjp`'s G_λ, G_Δ, G_drive added
        to the forward direction's (SPEC §4.12, §11).
        """
        check_call(self, initial_state, False)                                             # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p, method, letters = self.params, self.discretization, EINSUM_LETTERS[self.mode]
        s, w_in, w_out = letters["state"], letters["w_in"], letters["w_out"]
        W_in, W_out = io_maps(p, self.mode, self.shapes)
        Lambda = self.continuous_eigenvalues()                                             # (S...)
        dt = np.exp(p["log_dt"]).reshape(self.shapes["dt_view"])                           # broadcasts to (S...)
        drive = contract(self.subscripts["in"], W_in, x)                                  # (b, L, S...)
        states = diagonal_states(Lambda, dt, method, tau, drive, h0)                       # (b, L, S...)
        # y = W_out Re x_t: the gradient reaches Re x only
        grads = out_param_grads(contract(f"blo,bl{s}->{w_out}", grad_y, states.real), p, self.mode)
        grad_states = contract(f"{w_out},blo->bl{s}", W_out, grad_y).astype(np.complex128)  # (b, L, S...)
        grad_Lambda, grad_dt, grad_drive, grad_h0 = diagonal_states_vjp(
            Lambda, dt, method, tau, drive, h0, states, grad_states)
        if self.bidirectional:          # + W_out_back Re h^b_t: Λ, Δ and W_in are shared (SPEC §4.12)
            states_back = backward_direction_states(Lambda, dt, method, tau, drive, lengths)   # (b, L, S...)
            twins = {**p, **{name: p[f"{name}_back"] for name in OUT_NAMES[self.mode]}}       # W_out_back's inputs
            grad_W_out_back = contract(f"blo,bl{s}->{w_out}", grad_y, states_back.real)      # like W_out
            grads.update({f"{name}_back": grad for name, grad in out_param_grads(grad_W_out_back, twins,
                                                                                  self.mode).items()})
            grad_back, grad_dt_back, grad_drive_back = backward_direction_vjp(
                Lambda, dt, method, tau, drive, lengths, states_back,
                contract(f"{w_out},blo->bl{s}", io_maps(twins, self.mode, self.shapes)[1], grad_y).astype(np.complex128))
            grad_Lambda, grad_dt, grad_drive = grad_Lambda + grad_back, grad_dt + grad_dt_back, grad_drive + grad_drive_back
        grad_drive = grad_drive.real                                                       # W_in u_t is real
        grad_W_in = contract(f"bl{s},blh->{w_in}", grad_drive, x)                         # like W_in
        grads.update({"A_re_raw": -grad_Lambda.real * expit(p["A_re_raw"]),               # softplus' = sigmoid
                      "A_im": grad_Lambda.imag,
                      "log_dt": (grad_dt * dt).reshape(p["log_dt"].shape)})
        if self.mode == "neck":          # W_in = B over m
            grads["B"] = grad_W_in.sum(axis=1)                                             # (R, H)
        elif self.mode == "pointwise":   # W_in = B
            grads["B"] = grad_W_in                                                         # (R·M, H)
        grad_x = contract(f"{w_in},bl{s}->blh", W_in, grad_drive)                         # (b, L, H)
        return grad_x, parameter_gradients(self, grads), grad_h0
