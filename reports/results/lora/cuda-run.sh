#!/bin/bash
# Multi-LoRA and MeteoRA on the real H200, in one device command of at most ~5 minutes.
# Run ON the GPU machine from the repository root, with the binaries laid out by
# reports/results/h200/build-for-device.sh: gpu/fuselab and gpu/tests/lora-test (the
# LoRA GPU tests of fuselab-cuda) and gpu/tests/fuselab_kernels-lib. Everything lands in
# $OUT/ (log-lora.txt, gpu_tests_lora.txt, sweep/, meteora/, lora-cuda.txt).
#
#   1. the LoRA GPU tests with FUSELAB_REQUIRE_GPU=1 (kernels vs references, batched
#      multi-LoRA vs merged / CPU, one-hot MeteoRA exactness, slot churn);
#   2. throughput vs adapters {1, 8, 64, 512} x Zipf s {0, 1.1}: llama3-8b bf16, rank 16,
#      16 slots (max_loras), chunked prefill, 200 requests of the short cpu-small preset
#      (prompt N(512, 154), 32 output tokens) at one Poisson rate near saturation;
#   3. MeteoRA's cost per step against the plain model and multi-LoRA: 64 closed-loop
#      clients, 8 adapters of rank 16, the per-operator profile (`lora` is its own class;
#      graph-replayed decode steps are timed whole) and busy_s / steps per run.
set -u
OUT=${OUT:?set OUT to the folder the results go to}
mkdir -p "$OUT" gpu/runs
exec > >(tee "$OUT/log-lora.txt") 2>&1
BIN=gpu/fuselab
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv

echo "== LoRA GPU tests (FUSELAB_REQUIRE_GPU=1)"
FUSELAB_REQUIRE_GPU=1 timeout 120 gpu/tests/lora-test --test-threads=1 --nocapture \
  > "$OUT/gpu_tests_lora.txt" 2>&1
echo "lora-test rc=$?"; grep -E "^test |test result|panicked" "$OUT/gpu_tests_lora.txt"
if [ -x gpu/tests/fuselab_kernels-lib ]; then
  FUSELAB_REQUIRE_GPU=1 timeout 30 gpu/tests/fuselab_kernels-lib lora --test-threads=1 \
    > "$OUT/gpu_tests_kernels_lora.txt" 2>&1
  echo "fuselab_kernels-lib lora rc=$?"; grep -E "test result" "$OUT/gpu_tests_kernels_lora.txt"
fi

echo "== sweep: adapters x Zipf, 16 slots, rank 16 (t=$(( $(date +%s) - T0 )) s)"
timeout 200 $BIN sweep --engine cuda --model llama3-8b \
  --policies chunked --knob max_loras=16 \
  --preset cpu-small --n 200 --seed 42 --lora-rank 16 \
  --rates 64 \
  --sweep-adapters 1,8,64,512 --sweep-zipf 0,1.1 \
  --out "$OUT/sweep" --force | tee "$OUT/sweep.txt"
echo "sweep rc=${PIPESTATUS[0]}"

echo "== MeteoRA cost per step (t=$(( $(date +%s) - T0 )) s)"
mkdir -p "$OUT/meteora"
bench() {
  name=$1; shift
  timeout 60 $BIN bench --engine cuda --model llama3-8b --policy chunked \
    --preset cpu-small --n 256 --seed 42 --clients 64 \
    --out gpu/runs/$name --force --cuda-profile "$OUT/meteora/$name-profile.json" "$@" | tail -3
  echo "== $name rc=${PIPESTATUS[0]}"
  cp gpu/runs/$name/summary.json "$OUT/meteora/$name.json" 2>/dev/null
}
bench plain
bench slots-8 --adapters 8 --lora-rank 16 --knob max_loras=16
bench meteora-1 --adapters 8 --lora-rank 16 --meteora 1
bench meteora-2 --adapters 8 --lora-rank 16 --meteora 2

python3 - "$OUT" <<'PY' | tee "$OUT/lora-cuda.txt"
import json, os, sys
out = sys.argv[1]
print("MeteoRA cost per step, llama3-8b on the H200, 64 closed-loop clients, cpu-small, rank 16")
print("ms/step = busy_s / steps; decode and mixed = the profile's wall ms per step of that phase;")
print("lora % = the profile's `lora` class over the eager steps' GPU time (graph steps are timed whole)")
print(f"{'run':<10} {'steps':>6} {'ms/step':>8} {'vs plain':>8} {'decode ms':>9} {'mixed ms':>9} {'lora %':>7} {'TPOT p50':>9} {'out tok/s':>9}")
base = None
for name in ["plain", "slots-8", "meteora-1", "meteora-2"]:
    try:
        m = json.load(open(os.path.join(out, "meteora", name + ".json")))["metrics"]
    except (OSError, ValueError, KeyError) as e:
        print(f"{name:<10} missing ({e})")
        continue
    e = m["engine"]
    ms = 1e3 * e["busy_s"] / max(e["steps"], 1)
    base = base or ms
    per, lora = {}, "-"
    try:
        ph = json.load(open(os.path.join(out, "meteora", name + "-profile.json")))["phases"]
        for k in ("decode", "mixed"):
            per[k] = ph[k]["wall_ms"] / ph[k]["steps"] if ph[k]["steps"] else float("nan")
        gpu = sum(v["gpu_ms"] for v in ph.values())
        lo = sum(v["ops_ms"].get("lora", 0.0) for v in ph.values())
        lora = f"{100 * lo / gpu:.1f}" if gpu else "-"
    except (OSError, ValueError, KeyError, TypeError):
        pass
    print(f"{name:<10} {e['steps']:>6} {ms:>8.2f} {ms / base:>8.3f} {per.get('decode', float('nan')):>9.2f} "
          f"{per.get('mixed', float('nan')):>9.2f} {lora:>7} {1e3 * m['tpot_s']['p50']:>9.2f} {m['output_token_throughput']:>9.0f}")
PY
echo "done in $(( $(date +%s) - T0 )) s"
