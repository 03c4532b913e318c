"""PyTorch baselines for `fuselab kernels --baseline FILE`, measured in the same device command.

Timing (the same method as kernels/src/cuda/bench.rs): every row is N launches (default 32)
captured in one CUDA graph; the graph is replayed between two CUDA events and the time divided
by N, R times (default 10) after warm-up; the median is written (p10 and p90 are printed). Where
capture fails, N eager back-to-back launches between two events are timed instead (printed as
`eager`), which for small kernels includes Python's dispatch time.

Writes `key value` lines (rates at the median time):
  copy_gbs                 device copy, bytes read + written, GB/s
  read_gbs                 sum of a 4 GiB bf16 tensor (read-only), GB/s
  gemm8192_tflops          bf16 matmul 8192^3, TFLOP/s
  linear_{name}_t{T}       F.linear, name in qkv (fused), o, gate_up, down, TFLOP/s
  linear_qkv3_t{T}         q, k and v as three F.linear calls (FLOPs of all three), TFLOP/s
  linear_acc_{o,down}_t{T} y.addmm_(x, w.t()): the projection added into the residual, TFLOP/s
  sdpa_causal_{S}          SDPA causal GQA 32/8, d=128, batch 1, S in 2048, 8192, 16384, TFLOP/s
                           (causal FLOPs 2*2*S^2*H*D/2)
  sdpa_ragged_3x2560       SDPA causal, batch 3 of 2560 (the ragged 3 x 2560 row), TFLOP/s
  sdpa_decode_b64_c4096    SDPA decode, batch 64, context 4096, GB/s of K+V read
GEMM weights rotate over copies totalling >= 3x L2, as in bench.rs.
Usage: python3 torch_baseline.py OUT_FILE [--quick] [--launches N] [--repeats R]
"""
import statistics
import sys

import torch
import torch.nn.functional as F

NOTES = []


def percentile(sorted_vals, p):
    """Linear interpolation between closest ranks, as bench.rs does."""
    if not sorted_vals:
        return float("nan")
    rank = p / 100.0 * (len(sorted_vals) - 1)
    lo = int(rank)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (rank - lo)


