"""LSSL — the dense, continuous-time Linear State-Space Layer with a HiPPO-LegS matrix (SPEC §4.4).

Paper: Gu et al. 2021, "Combining Recurrent, Convolutional, and Continuous-time Models with Linear
State-Space Layers", eqs. (1)–(3). Upstream: state-spaces/s4 (the LSSL standalone model).
Each feature h is its own single-input system with N real states, all sharing A and B:

    x_{t,h} = Ā_h x_{t−1,h} + B̄_h u_{t,h}               (Ā_h, B̄_h = discretize_dense(A, B, Δ_h), dense N×N)
    z_{t,h,m} = C_{h,m}·x_{t,h} + D_{h,m} u_{t,h}       (M = channels outputs per feature)
    y_t = W_out · gelu(z_t flattened over (h, m)) + b_out

A is HiPPO-LegS (eigenvalues −1..−N), B_n = sqrt(2n+1); Δ_h = exp(log_dt_h), log-uniform in
[dt_min, dt_max]. It is the O(N²)-per-step original that motivates the diagonal layers.
Params: A (N, N) and B (N,) are fixed buffers (`frozen`), A becomes trainable with learn_A=True;
log_dt (H,), C (H, M, N) ~ N(0, 1), D (H, M) ~ N(0, 1), W_out (H, H·M) and b_out (H,) ~ U(±1/√(H·M))
(torch nn.Linear's default). The flattened index of z is h·M + m. GELU is the exact (erf) one.

Integration timesteps τ: Ā_{t,h} = discretize_dense(A, B, τ_t·Δ_h) — one dense N×N discretisation
(O(N³): a solve for bilinear, an expm for zoh) per step τ_t·Δ_h, b·L·H of them in one batched call;
τ_t = 0 gives Ā = I, B̄ = 0 (the limit of both methods). Methods: "sequential" (`scan_dense`) and "fft"
(the convolution with the state's impulse response); the diagonal scans do not apply to dense
transitions and raise, saying so (`methods_reason`).
Bidirectional (SPEC §4.12): z_t = [C | C_back] · [h^f_t; h^b_t] + D u_t, a read-out of doubled input width 2N whose
backward half C_back (H, M, N) ~ N(0, 1) is drawn after all forward parameters; A, B, Δ, D, W_out, b_out are shared.
Leaves out: the original's learned structured A (it learns the dense A directly with learn_A),
multi-layer stacking, dropout and normalisation.

Glossary (SPEC §1): b batch, l lag/time, h feature (H = d_model), n state (N = d_state),
m output channel (M = channels), o output feature.
"""
import numpy as np

from ..backward import contract, dense_scan_vjp, parameter_gradients, prepare_vjp, sum_to_shape
from ..discretize import DENSE_METHODS, check_method as check_discretization, discretize_dense, discretize_dense_vjp
from ..nn import gelu, gelu_vjp
from ..init import check_dt_range, hippo_legs, log_uniform_dt
from ..scan import scan_dense
from ._base import Layer
from ._bidirectional import (backward_states, check_bidirectional, check_call, refuse_streaming, reverse_within,
                             reversed_gaps, two_sided_kernel)
from ._checks import check_inplace, check_positive_int, check_state, check_step_input, prepare_call, returned_state
from ._math import fft_causal_conv, final_state


def init_lssl(d_model, d_state, channels, dt_min, dt_max, rng):
    """Parameters of SPEC §4.4. Returns a dict of float64 arrays."""
    H, N, M = d_model, d_state, channels
    A, B = hippo_legs(N)                                                      # (N, N), (N,)
    bound = 1 / np.sqrt(H * M)
    return {"A": A, "B": B,
            "log_dt": log_uniform_dt(rng, (H,), dt_min, dt_max),             # (H,)
            "C": rng.normal(0.0, 1.0, (H, M, N)),                             # (H, M, N)
            "D": rng.normal(0.0, 1.0, (H, M)),                                # (H, M)
            "W_out": rng.uniform(-bound, bound, (H, H * M)),                  # (H, H·M)
            "b_out": rng.uniform(-bound, bound, (H,))}                        # (H,)


