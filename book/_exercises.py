"""Self-checks for the book's exercises: the student fills in a function, `check_exercise` tests it.

Each check is a *property*, not a comparison with one stored number: hypothesis draws cases with the parity
suite's strategies (`parity_tests.strategies`), and the answer must hold on every one. Pages call
`check_exercise(key, answer)` twice: once on the student's cell (which raises NotImplementedError until it
is filled in, reported as "not attempted yet") and once on the worked solution, so the build checks that
every solution passes its own check.

Keys are "<page>.<exercise number>", e.g. "intro.2".
"""
import math

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import conftest  # noqa: F401  (registers the suites' hypothesis profiles)
from parity_tests.strategies import continuous_eigenvalues, rng_from, seeds, widths

CHECKS = {}


def exercise(key):
    """Register the check of exercise `key` (a function taking the student's answer and raising on a wrong one)."""
    def register(check):
        CHECKS[key] = check
        return check
    return register


def check_exercise(key, answer):
    """Test `answer` against the property of exercise `key`; print the verdict, raise AssertionError if wrong.

    An answer that raises NotImplementedError (the unfilled template) is reported, not failed.
    """
    if key not in CHECKS:
        raise ValueError(f"no self-check for exercise {key!r}; known: {sorted(CHECKS)}")
    try:
        CHECKS[key](answer)
    except NotImplementedError:
        print(f"exercise {key}: not attempted yet — fill in the function above and run this cell again")
        return False
    print(f"exercise {key}: correct on every case hypothesis tried")
    return True


def _property(test):
    """Run a hypothesis test with a fixed, small number of examples (fast enough for a page)."""
    return settings(max_examples=50, deadline=None, database=None, derandomize=True,
                    report_multiple_bugs=False)(test)()


@exercise("intro.2")
def _lags_below(lags_below):
    """lags_below(radius, threshold): the first lag l with radius**l < threshold (kernel |K_l| = radius**l)."""
    @given(seed=seeds)
    def test(seed):
        rng = rng_from(seed)
        radius, threshold = rng.uniform(0.5, 0.9999), 10.0 ** rng.uniform(-6, -0.5)
        lag = lags_below(radius, threshold)
        assert isinstance(lag, (int, np.integer)), f"return an integer lag, got {type(lag).__name__}"
        assert radius ** lag < threshold, f"radius {radius}: at lag {lag} the kernel is still ≥ {threshold:.1e}"
        assert radius ** (lag - 1) >= threshold, f"radius {radius}: lag {lag - 1} already drops below {threshold:.1e}"
    _property(test)


@exercise("intro.3")
def _readout_einsum(subscripts):
    """An einsum string with glossary letters for y = C x: C (H, N), states (b, L, N) -> (b, L, H)."""
    if not isinstance(subscripts, str):
        raise TypeError(f"the answer is an einsum string, got {type(subscripts).__name__}")
    assert set(subscripts) <= set("hnbl,->"), f"use the glossary letters b, l, h, n only: {subscripts!r}"

    @given(seed=seeds, batch=widths(3), L=widths(5), H=widths(4), N=widths(4))
    def test(seed, batch, L, H, N):
        rng = rng_from(seed)
        C = rng.normal(size=(H, N)) + 1j * rng.normal(size=(H, N))                 # (H, N)
        x = rng.normal(size=(batch, L, N)) + 1j * rng.normal(size=(batch, L, N))   # (b, L, N)
        np.testing.assert_allclose(np.einsum(subscripts, C, x), x @ C.T, rtol=1e-12, atol=1e-12)
    _property(test)


@exercise("discretization.1")
def _euler_largest_step(largest_step):
    """largest_step(lam): the supremum of the Δ > 0 for which forward Euler |1 + λΔ| < 1 (Re λ < 0)."""
    @given(seed=seeds)
    def test(seed):
        lam = complex(continuous_eigenvalues(rng_from(seed), ()))
        dt = largest_step(lam)
        assert dt > 0, f"λ = {lam}: a stable λ has a stable range of steps, got {dt}"
        assert abs(1 + lam * dt * (1 - 1e-6)) < 1, f"λ = {lam}: Δ just below {dt} should be stable"
        assert abs(1 + lam * dt * (1 + 1e-6)) > 1, f"λ = {lam}: Δ just above {dt} should be unstable"
    _property(test)


