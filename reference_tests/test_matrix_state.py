"""The matrix-state layers' own invariants (SPEC §4.11.8): GLA / linear attention, Gated DeltaNet / DeltaNet,
DeltaProduct, at op level (reference/layers/matrix_state.py) and layer level.

Views: sequential == scan views == chunkwise for chunk sizes 1, 2, 3, 16, 64, L, L + 5 and L in {1, primes,
2^k ± 1}, with and without an initial state; the decay-free variants (which the registry configs do not draw):
views, step == forward, split + carry == whole, padding invariance, causality, refusal of τ. Reductions (α ≡ 1,
n_h = 1, the interleaved sequence, the SSD semiseparable form, β ≡ 0), spectrum and ‖A_t‖₂ ≤ α_t, stability, exact
recall, parity and Z_3 state tracking, the op-level regression values, the WY identity, τ = 0 (no decay), init
regression values, and the named errors.
"""
import numpy as np
import pytest

from parity_tests.tolerances import TOLERANCES, assert_close
from reference.layers.deltaproduct import DeltaProduct
from reference.layers.gated_deltanet import GatedDeltaNet, dt_bias_init
from reference.layers.gla import GLA
from reference.layers.matrix_state import (DELTA_METHODS, GLA_METHODS, delta_product_recurrence, delta_recurrence,
                                           gla_recurrence, l2_normalize, solve_unit_lower)

LENGTHS = (1, 2, 3, 5, 7, 13, 17, 15, 16, 31, 33, 63, 65)
BATCH, HEADS, D_K, D_V = 2, 2, 3, 2
# The three layers with every gate / eigenvalue option (use_gate=False: linear attention, DeltaNet).
VARIANTS = {
    "GLA": (GLA, {"use_gate": True, "gate_low_rank_dim": 2}),
    "LinearAttention": (GLA, {"use_gate": False}),
    "GatedDeltaNet": (GatedDeltaNet, {"use_gate": True}),
    "DeltaNet-negative-eigenvalues": (GatedDeltaNet, {"use_gate": False, "allow_neg_eigval": True}),
    "DeltaProduct": (DeltaProduct, {"n_householder": 3}),
    "DeltaProduct-no-forget-gate": (DeltaProduct, {"use_forget_gate": False}),
}
DECAY_FREE = ["LinearAttention", "DeltaNet-negative-eigenvalues", "DeltaProduct-no-forget-gate"]
SLACK = 1 + TOLERANCES["float64"]["rtol"]          # rounding allowance of an inequality computed in float64


# ----------------------------------------------------------------------------- helpers
def op_inputs(rng, L, n_householder=1, gate="scalar"):
    """Random op inputs: q (b, L, h, d_k), unit keys and v, β ∈ [0, 2] (n_h·L rows), log α <= 0 or None."""
    q = rng.normal(size=(BATCH, L, HEADS, D_K))                                            # (b, L, h, d_k)
    k = l2_normalize(rng.normal(size=(BATCH, n_householder * L, HEADS, D_K)), eps=0.0)     # unit keys
    v = rng.normal(size=(BATCH, n_householder * L, HEADS, D_V))                            # (b, n_h·L, h, d_v)
    beta = rng.uniform(0.0, 2.0, (BATCH, n_householder * L, HEADS))                        # (b, n_h·L, h)
    shape = {"scalar": (BATCH, L, HEADS), "vector": (BATCH, L, HEADS, D_K)}.get(gate)
    log_alpha = None if shape is None else -rng.exponential(0.3, shape)
    return q, k, v, beta, log_alpha


def initial_state(rng, with_h0):
    return rng.normal(size=(BATCH, HEADS, D_K, D_V)) if with_h0 else None


def chunk_sizes(L):
    return sorted({1, 2, 3, 16, 64, L, L + 5})


def build(name, d_model=4, **overrides):
    cls, kwargs = VARIANTS[name]
    return cls(d_model=d_model, n_heads=2, d_k=D_K, d_v=D_V, seed=7, **{**kwargs, **overrides})


