"""Matrix-state layers on CPU (SPEC §4.11): the torch chunkwise form (§4.11.6) against the torch sequential loop,
nn.MultiheadAttention (causal, the same width h·d_v) and the FLOP/s of a batched matmul of the chunk's shape, all
measured in the same run; then forward and forward+backward against L to show linear growth.

    python -m benchmarks.matrix_state [--quick] [--threads N] [--cpu-time]

Default size (b, L, h, d_k, d_v) = (8, 4096, 4, 64, 64), float32, chunk C = 64; --quick uses (2, 1024, 2, 32, 32)
and L = 256 … 4096 for the scaling. Op level: `delta_recurrence` (gated delta rule, unit keys, β ∈ [0, 2]) and
`gla_recurrence` (vector gate). Backward starts from a dense random cotangent. The sequential loop's forward+backward
is timed at L/8 and scaled ×8 (its autograd graph is linear in L), marked "est.". Prints a table; asserts nothing.
--cpu-time times with the process's CPU time instead of the wall clock: on a shared machine, with --threads 1, it
stays near the quiet machine's single-thread wall time while other jobs compete for the cores.
"""
import argparse
import math
import time

import torch

from torch_backend.layers.matrix_state import delta_recurrence, gla_recurrence


CLOCK = time.perf_counter


def best_of(fn, repeats):
    """The fastest of `repeats` calls, seconds of CLOCK (one warm-up call first)."""
    fn()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times)


def problem(b, L, h, d_k, d_v, seed=0):
    """q, unit k, v, β ∈ [0, 2], scalar log α per head, vector log α (GLA): float32, requiring grad."""
    g = torch.Generator().manual_seed(seed)
    k = torch.randn(b, L, h, d_k, generator=g)
    tensors = {"q": torch.randn(b, L, h, d_k, generator=g), "k": k / k.norm(dim=-1, keepdim=True),
               "v": torch.randn(b, L, h, d_v, generator=g), "beta": 2 * torch.rand(b, L, h, generator=g),
               "g": -0.1 * torch.rand(b, L, h, generator=g), "gk": -0.1 * torch.rand(b, L, h, d_k, generator=g)}
    return {name: t.requires_grad_() for name, t in tensors.items()}


def delta(p, method, chunk):
    return delta_recurrence(p["q"], p["k"], p["v"], p["beta"], p["g"], scale=p["q"].shape[-1] ** -0.5,
                            method=method, chunk=chunk)[0]


def gla(p, method, chunk):
    return gla_recurrence(p["q"], p["k"], p["v"], p["gk"], scale=p["q"].shape[-1] ** -0.5, method=method,
                          chunk=chunk)[0]


def forward_backward(fn):
    """Forward, then backward from a fixed dense random cotangent. Not `.sum().backward()`: its all-ones gradient
    has stride 0, and torch's CPU bmm on stride-0 operands leaves BLAS (measured 6–13× slower for 64×64 blocks)."""
    cotangent = torch.randn(fn().shape, generator=torch.Generator().manual_seed(1))

    def run():
        fn().backward(cotangent)
    return run


def causal_attention(b, L, width, heads):
    """A call of causal nn.MultiheadAttention(width, heads) on a random (b, L, width) input requiring grad."""
    mha = torch.nn.MultiheadAttention(width, heads, batch_first=True)
    x = torch.randn(b, L, width, requires_grad=True)
    mask = torch.nn.Transformer.generate_square_subsequent_mask(L)
    return lambda: mha(x, x, x, attn_mask=mask, is_causal=True, need_weights=False)[0]


