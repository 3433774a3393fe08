"""Matrix-state recurrences (SPEC §4.11), op level, PyTorch mirror of reference/layers/matrix_state.py (STYLE 6).

    GLA            S_t = diag(α_t) S_{t−1} + k_t v_tᵀ                      (α ≡ 1: causal linear attention)
    delta family   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ    (α ≡ 1: DeltaNet)
    DeltaProduct   per token: S ← α_t S, then n_h delta steps (no gate); S_t = S
    read           o_t = S_tᵀ (s q_t)                                     (s = scale, d_k^{−1/2} in the layers)

Every function takes time-first tensors and returns (o, final_state); the state is key-first.
    q, k (b, L, h, d_k)   v (b, L, h, d_v)   β (b, L, h)   initial_state, final_state (b, h, d_k, d_v)
    log_alpha: None (α ≡ 1), (b, L, h) a scalar per head, or (b, L, h, d_k) (GLA only); every entry <= 0.
Methods: "sequential" (the definition; autograd records L steps), the §3 scans on the flattened state (GLA) or
"dense" (`scan_dense` on the columns of S, delta family), and "chunkwise" (§4.11.6, differentiable by autograd:
masked pairwise decays with exponents <= 0 for GLA; one batched `solve_triangular` for every chunk of the
delta family at once, then a loop over chunks that carries the state).
Differences from the reference, each for a reason:
* the chunkwise forms pad the sequence to whole chunks with identity steps (q = k = v = β = log α = 0) so that
  the intra-chunk parts of all chunks (GLA) and their UT transforms (delta family: one batched triangular solve)
  are formed at once; the reference loops over a shorter last chunk (SPEC §4.11.6: both give the same numbers);
* GLA's intra-chunk product uses fla's sub-chunking (16 rows, masked pairwise decays only inside a sub-chunk,
  blocks below it factorised through the sub-chunk's last row: every exponent stays <= 0, SPEC §4.11.7); the
  reference forms the C × C pairwise decays directly;
* precision follows the inputs (float32 by default, float64 for parity).
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/ops/*/naive.py`.
Einsum letters: b batch, l time (r, s inside a chunk, c the chunk; m, R, S the sub-chunks of GLA), h heads,
k key index (i, j), v value index.
"""
import torch

from reference.layers._checks import check_choice, check_positive_int
from ..scan import SCAN_METHODS, scan, scan_dense

GLA_METHODS = ("sequential",) + tuple(m for m in SCAN_METHODS if m != "sequential") + ("chunkwise",)
DELTA_METHODS = ("sequential", "dense", "chunkwise")


# ----------------------------------------------------------------------------- elementwise maps of the layers
def logsigmoid(z):
    """log σ(z) = min(z, 0) − log1p(exp(−|z|)), finite for every finite z."""
    return torch.clamp(z, max=0.0) - torch.log1p(torch.exp(-torch.abs(z)))


def sigmoid(z):
    """σ(z) = exp(logsigmoid(z)) (the reference's formula)."""
    return torch.exp(logsigmoid(z))


def softplus(z):
    """softplus(z) = logaddexp(0, z) (not F.softplus, whose threshold differs from the reference)."""
    return torch.logaddexp(torch.zeros_like(z), z)


def silu(z):
    """z·σ(z)."""
    return z * sigmoid(z)


def l2_normalize(z, eps=1e-6):
    """z / sqrt(Σ z² + eps) over the last axis (fla `l2norm`, SPEC §4.11.3)."""
    return z / torch.sqrt(torch.sum(z * z, dim=-1, keepdim=True) + eps)


def rms_norm(o, weight, eps=1e-5):
    """o / sqrt(mean(o²) + eps) ⊙ weight over the last axis (the per-head output norm, SPEC §4.11.0)."""
    return o / torch.sqrt(torch.mean(o * o, dim=-1, keepdim=True) + eps) * weight


# ----------------------------------------------------------------------------- shared by the three layers
# Note: initialisers and argument checks (linear_init, head_sizes, check_flag, check_unused, check_step_timestep)
# are the reference's: torch layers build the reference layer and copy its parameters.
def split_heads(z, n_heads):
    """(b, L, h·d) → (b, L, h, d), head index outermost (fla's `(h d)`)."""
    return z.reshape(tuple(z.shape[:2]) + (n_heads, -1))


