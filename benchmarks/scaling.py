"""Scaling in L: time and peak memory of the default scan paths for L = 2^8 … 2^16, with
log-log slopes fitted from L = 2^10 (1.0 = linear), and the figure of `python -m benchmarks.scan --plot`.

Peak memory: tracemalloc for NumPy/Numba (it sees NumPy's buffers); for torch, the growth of the
peak resident set of a fresh process around one call (tracemalloc cannot see torch's allocator).
"""
import sys

import numpy as np

from reference.kernels.scan import scan_numba
from reference.scan import scan

from . import _common as C

SCALING_L = [2 ** k for k in range(8, 17)]
QUICK_L = [2 ** k for k in range(8, 12)]
COLUMNS = [("path", "path", "{}"), ("slope_time", "time slope", "{:.2f}"), ("slope_memory", "memory slope", "{:.2f}")]


def _paths(dtype):
    """(name, call(a, b) -> h, memory probe kind) for the default paths; torch ones only if importable."""
    paths = [("reference scan(method='numba'), complex128", lambda a, b: scan(a, b, method="numba", axis=-1), "numpy"),
             ("scan_numba(keep_dtype=True), allocating",
              lambda a, b: scan_numba(a, b, axis=-1, keep_dtype=True), "numpy")]
    try:
        import torch
        from torch_backend.scan import scan as torch_scan
    except Exception:                                        # no torch backend (yet): NumPy paths only
        return paths

    def forward(a, b):
        with torch.no_grad():
            return torch_scan(torch.from_numpy(a), torch.from_numpy(b), axis=-1)

    def forward_backward(a, b):
        a, b = torch.from_numpy(a).requires_grad_(), torch.from_numpy(b).requires_grad_()
        h = torch_scan(a, b, axis=-1)
        return torch.autograd.grad(h, (a, b), torch.ones_like(h))
    return paths + [("torch scan() default, fwd", forward, "torch-fwd"),
                    ("torch scan() default, fwd+bwd", forward_backward, "torch-bwd")]


def run_scaling(args, bn, make_inputs, dtype=np.complex64):
    """Rows {path, L, ms, peak_mb} and fitted slopes per path at (b, N) = bn."""
    Ls = QUICK_L if args.quick else SCALING_L
    paths, points = _paths(dtype), []
    for L in Ls:
        a, b = make_inputs(bn + (L,), dtype)                                                 # (b, N, L)
        for name, call, probe in paths:
            print(f"  scaling L={L} {name}", file=sys.stderr, flush=True)
            timing = C.time_call(lambda: call(a, b), args.repeats)
            if probe == "numpy":
                peak = C.peak_numpy(lambda: call(a, b))
            elif args.quick:
                peak = None                                      # fresh processes cost seconds each
            else:
                import torch
                peak = C.peak_rss(C.torch_scan_probe, (bn + (L,), torch.complex64, probe == "torch-bwd"),
                                  ((1, 1, 1 << 17), torch.complex64, probe == "torch-bwd"))   # parallel path warmed
            points.append(dict(path=name, L=L, ms=timing["median"] * 1e3,
                               peak_mb=None if peak is None else peak / 2 ** 20))
    fits = []
    for name, _, _ in paths:
        mine = [p for p in points if p["path"] == name]
        Lx = [p["L"] for p in mine]
        fits.append(dict(path=name, slope_time=C.loglog_slope(Lx, [p["ms"] for p in mine], 2 ** 10),
                         slope_memory=C.loglog_slope(Lx, [p["peak_mb"] for p in mine], 2 ** 10)))
    header = ["L"] + [name for name, _, _ in paths]
    print(f"## Scaling in L at (b, N) = {bn}, {np.dtype(dtype).name}: median ms / peak MiB\n")
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for L in Ls:
        cells = [str(L)]
        for name, _, _ in paths:
            p = next(p for p in points if p["path"] == name and p["L"] == L)
            cells.append(f"{p['ms']:.2f} / " + ("–" if p["peak_mb"] is None else f"{p['peak_mb']:.1f}"))
        print("| " + " | ".join(cells) + " |")
    print("\nFitted log-log slopes from L = 2^10 (1.00 = linear):\n")
    print(C.markdown_table(fits, COLUMNS) + "\n", flush=True)
    return dict(bn=list(bn), dtype=np.dtype(dtype).name, points=points, fits=fits)


def plot(blocks, scale, path):
    """Left: × bound of the forward rows (complex64, the two large shapes); middle/right: time and memory vs L."""
    fig, (ax_bars, ax_time, ax_mem) = C.figure(3, width=5.2, height=4.2)
    shown = [blk for blk in blocks if blk["dtype"] == "complex64"][:2]
    label = lambda r: f"{r['group']}: {r['method']}"                                        # noqa: E731
    fwd = [[r for r in blk["rows"] if "x_bound" in r and r.get("pass", "fwd") == "fwd" and r["group"] != "limit"]
           for blk in shown]
    labels = list(dict.fromkeys(label(r) for rows in fwd for r in rows))
    for k, (blk, rows) in enumerate(zip(shown, fwd)):
        y = [labels.index(label(r)) * (len(shown) + 1) + k for r in rows]
        ax_bars.barh(y, [r["x_bound"] for r in rows], label=f"(b, N, L) = {tuple(blk['shape'])}")
    ax_bars.set_yticks(np.arange(len(labels)) * (len(shown) + 1) + (len(shown) - 1) / 2, labels, fontsize=6)
    ax_bars.axvline(1.0, color="k", lw=0.8)
    ax_bars.set_xscale("log")
    ax_bars.invert_yaxis()
    ax_bars.set(xlabel="time ÷ bandwidth bound (log)", title="scans, complex64, forward")
    ax_bars.legend(fontsize=7, loc="upper right")
    for name in dict.fromkeys(p["path"] for p in scale["points"]):
        mine = [p for p in scale["points"] if p["path"] == name]
        ax_time.loglog([p["L"] for p in mine], [p["ms"] for p in mine], "o-", label=name)
        if all(p["peak_mb"] for p in mine):
            ax_mem.loglog([p["L"] for p in mine], [p["peak_mb"] for p in mine], "o-", label=name)
    ax_time.set(xlabel="L", ylabel="median ms", title=f"time vs L, (b, N) = {tuple(scale['bn'])}")
    ax_mem.set(xlabel="L", ylabel="peak MiB", title="peak memory vs L")
    for ax in (ax_time, ax_mem):
        ax.set_xscale("log", base=2)
        ax.minorticks_off()
    ax_time.legend(fontsize=6)
    ax_mem.legend(fontsize=6)
    C.save_figure(fig, path)
