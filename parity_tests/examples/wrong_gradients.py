"""A deliberately wrong adapter: torch_backend whose `parameter_vjp` returns every gradient 1.5 × too large,
keyed by the package's own parameter names (lower case, under an "ssm." prefix) instead of the reference's.

    pytest parity_tests --backend parity_tests.examples.wrong_gradients -k gradients

must FAIL, naming the missing and extra gradient keys; `scaled_only` (the reference's names, gradients still
× 1.5) must fail the finite-difference comparison. parity_tests/test_examples.py runs both.
"""
from torch_backend.testing import (asarray, cast, device_available, discretize, final_pool, from_reference, pool, scan,
                                   to_numpy, vjp)
from torch_backend.testing import parameter_vjp as correct_parameter_vjp

__all__ = ["asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp", "from_reference",
           "cast", "pool", "final_pool"]
WRONG_FACTOR = 1.5


def parameter_vjp(module, call, cotangent):
    """The right gradients × 1.5, under names the reference does not use."""
    return {f"ssm.{name.lower()}": WRONG_FACTOR * grad for name, grad in correct_parameter_vjp(module, call, cotangent).items()}


def scaled_only(module, call, cotangent):
    """The right names, gradients × 1.5."""
    return {name: WRONG_FACTOR * grad for name, grad in correct_parameter_vjp(module, call, cotangent).items()}