def valid_steps(lengths, batch, L, like):
    """1 where t < len_b, 0 on padding (identity steps), (b, L) in `like`'s dtype; all ones without lengths."""
    if lengths is None:
        return like.new_ones((batch, L))
    return (torch.arange(L, device=like.device)[None, :] < lengths[:, None]).to(like.dtype)   # (b, L)


# ----------------------------------------------------------------------------- argument checks
def _check_arrays(q, k, v, beta, log_alpha, initial_state, vector_gate):
    """The tensors with their shapes checked against q (b, L, h, d_k) and v (b, L, h, d_v)."""
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (b, L, h, d_k); got {tuple(q.shape)} and {tuple(k.shape)}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape (b, L, h, d_v) = {tuple(q.shape[:3])} + (d_v,); got {tuple(v.shape)}")
    batch, L, h, d_k = q.shape
    if L < 1:
        raise ValueError(f"the recurrence needs L >= 1 time steps; got q of shape {tuple(q.shape)}")
    if beta is not None and beta.shape != q.shape[:3]:
        raise ValueError(f"beta must have shape (b, L, h) = {tuple(q.shape[:3])}; got {tuple(beta.shape)}")
    if log_alpha is None:
        log_alpha = q.new_zeros(tuple(q.shape[:3]) + ((d_k,) if vector_gate else ()))       # α ≡ 1
    shapes = (tuple(q.shape[:3]), tuple(q.shape)) if vector_gate else (tuple(q.shape[:3]),)
    if tuple(log_alpha.shape) not in shapes:
        raise ValueError(f"log_alpha must have shape {' or '.join(map(str, shapes))}; got {tuple(log_alpha.shape)}")
    if vector_gate and log_alpha.ndim == 3:
        log_alpha = log_alpha[..., None].expand(q.shape)                                     # (b, L, h, d_k)
    state_shape = (batch, h, d_k, v.shape[3])
    if initial_state is None:
        initial_state = q.new_zeros(state_shape)
    if tuple(initial_state.shape) != state_shape:
        raise ValueError(f"initial_state must have shape (b, h, d_k, d_v) = {state_shape}; "
                         f"got {tuple(initial_state.shape)}")
    return q, k, v, beta, log_alpha, initial_state.to(q.dtype)


def _check_method(method, methods, chunk):
    check_choice(method, "method", methods)
    return check_positive_int(chunk, "chunk")


# ----------------------------------------------------------------------------- GLA / linear attention
def gla_recurrence(q, k, v, log_alpha=None, initial_state=None, *, scale, method="chunkwise", chunk=64):
    """S_t = diag(α_t) S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ(s q_t). Returns (o (b, L, h, d_v), S_{L−1} (b, h, d_k, d_v)).

    log_alpha: None (linear attention), (b, L, h) (a scalar per head) or (b, L, h, d_k); method: one of
    GLA_METHODS; chunk: steps per chunk for "chunkwise".
    Note: method defaults to "chunkwise" (the parallel form); the reference defaults to "sequential".
    """
    chunk = _check_method(method, GLA_METHODS, chunk)
    q, k, v, _, log_alpha, S = _check_arrays(q, k, v, None, log_alpha, initial_state, vector_gate=True)
    q = scale * q                                                                          # (b, L, h, d_k)
    if method == "sequential":
        return _gla_sequential(q, k, v, log_alpha, S)
    if method == "chunkwise":
        return _gla_chunkwise(q, k, v, log_alpha, S, chunk)
    batch, L, h, d_k = q.shape
    a = torch.exp(log_alpha)[..., None].expand(tuple(k.shape) + (v.shape[-1],))          # (b, L, h, d_k, d_v)
    kv = torch.einsum("blhk,blhv->blhkv", k, v)                                            # (b, L, h, d_k, d_v)
    states = scan(a.reshape(batch, L, -1), kv.reshape(batch, L, -1), S.reshape(batch, -1),
                  method=method).reshape(kv.shape)                                         # (b, L, h, d_k, d_v)
    return torch.einsum("blhkv,blhk->blhv", states, q), states[:, -1]


