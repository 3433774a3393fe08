"""The reference `Layer` base: parameters, config, save/load in the .npz format both backends read (SPEC §7).

Shared behaviour is a set of functions and this one small base class (STYLE 15); the recurrences live
in the layer files, their checks in `_checks.py`, their shared math in `_math.py`.
"""
import json
import os
import zipfile
import zlib

import numpy as np


class Layer:
    """Parameters in `self.params` (flat dict of real float64 arrays), arguments in `self.config`.

    Subclasses set both in __init__ (from a seed) and read in one order (STYLE 16): `discrete_system(tau=None)`
    (the layer's discrete system for timesteps τ), `read_out(states, x)` (the read-out formula, written
    once), then `__call__` (opening with `prepare_call`), `step` (reusing `read_out`), `kernel`
    (time-invariant layers) and `init_state`.
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
        config, params = read_saved(path, cls)
        return cls.from_params(config, params)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"


def read_saved(path, layer_class):
    """(config, params) from an .npz file written by `save`, read as untrusted data (both backends load
    through this). Nothing is executed (no pickles) and nothing large is read or built before it is known
    to be expected:
    1. the archive's member list and each array's header (name, shape, dtype) — a few bytes each;
    2. the class name and the JSON config (small string arrays); every integer in the config that sizes
       something must be found among the arrays' dimensions (or count them), so a forged config cannot make
       the constructor allocate more than the file declares;
    3. the expected names and shapes, from the reference class built with that config, against the headers:
       a missing, unexpected or reshaped parameter is refused before any parameter is read;
    4. the parameters, each checked real (not bool) and finite.
    A corrupted or truncated file raises ValueError naming it. `layer_class`: the reference class (or its
    name, which skips step 3). `path` may omit the ".npz" suffix that `save` (np.savez) appends.
    """
    class_name = layer_class if isinstance(layer_class, str) else layer_class.__name__
    path = _npz_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            headers = _array_headers(archive, path)
            if "__config__" not in headers:
                raise ValueError(f"{path} was not written by Layer.save: it has no __config__ entry")
            saved_class = _read_text(archive, headers, "__class__", path) if "__class__" in headers else class_name
            if saved_class != class_name:
                raise ValueError(f"{path} holds a {saved_class} layer; load it with {saved_class}.load, "
                                 f"not {class_name}.load")
            try:
                config = json.loads(_read_text(archive, headers, "__config__", path))
            except json.JSONDecodeError as error:
                raise ValueError(f"{path} has a __config__ entry that is not JSON: {error}") from None
            if not isinstance(config, dict):
                raise ValueError(f"{path} has a __config__ entry that is not a dict of constructor arguments")
            shapes = {name: shape for name, (shape, _) in headers.items() if name not in ("__config__", "__class__")}
            _check_config_sizes(config, shapes, path)
            if not isinstance(layer_class, str):
                expected = {name: np.shape(value) for name, value in layer_class(**config).params.items()}
                check_params(shapes, {name: np.broadcast_to(0.0, shape) for name, shape in expected.items()},
                             owner=f"{class_name} in {path}", values=False)
            for name, (shape, dtype) in headers.items():
                if name not in ("__config__", "__class__") and (dtype.kind not in "iuf"):
                    raise TypeError(f"{class_name} parameter {name!r} in {path} must be a real array; "
                                    f"got dtype {dtype}")
            params = {name: _read_array(archive, name, path) for name in shapes}
    except (zipfile.BadZipFile, EOFError, OSError, zlib.error) as error:
        raise ValueError(f"{path} is not a readable .npz file written by Layer.save "
                         f"(corrupted or truncated): {type(error).__name__}: {error}") from None
    return config, params


# sizes in a config that are not array dimensions: a seed, MultiresConv's max_len (the tree's depth is
# its logarithm), pooling strides (a window is clamped to the sequence)
_NOT_SIZES = ("seed", "max_len", "pooling_factor")


def _check_config_sizes(config, shapes, path):
    """Every integer of the config (through nested dicts and lists) is at most the element count of the
    file's largest array or the number of arrays (a size such as Centaurus' full-mode d_state = H² is no
    single dimension, but it never exceeds the array it sizes); the names of _NOT_SIZES are exempt."""
    bound = max([len(shapes)] + [int(np.prod(shape)) for shape in shapes.values()])

    def visit(value, key):
        if key in _NOT_SIZES:
            return
        if isinstance(value, dict):
            for inner, item in value.items():
                visit(item, inner)
        elif isinstance(value, list):
            for item in value:
                visit(item, key)
        elif isinstance(value, int) and not isinstance(value, bool) and value > bound:
            raise ValueError(f"{path}: config {key}={value} is larger than any array in the file "
                             f"(largest array has {bound} elements); the file is inconsistent or forged")
    visit(config, "config")


def _npz_path(path):
    """`path`, or `path` + ".npz" when only that exists (np.savez appends the suffix when it is missing)."""
    if isinstance(path, (str, os.PathLike)) and not os.path.exists(path) and os.path.exists(f"{os.fspath(path)}.npz"):
        return f"{os.fspath(path)}.npz"
    return path


def _array_headers(archive, path):
    """{name: (shape, dtype)} from the .npy headers of the archive's members, without reading any data."""
    headers = {}
    for member in archive.namelist():
        if not member.endswith(".npy"):
            raise ValueError(f"{path} has a member {member!r} that is not an array; not written by Layer.save")
        with archive.open(member) as stream:
            version = np.lib.format.read_magic(stream)
            read_header = {(1, 0): np.lib.format.read_array_header_1_0,
                           (2, 0): np.lib.format.read_array_header_2_0}.get(version)
            if read_header is None:
                raise ValueError(f"{path}: member {member!r} has .npy format version {version}, not 1.0 or 2.0")
            shape, _, dtype = read_header(stream)
        if dtype.hasobject:
            raise ValueError(f"{path}: member {member!r} holds Python objects; Layer.save never writes them")
        headers[member[:-len(".npy")]] = (tuple(shape), dtype)
    return headers


