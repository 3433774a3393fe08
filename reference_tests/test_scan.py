"""SPEC §3: every scan method equals the definition; linearity, carry, causality; the hand-written adjoint."""
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.kernels.scan import scan_vjp_numba
from reference.scan import SCAN_METHODS, combine, scan, scan_dense, scan_reverse, scan_vjp
from parity_tests.strategies import examples, batch_sizes, rng_from, scan_problem, seeds, sequence_lengths, stable_eigenvalues
from parity_tests.tolerances import FD_STEP, FD_TOLERANCE, assert_close


def loop(a, b, h0):
    """The recurrence written out once more, independently of the library, for the definition test."""
    a = np.broadcast_to(a, b.shape)
    h, state = [], np.zeros_like(b[:, 0]) if h0 is None else h0
    for t in range(b.shape[1]):
        state = a[:, t] * state + b[:, t]
        h.append(state)
    return np.stack(h, axis=1)


problems = st.fixed_dictionaries({
    "seed": seeds, "batch": batch_sizes, "L": sequence_lengths(), "N": st.integers(1, 4),
    "complex_": st.booleans(), "time_varying": st.booleans(), "with_h0": st.booleans(),
})


@given(problem=problems)
def test_every_method_equals_the_definition(problem):
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, **problem)
    expected = loop(a, b, h0)
    for method in SCAN_METHODS:
        assert_close(scan(a, b, h0, method=method), expected, what=method)


@given(seed=seeds, L=sequence_lengths(70))
def test_chunked_equals_whole_for_every_chunk(seed, L):
    a, b, h0 = scan_problem(rng_from(seed), 2, L, 3)
    expected = scan(a, b, h0)
    for chunk in range(1, L + 3):
        assert_close(scan(a, b, h0, method="chunked", chunk=chunk), expected, what=f"chunk={chunk}")


@given(seed=seeds, L=sequence_lengths(50), method=st.sampled_from(SCAN_METHODS))
def test_trailing_state_axes_and_time_last_layout(seed, L, method):
    """b (b, L, H, N) with a (H, N) or (b, L, 1, N); and axis=-1 for time-last data."""
    rng = rng_from(seed)
    b = rng.normal(size=(2, L, 3, 4)) + 1j * rng.normal(size=(2, L, 3, 4))
    for a in (stable_eigenvalues(rng, (3, 4)), stable_eigenvalues(rng, (2, L, 1, 4))):
        expected = loop(np.broadcast_to(a, b.shape).reshape(2, L, 12), b.reshape(2, L, 12), None).reshape(b.shape)
        assert_close(scan(a, b, method=method), expected)
    a = stable_eigenvalues(rng, (2, 4, L))
    b_last = rng.normal(size=(2, 4, L))
    expected = np.moveaxis(loop(np.moveaxis(a, 2, 1), np.moveaxis(b_last, 2, 1), None), 1, 2)
    assert_close(scan(a, b_last, method=method, axis=-1), expected)


@given(seed=seeds, L=sequence_lengths(60))
def test_linearity(seed, L):
    rng = rng_from(seed)
    a, b1, h1 = scan_problem(rng, 2, L, 3)
    _, b2, h2 = scan_problem(rng, 2, L, 3)
    alpha, beta = rng.normal(size=2) + 1j * rng.normal(size=2)
    assert_close(scan(a, alpha * b1 + beta * b2, alpha * h1 + beta * h2),
                 alpha * scan(a, b1, h1) + beta * scan(a, b2, h2))


@given(seed=seeds, L=sequence_lengths(60).filter(lambda n: n >= 2), data=st.data())
def test_split_and_carry(seed, L, data):
    k = data.draw(st.integers(1, L - 1), label="k")
    a, b, h0 = scan_problem(rng_from(seed), 2, L, 3)
    first = scan(a[:, :k], b[:, :k], h0)
    second = scan(a[:, k:], b[:, k:], first[:, -1])
    assert_close(np.concatenate([first, second], axis=1), scan(a, b, h0))


