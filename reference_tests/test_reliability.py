"""Reliability of the reference where real use goes beyond the conformance suite: valid but extreme
timesteps, token ids of every integer dtype, configs that must stay saveable, inputs that must be
refused (bool timesteps and states, NaN states) and padding that may hold anything.

Each test pins a failure that was reproduced before it was fixed:
* S5/S4D zoh with τ = 1e-310 returned NaN (φ1 divided by a subnormal complex z); LRU and Centaurus
  returned NaN at τ near the float maximum (e^z with Re z = −inf, Im z = ±inf); LRU with an underflowed
  λ (Re log λ = −inf) and τ = 0 returned NaN (−inf·0);
* NumPy integers inside `lrnn_params` made `save()` fail after training ("int64 is not JSON serializable");
* bool `integration_timesteps` / `initial_state` were used as 0/1; a NaN `initial_state` flowed into the
  output; the Classifier refused NaN at padded positions and had no `check_finite=False`.
"""
import os
import tempfile

import numpy as np
import pytest

from reference import LRU, S4D, S5, Centaurus, Classifier
from reference.discretize import METHODS, discretize, phi1

# every finite τ >= 0 the validator accepts: zero, subnormal, tiny, ordinary, huge, the largest float
TINY_TAUS = (5e-324, 1e-310, 1e-300, 1e-20)
HUGE_TAUS = (1e20, 1e300, 1.7e308)
CONTINUOUS = tuple(m for m in METHODS if m != "none")
# exp_euler's input factor is Δ_A itself (SPEC §2): it grows with τ by definition, so a huge gap
# multiplies the input by up to 1e308 — finite outputs at huge τ are promised for the bounded methods.
BOUNDED_AT_HUGE_TAU = tuple(m for m in CONTINUOUS if m != "exp_euler")


def extreme_layers(methods):
    """(id, layer) for every layer with a continuous λ and each of `methods`, plus LRU."""
    cases = [("LRU", LRU(3, 4, seed=0))]
    for method in methods:
        cases += [(f"S5-{method}", S5(3, 4, discretization=method, seed=0)),
                  (f"S5-conj-{method}", S5(3, 4, discretization=method, conj_sym=True, seed=1)),
                  (f"S4D-{method}", S4D(3, 4, discretization=method, seed=0)),
                  (f"Centaurus-{method}", Centaurus(3, 4, sub_state_dim=2, discretization=method, seed=0))]
    return cases


def constant_tau(value, batch=2, L=5):
    tau = np.full((batch, L), value)                                             # (b, L)
    tau[:, 0] = 1.0                                                              # one ordinary gap first
    return tau


X = np.random.default_rng(0).normal(size=(2, 5, 3))                             # (b, L, H)


# ----------------------------------------------------------------------------- tiny and huge τ
@pytest.mark.parametrize("tau", TINY_TAUS)
@pytest.mark.parametrize("name, layer", extreme_layers(CONTINUOUS), ids=lambda v: v if isinstance(v, str) else "")
def test_tiny_timesteps_give_finite_outputs_close_to_tau_zero(name, layer, tau):
    """A gap of 1e-310 is a gap of (almost) nothing: finite, and equal to τ = 0 within float64 rounding."""
    with np.errstate(over="raise", invalid="raise"):                             # no overflow, no NaN on the way
        y = layer(X, integration_timesteps=constant_tau(tau))
    y0 = layer(X, integration_timesteps=constant_tau(0.0))
    assert np.isfinite(y).all(), name
    np.testing.assert_allclose(y, y0, rtol=1e-9, atol=1e-12 * np.abs(y0).max() + tau * 1e6, err_msg=name)


@pytest.mark.parametrize("tau", HUGE_TAUS)
@pytest.mark.parametrize("name, layer", extreme_layers(BOUNDED_AT_HUGE_TAU),
                         ids=lambda v: v if isinstance(v, str) else "")
