"""Bidirectional reference layers (SPEC §4.12), over every registry layer whose constructor has `bidirectional`.

Configs come from `parity_tests.strategies.LAYER_CONFIGS` with bidirectional=True added. Properties:
* the bidirectional layer == the forward layer + a causal layer with C := C_back (D := 0) run on the
  length-reversed rows with the reversed gaps, reversed back (layers whose read-out is a sum over directions;
  bare S6: x_proj's C rows := x_proj_back);
* matrix-state layers (GLA, GatedDeltaNet, DeltaProduct): the heads' outputs before the norm, o == o^f + the o
  of a causal layer with W_q := W_q_back on the reversed rows, reversed back; y == read_out(o); o − o^f anti-causal;
* padding invariance (random padding values): each row equals the unpadded sequence alone;
* anti-causality of the backward part: perturbing u_t leaves the backward contribution at s > t unchanged
  (at s > t + K − 1 for the Mamba mixer, whose shared causal conv of width K feeds both directions);
* time-invariant layers: the two-sided kernel (2L − 1, ...) applied by a direct sum == the scan == method="fft";
* τ ≡ 1 == no τ; the forward parameters of a seed do not change with the option;
* the reversed-gaps rule on a worked example; errors: step, initial_state, return_state, a non-bool option;
* S5 against the official code's bidirectional convention (C̃ (H, 2P) over the concatenated states), re-derived
  from its formula for random configs; the official code's own outputs (golden vectors, float64 under JAX) are
  checked in parity_tests/test_golden_s5_bidirectional.py.
"""
import inspect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from parity_tests.strategies import (batch_sizes, examples, layer_config, lengths_vector, rng_from, seeds,
                                     sequence_lengths, timesteps)
from parity_tests.tolerances import assert_close
from reference.layers import REGISTRY
from reference.layers._bidirectional import reverse_within, reversed_gaps

LAYERS = sorted(name for name, cls in REGISTRY.items() if "bidirectional" in inspect.signature(cls).parameters)
# Matrix-state layers (SPEC §4.11): the heads' outputs add, o = o^f + o^b, before one per-head RMSNorm and W_out,
# so y is not a sum over the directions; their own property pins o instead.
HEAD_SUM_LAYERS = [name for name in LAYERS if name in ("GLA", "GatedDeltaNet", "DeltaProduct")]
# Read-outs that are a sum over the two directions, y = read_out(h^f) + read_out_back(h^b) (+ one D term): every
# layer but LSSL, whose read-out is W_out·gelu of the concatenated features, and the matrix-state layers.
SUM_LAYERS = [name for name in LAYERS if name != "LSSL" and name not in HEAD_SUM_LAYERS]
# ... and whose backward read-out replaces a forward parameter of the same shape (C_back for C; not S7's x_proj_back,
# which produces C^b_t from the input): there the backward part is a causal layer with C := C_back.
SWAP_LAYERS = [name for name in SUM_LAYERS if not layer_config(name).input_dependent]
TIME_INVARIANT = [name for name in LAYERS if layer_config(name).linear and not layer_config(name).input_dependent
                  and hasattr(REGISTRY[name], "kernel")]   # y linear in x: the kernel is the layer's
TIMESTEP_LAYERS = [name for name in LAYERS if layer_config(name).timesteps]
# Variants the registry configs do not draw: (name, constructor overrides), with pytest ids.
GRIFFIN_BLOCK = {"block": True, "num_heads": 1, "lru_width": 3, "conv1d_temporal_width": 3}
MAMBA_BLOCK = {"block": True, "expand": 1, "d_conv": 3}
VARIANTS = [pytest.param(name, None, id=name) for name in LAYERS] + \
    ([pytest.param("RGLRU", GRIFFIN_BLOCK, id="RGLRU-block")] if "RGLRU" in LAYERS else []) + \
    ([pytest.param("S6", MAMBA_BLOCK, id="S6-block")] if "S6" in LAYERS else [])
SUM_VARIANTS = [p for p in VARIANTS if p.values[0] in SUM_LAYERS]


# ----------------------------------------------------------------------------- helpers
def draw_case(data, name, *, max_len=40, events=None, overrides=None):
    """(bidirectional layer, x (b, L, H) with random padding values, lengths (b,), τ (b, L) or None, rng)."""
    config = {**data.draw(layer_config(name).configs(), label="config"), **(overrides or {}), "bidirectional": True}
    layer = REGISTRY[name](**config)
    batch, L = data.draw(batch_sizes, label="batch"), data.draw(sequence_lengths(max_len), label="L")
    rng = rng_from(data.draw(seeds, label="data seed"))
    x = rng.normal(size=(batch, L, config["d_model"]))                              # (b, L, H)
    lengths = lengths_vector(rng, batch, L)                                          # (b,)
    x[np.arange(L)[None, :] >= lengths[:, None]] = 1e3 * rng.normal()               # garbage in the padding
    use_events = layer_config(name).timesteps and (data.draw(st.booleans(), label="events") if events is None
                                                   else events)
    tau = timesteps(rng, batch, L) if use_events else None                           # (b, L)
    return layer, x, lengths, tau, rng


