"""Streaming the classifier one event at a time — SPEC §6.1, PyTorch mirror of reference/streaming.py.

`Classifier.init_state(batch)` and `Classifier.step(x_t, state, integration_timestep=None)` call the two
functions of this module. After n events, the output of `step` equals the whole-sequence forward on
those n events, `model(x[:, :n], integration_timesteps=τ[:, :n])`, exactly:

    block i:    y = mixer_i.step(h, s_i, τ);  h = LayerNorm(act(y) + h)         one event, one step
    pooling i:  an open window of s_i elements (count, aggregate, τ sum); when it closes (count = s_i)
                its aggregate is committed to block i + 1 as that block's next event
    output:     the forward on a prefix sees every open window as the ceil-mode tail element (SPEC §5.1),
                so the blocks below the first open window are run on that provisional tail from their
                committed states, and the result is discarded (a flush that does not commit)

Mixer `step`s return a new state and never change the one they are given, so "copies of the states"
cost nothing: the flush simply does not keep what it computes. Cost per event: at most one `step` per
block. Intermediate pooling with mode "none" passes every element through; stride s = 1 closes every
window at once.

The state is a dict: "events" (events seen, the position of the next one), "batch", "mixers" (one state per
block), "windows" (per pooling stage: count, aggregate (b, H) or None, τ sum (b,) or None) and "final"
(the final pooling's running value over committed elements: count, aggregate). A window of count 0 is empty.

`step(..., inplace=True)` computes the same values (to rounding: its LayerNorm is written in place), in the
given state's own arrays: the committed mixer states are stepped in place (each mixer's
`step(..., inplace=True)`), the window aggregates, τ sums and the final pooling value are updated in arrays
made at a window's first element and kept (an emptied window keeps them, count 0), and the dict itself is
returned. The flush must not commit, so it steps scratch copies: under "scratch", one per block above the open
window (made at the first flush through it), refreshed from the committed state, then stepped in place. The
scratch states are workspace, not stream state (their contents are the last flush's; `python -m
benchmarks.streaming` leaves them out of "the state it returns"). A state stepped with inplace=True changes
under any other reference to its arrays (a state returned by an earlier functional step may share window
arrays with it).

Requirements, each a ValueError naming the block: every mixer has `step` and is causal (not
bidirectional); dropout is inactive (evaluation mode, or p = 0).

Differences from the reference, each for a reason: the blocks are the model's modules (mixer, LayerNorm,
head); the event's τ is converted to the model's dtype and device. Each block's mixer checks its event and
state as a direct `step` call does (the mixers of torch_backend/layers read finiteness with one min/max
reduction, `check_step`, so the checks allocate nothing state-sized). With inplace=True, for the memory of an
event: the activation, residual sum and LayerNorm are written over the mixer's output (`_block`), and the
pooled and provisional elements of the windows go to the model's workspace (`out=` of `_accumulate` and
`_aggregate`, `buffer` of `_final_output`); `nbytes`, `state_bytes` and `allocated_bytes` measure it.

Memory per event (torch, evaluation mode without autograd): each mixer's parameter-derived arrays are kept
between events (`Layer._cached`), so a functional step allocates the mixer states it forms (committed or
flushed) and a few (b, H) activation vectors per block: never less than the state it returns, its result.
With inplace=True (autograd off, else the mixers raise) the mixers form their per-event temporaries in
workspaces (`Layer._workspace`), the activation, residual sum and LayerNorm are written over each mixer's
output (`nn.ACTIVATIONS_INPLACE`, `nn.layer_norm_`) and pooled elements go to the model's workspace, so an
event allocates per block only the mixer's output y_t (b, H), plus the embedding and the logits: less than the
state; `python -m benchmarks.streaming` measures both ratios.

Glossary (SPEC §1): b batch, H d_model; s stride of a pooling stage.
"""
import torch

from . import nn
from .discretize import check_timesteps
from .layers._checks import _as_module_tensor

__all__ = ["check_streamable", "init_stream", "stream_step", "nbytes", "state_bytes", "allocated_bytes"]


# ----------------------------------------------------------------------------- window aggregates
def _accumulate(mode, window, h, tau, out=None):
    """The window after adding element h (b, H) with gap τ (b,) or None; the input window is unchanged.
    A window with count 0 is empty, whatever its arrays hold (an in-place stream keeps them as buffers).
    out: a buffer for a new running sum or max (an in-place stream's flush), else a new tensor.
    Note: torch only (`out`), for the memory of an event."""
    count, value, tau_sum = window
    if count == 0:
        value = h
    elif mode == "stride":
        value = h                                                                   # the last element seen
    elif mode == "mean":
        value = torch.add(value, h, out=out)                                        # the running sum
    else:
        value = torch.maximum(value, h, out=out)                                    # the running max
    if tau is not None:
        tau_sum = tau if count == 0 else tau_sum + tau
    return count + 1, value, tau_sum