def test_huge_timesteps_give_finite_outputs(name, layer, tau):
    """A gap near the float maximum forgets the past (|Ā| → 0, or → 1 in modulus −1 for bilinear) — never NaN."""
    y = layer(X, integration_timesteps=constant_tau(tau))
    assert np.isfinite(y).all(), f"{name} at τ = {tau}"


def test_huge_timestep_forgets_the_past_exactly_for_zoh():
    """zoh at τ = 1e300 with Re λ < 0: Ā = 0 and γ̄ = −1/λ (the limit of (e^{λΔ_A} − 1)/λ)."""
    Lambda = np.array([-0.5 + 2j, -1.0, -3.0 - 1j])
    Lambda_bar, gamma_bar = discretize(Lambda, 0.1, "zoh", np.full((1, 1), 1e300))
    assert np.array_equal(Lambda_bar[0, 0], np.zeros(3))
    np.testing.assert_allclose(gamma_bar[0, 0], -1 / Lambda, rtol=1e-15)


def test_bilinear_at_huge_step_tends_to_minus_one():
    Lambda = np.array([-0.5 + 2j, -1.0 + 0j])
    Lambda_bar, gamma_bar = discretize(Lambda, 1.0, "bilinear", np.full((1, 1), 1.7e308))
    np.testing.assert_allclose(Lambda_bar[0, 0], [-1, -1], atol=1e-15)
    np.testing.assert_allclose(gamma_bar[0, 0], -2 / Lambda, rtol=1e-15)


def test_bilinear_large_step_branch_is_the_same_function():
    """The Δ_A > 1 branch divides the fractions through by Δ_A: same values on both sides of Δ_A = 1."""
    Lambda = np.array([-0.3 + 1j, -2.0 + 0j])
    tau = np.array([[0.999999, 1.000001, 3.0, 40.0]])
    Lambda_bar, gamma_bar = discretize(Lambda, 1.0, "bilinear", tau)
    dt_A = tau[0][:, None]
    np.testing.assert_allclose(Lambda_bar[0], (1 + Lambda * dt_A / 2) / (1 - Lambda * dt_A / 2), rtol=1e-14,
                               atol=1e-16)
    np.testing.assert_allclose(gamma_bar[0], dt_A / (1 - Lambda * dt_A / 2), rtol=1e-14)


@pytest.mark.parametrize("z", [5e-324, 1e-310 + 1e-310j, -1e-300j, 1e-9 - 1e-9j, 1.4e-8])
def test_phi1_of_tiny_arguments_is_its_series(z):
    """φ1 of a subnormal or tiny z is 1 + z/2 to float64 rounding (it divided by z before)."""
    assert np.isfinite(phi1(np.array([z]))).all()
    np.testing.assert_allclose(phi1(np.array([z])), 1 + np.array([z]) / 2, rtol=1e-16, atol=0)


def test_underflowed_lru_eigenvalue_with_zero_gap_keeps_the_state():
    """|λ| = exp(−exp(800)) underflows (Re log λ = −inf); τ = 0 still means Ā = λ⁰ = 1 (0⁰ = 1)."""
    layer = LRU(3, 4, seed=0)
    params = dict(layer.params, nu_log=np.full(4, 800.0))
    layer = LRU.from_params(layer.config, params)
    tau = np.zeros((2, 5))
    with np.errstate(over="ignore"):                                             # exp(800) = inf, on purpose
        y = layer(X, integration_timesteps=tau)
        y1 = layer(X, integration_timesteps=np.ones((2, 5)))                     # τ = 1: λ = 0, no memory
    assert np.isfinite(y).all()
    assert np.isfinite(y1).all()
    with np.errstate(over="ignore"):
        first = layer(X[:, :1], integration_timesteps=tau[:, :1])
    np.testing.assert_allclose(first, y[:, :1], rtol=1e-15)


# ----------------------------------------------------------------------------- token ids
@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "int64", "uint64"])
def test_token_ids_of_every_integer_dtype(dtype):
    """The same ids in every integer dtype give the same logits; uint8 id 255 with vocab_size 256 is valid."""
    model = Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=256, padding_idx=None, seed=0)
    top = 127 if dtype == "int8" else 255
    ids = np.array([[1, top, 3], [0, 2, 100]])
    np.testing.assert_array_equal(model(ids.astype(dtype)), model(ids))