@exercise("lru.3")
def _shortest_period(shortest_period):
    """shortest_period(max_phase): the shortest period in steps of a rotation by at most max_phase per step."""
    @given(max_phase=st.floats(1e-3, math.pi))
    def test(max_phase):
        period = shortest_period(max_phase)
        assert math.isclose(period * max_phase, 2 * math.pi, rel_tol=1e-12), \
            f"max_phase {max_phase}: a period of {period} steps turns by {period * max_phase:.4f} rad, not 2π"
    _property(test)


@exercise("pooling.3")
def _pooled_length(pooled_length):
    """pooled_length(length, factors): the valid length after pooling by each factor in turn (ceil each time)."""
    @given(length=st.integers(1, 10_000), factors=st.lists(st.integers(1, 9), min_size=1, max_size=4))
    def test(length, factors):
        expected = -(-length // math.prod(factors))             # ⌈len / (s_1 s_2 ⋯)⌉, the claim of the exercise
        assert pooled_length(length, factors) == expected, f"len {length}, factors {factors}: expected {expected}"
    _property(test)


@exercise("multiresconv.3")
def _uniform_memory(uniform_memory_size):
    """uniform_memory_size(kernel_size, depth): coefficients read by the uniform memory, summed over the levels."""
    from reference.layers.multiresconv import uniform_memory_max

    @given(kernel_size=st.integers(2, 6), depth=st.integers(1, 10))
    def test(kernel_size, depth):
        expected = uniform_memory_max(kernel_size, depth)
        got = uniform_memory_size(kernel_size, depth)
        assert got == expected, f"k = {kernel_size}, J = {depth}: the library reads {expected}, you counted {got}"
    _property(test)


@exercise("performance.1")
def _scan_bytes(scan_bytes):
    """scan_bytes(batch, N, L, itemsize): bytes of a, b and h of a time-varying scan (each (b, L, N))."""
    @given(batch=widths(8), N=widths(64), L=widths(512), itemsize=st.sampled_from([8, 16]))
    def test(batch, N, L, itemsize):
        a = np.zeros((batch, L, N), np.complex64 if itemsize == 8 else np.complex128)   # (b, L, N)
        assert scan_bytes(batch, N, L, itemsize) == 3 * a.nbytes, "a, b and h each hold b·L·N complex numbers"
    _property(test)


@exercise("memory.1")
def _radius_for_delay(radius_for_delay):
    """radius_for_delay(delay, epsilon): the ring radius r whose horizon ln ε / ln r equals `delay` steps."""
    @given(delay=st.integers(1, 100_000), exponent=st.floats(-8, -0.5))
    def test(delay, exponent):
        epsilon = 10.0 ** exponent
        r = radius_for_delay(delay, epsilon)
        assert 0 < r < 1, f"a stable ring radius lies in (0, 1), got {r}"
        assert math.isclose(math.log(epsilon) / math.log(r), delay, rel_tol=1e-6), \
            f"delay {delay}, ε {epsilon:.1e}: radius {r} has horizon {math.log(epsilon) / math.log(r):.1f}"
    _property(test)


@exercise("centaurus.1")
def _gram_limit(gram_limit):
    """gram_limit(m, m2): the long-window inner product of two Centaurus basis functions at initialisation."""
    from reference import discretize

    dt = 1e-3
    lags = np.arange(int(40 / dt))                                              # e^{-40}: the tail is negligible

    @given(m=st.integers(0, 7), m2=st.integers(0, 7))
    def test(m, m2):
        Lambda = np.array([-0.5 + 1j * np.pi * m, -0.5 + 1j * np.pi * m2])       # (2,)
        Lambda_bar, _ = discretize(Lambda, dt, "exp_euler")                     # (2,)
        k = (Lambda_bar[None, :] ** lags[:, None]).real                         # k_m(l) / Δ, (L, 2)
        expected = dt * float(k[:, 0] @ k[:, 1])                                # Δ Σ_l k_m k_m2 / Δ²
        got = gram_limit(m, m2)
        assert abs(got - expected) < 2e-3, f"m = {m}, m' = {m2}: the sum gives {expected:.4f}, you gave {got:.4f}"
    _property(test)
