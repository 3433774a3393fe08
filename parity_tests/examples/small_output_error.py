"""A deliberately wrong adapter: torch_backend whose layers are 1 % off in float32 whenever every output is small
(max|y| < 1e-3) — an error a tolerance floored at 1 (atol 1e-5 · max(1, max|y|)) lets through, and SPEC §8's
tolerance (atol 1e-5 · max|y|) does not.

    pytest parity_tests --backend parity_tests.examples.small_output_error -k small_scale

must FAIL. parity_tests/test_examples.py runs it.
"""
import torch

from torch_backend.testing import (asarray, cast, device_available, discretize, final_pool, parameter_vjp, pool, scan,
                                   to_numpy, vjp)
from torch_backend.testing import from_reference as correct_from_reference

__all__ = ["asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp", "from_reference",
           "cast", "pool", "final_pool"]
SMALL, ERROR = 1e-3, 0.01


class OffOnSmallOutputs(torch.nn.Module):
    """Wraps a correct module; in float32, multiplies outputs by 1.01 when max|y| < 1e-3 (the defect)."""

    def __init__(self, module):
        super().__init__()
        self.inner = module

    def forward(self, x, *args, **kwargs):
        out = self.inner(x, *args, **kwargs)
        y = out[0] if isinstance(out, tuple) else out
        if y.dtype == torch.float32 and y.abs().max() < SMALL:
            y = y * (1 + ERROR)
        return (y,) + tuple(out[1:]) if isinstance(out, tuple) else y

    def init_state(self, batch):
        return self.inner.init_state(batch)

    def step(self, x_t, state, integration_timestep=None):
        return self.inner.step(x_t, state, integration_timestep)

    def kernel(self, L):
        return self.inner.kernel(L)


def from_reference(obj):
    return OffOnSmallOutputs(correct_from_reference(obj))
