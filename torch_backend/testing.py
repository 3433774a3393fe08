"""The parity-suite adapter for torch_backend: the API of parity_tests/backend.py in torch terms.

`pytest parity_tests --backend torch_backend` finds this module as `torch_backend.testing`. An adapter
for another implementation is a module with the same names (see the book's chapter on correctness).
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
    """Gradients of Re<cotangent, fn(*inputs)> with respect to every floating input (None for others)."""
    leaves = [x.detach().requires_grad_(x.is_floating_point() or x.is_complex()) if isinstance(x, torch.Tensor) else x
              for x in inputs]
    out = fn(*leaves)
    loss = torch.real(torch.sum(torch.conj(cotangent) * out)) if out.is_complex() else torch.sum(cotangent * out)
    wanted = [x for x in leaves if isinstance(x, torch.Tensor) and x.requires_grad]
    grads = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    return [next(grads) if isinstance(x, torch.Tensor) and x.requires_grad else None for x in leaves]


def parameter_vjp(module, call, cotangent):
    """{name: gradient of Re<cotangent, call(module)>} for every trainable parameter of `module`."""
    params = {name: p for name, p in module.named_parameters() if p.requires_grad}
    out = call(module)
    loss = torch.real(torch.sum(torch.conj(cotangent) * out)) if out.is_complex() else torch.sum(cotangent * out)
    grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
    return {name: (torch.zeros_like(p) if g is None else g) for (name, p), g in zip(params.items(), grads)}


def cast(module, dtype, device):
    return module.to(device=device, dtype=_DTYPES[dtype][0])


discretize = torch_backend.discretize
scan = torch_backend.scan
from_reference = getattr(torch_backend, "from_reference", None)
pool = getattr(torch_backend, "pool", None)
final_pool = getattr(torch_backend, "final_pool", None)
