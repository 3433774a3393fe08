"""The hand-written backward pass of the reference (SPEC §11) against its own forward.

* every layer, every discretisation, τ with zeros, lengths, h0: vjp == central finite differences of the
  float64 forward (every parameter entry, every input entry, every initial-state entry);
* the transpose identity ⟨J v, g⟩ == ⟨v, Jᵀ g⟩ (exact for the layers that are linear in (x, h0));
* padded positions get exactly zero gradient, and only the valid outputs' gradient matters;
* every derivative of `discretize` (and its dense variants) against finite differences; φ1' near 0.
"""
import numpy as np
import pytest

from parity_tests.tolerances import FD_STEP, FD_TOLERANCE, PHI1_RTOL, assert_close
from reference.discretize import (METHODS, discretize, discretize_dense, discretize_dense_vjp,
                                  discretize_derivatives, phi1_derivative)
from reference.layers.lru import LRU
from reference.layers.rglru import RGLRU

from reference_tests.vjp_cases import FINITE_DIFFERENCE_CASES as CASES  # noqa: E402
IDS = [name for name, _, _ in CASES]
LINEAR_IN_INPUT = ("LRU", "S5", "S4D", "Centaurus", "MultiresConv")      # y is linear in (x, h0)


def make_case(cls, kwargs, seed, with_tau, with_lengths, with_state, batch=2, L=6):
    """A layer and random data: x, g (b, L, H), lengths with a short row, τ with exact zeros, h0."""
    rng = np.random.default_rng(seed)
    layer = cls(**kwargs, seed=seed)
    for name, value in layer.params.items():                 # move away from special init values (B = 1/√H …)
        value += 0.1 * rng.normal(size=value.shape)
    x = rng.normal(size=(batch, L, layer.d_model))            # (b, L, H)
    grad_y = rng.normal(size=x.shape)                          # (b, L, H)
    lengths = np.array([L - 2, L][:batch]) if with_lengths else None
    tau = None
    if with_tau and getattr(layer, "accepts_timesteps", True):
        tau = rng.uniform(0.2, 2.0, (batch, L))                # (b, L)
        tau[0, 1] = tau[-1, 3] = 0.0
    h0 = None
    if with_state and not getattr(layer, "bidirectional", False):          # a bidirectional layer has no state
        zero = layer.init_state(batch)                          # an array, or a pair (S6 block: conv state, h)
        draw = lambda z: rng.normal(size=z.shape) + (1j * rng.normal(size=z.shape) if np.iscomplexobj(z) else 0)  # noqa: E731
        h0 = tuple(draw(z) for z in zero) if isinstance(zero, tuple) else draw(zero)
    return layer, x, grad_y, lengths, tau, h0


def masked(grad_y, lengths):
    if lengths is None:
        return grad_y
    return grad_y * (np.arange(grad_y.shape[1])[None, :] < lengths[:, None])[..., None]


