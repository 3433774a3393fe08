"""Argument checks of every torch layer call and the one call preamble `prepare_call` — mirror of
reference/layers/_checks.py: the same checks raise the same exception types with the same messages.

Two additions, both about tensors:
* `like=` (a module or a tensor) on the checks of data arguments: a tensor on another device than the
  module's parameters is a ValueError and a floating-point tensor of another precision a TypeError,
  each naming the fix; NumPy arrays, lists and integer tensors are converted to the module's dtype and
  device (the reference converts everything to float64).
* value checks (finite, >= 0, lengths in range) wait for the device on a GPU; they run while
  `check_finite` is true. While torch.compile traces, the lengths range check stays in the graph as an
  assertion with the same message (`compiled_check`: RuntimeError there); the others are skipped.
Glossary (SPEC §1): b batch, L length, H d_model.
"""
import numpy as np
import torch

from reference.layers._checks import check_choice, check_positive_int
from ..discretize import check_timesteps, checking_values
from ..scan import SCAN_METHODS

__all__ = ["LAYER_METHODS", "check_positive_int", "check_choice", "check_input", "check_lengths",
           "check_integration_timesteps", "check_state", "check_step_input", "check_method", "prepare_call",
           "complex_dtype"]

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


def compiled_check(condition, message):
    """The value check of traced code (torch.compile): an assertion kept in the graph, with the eager
    check's message. Note: it raises RuntimeError (on CUDA a device-side assert) where eager code raises
    ValueError — a traced graph cannot raise by value; without it an invalid length gives silent wrong
    outputs or an out-of-bounds read in generated code."""
    torch._assert_async(condition, message)


def dtype_name(dtype):
    """A dtype as the reference's messages spell it ("float64", not "torch.float64"): one catalogue."""
    return str(dtype).replace("torch.", "")


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
        array = np.asarray(value)
        if array.dtype.kind not in "biufc":                  # strings, objects: the reference's message, not torch's
            raise TypeError(f"{name} must be a real floating-point array; got dtype {array.dtype}")
        value = torch.as_tensor(array, device=device)
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)  # NumPy arrays arrive in float64; compute in the module's precision
    if value.dtype == torch.bool or (value.is_complex() and not allow_complex):
        raise TypeError(f"{name} must be a real floating-point array; got dtype {dtype_name(value.dtype)}")
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
        array = np.asarray(lengths)
        if array.dtype.kind not in "iu":
            raise TypeError(f"lengths must be an integer array of shape (b={batch},); got dtype {array.dtype}")
        lengths = torch.as_tensor(array, device=device)
    if lengths.dtype == torch.bool or lengths.is_floating_point() or lengths.is_complex():
        raise TypeError(f"lengths must be an integer array of shape (b={batch},); got dtype {dtype_name(lengths.dtype)}")
    if tuple(lengths.shape) != (batch,):
        raise ValueError(f"lengths must have shape (b={batch},); got {tuple(lengths.shape)}")
    if checking_values(check_values):
        bad = (lengths < 1) | (lengths > L)
        if bad.any():
            i = int(torch.argmax(bad.to(torch.uint8)))
            raise ValueError(f"lengths must satisfy 1 <= lengths <= L={L}, got {int(lengths[i])} at batch index {i}")
    elif check_values:
        compiled_check(((lengths >= 1) & (lengths <= L)).all(), f"lengths must satisfy 1 <= lengths <= L={L}")
    return lengths.to(torch.int64)


def check_integration_timesteps(tau, batch, L, like=None, check_values=True):
    """τ: None or real (b, L), finite and >= 0. Returns it in the module's dtype and device, or None."""
    if tau is None:
        return None
    if (tau.dtype == torch.bool or tau.is_complex()) if isinstance(tau, torch.Tensor) else \
            np.asarray(tau).dtype.kind not in "iuf":
        kind = dtype_name(tau.dtype) if isinstance(tau, torch.Tensor) else np.asarray(tau).dtype
        raise TypeError(f"integration_timesteps must be a real numeric array; got dtype {kind}")
    tau = check_timesteps(_as_module_tensor(tau, "integration_timesteps", like), check_values=check_values)
    if tuple(tau.shape) != (batch, L):
        raise ValueError(f"integration_timesteps must have shape (b, L) = ({batch}, {L}); got {tuple(tau.shape)}")
    return tau


def check_state(state, shape, dtype=None, name="initial_state", like=None, check_finite=True):
    """A finite state of exactly `shape` (numeric, not bool), in the module's precision. Returns it as
    `dtype` (default: the complex dtype of the module's precision)."""
    if (state.dtype == torch.bool) if isinstance(state, torch.Tensor) else np.asarray(state).dtype.kind not in "iufc":
        kind = "bool" if isinstance(state, torch.Tensor) else np.asarray(state).dtype
        raise TypeError(f"{name} must be a numeric array (not bool); got dtype {kind}")
    state = _as_module_tensor(state, name, like, allow_complex=True)
    if tuple(state.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {tuple(state.shape)}")
    if checking_values(check_finite) and not torch.isfinite(state).all():
        index = tuple(int(i) for i in torch.nonzero(~torch.isfinite(state))[0])
        raise ValueError(f"{name} must be finite; got {complex(state[index].item())} at index {index} "
                         "(pass check_finite=False to skip this check)")
    if dtype is None:
        dtype = complex_dtype(_dtype_device(like)[0] if like is not None else state.real.dtype)
    return state.to(dtype)




def check_inplace(given, checked, name="state"):
    """`step(..., inplace=True)` writes the new state into the tensors it was given, so each must already be
    the step's own tensor (the checked state is the given object: no dtype or device conversion, which would
    write into a copy), and autograd must be off (an in-place write would overwrite values a backward needs).
    `given`/`checked`: the state as passed and as checked (tensors, or tuples of them for a tuple state)."""
    if torch.is_grad_enabled():
        raise ValueError("inplace=True needs autograd off (call step under torch.no_grad() or "
                         "torch.inference_mode()): writing over the state would destroy what a backward needs")
    pairs = zip(given, checked) if isinstance(checked, tuple) else [(given, checked)]
    for part, (g, c) in enumerate(pairs):
        label = name if not isinstance(checked, tuple) else f"{name}[{part}]"
        if g is not c:
            kind = f"{type(g).__name__}" + (f" of dtype {g.dtype} on {g.device}" if isinstance(g, torch.Tensor) else "")
            raise ValueError(f"inplace=True writes the new state into {label}, so it must be a tensor of dtype "
                             f"{c.dtype} on {c.device} (as init_state makes it); got a {kind}")


def check_step_input(x_t, d_model, integration_timestep=None, like=None, check_finite=True):
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


def check_method(method, methods, time_invariant):
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
    without a convolution view; `methods_reason` for a layer with a short list of `methods`.
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
    if method not in layer.methods and hasattr(layer, "methods_reason"):
        raise ValueError(f"method must be one of {', '.join(layer.methods)} for {type(layer).__name__} "
                         f"({layer.methods_reason}); got {method!r}")
    check_method(method, layer.methods, time_invariant=tau is None and initial_state is None)
    h0 = None
    if initial_state is not None:
        zero = layer.init_state(batch)
        if (initial_state.is_complex() if isinstance(initial_state, torch.Tensor) else np.iscomplexobj(initial_state)) \
                and not zero.is_complex():
            raise TypeError(f"initial_state must be real ({type(layer).__name__}'s state is real); got a complex array")
        h0 = check_state(initial_state, tuple(zero.shape), zero.dtype, like=layer, check_finite=check_finite)
    return x, lengths, tau, h0