def run_steps(layer, x, tau=None, state=None):
    state = layer.init_state(x.shape[0]) if state is None else state
    outputs = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state, None if tau is None else tau[:, t])
        outputs.append(y_t)
    return np.stack(outputs, axis=1), state


def transition(n_householder, k, beta, log_alpha=None):
    """A_t of one token from the op itself: the final state for v = 0 and S_{−1} = I (d_v = d_k), (d_k, d_k)."""
    d_k = k.shape[-1]
    q = np.zeros((1, 1, 1, d_k))
    v = np.zeros((1, n_householder, 1, d_k))
    _, S = delta_product_recurrence(q, k.reshape(1, n_householder, 1, d_k), v, np.reshape(beta, (1, n_householder, 1)),
                                    None if log_alpha is None else np.full((1, 1, 1), log_alpha),
                                    np.eye(d_k)[None, None], n_householder=n_householder, scale=1.0)
    return S[0, 0]


# ----------------------------------------------------------------------------- all methods agree (op level)
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("gate", ["none", "scalar", "vector"])
def test_gla_methods_agree(gate, L, with_h0):
    rng = np.random.default_rng(L)
    q, k, v, _, log_alpha = op_inputs(rng, L, gate=gate)
    h0 = initial_state(rng, with_h0)
    o, S = gla_recurrence(q, k, v, log_alpha, h0, scale=D_K ** -0.5, method="sequential")
    for method in GLA_METHODS:
        for chunk in chunk_sizes(L) if method == "chunkwise" else (64,):
            o_m, S_m = gla_recurrence(q, k, v, log_alpha, h0, scale=D_K ** -0.5, method=method, chunk=chunk)
            assert_close(o_m, o, what=f"GLA ({gate} gate) {method} C={chunk} L={L} outputs")
            assert_close(S_m, S, what=f"GLA ({gate} gate) {method} C={chunk} L={L} final state")


@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("n_householder, gate", [(1, "none"), (1, "scalar"), (2, "scalar"), (3, "none")])
def test_delta_methods_agree(n_householder, gate, L, with_h0):
    rng = np.random.default_rng(100 + L)
    q, k, v, beta, log_alpha = op_inputs(rng, L, n_householder, gate)
    h0 = initial_state(rng, with_h0)

    def run(method, chunk=64):
        if n_householder == 1:
            return delta_recurrence(q, k, v, beta, log_alpha, h0, scale=D_K ** -0.5, method=method, chunk=chunk)
        return delta_product_recurrence(q, k, v, beta, log_alpha, h0, n_householder=n_householder,
                                        scale=D_K ** -0.5, method=method, chunk=chunk)

    o, S = run("sequential")
    for method in DELTA_METHODS:
        for chunk in chunk_sizes(n_householder * L) if method == "chunkwise" else (64,):
            o_m, S_m = run(method, chunk)
            assert_close(o_m, o, what=f"delta n_h={n_householder} ({gate}) {method} C={chunk} L={L} outputs")
            assert_close(S_m, S, what=f"delta n_h={n_householder} ({gate}) {method} C={chunk} L={L} final state")


