"""SPEC §2: discretisation properties, regression values and φ1 accuracy (reference)."""
import mpmath
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.discretize import METHODS, discretize, discretize_dense, phi1, phi1_scalar
from parity_tests.strategies import batch_sizes, continuous_eigenvalues, rng_from, seeds, sequence_lengths, timesteps
from parity_tests.tolerances import PHI1_RTOL, assert_close

CONTINUOUS = [m for m in METHODS if m != "none"]

# SPEC §2 regression values at λ = −1, Δ = 0.1 (and τ = 3); the rest follow from the table's formulas.
REGRESSION = {
    ("zoh", None): (0.904837418, 0.095162582),
    ("bilinear", None): (0.904761905, 0.095238095),
    ("zoh", 3.0): (0.740818221, 0.259181779),
    ("async", 3.0): (0.740818221, 0.095162582),
    ("async", None): (0.904837418, 0.095162582),
    ("exp_euler", None): (0.904837418, 0.1),
    ("exp_euler", 3.0): (0.740818221, 0.3),
    ("dirac", None): (0.904837418, 1.0),
    ("dirac", 3.0): (0.740818221, 1.0),
    ("bilinear", 3.0): (0.739130435, 0.260869565),
}
REGRESSION_DIGITS = 1e-9


@pytest.mark.parametrize("method,tau", sorted(REGRESSION, key=str))
def test_regression_values(method, tau):
    expected_A, expected_gamma = REGRESSION[(method, tau)]
    taus = None if tau is None else np.array([[tau]])
    A, gamma = discretize(np.array([-1.0 + 0j]), 0.1, method, taus)
    np.testing.assert_allclose(A.ravel(), expected_A, atol=REGRESSION_DIGITS)
    np.testing.assert_allclose(gamma.ravel(), expected_gamma, atol=REGRESSION_DIGITS)


def test_none_is_already_discrete_and_powers_under_events():
    Lambda = np.array([0.9 * np.exp(0.3j), 0.5 + 0j, 0.0 + 0j])
    A, gamma = discretize(Lambda, 1.0, "none")
    assert_close(A, Lambda)
    assert_close(gamma, np.ones(3))
    tau = np.array([[0.0, 1.0, 2.5]])
    A_tau, _ = discretize(Lambda, 1.0, "none", tau)                              # (1, 3, 3)
    expected = np.stack([np.ones(3), Lambda, [0.9 ** 2.5 * np.exp(0.75j), 0.5 ** 2.5, 0.0]])
    assert_close(A_tau[0], expected)
    assert np.all(np.isfinite(A_tau))


@given(seed=seeds, method=st.sampled_from(CONTINUOUS))
def test_stable_in_stable_out(seed, method):
    """Re λ < 0 and Δ > 0 ⇒ |Ā| < 1 for every method (catches an inverted bilinear rule)."""
    rng = rng_from(seed)
    Lambda = continuous_eigenvalues(rng, 64)
    dt = np.exp(rng.uniform(np.log(1e-4), np.log(10.0), 64))
    A, _ = discretize(Lambda, dt, method)
    assert np.all(np.abs(A) < 1)


@given(seed=seeds, method=st.sampled_from(METHODS))
def test_conjugate_symmetry(seed, method):
    rng = rng_from(seed)
    Lambda = continuous_eigenvalues(rng, 16)
    dt = np.exp(rng.uniform(-5, 0, 16))
    A, gamma = discretize(Lambda, dt, method)
    A_conj, gamma_conj = discretize(np.conj(Lambda), dt, method)
    assert_close(A_conj, np.conj(A))
    assert_close(gamma_conj, np.conj(gamma))


@pytest.mark.parametrize("method", ["zoh", "bilinear", "exp_euler", "async"])
def test_small_step_limit(method):
    """Δ → 0 ⇒ Ā → 1 and γ̄/Δ → 1, at first order in Δ."""
    Lambda = np.array([-1.0 + 2j, -0.01 + 0j, -3.0 - 5j])
    for dt in (1e-3, 1e-5, 1e-7):
        A, gamma = discretize(Lambda, dt, method)
        assert np.all(np.abs(A - 1) <= 2 * np.abs(Lambda) * dt)
        assert np.all(np.abs(gamma / dt - 1) <= 2 * np.abs(Lambda) * dt)


def test_bilinear_minus_zoh_is_third_order():
    """(1 + z/2)/(1 − z/2) − e^z = z³/12 + O(z⁴)."""
    Lambda = np.array([-1.0 + 0j, -0.5 + 3j, -2.0 - 1j])
    for dt in (1e-2, 1e-3):
        z = Lambda * dt
        difference = discretize(Lambda, dt, "bilinear")[0] - discretize(Lambda, dt, "zoh")[0]
        np.testing.assert_allclose(difference / z ** 3, 1 / 12, rtol=2 * np.abs(z).max())


@given(seed=seeds)
def test_zoh_semigroup(seed):
    rng = rng_from(seed)
    Lambda = continuous_eigenvalues(rng, 8)
    dt1, dt2 = np.exp(rng.uniform(-4, 0, 2))
    A1, _ = discretize(Lambda, dt1, "zoh")
    A2, _ = discretize(Lambda, dt2, "zoh")
    A12, _ = discretize(Lambda, dt1 + dt2, "zoh")
    assert_close(A1 * A2, A12)