def _accumulate_into(mode, window, h, tau):
    """`_accumulate` written into the window's own arrays (inplace=True): the same values, by the same
    operations; the first element ever copies into new arrays, which stay the window's buffers."""
    count, value, tau_sum = window
    if value is None:
        value = h.clone()                                                           # (b, H), made once
    elif count == 0 or mode == "stride":
        value.copy_(h)                                                             # the first, or the last element seen
    elif mode == "mean":
        value.add_(h)                                                               # the running sum
    else:
        torch.maximum(value, h, out=value)                                          # the running max
    if tau is not None:
        if tau_sum is None:
            tau_sum = tau.clone()                                                   # (b,), made once
        elif count == 0:
            tau_sum.copy_(tau)
        else:
            tau_sum.add_(tau)
    return count + 1, value, tau_sum


def _aggregate(mode, window, out=None):
    """The window's pooled element: the last, the mean (into `out` if given) or the max of what it holds.
    Note: torch only (`out`), for the memory of an event."""
    count, value, _ = window
    return torch.div(value, count, out=out) if mode == "mean" else value


def _empty_window():
    return 0, None, None


# ----------------------------------------------------------------------------- the stream
def check_streamable(model):
    """Every block must be streamable: a causal mixer with `step`, and no active dropout."""
    for i, block in enumerate(model.blocks):
        mixer = block["mixer"]
        name = type(mixer).__name__
        if getattr(mixer, "bidirectional", False):
            raise ValueError(f"block {i} ({name}) is bidirectional=True: a bidirectional layer reads the future "
                             "and cannot stream; build the classifier with causal mixers")
        if not callable(getattr(mixer, "step", None)):
            raise ValueError(f"block {i} ({name}) has no step method, so the classifier cannot stream it")
    if model.training and model.config["dropout"] > 0:
        raise ValueError(f"dropout p={model.config['dropout']} is active (training mode): streaming needs the "
                         "deterministic model, call model.eval() first")


def init_stream(model, batch):
    """The state before the first event (see the module docstring)."""
    check_streamable(model)
    return {"events": 0, "batch": batch,
            "mixers": [block["mixer"].init_state(batch) for block in model.blocks],
            "windows": [_empty_window() for _ in model.blocks],
            "final": _empty_window()}


def _block(model, i, h, mixer_state, tau, inplace=False):
    """Block i on one element: (its output (b, H), the mixer's new state; with inplace=True, the given one,
    and the activation, residual sum and LayerNorm written over the mixer's output y_t, a new tensor ours).
    Note: torch only (the in-place tail), for the memory of an event; equal to the reference to rounding."""
    block, activation = model.blocks[i], model.config["activation"]
    if not inplace:
        y, mixer_state = block["mixer"].step(h, mixer_state, tau)                   # (b, H)
        return block["norm"](nn.ACTIVATIONS[activation](y) + h), mixer_state
    y, mixer_state = block["mixer"].step(h, mixer_state, tau, inplace=True)         # (b, H)
    return nn.layer_norm_(nn.ACTIVATIONS_INPLACE[activation](y).add_(h), block["norm"]), mixer_state


def _scratch_state(state, i):
    """A scratch copy of block i's committed mixer state, for a flush with inplace=True: kept in the state dict
    under "scratch" (one per block, made at the first flush through the block), refreshed by copying the
    committed state into it, then stepped in place. Scratch: not part of the stream's state (its contents are
    the last flush's), so the committed states are never written by a flush."""
    committed = state["mixers"][i]
    parts = committed if isinstance(committed, tuple) else (committed,)
    scratch = state.setdefault("scratch", [None] * len(state["mixers"]))
    if scratch[i] is None:
        kept_parts = tuple(part.clone() for part in parts)
        scratch[i] = kept_parts if isinstance(committed, tuple) else kept_parts[0]
    else:
        for kept, part in zip(scratch[i] if isinstance(committed, tuple) else (scratch[i],), parts):
            kept.copy_(part)
    return scratch[i]


def _final_output(model, final, tail, buffer):
    """Head applied to the final pooling of the committed top-level elements plus an optional tail;
    buffer(name, like): a workspace like `like` (in place) or None. Note: torch only (`buffer`), for the memory
    of an event."""
    mode = model.config["pooling"]
    final_mode = {"last": "stride", "mean": "mean", "max": "max"}[mode]
    if tail is not None:
        final = _accumulate(final_mode, final, tail, None, out=buffer("final_provisional", tail))
    pooled = _aggregate(final_mode, final, out=buffer("final_pooled", final[1]))   # (b, H)
    return model.head(pooled)


