"""Nothing accepted and ignored, nothing that lies (the reference side), and the fast paths equal the definitions.

* every option that does not apply raises, naming the argument: scan's `chunk` for methods without
  chunks, MultiresConv's `depth` together with `max_len`, a Classifier's `padding_idx` even with
  feature input, check_step_input's removed `batch=`;
* what the documentation promises builds: Classifier(input_dim=0 or None, vocab_size=V);
* the one call preamble: LSSL says why its method list is short, a real-state layer refuses a
  complex initial_state;
* `reference.kernels.scan` (out=, keep_dtype, reverse, both memory layouts) equals `scan_sequential`;
* the code speaks of the project: no tracker numbers, no generator markers, no guide that does not exist.
"""
import pathlib
import re

import numpy as np
import pytest

from parity_tests.strategies import rng_from, scan_problem
from parity_tests.tolerances import assert_close
from reference import LSSL, Classifier, MultiresConv
from reference.kernels.scan import scan_numba as tuned_scan
from reference.layers._checks import check_step_input
from reference.scan import SCAN_METHODS, scan, scan_sequential

ROOT = pathlib.Path(__file__).resolve().parents[1]
SMALL = dict(num_classes=3, d_model=4, d_state=2, n_layers=1, seed=0)


# ----------------------------------------------------------------------------- options that do not apply
@pytest.mark.parametrize("method", [m for m in SCAN_METHODS if m != "chunked"])
def test_scan_refuses_chunk_for_methods_without_chunks(method):
    a, b, h0 = scan_problem(rng_from(0), 2, 9, 3)
    with pytest.raises(ValueError, match=r"chunk is used by method='chunked' only; got chunk=4"):
        scan(a, b, h0, method=method, chunk=4)
    assert_close(scan(a, b, h0, method=method), scan(a, b, h0, method="chunked", chunk=4), what=method)


def test_multiresconv_refuses_depth_and_max_len_together():
    with pytest.raises(ValueError, match=r"give depth or max_len, not both .* depth=3 and max_len=100000"):
        MultiresConv(2, depth=3, max_len=100000)
    by_depth, by_length = MultiresConv(2, depth=4, seed=0), MultiresConv(2, max_len=16, seed=0)
    assert by_depth.depth == by_length.depth == 4                     # R = 16 needs J = 4 at k = 2
    assert (by_depth.config["depth"], by_depth.config["max_len"]) == (4, None)
    assert (by_length.config["depth"], by_length.config["max_len"]) == (None, 16)
    assert MultiresConv(2).config["max_len"] == 1024                 # the default when neither is given
    assert MultiresConv.from_params(by_depth.config, by_depth.params).depth == 4


@pytest.mark.parametrize("padding_idx, error, message", [(-1, ValueError, "padding_idx must be >= 0; got -1"),
                                                         ("a", TypeError, "padding_idx must be an integer"),
                                                         (1.5, TypeError, "padding_idx must be an integer")])
def test_classifier_checks_padding_idx_with_feature_input_too(padding_idx, error, message):
    with pytest.raises(error, match=message):
        Classifier(input_dim=3, padding_idx=padding_idx, **SMALL)
    with pytest.raises(error, match=message):
        Classifier(input_dim=None, vocab_size=7, padding_idx=padding_idx, **SMALL)


def test_classifier_refuses_padding_idx_outside_the_vocabulary():
    with pytest.raises(ValueError, match=r"padding_idx must be in \[0, vocab_size=7\); got 7"):
        Classifier(input_dim=None, vocab_size=7, padding_idx=7, **SMALL)


def test_check_step_input_has_no_batch_argument():
    with pytest.raises(TypeError, match="batch"):
        check_step_input(np.ones((2, 3)), 3, batch=2)


# ----------------------------------------------------------------------------- what the documentation promises
@pytest.mark.parametrize("input_dim", [0, None])
def test_classifier_with_tokens_builds_without_input_dim(input_dim):
    model = Classifier(input_dim=input_dim, vocab_size=7, **SMALL)
    assert model.config["input_dim"] == input_dim and "input_proj.weight" not in model.params
    logits = model(np.array([[1, 2, 3], [4, 5, 6]]))
    assert logits.shape == (2, 3) and np.all(np.isfinite(logits))


