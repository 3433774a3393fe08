"""Reliability of the torch backend where real use goes beyond the conformance suite: token ids of
every integer dtype, mixed precision (torch.autocast), compiled models keeping their checks, valid but
extreme timesteps in float32, inputs refused alike by both backends, and the debug tools on any module.

Each test pins a failure that was reproduced before it was fixed:
* uint8 ids with vocab_size 256 raised a false "token ids must be in [0, 256)"; int8/int16 crashed in
  F.embedding; uint16/32/64 raised NotImplementedError;
* under torch.autocast the Classifier raised a dtype error (the bf16 tensor came from its own input
  projection); `.half()` failed deep inside with "not implemented for ComplexHalf";
* under torch.compile lengths 0 or < 0 gave silent finite logits and lengths > L crashed in generated code;
* S5 zoh with τ = 1e-40 in float32 returned NaN;
* bool timesteps/states were refused with other messages than the reference's; a torch layer class given
  to the reference Classifier raised AttributeError;
* `debug.check_finite(nn.GRU(...), x)` failed on a module without `.dtype`.
"""
import numpy as np
import pytest
import torch

import reference
import torch_backend
from torch_backend import debug
from parity_tests.tolerances import assert_close


def small_classifier(**changes):
    config = dict(input_dim=3, num_classes=4, d_model=8, d_state=4, n_layers=3, lrnn_cls=["LRU", "S5", "S4D"],
                  dropout=0.0, seed=0)
    config.update(changes)
    return torch_backend.Classifier(**config)


def features(batch=2, L=7, width=3, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, L, width)).astype(np.float32))


# ----------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("id_dtype", [torch.uint8, torch.int8, torch.int16, torch.uint16, torch.int32, torch.uint32,
                                      torch.int64, torch.uint64], ids=str)
def test_token_ids_of_every_integer_dtype_match_the_reference(id_dtype):
    ref = reference.Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=256, padding_idx=None, seed=0)
    module = torch_backend.from_reference(ref)
    top = 127 if id_dtype == torch.int8 else 255
    ids = np.array([[1, top, 3], [0, 2, 100]])
    out = module(torch.from_numpy(ids).to(id_dtype))
    assert_close(out.detach().numpy(), ref(ids), "float64", what=str(id_dtype))


def test_out_of_range_token_id_message_is_the_references():
    ref = reference.Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=10, seed=0)
    module = torch_backend.from_reference(ref)
    ids = np.array([[1, -3]], np.int8)
    with pytest.raises(ValueError) as from_reference:
        ref(ids)
    with pytest.raises(ValueError) as from_torch:
        module(torch.from_numpy(ids))
    assert str(from_torch.value) == str(from_reference.value)


