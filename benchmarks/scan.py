"""Scan benchmark: every scan against the bandwidth bound of the same run.

    python -m benchmarks.scan [--quick] [--json PATH] [--plot PATH]

Data: time-varying a (0.9 ≤ |a| < 1) and complex b in time-last memory (b, N, L), complex64 and
complex128, shapes (b, N, L) = (8, 256, 4096), (1, 64, 65536), (32, 64, 256). Rows:
* limit: the streaming bound (read a and b, write h) and an allocating np.multiply of the same size;
* numba: the kernels called directly (`scan_numba(..., keep_dtype=True)`): the four-row time-last kernel
  with and without `out=`, the time-major kernel on (b, L, N) copies, and kernels defined here that keep
  one (naive, latency-bound) or two rows per task in flight, on all threads and on one;
* reference: `scan(a, b, method=m, axis=-1)` for every method — always 64-bit, so its complex64 rows
  include the promotion, exactly what a caller of the reference gets;
* torch: torch_backend `scan(..., method=m, axis=-1)` (the autograd loop, the default, the Numba
  custom op, pure-torch chunked/Blelloch/Hillis–Steele, torch's associative scan), fwd and fwd+bwd.
Then scaling: time and peak memory for L = 2^8 … 2^16 with log-log slopes fitted from L = 2^10.
A case whose estimated call time exceeds --budget seconds is skipped with a note.
"""
import importlib
import sys

import numpy as np
from numba import njit, prange

from reference.kernels.scan import scan_numba
from reference.scan import SCAN_METHODS, scan, scan_sequential

from . import _common as C

SHAPES = [(8, 256, 4096), (1, 64, 65536), (32, 64, 256)]                # (b, N, L)
QUICK_SHAPES = [(2, 32, 1024), (1, 8, 8192)]
DTYPES = (np.complex64, np.complex128)
SCALING_BN = (4, 64)                                                    # (b, N) of the scaling runs
TORCH_METHODS = ("sequential", "auto", "numba", "chunked", "blelloch", "hillis_steele", "compiled")
QUICK_TORCH_METHODS = ("sequential", "auto", "numba", "chunked")                # --quick: the loop forward only
SLOW = {"sequential", "hillis_steele", "blelloch", "compiled"}          # estimated on a prefix first
COLUMNS = [("group", "group", "{}"), ("method", "method", "{}"), ("pass", "pass", "{}"),
           ("ms", "median ms", "{:.2f}"), ("min_ms", "min ms", "{:.2f}"), ("gbps", "GB/s", "{:.3g}"),
           ("x_bound", "× bound", "{:.2f}"),
           ("x_fwd", "× own fwd", "{:.1f}"), ("rel_err", "rel. error", "{:.0e}"), ("note", "note", "{}")]


@njit(cache=True, parallel=True)
def naive_rows(a, b, out):
    """One time-last row (one dependency chain) per task: the latency-bound loop the four-row kernel improves on."""
    for r in prange(b.shape[0]):
        x = 0 * b[r, 0]
        for t in range(b.shape[1]):
            x = a[r, t] * x + b[r, t]
            out[r, t] = x
    return out