def central_difference(f, array):
    """∂f/∂array by central differences (complex arrays: ∂/∂Re + i ∂/∂Im, torch's convention)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        for unit in ((1.0, 1j) if np.iscomplexobj(array) else (1.0,)):
            array[index] = original + FD_STEP * unit
            up = f()
            array[index] = original - FD_STEP * unit
            down = f()
            array[index] = original
            grad[index] += unit * (up - down) / (2 * FD_STEP)
    return grad


def assert_fd(actual, expected, what):
    np.testing.assert_allclose(actual, expected, rtol=FD_TOLERANCE["rtol"], atol=FD_TOLERANCE["atol"], err_msg=what)


@pytest.mark.parametrize("with_tau,with_lengths,with_state", [(False, False, False), (True, True, True)],
                         ids=["plain", "tau-lengths-h0"])
@pytest.mark.parametrize("name,cls,kwargs", CASES, ids=IDS)
def test_vjp_equals_finite_differences(name, cls, kwargs, with_tau, with_lengths, with_state):
    layer, x, grad_y, lengths, tau, h0 = make_case(cls, kwargs, 3, with_tau, with_lengths, with_state)
    grad_x, grads, grad_h0 = layer.vjp(grad_y, x, lengths, tau, initial_state=h0)
    g = masked(grad_y, lengths)

    def loss():
        return float(np.sum(layer(x, lengths, tau, initial_state=h0) * g))

    frozen = getattr(layer, "frozen", ())
    assert set(grads) == {k for k in layer.params if k not in frozen}
    for key, value in layer.params.items():
        if key not in frozen:
            assert grads[key].shape == value.shape and grads[key].dtype == np.float64, key
            assert_fd(grads[key], central_difference(loss, value), f"{name}: parameter {key}")
    assert_fd(grad_x, central_difference(loss, x), f"{name}: x")
    if h0 is None:
        assert grad_h0 is None
    else:
        pairs = zip(h0, grad_h0) if isinstance(h0, tuple) else [(h0, grad_h0)]
        for i, (state, grad_state) in enumerate(pairs):
            assert_fd(grad_state, central_difference(loss, state), f"{name}: initial_state part {i}")


@pytest.mark.parametrize("name,cls,kwargs", [c for c in CASES if c[0].split("-")[0] in LINEAR_IN_INPUT],
                         ids=[c[0] for c in CASES if c[0].split("-")[0] in LINEAR_IN_INPUT])
def test_transpose_identity(name, cls, kwargs):
    """y is linear in (x, h0): ⟨J (v, w), g⟩ = ⟨layer(v, h0=w), g⟩ must equal ⟨v, G_x⟩ + Re⟨w, G_h0⟩."""
    layer, v, g, lengths, tau, w = make_case(cls, kwargs, 5, True, True, True)
    grad_x, _, grad_h0 = layer.vjp(g, v, lengths, tau, initial_state=w)
    forward = np.sum(layer(v, lengths, tau, initial_state=w) * masked(g, lengths))
    backward = np.sum(v * grad_x) + (0.0 if w is None else np.sum((np.conj(w) * grad_h0).real))
    assert_close(backward, forward, what=f"{name}: transpose identity")


@pytest.mark.parametrize("name,cls,kwargs", [c for c in CASES if c[0].startswith(("LSSL", "S6", "S7", "RGLRU", "GLA", "Gated", "Delta"))],
                         ids=[c[0] for c in CASES if c[0].startswith(("LSSL", "S6", "S7", "RGLRU", "GLA", "Gated", "Delta"))])
def test_transpose_identity_nonlinear(name, cls, kwargs):
    """LSSL (gelu read-out), the selective and the matrix-state layers are nonlinear in x: ⟨J v, g⟩ by a central difference along v
    equals ⟨v, Jᵀ g⟩."""
    layer, x, g, lengths, tau, h0 = make_case(cls, kwargs, 6, True, True, True)
    v = np.random.default_rng(7).normal(size=x.shape)                                     # (b, L, H)
    grad_x, _, _ = layer.vjp(g, x, lengths, tau, initial_state=h0)
    f = lambda s: np.sum(layer(x + s * v, lengths, tau, initial_state=h0) * masked(g, lengths))  # noqa: E731
    assert_fd(np.sum(v * grad_x), (f(FD_STEP) - f(-FD_STEP)) / (2 * FD_STEP), f"{name}: ⟨Jv, g⟩")


@pytest.mark.parametrize("name,cls,kwargs", CASES, ids=IDS)
def test_padded_positions_get_zero_gradient(name, cls, kwargs):
    """G_x is exactly 0 at t >= len, and G_y at padded positions changes nothing."""
    layer, x, grad_y, lengths, tau, _ = make_case(cls, kwargs, 9, True, True, False)
    grad_x, grads, _ = layer.vjp(grad_y, x, lengths, tau)
    for row, n in enumerate(lengths):
        assert np.all(grad_x[row, n:] == 0.0), f"{name}: gradient at padded positions of row {row}"
    noisy = grad_y + 1e3 * (1 - masked(np.ones_like(grad_y), lengths))
    grad_x2, grads2, _ = layer.vjp(noisy, x, lengths, tau)
    np.testing.assert_array_equal(grad_x2, grad_x)
    for key in grads:
        np.testing.assert_array_equal(grads2[key], grads[key], err_msg=key)


def test_vjp_checks_grad_shape():
    layer = LRU(3, 2, seed=0)
    x = np.zeros((2, 4, 3))
    with pytest.raises(ValueError, match="grad_y must have the output's shape"):
        layer.vjp(np.zeros((2, 4, 2)), x)
    with pytest.raises(TypeError, match="grad_y must be a real array"):
        layer.vjp(np.zeros((2, 4, 3), complex), x)


# ----------------------------------------------------------------------------- discretize's derivatives
@pytest.mark.parametrize("with_tau", [False, True], ids=["no-tau", "tau"])
@pytest.mark.parametrize("method", METHODS)
def test_discretize_derivatives_equal_finite_differences(method, with_tau):
    rng = np.random.default_rng(11)
    Lambda = -np.exp(rng.uniform(-3, 1, 6)) + 1j * rng.normal(0, 3, 6)                   # (N,)
    if method != "none":
        Lambda[0] = 0.0                                                                    # φ1's branch point
        Lambda[1] = -1e-9 + 1e-9j
    else:
        Lambda = 0.95 * Lambda / np.abs(Lambda)                                            # discrete, away from 0
    dt = np.exp(rng.uniform(-3, 0, 6))                                                     # (N,)
    tau = None
    if with_tau:
        tau = rng.uniform(0.1, 2.0, (2, 3))                                                # (b, L)
        tau[0, 0] = 0.0
    derivatives = discretize_derivatives(Lambda, dt, method, tau)
    h = FD_STEP
    up, down = discretize(Lambda + h, dt, method, tau), discretize(Lambda - h, dt, method, tau)
    fd_Lambda = [(u - d) / (2 * h) for u, d in zip(up, down)]
    up, down = discretize(Lambda, dt + h * dt, method, tau), discretize(Lambda, dt - h * dt, method, tau)
    fd_dt = [(u - d) / (2 * h * dt) for u, d in zip(up, down)]
    names = ("dA/dLambda", "dA/ddt", "dgamma/dLambda", "dgamma/ddt")
    for name, got, want in zip(names, derivatives, (fd_Lambda[0], fd_dt[0], fd_Lambda[1], fd_dt[1])):
        assert_fd(got, want, f"{method}: {name}")


def test_phi1_derivative_branches():
    """φ1'(z) against 40-digit values on both sides of the series/closed-form boundary and at 0."""
    mpmath = pytest.importorskip("mpmath")
    mpmath.mp.dps = 40
    z = np.array([0.0, 1e-12, -1e-7, 0.3, 0.999, 1.001, -0.5j, 0.7 + 0.7j, -30.0, 5.0, 2 + 3j])

    def exact(value):
        if value == 0:
            return 0.5
        w = mpmath.mpc(value.real, value.imag)
        return complex((mpmath.exp(w) * (w - 1) + 1) / w ** 2)

    np.testing.assert_allclose(phi1_derivative(z), [exact(v) for v in z], rtol=PHI1_RTOL, atol=0)
    assert np.isrealobj(phi1_derivative(np.array([0.0, 2.0])))


