"""Backward-pass benchmark: the reference's hand-written VJP against its own forward, and a NumPy training
epoch (Classifier.loss_and_grad + reference.optim.Adam) against the same epoch in torch (SPEC §11).

    python -m benchmarks.vjp [--quick] [--json PATH] [--layer NAME ...]

Part 1, size (b, L, H, N) = (8, 1024, 64, 64) (--quick: (2, 256, 16, 16)), float64: each reference layer's
forward (`layer(x)`, the sequential scan) and its `vjp(g, x)` (which re-runs the forward, then the reverse
scan and the chain rule), timed interleaved (forward, vjp, forward, vjp, …) so that load on a shared machine
hits both alike; the ratio of the medians vjp / forward is the cost of the backward pass written by hand, the
ratio of the best calls the steadier one (the forward's time includes faulting in its (b, L, H, N) arrays, which
took 0.1–4.5 s of system time per call at this size while other processes churned memory).
--layer NAME (repeatable; names as in LAYERS) times only those layers and skips part 2.
Part 2: one epoch of JapaneseVowels (270 training sequences, batch 16, 2 LRU blocks, d_model = d_state = 32),
NumPy alone vs the torch backend (float64 and float32), same parameters, same batches, Adam lr 1e-3.
"""
import argparse
import gc
import time

import numpy as np
import torch

from reference import optim
from reference.classifier import Classifier
from reference.layers.centaurus import Centaurus
from reference.layers.lru import LRU
from reference.layers.s4d import S4D
from reference.layers.s5 import S5
from torch_backend.exchange import from_reference

from . import _common as C

FULL_SIZE, QUICK_SIZE = (8, 1024, 64, 64), (2, 256, 16, 16)              # (b, L, H, N)
LAYERS = {"LRU": (LRU, {}), "S5": (S5, {}), "S4D": (S4D, {}),
          "Centaurus-pointwise": (Centaurus, {"sub_state_dim": 1})}
COLUMNS = [("layer", "layer", "{}"), ("forward_ms", "forward ms", "{:.1f}"), ("vjp_ms", "vjp ms", "{:.1f}"),
           ("ratio", "vjp / forward", "{:.2f}"), ("ratio_best", "best vjp / best forward", "{:.2f}")]
EPOCH_COLUMNS = [("backend", "backend", "{}"), ("seconds", "epoch s", "{:.2f}"), ("loss", "mean loss", "{:.4f}")]


def layer_rows(size, args):
    batch, L, H, N = size
    rng = np.random.default_rng(0)
    x, g = rng.normal(size=(batch, L, H)), rng.normal(size=(batch, L, H))              # (b, L, H)
    rows = []
    for name in args.layers or LAYERS:
        cls, extra = LAYERS[name]
        layer = cls(d_model=H, d_state=N, seed=0, **extra)
        forward, backward = time_interleaved([lambda: layer(x), lambda: layer.vjp(g, x)], args.repeats, args.budget)
        if "skipped" in forward or "skipped" in backward:
            rows.append({"layer": name, "forward_ms": float("nan"), "vjp_ms": float("nan"), "ratio": float("nan"),
                         "ratio_best": float("nan")})
            continue
        rows.append({"layer": name, "forward_ms": 1e3 * forward["median"], "vjp_ms": 1e3 * backward["median"],
                     "ratio": backward["median"] / forward["median"], "ratio_best": backward["min"] / forward["min"]})
    return rows


