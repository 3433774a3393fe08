"""What every torch layer shares: input validation, the Layer base class, lengths, FFT convolution.

Mirrors reference/layers/_common.py name by name (STYLE 6): the same checks raise the same exception
types with the same messages, on tensors. Two additions, both about tensors:
* `like=` (a module or a tensor) on the checks of data arguments: a tensor on another device than the
  module's parameters is a ValueError and a floating-point tensor of another precision a TypeError,
  each naming the fix; NumPy arrays, lists and integer tensors are converted to the module's dtype and
  device (the reference converts everything to float64).
* value checks (finite, >= 0, lengths in range) wait for the device on a GPU; they run while
  `check_finite` is true and are skipped while torch.compile traces.

`Layer(torch.nn.Module)` holds `config` and registers the reference layer's parameters as real
nn.Parameters with the same (dotted) names, so `state_dict()` keys equal the reference params keys and
the exchange with the reference is exact in float64 (SPEC §7). TORCH_LAYER_GUIDE.md shows a layer.

Glossary (SPEC §1): b batch, L length, H d_model, N d_state.
"""
import json

import numpy as np
import torch

from reference.layers._common import check_choice, check_params, check_positive_int, read_saved
from ..discretize import check_timesteps, checking_values
from ..scan import SCAN_METHODS

__all__ = ["LAYER_METHODS", "check_positive_int", "check_choice", "check_input", "check_lengths",
           "check_integration_timesteps", "check_state", "check_step_input", "check_method", "check_layer_method",
           "prepare_call", "final_state",
           "final_state_by_convolution", "fft_causal_conv", "powers", "draw_seed", "complex_dtype", "Layer",
           "register_torch_class", "from_reference_layer"]

LAYER_METHODS = SCAN_METHODS + ("fft",)


# ----------------------------------------------------------------------------- dtype and device
def _dtype_device(like):
    """(dtype, device) of a tensor, or of a module's first floating-point parameter or buffer."""
    if isinstance(like, torch.Tensor):
        return like.dtype, like.device
    for tensor in list(like.parameters()) + list(like.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return torch.get_default_dtype(), torch.device("cpu")


def complex_dtype(dtype):
    """The complex dtype of a real precision: float32 → complex64, float64 → complex128."""
    return {torch.float32: torch.complex64, torch.float64: torch.complex128}.get(dtype, dtype)


def _as_module_tensor(value, name, like, allow_complex=False):
    """`value` as a tensor on `like`'s device. Tensors must already be on that device and, when
    floating-point or complex, have its precision; arrays, lists and integer tensors are converted."""
    dtype, device = _dtype_device(like) if like is not None else (None, None)
    if isinstance(value, torch.Tensor):
        if device is not None and value.device != device:
            raise ValueError(f"{name} is on device {value.device} but the module's parameters are on {device}; "
                             f"move it with {name}.to({str(device)!r}) or the module with .to()")
        if dtype is not None and (value.is_floating_point() or value.is_complex()) \
                and value.real.dtype != dtype:
            raise TypeError(f"{name} has dtype {value.dtype} but the module computes in {dtype}; "
                            f"convert it with .to({dtype}) or convert the module (.double(), .float())")
    else:
        value = torch.as_tensor(np.asarray(value), device=device)
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)  # NumPy arrays arrive in float64; compute in the module's precision
    if value.dtype == torch.bool or (value.is_complex() and not allow_complex):
        raise TypeError(f"{name} must be a real floating-point array; got dtype {value.dtype}")
    if not (value.is_floating_point() or value.is_complex()):
        value = value.to(dtype or torch.get_default_dtype())
    return value


