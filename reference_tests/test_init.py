"""Initialisation invariants (SPEC §4.1, §4.2, §4.5, §7): HiPPO, LRU ring, S5 blocks and conj_sym, S4D inits,
dt ranges, stability under perturbation, seeds, parameter exchange and the validation errors.

Registry-driven where the property is generic (seeds, from_params/save/load, dt ranges); layer-specific
where the property is a fact about one parameterisation.
"""
import inspect
import os
import tempfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import truncnorm

from parity_tests.strategies import (examples, CONTINUOUS_METHODS, batch_sizes, layer_config, lru_rings, rng_from, seeds,
                                     sequence_lengths, timesteps)
from parity_tests.tolerances import TOLERANCES, assert_close
from reference.discretize import discretize
from reference.init import (TRUNCATED_NORMAL_STD, hippo_legs, hippo_n_diagonalization, hippo_normal,
                            s5_hippo_blocks, truncated_normal)
from reference.layers import REGISTRY
from reference.layers.lru import LRU
from reference.layers.s4d import S4D, s4d_diagonal
from reference.layers.s5 import S5

LAYERS = sorted(REGISTRY)
# Im Λ of HiPPO-N for N = 8 to four decimals (SPEC §4.2).
HIPPO_N8_IMAG = (-19.8574, -5.3542, -1.9578, -0.4275, 0.4275, 1.9578, 5.3542, 19.8574)
sizes = st.integers(1, 24)
RTOL = TOLERANCES["float64"]["rtol"]          # round-trip of a bound through log/exp


# ----------------------------------------------------------------------------- HiPPO
@given(N=sizes)
def test_hippo_legs_structure(N):
    A, B = hippo_legs(N)
    assert_close(np.sort(np.linalg.eigvals(A).real), -np.arange(N, 0, -1.0), what="eig(A) = −1..−N")
    assert_close(B, np.sqrt(2 * np.arange(N) + 1), what="B_n = sqrt(2n+1)")
    assert np.array_equal(A, np.tril(A)), "HiPPO-LegS A is lower triangular"
    S, p = hippo_normal(N)
    assert_close(np.diag(S), np.full(N, -0.5), what="diag S = −½")
    assert_close(S + 0.5 * np.eye(N), -(S + 0.5 * np.eye(N)).T, what="S + ½I skew-symmetric")
    assert_close(S - np.outer(p, p), A, what="S − ppᵀ = A")


@given(N=sizes)
def test_hippo_n_diagonalization(N):
    Lambda, V = hippo_n_diagonalization(N)
    S, _ = hippo_normal(N)
    assert_close(V.conj().T @ V, np.eye(N), what="V unitary")
    assert_close(V @ np.diag(Lambda) @ V.conj().T, S, what="S = V Λ Vᴴ")
    assert_close(Lambda.real, np.full(N, -0.5), what="Re Λ = −½")
    assert np.all(np.diff(Lambda.imag) >= 0), "ω ascending"
    assert_close(np.sort(Lambda.imag), np.sort(-Lambda.imag), what="spectrum symmetric under conjugation")


def test_hippo_n_regression_values():
    Lambda, _ = hippo_n_diagonalization(8)
    assert tuple(np.round(Lambda.imag, 4)) == HIPPO_N8_IMAG
    assert tuple(np.round(S5(1, 8, seed=0).params["Lambda_im"], 4)) == HIPPO_N8_IMAG
    assert tuple(np.round(S5(1, 4, conj_sym=True, seed=0).params["Lambda_im"], 4)) == HIPPO_N8_IMAG[:4]


@given(N=st.integers(1, 8), blocks=st.integers(1, 4), conj_sym=st.booleans())
def test_s5_block_diagonal_init(N, blocks, conj_sym):
    d_state = N * blocks                                   # blocks | d_state: valid with and without conj_sym
    Lambda, V = s5_hippo_blocks(d_state, blocks, conj_sym)
    b = (2 if conj_sym else 1) * N
    Lambda_b, V_b = hippo_n_diagonalization(b)
    kept = b // 2 if conj_sym else b
    assert_close(Lambda, np.tile(Lambda_b[:kept], blocks), what="Λ = Λ_b tiled")
    assert V.shape == ((2 if conj_sym else 1) * d_state, d_state)
    assert_close(V.conj().T @ V, np.eye(d_state), what="orthonormal columns (V⁻¹ = Vᴴ on the range)")
    assert_close(V[:b, :kept], V_b[:, :kept], what="first block")
    if conj_sym:
        assert np.all(Lambda.imag <= 0), "conj_sym keeps the negative-imaginary half"