def bench(name, fn, n, reps, warmup=3):
    """Per-launch ms (median, p10, p90) of `fn` over `reps` samples of `n` launches."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    torch.cuda.synchronize()
    graph = None
    try:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for _ in range(n):
                fn()
        graph = g
    except Exception as e:  # capture unsupported for this op: time eager launches
        NOTES.append(f"{name}: graph capture failed ({type(e).__name__}: {e}); eager launches timed")
        torch.cuda.synchronize()
    run = graph.replay if graph is not None else (lambda: [fn() for _ in range(n)])
    run()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        run()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / n)
    times.sort()
    med = statistics.median(times)
    print(f"  {name}: median {med * 1e3:.1f} us (p10 {percentile(times, 10) * 1e3:.1f}, "
          f"p90 {percentile(times, 90) * 1e3:.1f}){'' if graph is not None else ' eager'}",
          file=sys.stderr)
    del graph
    return med  # ms per launch


def arg(flag, default):
    if flag in sys.argv:
        i = sys.argv.index(flag)
        return int(sys.argv[i + 1])
    return default


def main():
    out_path = sys.argv[1]
    quick = "--quick" in sys.argv
    n = max(32, arg("--launches", 32))
    reps = arg("--repeats", 5 if quick else 10)
    dev = "cuda"
    torch.manual_seed(0)
    res = {}

    # Ceilings: read-only sum (4 GiB; 1 GiB quick), copy (1 GiB; 0.5 GiB quick), matmul 8192^3.
    elems = (1 << 29) if quick else (1 << 31)
    src = torch.rand(elems, dtype=torch.bfloat16, device=dev)
    ms = bench("read (sum)", lambda: src.sum(), n, reps)
    res["read_gbs"] = elems * 2 / (ms * 1e-3) / 1e9
    del src
    elems = (1 << 28) if quick else (1 << 29)
    src = torch.rand(elems, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    ms = bench("copy", lambda: dst.copy_(src), n, reps)
    res["copy_gbs"] = 2 * elems * 2 / (ms * 1e-3) / 1e9
    del src, dst
    g = 8192
    a = torch.randn(g, g, dtype=torch.bfloat16, device=dev)
    b = torch.randn(g, g, dtype=torch.bfloat16, device=dev)
    ms = bench("matmul 8192^3", lambda: a @ b, n, reps)
    res["gemm8192_tflops"] = 2 * g**3 / (ms * 1e-3) / 1e12
    del a, b

    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    hidden, ffn, hq, hkv, d = 4096, 14336, 32, 8, 128
    qw, kw = hq * d, hkv * d
    linears = [("qkv", hidden, qw + 2 * kw), ("o", qw, hidden),
               ("gate_up", hidden, 2 * ffn), ("down", ffn, hidden)]
    tokens = [64, 2048] if quick else [64, 512, 2048, 8192]

    def weights(nn, k):
        copies = max(1, min(8, -(-3 * l2 // (nn * k * 2))))
        return [(torch.rand(nn, k, dtype=torch.bfloat16, device=dev) * 2 - 1) * 0.02
                for _ in range(copies)]

    for name, k, nn in linears:
        ws = weights(nn, k)
        for t in tokens:
            x = torch.rand(t, k, dtype=torch.bfloat16, device=dev) * 2 - 1
            it = [0]

            def run():
                it[0] += 1
                return F.linear(x, ws[it[0] % len(ws)])

            ms = bench(f"linear {name} T={t}", run, n, reps)
            res[f"linear_{name}_t{t}"] = 2 * t * k * nn / (ms * 1e-3) / 1e12
            if name == "qkv":
                def run3():
                    it[0] += 1
                    w = ws[it[0] % len(ws)]
                    return (F.linear(x, w[:qw]), F.linear(x, w[qw:qw + kw]), F.linear(x, w[qw + kw:]))

                ms = bench(f"linear qkv as 3 T={t}", run3, n, reps)
                res[f"linear_qkv3_t{t}"] = 2 * t * k * nn / (ms * 1e-3) / 1e12
            if name in ("o", "down"):
                y = torch.rand(t, nn, dtype=torch.bfloat16, device=dev) * 2 - 1

                def run_acc():
                    it[0] += 1
                    return y.addmm_(x, ws[it[0] % len(ws)].t())

                ms = bench(f"addmm_ {name} T={t}", run_acc, n, reps)
                res[f"linear_acc_{name}_t{t}"] = 2 * t * k * nn / (ms * 1e-3) / 1e12
                del y
            del x
        del ws

    def sdpa_rate(batch, s, key, label):
        q = torch.randn(batch, hq, s, d, dtype=torch.bfloat16, device=dev)
        kk = torch.randn(batch, hkv, s, d, dtype=torch.bfloat16, device=dev)
        vv = torch.randn(batch, hkv, s, d, dtype=torch.bfloat16, device=dev)
        ms = bench(label, lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=True),
                   n, reps)
        res[key] = batch * 2 * 2 * s * s * hq * d / 2 / (ms * 1e-3) / 1e12

    for s in ([2048] if quick else [2048, 8192, 16384]):
        sdpa_rate(1, s, f"sdpa_causal_{s}", f"sdpa causal S={s}")
    sdpa_rate(3, 2560, "sdpa_ragged_3x2560", "sdpa causal 3x2560")

    bsz, c = 64, 4096
    q = torch.randn(bsz, hq, 1, d, dtype=torch.bfloat16, device=dev)
    kk = torch.randn(bsz, hkv, c, d, dtype=torch.bfloat16, device=dev)
    vv = torch.randn(bsz, hkv, c, d, dtype=torch.bfloat16, device=dev)
    ms = bench("sdpa decode B=64 ctx=4096", lambda: F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True),
               n, reps)
    res["sdpa_decode_b64_c4096"] = 2 * bsz * c * hkv * d * 2 / (ms * 1e-3) / 1e9

    with open(out_path, "w") as f:
        f.write(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}\n")
        f.write(f"# method: CUDA-graph replay of {n} launches / {n}, median of {reps} samples\n")
        for note in NOTES:
            f.write(f"# note: {note}\n")
        for k_, v in res.items():
            f.write(f"{k_} {v:.3f}\n")
    for k_, v in res.items():
        print(f"torch {k_} {v:.1f}")
    for note in NOTES:
        print(f"note: {note}")


if __name__ == "__main__":
    main()