def forward_layer(layer):
    """The causal layer with the bidirectional layer's forward parameters (its `_back` ones left out)."""
    params = {key: value for key, value in layer.params.items() if "_back" not in key}
    return type(layer).from_params({**layer.config, "bidirectional": False}, params)


def backward_causal_layer(layer, name):
    """The causal layer reading out with the backward read-out (C := C_back) and no feed-through."""
    params = {key.replace("_back", ""): value for key, value in layer.params.items() if "_back" in key}
    params = {**forward_layer(layer).params, **params}
    params.update({key: np.zeros_like(params[key]) for key in layer_config(name).feedthrough if key in params})
    return type(layer).from_params({**layer.config, "bidirectional": False}, params)


def valid_mask(lengths, L):
    return np.arange(L)[None, :] < lengths[:, None]                                  # (b, L)


def backward_reach(layer):
    """How many steps after u_t the backward part may still change: 0, but K − 1 for the Mamba mixer, whose
    directions share one causal conv (width K), so its backward part is anti-causal in the conv output v."""
    return layer.d_conv - 1 if type(layer).__name__ == "S6" and layer.block else 0


# ----------------------------------------------------------------------------- properties
@pytest.mark.parametrize("name", SWAP_LAYERS)
@given(data=st.data())
def test_equals_forward_plus_reversed_causal_layer(name, data):
    layer, x, lengths, tau, _ = draw_case(data, name)
    forward, backward = forward_layer(layer), backward_causal_layer(layer, name)
    expected = forward(x, lengths, tau) + reverse_within(
        backward(reverse_within(x, lengths), lengths, reversed_gaps(tau, lengths)), lengths)   # (b, L, H)
    valid = valid_mask(lengths, x.shape[1])
    assert_close(layer(x, lengths, tau)[valid], expected[valid], what=f"{name} bidirectional == forward + reversed")


@given(data=st.data())
def test_s6_equals_forward_plus_reversed_causal_layer(data):
    """Bare S6: the backward part is a causal S6 whose x_proj C rows are x_proj_back (D := 0) on the
    length-reversed rows with the reversed gaps, reversed back (C^b_t comes from the input, like C_t)."""
    layer, x, lengths, tau, _ = draw_case(data, "S6")
    N = layer.d_state
    params = {**forward_layer(layer).params, "D": np.zeros(layer.d_inner)}
    params["x_proj.weight"] = np.concatenate([params["x_proj.weight"][:-N], layer.params["x_proj_back.weight"]])
    backward = type(layer).from_params({**layer.config, "bidirectional": False}, params)
    expected = forward_layer(layer)(x, lengths, tau) + reverse_within(
        backward(reverse_within(x, lengths), lengths, reversed_gaps(tau, lengths)), lengths)   # (b, L, H)
    valid = valid_mask(lengths, x.shape[1])
    assert_close(layer(x, lengths, tau)[valid], expected[valid], what="S6 bidirectional == forward + reversed")


@pytest.mark.parametrize("name, overrides", VARIANTS)
@given(data=st.data())
def test_padding_invariance(name, overrides, data):
    layer, x, lengths, tau, _ = draw_case(data, name, overrides=overrides)
    y = layer(x, lengths, tau)                                                       # (b, L, H)
    for i, n in enumerate(lengths):
        alone = layer(x[i:i + 1, :n], integration_timesteps=None if tau is None else tau[i:i + 1, :n])
        assert_close(y[i:i + 1, :n], alone, what=f"{name} row {i} of length {n} == the unpadded sequence")


