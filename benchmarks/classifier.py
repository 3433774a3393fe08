"""Classifier benchmark: a 4-layer mixed Classifier (SPEC §6) against nn.GRU and nn.LSTM stacks
of the same width and depth, forward and a training step, at (b, L, H, N) = (32, 1024, 128, 64).

    python -m benchmarks.classifier [--quick] [--json PATH] [--plot PATH]

Two mixed stacks: LRU/S5/S4D/Centaurus, and LRU/S5/Centaurus/MultiresConv (whichever of them the
backend offers; a note lists the rest) — S4D's recurrent view stores (b, L, H, N) states, the second mix
shows a stack without it. Baselines: Linear(input_dim → H), an n_layers-deep nn.GRU / nn.LSTM, the last step, Linear(H →
classes) — the recurrent models a user would otherwise train. A training step = forward,
cross-entropy, backward, Adam step. The reference Classifier's forward (float64) is timed for scale.
--quick: (4, 256, 32, 16).
"""
import importlib

import numpy as np
import torch

from . import _common as C
from .layers import plot_rows, timed_row, torch_step

MIXES = (("LRU", "S5", "S4D", "Centaurus"), ("LRU", "S5", "Centaurus", "MultiresConv"))
FULL_SIZE, QUICK_SIZE = (32, 1024, 128, 64), (4, 256, 32, 16)          # (b, L, H, N)
INPUT_DIM, CLASSES, N_LAYERS = 16, 10, 4
COLUMNS = [("group", "group", "{}"), ("model", "model", "{}"), ("pass", "pass", "{}"), ("ms", "median ms", "{:.2f}"),
           ("min_ms", "min ms", "{:.2f}"), ("x_gru", "× GRU stack", "{:.2f}"), ("note", "note", "{}")]


class RecurrentClassifier(torch.nn.Module):
    """Linear(input_dim → H) → n_layers-deep nn.GRU/nn.LSTM → last step → Linear(H → classes)."""

    def __init__(self, rnn, H, n_layers):
        super().__init__()
        self.proj, self.rnn = torch.nn.Linear(INPUT_DIM, H), rnn(H, H, num_layers=n_layers, batch_first=True)
        self.head = torch.nn.Linear(H, CLASSES)

    def forward(self, x):
        return self.head(self.rnn(self.proj(x))[0][:, -1])                                   # (b, classes)


def mixed(module, H, N, mix):
    """A Classifier from `module` (torch_backend or reference) with the mixers of `mix` it offers, or a note."""
    registry = importlib.import_module(module.__name__ + ".layers").REGISTRY
    offered = [m for m in mix if m in registry]
    if not offered:
        return None, "not available (none of " + ", ".join(mix) + " registered yet)"
    mixers = (offered * N_LAYERS)[:N_LAYERS]
    missing = [m for m in mix if m not in registry]
    note = "mixers " + "/".join(mixers) + (f"; missing {', '.join(missing)}" if missing else "")
    Classifier = importlib.import_module(module.__name__ + ".classifier").Classifier                # noqa: N806
    model = Classifier(input_dim=INPUT_DIM, num_classes=CLASSES, d_model=H, d_state=N, n_layers=N_LAYERS,
                       lrnn_cls=mixers, seed=0)
    return model, note


def main(argv=None):
    args = C.parse_args("Classifier benchmark", argv)
    batch, L, H, N = QUICK_SIZE if args.quick else FULL_SIZE
    print(C.header("Classifier benchmark", args, C.machine_info()))
    print(f"Size (b, L, H, N) = ({batch}, {L}, {H}, {N}), {N_LAYERS} layers, input_dim {INPUT_DIM}, {CLASSES} classes; "
          "torch float32 (train mode, dropout 0.1), reference float64. × GRU stack = median ÷ the GRU stack's.\n")
    rng = np.random.default_rng(0)
    x_np = rng.standard_normal((batch, L, INPUT_DIM))                                        # (b, L, input_dim)
    x = torch.from_numpy(x_np.astype(np.float32))                                            # (b, L, input_dim)
    labels = torch.from_numpy(rng.integers(0, CLASSES, batch))                               # (b,)
    loss = lambda logits: torch.nn.functional.cross_entropy(logits, labels)                  # noqa: E731
    torch.manual_seed(0)
    candidates = [("baseline", f"nn.GRU × {N_LAYERS}", RecurrentClassifier(torch.nn.GRU, H, N_LAYERS), None),
                  ("baseline", f"nn.LSTM × {N_LAYERS}", RecurrentClassifier(torch.nn.LSTM, H, N_LAYERS), None)]
    for k, mix in enumerate(MIXES):
        try:
            model, note = mixed(importlib.import_module("torch_backend"), H, N, mix)
        except Exception as error:                           # backend missing or half-written: a note
            model, note = None, f"not available ({type(error).__name__}: {error})"
        candidates.append(("torch", f"Classifier (mix {k + 1})", model, note))
    rows, short = [], slice(0, max(1, L // 8))                                              # L/8 for estimates
    for group, name, model, note in candidates:
        if model is None:
            rows.append(dict(group=group, model=name, note=note))
            continue
        with torch.no_grad():
            rows.append(timed_row(lambda: model(x), args, small=lambda: model(x[:, short]), group=group, model=name,
                                  note=note, **{"pass": "fwd"}))
        rows.append(timed_row(torch_step(model, x, loss), args, small=torch_step(model, x[:, short], loss), group=group,
                              model=name, note=note, **{"pass": "train step"}))
    for k, mix in enumerate(MIXES):
        try:
            reference, note = mixed(importlib.import_module("reference"), H, N, mix)
            if reference is not None:
                rows.append(timed_row(lambda: reference(x_np), args, small=lambda: reference(x_np[:, short]),
                                      group="reference", model=f"Classifier (mix {k + 1})", note=note,
                                      **{"pass": "fwd"}))
        except Exception as error:
            rows.append(dict(group="reference", model=f"Classifier (mix {k + 1})",
                             note=f"failed: {type(error).__name__}: {error}"))
    C.report_against_gru(rows, COLUMNS, args, dict(b=batch, L=L, H=H, N=N),
                         is_gru=lambda r: r["model"].startswith("nn.GRU"))
    if args.plot:
        plot_rows([dict(r, layer=r["model"], method=r["group"]) for r in rows], args.plot,
                  f"classifier, (b, L, H, N) = ({batch}, {L}, {H}, {N})")


if __name__ == "__main__":
    main()