@njit(cache=True, parallel=True)
def two_rows(a, b, out):
    """Two time-last rows per task: two chains in flight (the library kernel keeps four)."""
    R, L = b.shape
    for pair in prange((R + 1) // 2):
        r0 = 2 * np.int64(pair)
        r1 = min(r0 + 1, R - 1)
        x0, x1 = 0 * b[r0, 0], 0 * b[r1, 0]
        for t in range(L):
            x0 = a[r0, t] * x0 + b[r0, t]
            x1 = a[r1, t] * x1 + b[r1, t]
            out[r0, t], out[r1, t] = x0, x1
    return out


def make_inputs(shape, dtype, seed=0):
    """a, b of shape (b, N, L) and `dtype`, C-ordered (time-last memory); |a| in [0.9, 1)."""
    rng = np.random.default_rng(seed)
    a = rng.uniform(0.9, 1.0, shape) * np.exp(1j * rng.uniform(-np.pi, np.pi, shape))        # (b, N, L)
    b = rng.standard_normal(shape) + 1j * rng.standard_normal(shape)                        # (b, N, L)
    return a.astype(dtype), b.astype(dtype)


def float64_reference(a, b):
    """The definition (`scan_sequential`) in complex128 on time-major copies, returned as (b, N, L)."""
    move = lambda x: np.ascontiguousarray(np.moveaxis(x, -1, 1), dtype=np.complex128)      # noqa: E731
    return np.moveaxis(scan_sequential(move(a), move(b)), 1, -1)                             # (b, N, L)


def numpy_cases(a, b, quick):
    """(group, method, note, threads, call(a, b) -> h (b, N, L)) for the Numba and reference rows."""
    out, out_tm = np.empty_like(b), np.empty_like(np.moveaxis(b, -1, 1), order="C")         # (b, N, L), (b, L, N)
    tm = lambda x: np.ascontiguousarray(np.moveaxis(x, -1, 1))                               # noqa: E731
    a_tm, b_tm = tm(a), tm(b)                                                                # (b, L, N) copies
    rows = lambda x: x.reshape(-1, x.shape[-1])                                              # noqa: E731
    four_row_out = lambda a, b: scan_numba(a, b, out=out, axis=-1, keep_dtype=True)          # noqa: E731
    time_major = lambda a, b: np.moveaxis(scan_numba(a_tm, b_tm, out=out_tm, keep_dtype=True), 1, -1)  # noqa: E731
    naive = lambda a, b: naive_rows(rows(a), rows(b), rows(out)).reshape(b.shape)          # noqa: E731
    cases = [("numba", "four-row time-last, out=", None, 0, four_row_out),
             ("numba", "four-row time-last, allocating", None, 0,
              lambda a, b: scan_numba(a, b, axis=-1, keep_dtype=True)),
             ("numba", "four-row time-last, out=, 1 thread", None, 1, four_row_out),
             ("numba", "time-major (b, L, N), out=", "data pre-transposed", 0, time_major),
             ("numba", "two rows per task, out=", "benchmark-only kernel", 0,
              lambda a, b: two_rows(rows(a), rows(b), rows(out)).reshape(b.shape)),
             ("numba", "one row per task (naive), out=", "benchmark-only kernel", 0, naive)]
    if not quick:
        cases += [("numba", "time-major (b, L, N), out=, 1 thread", "data pre-transposed", 1, time_major),
                  ("numba", "one row per task (naive), out=, 1 thread", "benchmark-only kernel", 1, naive)]
    promoted = "computes in complex128" if b.dtype == np.complex64 else None
    for m in ("sequential", "numba", "chunked") if quick else SCAN_METHODS:
        cases.append(("reference", f"scan(method={m!r}, axis=-1)", promoted, 0,
                      lambda a, b, m=m: scan(a, b, method=m, axis=-1)))
    return cases


def torch_cases(at, bt, g, quick):
    """(group, method, pass, call(a, b) -> h or grads) for torch_backend.scan, or notes if missing."""
    try:
        tb = importlib.import_module("torch_backend.scan")   # the module (the package re-exports a function `scan`)
    except Exception as error:                               # missing or half-written backend: a note, not a crash
        return [("torch", "torch_backend.scan", "", f"not available ({type(error).__name__}: {error})")]
    import torch
    cases = []
    for m in QUICK_TORCH_METHODS if quick else TORCH_METHODS:
        if m not in tb.SCAN_METHODS:
            cases.append(("torch", f"scan(method={m!r})", "", "not available"))
            continue

        def forward(a, b, m=m):
            with torch.no_grad():
                return tb.scan(a, b, method=m, axis=-1)

        def forward_backward(a, b, m=m):
            a, b = a.detach().requires_grad_(), b.detach().requires_grad_()
            h = tb.scan(a, b, method=m, axis=-1)
            return torch.autograd.grad(h, (a, b), g[..., :h.shape[-1]])
        cases.append(("torch", f"scan(method={m!r})", "fwd", forward))
        if not (quick and m == "sequential"):
            cases.append(("torch", f"scan(method={m!r})", "fwd+bwd", forward_backward))
    if "chunked" in tb.SCAN_METHODS:                         # the layout the layers produce: (b, L, N) memory
        a_major, b_major = (x.transpose(1, 2).contiguous() for x in (at, bt))                # (b, L, N)
        g_major = g.transpose(1, 2).contiguous()

        def chunked_major(a, b):
            with torch.no_grad():
                return tb.scan(a_major, b_major, method="chunked", axis=1).transpose(1, 2)

        def chunked_major_backward(a, b):
            a, b = a_major.detach().requires_grad_(), b_major.detach().requires_grad_()
            return torch.autograd.grad(tb.scan(a, b, method="chunked", axis=1), (a, b), g_major)
        cases += [("torch", CHUNKED_MAJOR, "fwd", chunked_major), ("torch", CHUNKED_MAJOR, "fwd+bwd", chunked_major_backward)]
    return cases


CHUNKED_MAJOR = "scan(method='chunked'), time-major (b, L, N) data"


def timed(call, a, b, args, slow):
    """Row fields for one case: median/min ms and the warm-up result, or a note why it was skipped."""
    L, prefix = b.shape[-1], 256
    if slow and L > 2 * prefix:                              # extrapolate from two prefixes before the warm-up
        t1, t2 = (C.time_call(lambda n=n: call(a[..., :n], b[..., :n]), 1)["median"] for n in (prefix, 2 * prefix))
        growth = max(1.0, np.log2(t2 / t1))                  # 1 = linear; an autograd loop's backward is ~2
        estimate = t2 * (L / (2 * prefix)) ** growth
        if estimate > args.budget:
            return {"note": f"skipped: ≈{estimate:.0f} s per call (> --budget {args.budget:g} s)"}
    try:
        timing = C.time_call(lambda: call(a, b), args.repeats, budget=args.budget)
    except Exception as error:                               # a method that cannot run here gets a note
        return {"note": f"failed: {type(error).__name__}: {str(error)[:80]}"}
    if "skipped" in timing:
        return {"note": "skipped: " + timing["skipped"]}
    return {"ms": timing["median"] * 1e3, "min_ms": timing["min"] * 1e3, "result": timing["result"]}


def bench_shape(shape, dtype, args):
    """All rows for one (b, N, L) shape and dtype, with the bound measured first."""
    a, b = make_inputs(shape, dtype)
    bound = C.bandwidth_bound(a, b, args.repeats)
    alloc_s = C.allocating_reference(a, b, args.repeats)
    ref = float64_reference(a, b)
    rows = [dict(group="limit", method=f"bound: {bound['kernel']}, out=", ms=bound["seconds"] * 1e3),
            dict(group="limit", method="np.multiply(a, b), allocating", ms=alloc_s * 1e3)]
    for group, method, note, threads, call in numpy_cases(a, b, args.quick):
        print(f"  {shape} {np.dtype(dtype).name} {group} {method}", file=sys.stderr, flush=True)
        with C.numba_threads(threads or C.numba.config.NUMBA_NUM_THREADS):
            row = timed(call, a, b, args, slow=group == "reference" and method.split("'")[1] in SLOW)
        if "result" in row:
            row["rel_err"] = C.rel_error(row.pop("result"), ref)
        rows.append(dict(group=group, method=method, **{"pass": "fwd"}, **row, note=row.get("note", note)))
    try:
        import torch
        at, bt = torch.from_numpy(a), torch.from_numpy(b)                                     # (b, N, L) views
        g = torch.randn(bt.shape, dtype=bt.dtype, generator=torch.Generator().manual_seed(0))  # ∂loss/∂h
        tcases = torch_cases(at, bt, g, args.quick)
    except ImportError:
        tcases = [("torch", "torch", "", "not installed")]
    fwd_ms = {}
    for group, method, pass_, call in tcases:
        if isinstance(call, str):
            rows.append(dict(group=group, method=method, note=call))
            continue
        print(f"  {shape} {np.dtype(dtype).name} torch {method} {pass_}", file=sys.stderr, flush=True)
        row = timed(call, at, bt, args, slow=method.split("'")[1] in SLOW)
        if pass_ == "fwd" and "result" in row:
            row["rel_err"], fwd_ms[method] = C.rel_error(row.pop("result").numpy(), ref), row["ms"]
        elif "ms" in row and method in fwd_ms:
            row["x_fwd"] = row["ms"] / fwd_ms[method]
        rows.append(dict(group=group, method=method, **{"pass": pass_}, **row))
    nbytes = C.traffic(a, b, b)
    for row in rows:
        row.pop("result", None)
        row.update(shape=list(shape), dtype=np.dtype(dtype).name)
        if "ms" in row:
            row.update(gbps=nbytes / row["ms"] * 1e-6, x_bound=row["ms"] / (bound["seconds"] * 1e3))
    return dict(shape=list(shape), dtype=np.dtype(dtype).name, bound=bound, alloc_ms=alloc_s * 1e3, rows=rows)


def find(block, group, method, pass_="fwd"):
    """Median ms of one row of a block, or None."""
    for row in block["rows"]:
        if row["group"] == group and row["method"] == method and row.get("pass", "fwd") == pass_:
            return row.get("ms")
    return None


def targets(blocks):
    """The issue-8 target ratios per shape and dtype (None where a row is missing)."""
    ratio = lambda x, y: x / y if x and y else None                                         # noqa: E731
    out = []
    for blk in blocks:
        alloc = find(blk, "numba", "four-row time-last, allocating")
        auto = find(blk, "torch", "scan(method='auto')")
        out.append(dict(shape=str(tuple(blk["shape"])), dtype=blk["dtype"],
                        numba_out_x_bound=ratio(find(blk, "numba", "four-row time-last, out="),
                                                blk["bound"]["seconds"] * 1e3),
                        numba_alloc_x_np=ratio(alloc, blk["alloc_ms"]),
                        torch_fwd_x_numba=ratio(auto, alloc),
                        torch_bwd_x_fwd=ratio(find(blk, "torch", "scan(method='auto')", "fwd+bwd"), auto),
                        chunked_x_numba=ratio(find(blk, "torch", "scan(method='chunked')"), alloc),
                        chunked_major_x_numba=ratio(find(blk, "torch", CHUNKED_MAJOR), alloc)))
    return out


TARGET_COLUMNS = [("shape", "(b, N, L)", "{}"), ("dtype", "dtype", "{}"),
                  ("numba_out_x_bound", "Numba out= ÷ bound (≤ 1.3)", "{:.2f}"),
                  ("numba_alloc_x_np", "Numba allocating ÷ np.multiply (≤ 1.1)", "{:.2f}"),
                  ("torch_fwd_x_numba", "torch default fwd ÷ Numba allocating (≤ 1.5)", "{:.2f}"),
                  ("torch_bwd_x_fwd", "torch fwd+bwd ÷ fwd (≤ 3)", "{:.2f}"),
                  ("chunked_x_numba", "pure-torch chunked ÷ Numba allocating (≤ 5)", "{:.2f}"),
                  ("chunked_major_x_numba", "the same on time-major data (≤ 5)", "{:.2f}")]


def scaling(args):
    """Time and peak memory against L at (b, N) = SCALING_BN, complex64, for the default paths."""
    from .scaling import run_scaling
    return run_scaling(args, (2, 16) if args.quick else SCALING_BN, make_inputs)


def main(argv=None):
    args = C.parse_args("Scan benchmark", argv)
    try:
        import torch  # noqa: F401  (imported first so the header can report its version and threads)
    except ImportError:
        pass
    print(C.header("Scan benchmark", args, C.machine_info()))
    print("Data: time-varying a (0.9 ≤ |a| < 1) and complex b, time-last (b, N, L) memory. GB/s = bytes of a + b + h "
          "over the median time; × bound = time ÷ the streaming bound of the same sizes measured first; "
          "rel. error = max |h − h₆₄| / max |h₆₄| against the float64 sequential scan.\n")
    blocks = []
    for shape in QUICK_SHAPES if args.quick else SHAPES:
        for dtype in DTYPES:
            blk = bench_shape(shape, dtype, args)
            blocks.append(blk)
            bound = blk["bound"]
            print(f"## (b, N, L) = {tuple(shape)}, {np.dtype(dtype).name}: bound {bound['seconds'] * 1e3:.2f} ms "
                  f"= {bound['gbps']:.1f} GB/s ({bound['kernel']})\n")
            print(C.markdown_table(blk["rows"], COLUMNS) + "\n", flush=True)
    goals = targets(blocks)
    print("## Targets\n\n" + C.markdown_table(goals, TARGET_COLUMNS) + "\n", flush=True)
    scale = scaling(args)
    if args.json:
        C.write_json(args.json, dict(args=vars(args), blocks=blocks, targets=goals, scaling=scale))
    if args.plot:
        from .scaling import plot
        plot(blocks, scale, args.plot)


if __name__ == "__main__":
    main()