# ----------------------------------------------------------------------------- layers: every variant, every view
@pytest.mark.parametrize("name", sorted(VARIANTS))
@pytest.mark.parametrize("L", [1, 7, 33])
def test_layer_views_step_split_and_padding(name, L):
    """Every method == sequential (chunk sizes 1, 3, L + 5); repeated step() == forward; split + carry == whole;
    padded rows == the unpadded sequences (garbage in the padding)."""
    layer = build(name)
    rng = np.random.default_rng(L)
    x = rng.normal(size=(3, L, 4))                                                         # (b, L, H)
    tau = rng.uniform(0.0, 2.0, (3, L)) if layer.accepts_timesteps else None
    tau_part = (lambda a, b: None) if tau is None else (lambda a, b: tau[:, a:b])
    h0 = rng.normal(size=layer.init_state(3).shape)
    y, S = layer(x, integration_timesteps=tau, initial_state=h0, return_state=True)
    for method in layer.methods:
        for chunk in (1, 3, L + 5):
            y_m, S_m = layer(x, integration_timesteps=tau, initial_state=h0, return_state=True, method=method,
                             chunk=chunk)
            assert_close(y_m, y, what=f"{name} {method} C={chunk}")
            assert_close(S_m, S, what=f"{name} {method} C={chunk} state")
    y_steps, S_steps = run_steps(layer, x, tau, h0)
    assert_close(y_steps, y, what=f"{name} step() == forward")
    assert_close(S_steps, S, what=f"{name} step() state")
    k = L // 2 + 1
    y_head, carried = layer(x[:, :k], integration_timesteps=tau_part(0, k), initial_state=h0, return_state=True,
                            method="chunkwise", chunk=2)
    if k < L:
        y_tail, S_tail = layer(x[:, k:], integration_timesteps=tau_part(k, L), initial_state=carried,
                               return_state=True, method="chunkwise", chunk=2)
        assert_close(np.concatenate([y_head, y_tail], axis=1), y, what=f"{name} split at {k} + carry")
        assert_close(S_tail, S, what=f"{name} split state")
    lengths = np.array([L, max(1, L - 3), 1])
    padded = x.copy()
    padded[np.arange(L)[None, :] >= lengths[:, None]] = 1e3
    y_pad, S_pad = layer(padded, lengths, tau, initial_state=h0, return_state=True, method="chunkwise", chunk=3)
    for i, n in enumerate(lengths):
        y_i, S_i = layer(x[i:i + 1, :n], integration_timesteps=None if tau is None else tau[i:i + 1, :n],
                         initial_state=h0[i:i + 1], return_state=True)
        assert_close(y_pad[i:i + 1, :n], y_i, what=f"{name} padded row {i}")
        assert_close(S_pad[i:i + 1], S_i, what=f"{name} state at len − 1, row {i}")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_layer_causality(name):
    layer = build(name)
    rng = np.random.default_rng(3)
    x = rng.normal(size=(2, 20, 4))
    perturbed = x.copy()
    perturbed[:, 9:] += rng.normal(size=perturbed[:, 9:].shape)
    for method in layer.methods:
        assert_close(layer(perturbed, method=method, chunk=4)[:, :9], layer(x, method=method, chunk=4)[:, :9],
                     what=f"{name} outputs before the perturbed step ({method})")


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_one_wide_heads_agree_in_float64(name):
    """d_model = d_k = d_v = 1 (the registry configs draw >= 2 for float32 conditioning): views and step agree."""
    cls, kwargs = VARIANTS[name]
    layer = cls(d_model=1, n_heads=1, seed=2, **kwargs)
    x = np.random.default_rng(5).normal(size=(2, 11, 1))
    y = layer(x)
    for method in layer.methods:
        assert_close(layer(x, method=method, chunk=4), y, what=f"{name} size 1, {method}")
    assert_close(run_steps(layer, x)[0], y, what=f"{name} size 1, step()")


@pytest.mark.parametrize("name", DECAY_FREE)
def test_decay_free_layers_refuse_timesteps(name):
    layer = build(name)
    x = np.ones((1, 3, 4))
    with pytest.raises(ValueError, match="no decay for integration_timesteps to scale"):
        layer(x, integration_timesteps=np.ones((1, 3)))
    with pytest.raises(ValueError, match="integration_timestep must be None"):
        layer.step(x[:, 0], layer.init_state(1), np.ones(1))


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_fft_is_refused_with_the_reason(name):
    with pytest.raises(ValueError, match="method='fft' is not available .* no convolution|no kernel view"):
        build(name)(np.ones((1, 3, 4)), method="fft")


