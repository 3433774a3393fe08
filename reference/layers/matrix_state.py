"""Matrix-state recurrences (SPEC §4.11), op level: linear attention / GLA and the delta family, without the layers.

    GLA            S_t = diag(α_t) S_{t−1} + k_t v_tᵀ                      (α ≡ 1: causal linear attention)
    delta family   S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ    (α ≡ 1: DeltaNet)
    DeltaProduct   per token: S ← α_t S, then n_h delta steps (no gate); S_t = S
    read           o_t = S_tᵀ (s q_t)                                     (s = scale, d_k^{−1/2} in the layers)

Every function takes time-first arrays and returns (o, final_state); the state is key-first.
    q, k (b, L, h, d_k)   v (b, L, h, d_v)   β (b, L, h)   initial_state, final_state (b, h, d_k, d_v)
    log_alpha: None (α ≡ 1), (b, L, h) a scalar per head, or (b, L, h, d_k) (GLA only); every entry <= 0.
Methods (all compute the same numbers, SPEC §4.11.0):
* "sequential" — the loop over t: the definition.
* GLA: every §3 diagonal scan method (`reference.scan.scan`) on the flattened state, a_t = α_t broadcast over
  d_v and b_t = k_t v_tᵀ; delta family: "dense" = `scan_dense` on the columns of S (one d_k × d_k transition
  shared by the d_v columns). Both materialise b·L·h·d_k·d_v numbers: they are views for tests.
* "chunkwise" — §4.11.6: chunks of `chunk` steps (the last one may be shorter), exact inside a chunk, the state
  carried between chunks. GLA uses masked pairwise decays exp(G_r − G_s), s <= r (never the factorised form,
  which divides by a cumulative product); the delta family solves a unit lower-triangular system per chunk
  (the UT transform / WY form).
Upstream: fla-org/flash-linear-attention 0.6.0, `fla/ops/{linear_attn,gla,simple_gla,delta_rule,gated_delta_rule,
gated_delta_product}/naive.py` (the recurrences and their golden outputs in parity_tests/golden).
Leaves out: the feature maps, normalised linear attention and fla's sub-chunked kernels.
Einsum letters: b batch, l time (r, s inside a chunk), h heads, k key index (i, j for a second one), v value index.
"""
import numpy as np

from ..scan import SCAN_METHODS, scan, scan_dense
from ._bidirectional import refuse_streaming
from ._checks import check_choice, check_inplace, check_positive_int, check_state, check_step_input

GLA_METHODS = ("sequential",) + tuple(m for m in SCAN_METHODS if m != "sequential") + ("chunkwise",)
DELTA_METHODS = ("sequential", "dense", "chunkwise")
NORM_EPS = 1e-5                                  # the per-head RMSNorm's ε (fla's default)


# ----------------------------------------------------------------------------- elementwise maps of the layers
def logsigmoid(z):
    """log σ(z) = min(z, 0) − log1p(exp(−|z|)), finite for every finite z."""
    return np.minimum(z, 0.0) - np.log1p(np.exp(-np.abs(z)))


def sigmoid(z):
    """σ(z) = exp(logsigmoid(z)) (no overflow warning for large |z|)."""
    return np.exp(logsigmoid(z))


def silu(z):
    """z·σ(z)."""
    return z * sigmoid(z)


def l2_normalize(z, eps=1e-6):
    """z / sqrt(Σ z² + eps) over the last axis (fla `l2norm`, SPEC §4.11.3)."""
    return z / np.sqrt(np.sum(z * z, axis=-1, keepdims=True) + eps)


def rms_norm(o, weight, eps=NORM_EPS):
    """o / sqrt(mean(o²) + eps) ⊙ weight over the last axis (the per-head output norm, SPEC §4.11.0)."""
    return o / np.sqrt(np.mean(o * o, axis=-1, keepdims=True) + eps) * weight


