"""The one tolerance table (SPEC §8). Test bodies never contain numbers of their own."""
import numpy as np

TOLERANCES = {
    # float64 parity: exact algorithms, reordered sums only.
    "float64": {"rtol": 1e-9, "atol": 1e-10},
    # float32 torch vs float64 reference: atol is scaled by max|expected| (SPEC §8).
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    # Backend autograd against central finite differences of the float64 reference (step FD_STEP).
    "finite_difference": {"rtol": 1e-5, "atol": 1e-7},
}

# Finite-difference gradient checks (central differences of a float64 forward, step FD_STEP).
FD_STEP = 1e-6
FD_TOLERANCE = TOLERANCES["finite_difference"]

# Accuracy of φ1 against a 50-digit mpmath value, relative.
PHI1_RTOL = 1e-14


def tolerance(dtype):
    """The table row for a dtype given as a string, numpy dtype or torch dtype."""
    name = str(dtype).replace("torch.", "")
    name = {"complex128": "float64", "complex64": "float32"}.get(name, name)
    return TOLERANCES[name]


def assert_close(actual, expected, dtype="float64", what="value"):
    """assert_allclose with the table's tolerance; atol scaled by max|expected| for float32."""
    tol = tolerance(dtype)
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = max(1.0, float(np.max(np.abs(expected)))) if expected.size and tol is TOLERANCES["float32"] else 1.0
    np.testing.assert_allclose(actual, expected, rtol=tol["rtol"], atol=tol["atol"] * scale, err_msg=what)