def _gla_sequential(q, k, v, log_alpha, S):
    """The definition: one step per t. q already scaled."""
    outputs = []
    for t in range(q.shape[1]):
        S = torch.exp(log_alpha[:, t])[..., None] * S + torch.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])  # (b, h, d_k, d_v)
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]))
    return torch.stack(outputs, dim=1), S                                                  # (b, L, h, d_v)


def _gla_chunkwise(q, k, v, log_alpha, S, chunk):
    """§4.11.6, diagonal gates: P_rs = Σ_i Q_ri K_si exp(G_ri − G_si) (s <= r), O = (Q ⊙ e^G) S₀ + P V,
    S_n = diag(e^{G_{n−1}}) S₀ + (K ⊙ e^{G_{n−1} − G})ᵀ V. Every exponent is <= 0. The intra-chunk part P V of
    every chunk is formed at once (`_gla_intra`); the loop over chunks only carries the state."""
    L = q.shape[1]
    chunk = min(chunk, L)
    # Note: identity-step padding to whole chunks (the reference loops over a shorter last chunk instead).
    Q, K, V = _to_chunks(q, chunk), _to_chunks(k, chunk), _to_chunks(v, chunk)            # (b, c, C, h, ·)
    G = torch.cumsum(_to_chunks(log_alpha, chunk), dim=2)                                  # (b, c, C, h, d_k)
    intra = _gla_intra(Q, K, V, G, SUB_CHUNK if chunk % SUB_CHUNK == 0 else chunk)         # (b, c, C, h, d_v)
    Q_decayed, K_decayed = Q * torch.exp(G), K * torch.exp(G[:, :, -1:] - G)               # (b, c, C, h, d_k)
    decay_last = torch.exp(G[:, :, -1])[..., None]                                         # (b, c, h, d_k, 1)
    outputs = []
    # Note: chunks taken with unbind (one split), not [:, c] (whose backward writes a full-size gradient per chunk:
    # quadratic in L).
    for Q_c, K_c, V_c, intra_c, decay_c in zip(*(z.unbind(1) for z in (Q_decayed, K_decayed, V, intra, decay_last))):
        outputs.append(torch.einsum("brhk,bhkv->brhv", Q_c, S) + intra_c)                  # (b, C, h, d_v)
        S = decay_c * S + torch.einsum("bshk,bshv->bhkv", K_c, V_c)                        # (b, h, d_k, d_v)
    o = torch.stack(outputs, dim=1)                                                        # (b, c, C, h, d_v)
    return o.reshape(o.shape[0], -1, o.shape[3], o.shape[4])[:, :L], S


SUB_CHUNK = 16


def _gla_intra(Q, K, V, G, sub):
    """P V inside every chunk, two-level (fla's sub-chunking, every exponent <= 0): sub-chunks of `sub` rows; a
    diagonal block (R = S) uses the masked pairwise decays exp(G_r − G_s); a block below it (R > S) factorises
    through e = the last row of sub-chunk S: exp(G_r − G_s) = exp(G_r − G_e)·exp(G_e − G_s), both exponents <= 0
    because s <= e < r, so the pairwise tensor is sub·d_k per row instead of C·d_k.
    Q, K, G (b, c, C, h, d_k), V (b, c, C, h, d_v), C a multiple of sub. Returns (b, c, C, h, d_v)."""
    batch, n_c, C, h, d_k = Q.shape
    m = C // sub
    Qs, Ks, Gs = (z.reshape(batch, n_c, m, sub, h, -1) for z in (Q, K, G))                # (b, c, m, sub, h, d_k)
    Vs = V.reshape(batch, n_c, m, sub, h, -1)                                              # (b, c, m, sub, h, d_v)
    causal = torch.ones(sub, sub, dtype=torch.bool, device=Q.device).tril()[:, :, None, None]   # s <= r
    decay = torch.exp(torch.where(causal, Gs[:, :, :, :, None] - Gs[:, :, :, None], -torch.inf))  # (b, c, m, r, s, h, d_k)
    P_diagonal = torch.einsum("bcmrhk,bcmshk,bcmrshk->bcmrsh", Qs, Ks, decay)              # (b, c, m, r, s, h)
    out = torch.einsum("bcmrsh,bcmshv->bcmrhv", P_diagonal, Vs)                            # (b, c, m, sub, h, d_v)
    if m > 1:
        G_end = Gs[:, :, :, -1]                                                            # (b, c, m, h, d_k)
        below = torch.ones(m, m, dtype=torch.bool, device=Q.device).tril(-1)[:, :, None, None, None]  # S < R
        to_end = torch.where(below, Gs[:, :, :, None] - G_end[:, :, None, :, None], -torch.inf)   # (b, c, R, S, sub, h, d_k)
        Q_to_end = Qs[:, :, :, None] * torch.exp(to_end)                                   # (b, c, R, S, sub, h, d_k)
        K_from_end = Ks * torch.exp(G_end[:, :, :, None] - Gs)                             # (b, c, S, sub, h, d_k)
        P_below = torch.einsum("bcRSrhk,bcSshk->bcRSrsh", Q_to_end, K_from_end)            # (b, c, R, S, r, s, h)
        out = out + torch.einsum("bcRSrsh,bcSshv->bcRrhv", P_below, Vs)                    # (b, c, m, sub, h, d_v)
    return out.reshape(batch, n_c, C, h, -1)


