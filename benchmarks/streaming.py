"""Streaming-classifier benchmark: events per second of `Classifier.step` (SPEC §6.1) in both backends, and
what the torch step allocates per event compared with the state it returns.

    python -m benchmarks.streaming [--quick] [--timesteps {both,none,events}]

Model: a 4-layer Classifier, d_model = 128, d_state = 64, mixers LRU/S5/S4D/Centaurus, mean pooling by 2
after the first two blocks, final mean pooling, in evaluation mode (what an online deployment runs).
Measured at batch 1 and batch 64: events per second per row stream (one event of every row per step) and the
whole-sequence forward on the same events for scale. Allocation: torch.profiler with profile_memory over
one step, the sum of the positive allocations ("Self CPU Mem" of every op) against the bytes of the state.
The torch step runs under torch.no_grad, so the layers keep their parameter-derived arrays between events
(`Layer._cached`); what a step still allocates is one new state per block (committed, or formed and
discarded by the flush of an open pooling window) and a few (b, H) activation vectors per block (mixer
read-out, activation, residual, LayerNorm, pooling): measured 1.2× the state at batch 1 and 64 (1.7× with
--quick, where the state is small against those vectors).
--timesteps: "none" steps without event gaps, "events" with a gap τ per event (uniform on [0.5, 1.5), what an
event stream gives), "both" (the default) measures both in turn. With gaps each mixer also forms its Ā_t and
γ̄_t for the event from the cached Λ and Δ (`torch_backend.discretize.discretize_event`, a few state-sized
temporaries on the way): measured 6.2× the state at batch 1 and 64 (61× and 32× when every event re-formed
the discrete system).
--quick: d_model 32, d_state 16, fewer events.
"""
import argparse
import time

import numpy as np
import torch

import reference
import torch_backend

MIX = ["LRU", "S5", "S4D", "Centaurus"]


def build(H, N, seed=0):
    return reference.Classifier(input_dim=8, num_classes=10, d_model=H, d_state=N, n_layers=4, lrnn_cls=MIX,
                                intermediate_pooling=["mean", "mean", "none", "none"], pooling_factor=2,
                                pooling="mean", dropout=0.0, seed=seed)


def state_bytes(state):
    """Bytes held by the arrays/tensors of a streaming state."""
    total = 0
    for value in [*state["mixers"], *(w[1] for w in state["windows"]), *(w[2] for w in state["windows"]),
                  state["final"][1]]:
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, np.ndarray):
            total += value.nbytes
    return total


def events_per_second(model, x, tau=None, to=lambda a: a):
    """(events per second per row, the final state) for stepping through x (b, L, input_dim) with gaps τ (b, L)."""
    gap = (lambda t: None) if tau is None else (lambda t: to(tau[:, t]))
    state = model.init_state(x.shape[0])
    model.step(to(x[:, 0]), state, gap(0))                                    # warm-up (compiles nothing new)
    start = time.perf_counter()
    for t in range(x.shape[1]):
        _, state = model.step(to(x[:, t]), state, gap(t))
    return x.shape[1] / (time.perf_counter() - start), state


def step_allocation(model, x_t, state, tau_t=None):
    """Bytes torch allocates during one step (sum of the positive per-op allocations)."""
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        model.step(x_t, state, tau_t)
    return sum(max(e.self_cpu_memory_usage, 0) for e in prof.key_averages())


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
    print(f"{'backend':<22}{'batch':>6}{'gaps':>7}{'events/s per row':>18}{'forward on all events (ms)':>28}")
    gap_modes = ("none", "events") if args.timesteps == "both" else (args.timesteps,)
    for batch in (1, 64):
        x = rng.normal(size=(batch, L, 8))
        gaps = rng.uniform(0.5, 1.5, size=(batch, L))
        for mode in gap_modes:
            tau = gaps if mode == "events" else None
            rate, _ = events_per_second(ref, x, tau)
            ref(x, integration_timesteps=tau)                                   # warm-up
            start = time.perf_counter()
            ref(x, integration_timesteps=tau)
            print(f"{'reference (float64)':<22}{batch:>6}{mode:>7}{rate:>18.0f}"
                  f"{1e3 * (time.perf_counter() - start):>28.1f}")
            with torch.no_grad():
                xt = torch.tensor(x, dtype=torch.float32)
                taut = None if tau is None else torch.tensor(tau, dtype=torch.float32)
                rate, state = events_per_second(module, xt, taut)
                module(xt, integration_timesteps=taut)                          # warm-up
                start = time.perf_counter()
                module(xt, integration_timesteps=taut)
                forward_ms = 1e3 * (time.perf_counter() - start)
                print(f"{'torch (float32, CPU)':<22}{batch:>6}{mode:>7}{rate:>18.0f}{forward_ms:>28.1f}")
                allocated = step_allocation(module, xt[:, 0], state, None if taut is None else taut[:, 0])
                print(f"{'':<22}{'':>6}{'':>7}  torch step allocates {allocated / 1024:.1f} KiB per event; "
                      f"the state it returns holds {state_bytes(state) / 1024:.1f} KiB "
                      f"(ratio {allocated / max(state_bytes(state), 1):.1f})")


if __name__ == "__main__":
    main()
