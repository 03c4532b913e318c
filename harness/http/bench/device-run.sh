#!/bin/bash
# The HTTP benchmarks on the GPU machine (16 CPU cores, one H200), in one
# device command: the GPU tests with FUSELAB_REQUIRE_GPU=1, the client overhead
# at 100, 500 and 1000 concurrent streams against `fuselab serve --engine null
# --delay 50ms,10ms`, and in-process vs over HTTP with the CUDA engine. Binaries
# in gpu/ (reports/results/h200/build-for-device.sh); results in $OUT/res.tgz.
set -u
R=$OUT/res; mkdir -p "$R"
exec > >(tee "$OUT/log.txt") 2>&1
nproc; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
for t in gpu/tests/*; do
  name=$(basename "$t")
  FUSELAB_REQUIRE_GPU=1 timeout 300 "$t" --test-threads=1 > "$R/gpu_tests_$name.txt" 2>&1
  echo "$name rc=$?"; grep -E "test result" "$R/gpu_tests_$name.txt"
done
export FUSELAB=$PWD/gpu/fuselab
for rate in 100 500 1000; do
  echo "== client overhead at $rate req/s"
  RATE=$rate N=$((rate * 8)) PORT=$((18000 + rate)) timeout 120 bash harness/http/bench/client-overhead.sh "$R/overhead-$rate" \
    | tail -8
  rm -rf "$R/overhead-$rate/run/tokens.parquet" "$R/overhead-$rate/trace.jsonl"
done
echo "== in-process vs HTTP, CUDA engine"
ENGINE=cuda POLICY=splitfuse PRESET=fastgen-1200 N=96 RATE=4 EXTRA="--model llama3-8b" \
  timeout 240 bash harness/http/bench/inprocess-vs-http.sh "$R/ivh-cuda" | tail -14
echo done
cp "$OUT/log.txt" "$R/log.txt"
tar czf "$OUT/res.tgz" -C "$OUT" res && rm -rf "$R"
