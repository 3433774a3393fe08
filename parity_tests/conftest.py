"""Options, hypothesis profiles and the parity report of the suite.

    pytest parity_tests [--backend MODULE] [--device cpu|cuda] [--dtype float32|float64]
                        [--profile ci|thorough] [--parity-report]

Profiles: "ci" (the default: derandomized, bounded, no example database) and "thorough" (many more
examples, longer sequences, larger widths); `--profile` or the environment variable LRNN_PROFILE.
"""
import os

import pytest
from hypothesis import settings

from parity_tests import backend as backend_module

# The profiles "ci" and "thorough" are registered in the top-level conftest.py (shared by the three suites).


def pytest_addoption(parser):
    group = parser.getgroup("lrnn-spec parity")
    group.addoption("--backend", default="torch_backend",
                    help="import name of the implementation checked against the reference (default torch_backend); "
                         "any module exposing the API in parity_tests/backend.py, or an adapter module mapping names")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"),
                    help="device the backend runs on; cuda tests skip cleanly without a GPU")
    group.addoption("--dtype", default=None, choices=("float32", "float64"),
                    help="run parity in one precision only (default: both)")
    group.addoption("--profile", default=None, choices=("ci", "thorough"),
                    help="hypothesis profile (default: $LRNN_PROFILE or ci)")
    group.addoption("--parity-report", action="store_true",
                    help="print a table layer x property x dtype of the worst error against its tolerance")


def pytest_configure(config):
    profile = config.getoption("--profile")
    if profile:
        os.environ["LRNN_PROFILE"] = profile
        settings.load_profile(profile)
    backend_module.configure(config.getoption("--backend"), config.getoption("--device"))


def pytest_generate_tests(metafunc):
    if "dtype" in metafunc.fixturenames:
        chosen = metafunc.config.getoption("--dtype")
        metafunc.parametrize("dtype", [chosen] if chosen else ["float64", "float32"])


@pytest.fixture(scope="session")
def backend():
    """The implementation under test (see parity_tests/backend.py for the API it must expose)."""
    return backend_module.current()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    missing = backend_module.REPORT.missing
    if missing:
        terminalreporter.write_sep("-", "backend API not provided (properties skipped)")
        for name, count in sorted(missing.items()):
            terminalreporter.write_line(f"  {name}: {count} test(s) skipped")
    if config.getoption("--parity-report"):
        terminalreporter.write_sep("=", "parity report: worst error / tolerance (<= 1 passes)")
        for line in backend_module.REPORT.table():
            terminalreporter.write_line(line)
