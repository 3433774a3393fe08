"""Adapter: the RG-LRU of `recurrentgemma==1.0.1` (`recurrentgemma.torch.layers.RGLRU`), checked as this project's
RGLRU (block=False), without JAX.

    pip install --no-deps recurrentgemma==1.0.1 einops==0.8.1 jaxtyping==0.2.36
    pytest parity_tests --backend parity_tests.adapters.recurrentgemma_rglru

The package's `__init__` imports its JAX half; the torch half does not need it. The adapter registers a bare
`recurrentgemma` package object (its real directory, without running `__init__`) and imports
`recurrentgemma.torch.layers` from it, so JAX is never imported.
The package's RGLRU has the reference's parameter names (a_param, input_gate.w/.b, a_gate.w/.b) and c = 8 fixed;
`segment_pos == 0` resets the state, so the adapter passes positions 1..L (no reset, the reference's default).
Declared: the package accumulates in float32 whatever its input precision (`rnn_scan(acc_dtype=float32)`, a
float32 cache), so its float64 results are held to the float32 tolerance row; c = 8 only; no integration
timesteps; lengths are emulated (each sequence runs alone on its first len steps).
"""
import importlib.util
import sys
import types
from pathlib import Path

import torch

from parity_tests.backend import Unsupported
from torch_backend.testing import asarray, cast, device_available, to_numpy, vjp


def _import_torch_layers():
    """recurrentgemma.torch.layers without executing recurrentgemma/__init__.py (which imports JAX)."""
    spec = importlib.util.find_spec("recurrentgemma")
    if spec is None:
        raise ImportError("parity_tests.adapters.recurrentgemma_rglru needs recurrentgemma==1.0.1, einops and "
                          "jaxtyping (pip install --no-deps recurrentgemma==1.0.1 einops==0.8.1 jaxtyping==0.2.36)")
    root = Path(spec.origin).parent
    for name, path in (("recurrentgemma", root), ("recurrentgemma.torch", root / "torch")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            package.__spec__ = importlib.util.spec_from_file_location(
                name, path / "__init__.py", submodule_search_locations=[str(path)])
            sys.modules[name] = package
    return importlib.import_module("recurrentgemma.torch.layers")


layers = _import_torch_layers()

__all__ = ["asarray", "to_numpy", "device_available", "vjp", "parameter_vjp", "from_reference", "cast",
           "supports", "DECLARATIONS"]
DECLARATIONS = {"layers": ("RGLRU",), "methods": {"RGLRU": ()},
                "accumulator": "float32", "timesteps": False}

PACKAGE_C = 8.0                                   # the package's fixed rate factor: log a_t = −8 r_t softplus(a_param)
PARAMETERS = ("a_param", "input_gate.w", "input_gate.b", "a_gate.w", "a_gate.b")


def supports(subject, config):
    if subject != "RGLRU":
        return None
    if config.get("block"):
        return "block=True: this adapter maps the bare RG-LRU only"
    if config.get("bidirectional"):
        return "bidirectional=True: recurrentgemma's RG-LRU is causal"
    if config.get("c", PACKAGE_C) != PACKAGE_C:
        return f"c={config.get('c')}: recurrentgemma fixes c = 8"
    return None


class PackageRGLRU(torch.nn.Module):
    """recurrentgemma's RGLRU holding a reference RGLRU's parameters, called like the reference."""

    def __init__(self, reference):
        super().__init__()
        self.config = dict(reference.config)
        self.rglru = layers.RGLRU(reference.width, reference.num_heads, dtype=torch.float64)
        with torch.no_grad():
            for name, value in self.rglru.named_parameters():
                value.copy_(torch.as_tensor(reference.params[name]))

    def forward(self, x, lengths=None, integration_timesteps=None, *, initial_state=None, return_state=False,
                check_finite=True, method=None):
        if method is not None:
            raise Unsupported(f"method={method!r}: recurrentgemma has one scan")
        if integration_timesteps is not None:
            raise Unsupported("integration timesteps: recurrentgemma's RG-LRU has none")
        if check_finite and not torch.isfinite(x).all():
            raise ValueError("x must be finite (recurrentgemma adapter)")
        if x.ndim != 3 or x.shape[-1] != self.rglru.width:
            raise ValueError(f"x must have shape (b, L, H={self.rglru.width}); got {tuple(x.shape)}")
        lengths = [x.shape[1]] * x.shape[0] if lengths is None else [int(n) for n in lengths]
        outputs, finals = [], []
        for i, n in enumerate(lengths):                   # no lengths in the package: each sequence alone
            positions = torch.arange(1, n + 1, device=x.device)[None]                  # (1, n): no reset
            cache = None if initial_state is None else initial_state[i:i + 1].to(torch.float32)
            y, h = self.rglru(x[i:i + 1, :n], positions, cache=cache, return_cache=True)
            outputs.append(torch.nn.functional.pad(y, (0, 0, 0, x.shape[1] - n)))
            finals.append(h)
        y, final = torch.cat(outputs), torch.cat(finals)                                # (b, L, E), (b, E)
        return (y, final) if return_state else y

    def init_state(self, batch):
        return self.rglru.init_cache(batch, self.rglru.width)

    def step(self, x_t, state, integration_timestep=None):
        if integration_timestep is not None:
            raise Unsupported("integration timesteps: recurrentgemma's RG-LRU has none")
        positions = torch.ones((x_t.shape[0], 1), dtype=torch.long, device=x_t.device)   # not a reset
        y, h = self.rglru(x_t[:, None], positions, cache=state.to(torch.float32), return_cache=True)
        return y[:, 0], h


def from_reference(obj):
    if type(obj).__name__ != "RGLRU":
        raise Unsupported(f"recurrentgemma adapter has no {type(obj).__name__}")
    return PackageRGLRU(obj)


def parameter_vjp(module, call, cotangent):
    """Gradients under the package's (= the reference's) parameter names."""
    params = dict(module.rglru.named_parameters())
    out = call(module)
    grads = torch.autograd.grad(torch.sum(cotangent * out), list(params.values()), allow_unused=True)
    return {name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads)}
