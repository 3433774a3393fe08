"""Options, backend marking, honest counts and the parity report of the conformance suite.

    pytest parity_tests [--backend MODULE] [--device cpu|cuda] [--dtype float32|float64]
                        [--profile ci|thorough] [--parity-report] [--exact-errors]

Every test that takes the `backend` fixture is a *backend property* (marked `backend`); the others are the
suite's own self-tests (they run only against the default backend). Each example of a backend property either
runs or is rejected with a reason (parity_tests/backend.py: Unsupported, a missing API name, an undeclared
capability); the terminal summary reports "N properties × M examples checked against MODULE", the rejects by
reason, the adapter's declarations, and the project's self-tests on a separate line.

Profiles: "ci" (the default: derandomized, bounded, no example database) and "thorough" (five times the examples
of every property, longer sequences, larger widths); `--profile` or the environment variable LRNN_PROFILE.
The profiles are registered in the top-level conftest.py (shared by the three suites).
"""
import os
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis.errors import Unsatisfiable

from parity_tests import backend as backend_module
from parity_tests.backend import REPORT, Unsupported

DEFAULT_BACKEND = "torch_backend"
SUITE = Path(__file__).resolve().parent


def pytest_addoption(parser):
    group = parser.getgroup("lrnn-spec parity")
    group.addoption("--backend", default=DEFAULT_BACKEND,
                    help="import name of the adapter checked against the reference (default torch_backend): any "
                         "module exposing the API documented in parity_tests/backend.py")
    group.addoption("--device", default="cpu", choices=("cpu", "cuda"),
                    help="device the backend runs on; cuda properties are reported 'not run' without a GPU")
    group.addoption("--dtype", default=None, choices=("float32", "float64"),
                    help="run parity in one precision only (default: both)")
    group.addoption("--profile", default=None, choices=("ci", "thorough"),
                    help="hypothesis profile (default: $LRNN_PROFILE or ci)")
    group.addoption("--parity-report", action="store_true",
                    help="print examples run / rejected per property and the worst error / tolerance per "
                         "subject × property × dtype")
    group.addoption("--exact-errors", action="store_true",
                    help="error messages must contain the catalogue's excerpts (house style; default: the "
                         "right exception type suffices, or the adapter's exact_error_messages declaration)")


def pytest_configure(config):
    profile = config.getoption("--profile")
    if profile:
        os.environ["LRNN_PROFILE"] = profile
        settings.load_profile(profile)
    config.addinivalue_line("markers", "backend: a property of the backend under test (the conformance suite)")
    try:
        backend_module.configure(config.getoption("--backend"), config.getoption("--device"))
    except ImportError as error:
        raise pytest.UsageError(f"--backend {config.getoption('--backend')}: the adapter cannot be imported "
                                f"({type(error).__name__}: {error})") from error


def pytest_generate_tests(metafunc):
    if "dtype" in metafunc.fixturenames and Path(str(metafunc.definition.fspath)).resolve().is_relative_to(SUITE):
        chosen = metafunc.config.getoption("--dtype")
        metafunc.parametrize("dtype", [chosen] if chosen else ["float64", "float32"])


def is_backend_property(item):
    return Path(str(item.fspath)).resolve().is_relative_to(SUITE) and "backend" in getattr(item, "fixturenames", ())


def pytest_collection_modifyitems(session, config, items):
    """Mark the backend properties, count their examples, run them first; against another backend than the
    default, leave the project's self-tests of the suite out (they test the suite, not the backend)."""
    deselected = []
    for item in items:
        if is_backend_property(item):
            item.add_marker(pytest.mark.backend)
            inner = getattr(getattr(item, "obj", None), "hypothesis", None)
            if inner is not None:
                inner.inner_test = backend_module.counted(inner.inner_test)
        elif config.getoption("--backend") != DEFAULT_BACKEND and Path(str(item.fspath)).resolve().is_relative_to(SUITE):
            deselected.append(item)
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if item not in deselected]
    items.sort(key=lambda item: 0 if item.get_closest_marker("backend") else 1)   # stable: backend first


@pytest.fixture(scope="session")
def backend():
    """The implementation under test (parity_tests/backend.py documents the API it must expose)."""
    try:
        return backend_module.current()
    except Unsupported as why:
        pytest.skip(f"not run: {why}")


@pytest.fixture(scope="session")
def exact_errors(request, backend):
    """True when error messages must match the catalogue's excerpts (--exact-errors or the adapter's declaration)."""
    return request.config.getoption("--exact-errors") or bool(backend.declarations["exact_error_messages"])


