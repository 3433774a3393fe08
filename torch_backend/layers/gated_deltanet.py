"""Gated DeltaNet (Yang, Kautz & Hatamizadeh, ICLR 2025), SPEC §4.11.4; `use_gate=False` is DeltaNet (SPEC §4.11.3).
PyTorch mirror of reference/layers/gated_deltanet.py (STYLE 6):

    q_t = l2(silu(W_q x_t)),  k_t = l2(silu(W_k x_t)),  v_t = silu(W_v x_t)          (split into h heads)
    β_t = σ(W_beta x_t)  (× 2 with allow_neg_eigval)
    log α_t = −exp(A_log) · softplus(W_a x_t + dt_bias)                          (use_gate; else α ≡ 1)
    S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ,   o_t = S_tᵀ (s q_t)
    y_t = W_out · concat_heads RMSNorm(o_t) ⊙ norm_weight

Initialisation and argument checks: the reference's (same seed, params copied). The machinery is written for
n_h Householder steps per token so that DeltaProduct is this layer with n_h > 1.
Differences from the reference, each for a reason:
* `method` defaults to "chunkwise" (the UT-transform form, all chunks' triangular solves batched, differentiable
  by autograd); the reference's default is "sequential", the definition;
* bidirectional=True (SPEC §4.12) is the reference's design — k, v, β and the gate shared, the backward direction
  the op-level recurrence on the reversed rows (in the call's method) with its own query W_q_back (same l2 ∘ SiLU
  and scale), o = o^f + o^b before one RMSNorm and W_out; autograd differentiates it;
* precision follows the parameters (float32 by default, float64 after .double()).
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gated_deltanet.py`, `fla/ops/gated_delta_rule/naive.py`.
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head widths, n_h Householder steps;
einsum letters b l h k v, d / o the input / output axis of a projection.
"""
import torch
import torch.nn.functional as F

from reference.layers.gated_deltanet import DT_MAX, DT_MIN, GatedDeltaNet as ReferenceGatedDeltaNet
from ._base import Layer, draw_seed
from ._bidirectional import backward_states, check_call
from ._checks import check_positive_int, prepare_call
from ._math import softplus, softplus_
from .matrix_state import (DELTA_METHODS, check_matrix_step, delta_recurrence, delta_step_, l2_normalize,
                           l2_normalize_, rms_norm, rms_norm_, sigmoid, silu, split_heads, valid_steps)


