"""The implementation under test, seen through a small API; its declarations; honest counts and the parity report.

    pytest parity_tests --backend MODULE

MODULE (or MODULE.testing, where a package keeps its adapter) is an *adapter*: a module exposing some of the
names below. This docstring is the one place the protocol is written down; `torch_backend/testing.py` is the
project's own adapter and `parity_tests/adapters/` and `parity_tests/examples/` hold more.

Arrays and conversions
    asarray(array, dtype, device)   numpy -> native array; dtype "float32" | "float64" (complex inputs become
                                    complex64 | complex128; integer and boolean arrays stay integers)
    to_numpy(x)                     native array (or a tuple/list of them, or None) -> numpy
    device_available(device)        True when "cpu" / "cuda" can run here
Functions (SPEC §2, §3, §5)
    discretize(Lambda, dt, method, tau=None) -> (Lambda_bar, gamma_bar)
    scan(a, b, h0=None)             h_t = a_t h_{t-1} + b_t along axis 1 (a: (N,) or (b, L, N); b: (b, L, N))
    pool(x, lengths, integration_timesteps, *, mode, stride) -> (x', lengths', tau')
    final_pool(x, lengths, *, mode) -> (b, H)
Gradients
    vjp(fn, inputs, cotangent)      [gradient of Re<cotangent, fn(*inputs)> w.r.t. each input]: one entry per
                                    input, in order; zeros (never None) for an input the output does not use
    parameter_vjp(module, call, cotangent)
                                    {name: gradient of Re<cotangent, call(module)>}, keyed by the REFERENCE's
                                    parameter names (reference.params), one entry per trainable parameter: the
                                    keys must equal the reference's names minus its `frozen` ones and minus the
                                    declared `buffers` (a missing or extra key fails the property, naming it)
Layers
    from_reference(obj)             reference layer / Classifier -> native module with the same parameters
                                    (in float64). The module must offer
                                      module(x, lengths=None, integration_timesteps=None, *, initial_state=None,
                                             return_state=False, check_finite=True, method=None)
                                          -> y (b, L, H), or (y, final state) with return_state=True
                                      module.init_state(batch) -> the zero state (the reference's shape, or the
                                          declared `state_layout`)
                                      module.step(x_t, state, integration_timestep=None) -> (y_t, state)
                                      module.kernel(L) (time-invariant layers only) -> the reference's kernel
                                    and raise the reference's exception type (ValueError / TypeError) on bad input,
                                    before computing anything.
    cast(module, dtype, device)     the module converted to "float32" | "float64" and a device; complex
                                    parameters go to complex64 | complex128 (never to a real dtype)
Declarations (optional)
    DECLARATIONS = {...}            what the adapter provides and which conventions it follows (defaults in
                                    `DEFAULT_DECLARATIONS` below); printed in the terminal summary next to
                                    the results. An example that needs something not declared is rejected
                                    with the reason, counted, never failed and never silently passed.
    supports(subject, config)       optional hook: None when the adapter supports `subject` ("S5", "scan",
                                    "pool", ...) with constructor `config` (a dict), else a string reason.
    Unsupported(reason)             an adapter may also raise `parity_tests.backend.Unsupported` from any call.

A name the adapter does not provide, an undeclared capability or an `Unsupported` rejects that example (hypothesis
`reject`), counted per property and reason. A property none of whose examples ran is reported "not run: <reasons>"
(a skip), never "ok"; the terminal summary says "N properties × M examples checked against MODULE".
"""
import functools
import importlib
from collections import Counter, defaultdict

import numpy as np

from parity_tests.tolerances import SCALED_ROWS, allowed_error, row_name, tolerance

API = ("asarray", "to_numpy", "device_available", "discretize", "scan", "vjp", "parameter_vjp", "from_reference", "cast",
       "pool", "final_pool", "supports")