# ----------------------------------------------------------------------------- mixed precision
@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_classifier_under_autocast_runs_mixers_in_float32(low):
    """Forward under CPU autocast: outputs in the autocast dtype, close to the float32 forward (the
    recurrences run in float32; only the Linear layers round to 8 or 11 bits), parameters untouched."""
    model = small_classifier().eval()
    x, lengths = features(), torch.tensor([7, 4])
    expected = model(x, lengths)
    with torch.autocast("cpu", dtype=low):
        out = model(x, lengths)
    assert out.dtype == low
    scale = expected.abs().max().item()
    # bf16 keeps 8 mantissa bits, fp16 11: a few roundings through 3 blocks stay under 5 % of max|y|
    assert (out.float() - expected).abs().max().item() < 0.05 * scale
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.parametrize("low", [torch.bfloat16, torch.float16], ids=str)
def test_training_step_under_autocast(low):
    model = small_classifier(lrnn_cls=["LRU", "S5", "Centaurus"]).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    x, lengths, labels = features(batch=4), torch.tensor([7, 4, 1, 6]), torch.tensor([0, 1, 2, 3])
    losses = []
    for _ in range(5):
        with torch.autocast("cpu", dtype=low):
            loss = torch.nn.functional.cross_entropy(model(x, lengths), labels)
        optimizer.zero_grad()
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_layer_under_autocast_returns_autocast_dtype_and_keeps_complex_state():
    layer = torch_backend.S5(3, 4, seed=0)
    x = features()
    y_full, state_full = layer(x, return_state=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y, state = layer(x.bfloat16(), return_state=True)
    assert y.dtype == torch.bfloat16 and state.dtype == torch.complex64
    torch.testing.assert_close(state, state_full, rtol=1e-2, atol=1e-2)   # only the input was rounded to bf16


@pytest.mark.parametrize("convert", [lambda m: m.half(), lambda m: m.bfloat16(), lambda m: m.to(torch.float16),
                                     lambda m: m.to("cpu", torch.bfloat16)], ids=["half", "bfloat16", "to16", "tob16"])
def test_half_precision_modules_are_refused_up_front_pointing_to_autocast(convert):
    for module in (torch_backend.LRU(3, 4, seed=0), small_classifier()):
        with pytest.raises(TypeError, match="cannot be converted to .*torch.autocast"):
            convert(module)
        assert all(p.dtype == torch.float32 for p in module.parameters())


# ----------------------------------------------------------------------------- compiled models keep their checks
BAD_LENGTHS = ([0, 7], [-1, 3], [7, 8])


@pytest.mark.parametrize("backend", ["aot_eager"])
def test_compiled_classifier_refuses_invalid_lengths_with_the_eager_message(backend):
    """Eager raises ValueError; compiled code keeps the check as an assertion in the graph
    (RuntimeError, the same rule in the message) instead of returning silent logits or crashing.
    (inductor lowers the same assertion; it was checked by hand — one inductor compile costs ~60 s here.)"""
    model = small_classifier(n_layers=2, lrnn_cls=["LRU", "S5"]).eval()
    compiled = torch.compile(model, backend=backend, fullgraph=True)
    x = features()
    assert_close(compiled(x, torch.tensor([7, 3])).detach().numpy(), model(x, torch.tensor([7, 3])).detach().numpy(),
                 "float32")
    for bad in BAD_LENGTHS:
        with pytest.raises(ValueError, match=r"lengths must satisfy 1 <= lengths <= L=7"):
            model(x, torch.tensor(bad))
        with pytest.raises(RuntimeError, match=r"lengths must satisfy 1 <= lengths <= L=7"):
            compiled(x, torch.tensor(bad))


@pytest.mark.parametrize("name", ["LRU", "S5"])
def test_compiled_layer_refuses_invalid_lengths(name):
    layer = torch_backend.REGISTRY[name](3, 4, seed=0)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    x = features()
    compiled(x, torch.tensor([7, 2]))
    for bad in BAD_LENGTHS:
        with pytest.raises(RuntimeError, match=r"lengths must satisfy 1 <= lengths <= L=7"):
            compiled(x, torch.tensor(bad), return_state=True)


def test_compiled_token_model_refuses_out_of_range_ids():
    model = torch_backend.Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=10, seed=0).eval()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    compiled(torch.tensor([[1, 2, 3]]))
    with pytest.raises(RuntimeError, match=r"token ids must be in \[0, vocab_size=10\)"):
        compiled(torch.tensor([[1, 12, 3]]))


# ----------------------------------------------------------------------------- tiny and huge τ in float32
EXTREME_CASES = [("LRU", {})] + [(name, {"discretization": method}) for name in ("S5", "S4D")
                                  for method in ("zoh", "bilinear", "async", "dirac")]


@pytest.mark.parametrize("tau", [1e-45, 1e-40, 1e-30, 3e38, torch.finfo(torch.float32).max])
@pytest.mark.parametrize("name, kwargs", EXTREME_CASES, ids=[f"{n}-{k.get('discretization', '')}" for n, k in EXTREME_CASES])
def test_float32_extreme_timesteps_give_finite_outputs_and_gradients(name, kwargs, tau):
    layer = torch_backend.REGISTRY[name](3, 4, seed=0, **kwargs)
    taus = torch.full((2, 7), tau, dtype=torch.float32)
    taus[:, 0] = 1.0
    y = layer(features(), integration_timesteps=taus)
    assert torch.isfinite(y).all()
    y.square().sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())