def test_negative_int8_token_id_is_refused_naming_it():
    model = Classifier(1, 3, d_model=4, d_state=2, n_layers=1, vocab_size=10, seed=0)
    with pytest.raises(ValueError, match=r"token ids must be in \[0, vocab_size=10\); got -3 at index \(0, 1\)"):
        model(np.array([[1, -3]], np.int8))


# ----------------------------------------------------------------------------- configs stay saveable
def test_numpy_integers_in_lrnn_params_are_saved_as_python_numbers():
    model = Classifier(np.int64(3), np.int64(2), d_model=np.int64(4), d_state=np.int32(4), n_layers=np.int64(2),
                       lrnn_cls="S5", lrnn_params={"blocks": np.int64(2), "dt_min": np.float32(1e-3),
                                                   "conj_sym": np.bool_(False)}, seed=np.int64(0))
    kinds = {type(v) for v in model.config["lrnn_params"].values()}
    assert kinds <= {int, float, bool}, kinds
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.npz")
        model.save(path)
        loaded = Classifier.load(path)
    x = np.random.default_rng(1).normal(size=(2, 4, 3))
    np.testing.assert_array_equal(loaded(x), model(x))


def test_per_layer_lrnn_params_with_numpy_values_are_plain():
    model = Classifier(3, 2, d_model=4, d_state=4, n_layers=2, lrnn_cls=["S5", "LRU"],
                       lrnn_params=[{"blocks": np.int16(1)}, {"r_max": np.float64(0.9)}], seed=0)
    assert type(model.config["lrnn_params"][0]["blocks"]) is int
    assert type(model.config["lrnn_params"][1]["r_max"]) is float


# ----------------------------------------------------------------------------- refused inputs
def test_bool_timesteps_are_refused():
    layer = S5(3, 4, seed=0)
    with pytest.raises(TypeError, match="integration_timesteps must be a real numeric array; got dtype bool"):
        layer(X, integration_timesteps=np.ones((2, 5), bool))


def test_bool_initial_state_is_refused():
    layer = LRU(3, 4, seed=0)
    with pytest.raises(TypeError, match=r"initial_state must be a numeric array \(not bool\); got dtype bool"):
        layer(X, initial_state=np.zeros((2, 4), bool))


@pytest.mark.parametrize("layer", [LRU(3, 4, seed=0), S5(3, 4, seed=0), S4D(3, 2, seed=0)],
                         ids=lambda layer: type(layer).__name__)
def test_nan_initial_state_is_refused_like_x(layer):
    h0 = layer.init_state(2)
    h0[1].flat[1] = np.nan
    with pytest.raises(ValueError, match=r"initial_state must be finite; got \(?nan"):
        layer(X, initial_state=h0)
    assert np.isnan(layer(X, initial_state=h0, check_finite=False)).any()     # skipped on request


# ----------------------------------------------------------------------------- padding holds anything
def padded_with_nan():
    x = np.random.default_rng(2).normal(size=(2, 6, 3))                          # (b, L, input_dim)
    lengths = np.array([6, 3])
    x_nan = x.copy()
    x_nan[1, 3:] = np.nan
    return x, x_nan, lengths


@pytest.mark.parametrize("pooling", ["last", "mean", "max"])
def test_classifier_ignores_nan_in_padded_positions(pooling):
    x, x_nan, lengths = padded_with_nan()
    model = Classifier(3, 2, d_model=4, d_state=2, n_layers=2, lrnn_cls=["S5", "LRU"], pooling=pooling,
                       intermediate_pooling=["mean", "none"], seed=0)
    np.testing.assert_array_equal(model(x_nan, lengths), model(x, lengths))