@pytest.mark.parametrize("method", ["zoh", "bilinear"])
def test_discretize_dense_vjp_equals_finite_differences(method):
    rng = np.random.default_rng(13)
    N = 4
    A = rng.normal(size=(N, N)) - 2 * np.eye(N)                                            # (N, N)
    B, dt = rng.normal(size=N), 0.3                                                        # (N,)
    G_A, G_B = rng.normal(size=(N, N)), rng.normal(size=N)

    def loss():
        A_bar, B_bar = discretize_dense(A, B, dt_box[0], method)
        return float(np.sum(A_bar * G_A) + B_bar @ G_B)

    dt_box = np.array([dt])
    grad_A, grad_B, grad_dt = discretize_dense_vjp(A, B, dt, method, G_A, G_B)
    assert_fd(grad_A, central_difference(loss, A), f"{method}: A")
    assert_fd(grad_B, central_difference(loss, B), f"{method}: B")
    assert_fd(grad_dt, central_difference(loss, dt_box)[0], f"{method}: dt")


@pytest.mark.parametrize("block", [False, True], ids=["bare", "block"])
def test_rglru_vjp_with_resets_equals_finite_differences(block):
    """RG-LRU's resets (a_t ← 0, n_t ← 1, the conv window cut) in the backward pass."""
    kwargs = {"d_model": 2, "block": True, "lru_width": 2, "conv1d_temporal_width": 3} if block else {"d_model": 2}
    layer, x, grad_y, lengths, tau, h0 = make_case(RGLRU, kwargs, 17, True, True, True)
    resets = np.zeros(x.shape[:2], bool)
    resets[0, 2] = resets[1, 4] = True
    grad_x, grads, grad_h0 = layer.vjp(grad_y, x, lengths, tau, initial_state=h0, resets=resets)
    g = masked(grad_y, lengths)

    def loss():
        return float(np.sum(layer(x, lengths, tau, initial_state=h0, resets=resets) * g))

    for key, value in layer.params.items():
        assert_fd(grads[key], central_difference(loss, value), f"parameter {key}")
    assert_fd(grad_x, central_difference(loss, x), "x")
    assert_fd(grad_h0, central_difference(loss, h0), "initial_state")


