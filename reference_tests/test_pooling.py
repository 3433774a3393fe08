"""Pooling (SPEC §5): the vectorised reference against a loop over windows, and the invariants of §9."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from parity_tests.strategies import pooling_inputs, rng_from, seeds
from parity_tests.tolerances import assert_close
from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES, final_pool, pool

POOLING_MODES = tuple(m for m in INTERMEDIATE_MODES if m != "none")


def pool_loop(x, lengths, tau, mode, s):
    """SPEC §5.1 written as a loop over sequences and windows (the definition)."""
    batch, L, H = x.shape
    lengths = np.full(batch, L) if lengths is None else lengths
    L_out = -(-L // s)
    x_out, tau_out = np.zeros((batch, L_out, H)), np.zeros((batch, L_out))
    for b in range(batch):
        for k in range(L_out):
            valid = [t for t in range(k * s, min(k * s + s, L)) if t < lengths[b]]
            if not valid:
                continue
            window = x[b, valid]
            x_out[b, k] = {"stride": window[-1], "mean": window.mean(axis=0), "max": window.max(axis=0)}[mode]
            if tau is not None:
                tau_out[b, k] = tau[b, valid].sum()
    return x_out, tau_out


def garbage_in_padding(rng, x, lengths, tau):
    """Copies of x and τ with fresh random values at every padded position t >= len."""
    if lengths is None:
        return x, tau
    padded = np.arange(x.shape[1])[None, :] >= lengths[:, None]                      # (b, L)
    x = np.where(padded[..., None], rng.normal(0, 100, x.shape), x)
    if tau is not None:
        tau = np.where(padded, rng.uniform(0, 100, tau.shape), tau)
    return x, tau


@pytest.mark.parametrize("mode", POOLING_MODES)
@given(case=pooling_inputs())
def test_pool_equals_window_loop(mode, case):
    x, lengths, tau, s = case
    x_out, lengths_out, tau_out = pool(x, lengths, tau, mode=mode, stride=s)
    expected_x, expected_tau = pool_loop(x, lengths, tau, mode, s)
    assert_close(x_out, expected_x, what=f"pooled x ({mode}, s={s})")
    if tau is None:
        assert tau_out is None
    else:
        assert_close(tau_out, expected_tau, what="pooled timesteps")
    if lengths is None:
        assert lengths_out is None


@pytest.mark.parametrize("mode", POOLING_MODES)
@given(case=pooling_inputs(with_lengths=True, with_timesteps=True))
def test_pool_lengths_and_elapsed_time(mode, case):
    x, lengths, tau, s = case
    x_out, lengths_out, tau_out = pool(x, lengths, tau, mode=mode, stride=s)
    assert x_out.shape == (x.shape[0], -(-x.shape[1] // s), x.shape[2])
    np.testing.assert_array_equal(lengths_out, np.ceil(lengths / s).astype(int))
    valid = np.arange(x.shape[1])[None, :] < lengths[:, None]
    assert_close(tau_out.sum(axis=1), np.where(valid, tau, 0).sum(axis=1), what="Σ τ' == Σ valid τ")
    padded_out = np.arange(x_out.shape[1])[None, :] >= lengths_out[:, None]
    assert np.all(x_out[padded_out] == 0) and np.all(tau_out[padded_out] == 0)


@given(case=pooling_inputs(), value=st.floats(-10, 10))
def test_mean_of_a_constant_is_the_constant(case, value):
    x, lengths, tau, s = case
    x_out, lengths_out, _ = pool(np.full_like(x, value), lengths, tau, mode="mean", stride=s)
    n_out = np.full(x.shape[0], x_out.shape[1]) if lengths is None else lengths_out
    for b in range(x.shape[0]):
        assert_close(x_out[b, :n_out[b]], np.full_like(x_out[b, :n_out[b]], value), what="mean of a constant")


@given(case=pooling_inputs())
def test_max_bounds_every_valid_element_and_is_one_of_them(case):
    x, lengths, tau, s = case
    x_out, _, _ = pool(x, lengths, tau, mode="max", stride=s)
    n = np.full(x.shape[0], x.shape[1]) if lengths is None else lengths
    for b in range(x.shape[0]):
        for k in range(-(-n[b] // s)):
            window = x[b, k * s:min(k * s + s, n[b])]                                # (|V_k|, H)
            assert np.all(x_out[b, k] >= window)
            assert np.all(np.any(window == x_out[b, k], axis=0))


@given(case=pooling_inputs())
def test_stride_keeps_the_last_valid_element(case):
    x, lengths, tau, s = case
    x_out, _, _ = pool(x, lengths, tau, mode="stride", stride=s)
    n = np.full(x.shape[0], x.shape[1]) if lengths is None else lengths
    for b in range(x.shape[0]):
        for k in range(-(-n[b] // s)):
            np.testing.assert_array_equal(x_out[b, k], x[b, min(k * s + s, n[b]) - 1])


@pytest.mark.parametrize("mode", INTERMEDIATE_MODES)
@given(case=pooling_inputs())
def test_stride_one_is_the_identity(mode, case):
    x, lengths, tau, _ = case
    x_out, lengths_out, tau_out = pool(x, lengths, tau, mode=mode, stride=1)
    valid = np.ones(x.shape[:2], bool) if lengths is None else np.arange(x.shape[1]) < lengths[:, None]
    np.testing.assert_array_equal(x_out[valid], x[valid])
    if tau is not None:
        np.testing.assert_array_equal(tau_out[valid], tau[valid])
    if lengths is not None:
        np.testing.assert_array_equal(lengths_out, lengths)


@given(case=pooling_inputs())
def test_mode_none_is_the_identity_for_every_stride(case):
    x, lengths, tau, s = case
    x_out, lengths_out, tau_out = pool(x, lengths, tau, mode="none", stride=s)
    np.testing.assert_array_equal(x_out, x)
    assert (lengths_out is None) == (lengths is None) and (tau_out is None) == (tau is None)


@given(case=pooling_inputs(with_lengths=True), seed=seeds)
def test_padded_values_never_change_a_pooled_result(case, seed):
    x, lengths, tau, s = case
    x_pad, tau_pad = garbage_in_padding(rng_from(seed), x, lengths, tau)
    for mode in INTERMEDIATE_MODES:
        clean, dirty = pool(x, lengths, tau, mode=mode, stride=s), pool(x_pad, lengths, tau_pad, mode=mode, stride=s)
        valid = np.arange(clean[0].shape[1])[None, :] < clean[1][:, None]
        np.testing.assert_array_equal(clean[0][valid], dirty[0][valid])
        if mode != "none":
            np.testing.assert_array_equal(clean[0], dirty[0])
            if tau is not None:
                np.testing.assert_array_equal(clean[2], dirty[2])
    for mode in FINAL_MODES:
        np.testing.assert_array_equal(final_pool(x, lengths, mode=mode), final_pool(x_pad, lengths, mode=mode))


@given(case=pooling_inputs())
def test_final_pooling_over_valid_positions(case):
    x, lengths, _, _ = case
    n = np.full(x.shape[0], x.shape[1]) if lengths is None else lengths
    last, mean, top = (final_pool(x, lengths, mode=m) for m in ("last", "mean", "max"))
    for b in range(x.shape[0]):
        np.testing.assert_array_equal(last[b], x[b, n[b] - 1])
        assert_close(mean[b], x[b, :n[b]].mean(axis=0), what="final mean")
        np.testing.assert_array_equal(top[b], x[b, :n[b]].max(axis=0))


def test_ceil_mode_regression():
    """L = 7, s = 3, len = (7, 5): windows [0,3) [3,6) [6,7); the partial tail window is kept."""
    x = np.tile(np.arange(1.0, 8.0)[None, :, None], (2, 1, 1))                      # (2, 7, 1)
    lengths, tau = np.array([7, 5]), np.ones((2, 7))
    expected = {"stride": [[3, 6, 7], [3, 5, 0]], "mean": [[2, 5, 7], [2, 4.5, 0]], "max": [[3, 6, 7], [3, 5, 0]]}
    for mode, values in expected.items():
        x_out, lengths_out, tau_out = pool(x, lengths, tau, mode=mode, stride=3)
        np.testing.assert_array_equal(x_out[..., 0], values)
        np.testing.assert_array_equal(lengths_out, [3, 2])
        np.testing.assert_array_equal(tau_out, [[3, 3, 1], [3, 2, 0]])


INVALID_POOL = [
    (dict(mode="avg", stride=2), ValueError, "mode must be one of none, stride, mean, max"),
    (dict(mode="mean", stride=0), ValueError, "stride must be >= 1"),
    (dict(mode="mean", stride=2.0), TypeError, "stride must be an integer"),
    (dict(mode="max", stride=True), TypeError, "stride must be an integer"),
    (dict(mode="mean", stride=2, lengths=np.array([0, 3])), ValueError, "1 <= lengths <= L=4, got 0"),
    (dict(mode="mean", stride=2, lengths=np.array([5, 3])), ValueError, "1 <= lengths <= L=4, got 5"),
    (dict(mode="mean", stride=2, lengths=np.array([3])), ValueError, "lengths must have shape (b=2,)"),
    (dict(mode="mean", stride=2, lengths=np.array([3.0, 2.0])), TypeError, "lengths must be an integer array"),
    (dict(mode="stride", stride=2, integration_timesteps=-np.ones((2, 4))), ValueError, "finite and >= 0"),
    (dict(mode="stride", stride=2, integration_timesteps=np.ones((2, 3))), ValueError, "must have shape (b, L)"),
    (dict(mode="stride", stride=2, x=np.ones((2, 4))), ValueError, "x must have shape (b, L, H)"),
]


@pytest.mark.parametrize("kwargs, error, message", INVALID_POOL)
def test_pool_rejects_invalid_arguments(kwargs, error, message):
    kwargs = {"x": np.ones((2, 4, 3)), **kwargs}
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        pool(**kwargs)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(mode="first"), ValueError, "mode must be one of last, mean, max"),
    (dict(mode="last", lengths=np.array([0, 2])), ValueError, "1 <= lengths <= L=4, got 0"),
    (dict(mode="mean", lengths=np.array([2, 9])), ValueError, "1 <= lengths <= L=4, got 9"),
])
def test_final_pool_rejects_invalid_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        final_pool(np.ones((2, 4, 3)), **kwargs)