def stream_step(model, x_t, state, integration_timestep=None, inplace=False):
    """One event per row: x_t token ids (b,) or features (b, input_dim); τ (b,) >= 0 or None.

    Returns (output (b, num_classes or output_dim) in the model's dtype, new state). The given state is not changed.
    inplace=True: the committed mixer states, window aggregates, τ sums and final pooling value are updated in
    their own arrays and the given dict is returned (see the module docstring).
    """
    check_streamable(model)
    x_t = model._as_tensor(x_t)
    expected_ndim = 1 if model.config["vocab_size"] is not None else 2
    if x_t.ndim != expected_ndim:
        shape = "(b,) token ids" if expected_ndim == 1 else f"(b, input_dim={model.config['input_dim']})"
        raise ValueError(f"x_t must be one event per row, of shape {shape}; got shape {tuple(x_t.shape)}")
    h = model.embed(x_t[:, None], start=state["events"])[:, 0]                      # (b, H)
    tau = None
    if integration_timestep is not None:
        tau = check_timesteps(_as_module_tensor(integration_timestep, "integration_timestep", model),
                              name="integration_timestep")
        if tuple(tau.shape) != (h.shape[0],):
            raise ValueError(f"integration_timestep must have shape (b={h.shape[0]},); got {tuple(tau.shape)}")
        for i, mixer in enumerate(block["mixer"] for block in model.blocks):
            if not getattr(mixer, "accepts_timesteps", True):
                raise ValueError(f"integration_timestep was given but block {i} ({type(mixer).__name__}) "
                                 "does not accept timesteps")
    if len(state["mixers"]) != len(model.blocks) or h.shape[0] != state["batch"]:
        raise ValueError("state does not belong to this model and batch: make it with model.init_state(batch)")

    if inplace:                                                                     # the given lists, changed in place
        mixers, windows, final = state["mixers"], state["windows"], state["final"]
    else:
        mixers, windows, final = list(state["mixers"]), list(state["windows"]), state["final"]
    accumulate = _accumulate_into if inplace else _accumulate

    def buffer(name, like):
        """In place: the model's workspace for a pooled or provisional element like `like` (b, H); else None."""
        return model._workspace(name, like.shape, like.dtype) if inplace else None

    # commit: the event climbs while pooling windows close
    open_stage = None
    for i in range(len(model.blocks)):
        h, mixers[i] = _block(model, i, h, mixers[i], tau, inplace)
        mode, stride = model.modes[i], model.strides[i]
        if mode == "none":
            continue                                                                # h goes on unchanged
        windows[i] = accumulate(mode, windows[i], h, tau)
        if windows[i][0] < stride:
            open_stage = i                                                          # stays open: stop committing
            break
        h, tau = _aggregate(mode, windows[i], buffer(f"pooled {i}", h)), windows[i][2]   # the closed window
        windows[i] = (0,) + windows[i][1:] if inplace else _empty_window()          # emptied; buffers kept
    if open_stage is None:
        final = accumulate({"last": "stride", "mean": "mean", "max": "max"}[model.config["pooling"]], final, h, None)
        output = _final_output(model, final, None, buffer)
    else:
        # flush: the open window's tail runs through the blocks below from their committed states
        open_window = windows[open_stage]
        tail = _aggregate(model.modes[open_stage], open_window, buffer(f"pooled {open_stage}", h))   # (b, H)
        tail_tau = open_window[2]
        for i in range(open_stage + 1, len(model.blocks)):
            if inplace:                                                             # a scratch copy, stepped in place
                tail, _ = _block(model, i, tail, _scratch_state(state, i), tail_tau, inplace=True)
            else:
                tail, _ = _block(model, i, tail, mixers[i], tail_tau)               # not committed
            mode = model.modes[i]
            if mode != "none":
                provisional = _accumulate(mode, windows[i], tail, tail_tau, out=buffer(f"provisional {i}", tail))
                tail, tail_tau = _aggregate(mode, provisional, buffer(f"pooled {i}", tail)), provisional[2]
        output = _final_output(model, final, tail, buffer)
    if inplace:
        state["events"], state["final"] = state["events"] + 1, final
        return output, state
    return output, {"events": state["events"] + 1, "batch": state["batch"], "mixers": mixers, "windows": windows, "final": final}


# ----------------------------------------------------------------------------- the memory of an event
# Note: torch only (the reference's memory is not measured): what the tests, `python -m benchmarks.streaming`
# and the book's streaming chapter compare.
def nbytes(value):
    """Bytes held by a tensor, a tuple of tensors (a tuple state) or None (an empty window's value)."""
    if value is None:
        return 0
    if isinstance(value, tuple):
        return sum(nbytes(part) for part in value)
    return value.numel() * value.element_size()


def state_bytes(state):
    """Bytes of the state a stream step returns: the mixer states, the window values and τ sums and the final
    pooling value. The scratch copies a flush steps (`state["scratch"]`) are workspace, not counted."""
    windows = [*state["windows"], state["final"]]
    return sum(nbytes(value) for value in [*state["mixers"], *(w[1] for w in windows), *(w[2] for w in windows)])


def allocated_bytes(call):
    """(call(), the bytes torch allocates during it): torch.profiler with profile_memory, the sum over ops of
    their positive self allocations."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = call()
    return result, sum(max(event.self_cpu_memory_usage, 0) for event in prof.key_averages())