@pytest.mark.parametrize("num_classes", [3, 0], ids=["cross-entropy", "mse"])
def test_classifier_loss_and_grad_equals_finite_differences(num_classes):
    """Every parameter of a small mixed classifier, training mode with dropout (the same masks each call),
    intermediate pooling, lengths and τ; and the loss is the one of the forward in evaluation mode."""
    from reference.classifier import Classifier
    rng = np.random.default_rng(19)
    model = Classifier(input_dim=2, num_classes=num_classes, output_dim=2, d_model=3, d_state=2, n_layers=2,
                       lrnn_cls=["S5", "LRU"], intermediate_pooling=["max", "mean"], pooling="last",
                       dropout=0.3, seed=4)
    x, lengths = rng.normal(size=(3, 7, 2)), np.array([7, 4, 2])
    tau = rng.uniform(0.1, 2.0, (3, 7))
    tau[1, 2] = 0.0
    labels = rng.integers(0, 3, 3) if num_classes else rng.normal(size=(3, 2))
    loss_eval, _ = model.loss_and_grad(x, labels, lengths, tau)
    output = model(x, lengths, tau)
    if num_classes:
        expected = np.mean(np.log(np.exp(output).sum(axis=1)) - output[np.arange(3), labels])
    else:
        expected = np.mean((output - labels) ** 2)
    assert_close(loss_eval, expected, what="loss")
    model.train()
    state = model.dropout_rng.bit_generator.state

    def loss():
        model.dropout_rng.bit_generator.state = state                     # the same dropout masks every call
        return model.loss_and_grad(x, labels, lengths, tau)[0]

    model.dropout_rng.bit_generator.state = state
    _, grads = model.loss_and_grad(x, labels, lengths, tau)
    assert set(grads) == set(model.params)
    for key, value in model.params.items():
        assert_fd(grads[key], central_difference(loss, value), key)


def test_optimizers_refuse_bad_arguments():
    from reference import optim
    params = {"w": np.zeros(2)}
    with pytest.raises(ValueError, match="unknown parameter 'nope'"):
        optim.Adam(params).step({"nope": np.zeros(2)})
    with pytest.raises(ValueError, match="gradient of 'w' has shape"):
        optim.SGD(params).step({"w": np.zeros(3)})
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        optim.SGD(params, nesterov=True)
    with pytest.raises(ValueError, match="betas must be < 1"):
        optim.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(TypeError, match="params must be a dict of float64"):
        optim.Adam({"w": np.zeros(2, np.float32)})


def test_every_registered_layer_has_a_vjp_and_a_case_here():
    """A layer joins the registry with its hand-written backward pass (SPEC §11) and a case in CASES above."""
    from reference.layers import REGISTRY
    covered = {cls for _, cls, _ in CASES}
    for name, cls in REGISTRY.items():
        assert callable(getattr(cls, "vjp", None)), f"{name} has no vjp"
        assert cls in covered, f"{name} has no case in reference_tests/test_vjp.py CASES"
