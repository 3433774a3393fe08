"""Debugging aids for torch models: where the first non-finite value appears, and where a model drifts
from the float64 reference (issue 9).

    report = check_finite(model, x, lengths, integration_timesteps)
    print(report)              # every module call in order, with max |value|; the first non-finite one
    report.first               # (module name, timestep, batch index, feature index) of the culprit, or None

    replay = replay_in_reference(model, x, lengths, integration_timesteps)
    print(replay)              # per block: deviation from the reference, accumulated and local

`check_finite` runs one forward pass with hooks on every submodule (a Classifier's embedding or input
projection, each block's mixer and norm, the head; a single layer is its own only module). After each
call it checks the output on the valid positions (t < len) and records the first timestep holding a
NaN or ±inf; before each call it checks the input too, so a value that turns non-finite between two
modules (in an activation or a pooling, which are functions, not modules) is caught at the next one.
The first record in call order is the culprit.

`replay_in_reference` converts the model to the float64 reference (`model.to_reference()`), runs the same
batch in both, and reports per stage the largest deviation on valid positions: *accumulated* (the torch
stage against the reference stage, errors of earlier blocks included) and, for each mixer, *local* (the
torch mixer against the reference mixer on the very same input, so only this layer's own error). The
largest local deviation points at the layer that loses precision. Both run in evaluation mode (dropout
masks differ between the backends) and without gradients; the model's mode is restored afterwards.

Nothing here changes the model. Peers offer no such tool: torch's anomaly mode names an autograd node,
not the layer and timestep of a recurrence.
Glossary (SPEC §1): b batch, L length, H width.
"""
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["check_finite", "replay_in_reference", "FiniteReport", "ReplayReport"]


# ----------------------------------------------------------------------------- shared helpers
def _first_tensor(value):
    """The first tensor of a module's output (a tensor, or a tuple such as (y, state))."""
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)):
        return next((v for v in value if isinstance(v, torch.Tensor)), None)
    return None


def _valid_mask(shape, lengths):
    """bool (b, L) of valid positions for a (b, L, ...) array; all True without lengths or without a time axis."""
    batch, L = shape[0], shape[1]
    if lengths is None or len(lengths) != batch:
        return np.ones((batch, L), bool)
    return np.arange(L)[None, :] < np.asarray(lengths)[:, None]                   # (b, L)


def _numpy(value):
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu()
        return (value.to(torch.complex128) if value.is_complex() else
                value.double() if value.is_floating_point() else value).numpy()
    return np.asarray(value)


def _model_inputs(model, x, lengths, integration_timesteps):
    """x, lengths, τ as tensors on the model's device; floating arrays in the model's dtype."""
    dtype, device = model.dtype, model.device

    def convert(value):
        if value is None or isinstance(value, torch.Tensor):
            return value
        value = np.asarray(value)
        return torch.as_tensor(value, dtype=dtype if value.dtype.kind == "f" else None, device=device)
    return convert(x), convert(lengths), convert(integration_timesteps)


@contextmanager
def _evaluating(*models):
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


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in [header] + rows)


def _float(value):
    return f"{value:.3g}" if value is not None and np.isfinite(value) else str(value)


# ----------------------------------------------------------------------------- check_finite
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
        rows = [(r.order, r.name, r.kind, r.what, tuple(r.shape), _float(r.max_abs), _status(r)) for r in self.records]
        header = ("#", "module", "class", "checked", "shape", "max |finite|", "status")
        return self.summary() + "\n" + _table(header, rows)

    __repr__ = __str__


def _status(record):
    if record.first_bad is None:
        return "ok"
    t, b, _ = record.first_bad
    return f"NON-FINITE (b={b})" if t is None else f"NON-FINITE from t={t} (b={b})"


def _inspect(tensor, lengths):
    """(shape, max finite |value|, first (t, b, feature) that is not finite, or None) on valid positions."""
    values = _numpy(tensor)
    if values.ndim == 0:
        values = values.reshape(1, 1)
    if values.ndim == 1:
        values = values[:, None]
    flat = values.reshape(values.shape[0], values.shape[1], -1)                     # (b, L|features, ...)
    has_time = values.ndim >= 3
    valid = _valid_mask(flat.shape, lengths) if has_time else np.ones(flat.shape[:2], bool)
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
    x, lengths, tau = _model_inputs(model, x, lengths, integration_timesteps)
    lengths_np = _numpy(lengths)
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
                current["lengths"] = _numpy(given)                    # a mixer's lengths (pooled ones included)
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
            model(x, lengths, tau)
    finally:
        for handle in handles:
            handle.remove()
    # Note: a pre-hook fires for every call, so the input record of a module comes before its output
    # record; inputs are kept only when non-finite, so the first bad record is the earliest place.
    return FiniteReport(records)


