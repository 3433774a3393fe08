"""The torch backend's foundation against the reference: discretisation (SPEC §2), every scan method and
its hand-written adjoint (SPEC §3), and the Layer base class's parameter exchange (SPEC §7).

Layers built on the base are checked over the registry by the conformance suite (parity_tests); here a
two-parameter toy layer (defined below, not registered) exercises the base class on its own, and every scan
method (the conformance suite checks the default one) is compared with the reference.
The `dtype` argument ("float64", "float32") comes from torch_tests/conftest.py.
"""
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from reference.discretize import DENSE_METHODS, METHODS as DISCRETIZATIONS
from reference.discretize import discretize as ref_discretize, discretize_dense as ref_discretize_dense
from reference.layers._base import Layer as ReferenceLayer
from reference.scan import scan as ref_scan, scan_dense as ref_scan_dense, scan_reverse as ref_scan_reverse
from reference.scan import scan_vjp as ref_scan_vjp
from torch_backend.discretize import discretize, discretize_dense, phi1
from torch_backend.exchange import from_reference, to_reference
from torch_backend.layers._base import Layer, draw_seed
from torch_backend.layers._checks import check_input, check_state
from torch_backend.scan import SCAN_METHODS, _associative_scan, scan, scan_dense, scan_reverse, scan_vjp
from parity_tests.strategies import (examples, batch_sizes, rng_from, scan_problem, scan_problems, seeds, sequence_lengths,
                                     stable_eigenvalues)
from parity_tests.tolerances import assert_close

METHODS = [m for m in SCAN_METHODS if m != "compiled" or _associative_scan is not None]
FUNCTION_METHODS = [m for m in ("chunked", "blelloch", "hillis_steele", "compiled") if m in METHODS]
DTYPES = {"float64": (torch.float64, torch.complex128), "float32": (torch.float32, torch.complex64)}
problems = scan_problems()


def as_torch(x, dtype="float64", device="cpu"):
    """numpy → torch: real arrays to the real dtype, complex ones to its complex partner; None passes."""
    if x is None:
        return None
    x = np.asarray(x)
    real, complex_ = DTYPES[dtype]
    return torch.as_tensor(x, dtype=complex_ if np.iscomplexobj(x) else real, device=device)


# ----------------------------------------------------------------------------- discretisation (SPEC §2)
def test_discretize_real_lambda_and_errors():
    Lambda = np.array([-1.0, -0.5, 0.0])
    for method in DISCRETIZATIONS:
        expected = ref_discretize(Lambda, 0.1, method)
        actual = discretize(torch.tensor(Lambda), 0.1, method)
        for got, want in zip(actual, expected):
            assert_close(got.numpy(), want)
    with pytest.raises(ValueError, match="discretization must be one of"):
        discretize(torch.tensor(Lambda), 0.1, "euler")
    with pytest.raises(ValueError, match="dt must be finite and > 0"):
        discretize(torch.tensor(Lambda), -0.1, "zoh")
    with pytest.raises(ValueError, match="integration_timesteps must be finite and >= 0"):
        discretize(torch.tensor(Lambda), 0.1, "zoh", torch.tensor([[1.0, -1.0]]))
    with pytest.raises(ValueError, match="shape \\(b, L\\)"):
        discretize(torch.tensor(Lambda), 0.1, "zoh", torch.ones(3))
    with pytest.raises(TypeError, match="torch.Tensor"):
        discretize(Lambda, 0.1, "zoh")


def test_phi1_and_zoh_gradients_are_finite_and_exact_at_zero(dtype):
    real, complex_ = DTYPES[dtype]
    for z0 in (torch.zeros(3, dtype=real), torch.zeros(3, dtype=complex_)):
        z = z0.clone().requires_grad_()
        value = phi1(z)
        assert torch.equal(value, torch.ones_like(value))
        (grad,) = torch.autograd.grad(value.real.sum(), z)
        assert torch.equal(grad, torch.full_like(grad, 0.5))                    # φ1'(0) = ½
    Lambda = torch.zeros(3, dtype=complex_, requires_grad=True)
    log_dt = torch.zeros(3, dtype=real, requires_grad=True)
    for method in ("zoh", "async", "bilinear"):
        A, gamma = discretize(Lambda, torch.exp(log_dt), method, torch.ones(1, 2, dtype=real))
        grads = torch.autograd.grad((A.real + gamma.real + gamma.imag).sum(), (Lambda, log_dt))
        assert all(torch.isfinite(torch.view_as_real(g) if g.is_complex() else g).all() for g in grads)