# ----------------------------------------------------------------------------- argument checks
def check_input(x, d_model, name="x", check_finite=True, like=None):
    """x: real (b, L, H) with H = d_model and L >= 1, on the module's device in its dtype (`like`)."""
    x = _as_module_tensor(x, name, like)
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (b, L, H={d_model}); got shape {tuple(x.shape)} ({x.ndim} axes)")
    if x.shape[2] != d_model:
        raise ValueError(f"{name} must have width H = d_model = {d_model} on its last axis; got shape {tuple(x.shape)}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have b >= 1 and L >= 1; got shape {tuple(x.shape)}")
    if checking_values(check_finite) and not torch.isfinite(x).all():
        index = tuple(int(i) for i in torch.nonzero(~torch.isfinite(x))[0])
        raise ValueError(f"{name} must be finite; got {x[index].item()} at index {index} "
                         "(pass check_finite=False to skip this check)")
    return x


def check_lengths(lengths, batch, L, like=None, check_values=True):
    """lengths: None or integer (b,) with 1 <= lengths <= L. Returns int64 (b,) on the module's device."""
    if lengths is None:
        return None
    device = _dtype_device(like)[1] if like is not None else None
    if isinstance(lengths, torch.Tensor):
        if device is not None and lengths.device != device:
            raise ValueError(f"lengths is on device {lengths.device} but the module's parameters are on {device}; "
                             f"move it with lengths.to({str(device)!r})")
    else:
        lengths = torch.as_tensor(np.asarray(lengths), device=device)
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must be an integer array of shape (b={batch},); got dtype {lengths.dtype}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape (b={batch},); got {tuple(lengths.shape)}")
    if checking_values(check_values):
        bad = (lengths < 1) | (lengths > L)
        if bad.any():
            i = int(torch.argmax(bad.to(torch.uint8)))
            raise ValueError(f"lengths must satisfy 1 <= lengths <= L={L}, got {int(lengths[i])} at batch index {i}")
    return lengths.to(torch.int64)


def check_integration_timesteps(tau, batch, L, like=None, check_values=True):
    """τ: None or real (b, L), finite and >= 0. Returns it in the module's dtype and device, or None."""
    if tau is None:
        return None
    tau = check_timesteps(_as_module_tensor(tau, "integration_timesteps", like), check_values=check_values)
    if tuple(tau.shape) != (batch, L):
        raise ValueError(f"integration_timesteps must have shape (b, L) = ({batch}, {L}); got {tuple(tau.shape)}")
    return tau


def check_state(state, shape, dtype=None, name="initial_state", like=None):
    """A state of exactly `shape` (numeric), in the module's precision. Returns it as `dtype`
    (default: the complex dtype of the module's precision)."""
    state = _as_module_tensor(state, name, like, allow_complex=True)
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(state.shape)}")
    if dtype is None:
        dtype = complex_dtype(_dtype_device(like)[0] if like is not None else state.real.dtype)
    return state.to(dtype)


def check_step_input(x_t, d_model, batch=None, integration_timestep=None, like=None, check_finite=True):
    """x_t: real (b, H); integration_timestep: None or (b,) >= 0. Returns (x_t (b, 1, H), τ (b, 1) or None)."""
    x_t = _as_module_tensor(x_t, "x_t", like)
    if x_t.ndim != 2:
        raise ValueError(f"x_t must have shape (b, H={d_model}); got shape {tuple(x_t.shape)}")
    x = check_input(x_t[:, None, :], d_model, name="x_t", check_finite=check_finite, like=like)   # (b, 1, H)
    if integration_timestep is None:
        return x, None
    tau = check_timesteps(_as_module_tensor(integration_timestep, "integration_timestep", like),
                          name="integration_timestep", check_values=check_finite)
    if tuple(tau.shape) != (x.shape[0],):
        raise ValueError(f"integration_timestep must have shape (b={x.shape[0]},); got {tuple(tau.shape)}")
    return x, tau[:, None]                                                          # (b, 1)


def check_method(method, time_invariant):
    """A scan method, or "fft" when the layer is time-invariant (no τ): the kernel view."""
    check_choice(method, "method", LAYER_METHODS)
    if method == "fft" and not time_invariant:
        raise ValueError("method='fft' (the convolution-kernel view) needs a time-invariant layer: "
                         "it cannot be used with integration_timesteps or initial_state; use a scan method")
    return method