def test_underflowed_eigenvalue_with_zero_gap_in_both_precisions():
    ref = reference.LRU(3, 4, seed=0)
    params = dict(ref.params, nu_log=np.full(4, 800.0))
    with np.errstate(over="ignore"):
        ref = reference.LRU.from_params(ref.config, params)
        expected = ref(np.asarray(features(), np.float64), integration_timesteps=np.zeros((2, 7)))
    for dtype in (torch.float64, torch.float32):
        layer = torch_backend.from_reference(ref).to(dtype)
        y = layer(features().to(dtype), integration_timesteps=torch.zeros(2, 7, dtype=dtype))
        assert_close(y.detach().numpy(), expected, str(dtype).replace("torch.", ""))


# ----------------------------------------------------------------------------- one message catalogue
def same_error(call_reference, call_torch):
    """Both calls raise the same exception type with the same message."""
    with pytest.raises((TypeError, ValueError)) as from_reference:
        call_reference()
    with pytest.raises((TypeError, ValueError)) as from_torch:
        call_torch()
    assert type(from_torch.value) is type(from_reference.value)
    assert str(from_torch.value) == str(from_reference.value)


X64 = np.random.default_rng(3).normal(size=(2, 5, 3))


@pytest.mark.parametrize("case", ["bool_tau", "bool_state", "nan_state", "inf_state", "bool_x", "float_lengths",
                                  "str_x", "object_x", "str_lengths", "str_tau", "complex_tau", "str_state"])
def test_invalid_inputs_raise_the_same_error_in_both_backends(case):
    ref = reference.S5(3, 4, seed=0)
    module = torch_backend.from_reference(ref)
    state = ref.init_state(2)
    nan_state, inf_state = state.copy(), state.copy()
    nan_state[1, 2] = np.nan
    inf_state[0, 0] = np.inf
    arguments = {"bool_tau": dict(integration_timesteps=np.ones((2, 5), bool)),
                 "bool_state": dict(initial_state=np.zeros((2, 4), bool)),
                 "nan_state": dict(initial_state=nan_state), "inf_state": dict(initial_state=inf_state),
                 "bool_x": dict(x=np.ones((2, 5, 3), bool)),
                 "float_lengths": dict(lengths=np.array([1.0, 2.0])),
                 "str_x": dict(x=np.full((2, 5, 3), "a")), "object_x": dict(x=np.full((2, 5, 3), None)),
                 "str_lengths": dict(lengths=np.array(["1", "2"])), "str_tau": dict(integration_timesteps=np.full((2, 5), "a")),
                 "complex_tau": dict(integration_timesteps=np.ones((2, 5)) * 1j),
                 "str_state": dict(initial_state=np.full((2, 4), "a"))}[case]
    x = arguments.pop("x", X64)
    native = lambda v: torch.from_numpy(v) if v.dtype.kind in "biufc" else v          # noqa: E731 (torch holds no strings)
    same_error(lambda: ref(x, **arguments), lambda: module(native(x), **{k: native(v) for k, v in arguments.items()}))


def test_unknown_mixer_names_are_listed_sorted_in_both_backends():
    """Each backend lists its registry (the torch one may lack a layer), in one order: sorted."""
    for classifier in (reference.Classifier, torch_backend.Classifier):
        with pytest.raises(ValueError, match=r"lrnn_cls\[0\] must be a class or one of") as error:
            classifier(3, 2, n_layers=1, lrnn_cls="GRU")
        listed = str(error.value).split("one of ")[1].split(";")[0].split(", ")
        assert listed == sorted(listed)


def test_reference_classifier_names_the_rule_for_a_torch_layer_class():
    with pytest.raises(TypeError, match=r"is a torch layer; the reference Classifier takes reference layer classes "
                                        r"or registry names \(use 'LRU' or reference.LRU\)"):
        reference.Classifier(3, 2, d_model=4, d_state=2, n_layers=1, lrnn_cls=torch_backend.LRU, seed=0)


def test_nan_initial_state_skipped_on_request():
    module = torch_backend.S5(3, 4, seed=0)
    h0 = module.init_state(2)
    h0[0, 0] = float("nan")
    assert torch.isnan(module(features(L=5), initial_state=h0, check_finite=False)).any()