def test_truncated_normal_constant_and_bounds():
    assert_close(TRUNCATED_NORMAL_STD, truncnorm(-2, 2).std(), what="std of N(0,1) truncated to ±2")
    z = truncated_normal(np.random.default_rng(0), (400, 50), 0.25)
    assert np.abs(z).max() <= 2 * 0.5 / TRUNCATED_NORMAL_STD


# ----------------------------------------------------------------------------- LRU
@given(ring=lru_rings(), N=st.integers(1, 64), seed=seeds)
def test_lru_ring_and_normaliser(ring, N, seed):
    layer = LRU(2, N, seed=seed, **ring)
    p = layer.params
    modulus, phase = np.exp(-np.exp(p["nu_log"])), np.exp(p["theta_log"])
    assert all(np.isfinite(v).all() for v in p.values())
    inside = (modulus >= ring["r_min"] * (1 - RTOL)) & (modulus <= ring["r_max"] * (1 + RTOL))
    assert np.all(inside), "|λ| in [r_min, r_max]"
    assert np.all((phase >= 0) & (phase < ring["max_phase"])), "arg λ in [0, max_phase)"
    assert_close(np.exp(2 * p["gamma_log"]), 1 - modulus ** 2, what="γ² = 1 − |λ|²")


@given(seed=seeds, H=st.integers(1, 4), N=st.integers(1, 6))
@settings(max_examples=examples(10))
def test_lru_stationary_state_variance_is_B_norm(seed, H, N):
    """White unit input: E|x_n|² = Σ_l |γ λ^l|² Σ_h |B_nh|² = Σ_h |B_nh|² (the γ normaliser's purpose)."""
    layer = LRU(H, N, r_max=0.9, seed=seed)
    state, energy = layer.init_state(H), np.zeros(N)
    impulse = np.eye(H)                                                       # one input channel per batch row
    for _ in range(400):                                                      # 0.81^400: truncation below 1e-36
        _, state = layer.step(impulse, state)
        energy += (np.abs(state) ** 2).sum(axis=0)
        impulse = np.zeros((H, H))
    B_norm = (layer.params["B_re"] ** 2 + layer.params["B_im"] ** 2).sum(axis=1)
    assert_close(energy, B_norm, what="stationary E|x|² = |B|²")


# ----------------------------------------------------------------------------- S5 conjugate symmetry
def full_system_params(half):
    """Explicit full S5 params (2N states, κ = 1) from a conj_sym layer: each state and its conjugate."""
    p = half.params
    return {"Lambda_re": np.tile(p["Lambda_re"], 2), "Lambda_im": np.concatenate([p["Lambda_im"], -p["Lambda_im"]]),
            "B_re": np.tile(p["B_re"], (2, 1)), "B_im": np.concatenate([p["B_im"], -p["B_im"]]),
            "C_re": np.tile(p["C_re"], (1, 2)), "C_im": np.concatenate([p["C_im"], -p["C_im"]], axis=1),
            "D": p["D"], "log_dt": np.tile(p["log_dt"], 2)}


@given(data=st.data())
def test_s5_conj_sym_half_system_equals_full_system(data):
    config = dict(data.draw(layer_config("S5").configs(), label="config"), conj_sym=True)
    half = S5(**config)
    full_config = dict(config, d_state=2 * config["d_state"], conj_sym=False, blocks=1)
    full = S5.from_params(full_config, full_system_params(half))
    assert (half.kappa, full.kappa) == (2, 1)
    rng = rng_from(data.draw(seeds, label="data seed"))
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(sequence_lengths(60), label="L")
    x = rng.normal(size=(batch, L, config["d_model"]))
    tau = timesteps(rng, batch, L) if data.draw(st.booleans(), label="events") else None
    assert_close(half(x, integration_timesteps=tau), full(x, integration_timesteps=tau), what="κ=2 half == full")
    assert_close(half.kernel(L), full.kernel(L), what="kernels")


