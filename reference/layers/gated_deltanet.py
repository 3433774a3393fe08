"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025), SPEC §4.11.4; `use_gate=False` is DeltaNet (Schlag et al.
2021; Yang et al., NeurIPS 2024), SPEC §4.11.3. A mixer (b, L, H) → (b, L, H) with a d_k × d_v state per head:

    q_t = l2(silu(W_q x_t)),  k_t = l2(silu(W_k x_t)),  v_t = silu(W_v x_t)          (split into h heads)
    β_t = σ(W_beta x_t)  (× 2 with allow_neg_eigval: eigenvalue 1 − β of I − β k kᵀ reaches −1)
    log α_t = −exp(A_log) · softplus(W_a x_t + dt_bias)                          (use_gate; else α ≡ 1)
    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ     (one SGD step on ½‖Sᵀk − v‖², then the decay)
    o_t = S_tᵀ (s q_t),  s = d_k^{−1/2};   y_t = W_out · concat_heads RMSNorm(o_t) ⊙ norm_weight

Events (SPEC §4.11.0 Decision): τ scales the log-decay only (α^τ = exp(−exp(A_log)·Δ_t·τ_t), a ZOH step scaled
by τ); the write (β, k, v) is an instantaneous event. DeltaNet has no decay and refuses τ. Padding: steps t >= len
are identity steps (log α = 0, β = 0, k = 0). Methods: "sequential" (the definition), "dense" (`scan_dense` on
the columns of S) and "chunkwise" (§4.11.6, the UT transform: one unit lower-triangular solve per chunk).
The machinery is written for n_h Householder steps per token so that DeltaProduct (deltaproduct.py) is this layer
with n_h > 1; here n_h = 1.
Bidirectional (SPEC §4.12, `bidirectional=True`): k, v, β and the gate α_t (with its τ power) are shared — every
projection but the query; the backward direction is the same op-level recurrence (`recurrence`, in the call's
method) run on each row's reversed valid prefix (each token's n_h sub-steps kept in order) with the reversed
gaps, its outputs reversed back. The query is the matrix state's read-out vector (C's role), so the backward
direction has its own, W_q_back (h·d_k, H), drawn like W_q right after every forward parameter and passed through
the same l2(SiLU(·)) and scale: o_t = o^f_t + o^b_t per head, then one RMSNorm and W_out on the sum (y is not a
sum of two layer outputs). Non-causal: no step, initial_state or return_state.
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gated_deltanet.py`, `fla/layers/delta_net.py`,
`fla/ops/gated_delta_rule/naive.py`, `fla/ops/delta_rule/naive.py`.
Leaves out (SPEC Decision, minimal layer): the short causal convolution (fla's no-conv path applies SiLU to q, k,
v — kept), the output gate, GQA, the gate clamp; no D/skip term (the classifier's residual supplies it).
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head key / value width, n_h Householder steps;
einsum letters b l h k v, d for the d_model input axis of a projection, o for its output axis.
"""
import numpy as np

from ..backward import contract
from ..init import check_dt_range
from ._base import Layer
from ._bidirectional import backward_states, check_bidirectional, check_call
from ._checks import check_positive_int, prepare_call, returned_state
from ._matrix_state_backward import (delta_recurrence_vjp, delta_states, l2_normalize_vjp, matrix_state_vjp,
                                     projection_vjp)
from ._math import softplus
from .matrix_state import (DELTA_METHODS, check_flag, check_matrix_step, check_unused, delta_recurrence, head_sizes,
                           interleave, l2_normalize, linear_init, rms_norm, sigmoid, silu, split_heads, valid_steps)

DT_MIN, DT_MAX = 1e-3, 0.1


# ----------------------------------------------------------------------------- initialisers
def A_log_init(rng, h):
    """A_log (h,) = log(16(1 − u)), u ~ U[0, 1): A = exp(A_log) ∈ (0, 16] (fla draws U(0, 16); 1 − u keeps log finite)."""
    return np.log(16.0 * (1.0 - rng.uniform(0.0, 1.0, h)))


def dt_bias_init(rng, h, dt_min, dt_max):
    """dt_bias (h,) = softplus⁻¹(dt), dt = exp(U[log dt_min, log dt_max)) clamped >= 1e-4."""
    dt = np.maximum(np.exp(rng.uniform(np.log(dt_min), np.log(dt_max), h)), 1e-4)        # (h,)
    return dt + np.log(-np.expm1(-dt))


def delta_params(rng, H, h, d_k, d_v, n_householder, gated, dt_min, dt_max):
    """All parameters of the delta family (SPEC §4.11.3–§4.11.5), drawn in a fixed order from `rng`."""
    params = {"W_q": linear_init(rng, h * d_k, H),                                         # (h·d_k, H)
              "W_k": linear_init(rng, n_householder * h * d_k, H),                         # (n_h·h·d_k, H)
              "W_v": linear_init(rng, n_householder * h * d_v, H),                         # (n_h·h·d_v, H)
              "W_beta": linear_init(rng, n_householder * h, H)}                            # (n_h·h, H)
    if gated:
        params["W_a"] = linear_init(rng, h, H)                                             # (h, H)
        params["A_log"] = A_log_init(rng, h)                                               # (h,)
        params["dt_bias"] = dt_bias_init(rng, h, dt_min, dt_max)                           # (h,)
    params["W_out"] = linear_init(rng, H, h * d_v)                                         # (H, h·d_v)
    params["norm_weight"] = np.ones(d_v)                                                   # (d_v,)
    return params


# ----------------------------------------------------------------------------- the layer
class GatedDeltaNet(Layer):
    """Gated DeltaNet: x (b, L, H) real → y (b, L, H) float64; state (b, h, d_k, d_v) float64."""

    methods = DELTA_METHODS
    accepts_timesteps = True               # per instance: False for DeltaNet (use_gate=False)
    no_timesteps_reason = ("DeltaNet (use_gate=False) has no decay for integration_timesteps to scale; "
                           "use GLA/GatedDeltaNet (use_gate=True) or pass None")
    no_fft_reason = ("its transitions α_t(I − β_t k_t k_tᵀ) depend on the input, so it has no convolution "
                     "(kernel) view; use 'sequential', 'dense' or 'chunkwise'")
    n_householder = 1

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, use_gate=True, allow_neg_eigval=False,
                 dt_min=DT_MIN, dt_max=DT_MAX, bidirectional=False, seed=None):
        seed = self._build(d_model, n_heads, d_k, d_v, use_gate, allow_neg_eigval, dt_min, dt_max, bidirectional, seed,
                           "use_gate")
        self.config = {"d_model": self.d_model, "n_heads": self.n_heads, "d_k": self.d_k, "d_v": self.d_v,
                       "use_gate": self.gated, "allow_neg_eigval": self.allow_neg_eigval,
                       "dt_min": self.dt_range[0], "dt_max": self.dt_range[1], "bidirectional": self.bidirectional,
                       "seed": seed}

    def _build(self, d_model, n_heads, d_k, d_v, gated, allow_neg_eigval, dt_min, dt_max, bidirectional, seed,
               gate_name):
        """Check the arguments shared with DeltaProduct and draw the parameters (W_q_back last, when
        bidirectional). Returns the checked seed."""
        self.d_model, self.n_heads, self.d_k, self.d_v = head_sizes(d_model, n_heads, d_k, d_v)
        self.gated = check_flag(gated, gate_name)
        self.allow_neg_eigval = check_flag(allow_neg_eigval, "allow_neg_eigval")
        dt_min, dt_max = check_dt_range(dt_min, dt_max)
        if not self.gated:
            check_unused("dt_min", dt_min, DT_MIN, f"{gate_name}=True")
            check_unused("dt_max", dt_max, DT_MAX, f"{gate_name}=True")
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.dt_range = (dt_min, dt_max)
        self.accepts_timesteps = self.gated
        self.scale = self.d_k ** -0.5
        rng = np.random.default_rng(seed)
        self.params = delta_params(rng, self.d_model, self.n_heads, self.d_k, self.d_v, self.n_householder, self.gated,
                                   dt_min, dt_max)
        if self.bidirectional:         # the backward direction's query (its read-out vector), SPEC §4.12
            self.params["W_q_back"] = linear_init(rng, self.n_heads * self.d_k, self.d_model)   # (h·d_k, H)
        return seed

    # --------------------------------------------------------------------- input → discrete system
    def discrete_system(self, x, tau=None, lengths=None, query="W_q"):
        """(q (b, L, h, d_k), k (b, n_h·L, h, d_k), v (b, n_h·L, h, d_v), β (b, n_h·L, h), log α (b, L, h) or None)
        for x (b, L, H); sub-step rows t·n_h + j. log α_t^{τ_t} = τ_t log α_t; padded steps are identity steps.
        `query` names q's projection: W_q, or W_q_back for the backward direction (SPEC §4.12)."""
        p, (batch, L, _), n_h = self.params, x.shape, self.n_householder
        valid = valid_steps(lengths, batch, L)                                             # (b, L)
        valid_sub = np.repeat(valid, n_h, axis=1)[..., None]                               # (b, n_h·L, 1)
        q = l2_normalize(split_heads(silu(np.einsum("od,bld->blo", p[query], x)), self.n_heads))   # (b, L, h, d_k)
        k = l2_normalize(silu(np.einsum("od,bld->blo", p["W_k"], x)).reshape(batch, n_h * L, self.n_heads, -1))
        k = k * valid_sub[..., None]                                                       # (b, n_h·L, h, d_k)
        v = silu(np.einsum("od,bld->blo", p["W_v"], x)).reshape(batch, n_h * L, self.n_heads, -1)  # (b, n_h·L, h, d_v)
        beta = (2.0 if self.allow_neg_eigval else 1.0) * sigmoid(np.einsum("od,bld->blo", p["W_beta"], x))
        beta = beta.reshape(batch, n_h * L, self.n_heads) * valid_sub                      # (b, n_h·L, h)
        if not self.gated:
            return q, k, v, beta, None
        log_alpha = -np.exp(p["A_log"]) * softplus(np.einsum("od,bld->blo", p["W_a"], x) + p["dt_bias"])   # (b, L, h)
        if tau is not None:
            log_alpha = log_alpha * tau[..., None]                                         # α^τ
        return q, k, v, beta, log_alpha * valid[..., None]

    def recurrence(self, q, k, v, beta, log_alpha, initial_state, method="sequential", chunk=64):
        """(o (b, L, h, d_v), final state) of the discrete system (the delta rule; n_h steps in DeltaProduct)."""
        return delta_recurrence(q, k, v, beta, log_alpha, initial_state, scale=self.scale, method=method, chunk=chunk)

    def read_out(self, o):
        """y (b, L, H) = W_out · concat_heads RMSNorm(o) from the heads' outputs o_t = S_tᵀ(s q_t) (b, L, h, d_v)
        (the recurrence returns o, not S_t: the chunkwise form never materialises every state; bidirectional:
        o = o^f + o^b, normed once)."""
        normed = rms_norm(o, self.params["norm_weight"])                                   # (b, L, h, d_v)
        return np.einsum("od,bld->blo", self.params["W_out"], normed.reshape(o.shape[:2] + (-1,)))   # (b, L, H)

    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", chunk=64, check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, h, d_k, d_v)) with return_state=True.

        SPEC §4.11.3–§4.11.4 (Yang et al. 2024/2025: the delta rule S_t = S_{t−1} + β_t k_t(v_t − S_{t−1}ᵀk_t)ᵀ and
        its gated form S_t = α_t(I − β_t k_t k_tᵀ)S_{t−1} + β_t k_t v_tᵀ; the UT-transform chunkwise form of
        §4.11.6; the papers' equation numbers were not re-checked here). x: real (b, L, H); lengths: (b,) ints
        (identity steps after len: the state returned is S_{len−1}); integration_timesteps τ: (b, L) >= 0, decay
        α^τ (gated only); initial_state: (b, h, d_k, d_v); method: one of `methods`; chunk: for "chunkwise".
        Bidirectional (SPEC §4.12): o^b from the reversed rows with W_q_back, added to o before the read-out.
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        q, k, v, beta, log_alpha = self.discrete_system(x, tau, lengths)
        o, state = self.recurrence(q, k, v, beta, log_alpha, h0, method=method, chunk=chunk)
        if self.bidirectional:
            o = o + backward_states(lambda u, t: self.recurrence(
                *self.discrete_system(u, t, lengths, query="W_q_back"), None, method=method, chunk=chunk)[0],
                x, lengths, tau)                                                           # (b, L, h, d_v)
        y = self.read_out(o)                                                               # (b, L, H)
        return (y, state) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One token: x_t (b, H), state (b, h, d_k, d_v), τ (b,) or None → (y_t (b, H), new state).
        inplace=True writes the new state into the given array itself and returns that array (values as
        inplace=False; the state must be a writeable float64 ndarray)."""
        given = state
        x, tau, state = check_matrix_step(self, x_t, state, integration_timestep, inplace)  # (b, 1, H), (b, h, d_k, d_v)
        o, new_state = self.recurrence(*self.discrete_system(x, tau), state)              # o (b, 1, h, d_v)
        y_t = self.read_out(o)[:, 0]                                                       # (b, H)
        return y_t, returned_state(given, new_state, inplace)

    def init_state(self, batch):
        """Zero state (batch, h, d_k, d_v) float64 (key-first)."""
        return np.zeros((check_positive_int(batch, "batch"), self.n_heads, self.d_k, self.d_v))

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_S0 (b, h, d_k, d_v) or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__. Re-runs the
        delta rule on the n_h·L sub-steps (`interleave`; n_h = 1 for Gated DeltaNet) keeping every state, then:
        the read-out → the reverse delta rule (`delta_recurrence_vjp`) → q, k (l2 ∘ SiLU), v (SiLU), β (sigmoid),
        log α = −exp(A_log)·softplus(W_a x + dt_bias) → the projections. DeltaProduct inherits it.
        Bidirectional (SPEC §4.12): the same adjoint on the reversed rows (query W_q_back), its G_x reversed back;
        the shared projections' gradients are the two directions' sums.
        """
        return matrix_state_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)

    def _direction(self, x, lengths, tau, h0, query):
        """One direction of `vjp` on x (b, L, H) (the reversed rows for the backward one): (o (b, L, h, d_v),
        back), back(G_o, grads) → (G_x (b, L, H), G_S0) adding this direction's parameter gradients to grads."""
        p, (batch, L, _), n_h, h = self.params, x.shape, self.n_householder, self.n_heads
        q, k, v, beta, log_alpha = self.discrete_system(x, tau, lengths, query=query)
        q_sub, k, v, beta, log_alpha_sub = interleave(self.scale * q, k, v, beta, log_alpha, n_h)   # n_h·L rows
        S0 = self.init_state(batch) if h0 is None else h0                                  # (b, h, d_k, d_v)
        states = delta_states(k, v, beta, log_alpha_sub, S0)                               # (b, n_h·L, h, d_k, d_v)
        o = np.einsum("blhkv,blhk->blhv", states, q_sub)[:, n_h - 1::n_h]                  # (b, L, h, d_v)

        def back(grad_o, grads):
            grad_o_sub = np.zeros(v.shape)                                                 # (b, n_h·L, h, d_v)
            grad_o_sub[:, n_h - 1::n_h] = grad_o
            grad_q, grad_k, grad_v, grad_beta, grad_log_alpha, grad_S0 = delta_recurrence_vjp(
                q_sub, k, v, beta, log_alpha_sub, S0, states, grad_o_sub)
            grad_q = self.scale * grad_q.reshape(batch, L, n_h, h, -1)[:, :, -1]           # (b, L, h, d_k)
            grad_log_alpha = grad_log_alpha.reshape(batch, L, n_h, h)[:, :, 0]             # (b, L, h)
            valid = valid_steps(lengths, batch, L)                                         # (b, L)
            valid_sub = np.repeat(valid, n_h, axis=1)[..., None]                           # (b, n_h·L, 1)
            flat = lambda z: z.reshape(batch, L, -1)                                       # noqa: E731 (b, L, ·)
            pre = {name: contract("od,bld->blo", p[name], x) for name in (query, "W_k", "W_v", "W_beta")}  # (b, L, ·)
            silu_prime = lambda z: sigmoid(z) * (1 + z * (1 - sigmoid(z)))                 # noqa: E731
            grad_pre = {
                query: flat(l2_normalize_vjp(grad_q, split_heads(silu(pre[query]), h))) * silu_prime(pre[query]),
                "W_k": flat(l2_normalize_vjp(grad_k * valid_sub[..., None], silu(pre["W_k"]).reshape(k.shape)))
                * silu_prime(pre["W_k"]),
                "W_v": flat(grad_v) * silu_prime(pre["W_v"]),
                "W_beta": flat(grad_beta * valid_sub) * (2.0 if self.allow_neg_eigval else 1.0)
                * sigmoid(pre["W_beta"]) * (1 - sigmoid(pre["W_beta"])),
            }
            grad_x = 0.0
            for name, grad in grad_pre.items():
                grad_from, grad_W = projection_vjp(grad, x, p[name])
                grads[name] = grads.get(name, 0.0) + grad_W
                grad_x = grad_x + grad_from
            if self.gated:              # log α = −exp(A_log)·softplus(W_a x + dt_bias), ·τ, 0 on padding
                grad_log_alpha = grad_log_alpha * valid[..., None] * (1.0 if tau is None else tau[..., None])
                z = contract("od,bld->blo", p["W_a"], x) + p["dt_bias"]                   # (b, L, h)
                decay = -np.exp(p["A_log"])                                                # (h,)
                grad_z = grad_log_alpha * decay * sigmoid(z)                               # softplus' = sigmoid
                grad_from, grad_W_a = projection_vjp(grad_z, x, p["W_a"])
                for name, grad in (("A_log", contract("blh,blh->h", grad_log_alpha, decay * softplus(z))),
                                   ("dt_bias", grad_z.sum(axis=(0, 1))), ("W_a", grad_W_a)):
                    grads[name] = grads.get(name, 0.0) + grad
                grad_x = grad_x + grad_from
            return grad_x, grad_S0
        return o, back