def test_classifier_ignores_nan_padding_and_offers_check_finite():
    ref = reference.Classifier(3, 2, d_model=4, d_state=2, n_layers=2, lrnn_cls=["S5", "LRU"], pooling="mean",
                               intermediate_pooling=["max", "none"], seed=0)
    module = torch_backend.from_reference(ref)
    x = np.random.default_rng(4).normal(size=(2, 6, 3))
    lengths = np.array([6, 2])
    x_nan = x.copy()
    x_nan[1, 2:] = np.nan
    out = module(torch.from_numpy(x_nan), torch.from_numpy(lengths))
    assert_close(out.detach().numpy(), ref(x, lengths), "float64")
    x_nan[0, 1, 0] = np.nan
    same_error(lambda: ref(x_nan, lengths), lambda: module(torch.from_numpy(x_nan), torch.from_numpy(lengths)))
    assert torch.isnan(module(torch.from_numpy(x_nan), torch.from_numpy(lengths), check_finite=False)[0]).all()


# ----------------------------------------------------------------------------- debug on any module
def test_check_finite_works_on_a_plain_torch_module():
    gru = torch.nn.GRU(3, 4, batch_first=True)
    assert debug.check_finite(gru, features()).ok
    x = features()
    x[0, 2, 1] = float("nan")
    report = debug.check_finite(gru, x)
    assert not report.ok and report.first.name == "x"
    with torch.no_grad():
        gru.weight_ih_l0[0, 0] = float("nan")
    report = debug.check_finite(gru, features())
    assert not report.ok and report.first.what == "output"


# ----------------------------------------------------------------------------- every layer under autocast
AUTOCAST_LAYERS = {"LRU": dict(d_state=4), "S5": dict(d_state=4), "S4D": dict(d_state=2),
                   "Centaurus": dict(d_state=4, sub_state_dim=2), "LSSL": dict(d_state=4),
                   "MultiresConv": dict(max_len=16)}


@pytest.mark.parametrize("name", sorted(AUTOCAST_LAYERS))
def test_every_layer_under_autocast_computes_in_float32(name):
    layer = torch_backend.REGISTRY[name](3, seed=0, **AUTOCAST_LAYERS[name])
    x = features()
    expected = layer(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = layer(x)                                            # float32 input: no rounding before the layer
    assert y.dtype == torch.bfloat16
    torch.testing.assert_close(y.float(), expected, rtol=1e-2, atol=1e-2 * expected.abs().max().item())


# ----------------------------------------------------------------------------- files, workers, memory
def test_torch_load_refuses_untrusted_files_like_the_reference(tmp_path):
    import json
    ref = reference.S5(3, 4, seed=0)
    cases = {"extra": dict(ref.params, extra=np.zeros(1000)), "nan": dict(ref.params, D=np.full(3, np.nan)),
             "forged": dict(ref.params)}
    for case, params in cases.items():
        config = {**ref.config, "d_state": 10 ** 9} if case == "forged" else ref.config
        path = tmp_path / f"{case}.npz"
        np.savez_compressed(path, __config__=json.dumps(config), __class__="S5", **params)
        same_error(lambda: reference.S5.load(path), lambda: torch_backend.S5.load(path))
    path = tmp_path / "truncated.npz"
    ref.save(path)
    path.write_bytes(path.read_bytes()[:300])
    same_error(lambda: reference.S5.load(path), lambda: torch_backend.S5.load(path))


def torch_layer_output(seed):
    layer = torch_backend.S5(3, 4, seed=0)
    with torch.no_grad():
        return layer(features(batch=4, L=4096, seed=seed)).numpy()             # b·L·N = 65 536: parallel kernel


class LayerOutputs(torch.utils.data.Dataset):
    """Item i: a torch layer's output computed inside the worker (a dataset that runs a feature extractor)."""

    def __len__(self):
        return 2

    def __getitem__(self, i):
        return torch_layer_output(i)


def test_forked_dataloader_workers_run_torch_layers_after_the_parent_did():
    """DataLoader workers forked after the parent ran the parallel Numba kernel (every worker aborted before)."""
    expected = [torch_layer_output(seed) for seed in (0, 1)]
    loader = torch.utils.data.DataLoader(LayerOutputs(), batch_size=None, num_workers=2,
                                         multiprocessing_context="fork", timeout=300)
    for got, want in zip(loader, expected):
        np.testing.assert_array_equal(np.asarray(got), want)


def test_lssl_with_autograd_names_the_sizes_beyond_the_memory_limit(monkeypatch):
    from reference.layers import lssl
    layer = torch_backend.LSSL(3, 4, seed=0).double()
    x, tau = torch.randn(2, 50, 3, dtype=torch.float64), torch.rand(2, 50, dtype=torch.float64)
    with torch.no_grad():
        whole = layer(x, integration_timesteps=tau)
    monkeypatch.setattr(lssl, "EVENT_MEMORY_LIMIT", 2 * 3 * 4 * 4 * 8 * 7)      # 7 steps of transitions
    with torch.no_grad():
        torch.testing.assert_close(layer(x, integration_timesteps=tau), whole, rtol=1e-15, atol=1e-15)
    with pytest.raises(ValueError, match=r"b·L·H·N² = 2·50·3·4² dense transition entries of 8 bytes \(kept for the backward pass\)"):
        layer(x, integration_timesteps=tau)


# ----------------------------------------------------------------------------- compiled LSSL does not unroll L
def test_dense_associative_scan_equals_the_loop():
    from torch_backend.scan import _scan_dense_associative, scan_dense
    generator = torch.Generator().manual_seed(0)
    A = 0.3 * torch.randn(2, 37, 3, 4, 4, dtype=torch.float64, generator=generator)
    b = torch.randn(2, 37, 3, 4, dtype=torch.float64, generator=generator)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, generator=generator)
    assert_close(_scan_dense_associative(A, b, h0).numpy(), scan_dense(A, b, h0).numpy(), "float64")