# ----------------------------------------------------------------------------- S4D inits
@given(N=st.integers(1, 16))
def test_s4d_init_formulas(N):
    n = np.arange(N)
    Lambda, B = s4d_diagonal("lin", N)
    assert_close(Lambda, -0.5 + 1j * np.pi * n, what="S4D-Lin")
    Lambda, B = s4d_diagonal("inv", N)
    assert_close(Lambda, -0.5 + 1j * (2 * N / np.pi) * (2 * N / (2 * n + 1) - 1), what="S4D-Inv")
    Lambda, B = s4d_diagonal("real", N)
    assert_close(Lambda, -(n + 1.0) + 0j, what="S4D-Real")
    Lambda, B = s4d_diagonal("legs", N)
    Lambda_full, V = hippo_n_diagonalization(2 * N)
    assert_close(Lambda, Lambda_full[:N], what="S4D-LegS = negative-imaginary half of HiPPO-N(2N)")
    assert np.all(Lambda.imag < 0) and np.all(np.abs(B.imag) <= 2)
    assert_close(B.real, (V[:, :N].conj().T @ hippo_legs(2 * N)[1]).real, what="Re B = Re V⁻¹B_hippo")


@given(data=st.data())
def test_s4d_params_assemble_the_init(data):
    config = data.draw(layer_config("S4D").configs(), label="config")
    layer = S4D(**config)
    Lambda, _ = s4d_diagonal(config["init"], config["d_state"])
    p = layer.params
    assert_close(-np.exp(p["log_A_re"]) + 1j * p["A_im"], np.tile(Lambda, (config["d_model"], 1)),
                 what="λ = −exp(log_A_re) + i A_im per channel")


# ----------------------------------------------------------------------------- dt ranges and stability
# S6 stores its step as dt_proj.bias = softplus⁻¹(max(Δ, dt_init_floor)) (upstream name, no log_dt):
# reference_tests/test_s6.py checks its range.
# the layers that store their step as log_dt; S6, S7 and the gated delta layers keep Δ = softplus(dt bias),
# whose range is tested with each of them
def _stores_log_dt(name):
    arguments = inspect.signature(REGISTRY[name]).parameters
    if "dt_min" not in arguments or "d_state" not in arguments:
        return False
    return "log_dt" in REGISTRY[name](d_model=4, d_state=4, seed=0).params


DT_LAYERS = [n for n in LAYERS if _stores_log_dt(n)]


@pytest.mark.parametrize("name", DT_LAYERS)
@given(data=st.data())
def test_log_dt_within_range(name, data):
    dt_min = data.draw(st.floats(1e-5, 1.0), label="dt_min")
    dt_max = data.draw(st.one_of(st.just(dt_min), st.floats(dt_min, 10.0)), label="dt_max")
    layer = REGISTRY[name](**dict(data.draw(layer_config(name).configs()), dt_min=dt_min, dt_max=dt_max))
    dt = np.exp(layer.params["log_dt"])
    assert np.all((dt >= dt_min * (1 - RTOL)) & (dt <= dt_max * (1 + RTOL))), f"Δ in [{dt_min}, {dt_max}]"


def perturb(layer, rng, scale=2.0):
    """Every parameter plus N(0, scale²) noise, in place."""
    for key, value in layer.params.items():
        layer.params[key] = value + scale * rng.normal(size=value.shape)
    return layer


# Parameterisations that guarantee |Ā| < 1 for every parameter value (with these constructor overrides).
STABLE = {"LRU": {}, "S4D": {}, "S5": {"clip_eigs": True}}


@pytest.mark.parametrize("name", sorted(STABLE))
@given(data=st.data())
def test_state_decays_at_init_and_after_perturbation(name, data):
    """Zero input from a state s: |Ā^L s| < |s| elementwise, at init and for perturbed parameters."""
    layer = REGISTRY[name](**dict(data.draw(layer_config(name).configs(), label="config"), **STABLE[name]))
    rng = rng_from(data.draw(seeds, label="data seed"))
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(st.integers(1, 8), label="L")
    tau = 1 + timesteps(rng, batch, L, zero_fraction=0.0) if data.draw(st.booleans(), label="events") else None
    for stage in ("init", "perturbed"):
        s = layer.init_state(batch) + rng.normal(size=layer.init_state(batch).shape) + 1j
        _, decayed = layer(np.zeros((batch, L, layer.d_model)), integration_timesteps=tau, initial_state=s,
                           return_state=True)
        assert np.all(np.abs(decayed) < np.abs(s)), f"{name} |Ā| < 1 ({stage})"
        perturb(layer, rng)


