"""The suite's own negative tests: deliberately wrong adapters (parity_tests/examples/) fail, with a message that
names the problem. These are self-tests of the suite (no `backend` fixture): they run against the default
backend only, and call the properties directly with the wrong adapter as their backend (one runs the suite in a
subprocess, as a user would, and reads its summary).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import strategies as st

from parity_tests import test_parity, test_parity_discretize_scan, test_parity_pooling_classifier
from parity_tests.backend import Backend
from parity_tests.helpers import run_property
from parity_tests.strategies import pooling_inputs, seeds

ROOT = Path(__file__).resolve().parent.parent


def adapter(name, **declarations):
    """The example adapter parity_tests.examples.<name> as the suite sees it, with extra declarations."""
    backend = Backend(f"parity_tests.examples.{name}", "cpu")
    backend.declarations.update(declarations)
    return backend


run = run_property


def test_gradients_under_the_package_own_names_fail_naming_the_keys():
    with pytest.raises(AssertionError, match=r"gradient keys must be the reference's parameter names .*"
                                             r"missing \[.*'Lambda_re'.*extra \[.*'ssm\.lambda_re'"):
        run(test_parity.test_gradients_match_reference_finite_differences, backend=adapter("wrong_gradients"),
            name="S5")


def test_gradients_one_and_a_half_times_too_large_fail():
    backend = adapter("wrong_gradients")
    backend.api["parameter_vjp"] = backend.module.scaled_only
    with pytest.raises(AssertionError, match=r"S5 / grad \w+ / float64 .*backend differs from the reference"):
        run(test_parity.test_gradients_match_reference_finite_differences, backend=backend, name="S5")


def test_one_percent_off_on_small_float32_outputs_fails():
    backend = adapter("small_output_error")
    with pytest.raises(AssertionError, match=r"S5 / forward at small scale / float32 .*× max\|reference\|"):
        run(test_parity.test_forward_at_small_scale, backend=backend, dtype="float32", name="S5")
    run(test_parity.test_forward, backend=backend, dtype="float32", name="S5")     # ordinary outputs: unaffected


def test_a_layer_skipping_one_discretisation_fails_naming_it():
    with pytest.raises(AssertionError, match=r"S5 / forward / float64 \[discretization=bilinear"):
        run(test_parity.test_forward, backend=adapter("skipped_discretization"), dtype="float64", name="S5")


def test_a_declared_missing_discretisation_is_rejected_not_failed():
    honest = adapter("skipped_discretization", discretizations=("zoh", "exp_euler", "async", "dirac"))
    run(test_parity.test_forward, backend=honest, dtype="float64", name="S5")


def test_inverted_bilinear_and_first_element_stride_fail():
    broken = adapter("broken_backend")
    with pytest.raises(AssertionError, match="discretize bilinear: stable in, unstable out"):
        run(test_parity_discretize_scan.test_discretize_stable_in_stable_out,
            {"seed": seeds, "log_dt": st.floats(-6, 3)}, backend=broken, method="bilinear")
    with pytest.raises(AssertionError, match="pool stride / x' / float64"):
        run(test_parity_pooling_classifier.test_pool, {"case": pooling_inputs()}, backend=broken, dtype="float64",
            mode="stride")


def test_a_suite_run_on_the_broken_adapter_fails_and_counts_honestly():
    command = [sys.executable, "-m", "pytest", "parity_tests/test_parity_discretize_scan.py", "--backend",
               "parity_tests.examples.broken_backend", "-k", "stable_in_stable_out", "-q", "-p", "no:cacheprovider",
               "--color=no", "--tb=no"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 1, result.stdout[-3000:]
    assert "properties × " in result.stdout and "checked against parity_tests.examples.broken_backend" in result.stdout
    assert "1 properties failed" in result.stdout, result.stdout[-3000:]