# ----------------------------------------------------------------------------- reductions
def test_gla_with_unit_decay_is_linear_attention():
    """W_gate_up = 0, b_gate = 1000 ⇒ logsigmoid = 0 exactly ⇒ α ≡ 1: GLA == LinearAttention (same q, k, v, out)."""
    gated, plain = build("GLA"), build("LinearAttention")
    gated.params.update({name: plain.params[name] for name in plain.params})
    gated.params["W_gate_up"] = np.zeros_like(gated.params["W_gate_up"])
    gated.params["b_gate"] = np.full_like(gated.params["b_gate"], 1000.0)
    x = np.random.default_rng(0).normal(size=(2, 19, 4))
    assert_close(gated(x, method="chunkwise", chunk=5), plain(x), what="GLA α ≡ 1 vs linear attention")


def test_gated_deltanet_with_unit_decay_is_deltanet():
    """A_log = −1000 ⇒ exp(A_log) = 0 ⇒ α ≡ 1: GatedDeltaNet == DeltaNet (same projections)."""
    gated = build("GatedDeltaNet", allow_neg_eigval=True)
    plain = build("DeltaNet-negative-eigenvalues")
    gated.params.update({name: plain.params[name] for name in plain.params})
    gated.params["A_log"] = np.full_like(gated.params["A_log"], -1000.0)
    x = np.random.default_rng(1).normal(size=(2, 19, 4))
    assert_close(gated(x, method="chunkwise", chunk=4), plain(x), what="GatedDeltaNet α ≡ 1 vs DeltaNet")


@pytest.mark.parametrize("use_gate", [True, False])
def test_deltaproduct_with_one_householder_step_is_gated_deltanet(use_gate):
    """n_h = 1: the same parameter draws, the same outputs and states, every method."""
    product = DeltaProduct(4, n_heads=2, n_householder=1, allow_neg_eigval=False, use_forget_gate=use_gate, seed=3)
    gdn = GatedDeltaNet(4, n_heads=2, use_gate=use_gate, seed=3)
    for name, value in gdn.params.items():
        assert_close(product.params[name], value, what=f"n_h = 1 parameter {name}")
    x = np.random.default_rng(2).normal(size=(2, 17, 4))
    for method in DELTA_METHODS:
        assert_close(product(x, method=method), gdn(x), what=f"DeltaProduct n_h = 1 vs GatedDeltaNet ({method})")


@pytest.mark.parametrize("gate", ["none", "scalar"])
def test_deltaproduct_is_the_delta_rule_on_the_interleaved_sequence(gate):
    """The per-token transitions A_t = α_t H_2 H_1 and drives b_t (method "dense") == the delta rule run on the
    interleaved sequence with q only at j = n_h − 1 and log α only at j = 0, outputs read there."""
    rng = np.random.default_rng(4)
    L, n_h = 9, 2
    q, k, v, beta, log_alpha = op_inputs(rng, L, n_h, gate)
    h0 = initial_state(rng, True)
    o, S = delta_product_recurrence(q, k, v, beta, log_alpha, h0, n_householder=n_h, scale=0.5, method="dense")
    q_sub = np.zeros((BATCH, L, n_h, HEADS, D_K))
    q_sub[:, :, -1] = q
    g_sub = np.zeros((BATCH, L, n_h, HEADS))
    if log_alpha is not None:
        g_sub[:, :, 0] = log_alpha
    o_sub, S_sub = delta_recurrence(q_sub.reshape(BATCH, n_h * L, HEADS, D_K), k, v, beta,
                                    g_sub.reshape(BATCH, n_h * L, HEADS), h0, scale=0.5)
    assert_close(o_sub[:, n_h - 1::n_h], o, what="interleaved outputs")
    assert_close(S_sub, S, what="interleaved final state")