@pytest.mark.parametrize("method", DENSE_METHODS)
def test_discretize_dense_equals_reference_also_batched(method):
    rng = rng_from(0)
    M = rng.normal(size=(5, 5))
    A = -(M @ M.T) - np.eye(5)                                             # stable, invertible
    for B in (rng.normal(size=5), rng.normal(size=(5, 2))):
        A_bar, B_bar = discretize_dense(torch.tensor(A), torch.tensor(B), 0.05, method)
        expected = ref_discretize_dense(A, B, 0.05, method)
        assert_close(A_bar.numpy(), expected[0])
        assert_close(B_bar.numpy(), expected[1])
        dts = np.array([0.01, 0.2])
        A_bars, B_bars = discretize_dense(torch.tensor(A), torch.tensor(B), torch.tensor(dts), method)
        for i, dt in enumerate(dts):
            expected = ref_discretize_dense(A, B, dt, method)
            assert_close(A_bars[i].numpy(), expected[0])
            assert_close(B_bars[i].numpy(), expected[1])


# ----------------------------------------------------------------------------- scans (SPEC §3)
@given(seed=seeds, L=sequence_lengths(50), complex_=st.booleans(), time_varying=st.booleans())
def test_reference_vjp_equals_torch_autograd(seed, L, complex_, time_varying):
    rng = rng_from(seed)
    a, b, h0 = scan_problem(rng, 2, L, 3, complex_=complex_, time_varying=time_varying)
    G = rng.normal(size=b.shape) + (1j * rng.normal(size=b.shape) if complex_ else 0)
    a_t, b_t, h0_t = (torch.tensor(v, requires_grad=True) for v in (a, b, h0))
    state, states = h0_t, []
    for t in range(L):
        state = (a_t[:, t] if time_varying else a_t) * state + b_t[:, t]
        states.append(state)
    torch.real(torch.sum(torch.conj(torch.tensor(G)) * torch.stack(states, 1))).backward()
    grads = ref_scan_vjp(a, b, h0, ref_scan(a, b, h0), G)
    for ours, theirs in zip(grads, (a_t.grad, b_t.grad, h0_t.grad)):
        assert_close(ours, theirs.numpy())


@given(problem=problems)
@settings(max_examples=examples(12))
def test_every_scan_method_equals_reference(dtype, problem):
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, **problem)
    expected = ref_scan(a, b, h0)
    for method in METHODS:
        h = scan(as_torch(a, dtype), as_torch(b, dtype), as_torch(h0, dtype), method=method)
        assert h.dtype == as_torch(b, dtype).dtype
        assert_close(h.numpy(), expected, dtype, what=method)


@given(seed=seeds, L=sequence_lengths(40))
@settings(max_examples=examples(8))
def test_chunked_equals_reference_for_every_chunk(seed, L):
    a, b, h0 = scan_problem(rng_from(seed), 2, L, 3, True, True, True)
    expected = ref_scan(a, b, h0)
    for chunk in range(1, L + 3):
        assert_close(scan(as_torch(a), as_torch(b), as_torch(h0), method="chunked", chunk=chunk).numpy(),
                      expected, what=f"chunk={chunk}")


