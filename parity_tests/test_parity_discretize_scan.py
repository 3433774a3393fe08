"""Reference == backend for discretisation (SPEC §2) and the scan (SPEC §3), through the backend API.

These are the properties an implementation's own `discretize` and `scan` must pass when it is named
with `--backend` (the layer properties in test_parity.py exercise them only through the layers):
every method of §2, with and without integration timesteps, in both precisions, against the float64
reference; the invariant "stable in, stable out" (Re λ < 0 ⇒ |Ā| < 1), which catches an inverted
bilinear rule without any reference at all; the default scan against the reference's sequential
definition for real and complex, time-invariant and time-varying coefficients with or without h0; and
the scan's gradients (backend `vjp`) against the reference's hand-written adjoint (`scan_vjp`).
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.backend import check
from parity_tests.strategies import (batch_sizes, continuous_eigenvalues, rng_from, seeds, sequence_lengths,
                                     stable_eigenvalues, timesteps)
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


def scan_inputs(rng, batch, L, complex_, time_varying, with_h0):
    """(a, b, h0): a (N,) or (b, L, N) with |a| < 1, b (b, L, N), h0 (b, N) or None; N = 3."""
    shape = (batch, L, 3) if time_varying else (3,)
    if complex_:
        a = stable_eigenvalues(rng, shape)                                              # (N,) or (b, L, N)
        b = rng.normal(size=(batch, L, 3)) + 1j * rng.normal(size=(batch, L, 3))        # (b, L, N)
        h0 = rng.normal(size=(batch, 3)) + 1j * rng.normal(size=(batch, 3))             # (b, N)
    else:
        a = rng.uniform(-0.99, 0.99, shape)
        b, h0 = rng.normal(size=(batch, L, 3)), rng.normal(size=(batch, 3))
    return a, b, (h0 if with_h0 else None)


scan_problems = st.fixed_dictionaries({
    "seed": seeds, "batch": batch_sizes, "L": sequence_lengths(130), "complex_": st.booleans(),
    "time_varying": st.booleans(), "with_h0": st.booleans()})


# ----------------------------------------------------------------------------- discretisation (SPEC §2)
@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=10)
@given(seed=seeds, batch=batch_sizes, L=sequence_lengths(20), events=st.booleans())
def test_discretize(backend, dtype, method, seed, batch, L, events):
    rng = rng_from(seed)
    Lambda = eigenvalues_for(method, rng)                                               # (N,)
    dt = np.exp(rng.uniform(np.log(1e-3), np.log(1e-1), N_STATES))                      # (N,)
    tau = timesteps(rng, batch, L) if events else None                                  # (b, L) or None
    expected = discretize(Lambda, dt, method, tau)
    actual = backend.to_numpy(backend.discretize(backend.to(Lambda, dtype), backend.to(dt, dtype), method,
                                                 backend.to(tau, dtype)))
    suffix = " with τ" if events else ""
    for got, want, name in zip(actual, expected, ("Ā", "γ̄")):
        check(np.broadcast_to(got, want.shape), want, dtype=dtype, subject=f"discretize {method}",
              prop=name + suffix)


@pytest.mark.parametrize("method", [m for m in METHODS if m != "none"])
@settings(max_examples=10)
@given(seed=seeds, log_dt=st.floats(-6, 3))
def test_discretize_stable_in_stable_out(backend, method, seed, log_dt):
    """Re λ < 0 and Δ > 0 ⇒ |Ā| < 1 for every method (an invariant; no reference involved)."""
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
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_inputs(rng, **problem)
    expected = scan(a, b, h0)                                                           # the definition
    actual = backend.to_numpy(backend.scan(backend.to(a, dtype), backend.to(b, dtype), backend.to(h0, dtype)))
    prop = ("time-varying" if problem["time_varying"] else "time-invariant") + (", h0" if h0 is not None else "")
    check(actual, expected, dtype=dtype, subject="scan", prop=prop)


@settings(max_examples=10)
@given(problem=scan_problems)
def test_scan_gradients(backend, problem):
    """Backend autograd of the default scan == the reference's hand-written adjoint (SPEC §3), in float64."""
    dtype = "float64"
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_inputs(rng, **problem)
    h = scan(a, b, h0)                                                                  # (b, L, N)
    G = rng.normal(size=h.shape) + (1j * rng.normal(size=h.shape) if np.iscomplexobj(h) else 0)
    expected = scan_vjp(a, b, h0, h, G)                                                 # (grad a, grad b, grad h0)
    scan_b, vjp = backend.require("scan", "vjp")
    inputs = [backend.to(v, dtype) for v in (a, b) + ((h0,) if h0 is not None else ())]
    actual = vjp(lambda *args: scan_b(*args), inputs, backend.to(G, dtype))
    for got, want, name in zip(actual, expected, ("grad a", "grad b", "grad h0")):
        check(backend.to_numpy(got), want, dtype=dtype, subject="scan", prop=name)