def test_scalar_gate_gla_is_the_ssd_semiseparable_form():
    """GLA with α_t = a_t·1 (scale 1) == Y = (Λ ∘ C Bᵀ) V, Λ_ts = exp(G_t − G_s) for s <= t (SPEC §4.11.9)."""
    rng = np.random.default_rng(6)
    L = 23
    C, B, V, _, log_a = op_inputs(rng, L, gate="scalar")                                  # q = C, k = B
    G = np.cumsum(log_a, axis=1)                                                           # (b, L, h)
    causal = np.tril(np.ones((L, L), bool))[None, :, :, None]
    Lam = np.exp(np.where(causal, G[:, :, None] - G[:, None, :], -np.inf))                 # (b, t, s, h)
    Y = np.einsum("btsh,bthn,bshn,bshv->bthv", Lam, C, B, V)                               # (b, L, h, d_v)
    for method in ("sequential", "chunkwise"):
        o, _ = gla_recurrence(C, B, V, log_a, scale=1.0, method=method, chunk=8)
        assert_close(o, Y, what=f"SSD semiseparable form ({method})")


def test_zero_write_strength_only_decays():
    """β ≡ 0 ⇒ S_t = α_t S_{t−1}: the final state is exp(Σ log α)·S_{−1} and o_t = e^{G_t} S_{−1}ᵀ(s q_t)."""
    rng = np.random.default_rng(7)
    q, k, v, beta, log_alpha = op_inputs(rng, 12, gate="scalar")
    h0 = initial_state(rng, True)
    for method in DELTA_METHODS:
        o, S = delta_recurrence(q, k, v, np.zeros_like(beta), log_alpha, h0, scale=0.5, method=method, chunk=5)
        decay = np.exp(np.cumsum(log_alpha, axis=1))                                       # (b, L, h)
        assert_close(S, decay[:, -1, :, None, None] * h0, what=f"β ≡ 0 final state ({method})")
        assert_close(o, decay[..., None] * np.einsum("bhkv,blhk->blhv", h0, 0.5 * q), what=f"β ≡ 0 outputs ({method})")


# ----------------------------------------------------------------------------- spectrum, stability, recall
@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0, 1.7, 2.0])
def test_single_householder_spectrum(beta):
    """‖k‖ = 1: eig(I − β k kᵀ) = {1 (× d_k − 1), 1 − β} ⊂ [−1, 1], real; times α for the gated step."""
    k = l2_normalize(np.random.default_rng(8).normal(size=(1, 4)), eps=0.0)
    for log_alpha, alpha in ((None, 1.0), (np.log(0.8), 0.8)):
        eig = np.sort(np.linalg.eigvals(transition(1, k, [beta], log_alpha)))
        assert_close(eig.imag, np.zeros(4), what="eigenvalues are real")
        assert_close(eig.real, np.sort(alpha * np.array([1.0, 1.0, 1.0, 1.0 - beta])), what="spectrum")


def test_householder_products_have_norm_at_most_alpha():
    """n_h = 2, β ∈ [0, 2]: ‖A_t‖₂ <= α_t, |λ| <= α_t, det A_t = α_t^{d_k} ∏ (1 − β_j); some spectra are complex."""
    rng = np.random.default_rng(9)
    complex_count = 0
    for _ in range(200):
        k = l2_normalize(rng.normal(size=(2, 4)), eps=0.0)
        beta, alpha = rng.uniform(0.0, 2.0, 2), rng.uniform(0.3, 1.0)
        A = transition(2, k, beta, np.log(alpha))
        assert np.linalg.norm(A, 2) <= alpha * SLACK
        eig = np.linalg.eigvals(A)
        assert np.max(np.abs(eig)) <= alpha * SLACK
        assert_close(np.linalg.det(A), alpha ** 4 * np.prod(1 - beta), what="det A_t")
        complex_count += bool(np.any(np.abs(eig.imag) > TOLERANCES["float64"]["rtol"]))
    assert complex_count > 0, "two generalised Householder factors should give complex eigenvalues in some draws"


