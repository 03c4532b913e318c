#!/bin/bash
# Speculative decoding on the real H200 (issue 17), one device command. Run from the
# repository root on the GPU machine with the binaries of build-for-device.sh in gpu/:
#   bash reports/results/spec/cuda-run.sh
# 1. the CUDA spec tests and the engine's GPU tests with FUSELAB_REQUIRE_GPU=1;
# 2. h200-64 with continuous batching, no speculation (the step-layout change must not
#    slow the plain engine: compare with reports/results/h200/e2e.md);
# 3. one sweep per α ∈ {0.5, 0.7, 0.9}: Llama-3-8B target, Llama-3.2-1B-shaped draft
#    (llama3.2-1b-h128, random weights; acceptance modelled by the seeded coin, the
#    draft and verify compute real), chunked prefill, fastgen-1200, k ∈ {0, 2, 4} at
#    1, 16 and 64 closed-loop clients; each point sends requests for a 4 s window.
# Everything lands in $OUT/spec-cuda.tgz (unpack into reports/results/spec/).
set -u
R=$OUT/cuda; mkdir -p "$R" gpu/runs
exec > >(tee "$R/log.txt") 2>&1
BIN=gpu/fuselab
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
for t in gpu/tests/spec-test gpu/tests/gpu-test; do
  name=$(basename "$t")
  FUSELAB_REQUIRE_GPU=1 timeout 200 "$t" --test-threads=1 --nocapture > "$R/gpu_tests_$name.txt" 2>&1
  echo "$name rc=$?"; grep -E "^test |test result|bf16 tie|tokens equal|block efficiency|panicked" "$R/gpu_tests_$name.txt" | head -40
done
echo "== h200-64 continuous, no speculation"
$BIN workload --preset h200-64 --export gpu/w.jsonl | tail -1
timeout 120 $BIN bench --engine cuda --model llama3-8b --trace gpu/w.jsonl --policy continuous \
  --out gpu/runs/h200-64-continuous | tail -3
cp gpu/runs/h200-64-continuous/summary.json "$R/h200-64-continuous.json" 2>/dev/null
for alpha in 0.5 0.7 0.9; do
  echo "== sweep alpha=$alpha"
  timeout 150 $BIN sweep --engine cuda --model llama3-8b --draft llama3.2-1b-h128 \
    --policies chunked --spec k=0,2,4 --spec-alpha "$alpha" \
    --clients 1,16,64 --preset fastgen-1200 --n 512 --seed 42 --window 4 \
    --out "gpu/runs/alpha-$alpha" > "$R/alpha-$alpha.txt" 2>&1
  echo "rc=$?"; tail -25 "$R/alpha-$alpha.txt"
  cp "gpu/runs/alpha-$alpha/sweep.json" "$R/alpha-$alpha.sweep.json" 2>/dev/null
done
echo done
tar czf "$OUT/spec-cuda.tgz" -C "$OUT" cuda && rm -rf "$R"