@given(seed=seeds, L=sequence_lengths(60).filter(lambda n: n >= 2), data=st.data())
def test_causality(seed, L, data):
    t = data.draw(st.integers(1, L - 1), label="t")
    a, b, h0 = scan_problem(rng_from(seed), 2, L, 3)
    perturbed = b.copy()
    perturbed[:, t:] += 10.0
    np.testing.assert_array_equal(scan(a, perturbed, h0)[:, :t], scan(a, b, h0)[:, :t])


def test_underflowed_products_never_give_nan():
    """|a|^T underflows to 0 and a = 0 exactly: every method stays finite (no division, no log)."""
    b = np.ones((1, 300, 2), complex)
    for a in (np.array([1e-200, 0.0]), np.full((1, 300, 2), 1e-30 + 0j)):
        for method in SCAN_METHODS:
            h = scan(a, b, method=method, chunk=7 if method == "chunked" else None)
            assert np.all(np.isfinite(h))
            assert_close(h, loop(a, b, None))


def test_combine_is_associative_and_not_commutative():
    rng = np.random.default_rng(3)
    e1, e2, e3 = [tuple(rng.normal(size=2) + 1j * rng.normal(size=2)) for _ in range(3)]
    assert_close(combine(combine(e1, e2), e3), combine(e1, combine(e2, e3)))
    assert not np.allclose(combine(e1, e2), combine(e2, e1))
    assert_close(combine((1.0, 0.0), e1), e1)                                     # identity


@given(seed=seeds, L=sequence_lengths(30))
def test_dense_scan(seed, L):
    """Matrix transitions: equals an explicit loop, and the diagonal scan for diagonal matrices."""
    rng = rng_from(seed)
    A = rng.normal(size=(3, 3)) / 3
    b = rng.normal(size=(2, L, 3))
    h0 = rng.normal(size=(2, 3))
    expected, state = [], h0
    for t in range(L):
        state = state @ A.T + b[:, t]
        expected.append(state)
    assert_close(scan_dense(A, b, h0), np.stack(expected, 1))
    diagonal = rng.uniform(-0.9, 0.9, 3)
    assert_close(scan_dense(np.diag(diagonal), b, h0), scan(diagonal, b, h0))


@given(seed=seeds, L=sequence_lengths(20), per_step=st.booleans())
def test_dense_scan_trailing_axes_scan_independently(seed, L, per_step):
    """b (b, L, H, N) with A (H, N, N) or (b, L, H, N, N) == one (b, L, N) scan per feature h."""
    rng = rng_from(seed)
    A = rng.normal(size=((2, L) if per_step else ()) + (4, 3, 3)) / 3             # (b|·, L|·, H, N, N)
    b = rng.normal(size=(2, L, 4, 3))                                              # (b, L, H, N)
    h0 = rng.normal(size=(2, 4, 3))                                                # (b, H, N)
    per_feature = [scan_dense(A[..., h, :, :], b[:, :, h], h0[:, h]) for h in range(4)]
    assert_close(scan_dense(A, b, h0), np.stack(per_feature, axis=2))


@given(seed=seeds, L=sequence_lengths(40))
def test_reverse_scan_is_the_adjoint_recurrence(seed, L):
    a, g, _ = scan_problem(rng_from(seed), 2, L, 3)
    lam = scan_reverse(a, g)
    expected, state = np.empty_like(g), np.zeros_like(g[:, 0])
    for t in reversed(range(L)):
        state = g[:, t] + (np.conj(a[:, t + 1]) * state if t + 1 < L else 0)
        expected[:, t] = state
    assert_close(lam, expected)


def _loss(a, b, h0, G):
    """Real loss Re Σ conj(G) h, whose gradient w.r.t. h is G in torch's convention."""
    return float(np.real(np.sum(np.conj(G) * scan(a, b, h0))))


def _finite_difference(f, x):
    """∂f/∂Re x + i ∂f/∂Im x by central differences (real x: only the first term)."""
    grad = np.zeros_like(x)
    for index in np.ndindex(x.shape):
        for unit in ((1.0, 1j) if np.iscomplexobj(x) else (1.0,)):
            step = np.zeros_like(x)
            step[index] = FD_STEP * unit
            grad[index] += unit * (f(x + step) - f(x - step)) / (2 * FD_STEP)
    return grad


