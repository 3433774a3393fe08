"""GLA — gated linear attention (Yang et al., ICML 2024), SPEC §4.11.2; `use_gate=False` is causal linear
attention (Katharopoulos et al. 2020, SPEC §4.11.1). A mixer (b, L, H) → (b, L, H) whose per-head state is a
d_k × d_v matrix:

    q_t, k_t, v_t = W_q x_t, W_k x_t, W_v x_t                        (split into h heads, no activation)
    log α_t = logsigmoid(W_gate_up W_gate_down x_t + b_gate) / 16   ∈ (−∞, 0]^{d_k}  (use_gate; else α ≡ 1)
    S_t = diag(α_t) S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ (s q_t),  s = d_k^{−1/2}
    y_t = W_out · concat_heads RMSNorm(o_t) ⊙ norm_weight

Events (SPEC §4.11.0 Decision): τ scales the log-decay only, α_t^{τ_t}; linear attention has no decay and
refuses τ. Padding (`lengths`): steps t >= len are identity steps (log α = 0, k = 0), so the returned state is
S_{len−1} in every method. Methods: "sequential" (the definition), every §3 scan on the flattened state, and
"chunkwise" (§4.11.6, masked pairwise decays); no convolution view.
Bidirectional (SPEC §4.12, `bidirectional=True`): k, v and the gates α_t (with their τ powers) are shared — every
projection but the query; the backward direction is the same op-level recurrence (`gla_recurrence`, in the call's
method) run on each row's reversed valid prefix with the reversed gaps, its outputs reversed back. The query is the
matrix state's read-out vector (C's role), so the backward direction has its own, W_q_back (h·d_k, H), drawn like
W_q right after every forward parameter: o_t = S_tᵀ(s q_t) + S^bᵀ_t(s q^b_t) per head, then one RMSNorm and W_out
on the sum (y is not a sum of two layer outputs). Non-causal: no step, initial_state or return_state.
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gla.py`, `fla/ops/gla/naive.py`.
Leaves out (SPEC Decision, minimal layer): the output gate, feature maps, the short convolution, GQA, the
normalised-denominator linear attention; no D/skip term (the classifier's residual supplies it).
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head key / value width, r gate_low_rank_dim;
einsum letters b l h (heads) k v, d for the d_model input axis of a projection, o for its output axis.
"""
import numpy as np

from ..backward import contract
from ..init import check_real
from ._base import Layer
from ._bidirectional import backward_states, check_bidirectional, check_call
from ._checks import check_positive_int, prepare_call, returned_state
from ._matrix_state_backward import gla_recurrence_vjp, gla_states, matrix_state_vjp, projection_vjp
from .matrix_state import (GLA_METHODS, check_flag, check_matrix_step, check_unused, gla_recurrence, head_sizes,
                           linear_init, logsigmoid, rms_norm, sigmoid, split_heads, valid_steps)


# ----------------------------------------------------------------------------- initialisers
def gla_params(rng, H, h, d_k, d_v, use_gate, r):
    """All GLA parameters (SPEC §4.11.0, §4.11.2), drawn in a fixed order from `rng`."""
    params = {"W_q": linear_init(rng, h * d_k, H),                                         # (h·d_k, H)
              "W_k": linear_init(rng, h * d_k, H),                                         # (h·d_k, H)
              "W_v": linear_init(rng, h * d_v, H)}                                         # (h·d_v, H)
    if use_gate:
        params["W_gate_down"] = linear_init(rng, r, H)                                     # (r, H)
        params["W_gate_up"] = linear_init(rng, h * d_k, r)                                 # (h·d_k, r)
        params["b_gate"] = np.zeros(h * d_k)                                               # (h·d_k,)
    params["W_out"] = linear_init(rng, H, h * d_v)                                         # (H, h·d_v)
    params["norm_weight"] = np.ones(d_v)                                                   # (d_v,)
    return params


