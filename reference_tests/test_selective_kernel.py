"""The fused selective-scan kernel (reference/kernels/selective.py) against the definition: its vectorised
exponential against np.exp, and its forward (y, state after len − 1) in float64 and in float32 against the S6
layer's sequential path, with several chunks and several channel blocks (E not a multiple of the block)."""
import numpy as np
import pytest
from numba import njit

from parity_tests.tolerances import FAST_EXP_RTOL_BY_DTYPE, assert_close
from reference.kernels.fast_exp import fast_exp
from reference.kernels.selective import CHUNK, EB, selective_scan_fused
from reference.layers.s6 import S6, S6_METHODS


@njit
def _fast_exp_all(z):
    out = np.empty_like(z)                                                          # (n,)
    for k in range(z.shape[0]):
        out[k] = fast_exp(z[k])
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_exp_is_within_its_ulps_of_exp(dtype):
    """Over the normal range of e^z (both signs, down to 1e-8 in |z|), relative error <= FAST_EXP_RTOL; and
    the special values: 0 → 1, NaN → NaN, ∞ → ∞, −∞ → 0, past the largest float → ∞."""
    finfo = np.finfo(dtype)
    top = 0.99 * np.log(finfo.max)
    bottom = 0.99 * np.log(finfo.tiny)
    magnitudes = np.logspace(-8, 0, 3000)                                           # (3000,)
    z = np.concatenate([magnitudes * bottom, magnitudes * top]).astype(dtype)      # (6000,)
    expected = np.exp(z.astype(np.float64))                                         # (6000,)
    actual = _fast_exp_all(z)
    assert actual.dtype == np.dtype(dtype)
    relative = np.abs(actual - expected) / expected
    assert relative.max() <= FAST_EXP_RTOL_BY_DTYPE[dtype], f"fast_exp {dtype}: worst relative error {relative.max()}"
    special = np.array([0.0, np.nan, np.inf, -np.inf, 2 * np.log(finfo.max)], dtype)
    got = _fast_exp_all(special)
    assert got[0] == 1 and np.isnan(got[1]) and got[2] == np.inf and got[3] == 0 and got[4] == np.inf, got


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("method", S6_METHODS)
def test_fused_forward_equals_the_definition_in_both_precisions(method, dtype):
    """E = EB + 5 channels (two blocks, the second partial), L = 2·CHUNK + 5 steps, τ with zeros, lengths, h0:
    the kernel on inputs of `dtype` returns `dtype` and matches the float64 sequential path at that row."""
    E, L = EB + 5, 2 * CHUNK + 5
    layer = S6(d_model=E, d_state=3, dt_rank=2, discretization=method, dt_min=0.01, dt_max=1.0, seed=3)
    rng = np.random.default_rng(7)
    x = rng.normal(size=(2, L, E))                                                  # (b, L, E)
    tau = np.exp(rng.uniform(-2, 1, (2, L)))                                        # (b, L)
    tau[rng.uniform(size=tau.shape) < 0.3] = 0.0
    h0 = rng.normal(size=(2, E, 3))                                                 # (b, E, N)
    lengths = np.array([L, CHUNK + 1])
    y, h = layer(x, lengths, tau, initial_state=h0, return_state=True)
    dt, B, C = layer.selection(x)
    cast = [np.asarray(a, dtype) for a in (x, dt, -np.exp(layer.params["A_log"]), B, C, layer.params["D"], tau, h0)]
    y_f, h_f, _ = selective_scan_fused(*cast, lengths, method)
    assert y_f.dtype == h_f.dtype == np.dtype(dtype)
    assert_close(y_f, y, dtype=dtype, what=f"fused y ({method}, {dtype})")
    assert_close(h_f, h, dtype=dtype, what=f"fused state at len − 1 ({method}, {dtype})")
