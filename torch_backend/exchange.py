"""Parameter exchange between the backends (SPEC §7): reference layer ⇄ torch module, dict, .npz.

The work is done by methods of `torch_backend.layers._common.Layer`; this module adds the two
functions that dispatch on the object given:

    module = from_reference(ref_layer)        # the torch class is found by name; float64 (exact)
    ref_layer = to_reference(module)

Plain dicts and files use the methods directly: `module.params()` / `module.load_params(d)` (flat dicts
of NumPy arrays keyed like the reference params), `module.save(path)` / `TorchClass.load(path)`
(the reference's .npz format: `__config__` JSON plus one array per parameter, so a file written by
either backend loads in the other). Every copy is exact in float64; float32 rounds once.
Exchange paths (from_reference, from_params, load) give float64 modules unless `dtype=` says otherwise,
so that the twin is exact; constructors give torch's default dtype (float32). `.float()` converts.
Note: the reference names these `save`/`load`/`from_params` on its Layer; the torch names match.
"""
from .layers._common import from_reference_layer, register_torch_class

__all__ = ["from_reference", "to_reference", "register_torch_class"]


def from_reference(ref, dtype=None, device=None):
    """The torch twin of a reference layer (or any registered reference class) with the same config
    and parameters, in `dtype` (default float64: exact) on `device` (default CPU)."""
    return from_reference_layer(ref, dtype=dtype, device=device)


def to_reference(module):
    """The reference twin of a torch module (same config and parameters, as float64)."""
    if not callable(getattr(module, "to_reference", None)):
        raise TypeError(f"to_reference needs a torch_backend module; got {type(module).__name__}")
    return module.to_reference()
