"""The backward pass of the matrix-state recurrences (SPEC §4.11, §11), beside `matrix_state.py`: every state of
the GLA and delta-rule recurrences kept by their sequential definitions, their adjoints (the reverse recurrences
in S), and the adjoints of the maps around them (per-head RMSNorm, l2 normalisation, the read-out W_out, the
projections). Used by GLA, GatedDeltaNet and DeltaProduct `vjp`; the shared chain-rule pieces are in
reference/backward.py. Glossary as in matrix_state.py: b batch, l time, h heads, k key index (i, j), v value index.
"""
import numpy as np

from ..backward import contract, parameter_gradients, prepare_vjp
from ._bidirectional import check_call, reverse_within, reversed_gaps
from .matrix_state import NORM_EPS, rms_norm


def gla_states(q, k, v, log_alpha, S0):
    """Every state of S_t = diag(α_t) S_{t−1} + k_t v_tᵀ (the sequential definition, kept for the adjoint).

    k (b, L, h, d_k), v (b, L, h, d_v), log_alpha (b, L, h, d_k), S0 (b, h, d_k, d_v). Returns (b, L, h, d_k, d_v).
    """
    states = np.empty(k.shape + v.shape[-1:])                                            # (b, L, h, d_k, d_v)
    S = S0
    for t in range(k.shape[1]):
        S = np.exp(log_alpha[:, t])[..., None] * S + k[:, t, ..., None] * v[:, t, :, None, :]
        states[:, t] = S
    return states


def gla_recurrence_vjp(q, k, v, log_alpha, S0, states, grad_o):
    """The adjoint of o_t = S_tᵀ q_t with S_t = diag(α_t) S_{t−1} + k_t v_tᵀ (q already scaled), run backwards:
    G_{S_t} = q_t g_tᵀ + diag(α_{t+1}) G_{S_{t+1}};  G_q = S_t g_t,  G_k = G_S v,  G_v = G_Sᵀ k,
    G_{log α} = α ⊙ Σ_v G_S ⊙ S_{t−1}. Returns (G_q, G_k, G_v, G_log_alpha, G_S0), shapes of the inputs."""
    grad_q = np.einsum("blhkv,blhv->blhk", states, grad_o)                                # (b, L, h, d_k)
    grad_k, grad_v = np.empty_like(k), np.empty_like(v)
    grad_log_alpha = np.empty_like(log_alpha)                                             # (b, L, h, d_k)
    carry = np.zeros_like(S0)                                                             # G_{S_t} (b, h, d_k, d_v)
    for t in range(k.shape[1] - 1, -1, -1):
        carry = carry + q[:, t, ..., None] * grad_o[:, t, :, None, :]
        previous = states[:, t - 1] if t > 0 else S0                                     # S_{t−1}
        grad_k[:, t] = np.einsum("bhkv,bhv->bhk", carry, v[:, t])
        grad_v[:, t] = np.einsum("bhkv,bhk->bhv", carry, k[:, t])
        alpha = np.exp(log_alpha[:, t])                                                   # (b, h, d_k)
        grad_log_alpha[:, t] = alpha * np.einsum("bhkv,bhkv->bhk", carry, previous)
        carry = alpha[..., None] * carry                                                  # G_{S_{t−1}}
    return grad_q, grad_k, grad_v, grad_log_alpha, carry


def delta_states(k, v, beta, log_alpha, S0):
    """Every state of S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ (the sequential definition).

    k (b, L, h, d_k), v (b, L, h, d_v), beta and log_alpha (b, L, h), S0 (b, h, d_k, d_v). Returns (b, L, h, d_k, d_v).
    """
    states = np.empty(k.shape + v.shape[-1:])                                            # (b, L, h, d_k, d_v)
    S = S0
    for t in range(k.shape[1]):
        k_t, b_t = k[:, t], beta[:, t, :, None, None]                                    # (b, h, d_k), (b, h, 1, 1)
        kS = np.einsum("bhk,bhkv->bhv", k_t, S)                                           # kᵀS (b, h, d_v)
        S = (np.exp(log_alpha[:, t])[..., None, None] * (S - b_t * k_t[..., None] * kS[:, :, None, :])
             + b_t * k_t[..., None] * v[:, t, :, None, :])
        states[:, t] = S
    return states