def pytest_runtest_setup(item):
    """A parametrization the adapter declares it does not support (a layer, a dtype) or cannot reach (no
    from_reference) is "not run" before any example is drawn."""
    if not item.get_closest_marker("backend") or not hasattr(item, "callspec"):
        return
    params, backend = item.callspec.params, backend_module.current_or_none()
    if backend is None:
        return
    reason = None
    layer = params.get("name")
    if layer is not None and isinstance(layer, str) and layer in backend_module._layer_names():
        if not backend.has("from_reference"):
            reason = f"{backend.name} does not provide from_reference"
        elif backend.declarations["layers"] is not None and layer not in backend.declarations["layers"]:
            reason = f"layer {layer} not declared"
    dtype = params.get("dtype")
    if reason is None and dtype is not None and dtype not in backend.declarations["dtypes"]:
        reason = f"dtype {dtype} not declared"
    if reason is not None:
        REPORT.begin(item.nodeid)
        REPORT.count_rejected(reason)
        pytest.skip(f"not run: {reason}")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    if not item.get_closest_marker("backend"):
        REPORT.current = None                       # a self-test calling properties directly counts nothing
        return (yield)
    REPORT.begin(item.nodeid)
    hypothesis_test = getattr(getattr(item, "obj", None), "hypothesis", None) is not None
    try:
        result = yield
    except Unsupported as why:                      # a property without hypothesis: its one example
        REPORT.count_rejected(str(why))
        pytest.skip(f"not run: {why}")
    except Unsatisfiable:
        if REPORT.rejected[item.nodeid] and not REPORT.ran[item.nodeid]:
            pytest.skip(f"not run: every example rejected: {REPORT.reasons(item.nodeid)}")
        raise
    if not hypothesis_test:
        REPORT.count_run()
    if not REPORT.ran[item.nodeid]:
        raise AssertionError(f"{item.nodeid}: no example ran (rejected: {REPORT.reasons(item.nodeid) or 'none'})")
    return result


def pytest_runtest_logreport(report):
    if report.nodeid not in REPORT.ran:
        return
    if report.failed:
        REPORT.outcome[report.nodeid] = "FAIL"
    elif report.skipped and report.nodeid not in REPORT.outcome:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        REPORT.outcome[report.nodeid] = reason.replace("Skipped: ", "")
    elif report.when == "call" and report.passed:
        REPORT.outcome[report.nodeid] = "ok"


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    stats = terminalreporter.stats
    reports = [r for key in ("passed", "failed", "skipped", "error") for r in stats.get(key, ())
               if getattr(r, "when", "call") in ("call", "setup")]
    backend_ids = set(REPORT.ran)
    outcomes = {nodeid: REPORT.outcome.get(nodeid, "?") for nodeid in backend_ids}
    checked = [n for n, o in outcomes.items() if o == "ok"]
    failed = [n for n, o in outcomes.items() if o == "FAIL"]
    not_run = [n for n in backend_ids if n not in checked and n not in failed]
    examples = sum(REPORT.ran[n] for n in checked + failed)
    rejected = sum(sum(REPORT.rejected[n].values()) for n in backend_ids)
    name = config.getoption("--backend")
    if backend_ids:
        terminalreporter.write_sep("=", f"conformance of {name}")
        terminalreporter.write_line(
            f"{len(checked)} properties × {examples} examples checked against {name} "
            f"({len(failed)} properties failed, {len(not_run)} not run; {rejected} examples rejected)")
        reasons = {}
        for nodeid in backend_ids:
            for reason, n in REPORT.rejected[nodeid].items():
                reasons[reason] = reasons.get(reason, 0) + n
        for reason, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:15]:
            terminalreporter.write_line(f"  rejected ×{n}: {reason}")
        try:
            declared = backend_module.Backend(name, config.getoption("--device")).declaration_lines()
        except Exception as error:                  # noqa: BLE001 (the summary must not hide the results)
            declared = [f"(declarations unreadable: {error})"]
        terminalreporter.write_line("declared: " + "; ".join(declared))
    self_ids = {r.nodeid for r in reports} - backend_ids
    if self_ids:
        self_failed = {r.nodeid for r in stats.get("failed", ()) if r.nodeid in self_ids}
        self_skipped = {r.nodeid for r in stats.get("skipped", ()) if r.nodeid in self_ids}
        terminalreporter.write_line(
            f"self-tests of the project (not about {name}): {len(self_ids) - len(self_failed) - len(self_skipped)} "
            f"passed, {len(self_failed)} failed, {len(self_skipped)} skipped")
    if config.getoption("--parity-report"):
        terminalreporter.write_sep("=", "examples per backend property (run / rejected / outcome)")
        for line in REPORT.examples_table():
            terminalreporter.write_line(line)
        terminalreporter.write_sep("=", "parity report: worst error / tolerance (<= 1 passes)")
        for line in REPORT.table():
            terminalreporter.write_line(line)
