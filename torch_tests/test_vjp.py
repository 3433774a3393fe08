"""The reference's hand-written backward pass (SPEC §11) against torch autograd of the torch backend, float64.

* every layer and discretisation, with τ (zeros included), lengths and h0: reference vjp == autograd (tight
  float64 table) for x, every parameter and the initial state;
* discretize's derivatives (diagonal and dense) == autograd of torch_backend.discretize;
* pooling (every mode, lengths, τ) and Classifier.loss_and_grad (features and token ids, cross-entropy and MSE);
* a NumPy training run (reference.optim.Adam) and a torch run (torch.optim.Adam) from the same params and
  batches give the same loss curve: <= 1e-8 relative after 50 steps, a mixed 4-layer classifier with pooling and τ.
"""
import numpy as np
import pytest
import torch

import torch_backend
from parity_tests.tolerances import assert_close
from reference import optim
from reference.classifier import Classifier
from reference.discretize import (DENSE_METHODS, METHODS, discretize_dense_vjp, discretize_derivatives)
from reference.pooling import FINAL_MODES, INTERMEDIATE_MODES, final_pool_vjp, pool_vjp
from torch_backend.exchange import from_reference

TRAINING_STEPS = 50
TRAINING_RTOL = 1e-8          # SPEC §11: relative loss difference after 50 Adam steps
from reference_tests.vjp_cases import CASES  # noqa: E402  (shared with reference_tests/test_vjp.py)


def t(array):
    return None if array is None else torch.tensor(np.asarray(array))


def masked(grad_y, lengths):
    if lengths is None:
        return grad_y
    return grad_y * (np.arange(grad_y.shape[1])[None, :] < lengths[:, None])[..., None]


def make_case(cls, kwargs, seed, with_extras, batch=2, L=7):
    rng = np.random.default_rng(seed)
    layer = cls(**kwargs, seed=seed)
    for value in layer.params.values():
        value += 0.1 * rng.normal(size=value.shape)
    x = rng.normal(size=(batch, L, layer.d_model))                                       # (b, L, H)
    grad_y = rng.normal(size=x.shape)                                                     # (b, L, H)
    lengths = tau = h0 = None
    if with_extras:
        lengths = np.array([L - 3, L])
        if getattr(layer, "accepts_timesteps", True):
            tau = rng.uniform(0.2, 2.0, (batch, L))                                       # (b, L)
            tau[0, 2] = tau[1, 0] = 0.0
        zero = None if getattr(layer, "bidirectional", False) else layer.init_state(batch)   # no state: no h0
        draw = lambda z: rng.normal(size=z.shape) + (1j * rng.normal(size=z.shape) if np.iscomplexobj(z) else 0)  # noqa: E731
        h0 = None if zero is None else tuple(draw(z) for z in zero) if isinstance(zero, tuple) else draw(zero)
    return layer, x, grad_y, lengths, tau, h0


@pytest.mark.parametrize("with_extras", [False, True], ids=["plain", "tau-lengths-h0"])
@pytest.mark.parametrize("name,cls,kwargs", CASES, ids=[c[0] for c in CASES])
def test_vjp_equals_torch_autograd(name, cls, kwargs, with_extras):
    layer, x, grad_y, lengths, tau, h0 = make_case(cls, kwargs, 21, with_extras)
    grad_x, grads, grad_h0 = layer.vjp(grad_y, x, lengths, tau, initial_state=h0)
    module = from_reference(layer, dtype=torch.float64)
    x_t = t(x).requires_grad_()
    h0_t = None if h0 is None else (tuple(t(s).requires_grad_() for s in h0) if isinstance(h0, tuple)
                                    else t(h0).requires_grad_())
    y = module(x_t, t(lengths), t(tau), initial_state=h0_t)
    (y * t(masked(grad_y, lengths))).sum().backward()
    named = dict(module.named_parameters())
    assert set(grads) == set(named), name
    for key, param in named.items():
        assert_close(grads[key], param.grad.numpy(), what=f"{name}: parameter {key}")
    assert_close(grad_x, x_t.grad.numpy(), what=f"{name}: x")
    if h0 is not None:
        pairs = zip(grad_h0, h0_t) if isinstance(h0, tuple) else [(grad_h0, h0_t)]
        for i, (ours, theirs) in enumerate(pairs):
            assert_close(ours, theirs.grad.numpy(), what=f"{name}: initial_state part {i}")