@given(seed=seeds, batch=batch_sizes, L=sequence_lengths(40), method=st.sampled_from(METHODS))
def test_timesteps_broadcast_and_rules(seed, batch, L, method):
    """With τ (b, L): shape (b, L, N); τ = 0 holds the state (Ā = 1); τ ≡ 1 equals the synchronous form;
    Δ_A = τΔ (zoh semigroup); async's input factor does not depend on τ."""
    rng = rng_from(seed)
    Lambda = continuous_eigenvalues(rng, 5) if method != "none" else 0.9 * np.exp(1j * rng.uniform(0, 6, 5))
    dt = np.exp(rng.uniform(-4, -1, 5))
    tau = timesteps(rng, batch, L)
    A, gamma = discretize(Lambda, dt, method, tau)
    assert A.shape == gamma.shape == (batch, L, 5)
    held = tau == 0
    assert_close(A[held], np.ones_like(A[held]))
    A_sync, gamma_sync = discretize(Lambda, dt, method)
    A_one, gamma_one = discretize(Lambda, dt, method, np.ones((batch, L)))
    assert_close(A_one, np.broadcast_to(A_sync, A_one.shape))
    assert_close(gamma_one, np.broadcast_to(gamma_sync, gamma_one.shape))
    if method in ("zoh", "exp_euler", "async", "dirac"):
        assert_close(A, np.exp(Lambda * dt * tau[..., None]))
    if method == "async":
        assert_close(gamma, np.broadcast_to(gamma_sync, gamma.shape))


def test_zero_eigenvalue_gives_the_step():
    """ZOH γ̄ at λ = 0 is Δ (a peer returns NaN); also λ = 1e-8 is Δ to rounding."""
    A, gamma = discretize(np.array([0.0 + 0j, 1e-8 + 0j, 0.0]), 0.1, "zoh")
    assert_close(A, [1.0, np.exp(1e-9), 1.0])
    assert_close(gamma, [0.1, 0.1 * np.expm1(1e-9) / 1e-9, 0.1])


def _phi1_exact(z):
    mpmath.mp.dps = 50
    z = mpmath.mpc(complex(z))
    return complex(mpmath.expm1(z) / z) if z != 0 else 1.0


def test_phi1_accuracy_over_300_decades():
    rng = np.random.default_rng(0)
    magnitudes = 10.0 ** rng.uniform(-300, 3, 400)
    angles = rng.uniform(np.pi / 2, 3 * np.pi / 2, 400)                           # left half-plane
    z = np.concatenate([magnitudes * np.exp(1j * angles),                        # complex
                        -magnitudes + 0j, np.minimum(magnitudes, 700.0) + 0j])   # real axis both sides
    exact = np.array([_phi1_exact(v) for v in z])
    np.testing.assert_allclose(phi1(z), exact, rtol=PHI1_RTOL)
    np.testing.assert_allclose(phi1(z.real[400:]), exact.real[400:], rtol=PHI1_RTOL)
    np.testing.assert_allclose([phi1_scalar(v) for v in z], exact, rtol=PHI1_RTOL)
    assert phi1(np.array(0.0)) == 1.0 and phi1(np.array(0j)) == 1.0 and phi1_scalar(0j) == 1.0


def test_dense_discretisation():
    """Dense zoh/bilinear equal the diagonal forms in an eigenbasis, and B̄ matches SPEC §2."""
    rng = np.random.default_rng(1)
    Lambda = -np.exp(rng.uniform(-1, 1, 4))                                       # real, distinct
    V = np.linalg.qr(rng.normal(size=(4, 4)))[0]
    A = V @ np.diag(Lambda) @ V.T
    B = rng.normal(size=4)
    for method in ("zoh", "bilinear"):
        A_bar, B_bar = discretize_dense(A, B, 0.3, method)
        A_diag, gamma = discretize(Lambda, 0.3, method)
        assert_close(A_bar, V @ np.diag(A_diag) @ V.T)
        assert_close(B_bar, V @ (gamma * (V.T @ B)))


@pytest.mark.parametrize("call,match", [
    (lambda: discretize(np.ones(2), 0.1, "euler"), "zoh, bilinear, exp_euler, async, dirac, none"),
    (lambda: discretize(np.ones(2), 0.1, "zoh", np.array([[1.0, -1.0]])), "integration_timesteps must be finite and >= 0"),
    (lambda: discretize(np.ones(2), 0.1, "zoh", np.array([[np.nan]])), "integration_timesteps must be finite"),
    (lambda: discretize(np.ones(2), 0.1, "zoh", np.array([[np.inf]])), "integration_timesteps must be finite"),
    (lambda: discretize(np.ones(2), 0.1, "zoh", np.ones(3)), r"shape \(b, L\)"),
    (lambda: discretize(np.ones(2), 0.0, "zoh"), "dt must be finite and > 0"),
    (lambda: discretize_dense(np.eye(2), np.ones(2), 0.1, "async"), "zoh, bilinear"),
    (lambda: discretize_dense(np.ones((2, 3)), np.ones(2), 0.1, "zoh"), "square"),
])
def test_errors_name_the_rule(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_type_errors():
    with pytest.raises(TypeError, match="Lambda must be numeric"):
        discretize(np.array(["a"]), 0.1, "zoh")
    with pytest.raises(TypeError, match="integration_timesteps must be a real numeric array"):
        discretize(np.ones(2), 0.1, "zoh", np.array([["x"]]))