def delta_recurrence_vjp(q, k, v, beta, log_alpha, S0, states, grad_o):
    """The adjoint of o_t = S_tᵀ q_t with S_t = α_t (P − β_t k_t u_tᵀ) + β_t k_t v_tᵀ, P = S_{t−1}, u = Pᵀk
    (q already scaled). With G = G_{S_t} and Ĝ = α_t G:
        G_P = Ĝ − β k (kᵀĜ),   G_v = β Gᵀk,   G_β = kᵀ G v − kᵀ Ĝ u,
        G_k = β (G v − Ĝ u − P Ĝᵀ k),   G_{log α} = Σ Ĝ ⊙ (P − β k uᵀ).
    Returns (G_q, G_k, G_v, G_beta, G_log_alpha, G_S0), shapes of the inputs."""
    grad_q = np.einsum("blhkv,blhv->blhk", states, grad_o)                                # (b, L, h, d_k)
    grad_k, grad_v = np.empty_like(k), np.empty_like(v)
    grad_beta, grad_log_alpha = np.empty_like(beta), np.empty_like(log_alpha)             # (b, L, h)
    carry = np.zeros_like(S0)                                                             # G_{S_t}
    for t in range(k.shape[1] - 1, -1, -1):
        G = carry + q[:, t, ..., None] * grad_o[:, t, :, None, :]                          # (b, h, d_k, d_v)
        P = states[:, t - 1] if t > 0 else S0                                            # S_{t−1}
        k_t, v_t, b_t = k[:, t], v[:, t], beta[:, t]                                     # (b, h, d_k), (b, h, d_v), (b, h)
        alpha = np.exp(log_alpha[:, t])                                                   # (b, h)
        G_hat = alpha[..., None, None] * G                                                # (b, h, d_k, d_v)
        u = np.einsum("bhkv,bhk->bhv", P, k_t)                                            # Pᵀk (b, h, d_v)
        G_v_vec = np.einsum("bhkv,bhv->bhk", G, v_t)                                      # G v (b, h, d_k)
        G_hat_u = np.einsum("bhkv,bhv->bhk", G_hat, u)                                    # Ĝ u (b, h, d_k)
        G_hat_k = np.einsum("bhkv,bhk->bhv", G_hat, k_t)                                  # Ĝᵀk (b, h, d_v)
        grad_v[:, t] = b_t[..., None] * np.einsum("bhkv,bhk->bhv", G, k_t)
        grad_beta[:, t] = np.einsum("bhk,bhk->bh", k_t, G_v_vec) - np.einsum("bhk,bhk->bh", k_t, G_hat_u)
        grad_k[:, t] = b_t[..., None] * (G_v_vec - G_hat_u - np.einsum("bhkv,bhv->bhk", P, G_hat_k))
        grad_log_alpha[:, t] = (np.einsum("bhkv,bhkv->bh", G_hat, P)
                                - b_t * np.einsum("bhk,bhk->bh", G_hat_u, k_t))
        carry = G_hat - b_t[..., None, None] * k_t[..., None] * G_hat_k[:, :, None, :]    # G_P
    return grad_q, grad_k, grad_v, grad_beta, grad_log_alpha, carry


