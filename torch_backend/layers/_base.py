"""The torch `Layer` base — mirror of reference/layers/_base.py: config, parameters and save/load.

`Layer(torch.nn.Module)` holds `config` and registers the reference layer's parameters as real
nn.Parameters with the same (dotted) names, so `state_dict()` keys equal the reference params keys and
the exchange with the reference is exact in float64 (SPEC §7). Subclasses register themselves with
`torch_backend.exchange`, which finds the torch twin of a reference layer by class name.

Streaming (`step`, one event at a time) has two helpers here: `Layer._cached` keeps the parameter-derived
arrays of a layer (discretised Λ̄, complex B and C, …) between events while autograd is off, and
`check_step` validates an event and a state without state-sized temporaries, so that a step allocates
little more than the new state it returns (benchmarks/streaming.py measures it).
"""
import json
import types

import numpy as np
import torch

from reference.layers._base import check_params, read_saved
from ..discretize import all_finite
from ..exchange import register_torch_class
from ._checks import _dtype_device, check_state, check_step_input, complex_dtype


def draw_seed(seed):
    """`seed` itself, or (None) an integer drawn from torch's default generator, so that
    torch.manual_seed makes a layer built without a seed reproducible. Nothing else is touched."""
    if seed is not None:
        return seed
    return int(torch.randint(0, 2 ** 62, (), dtype=torch.int64))


class Layer(torch.nn.Module):
    """Base of every torch layer: `config` (the constructor arguments, as in the reference) and real
    nn.Parameters named exactly like the reference params (dotted names become nested modules).

    A subclass sets `reference_class` and, in __init__, builds the reference layer with the same
    arguments and `seed=draw_seed(seed)`, then calls `self._init_from_reference(ref)`. It reads in the
    reference's order: discrete_system, read_out, forward (opening with `prepare_call`), step, kernel
    (time-invariant layers), init_state.
    Parameters are float32 by default (torch's default dtype); `.double()` gives float64 end to end.
    """

    reference_class = None        # the reference layer class this one mirrors
    config: dict

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.__dict__.get("reference_class") is not None:
            register_torch_class(cls)
        if "__call__" not in cls.__dict__:
            # torch.compile starts tracing at __call__ and keeps its cache (and recompile limit, 8) per code
            # object: one shared Layer.__call__ would make every layer class share one cache. A copy per class.
            call = Layer.__call__
            code = call.__code__.replace(co_name=f"{cls.__name__}_call", co_qualname=f"{cls.__qualname__}.__call__")
            cls.__call__ = types.FunctionType(code, call.__globals__, "__call__", call.__defaults__, call.__closure__)

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
        return self.reference_class.from_params(self.config, self.params)

    @property
    def params(self):
        """Parameters and persistent buffers as a flat dict of float64 NumPy arrays, keyed like the
        reference params — the same kind of thing as a reference layer's `params`. Note: a snapshot (the
        arrays are copies of the tensors, which may be float32 or on a GPU); change the module's values
        with `load_params`."""
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
        np.savez(path, __config__=json.dumps(self.config), __class__=self.reference_class.__name__, **self.params)

    @classmethod
    def load(cls, path, dtype=None, device=None):
        """Read a layer written by `save` of either backend (float64 unless `dtype` is given)."""
        config, params = read_saved(path, cls.reference_class)
        return cls.from_params(config, params, dtype=dtype, device=device)

    # --------------------------------------------------------------------- parameter-derived arrays (streaming)
    def _cached(self, name, build):
        """`build()`, kept between calls while autograd is off: the parameter-derived, τ-independent arrays
        of `step` and `read_out` (discretised Λ̄, complex B and C, …) are formed once, not on every event.

        The entry is keyed on the version counter and storage of every parameter and buffer, so an in-place
        change (an optimiser step, `load_params`, `p.add_(…)` under no_grad) rebuilds it, and `.to()`,
        `.double()` or `.cuda()` drop it (`_apply`). With autograd on (training, or gradients through a
        stream) nothing is kept and nothing is read: the arrays must join this call's graph. Changes made
        through `p.data` bypass the version counter, as they bypass autograd's own checks, and are not seen.
        Note: torch only; the reference re-forms the arrays on every call (NumPy has no version counters)."""
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return build()
        key = tuple((t._version, t.data_ptr()) for t in (*self.parameters(), *self.buffers()))
        cache = self.__dict__.setdefault("_derived", {})
        entry = cache.get(name)
        if entry is None or entry[0] != key:
            entry = cache[name] = (key, build())
        return entry[1]

    def _workspace(self, name, shape, dtype):
        """A scratch tensor of `shape` and `dtype` on the module's device, for the per-event temporaries of
        `step(..., inplace=True)` (Ā_t and γ̄_t with τ, gate vectors, projections), written with `out=` ops so
        that an in-place step allocates nothing per event. Made with torch.empty once per (name, shape, dtype) on
        the module's device and kept in `self.__dict__["_scratch"]`; `.to()`, `.double()` and `.cuda()` drop it
        (`_apply`).
        Scratch: its contents are undefined between calls (each call writes before it reads), and it is valid
        only while autograd is off (the in-place path checks that), since a graph would keep a reference to a
        buffer the next event overwrites. Memory follows the data: one buffer per shape in use.
        Note: torch only; the reference allocates its temporaries (its memory is not measured)."""
        key = (name, tuple(int(n) for n in shape), dtype)     # no device: `_apply` drops the buffers on a move
        scratch = self.__dict__.setdefault("_scratch", {})
        buffer = scratch.get(key)
        if buffer is None:
            buffer = scratch[key] = torch.empty(key[1], dtype=dtype, device=self.device)
        return buffer

    def _event_workspaces(self, state):
        """(out, scratch) of `discretize_event(..., out=out, scratch=scratch)` in an in-place step: Ā_t and γ̄_t
        in two workspaces shaped and typed like the state, and a real one for zoh's φ1 and bilinear's Δ_A."""
        out = (self._workspace("Lambda_bar_t", state.shape, state.dtype),
               self._workspace("gamma_bar_t", state.shape, state.dtype))                    # (b, S...) each
        return out, self._workspace("event_scratch", state.shape, self.dtype)              # (b, S...) real

    def _apply(self, fn, *args, **kwargs):
        """nn.Module's `_apply` (behind .to(), .double(), .cuda()), after dropping the arrays of `_cached`
        and the scratch tensors of `_workspace`."""
        self.__dict__.pop("_derived", None)
        self.__dict__.pop("_scratch", None)
        return super()._apply(fn, *args, **kwargs)

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

    # --------------------------------------------------------------------- precision policy (README: mixed precision)
    autocast_inside = False       # True for models whose own Linear layers follow autocast (the Classifier)

    def __call__(self, *args, **kwargs):
        """Under torch.autocast a layer computes exactly as outside it: floating inputs are cast to the
        module's precision, autocast is off inside (recurrence parameters, discretisation and the scan
        stay float32/complex64) and real floating outputs return in the autocast dtype; complex states
        keep their dtype. Outside autocast this is nn.Module.__call__."""
        # Note: torch layers only; the reference has no mixed precision.
        if self.autocast_inside:
            return super().__call__(*args, **kwargs)
        device_type = self.device.type
        if not torch.is_autocast_enabled(device_type):
            return super().__call__(*args, **kwargs)
        low, dtype = torch.get_autocast_dtype(device_type), self.dtype
        args = [_cast_floating(value, dtype) for value in args]
        kwargs = {key: _cast_floating(value, dtype) for key, value in kwargs.items()}
        with torch.autocast(device_type, enabled=False):
            out = super().__call__(*args, **kwargs)
        return tuple(_cast_floating(value, low) for value in out) if isinstance(out, tuple) else _cast_floating(out, low)

    def half(self):
        raise TypeError(_NO_HALF.format(type(self).__name__, "float16"))

    def bfloat16(self):
        raise TypeError(_NO_HALF.format(type(self).__name__, "bfloat16"))

    def to(self, *args, **kwargs):
        dtype = torch._C._nn._parse_to(*args, **kwargs)[1]
        if dtype in (torch.float16, torch.bfloat16):
            raise TypeError(_NO_HALF.format(type(self).__name__, str(dtype).replace("torch.", "")))
        return super().to(*args, **kwargs)