# ----------------------------------------------------------------------------- discretisation
@pytest.mark.parametrize("method", METHODS)
def test_discretize_derivatives_equal_autograd(method):
    rng = np.random.default_rng(2)
    Lambda = -np.exp(rng.uniform(-3, 1, 5)) + 1j * rng.normal(0, 3, 5)                    # (N,)
    Lambda[0] = -1e-9 + 1e-9j                                                            # φ1's small-z branch
    if method == "none":
        Lambda = 0.9 * Lambda / np.abs(Lambda)
    dt = np.exp(rng.uniform(-3, 0, 5))                                                   # (N,)
    tau = rng.uniform(0.1, 2.0, (2, 3))                                                  # (b, L)
    tau[0, 1] = 0.0
    derivatives = discretize_derivatives(Lambda, dt, method, tau)
    for which, (dLambda, ddt) in enumerate([(derivatives[0], derivatives[1]), (derivatives[2], derivatives[3])]):
        for position in np.ndindex(dLambda.shape):
            Lambda_t, dt_t = t(Lambda).requires_grad_(), t(dt).requires_grad_()
            out = torch_backend.discretize(Lambda_t, dt_t, method, t(tau))[which]
            # a holomorphic f: d Re f/d Re λ = Re f', d Re f/d Im λ = −Im f' (torch: grad = ∂/∂Re + i ∂/∂Im)
            if out.requires_grad:                                                        # γ̄ = 1 is constant
                out.real[position].backward()
            grad_Lambda, grad_dt = (np.zeros(5) if g is None else g.numpy() for g in (Lambda_t.grad, dt_t.grad))
            assert_close(np.conj(grad_Lambda[position[-1]]), dLambda[position],
                         what=f"{method} output {which} d/dλ {position}")
            assert_close(grad_dt[position[-1]], ddt[position].real, what=f"{method} output {which} d/dΔ {position}")


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_discretize_dense_vjp_equals_autograd(method):
    rng = np.random.default_rng(4)
    N = 4
    A, B, dt = rng.normal(size=(N, N)) - 2 * np.eye(N), rng.normal(size=N), 0.2
    G_A, G_B = rng.normal(size=(N, N)), rng.normal(size=N)
    grad_A, grad_B, grad_dt = discretize_dense_vjp(A, B, dt, method, G_A, G_B)
    A_t, B_t, dt_t = t(A).requires_grad_(), t(B).requires_grad_(), torch.tensor(dt, dtype=torch.float64, requires_grad=True)
    A_bar, B_bar = torch_backend.discretize_dense(A_t, B_t, dt_t, method)
    ((A_bar * t(G_A)).sum() + (B_bar * t(G_B)).sum()).backward()
    assert_close(grad_A, A_t.grad.numpy(), what="A")
    assert_close(grad_B, B_t.grad.numpy(), what="B")
    assert_close(grad_dt, dt_t.grad.item(), what="dt")


# ----------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("stride", [1, 3])
@pytest.mark.parametrize("mode", INTERMEDIATE_MODES)
def test_pool_vjp_equals_autograd(mode, stride):
    rng = np.random.default_rng(6)
    x, lengths, tau = rng.normal(size=(3, 8, 2)), np.array([8, 4, 1]), rng.uniform(0, 1, (3, 8))
    x[0, 1] = x[0, 0]                                                                    # a tie inside a window
    x_t = t(x).requires_grad_()
    out, _, _ = torch_backend.pool(x_t, t(lengths), t(tau), mode=mode, stride=stride)
    grad_out = rng.normal(size=tuple(out.shape))
    (out * t(grad_out)).sum().backward()
    assert_close(pool_vjp(grad_out, x, lengths, tau, mode=mode, stride=stride), x_t.grad.numpy(), what=mode)


@pytest.mark.parametrize("mode", FINAL_MODES)
def test_final_pool_vjp_equals_autograd(mode):
    rng = np.random.default_rng(8)
    x, lengths = rng.normal(size=(3, 6, 2)), np.array([6, 2, 1])
    x[1, 0, 0] = x[1, 1, 0]                                                              # a tie
    x_t = t(x).requires_grad_()
    grad_out = rng.normal(size=(3, 2))
    (torch_backend.final_pool(x_t, t(lengths), mode=mode) * t(grad_out)).sum().backward()
    assert_close(final_pool_vjp(grad_out, x, lengths, mode=mode), x_t.grad.numpy(), what=mode)


# ----------------------------------------------------------------------------- the classifier
MIXED = dict(d_model=4, d_state=3, n_layers=4, lrnn_cls=["LRU", "S5", "S4D", "Centaurus"],
             lrnn_params=[{}, {"discretization": "bilinear"}, {"discretization": "zoh"},
                          {"sub_state_dim": 2, "discretization": "zoh"}],
             intermediate_pooling=["mean", "max", "stride", "none"], pooling_factor=2, dropout=0.0)


def torch_loss(module, x, labels, lengths, tau, num_classes):
    out = module(t(x) if np.asarray(x).dtype.kind == "f" else torch.as_tensor(x), t(lengths), t(tau))
    if num_classes:
        return torch.nn.functional.cross_entropy(out, torch.as_tensor(labels))
    return torch.nn.functional.mse_loss(out, t(labels).reshape(out.shape))