def check_layer_method(method, methods, time_invariant):
    """One of the layer's own `methods`; "fft" (the convolution-kernel view) only for a time-invariant call."""
    check_choice(method, "method", methods)
    if method == "fft" and not time_invariant:
        raise ValueError("method='fft' (the convolution-kernel view) needs a time-invariant layer: "
                         "it cannot be used with integration_timesteps or initial_state; use a scan method")
    return method


def prepare_call(layer, x, lengths, integration_timesteps, initial_state, method, check_finite=True):
    """The one preamble of every layer call, mirror of the reference's: (x (b, L, H), lengths (b,) int64
    or None, τ (b, L) or None, initial state or None) on the module's device in its dtype.

    The layer provides `d_model`, `methods`, `init_state(batch)` (the state's shape and dtype) and, if it
    refuses timesteps, `accepts_timesteps = False` with `no_timesteps_reason`; `no_fft_reason` for layers
    without a convolution view.
    """
    x = check_input(x, layer.d_model, check_finite=check_finite, like=layer)       # (b, L, H)
    batch, L, _ = x.shape
    lengths = check_lengths(lengths, batch, L, like=layer, check_values=check_finite)
    if integration_timesteps is not None and not getattr(layer, "accepts_timesteps", True):
        raise ValueError(f"integration_timesteps must be None for {type(layer).__name__}: "
                         f"{getattr(layer, 'no_timesteps_reason', 'the layer has no timesteps')}")
    tau = check_integration_timesteps(integration_timesteps, batch, L, like=layer, check_values=check_finite)
    if method == "fft" and "fft" not in layer.methods and hasattr(layer, "no_fft_reason"):
        raise ValueError(f"method='fft' is not available for {type(layer).__name__}: {layer.no_fft_reason}")
    check_layer_method(method, layer.methods, time_invariant=tau is None and initial_state is None)
    h0 = None
    if initial_state is not None:
        zero = layer.init_state(batch)
        h0 = check_state(initial_state, tuple(zero.shape), zero.dtype, like=layer)
    return x, lengths, tau, h0


# ----------------------------------------------------------------------------- shared computations
def final_state(states, lengths):
    """The state after the last valid step: states[:, len_b − 1] (states[:, L − 1] without lengths).

    states: (b, L, S...). Returns (b, S...).
    """
    if lengths is None:
        return states[:, -1]
    return states[torch.arange(states.shape[0], device=states.device), lengths - 1]


def final_state_by_convolution(state_kernel, drive, lengths):
    """The state after the last valid step from the kernel view: x_T = Σ_l K_l ⊙ v_{T−l}.

    state_kernel: (L, S...) the state's impulse response; drive: (b, L, S...) (or broadcastable) the
    input it responds to; lengths: (b,) or None (then T = L − 1). Returns (b, S...).
    """
    L, batch, device = state_kernel.shape[0], drive.shape[0], state_kernel.device
    last = torch.full((batch,), L - 1, device=device) if lengths is None else lengths - 1   # (b,)
    lag = last[:, None] - torch.arange(L, device=device)                                   # (b, L) lag of input s
    K_at = state_kernel[lag.clamp(min=0)]                                                  # (b, L, S...)
    K_at = K_at * (lag >= 0).reshape(lag.shape + (1,) * (K_at.ndim - 2))
    return (K_at * drive).sum(dim=1)


def fft_causal_conv(K, u, subscripts):
    """Causal convolution y_t = Σ_{l<=t} K_l ⋆ u_{t−l} through FFTs padded to >= 2L − 1 (SPEC §4.6).

    K: (L, ...) real kernel, lag first; u: (b, L, ...) real input; subscripts: the per-frequency
    contraction with `l` for the lag/frequency axis of K, e.g. "loh,blh->blo" or "lh,blh->blh".
    """
    L = u.shape[1]
    n = 1 << (2 * L - 1).bit_length()                                              # >= 2L − 1
    K_f = torch.fft.rfft(K, n=n, dim=0)                                            # (n/2+1, ...)
    u_f = torch.fft.rfft(u, n=n, dim=1)                                            # (b, n/2+1, ...)
    y_f = torch.einsum(subscripts, K_f, u_f)
    return torch.fft.irfft(y_f, n=n, dim=1)[:, :L]                                 # (b, L, ...)


