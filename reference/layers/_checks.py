"""Argument checks of every reference layer call, and the one call preamble `prepare_call`.

Every check raises ValueError/TypeError naming the argument, the rule and the value received
(STYLE 13); a layer call opens with one line,
    x, lengths, tau, h0 = prepare_call(self, x, lengths, integration_timesteps, initial_state, method, check_finite)
Glossary (SPEC §1): b batch, L length, H d_model.
"""
import numpy as np

from ..discretize import check_timesteps
from ..scan import SCAN_METHODS

LAYER_METHODS = SCAN_METHODS + ("fft",)


def check_positive_int(value, name, minimum=1):
    """An integer >= minimum (bools are not integers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an integer; got {value!r} of type {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}; got {value}")
    return int(value)


def check_choice(value, name, choices):
    """A string from `choices`; the error lists them (every string dispatch ends in a raise)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(str, choices))}; got {value!r}")
    return value


def check_input(x, d_model, name="x", check_finite=True):
    """x: real (b, L, H) with H = d_model and L >= 1. Returns it as float64."""
    x = np.asarray(x)
    if x.dtype.kind not in "fiu" or x.dtype == bool:
        raise TypeError(f"{name} must be a real floating-point array; got dtype {x.dtype}")
    if x.ndim != 3:
        raise ValueError(f"{name} must have shape (b, L, H={d_model}); got shape {x.shape} ({x.ndim} axes)")
    if x.shape[2] != d_model:
        raise ValueError(f"{name} must have width H = d_model = {d_model} on its last axis; got shape {x.shape}")
    if x.shape[0] < 1 or x.shape[1] < 1:
        raise ValueError(f"{name} must have b >= 1 and L >= 1; got shape {x.shape}")
    x = x.astype(np.float64, copy=False)
    if check_finite and not np.isfinite(x).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(x))[0])
        raise ValueError(f"{name} must be finite; got {x[index]} at index {index} "
                         "(pass check_finite=False to skip this check)")
    return x


def check_lengths(lengths, batch, L):
    """lengths: None or integer (b,) with 1 <= lengths <= L. Returns int64 (b,) or None."""
    if lengths is None:
        return None
    lengths = np.asarray(lengths)
    if lengths.dtype.kind not in "iu":
        raise TypeError(f"lengths must be an integer array of shape (b={batch},); got dtype {lengths.dtype}")
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape (b={batch},); got {lengths.shape}")
    bad = (lengths < 1) | (lengths > L)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"lengths must satisfy 1 <= lengths <= L={L}, got {int(lengths[i])} at batch index {i}")
    return lengths.astype(np.int64)


def check_integration_timesteps(tau, batch, L):
    """τ: None or real (b, L), finite and >= 0. Returns float64 (b, L) or None."""
    if tau is None:
        return None
    tau = check_timesteps(tau)
    if tau.shape != (batch, L):
        raise ValueError(f"integration_timesteps must have shape (b, L) = ({batch}, {L}); got {tau.shape}")
    return tau


def check_state(state, shape, dtype=np.complex128, name="initial_state", check_finite=True):
    """A finite state of exactly `shape` (numeric, not bool). Returns it as `dtype`."""
    state = np.asarray(state)
    if state.dtype.kind not in "iufc":
        raise TypeError(f"{name} must be a numeric array (not bool); got dtype {state.dtype}")
    if state.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {state.shape}")
    if check_finite and not np.isfinite(state).all():
        index = tuple(int(i) for i in np.argwhere(~np.isfinite(state))[0])
        raise ValueError(f"{name} must be finite; got {complex(state[index])} at index {index} "
                         "(pass check_finite=False to skip this check)")
    return state.astype(dtype)


def check_inplace(given, checked, name="state"):
    """`step(..., inplace=True)` writes the new state into the arrays it was given, so each must already be
    the step's own array: a writeable ndarray of the checked dtype (no conversion, which would write into a
    copy). `given`/`checked`: the state as passed and as checked (arrays, or tuples of them for a tuple state)."""
    pairs = zip(given, checked) if isinstance(checked, tuple) else [(given, checked)]
    for part, (g, c) in enumerate(pairs):
        label = name if not isinstance(checked, tuple) else f"{name}[{part}]"
        if not isinstance(g, np.ndarray) or g.dtype != c.dtype or not g.flags.writeable:
            kind = f"{type(g).__name__} of dtype {getattr(g, 'dtype', None)}"
            raise ValueError(f"inplace=True writes the new state into {label}, so it must be a writeable "
                             f"numpy array of dtype {c.dtype} (as init_state makes it); got a {kind}")


