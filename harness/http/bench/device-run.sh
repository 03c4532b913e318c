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
PART=${PART:-all}   # all; http (no GPU tests); overhead (the client-overhead runs only)
[ "$PART" = all ] && echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
[ "$PART" = all ] && for t in gpu/tests/*; do
  name=$(basename "$t")
  FUSELAB_REQUIRE_GPU=1 timeout 300 "$t" --test-threads=1 > "$R/gpu_tests_$name.txt" 2>&1
  echo "$name rc=$?"; grep -E "test result" "$R/gpu_tests_$name.txt"
done
export FUSELAB=$PWD/gpu/fuselab
# rate:warm-up seconds:connections opened before the run[:server CPUs:client CPUs[:repeat]]
# (CPUs as taskset lists, empty for all: 1100:2:1200:::1 is repeat 1 unpinned)
i=0
for case in ${CASES:-100:0:0 500:0:0 1000:0:0 1000:2:0 1100:0:1200 1100:2:1200}; do
  IFS=: read -r rate warm pre scpus ccpus rep <<< "$case"
  i=$((i + 1))
  name="overhead-$rate-w$warm-p$pre${scpus:+-s$scpus-c$ccpus}${rep:+-$rep}"
  echo "== client overhead at $rate req/s, warm-up $warm s, $pre connections opened first${scpus:+, server on CPUs $scpus, client on $ccpus}"
  SERVER_CPUS=$scpus CLIENT_CPUS=$ccpus WARMUP=$warm PRECONNECT=$pre RATE=$rate N=$((rate * 10)) \
    PORT=$((18000 + i)) timeout 120 \
    bash harness/http/bench/client-overhead.sh "$R/$name" | grep -v "^http " | tail -40
  rm -rf "$R/$name/run/tokens.parquet" "$R/$name/trace.jsonl"
done
[ "$PART" != overhead ] && echo "== in-process vs HTTP, CUDA engine"
[ "$PART" != overhead ] && WARMUP=5 ENGINE=cuda POLICY=splitfuse PRESET=fastgen-1200 N=96 RATE=4 EXTRA="--model llama3-8b" \
  timeout 240 bash harness/http/bench/inprocess-vs-http.sh "$R/ivh-cuda" | tail -14
echo done
cp "$OUT/log.txt" "$R/log.txt"
tar czf "$OUT/res.tgz" -C "$OUT" res && rm -rf "$R"