def powers(Lambda_bar, L):
    """Ā^l for l = 0..L−1 by cumulative products (no complex pow; 0^0 = 1). Returns (L, S...)."""
    steps = Lambda_bar.expand((L - 1,) + Lambda_bar.shape)                          # (L−1, S...)
    return torch.cat([torch.ones_like(Lambda_bar)[None], torch.cumprod(steps, dim=0)], dim=0)


def draw_seed(seed):
    """`seed` itself, or (None) an integer drawn from torch's default generator, so that
    torch.manual_seed makes a layer built without a seed reproducible. Nothing else is touched."""
    if seed is not None:
        return seed
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))


# ----------------------------------------------------------------------------- exchange registry
_TORCH_CLASSES = {}   # reference class name -> torch class (Layer subclasses register themselves)


def register_torch_class(torch_class):
    """Record `torch_class` as the mirror of `torch_class.reference_class` (by its class name), for
    `from_reference_layer` / `torch_backend.from_reference`. Layer subclasses are recorded
    automatically; another module (e.g. a classifier) registers itself with this. It must provide
    classmethod `from_reference(ref, dtype=None, device=None)` and method `to_reference()`."""
    _TORCH_CLASSES[torch_class.reference_class.__name__] = torch_class
    return torch_class


def from_reference_layer(ref, dtype=None, device=None):
    """The torch twin of a reference object, found by its class name; float64 unless `dtype` says
    otherwise, so that the copy is exact (SPEC §7)."""
    name = type(ref).__name__
    if name not in _TORCH_CLASSES:   # Note: a KeyError (a failed lookup), which the parity suite counts as "missing"
        raise KeyError(f"no torch class mirrors reference class {name!r}; "
                       f"known: {', '.join(sorted(_TORCH_CLASSES)) or 'none'}")
    return _TORCH_CLASSES[name].from_reference(ref, dtype=dtype, device=device)


