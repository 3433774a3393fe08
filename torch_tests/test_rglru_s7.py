"""Torch-only checks of RG-LRU and S7 (SPEC §4.9, §4.10): the bounded square-root derivative of the RG-LRU
normaliser (upstream SqrtBoundDerivative), finite gradients as a → 1, and training-mode use (autograd through every
scan method of the selective layers).
"""
import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close
from reference.layers.rglru import RGLRU as ReferenceRGLRU
from torch_backend import RGLRU, S7
from torch_backend.layers.rglru import MAX_SQRT_GRADIENT, BoundedSqrt
from torch_backend.scan import SCAN_METHODS

GRADIENT_PARITY_MIN_GAP = 2.5e-7          # SPEC §4.9: 1 − a² above this, the clipped and true derivatives agree
NEAR_ONE_A_PARAM = -20.0                  # a = σ(20) ⇒ 1 − a² ≈ 4e-9: the clip is active


def test_bounded_sqrt_derivative_is_exact_above_the_clip_and_capped_below():
    v = torch.tensor([GRADIENT_PARITY_MIN_GAP, 1e-3, 0.5, 1.0, 1e-9, 0.0], dtype=torch.float64, requires_grad=True)
    BoundedSqrt.apply(v).sum().backward()
    exact = 0.5 / torch.sqrt(v.detach()[:4])
    assert_close(v.grad[:4].numpy(), exact.numpy(), what="d sqrt(v)/dv above the clip")
    assert (v.grad[4:] == MAX_SQRT_GRADIENT).all()
    assert_close(BoundedSqrt.apply(v).detach().numpy(), np.sqrt(v.detach().numpy()), what="forward is the sqrt")


def test_gradients_stay_finite_as_a_approaches_one():
    layer = RGLRU(4, num_heads=2, seed=0).double()
    with torch.no_grad():
        layer.a_param.fill_(NEAR_ONE_A_PARAM)
        layer.a_gate.w.zero_()
    x = torch.randn(2, 9, 4, dtype=torch.float64, requires_grad=True)
    layer(x).square().sum().backward()
    grads = [x.grad] + [p.grad for p in layer.parameters()]
    assert all(torch.isfinite(g).all() for g in grads)
    assert layer.a_param.grad.abs().max() > 0


@pytest.mark.parametrize("method", [m for m in SCAN_METHODS if m != "compiled"])
@pytest.mark.parametrize("make", [lambda: RGLRU(4, num_heads=2, seed=1), lambda: S7(4, 3, conj_sym=False, seed=2),
                                  lambda: RGLRU(4, num_heads=2, block=True, lru_width=6, seed=3)],
                         ids=["RGLRU", "S7", "RGLRU-block"])
def test_every_scan_method_differentiates_like_the_sequential_one(make, method):
    layer = make().double()
    x = torch.randn(2, 11, 4, dtype=torch.float64)
    tau = torch.rand(2, 11, dtype=torch.float64) * 2
    grads = {}
    for m in ("sequential", method):
        layer.zero_grad()
        layer(x, integration_timesteps=tau, method=m).square().sum().backward()
        grads[m] = {n: p.grad.clone() for n, p in layer.named_parameters()}
    for name in grads["sequential"]:
        assert_close(grads[method][name].numpy(), grads["sequential"][name].numpy(), what=f"grad {name} ({method})")


def test_float32_module_matches_the_float64_reference():
    reference = ReferenceRGLRU(4, num_heads=2, seed=4)
    module = RGLRU(4, num_heads=2, seed=4)                                   # same seed: same parameters
    x = np.random.default_rng(0).normal(size=(2, 30, 4))
    y = module(torch.tensor(x, dtype=torch.float32)).detach().numpy()
    assert y.dtype == np.float32
    assert_close(y, reference(x), "float32", what="float32 torch vs float64 reference")
