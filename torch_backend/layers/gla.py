"""GLA — gated linear attention (Yang et al., ICML 2024), SPEC §4.11.2; `use_gate=False` is causal linear
attention (SPEC §4.11.1). PyTorch mirror of reference/layers/gla.py (STYLE 6):

    q_t, k_t, v_t = W_q x_t, W_k x_t, W_v x_t                        (split into h heads, no activation)
    log α_t = logsigmoid(W_gate_up W_gate_down x_t + b_gate) / 16   ∈ (−∞, 0]^{d_k}  (use_gate; else α ≡ 1)
    S_t = diag(α_t) S_{t−1} + k_t v_tᵀ,   o_t = S_tᵀ (s q_t),  s = d_k^{−1/2}
    y_t = W_out · concat_heads RMSNorm(o_t) ⊙ norm_weight

Initialisation and argument checks: the reference's (the reference layer is built with the same seed and its
params copied). Differences from the reference, each for a reason:
* `method` defaults to "chunkwise" (the parallel form, differentiable by autograd); the reference's default is
  "sequential", the definition;
* bidirectional=True (SPEC §4.12) is the reference's design — k, v, the gates shared, the backward direction the
  op-level recurrence on the reversed rows (in the call's method) with its own query W_q_back, o = o^f + o^b
  before one RMSNorm and W_out; autograd differentiates it;
* precision follows the parameters (float32 by default, float64 after .double()); value checks follow
  `check_finite` (see torch_backend/layers/_checks.py).
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gla.py`, `fla/ops/gla/naive.py`.
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head widths; einsum letters b l h k v, d / o the
input / output axis of a projection.
"""
import torch

from reference.layers.gla import GLA as ReferenceGLA
from ._base import Layer, draw_seed
from ._bidirectional import backward_states, check_call
from ._checks import check_positive_int, prepare_call
from .matrix_state import (GLA_METHODS, check_matrix_step, gla_recurrence, gla_step_, logsigmoid, logsigmoid_,
                           rms_norm, rms_norm_, split_heads, valid_steps)


