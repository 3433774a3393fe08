"""`reference.kernels.adjoint` — the fused adjoint of S4D's depthwise recurrence — equals its definition
`reference.backward.depthwise_scan_vjp` (float64 table):

* function level: every discretisation, without and with τ (zeros included), without and with h0, G_y zeroed
  past each row's length; the parallel kernel and its serial twin on a problem above PARALLEL_MIN_SIZE;
* layer level: S4D.vjp (which runs the fused path) equals S4D.vjp with the definition put in its place, for every
  discretisation, with τ (zeros included), lengths and h0, one-directional and bidirectional.
Every expected gradient is checked to be non-zero first, so no comparison passes on two empty answers.
"""
import numpy as np
import pytest

import reference.layers.s4d as s4d_module
from parity_tests.tolerances import assert_close
from reference.backward import depthwise_scan_vjp, mask_padding
from reference.discretize import discretize
from reference.kernels.adjoint import _depthwise_vjp_kernel, depthwise_scan_vjp_fused
from reference.kernels.launch import PARALLEL_MIN_SIZE
from reference.layers.s4d import S4D, S4D_METHODS

NAMES = ("G_Lambda_bar", "G_gamma_bar", "G_B", "G_C", "G_u", "G_h0")


def complex_normal(rng, shape):
    return rng.normal(size=shape) + 1j * rng.normal(size=shape)


def depthwise_problem(rng, method, with_tau, with_h0, batch=3, L=11, H=2, N=3):
    """(Ā, γ̄, B, C, κ, u, G_y, h0) of a random stable depthwise system; G_y zeroed past lengths (L − 4, L, 1)."""
    Lambda = -np.exp(rng.normal(size=(H, N))) + 1j * rng.normal(size=(H, N))            # (H, N)
    dt = np.exp(rng.uniform(np.log(1e-2), np.log(0.5), (H, 1)))                          # (H, 1)
    tau = None
    if with_tau:
        tau = rng.uniform(0.2, 2.0, (batch, L))                                          # (b, L)
        tau[0, 3] = tau[1, 0] = tau[-1, L - 1] = 0.0
    Lambda_bar, gamma_bar = discretize(Lambda, dt, method, tau)                          # (H, N) or (b, L, H, N)
    lengths = np.array([L - 4, L] + [1] * (batch - 2))                                   # (b,)
    u = rng.normal(size=(batch, L, H))                                                   # (b, L, H)
    grad_y = mask_padding(rng.normal(size=(batch, L, H)), lengths)                       # (b, L, H)
    h0 = complex_normal(rng, (batch, H, N)) if with_h0 else None                         # (b, H, N)
    return Lambda_bar, gamma_bar, complex_normal(rng, (H, N)), complex_normal(rng, (H, N)), 2, u, grad_y, h0


def assert_all_close(actual, expected, names=NAMES):
    for name, a, e in zip(names, actual, expected):
        if e is None:
            assert a is None, f"{name}: expected None, got {type(a).__name__}"
            continue
        assert np.max(np.abs(e)) > 0, f"{name}: the definition's gradient is zero (nothing compared)"
        assert_close(a, e, what=name)


@pytest.mark.parametrize("with_h0", [False, True], ids=["zero-state", "h0"])
@pytest.mark.parametrize("with_tau", [False, True], ids=["plain", "tau"])
@pytest.mark.parametrize("method", S4D_METHODS)
def test_fused_adjoint_equals_the_definition(method, with_tau, with_h0):
    problem = depthwise_problem(np.random.default_rng(3), method, with_tau, with_h0)
    assert_all_close(depthwise_scan_vjp_fused(*problem), depthwise_scan_vjp(*problem))


@pytest.mark.parametrize("with_tau", [False, True], ids=["plain", "tau"])
def test_parallel_kernel_and_serial_twin_equal_the_definition(with_tau, monkeypatch):
    """b·L·H = 2·512·64 = 4·PARALLEL_MIN_SIZE elements in u: the fused path launches the parallel kernel; and its
    serial twin put in its place."""
    problem = depthwise_problem(np.random.default_rng(4), "zoh", with_tau, True, batch=2, L=512, H=64, N=2)
    assert problem[5].size >= PARALLEL_MIN_SIZE
    expected = depthwise_scan_vjp(*problem)
    assert_all_close(depthwise_scan_vjp_fused(*problem), expected)
    monkeypatch.setattr(_depthwise_vjp_kernel, "parallel", _depthwise_vjp_kernel.serial)
    assert_all_close(depthwise_scan_vjp_fused(*problem), expected)


def s4d_case(method, bidirectional, with_extras, batch=3, L=9):
    rng = np.random.default_rng(11)
    layer = S4D(d_model=2, d_state=3, discretization=method, bidirectional=bidirectional, seed=7)
    for value in layer.params.values():
        value += 0.1 * rng.normal(size=value.shape)
    x, grad_y = rng.normal(size=(batch, L, 2)), rng.normal(size=(batch, L, 2))          # (b, L, H)
    if not with_extras:
        return layer, (grad_y, x), {}
    tau = rng.uniform(0.2, 2.0, (batch, L))                                              # (b, L)
    tau[0, 2] = tau[1, 0] = 0.0
    lengths = np.array([L - 3, L, 2])                                                    # (b,)
    h0 = None if bidirectional else complex_normal(rng, (batch, 2, 3))                   # (b, H, N)
    return layer, (grad_y, x, lengths, tau), {"initial_state": h0}


@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "tau-lengths-h0"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["causal", "bidirectional"])
@pytest.mark.parametrize("method", S4D_METHODS)
def test_s4d_vjp_equals_its_definition(method, bidirectional, with_extras, monkeypatch):
    layer, args, kwargs = s4d_case(method, bidirectional, with_extras)
    grad_x, grads, grad_h0 = layer.vjp(*args, **kwargs)
    monkeypatch.setattr(s4d_module, "depthwise_scan_vjp_fused", depthwise_scan_vjp)
    expected_x, expected, expected_h0 = layer.vjp(*args, **kwargs)
    assert_all_close((grad_x, grad_h0), (expected_x, expected_h0), names=("G_x", "G_h0"))
    assert list(grads) == list(expected)
    for name in expected:
        assert np.max(np.abs(expected[name])) > 0, f"{name}: the definition's gradient is zero (nothing compared)"
        assert_close(grads[name], expected[name], what=name)