class GatedDeltaNet(Layer):
    """Gated DeltaNet: x (b, L, H) real → y (b, L, H) in the module's dtype; state (b, h, d_k, d_v)."""

    reference_class = ReferenceGatedDeltaNet
    methods = DELTA_METHODS
    accepts_timesteps = True               # per instance: False for DeltaNet (use_gate=False)
    no_timesteps_reason = ReferenceGatedDeltaNet.no_timesteps_reason
    no_fft_reason = ReferenceGatedDeltaNet.no_fft_reason
    n_householder = 1

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, use_gate=True, allow_neg_eigval=False,
                 dt_min=DT_MIN, dt_max=DT_MAX, bidirectional=False, seed=None):
        super().__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        self._take(ReferenceGatedDeltaNet(d_model, n_heads, d_k, d_v, use_gate, allow_neg_eigval, dt_min, dt_max,
                                          bidirectional, seed=draw_seed(seed)))

    def _take(self, ref):
        """Parameters, config and sizes from the reference layer `ref`."""
        self._init_from_reference(ref)
        self.d_model, self.n_heads, self.d_k, self.d_v = ref.d_model, ref.n_heads, ref.d_k, ref.d_v
        self.gated, self.allow_neg_eigval, self.bidirectional = ref.gated, ref.allow_neg_eigval, ref.bidirectional
        self.accepts_timesteps, self.scale, self.n_householder = ref.accepts_timesteps, ref.scale, ref.n_householder

    # --------------------------------------------------------------------- input → discrete system
    def discrete_system(self, x, tau=None, lengths=None, query="W_q"):
        """(q (b, L, h, d_k), k (b, n_h·L, h, d_k), v (b, n_h·L, h, d_v), β (b, n_h·L, h), log α (b, L, h) or None)
        for x (b, L, H); sub-step rows t·n_h + j. log α_t^{τ_t} = τ_t log α_t; padded steps are identity steps.
        `query` names q's projection: W_q, or W_q_back for the backward direction (SPEC §4.12)."""
        # Note: the parameters are module attributes here (self.W_q for the reference's p["W_q"]).
        (batch, L, _), n_h = x.shape, self.n_householder
        valid = valid_steps(lengths, batch, L, x)                                          # (b, L)
        valid_sub = torch.repeat_interleave(valid, n_h, dim=1)[..., None]                  # (b, n_h·L, 1)
        W_q = getattr(self, query)                                                         # (h·d_k, H)
        q = l2_normalize(split_heads(silu(torch.einsum("od,bld->blo", W_q, x)), self.n_heads))   # (b, L, h, d_k)
        k = l2_normalize(silu(torch.einsum("od,bld->blo", self.W_k, x)).reshape(batch, n_h * L, self.n_heads, -1))
        k = k * valid_sub[..., None]                                                       # (b, n_h·L, h, d_k)
        v = silu(torch.einsum("od,bld->blo", self.W_v, x)).reshape(batch, n_h * L, self.n_heads, -1)  # (b, n_h·L, h, d_v)
        beta = (2.0 if self.allow_neg_eigval else 1.0) * sigmoid(torch.einsum("od,bld->blo", self.W_beta, x))
        beta = beta.reshape(batch, n_h * L, self.n_heads) * valid_sub                      # (b, n_h·L, h)
        if not self.gated:
            return q, k, v, beta, None
        log_alpha = -torch.exp(self.A_log) * softplus(torch.einsum("od,bld->blo", self.W_a, x) + self.dt_bias)  # (b, L, h)
        if tau is not None:
            log_alpha = log_alpha * tau[..., None]                                         # α^τ
        return q, k, v, beta, log_alpha * valid[..., None]

    def recurrence(self, q, k, v, beta, log_alpha, initial_state, method="chunkwise", chunk=64):
        """(o (b, L, h, d_v), final state) of the discrete system (the delta rule; n_h steps in DeltaProduct)."""
        return delta_recurrence(q, k, v, beta, log_alpha, initial_state, scale=self.scale, method=method, chunk=chunk)

    def read_out(self, o):
        """y (b, L, H) = W_out · concat_heads RMSNorm(o) from the heads' outputs o_t = S_tᵀ(s q_t) (b, L, h, d_v)."""
        normed = rms_norm(o, self.norm_weight)                                             # (b, L, h, d_v)
        return torch.einsum("od,bld->blo", self.W_out, normed.reshape(tuple(o.shape[:2]) + (-1,)))   # (b, L, H)

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                method="chunkwise", chunk=64, check_finite=True):
        """y (b, L, H), or (y, final state (b, h, d_k, d_v)) with return_state=True.

        SPEC §4.11.3–§4.11.6 (see the reference's docstring). x: real (b, L, H); lengths: (b,) ints (identity
        steps after len); integration_timesteps τ: (b, L) >= 0, decay α^τ (gated only); initial_state:
        (b, h, d_k, d_v); method: one of `methods`; chunk: for "chunkwise".
        Bidirectional (SPEC §4.12): o^b from the reversed rows with W_q_back, added to o before the read-out.
        Note: method defaults to "chunkwise"; the reference defaults to "sequential", the definition.
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
        inplace=True (autograd off): the new state is written into `state` itself and `state` is returned (values as
        inplace=False, to rounding); its per-event vectors go to workspace buffers, so nothing state-sized is formed."""
        x, tau, state = check_matrix_step(self, x_t, state, integration_timestep, inplace)  # (b, 1, H), (b, h, d_k, d_v)
        if inplace:
            return self._step_inplace(x[:, 0], tau, state), state
        o, new_state = self.recurrence(*self.discrete_system(x, tau), state, method="sequential")  # o (b, 1, h, d_v)
        return self.read_out(o)[:, 0], new_state

    def _step_inplace(self, u, tau, S):
        """The step of `step(..., inplace=True)`: S (b, h, d_k, d_v) ← the new state for the token u (b, H) and
        τ (b, 1) or None; returns y_t (b, H), the one new tensor. The gate first (S ← α S), then the n_h delta
        steps S ← S + (β k)(v − kᵀS)ᵀ (matrix_state.delta_step_), then o = Sᵀ(s q) and the read-out.
        Note: torch only: the formulas of discrete_system, the sequential recurrence and read_out for one token,
        with q, k, v, β, α, kᵀS and the head outputs in workspace buffers (Layer._workspace; out= products,
        in-place maps, torch's own σ and SiLU) and the state updated in place. Equal to step to rounding."""
        (b, _), h, d_k, d_v, n_h = u.shape, self.n_heads, self.d_k, self.d_v, self.n_householder
        def scratch(name, *shape):
            return self._workspace(name, (b,) + shape, u.dtype)                            # the module's (checked)
        q = F.silu(torch.matmul(u, self.W_q.T, out=scratch("q", h * d_k)), inplace=True)           # (b, h·d_k)
        k = F.silu(torch.matmul(u, self.W_k.T, out=scratch("k", n_h * h * d_k)), inplace=True)     # (b, n_h·h·d_k)
        v = F.silu(torch.matmul(u, self.W_v.T, out=scratch("v", n_h * h * d_v)), inplace=True)     # (b, n_h·h·d_v)
        beta = torch.sigmoid_(torch.matmul(u, self.W_beta.T, out=scratch("beta", n_h * h)))        # (b, n_h·h)
        if self.allow_neg_eigval:
            beta.mul_(2.0)
        q = l2_normalize_(q.view(b, h, d_k), scratch("q_norm", h, 1)).mul_(self.scale)           # (b, h, d_k) s q
        k = l2_normalize_(k.view(b, n_h, h, d_k), scratch("k_norm", n_h, h, 1))                   # (b, n_h, h, d_k)
        v, beta = v.view(b, n_h, h, d_v), beta.view(b, n_h, h)                                     # rows j = 0..n_h−1
        if self.gated:
            alpha = torch.addmm(self.dt_bias, u, self.W_a.T, out=scratch("alpha", h))              # (b, h)
            softplus_(alpha, scratch("alpha_scratch", h)).mul_(self._cached("minus_A", lambda: -torch.exp(self.A_log)))
            if tau is not None:
                alpha.mul_(tau)                                                                    # log α^τ
            S.mul_(alpha.exp_()[..., None, None])                                                  # S ← α_t S
        kS = scratch("kS", h, d_v)                                                                 # (b, h, d_v)
        k_j = k[:, 0] if n_h == 1 else scratch("k_j", h, d_k)                                     # (b, h, d_k)
        for j in range(n_h):
            if n_h > 1:        # a contiguous copy: kᵀS's batched product would copy the strided k[:, j] itself
                k_j.copy_(k[:, j])
            delta_step_(S, k_j, v[:, j], beta[:, j], kS)                                           # (b, h, d_k, d_v)
        o = torch.matmul(q[..., None, :], S, out=scratch("o", h, 1, d_v))[:, :, 0]                 # (b, h, d_v)
        rms_norm_(o, self.norm_weight, scratch("norm", h, 1))                                      # (b, h, d_v)
        return torch.matmul(o.reshape(b, h * d_v), self.W_out.T)                                   # (b, H)

    def init_state(self, batch):
        """Zero state (batch, h, d_k, d_v) in the module's dtype and device (key-first)."""
        return torch.zeros((check_positive_int(batch, "batch"), self.n_heads, self.d_k, self.d_v),
                           dtype=self.dtype, device=self.device)