@pytest.mark.parametrize("name, overrides", SUM_VARIANTS)
@given(data=st.data())
def test_backward_part_is_anti_causal(name, overrides, data):
    layer, x, lengths, tau, rng = draw_case(data, name, overrides=overrides)
    forward = forward_layer(layer)
    t = data.draw(st.integers(0, x.shape[1] - 1), label="perturbed step")
    perturbed = x.copy()
    perturbed[:, t] += rng.normal(size=perturbed[:, t].shape)
    part, part_perturbed = (layer(u, lengths, tau) - forward(u, lengths, tau) for u in (x, perturbed))
    reach = t + backward_reach(layer)
    later = valid_mask(lengths, x.shape[1]) & (np.arange(x.shape[1]) > reach)[None, :]   # (b, L): valid s > reach
    assert_close(part_perturbed[later], part[later], what=f"{name} backward part after step {reach}")
    # without τ (a zero gap may drop u_t: zoh's γ̄ vanishes with the step) a valid perturbation reaches the past;
    # compared on the backward part itself, which can be small beside the forward part (S6's Δ_t ≈ 1e-3)
    earlier = (np.arange(x.shape[1]) < t)[None, :] & (t < lengths)[:, None]        # (b, L): s < t, t valid
    if tau is None and earlier.any():
        assert not np.allclose(part_perturbed[earlier], part[earlier])


@pytest.mark.parametrize("name", TIME_INVARIANT)
@given(data=st.data())
def test_two_sided_kernel_equals_scan(name, data):
    layer, x, lengths, _, _ = draw_case(data, name, events=False)
    L = x.shape[1]
    K = layer.kernel(L)                                                              # (2L − 1, H, H) or (2L − 1, H)
    assert K.shape[0] == 2 * L - 1
    u = x * valid_mask(lengths, L)[..., None]                                        # zero past len
    lag = np.arange(L)[:, None] - np.arange(L)[None, :]                              # (t, s): l = t − s
    K_ts = K[L - 1 + lag]                                                            # (L, L, ...)
    direct = (np.einsum("tsoh,bsh->bto", K_ts, u) if K.ndim == 3 else np.einsum("tsh,bsh->bth", K_ts, u))
    valid = valid_mask(lengths, L)
    scanned = layer(x, lengths)
    assert_close(scanned[valid], direct[valid], what=f"{name} scan == two-sided kernel sum")
    assert_close(layer(x, lengths, method="fft")[valid], scanned[valid], what=f"{name} fft == scan")


@pytest.mark.parametrize("name", TIMESTEP_LAYERS)
@given(data=st.data())
def test_unit_timesteps_are_synchronous(name, data):
    layer, x, lengths, _, _ = draw_case(data, name, events=False)
    valid = valid_mask(lengths, x.shape[1])
    assert_close(layer(x, lengths, np.ones(x.shape[:2]))[valid], layer(x, lengths)[valid],
                 what=f"{name} τ ≡ 1 == synchronous")


@pytest.mark.parametrize("name, overrides", VARIANTS)
@settings(max_examples=examples(5))
@given(data=st.data())
def test_forward_parameters_do_not_change_with_the_option(name, overrides, data):
    config = {**data.draw(layer_config(name).configs(), label="config"), **(overrides or {})}
    causal, both = REGISTRY[name](**config), REGISTRY[name](**config, bidirectional=True)
    assert set(causal.params) <= set(both.params)          # equal for the bare RG-LRU (read-out [I | I])
    assert all("_back" in key for key in set(both.params) - set(causal.params))
    for key, value in causal.params.items():
        np.testing.assert_array_equal(both.params[key], value, err_msg=f"{name} parameter {key}")


def test_reversed_gaps_worked_example():
    tau = np.array([[1.0, 2.0, 3.0, 4.0, 9.0], [5.0, 6.0, 7.0, 8.0, 9.0]])
    lengths = np.array([4, 5])
    np.testing.assert_array_equal(reversed_gaps(tau, lengths), [[1.0, 4.0, 3.0, 2.0, 9.0], [5.0, 9.0, 8.0, 7.0, 6.0]])
    x = np.arange(10.0).reshape(2, 5, 1)
    np.testing.assert_array_equal(reverse_within(x, lengths)[..., 0], [[3, 2, 1, 0, 4], [9, 8, 7, 6, 5]])


def heads_output(layer, *args):
    """o (b, L, h, d_v): what a matrix-state layer call hands its read-out (the heads' outputs before the norm)."""
    captured = []
    layer.read_out = lambda o: captured.append(o) or type(layer).read_out(layer, o)
    layer(*args)
    del layer.read_out
    return captured[0]


@pytest.mark.parametrize("name", HEAD_SUM_LAYERS)
@given(data=st.data())
def test_matrix_state_heads_output_is_forward_plus_reversed(name, data):
    """SPEC §4.12 for §4.11: o = the forward layer's o + the o of a causal layer with W_q := W_q_back on the
    length-reversed rows with the reversed gaps (k, v, β, the gates shared), reversed back; y = read_out(o), the
    per-head RMSNorm and W_out applied once to the sum."""
    layer, x, lengths, tau, _ = draw_case(data, name)
    forward, backward = forward_layer(layer), backward_causal_layer(layer, name)
    expected = heads_output(forward, x, lengths, tau) + reverse_within(
        heads_output(backward, reverse_within(x, lengths), lengths, reversed_gaps(tau, lengths)), lengths)
    valid = valid_mask(lengths, x.shape[1])
    assert_close(heads_output(layer, x, lengths, tau)[valid], expected[valid], what=f"{name} o == o^f + reversed o^b")
    assert_close(layer(x, lengths, tau)[valid], layer.read_out(expected)[valid], what=f"{name} y == read_out(o)")