@pytest.mark.parametrize("method", METHODS)
def test_trailing_axes_time_last_layout_and_real_a_with_complex_b(method):
    rng = rng_from(1)
    L = 9
    b = rng.normal(size=(2, L, 3, 4)) + 1j * rng.normal(size=(2, L, 3, 4))
    for a in (stable_eigenvalues(rng, (3, 4)), stable_eigenvalues(rng, (2, L, 1, 4)), stable_eigenvalues(rng, (2, 1, 3, 4)),
              rng.uniform(-1, 1, (4,))):
        assert_close(scan(as_torch(a), as_torch(b), method=method).numpy(), ref_scan(a, b), what=f"a {a.shape}")
    a, b_last = stable_eigenvalues(rng, (2, 4, L)), rng.normal(size=(2, 4, L))     # time-last memory
    expected = ref_scan(a, b_last, axis=-1)
    assert_close(scan(as_torch(a), as_torch(b_last), method=method, axis=-1).numpy(), expected)


@pytest.mark.parametrize("method", METHODS)
@given(problem=problems)
@settings(max_examples=examples(6))
def test_gradients_equal_reference_vjp(method, problem):
    rng = rng_from(problem.pop("seed"))
    a, b, h0 = scan_problem(rng, **problem)
    g = rng.normal(size=b.shape) + (1j * rng.normal(size=b.shape) if np.iscomplexobj(b) else 0)
    expected = ref_scan_vjp(a, b, h0, ref_scan(a, b, h0), g)
    inputs = [as_torch(x).requires_grad_() for x in (a, b, h0) if x is not None]
    h = scan(*inputs[:2], inputs[2] if h0 is not None else None, method=method)
    grads = torch.autograd.grad(h, inputs, as_torch(g))
    for got, want, what in zip(grads, expected, ("a", "b", "h0")):
        assert_close(got.numpy(), want, what=f"{method} grad {what}")


@pytest.mark.parametrize("method", FUNCTION_METHODS)
def test_gradcheck_of_the_autograd_function(method):
    rng = rng_from(2)
    for a_shape in ((3,), (2, 5, 3)):
        a, b, h0 = stable_eigenvalues(rng, a_shape), rng.normal(size=(2, 5, 3)) + 0j, rng.normal(size=(2, 3)) + 0j
        inputs = tuple(torch.tensor(x, requires_grad=True) for x in (a, b, h0))
        assert torch.autograd.gradcheck(lambda *args: scan(*args, method=method, chunk=2 if method == "chunked" else None), inputs)
    if method == "chunked":                                        # the backward is differentiable again
        assert torch.autograd.gradgradcheck(lambda *args: scan(*args, method=method, chunk=2), inputs)


def test_numba_backward_equals_the_sequential_autograd_loop_also_twice():
    rng = rng_from(3)
    for time_varying in (False, True):
        a, b, h0 = scan_problem(rng, 2, 17, 3, True, time_varying, True)
        results = {}
        for method in ("sequential", "numba"):
            inputs = [torch.tensor(x, requires_grad=True) for x in (a, b, h0)]
            h = scan(*inputs, method=method)
            first = torch.autograd.grad((h.abs() ** 2).sum(), inputs, create_graph=True)
            second = torch.autograd.grad(sum((g.abs() ** 2).sum() for g in first), inputs)
            results[method] = [g.detach().numpy() for g in first + second]
        for got, want in zip(results["numba"], results["sequential"]):
            assert_close(got, want, what=f"time_varying={time_varying}")


def test_scan_reverse_scan_dense_and_combine():
    rng = rng_from(4)
    a, g = stable_eigenvalues(rng, (2, 6, 3)), rng.normal(size=(2, 6, 3)) + 0j
    b, h0 = rng.normal(size=(2, 6, 3)) + 0j, rng.normal(size=(2, 3)) + 0j
    expected_vjp = ref_scan_vjp(a, b, h0, ref_scan(a, b, h0), g)
    for method in ("sequential", "numba", "chunked"):
        assert_close(scan_reverse(as_torch(a), as_torch(g), method=method).numpy(), ref_scan_reverse(a, g))
        h = scan(as_torch(a), as_torch(b), as_torch(h0), method=method)
        for got, want in zip(scan_vjp(as_torch(a), as_torch(b), as_torch(h0), h, as_torch(g), method=method),
                             expected_vjp):
            assert_close(got.numpy(), want, what=f"scan_vjp {method}")
    A, b, h0 = rng.normal(size=(3, 3)) * 0.3, rng.normal(size=(2, 6, 3)), rng.normal(size=(2, 3))
    assert_close(scan_dense(as_torch(A), as_torch(b), as_torch(h0)).numpy(), ref_scan_dense(A, b, h0))
    for A in (rng.normal(size=(4, 3, 3)) * 0.3, rng.normal(size=(2, 6, 4, 3, 3)) * 0.3):  # trailing feature axis
        b, h0 = rng.normal(size=(2, 6, 4, 3)), rng.normal(size=(2, 4, 3))
        assert_close(scan_dense(as_torch(A), as_torch(b), as_torch(h0)).numpy(), ref_scan_dense(A, b, h0))