# ----------------------------------------------------------------------------- shared by the three layers
def linear_init(rng, fan_out, fan_in):
    """A projection (fan_out, fan_in) ~ U(±1/√fan_in) (torch nn.Linear's default; SPEC §4.11.0)."""
    bound = 1.0 / np.sqrt(fan_in)
    return rng.uniform(-bound, bound, (fan_out, fan_in))                                   # (out, in)


def head_sizes(d_model, n_heads, d_k, d_v):
    """(d_model, n_heads, d_k, d_v) checked; d_k and d_v default to d_model / n_heads."""
    d_model, n_heads = check_positive_int(d_model, "d_model"), check_positive_int(n_heads, "n_heads")
    if (d_k is None or d_v is None) and d_model % n_heads:
        raise ValueError(f"n_heads must divide d_model when d_k or d_v is not given (they default to "
                         f"d_model / n_heads); got d_model={d_model}, n_heads={n_heads}")
    d_k = d_model // n_heads if d_k is None else check_positive_int(d_k, "d_k")
    d_v = d_model // n_heads if d_v is None else check_positive_int(d_v, "d_v")
    return d_model, n_heads, d_k, d_v


def check_flag(value, name):
    """A bool (no truthy stand-ins: an option is either on or off)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False; got {value!r} of type {type(value).__name__}")
    return bool(value)


def check_unused(name, value, default, needs):
    """An option that only acts with another one: refuse a non-default value instead of ignoring it."""
    if value != default:
        raise ValueError(f"{name} applies only with {needs}; got {name}={value!r} without it "
                         f"(leave it at its default {default!r})")


def check_step_timestep(layer, integration_timestep):
    """step()'s twin of prepare_call's refusal: a layer without a decay refuses a timestep."""
    if integration_timestep is not None and not layer.accepts_timesteps:
        raise ValueError(f"integration_timestep must be None for {type(layer).__name__}: {layer.no_timesteps_reason}")


def check_matrix_step(layer, x_t, state, integration_timestep, inplace):
    """The checks of a matrix-state layer's `step`: (x (b, 1, H), τ (b, 1) or None, the state (b, h, d_k, d_v)
    as float64), each with its named error; with inplace=True the given state must take the new one
    (`check_inplace`)."""
    refuse_streaming(layer, "step")
    check_step_timestep(layer, integration_timestep)
    x, tau = check_step_input(x_t, layer.d_model, integration_timestep=integration_timestep)   # (b, 1, H)
    checked = check_state(state, layer.init_state(x.shape[0]).shape, np.float64, name="state")
    if inplace:
        check_inplace(state, checked, name="state")
    return x, tau, checked


def split_heads(z, n_heads):
    """(b, L, h·d) → (b, L, h, d), head index outermost (fla's `(h d)`)."""
    return z.reshape(z.shape[:2] + (n_heads, -1))


def valid_steps(lengths, batch, L):
    """1.0 where t < len_b, 0.0 on padding (identity steps), (b, L); all ones without lengths."""
    if lengths is None:
        return np.ones((batch, L))
    return (np.arange(L)[None, :] < lengths[:, None]).astype(np.float64)                  # (b, L)


# ----------------------------------------------------------------------------- argument checks
def _check_arrays(q, k, v, beta, log_alpha, initial_state, vector_gate):
    """float64 copies of the arrays, their shapes checked against q (b, L, h, d_k) and v (b, L, h, d_v)."""
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    if q.ndim != 4 or k.shape != q.shape:
        raise ValueError(f"q and k must have the same shape (b, L, h, d_k); got {q.shape} and {k.shape}")
    if v.ndim != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(f"v must have shape (b, L, h, d_v) = {q.shape[:3]} + (d_v,); got {v.shape}")
    batch, L, h, d_k = q.shape
    if L < 1:
        raise ValueError(f"the recurrence needs L >= 1 time steps; got q of shape {q.shape}")
    if beta is not None:
        beta = np.asarray(beta, dtype=np.float64)
        if beta.shape != q.shape[:3]:
            raise ValueError(f"beta must have shape (b, L, h) = {q.shape[:3]}; got {beta.shape}")
    if log_alpha is None:
        log_alpha = np.zeros(q.shape[:3] + ((d_k,) if vector_gate else ()))                  # α ≡ 1
    log_alpha = np.asarray(log_alpha, dtype=np.float64)
    shapes = (q.shape[:3], q.shape) if vector_gate else (q.shape[:3],)
    if log_alpha.shape not in shapes:
        raise ValueError(f"log_alpha must have shape {' or '.join(map(str, shapes))}; got {log_alpha.shape}")
    if vector_gate and log_alpha.ndim == 3:
        log_alpha = np.broadcast_to(log_alpha[..., None], q.shape)                          # (b, L, h, d_k)
    state_shape = (batch, h, d_k, v.shape[3])
    if initial_state is None:
        initial_state = np.zeros(state_shape)
    initial_state = np.asarray(initial_state, dtype=np.float64)
    if initial_state.shape != state_shape:
        raise ValueError(f"initial_state must have shape (b, h, d_k, d_v) = {state_shape}; got {initial_state.shape}")
    return q, k, v, beta, log_alpha, initial_state


def _check_method(method, methods, chunk):
    check_choice(method, "method", methods)
    return check_positive_int(chunk, "chunk")


# ----------------------------------------------------------------------------- GLA / linear attention
def gla_recurrence(q, k, v, log_alpha=None, initial_state=None, *, scale, method="sequential", chunk=64):
    """S_t = diag(α_t) S_{t−1} + k_t v_tᵀ, o_t = S_tᵀ(s q_t). Returns (o (b, L, h, d_v), S_{L−1} (b, h, d_k, d_v)).

    log_alpha: None (linear attention), (b, L, h) (a scalar per head: simple GLA / Mamba-2 SSD) or
    (b, L, h, d_k); method: one of GLA_METHODS; chunk: steps per chunk for "chunkwise".
    """
    chunk = _check_method(method, GLA_METHODS, chunk)
    q, k, v, _, log_alpha, S = _check_arrays(q, k, v, None, log_alpha, initial_state, vector_gate=True)
    q = scale * q                                                                          # (b, L, h, d_k)
    if method == "sequential":
        return _gla_sequential(q, k, v, log_alpha, S)
    if method == "chunkwise":
        return _gla_chunkwise(q, k, v, log_alpha, S, chunk)
    batch, L, h, d_k = q.shape
    a = np.broadcast_to(np.exp(log_alpha)[..., None], k.shape + v.shape[-1:])             # (b, L, h, d_k, d_v)
    kv = np.einsum("blhk,blhv->blhkv", k, v)                                               # (b, L, h, d_k, d_v)
    states = scan(a.reshape(batch, L, -1), kv.reshape(batch, L, -1), S.reshape(batch, -1),
                  method=method).reshape(kv.shape)                                         # (b, L, h, d_k, d_v)
    return np.einsum("blhkv,blhk->blhv", states, q), states[:, -1]


def _gla_sequential(q, k, v, log_alpha, S):
    """The definition: one step per t. q already scaled."""
    o = np.empty(v.shape)                                                                  # (b, L, h, d_v)
    for t in range(q.shape[1]):
        S = np.exp(log_alpha[:, t])[..., None] * S + np.einsum("bhk,bhv->bhkv", k[:, t], v[:, t])   # (b, h, d_k, d_v)
        o[:, t] = np.einsum("bhkv,bhk->bhv", S, q[:, t])
    return o, S


def _gla_chunkwise(q, k, v, log_alpha, S, chunk):
    """§4.11.6, diagonal gates: P_rs = Σ_i Q_ri K_si exp(G_ri − G_si) (s <= r), O = (Q ⊙ e^G) S₀ + P V,
    S_n = diag(e^{G_{n−1}}) S₀ + (K ⊙ e^{G_{n−1} − G})ᵀ V. Every exponent is <= 0."""
    o = np.empty(v.shape)                                                                  # (b, L, h, d_v)
    for start in range(0, q.shape[1], chunk):
        Q, K, V = q[:, start:start + chunk], k[:, start:start + chunk], v[:, start:start + chunk]   # (b, n, h, ·)
        G = np.cumsum(log_alpha[:, start:start + chunk], axis=1)                          # (b, n, h, d_k)
        causal = np.tril(np.ones((Q.shape[1],) * 2, bool))[None, :, :, None, None]        # s <= r
        decay = np.exp(np.where(causal, G[:, :, None] - G[:, None, :], -np.inf))          # (b, r, s, h, d_k)
        P = np.einsum("brhk,bshk,brshk->brsh", Q, K, decay)                                # (b, r, s, h)
        o[:, start:start + chunk] = (np.einsum("brhk,bhkv->brhv", Q * np.exp(G), S)
                                     + np.einsum("brsh,bshv->brhv", P, V))                 # (b, n, h, d_v)
        S = (np.exp(G[:, -1])[..., None] * S
             + np.einsum("bshk,bshv->bhkv", K * np.exp(G[:, -1:] - G), V))               # (b, h, d_k, d_v)
    return o, S


# ----------------------------------------------------------------------------- the delta family
def delta_recurrence(q, k, v, beta, log_alpha=None, initial_state=None, *, scale, method="sequential", chunk=64):
    """S_t = α_t (I − β_t k_t k_tᵀ) S_{t−1} + β_t k_t v_tᵀ, o_t = S_tᵀ(s q_t).

    beta: (b, L, h); log_alpha: None (DeltaNet) or (b, L, h); method: one of DELTA_METHODS.
    Returns (o (b, L, h, d_v), S_{L−1} (b, h, d_k, d_v)).
    """
    chunk = _check_method(method, DELTA_METHODS, chunk)
    q, k, v, beta, log_alpha, S = _check_arrays(q, k, v, beta, log_alpha, initial_state, vector_gate=False)
    q = scale * q                                                                          # (b, L, h, d_k)
    if method == "sequential":
        return _delta_sequential(q, k, v, beta, log_alpha, S)
    if method == "chunkwise":
        return _delta_chunkwise(q, k, v, beta, log_alpha, S, chunk)
    eye = np.eye(q.shape[-1])                                                              # (d_k, d_k)
    A = np.exp(log_alpha)[..., None, None] * (eye - beta[..., None, None]
                                              * np.einsum("blhi,blhj->blhij", k, k))       # (b, L, h, d_k, d_k)
    drive = beta[..., None, None] * np.einsum("blhv,blhk->blhvk", v, k)                    # (b, L, h, d_v, d_k)
    return _dense_columns(q, A, drive, S)


def _dense_columns(q, A, drive, S):
    """scan_dense on the columns of S: transitions A (b, L, h, d_k, d_k) shared by the d_v columns, drive = the
    columns of b_t (b, L, h, d_v, d_k). q already scaled. Returns (o, final state)."""
    batch, L, h, d_v, d_k = drive.shape
    A = np.broadcast_to(A[:, :, :, None], (batch, L, h, d_v, d_k, d_k))                   # (b, L, h, d_v, d_k, d_k)
    columns = scan_dense(A, drive, np.swapaxes(S, -1, -2))                                 # (b, L, h, d_v, d_k)
    return np.einsum("blhvk,blhk->blhv", columns, q), np.swapaxes(columns[:, -1], -1, -2)


def _delta_sequential(q, k, v, beta, log_alpha, S):
    """The definition: S ← α (I − β k kᵀ) S + β k vᵀ, one step per t. q already scaled."""
    o = np.empty(v.shape)                                                                  # (b, L, h, d_v)
    for t in range(q.shape[1]):
        k_t, b_t = k[:, t], beta[:, t, :, None, None]                                     # (b, h, d_k), (b, h, 1, 1)
        kS = np.einsum("bhk,bhkv->bhv", k_t, S)                                            # kᵀS: (b, h, d_v)
        S = (np.exp(log_alpha[:, t])[..., None, None] * (S - b_t * np.einsum("bhk,bhv->bhkv", k_t, kS))
             + b_t * np.einsum("bhk,bhv->bhkv", k_t, v[:, t]))                            # (b, h, d_k, d_v)
        o[:, t] = np.einsum("bhkv,bhk->bhv", S, q[:, t])
    return o, S


def solve_unit_lower(A, R):
    """X with (I + A) X = R by forward substitution; A strictly lower triangular in its axes (r, s).

    A: (b, n, n, h); R: (b, n, h, d). Returns X (b, n, h, d)."""
    X = R.copy()                                                                           # (b, n, h, d)
    for r in range(1, R.shape[1]):
        X[:, r] -= np.einsum("bsh,bshd->bhd", A[:, r, :r], X[:, :r])
    return X


def _delta_chunkwise(q, k, v, beta, log_alpha, S, chunk):
    """§4.11.6, delta family: per chunk, (I + A)[Ũ | W] = [diag(β) V | diag(β ⊙ e^g) K] with
    A = StrictLower(diag(β)(K Kᵀ) ⊙ Γ), Γ_rs = exp(g_r − g_s) (s <= r); U = Ũ − W S₀;
    O = diag(e^g) Q S₀ + ((Q Kᵀ) ⊙ Γ) U;  S_n = e^{g_{n−1}} S₀ + (diag(e^{g_{n−1} − g}) K)ᵀ U."""
    o = np.empty(v.shape)                                                                  # (b, L, h, d_v)
    for start in range(0, q.shape[1], chunk):
        Q, K, V = q[:, start:start + chunk], k[:, start:start + chunk], v[:, start:start + chunk]   # (b, n, h, ·)
        b_c = beta[:, start:start + chunk]                                                 # (b, n, h)
        g = np.cumsum(log_alpha[:, start:start + chunk], axis=1)                          # (b, n, h)
        n = Q.shape[1]
        causal = np.tril(np.ones((n, n), bool))[None, :, :, None]                         # s <= r
        Gamma = np.exp(np.where(causal, g[:, :, None] - g[:, None, :], -np.inf))          # (b, r, s, h)
        strict = np.tril(np.ones((n, n)), -1)[None, :, :, None]                            # s < r
        A = strict * b_c[:, :, None] * np.einsum("brhk,bshk->brsh", K, K) * Gamma         # (b, r, s, h)
        U_tilde = solve_unit_lower(A, b_c[..., None] * V)                                 # (b, n, h, d_v)
        W = solve_unit_lower(A, (b_c * np.exp(g))[..., None] * K)                         # (b, n, h, d_k)
        U = U_tilde - np.einsum("bshk,bhkv->bshv", W, S)                                   # new values (b, n, h, d_v)
        QK = np.einsum("brhk,bshk->brsh", Q, K) * Gamma                                    # (b, r, s, h)
        o[:, start:start + chunk] = (np.einsum("brhk,bhkv->brhv", np.exp(g)[..., None] * Q, S)
                                     + np.einsum("brsh,bshv->brhv", QK, U))                # (b, n, h, d_v)
        S = (np.exp(g[:, -1])[..., None, None] * S
             + np.einsum("bshk,bshv->bhkv", np.exp(g[:, -1:] - g)[..., None] * K, U))    # (b, h, d_k, d_v)
    return o, S


# ----------------------------------------------------------------------------- DeltaProduct
def interleave(q, k, v, beta, log_alpha, n_householder):
    """The DeltaProduct sequence as a delta-rule sequence of n_h·L sub-steps (row t·n_h + j, SPEC §4.11.5):
    q only at j = n_h − 1 and log α only at j = 0 (zeros elsewhere); k, v, β are already interleaved.
    q (b, L, h, d_k), log_alpha (b, L, h) or None → (q, k, v, β, log α) of n_h·L rows."""
    batch, L, h, d_k = q.shape
    q_sub = np.zeros((batch, L, n_householder, h, d_k))                                   # (b, L, n_h, h, d_k)
    q_sub[:, :, -1] = q
    log_alpha_sub = np.zeros((batch, L, n_householder, h))                                 # (b, L, n_h, h)
    if log_alpha is not None:
        log_alpha_sub[:, :, 0] = log_alpha
    return (q_sub.reshape(batch, L * n_householder, h, d_k), k, v, beta,
            log_alpha_sub.reshape(batch, L * n_householder, h))


def delta_product_recurrence(q, k, v, beta, log_alpha=None, initial_state=None, *, n_householder, scale,
                             method="sequential", chunk=64):
    """Gated DeltaProduct: per token S ← α_t S, then for j = 1..n_h S ← (I − β_j k_j k_jᵀ) S + β_j k_j v_jᵀ.

    q (b, L, h, d_k), log_alpha None or (b, L, h) per token; k (b, n_h·L, h, d_k), v (b, n_h·L, h, d_v),
    beta (b, n_h·L, h) interleaved (row t·n_h + j). "sequential" and "chunkwise" run the delta rule on the
    interleaved sequence (chunk counts sub-steps); "dense" scans the per-token transitions
    A_t = α_t H_{n_h} ⋯ H_1 and drives b_t = Σ_j H_{n_h} ⋯ H_{j+1} β_j k_j v_jᵀ (H = I − β k kᵀ).
    Returns (o (b, L, h, d_v), final state (b, h, d_k, d_v)).
    """
    n_householder = check_positive_int(n_householder, "n_householder")
    q = np.asarray(q, dtype=np.float64)
    k, v, beta = np.asarray(k, dtype=np.float64), np.asarray(v, dtype=np.float64), np.asarray(beta, dtype=np.float64)
    if q.ndim != 4 or k.shape != (q.shape[0], q.shape[1] * n_householder) + q.shape[2:]:
        raise ValueError(f"k must have shape (b, n_h·L, h, d_k) = ({q.shape[0]}, {n_householder}·{q.shape[1]}, "
                         f"...) for q of shape {q.shape} and n_householder={n_householder}; got {k.shape}")
    if method != "dense":
        o, S = delta_recurrence(*interleave(q, k, v, beta, log_alpha, n_householder), initial_state,
                                scale=scale, method=method, chunk=chunk)                  # (b, n_h·L, h, d_v)
        return o[:, n_householder - 1::n_householder], S
    q_sub, k, v, beta, log_alpha_sub = interleave(q, k, v, beta, log_alpha, n_householder)
    _check_arrays(q_sub, k, v, beta, log_alpha_sub, initial_state, vector_gate=False)     # shapes only
    batch, L, h, d_k = q.shape
    k, v = k.reshape(batch, L, n_householder, h, d_k), v.reshape(batch, L, n_householder, h, -1)
    beta = beta.reshape(batch, L, n_householder, h)
    A = np.broadcast_to(np.eye(d_k), (batch, L, h, d_k, d_k))                             # (b, L, h, d_k, d_k)
    B = np.zeros((batch, L, h, d_k, v.shape[-1]))                                         # (b, L, h, d_k, d_v)
    for j in range(n_householder):
        H_j = np.eye(d_k) - beta[:, :, j, :, None, None] * np.einsum("blhi,blhj->blhij", k[:, :, j], k[:, :, j])
        A = H_j @ A                                                                        # (b, L, h, d_k, d_k)
        B = H_j @ B + beta[:, :, j, :, None, None] * np.einsum("blhk,blhv->blhkv", k[:, :, j], v[:, :, j])
    gate = np.ones((batch, L, h)) if log_alpha is None else np.exp(np.asarray(log_alpha, dtype=np.float64))
    S = np.zeros((batch, h, d_k, v.shape[-1])) if initial_state is None else np.asarray(initial_state, np.float64)
    return _dense_columns(scale * q, gate[..., None, None] * A, np.swapaxes(B, -1, -2), S)