def test_state_norm_is_bounded():
    """Unit keys, β ∈ [0, 2]: ‖S_t‖₂ <= α_t ‖S_{t−1}‖₂ + Σ_j β_{t,j} ‖v_{t,j}‖, step by step (n_h = 2)."""
    rng = np.random.default_rng(10)
    q, k, v, beta, log_alpha = op_inputs(rng, 30, 2, "scalar")
    S = initial_state(rng, True)
    for t in range(30):
        rows = slice(2 * t, 2 * t + 2)
        _, S_next = delta_product_recurrence(q[:, t:t + 1], k[:, rows], v[:, rows], beta[:, rows],
                                             log_alpha[:, t:t + 1], S, n_householder=2, scale=1.0)
        bound = (np.exp(log_alpha[:, t])[..., None] * np.linalg.norm(S, 2, axis=(-2, -1))[..., None]
                 + np.sum(beta[:, rows] * np.linalg.norm(v[:, rows], axis=-1), axis=1)[..., None])   # (b, h, 1)
        assert np.all(np.linalg.norm(S_next, 2, axis=(-2, -1)) <= bound[..., 0] * SLACK)
        S = S_next


@pytest.mark.parametrize("gate", ["none", "scalar"])
def test_exact_recall(gate):
    """β_t = 1 and ‖k_t‖ = 1 ⇒ S_tᵀ k_t = v_t after every step, gated or not."""
    rng = np.random.default_rng(11)
    q, k, v, _, log_alpha = op_inputs(rng, 10, gate=gate)
    S = initial_state(rng, True)
    for t in range(10):
        _, S = delta_recurrence(q[:, t:t + 1], k[:, t:t + 1], v[:, t:t + 1], np.ones((BATCH, 1, HEADS)),
                                None if log_alpha is None else log_alpha[:, t:t + 1], S, scale=1.0)
        assert_close(np.einsum("bhkv,bhk->bhv", S, k[:, t]), v[:, t], what=f"recall at step {t}")


# ----------------------------------------------------------------------------- state tracking
def test_parity_tracking_with_negative_eigenvalues():
    """k_t = e_1, v_t = 0, β_t = 2 x_t ⇒ e_1ᵀ S_t = (−1)^{Σ_{s<=t} x_s} e_1ᵀ S_{−1}; with β_t = x_t·b, b ∈ [0, 1),
    the sign never flips."""
    rng = np.random.default_rng(12)
    L = 40
    bits = rng.integers(0, 2, (1, L, 1)).astype(float)                                    # (1, L, 1)
    k = np.zeros((1, L, 1, 3))
    k[..., 0] = 1.0
    h0 = rng.normal(size=(1, 1, 3, 2))
    q = np.zeros((1, L, 1, 3))
    q[..., 0] = 1.0
    o, _ = delta_recurrence(q, k, np.zeros((1, L, 1, 2)), 2.0 * bits, None, h0, scale=1.0, method="chunkwise",
                            chunk=7)
    sign = (-1.0) ** np.cumsum(bits[0, :, 0])                                              # (L,)
    assert_close(o[0, :, 0], sign[:, None] * h0[0, 0, 0], what="parity: e_1ᵀ S_t")
    o_pos, _ = delta_recurrence(q, k, np.zeros((1, L, 1, 2)), 0.9 * bits, None, h0, scale=1.0)
    assert np.all(o_pos[0, :, 0] * h0[0, 0, 0] >= 0), "β ∈ [0, 1] must never flip the sign"


def test_z3_rotation_from_two_householder_steps():
    """n_h = 2, k_1 = e_1, k_2 = (cos π/3, sin π/3), β = 2, v = 0 ⇒ A_t = rotation by +120°, A_t³ = I."""
    k = np.array([[1.0, 0.0], [np.cos(np.pi / 3), np.sin(np.pi / 3)]])
    A = transition(2, k, [2.0, 2.0])
    assert_close(A, np.array([[-0.5, -0.8660254037844386], [0.8660254037844386, -0.5]]), what="A_t")
    assert_close(np.linalg.matrix_power(A, 3), np.eye(2), what="A_t³ = I")
    assert_close(A @ np.array([1.0, 0.0]), np.array([-0.5, 0.8660254037844386]), what="A_t e_1")