def traced_nodes(module, L):
    """Number of nodes in the graph torch.compile traces for one call at length L (no code generation)."""
    counts = []

    def count(graph_module, example_inputs):
        counts.append(len(graph_module.graph.nodes))
        return graph_module.forward
    torch._dynamo.reset()
    compiled = torch.compile(module, backend=count, fullgraph=True)
    x = features(L=L)
    assert_close(compiled(x).detach().numpy(), module(x).detach().numpy(), "float32", what=f"L={L}")
    return counts[0]


def test_compiled_lssl_graph_grows_with_log_length_not_length():
    """The loop was unrolled: 4× the nodes for 4× the steps (182 s to compile at L = 32 with inductor)."""
    layer = torch_backend.LSSL(3, 4, seed=0)
    short, long = traced_nodes(layer, 16), traced_nodes(layer, 64)              # 4 and 6 rounds
    assert long < 2 * short, (short, long)


@pytest.mark.parametrize("case", ["int_features", "str_features", "float_ids", "str_ids", "bool_ids"])
def test_classifier_input_errors_are_the_same_in_both_backends(case):
    tokens = case.endswith("ids")
    ref = reference.Classifier(3, 2, d_model=4, d_state=2, n_layers=1, vocab_size=10 if tokens else None, seed=0)
    module = torch_backend.from_reference(ref)
    x = {"int_features": np.ones((2, 5, 3), int), "str_features": np.full((2, 5, 3), "a"),
         "float_ids": np.ones((2, 5)), "str_ids": np.full((2, 5), "a"), "bool_ids": np.ones((2, 5), bool)}[case]
    same_error(lambda: ref(x), lambda: module(torch.from_numpy(x) if x.dtype.kind in "biuf" else x))


def test_many_compiled_layer_classes_do_not_share_one_compile_cache():
    """Each layer class keeps its own torch.compile cache (recompile limit 8 per code object): tracing six
    classes at two lengths each must not exhaust it (it would if they shared Layer.__call__'s)."""
    torch._dynamo.reset()
    for name in sorted(AUTOCAST_LAYERS):
        layer = torch_backend.REGISTRY[name](3, seed=0, **AUTOCAST_LAYERS[name])
        compiled = torch.compile(layer, backend=lambda graph_module, inputs: graph_module.forward, fullgraph=True)
        for L in (5, 9):
            x = features(L=L)
            assert_close(compiled(x).detach().numpy(), layer(x).detach().numpy(), "float32", what=f"{name} L={L}")
