"""Debugging aids for torch models: where the first non-finite value appears, and where a model drifts
from the float64 reference.

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
One module per job: `finite.py` (check_finite), `replay.py` (replay_in_reference) and `_report.py` (the
conversions and tables both share; valid positions come from the pooling module's `valid_mask`).
Glossary (SPEC §1): b batch, L length, H width.
"""
from .finite import FiniteRecord, FiniteReport, check_finite
from .replay import ReplayReport, ReplayRow, replay_in_reference

__all__ = ["check_finite", "replay_in_reference", "FiniteReport", "ReplayReport"]