@settings(max_examples=examples(8))
@given(seed=seeds, L=sequence_lengths(9), complex_=st.booleans(), time_varying=st.booleans())
def test_vjp_equals_finite_differences(seed, L, complex_, time_varying):
    rng = rng_from(seed)
    a, b, h0 = scan_problem(rng, 2, L, 2, complex_=complex_, time_varying=time_varying)
    G = rng.normal(size=b.shape) + (1j * rng.normal(size=b.shape) if complex_ else 0)
    grad_a, grad_b, grad_h0 = scan_vjp(a, b, h0, scan(a, b, h0), G)
    np.testing.assert_allclose(grad_a, _finite_difference(lambda v: _loss(v, b, h0, G), a), **FD_TOLERANCE)
    np.testing.assert_allclose(grad_b, _finite_difference(lambda v: _loss(a, v, h0, G), b), **FD_TOLERANCE)
    np.testing.assert_allclose(grad_h0, _finite_difference(lambda v: _loss(a, b, v, G), h0), **FD_TOLERANCE)


@given(problem=problems, time_last=st.booleans(), batch_broadcast=st.booleans())
def test_compiled_vjp_equals_the_written_one(problem, time_last, batch_broadcast):
    """scan_vjp_numba (λ and ∂a in one pass, both memory layouts) == scan_vjp, for every broadcast of a."""
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, **problem)
    if batch_broadcast and problem["time_varying"]:
        a = a[:1]                                                                   # (1, L, N)
    G = rng.normal(size=b.shape) + (1j * rng.normal(size=b.shape) if problem["complex_"] else 0)
    h = scan(a, b, h0)
    if time_last:                                                                   # (b, L, N) views of (b, N, L) memory
        h, G = (np.moveaxis(np.ascontiguousarray(np.moveaxis(v, 1, -1)), -1, 1) for v in (h, G))
    for ours, written in zip(scan_vjp_numba(a, b, h0, h, G), scan_vjp(a, b, h0, h, G)):
        if written is None:
            assert ours is None
        else:
            assert ours.shape == written.shape and ours.dtype == written.dtype
            assert_close(ours, written)


def test_numba_disabled_gives_the_same_results():
    """NUMBA_DISABLE_JIT=1 runs the same kernel as plain Python: identical numbers."""
    code = ("import numpy as np; from reference.scan import scan; r = np.random.default_rng(0); "
            "a = r.uniform(-1, 1, (2, 37, 3)) + 1j * r.uniform(-1, 1, (2, 37, 3)); b = r.normal(size=(2, 37, 3)); "
            "np.save('/dev/stdout', scan(a, b, r.normal(size=(2, 3)), method='numba'))")
    outputs = []
    for disable in ("0", "1"):
        env = dict(os.environ, NUMBA_DISABLE_JIT=disable, PYTHONPATH=os.getcwd())
        raw = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, check=True).stdout
        outputs.append(np.frombuffer(raw[-2 * 37 * 3 * 16:], np.complex128))
    assert_close(outputs[0], outputs[1])


@pytest.mark.parametrize("call,error,match", [
    (lambda: scan(np.ones(3), np.ones((2, 0, 3))), ValueError, "L >= 1"),
    (lambda: scan(np.ones(4), np.ones((2, 5, 3))), ValueError, "does not broadcast"),
    (lambda: scan(np.ones((2, 5, 3, 1)), np.ones((2, 5, 3))), ValueError, "more axes"),
    (lambda: scan(np.ones(3), np.array([[["a"]]])), TypeError, "b must be a real or complex numeric"),
    (lambda: scan(np.ones(3), np.ones((2, 5, 3)), method="log"), ValueError, "sequential, numba"),
    (lambda: scan(np.ones(3), np.ones((2, 5, 3)), method="chunked", chunk=0), ValueError, "chunk must be"),
    (lambda: scan(np.ones(3), np.ones((2, 5, 3)), np.ones((3, 3))), ValueError, r"h0 must have shape \(2, 3\)"),
    (lambda: scan(np.ones(3), np.ones(3)), ValueError, "batch and a time axis"),
    (lambda: scan_dense(np.ones((2, 2)), np.ones((1, 4, 3))), ValueError, "A must have shape"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