# ----------------------------------------------------------------------------- the layer
class GLA(Layer):
    """Gated linear attention: x (b, L, H) real → y (b, L, H) float64; state (b, h, d_k, d_v) float64."""

    methods = GLA_METHODS
    accepts_timesteps = True               # per instance: False for linear attention (use_gate=False)
    no_timesteps_reason = ("linear attention (use_gate=False) has no decay for integration_timesteps to scale; "
                           "use GLA/GatedDeltaNet (use_gate=True) or pass None")
    no_fft_reason = ("its output is not a convolution of the input (the decays and q_t·k_s depend on the input), "
                     "so it has no kernel view; use 'sequential' or 'chunkwise'")

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, use_gate=True, gate_logit_normalizer=16,
                 gate_low_rank_dim=16, bidirectional=False, seed=None):
        self.d_model, self.n_heads, self.d_k, self.d_v = head_sizes(d_model, n_heads, d_k, d_v)
        self.use_gate = check_flag(use_gate, "use_gate")
        gate_logit_normalizer = check_real(gate_logit_normalizer, "gate_logit_normalizer", 0.0, low_open=True)
        gate_low_rank_dim = check_positive_int(gate_low_rank_dim, "gate_low_rank_dim")
        if not self.use_gate:
            check_unused("gate_logit_normalizer", gate_logit_normalizer, 16, "use_gate=True")
            check_unused("gate_low_rank_dim", gate_low_rank_dim, 16, "use_gate=True")
        self.bidirectional = check_bidirectional(bidirectional)
        if seed is not None:
            seed = check_positive_int(seed, "seed", minimum=0)
        self.accepts_timesteps = self.use_gate
        self.scale = self.d_k ** -0.5
        self.config = {"d_model": self.d_model, "n_heads": self.n_heads, "d_k": self.d_k, "d_v": self.d_v,
                       "use_gate": self.use_gate, "gate_logit_normalizer": gate_logit_normalizer,
                       "gate_low_rank_dim": gate_low_rank_dim, "bidirectional": self.bidirectional, "seed": seed}
        rng = np.random.default_rng(seed)
        self.params = gla_params(rng, self.d_model, self.n_heads, self.d_k, self.d_v, self.use_gate, gate_low_rank_dim)
        if self.bidirectional:         # the backward direction's query (its read-out vector), SPEC §4.12
            self.params["W_q_back"] = linear_init(rng, self.n_heads * self.d_k, self.d_model)   # (h·d_k, H)

    # --------------------------------------------------------------------- input → discrete system
    def query(self, x, name="W_q"):
        """q (b, L, h, d_k) = W x split into heads, W = W_q (forward) or W_q_back (the backward read-out)."""
        return split_heads(np.einsum("od,bld->blo", self.params[name], x), self.n_heads)   # (b, L, h, d_k)

    def discrete_system(self, x, tau=None, lengths=None, query="W_q"):
        """(q, k (b, L, h, d_k), v (b, L, h, d_v), log α (b, L, h, d_k) or None) for x (b, L, H): log α_t^{τ_t} =
        τ_t log α_t; steps t >= len are identity steps (k = 0, log α = 0). `query` names q's projection."""
        p = self.params
        valid = valid_steps(lengths, x.shape[0], x.shape[1])[..., None, None]              # (b, L, 1, 1)
        q = self.query(x, query)                                                           # (b, L, h, d_k)
        k = split_heads(np.einsum("od,bld->blo", p["W_k"], x), self.n_heads) * valid       # (b, L, h, d_k)
        v = split_heads(np.einsum("od,bld->blo", p["W_v"], x), self.n_heads)               # (b, L, h, d_v)
        if not self.use_gate:
            return q, k, v, None
        logits = np.einsum("or,rd,bld->blo", p["W_gate_up"], p["W_gate_down"], x) + p["b_gate"]   # (b, L, h·d_k)
        log_alpha = split_heads(logsigmoid(logits), self.n_heads) / self.config["gate_logit_normalizer"]
        if tau is not None:
            log_alpha = log_alpha * tau[..., None, None]                                   # α^τ
        return q, k, v, log_alpha * valid                                                  # (b, L, h, d_k)

    def read_out(self, o):
        """y (b, L, H) = W_out · concat_heads RMSNorm(o) from the heads' outputs o_t = S_tᵀ(s q_t) (b, L, h, d_v)
        (the recurrence returns o, not S_t: the chunkwise form never materialises every state; bidirectional:
        o = o^f + o^b, normed once)."""
        normed = rms_norm(o, self.params["norm_weight"])                                   # (b, L, h, d_v)
        return np.einsum("od,bld->blo", self.params["W_out"], normed.reshape(o.shape[:2] + (-1,)))   # (b, L, H)

    def __call__(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                 method="sequential", chunk=64, check_finite=True):
        """y (b, L, H) float64, or (y, final state (b, h, d_k, d_v)) with return_state=True.

        SPEC §4.11.1–§4.11.2 (Yang et al. 2024: linear attention written as an RNN, then its gated recurrence
        S_t = diag(α_t) S_{t−1} + k_t v_tᵀ with α_t from a low-rank gate; the paper's equation numbers were not
        re-checked here, so its sections are named instead). x: real (b, L, H); lengths: (b,) ints
        (padded steps are identity steps: the state returned is S_{len−1}, valid outputs do not depend on the
        padding); integration_timesteps τ: (b, L) >= 0, decay α^τ (use_gate only); initial_state:
        (b, h, d_k, d_v); method: one of `methods`; chunk: steps per chunk for "chunkwise".
        Bidirectional (SPEC §4.12): o^b from the reversed rows with W_q_back, added to o before the read-out.
        """
        x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
        check_call(self, initial_state, return_state)
        q, k, v, log_alpha = self.discrete_system(x, tau, lengths)
        o, state = gla_recurrence(q, k, v, log_alpha, h0, scale=self.scale, method=method, chunk=chunk)
        if self.bidirectional:
            o = o + backward_states(lambda u, t: gla_recurrence(
                *self.discrete_system(u, t, lengths, query="W_q_back"), scale=self.scale, method=method,
                chunk=chunk)[0], x, lengths, tau)                                          # (b, L, h, d_v)
        y = self.read_out(o)                                                               # (b, L, H)
        return (y, state) if return_state else y

    def step(self, x_t, state, integration_timestep=None, *, inplace=False):
        """One step: x_t (b, H), state (b, h, d_k, d_v), τ (b,) or None → (y_t (b, H), new state).
        inplace=True writes the new state into the given array itself and returns that array (values as
        inplace=False; the state must be a writeable float64 ndarray)."""
        given = state
        x, tau, state = check_matrix_step(self, x_t, state, integration_timestep, inplace)  # (b, 1, H), (b, h, d_k, d_v)
        q, k, v, log_alpha = self.discrete_system(x, tau)
        o, new_state = gla_recurrence(q, k, v, log_alpha, state, scale=self.scale)         # o (b, 1, h, d_v)
        y_t = self.read_out(o)[:, 0]                                                       # (b, H)
        return y_t, returned_state(given, new_state, inplace)

    def init_state(self, batch):
        """Zero state (batch, h, d_k, d_v) float64 (key-first)."""
        return np.zeros((check_positive_int(batch, "batch"), self.n_heads, self.d_k, self.d_v))

    def vjp(self, grad_y, x, lengths=None, integration_timesteps=None, *, initial_state=None):
        """The backward pass by hand (SPEC §11): (G_x (b, L, H), {param: G}, G_S0 (b, h, d_k, d_v) or None).

        grad_y: ∂loss/∂y (b, L, H) (ignored at padded positions); other arguments as in __call__. Re-runs the
        sequential recurrence keeping every state, then: the read-out (W_out, RMSNorm) → the reverse recurrence
        (`gla_recurrence_vjp`) → q, k, v, log α → the projections and the low-rank logsigmoid gate.
        Bidirectional (SPEC §4.12): the same adjoint on the reversed rows (query W_q_back), its G_x reversed back;
        the shared projections' gradients are the two directions' sums.
        """
        return matrix_state_vjp(self, grad_y, x, lengths, integration_timesteps, initial_state)

    def _direction(self, x, lengths, tau, h0, query):
        """One direction of `vjp` on x (b, L, H) (the reversed rows for the backward one): (o (b, L, h, d_v),
        back), back(G_o, grads) → (G_x (b, L, H), G_S0) adding this direction's parameter gradients to grads."""
        p, (batch, L, _) = self.params, x.shape
        q, k, v, log_alpha = self.discrete_system(x, tau, lengths, query=query)
        log_alpha = np.zeros(k.shape) if log_alpha is None else log_alpha                  # (b, L, h, d_k)
        S0 = self.init_state(batch) if h0 is None else h0                                  # (b, h, d_k, d_v)
        states = gla_states(self.scale * q, k, v, log_alpha, S0)                           # (b, L, h, d_k, d_v)
        o = np.einsum("blhkv,blhk->blhv", states, self.scale * q)                          # (b, L, h, d_v)

        def back(grad_o, grads):
            grad_q, grad_k, grad_v, grad_log_alpha, grad_S0 = gla_recurrence_vjp(
                self.scale * q, k, v, log_alpha, S0, states, grad_o)
            valid = valid_steps(lengths, batch, L)[..., None, None]                        # (b, L, 1, 1)
            flat = lambda z: z.reshape(batch, L, -1)                                       # noqa: E731 (b, L, h·d)
            grad_x = 0.0
            for name, grad in ((query, self.scale * grad_q), ("W_k", grad_k * valid), ("W_v", grad_v)):
                grad_from, grad_W = projection_vjp(flat(grad), x, p[name])
                grads[name] = grads.get(name, 0.0) + grad_W
                grad_x = grad_x + grad_from
            if self.use_gate:           # log α = logsigmoid(W_up W_down x + b) / normalizer, ·τ, 0 on padding
                grad_log_alpha = grad_log_alpha * valid * (1.0 if tau is None else tau[..., None, None])
                low = contract("rd,bld->blr", p["W_gate_down"], x)                         # (b, L, r)
                logits = contract("or,blr->blo", p["W_gate_up"], low) + p["b_gate"]       # (b, L, h·d_k)
                grad_logits = flat(grad_log_alpha) / self.config["gate_logit_normalizer"] * sigmoid(-logits)
                grad_low, grad_up = projection_vjp(grad_logits, low, p["W_gate_up"])
                grad_from, grad_down = projection_vjp(grad_low, x, p["W_gate_down"])
                for name, grad in (("b_gate", grad_logits.sum(axis=(0, 1))), ("W_gate_up", grad_up),
                                   ("W_gate_down", grad_down)):
                    grads[name] = grads.get(name, 0.0) + grad
                grad_x = grad_x + grad_from
            return grad_x, grad_S0
        return o, back
