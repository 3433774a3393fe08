"""The one tolerance table (SPEC §8) and the one function that applies it. Test bodies never contain numbers
of their own.

    allowed |actual − expected| = rtol·|expected| + atol·scale,

scale = max|expected| for the float32 row (SPEC §8: "atol 1e-5 scaled by max|y|", no floor at 1: an output of
size 1e-3 is held to 1e-8 absolute, as its float32 rounding allows), scale = 1 for every other row.
"""
import numpy as np

TOLERANCES = {
    # float64 parity: exact algorithms, reordered sums only.
    "float64": {"rtol": 1e-9, "atol": 1e-10},
    # float32 backend vs float64 reference: atol is scaled by max|expected| (SPEC §8).
    "float32": {"rtol": 1e-4, "atol": 1e-5},
    # Backend autograd against central finite differences of the float64 reference (step FD_STEP).
    "finite_difference": {"rtol": 1e-5, "atol": 1e-7},
    # Golden vectors of the official implementations (float64; SPEC selective layers): atol scaled by max(1, max|y|).
    "golden": {"rtol": 1e-9, "atol": 1e-10},
}
SCALED_ROWS = ("float32",)
FLOORED_ROWS = ("golden",)        # atol scaled by max(1, max|expected|)

# Finite-difference gradient checks (central differences of a float64 forward, step FD_STEP).
FD_STEP = 1e-6
FD_TOLERANCE = TOLERANCES["finite_difference"]

# Accuracy of φ1 against a 50-digit mpmath value, relative, per precision of the implementation checked
# (float32: a few ulps of 2^-24; float64: a few ulps of 2^-53).
PHI1_RTOL = 1e-14
PHI1_RTOL_BY_DTYPE = {"float64": PHI1_RTOL, "float32": 1e-6}

# Accuracy of the fused selective kernel's vectorised exponential (reference.kernels.selective.fast_exp) against
# np.exp in float64, relative: 2 ulps of its precision (measured: 1.0 ulp float64, 0.6 ulp float32).
FAST_EXP_RTOL_BY_DTYPE = {"float64": 2 * 2.0 ** -52, "float32": 2 * 2.0 ** -23}


def row_name(dtype):
    """The table row for a dtype given as a row name, numpy dtype or torch dtype."""
    name = str(dtype).replace("torch.", "")
    return {"complex128": "float64", "complex64": "float32"}.get(name, name)


def tolerance(dtype):
    """The table row for a dtype given as a string, numpy dtype or torch dtype."""
    return TOLERANCES[row_name(dtype)]


def allowed_error(expected, dtype="float64", propagated=None):
    """The allowed |actual − expected| per element of `expected` under the table row of `dtype` (SPEC §8).

    propagated (scaled rows only): an array broadcastable to `expected`, the bound carried to each element by a
    read-out the layer applies after its state path (e.g. the matrix-state layers' per-head RMSNorm, see
    strategies.rms_norm_readout_bound): the row's atol then scales with max(max|expected|, propagated), so the
    §8 bound holds where the state path is computed and is carried through the read-out's Jacobian."""
    expected = np.abs(np.asarray(expected))
    tol = tolerance(dtype)
    scale = 1.0
    if row_name(dtype) in SCALED_ROWS:
        # max|y| exactly; the smallest normal float32 only keeps an all-zero reference from dividing by zero
        scale = max(float(np.max(expected)) if expected.size else 0.0, float(np.finfo(np.float32).tiny))
        if propagated is not None:
            scale = np.maximum(scale, propagated)
    elif row_name(dtype) in FLOORED_ROWS:
        scale = max(float(np.max(expected)) if expected.size else 0.0, 1.0)
    return tol["atol"] * scale + tol["rtol"] * expected


def within_tolerance(error, expected_max, dtype="float64"):
    """True when a (worst) absolute error is allowed for a reference whose largest magnitude is expected_max."""
    return bool(error <= allowed_error(np.array([expected_max]), dtype)[0])


def assert_close(actual, expected, dtype="float64", what="value"):
    """|actual − expected| <= allowed_error(expected, dtype) everywhere, else an AssertionError naming `what`.
    A tuple `expected` (a state made of several arrays) is compared element by element."""
    if isinstance(expected, tuple):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            raise AssertionError(f"{what}: expected a tuple of {len(expected)} arrays, got {type(actual).__name__}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            assert_close(a, e, dtype, what=f"{what}[{i}]")
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {actual.shape} != expected {expected.shape}")
    error = np.abs(actual - expected)
    allowed = allowed_error(expected, dtype)
    bad = ~(error <= allowed) & ~(np.isnan(actual) & np.isnan(expected)) & ~(actual == expected)
    if bad.any():
        index = tuple(int(i) for i in np.unravel_index(np.argmax(np.where(bad, error - allowed, -np.inf)), bad.shape))
        raise AssertionError(f"{what}: {actual[index]!r} != expected {expected[index]!r} at {index} "
                             f"(|error| {error[index]:.3g} > allowed {allowed[index]:.3g}, row {row_name(dtype)}); "
                             f"{int(bad.sum())} of {bad.size} elements out of tolerance")
