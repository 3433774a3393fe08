"""Reference == backend for discretisation (SPEC §2) and the scan (SPEC §3), through the backend API; φ1 to the
last digits against mpmath in both precisions.

These are the properties an implementation's own `discretize` and `scan` must pass when it is named
with `--backend` (the layer properties in test_parity.py exercise them only through the layers):
every method of §2, with and without integration timesteps, in both precisions, against the float64
reference; the invariant "stable in, stable out" (Re λ < 0 ⇒ |Ā| < 1), which catches an inverted
bilinear rule without any reference at all; the default scan against the reference's sequential
definition for real and complex, time-invariant and time-varying coefficients with or without h0; and
the scan's gradients (backend `vjp`) against the reference's hand-written adjoint (`scan_vjp`).
"""
import mpmath
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.strategies import (batch_sizes, continuous_eigenvalues, examples, rng_from, scan_problem, seeds,
                                     sequence_lengths, stable_eigenvalues, timesteps)
from parity_tests.tolerances import PHI1_RTOL_BY_DTYPE
from reference.discretize import METHODS, discretize
from reference.scan import scan, scan_vjp

N_STATES = 5                                                     # λ per draw: one zero (φ1's masked point)


def eigenvalues_for(method, rng):
    """(N,) complex λ: continuous with Re λ < 0 (λ_0 = 0), or a discrete Ā for `none`."""
    if method == "none":
        return stable_eigenvalues(rng, (N_STATES,))
    Lambda = continuous_eigenvalues(rng, (N_STATES,))
    Lambda[0] = 0.0
    return Lambda


scan_problems = st.fixed_dictionaries({
    "seed": seeds, "batch": batch_sizes, "L": sequence_lengths(130), "complex_": st.booleans(),
    "time_varying": st.booleans(), "with_h0": st.booleans()})


# ----------------------------------------------------------------------------- discretisation (SPEC §2)
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=examples(10))
@given(seed=seeds, batch=batch_sizes, L=sequence_lengths(20), events=st.booleans())
def test_discretize(backend, dtype, method, seed, batch, L, events):
    backend.supports("discretize", {"discretization": method}, dtype)
    rng = rng_from(seed)
    Lambda = eigenvalues_for(method, rng)                                               # (N,)
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), N_STATES))                      # (N,)
    tau = timesteps(rng, batch, L) if events else None                                  # (b, L) or None
    expected = discretize(Lambda, dt, method, tau)
    actual = backend.to_numpy(backend.discretize(backend.to(Lambda, dtype), backend.to(dt, dtype), method,
                                                 backend.to(tau, dtype)))
    suffix = " with τ" if events else ""
    for got, want, name in zip(actual, expected, ("Ā", "γ̄")):
        check(np.broadcast_to(got, want.shape), want, dtype=dtype, row=backend.row(dtype),
              subject=f"discretize {method}", prop=name + suffix)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
@settings(max_examples=examples(10))
@given(seed=seeds, log_dt=st.floats(-6, 3))
def test_discretize_stable_in_stable_out(backend, method, seed, log_dt):
    """Re λ < 0 and Δ > 0 ⇒ |Ā| < 1 for every method (an invariant; no reference involved)."""
    backend.supports("discretize", {"discretization": method}, "float64")
    Lambda = continuous_eigenvalues(rng_from(seed), (N_STATES,))                        # (N,), Re λ < 0
    dt = np.full(N_STATES, np.exp(log_dt))                                              # (N,)
    Lambda_bar, _ = backend.to_numpy(backend.discretize(backend.to(Lambda, "float64"), backend.to(dt, "float64"),
                                                        method))
    radius = np.abs(Lambda_bar)
    worst = int(np.argmax(radius))
    if not np.all(radius < 1):
        raise AssertionError(
            f"discretize {method}: stable in, unstable out — λ = {Lambda[worst]:.4g} (Re λ < 0) with Δ = "
            f"{dt[worst]:.3g} gives |Ā| = {radius[worst]:.6g} >= 1; the recurrence would grow without bound")


