"""Benchmarks: every scan, layer and classifier timed against the machine's limit and
against what a user would otherwise pick. Not tests: run them by hand, e.g.

    python -m benchmarks.scan --quick                 # CI smoke run, well under a minute
    python -m benchmarks.scan --json benchmarks/results/scan.json --plot book/_static/bench_scan.png
    python -m benchmarks.layers
    python -m benchmarks.classifier

Each prints a markdown table: median of >= 5 runs after a warm-up, effective GB/s, the ratio to a
bandwidth-bound kernel timed at the start of the same run, and the error against the float64
sequential scan. Shared machinery lives in `benchmarks._common`.

OpenMP threads (Numba's and torch's) wait passively here unless OMP_WAIT_POLICY is set: with the
default spin-then-sleep policy, on a machine whose cores are shared with other processes, a 2-thread
kernel of 0.1 ms was measured at 5–8 ms (the spinning master starves the worker it waits for).
The passive policy costs torch's own recurrent layers dearly, though: a 4-layer nn.GRU training step at
(b, L, H) = (32, 1024, 128) measured 3.1 s passive against 1.3 s with libgomp's default. Comparisons
with nn.GRU/nn.LSTM (`layers`, `classifier`) are therefore run with OMP_WAIT_POLICY=default, which here
means "leave libgomp's own default" (the variable is removed). The setting is printed in every header.
"""
import os

# Note: must happen before torch or Numba's OpenMP pool loads libgomp, which reads it once.
if os.environ.get("OMP_WAIT_POLICY", "").lower() == "default":
    del os.environ["OMP_WAIT_POLICY"]
else:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
