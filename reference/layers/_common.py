"""What every reference layer shares: input validation, the parameter dict, lengths, FFT convolution.

Shared behaviour is a set of functions and one small base class (STYLE 15) — the recurrences
themselves live in the layer files. Every check raises ValueError/TypeError naming the argument,
the rule and the value received (STYLE 13).

Glossary (SPEC §1): b batch, L length, H d_model, N d_state.
"""
import json

import numpy as np

from ..discretize import check_timesteps
from ..scan import SCAN_METHODS

LAYER_METHODS = SCAN_METHODS + ("fft",)


# ----------------------------------------------------------------------------- argument checks
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


def check_state(state, shape, dtype=np.complex128, name="initial_state"):
    """A state of exactly `shape` (numeric). Returns it as `dtype`."""
    state = np.asarray(state)
    if state.dtype.kind not in "biufc":
        raise TypeError(f"{name} must be numeric; got dtype {state.dtype}")
    if state.shape != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}; got {state.shape}")
    return state.astype(dtype)


def check_step_input(x_t, d_model, batch=None, integration_timestep=None):
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
    """The one preamble of every layer call: (x (b, L, H) float64, lengths (b,) int64 or None,
    τ (b, L) float64 or None, initial state or None), each checked with an error naming the rule.

    The layer provides `d_model`, `methods` (its accepted `method` strings), `init_state(batch)` (the
    state's shape and dtype) and, if it refuses timesteps, `accepts_timesteps = False` with the reason
    in `no_timesteps_reason`. Layers without a convolution view simply leave "fft" out of `methods`,
    with the reason in `no_fft_reason`.
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
    check_layer_method(method, layer.methods, time_invariant=tau is None and initial_state is None)
    h0 = None
    if initial_state is not None:
        zero = layer.init_state(batch)
        h0 = check_state(initial_state, zero.shape, zero.dtype)
    return x, lengths, tau, h0


# ----------------------------------------------------------------------------- shared computations
def final_state(states, lengths):
    """The state after the last valid step: states[:, len_b − 1] (states[:, L − 1] without lengths).

    states: (b, L, S...). Returns (b, S...).
    """
    if lengths is None:
        return states[:, -1]
    return states[np.arange(states.shape[0]), lengths - 1]


def final_state_by_convolution(state_kernel, drive, lengths):
    """The state after the last valid step from the kernel view: x_T = Σ_l K_l ⊙ v_{T−l}.

    state_kernel: (L, S...) the state's impulse response; drive: (b, L, S...) (or broadcastable) the
    input it responds to; lengths: (b,) or None (then T = L − 1). Returns (b, S...).
    """
    L = state_kernel.shape[0]
    batch = drive.shape[0]
    last = np.full(batch, L - 1) if lengths is None else lengths - 1                     # (b,)
    lag = last[:, None] - np.arange(L)                                                    # (b, L) lag of input s
    K_at = state_kernel[np.clip(lag, 0, None)]                                            # (b, L, S...)
    K_at = K_at * (lag >= 0).reshape(lag.shape + (1,) * (K_at.ndim - 2))
    return (K_at * drive).sum(axis=1)


def fft_causal_conv(K, u, subscripts):
    """Causal convolution y_t = Σ_{l<=t} K_l ⋆ u_{t−l} through FFTs padded to >= 2L − 1 (SPEC §4.6).

    K: (L, ...) kernel, lag first; u: (b, L, ...) input; subscripts: the per-frequency contraction with
    `l` for the lag/frequency axis of K, e.g. "loh,blh->blo" (MIMO) or "lh,blh->blh" (depthwise).
    """
    L = u.shape[1]
    n = 1 << (2 * L - 1).bit_length()                                             # >= 2L − 1
    K_f = np.fft.rfft(K, n=n, axis=0)                                             # (n/2+1, ...)
    u_f = np.fft.rfft(u, n=n, axis=1)                                             # (b, n/2+1, ...)
    y_f = np.einsum(subscripts, K_f, u_f)
    return np.fft.irfft(y_f, n=n, axis=1)[:, :L]                                  # (b, L, ...)


def powers(Lambda_bar, L):
    """Ā^l for l = 0..L−1 by cumulative products (no complex pow; 0^0 = 1). Returns (L, S...)."""
    steps = np.broadcast_to(Lambda_bar, (L - 1,) + np.shape(Lambda_bar))
    return np.concatenate([np.ones((1,) + np.shape(Lambda_bar), np.result_type(Lambda_bar)),
                           np.cumprod(steps, axis=0)], axis=0)


# ----------------------------------------------------------------------------- the base class
class Layer:
    """Parameters in `self.params` (flat dict of real float64 arrays), arguments in `self.config`.

    Subclasses set both in __init__ (from a seed) and implement __call__, init_state, step and,
    when time-invariant, kernel.
    """

    config: dict
    params: dict

    @classmethod
    def from_params(cls, config, params):
        """Rebuild a layer from its config and a params dict; every name and shape is checked."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict of constructor arguments; got {type(config).__name__}")
        layer = cls(**config)
        layer.params = check_params(params, layer.params, owner=cls.__name__)
        return layer

    def save(self, path):
        """Write config, class name and params to an .npz file (either backend loads it)."""
        np.savez(path, __config__=json.dumps(self.config), __class__=type(self).__name__, **self.params)

    @classmethod
    def load(cls, path):
        """Read a layer written by `save`; a file from another configuration raises naming the parameter."""
        config, params = read_saved(path, cls.__name__)
        return cls.from_params(config, params)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


def read_saved(path, class_name):
    """(config, params) from an .npz file written by `save`; a file saved from another layer class
    raises ValueError naming both classes."""
    with np.load(path) as data:
        if "__config__" not in data.files:
            raise ValueError(f"{path} was not written by Layer.save: it has no __config__ entry")
        saved_class = str(data["__class__"]) if "__class__" in data.files else class_name
        if saved_class != class_name:
            raise ValueError(f"{path} holds a {saved_class} layer; load it with {saved_class}.load, "
                             f"not {class_name}.load")
        config = json.loads(str(data["__config__"]))
        params = {k: data[k] for k in data.files if k not in ("__config__", "__class__")}
    return config, params


def check_params(params, expected, owner="layer"):
    """Compare a params dict with the expected one by names and shapes. Returns float64 copies."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{owner} params are missing parameter {missing[0]!r} (expected {sorted(expected)})")
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{owner} params have unexpected parameter {extra[0]!r} (expected {sorted(expected)})")
    checked = {}
    for name, reference in expected.items():
        value = np.asarray(params[name])
        if value.dtype.kind not in "biuf":
            raise TypeError(f"{owner} parameter {name!r} must be a real array; got dtype {value.dtype}")
        if value.shape != reference.shape:
            raise ValueError(f"{owner} parameter {name!r} must have shape {reference.shape}; got {value.shape}")
        checked[name] = value.astype(np.float64, copy=True)
    return checked
