"""Matrix-state recurrences (SPEC §4.11), op level, PyTorch mirror of reference/layers/matrix_state.py (STYLE 6).

    GLA            S_t = diag(α_t) S_{t−1} + k_t v_tᵀ                      (α ≡ 1: causal linear attention)
    delta family   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ    (α ≡ 1: DeltaNet)
    DeltaProduct   per token: S ← α_t S, then n_h delta steps (no gate); S_t = S
    read           o_t = S_tᵀ (s q_t)                                     (s = scale, d_k^{−1/2} in the layers)

Every function takes time-first tensors and returns (o, final_state); the state is key-first.
    q, k (b, L, h, d_k)   v (b, L, h, d_v)   β (b, L, h)   initial_state, final_state (b, h, d_k, d_v)
    log_alpha: None (α ≡ 1), (b, L, h) a scalar per head, or (b, L, h, d_k) (GLA only); every entry <= 0.
Methods: "sequential" (the definition; autograd records L steps), the §3 scans on the flattened state (GLA) or
"dense" (`scan_dense` on the columns of S, delta family), and "chunkwise" (§4.11.6, differentiable by autograd).
Differences from the reference, each for a reason:
* the chunkwise forms pad the sequence to whole chunks with identity steps (q = k = v = β = log α = 0) so that
  the intra-chunk parts of all chunks (GLA) and their UT transforms (delta family: one batched triangular solve)
  are formed at once; the reference loops over a shorter last chunk (SPEC §4.11.6: both give the same numbers);
* GLA's intra-chunk product uses fla's sub-chunking applied recursively (masked pairwise decays only inside
  blocks of LEAF rows; above them each block's right half sees its left half through the left half's last row:
  every exponent stays <= 0, SPEC §4.11.7); the reference forms the C × C pairwise decays directly;
* the chunkwise forms keep the chunk index first, (c, b, h, C, ·): everything inside the chunks is a batched
  matmul or elementwise op over all chunks, and the Python loop over chunks only carries the state;
* precision follows the inputs (float32 by default, float64 for parity).
Upstream: fla-org/flash-linear-attention 0.6.0 `fla/ops/*/naive.py`.
Einsum letters: b batch, l time (r, s in a chunk, c the chunk; n, p GLA's leaf blocks and block pairs), h heads, k key index (i, j), v value index.
"""
import math

import torch

from reference.layers._checks import check_choice, check_positive_int
from reference.layers.matrix_state import NORM_EPS, check_step_timestep
from ..scan import SCAN_METHODS, scan, scan_dense
from ._base import check_step
from ._bidirectional import refuse_streaming
from ._checks import check_inplace

GLA_METHODS = ("sequential",) + tuple(m for m in SCAN_METHODS if m != "sequential") + ("chunkwise",)
DELTA_METHODS = ("sequential", "dense", "chunkwise")


# ----------------------------------------------------------------------------- elementwise maps of the layers
def logsigmoid(z):
    """log σ(z) = min(z, 0) − log1p(exp(−|z|)), finite for every finite z."""
    return torch.clamp(z, max=0.0) - torch.log1p(torch.exp(-torch.abs(z)))


def sigmoid(z):
    """σ(z) = exp(logsigmoid(z)) (the reference's formula)."""
    return torch.exp(logsigmoid(z))


def silu(z):
    """z·σ(z)."""
    return z * sigmoid(z)


def l2_normalize(z, eps=1e-6):
    """z / sqrt(Σ z² + eps) over the last axis (fla `l2norm`, SPEC §4.11.3)."""
    return z / torch.sqrt(torch.sum(z * z, dim=-1, keepdim=True) + eps)


def rms_norm(o, weight, eps=NORM_EPS):
    """o / sqrt(mean(o²) + eps) ⊙ weight over the last axis (the per-head output norm, SPEC §4.11.0)."""
    return o / torch.sqrt(torch.mean(o * o, dim=-1, keepdim=True) + eps) * weight


# ----------------------------------------------------------------------------- in place, for step(..., inplace=True)
# Note: torch only. An in-place step writes its per-event vectors into workspace buffers (Layer._workspace) and
# its state in place, so these maps overwrite their argument; `scratch` is a buffer like it (contents undefined).
# Equal to the maps above to rounding (σ and SiLU are torch's own, the norms are read from one matmul).
def logsigmoid_(z, scratch):
    """z ← log σ(z) = min(z, 0) − log1p(e^{−|z|}), in place."""
    torch.abs(z, out=scratch).neg_().exp_().log1p_()
    return z.clamp_(max=0.0).sub_(scratch)