class GLA(Layer):
    """Gated linear attention: x (b, L, H) real → y (b, L, H) in the module's dtype; state (b, h, d_k, d_v)."""

    reference_class = ReferenceGLA
    methods = GLA_METHODS
    accepts_timesteps = True               # per instance: False for linear attention (use_gate=False)
    no_timesteps_reason = ReferenceGLA.no_timesteps_reason
    no_fft_reason = ReferenceGLA.no_fft_reason

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, use_gate=True, gate_logit_normalizer=16,
                 gate_low_rank_dim=16, bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        ref = ReferenceGLA(d_model, n_heads, d_k, d_v, use_gate, gate_logit_normalizer, gate_low_rank_dim,
                           bidirectional, seed=draw_seed(seed))
        self._init_from_reference(ref)
        self.d_model, self.n_heads, self.d_k, self.d_v = ref.d_model, ref.n_heads, ref.d_k, ref.d_v
        self.use_gate, self.accepts_timesteps, self.scale = ref.use_gate, ref.accepts_timesteps, ref.scale
        self.bidirectional = ref.bidirectional

    # --------------------------------------------------------------------- input → discrete system
    def query(self, x, name="W_q"):
        """q (b, L, h, d_k) = W x split into heads, W = W_q (forward) or W_q_back (the backward read-out)."""
        return split_heads(torch.einsum("od,bld->blo", getattr(self, name), x), self.n_heads)   # (b, L, h, d_k)

    def discrete_system(self, x, tau=None, lengths=None, query="W_q"):
        """(q, k (b, L, h, d_k), v (b, L, h, d_v), log α (b, L, h, d_k) or None) for x (b, L, H): log α_t^{τ_t} =
        τ_t log α_t; steps t >= len are identity steps (k = 0, log α = 0). `query` names q's projection."""
        # Note: the parameters are module attributes here (self.W_q for the reference's p["W_q"]).
        valid = valid_steps(lengths, x.shape[0], x.shape[1], x)[..., None, None]          # (b, L, 1, 1)
        q = self.query(x, query)                                                           # (b, L, h, d_k)
        k = split_heads(torch.einsum("od,bld->blo", self.W_k, x), self.n_heads) * valid    # (b, L, h, d_k)
        v = split_heads(torch.einsum("od,bld->blo", self.W_v, x), self.n_heads)            # (b, L, h, d_v)
        if not self.use_gate:
            return q, k, v, None
        logits = torch.einsum("or,rd,bld->blo", self.W_gate_up, self.W_gate_down, x) + self.b_gate   # (b, L, h·d_k)
        log_alpha = split_heads(logsigmoid(logits), self.n_heads) / self.config["gate_logit_normalizer"]
        if tau is not None:
            log_alpha = log_alpha * tau[..., None, None]                                   # α^τ
        return q, k, v, log_alpha * valid                                                  # (b, L, h, d_k)

    def read_out(self, o):
        """y (b, L, H) = W_out · concat_heads RMSNorm(o) from the heads' outputs o_t = S_tᵀ(s q_t) (b, L, h, d_v)."""
        normed = rms_norm(o, self.norm_weight)                                             # (b, L, h, d_v)
        return torch.einsum("od,bld->blo", self.W_out, normed.reshape(tuple(o.shape[:2]) + (-1,)))   # (b, L, H)

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="chunkwise", chunk=64, check_finite=True):
        """y (b, L, H), or (y, final state (b, h, d_k, d_v)) with return_state=True.

        SPEC §4.11.1–§4.11.2 (Yang et al. 2024; see the reference's docstring). x: real (b, L, H); lengths: (b,)
        ints (identity steps after len); integration_timesteps τ: (b, L) >= 0, decay α^τ (use_gate only);
        initial_state: (b, h, d_k, d_v); method: one of `methods`; chunk: steps per chunk for "chunkwise".
        Bidirectional (SPEC §4.12): o^b from the reversed rows with W_q_back, added to o before the read-out.
        Note: method defaults to "chunkwise"; the reference defaults to "sequential", the definition.
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
        inplace=True (autograd off): the new state is written into `state` itself and `state` is returned (values as
        inplace=False, to rounding); its per-event vectors go to workspace buffers, so nothing state-sized is formed."""
        x, tau, state = check_matrix_step(self, x_t, state, integration_timestep, inplace)  # (b, 1, H), (b, h, d_k, d_v)
        if inplace:
            return self._step_inplace(x[:, 0], tau, state), state
        q, k, v, log_alpha = self.discrete_system(x, tau)
        o, new_state = gla_recurrence(q, k, v, log_alpha, state, scale=self.scale, method="sequential")
        return self.read_out(o)[:, 0], new_state

    def _step_inplace(self, u, tau, S):
        """The step of `step(..., inplace=True)`: S (b, h, d_k, d_v) ← the new state for the event u (b, H) and
        τ (b, 1) or None; returns y_t (b, H), the one new tensor.
        Note: torch only: the formulas of discrete_system, the sequential recurrence and read_out for one event,
        with q, k, v, the gate and the head outputs in workspace buffers (Layer._workspace; out= products, in-place
        maps) and the state updated in place (matrix_state.gla_step_). Equal to step to rounding."""
        (b, _), h, d_k, d_v = u.shape, self.n_heads, self.d_k, self.d_v
        def scratch(name, *shape):
            return self._workspace(name, (b,) + shape, u.dtype)                            # the module's (checked)
        q = torch.matmul(u, self.W_q.T, out=scratch("q", h * d_k)).mul_(self.scale)            # (b, h·d_k) s q
        k = torch.matmul(u, self.W_k.T, out=scratch("k", h * d_k))                             # (b, h·d_k)
        v = torch.matmul(u, self.W_v.T, out=scratch("v", h * d_v))                             # (b, h·d_v)
        alpha = None
        if self.use_gate:
            low = torch.matmul(u, self.W_gate_down.T, out=scratch("gate_low", self.W_gate_down.shape[0]))   # (b, r)
            alpha = torch.addmm(self.b_gate, low, self.W_gate_up.T, out=scratch("alpha", h * d_k))   # (b, h·d_k)
            logsigmoid_(alpha, scratch("alpha_scratch", h * d_k)).div_(self.config["gate_logit_normalizer"])
            if tau is not None:
                alpha.mul_(tau)                                                                # log α^τ
            alpha = alpha.exp_().view(b, h, d_k)                                               # (b, h, d_k) α_t
        o = gla_step_(S, q.view(b, h, d_k), k.view(b, h, d_k), v.view(b, h, d_v), alpha,
                      scratch("o", h, d_v))                                                    # (b, h, d_v)
        rms_norm_(o, self.norm_weight, scratch("norm", h, 1))                                  # (b, h, d_v)
        return torch.matmul(o.view(b, h * d_v), self.W_out.T)                                  # (b, H)

    def init_state(self, batch):
        """Zero state (batch, h, d_k, d_v) in the module's dtype and device (key-first)."""
        return torch.zeros((check_positive_int(batch, "batch"), self.n_heads, self.d_k, self.d_v),
                           dtype=self.dtype, device=self.device)