def test_scan_errors_name_the_rule():
    b = torch.ones(2, 4, 3)
    with pytest.raises(ValueError, match="scan method must be one of"):
        scan(torch.ones(3), b, method="fast")
    with pytest.raises(ValueError, match="L >= 1"):
        scan(torch.ones(3), torch.ones(2, 0, 3))
    with pytest.raises(ValueError, match="without enlarging"):
        scan(torch.ones(2, 4, 3), torch.ones(1, 4, 3))
    with pytest.raises(ValueError, match="h0 must have shape"):
        scan(torch.ones(3), b, torch.ones(3))
    with pytest.raises(ValueError, match="chunk must be"):
        scan(torch.ones(3), b, method="chunked", chunk=0)
    with pytest.raises(TypeError, match="torch.Tensor"):
        scan(np.ones(3), b)
    with pytest.raises(ValueError, match="device"):                # the meta device stands in for a GPU
        scan(torch.ones(3, device="meta"), b)
    with pytest.raises(ValueError, match="method='numba' runs on CPU"):
        scan(torch.ones(3, device="meta"), torch.ones(2, 4, 3, device="meta"), method="numba")


def test_torch_compile_smoke():
    """One small compile (graphs only, no code generation): the custom op and the Function trace."""
    a = torch.full((3,), 0.5, dtype=torch.complex64, requires_grad=True)
    b = torch.ones(2, 6, 3, dtype=torch.complex64, requires_grad=True)
    expected = scan(a, b, method="sequential")
    for method in ("auto", "chunked"):
        torch._dynamo.reset()
        compiled = torch.compile(lambda a, b: scan(a, b, method=method), backend="aot_eager", fullgraph=True)
        h = compiled(a, b)
        grad_a, = torch.autograd.grad(h.abs().sum(), a)
        assert_close(h.detach().numpy(), expected.detach().numpy(), "float32", what=method)
        assert torch.isfinite(torch.view_as_real(grad_a)).all()
    torch._dynamo.reset()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_scan_and_layer_match_cpu():
    rng = rng_from(5)
    a, b, h0 = scan_problem(rng, 2, 33, 4, True, True, True)
    expected = ref_scan(a, b, h0)
    for method in ("auto", "chunked", "blelloch", "hillis_steele", "sequential"):
        inputs = [as_torch(x, device="cuda").requires_grad_() for x in (a, b, h0)]
        h = scan(*inputs, method=method)
        assert h.device.type == "cuda"
        assert_close(h.detach().cpu().numpy(), expected, what=method)
        grads = torch.autograd.grad(h, inputs, torch.ones_like(h))
        want = ref_scan_vjp(a, b, h0, expected, np.ones_like(expected))
        for got, w in zip(grads, want):
            assert_close(got.cpu().numpy(), w, what=f"{method} grad")
    module = ToyLayer(3, 4, seed=0).double().cuda()
    x = torch.ones(2, 5, 3, dtype=torch.float64, device="cuda")
    assert module(x).device.type == "cuda"
    with pytest.raises(ValueError, match="device"):
        module(x.cpu())


