"""check_finite: the first module (and timestep) whose input or output holds NaN or ±inf on valid positions.

See the package docstring for what it records. Glossary (SPEC §1): b batch, L length.
"""
from dataclasses import dataclass

import numpy as np
import torch

from ._report import as_numpy, model_inputs, number, table, valid_positions


def _first_tensor(value):
    """The first tensor of a module's output (a tensor, or a tuple such as (y, state))."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


@dataclass
class FiniteRecord:
    """One module call: its output (or, with `what="input"`, its input) checked on valid positions."""
    order: int
    name: str                 # dotted module name ("model" for the model itself), "#k" for a repeated call
    kind: str                 # the module's class name
    what: str                 # "output" or "input"
    shape: tuple
    max_abs: float            # largest finite |value| (nan when none is finite)
    first_bad: tuple = None   # (timestep, batch index, feature index) of the first non-finite value, or None


class FiniteReport:
    """The records of one forward pass, in call order; `first` is the first non-finite one (or None)."""

    def __init__(self, records, input_problem=None):
        self.records, self.input_problem = records, input_problem

    @property
    def first(self):
        if self.input_problem is not None:
            return self.input_problem
        return next((r for r in self.records if r.first_bad is not None), None)

    @property
    def ok(self):
        return self.first is None

    def summary(self):
        first = self.first
        if first is None:
            return "all finite: no module produced NaN or inf on valid positions"
        t, b, feature = first.first_bad
        where = "its input" if first.what == "input" else "its output"
        when = "" if t is None else f" at timestep {t}"
        return (f"first non-finite value: {first.name} ({first.kind}), {where}{when} "
                f"(batch index {b}, feature index {feature})")

    def __str__(self):
        rows = [(r.order, r.name, r.kind, r.what, tuple(r.shape), number(r.max_abs), _status(r)) for r in self.records]
        header = ("#", "module", "class", "checked", "shape", "max |finite|", "status")
        return self.summary() + "\n" + table(header, rows)

    __repr__ = __str__


def _status(record):
    if record.first_bad is None:
        return "ok"
    t, b, _ = record.first_bad
    return f"NON-FINITE (b={b})" if t is None else f"NON-FINITE from t={t} (b={b})"


def _inspect(tensor, lengths):
    """(shape, max finite |value|, first (t, b, feature) that is not finite, or None) on valid positions."""
    values = as_numpy(tensor)
    if values.ndim == 0:
        values = values.reshape(1, 1)
    if values.ndim == 1:
        values = values[:, None]
    flat = values.reshape(values.shape[0], values.shape[1], -1)                     # (b, L|features, ...)
    has_time = values.ndim >= 3
    valid = valid_positions(flat.shape, lengths) if has_time else np.ones(flat.shape[:2], bool)
    bad = ~np.isfinite(flat) & valid[..., None]                                     # (b, L, rest)
    finite = np.abs(flat[np.isfinite(flat) & valid[..., None]])
    max_abs = float(finite.max()) if finite.size else float("nan")
    if not bad.any():
        return tuple(values.shape), max_abs, None
    if has_time:
        t = int(np.argmax(bad.any(axis=(0, 2))))                                   # earliest timestep
        b = int(np.argmax(bad[:, t].any(axis=1)))
        return tuple(values.shape), max_abs, (t, b, int(np.argmax(bad[b, t])))
    b, feature = (int(i) for i in np.argwhere(bad[..., 0])[0])                     # no time axis: (b, features, 1)
    return tuple(values.shape), max_abs, (None, b, feature)


def check_finite(model, x, lengths=None, integration_timesteps=None):
    """Run `model(x, lengths, integration_timesteps)` once and report the first module (and timestep)
    whose input or output holds NaN or ±inf on valid positions.

    model: a torch_backend layer or Classifier (any torch.nn.Module called as model(x, lengths, τ));
    x: features (b, L, ...) or token ids (b, L); lengths: None or integer (b,); integration_timesteps:
    None or (b, L). Arrays may be NumPy or torch. Returns a FiniteReport (print it; `.first` is the culprit
    record, `.ok` is True when everything is finite). Input problems (non-finite x or τ) are reported as
    such without running the model, which would refuse them.
    """
    x, lengths, tau = model_inputs(model, x, lengths, integration_timesteps)
    lengths_np = as_numpy(lengths)
    for name, value in (("x", x), ("integration_timesteps", tau)):
        if value is not None and (value.is_floating_point() or value.is_complex()):
            shape, max_abs, first_bad = _inspect(value[..., None] if value.ndim == 2 else value, lengths_np)
            if first_bad is not None:
                return FiniteReport([], FiniteRecord(0, name, "input", "input", shape, max_abs, first_bad))

    records, calls, current = [], {}, {"lengths": lengths_np}

    def record(name, module, what, tensor, lengths_now):
        if tensor is None or not (tensor.is_floating_point() or tensor.is_complex()):
            return
        shape, max_abs, first_bad = _inspect(tensor, lengths_now)
        if what == "input" and first_bad is None:
            return                                                    # inputs are recorded only when bad
        records.append(FiniteRecord(len(records), name, type(module).__name__, what, shape, max_abs, first_bad))

    def hooks(name, module):
        labels = []                                                   # a stack: a module may call itself

        def before(mod, args, kwargs):
            calls[name] = calls.get(name, 0) + 1
            labels.append(name if calls[name] == 1 else f"{name}#{calls[name]}")
            given = args[1] if len(args) > 1 else kwargs.get("lengths")
            if isinstance(given, torch.Tensor) and given.ndim == 1 and not given.is_floating_point():
                current["lengths"] = as_numpy(given)                    # a mixer's lengths (pooled ones included)
            if not any(r.first_bad is not None for r in records):
                record(labels[-1], mod, "input", _first_tensor(args), current["lengths"])

        def after(mod, args, kwargs, output):
            record(labels.pop(), mod, "output", _first_tensor(output), current["lengths"])
        return before, after

    handles = []
    try:
        for name, module in model.named_modules():
            if module is not model and not list(module.children()) and not list(module.parameters(recurse=False)) \
                    and not isinstance(module, torch.nn.Dropout):
                continue                                              # plain containers: nothing of their own
            before, after = hooks(name or "model", module)
            handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
            handles.append(module.register_forward_hook(after, with_kwargs=True))
        with torch.no_grad():
            # a module without lengths/τ arguments (e.g. torch.nn.GRU) is called with x alone
            model(x) if lengths is None and tau is None else model(x, lengths, tau)
    finally:
        for handle in handles:
            handle.remove()
    # Note: a pre-hook fires for every call, so the input record of a module comes before its output
    # record; inputs are kept only when non-finite, so the first bad record is the earliest place.
    return FiniteReport(records)
