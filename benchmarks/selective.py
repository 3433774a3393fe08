"""Fused selective scan (S6) on CPU: forward and forward+backward of `lrnn_spec::selective_scan` against the streaming
bound (a copy of its inputs and outputs in the same run), a mamba-minimal-style torch loop, and nn.GRU of the same
width; peak memory of each (tracemalloc does not see torch's allocator, so the peak is the process's max RSS growth).

    python -m benchmarks.selective [--quick]

Default size (b, L, E, N) = (8, 2048, 256, 16), float32; --quick uses (2, 512, 64, 16). Prints, asserts nothing.
"""
import argparse
import resource
import time

import torch

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


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    batch, L, E, N = (2, 512, 64, 16) if args.quick else (8, 2048, 256, 16)
    repeats = 3
    torch.manual_seed(0)
    v, dt = torch.randn(batch, L, E), torch.rand(batch, L, E) * 0.1 + 1e-3
    B, C = torch.randn(batch, L, N), torch.randn(batch, L, N)
    A, D = -torch.arange(1.0, N + 1).repeat(E, 1), torch.ones(E)
    leaves = [t.requires_grad_() for t in (v, dt, A, B, C, D)]
    print(f"(b, L, E, N) = ({batch}, {L}, {E}, {N}) float32, torch threads {torch.get_num_threads()}, best of {repeats}")

    with torch.no_grad():
        selective_scan(v, dt, A, B, C, D)                                          # compile the kernels
        rss = peak_rss_mb()
        fwd = best_of(lambda: selective_scan(v, dt, A, B, C, D), repeats)
        fwd_rss = peak_rss_mb() - rss
        inputs = [v, dt, B, C]
        copy = best_of(lambda: [t.clone() for t in inputs + [v]], repeats)          # read inputs, write y
    y, _ = selective_scan(v, dt, A, B, C, D)
    g = torch.randn_like(y)

    def fused_fwd_bwd():
        out, _ = selective_scan(v, dt, A, B, C, D)
        torch.autograd.grad(out, leaves, g)

    fused_fwd_bwd()
    rss = peak_rss_mb()
    fwd_bwd = best_of(fused_fwd_bwd, repeats)
    fwd_bwd_rss = peak_rss_mb() - rss
    with torch.no_grad():
        copy_bwd = best_of(lambda: [t.clone() for t in inputs + [v] + [v, g] + inputs], repeats)   # + read, write grads

    def loop_fwd_bwd():
        torch.autograd.grad(minimal_loop(v, dt, A, B, C, D), leaves, g)

    rss = peak_rss_mb()
    with torch.no_grad():
        loop = best_of(lambda: minimal_loop(v, dt, A, B, C, D), repeats)
    loop_bwd = best_of(loop_fwd_bwd, max(1, repeats // 2))
    loop_rss = peak_rss_mb() - rss
    gru = torch.nn.GRU(E, E, batch_first=True)
    with torch.no_grad():
        gru_fwd = best_of(lambda: gru(v), repeats)
    gru_bwd = best_of(lambda: torch.autograd.grad(gru(v)[0], [v] + list(gru.parameters()), g), max(1, repeats // 2))

    rows = [("fused op (lrnn_spec::selective_scan)", fwd, fwd_bwd),
            ("streaming bound (copy of inputs + outputs)", copy, copy_bwd),
            ("mamba-minimal-style torch loop", loop, loop_bwd),
            (f"nn.GRU({E}, {E})", gru_fwd, gru_bwd)]
    print(f"{'':44s} {'forward ms':>11s} {'fwd+bwd ms':>11s}")
    for name, f, fb in rows:
        print(f"{name:44s} {1e3 * f:11.2f} {1e3 * fb:11.2f}")
    print(f"fused / streaming bound: forward {fwd / copy:.1f}x, fwd+bwd {fwd_bwd / copy_bwd:.1f}x; "
          f"loop / fused: forward {loop / fwd:.1f}x, fwd+bwd {loop_bwd / fwd_bwd:.1f}x")
    print(f"peak RSS growth (MB): fused forward {fwd_rss:.0f}, fused fwd+bwd {fwd_bwd_rss:.0f}, loop {loop_rss:.0f}; "
          f"one (b, L, E, N) float32 array = {batch * L * E * N * 4 / 2 ** 20:.0f} MB")


if __name__ == "__main__":
    main()
