"""Nothing accepted and ignored (the torch side): the same refusals as the reference, with the argument named.

* torch `scan` and `scan_reverse` refuse `chunk` for methods without chunks;
* MultiresConv refuses `depth` with `max_len`; a Classifier checks `padding_idx` with feature input and
  builds with input_dim=0 or None for token input;
* check_step_input has no `batch=`; torch_backend.nn keeps only what is used (no twins of the
  reference's linear/layer_norm/dropout that nothing calls);
* the call preamble: LSSL says why its method list is short; real-state layers refuse complex states.
"""
import numpy as np
import pytest
import torch

import torch_backend
from parity_tests.strategies import rng_from, scan_problem
from parity_tests.tolerances import assert_close
from torch_backend import LSSL, Classifier
from torch_backend.layers import MultiresConv
from torch_backend.layers._checks import check_step_input
from torch_backend.scan import SCAN_METHODS, scan, scan_reverse

SMALL = dict(num_classes=3, d_model=4, d_state=2, n_layers=1, seed=0)
NOT_CHUNKED = [m for m in SCAN_METHODS if m not in ("chunked", "compiled")]


@pytest.mark.parametrize("method", NOT_CHUNKED)
def test_scan_refuses_chunk_for_methods_without_chunks(method):
    a, b, h0 = (torch.tensor(v) for v in scan_problem(rng_from(0), 2, 9, 3))
    with pytest.raises(ValueError, match=r"chunk is used by method='chunked' only; got chunk=4"):
        scan(a, b, h0, method=method, chunk=4)
    with pytest.raises(ValueError, match=r"chunk is used by method='chunked' only; got chunk=4"):
        scan_reverse(a, b, method=method, chunk=4)
    assert_close(scan(a, b, h0, method=method).numpy(), scan(a, b, h0, method="chunked", chunk=4).numpy(), what=method)


def test_multiresconv_refuses_depth_and_max_len_together():
    with pytest.raises(ValueError, match=r"give depth or max_len, not both .* depth=3 and max_len=100000"):
        MultiresConv(2, depth=3, max_len=100000)
    module = MultiresConv(2, depth=4, seed=0)
    assert module.depth == 4 and module.config["max_len"] is None


@pytest.mark.parametrize("padding_idx, error, message", [(-1, ValueError, "padding_idx must be >= 0; got -1"),
                                                         ("a", TypeError, "padding_idx must be an integer")])
def test_classifier_checks_padding_idx_with_feature_input_too(padding_idx, error, message):
    with pytest.raises(error, match=message):
        Classifier(input_dim=3, padding_idx=padding_idx, **SMALL)


@pytest.mark.parametrize("input_dim", [0, None])
def test_classifier_with_tokens_builds_without_input_dim(input_dim):
    model = Classifier(input_dim=input_dim, vocab_size=7, **SMALL).eval()
    assert model.config["input_dim"] == input_dim and not hasattr(model, "input_proj")
    reference = model.to_reference()
    tokens = np.array([[1, 2, 3], [4, 5, 6]])
    assert_close(model.double()(tokens).detach().numpy(), reference(tokens), what="logits")


def test_check_step_input_has_no_batch_argument():
    with pytest.raises(TypeError, match="batch"):
        check_step_input(torch.ones(2, 3), 3, batch=2)


@pytest.mark.parametrize("name", ["linear", "layer_norm", "dropout"])
def test_nn_keeps_only_what_is_used(name):
    assert not hasattr(torch_backend.nn, name), f"torch_backend.nn.{name} is defined but nothing calls it"


def test_lssl_says_why_it_has_two_methods():
    module = LSSL(2, 3, seed=0)
    with pytest.raises(ValueError, match=r"method must be one of sequential, fft for LSSL \(its transitions are "
                                         r"dense N×N matrices.*got 'auto'"):
        module(torch.ones(1, 4, 2), method="auto")


@pytest.mark.parametrize("make", [lambda: LSSL(2, 3, seed=0), lambda: MultiresConv(2, max_len=4, seed=0)],
                         ids=["LSSL", "MultiresConv"])
def test_real_state_layers_refuse_a_complex_initial_state(make):
    module = make()
    state = module.init_state(1).to(torch.complex64)
    with pytest.raises(TypeError, match=rf"initial_state must be real \({type(module).__name__}'s state is real\)"):
        module(torch.ones(1, 4, 2), initial_state=state)
