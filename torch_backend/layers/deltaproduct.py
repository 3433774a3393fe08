"""DeltaProduct (Siems et al., NeurIPS 2025), SPEC §4.11.5, PyTorch mirror of reference/layers/deltaproduct.py:
Gated DeltaNet with n_h Householder steps per token (gate once before the steps, q read after the last).

    per token t:  S ← α_t S_{t−1};   for j = 1..n_h:  S ← (I − β_{t,j} k_{t,j} k_{t,j}ᵀ) S + β_{t,j} k_{t,j} v_{t,j}ᵀ

A thin layer over torch_backend/layers/gated_deltanet.py: the same discrete system with n_h > 1 and the delta rule
run on the interleaved sequence of n_h·L sub-steps ("chunkwise" by default; `chunk` counts sub-steps).
Initialisation and argument checks: the reference's (same seed, params copied). bidirectional=True is Gated
DeltaNet's (the reversed rows keep each token's n_h sub-steps in order; own query W_q_back).
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/layers/gated_deltaproduct.py`, `fla/ops/gated_delta_product/naive.py`.
Glossary: b batch, L length, H d_model, h heads, d_k / d_v per-head widths, n_h n_householder.
"""
from reference.layers.deltaproduct import DeltaProduct as ReferenceDeltaProduct
from reference.layers.gated_deltanet import DT_MAX, DT_MIN
from ._base import draw_seed
from .gated_deltanet import GatedDeltaNet
from .matrix_state import delta_product_recurrence


class DeltaProduct(GatedDeltaNet):
    """Gated DeltaProduct: x (b, L, H) real → y (b, L, H) in the module's dtype; state (b, h, d_k, d_v)."""

    reference_class = ReferenceDeltaProduct
    no_timesteps_reason = ReferenceDeltaProduct.no_timesteps_reason

    def __init__(self, d_model, n_heads=4, d_k=None, d_v=None, n_householder=2, allow_neg_eigval=True,
                 use_forget_gate=True, dt_min=DT_MIN, dt_max=DT_MAX, bidirectional=False, seed=None):
        super(GatedDeltaNet, self).__init__()
        # Note: the reference validates the arguments (same errors) and draws the parameters (same seed, same values).
        self._take(ReferenceDeltaProduct(d_model, n_heads, d_k, d_v, n_householder, allow_neg_eigval,
                                         use_forget_gate, dt_min, dt_max, bidirectional, seed=draw_seed(seed)))

    def recurrence(self, q, k, v, beta, log_alpha, initial_state, method="chunkwise", chunk=64):
        """(o (b, L, h, d_v), final state): n_h delta steps per token, the gate once before them."""
        return delta_product_recurrence(q, k, v, beta, log_alpha, initial_state, n_householder=self.n_householder,
                                        scale=self.scale, method=method, chunk=chunk)