@pytest.mark.parametrize("name", HEAD_SUM_LAYERS)
@given(data=st.data())
def test_matrix_state_backward_heads_output_is_anti_causal(name, data):
    """Perturbing u_t leaves o − o^f (the backward direction's heads' outputs) unchanged at valid s > t."""
    layer, x, lengths, tau, rng = draw_case(data, name)
    forward = forward_layer(layer)
    t = data.draw(st.integers(0, x.shape[1] - 1), label="perturbed step")
    perturbed = x.copy()
    perturbed[:, t] += rng.normal(size=perturbed[:, t].shape)
    part, part_perturbed = (heads_output(layer, u, lengths, tau) - heads_output(forward, u, lengths, tau)
                            for u in (x, perturbed))
    later = valid_mask(lengths, x.shape[1]) & (np.arange(x.shape[1]) > t)[None, :]  # (b, L): valid s > t
    assert_close(part_perturbed[later], part[later], what=f"{name} backward heads' output after step {t}")


@pytest.mark.parametrize("name, overrides", VARIANTS)
@settings(max_examples=examples(3))
@given(data=st.data())
def test_errors_name_the_option(name, overrides, data):
    config = {**data.draw(layer_config(name).configs(), label="config"), **(overrides or {}), "bidirectional": True}
    layer = REGISTRY[name](**config)
    x = np.zeros((2, 3, config["d_model"]))
    with pytest.raises(ValueError, match="bidirectional=True"):
        layer.step(x[:, 0], layer.init_state(2))
    with pytest.raises(ValueError, match="bidirectional=True"):
        layer(x, initial_state=layer.init_state(2))
    with pytest.raises(ValueError, match="bidirectional=True"):
        layer(x, return_state=True)
    with pytest.raises(TypeError, match="bidirectional must be a bool"):
        REGISTRY[name](**{**config, "bidirectional": "yes"})


@pytest.mark.parametrize("conj_sym", [False, True])
@settings(max_examples=examples(5))
@given(data=st.data())
def test_s5_matches_the_official_bidirectional_convention(conj_sym, data):
    """lindermanlab/S5 `apply_ssm(bidirectional=True)` on unpadded rows: shared Λ̄, B̄; a reverse scan
    x^b_t = Λ̄ x^b_{t+1} + B̄ u_t; states concatenated (forward, backward) and read out by C̃ of shape (H, 2P);
    y = κ Re(C̃ [x^f; x^b]) + D u. Here C̃ = [C | C_back] is built from our parameters."""
    from reference.layers.s5 import S5
    d_state = data.draw(st.sampled_from([2, 4]), label="d_state")
    layer = S5(d_model=data.draw(st.integers(1, 3), label="d_model"), d_state=d_state, conj_sym=conj_sym,
               bidirectional=True, seed=data.draw(seeds, label="seed"))
    x = rng_from(data.draw(seeds, label="data seed")).normal(size=(1, data.draw(sequence_lengths(20), label="L"),
                                                                   layer.d_model))    # (1, L, H)
    Lambda_bar, gamma_bar, B, C, D = layer.discrete_system()                         # (P,), (P,), (P, H), (H, P)
    Bu = np.einsum("ph,lh->lp", gamma_bar[:, None] * B, x[0])                        # (L, P)
    forward, backward = np.zeros_like(Bu), np.zeros_like(Bu)                         # (L, P)
    for t in range(Bu.shape[0]):
        forward[t] = Bu[t] + (Lambda_bar * forward[t - 1] if t else 0)
    for t in reversed(range(Bu.shape[0])):
        backward[t] = Bu[t] + (Lambda_bar * backward[t + 1] if t + 1 < Bu.shape[0] else 0)
    C_tilde = np.concatenate([C, layer.params["C_back_re"] + 1j * layer.params["C_back_im"]], axis=1)   # (H, 2P)
    xs = np.concatenate([forward, backward], axis=1)                                 # (L, 2P)
    expected = layer.kappa * np.einsum("hq,lq->lh", C_tilde, xs).real + D * x[0]     # (L, H)
    assert_close(layer(x)[0], expected, what=f"S5 bidirectional (conj_sym={conj_sym}) vs the official convention")
