"""A deliberately wrong adapter: torch_backend whose S5 and S4D silently compute "bilinear" as "zoh" (a layer that
skips one discretisation instead of declaring it unsupported).

    pytest parity_tests --backend parity_tests.examples.skipped_discretization -k "test_forward and S5"

must FAIL, naming the discretisation. The honest alternative is a declaration,
`DECLARATIONS = {"discretizations": ("zoh", "exp_euler", "async", "dirac")}`: then the suite rejects the bilinear
examples with that reason and reports them, instead of failing. parity_tests/test_examples.py runs both.
"""
from torch_backend.testing import (asarray, cast, device_available, discretize, final_pool, parameter_vjp, pool, scan,
                                   to_numpy, vjp)
from torch_backend.testing import from_reference as correct_from_reference

__all__ = ["asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp", "from_reference",
           "cast", "pool", "final_pool"]
SKIPPED, USED_INSTEAD = "bilinear", "zoh"


def from_reference(obj):
    """The torch twin, except that S5 / S4D with discretization="bilinear" get "zoh" (the defect)."""
    if type(obj).__name__ in ("S5", "S4D") and obj.config.get("discretization") == SKIPPED:
        obj = type(obj).from_params({**obj.config, "discretization": USED_INSTEAD}, obj.params)
    return correct_from_reference(obj)
