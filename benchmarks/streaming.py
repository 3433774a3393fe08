"""Streaming-classifier benchmark: events per second of `Classifier.step` (SPEC §6.1) in both backends, and
what the torch step allocates per event compared with the state it returns.

    python -m benchmarks.streaming [--quick] [--timesteps {both,none,events}]

Model: a 4-layer Classifier, d_model = 128, d_state = 64, mixers LRU/S5/S4D/Centaurus, mean pooling by 2
after the first two blocks, final mean pooling, in evaluation mode (what an online deployment runs).
Measured at batch 1 and batch 64: events per second per row stream (one event of every row per step) of the
functional step and of `step(..., inplace=True)` (best of three interleaved runs each), and the whole-sequence
forward on the same events for scale. Allocation: torch.profiler with profile_memory over each of four
consecutive steps (no window closing, the first stage's, both stages'), the most of the sums of the positive
allocations ("Self CPU Mem" of every op), against the bytes of the state the step returns: mixer states,
window values, τ sums and the final pooling value. The scratch states an in-place flush steps
(state["scratch"], one per block above an open window) are workspace and are not counted, like each layer's
`Layer._workspace`. The torch step runs under torch.no_grad, so the layers keep their parameter-derived
arrays between events (`Layer._cached`).
Functional: a step allocates one new state per block (committed, or formed and discarded by the flush of an
open pooling window) and a few (b, H) activation vectors per block: measured 1.25× the state at batch 1 and
64, and never below 1.0×, since the new state is the step's result. inplace=True: the mixer states, window
values and τ sums are written in place, the mixers form their per-event temporaries in workspaces and the
activation, residual sum and LayerNorm are written over each mixer's output, so an event allocates per block
that output y_t (b, H), plus the embedding, the logits and small masks: measured 0.05–0.06× at batch 1 and 64.
--timesteps: "none" steps without event gaps, "events" with a gap τ per event (uniform on [0.5, 1.5), what an
event stream gives), "both" (the default) measures both in turn. With gaps each mixer also forms its Ā_t and
γ̄_t for the event from the cached Λ and Δ (`torch_backend.discretize_event.discretize_event`): functional 6.2×
the state at batch 1 and 64 (a few state-sized temporaries on the way); inplace=True 0.16–0.17× (Ā_t and γ̄_t
written into workspaces, `discretize_event(..., out=)`).
--quick: d_model 32, d_state 16, fewer events.
"""
import argparse
import time

import numpy as np
import torch

import reference
import torch_backend
from torch_backend.streaming import allocated_bytes, state_bytes

MIX = ["LRU", "S5", "S4D", "Centaurus"]


def build(H, N, seed=0):
    return reference.Classifier(input_dim=8, num_classes=10, d_model=H, d_state=N, n_layers=4, lrnn_cls=MIX,
                                intermediate_pooling=["mean", "mean", "none", "none"], pooling_factor=2,
                                pooling="mean", dropout=0.0, seed=seed)


def events_per_second(model, x, tau=None, inplace=False):
    """(events per second per row, the final state) for stepping through x (b, L, input_dim) with gaps τ (b, L);
    inplace=True steps one state in place (`Classifier.step(..., inplace=True)`)."""
    gap = (lambda t: None) if tau is None else (lambda t: tau[:, t])
    state = model.init_state(x.shape[0])
    model.step(x[:, 0], model.init_state(x.shape[0]), gap(0), inplace=inplace)   # warm-up (fills caches, workspaces)
    start = time.perf_counter()
    for t in range(x.shape[1]):
        _, state = model.step(x[:, t], state, gap(t), inplace=inplace)
    return x.shape[1] / (time.perf_counter() - start), state


def best_rates(model, x, tau=None, repeats=3):
    """(functional events/s, inplace events/s, functional final state, inplace final state): the best of
    `repeats` runs of each, interleaved, so that a busy machine slows both alike."""
    best = {False: (0.0, None), True: (0.0, None)}
    for _ in range(repeats):
        for inplace in (False, True):
            rate, state = events_per_second(model, x, tau, inplace=inplace)
            best[inplace] = max(best[inplace], (rate, state), key=lambda pair: pair[0])
    return best[False][0], best[True][0], best[False][1], best[True][1]


def step_allocation(model, x, state, tau=None, inplace=False):
    """The most bytes torch allocates during one of the steps on x (b, n, input_dim) from `state`
    (`torch_backend.streaming.allocated_bytes` of each step), and the state after them. n = 4 events covers every
    pooling situation of the model (no window closing, the first stage's closing, both stages' closing)."""
    most = 0
    for t in range(x.shape[1]):
        (_, state), allocated = allocated_bytes(
            lambda t=t, state=state: model.step(x[:, t], state, None if tau is None else tau[:, t], inplace=inplace))
        most = max(most, allocated)
    return most, state


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--timesteps", choices=("both", "none", "events"), default="both")
    args = parser.parse_args(argv)
    H, N, L = (32, 16, 64) if args.quick else (128, 64, 256)
    rng = np.random.default_rng(0)
    ref = build(H, N)
    module = torch_backend.from_reference(ref, dtype=torch.float32).eval()
    print(f"4-layer Classifier {MIX}, d_model={H}, d_state={N}, {L} events; threads={torch.get_num_threads()}")
    print(f"{'backend':<22}{'batch':>6}{'gaps':>7}{'events/s per row':>18}{'inplace=True':>14}"
          f"{'forward on all events (ms)':>28}")
    gap_modes = ("none", "events") if args.timesteps == "both" else (args.timesteps,)
    for batch in (1, 64):
        x = rng.normal(size=(batch, L, 8))
        gaps = rng.uniform(0.5, 1.5, size=(batch, L))
        for mode in gap_modes:
            tau = gaps if mode == "events" else None
            rate, rate_inplace, _, _ = best_rates(ref, x, tau)
            ref(x, integration_timesteps=tau)                                   # warm-up
            start = time.perf_counter()
            ref(x, integration_timesteps=tau)
            print(f"{'reference (float64)':<22}{batch:>6}{mode:>7}{rate:>18.0f}{rate_inplace:>14.0f}"
                  f"{1e3 * (time.perf_counter() - start):>28.1f}")
            with torch.no_grad():
                xt = torch.tensor(x, dtype=torch.float32)
                taut = None if tau is None else torch.tensor(tau, dtype=torch.float32)
                rate, rate_inplace, state, state_inplace = best_rates(module, xt, taut)
                module(xt, integration_timesteps=taut)                          # warm-up
                start = time.perf_counter()
                module(xt, integration_timesteps=taut)
                forward_ms = 1e3 * (time.perf_counter() - start)
                print(f"{'torch (float32, CPU)':<22}{batch:>6}{mode:>7}{rate:>18.0f}{rate_inplace:>14.0f}"
                      f"{forward_ms:>28.1f}")
                more = (xt[:, :4], None if taut is None else taut[:, :4])
                for label, inplace, start_state in (("functional", False, state),
                                                    ("inplace=True", True, state_inplace)):
                    allocated, end_state = step_allocation(module, *more[:1], start_state, more[1], inplace=inplace)
                    held = state_bytes(end_state)
                    print(f"{'':<22}{'':>6}{'':>7}  {label:<13} step allocates at most {allocated / 1024:.1f} KiB "
                          f"per event; the state it returns holds {held / 1024:.1f} KiB (ratio {allocated / held:.2f})")


if __name__ == "__main__":
    main()