# ----------------------------------------------------------------------------- the delta family
def delta_recurrence(q, k, v, beta, log_alpha=None, initial_state=None, *, scale, method="chunkwise", chunk=64):
    """S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ(s q_t).

    beta: (b, L, h); log_alpha: None (DeltaNet) or (b, L, h); method: one of DELTA_METHODS.
    Returns (o (b, L, h, d_v), S_{L−1} (b, h, d_k, d_v)).
    Note: method defaults to "chunkwise" (the parallel form); the reference defaults to "sequential".
    """
    chunk = _check_method(method, DELTA_METHODS, chunk)
    q, k, v, beta, log_alpha, S = _check_arrays(q, k, v, beta, log_alpha, initial_state, vector_gate=False)
    q = scale * q                                                                          # (b, L, h, d_k)
    if method == "sequential":
        return _delta_sequential(q, k, v, beta, log_alpha, S)
    if method == "chunkwise":
        return _delta_chunkwise(q, k, v, beta, log_alpha, S, chunk)
    eye = torch.eye(q.shape[-1], dtype=q.dtype, device=q.device)                          # (d_k, d_k)
    A = torch.exp(log_alpha)[..., None, None] * (eye - beta[..., None, None]
                                                 * torch.einsum("blhi,blhj->blhij", k, k))  # (b, L, h, d_k, d_k)
    drive = beta[..., None, None] * torch.einsum("blhv,blhk->blhvk", v, k)                 # (b, L, h, d_v, d_k)
    return _dense_columns(q, A, drive, S)


def _dense_columns(q, A, drive, S):
    """scan_dense on the columns of S: transitions A (b, L, h, d_k, d_k) shared by the d_v columns, drive = the
    columns of b_t (b, L, h, d_v, d_k). q already scaled. Returns (o, final state)."""
    batch, L, h, d_v, d_k = drive.shape
    A = A[:, :, :, None].expand(batch, L, h, d_v, d_k, d_k)                               # (b, L, h, d_v, d_k, d_k)
    columns = scan_dense(A, drive, S.transpose(-1, -2))                                    # (b, L, h, d_v, d_k)
    return torch.einsum("blhvk,blhk->blhv", columns, q), columns[:, -1].transpose(-1, -2)


def _delta_sequential(q, k, v, beta, log_alpha, S):
    """The definition: S ← α (I − β k kᵀ) S + β k vᵀ, one step per t. q already scaled."""
    outputs = []
    for t in range(q.shape[1]):
        k_t, b_t = k[:, t], beta[:, t, :, None, None]                                     # (b, h, d_k), (b, h, 1, 1)
        kS = torch.einsum("bhk,bhkv->bhv", k_t, S)                                         # kᵀS: (b, h, d_v)
        S = (torch.exp(log_alpha[:, t])[..., None, None] * (S - b_t * torch.einsum("bhk,bhv->bhkv", k_t, kS))
             + b_t * torch.einsum("bhk,bhv->bhkv", k_t, v[:, t]))                         # (b, h, d_k, d_v)
        outputs.append(torch.einsum("bhkv,bhk->bhv", S, q[:, t]))
    return torch.stack(outputs, dim=1), S                                                  # (b, L, h, d_v)