def test_real_a_with_complex_b_gets_the_real_part_of_its_gradient():
    rng = rng_from(6)
    a, b = rng.uniform(-0.9, 0.9, (2, 7, 3)), rng.normal(size=(2, 7, 3)) + 1j * rng.normal(size=(2, 7, 3))
    g = rng.normal(size=b.shape) + 1j * rng.normal(size=b.shape)
    expected = ref_scan_vjp(a, b, None, ref_scan(a, b), g)
    for method in ("numba", "chunked", "sequential"):
        ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
        grads = torch.autograd.grad(scan(ta, tb, method=method), (ta, tb), torch.tensor(g))
        assert grads[0].dtype == torch.float64
        for got, want in zip(grads, expected):
            assert_close(got.numpy(), want, what=method)


# ----------------------------------------------------------------------------- the Layer base (SPEC §7)
class ToyReference(ReferenceLayer):
    """A minimal diagonal layer: y = Re(C x) with x_t = Ā x_{t−1} + γ̄ B u_t; `mix.weight` is a dotted
    (nested) name as a classifier has."""

    def __init__(self, d_model, d_state, seed=None):
        rng = np.random.default_rng(seed)
        self.config = {"d_model": d_model, "d_state": d_state, "seed": seed}
        self.params = {"Lambda_re": -rng.uniform(0.1, 1.0, d_state), "Lambda_im": rng.normal(size=d_state),
                       "log_dt": rng.uniform(-3, -1, d_state), "B": rng.normal(size=(d_state, d_model)),
                       "mix.weight": rng.normal(size=(d_model, d_state))}


class ToyLayer(Layer):
    reference_class = ToyReference

    def __init__(self, d_model, d_state, seed=None):
        super().__init__()
        self._init_from_reference(ToyReference(d_model, d_state, seed=draw_seed(seed)))

    def forward(self, x, *, method="auto", check_finite=True):
        x = check_input(x, self.config["d_model"], check_finite=check_finite, like=self)   # (b, L, H)
        Lambda = torch.complex(self.Lambda_re, self.Lambda_im)                             # (N,)
        Lambda_bar, gamma_bar = discretize(Lambda, torch.exp(self.log_dt), "zoh")
        Bu = torch.einsum("nh,blh->bln", self.B.to(Lambda.dtype), x.to(Lambda.dtype))    # (b, L, N)
        states = scan(Lambda_bar, gamma_bar * Bu, method=method)                          # (b, L, N)
        return torch.einsum("hn,bln->blh", self.mix.weight, states.real)                 # (b, L, H)


def test_state_dict_keys_seed_and_default_dtype():
    module, reference = ToyLayer(3, 4, seed=7), ToyReference(3, 4, seed=7)
    assert list(module.state_dict()) == list(reference.params)
    assert all(p.dtype == torch.float32 and p.requires_grad for p in module.parameters())
    assert all(np.array_equal(module.params[k], v.astype(np.float32)) for k, v in reference.params.items())
    previous = torch.get_default_dtype()
    try:                                                       # built in float64: bit-identical to the reference
        torch.set_default_dtype(torch.float64)
        double = ToyLayer(3, 4, seed=7)
    finally:
        torch.set_default_dtype(previous)
    assert all(np.array_equal(double.params[k], v) for k, v in reference.params.items())
    torch.manual_seed(11)
    first = ToyLayer(3, 4).params
    torch.manual_seed(11)
    again, other = ToyLayer(3, 4).params, ToyLayer(3, 4).params
    assert all(np.array_equal(first[k], again[k]) for k in first)
    assert not np.array_equal(first["B"], other["B"])


