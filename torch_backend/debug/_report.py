"""What both debugging aids share: conversions to NumPy, the model's inputs, valid positions, tables.

Glossary (SPEC §1): b batch, L length.
"""
from contextlib import contextmanager

import numpy as np
import torch

from ..pooling import valid_mask


def valid_positions(shape, lengths):
    """bool (b, L) of valid positions (t < len) for a (b, L, ...) array: the pooling module's `valid_mask`;
    all True without lengths, or with lengths of another batch (a module called on a different batch)."""
    batch, L = shape[0], shape[1]
    given = None if lengths is None or len(lengths) != batch else torch.as_tensor(np.asarray(lengths))
    return valid_mask(given, batch, L).numpy()                                      # (b, L)


def as_numpy(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.to(torch.complex128) if value.is_complex() else
                value.double() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def model_inputs(model, x, lengths, integration_timesteps):
    """x, lengths, τ as tensors on the model's device; floating arrays in the model's dtype (that of its
    first floating-point parameter or buffer: any torch.nn.Module, not only this package's)."""
    tensors = [t for t in list(model.parameters()) + list(model.buffers()) if t.is_floating_point()]
    dtype, device = (tensors[0].dtype, tensors[0].device) if tensors else (torch.get_default_dtype(), None)

    def convert(value):
        if value is None or isinstance(value, torch.Tensor):
            return value
        value = np.asarray(value)
        return torch.as_tensor(value, dtype=dtype if value.dtype.kind == "f" else None, device=device)
    return convert(x), convert(lengths), convert(integration_timesteps)


@contextmanager
def evaluating(*models):
    """Evaluation mode and no gradients inside; each model's training flag restored after."""
    modes = [m.training for m in models]
    try:
        for m in models:
            m.train(False)
        with torch.no_grad():
            yield
    finally:
        for m, mode in zip(models, modes):
            m.train(mode)


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows)


def number(value):
    return f"{value:.3g}" if value is not None and np.isfinite(value) else str(value)