def batch_data(rng, batch, L, input_dim, num_classes, vocab_size=None):
    x = rng.integers(0, vocab_size, (batch, L)) if vocab_size else rng.normal(size=(batch, L, input_dim))
    lengths = rng.integers(1, L + 1, batch)
    lengths[0] = L
    tau = rng.uniform(0.2, 2.0, (batch, L))                                              # (b, L)
    tau[rng.uniform(size=(batch, L)) < 0.2] = 0.0
    labels = rng.integers(0, num_classes, batch) if num_classes else rng.normal(size=(batch, 2))
    return x, labels, lengths, tau


@pytest.mark.parametrize("kind", ["classes", "regression", "tokens", "training-mode-no-dropout", "lssl-multires",
                                  "selective-matrix-state"])
def test_loss_and_grad_equals_autograd(kind):
    rng = np.random.default_rng(10)
    config = dict(MIXED, input_dim=3, num_classes=3, pooling="mean", seed=1)
    use_tau = True
    if kind == "regression":
        config.update(num_classes=0, output_dim=2, pooling="max")
    elif kind == "tokens":
        config.update(vocab_size=7, embedding_dim=5, max_position_embeddings=12, padding_idx=0, pooling="last")
    elif kind == "lssl-multires":
        config.update(lrnn_cls=["LSSL", "MultiresConv", "LSSL", "MultiresConv"], pooling="last",
                      lrnn_params=[{"channels": 2}, {"kernel_size": 2, "depth": 2}, {"learn_A": True}, {}])
        use_tau = False
    elif kind == "selective-matrix-state":
        config.update(lrnn_cls=["S6", "RGLRU", "GLA", "GatedDeltaNet"], d_model=4, pooling="max",
                      lrnn_params=[{}, {"num_heads": 2}, {"n_heads": 2, "gate_low_rank_dim": 2}, {"n_heads": 2}])
    model = Classifier(**config)
    if kind == "training-mode-no-dropout":
        model.train()
    x, labels, lengths, tau = batch_data(rng, 3, 9, 3, config["num_classes"], config.get("vocab_size"))
    tau = tau if use_tau else None
    loss, grads = model.loss_and_grad(x, labels, lengths, tau)
    module = from_reference(model, dtype=torch.float64)
    expected = torch_loss(module, x, labels, lengths, tau, config["num_classes"])
    expected.backward()
    assert_close(loss, expected.item(), what="loss")
    named = dict(module.named_parameters())
    assert set(grads) == set(named)
    for key, param in named.items():
        assert_close(grads[key], param.grad.numpy(), what=key)


def test_numpy_training_equals_torch_training():
    """50 Adam steps from the same params and batches: the loss curves agree to 1e-8 relative (float64)."""
    rng = np.random.default_rng(12)
    model = Classifier(**MIXED, input_dim=3, num_classes=3, pooling="mean", seed=3).train()
    module = from_reference(model, dtype=torch.float64)
    numpy_optimizer = optim.Adam(model.params, lr=1e-2)
    torch_optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    numpy_losses, torch_losses = [], []
    for _ in range(TRAINING_STEPS):
        x, labels, lengths, tau = batch_data(rng, 4, 10, 3, 3)
        loss, grads = model.loss_and_grad(x, labels, lengths, tau)
        numpy_optimizer.step(grads)
        numpy_losses.append(loss)
        torch_optimizer.zero_grad()
        expected = torch_loss(module, x, labels, lengths, tau, 3)
        expected.backward()
        torch_optimizer.step()
        torch_losses.append(expected.item())
    np.testing.assert_allclose(numpy_losses, torch_losses, rtol=TRAINING_RTOL, atol=0)
    assert numpy_losses[-1] < numpy_losses[0]                                            # it did learn


@pytest.mark.parametrize("name,kwargs", [
    ("SGD", {}), ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01, "nesterov": True}),
    ("SGD", {"lr": 0.1, "momentum": 0.5, "dampening": 0.2}),
    ("Adam", {}), ("Adam", {"lr": 0.05, "betas": (0.8, 0.99), "eps": 1e-6, "weight_decay": 0.01})],
    ids=["sgd-defaults", "sgd-nesterov", "sgd-dampening", "adam-defaults", "adam-options"])
def test_optimizer_equals_torch(name, kwargs):
    """reference.optim against torch.optim over 5 steps of random gradients (same defaults, same rules)."""
    rng = np.random.default_rng(14)
    params = {"w": rng.normal(size=(3, 2))}
    w_t = torch.nn.Parameter(t(params["w"]).clone())
    ours, theirs = getattr(optim, name)(params, **kwargs), getattr(torch.optim, name)([w_t], **kwargs)
    for _ in range(5):
        grad = rng.normal(size=(3, 2))
        ours.step({"w": grad})
        w_t.grad = t(grad)
        theirs.step()
    assert_close(params["w"], w_t.detach().numpy(), what=name)