def time_interleaved(functions, repeats, budget):
    """`C.time_call` for several functions at once, their calls alternating (f, g, f, g, …) after one warm-up
    call each (two when the first compiled); a function whose warm-up exceeds `budget` seconds is skipped."""
    results = []
    for fn in functions:
        start = time.perf_counter()
        fn()
        warm = time.perf_counter() - start
        if budget is not None and warm > budget:
            start = time.perf_counter()
            fn()
            warm = time.perf_counter() - start
        too_slow = budget is not None and warm > budget
        results.append({"skipped": f"one call took {warm:.1f} s > budget {budget:g} s"} if too_slow else {"times": []})
    gc.disable()                                             # as timeit does: no collector pauses in the timings
    try:
        for _ in range(repeats):
            for fn, result in zip(functions, results):
                if "skipped" not in result:
                    start = time.perf_counter()
                    fn()
                    result["times"].append(time.perf_counter() - start)
    finally:
        gc.enable()
    for result in results:
        if "skipped" not in result:
            result.update(median=float(np.median(result["times"])), min=float(np.min(result["times"])))
    return results


def vowels_batches(batch_size, seed):
    from book._training import load_split, pad, standardise
    sequences, labels = load_split("train")
    (sequences,) = standardise(sequences)
    x, lengths, _ = pad(sequences)
    order = np.random.default_rng(seed).permutation(len(labels))
    for first in range(0, len(labels), batch_size):
        batch = order[first:first + batch_size]
        L = int(lengths[batch].max())
        yield x[batch, :L].astype(np.float64), lengths[batch], labels[batch]


def epoch_rows(quick):
    config = dict(input_dim=12, num_classes=9, d_model=16 if quick else 32, d_state=16 if quick else 32, n_layers=2,
                  lrnn_cls="LRU", pooling="mean", dropout=0.0, seed=0)
    rows = []
    model = Classifier(**config)
    adam = optim.Adam(model.params, lr=1e-3)
    with _Timer() as clock:
        losses = []
        for x, lengths, labels in vowels_batches(16, 0):
            loss, grads = model.loss_and_grad(x, labels, lengths)
            adam.step(grads)
            losses.append(loss)
    rows.append({"backend": "reference (NumPy, hand-written VJP)", "seconds": clock.seconds, "loss": np.mean(losses)})
    for dtype in (torch.float64, torch.float32):
        module = from_reference(Classifier(**config), dtype=dtype).train()
        adam_t = torch.optim.Adam(module.parameters(), lr=1e-3)
        with _Timer() as clock:
            losses = []
            for x, lengths, labels in vowels_batches(16, 0):
                loss = torch.nn.functional.cross_entropy(
                    module(torch.as_tensor(x, dtype=dtype), torch.as_tensor(lengths)), torch.as_tensor(labels))
                adam_t.zero_grad()
                loss.backward()
                adam_t.step()
                losses.append(loss.item())
        rows.append({"backend": f"torch_backend {str(dtype).replace('torch.', '')} (autograd)",
                     "seconds": clock.seconds, "loss": np.mean(losses)})
    return rows


class _Timer:
    def __enter__(self):
        import time
        self._start, self._clock = time.perf_counter(), time.perf_counter
        return self

    def __exit__(self, *exc):
        self.seconds = self._clock() - self._start


def main(argv=None):
    layer_parser = argparse.ArgumentParser(add_help=False)
    layer_parser.add_argument("--layer", dest="layers", action="append", choices=sorted(LAYERS),
                              help="time only this layer (repeatable) and skip the training epoch")
    args = C.parse_args(__doc__.splitlines()[0], argv, parents=[layer_parser])
    info = C.machine_info()
    size = QUICK_SIZE if args.quick else FULL_SIZE
    print(C.header("Reference VJP vs its own forward, (b, L, H, N) = " + str(size), args, info))
    rows = layer_rows(size, args)
    print(C.markdown_table(rows, COLUMNS))
    epochs = []
    if not args.layers:
        print("\nOne JapaneseVowels training epoch (270 sequences, batch 16)")
        epochs = epoch_rows(args.quick)
        print(C.markdown_table(epochs, EPOCH_COLUMNS))
    if args.json:
        C.write_json(args.json, {"machine": info, "size": size, "layers": rows, "epoch": epochs})


if __name__ == "__main__":
    main()
