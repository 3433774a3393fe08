"""The time-blocked pure-torch selective scan (`torch_backend.selective.selective_scan_blocked`, S6's path off the
CPU and `method="blocked"`): the same numbers as the whole-sequence definition for every block size, the same
gradients, and under autograd it keeps no (b, L, E, N) array (each block is recomputed in the backward pass).
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.strategies import CONTINUOUS_METHODS, examples, lengths_vector, rng_from, seeds, timesteps
from parity_tests.tolerances import assert_close
from torch_backend.discretize import discretize
from torch_backend.layers.s6 import S6
from torch_backend.scan import scan
from torch_backend.selective import selective_scan_blocked


def problem(rng, batch, L, E, N, with_tau, with_h0):
    """float64 tensors (v, Δ, B, C, D, A, τ, h0) of a random selective scan, τ with exact zeros."""
    t = lambda a: torch.tensor(a, dtype=torch.float64, requires_grad=True)                 # noqa: E731
    v, B, C = t(rng.normal(size=(batch, L, E))), t(rng.normal(size=(batch, L, N))), t(rng.normal(size=(batch, L, N)))
    dt = t(np.exp(rng.uniform(-4, 0, (batch, L, E))))
    A = -np.exp(rng.uniform(-1, 1, (E, N)))                                               # (E, N)
    tau = torch.tensor(timesteps(rng, batch, L), dtype=torch.float64) if with_tau else None
    h0 = t(rng.normal(size=(batch, E, N))) if with_h0 else None
    return v, dt, B, C, t(rng.normal(size=E)), torch.tensor(A), tau, h0


def definition(v, dt, B, C, D, A, tau, h0, last, method):
    """The whole-sequence scan: (b, L, E, N) arrays, then y and the state at `last`."""
    A_bar, gamma_bar = discretize(A, dt[..., None], method, tau)                         # (b, L, E, N)
    states = scan(A_bar, gamma_bar * B[:, :, None, :] * v[..., None], h0, method="sequential")
    y = torch.einsum("blen,bln->ble", states, C) + D * v                                 # (b, L, E)
    return y, states[torch.arange(v.shape[0]), last]


@settings(max_examples=examples(20))
@given(data=st.data())
def test_blocked_equals_the_definition_for_every_block_size(data):
    rng = rng_from(data.draw(seeds, label="seed"))
    batch, L = data.draw(st.integers(1, 3), label="batch"), data.draw(st.integers(1, 40), label="L")
    method = data.draw(st.sampled_from(CONTINUOUS_METHODS), label="discretization")
    block = data.draw(st.sampled_from([1, 2, 3, 8, L, L + 5]), label="block")
    v, dt, B, C, D, A, tau, h0 = problem(rng, batch, L, 3, 2, data.draw(st.booleans(), label="τ"),
                                         data.draw(st.booleans(), label="h0"))
    last = torch.tensor(lengths_vector(rng, batch, L) - 1)                               # (b,)
    system = lambda dt_, tau_: discretize(A, dt_[..., None], method, tau_)               # noqa: E731
    y, h = selective_scan_blocked(v, dt, B, C, D, system, tau, h0, last, block=block)
    y_def, h_def = definition(v, dt, B, C, D, A, tau, h0, last, method)
    assert_close(y.detach(), y_def.detach(), what=f"blocked y (block {block}, {method})")
    assert_close(h.detach(), h_def.detach(), what=f"blocked state at len − 1 (block {block}, {method})")
    G, G_h = torch.randn_like(y), torch.randn_like(h)
    inputs = [v, dt, B, C, D] + ([] if h0 is None else [h0])
    grads = torch.autograd.grad((y * G).sum() + (h * G_h).sum(), inputs)
    grads_def = torch.autograd.grad((y_def * G).sum() + (h_def * G_h).sum(), inputs)
    for name, g, g_def in zip(["v", "dt", "B", "C", "D", "h0"], grads, grads_def):
        assert_close(g, g_def, what=f"blocked gradient of {name} (block {block}, {method})")


def layer_case(config):
    """(float64 S6 with `config`, x (3, 300, 3): two blocks of 256, τ with zeros, lengths)."""
    rng = np.random.default_rng(0)
    batch, L = 3, 300
    x = torch.tensor(rng.normal(size=(batch, L, 3)))
    return (S6(d_model=3, d_state=4, seed=2, **config).double(), x, torch.tensor(timesteps(rng, batch, L)),
            torch.tensor(lengths_vector(rng, batch, L)))


@pytest.mark.parametrize("config", [{}, {"block": True, "d_conv": 3}, {"discretization": "zoh"}])
def test_layer_blocked_equals_sequential(config):
    """S6(method="blocked") == S6(method="sequential"): lengths, τ, an initial state and the final state."""
    layer, x, tau, lengths = layer_case(config)
    state = layer.init_state(x.shape[0])
    state = tuple(torch.randn_like(s) for s in state) if isinstance(state, tuple) else torch.randn_like(state)
    y, final = layer(x, lengths, tau, initial_state=state, return_state=True, method="blocked")
    y_seq, final_seq = layer(x, lengths, tau, initial_state=state, return_state=True, method="sequential")
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]                          # (b, L)
    assert_close(y[valid].detach(), y_seq[valid].detach(), what=f"blocked y {config}")
    last = (lambda f: f[-1] if isinstance(f, tuple) else f)                                # noqa: E731
    assert_close(last(final).detach(), last(final_seq).detach(), what=f"blocked final state {config}")


def test_bidirectional_layer_blocked_equals_sequential():
    layer, x, tau, lengths = layer_case({"bidirectional": True})
    valid = torch.arange(x.shape[1])[None, :] < lengths[:, None]                          # (b, L)
    assert_close(layer(x, lengths, tau, method="blocked")[valid].detach(),
                 layer(x, lengths, tau, method="sequential")[valid].detach(), what="bidirectional blocked y")


def saved_bytes(module, x, method):
    """Bytes autograd keeps for the backward pass of module(x, method=method)."""
    total = [0]

    def pack(tensor):
        total[0] += tensor.numel() * tensor.element_size()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        module(x, method=method)
    return total[0]


def test_blocked_keeps_no_whole_sequence_state_array_for_backward():
    """Under autograd the blocked path saves O(b·L·E) numbers (inputs, the carried states), the whole-sequence
    scan several (b, L, E, N) arrays: at N = 64 the blocked path keeps less than half of one of them."""
    batch, L, E, N = 2, 1024, 8, 64
    layer = S6(d_model=E, d_state=N, seed=0)
    x = torch.randn(batch, L, E, requires_grad=True)
    one_state_array = batch * L * E * N * 4                                               # float32 bytes
    blocked, whole = saved_bytes(layer, x, "blocked"), saved_bytes(layer, x, "chunked")
    assert blocked < one_state_array / 2, (blocked, one_state_array)
    assert whole > one_state_array, (whole, one_state_array)