# ----------------------------------------------------------------------------- scan (SPEC §3)
@given(problem=scan_problems)
def test_scan(backend, dtype, problem):
    backend.supports("scan", {}, dtype)
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, N=3, **problem)
    expected = scan(a, b, h0)                                                           # the definition
    actual = backend.to_numpy(backend.scan(backend.to(a, dtype), backend.to(b, dtype), backend.to(h0, dtype)))
    prop = ("time-varying" if problem["time_varying"] else "time-invariant") + (", h0" if h0 is not None else "")
    check(actual, expected, dtype=dtype, row=backend.row(dtype), subject="scan", prop=prop,
          detail=f"L={problem['L']}, {'complex' if problem['complex_'] else 'real'}")


@settings(max_examples=examples(10))
@given(problem=scan_problems)
def test_scan_gradients(backend, problem):
    """Backend autograd of the default scan == the reference's hand-written adjoint (SPEC §3), in float64."""
    dtype = "float64"
    backend.supports("scan", {}, dtype)
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, N=3, **problem)
    h = scan(a, b, h0)                                                                  # (b, L, N)
    G = rng.normal(size=h.shape) + (1j * rng.normal(size=h.shape) if np.iscomplexobj(h) else 0)
    expected = scan_vjp(a, b, h0, h, G)                                                 # (grad a, grad b, grad h0)
    scan_b, vjp = backend.require("scan", "vjp")
    inputs = [backend.to(v, dtype) for v in (a, b) + ((h0,) if h0 is not None else ())]
    actual = vjp(lambda *args: scan_b(*args), inputs, backend.to(G, dtype))
    for got, want, name in zip(actual, expected, ("grad a", "grad b", "grad h0")):
        check(backend.to_numpy(got), want, dtype=dtype, row=backend.row(dtype), subject="scan", prop=name)


# ----------------------------------------------------------------------------- φ1 (SPEC §2, zero-order hold)
PHI1_DIRECTION = -1 + 0.5j                       # λ/|λ|: Re λ < 0 and e^z never near 1 away from z = 0


def phi1_exact(z):
    """φ1(z) = (e^z − 1)/z with 50 significant digits (mpmath); φ1(0) = 1."""
    with mpmath.workdps(50):
        z = mpmath.mpc(z.real, z.imag)
        return complex(mpmath.expm1(z) / z) if z != 0 else 1.0


@settings(max_examples=examples(10))
@given(log_z=st.floats(-12, 1))
def test_zoh_gamma_is_delta_phi1_to_the_last_digits(backend, dtype, log_z):
    """ZOH: γ̄ = Δ·φ1(λΔ) against 50-digit mpmath for |λΔ| from 1e-12 to 10, relative PHI1_RTOL_BY_DTYPE[dtype]
    (of the inputs as rounded to the dtype): a φ1 that loses digits to cancellation near 0 fails here."""
    backend.supports("discretize", {"discretization": "zoh"}, dtype)
    Lambda = np.array([PHI1_DIRECTION / abs(PHI1_DIRECTION), 2.0 * PHI1_DIRECTION])     # (N,) = (2,)
    dt = np.full(2, 10.0 ** log_z)                                                      # (N,)
    if dtype == "float32":                                                              # the values the backend sees
        Lambda, dt = Lambda.astype(np.complex64).astype(complex), dt.astype(np.float32).astype(float)
    _, gamma = backend.to_numpy(backend.discretize(backend.to(Lambda, dtype), backend.to(dt, dtype), "zoh"))
    gamma = np.broadcast_to(gamma, Lambda.shape)
    expected = np.array([d * phi1_exact(complex(np.complex64(l * d)) if dtype == "float32" else l * d)
                         for l, d in zip(Lambda, dt)])
    error = np.abs(gamma - expected) / np.abs(expected)
    assert np.all(error <= PHI1_RTOL_BY_DTYPE[dtype]), (
        f"discretize zoh / γ̄ = Δ·φ1(λΔ) / {dtype}: relative error {error.max():.3g} > {PHI1_RTOL_BY_DTYPE[dtype]} "
        f"at |λΔ| = {np.abs(Lambda * dt)[np.argmax(error)]:.3g} (backend {gamma[np.argmax(error)]!r}, "
        f"exact {expected[np.argmax(error)]!r})")