def _to_chunks(x, chunk):
    """(b, L, ...) → (b, n_c, chunk, ...), padded at the end with zeros (identity steps) to whole chunks."""
    pad = -x.shape[1] % chunk
    if pad:
        x = torch.cat([x, x.new_zeros((x.shape[0], pad) + tuple(x.shape[2:]))], dim=1)
    return x.reshape((x.shape[0], -1, chunk) + tuple(x.shape[2:]))


def _delta_chunkwise(q, k, v, beta, log_alpha, S, chunk):
    """§4.11.6, delta family: per chunk, (I + A)[Ũ | W] = [diag(β) V | diag(β ⊙ e^g) K] with
    A = StrictLower(diag(β)(K Kᵀ) ⊙ Γ), Γ_rs = exp(g_r − g_s) (s <= r); U = Ũ − W S₀;
    O = diag(e^g) Q S₀ + ((Q Kᵀ) ⊙ Γ) U;  S_n = e^{g_{n−1}} S₀ + (diag(e^{g_{n−1} − g}) K)ᵀ U."""
    L, d_v = q.shape[1], v.shape[-1]
    chunk = min(chunk, L)
    # Note: identity-step padding to whole chunks (the reference loops over a shorter last chunk instead).
    Q, K, V = _to_chunks(q, chunk), _to_chunks(k, chunk), _to_chunks(v, chunk)            # (b, c, C, h, ·)
    B, g = _to_chunks(beta, chunk), torch.cumsum(_to_chunks(log_alpha, chunk), dim=2)     # (b, c, C, h)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()           # s <= r
    Gamma = torch.exp(torch.where(causal[:, :, None], g[:, :, :, None] - g[:, :, None, :], -torch.inf))  # (b, c, r, s, h)
    Gamma = Gamma.permute(0, 1, 4, 2, 3)                                                   # (b, c, h, r, s)
    strict = torch.ones(chunk, chunk, dtype=q.dtype, device=q.device).tril(-1)           # s < r
    A = strict * B.transpose(2, 3)[..., None] * torch.einsum("bcrhk,bcshk->bchrs", K, K) * Gamma   # (b, c, h, r, s)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    rhs = torch.cat([B[..., None] * V, (B * torch.exp(g))[..., None] * K], dim=-1).transpose(2, 3)  # (b, c, h, C, d_v + d_k)
    X = torch.linalg.solve_triangular(eye + A, rhs, upper=False, unitriangular=True)     # (b, c, h, C, d_v + d_k)
    U_tilde, W = X[..., :d_v], X[..., d_v:]                                                # (b, c, h, C, ·)
    QK = torch.einsum("bcrhk,bcshk->bchrs", Q, K) * Gamma                                  # (b, c, h, r, s)
    Q_decayed = (torch.exp(g)[..., None] * Q).transpose(2, 3)                              # (b, c, h, C, d_k)
    K_decayed = (torch.exp(g[:, :, -1:] - g)[..., None] * K).transpose(2, 3)              # (b, c, h, C, d_k)
    decay_last = torch.exp(g[:, :, -1])[..., None, None]                                   # (b, c, h, 1, 1)
    outputs = []
    # Note: chunks taken with unbind (linear backward), not [:, c] (a full-size gradient per chunk: quadratic in L).
    for U_tilde_c, W_c, Q_c, QK_c, K_c, decay_c in zip(*(z.unbind(1) for z in (U_tilde, W, Q_decayed, QK, K_decayed,
                                                                               decay_last))):
        U = U_tilde_c - W_c @ S                                                            # new values (b, h, C, d_v)
        outputs.append(Q_c @ S + QK_c @ U)                                                 # (b, h, C, d_v)
        S = decay_c * S + K_c.transpose(-1, -2) @ U                                        # (b, h, d_k, d_v)
    o = torch.stack(outputs, dim=1).transpose(2, 3)                                        # (b, c, C, h, d_v)
    return o.reshape(o.shape[0], -1, o.shape[3], d_v)[:, :L], S