_NO_HALF = ("{} cannot be converted to {}: its recurrences need float32 or float64 (complex states have no "
            "half-precision kernels); for mixed precision keep the module in float32 and call it under "
            "torch.autocast, which runs the recurrence in float32 and returns outputs in the autocast dtype")


def check_step(layer, x_t, state, integration_timestep, state_shape, dtype=None):
    """The checks of one `step`: (x (b, 1, H), τ (b, 1) or None, state (b, *state_shape) as `dtype`, default
    the module's complex dtype), with the errors of check_step_input and check_state.
    Note: torch only, for the memory of a step: the finiteness of x_t, of τ (and τ >= 0) and of the state is
    first read with `all_finite`; the full checks (which raise the reference's messages) run only when that
    read fails."""
    quick = all_finite(x_t) and (integration_timestep is None or _valid_gaps(integration_timestep))
    x, tau = check_step_input(x_t, layer.d_model, integration_timestep=integration_timestep, like=layer,
                              check_finite=not quick)                                          # (b, 1, H)
    state = check_state(state, (x.shape[0],) + tuple(state_shape), dtype, name="state", like=layer,
                        check_finite=not all_finite(state))
    return x, tau, state


def _valid_gaps(tau):
    """True when τ is a real floating tensor of finite values >= 0, read from its minimum and maximum (no
    temporaries); anything else takes the full checks, which raise the reference's messages."""
    return all_finite(tau) and not tau.is_complex() and bool(tau.min() >= 0)


def _cast_floating(value, dtype):
    """A real floating tensor in `dtype`; anything else (integers, complex states, None) as it is."""
    return value.to(dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value