def chunkwise_flops(b, L, h, d_k, d_v, C):
    """Matmul FLOPs of the delta chunkwise form: K Kᵀ, Q Kᵀ (2C²d_k each), the triangular solve (C²(d_k + d_v)),
    W S, Q S, Kᵀ U (2C d_k d_v each), (QKᵀ ⊙ Γ) U (2C² d_v), per chunk and head."""
    per_chunk = 4 * C * C * d_k + C * C * (d_k + d_v) + 6 * C * d_k * d_v + 2 * C * C * d_v
    return b * h * math.ceil(L / C) * per_chunk


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-time", action="store_true", help="time with process CPU time, not the wall clock")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    global CLOCK
    CLOCK = time.process_time if args.cpu_time else time.perf_counter
    b, L, h, d_k, d_v = (2, 1024, 2, 32, 32) if args.quick else (8, 4096, 4, 64, 64)
    C, repeats = 64, args.repeats
    print(f"# matrix-state layers, CPU, float32, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{'CPU' if args.cpu_time else 'wall'} time")
    print(f"# (b, L, h, d_k, d_v) = ({b}, {L}, {h}, {d_k}, {d_v}), chunk C = {C}, best of {repeats}\n")
    p = problem(b, L, h, d_k, d_v)
    rows = []

    def row(what, seconds, note=""):
        rows.append((what, seconds * 1e3, note))
        print(f"{what:<52} {seconds * 1e3:>10.1f} ms  {note}")

    # ---- the matmul of the chunk's shape: FLOP/s achievable in this run
    n_blocks = b * h * math.ceil(L / C)
    A_blk, B_blk = torch.randn(n_blocks, C, d_k), torch.randn(n_blocks, d_k, C)
    t_mm = best_of(lambda: torch.bmm(A_blk, B_blk), repeats)
    mm_flops = 2 * n_blocks * C * C * d_k / t_mm
    row(f"bmm ({n_blocks}, {C}, {d_k}) @ ({d_k}, {C})", t_mm, f"{mm_flops / 1e9:.1f} GFLOP/s")
    flops = chunkwise_flops(b, L, h, d_k, d_v, C)
    with torch.no_grad():
        t_fwd = best_of(lambda: delta(p, "chunkwise", C), repeats)
    row("delta chunkwise forward (no grad)", t_fwd,
        f"{flops / t_fwd / 1e9:.1f} GFLOP/s = {flops / t_fwd / mm_flops:.0%} of bmm ({flops / 1e9:.2f} GFLOP)")
    t_fb = best_of(forward_backward(lambda: delta(p, "chunkwise", C)), repeats)
    row("delta chunkwise forward+backward", t_fb, f"{t_fb / t_fwd:.1f}× forward")
    with torch.no_grad():
        t_gla = best_of(lambda: gla(p, "chunkwise", C), repeats)
    row("GLA chunkwise forward (no grad)", t_gla)
    row("GLA chunkwise forward+backward", best_of(forward_backward(lambda: gla(p, "chunkwise", C)), repeats))
    with torch.no_grad():
        t_seq = best_of(lambda: delta(p, "sequential", C), 1)
    row("delta sequential loop forward (no grad)", t_seq, f"{t_seq / t_fwd:.1f}× chunkwise; at most "
        f"{t_seq / (flops / mm_flops):.1f}× if chunkwise ran its matmuls at the bmm rate and nothing else")
    short = problem(b, L // 8, h, d_k, d_v)
    t_seq_fb = 8 * best_of(forward_backward(lambda: delta(short, "sequential", C)), 1)
    row("delta sequential loop forward+backward", t_seq_fb, f"est. (×8 of L/8); {t_seq_fb / t_fb:.1f}× chunkwise")

    # ---- softmax attention of the same width, causal
    width = h * d_v
    attention = causal_attention(b, L, width, h)
    with torch.no_grad():
        t_att = best_of(attention, repeats)
    row(f"nn.MultiheadAttention causal forward (E = {width})", t_att, f"{t_att / t_fwd:.1f}× delta chunkwise")
    t_att_fb = best_of(forward_backward(attention), repeats)
    row("nn.MultiheadAttention causal forward+backward", t_att_fb, f"{t_att_fb / t_fb:.1f}× delta chunkwise")

    # ---- growth with L, and causal attention up to 2L (quadratic: slow beyond)
    lengths = [256, 512, 1024, 2048, 4096] if args.quick else [1024, 2048, 4096, 8192, 16384]
    print(f"\n# delta chunkwise vs L (b = {b}, h = {h}, d_k = d_v = {d_k}): ms, ms per 1k steps, and causal attention "
          f"(E = {width}) in ms and as a multiple of delta chunkwise")
    print(f"{'L':>6} {'forward':>10} {'fwd+bwd':>10} {'fwd/1k':>8} {'f+b/1k':>8} {'att fwd':>10} {'att f+b':>10}"
          f" {'att/Δ':>11}")
    previous = None
    for n in lengths:
        q = problem(b, n, h, d_k, d_v, seed=n)
        with torch.no_grad():
            t_f = best_of(lambda: delta(q, "chunkwise", C), repeats)
        t_b = best_of(forward_backward(lambda: delta(q, "chunkwise", C)), repeats)
        line = f"{n:>6} {t_f * 1e3:>10.1f} {t_b * 1e3:>10.1f} {t_f * 1e6 / n:>8.2f} {t_b * 1e6 / n:>8.2f}"
        if n <= 2 * L:
            attention = causal_attention(b, n, width, h)
            with torch.no_grad():
                a_f = best_of(attention, repeats)
            a_b = best_of(forward_backward(attention), repeats)
            line += f" {a_f * 1e3:>10.1f} {a_b * 1e3:>10.1f} {a_f / t_f:>5.2f}/{a_b / t_b:.2f}"
        growth = "" if previous is None else f"  ×{t_f / previous[0]:.2f} / ×{t_b / previous[1]:.2f} per doubling"
        print(line + growth)
        previous = (t_f, t_b)
    return rows


if __name__ == "__main__":
    main()