DEFAULT_DECLARATIONS = {
    "layers": None,                      # layer names from_reference supports (None: every registry layer)
    "methods": None,                     # {layer: (method, ...)} accepted as `method=` (None: the reference's)
    "discretizations": None,             # SPEC §2 methods supported by layers and `discretize` (None: all)
    "dtypes": ("float64", "float32"),    # precisions the adapter computes in
    "accumulator": None,                 # "float32": accumulates in float32 whatever the input precision, so its
                                         # float64 results are held to the float32 row of the tolerance table
    "state_layout": "conj_pairs",        # "full": conj_sym layers keep all P = 2N states ([h, conj h])
    "reset": "spec",                     # "spec": zero initial state, final state at t = len − 1 (SPEC §3);
                                         # anything else rejects the state comparisons with lengths
    "timesteps": True,                   # False: layers take no integration timesteps (τ); properties that
                                         # draw τ optionally run without it, those about τ are rejected
    "buffers": {},                       # {layer: (name, ...)} parameters it keeps fixed beyond the reference's
    "exact_error_messages": False,       # True: error messages must contain the catalogue's excerpts too
}


class Unsupported(Exception):
    """Something the adapter does not support (a layer, a configuration, a dtype): rejects the current example."""


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
        declared = getattr(adapter, "DECLARATIONS", None) or getattr(module, "DECLARATIONS", None) or {}
        unknown = sorted(set(declared) - set(DEFAULT_DECLARATIONS))
        if unknown:
            raise ValueError(f"adapter {name}: unknown DECLARATIONS key(s) {', '.join(unknown)}; "
                             f"known: {', '.join(DEFAULT_DECLARATIONS)}")
        self.declarations = {**DEFAULT_DECLARATIONS, **declared}

    def has(self, *names):
        return all(self.api.get(n) is not None for n in names)

    def require(self, *names):
        """The API functions named; Unsupported (this example is rejected, counted) unless every one is provided."""
        missing = [n for n in names if self.api.get(n) is None]
        if missing:
            raise Unsupported(f"{self.name} does not provide {', '.join(missing)}")
        return [self.api[n] for n in names]

    def __getattr__(self, name):
        if name in API:
            return self.require(name)[0]
        raise AttributeError(name)

    def to(self, array, dtype):
        """numpy -> native on this backend's device; None passes through; a tuple (a layer state made of several
        arrays, e.g. S6's (conv state, h) with block=True) is converted element by element."""
        if isinstance(array, tuple):
            return tuple(self.to(a, dtype) for a in array)
        return None if array is None else self.api["asarray"](np.asarray(array), dtype, self.device)

    # ------------------------------------------------------------------------- declarations
    def supports(self, subject, config=None, dtype=None, method=None):
        """Raise Unsupported unless the adapter declares `subject` (with `config`, `dtype`, `method`)."""
        config = config or {}
        declared = self.declarations
        if dtype is not None and row_name(dtype) not in declared["dtypes"]:
            raise Unsupported(f"dtype {row_name(dtype)} not declared")
        if subject in _layer_names() and declared["layers"] is not None and subject not in declared["layers"]:
            raise Unsupported(f"layer {subject} not declared")
        discretization = config.get("discretization")
        if discretization is not None and declared["discretizations"] is not None \
                and discretization not in declared["discretizations"]:
            raise Unsupported(f"discretization {discretization} not declared")
        if method is not None and declared["methods"] is not None \
                and method not in declared["methods"].get(subject, ()):
            raise Unsupported(f"method {method} of {subject} not declared")
        hook = self.api.get("supports")
        reason = hook(subject, dict(config)) if hook is not None else None
        if reason:
            raise Unsupported(str(reason))

    def row(self, dtype):
        """The tolerance row results computed in `dtype` are held to (float32 under a float32 accumulator)."""
        return "float32" if self.declarations["accumulator"] == "float32" else row_name(dtype)

    def build(self, reference, dtype, subject=None):
        """The backend twin of a reference layer or Classifier, cast to dtype on this backend's device."""
        subject = subject or type(reference).__name__
        self.supports(subject, getattr(reference, "config", {}), dtype)
        from_reference, cast = self.require("from_reference", "cast")
        return cast(from_reference(reference), dtype, self.device)

    def trainable(self, reference, layer=None):
        """The parameter names parameter_vjp must return: the reference's, minus frozen and declared buffers."""
        layer = layer or type(reference).__name__
        fixed = set(getattr(reference, "frozen", ())) | set(self.declarations["buffers"].get(layer, ()))
        return sorted(set(reference.params) - fixed)

    def state_in(self, reference, state):
        """A reference state in the adapter's declared layout (numpy)."""
        if state is None or self.declarations["state_layout"] == "conj_pairs" or not _conj_sym(reference):
            return state
        return np.concatenate([state, np.conj(state)], axis=-1)                     # (b, 2P): [h, conj h]

    def state_out(self, reference, state):
        """An adapter state (numpy) in the reference's layout."""
        if self.declarations["state_layout"] == "conj_pairs" or not _conj_sym(reference):
            return state
        return state[..., : state.shape[-1] // 2]                                  # (b, P)

    def require_reset_convention(self, what):
        if self.declarations["reset"] != "spec":
            raise Unsupported(f"{what}: reset convention {self.declarations['reset']!r} declared")

    def declaration_lines(self):
        return [f"{key}: {value!r}" for key, value in self.declarations.items()]


def _conj_sym(reference):
    return bool(getattr(reference, "config", {}).get("conj_sym", False))


def _layer_names():
    from parity_tests.strategies import LAYER_CONFIGS
    return set(LAYER_CONFIGS)


_CURRENT = {}


def configure(name, device):
    """Import the adapter now (before collection), so that the layers it registers (strategies.register_layer)
    join the parametrized properties."""
    _CURRENT.update(name=name, device=device, backend=Backend(name, device))


def current_or_none():
    """The configured backend, or None when its device is not available here."""
    try:
        return current()
    except Unsupported:
        return None


def current():
    """The configured backend (an Unsupported when its device is not available here)."""
    if _CURRENT.get("backend") is None:
        _CURRENT["backend"] = Backend(_CURRENT.get("name", "torch_backend"), _CURRENT.get("device", "cpu"))
    backend = _CURRENT["backend"]
    if backend.has("device_available") and not backend.api["device_available"](backend.device):
        raise Unsupported(f"device {backend.device} is not available here")
    return backend


# ----------------------------------------------------------------------------- counts and the parity report
class Report:
    """Per backend property (pytest node id): examples run, examples rejected by reason, outcome; and the worst
    error / tolerance per (subject, property, dtype) (<= 1 passes)."""

    def __init__(self):
        self.worst = {}
        self.current = None
        self.ran = Counter()
        self.rejected = defaultdict(Counter)
        self.outcome = {}

    # examples
    def begin(self, nodeid):
        self.current = nodeid
        self.ran[nodeid] += 0

    def count_run(self):
        if self.current is not None:
            self.ran[self.current] += 1

    def count_rejected(self, reason):
        if self.current is not None:
            self.rejected[self.current][reason] += 1

    def reasons(self, nodeid):
        return "; ".join(f"{reason} (×{n})" for reason, n in self.rejected[nodeid].most_common())

    # errors
    def record(self, subject, prop, dtype, ratio, abs_error):
        if self.current is None:      # a self-test running properties on an example adapter: not the backend's
            return
        key = (subject, prop, dtype)
        previous = self.worst.get(key, (0.0, 0.0))
        self.worst[key] = (max(previous[0], ratio), max(previous[1], abs_error))

    def table(self):
        rows = [("subject", "property", "dtype", "worst err/tol", "worst |err|", "")]
        for (subject, prop, dtype), (ratio, error) in sorted(self.worst.items()):
            rows.append((subject, prop, dtype, f"{ratio:.3g}", f"{error:.3g}", "ok" if ratio <= 1 else "FAIL"))
        if len(rows) == 1:
            return ["(no parity comparison ran)"]
        return _columns(rows)

    def examples_table(self):
        rows = [("property", "run", "rejected", "outcome")]
        for nodeid in sorted(self.ran):
            outcome = self.outcome.get(nodeid, "?")
            rejected = sum(self.rejected[nodeid].values())
            rows.append((nodeid.split("::", 1)[-1], str(self.ran[nodeid]), str(rejected), outcome))
        return _columns(rows)


def _columns(rows):
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


REPORT = Report()


def counted(inner):
    """Wrap a property's body (hypothesis `inner_test`): count the example as run, or, on Unsupported, as
    rejected with its reason (hypothesis `reject`: the example does not count towards max_examples)."""
    if getattr(inner, "_counted", False):
        return inner

    @functools.wraps(inner)
    def run(*args, **kwargs):
        from hypothesis import reject
        try:
            result = inner(*args, **kwargs)
        except Unsupported as why:
            REPORT.count_rejected(str(why))
            reject()
        REPORT.count_run()
        return result

    run._counted = True
    return run


def check(actual, expected, *, dtype, subject, prop, row=None, detail="", propagated=None):
    """Compare a backend result with the reference under the table tolerance (tolerances.allowed_error) for
    `row` (default: the dtype's), record the worst error in the report, and fail with a readable message
    naming subject, property, dtype (and `detail`, e.g. the drawn discretisation). A tuple `expected` (a state
    made of several arrays) is compared element by element, `prop` naming the element. `propagated`: the bound a
    read-out carries to each element (tolerances.allowed_error), for the scaled (float32) row."""
    if isinstance(expected, tuple):
        if not isinstance(actual, (tuple, list)) or len(actual) != len(expected):
            raise AssertionError(f"{subject} / {prop} / {dtype}: expected a tuple of {len(expected)} arrays, got "
                                 f"{type(actual).__name__}")
        for i, (a, e) in enumerate(zip(actual, expected)):
            check(a, e, dtype=dtype, subject=subject, prop=f"{prop}[{i}]", row=row, detail=detail)
        return
    actual, expected = np.asarray(actual), np.asarray(expected)
    where = f"{subject} / {prop} / {dtype}" + (f" [{detail}]" if detail else "")
    if actual.shape != expected.shape:
        raise AssertionError(f"{where}: shape {actual.shape} != reference {expected.shape}")
    row = row or dtype
    tol = tolerance(row)
    allowed = allowed_error(expected, row, propagated)
    error = np.abs(actual - expected)
    finite = np.isfinite(actual) | ~np.isfinite(expected)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(error == 0, 0.0, error / allowed)
    ratio = float(np.max(ratios)) if expected.size else 0.0
    if not finite.all():
        ratio = np.inf
    REPORT.record(subject, prop, row_name(dtype), ratio, float(np.max(error)) if expected.size else 0.0)
    if not ratio <= 1:
        scaled = f" × max|reference| ({np.max(np.abs(expected)):.3g})" if row_name(row) in SCALED_ROWS else ""
        if scaled and propagated is not None:
            scaled += " or × the read-out's propagated bound where larger"
        index = np.unravel_index(np.argmax(np.where(finite, ratios, np.inf)), error.shape)
        raise AssertionError(
            f"{where}: backend differs from the reference by {error[index]:.3g} at index "
            f"{tuple(int(i) for i in index)} (backend {actual[index]!r}, reference {expected[index]!r}); "
            f"tolerance row {row_name(row)}: rtol={tol['rtol']}, atol={tol['atol']}{scaled}, allowed here "
            f"{allowed[index]:.3g}; worst error/tolerance = {ratio:.3g}")


def check_keys(actual, expected, *, subject, prop):
    """Fail naming the missing and extra names unless the keys of `actual` are exactly `expected`."""
    missing, extra = sorted(set(expected) - set(actual)), sorted(set(actual) - set(expected))
    if missing or extra:
        raise AssertionError(f"{subject} / {prop}: gradient keys must be the reference's parameter names "
                             f"{sorted(expected)}; missing {missing}, extra {extra}")