# ----------------------------------------------------------------------------- regression values
@pytest.mark.parametrize("method", DELTA_METHODS)
@pytest.mark.parametrize("alpha_1, expected", [(1.0, (1.52, 1.36)), (0.5, (1.36, 1.48))])
def test_delta_rule_regression_values(method, alpha_1, expected):
    """s = 1, d_k = 2, d_v = 1, S_{−1} = 0: (k, v, β) = ((1, 0), 1, 0.5) then ((0.6, 0.8), 2, 1):
    S_0 = (0.5, 0); S_1 = (1.52, 1.36) (DeltaNet) or (1.36, 1.48) (α_1 = 0.5); k_1ᵀ S_1 = 2."""
    k = np.array([[1.0, 0.0], [0.6, 0.8]]).reshape(1, 2, 1, 2)
    v = np.array([1.0, 2.0]).reshape(1, 2, 1, 1)
    beta = np.array([0.5, 1.0]).reshape(1, 2, 1)
    log_alpha = np.log(np.array([1.0, alpha_1])).reshape(1, 2, 1)
    q = np.zeros((1, 2, 1, 2))
    _, S_0 = delta_recurrence(q[:, :1], k[:, :1], v[:, :1], beta[:, :1], log_alpha[:, :1], scale=1.0, method=method)
    assert_close(S_0[0, 0, :, 0], np.array([0.5, 0.0]), what="S_0")
    _, S_1 = delta_recurrence(q, k, v, beta, log_alpha, scale=1.0, method=method, chunk=2)
    assert_close(S_1[0, 0, :, 0], np.array(expected), what="S_1")
    assert_close(k[0, 1, 0] @ S_1[0, 0, :, 0], 2.0, what="k_1ᵀ S_1")


def test_wy_identity():
    """α_r H_r ⋯ α_0 H_0 = e^{g_r} I − Σ_{s<=r} Γ_rs k_s w_sᵀ with (I + A) W = diag(β ⊙ e^g) K (SPEC §4.11.6)."""
    rng = np.random.default_rng(13)
    n, d_k = 6, 3
    k = l2_normalize(rng.normal(size=(1, n, 1, d_k)), eps=0.0)                             # (1, n, 1, d_k)
    beta = rng.uniform(0.0, 2.0, (1, n, 1))
    log_alpha = -rng.exponential(0.3, (1, n, 1))
    g = np.cumsum(log_alpha, axis=1)                                                        # (1, n, 1)
    causal = np.tril(np.ones((n, n), bool))[None, :, :, None]
    Gamma = np.exp(np.where(causal, g[:, :, None] - g[:, None, :], -np.inf))               # (1, r, s, 1)
    A = np.tril(np.ones((n, n)), -1)[None, :, :, None] * beta[:, :, None] * np.einsum("brhk,bshk->brsh", k, k) * Gamma
    W = solve_unit_lower(A, (beta * np.exp(g))[..., None] * k)                             # (1, n, 1, d_k)
    for r in range(n):
        _, product = delta_recurrence(np.zeros((1, r + 1, 1, d_k)), k[:, :r + 1], np.zeros((1, r + 1, 1, d_k)),
                                      beta[:, :r + 1], log_alpha[:, :r + 1], np.eye(d_k)[None, None], scale=1.0)
        wy = np.exp(g[0, r, 0]) * np.eye(d_k) - np.einsum("s,sk,sj->kj", Gamma[0, r, :r + 1, 0], k[0, :r + 1, 0],
                                                         W[0, :r + 1, 0])
        assert_close(product[0, 0], wy, what=f"WY form of the first {r + 1} transitions")


