"""Shared benchmark machinery: timing, the bandwidth bound, errors, peak memory, tables, JSON, plots.

Timing: one warm-up call (compiles Numba kernels, faults pages in), then the median of >= 5 calls.
The bound: a linear recurrence must at least read a and b and write h once, so a streaming kernel
with exactly that traffic (out = a + b, Numba-parallel, and NumPy's single-threaded add; the faster
counts) timed on arrays of the same sizes at the start of the same run is the limit each scan is
compared with. Effective GB/s = (bytes of a + b + h) / median time for every method, so GB/s and
"× bound" are comparable across methods that move more data than the minimum.
"""
import argparse
import contextlib
import gc
import json
import os
import platform
import sys
import time
import tracemalloc
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numba
import numpy as np
from numba import njit, prange

MIN_REPEATS = 5


# ----------------------------------------------------------------------------- arguments
def parse_args(description, argv=None, parents=()):
    """The common command line: --quick, --json PATH, --plot PATH, --repeats, --budget, plus the options of the
    `parents` parsers (a benchmark's own, built with add_help=False), so --help lists them all."""
    parser = argparse.ArgumentParser(description=description, parents=list(parents))
    parser.add_argument("--quick", action="store_true", help="small shapes and fewer methods (CI smoke run, < 1 min)")
    parser.add_argument("--json", metavar="PATH", help="write all measurements as JSON to PATH")
    parser.add_argument("--plot", metavar="PATH", help="write a matplotlib figure (PNG/SVG/PDF) to PATH")
    parser.add_argument("--repeats", type=int, default=MIN_REPEATS, help=f"timed calls per case (>= {MIN_REPEATS})")
    parser.add_argument("--budget", type=float, default=None,
                        help="skip a case whose estimated call time exceeds this many seconds (10; 2 with --quick)")
    args = parser.parse_args(argv)
    if args.budget is None:
        args.budget = 2.0 if args.quick else 10.0
    if args.repeats < MIN_REPEATS:
        parser.error(f"--repeats must be >= {MIN_REPEATS}; got {args.repeats}")
    return args


# ----------------------------------------------------------------------------- timing
def time_call(fn, repeats=MIN_REPEATS, budget=None):
    """Median/min seconds of `repeats` calls of fn() after one warm-up call.

    Returns {"median", "min", "times", "result"}; "result" is the warm-up's return value. When a call
    after the warm-up takes longer than `budget` seconds, returns {"skipped": reason, "result": ...}.
    """
    start = time.perf_counter()
    result = fn()
    warm = time.perf_counter() - start
    if budget is not None and warm > budget:                 # the first call may have compiled: try once more
        start = time.perf_counter()
        fn()
        warm = time.perf_counter() - start
        if warm > budget:
            return {"skipped": f"one call took {warm:.1f} s > budget {budget:g} s", "result": result}
    times = []
    gc.disable()                                             # as timeit does: no collector pauses in the timings
    try:
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    finally:
        gc.enable()
    return {"median": float(np.median(times)), "min": float(np.min(times)), "times": times, "result": result}


@contextlib.contextmanager
def numba_threads(n):
    """Run Numba's parallel kernels on n threads inside the block (n=1: the serial timing)."""
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


# ----------------------------------------------------------------------------- the bandwidth bound
@njit(cache=True, parallel=True)
def _stream(a, b, out):
    """out = a + b on flat arrays: reads a and b, writes out once — the traffic a scan cannot avoid."""
    for i in prange(out.size):
        out[i] = a[i] + b[i]
    return out


def traffic(*arrays):
    """Bytes that must cross the memory bus at least once: every input read, every output written."""
    return int(sum(x.nbytes for x in arrays))


def bandwidth_bound(a, b, repeats=MIN_REPEATS):
    """The faster of two streaming kernels reading a and b and writing an output of b's size.

    a, b: arrays of equal size (any layout). Returns {"seconds", "gbps", "kernel", "bytes", ...}.
    """
    a_flat, b_flat = np.ascontiguousarray(a).reshape(-1), np.ascontiguousarray(b).reshape(-1)   # (size,)
    out = np.empty_like(b_flat)                                                                  # (size,)
    candidates = {"numba-parallel a+b": time_call(lambda: _stream(a_flat, b_flat, out), repeats),
                  "numpy a+b (1 thread)": time_call(lambda: np.add(a_flat, b_flat, out=out), repeats)}
    kernel = min(candidates, key=lambda k: candidates[k]["median"])
    seconds, nbytes = candidates[kernel]["median"], traffic(a_flat, b_flat, out)
    return {"seconds": seconds, "gbps": nbytes / seconds / 1e9, "kernel": kernel, "bytes": nbytes,
            "candidates": {k: v["median"] for k, v in candidates.items()}}


def allocating_reference(a, b, repeats=MIN_REPEATS):
    """Median seconds of an allocating NumPy elementwise op of the same size (np.multiply(a, b))."""
    return time_call(lambda: np.multiply(a, b), repeats)["median"]


def rel_error(h, reference):
    """max |h − h_ref| / max |h_ref| (h and the reference in any precision, compared in 64-bit)."""
    h, reference = np.asarray(h), np.asarray(reference)
    scale = float(np.max(np.abs(reference))) or 1.0
    return float(np.max(np.abs(h.astype(reference.dtype) - reference))) / scale


