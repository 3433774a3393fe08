"""Layer benchmark: forward and a training step of every torch layer, against torch.nn.GRU
and torch.nn.LSTM of the same width (what a user would otherwise pick) and, for LTI layers, against
their own FFT-convolution view (method="fft"); reference layers' forward on the same input for scale.

    python -m benchmarks.layers [--quick] [--json PATH] [--plot PATH]

Size (b, L, H, N) = (32, 1024, 128, 64), float32 (torch default); --quick: (4, 256, 32, 16).
A training step = forward, mean-square loss, backward, Adam step. Layers that have not landed in
torch_backend.layers.REGISTRY yet are listed as "not available".
"""
import importlib
import inspect
import sys

import numpy as np
import torch

from . import _common as C

EXPECTED = ("LRU", "S5", "S4D", "Centaurus", "LSSL", "MultiresConv")
FULL_SIZE, QUICK_SIZE = (32, 1024, 128, 64), (4, 256, 32, 16)          # (b, L, H, N)
COLUMNS = [("group", "group", "{}"), ("layer", "layer", "{}"), ("method", "method", "{}"), ("pass", "pass", "{}"),
           ("ms", "median ms", "{:.2f}"), ("min_ms", "min ms", "{:.2f}"), ("x_gru", "× nn.GRU", "{:.2f}"),
           ("note", "note", "{}")]


def build(cls, H, N, L):
    """cls(d_model=H, d_state=N, seed=0), with max_len=L where the layer takes one (MultiresConv has no d_state)."""
    accepted = inspect.signature(cls.__init__).parameters
    optional = {"d_state": N, "max_len": L}
    return cls(d_model=H, seed=0, **{k: v for k, v in optional.items() if k in accepted})


def torch_step(model, x, loss_fn):
    """A training step closure: zero grads, forward, loss, backward, Adam step."""
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x))
        loss.backward()
        optimizer.step()
        return loss
    return step


def timed_row(fn, args, small=None, **fields):
    """Time fn and return a table row (or a note on failure / budget). small: the same call on an eighth
    of the sequence, timed first; if eight times it exceeds the budget the full call is not made."""
    try:
        if small is not None:
            estimate = 8 * C.time_call(small, 1)["median"]
            if estimate > args.budget:
                return dict(fields, note=f"skipped: ≈{estimate:.0f} s per call (8 × the L/8 call > --budget)")
        timing = C.time_call(fn, args.repeats, budget=args.budget)
    except Exception as error:                               # a layer or method that cannot run: a note
        return dict(fields, note=f"failed: {type(error).__name__}: {str(error)[:90]}")
    if "skipped" in timing:
        return dict(fields, note="skipped: " + timing["skipped"])
    print(f"    {fields} {timing['median'] * 1e3:.1f} ms", file=sys.stderr, flush=True)
    return dict(fields, ms=timing["median"] * 1e3, min_ms=timing["min"] * 1e3)


def recurrent_baselines(x, H, args, n_layers=1):
    """Rows for nn.GRU and nn.LSTM (batch_first, hidden = input = H, n_layers deep), fwd and training step."""
    rows = []
    for name, rnn in (("nn.GRU", torch.nn.GRU), ("nn.LSTM", torch.nn.LSTM)):
        model = Called(rnn(H, H, num_layers=n_layers, batch_first=True))
        with torch.no_grad():
            rows.append(timed_row(lambda: model(x), args, group="baseline", layer=name, method="torch CPU",
                                  **{"pass": "fwd"}))
        rows.append(timed_row(torch_step(model, x, lambda y: y.square().mean()), args, group="baseline", layer=name,
                              method="torch CPU", **{"pass": "train step"}))
    return rows


