"""Centaurus and LSSL: initialisation formulas, size rules, stability and the dense-discretisation
invariants of SPEC §4.3/§4.4. The general layer properties (step == forward, fft == scan, ...) run
over the registry in test_layers.py; here are only the facts particular to these two layers."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import norm

from reference.layers import REGISTRY
from reference.layers.centaurus import CENTAURUS_METHODS, MODES, Centaurus, inverse_softplus, softplus
from reference.layers.lssl import LSSL
from reference.nn import gelu
from parity_tests.strategies import examples, CONTINUOUS_METHODS, batch_sizes, rng_from, seeds, sequence_lengths
from parity_tests.tolerances import assert_close

H, R, M = 3, 2, 4                                               # a small, non-square Centaurus
SIZES = {"neck": R, "pointwise": R, "pw": R, "s5": R, "dws": H, "full": H * H}   # d_state per size rule
SHAPES = {                                                      # SPEC §4.3 table, with R·M for pointwise
    "neck": {"A_re_raw": (R, M), "A_im": (R, M), "log_dt": (R,), "E": (R, M), "B": (R, H), "C": (H, R)},
    "pointwise": {"A_re_raw": (R * M,), "A_im": (R * M,), "log_dt": (R * M,), "B": (R * M, H), "C": (H, R * M)},
    "dws": {"A_re_raw": (H, M), "A_im": (H, M), "log_dt": (H, M), "E": (H, M), "W_mix": (H, H)},
    "full": {"A_re_raw": (H, H, M), "A_im": (H, H, M), "log_dt": (H, M), "E": (H, H, M)},
}
STATE_SHAPES = {"neck": (R, M), "pointwise": (R * M,), "dws": (H, M), "full": (H, H, M)}


def centaurus(mode, **kwargs):
    return Centaurus(H, SIZES[mode], M, mode, seed=kwargs.pop("seed", 7), **kwargs)


# ----------------------------------------------------------------------------- Centaurus init
@pytest.mark.parametrize("mode", MODES)
def test_centaurus_init_formulas(mode):
    layer = centaurus(mode)
    p = layer.params
    assert {k: v.shape for k, v in p.items()} == SHAPES[mode]
    assert layer.init_state(2).shape == (2,) + STATE_SHAPES[mode]
    Lambda = layer.continuous_eigenvalues()
    assert_close(Lambda.real, np.full(STATE_SHAPES[mode], -0.5), what="Re λ = −softplus(softplus⁻¹(½))")
    m = np.arange(M)
    assert_close(Lambda.imag.reshape(-1, M), np.broadcast_to(np.pi * m, (Lambda.size // M, M)), what="A_im = π·m")
    # Δ: geomspace(1e-3, 1e-1) over blocks (neck, pointwise), channels (dws) or outputs (full), equal over m
    n_dt = {"neck": R, "pointwise": R, "dws": H, "full": H}[mode]
    dt = np.exp(p["log_dt"]).reshape(n_dt, -1)
    assert_close(dt, np.broadcast_to(np.geomspace(1e-3, 1e-1, n_dt)[:, None], dt.shape), what="Δ geomspace")


def test_centaurus_init_weights():
    """Deterministic weights exactly; random ones are the documented scale times the seed's standard draws."""
    neck, pointwise, dws, full = (centaurus(mode, seed=11).params for mode in MODES)
    draws = np.random.default_rng(11)
    assert_close(neck["E"], np.sqrt(2.0) * draws.standard_normal((R, M)), what="neck E ~ N(0, 2)")
    assert_close(neck["B"], np.full((R, H), 1 / np.sqrt(H)), what="neck B = 1/√H")
    assert_close(neck["C"], np.sqrt(2 / (R * M)) * draws.standard_normal((H, R)), what="neck C ~ N(0, 2/(R·M))")
    draws = np.random.default_rng(11)
    assert_close(pointwise["B"], np.full((R * M, H), 1 / np.sqrt(H)), what="pointwise B = 1/√H")
    assert_close(pointwise["C"], np.sqrt(2 / (R * M)) * draws.standard_normal((H, R * M)), what="pointwise C")
    assert_close(dws["E"], np.full((H, M), 1 / np.sqrt(M)), what="dws E = 1/√M")
    assert np.all(np.abs(dws["W_mix"]) <= 1 / np.sqrt(H)) and np.unique(dws["W_mix"]).size == H * H
    assert_close(full["E"], np.full((H, H, M), 1 / np.sqrt(H)), what="full E = 1/√H")


def test_centaurus_seed_and_aliases():
    """Same seed → identical params; pw and s5 are the pointwise layer (config stores the canonical name)."""
    x = rng_from(0).normal(size=(2, 9, H))
    reference = centaurus("pointwise")
    for alias in ("pw", "s5"):
        layer = centaurus(alias)
        assert layer.config["mode"] == "pointwise" and layer.mode == "pointwise"
        assert all(np.array_equal(layer.params[k], v) for k, v in reference.params.items())
        assert np.array_equal(layer(x), reference(x))
    assert_close(softplus(inverse_softplus(np.array([0.5, 2.0]))), np.array([0.5, 2.0]), what="softplus⁻¹")


