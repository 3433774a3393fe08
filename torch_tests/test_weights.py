"""Weights of torch_backend's classes survive round trips (SPEC §7), across backends and devices.

* torch: `state_dict` through torch.save / torch.load, and the same .npz format (`save` / `load`), exact
  in float64; a file written by either backend loads in the other, bit for bit;
* a file from another configuration raises an error that names the first parameter that differs;
* CPU ↔ CUDA: a module saved on one device loads and runs on the other (skips without a GPU).
Runs over the layer registry and the Classifier; `backend` is torch_backend through the conformance API
(torch_tests/conftest.py). The reference's own save/load is tested in reference_tests/test_weights.py.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import reference
from reference.layers import REGISTRY
from parity_tests.backend import check
from parity_tests.strategies import examples, classifier_configs, classifier_inputs, layer_config, rng_from, seeds

LAYERS = sorted(REGISTRY)


def assert_same_params(actual, expected):
    """Identical names (in any order: torch lists parameters before buffers), shapes and bits."""
    assert sorted(actual) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(np.asarray(actual[name]), expected[name], err_msg=name)


def torch_twin(backend, obj):
    from_reference = backend.require("from_reference")[0]
    try:
        return from_reference(obj)
    except (KeyError, NotImplementedError):
        backend.require(f"layer {type(obj).__name__}")
        raise


def backend_class(backend, obj):
    return type(torch_twin(backend, obj))


def draw_layer(data, name):
    config = data.draw(layer_config(name).configs(), label="config")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(2, 7, config["d_model"]))                                 # (b, L, H)
    return REGISTRY[name](**config), x


def first_mismatch(expected, actual):
    """The name check_params reports first: a missing name, else an extra one, else the first shape change."""
    missing = [k for k in expected if k not in actual]
    extra = [k for k in actual if k not in expected]
    shaped = [k for k in expected if k in actual and np.shape(actual[k]) != np.shape(expected[k])]
    return (missing or extra or shaped)[0]


# ----------------------------------------------------------------------------- backend and across backends
@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(2))
@given(data=st.data())
def test_backend_state_dict_round_trip_is_exact(backend, tmp_path_factory, name, data):
    torch = pytest.importorskip("torch")
    layer, x = draw_layer(data, name)
    module = torch_twin(backend, layer)                                            # float64
    path = tmp_path_factory.mktemp("w") / "state.pt"
    torch.save(module.state_dict(), path)
    fresh = type(module)(**{**layer.config, "seed": (layer.config.get("seed") or 0) + 1}).double()
    fresh.load_state_dict(torch.load(path))
    assert_same_params(fresh.params, layer.params)
    np.testing.assert_array_equal(backend.to_numpy(fresh(backend.to(x, "float64"))),
                                  backend.to_numpy(module(backend.to(x, "float64"))))


@pytest.mark.parametrize("name", LAYERS)
@settings(max_examples=examples(2))
@given(data=st.data())
def test_npz_cross_loads_between_backends_exactly(backend, tmp_path_factory, name, data):
    layer, x = draw_layer(data, name)
    cls = backend_class(backend, layer)
    folder = tmp_path_factory.mktemp("w")
    layer.save(folder / "reference.npz")                         # reference → backend
    module = cls.load(folder / "reference.npz")
    assert module.config == layer.config
    assert_same_params(module.params, layer.params)
    check(backend.to_numpy(module(backend.to(x, "float64"))), layer(x), dtype="float64", subject=name,
          prop="forward after loading a reference file")
    module.save(folder / "backend.npz")                          # backend → reference
    back = REGISTRY[name].load(folder / "backend.npz")
    assert back.config == layer.config
    assert_same_params(back.params, layer.params)


@settings(max_examples=examples(4))
@given(data=st.data())
def test_classifier_cross_loads_between_backends_exactly(backend, tmp_path_factory, data):
    config = data.draw(classifier_configs(), label="config")
    x, lengths, tau = data.draw(classifier_inputs(config), label="inputs")
    model = reference.Classifier(**config)
    cls = backend_class(backend, model)
    folder = tmp_path_factory.mktemp("w")
    model.save(folder / "reference.npz")
    module = cls.load(folder / "reference.npz").eval()
    assert_same_params(module.params, model.params)
    actual = module(backend.to(x, "float64"), backend.to(lengths, "float64"), backend.to(tau, "float64"))
    check(backend.to_numpy(actual), model(x, lengths, tau), dtype="float64", subject="Classifier",
          prop="forward after loading a reference file")
    module.save(folder / "backend.npz")
    assert_same_params(reference.Classifier.load(folder / "backend.npz").params, model.params)


def test_float32_module_saves_its_own_values(backend, tmp_path):
    """A float32 module writes its float32 values (widened exactly); loading them as float64 changes nothing."""
    layer = REGISTRY["LRU"](d_model=3, d_state=4, seed=1)
    module = torch_twin(backend, layer).float()
    module.save(tmp_path / "f32.npz")
    loaded = REGISTRY["LRU"].load(tmp_path / "f32.npz")
    for key, value in layer.params.items():
        np.testing.assert_array_equal(loaded.params[key], value.astype(np.float32).astype(np.float64), err_msg=key)


# ----------------------------------------------------------------------------- another configuration
MISMATCHES = [   # (layer, saved config, config loaded into): sizes that change parameter shapes
    ("LRU", {"d_model": 2, "d_state": 3}, {"d_model": 2, "d_state": 4}),
    ("S5", {"d_model": 2, "d_state": 4}, {"d_model": 3, "d_state": 4}),
    ("S4D", {"d_model": 2, "d_state": 2}, {"d_model": 2, "d_state": 3}),
    ("Centaurus", {"d_model": 2, "d_state": 2, "sub_state_dim": 2}, {"d_model": 2, "d_state": 2, "sub_state_dim": 2,
                                                                      "mode": "neck"}),
    ("LSSL", {"d_model": 2, "d_state": 3}, {"d_model": 2, "d_state": 3, "channels": 2}),
    ("MultiresConv", {"d_model": 2, "max_len": 16}, {"d_model": 2, "max_len": 64}),
]


@pytest.mark.parametrize("name, saved, wanted", [m for m in MISMATCHES if m[0] in REGISTRY], ids=lambda v: str(v))
def test_loading_another_configuration_names_the_first_mismatch(backend, tmp_path, name, saved, wanted):
    cls = REGISTRY[name]
    cls(**saved, seed=0).save(tmp_path / "saved.npz")
    with np.load(tmp_path / "saved.npz") as data:
        params = {k: data[k] for k in data.files if k not in ("__config__", "__class__")}
    target = cls(**wanted, seed=0)
    culprit = first_mismatch(target.params, params)
    with pytest.raises(ValueError, match=f"'{culprit}'") as reference_error:
        cls.from_params(target.config, params)
    module = torch_twin(backend, target)
    with pytest.raises(ValueError, match=f"'{culprit}'") as backend_error:
        module.load_params(params)
    assert str(backend_error.value) == str(reference_error.value)


def test_loading_another_classifier_configuration_names_the_first_mismatch(backend, tmp_path):
    small = {"input_dim": 2, "num_classes": 3, "d_model": 4, "d_state": 4, "n_layers": 2, "seed": 0}
    reference.Classifier(**small).save(tmp_path / "small.npz")
    with np.load(tmp_path / "small.npz") as data:
        params = {k: data[k] for k in data.files if k not in ("__config__", "__class__")}
    for change in ({"d_state": 6}, {"n_layers": 3}, {"num_classes": 5}):
        target = reference.Classifier(**{**small, **change})
        culprit = first_mismatch(target.params, params)
        with pytest.raises(ValueError, match=f"'{culprit}'"):
            reference.Classifier.from_params(target.config, params)
        with pytest.raises(ValueError, match=f"'{culprit}'"):
            torch_twin(backend, target).load_params(params)


# ----------------------------------------------------------------------------- devices
@pytest.mark.parametrize("name", LAYERS + ["Classifier"])
def test_cpu_cuda_round_trip(backend, tmp_path, name):
    """Saved on CPU, loaded and run on CUDA (state_dict with map_location, and .npz), and back."""
    torch = pytest.importorskip("torch")
    if not backend.api["device_available"]("cuda"):
        pytest.skip("no CUDA device here")
    rng = np.random.default_rng(0)
    if name == "Classifier":
        obj = reference.Classifier(input_dim=2, num_classes=3, d_model=4, d_state=4, n_layers=2, seed=0)
        x = rng.normal(size=(2, 9, 2))
    else:
        obj = REGISTRY[name](**{"d_model": 2, "seed": 0, **({"d_state": 2} if name != "MultiresConv" else {})})
        x = rng.normal(size=(2, 9, 2))
    cpu = torch_twin(backend, obj).eval()
    torch.save(cpu.state_dict(), tmp_path / "cpu.pt")
    cuda = type(cpu).from_params(obj.config, obj.params, device="cuda").eval()
    cuda.load_state_dict(torch.load(tmp_path / "cpu.pt", map_location="cuda"))
    x_cuda = torch.as_tensor(x, dtype=torch.float64, device="cuda")
    expected = obj(x)
    check(cuda(x_cuda).cpu().numpy(), expected, dtype="float64", subject=name, prop="CPU state_dict on CUDA")
    cuda.save(tmp_path / "cuda.npz")                                    # written from CUDA, read on CPU
    back = type(cpu).load(tmp_path / "cuda.npz")
    assert_same_params(back.params, obj.params)
    torch.save(cuda.state_dict(), tmp_path / "cuda.pt")
    cpu.load_state_dict(torch.load(tmp_path / "cuda.pt", map_location="cpu"))
    check(backend.to_numpy(cpu(torch.as_tensor(x))), expected, dtype="float64", subject=name,
          prop="CUDA state_dict on CPU")


def test_loading_a_file_of_another_layer_class_names_both_classes(backend, tmp_path):
    lru = reference.LRU(d_model=2, d_state=2, seed=0)
    lru.save(tmp_path / "lru.npz")
    message = "holds a LRU layer; load it with LRU.load, not S5.load"
    with pytest.raises(ValueError, match=message):
        reference.S5.load(tmp_path / "lru.npz")
    backend_s5 = backend_class(backend, reference.S5(d_model=2, d_state=2, seed=0))
    with pytest.raises(ValueError, match=message):
        backend_s5.load(tmp_path / "lru.npz")
    assert_same_params(reference.LRU.load(tmp_path / "lru.npz").params, lru.params)