def squared_norm(z, out):
    """out (..., 1) ← Σ z² over the last axis of z (..., d), as one batched product (no temporary like z)."""
    torch.matmul(z[..., None, :], z[..., :, None], out=out[..., None])                   # (..., 1, 1)
    return out


def l2_normalize_(z, norm, eps=1e-6):
    """z (..., d) ← z / sqrt(Σ z² + eps) over the last axis, in place; norm (..., 1) scratch."""
    return z.div_(squared_norm(z, norm).add_(eps).sqrt_())


def rms_norm_(o, weight, norm, eps=NORM_EPS):
    """o (..., d) ← o / sqrt(mean(o²) + eps) ⊙ weight, in place; norm (..., 1) scratch."""
    return o.div_(squared_norm(o, norm).div_(o.shape[-1]).add_(eps).sqrt_()).mul_(weight)


def gla_step_(S, q, k, v, alpha, o):
    """One GLA step in place: S ← diag(α) S + k vᵀ, o ← Sᵀ q. S (b, h, d_k, d_v); q (already scaled), k, α
    (b, h, d_k) (α None: linear attention); v, o (b, h, d_v). The rank-1 update broadcasts (no outer product)."""
    if alpha is not None:
        S.mul_(alpha[..., None])
    S.addcmul_(k[..., None], v[..., None, :])                                              # (b, h, d_k, d_v)
    torch.matmul(q[..., None, :], S, out=o[..., None, :])                                  # (b, h, 1, d_v)
    return o


def delta_step_(S, k, v, beta, kS):
    """One delta step in place: S ← (I − β k kᵀ) S + β k vᵀ = S + (β k)(v − kᵀS)ᵀ. S (b, h, d_k, d_v);
    k (b, h, d_k) and v (b, h, d_v) are overwritten (by β k and v − kᵀS); β (b, h); kS (b, h, d_v) scratch.
    Only (b, h, d) vectors are formed: kᵀS is one batched product, the update a broadcast rank-1 addcmul_."""
    torch.matmul(k[..., None, :], S, out=kS[..., None, :])                                 # (b, h, 1, d_v) kᵀS
    v.sub_(kS)                                                                             # (b, h, d_v)
    k.mul_(beta[..., None])                                                                # (b, h, d_k)
    S.addcmul_(k[..., None], v[..., None, :])                                              # (b, h, d_k, d_v)
    return S


# ----------------------------------------------------------------------------- shared by the three layers
# Note: initialisers and argument checks (linear_init, head_sizes, check_flag, check_unused, check_step_timestep)
# are the reference's: torch layers build the reference layer and copy its parameters.