def test_init_regression_values():
    """α at a zero gate logit = 0.5^{1/16} = 0.957603281; softplus⁻¹(0.01) = −4.600166019 (dt_bias)."""
    layer = build("GLA")
    layer.params["W_gate_up"] = np.zeros_like(layer.params["W_gate_up"])
    _, _, _, log_alpha = layer.discrete_system(np.random.default_rng(0).normal(size=(1, 3, 4)))
    assert_close(np.exp(log_alpha), np.full(log_alpha.shape, 0.957603281), what="α at zero logit")
    assert_close(dt_bias_init(np.random.default_rng(0), 3, 0.01, 0.01), np.full(3, -4.600166019), what="dt_bias")


@pytest.mark.parametrize("dt_min, dt_max", [(1e-3, 0.1), (1e-5, 1e-4), (0.5, 0.5), (1e-6, 2.0)])
@pytest.mark.parametrize("name", ["GatedDeltaNet", "DeltaProduct"])
def test_gate_step_within_its_range(name, dt_min, dt_max):
    """Δ = softplus(dt_bias) ∈ [max(dt_min, 1e-4), max(dt_max, 1e-4)] at init (fla clamps the draw at 1e-4)."""
    layer = build(name, dt_min=dt_min, dt_max=dt_max)
    dt = np.logaddexp(0.0, layer.params["dt_bias"])
    assert np.all(dt >= max(dt_min, 1e-4) / SLACK) and np.all(dt <= max(dt_max, 1e-4) * SLACK), dt


@pytest.mark.parametrize("name", ["GatedDeltaNet", "DeltaProduct"])
def test_zero_gap_removes_only_the_decay(name):
    """τ = 0 ⇒ α^0 = 1: the step equals the same layer with α ≡ 1 (A_log = −1000); the write is unchanged."""
    layer, no_decay = build(name), build(name)
    no_decay.params["A_log"] = np.full_like(no_decay.params["A_log"], -1000.0)
    rng = np.random.default_rng(14)
    x, s = rng.normal(size=(2, 4)), rng.normal(size=layer.init_state(2).shape)
    y, S = layer.step(x, s, np.zeros(2))
    y_ref, S_ref = no_decay.step(x, s)
    assert_close(S, S_ref, what=f"{name} state after a zero gap")
    assert_close(y, y_ref, what=f"{name} output after a zero gap")


# ----------------------------------------------------------------------------- named errors
@pytest.mark.parametrize("cls", [GLA, GatedDeltaNet, DeltaProduct])
def test_heads_must_divide_the_width(cls):
    with pytest.raises(ValueError, match="n_heads must divide d_model.*d_model=6, n_heads=4"):
        cls(6)
    assert cls(6, d_k=2, d_v=3).init_state(1).shape == (1, 4, 2, 3)


@pytest.mark.parametrize("cls, kwargs, error, match", [
    (GLA, {"use_gate": 1}, TypeError, "use_gate must be True or False"),
    (GLA, {"use_gate": False, "gate_low_rank_dim": 4}, ValueError, "gate_low_rank_dim applies only with use_gate"),
    (GLA, {"gate_logit_normalizer": 0}, ValueError, "gate_logit_normalizer must be finite and in"),
    (GatedDeltaNet, {"use_gate": False, "dt_max": 0.5}, ValueError, "dt_max applies only with use_gate"),
    (GatedDeltaNet, {"dt_min": 0.5, "dt_max": 0.1}, ValueError, "dt_min must be <= dt_max"),
    (DeltaProduct, {"n_householder": 0}, ValueError, "n_householder must be >= 1"),
    (DeltaProduct, {"use_forget_gate": False, "dt_min": 0.01}, ValueError, "dt_min applies only with use_forget_gate"),
])
def test_bad_arguments_raise_named_errors(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(4, n_heads=2, **kwargs)


def test_bad_chunk_and_method_raise_named_errors():
    layer = build("GatedDeltaNet")
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        layer(np.ones((1, 3, 4)), method="chunkwise", chunk=0)
    with pytest.raises(ValueError, match="method must be one of sequential, dense, chunkwise"):
        layer(np.ones((1, 3, 4)), method="blelloch")