def test_centaurus_size_rules_name_rule_and_fix():
    with pytest.raises(ValueError, match=r"d_state == d_model .*pass d_state=3"):
        Centaurus(3, 4, 2, "dws")
    with pytest.raises(ValueError, match=r"d_state == d_model\*\*2 .*pass d_state=9"):
        Centaurus(3, 3, 2, "full")
    with pytest.raises(ValueError, match="neck, pointwise, dws, full, pw, s5"):
        Centaurus(3, 3, 2, "diagonal")
    for method in ("foh", "none"):                              # "none": λ is continuous-time
        with pytest.raises(ValueError, match="zoh, bilinear, exp_euler, async, dirac; got"):
            Centaurus(3, 3, 2, "neck", discretization=method)
    with pytest.raises(TypeError, match="sub_state_dim"):
        Centaurus(3, 3, 2.0)
    assert Centaurus.methods == tuple(REGISTRY["Centaurus"].methods) and "fft" in Centaurus.methods
    assert set(CENTAURUS_METHODS) == set(CONTINUOUS_METHODS)       # the stability test below covers them all


@settings(max_examples=examples(10))
@given(mode=st.sampled_from(MODES), method=st.sampled_from(CONTINUOUS_METHODS), seed=seeds, batch=batch_sizes)
def test_centaurus_stable_for_every_discretization(mode, method, seed, batch):
    """Re λ = −softplus(·) < 0 by construction ⇒ |Ā| < 1 for any A_re_raw, A_im, Δ and τ > 0."""
    rng = rng_from(seed)
    layer = centaurus(mode, discretization=method)
    for name in ("A_re_raw", "A_im", "log_dt"):                 # perturb far from the init
        layer.params[name] = layer.params[name] + rng.uniform(-6, 3, layer.params[name].shape)
    tau = np.exp(rng.uniform(-3, 2, (batch, 5)))                # τ > 0 (τ = 0 gives Ā = 1 exactly)
    for Lambda_bar in (layer.discrete_system()[0], layer.discrete_system(tau)[0]):
        assert np.all(np.abs(Lambda_bar) < 1)


@pytest.mark.parametrize("method", ["exp_euler", "zoh"])
def test_centaurus_dws_single_substate_is_a_per_channel_recurrence(method):
    """M = 1, dws: x_{t,c} = exp(λ_c Δ_c) x_{t−1,c} + γ̄_c u_{t,c};  y_t = W_mix (E ⊙ Re x_t)."""
    rng = rng_from(3)
    layer = Centaurus(H, H, 1, "dws", method, seed=5)
    layer.params["A_im"] = rng.normal(0, 3, (H, 1))             # a genuinely complex λ
    layer.params["E"] = rng.normal(0, 1, (H, 1))
    u = rng.normal(size=(2, 17, H))
    lam = -np.log1p(np.exp(layer.params["A_re_raw"][:, 0])) + 1j * layer.params["A_im"][:, 0]   # (H,)
    dt = np.exp(layer.params["log_dt"][:, 0])                                                  # (H,)
    gamma = dt if method == "exp_euler" else (np.exp(lam * dt) - 1) / lam
    expected = np.zeros((2, 17, H))
    for b in range(2):
        for c in range(H):
            x = 0j
            for t in range(17):
                x = np.exp(lam[c] * dt[c]) * x + gamma[c] * u[b, t, c]
                expected[b, t] += layer.params["W_mix"][:, c] * layer.params["E"][c, 0] * x.real
    assert_close(layer(u), expected, what=f"dws M=1 ({method}) vs a hand-written loop")


def test_centaurus_kernel_has_no_skip_term():
    """Lag 0 is only the recurrence: pointwise exp_euler K_0 = C diag(Δ) B (no D)."""
    layer = centaurus("pointwise")
    dt = np.exp(layer.params["log_dt"])
    assert_close(layer.kernel(3)[0], layer.params["C"] @ (dt[:, None] * layer.params["B"]), what="K_0")


# ----------------------------------------------------------------------------- LSSL
def test_lssl_init():
    layer = LSSL(3, 6, channels=2, dt_min=1e-3, dt_max=0.1, seed=2)
    p = layer.params
    assert {k: v.shape for k, v in p.items()} == {"A": (6, 6), "B": (6,), "log_dt": (3,), "C": (3, 2, 6),
                                                  "D": (3, 2), "W_out": (3, 6), "b_out": (3,)}
    assert_close(np.sort(np.linalg.eigvals(p["A"]).real), -np.arange(6, 0, -1.0), what="eig(A) = −1..−N")
    assert_close(p["B"], np.sqrt(2 * np.arange(6) + 1.0), what="B_n = sqrt(2n+1)")
    assert np.all((p["log_dt"] >= np.log(1e-3)) & (p["log_dt"] < np.log(0.1)))
    assert np.all(np.abs(p["W_out"]) <= 1 / np.sqrt(6)) and np.all(np.abs(p["b_out"]) <= 1 / np.sqrt(6))
    assert layer.frozen == ("A", "B") and LSSL(3, 6, learn_A=True).frozen == ("B",)
    assert all(np.array_equal(v, LSSL(3, 6, channels=2, seed=2).params[k]) for k, v in p.items())