def returned_state(given, new_state, inplace):
    """The state a `step` returns: `new_state`, or with inplace=True the given arrays (checked by
    `check_inplace`) with the new state copied into them (element by element for a tuple state)."""
    if not inplace:
        return new_state
    for target, value in zip(given, new_state) if isinstance(given, tuple) else [(given, new_state)]:
        np.copyto(target, value)
    return given


def check_step_input(x_t, d_model, integration_timestep=None):
    """x_t: real (b, H); integration_timestep: None or (b,) >= 0. Returns (x_t (b, 1, H), τ (b, 1) or None)."""
    x_t = np.asarray(x_t)
    if x_t.ndim != 2:
        raise ValueError(f"x_t must have shape (b, H={d_model}); got shape {x_t.shape}")
    x = check_input(x_t[:, None, :], d_model, name="x_t")                          # (b, 1, H)
    if integration_timestep is None:
        return x, None
    tau = check_timesteps(integration_timestep, name="integration_timestep")
    if tau.shape != (x.shape[0],):
        raise ValueError(f"integration_timestep must have shape (b={x.shape[0]},); got {tau.shape}")
    return x, tau[:, None]                                                         # (b, 1)


def check_method(method, methods, time_invariant):
    """One of the layer's own `methods`; "fft" (the convolution-kernel view) only for a time-invariant call."""
    check_choice(method, "method", methods)
    if method == "fft" and not time_invariant:
        raise ValueError("method='fft' (the convolution-kernel view) needs a time-invariant layer: "
                         "it cannot be used with integration_timesteps or initial_state; use a scan method")
    return method


def prepare_call(layer, x, lengths, integration_timesteps, initial_state, method, check_finite=True):
    """The one preamble of every layer call: (x (b, L, H) float64, lengths (b,) int64 or None,
    τ (b, L) float64 or None, initial state or None), each checked with an error naming the rule.

    The layer provides `d_model`, `methods` (its accepted `method` strings), `init_state(batch)` (the
    state's shape and dtype) and, if it refuses timesteps, `accepts_timesteps = False` with the reason
    in `no_timesteps_reason`. Layers without a convolution view simply leave "fft" out of `methods`,
    with the reason in `no_fft_reason`; a layer with a short list of `methods` may say why in
    `methods_reason`.
    """
    x = check_input(x, layer.d_model, check_finite=check_finite)                   # (b, L, H)
    batch, L, _ = x.shape
    lengths = check_lengths(lengths, batch, L)
    if integration_timesteps is not None and not getattr(layer, "accepts_timesteps", True):
        raise ValueError(f"integration_timesteps must be None for {type(layer).__name__}: "
                         f"{getattr(layer, 'no_timesteps_reason', 'the layer has no timesteps')}")
    tau = check_integration_timesteps(integration_timesteps, batch, L)
    if method == "fft" and "fft" not in layer.methods and hasattr(layer, "no_fft_reason"):
        raise ValueError(f"method='fft' is not available for {type(layer).__name__}: {layer.no_fft_reason}")
    if method not in layer.methods and hasattr(layer, "methods_reason"):
        raise ValueError(f"method must be one of {', '.join(layer.methods)} for {type(layer).__name__} "
                         f"({layer.methods_reason}); got {method!r}")
    check_method(method, layer.methods, time_invariant=tau is None and initial_state is None)
    h0 = None
    if initial_state is not None:
        zero = layer.init_state(batch)
        if np.iscomplexobj(initial_state) and not np.iscomplexobj(zero):
            raise TypeError(f"initial_state must be real ({type(layer).__name__}'s state is real); got a complex array")
        h0 = check_state(initial_state, zero.shape, zero.dtype, check_finite=check_finite)
    return x, lengths, tau, h0