def check_matrix_step(layer, x_t, state, integration_timestep, inplace):
    """The checks of a matrix-state layer's `step`: (x (b, 1, H), τ (b, 1) or None, the state (b, h, d_k, d_v) in
    the module's dtype), each with its named error; with inplace=True the given state must take the new one
    (`check_inplace`). Note: check_step reads finiteness with one min/max reduction and builds no zero state for
    the shape."""
    refuse_streaming(layer, "step")
    check_step_timestep(layer, integration_timestep)
    x, tau, checked = check_step(layer, x_t, state, integration_timestep, (layer.n_heads, layer.d_k, layer.d_v),
                                 layer.dtype)                                       # (b, 1, H), (b, h, d_k, d_v)
    if inplace:
        check_inplace(state, checked)
    return x, tau, checked

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
    S_n = diag(e^{G_{n−1}}) S₀ + (K ⊙ e^{G_{n−1} − G})ᵀ V. Every exponent is <= 0. Everything inside the chunks
    (P V, the chunk's drive (K ⊙ e^{G_{n−1} − G})ᵀ V, the read-out of S₀) is formed for all chunks at once; the loop
    over chunks only carries the state: S ← diag(e^{G_{n−1}}) S + drive, elementwise."""
    L = q.shape[1]
    chunk = min(chunk, L)
    # Note: identity-step padding to whole chunks (the reference loops over a shorter last chunk instead).
    Q, K, V = _to_chunks(q, chunk), _to_chunks(k, chunk), _to_chunks(v, chunk)            # (c, b, h, C, ·)
    G = torch.cumsum(_to_chunks(log_alpha, chunk), dim=-2)                                 # (c, b, h, C, d_k)
    G_last = G[..., -1:, :]                                                                # (c, b, h, 1, d_k)
    drive = (K * torch.exp(G_last - G)).mT @ V                                             # (c, b, h, d_k, d_v)
    decay_last = torch.exp(G_last).mT                                                      # (c, b, h, d_k, 1)
    states = []
    # Note: chunks taken with unbind (linear backward), not [c] (a full-size gradient per chunk: quadratic in L).
    for decay_c, drive_c in zip(decay_last.unbind(0), drive.unbind(0)):
        states.append(S)                                                                   # S₀ of chunk c
        S = decay_c * S + drive_c                                                          # (b, h, d_k, d_v)
    o = (Q * torch.exp(G)) @ torch.stack(states) + _gla_intra(Q, K, V, G)                 # (c, b, h, C, d_v)
    return _from_chunks(o, L), S


LEAF = 4  # rows of GLA's smallest blocks, the only ones with pairwise decays (1 to 4 measured fastest on CPU)


def _gla_intra(Q, K, V, G):
    """P V inside every chunk, every exponent <= 0, by halving (fla's sub-chunking applied recursively). Leaf blocks
    of LEAF rows use the masked pairwise decays exp(G_r − G_s), s <= r. Above them, each block of 2·half rows
    splits into a left and a right half; the right half's rows r see the left half's rows s through e = the left
    half's last row: exp(G_r − G_s) = exp(G_r − G_e)·exp(G_e − G_s), both exponents <= 0 because s <= e < r, so the
    block (right rows × left columns) of P is (Q_right ⊙ e^{G − G_e})(K_left ⊙ e^{G_e − G})ᵀ, a matmul. That is
    (LEAF + log₂(C/LEAF))·d_k exponentials per row instead of the C·d_k of the direct pairwise form.
    Q, K, G (c, b, h, C, d_k), V (c, b, h, C, d_v). Returns (c, b, h, C, d_v)."""
    *batch, C, d_k = Q.shape
    leaf = min(LEAF, C)
    size = leaf * 2 ** max(0, math.ceil(math.log2(C / leaf)))                              # C rounded up: leaf·2^j
    if size > C:  # identity steps at the end of every chunk (q = k = v = 0, log α = 0): P V unchanged above them
        Q, K, V = (torch.cat([z, z.new_zeros(tuple(batch) + (size - C, z.shape[-1]))], dim=-2) for z in (Q, K, V))
        G = torch.cat([G, G[..., -1:, :].expand(tuple(batch) + (size - C, d_k))], dim=-2)  # (c, b, h, size, d_k)
    shape = tuple(batch) + (size // leaf, leaf)
    Q_l, K_l, G_l = (z.reshape(shape + (d_k,)) for z in (Q, K, G))                         # (c, b, h, n, leaf, d_k)
    causal = torch.ones(leaf, leaf, dtype=torch.bool, device=Q.device).tril()[:, :, None]  # s <= r
    exponent = torch.where(causal, G_l[..., :, None, :] - G_l[..., None, :, :], -torch.inf)  # (c, b, h, n, r, s, d_k)
    decay = torch.exp(exponent)                                                            # (c, b, h, n, r, s, d_k)
    P = torch.einsum("...rsk,...sk->...rs", Q_l[..., :, None, :] * decay, K_l)             # (c, b, h, n, r, s)
    out = (P @ V.reshape(shape + (-1,))).reshape(tuple(batch) + (size, -1))                # (c, b, h, size, d_v)
    half = leaf
    while half < size:
        pairs = tuple(batch) + (size // (2 * half), 2, half)
        Q_p, K_p, G_p = (z.reshape(pairs + (d_k,)) for z in (Q, K, G))                     # (c, b, h, p, 2, half, d_k)
        V_p, out_p = V.reshape(pairs + (-1,)), out.reshape(pairs + (-1,))                  # (c, b, h, p, 2, half, d_v)
        G_e = G_p[..., 0, -1:, :]                                                          # (c, b, h, p, 1, d_k)
        Q_right = Q_p[..., 1, :, :] * torch.exp(G_p[..., 1, :, :] - G_e)                   # (c, b, h, p, half, d_k)
        K_left = K_p[..., 0, :, :] * torch.exp(G_e - G_p[..., 0, :, :])                    # (c, b, h, p, half, d_k)
        cross = (Q_right @ K_left.mT) @ V_p[..., 0, :, :]                                  # (c, b, h, p, half, d_v)
        right = out_p[..., 1, :, :] + cross                                                # (c, b, h, p, half, d_v)
        out = torch.stack([out_p[..., 0, :, :], right], dim=-3).reshape(out.shape)         # (c, b, h, size, d_v)
        half *= 2
    return out[..., :C, :]


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
    """(b, L, h, ...) → (c, b, h, C, ...), contiguous with the chunk index first (every chunk one contiguous block,
    the last two axes ready for matmul), padded at the end with zeros (identity steps) to whole chunks."""
    pad = -x.shape[1] % chunk
    if pad:
        x = torch.cat([x, x.new_zeros((x.shape[0], pad) + tuple(x.shape[2:]))], dim=1)
    x = x.reshape((x.shape[0], -1, chunk) + tuple(x.shape[2:]))                           # (b, c, C, h, ...)
    return x.permute(1, 0, 3, 2, *range(4, x.ndim)).contiguous()                          # (c, b, h, C, ...)


def _from_chunks(o, L):
    """(c, b, h, C, d) → (b, L, h, d), the padding dropped (the inverse of _to_chunks)."""
    n_c, batch, h, C, d = o.shape
    return o.permute(1, 0, 3, 2, 4).reshape(batch, n_c * C, h, d)[:, :L]                 # (b, L, h, d)


def _delta_chunkwise(q, k, v, beta, log_alpha, S, chunk):
    """§4.11.6, delta family: per chunk, (I + A)[Ũ | W] = [diag(β) V | diag(β ⊙ e^g) K] with
    A = StrictLower(diag(β)(K Kᵀ) ⊙ Γ), Γ_rs = exp(g_r − g_s) (s <= r); U = Ũ − W S₀;
    O = diag(e^g) Q S₀ + ((Q Kᵀ) ⊙ Γ) U;  S_n = e^{g_{n−1}} S₀ + (diag(e^{g_{n−1} − g}) K)ᵀ U.
    Γ, A, the triangular solve (one batched call) and (Q Kᵀ) ⊙ Γ are formed for all chunks at once; the loop over
    chunks computes only U = Ũ − W S₀ and the next state (two small matmuls); the outputs are two batched matmuls
    after it."""
    L, d_k, d_v = q.shape[1], q.shape[-1], v.shape[-1]
    chunk = min(chunk, L)
    # Note: identity-step padding to whole chunks (the reference loops over a shorter last chunk instead).
    Q, K, V = _to_chunks(q, chunk), _to_chunks(k, chunk), _to_chunks(v, chunk)            # (c, b, h, C, ·)
    B = _to_chunks(beta[..., None], chunk)                                                 # (c, b, h, C, 1)
    g = torch.cumsum(_to_chunks(log_alpha[..., None], chunk), dim=-2)                      # (c, b, h, C, 1)
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()           # s <= r
    Gamma = torch.exp(torch.where(causal, g - g.mT, -torch.inf))                           # (c, b, h, r, s)
    A = B * (K @ K.mT) * Gamma                                                             # (c, b, h, r, s)
    rhs = torch.cat([B * V, B * torch.exp(g) * K], dim=-1)                                 # (c, b, h, C, d_v + d_k)
    # unitriangular=True reads only the strictly lower part of A: this solves (I + StrictLower(A)) X = rhs.
    X = torch.linalg.solve_triangular(A, rhs, upper=False, unitriangular=True)            # (c, b, h, C, d_v + d_k)
    U_tilde, W = X.split([d_v, d_k], dim=-1)                                               # (c, b, h, C, ·)
    g_last = g[..., -1:, :]                                                                # (c, b, h, 1, 1)
    K_decayed = torch.exp(g_last - g) * K                                                  # (c, b, h, C, d_k)
    # the loop works on (b·h)-batches of matrices so that baddbmm fuses U = Ũ − W S₀ and S ← e^{g_{n−1}} S + Kᵀ U
    batch, h = q.shape[0], q.shape[2]
    U_tilde_f, W_f, K_f = (z.flatten(1, 2) for z in (U_tilde, W, K_decayed))              # (c, b·h, C, ·)
    S = S.flatten(0, 1)                                                                    # (b·h, d_k, d_v)
    decay_last = torch.exp(g_last).flatten(1, 2)                                           # (c, b·h, 1, 1)
    states, new_values = [], []
    # Note: chunks taken with unbind (linear backward), not [c] (a full-size gradient per chunk: quadratic in L).
    for U_tilde_c, W_c, K_c, decay_c in zip(*(z.unbind(0) for z in (U_tilde_f, W_f, K_f, decay_last))):
        states.append(S)                                                                   # S₀ of chunk c
        new_values.append(torch.baddbmm(U_tilde_c, W_c, S, alpha=-1))                      # U: (b·h, C, d_v)
        S = torch.baddbmm(decay_c * S, K_c.mT, new_values[-1])                             # (b·h, d_k, d_v)
    states, new_values = (torch.stack(z).unflatten(1, (batch, h)) for z in (states, new_values))  # (c, b, h, ·, d_v)
    o = (torch.exp(g) * Q) @ states + ((Q @ K.mT) * Gamma) @ new_values                   # (c, b, h, C, d_v)
    return _from_chunks(o, L), S.unflatten(0, (batch, h))


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