def test_classifier_refuses_nan_at_valid_positions_unless_told_not_to_check():
    x, _, lengths = padded_with_nan()
    x[0, 2, 1] = np.nan
    model = Classifier(3, 2, d_model=4, d_state=2, n_layers=1, lrnn_cls="LRU", seed=0)
    with pytest.raises(ValueError, match=r"x must be finite; got nan at index \(0, 2, 1\)"):
        model(x, lengths)
    assert np.isnan(model(x, lengths, check_finite=False)[0]).all()


# ----------------------------------------------------------------------------- forked workers, threads, installs
FORK_X = np.random.default_rng(5).normal(size=(4, 4096, 3))                     # b·L·N = 65 536: the parallel path


def layer_outputs(rows):
    """S5 through the compiled scan (method="numba"): a small input (some rows of FORK_X, 50 steps) and
    a large one (all of FORK_X, above the size where the parallel kernel runs)."""
    layer = S5(3, 4, seed=0)
    return layer(FORK_X[rows, :50], method="numba"), layer(FORK_X, method="numba")


@pytest.mark.skipif("fork" not in __import__("multiprocessing").get_all_start_methods(), reason="no fork here")
def test_forked_pool_workers_run_compiled_kernels_after_the_parent_did():
    """The parent launches a parallel kernel (its threading layer starts); fork children then run the
    serial twins for small and large inputs alike, and map() returns (it hung before: every child aborted)."""
    import multiprocessing
    import numba
    expected = [layer_outputs(slice(i, i + 2)) for i in (0, 2)]                 # launches the parallel kernel
    assert numba.threading_layer() in ("omp", "tbb", "workqueue")               # ... so a layer was started
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map_async(layer_outputs, [slice(0, 2), slice(2, 4)]).get(timeout=300)
    for (small, large), (small_ref, large_ref) in zip(results, expected):
        np.testing.assert_array_equal(small, small_ref)
        np.testing.assert_allclose(large, large_ref, rtol=1e-12, atol=1e-12)


def run_python(code, **env):
    """Run `code` in a fresh interpreter from the repository root; returns the finished process."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": root, **env})


THREADED_CALLS = """
import threading, numpy as np, numba
from reference import S5
from reference.kernels.scan import scan_numba
rng = np.random.default_rng(0)
a = rng.uniform(0.5, 0.99, (8, 4096, 4)); b = rng.normal(size=(8, 4096, 4))
expected = scan_numba(a, b)
errors = []
def work():
    for _ in range(20):
        if not np.array_equal(scan_numba(a, b), expected):
            errors.append("different result")
threads = [threading.Thread(target=work) for _ in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(numba.threading_layer(), len(errors))
"""


def test_concurrent_calls_under_the_workqueue_threading_layer():
    """Numba's workqueue layer aborts the process on concurrent parallel launches; launches are serialised."""
    done = run_python(THREADED_CALLS, NUMBA_THREADING_LAYER="workqueue")
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["workqueue", "0"], done.stdout


READ_ONLY_INSTALL = """
import warnings, numba.core.caching as caching
def unwritable(self):
    raise OSError("read-only file system")
caching._CacheLocator.ensure_cache_path = unwritable        # no cache folder anywhere is writable
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    import numpy as np, reference
    y = reference.S5(3, 4, seed=0)(np.ones((2, 300, 3)), method="numba")
print(sum("cannot cache" in str(w.message) for w in caught), bool(np.isfinite(y).all()))
"""


def test_read_only_install_imports_and_runs_without_a_cache():
    done = run_python(READ_ONLY_INSTALL)
    assert done.returncode == 0, done.stderr[-2000:]
    warned, finite = done.stdout.split()
    assert int(warned) > 0 and finite == "True", done.stdout


# ----------------------------------------------------------------------------- untrusted files
def saved_s5(folder, name="model.npz", config_changes=None, **param_changes):
    """An .npz in the format of Layer.save, with some config entries or parameters replaced or added."""
    import json
    layer = S5(3, 4, seed=0)
    path = os.path.join(folder, name)
    np.savez_compressed(path, __config__=json.dumps({**layer.config, **(config_changes or {})}), __class__="S5",
                        **{**layer.params, **param_changes})
    return path


def test_save_without_suffix_then_load_without_suffix():
    layer = S5(3, 4, seed=0)
    with tempfile.TemporaryDirectory() as folder:
        layer.save(os.path.join(folder, "m"))                                    # np.savez writes m.npz
        loaded = S5.load(os.path.join(folder, "m"))
    np.testing.assert_array_equal(loaded(X), layer(X))


def test_an_extra_huge_compressed_entry_is_refused_before_it_is_read():
    """80 MB of zeros compress to ~80 kB; the name is refused from the archive's index (it cost 1.7 GB and
    20 s for a 1.6 MB file before). tracemalloc sees every NumPy allocation."""
    import tracemalloc
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder, extra=np.zeros(10_000_000))
        tracemalloc.start()
        with pytest.raises(ValueError, match="unexpected parameter 'extra'"):
            S5.load(path)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 2_000_000, f"peak {peak} bytes while refusing the file"


