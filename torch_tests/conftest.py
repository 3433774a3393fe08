"""torch_tests: tests of torch_backend's own machinery (custom ops, compile, debug, training, weights).

Tests taking a `dtype` argument run in both precisions ("float64", "float32").
"""


def pytest_generate_tests(metafunc):
    if "dtype" in metafunc.fixturenames:
        metafunc.parametrize("dtype", ["float64", "float32"])


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def backend():
    """torch_backend seen through the conformance suite's API (parity_tests/backend.py), on the CPU."""
    from parity_tests.backend import Backend
    return Backend("torch_backend", "cpu")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """A torch class torch_backend does not have yet (the adapter's Unsupported) skips, naming it."""
    from parity_tests.backend import Unsupported
    try:
        return (yield)
    except Unsupported as why:
        pytest.skip(f"not run: {why}")
