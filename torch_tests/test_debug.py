"""torch_backend.debug: check_finite finds the first layer and timestep of a non-finite value, and
replay_in_reference measures the deviation from the float64 reference per block.

The overflow test is exact: an S5 state x_t = e·x_{t−1} + (e − 1) with u ≡ 1 equals e^(t+1) − 1, so the
first non-finite output is at t = ⌈ln(max float)⌉ − 1 (88 in float32, 709 in float64).
"""
import numpy as np
import pytest

from reference.layers import REGISTRY
from parity_tests.strategies import layer_config
from parity_tests.tolerances import TOLERANCES, within_tolerance

torch = pytest.importorskip("torch")
debug = pytest.importorskip("torch_backend.debug")
import torch_backend  # noqa: E402

TORCH_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def growing_s5(dtype):
    """S5 with N = H = 1, λ = +1, Δ = 1 (zoh: Ā = e, γ̄ = e − 1), B = C = 1, D = 0."""
    reference = REGISTRY["S5"](d_model=1, d_state=1, seed=0)
    params = {"Lambda_re": [1.0], "Lambda_im": [0.0], "B_re": [[1.0]], "B_im": [[0.0]], "C_re": [[1.0]],
              "C_im": [[0.0]], "D": [0.0], "log_dt": [0.0]}
    reference = type(reference).from_params(reference.config, {k: np.array(v) for k, v in params.items()})
    return torch_backend.from_reference(reference, dtype=TORCH_DTYPES[dtype])


def small_classifier(dtype, lrnn_cls=("LRU", "S5", "LRU"), **kwargs):
    model = torch_backend.Classifier(input_dim=2, num_classes=3, d_model=4, d_state=4, n_layers=len(lrnn_cls),
                                     lrnn_cls=list(lrnn_cls), seed=0, **kwargs)
    return model.to(TORCH_DTYPES[dtype]).eval()


def within(deviation, reference_max, dtype):
    return within_tolerance(deviation, reference_max, dtype)


# ----------------------------------------------------------------------------- check_finite
def test_check_finite_reports_the_exact_overflow_timestep(dtype):
    module = growing_s5(dtype)
    x = np.ones((2, 800, 1))
    report = debug.check_finite(module, x)
    expected_t = int(np.ceil(np.log(np.finfo(dtype).max))) - 1
    assert not report.ok and report.first.name == "model" and report.first.kind == "S5"
    assert report.first.first_bad[0] == expected_t
    assert f"timestep {expected_t}" in str(report)
    y = module(torch.as_tensor(x, dtype=TORCH_DTYPES[dtype])).detach().numpy()
    assert np.isfinite(y[:, :expected_t]).all() and not np.isfinite(y[:, expected_t]).all()


def test_check_finite_respects_lengths(dtype):
    """Non-finite values only in padded positions (t >= len) are not reported."""
    module = growing_s5(dtype)
    expected_t = int(np.ceil(np.log(np.finfo(dtype).max))) - 1
    report = debug.check_finite(module, np.ones((2, 800, 1)), lengths=np.array([expected_t, 800]))
    assert report.first.first_bad[:2] == (expected_t, 1)
    assert debug.check_finite(module, np.ones((2, 800, 1)), lengths=np.array([expected_t, expected_t])).ok


def test_check_finite_points_at_the_block_that_overflows(dtype):
    model = small_classifier(dtype, intermediate_pooling="mean")
    with torch.no_grad():
        model.blocks[1]["mixer"].Lambda_re.fill_(1e6)                              # Ā = exp(1e6·Δ) = inf at once
    x = np.random.default_rng(0).normal(size=(2, 12, 2))
    report = debug.check_finite(model, x, lengths=np.array([7, 12]))
    first = report.first
    assert (first.name, first.kind, first.what, first.first_bad[0]) == ("blocks.1.mixer", "S5", "output", 0)
    assert all(r.first_bad is None for r in report.records[:first.order])
    assert [r.name for r in report.records[:first.order]] == ["input_proj", "blocks.0.mixer", "dropout", "blocks.0.norm"]
    assert "first non-finite value: blocks.1.mixer (S5)" in str(report)


def test_check_finite_passes_a_healthy_model_and_names_every_module(dtype):
    model = small_classifier(dtype, lrnn_cls=("S4D", "Centaurus"), intermediate_pooling="stride")
    x = np.random.default_rng(1).normal(size=(3, 9, 2))
    report = debug.check_finite(model, x, lengths=np.array([9, 4, 1]), integration_timesteps=np.ones((3, 9)))
    assert report.ok and "all finite" in str(report)
    names = [r.name for r in report.records]
    assert {"blocks.0.mixer", "blocks.1.mixer", "head", "model"} <= set(names)
    assert all(np.isfinite(r.max_abs) for r in report.records)


def test_check_finite_reports_bad_input_without_running():
    model = small_classifier("float32")
    x = np.random.default_rng(2).normal(size=(2, 6, 2))
    x[1, 3, 0] = np.inf
    report = debug.check_finite(model, x)
    assert report.first.name == "x" and report.first.first_bad == (3, 1, 0) and report.records == []


# ----------------------------------------------------------------------------- replay_in_reference
def test_replay_of_a_float64_model_matches_the_reference():
    model = small_classifier("float64", lrnn_cls=("LRU", "S5", "Centaurus", "LSSL"), intermediate_pooling="max")
    x = np.random.default_rng(3).normal(size=(2, 16, 2))
    report = debug.replay_in_reference(model, x, lengths=np.array([16, 11]), integration_timesteps=np.ones((2, 16)))
    assert [r.stage for r in report.rows] == ["embedding", "block 0", "block 1", "block 2", "block 3", "output"]
    for row in report.rows:
        assert within(row.accumulated, row.max_reference, "float64"), str(report)
        assert row.local is None or within(row.local, row.max_reference, "float64"), str(report)


def test_replay_points_at_the_layer_that_deviates():
    model = small_classifier("float64")
    bump = TOLERANCES["float32"]["atol"]
    model.blocks[1]["mixer"].register_forward_hook(lambda module, args, output: output + bump)
    x = np.random.default_rng(4).normal(size=(2, 10, 2))
    report = debug.replay_in_reference(model, x)
    worst = report.worst
    assert (worst.stage, worst.kind) == ("block 1", "S5")
    np.testing.assert_allclose(worst.local, bump, rtol=TOLERANCES["float64"]["rtol"] * 1e3)
    others = [r for r in report.rows if r.local is not None and r is not worst]
    assert all(within(r.local, r.max_reference, "float64") for r in others), str(report)
    assert "<- largest" in str(report) and "block 1" in str(report).split("<- largest")[0].splitlines()[-1]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_replay_of_a_float32_layer_is_within_the_float32_tolerance(name):
    from hypothesis import find
    config = find(layer_config(name).configs(), lambda c: c["d_model"] >= 2)
    module = torch_backend.from_reference(REGISTRY[name](**config), dtype=torch.float32)
    x = np.random.default_rng(5).normal(size=(2, 32, config["d_model"]))
    report = debug.replay_in_reference(module, x)
    (row,) = report.rows
    assert report.dtype == "float32" and row.accumulated > 0
    assert within(row.accumulated, row.max_reference, "float32"), str(report)
