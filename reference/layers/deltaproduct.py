"""DeltaProduct (Siems et al., NeurIPS 2025), SPEC §4.11.5: Gated DeltaNet with n_h Householder steps per token.

    per token t:  S ← α_t S_{t−1};   for j = 1..n_h:  S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ;   S_t = S
    as one transition:  A_t = α_t H_{t,n_h} ⋯ H_{t,1}  (H = I − β k kᵀ),  b_t = Σ_j H_{t,n_h} ⋯ H_{t,j+1} β_{t,j} k_{t,j} v_{t,j}ᵀ
    o_t = S_tᵀ (s q_t) read after the last step;  y_t = W_out · concat_heads RMSNorm(o_t) ⊙ norm_weight

q, k, v, β, the gate and the read-out are Gated DeltaNet's (gated_deltanet.py), with W_k (n_h·h·d_k, H),
W_v (n_h·h·d_v, H), W_beta (n_h·h, H), the step j the outermost split index (fla `t (n h d) -> (t n) h d`).
Products of n_h >= 2 generalised Householder factors can rotate (eigenvalues complex, inside |λ| <= α_t): with
allow_neg_eigval (default, β ∈ [0, 2]) two factors express the rotations of Z_3 (state tracking).
Methods: "sequential" and "chunkwise" run the delta rule on the interleaved sequence of n_h·L sub-steps (gate at
j = 0, q at j = n_h − 1; `chunk` counts sub-steps); "dense" scans the per-token transitions A_t with drives b_t.
n_h = 1 is Gated DeltaNet. Without the forget gate there is no decay, so τ is refused.
Bidirectional (SPEC §4.12, `bidirectional=True`): Gated DeltaNet's — k, v, β and the gate are shared, the
backward direction is this recurrence on each row's reversed valid prefix (tokens reversed, each token's n_h
sub-steps kept in order) with the reversed gaps and its own query W_q_back (h·d_k, H, drawn after every forward
parameter); o = o^f + o^b goes through one RMSNorm and W_out. Non-causal: no step, initial_state or return_state.
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gated_deltaproduct.py`,
`fla/ops/gated_delta_product/naive.py` (`chunk_ref.py` for the interleaving).
Leaves out: what Gated DeltaNet leaves out (short convolution, output gate, GQA).
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head widths, n_h n_householder.
"""
from ._checks import check_positive_int
from .gated_deltanet import DT_MAX, DT_MIN, GatedDeltaNet
from .matrix_state import delta_product_recurrence


class DeltaProduct(GatedDeltaNet):
    """Gated DeltaProduct: x (b, L, H) real → y (b, L, H) float64; state (b, h, d_k, d_v) float64."""

    no_timesteps_reason = ("DeltaProduct with use_forget_gate=False has no decay for integration_timesteps to "
                           "scale; use use_forget_gate=True (or GLA/GatedDeltaNet) or pass None")

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, n_householder=2, allow_neg_eigval=True,
                 use_forget_gate=True, dt_min=DT_MIN, dt_max=DT_MAX, bidirectional=False, seed=None):
        self.n_householder = check_positive_int(n_householder, "n_householder")
        seed = self._build(d_model, n_heads, d_k, d_v, use_forget_gate, allow_neg_eigval, dt_min, dt_max,
                           bidirectional, seed, "use_forget_gate")
        self.config = {"d_model": self.d_model, "n_heads": self.n_heads, "d_k": self.d_k, "d_v": self.d_v,
                       "n_householder": self.n_householder, "allow_neg_eigval": self.allow_neg_eigval,
                       "use_forget_gate": self.gated, "dt_min": self.dt_range[0], "dt_max": self.dt_range[1],
                       "bidirectional": self.bidirectional, "seed": seed}

    def recurrence(self, q, k, v, beta, log_alpha, initial_state, method="sequential", chunk=64):
        """(o (b, L, h, d_v), final state): n_h delta steps per token, the gate once before them."""
        return delta_product_recurrence(q, k, v, beta, log_alpha, initial_state, n_householder=self.n_householder,
                                        scale=self.scale, method=method, chunk=chunk)
