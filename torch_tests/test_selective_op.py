"""The fused op `lrnn_spec::selective_scan` across channel blocks and in float32: forward and gradients of every
input against torch autograd of the float64 plain path (the S6 layer's sequential method), with E = EB + 5
channels (two blocks of the kernel, the second partial) and L = 2·CHUNK + 5 steps, τ with zeros, lengths, h0."""
import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close
from reference.kernels.selective import CHUNK, EB
from reference.layers.s6 import S6_METHODS
from torch_backend import S6


def outputs_and_gradients(layer, x, tau, lengths, h0, method):
    """[y, final h, ∂/∂x, ∂/∂h0, ∂/∂parameters…] of ⟨y, gy⟩ + ⟨h, gh⟩ (fixed random cotangents), float64 arrays."""
    x, h0 = x.detach().requires_grad_(), h0.detach().requires_grad_()
    y, h = layer(x, lengths, tau, initial_state=h0, return_state=True, method=method)
    gen = np.random.default_rng(11)
    loss = (y * torch.tensor(gen.normal(size=y.shape), dtype=y.dtype)).sum() + \
        (h * torch.tensor(gen.normal(size=h.shape), dtype=h.dtype)).sum()
    grads = torch.autograd.grad(loss, [x, h0] + list(layer.parameters()))
    return [a.detach().double().numpy() for a in [y, h, *grads]]


@pytest.mark.parametrize("precision", [torch.float64, torch.float32])
@pytest.mark.parametrize("method", S6_METHODS)
def test_fused_op_over_two_channel_blocks_equals_autograd_of_the_definition(method, precision):
    E, L = EB + 5, 2 * CHUNK + 5
    layer = S6(d_model=E, d_state=3, dt_rank=2, discretization=method, dt_min=0.01, dt_max=1.0, seed=5).double()
    rng = np.random.default_rng(5)
    x = torch.tensor(rng.normal(size=(2, L, E)))                                    # (b, L, E)
    tau = np.exp(rng.uniform(-2, 1, (2, L)))
    tau[rng.uniform(size=tau.shape) < 0.3] = 0.0
    tau = torch.tensor(tau)                                                         # (b, L)
    h0 = torch.tensor(rng.normal(size=(2, E, 3)))                                   # (b, E, N)
    lengths = torch.tensor([L, CHUNK + 1])
    expected = outputs_and_gradients(layer, x, tau, lengths, h0, "sequential")
    fused_layer = layer.to(precision)
    actual = outputs_and_gradients(fused_layer, x.to(precision), tau.to(precision), lengths, h0.to(precision), "fused")
    names = ["y", "final h", "x", "h0"] + [n for n, _ in layer.named_parameters()]
    row = "float64" if precision == torch.float64 else "float32"
    for name, a, b in zip(names, actual, expected):
        assert_close(a, b, dtype=row, what=f"fused vs definition: {name} ({method}, {row})")


def test_op_passes_torch_opcheck():
    """The custom op's schema, autograd registration and fake impl (shapes, including the (b, ⌈L/CHUNK⌉, N, E) chunk
    states), what torch.compile needs: torch.library.opcheck. (Its AOT check is left out: the backward formula
    calls the Numba kernel on NumPy views, which AOT tracing cannot follow.)"""
    import torch_backend.selective  # noqa: F401  (registers the op)
    rng = np.random.default_rng(0)
    b, L, E, N = 2, CHUNK + 3, EB + 2, 3
    v, dt = torch.tensor(rng.normal(size=(b, L, E))), torch.tensor(rng.uniform(0.01, 0.5, (b, L, E)))
    A, D = torch.tensor(-rng.uniform(0.5, 2, (E, N))), torch.tensor(rng.normal(size=E))
    B, C = torch.tensor(rng.normal(size=(b, L, N))), torch.tensor(rng.normal(size=(b, L, N)))
    args = [t.requires_grad_() for t in (v, dt, A, B, C, D)] + [None, None, None, "exp_euler"]
    torch.library.opcheck(torch.ops.lrnn_spec.selective_scan.default, args,
                          test_utils=("test_schema", "test_autograd_registration", "test_faketensor"))
