#!/bin/bash
# The H200 results in device commands of one build (a device command may run at most
# 10 minutes), run back to back on the same machine:
#   bash reports/results/h200/device-run.sh kernels  # GPU tests (FUSELAB_REQUIRE_GPU=1),
#       compute-sanitizer memcheck and racecheck on the engine test, the PyTorch baseline and
#       `fuselab kernels`
#   bash reports/results/h200/device-run.sh e2e      # h200-64 for every policy, the variants
#       (no CUDA graphs, GEMM tuning, skinny GEMMs, budget 16384, run-to-run repeats), the
#       per-operator profile, HF
#   bash reports/results/h200/device-run.sh sanitize-checks  # memcheck over `fuselab kernels`'
#       correctness checks (every kernel and tile at its checked shapes)
#   bash reports/results/h200/device-run.sh racecheck-ours [FAMILY...]  # racecheck over the
#       checks, one family of our kernels instrumented at a time (not yet run on a device)
#   bash reports/results/h200/device-run.sh gpu-tests  # the GPU tests alone, as in `kernels`
#   bash reports/results/h200/device-run.sh skinny   # the skinny decode GEMM alone: its engine
#       test, checks, timed rows (every plan) and both sanitizers on it
# Run from the repository root with the binaries in gpu/ (build-for-device.sh); each part's
# files land in $OUT/res-PART.tgz, unpacked here into reports/results/h200/run/ and turned
# into the pages by make_results.py.
set -u
PART=${1:?give kernels, e2e, sanitize-checks, racecheck-ours, gpu-tests or skinny}
R=$OUT/res; mkdir -p "$R" gpu/runs
exec > >(tee "$OUT/log-$PART.txt") 2>&1
BIN=gpu/fuselab
gpu_tests() {
  echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
  for t in gpu/tests/*; do
    name=$(basename "$t")
    FUSELAB_REQUIRE_GPU=1 timeout 120 "$t" --test-threads=1 --nocapture > "$R/gpu_tests_$name.txt" 2>&1
    echo "$name rc=$?"; grep -E "^test |test result" "$R/gpu_tests_$name.txt"
  done
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
if [ "$PART" = kernels ]; then
  gpu_tests
  echo "== compute-sanitizer (our kernels through the CUDA backend on tiny: prefill, mixed, padded and graph-replayed decode steps)"
  for tool in memcheck racecheck; do
    timeout 100 compute-sanitizer --tool $tool --print-limit 20 gpu/tests/gpu-test \
      tiny_logits_on_cuda_match_the_cpu_backend --test-threads=1 > "$R/sanitizer_${tool}_engine.txt" 2>&1
    echo "sanitizer $tool engine rc=$?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test result" "$R/sanitizer_${tool}_engine.txt"
    grep -oE "(Race reported|Invalid|Error).{0,160}" "$R/sanitizer_${tool}_engine.txt" | sort | uniq -c | head
  done
  echo "== kernels"
  timeout 240 python3 kernels/examples/torch_baseline.py "$R/kernels_torch_baseline.txt" 2> "$R/kernels_torch_times.txt"
  echo "torch rc=$?"
  FUSELAB_REQUIRE_GPU=1 timeout 300 $BIN kernels --device cuda --baseline "$R/kernels_torch_baseline.txt" \
    --sustained 2 --json "$R/kernels.json" --markdown "$R/kernels.md"
  echo "kernels rc=$?"
elif [ "$PART" = sanitize-checks ]; then
  echo "== compute-sanitizer over fuselab kernels' checks (every tile, the split prefill among them)"
  compute-sanitizer --version | tail -1
  # memcheck only: racecheck over the same checks is the racecheck-ours part. With both
  # cuBLAS's nvjet kernels and the skinny GEMM excluded on one command line, compute-sanitizer
  # 2025.3.1 apparently kept only the first and failed inside itself on the skinny kernel
  # (builds.md, 2026-12-03); with nvjet instrumented it runs out of time.
  FUSELAB_REQUIRE_GPU=1 timeout 250 compute-sanitizer --tool memcheck --print-limit 20 $BIN kernels \
    --device cuda --quick --only no-timed-rows --markdown "$R/sanitizer_memcheck_checks.md" \
    > "$R/sanitizer_memcheck_checks.txt" 2>&1
  echo "sanitizer memcheck checks rc=$?"
  grep -E "ERROR SUMMARY" "$R/sanitizer_memcheck_checks.txt"
  grep -oE "(Invalid|Error).{0,160}" "$R/sanitizer_memcheck_checks.txt" | sort | uniq -c | head
  grep -cE "\| ok \|" "$R/sanitizer_memcheck_checks.md"
elif [ "$PART" = racecheck-ours ]; then
  # racecheck over the checks one kernel family at a time (`--kernel-name kns=FAMILY`): only
  # that family is instrumented, so cuBLAS's GEMMs run at full speed and each run can finish.
  # The families are our kernels that use shared memory (racecheck checks nothing else);
  # the skinny GEMM is left out, as racecheck fails inside itself on it. Give the families as
  # arguments to split the list over two commands.
  shift
  families=${*:-flash_prefill paged_decode rms_norm qkv_rope_cache argmax_rows lora_}
  for fam in $families; do
    out="$R/sanitizer_racecheck_checks_$fam.txt"
    FUSELAB_REQUIRE_GPU=1 timeout 280 compute-sanitizer --tool racecheck --kernel-name kns=$fam --print-limit 20 \
      $BIN kernels --device cuda --quick --only no-timed-rows > "$out" 2>&1
    echo "racecheck $fam rc=$?"
    grep -E "RACECHECK SUMMARY|Internal Sanitizer Error" "$out"
    grep -oE "Race reported.{0,160}" "$out" | sort | uniq -c | head
  done
elif [ "$PART" = gpu-tests ]; then
  gpu_tests
elif [ "$PART" = skinny ]; then
  echo "== the skinny GEMM: its engine test, checks and timed rows, sanitizers on it alone"
  FUSELAB_REQUIRE_GPU=1 timeout 120 gpu/tests/gpu-test skinny --test-threads=1 --nocapture \
    > "$R/gpu_tests_skinny.txt" 2>&1
  echo "gpu-test skinny rc=$?"; grep -E "^test |test result|panicked" "$R/gpu_tests_skinny.txt"
  FUSELAB_REQUIRE_GPU=1 timeout 200 $BIN kernels --device cuda --quick --only "gemm " \
    --json "$R/kernels_skinny.json" --markdown "$R/kernels_skinny.md" > "$R/kernels_skinny_log.txt" 2>&1
  echo "kernels rc=$?"; grep -E "skinny|gemm (qkv|o|gate_up|down) .*T=64" "$R/kernels_skinny.md" | head -60
  for tool in memcheck racecheck; do
    FUSELAB_REQUIRE_GPU=1 timeout 100 compute-sanitizer --tool $tool --kernel-name kns=skinny --print-limit 20 \
      $BIN kernels --device cuda --quick --only no-timed-rows > "$R/sanitizer_${tool}_skinny.txt" 2>&1
    echo "sanitizer $tool skinny rc=$?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$R/sanitizer_${tool}_skinny.txt"
    grep -oE "(Race reported|Invalid|Error).{0,160}" "$R/sanitizer_${tool}_skinny.txt" | sort | uniq -c | head
  done
else
  $BIN workload --preset h200-64 --export gpu/w.jsonl | tail -3; cp gpu/w.jsonl "$R/w.jsonl"
  run() {
    name=$1; shift
    t0=$(date +%s.%N)
    timeout 150 $BIN bench --engine cuda --model llama3-8b --trace gpu/w.jsonl --out gpu/runs/$name "$@" | tail -3
    rc=$?; t1=$(date +%s.%N)
    echo "== $name rc=$rc process_wall_s=$(python3 -c "print(round($t1-$t0,2))")"
    cp gpu/runs/$name/summary.json "$R/$name.json" 2>/dev/null
  }
  for P in continuous chunked splitfuse prepack static; do run $P --policy $P; done
  run continuous-no-graphs --policy continuous --no-cuda-graphs
  run continuous-skinny-gemm --policy continuous --cuda-skinny-gemm
  run continuous-gemm-tuning --policy continuous --cuda-gemm-tuning
  run continuous-budget16384 --policy continuous --knob budget=16384
  run continuous-budget16384-skinny-gemm --policy continuous --knob budget=16384 --cuda-skinny-gemm
  run chunked-budget512 --policy chunked --knob budget=512
  run continuous-skinny-gemm-again --policy continuous --cuda-skinny-gemm
  run continuous-again --policy continuous
  run continuous-profile --policy continuous --cuda-profile "$R/profile.json"
  run continuous-profile-no-graphs --policy continuous --no-cuda-graphs --cuda-profile "$R/profile_no_graphs.json"
  echo "== tune --executor local --gpus all (one trial per GPU; N = 1 here)"
  timeout 150 $BIN tune --engine cuda --model llama3-8b --policy continuous --trace gpu/w.jsonl \
    --space "budget=4096|8192|16384" --tuner grid --budget 3 --executor local --gpus all \
    --out gpu/campaign > "$R/tune_gpus.txt" 2>&1
  echo "tune rc=$?"; grep -E "executor:|GPU |campaign wall|best" "$R/tune_gpus.txt"
  cp gpu/campaign/gpus.json "$R/tune_gpus.json" 2>/dev/null
  echo "== HF baselines"
  timeout 300 python3 gpu/hf_baseline.py --workload gpu/w.jsonl --out "$R/hf.json"; echo "hf rc=$?"
fi
echo done
# The device returns a handful of files: everything travels as one tarball.
cp "$OUT/log-$PART.txt" "$R/"
tar czf "$OUT/res-$PART.tgz" -C "$OUT" res && rm -rf "$R"