@pytest.mark.parametrize("input_dim, error", [(None, TypeError), (0, ValueError)])
def test_classifier_with_features_needs_input_dim(input_dim, error):
    with pytest.raises(error, match="input_dim must be"):
        Classifier(input_dim=input_dim, **SMALL)


# ----------------------------------------------------------------------------- the call preamble
def test_lssl_says_why_it_has_two_methods():
    layer = LSSL(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"method must be one of sequential, fft for LSSL \(its transitions are "
                                         r"dense N×N matrices.*got 'numba'"):
        layer(np.ones((1, 4, 2)), method="numba")


@pytest.mark.parametrize("layer", [LSSL(2, 3, seed=0), MultiresConv(2, max_len=4, seed=0)], ids=["LSSL", "MultiresConv"])
def test_real_state_layers_refuse_a_complex_initial_state(layer):
    state = layer.init_state(1).astype(complex)
    with pytest.raises(TypeError, match=rf"initial_state must be real \({type(layer).__name__}'s state is real\)"):
        layer(np.ones((1, 4, 2)), initial_state=state)


# ----------------------------------------------------------------------------- fast paths equal the definitions
LAYOUTS = {"time-major": lambda x: x, "time-last": lambda x: np.moveaxis(np.ascontiguousarray(np.moveaxis(x, 1, -1)), -1, 1)}


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("a_shape", ["constant", "per step"])
@pytest.mark.parametrize("dtype", [np.complex128, np.complex64])
def test_tuned_scan_equals_the_definition(layout, a_shape, dtype):
    """Both memory layouts (four-row time-last and time-major kernels), out=, keep_dtype and reverse."""
    rng = rng_from(5)
    a, b, h0 = scan_problem(rng, 3, 37, 6)                            # 3·6 = 18 rows: a short last group of four
    a = a if a_shape == "per step" else a[0, 0]                       # (b, L, N) or (N,)
    b = LAYOUTS[layout](b.astype(dtype))
    expected = scan_sequential(np.broadcast_to(a, b.shape).astype(np.complex128), b.astype(np.complex128), h0)
    row = "float64" if dtype == np.complex128 else "float32"
    assert_close(tuned_scan(a, b, h0), expected, what="allocating, 64-bit")
    kept = tuned_scan(a.astype(dtype), b, h0.astype(dtype), keep_dtype=True)
    assert kept.dtype == dtype
    assert_close(kept, expected, dtype=row, what="keep_dtype")
    out = LAYOUTS[layout](np.empty(b.shape, dtype))
    assert tuned_scan(a.astype(dtype), b, h0.astype(dtype), out=out, keep_dtype=True) is out
    assert_close(out, expected, dtype=row, what="out=")
    a_full = np.broadcast_to(a, b.shape)
    backwards = scan_sequential(a_full[:, ::-1].astype(np.complex128), b[:, ::-1].astype(np.complex128), h0)[:, ::-1]
    assert_close(tuned_scan(a, b, h0, reverse=True), backwards, what="reverse")


def test_tuned_scan_refuses_a_wrong_out():
    a, b, h0 = scan_problem(rng_from(1), 2, 5, 3)
    with pytest.raises(ValueError, match="out must have b's shape"):
        tuned_scan(a, b, h0, out=np.empty((2, 5, 4), complex))


# ----------------------------------------------------------------------------- the code speaks of the project
SOURCES = sorted(p for folder in ("reference", "torch_backend", "benchmarks") for p in (ROOT / folder).rglob("*.py"))
LIES = {"a tracker number": re.compile(r"\bissues? #?\d+|\(#\d+\)"),
        "a guide that does not exist": re.compile(r"TORCH_LAYER_GUIDE"),
        "a code-generator marker": re.compile(r"^# -+ .*append .* below", re.M)}


@pytest.mark.parametrize("what", sorted(LIES))
def test_no_source_file_holds(what):
    assert SOURCES, "no source files found"
    found = [f"{p.relative_to(ROOT)}: {m.group(0)!r}" for p in SOURCES for m in LIES[what].finditer(p.read_text())]
    assert not found, f"{what} in: {'; '.join(found)}"


def test_the_spec_scan_holds_definitions_only():
    text = (ROOT / "reference" / "scan.py").read_text()
    assert len(text.splitlines()) <= 260
    for tuned in ("keep_dtype", "out=", "set_num_threads", "PARALLEL_MIN_SIZE"):
        assert tuned not in text, tuned
