"""SPEC §4.7, what only MultiresConv has: the Haar tree, the depth rule, the read-out plan, the parameter count,
tree == dense kernel (built here independently by composing the filters), streaming on an input history, the
refusal of timesteps. The registry properties (causality, padding, carry, ...) run in test_layers.py, parity with
the backend in parity_tests, the torch class's own checks in torch_tests/test_multiresconv.py."""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from reference.layers.multiresconv import (MultiresConv, multires_depth, multires_tree, readout_plan,
                                           receptive_field, uniform_memory_max)
from parity_tests.strategies import LAYER_CONFIGS, batch_sizes, rng_from, seeds, sequence_lengths
from parity_tests.tolerances import assert_close

configs = LAYER_CONFIGS["MultiresConv"].configs


def upsample(g, dilation):
    """Filter taps g (lag order) spread to lags 0, d, 2d, ...: the polynomial g(z^d)."""
    spread = np.zeros((len(g) - 1) * dilation + 1)
    spread[::dilation] = g
    return spread


def composed_kernel(layer):
    """The dense kernel (R, H) written as products of filter polynomials, independently of the tree code."""
    g0, g1, w = layer.params["g0"], layer.params["g1"], layer.params["w"]
    R = layer.receptive_field
    K = np.zeros((R, layer.d_model))
    for h in range(layer.d_model):
        A, details = np.ones(1), []
        for l in range(1, layer.depth + 1):
            details.append(np.convolve(A, upsample(g1[h], 2 ** (l - 1))))       # B_l(z) = G1(z^d) A_{l−1}(z)
            A = np.convolve(A, upsample(g0[h], 2 ** (l - 1)))                   # A_l(z) = G0(z^d) A_{l−1}(z)
        parts = [w[h, 0] * A, np.array([w[h, -1]])]
        parts += [np.convolve(details[l - 1], upsample(w[h, c:c + n], 2 ** l)) for l, n, c in layer.plan]
        for part in parts:
            assert len(part) <= R, "a read-out term reaches beyond the receptive field"
            K[:len(part), h] += part
    return K


# ----------------------------------------------------------------------------- the tree
@given(L=sequence_lengths(80), seed=seeds)
def test_haar_filters_give_scaled_moving_sums(L, seed):
    """g0 = [1, 1]/√2, g1 = [−1, 1]/√2 (lag order): a⁽ˡ⁾_t = 2^(−l/2) Σ_{s<2^l} x_{t−s}, b⁽¹⁾_t = (x_{t−1} − x_t)/√2."""
    x = rng_from(seed).normal(size=(2, L, 3))
    g0 = np.tile([1.0, 1.0], (3, 1)) / np.sqrt(2)
    g1 = np.tile([-1.0, 1.0], (3, 1)) / np.sqrt(2)
    padded = np.concatenate([np.zeros((2, 2 ** 5, 3)), x], axis=1)
    for l in range(1, 6):
        approximation, details = multires_tree(x, g0, g1, depth=l)
        moving_sum = sum(padded[:, 2 ** 5 - s: 2 ** 5 - s + L] for s in range(2 ** l))
        assert_close(approximation, 2.0 ** (-l / 2) * moving_sum, what=f"a^({l})")
        assert_close(details[0], (padded[:, 2 ** 5 - 1: 2 ** 5 - 1 + L] - x) / np.sqrt(2), what="b^(1)")


@given(config=configs(), L=sequence_lengths(70), batch=batch_sizes, seed=seeds)
def test_tree_equals_dense_kernel_convolution(config, L, batch, seed):
    layer = MultiresConv(**config)
    x = rng_from(seed).normal(size=(batch, L, layer.d_model))
    R = layer.receptive_field
    K = composed_kernel(layer)                                                  # (R, H)
    assert_close(layer.kernel(R + 3), np.concatenate([K, np.zeros((3, layer.d_model))]), what="kernel")
    assert_close(layer.kernel(L), np.concatenate([K, np.zeros((max(L - R, 0), layer.d_model))])[:L],
                 what="kernel truncated or padded to L")
    direct = np.stack([sum(K[s] * x[:, t - s] for s in range(min(t + 1, R))) for t in range(L)], axis=1)
    assert_close(layer(x), direct, what="tree vs direct dense convolution")
    assert_close(layer(x, method="fft"), direct, what="fft vs direct dense convolution")


# ----------------------------------------------------------------------------- sizes
DEPTH_CASES = [(2, 1, 1), (2, 2, 1), (2, 3, 2), (2, 1024, 10), (2, 1025, 11), (3, 2, 1), (3, 4, 2), (3, 1024, 10),
               (4, 1, 1), (4, 3, 1), (4, 4, 1), (4, 5, 2), (4, 1000, 9), (5, 17, 3), (7, 100, 5)]


@pytest.mark.parametrize("kernel_size, max_len, expected", DEPTH_CASES)
def test_depth_table(kernel_size, max_len, expected):
    """Includes max_len = 1, max_len < k and non powers of two; the layer's default uses the same rule."""
    assert multires_depth(kernel_size, max_len) == expected
    assert MultiresConv(2, kernel_size, max_len=max_len).depth == expected