def test_exchange_round_trips_exactly_and_files_cross_backends(tmp_path):
    reference = ToyReference(2, 5, seed=3)
    module = from_reference(reference)
    assert module.dtype == torch.float64 and isinstance(module, ToyLayer)
    back = to_reference(module)
    assert back.config == reference.config
    assert all(np.array_equal(back.params[k], v) for k, v in reference.params.items())
    assert ToyLayer.from_reference(reference, dtype=torch.float32).dtype == torch.float32
    reference.save(tmp_path / "ref.npz")
    loaded = ToyLayer.load(tmp_path / "ref.npz")
    assert all(np.array_equal(loaded.params[k], v) for k, v in reference.params.items())
    loaded.save(tmp_path / "torch.npz")
    again = ToyReference.load(tmp_path / "torch.npz")
    assert all(np.array_equal(again.params[k], v) for k, v in reference.params.items())
    x = np.random.default_rng(0).normal(size=(2, 6, 2))
    assert_close(module(torch.tensor(x), method="numba").detach().numpy(),
                 module(torch.tensor(x), method="sequential").detach().numpy())


def test_load_params_and_inputs_refuse_mismatches():
    module = ToyLayer(3, 4, seed=0)
    params = module.params
    with pytest.raises(ValueError, match="missing parameter 'B'"):
        module.load_params({k: v for k, v in params.items() if k != "B"})
    with pytest.raises(ValueError, match="must have shape"):
        module.load_params({**params, "B": np.zeros((4, 4))})
    with pytest.raises(TypeError, match="dtype torch.float64 but the module computes in torch.float32"):
        module(torch.ones(1, 2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="is on device meta"):
        module(torch.ones(1, 2, 3, device="meta"))
    with pytest.raises(ValueError, match="width H = d_model = 3"):
        module(torch.ones(1, 2, 4))
    with pytest.raises(ValueError, match="must be finite"):
        module(torch.full((1, 2, 3), float("nan")))
    with pytest.raises(TypeError, match="dtype torch.complex128 but the module computes in torch.float32"):
        check_state(torch.zeros(2, 4, dtype=torch.complex128), (2, 4), like=module)
    assert check_state(np.zeros((2, 4)), (2, 4), like=module).dtype == torch.complex64
    assert module(np.ones((1, 2, 3))).dtype == torch.float32                  # arrays are converted


def test_shared_computations_equal_reference():
    from reference.layers import _math as ref_common
    from torch_backend.layers import _checks, _math as torch_common
    rng = rng_from(8)
    Lambda_bar, L = stable_eigenvalues(rng, (3,)), 9
    Lambda_bar[0] = 0.0                                                   # an underflowed Ā: 0^0 = 1, no NaN
    assert_close(torch_common.powers(torch.tensor(Lambda_bar), L).numpy(), ref_common.powers(Lambda_bar, L))
    K, u, lengths = rng.normal(size=(L, 2, 3)), rng.normal(size=(2, L, 3)), np.array([4, L])
    assert_close(torch_common.fft_causal_conv(torch.tensor(K), torch.tensor(u), "loh,blh->blo").numpy(),
                 ref_common.fft_causal_conv(K, u, "loh,blh->blo"))
    states = rng.normal(size=(2, L, 3))
    assert_close(torch_common.final_state(torch.tensor(states), torch.tensor(lengths)).numpy(),
                 ref_common.final_state(states, lengths))
    kernel, drive = rng.normal(size=(L, 3)), rng.normal(size=(2, L, 3))
    for lens in (None, lengths):
        assert_close(torch_common.final_state_by_convolution(torch.tensor(kernel), torch.tensor(drive),
                                                             None if lens is None else torch.tensor(lens)).numpy(),
                     ref_common.final_state_by_convolution(kernel, drive, lens))
    with pytest.raises(ValueError, match="lengths must satisfy"):
        _checks.check_lengths(np.array([0, 3]), 2, L)
    with pytest.raises(TypeError, match="integer array"):
        _checks.check_lengths(np.array([1.0, 3.0]), 2, L)


def test_parameters_do_not_alias_the_reference_arrays():
    previous = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.float64)
        reference = ToyReference(2, 3, seed=1)
        module = ToyLayer.from_reference(reference)
        built = ToyLayer(2, 3, seed=1)
    finally:
        torch.set_default_dtype(previous)
    before = reference.params["B"].copy()
    with torch.no_grad():
        module.B.add_(1.0)
        built.B.add_(1.0)
    assert np.array_equal(reference.params["B"], before)