@given(method=st.sampled_from(CONTINUOUS_METHODS), seed=seeds)
def test_s5_clip_eigs_clamps_the_real_part(method, seed):
    layer = perturb(S5(2, 4, discretization=method, clip_eigs=True, seed=seed), rng_from(seed))
    layer.params["Lambda_re"] = np.abs(layer.params["Lambda_re"])             # an unstable Λ in the parameters
    Lambda_bar, *_ = layer.discrete_system()
    clamped = np.minimum(layer.params["Lambda_re"], -1e-4) + 1j * layer.params["Lambda_im"]   # Re Λ <= −1e-4
    dt = layer.config["step_rescale"] * np.exp(layer.params["log_dt"])
    np.testing.assert_array_equal(Lambda_bar, discretize(clamped, dt, method)[0])
    assert np.all(np.abs(Lambda_bar) < 1)


# ----------------------------------------------------------------------------- seeds and exchange
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_same_seed_same_params(name, data):
    config = data.draw(layer_config(name).configs(), label="config")
    first, second = REGISTRY[name](**config), REGISTRY[name](**config)
    assert first.params.keys() == second.params.keys()
    assert all(np.array_equal(first.params[k], second.params[k]) for k in first.params)
    assert all(v.dtype == np.float64 and np.isfinite(v).all() for v in first.params.values()), "real float64"


@pytest.mark.parametrize("name", ["LRU", "S5", "S4D"])
@settings(max_examples=examples(5))
@given(data=st.data())
def test_other_seed_other_params(name, data):
    config = data.draw(layer_config(name).configs(), label="config")
    first, other = REGISTRY[name](**config), REGISTRY[name](**dict(config, seed=config["seed"] + 1))
    assert any(not np.array_equal(first.params[k], other.params[k]) for k in first.params), "the seed is used"


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(10))
@given(data=st.data())
def test_from_params_round_trip_and_mismatch_errors(name, data):
    config = data.draw(layer_config(name).configs(), label="config")
    layer = perturb(REGISTRY[name](**config), rng_from(config["seed"]), scale=0.1)
    x = rng_from(config["seed"]).normal(size=(2, 7, config["d_model"]))
    rebuilt = REGISTRY[name].from_params(layer.config, layer.params)
    assert_close(rebuilt(x), layer(x), what=f"{name} from_params")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "layer.npz")
        layer.save(path)
        assert_close(REGISTRY[name].load(path)(x), layer(x), what=f"{name} save/load")
    key = sorted(layer.params)[data.draw(st.integers(0, len(layer.params) - 1), label="parameter")]
    missing = {k: v for k, v in layer.params.items() if k != key}
    with pytest.raises(ValueError, match=key):
        REGISTRY[name].from_params(layer.config, missing)
    reshaped = dict(layer.params, **{key: np.zeros(layer.params[key].shape + (2,))})
    with pytest.raises(ValueError, match=key):
        REGISTRY[name].from_params(layer.config, reshaped)


# ----------------------------------------------------------------------------- validation names the rule
@pytest.mark.parametrize("make, match", [
    (lambda: S5(2, 3, blocks=2), "blocks must divide"),
    (lambda: S5(2, 3, conj_sym=True, blocks=2), "must be even"),
    (lambda: S5(2, 4, C_init="xavier"), "trunc_standard_normal, lecun_normal, complex_normal"),
    (lambda: S5(2, 4, discretization="none"), "zoh, bilinear"),
    (lambda: S5(2, 4, dt_min=0.2, dt_max=0.1), "dt_min must be <= dt_max"),
    (lambda: S5(2, 4, step_rescale=0.0), "step_rescale"),
    (lambda: S4D(2, 4, init="hippo"), "legs, lin, inv, real"),
    (lambda: S4D(2, 4, discretization="euler"), "discretization must be one of"),
    (lambda: LRU(2, 4, r_min=0.9, r_max=0.5), "r_min"),
    (lambda: LRU(2, 4, r_max=1.5), "r_max"),
    (lambda: LRU(2, 4, max_phase=0.0), "max_phase"),
    (lambda: LRU(2, 0), "d_state"),
])
def test_invalid_arguments_raise_naming_the_rule(make, match):
    with pytest.raises(ValueError, match=match):
        make()
