"""The Mamba mixer's adjoints (SPEC §4.8, §11), the block-only ends of `S6.vjp` (reference/layers/s6.py), kept
here so that the layer file stays short: `mix_out_vjp` through out = (y ⊙ SiLU(z))·out_projᵀ + bias, and
`mix_in_vjp` through v = SiLU(causal conv1d(p)), [p | z] = x·in_projᵀ + bias. Each adds its parameters'
gradients to `grads` under mamba_ssm's names.

Glossary (SPEC §1): b batch, L length, H d_model; E channels of the SSM, K d_conv; einsum letters b l h e k f.
"""
import numpy as np

from ..backward import contract


def mix_out_vjp(params, grad_y, y_ssm, z, grads):
    """(G_y_ssm (b, L, E), G_z (b, L, E)) from G_out (b, L, H); y_ssm (b, L, E) the SSM's output, z the gate."""
    from .s6 import silu, silu_derivative   # here, not at the top: s6 imports this module
    gate = silu(z)                                                                             # (b, L, E)
    grads["out_proj.weight"] = contract("blh,ble->he", grad_y, y_ssm * gate)                   # (H, E)
    if "out_proj.bias" in params:
        grads["out_proj.bias"] = grad_y.sum(axis=(0, 1))                                       # (H,)
    grad_gated = contract("blh,he->ble", grad_y, params["out_proj.weight"])                    # (b, L, E)
    return grad_gated * gate, grad_gated * y_ssm * silu_derivative(z)                          # (b, L, E) each


def mix_in_vjp(params, grad_v, grad_z, x, p_ext, grads):
    """(G_x (b, L, H), G of the carried conv state (b, K − 1, E)) from G_v and G_z (b, L, E); x (b, L, H) the
    input, p_ext (b, K − 1 + L, E) the conv input with the carried state prepended (as `S6.mix_in` returns it).
    c_t = bias + Σ_k w_k p_{t−(K−1)+k}, v = SiLU(c)."""
    from .s6 import silu_derivative
    L, K = x.shape[1], params["conv1d.weight"].shape[-1]
    windows = np.stack([p_ext[:, k:k + L] for k in range(K)], axis=2)                          # (b, L, K, E)
    c = contract("blke,ek->ble", windows, params["conv1d.weight"][:, 0]) + params.get("conv1d.bias", 0.0)  # (b, L, E)
    grad_c = grad_v * silu_derivative(c)                                                       # (b, L, E)
    grads["conv1d.weight"] = contract("ble,blke->ek", grad_c, windows)[:, None, :]            # (E, 1, K)
    if "conv1d.bias" in params:
        grads["conv1d.bias"] = grad_c.sum(axis=(0, 1))                                         # (E,)
    grad_p_ext = np.zeros_like(p_ext)                                                          # (b, K − 1 + L, E)
    for k in range(K):
        grad_p_ext[:, k:k + L] += grad_c * params["conv1d.weight"][:, 0, k]
    grad_pz = np.concatenate([grad_p_ext[:, K - 1:], grad_z], axis=-1)                         # (b, L, 2E)
    grads["in_proj.weight"] = contract("blf,blh->fh", grad_pz, x)                              # (2E, H)
    if "in_proj.bias" in params:
        grads["in_proj.bias"] = grad_pz.sum(axis=(0, 1))                                       # (2E,)
    return contract("blf,fh->blh", grad_pz, params["in_proj.weight"]), grad_p_ext[:, :K - 1]  # (b, L, H), (b, K − 1, E)