def discretize_per_step(A, B, dt, method):
    """Dense (Ā, B̄) for every step size in the array `dt` (any shape S), in one batched
    discretize_dense; a zero step gives (I, 0). Returns (S..., N, N) and (S..., N)."""
    positive = dt > 0                                                        # (S...)
    A_bar, B_bar = discretize_dense(A, B, np.where(positive, dt, 1.0), method)   # (S..., N, N), (S..., N)
    A_bar = np.where(positive[..., None, None], A_bar, np.eye(A.shape[0]))   # a zero step: Ā = I
    B_bar = np.where(positive[..., None], B_bar, 0.0)                        # and B̄ = 0
    return A_bar, B_bar


def dense_states(params, method, x, tau, h0):
    """The dense recurrence kept for its adjoint: (steps (H,) or (b, L, H), Ā, B̄, drive B̄ u (b, L, H, N),
    states (b, L, H, N)) for the input x (b, L, H), τ (b, L) or None, h0 (b, H, N) or None."""
    dt = np.exp(params["log_dt"])                                                          # (H,)
    steps = dt if tau is None else tau[:, :, None] * dt                                    # (H,) or (b, L, H)
    A_bar, B_bar = discretize_per_step(params["A"], params["B"], steps, method)            # (…, H, N, N), (…, H, N)
    drive = B_bar * x[..., None]                                                           # (b, L, H, N)
    return steps, A_bar, B_bar, drive, scan_dense(A_bar, drive, h0)


def dense_states_vjp(params, method, x, tape, grad_states, h0=None):
    """The adjoint of `dense_states` from G_states (b, L, H, N): the dense reverse scan → B̄ u → one
    `discretize_dense_vjp` per feature and distinct step (Fréchet derivative of expm for zoh, solves for bilinear).
    Returns (G_x (b, L, H), G_h0 or None, {"A", "B", "log_dt"})."""
    steps, A_bar, B_bar, drive, states = tape
    grad_A_bar, grad_drive, grad_h0 = dense_scan_vjp(A_bar, drive, h0, states, grad_states)
    grad_B_bar = sum_to_shape(grad_drive * x[..., None], B_bar.shape)                     # like B̄
    grads = {"A": np.zeros_like(params["A"]), "B": np.zeros_like(params["B"]), "log_dt": np.zeros(x.shape[-1])}
    steps = np.broadcast_to(steps, A_bar.shape[:-2])                                       # (H,) or (b, L, H)
    for h in range(x.shape[-1]):
        values, index = np.unique(steps[..., h], return_inverse=True)                      # (U,)
        index = index.reshape(steps[..., h].shape)
        for u, value in enumerate(values):
            if value == 0:                                                                 # Ā = I, B̄ = 0: constant
                continue
            chosen = index == u
            grad_A, grad_B, grad_step = discretize_dense_vjp(
                params["A"], params["B"], value, method,
                grad_A_bar[..., h, :, :][chosen].sum(axis=0), grad_B_bar[..., h, :][chosen].sum(axis=0))
            grads["A"] += grad_A
            grads["B"] += grad_B
            grads["log_dt"][h] += grad_step * value                                        # ∂step/∂log_dt = step
    return (grad_drive * B_bar).sum(axis=-1), grad_h0, grads


# With event timesteps every (row, step, feature) has its own dense N×N transition: b·L·H·N² numbers in all
# (68.7 GB at b = 16, L = 4096, H = 64, N = 64). They are formed and scanned a chunk of time steps at a time,
# at most EVENT_MEMORY_LIMIT bytes of transitions at once.
EVENT_MEMORY_LIMIT = 1 << 30


