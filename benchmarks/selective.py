"""Fused selective scan (S6) on CPU: forward and forward+backward of `lrnn_spec::selective_scan` against the streaming
bound (a copy of its inputs and outputs in the same run), a mamba-minimal-style torch loop, mamba.py's parallel scan
(the package mambapy==1.2.0, `mambapy.pscan`, if installed: `make` installs it) and nn.GRU of the same width; peak memory of each (tracemalloc does not see torch's allocator, so the peak is the process's max RSS growth).

    python -m benchmarks.selective [--quick] [--skip-loop-backward] [--discretization NAME] [--fused-only]

Default size (b, L, E, N) = (8, 2048, 256, 16), float32; --quick uses (2, 512, 64, 16). --skip-loop-backward leaves
out the torch loop's forward + backward (≈ 35 min at the default size). --discretization picks the fused op's method
(default exp_euler; the torch loop and GRU rows are exp_euler-style whatever it is); --fused-only leaves out the loop
and GRU rows. Prints, asserts nothing.
"""
import argparse
import importlib.util
import resource
import time

import torch

from reference.kernels.selective import METHOD_CODES
from torch_backend.selective import selective_scan


def best_of(fn, repeats):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def minimal_loop(v, dt, A, B, C, D):
    """mamba-minimal's selective_scan: Ā = exp(ΔA) and ΔBv formed as (b, L, E, N) arrays, then a loop over t."""
    A_bar = torch.exp(dt[..., None] * A)                                          # (b, L, E, N)
    Bv = dt[..., None] * B[:, :, None, :] * v[..., None]                          # (b, L, E, N)
    h = v.new_zeros(v.shape[0], v.shape[2], A.shape[1])                           # (b, E, N)
    ys = []
    for t in range(v.shape[1]):
        h = A_bar[:, t] * h + Bv[:, t]
        ys.append(torch.einsum("ben,bn->be", h, C[:, t]))
    return torch.stack(ys, dim=1) + D * v                                        # (b, L, E)


