"""Torch-only checks of the matrix-state layers (SPEC §4.11): the chunkwise path is differentiable (gradcheck in
float64), float32 chunkwise stays within the float32 table of the float64 sequential reference (SPEC §4.11.7, relative
to max|o|), the torch default method is "chunkwise", and the decay-free variants (not drawn by the registry
configs) match the reference and refuse τ like it.
"""
import numpy as np
import pytest
import torch

import reference
import torch_backend
from parity_tests.tolerances import assert_close
from reference.layers import matrix_state as ref_ops
from torch_backend.layers import matrix_state as ops

VARIANTS = [("GLA", {"use_gate": False}), ("GatedDeltaNet", {"use_gate": False, "allow_neg_eigval": True}),
            ("DeltaProduct", {"use_forget_gate": False, "n_householder": 3}),
            ("GLA", {}), ("GatedDeltaNet", {}), ("DeltaProduct", {})]


def unit(z):
    return z / np.linalg.norm(z, axis=-1, keepdims=True)


def inputs(rng, b, L, h, d_k, d_v, n_h=1, vector_gate=False):
    """q, unit keys, v, β ∈ [0, 2], log α <= 0 (per head, or per key for GLA): float64 NumPy arrays."""
    return {"q": rng.normal(size=(b, L, h, d_k)), "k": unit(rng.normal(size=(b, n_h * L, h, d_k))),
            "v": rng.normal(size=(b, n_h * L, h, d_v)), "beta": rng.uniform(0.0, 2.0, (b, n_h * L, h)),
            "log_alpha": -rng.exponential(0.1, (b, L, h, d_k) if vector_gate else (b, L, h)),
            "initial_state": rng.normal(size=(b, h, d_k, d_v))}


def tensors(arrays, dtype=torch.float64, grad=False):
    return {k: torch.tensor(v, dtype=dtype, requires_grad=grad) for k, v in arrays.items()}


# ----------------------------------------------------------------------------- differentiability
@pytest.mark.parametrize("family", ["gla", "delta", "product"])
def test_chunkwise_passes_gradcheck(family):
    """Autograd through the chunkwise form (masked exp, batched triangular solve, carried state) == finite
    differences, for q, k, v, β, log α and the initial state; L = 5 with C = 2 (a shorter last chunk)."""
    n_h = 2 if family == "product" else 1
    arrays = inputs(np.random.default_rng(0), 1, 5, 1, 2, 2, n_h, vector_gate=family == "gla")
    if family == "gla":
        arrays.pop("beta")
    t = tensors(arrays, grad=True)
    names = list(t)

    def run(*values):
        a = dict(zip(names, values))
        if family == "gla":
            return ops.gla_recurrence(a["q"], a["k"], a["v"], a["log_alpha"], a["initial_state"], scale=0.5,
                                      method="chunkwise", chunk=2)
        if family == "delta":
            return ops.delta_recurrence(a["q"], a["k"], a["v"], a["beta"], a["log_alpha"], a["initial_state"],
                                        scale=0.5, method="chunkwise", chunk=2)
        return ops.delta_product_recurrence(a["q"], a["k"], a["v"], a["beta"], a["log_alpha"], a["initial_state"],
                                            n_householder=2, scale=0.5, method="chunkwise", chunk=2)

    assert torch.autograd.gradcheck(run, tuple(t.values()))


def test_layer_chunkwise_gradients_equal_sequential_gradients():
    """Parameter gradients of the chunkwise layer == those of the sequential loop (float64)."""
    layer = torch_backend.DeltaProduct(4, n_heads=2, seed=1).double()
    x = torch.tensor(np.random.default_rng(1).normal(size=(2, 11, 4)))
    grads = {}
    for method in ("chunkwise", "sequential"):
        layer.zero_grad()
        layer(x, method=method, chunk=4).square().sum().backward()
        grads[method] = {n: p.grad.clone() for n, p in layer.named_parameters()}
    for name, g in grads["sequential"].items():
        assert_close(grads["chunkwise"][name].numpy(), g.numpy(), what=f"grad {name}")