# ----------------------------------------------------------------------------- the base class
class Layer(torch.nn.Module):
    """Base of every torch layer: `config` (the constructor arguments, as in the reference) and real
    nn.Parameters named exactly like the reference params (dotted names become nested modules).

    A subclass sets `reference_class` and, in __init__, builds the reference layer with the same
    arguments and `seed=draw_seed(seed)`, then calls `self._init_from_reference(ref)`. It implements
    forward, init_state, step and (time-invariant layers) kernel, like the reference.
    Parameters are float32 by default (torch's default dtype); `.double()` gives float64 end to end.
    """

    reference_class = None        # the reference layer class this one mirrors
    config: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("reference_class") is not None:
            register_torch_class(cls)

    # --------------------------------------------------------------------- construction
    def _init_from_reference(self, ref, buffers=()):
        """Take config and parameters from a reference layer: each params entry becomes a real
        nn.Parameter (or, if its name is in `buffers`, a persistent buffer) of torch's default dtype
        under the same dotted name. An entry that already exists (a submodule built first, as a
        classifier does) is overwritten in place after its shape is checked."""
        self.config = dict(ref.config)
        dtype = torch.get_default_dtype()
        for name, value in ref.params.items():
            owner, leaf = self._owner_of(name)
            tensor = torch.tensor(np.asarray(value), dtype=dtype)                  # a copy: no aliasing
            existing = owner._parameters.get(leaf, owner._buffers.get(leaf))
            if existing is not None:
                if existing.shape != tensor.shape:
                    raise ValueError(f"{type(self).__name__} parameter {name!r} has shape {tuple(existing.shape)}; "
                                     f"the reference gives {tuple(tensor.shape)}")
                with torch.no_grad():
                    existing.copy_(tensor)
            elif name in buffers:
                owner.register_buffer(leaf, tensor)
            else:
                owner.register_parameter(leaf, torch.nn.Parameter(tensor))
        return self

    def _owner_of(self, name):
        """The submodule holding dotted `name` and the last part of the name (plain modules are
        created on the way where none exists)."""
        *path, leaf = name.split(".")
        owner = self
        for part in path:
            child = owner._modules.get(part)
            if child is None:
                child = torch.nn.Module()
                owner.add_module(part, child)
            owner = child
        return owner, leaf

    @classmethod
    def _construct(cls, config):
        """A layer built from `config` without drawing from torch's generator (its parameters are
        about to be overwritten), with `config` kept exactly as given."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of constructor arguments; got {type(config).__name__}")
        layer = cls(**{**config, "seed": 0} if config.get("seed", 0) is None else config)
        layer.config = dict(config)
        return layer

    # --------------------------------------------------------------------- exchange (SPEC §7)
    @classmethod
    def from_reference(cls, ref, dtype=None, device=None):
        """The torch twin of a reference layer: same config, parameters copied. Note: float64 unless
        `dtype` is given (an exchange is exact, SPEC §7); constructors give torch's default float32."""
        if cls.reference_class is None or not isinstance(ref, cls.reference_class):
            expected = getattr(cls.reference_class, "__name__", None)
            raise TypeError(f"{cls.__name__}.from_reference needs a reference {expected} layer; got {type(ref).__name__}")
        return cls.from_params(ref.config, ref.params, dtype=dtype, device=device)

    @classmethod
    def from_params(cls, config, params, dtype=None, device=None):
        """Build from a config and a params dict (names and shapes checked, as in the reference);
        float64 unless `dtype` is given."""
        layer = cls._construct(config).to(dtype=dtype or torch.float64, device=device)
        return layer.load_params(params)

    def to_reference(self):
        """The reference twin: same config and parameters (exact when this module is float64)."""
        return self.reference_class.from_params(self.config, self.params())

    def params(self):
        """Parameters and persistent buffers as a flat dict of float64 NumPy arrays (copies), keyed
        like the reference params. Note: a method here, an attribute on reference layers."""
        return {name: tensor.detach().to(device="cpu", dtype=torch.float64, copy=True).numpy()
                for name, tensor in self.state_dict().items()}

    def load_params(self, params):
        """Copy a params dict (NumPy arrays or tensors) into this module; names and shapes are
        checked with the reference's `check_params`. Returns self."""
        if isinstance(params, dict):
            params = {name: value.detach().cpu().double().numpy() if isinstance(value, torch.Tensor) else value
                      for name, value in params.items()}
        state = self.state_dict()
        shapes = {name: np.broadcast_to(0.0, tuple(tensor.shape)) for name, tensor in state.items()}
        checked = check_params(params, shapes, owner=type(self).__name__)
        with torch.no_grad():
            for name, value in checked.items():
                state[name].copy_(torch.from_numpy(value))
        return self

    def save(self, path):
        """Write config and params to an .npz file in the reference's format (either backend loads it)."""
        np.savez(path, __config__=json.dumps(self.config), __class__=self.reference_class.__name__, **self.params())

    @classmethod
    def load(cls, path, dtype=None, device=None):
        """Read a layer written by `save` of either backend (float64 unless `dtype` is given)."""
        config, params = read_saved(path, cls.reference_class.__name__)
        return cls.from_params(config, params, dtype=dtype, device=device)

    # --------------------------------------------------------------------- conveniences
    @property
    def dtype(self):
        """The real dtype of the parameters (float32 by default, float64 after .double())."""
        return _dtype_device(self)[0]

    @property
    def device(self):
        return _dtype_device(self)[1]

    @property
    def complex_dtype(self):
        """complex64 for a float32 module, complex128 for a float64 one: the dtype of complex states."""
        return complex_dtype(self.dtype)

    def extra_repr(self):
        return ", ".join(f"{k}={v!r}" for k, v in getattr(self, "config", {}).items())