def test_a_forged_config_size_is_refused_before_the_constructor_allocates():
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder, config_changes={"d_state": 10 ** 9})
        with pytest.raises(ValueError, match=r"config d_state=1000000000 is larger than any array in the file"):
            S5.load(path)


def test_a_reshaped_parameter_is_refused_from_its_header():
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder, D=np.zeros(4))
        with pytest.raises(ValueError, match=r"parameter 'D' must have shape \(3,\); got \(4,\)"):
            S5.load(path)


@pytest.mark.parametrize("cut", [0.0, 0.1, 0.5, 0.95, 0.999])
def test_truncated_files_raise_value_error_naming_the_file(cut):
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder)
        with open(path, "rb") as stream:
            raw = stream.read()
        with open(path, "wb") as stream:
            stream.write(raw[:int(cut * len(raw))])
        with pytest.raises(ValueError, match=f"{path}.*corrupted or truncated"):
            S5.load(path)


def test_corrupted_bytes_raise_value_error_naming_the_file():
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder)
        with open(path, "r+b") as stream:
            stream.seek(200)
            stream.write(b"\xff" * 64)
        with pytest.raises(ValueError, match=path):
            S5.load(path)


@pytest.mark.parametrize("name, value, error, message", [
    ("D", np.array([0.1, np.nan, 0.3]), ValueError, "'D' must be finite; got nan at index \\(1,\\)"),
    ("log_dt", np.full(4, -np.inf), ValueError, "'log_dt' must be finite; got -inf"),
    ("D", np.ones(3, bool), TypeError, "'D' .*must be a real array; got dtype bool"),
])
def test_non_finite_and_bool_parameters_are_refused_at_load(name, value, error, message):
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder, **{name: value})
        with pytest.raises(error, match=message):
            S5.load(path)


def test_a_pickled_object_entry_is_refused_without_unpickling():
    with tempfile.TemporaryDirectory() as folder:
        path = saved_s5(folder, D=np.array([object(), 1, 2], dtype=object))
        with pytest.raises(ValueError, match="holds Python objects"):
            S5.load(path)


# ----------------------------------------------------------------------------- memory follows the data
def peak_bytes(function):
    """Peak bytes allocated (NumPy included) while `function()` runs."""
    import tracemalloc
    tracemalloc.start()
    try:
        function()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_multiresconv_memory_follows_the_input_not_max_len():
    """The zero history (b, R − 1, H) was built on every call: 1.6 GB at max_len 65536 for 256 steps."""
    from reference import MultiresConv
    x = np.random.default_rng(6).normal(size=(4, 256, 8))                        # (b, L, H): 64 kB
    short, long = MultiresConv(8, max_len=256, seed=0), MultiresConv(8, max_len=1 << 16, seed=0)
    assert peak_bytes(lambda: long(x)) < 4 * peak_bytes(lambda: short(x))       # J grows 8 → 16, not R
    y, history = long(x, return_state=True)                                      # the state is asked for: built
    assert history.shape == (4, long.receptive_field - 1, 8)