def mambapy_scan(v, dt, A, B, C, D):
    """mamba.py's selective_scan: the same (b, L, E, N) arrays, then its Blelloch parallel scan over L."""
    from mambapy.pscan import pscan
    A_bar = torch.exp(dt[..., None] * A)                                          # (b, L, E, N)
    Bv = dt[..., None] * B[:, :, None, :] * v[..., None]                          # (b, L, E, N)
    states = pscan(A_bar, Bv)                                                      # (b, L, E, N)
    return (states @ C[..., None])[..., 0] + D * v                                # (b, L, E)


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-loop-backward", action="store_true")
    parser.add_argument("--discretization", default="exp_euler", choices=sorted(METHOD_CODES))
    parser.add_argument("--fused-only", action="store_true")
    args = parser.parse_args()
    batch, L, E, N = (2, 512, 64, 16) if args.quick else (8, 2048, 256, 16)
    repeats = 3
    torch.manual_seed(0)
    v, dt = torch.randn(batch, L, E), torch.rand(batch, L, E) * 0.1 + 1e-3
    B, C = torch.randn(batch, L, N), torch.randn(batch, L, N)
    A, D = -torch.arange(1.0, N + 1).repeat(E, 1), torch.ones(E)
    leaves = [t.requires_grad_() for t in (v, dt, A, B, C, D)]
    method = args.discretization
    print(f"(b, L, E, N) = ({batch}, {L}, {E}, {N}) float32, fused op: {method}, "
          f"torch threads {torch.get_num_threads()}, best of {repeats} (copy and fused op: of {3 * repeats})")

    print(f"{'':44s} {'forward ms':>11s} {'fwd+bwd ms':>11s} {'peak RSS growth MB':>19s}", flush=True)

    def row(name, forward, forward_backward, repeats_backward=repeats, repeats_forward=repeats):
        rss = peak_rss_mb()
        with torch.no_grad():
            f = best_of(forward, repeats_forward)
        fb = best_of(forward_backward, repeats_backward) if forward_backward is not None else float("nan")
        print(f"{name:44s} {1e3 * f:11.2f} {1e3 * fb:11.2f} {peak_rss_mb() - rss:19.0f}", flush=True)
        return f, fb

    g = torch.randn(batch, L, E)
    inputs = [v, dt, B, C]
    # The bound streams the op's inputs and outputs once: copies into buffers made beforehand (a clone would
    # also time the page faults of fresh memory, which vary from run to run).
    forward_data = inputs + [v]                                                  # read v, Δ, B, C; write y
    backward_data = forward_data + [v, g] + inputs                               # + read inputs and gy, write grads
    buffers = [torch.empty_like(t) for t in backward_data]

    def stream(data):
        for buffer, t in zip(buffers, data):
            buffer.copy_(t)

    copy = row("streaming bound (copy of inputs + outputs)", lambda: stream(forward_data),
               lambda: stream(backward_data), 3 * repeats, 3 * repeats)        # cheap: more repeats against noise
    fused_fwd = lambda: selective_scan(v, dt, A, B, C, D, method=method)       # noqa: E731
    fused_fwd_bwd = lambda: torch.autograd.grad(selective_scan(v, dt, A, B, C, D, method=method)[0],  # noqa: E731
                                                leaves, g)
    fused_fwd_bwd()                                                              # compile the kernels
    fused = row("fused op (lrnn_spec::selective_scan)", fused_fwd, fused_fwd_bwd, 3 * repeats, 3 * repeats)
    if args.fused_only:
        print(f"fused / streaming bound: forward {fused[0] / copy[0]:.1f}x, fwd+bwd {fused[1] / copy[1]:.1f}x; "
              f"fused fwd+bwd / fwd {fused[1] / fused[0]:.2f}x; "
              f"fused: {fused[0] / (batch * L * E * N) * 1e9:.2f} ns per (t, e, n) update forward", flush=True)
        return
    loop = row("mamba-minimal-style torch loop", lambda: minimal_loop(v, dt, A, B, C, D),
               None if args.skip_loop_backward else
               lambda: torch.autograd.grad(minimal_loop(v, dt, A, B, C, D), leaves, g), 1)
    pscan = None
    if importlib.util.find_spec("mambapy") is None:
        print(f"{'mamba.py parallel scan (mambapy.pscan)':44s} not run: mambapy is not installed "
              "(pip install --no-deps mambapy==1.2.0)", flush=True)
    else:
        pscan = row("mamba.py parallel scan (mambapy.pscan)", lambda: mambapy_scan(v, dt, A, B, C, D),
            lambda: torch.autograd.grad(mambapy_scan(v, dt, A, B, C, D), leaves, g), 1)
    gru = torch.nn.GRU(E, E, batch_first=True)
    row(f"nn.GRU({E}, {E})", lambda: gru(v), lambda: torch.autograd.grad(gru(v)[0], [v] + list(gru.parameters()), g), 1)
    print(f"fused / streaming bound: forward {fused[0] / copy[0]:.1f}x, fwd+bwd {fused[1] / copy[1]:.1f}x; "
          f"fused fwd+bwd / fwd {fused[1] / fused[0]:.1f}x; "
          f"loop / fused: forward {loop[0] / fused[0]:.1f}x, fwd+bwd {loop[1] / fused[1]:.1f}x; "
          + (f"mamba.py pscan / fused: forward {pscan[0] / fused[0]:.1f}x, fwd+bwd {pscan[1] / fused[1]:.1f}x; "
             if pscan else "") +
          f"fused: {fused[0] / (batch * L * E * N) * 1e9:.1f} ns per (t, e, n) update forward; "
          f"one (b, L, E, N) float32 array = {batch * L * E * N * 4 / 2 ** 20:.0f} MB", flush=True)

if __name__ == "__main__":
    main()