# ----------------------------------------------------------------------------- DeltaProduct
def interleave(q, k, v, beta, log_alpha, n_householder):
    """The DeltaProduct sequence as a delta-rule sequence of n_h·L sub-steps (row t·n_h + j, SPEC §4.11.5):
    q only at j = n_h − 1 and log α only at j = 0 (zeros elsewhere); k, v, β are already interleaved."""
    batch, L, h, d_k = q.shape
    zeros_q = q.new_zeros((batch, L, n_householder - 1, h, d_k))
    q_sub = torch.cat([zeros_q, q[:, :, None]], dim=2)                                    # (b, L, n_h, h, d_k)
    log_alpha = q.new_zeros((batch, L, h)) if log_alpha is None else log_alpha
    log_alpha_sub = torch.cat([log_alpha[:, :, None], q.new_zeros((batch, L, n_householder - 1, h))], dim=2)  # (b, L, n_h, h)
    return (q_sub.reshape(batch, L * n_householder, h, d_k), k, v, beta,
            log_alpha_sub.reshape(batch, L * n_householder, h))


def delta_product_recurrence(q, k, v, beta, log_alpha=None, initial_state=None, *, n_householder, scale,
                             method="chunkwise", chunk=64):
    """Gated DeltaProduct: per token S ← α_t S, then for j = 1..n_h S ← (I − β_j k_j k_jᵀ) S + β_j k_j v_jᵀ.

    q (b, L, h, d_k), log_alpha None or (b, L, h) per token; k (b, n_h·L, h, d_k), v (b, n_h·L, h, d_v),
    beta (b, n_h·L, h) interleaved (row t·n_h + j). "dense" scans the per-token transitions
    A_t = α_t H_{n_h} ⋯ H_1 with drives b_t = Σ_j H_{n_h} ⋯ H_{j+1} β_j k_j v_jᵀ (H = I − β k kᵀ).
    Returns (o (b, L, h, d_v), final state (b, h, d_k, d_v)).
    Note: method defaults to "chunkwise" (the parallel form); the reference defaults to "sequential".
    """
    n_householder = check_positive_int(n_householder, "n_householder")
    if q.ndim != 4 or tuple(k.shape) != (q.shape[0], q.shape[1] * n_householder) + tuple(q.shape[2:]):
        raise ValueError(f"k must have shape (b, n_h·L, h, d_k) = ({q.shape[0]}, {n_householder}·{q.shape[1]}, "
                         f"...) for q of shape {tuple(q.shape)} and n_householder={n_householder}; got {tuple(k.shape)}")
    if method != "dense":
        o, S = delta_recurrence(*interleave(q, k, v, beta, log_alpha, n_householder), initial_state,
                                scale=scale, method=method, chunk=chunk)                  # (b, n_h·L, h, d_v)
        return o[:, n_householder - 1::n_householder], S
    q_sub, k, v, beta, log_alpha_sub = interleave(q, k, v, beta, log_alpha, n_householder)
    *_, S = _check_arrays(q_sub, k, v, beta, log_alpha_sub, initial_state, vector_gate=False)
    batch, L, h, d_k = q.shape
    k, v = k.reshape(batch, L, n_householder, h, d_k), v.reshape(batch, L, n_householder, h, -1)
    beta = beta.reshape(batch, L, n_householder, h)
    eye = torch.eye(d_k, dtype=q.dtype, device=q.device)
    A = eye.expand(batch, L, h, d_k, d_k)                                                  # (b, L, h, d_k, d_k)
    B = q.new_zeros((batch, L, h, d_k, v.shape[-1]))                                       # (b, L, h, d_k, d_v)
    for j in range(n_householder):
        H_j = eye - beta[:, :, j, :, None, None] * torch.einsum("blhi,blhj->blhij", k[:, :, j], k[:, :, j])
        A = H_j @ A                                                                        # (b, L, h, d_k, d_k)
        B = H_j @ B + beta[:, :, j, :, None, None] * torch.einsum("blhk,blhv->blhkv", k[:, :, j], v[:, :, j])
    gate = torch.ones_like(beta[:, :, 0]) if log_alpha is None else torch.exp(log_alpha)  # (b, L, h)
    return _dense_columns(scale * q, gate[..., None, None] * A, B.transpose(-1, -2), S)