# ----------------------------------------------------------------------------- float32 accuracy
@pytest.mark.parametrize("chunk", [16, 64])
@pytest.mark.parametrize("family", ["gla", "delta", "product"])
def test_float32_chunkwise_error_against_float64_sequential(family, chunk):
    """o from the float32 chunkwise form vs the float64 sequential reference, within the float32 table
    (atol scaled by max|o|; SPEC §4.11.7: random unit keys, β ∈ [0, 2], gates), L = 256, d_k = d_v = 16."""
    n_h = 2 if family == "product" else 1
    arrays = inputs(np.random.default_rng(2), 2, 256, 2, 16, 16, n_h, vector_gate=family == "gla")
    t = tensors(arrays, torch.float32)
    scale = 16 ** -0.5
    if family == "gla":
        expected, _ = ref_ops.gla_recurrence(arrays["q"], arrays["k"], arrays["v"], arrays["log_alpha"],
                                             arrays["initial_state"], scale=scale)
        actual, _ = ops.gla_recurrence(t["q"], t["k"], t["v"], t["log_alpha"], t["initial_state"], scale=scale,
                                       chunk=chunk)
    else:
        kwargs = {"n_householder": n_h} if family == "product" else {}
        ref_fn = ref_ops.delta_product_recurrence if family == "product" else ref_ops.delta_recurrence
        fn = ops.delta_product_recurrence if family == "product" else ops.delta_recurrence
        expected, _ = ref_fn(arrays["q"], arrays["k"], arrays["v"], arrays["beta"], arrays["log_alpha"],
                             arrays["initial_state"], scale=scale, **kwargs)
        actual, _ = fn(t["q"], t["k"], t["v"], t["beta"], t["log_alpha"], t["initial_state"], scale=scale,
                       chunk=chunk, **kwargs)
    assert_close(actual.numpy(), expected, dtype="float32", what=f"{family} float32 chunkwise C={chunk}")


# ----------------------------------------------------------------------------- layers
@pytest.mark.parametrize("name, kwargs", VARIANTS)
def test_torch_layer_matches_reference_in_float64(name, kwargs):
    """Every variant (the decay-free ones included), every torch method, lengths and an initial state."""
    ref = getattr(reference, name)(4, n_heads=2, seed=5, **kwargs)
    module = torch_backend.from_reference(ref)
    rng = np.random.default_rng(5)
    x, lengths = rng.normal(size=(3, 13, 4)), np.array([13, 6, 1])
    tau = rng.uniform(0.0, 2.0, (3, 13)) if ref.accepts_timesteps else None
    h0 = rng.normal(size=ref.init_state(3).shape)
    y, S = ref(x, lengths, tau, initial_state=h0, return_state=True)
    for method in module.methods:
        if method == "compiled":
            continue                      # torch's associative_scan prototype: covered by the golden test
        y_m, S_m = module(torch.tensor(x), torch.tensor(lengths), None if tau is None else torch.tensor(tau),
                          initial_state=torch.tensor(h0), return_state=True, method=method, chunk=4)
        assert_close(y_m.detach().numpy(), y, what=f"{name} {kwargs} torch {method}")
        assert_close(S_m.detach().numpy(), S, what=f"{name} {kwargs} torch {method} state")


@pytest.mark.parametrize("name, kwargs", VARIANTS[:3])
def test_torch_decay_free_layers_refuse_timesteps(name, kwargs):
    module = getattr(torch_backend, name)(4, n_heads=2, seed=0, **kwargs)
    x = torch.ones(1, 3, 4)
    with pytest.raises(ValueError, match="no decay for integration_timesteps to scale"):
        module(x, integration_timesteps=torch.ones(1, 3))
    with pytest.raises(ValueError, match="integration_timestep must be None"):
        module.step(x[:, 0], module.init_state(1), torch.ones(1))


@pytest.mark.parametrize("name", ["GLA", "GatedDeltaNet", "DeltaProduct"])
def test_torch_default_method_is_chunkwise(name):
    module = getattr(torch_backend, name)(4, n_heads=2, seed=0).double()
    x = torch.tensor(np.random.default_rng(0).normal(size=(1, 70, 4)))
    default = module(x)
    assert torch.equal(default, module(x, method="chunkwise", chunk=64))
    with pytest.raises(ValueError, match="method='fft' is not available"):
        module(x, method="fft")


