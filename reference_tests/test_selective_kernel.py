"""The fused selective-scan kernel (reference/kernels/selective.py) against the definition: its vectorised
exponential against np.exp, its vectorised φ1 against np.expm1(z)/z, its backward over several channel blocks
against the same backward run block by block, and its forward (y, state after len − 1) in float64 and in float32 against the S6
layer's sequential path, with several chunks and several channel blocks (E not a multiple of the block)."""
import numpy as np
import pytest
from numba import njit

from parity_tests.tolerances import FAST_EXP_RTOL_BY_DTYPE, PHI1_RTOL_BY_DTYPE, assert_close
from reference.kernels.fast_exp import fast_exp, fast_phi1
from reference.kernels.selective import CHUNK, EB, EB_BACKWARD, selective_scan_fused, selective_scan_fused_vjp
from reference.layers.s6 import S6, S6_METHODS


@njit
def _fast_exp_all(z):
    out = np.empty_like(z)                                                          # (n,)
    for k in range(z.shape[0]):
        out[k] = fast_exp(z[k])
    return out


@njit
def _fast_phi1_all(z):
    out = np.empty_like(z)                                                          # (n,)
    for k in range(z.shape[0]):
        out[k] = fast_phi1(z[k])
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_fast_phi1_is_within_phi1_rtol_of_expm1_over_z(dtype):
    """z from −800 to 0 (magnitudes 1e-30 .. 800, both sides of the branch point |z| = ½, the tiny values where
    the polynomial is 1) and a little past 0 to 1: relative error against np.expm1(z)/z in float64 <=
    PHI1_RTOL_BY_DTYPE; special values: 0 → 1, −∞ → 0, ∞ → ∞, NaN → NaN."""
    half = np.asarray(0.5, dtype)
    branch = [np.nextafter(half, 0), half, np.nextafter(half, 1)]
    magnitudes = np.concatenate([np.logspace(-30, np.log10(800), 20000), branch]).astype(dtype)    # (20003,)
    z = np.concatenate([-magnitudes, magnitudes[magnitudes <= 1], np.zeros(1, dtype)])              # (≈ 34000,)
    z64 = z.astype(np.float64)                                                      # (≈ 34000,)
    nonzero = np.where(z64 == 0, 1.0, z64)                                          # (≈ 34000,)
    expected = np.where(z64 == 0, 1.0, np.expm1(nonzero) / nonzero)                 # (≈ 34000,)
    actual = _fast_phi1_all(z)
    assert actual.dtype == np.dtype(dtype)
    relative = np.abs(actual - expected) / expected
    worst = int(np.argmax(relative))
    assert relative[worst] <= PHI1_RTOL_BY_DTYPE[dtype], \
        f"fast_phi1 {dtype}: worst relative error {relative[worst]} at z = {z[worst]}"
    got = _fast_phi1_all(np.array([0.0, -np.inf, np.inf, np.nan], dtype))
    assert got[0] == 1 and got[1] == 0 and got[2] == np.inf and np.isnan(got[3]), got


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


@pytest.mark.parametrize("method", S6_METHODS)
def test_fused_backward_over_two_channel_blocks_equals_it_block_by_block(method):
    """E = EB_BACKWARD + 5 channels (two backward blocks, the second partial), float64, with τ, lengths, h0 and a
    gradient of the last state: the gradients equal those of the two channel ranges run separately (each one
    block; torch_tests/test_selective_op.py checks the one-block backward against autograd): per-channel
    gradients joined, those of A's rows joined, those of B_t and C_t (shared by the channels) summed."""
    E, L, N, batch = EB_BACKWARD + 5, 2 * CHUNK + 5, 3, 2
    rng = np.random.default_rng(11)
    v, gy = rng.normal(size=(batch, L, E)), rng.normal(size=(batch, L, E))                   # (b, L, E) each
    dt = np.exp(rng.uniform(-4, 0, (batch, L, E)))                                           # (b, L, E)
    A = -np.exp(rng.uniform(-1, 1, (E, N)))                                                  # (E, N)
    B, C = rng.normal(size=(batch, L, N)), rng.normal(size=(batch, L, N))                    # (b, L, N) each
    D = rng.normal(size=E)                                                                   # (E,)
    tau = np.exp(rng.uniform(-2, 1, (batch, L)))                                             # (b, L)
    tau[rng.uniform(size=tau.shape) < 0.3] = 0.0
    h0, gh_last = rng.normal(size=(batch, E, N)), rng.normal(size=(batch, E, N))            # (b, E, N) each
    lengths = np.array([L, CHUNK + 1])

    def vjp(channels):
        per_channel = [a[..., channels] for a in (v, dt)]
        args = per_channel + [A[channels], B, C, D[channels], tau]
        _, _, chunk_states = selective_scan_fused(*args, h0[:, channels], lengths, method)
        return selective_scan_fused_vjp(*args, lengths, method, chunk_states, gy[..., channels],
                                        gh_last[:, channels])

    whole = vjp(slice(None))
    first, second = vjp(slice(0, EB_BACKWARD)), vjp(slice(EB_BACKWARD, E))
    names = ("v", "dt", "A", "B", "C", "D", "h0")
    joined_axis = {"v": -1, "dt": -1, "A": 0, "D": 0, "h0": 1}
    for name, g, g1, g2 in zip(names, whole, first, second):
        expected = g1 + g2 if name in ("B", "C") else np.concatenate([g1, g2], axis=joined_axis[name])
        assert_close(g, expected, dtype="float64", what=f"fused backward, two blocks, gradient of {name} ({method})")