def event_chunk(batch, L, H, N, itemsize, keep_all=False):
    """Time steps per chunk so that (b, chunk, H, N, N) transitions fit EVENT_MEMORY_LIMIT bytes; a
    ValueError naming the sizes when not even one step fits (or, with keep_all — autograd keeps every
    transition for the backward pass — when all L steps do not)."""
    steps = L if keep_all else 1
    needed = batch * steps * H * N * N * itemsize
    if needed > EVENT_MEMORY_LIMIT:
        sizes = f"b·L·H·N² = {batch}·{L}·{H}·{N}²" if keep_all else f"b·H·N² = {batch}·{H}·{N}²"
        raise ValueError(f"LSSL with integration_timesteps needs {sizes} dense transition entries of {itemsize} "
                         f"bytes{' (kept for the backward pass)' if keep_all else ' per time step'}: {needed} bytes, "
                         f"over the limit of {EVENT_MEMORY_LIMIT} (EVENT_MEMORY_LIMIT); use a smaller batch, "
                         "d_model or d_state" + (", a shorter sequence, or call it under torch.no_grad()" if keep_all else ""))
    return L if keep_all else max(1, min(L, EVENT_MEMORY_LIMIT // needed))


class LSSL(Layer):
    """LSSL layer: real (b, L, H) -> float64 (b, L, H); real float64 state of shape (b, H, N)."""

    methods = ("sequential", "fft")
    methods_reason = "its transitions are dense N×N matrices, so the diagonal scans do not apply"

    def __init__(self, d_model, d_state, channels=1, dt_min=1e-3, dt_max=0.1, discretization="bilinear",
                 learn_A=False, bidirectional=False, seed=None):
        self.d_model = check_positive_int(d_model, "d_model")
        self.d_state = check_positive_int(d_state, "d_state")
        self.channels = check_positive_int(channels, "channels")
        dt_min, dt_max = check_dt_range(dt_min, dt_max)
        self.discretization = check_discretization(discretization, DENSE_METHODS)
        if not isinstance(learn_A, (bool, np.bool_)):
            raise TypeError(f"learn_A must be a bool; got {learn_A!r}")
        self.learn_A = bool(learn_A)
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.frozen = ("B",) if self.learn_A else ("A", "B")     # params a trainer keeps fixed (torch buffers)
        self.config = {"d_model": self.d_model, "d_state": self.d_state, "channels": self.channels,
                       "dt_min": dt_min, "dt_max": dt_max, "discretization": discretization,
                       "learn_A": self.learn_A, "bidirectional": self.bidirectional, "seed": seed}
        self.state_shape = (self.d_model, self.d_state)
        rng = np.random.default_rng(seed)
        self.params = init_lssl(self.d_model, self.d_state, self.channels, dt_min, dt_max, rng)
        if self.bidirectional:       # the backward half of the doubled-width read-out (SPEC §4.12)
            self.params["C_back"] = rng.normal(0.0, 1.0, (self.d_model, self.channels, self.d_state))   # (H, M, N)

    # --------------------------------------------------------------------- the discrete system
    def discrete_system(self, tau=None):
        """(Ā, B̄): (H, N, N), (H, N) without τ; (b, L, H, N, N), (b, L, H, N) with τ (b, L): step τ_t·Δ_h."""
        dt = np.exp(self.params["log_dt"])                                     # (H,)
        dt = dt if tau is None else tau[:, :, None] * dt                       # (H,) or (b, L, H)
        return discretize_per_step(self.params["A"], self.params["B"], dt, self.discretization)

    def read_out(self, states, x, states_back=None):
        """y = W_out · gelu(z flattened over (h, m)) + b_out with z = C x_t + D u_t:
        states (b, L, H, N), x (b, L, H) -> y (b, L, H) (or one step: (b, H, N), (b, H)).
        Bidirectional: z = C h^f_t + C_back h^b_t + D u_t, states_back (b, L, H, N) (SPEC §4.12)."""
        z = np.einsum("hmn,...hn->...hm", self.params["C"], states) + self.params["D"] * x[..., None]  # (…, H, M)
        if states_back is not None:
            z = z + np.einsum("hmn,...hn->...hm", self.params["C_back"], states_back)      # (…, H, M)
        W_out = self.params["W_out"].reshape(self.d_model, self.d_model, self.channels)   # (H, H, M)
        return np.einsum("ohm,...hm->...o", W_out, gelu(z)) + self.params["b_out"]

    # --------------------------------------------------------------------- the views
    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, H, N) real float64) with return_state=True.

        Gu et al. 2021 (LSSL), eqs. (1)–(3): the continuous system x' = Ax + Bu, y = Cx + Du, its
        discretisation and the discrete recurrence, here with a GBT/ZOH step per feature (SPEC §4.4) and
        the read-out y = W_out·gelu(C x + D u) + b_out; "fft" convolves with the state's impulse
        response Ā^l B̄ (the Krylov view of the paper's §3).
        x: real (b, L, H); lengths: (b,) ints (the state returned is the one after step len−1; valid
        outputs do not depend on the padding); integration_timesteps τ: (b, L) >= 0 (event gaps);
        initial_state: (b, H, N); method: "sequential" (the dense scan) or "fft" (no τ, no initial_state).
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)

        def run(x, tau, h0=None):                                                          # states (b, L, H, N)
            if method == "fft":
                return fft_causal_conv(self.state_kernel(x.shape[1]), x, "lhn,blh->blhn")  # (b, L, H, N)
            L, chunk = x.shape[1], x.shape[1] if tau is None else event_chunk(*x.shape, self.d_state, 8)
            parts, h = [], h0                                                              # memory: see event_chunk
            for start in range(0, L, chunk):
                A_bar, B_bar = self.discrete_system(None if tau is None else tau[:, start:start + chunk])  # (…, H, N, N)
                parts.append(scan_dense(A_bar, B_bar * x[:, start:start + chunk, :, None], h))  # (b, chunk, H, N)
                h = parts[-1][:, -1]                                                       # (b, H, N)
            return np.concatenate(parts, axis=1)                                           # (b, L, H, N)
        states = run(x, tau, h0)                                                           # (b, L, H, N)
        states_back = backward_states(run, x, lengths, tau) if self.bidirectional else None   # SPEC §4.12
        y = self.read_out(states, x, states_back)                                          # (b, L, H)
        return (y, final_state(states, lengths)) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One update: x_t real (b, H), state real (b, H, N), τ (b,) or None -> (y_t (b, H), state (b, H, N)).
        inplace=True: the new state is written into `state` itself (a writeable array of the state's dtype),
        which is returned."""
        refuse_streaming(self, "step")
        x, tau = check_step_input(x_t, self.d_model, integration_timestep=integration_timestep)  # (b, 1, H)
        given = state
        state = check_state(state, (x.shape[0],) + self.state_shape, np.float64, name="state")
        if inplace:
            check_inplace(given, state)
        A_bar, B_bar = self.discrete_system(tau)                                           # (…, H, N, N), (…, H, N)
        new_state = np.einsum("...nk,...k->...n", A_bar, state[:, None]) + B_bar * x[..., None]  # (b, 1, H, N)
        y = self.read_out(new_state, x)[:, 0]
        return y, returned_state(given, new_state[:, 0], inplace)

    def state_kernel(self, L):
        """Impulse response of the state, Ā_h^l B̄_h: float64 (L, H, N), from the same dense scan."""
        A_bar, B_bar = self.discrete_system()                                              # (H, N, N), (H, N)
        impulse = np.zeros((1, L, self.d_model, self.d_state))                             # (1, L, H, N)
        impulse[0, 0] = B_bar
        return scan_dense(A_bar, impulse)[0]                                               # (L, H, N)

    def kernel(self, L):
        """Kernel of the pre-activation z: K_l = C·Ā^l B̄ + D·[l = 0], float64 (L, H, M); z = causal_conv(K, u).
        Bidirectional: the two-sided kernel of z (2L − 1, H, M), index L − 1 + l weighting u_{t−l} (SPEC §4.12)."""
        L = check_positive_int(L, "L")
        state_kernel = self.state_kernel(L)                                                # (L, H, N)
        K = np.einsum("hmn,lhn->lhm", self.params["C"], state_kernel)                      # (L, H, M)
        K[0] += self.params["D"]
        if self.bidirectional:
            K = two_sided_kernel(K, np.einsum("hmn,lhn->lhm", self.params["C_back"], state_kernel))   # (2L − 1, H, M)
        return K

    def init_state(self, batch):
        """Zero state (batch, H, N) float64."""
        return np.zeros((check_positive_int(batch, "batch"),) + self.state_shape)

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_h0 (b, H, N) or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__.
        Re-runs the dense recurrence, then: W_out·gelu(z) + b_out → z = C x + D u → the dense reverse scan
        → B̄ u → one `discretize_dense_vjp` per feature and distinct step (Fréchet derivative of expm for
        zoh, solves for bilinear) → log_dt (and A with learn_A). Frozen params (`frozen`) get no entry.
        Bidirectional: C_back, then the same dense adjoint on the reversed prefixes with the reversed gaps
        (a forward-running scan), its G_x reversed back (SPEC §4.12, §11).
        """
        check_call(self, initial_state, False)                                             # bidirectional: no h0
        grad_y, x, lengths, tau, h0 = prepare_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)
        p, H, M, method = self.params, self.d_model, self.channels, self.discretization
        tape = dense_states(p, method, x, tau, h0)                                         # (…, states (b, L, H, N))
        z = contract("hmn,blhn->blhm", p["C"], tape[-1]) + p["D"] * x[..., None]          # (b, L, H, M)
        if self.bidirectional:          # + C_back h^b_t: the recurrence on the reversed prefixes (SPEC §4.12)
            x_r = reverse_within(x, lengths)                                               # (b, L, H)
            tape_r = dense_states(p, method, x_r, reversed_gaps(tau, lengths), None)
            states_back = reverse_within(tape_r[-1], lengths)                              # (b, L, H, N)
            z = z + contract("hmn,blhn->blhm", p["C_back"], states_back)                  # (b, L, H, M)
        # y = W_out gelu(z) + b_out;  z = C x_t + D u_t
        grads = {"W_out": contract("blo,blhm->ohm", grad_y, gelu(z)).reshape(H, H * M),   # (H, H·M)
                 "b_out": grad_y.sum(axis=(0, 1))}                                          # (H,)
        grad_z = gelu_vjp(contract("ohm,blo->blhm", p["W_out"].reshape(H, H, M), grad_y), z)  # (b, L, H, M)
        grads["C"] = contract("blhm,blhn->hmn", grad_z, tape[-1])                         # (H, M, N)
        grads["D"] = contract("blhm,blh->hm", grad_z, x)                                  # (H, M)
        grad_x, grad_h0, discretised = dense_states_vjp(p, method, x, tape, contract("hmn,blhm->blhn", p["C"], grad_z), h0)
        grads.update(discretised)                                                          # A, B, log_dt
        grad_x = grad_x + contract("blhm,hm->blh", grad_z, p["D"])                        # (b, L, H)
        if self.bidirectional:          # the backward direction's adjoint runs forward in time
            grads["C_back"] = contract("blhm,blhn->hmn", grad_z, states_back)             # (H, M, N)
            grad_x_r, _, discretised = dense_states_vjp(
                p, method, x_r, tape_r, reverse_within(contract("hmn,blhm->blhn", p["C_back"], grad_z), lengths))
            grad_x = grad_x + reverse_within(grad_x_r, lengths)                            # (b, L, H)
            grads.update({name: grads[name] + grad for name, grad in discretised.items()})
        return grad_x, parameter_gradients(self, grads), grad_h0