@given(kernel_size=st.integers(2, 9), max_len=st.integers(1, 10 ** 7))
def test_depth_is_the_smallest_covering_depth(kernel_size, max_len):
    """Brute force over J = 1..40 with integers: the first J whose receptive field reaches max_len."""
    covering = [J for J in range(1, 41) if 1 + (kernel_size - 1) * (2 ** J - 1) >= max_len]
    assert multires_depth(kernel_size, max_len) == covering[0]


@given(config=configs())
def test_parameter_count(config):
    layer = MultiresConv(**config)
    k, J, H = layer.kernel_size, layer.depth, layer.d_model
    width = J + 2 if config["memory"] == "fading" else config["memory_size"] + 1
    assert sum(p.size for p in layer.params.values()) == H * (2 * k + width)
    assert {name: p.shape for name, p in layer.params.items()} == {"g0": (H, k), "g1": (H, k), "w": (H, width)}


def test_readout_plans():
    """Fading: one entry per level. Uniform: n_J = 1, n_{l−1} = 2(n_l − 1) + k from the coarsest level down."""
    assert readout_plan(2, 3, "fading", None) == (((1, 1, 3), (2, 1, 2), (3, 1, 1)), 5)
    assert readout_plan(2, 3, "uniform", 8) == (((3, 1, 1), (2, 2, 2), (1, 4, 4)), 9)
    assert readout_plan(3, 2, "uniform", 5) == (((2, 1, 1), (1, 3, 2)), 6)
    assert readout_plan(3, 3, "uniform", 7) == (((3, 1, 1), (2, 3, 2), (1, 2, 5)), 8)   # last level truncated
    assert readout_plan(2, 4, "uniform", 1) == ((), 2)
    assert [uniform_memory_max(2, J) for J in range(1, 6)] == [2, 4, 8, 16, 32]
    assert uniform_memory_max(3, 2) == 5 and receptive_field(3, 2) == 7


# ----------------------------------------------------------------------------- streaming
@given(config=configs(), L=sequence_lengths(40), batch=batch_sizes, seed=seeds)
def test_step_equals_forward_from_a_history(config, L, batch, seed):
    layer = MultiresConv(**config)
    rng = rng_from(seed)
    x = rng.normal(size=(batch, L, layer.d_model))
    history = rng.normal(size=(batch, layer.receptive_field - 1, layer.d_model))
    y, final = layer(x, initial_state=history, return_state=True)
    state, steps = history, []
    for t in range(L):
        y_t, state = layer.step(x[:, t], state)
        steps.append(y_t)
    assert_close(np.stack(steps, axis=1), y, what="step vs forward")
    assert_close(state, final, what="final history")
    whole = np.concatenate([history, x], axis=1)
    assert_close(final, whole[:, -(layer.receptive_field - 1):], what="history = last R − 1 inputs")


def test_state_is_the_input_history_and_grows_with_the_receptive_field():
    layer = MultiresConv(3, kernel_size=3, max_len=100)                       # J = 6, R = 127
    assert layer.init_state(2).shape == (2, (3 - 1) * (2 ** 6 - 1), 3) == (2, 126, 3)
    x = np.arange(2 * 5 * 3, dtype=float).reshape(2, 5, 3)
    _, state = layer(x, lengths=np.array([2, 5]), return_state=True)
    assert_close(state[0, -2:], x[0, :2], what="history ends at len − 1")
    assert_close(state[0, :-2], np.zeros((124, 3)), what="zeros before the first input")
    assert_close(state[1, -5:], x[1], what="full-length row")


# ----------------------------------------------------------------------------- refusals
def test_errors_name_the_rule():
    layer = MultiresConv(2, max_len=8, seed=0)
    x = np.zeros((1, 4, 2))
    with pytest.raises(ValueError, match="not a recurrence and has no timesteps"):
        layer(x, integration_timesteps=np.ones((1, 4)))
    with pytest.raises(ValueError, match="not a recurrence and has no timesteps"):
        layer.step(x[:, 0], layer.init_state(1), integration_timestep=np.ones(1))
    with pytest.raises(ValueError, match="method must be one of sequential, fft"):
        layer(x, method="blelloch")
    with pytest.raises(ValueError, match="time-invariant"):
        layer(x, initial_state=layer.init_state(1), method="fft")
    with pytest.raises(ValueError, match=r"initial_state must have shape \(1, 7, 2\)"):
        layer(x, initial_state=np.zeros((1, 3, 2)))
    with pytest.raises(TypeError, match="must be real"):
        layer(x, initial_state=np.zeros((1, 7, 2), complex))
    with pytest.raises(ValueError, match="kernel_size must be >= 2"):
        MultiresConv(2, kernel_size=1)
    with pytest.raises(ValueError, match="memory must be one of fading, uniform"):
        MultiresConv(2, memory="exponential")
    with pytest.raises(ValueError, match="applies only to memory='uniform'"):
        MultiresConv(2, memory_size=4)
    with pytest.raises(ValueError, match=r"needs memory_size, an integer in \[1, 8\]"):
        MultiresConv(2, max_len=8, memory="uniform")
    with pytest.raises(ValueError, match="memory_size must be <= 8"):
        MultiresConv(2, max_len=8, memory="uniform", memory_size=9)
    with pytest.raises(TypeError, match="d_state"):
        MultiresConv(2, d_state=4)
