#!/bin/bash
# Calibrates the simulator on our own CUDA engine (issue 14): every raw measurement the fit and
# its validation need, in ONE device command (at most 8 minutes on an H200):
#
#   bash engines/sim/calibration/cuda-run.sh
#
# Run from the repository root on the GPU machine, with the binary at gpu/fuselab
# (reports/results/h200/build-for-device.sh builds it on the CPU machine). Everything comes back
# as ONE tarball, $OUT/calib-h200.tgz; unpack it into engines/sim/calibration/h200/:
#
#   tar xzf calib-h200.tgz -C engines/sim/calibration/h200/    # -> engines/sim/calibration/h200/raw/
#   fuselab calibrate --fit engines/sim/calibration/h200/raw --out engines/sim/calibration/h200-llama3-8b.json
#
# What it runs, in order (after one GPU test of the backend reuse calibrate relies on, ~5 s):
# 1. `fuselab calibrate --engine cuda --model llama3-8b --out raw/`: the operator sweep (GEMMs
#    over 1 ... 16k tokens at the model's shapes, prefill attention over (chunk, prior context) up
#    to 32k on the engine's tile, decode attention over (batch, context) on both of the engine's
#    paths, element-wise kernels; N = 32 back-to-back launches per sample, median of 5), then on
#    ONE CudaBackend: a synthetic grid of ~75 mixed batches (3 timed repeats each), h200-64 served
#    by all five policies (every step recorded), and one 8191-token prompt prefilled in chunks at
#    budgets 512, 2048 and 8192 (3 prompts each). Writes raw/calibration-raw.json and
#    raw/capacity.env (requests/s of splitfuse and chunked on h200-64, and 50 % / 85 % of it).
# 2. Four Poisson serving runs with `fuselab bench --engine cuda`: splitfuse and chunked at about
#    50 % and 85 % of that capacity, 160 requests of the h200-64 shape (prompts N(2600, 780) in
#    [256, 4096], 128 output tokens), Poisson arrivals, seed 14. Each run folder (summary.json,
#    requests/tokens/steps files) and the trace it replayed go to raw/serving/.
#
# Expected runtime on an H200 (estimate, not yet measured): calibrate ~150 s (sweep ~45 s,
# backend build <= 30 s, grid ~10 s, five h200-64 runs 33 s of steps + ~2 s of KV allocation and
# warm-up each, chunked ~8 s), serving runs 4 x (engine build <= 30 s + 30 s at 50 % or 20 s at
# 85 % + drain) ~ 230 s: about 6.5 minutes in all (about 5 if the engine builds in the ~7 s
# seen in reports/results/h200/e2e_log.txt). Guards: calibrate has `timeout 300`, each serving
# run `timeout 75`, and no serving run starts after 400 s, so the command ends within 8 minutes.
#
# `bash engines/sim/calibration/cuda-run.sh serving` re-runs only step 2, on the traces and rates
# already committed in engines/sim/calibration/h200/raw/ (after a change to the engine or the
# harness that leaves the kernels alone); its tarball holds raw/serving/ and the log.
set -u
MODE=${1:-all}
COMMITTED=engines/sim/calibration/h200/raw
START=$(date +%s)
since() { echo $(( $(date +%s) - START )); }
RAW=$OUT/raw
mkdir -p "$RAW/serving" gpu/calib
exec > >(tee "$OUT/log.txt") 2>&1
BIN=gpu/fuselab
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv \
  | tee "$RAW/nvidia-smi.csv"
"$BIN" --version

# calibrate reuses one backend for several engines: check first that a re-allocated cache replays
# no stale decode graph (tiny-128, a few seconds; gpu/tests/ comes from build-for-device.sh).
if [ "$MODE" = all ] && [ -x gpu/tests/gpu-test ]; then
  FUSELAB_REQUIRE_GPU=1 timeout 60 gpu/tests/gpu-test a_reallocated_cache_replays_no_stale_decode_graph \
    --test-threads=1 > "$RAW/gpu_test_reallocated_cache.txt" 2>&1
  echo "gpu test rc=$? at $(since) s"; grep -E "^test |test result" "$RAW/gpu_test_reallocated_cache.txt"
fi

if [ "$MODE" = all ]; then
  echo "== calibrate --engine cuda (at $(since) s)"
  timeout 300 "$BIN" calibrate --engine cuda --model llama3-8b --out "$RAW"
  echo "calibrate rc=$? at $(since) s"
else
  cp "$COMMITTED/capacity.env" "$RAW/"
fi

# The rates: measured by calibrate, else the h200-64 makespans of reports/results/h200/e2e.md
# (splitfuse 5.92 s, chunked 5.44 s: 10.8 and 11.8 requests/s).
if [ -f "$RAW/capacity.env" ]; then
  . "$RAW/capacity.env"
else
  echo "no capacity.env: using the rates of reports/results/h200/e2e.md"
  RATE50_SPLITFUSE=5.405; RATE85_SPLITFUSE=9.189; RATE50_CHUNKED=5.882; RATE85_CHUNKED=10.000
fi
for P in splitfuse chunked; do
  for L in 50 85; do
    NAME=$P-$L
    if [ "$(since)" -gt 400 ]; then echo "== $NAME skipped: $(since) s elapsed"; continue; fi
    VAR=RATE${L}_$(echo $P | tr a-z A-Z); RATE=${!VAR}
    echo "== $NAME: $P at $RATE req/s (at $(since) s)"
    if [ "$MODE" = all ]; then
      "$BIN" workload --preset h200-64 --arrivals poisson --rate "$RATE" --n 160 --seed 14 \
        --export "$RAW/serving/$NAME.trace.jsonl" | tail -2
    else
      cp "$COMMITTED/serving/$NAME.trace.jsonl" "$RAW/serving/"
    fi
    timeout 75 "$BIN" bench --engine cuda --model llama3-8b --policy $P \
      --trace "$RAW/serving/$NAME.trace.jsonl" --out gpu/calib/$NAME | tail -4
    echo "$NAME rc=${PIPESTATUS[0]} at $(since) s"
    cp -r gpu/calib/$NAME "$RAW/serving/" 2>/dev/null
  done
done
# 3. The fit (CPU only, a few seconds): the calibration file the simulator loads, validated on
#    the held-out steps and the serving runs above. The same command runs anywhere on the raw
#    folder once unpacked.
if [ "$MODE" = all ] && "$BIN" calibrate --help | grep -q -- '--fit'; then
  echo "== fit (at $(since) s)"
  "$BIN" calibrate --fit "$RAW" --out "$RAW/h200-llama3-8b.json" > "$RAW/fit.md" 2>&1
  echo "fit rc=$?"; cat "$RAW/fit.md"
fi
echo "done at $(since) s"
# The device returns a handful of files: everything travels as one tarball.
cp "$OUT/log.txt" "$RAW/"
tar czf "$OUT/calib-h200.tgz" -C "$OUT" raw && rm -rf "$RAW"
