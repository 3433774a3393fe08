"""Fast paths, tested equal to the definitions.

The spec modules (`reference/scan.py`, `reference/layers/`) hold the math and nothing else; this
package holds the tuned Numba kernels that compute the same numbers faster, for the torch backend's
CPU custom ops and for the benchmarks: several rows advanced per task, `out=` buffers, computation in
the inputs' own precision (`keep_dtype`), thread heuristics, fused adjoints. Each kernel is tested
equal to the definition it speeds up (the sequential loop of `reference/scan.py`); a reader learning
the math never needs to open this package.

    scan       the tuned linear scan h_t = a_t ⊙ h_{t−1} + b_t and its fused adjoint (SPEC §3)
    selective  the fused selective scan of S6 (SPEC §4.8)
    fast_exp   the vectorisable exponential the selective scan computes with
    adjoint    the fused adjoint of S4D's depthwise recurrence, used by `S4D.vjp` (SPEC §4.5, §11)
    launch     how every kernel is compiled and launched (cache, serial twin, threads)
"""