# ----------------------------------------------------------------------------- peak memory
def peak_numpy(fn):
    """Peak bytes NumPy allocates while fn() runs (tracemalloc sees NumPy's data buffers)."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return int(tracemalloc.get_traced_memory()[1])
    finally:
        tracemalloc.stop()


def _status_bytes(field):
    """A memory field of /proc/self/status (VmRSS, VmHWM) in bytes."""
    with open("/proc/self/status") as f:
        line = next(line for line in f if line.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _rss_probe(make, warm_args, args):
    """Child process: make(*warm_args)() (compiles, imports); then call = make(*args) builds the inputs
    and the growth of the peak RSS during call() is returned."""
    make(*warm_args)()
    call = make(*args)
    gc.collect()
    before = _status_bytes("VmRSS")
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as f:
        f.write("5")                                         # reset VmHWM (the peak) to the current RSS
    call()
    return _status_bytes("VmHWM") - before


def peak_rss(make, args, warm_args):
    """Peak resident-memory growth (bytes) of make(*args)() in a fresh process, inputs excluded (for
    torch, which tracemalloc cannot see). make: a module-level function returning a zero-argument call;
    warm_args: a small call made first. VmHWM, not ru_maxrss: the latter keeps the parent's RSS across exec."""
    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        return max(0, int(pool.submit(_rss_probe, make, warm_args, args).result()))


def torch_scan_probe(shape, dtype, backward):
    """A call of torch_backend's default scan on time-last (b, N, L) inputs, with backward if asked."""
    import torch
    from torch_backend.scan import scan
    a = torch.full(shape, 0.95, dtype=dtype).requires_grad_(backward)                       # (b, N, L)
    b = torch.ones(shape, dtype=dtype).requires_grad_(backward)                             # (b, N, L)

    def call():
        h = scan(a, b, axis=-1)
        if backward:
            torch.autograd.grad(h, (a, b), torch.ones_like(h))
    return call


def loglog_slope(xs, ys, x_min=None):
    """Least-squares slope of log y against log x over the points with x >= x_min."""
    pairs = [(x, y) for x, y in zip(xs, ys) if y and (x_min is None or x >= x_min)]
    if len(pairs) < 2:
        return float("nan")
    x, y = np.log(np.array(pairs, dtype=float)).T
    return float(np.polyfit(x, y, 1)[0])


# ----------------------------------------------------------------------------- reporting
def machine_info():
    """What the numbers depend on: CPU, threads, versions, and the load when the run started."""
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpus": len(os.sched_getaffinity(0)), "load_average": os.getloadavg(),
            "numba_threads": numba.get_num_threads(), "numba_threading_layer": numba.config.THREADING_LAYER,
            "python": sys.version.split()[0], "numpy": np.__version__, "numba": numba.__version__}
    info["environment"] = {k: os.environ[k] for k in ("OMP_WAIT_POLICY", "OMP_NUM_THREADS", "NUMBA_NUM_THREADS",
                                                      "NUMBA_THREADING_LAYER") if k in os.environ}
    if "torch" in sys.modules:
        torch = sys.modules["torch"]
        info.update(torch=torch.__version__, torch_threads=torch.get_num_threads())
    with contextlib.suppress(OSError):
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            info["transparent_hugepages"] = f.read().strip()
    return info


def header(title, args, info):
    """The first lines of every benchmark's output: what ran, where, and under which load."""
    env = ", ".join(f"{k}={v}" for k, v in info["environment"].items()) or "none set"
    torch = f", torch {info['torch']} ({info['torch_threads']} threads)" if "torch" in info else ""
    return (f"# {title}{' (--quick)' if args.quick else ''}\n\n"
            f"Machine: {info['processor']}, {info['cpus']} CPUs, NumPy {info['numpy']}, Numba {info['numba']} "
            f"({info['numba_threads']} threads){torch}; threading variables: {env}; load average at start "
            f"{', '.join(f'{x:.1f}' for x in info['load_average'])}. Median of {args.repeats} runs after a warm-up.\n")


def markdown_table(rows, columns):
    """rows: dicts; columns: (key, header, format) triples. Missing values print as an empty cell."""
    def cell(row, key, fmt):
        value = row.get(key)
        if value is None or (isinstance(value, float) and not np.isfinite(value)):
            return ""
        return fmt.format(value) if isinstance(value, (int, float)) else str(value)
    lines = ["| " + " | ".join(header for _, header, _ in columns) + " |",
             "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row, key, fmt) for key, _, fmt in columns) + " |" for row in rows]
    return "\n".join(lines)


def _plain(value):
    """JSON-serialisable copy (drops warm-up results, converts NumPy scalars)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if k != "result"}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def write_json(path, payload):
    """Write payload (plus machine info) as indented JSON, creating the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(_plain({"machine": machine_info(), **payload}), f, indent=1)
    print(f"wrote {path}")


def report_against_gru(rows, columns, args, size, is_gru):
    """Add × nn.GRU (median ms ÷ nn.GRU's median ms for the same pass) to every non-reference row,
    print the table and write the JSON when asked."""
    gru = {r["pass"]: r["ms"] for r in rows if is_gru(r) and "ms" in r}
    for row in rows:
        if "ms" in row and row.get("pass") in gru and row["group"] != "reference":
            row["x_gru"] = row["ms"] / gru[row["pass"]]
    print(markdown_table(rows, columns) + "\n", flush=True)
    if args.json:
        write_json(args.json, dict(args=vars(args), size=size, rows=rows))


def figure(n_panels, width=6.0, height=3.2):
    """A row of matplotlib axes (non-interactive backend), returned with their figure."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, n_panels, figsize=(width * n_panels, height), squeeze=False)
    return fig, axes[0]


def save_figure(fig, path):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"wrote {path}")
