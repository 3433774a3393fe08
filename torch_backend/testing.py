"""The conformance-suite adapter for torch_backend: the API of parity_tests/backend.py in torch terms.

`pytest parity_tests --backend torch_backend` finds this module as `torch_backend.testing`. An adapter
for another implementation is a module with the same names; parity_tests/backend.py documents the protocol.
"""
import numpy as np
import torch

import torch_backend

_DTYPES = {"float32": (torch.float32, torch.complex64), "float64": (torch.float64, torch.complex128)}


def asarray(array, dtype, device):
    """numpy -> torch on `device`: floats to dtype, complex to its complex partner, integers unchanged."""
    array = np.asarray(array)
    real, complex_ = _DTYPES[dtype]
    if array.dtype.kind in "iub":
        return torch.as_tensor(array, device=device)
    return torch.as_tensor(array, dtype=complex_ if array.dtype.kind == "c" else real, device=device)


def to_numpy(x):
    if isinstance(x, (tuple, list)):
        return type(x)(to_numpy(v) for v in x)
    if x is None:
        return None
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def device_available(device):
    return device == "cpu" or (device == "cuda" and torch.cuda.is_available())


def vjp(fn, inputs, cotangent):
    """Gradients of Re<cotangent, fn(*inputs)> w.r.t. every floating input (zeros when unused; None for integers)."""
    leaves = [x.detach().requires_grad_(x.is_floating_point() or x.is_complex()) if isinstance(x, torch.Tensor) else x
              for x in inputs]
    out = fn(*leaves)
    loss = torch.real(torch.sum(torch.conj(cotangent) * out)) if out.is_complex() else torch.sum(cotangent * out)
    wanted = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    out = []
    for x in leaves:
        if isinstance(x, torch.Tensor) and x.requires_grad:
            grad = next(grads)
            out.append(torch.zeros_like(x) if grad is None else grad)                # unused input: zeros
        else:
            out.append(None)
    return out


def parameter_vjp(module, call, cotangent):
    """{name: gradient of Re<cotangent, call(module)>} for every trainable parameter of `module`."""
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    out = call(module)
    loss = torch.real(torch.sum(torch.conj(cotangent) * out)) if out.is_complex() else torch.sum(cotangent * out)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: (torch.zeros_like(p) if g is None else g) for (name, p), g in zip(params.items(), grads)}


def cast(module, dtype, device):
    """The module on `device` with real tensors in dtype and complex ones in its complex partner."""
    real, complex_ = _DTYPES[dtype]
    module = module.to(device=device)
    return module._apply(lambda t: t.to(complex_ if t.is_complex() else real) if t.is_floating_point() or t.is_complex()
                         else t)


discretize = torch_backend.discretize
scan = torch_backend.scan


def from_reference(obj):
    """The torch twin (float64) of a reference layer or Classifier; Unsupported when torch_backend has no twin of
    the class (or of one of a Classifier's mixers) yet."""
    from parity_tests.backend import Unsupported
    from torch_backend.exchange import _TORCH_CLASSES
    names = [type(obj).__name__] + [type(m).__name__ for m in getattr(obj, "mixers", ())]
    missing = [n for n in names if n not in _TORCH_CLASSES]
    if missing:
        raise Unsupported(f"torch_backend has no twin of {', '.join(sorted(set(missing)))}")
    return torch_backend.from_reference(obj)


DECLARATIONS = {"exact_error_messages": True}      # the house style: messages as the reference words them
pool = getattr(torch_backend, "pool", None)
final_pool = getattr(torch_backend, "final_pool", None)
