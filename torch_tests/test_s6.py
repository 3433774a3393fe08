"""S6 torch-only tests: the fused CPU op `lrnn_spec::selective_scan` (forward and its recomputing backward) against
torch autograd of the plain torch path (discretize + scan), every discretisation, τ with zeros, lengths, h0, block."""
import numpy as np
import pytest
import torch

from parity_tests.tolerances import assert_close
from reference.layers.s6 import S6_METHODS
from torch_backend import S6

CASES = [(method, block, events) for method in S6_METHODS for block in (False, True) for events in (False, True)]


def problem(method, block, events, seed=0, L=150):
    """A float64 layer, x (b, L, H), τ or None, lengths, a random initial state and output cotangents."""
    torch.manual_seed(seed)
    layer = S6(d_model=3, d_state=4, dt_rank=2, discretization=method, block=block, dt_min=0.01, dt_max=1.0,
               seed=seed).double()
    rng = np.random.default_rng(seed)
    x = torch.tensor(rng.normal(size=(2, L, 3)), requires_grad=True)                  # (b, L, H)
    tau = None
    if events:
        tau = np.exp(rng.uniform(-2, 1, (2, L)))
        tau[rng.uniform(size=tau.shape) < 0.3] = 0.0
        tau = torch.tensor(tau)                                                         # (b, L)
    zero = layer.init_state(2)
    state = tuple(torch.tensor(rng.normal(size=z.shape), requires_grad=True) for z in zero) if block else \
        torch.tensor(rng.normal(size=zero.shape), requires_grad=True)
    lengths = torch.tensor([L, L // 2])
    return layer, x, tau, lengths, state, rng


def gradients(layer, x, tau, lengths, state, method, rng):
    y, final = layer(x, lengths, tau, initial_state=state, return_state=True, method=method)
    h = final[1] if layer.block else final
    gen = np.random.default_rng(123)
    loss = (y * torch.tensor(gen.normal(size=y.shape))).sum() + (h * torch.tensor(gen.normal(size=h.shape))).sum()
    inputs = [x] + list(state if layer.block else [state]) + list(layer.parameters())
    return [y.detach().numpy(), h.detach().numpy()] + [g.numpy() for g in torch.autograd.grad(loss, inputs)]


@pytest.mark.parametrize("method,block,events", CASES)
def test_fused_op_forward_and_backward_equal_autograd_of_the_plain_path(method, block, events):
    layer, x, tau, lengths, state, rng = problem(method, block, events)
    fused = gradients(layer, x, tau, lengths, state, "fused", rng)
    plain = gradients(layer, x, tau, lengths, state, "sequential", rng)
    names = ["y", "final h", "x"] + (["conv state", "h0"] if block else ["h0"]) + [n for n, _ in layer.named_parameters()]
    for name, a, b in zip(names, fused, plain):
        assert_close(a, b, what=f"fused vs plain: {name} ({method}, block={block}, τ={events})")


def test_auto_is_the_fused_op_on_cpu_and_float32_runs():
    layer = S6(d_model=4, d_state=3, seed=0)
    x = torch.randn(2, 70, 4)
    assert_close(layer(x).detach().numpy(), layer(x, method="fused").detach().numpy(), dtype="float32",
                 what="auto vs fused")
    assert_close(layer(x, method="fused").detach().numpy(), layer(x, method="chunked").detach().numpy(),
                 dtype="float32", what="fused vs chunked, float32")


def test_classifier_builds_s6_mixers_and_matches_the_reference():
    from reference import Classifier as ReferenceClassifier
    from torch_backend import Classifier, from_reference
    config = dict(input_dim=3, num_classes=2, d_model=4, d_state=3, n_layers=2, lrnn_cls=["S6", "S6"],
                  lrnn_params=[{}, {"block": True}], dropout=0.0, seed=0)
    assert Classifier(**config)(torch.randn(2, 7, 3)).shape == (2, 2)
    reference = ReferenceClassifier(**config)
    x, lengths = np.random.default_rng(0).normal(size=(2, 7, 3)), np.array([7, 4])
    module = from_reference(reference).eval()
    assert_close(module(torch.tensor(x), torch.tensor(lengths)).detach().numpy(), reference(x, lengths),
                 what="classifier with S6 mixers, torch vs reference")


def test_upstream_state_dict_loads():
    """A Mamba mixer state dict under mamba_ssm's names (here the mamba-minimal golden block) loads with
    load_state_dict and gives the upstream output."""
    with np.load("parity_tests/golden/s6_block_L17.npz", allow_pickle=False) as data:
        golden = {key: data[key] for key in data.files}
    layer = S6(d_model=4, d_state=3, dt_rank=1, block=True, expand=2, d_conv=4, seed=0).double()
    layer.load_state_dict({k: torch.tensor(v) for k, v in golden.items() if k not in ("x", "y", "meta")})
    assert_close(layer(torch.tensor(golden["x"])).detach().numpy(), golden["y"], dtype="golden",
                 what="torch S6(block=True) with an upstream state dict")


@pytest.mark.parametrize("method", ["fused", "chunked"])
@pytest.mark.parametrize("block", [False, True])
def test_gradient_causality(method, block):
    """∂y_t/∂x_s = 0 for s > t (SPEC §4.8: causality of values and gradients)."""
    layer, x, tau, _, _, _ = problem("zoh", block, True, L=20)
    t = 9
    y = layer(x, integration_timesteps=tau, method=method)
    (grad,) = torch.autograd.grad(y[:, t].sum(), x)
    assert torch.all(grad[:, t + 1:] == 0) and torch.any(grad[:, :t + 1] != 0)