def rms_norm_vjp(grad_y, o, weight, eps=NORM_EPS):
    """y = o/ρ ⊙ w, ρ = sqrt(mean(o²) + ε) over the last axis: G_o = (G_y w − ô mean(G_y w ⊙ ô))/ρ with ô = o/ρ;
    G_w = Σ G_y ⊙ ô. Returns (G_o like o, G_w like weight)."""
    rho = np.sqrt(np.mean(o * o, axis=-1, keepdims=True) + eps)                          # (..., 1)
    o_hat = o / rho                                                                        # (..., d)
    g = grad_y * weight                                                                    # (..., d)
    grad_o = (g - o_hat * np.mean(g * o_hat, axis=-1, keepdims=True)) / rho
    return grad_o, (grad_y * o_hat).reshape(-1, o.shape[-1]).sum(axis=0)


def l2_normalize_vjp(grad_y, z, eps=1e-6):
    """y = z/ν, ν = sqrt(Σ z² + ε) over the last axis: G_z = G_y/ν − z (Σ G_y ⊙ z)/ν³. Same shape as z."""
    nu = np.sqrt(np.sum(z * z, axis=-1, keepdims=True) + eps)                             # (..., 1)
    return grad_y / nu - z * np.sum(grad_y * z, axis=-1, keepdims=True) / nu ** 3


def matrix_read_out_vjp(grad_y, o, W_out, norm_weight):
    """The adjoint of y = W_out · concat_heads RMSNorm(o) ⊙ norm_weight (SPEC §4.11.0's read-out).

    grad_y (b, L, H); o (b, L, h, d_v). Returns (G_o (b, L, h, d_v), {"W_out", "norm_weight"})."""
    normed = rms_norm(o, norm_weight).reshape(o.shape[:2] + (-1,))                       # (b, L, h·d_v)
    grads = {"W_out": contract("blo,bld->od", grad_y, normed)}                            # (H, h·d_v)
    grad_normed = contract("blo,od->bld", grad_y, W_out).reshape(o.shape)                 # (b, L, h, d_v)
    grad_o, grads["norm_weight"] = rms_norm_vjp(grad_normed, o, norm_weight)
    return grad_o, grads


def projection_vjp(grad_z, x, W):
    """z = W x over the last axis (W (out, in), no bias): (G_x (b, L, in), G_W (out, in)) from G_z (b, L, out)."""
    return contract("blo,od->bld", grad_z, W), contract("blo,bld->od", grad_z, x)


# ----------------------------------------------------------------------------- the layers' vjp
def matrix_state_vjp(layer, grad_y, x, lengths, integration_timesteps, initial_state):
    """`vjp` of GLA, GatedDeltaNet and DeltaProduct (arguments and results as `layer.vjp`): each layer's
    `_direction(x, lengths, τ, h0, query)` re-runs one direction keeping every state and returns (o, back);
    the read-out's adjoint (`matrix_read_out_vjp`) gives G_o, and back(G_o, grads) the rest. Bidirectional
    (SPEC §4.12): the same direction on the reversed rows with the reversed gaps and the query W_q_back, its o and
    G_x reversed back; the shared projections' gradients are the two directions' sums."""
    check_call(layer, initial_state, False)                                                # bidirectional: no h0
    grad_y, x, lengths, tau, h0 = prepare_vjp(layer, grad_y, x, lengths, integration_timesteps, initial_state)
    o, back = layer._direction(x, lengths, tau, h0, "W_q")                                 # (b, L, h, d_v)
    if layer.bidirectional:
        x_r = reverse_within(x, lengths)                                                   # (b, L, H)
        o_r, back_r = layer._direction(x_r, lengths, reversed_gaps(tau, lengths), None, "W_q_back")
        o = o + reverse_within(o_r, lengths)                                               # (b, L, h, d_v)
    grad_o, grads = matrix_read_out_vjp(grad_y, o, layer.params["W_out"], layer.params["norm_weight"])
    grad_x, grad_S0 = back(grad_o, grads)
    if layer.bidirectional:
        grad_x_r, _ = back_r(reverse_within(grad_o, lengths), grads)
        grad_x = grad_x + reverse_within(grad_x_r, lengths)                                # (b, L, H)
    return grad_x, parameter_gradients(layer, grads), None if h0 is None else grad_S0