def torch_layer_rows(x, H, N, args):
    """Rows for every torch layer: default method and, when offered, method='fft'; fwd and training step."""
    try:
        registry = importlib.import_module("torch_backend.layers").REGISTRY
    except Exception as error:                               # backend not importable yet: one note
        return [dict(group="torch", layer="torch_backend.layers",
                     note=f"not available ({type(error).__name__}: {error})")]
    rows = []
    for name in list(EXPECTED) + [n for n in registry if n not in EXPECTED]:
        if name not in registry:
            rows.append(dict(group="torch", layer=name, note="not available"))
            continue
        print(f"  torch {name}", file=sys.stderr, flush=True)
        try:
            layer = build(registry[name], H, N, x.shape[1])
        except Exception as error:
            rows.append(dict(group="torch", layer=name, note=f"failed to build: {type(error).__name__}: {error}"))
            continue
        methods = ["default"] + (["fft"] if "fft" in getattr(layer, "methods", ("fft",)) else [])
        x_small = x[:, :max(1, x.shape[1] // 8)]                                               # (b, L/8, H)
        for method in methods:
            model = Called(layer, {} if method == "default" else {"method": method})
            with torch.no_grad():
                rows.append(timed_row(lambda: model(x), args, small=lambda: model(x_small), group="torch",
                                      layer=name, method=method, **{"pass": "fwd"}))
            loss = lambda y: y.square().mean()                                                 # noqa: E731
            rows.append(timed_row(torch_step(model, x, loss), args, small=torch_step(model, x_small, loss),
                                  group="torch", layer=name, method=method, **{"pass": "train step"}))
    return rows


class Called(torch.nn.Module):
    """A model called with fixed keyword arguments (method='fft'), or returning an RNN's output sequence only."""

    def __init__(self, model, kwargs=None):
        super().__init__()
        self.model, self.kwargs = model, kwargs or {}

    def forward(self, x):
        y = self.model(x, **self.kwargs)
        return y[0] if isinstance(y, tuple) else y                     # nn.GRU/nn.LSTM return (output, state)


def reference_rows(x, H, N, args):
    """Forward of every reference layer (float64): method 'numba' (else 'sequential') and 'fft' where offered."""
    from reference.layers import REGISTRY
    rows = []
    for name, cls in REGISTRY.items():
        print(f"  reference {name}", file=sys.stderr, flush=True)
        try:
            layer = build(cls, H, N, x.shape[1])
        except Exception as error:
            rows.append(dict(group="reference", layer=name, note=f"failed to build: {type(error).__name__}: {error}"))
            continue
        offered = getattr(layer, "methods", ("numba", "fft"))
        x_small = x[:, :max(1, x.shape[1] // 8)]                                               # (b, L/8, H)
        for method in [("numba" if "numba" in offered else "sequential")] + (["fft"] if "fft" in offered else []):
            rows.append(timed_row(lambda: layer(x, method=method), args, small=lambda: layer(x_small, method=method),
                                  group="reference", layer=name, method=method, **{"pass": "fwd"}))
    return rows


def main(argv=None):
    args = C.parse_args("Layer benchmark", argv)
    batch, L, H, N = QUICK_SIZE if args.quick else FULL_SIZE
    print(C.header("Layer benchmark", args, C.machine_info()))
    print(f"Size (b, L, H, N) = ({batch}, {L}, {H}, {N}); torch float32, reference float64. "
          "× nn.GRU = median time ÷ nn.GRU's median time for the same pass.\n")
    x_np = np.random.default_rng(0).standard_normal((batch, L, H))                             # (b, L, H)
    x = torch.from_numpy(x_np.astype(np.float32))                                               # (b, L, H)
    rows = recurrent_baselines(x, H, args) + torch_layer_rows(x, H, N, args) + reference_rows(x_np, H, N, args)
    C.report_against_gru(rows, COLUMNS, args, dict(b=batch, L=L, H=H, N=N),
                         is_gru=lambda r: r.get("layer") == "nn.GRU")
    if args.plot:
        plot_rows(rows, args.plot, f"layers, (b, L, H, N) = ({batch}, {L}, {H}, {N})")


def plot_rows(rows, path, title):
    """Horizontal bars of median ms per (layer, method), one colour per pass (torch and baselines)."""
    fig, (ax,) = C.figure(1, width=7, height=5)
    shown = [r for r in rows if "ms" in r and r["group"] != "reference"]
    labels = list(dict.fromkeys(f"{r['layer']} ({r['method']})" for r in shown))
    for k, pass_ in enumerate(("fwd", "train step")):
        mine = [r for r in shown if r["pass"] == pass_]
        y = [labels.index(f"{r['layer']} ({r['method']})") * 3 + k for r in mine]
        ax.barh(y, [r["ms"] for r in mine], label=pass_)
    ax.set_yticks(np.arange(len(labels)) * 3 + 0.5, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xscale="log", xlabel="median ms (log)", title=title)
    if shown:
        ax.set_xlim(left=0.5 * min(r["ms"] for r in shown))
    ax.legend()
    C.save_figure(fig, path)


if __name__ == "__main__":
    main()