@pytest.mark.parametrize("chunk", [1, 3, 4, 5, 16, 32, 48, 64, 200])
@pytest.mark.parametrize("L", [33, 130])
def test_gla_sub_chunked_form_equals_the_reference(L, chunk):
    """The torch GLA chunkwise form (masked pairwise decays in blocks of LEAF rows, the blocks above them halved
    recursively with exponents <= 0; chunks that are not LEAF·2^j rows padded inside) == the reference's sequential
    loop in float64, gates down to log α = −6 per step."""
    rng = np.random.default_rng(L + chunk)
    arrays = inputs(rng, 2, L, 2, 3, 2, vector_gate=True)
    arrays["log_alpha"] = -rng.exponential(2.0, arrays["log_alpha"].shape)
    expected = ref_ops.gla_recurrence(arrays["q"], arrays["k"], arrays["v"], arrays["log_alpha"],
                                      arrays["initial_state"], scale=0.5)
    t = tensors(arrays)
    actual = ops.gla_recurrence(t["q"], t["k"], t["v"], t["log_alpha"], t["initial_state"], scale=0.5, chunk=chunk)
    assert_close(actual[0].detach().numpy(), expected[0], what=f"GLA chunkwise C={chunk} outputs")
    assert_close(actual[1].detach().numpy(), expected[1], what=f"GLA chunkwise C={chunk} final state")


def test_gla_chunkwise_with_extreme_gates_stays_finite_in_float32():
    """log α = −60 per step (a gate logit near −1000 at normaliser 16): a factorised form would overflow e^{−G};
    every exponent here is <= 0, so float32 stays finite and equals the sequential loop."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 256, 1, 4, generator=g) for _ in range(3))
    log_alpha = torch.full((1, 256, 1, 4), -60.0)
    o, S = ops.gla_recurrence(q, k, v, log_alpha, scale=0.5, chunk=64)
    assert torch.isfinite(o).all() and torch.isfinite(S).all()
    o_seq, _ = ops.gla_recurrence(q, k, v, log_alpha, scale=0.5, method="sequential")
    assert_close(o.numpy(), o_seq.numpy(), dtype="float32", what="extreme gates, chunkwise vs sequential")


@pytest.mark.parametrize("chunk", [5, 32])
@pytest.mark.parametrize("family", ["gla", "delta"])
def test_chunkwise_gradients_equal_the_loop_gradients(family, chunk):
    """Gradients for q, k, v, β, log α and the initial state through the chunkwise form (GLA's recursive blocks,
    the batched triangular solve, the carried state) == through the sequential loop, float64, L = 70, gates down
    to log α = −6 per step."""
    arrays = inputs(np.random.default_rng(chunk), 2, 70, 2, 4, 3, vector_gate=family == "gla")
    arrays["log_alpha"] = -np.random.default_rng(chunk + 1).exponential(1.0, arrays["log_alpha"].shape)
    if family == "gla":
        arrays.pop("beta")
    cotangent = torch.tensor(np.random.default_rng(chunk + 2).normal(size=(2, 70, 2, 3)))
    grads = {}
    for method in ("chunkwise", "sequential"):
        t = tensors(arrays, grad=True)
        fn = ops.gla_recurrence if family == "gla" else ops.delta_recurrence
        fn(*t.values(), scale=0.5, method=method, chunk=chunk)[0].backward(cotangent)
        grads[method] = {name: z.grad.numpy() for name, z in t.items()}
    for name, expected in grads["sequential"].items():
        assert_close(grads["chunkwise"][name], expected, what=f"{family} C={chunk} grad {name}")


@pytest.mark.parametrize("family", ["gla", "delta"])
def test_chunkwise_gradients_with_extreme_gates_stay_finite_in_float32(family):
    """log α = −60 per step in float32: the chunkwise backward (masked exp, GLA's recursive blocks, the triangular
    solve) has every exponent <= 0, so every gradient stays finite."""
    g = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(1, 96, 2, 4, generator=g) for _ in range(3))
    beta = torch.rand(1, 96, 2, generator=g)
    log_alpha = torch.full((1, 96, 2, 4) if family == "gla" else (1, 96, 2), -60.0)
    leaves = [z.clone().requires_grad_() for z in (q, k / k.norm(dim=-1, keepdim=True), v, log_alpha)]
    if family == "gla":
        o, S = ops.gla_recurrence(*leaves, scale=0.5, chunk=32)
    else:
        o, S = ops.delta_recurrence(*leaves[:3], beta, leaves[3], scale=0.5, chunk=32)
    (o.square().sum() + S.square().sum()).backward()
    for name, z in zip("q k v log_alpha".split(), leaves):
        assert torch.isfinite(z.grad).all(), f"{family} grad {name} is not finite"
