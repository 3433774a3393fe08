"""The implementation under test, seen through a small API, and the parity report.

A backend is any importable module (or an adapter module that maps names onto one) exposing:

    asarray(array, dtype, device)      numpy array -> native array; dtype "float32" | "float64"
                                       (complex inputs become complex64 | complex128; integers stay integers)
    to_numpy(x)                        native array (or tuple of them) -> numpy
    device_available(device)           True when "cpu" / "cuda" can run here
    discretize(Lambda, dt, method, tau=None)           SPEC §2
    scan(a, b, h0=None, *, method=None)                SPEC §3, time axis 1
    vjp(fn, inputs, cotangent)         gradients of <fn(*inputs), cotangent> w.r.t. every input
    parameter_vjp(module, call, cotangent)   {parameter name: gradient of <call(module), cotangent>}
    from_reference(obj)                reference layer / Classifier -> native module with parameters
                                       moved over; called like the reference (x, lengths, τ, ...)
    cast(module, dtype, device)        the module converted to a dtype and device
    pool(x, lengths, integration_timesteps, *, mode, stride), final_pool(x, lengths, *, mode)   SPEC §5

A name the backend does not provide skips the properties that need it; the terminal summary lists
them. `torch_backend.testing` is the adapter for this project's torch backend.
"""
import importlib
from collections import defaultdict

import numpy as np
import pytest

from parity_tests.tolerances import tolerance

API = ("asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp", "from_reference", "cast",
       "pool", "final_pool")


class Backend:
    def __init__(self, name, device):
        module = importlib.import_module(name)
        try:                                                        # a package may keep its adapter in .testing
            adapter = importlib.import_module(f"{name}.testing")
        except ModuleNotFoundError as error:
            if error.name != f"{name}.testing":
                raise
            adapter = None
        self.name, self.device = name, device
        self.api = {n: getattr(adapter, n, None) or getattr(module, n, None) for n in API}
        self.module = module

    def has(self, *names):
        return all(self.api.get(n) is not None for n in names)

    def require(self, *names):
        """Skip the calling test (and count it in the report) unless every name is provided."""
        missing = [n for n in names if self.api.get(n) is None]
        for n in missing:
            REPORT.missing[n] += 1
        if missing:
            pytest.skip(f"backend {self.name} does not provide {', '.join(missing)}")
        return [self.api[n] for n in names]

    def __getattr__(self, name):
        if name in API:
            return self.require(name)[0]
        raise AttributeError(name)

    def to(self, array, dtype):
        """numpy -> native on this backend's device; None passes through."""
        return None if array is None else self.api["asarray"](np.asarray(array), dtype, self.device)


_CURRENT = {}


def configure(name, device):
    _CURRENT.update(name=name, device=device, backend=None)


def current():
    if _CURRENT.get("backend") is None:
        backend = Backend(_CURRENT.get("name", "torch_backend"), _CURRENT.get("device", "cpu"))
        _CURRENT["backend"] = backend
    backend = _CURRENT["backend"]
    if backend.has("device_available") and not backend.api["device_available"](backend.device):
        pytest.skip(f"device {backend.device} is not available here")
    return backend


# ----------------------------------------------------------------------------- the parity report
class Report:
    """Worst error / tolerance per (subject, property, dtype); <= 1 passes."""

    def __init__(self):
        self.worst = {}
        self.missing = defaultdict(int)

    def record(self, subject, prop, dtype, ratio, abs_error):
        key = (subject, prop, dtype)
        previous = self.worst.get(key, (0.0, 0.0))
        self.worst[key] = (max(previous[0], ratio), max(previous[1], abs_error))

    def table(self):
        if not self.worst:
            return ["(no parity comparison ran)"]
        rows = [("subject", "property", "dtype", "worst err/tol", "worst |err|", "")]
        for (subject, prop, dtype), (ratio, error) in sorted(self.worst.items()):
            rows.append((subject, prop, dtype, f"{ratio:.3g}", f"{error:.3g}", "ok" if ratio <= 1 else "FAIL"))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]


REPORT = Report()


def check(actual, expected, *, dtype, subject, prop, row=None):
    """Compare a backend result with the reference under the table tolerance for `dtype`, record the
    worst error in the report, and fail with a readable message naming subject, property and dtype.
    `row` picks another row of the tolerance table (e.g. "finite_difference") than the dtype's."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{subject} / {prop} / {dtype}: shape {actual.shape} != reference {expected.shape}")
    tol = tolerance(row or dtype)
    scale = max(1.0, float(np.max(np.abs(expected)))) if (row or dtype) == "float32" and expected.size else 1.0
    allowed = tol["atol"] * scale + tol["rtol"] * np.abs(expected)
    error = np.abs(actual - expected)
    finite = np.isfinite(actual) | ~np.isfinite(expected)
    ratio = float(np.max(error / allowed)) if expected.size else 0.0
    if not finite.all():
        ratio = np.inf
    REPORT.record(subject, prop, dtype, ratio, float(np.max(error)) if expected.size else 0.0)
    if not ratio <= 1:
        index = np.unravel_index(np.argmax(np.where(finite, error / allowed, np.inf)), error.shape)
        raise AssertionError(
            f"{subject} / {prop} / {dtype}: backend differs from the reference by {error[index]:.3g} at index "
            f"{tuple(int(i) for i in index)} (backend {actual[index]!r}, reference {expected[index]!r}); "
            f"tolerance rtol={tol['rtol']}, atol={tol['atol'] * scale:.3g}; worst error/tolerance = {ratio:.3g}")
