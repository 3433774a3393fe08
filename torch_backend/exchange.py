"""Parameter exchange between the backends (SPEC §7): reference layer ⇄ torch module, dict, .npz.

The registry of torch classes lives here: every torch `Layer` subclass records itself as the mirror
of its `reference_class` (a classifier registers itself with `register_torch_class`), so

    module = from_reference(ref_layer)        # the torch class is found by name; float64 (exact)
    ref_layer = to_reference(module)

Plain dicts and files use the methods of `torch_backend.layers._base.Layer` directly:
`module.params` / `module.load_params(d)` (flat dicts of NumPy arrays keyed like the reference
params), `module.save(path)` / `TorchClass.load(path)` (the reference's .npz format: `__config__` JSON
plus one array per parameter, so a file written by either backend loads in the other). Every copy is
exact in float64; float32 rounds once. Exchange paths (from_reference, from_params, load) give float64
modules unless `dtype=` says otherwise, so that the twin is exact; constructors give torch's default
dtype (float32). `.float()` converts.
"""
__all__ = ["from_reference", "to_reference", "register_torch_class"]

_TORCH_CLASSES = {}   # reference class name -> torch class


def register_torch_class(torch_class):
    """Record `torch_class` as the mirror of `torch_class.reference_class` (by its class name), for
    `from_reference`. Layer subclasses are recorded automatically; another module (e.g. a classifier)
    registers itself with this. It must provide classmethod `from_reference(ref, dtype=None,
    device=None)` and method `to_reference()`."""
    _TORCH_CLASSES[torch_class.reference_class.__name__] = torch_class
    return torch_class


def from_reference(ref, dtype=None, device=None):
    """The torch twin of a reference layer (or any registered reference class) with the same config
    and parameters, in `dtype` (default float64: exact) on `device` (default CPU)."""
    name = type(ref).__name__
    if name not in _TORCH_CLASSES:   # Note: a KeyError (a failed lookup), which the parity suite counts as "missing"
        raise KeyError(f"no torch class mirrors reference class {name!r}; "
                       f"known: {', '.join(sorted(_TORCH_CLASSES)) or 'none'}")
    return _TORCH_CLASSES[name].from_reference(ref, dtype=dtype, device=device)


def to_reference(module):
    """The reference twin of a torch module (same config and parameters, as float64)."""
    if not callable(getattr(module, "to_reference", None)):
        raise TypeError(f"to_reference needs a torch_backend module; got {type(module).__name__}")
    return module.to_reference()
