"""The published conformance of real packages, reproduced: the shipped adapters (parity_tests/adapters/) against
the suite's properties, asserting what a user running the suite sees — which properties pass, and that each
known defect is found by the property that names it. Each adapter's tests skip cleanly when its package is not
installed (`make` installs the pinned versions with --no-deps). Self-tests of the suite: default backend only.
"""
import importlib.util

import pytest

from parity_tests import test_parity, test_parity_discretize_scan as tds
from parity_tests.backend import Backend
from parity_tests.helpers import run_property

PACKAGES = {"accelerated_scan": "accelerated_scan", "s5_pytorch": "s5", "recurrentgemma_rglru": "recurrentgemma",
            "mambapy_pscan": "mambapy"}


def adapter(name, **declarations):
    if importlib.util.find_spec(PACKAGES[name]) is None:
        pytest.skip(f"not run: {PACKAGES[name]} is not installed (make installs it)")
    backend = Backend(f"parity_tests.adapters.{name}", "cpu")
    backend.declarations.update(declarations)
    return backend


# ----------------------------------------------------------------------------- accelerated-scan 0.3.1
def test_accelerated_scan_fails_at_length_one():
    """Defect: ref.scan pads T to a power of two and splits it in halves, and T = 1 has no halves."""
    with pytest.raises(RuntimeError, match="is invalid for input of size"):
        run_property(tds.test_scan, {"problem": tds.scan_problems}, backend=adapter("accelerated_scan"),
                     dtype="float64")


# ----------------------------------------------------------------------------- mambapy 1.2.0 (mamba.py's pscan)
REAL_SCANS = tds.scan_problems.filter(lambda problem: not problem["complex_"])
COMPLEX_SCANS = tds.scan_problems.filter(lambda problem: problem["complex_"] and problem["L"] >= 2)


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_mambapy_pscan_forward_passes(precision):
    """Every length (padded to a power of two inside), real and complex, with h0 folded into the first token."""
    run_property(tds.test_scan, {"problem": tds.scan_problems}, backend=adapter("mambapy_pscan"), dtype=precision)


def test_mambapy_pscan_real_gradients_pass():
    run_property(tds.test_scan_gradients, {"problem": REAL_SCANS}, backend=adapter("mambapy_pscan"))


def test_mambapy_pscan_complex_gradient_of_a_omits_the_conjugate():
    """Defect outside mamba.py's own use (its A is real): PScan.backward returns ∂a_t = λ_t h_{t−1}, where
    the adjoint of a complex product needs λ_t conj(h_{t−1}) (as torch's own autograd gives)."""
    with pytest.raises(AssertionError, match=r"scan / grad a / float64"):
        run_property(tds.test_scan_gradients, {"problem": COMPLEX_SCANS}, backend=adapter("mambapy_pscan"))


# ----------------------------------------------------------------------------- s5-pytorch 0.2.1
def test_s5_pytorch_float32_forward_passes():
    run_property(test_parity.test_forward, backend=adapter("s5_pytorch"), dtype="float32", name="S5")


def test_s5_pytorch_rounds_b_to_complex64_in_float64():
    """Defect: as_complex(B) casts to complex64 whatever the parameters' precision."""
    with pytest.raises(AssertionError, match=r"S5 / forward / float64"):
        run_property(test_parity.test_forward, backend=adapter("s5_pytorch"), dtype="float64", name="S5")


def test_s5_pytorch_zoh_loses_digits_at_small_steps_in_float32():
    """Defect: B̄ = (Λ̄ − 1)/Λ · B̃ cancels at |λΔ| ≈ 1e-5 (and is NaN at λ = 0)."""
    with pytest.raises(AssertionError, match=r"S5 / float32 slow modes / float32 \[discretization=zoh"):
        run_property(test_parity.test_float32_with_slow_modes, backend=adapter("s5_pytorch"), name="S5")


def test_s5_pytorch_initial_state_raises_attribute_error():
    """Defect: S5.initial_state reads S5SSM.C_tilde, which does not exist."""
    with pytest.raises(AttributeError, match="C_tilde"):
        run_property(test_parity.test_step_by_step, backend=adapter("s5_pytorch"), dtype="float32", name="S5")


# ----------------------------------------------------------------------------- recurrentgemma 1.0.1 (RG-LRU, torch)
def test_recurrentgemma_rglru_passes_under_its_declared_float32_accumulator():
    run_property(test_parity.test_forward, backend=adapter("recurrentgemma_rglru"), dtype="float64", name="RGLRU")
    run_property(test_parity.test_gradients_match_reference_finite_differences,
                 backend=adapter("recurrentgemma_rglru"), name="RGLRU")


def test_recurrentgemma_rglru_accumulates_in_float32_even_in_float64():
    """Convention, declared by the adapter: without the declaration its float64 output fails the float64 row."""
    with pytest.raises(AssertionError, match=r"RGLRU / forward / float64"):
        run_property(test_parity.test_forward, backend=adapter("recurrentgemma_rglru", accumulator=None),
                     dtype="float64", name="RGLRU")