def _read_text(archive, headers, name, path, limit=1 << 20):
    """A 0-d string array (the class name or the JSON config) of at most `limit` characters."""
    shape, dtype = headers[name]
    if shape != () or dtype.kind != "U" or dtype.itemsize > 4 * limit:
        raise ValueError(f"{path}: {name} must be a text entry of at most {limit} characters; got {dtype} {shape}")
    return str(_read_array(archive, name, path))


def _read_array(archive, name, path):
    with archive.open(f"{name}.npy") as stream:
        try:
            return np.lib.format.read_array(stream, allow_pickle=False)
        except ValueError as error:
            raise ValueError(f"{path}: entry {name!r} is corrupted or truncated: {error}") from None


def check_params(params, expected, owner="layer", values=True):
    """Compare a params dict with the expected one by names and shapes; each value must be real (not
    bool) and finite. Returns float64 copies. values=False checks names and shapes only (of shape tuples
    or arrays) and returns None."""
    if not isinstance(params, dict):
        raise TypeError(f"params must be a dict of arrays; got {type(params).__name__}")
    missing = [k for k in expected if k not in params]
    if missing:
        raise ValueError(f"{owner} params are missing parameter {missing[0]!r} (expected {sorted(expected)})")
    extra = [k for k in params if k not in expected]
    if extra:
        raise ValueError(f"{owner} params have unexpected parameter {extra[0]!r} (expected {sorted(expected)})")
    if not values:
        for name, reference in expected.items():
            shape = tuple(params[name])
            if shape != reference.shape:
                raise ValueError(f"{owner} parameter {name!r} must have shape {reference.shape}; got {shape}")
        return None
    checked = {}
    for name, reference in expected.items():
        value = np.asarray(params[name])
        if value.dtype.kind not in "iuf":
            raise TypeError(f"{owner} parameter {name!r} must be a real array; got dtype {value.dtype}")
        if value.shape != reference.shape:
            raise ValueError(f"{owner} parameter {name!r} must have shape {reference.shape}; got {value.shape}")
        if not np.isfinite(value).all():
            index = tuple(int(i) for i in np.argwhere(~np.isfinite(value))[0])
            raise ValueError(f"{owner} parameter {name!r} must be finite; got {value[index]} at index {index}")
        checked[name] = value.astype(np.float64, copy=True)
    return checked