# ----------------------------------------------------------------------------- replay_in_reference
@dataclass
class ReplayRow:
    stage: str                # "embedding", "block i", "output", or the layer's class name
    kind: str                 # mixer class name (blocks), else ""
    shape: tuple
    max_reference: float      # max |reference value| on valid positions
    accumulated: float        # max |torch − reference| of this stage (earlier errors included)
    local: float = None       # max |torch mixer − reference mixer| on the same input (blocks only)

    @property
    def relative(self):
        return self.accumulated / max(self.max_reference, np.finfo(float).tiny)


class ReplayReport:
    """Deviation of a torch model from its float64 reference twin, stage by stage."""

    def __init__(self, rows, dtype):
        self.rows, self.dtype = rows, dtype

    @property
    def worst(self):
        """The row with the largest local deviation (blocks), else the largest accumulated one."""
        local = [r for r in self.rows if r.local is not None]
        if local:
            return max(local, key=lambda r: r.local)
        return max(self.rows, key=lambda r: r.accumulated)

    @property
    def max_deviation(self):
        return max(r.accumulated for r in self.rows)

    def __str__(self):
        worst = self.worst
        rows = [(r.stage, r.kind, r.shape, _float(r.max_reference), _float(r.accumulated), _float(r.relative),
                 "" if r.local is None else _float(r.local), "<- largest" if r is worst else "") for r in self.rows]
        head = (f"torch ({self.dtype}) vs float64 reference: largest deviation {_float(self.max_deviation)}; "
                f"largest local deviation in {worst.stage} {worst.kind}".rstrip())
        return head + "\n" + _table(("stage", "mixer", "shape", "max |ref|", "max |Δ|", "max |Δ| / max |ref|",
                                     "local max |Δ|", ""), rows)

    __repr__ = __str__


def _deviation(actual, expected, lengths):
    """(max |expected|, max |actual − expected|) over valid positions (all positions without a time axis)."""
    actual, expected = _numpy(actual), _numpy(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"torch stage has shape {actual.shape}, the reference {expected.shape}")
    if expected.ndim >= 2:
        mask = _valid_mask(expected.shape, lengths)
        actual, expected = actual[mask], expected[mask]
    reference_max = float(np.max(np.abs(expected))) if expected.size else 0.0
    return reference_max, float(np.max(np.abs(actual - expected))) if expected.size else 0.0


def replay_in_reference(model, x, lengths=None, integration_timesteps=None):
    """Re-run a batch in the float64 reference and report the largest deviation per stage.

    model: a torch_backend layer or Classifier (anything with `to_reference()`); inputs as for the model.
    Returns a ReplayReport: for a Classifier one row for the embedding, one per block (accumulated and
    local deviation of its mixer) and one for the output; for a layer one row. Deviations are absolute,
    on valid positions; compare them with the tolerance table (SPEC §8) for the model's dtype.
    """
    if not callable(getattr(model, "to_reference", None)):
        raise TypeError("replay_in_reference needs a torch_backend model with to_reference(); "
                        f"got {type(model).__name__}")
    reference = model.to_reference()
    x, lengths, tau = _model_inputs(model, x, lengths, integration_timesteps)
    x_np, lengths_np, tau_np = _numpy(x), _numpy(lengths), _numpy(tau)
    if x_np.dtype.kind == "f":
        x_np = x_np.astype(np.float64)
    with _evaluating(model, reference) if hasattr(reference, "train") else _evaluating(model):
        if not hasattr(model, "stages"):                                           # a single layer
            expected = reference(x_np, lengths_np, tau_np)
            row = ReplayRow(type(model).__name__, "", expected.shape,
                            *_deviation(model(x, lengths, tau), expected, lengths_np))
            return ReplayReport([row], str(model.dtype).replace("torch.", ""))
        captured = []
        handles = [block["mixer"].register_forward_hook(
            lambda mod, args, output: captured.append((args, output))) for block in model.blocks]
        try:
            stages = model.stages(x, lengths, tau)
            output = model(x, lengths, tau)
        finally:
            for handle in handles:
                handle.remove()
        reference.sync_mixers()
        expected_stages = reference.stages(x_np, lengths_np, tau_np)
        rows = []
        for i, ((h, _, _), (h_ref, len_ref, _)) in enumerate(zip(stages, expected_stages)):
            stage = "embedding" if i == 0 else f"block {i - 1}"
            kind = "" if i == 0 else type(reference.mixers[i - 1]).__name__
            local = None
            if i > 0:
                (h_in, len_in, tau_in, *_), y = captured[i - 1]
                y_ref = reference.mixers[i - 1](_numpy(h_in), _numpy(len_in), _numpy(tau_in), check_finite=False)
                local = _deviation(y, y_ref, _numpy(len_in))[1]
            rows.append(ReplayRow(stage, kind, h_ref.shape, *_deviation(h, h_ref, len_ref), local))
        expected = reference(x_np, lengths_np, tau_np)
        rows.append(ReplayRow("output", "", expected.shape, *_deviation(output, expected, None)))
    return ReplayReport(rows, str(model.dtype).replace("torch.", ""))
