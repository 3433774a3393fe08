"""Matrix-state golden vectors (SPEC §4.11.8; fla 0.6.0 naive references, float64) reproduced by the backend's
op-level functions `<backend>.layers.matrix_state.{gla_recurrence, delta_recurrence, delta_product_recurrence}`,
every method the backend lists (GLA_METHODS, DELTA_METHODS) and chunk sizes 1, 5, 16, 64, at the SPEC §8 float64
tolerance. A backend without that module is reported "not run" with the reason (no failure).

Layouts (parity_tests/golden/README.md): time-first (b, L, h, d) except `delta_rule_*`, head-first (b, h, L, d);
DeltaProduct k, v, β rows interleaved t·n_h + j (n_h = 2), its gate g once per token; scale 0.5 = d_k^{−1/2}.
"""
import importlib

import numpy as np
import pytest

from parity_tests.backend import Unsupported, check

GOLDEN = "parity_tests/golden/{}.npz"
GLA_FILES = {"linear_attn_L17_h0": None, "gla_L17_h0": "gk", "simple_gla_L17_h0": "g"}
DELTA_FILES = {"delta_rule_L17_h0": None, "gated_delta_rule_L17_h0": "g"}
PRODUCT_FILES = {"gated_delta_product_nh2_gated_L17_h0": "g", "gated_delta_product_nh2_nogate_L17_h0": None}
CHUNKS = (1, 5, 16, 64)
SCALE = 0.5


def load(name):
    with np.load(GOLDEN.format(name), allow_pickle=False) as data:
        return {key: data[key] for key in data.files if key != "meta"}


def ops(backend):
    """The backend's op-level module; Unsupported (reported "not run" with the reason) when it has none."""
    name = f"{backend.name}.layers.matrix_state"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as missing:
        if missing.name is None or not name.startswith(missing.name):
            raise
        raise Unsupported(f"backend {backend.name} has no module {name}") from None


def runs(methods):
    """(method, chunk) pairs: every method once, "chunkwise" at every chunk size."""
    return [(m, c) for m in methods for c in (CHUNKS if m == "chunkwise" else (64,))]


def compare(backend, result, golden, subject, method, chunk, head_first=False):
    o, state = (backend.to_numpy(r) for r in result)
    if head_first:
        o = np.swapaxes(o, 1, 2)                                                           # (b, h, L, d_v)
    prop = f"golden o ({method}, C={chunk})"
    check(o, golden["o"], dtype="float64", subject=subject, prop=prop)
    check(state, golden["final_state"], dtype="float64", subject=subject, prop=f"golden final state ({method}, C={chunk})")


@pytest.mark.parametrize("name", sorted(GLA_FILES))
def test_gla_family(backend, name):
    module, golden = ops(backend), load(name)
    to = lambda key: None if key is None else backend.to(golden[key], "float64")          # noqa: E731
    for method, chunk in runs(module.GLA_METHODS):
        result = module.gla_recurrence(to("q"), to("k"), to("v"), to(GLA_FILES[name]), to("initial_state"),
                                       scale=SCALE, method=method, chunk=chunk)
        compare(backend, result, golden, name, method, chunk)


@pytest.mark.parametrize("name", sorted(DELTA_FILES))
def test_delta_family(backend, name):
    module, golden = ops(backend), load(name)
    head_first = name.startswith("delta_rule")
    swap = (lambda a: np.swapaxes(a, 1, 2)) if head_first else (lambda a: a)               # to time-first
    to = lambda key: None if key is None else backend.to(swap(golden[key]) if key != "initial_state"  # noqa: E731
                                                         else golden[key], "float64")
    for method, chunk in runs(module.DELTA_METHODS):
        result = module.delta_recurrence(to("q"), to("k"), to("v"), to("beta"), to(DELTA_FILES[name]),
                                         to("initial_state"), scale=SCALE, method=method, chunk=chunk)
        compare(backend, result, golden, name, method, chunk, head_first)


@pytest.mark.parametrize("name", sorted(PRODUCT_FILES))
def test_delta_product(backend, name):
    module, golden = ops(backend), load(name)
    to = lambda key: None if key is None else backend.to(golden[key], "float64")          # noqa: E731
    for method, chunk in runs(module.DELTA_METHODS):
        result = module.delta_product_recurrence(to("q"), to("k"), to("v"), to("beta"), to(PRODUCT_FILES[name]),
                                                 to("initial_state"), n_householder=2, scale=SCALE, method=method,
                                                 chunk=chunk)
        compare(backend, result, golden, name, method, chunk)


@pytest.mark.parametrize("name, gate", [("simple_gla_L17_h0", "g"), ("gated_delta_rule_L17_h0", "g")])
def test_upstream_chunked_outputs(backend, name, gate):
    """fla's own chunked forms (chunk 16) agree with our chunkwise C = 16 as well (`o_chunk16` keys)."""
    module, golden = ops(backend), load(name)
    to = lambda key: backend.to(golden[key], "float64")                                   # noqa: E731
    if name.startswith("simple_gla"):
        result = module.gla_recurrence(to("q"), to("k"), to("v"), to(gate), to("initial_state"), scale=SCALE,
                                       method="chunkwise", chunk=16)
    else:
        result = module.delta_recurrence(to("q"), to("k"), to("v"), to("beta"), to(gate), to("initial_state"),
                                         scale=SCALE, method="chunkwise", chunk=16)
    compare(backend, result, {"o": golden["o_chunk16"], "final_state": golden["final_state_chunk16"]}, name,
            "chunkwise vs upstream chunk", 16)
