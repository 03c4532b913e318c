"""PyTorch baselines for `fuselab kernels --baseline FILE`, measured in the same device command.

Writes `key value` lines: copy_gbs, gemm8192_tflops, sdpa_causal_{S} (TFLOP/s, causal FLOPs
2*2*S^2*H*D/2), sdpa_decode_b64_c4096 (GB/s of K+V read), linear_{name}_t{T} (TFLOP/s).
Usage: python3 torch_baseline.py OUT_FILE [--quick]
"""
import statistics
import sys

import torch
import torch.nn.functional as F


def bench(fn, warmup=5, reps=20):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        s = torch.cuda.Event(enable_timing=True)
        e = torch.cuda.Event(enable_timing=True)
        s.record()
        fn()
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e))
    return statistics.median(times)  # ms


def main():
    out_path = sys.argv[1]
    quick = "--quick" in sys.argv
    dev = "cuda"
    torch.manual_seed(0)
    res = {}
    n = (1 << 28) if quick else (1 << 29)
    src = torch.rand(n, dtype=torch.bfloat16, device=dev)
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    res["copy_gbs"] = 2 * n * 2 / (ms * 1e-3) / 1e9
    del src, dst
    g = 8192
    a = torch.randn(g, g, dtype=torch.bfloat16, device=dev)
    b = torch.randn(g, g, dtype=torch.bfloat16, device=dev)
    ms = bench(lambda: a @ b)
    res["gemm8192_tflops"] = 2 * g**3 / (ms * 1e-3) / 1e12
    del a, b
    l2 = torch.cuda.get_device_properties(0).L2_cache_size
    hidden, ffn, hq, hkv, d = 4096, 14336, 32, 8, 128
    linears = [("qkv", hidden, (hq + 2 * hkv) * d), ("o", hq * d, hidden),
               ("gate_up", hidden, 2 * ffn), ("down", ffn, hidden)]
    tokens = [64, 2048] if quick else [64, 512, 2048, 8192]
    for name, k, nn in linears:
        copies = max(1, min(8, -(-3 * l2 // (nn * k * 2))))
        ws = [torch.randn(nn, k, dtype=torch.bfloat16, device=dev) * 0.02 for _ in range(copies)]
        for t in tokens:
            x = torch.randn(t, k, dtype=torch.bfloat16, device=dev)
            it = [0]

            def run():
                it[0] += 1
                F.linear(x, ws[it[0] % copies])

            ms = bench(run, reps=max(20, copies))
            res[f"linear_{name}_t{t}"] = 2 * t * k * nn / (ms * 1e-3) / 1e12
        del ws
    for s in ([2048] if quick else [2048, 8192, 16384]):
        q = torch.randn(1, hq, s, d, dtype=torch.bfloat16, device=dev)
        kk = torch.randn(1, hkv, s, d, dtype=torch.bfloat16, device=dev)
        vv = torch.randn(1, hkv, s, d, dtype=torch.bfloat16, device=dev)
        ms = bench(lambda: F.scaled_dot_product_attention(q, kk, vv, is_causal=True, enable_gqa=True))
        res[f"sdpa_causal_{s}"] = 2 * 2 * s * s * hq * d / 2 / (ms * 1e-3) / 1e12
    b, c = 64, 4096
    q = torch.randn(b, hq, 1, d, dtype=torch.bfloat16, device=dev)
    kk = torch.randn(b, hkv, c, d, dtype=torch.bfloat16, device=dev)
    vv = torch.randn(b, hkv, c, d, dtype=torch.bfloat16, device=dev)
    ms = bench(lambda: F.scaled_dot_product_attention(q, kk, vv, enable_gqa=True))
    res["sdpa_decode_b64_c4096"] = 2 * b * c * hkv * d * 2 / (ms * 1e-3) / 1e9
    with open(out_path, "w") as f:
        f.write(f"# torch {torch.__version__} on {torch.cuda.get_device_name(0)}\n")
        for k_, v in res.items():
            f.write(f"{k_} {v:.3f}\n")
    for k_, v in res.items():
        print(f"torch {k_} {v:.1f}")


if __name__ == "__main__":
    main()