def test_lssl_validation():
    with pytest.raises(ValueError, match="zoh, bilinear"):
        LSSL(2, 3, discretization="exp_euler")
    with pytest.raises(TypeError, match="learn_A"):
        LSSL(2, 3, learn_A="yes")
    with pytest.raises(ValueError, match="dt_min must be <= dt_max"):
        LSSL(2, 3, dt_min=0.1, dt_max=0.01)
    with pytest.raises(ValueError, match="sequential, fft"):
        LSSL(2, 3)(np.zeros((1, 4, 2)), method="numba")
    with pytest.raises(ValueError, match="time-invariant"):
        LSSL(2, 3)(np.zeros((1, 4, 2)), integration_timesteps=np.ones((1, 4)), method="fft")


def test_lssl_bilinear_spectral_radius():
    """Bilinear Ā for Δ = 0.05: eigenvalues (1 + Δλ/2)/(1 − Δλ/2), largest at λ = −1."""
    dt = 0.05
    layer = LSSL(2, 8, discretization="bilinear", seed=0)
    layer.params["log_dt"] = np.full(2, np.log(dt))
    A_bar, _ = layer.discrete_system()                                               # (H, N, N)
    radius = np.abs(np.linalg.eigvals(A_bar)).max(axis=-1)                           # (H,)
    assert_close(radius, np.full(2, (1 - dt / 2) / (1 + dt / 2)), what="spectral radius of bilinear Ā")


@given(N=st.integers(1, 6), dt=st.sampled_from([1e-3, 4e-3, 1.6e-2]))
def test_lssl_zoh_and_bilinear_agree_to_third_order(N, dt):
    """With Z = ΔA: e^Z − Cayley(Z) = −Z³/12 + Σ_{k≥4} e_k Z^k and |e_k| ≤ 2^{1−k}; for B̄ the gap is
    −ΔZ²B/12 + Δ Σ_{k≥3} f_k Z^k B with |f_k| ≤ 2^{−k}. Both remainders are bounded in the 2-norm."""
    zoh, bilinear = (LSSL(1, N, discretization=method, seed=0) for method in ("zoh", "bilinear"))
    for layer in (zoh, bilinear):
        layer.params["log_dt"] = np.full(1, np.log(dt))
    (A_z, B_z), (A_b, B_b) = zoh.discrete_system(), bilinear.discrete_system()       # (1, N, N), (1, N)
    Z = dt * zoh.params["A"]
    r = np.linalg.norm(Z, 2)
    assert r < 1
    gap_A = A_z[0] - A_b[0] + np.linalg.matrix_power(Z, 3) / 12
    assert np.linalg.norm(gap_A, 2) <= 2 * (r / 2) ** 4 / (1 - r / 2)
    B = zoh.params["B"]
    gap_B = B_z[0] - B_b[0] + dt * np.linalg.matrix_power(Z, 2) @ B / 12
    assert np.linalg.norm(gap_B) <= dt * (r / 2) ** 3 / (1 - r / 2) * np.linalg.norm(B)


@settings(max_examples=examples(10))
@given(seed=seeds, L=sequence_lengths(20), method=st.sampled_from(["bilinear", "zoh"]))
def test_lssl_zero_timestep_keeps_the_state(seed, L, method):
    """τ_t = 0 ⇒ Ā_t = I and B̄_t = 0: the state is carried unchanged and y_t depends on u_t through D only."""
    rng = rng_from(seed)
    layer = LSSL(2, 3, channels=2, discretization=method, seed=seed)
    u = rng.normal(size=(1, L, 2))
    tau = np.exp(rng.uniform(-2, 1, (1, L)))
    gap = L // 2
    tau[0, gap] = 0.0
    states, state = [layer.init_state(1)], layer.init_state(1)                      # states[t + 1] = x_t
    for t in range(L):
        y_t, state = layer.step(u[:, t], state, tau[:, t])
        states.append(state)
    assert_close(states[gap + 1], states[gap], what="state across a zero gap")
    _, final = layer(u, integration_timesteps=tau, return_state=True)
    assert_close(final, states[-1], what="forward with τ == repeated step")

def test_gelu_is_exact():
    z = np.linspace(-4, 4, 41)
    assert_close(gelu(z), z * norm.cdf(z), what="gelu = z Φ(z)")
    assert_close(gelu(z) - gelu(-z), z, what="gelu(z) − gelu(−z) = z")
