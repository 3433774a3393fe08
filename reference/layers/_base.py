"""The reference `Layer` base: parameters, config, save/load in the .npz format both backends read (SPEC §7).

Shared behaviour is a set of functions and this one small base class (STYLE 15); the recurrences live
in the layer files, their checks in `_checks.py`, their shared math in `_math.py`.
"""
import json

import numpy as np


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
