"""replay_in_reference: where a torch model drifts from its float64 reference twin, stage by stage.

See the package docstring for what it reports. Glossary (SPEC §1): b batch, L length.
"""
from dataclasses import dataclass

import numpy as np

from ._report import as_numpy, evaluating, model_inputs, number, table, valid_positions


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
        rows = [(r.stage, r.kind, r.shape, number(r.max_reference), number(r.accumulated), number(r.relative),
                 "" if r.local is None else number(r.local), "<- largest" if r is worst else "") for r in self.rows]
        head = (f"torch ({self.dtype}) vs float64 reference: largest deviation {number(self.max_deviation)}; "
                f"largest local deviation in {worst.stage} {worst.kind}".rstrip())
        return head + "\n" + table(("stage", "mixer", "shape", "max |ref|", "max |Δ|", "max |Δ| / max |ref|",
                                     "local max |Δ|", ""), rows)

    __repr__ = __str__


def _deviation(actual, expected, lengths):
    """(max |expected|, max |actual − expected|) over valid positions (all positions without a time axis)."""
    actual, expected = as_numpy(actual), as_numpy(expected)
    if actual.shape != expected.shape:
        raise ValueError(f"torch stage has shape {actual.shape}, the reference {expected.shape}")
    if expected.ndim >= 2:
        mask = valid_positions(expected.shape, lengths)
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
    x, lengths, tau = model_inputs(model, x, lengths, integration_timesteps)
    x_np, lengths_np, tau_np = as_numpy(x), as_numpy(lengths), as_numpy(tau)
    if x_np.dtype.kind == "f":
        x_np = x_np.astype(np.float64)
    with evaluating(model, reference) if hasattr(reference, "train") else evaluating(model):
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
                y_ref = reference.mixers[i - 1](as_numpy(h_in), as_numpy(len_in), as_numpy(tau_in), check_finite=False)
                local = _deviation(y, y_ref, as_numpy(len_in))[1]
            rows.append(ReplayRow(stage, kind, h_ref.shape, *_deviation(h, h_ref, len_ref), local))
        expected = reference(x_np, lengths_np, tau_np)
        rows.append(ReplayRow("output", "", expected.shape, *_deviation(output, expected, None)))
    return ReplayReport(rows, str(model.dtype).replace("torch.", ""))