@pytest.mark.parametrize("mode", ["stride", "mean", "max"])
def test_pooling_with_a_huge_stride_allocates_by_the_sequence(mode):
    from reference import pool
    x = np.random.default_rng(7).normal(size=(2, 100, 4))
    lengths, tau = np.array([100, 37]), np.ones((2, 100))
    whole = pool(x, lengths, tau, mode=mode, stride=100)
    assert peak_bytes(lambda: pool(x, lengths, tau, mode=mode, stride=10 ** 9)) < 100_000
    for got, want in zip(pool(x, lengths, tau, mode=mode, stride=10 ** 9), whole):
        np.testing.assert_array_equal(got, want)


def test_lssl_event_transitions_are_formed_a_chunk_at_a_time(monkeypatch):
    from reference import LSSL
    from reference.layers import lssl
    layer = LSSL(3, 4, seed=0)
    rng = np.random.default_rng(8)
    x, tau = rng.normal(size=(2, 50, 3)), rng.exponential(size=(2, 50))
    whole = layer(x, integration_timesteps=tau)
    per_step = 2 * 3 * 4 * 4 * 8                                                 # b·H·N²·8 bytes
    monkeypatch.setattr(lssl, "EVENT_MEMORY_LIMIT", 7 * per_step)                # 7 steps per chunk
    np.testing.assert_array_equal(layer(x, integration_timesteps=tau), whole)
    monkeypatch.setattr(lssl, "EVENT_MEMORY_LIMIT", per_step - 1)
    with pytest.raises(ValueError, match=r"b·H·N² = 2·3·4² dense transition entries of 8 bytes per time step"):
        layer(x, integration_timesteps=tau)


# ----------------------------------------------------------------------------- hand-written gradients at the extremes
@pytest.mark.parametrize("tau", TINY_TAUS + HUGE_TAUS)
@pytest.mark.parametrize("name, layer", extreme_layers(BOUNDED_AT_HUGE_TAU), ids=lambda v: v if isinstance(v, str) else "")
def test_vjp_is_finite_at_tiny_and_huge_timesteps(name, layer, tau):
    """The hand-written backward pass (SPEC §11) at the same extremes: zoh's ∂γ̄/∂λ → 1/λ² and bilinear's
    derivatives divided through by Δ_A² instead of inf·0."""
    with np.errstate(over="raise", invalid="raise"):
        grad_x, grads, _ = layer.vjp(np.ones_like(X), X, integration_timesteps=constant_tau(tau))
    assert np.isfinite(grad_x).all(), name
    assert all(np.isfinite(g).all() for g in grads.values()), name


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
@pytest.mark.parametrize("tau", [0.5, 3.0, 40.0])
def test_discretize_derivatives_match_central_differences_for_large_steps(method, tau):
    """Δ_A > 1 takes the divided-through branch of bilinear: the same derivatives as the direct formulas."""
    from reference.discretize import discretize_derivatives
    Lambda, dt, h = np.array([-0.3 + 1.1j, -2.0 + 0.0j]), np.array([0.7, 1.3]), 1e-6
    taus = np.full((1, 1), tau)
    dA_dLambda, dA_ddt, dg_dLambda, dg_ddt = (d[0, 0] for d in discretize_derivatives(Lambda, dt, method, taus))
    plus, minus = discretize(Lambda + h, dt, method, taus), discretize(Lambda - h, dt, method, taus)
    np.testing.assert_allclose(dA_dLambda, (plus[0] - minus[0])[0, 0] / (2 * h), rtol=1e-6)
    np.testing.assert_allclose(dg_dLambda, (plus[1] - minus[1])[0, 0] / (2 * h), rtol=1e-6)
    plus, minus = discretize(Lambda, dt + h, method, taus), discretize(Lambda, dt - h, method, taus)
    np.testing.assert_allclose(dA_ddt, (plus[0] - minus[0])[0, 0] / (2 * h), rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(dg_ddt, (plus[1] - minus[1])[0, 0] / (2 * h), rtol=1e-6, atol=1e-9)
