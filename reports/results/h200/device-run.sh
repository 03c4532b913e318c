#!/bin/bash
# The H200 results in device commands of one build (a device command may run at most
# 10 minutes), run back to back on the same machine:
#   bash reports/results/h200/device-run.sh kernels  # GPU tests (FUSELAB_REQUIRE_GPU=1),
#       compute-sanitizer memcheck and racecheck on the engine test, the PyTorch baseline and
#       `fuselab kernels`
#   bash reports/results/h200/device-run.sh e2e      # h200-64 for every policy, the variants
#       (no CUDA graphs, GEMM tuning, skinny GEMMs, programmatic launch, budgets 16384 to
#       65536, run-to-run repeats), the per-operator profiles, HF
#   bash reports/results/h200/device-run.sh sanitize-checks  # memcheck over `fuselab kernels`'
#       correctness checks (every kernel and tile at its checked shapes)
#   bash reports/results/h200/device-run.sh racecheck [RUN...]  # racecheck, unfiltered, over
#       the checks of our kernels alone (--own-checks-only) and the engine tests
#   bash reports/results/h200/device-run.sh gpu-tests  # the GPU tests and the engine's
#       sanitizer runs
#   bash reports/results/h200/device-run.sh skinny   # the skinny decode GEMM alone: its engine
#       test, checks and timed rows (every plan)
# Run from the repository root with the binaries in gpu/ (build-for-device.sh); each part's
# files land in $OUT/res-PART.tgz, unpacked here into reports/results/h200/run/ and turned
# into the pages by make_results.py.
set -u
PART=${1:?give kernels, e2e, sanitize-checks, racecheck, gpu-tests or skinny}
R=$OUT/res; mkdir -p "$R" gpu/runs
exec > >(tee "$OUT/log-$PART.txt") 2>&1
# The carried gpu/ replaces the device's copy on every call: unpack the test binaries here,
# in the foreground, before anything runs them.
if [ -f gpu/tests.tar.xz ]; then (cd gpu && rm -rf tests && tar xJf tests.tar.xz) || exit 1; fi
BIN=gpu/fuselab
gpu_tests() {
  echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
  for t in gpu/tests/*; do
    name=$(basename "$t")
    FUSELAB_REQUIRE_GPU=1 timeout 300 "$t" --test-threads=1 --nocapture > "$R/gpu_tests_$name.txt" 2>&1
    echo "$name rc=$?"; grep -E "^test |test result" "$R/gpu_tests_$name.txt"
  done
}
# What has finished so far, as the part's tarball: it comes back even if the command
# runs out of time later.
checkpoint() { cp "$OUT/log-$PART.txt" "$R/" 2>/dev/null; tar czf "$OUT/res-$PART.tgz" -C "$OUT" res; }
engine_sanitizers() {
  echo "== compute-sanitizer (our kernels through the CUDA backend on tiny: prefill, mixed, padded and graph-replayed decode steps)"
  for tool in memcheck racecheck; do
    timeout 100 compute-sanitizer --tool $tool --print-limit 20 gpu/tests/gpu-test \
      tiny_logits_on_cuda_match_the_cpu_backend --test-threads=1 > "$R/sanitizer_${tool}_engine.txt" 2>&1
    echo "sanitizer $tool engine rc=$?"
    grep -E "ERROR SUMMARY|RACECHECK SUMMARY|test result" "$R/sanitizer_${tool}_engine.txt"
    grep -oE "(Race reported|Invalid|Error).{0,160}" "$R/sanitizer_${tool}_engine.txt" | sort | uniq -c | head
  done
}
# memcheck on decode graphs captured with programmatic dependent launch, with cuBLAS's GEMMs
# and with the skinny ones (racecheck on them: the racecheck part).
pdl_memcheck() {
  timeout 200 compute-sanitizer --tool memcheck --print-limit 20 gpu/tests/gpu-test \
    programmatic_launch_keeps_the_decode_graphs_logits --test-threads=1 > "$R/sanitizer_memcheck_engine_pdl.txt" 2>&1
  echo "sanitizer memcheck engine (programmatic launch) rc=$?"
  grep -E "ERROR SUMMARY|test result" "$R/sanitizer_memcheck_engine_pdl.txt"
}
# memcheck over the checks of `fuselab kernels`: NAME, then the flags that pick them
# (every check: --only no-timed-rows; ours alone: --own-checks-only).
memcheck_checks() {
  name=$1; shift
  FUSELAB_REQUIRE_GPU=1 timeout 300 compute-sanitizer --tool memcheck --print-limit 100 $BIN kernels \
    --device cuda --quick "$@" --markdown "$R/sanitizer_memcheck_$name.md" \
    > "$R/sanitizer_memcheck_$name.txt" 2>&1
  echo "sanitizer memcheck $name rc=$?"
}
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
if [ "$PART" = kernels ]; then
  gpu_tests; checkpoint
  engine_sanitizers; pdl_memcheck; checkpoint
  echo "== kernels"
  timeout 240 python3 kernels/examples/torch_baseline.py "$R/kernels_torch_baseline.txt" 2> "$R/kernels_torch_times.txt"
  echo "torch rc=$?"
  FUSELAB_REQUIRE_GPU=1 timeout 300 $BIN kernels --device cuda --baseline "$R/kernels_torch_baseline.txt" \
    --sustained 2 --json "$R/kernels.json" --markdown "$R/kernels.md"
  echo "kernels rc=$?"
elif [ "$PART" = sanitize-checks ]; then
  echo "== compute-sanitizer over fuselab kernels' checks (every tile, the split prefill among them)"
  compute-sanitizer --version | tail -1
  memcheck_checks checks --only no-timed-rows
  grep -E "ERROR SUMMARY" "$R/sanitizer_memcheck_checks.txt"
  grep -oE "(Invalid|Error).{0,160}" "$R/sanitizer_memcheck_checks.txt" | sort | uniq -c | head
  grep -cE "\| ok \|" "$R/sanitizer_memcheck_checks.md"
elif [ "$PART" = racecheck ]; then
  # racecheck with every kernel instrumented and every hazard printed: with any kernel filter
  # (--kernel-name, --kernel-name-exclude) compute-sanitizer 2025.3.1 fails inside itself
  # within seconds (builds.md, 2026-12-04), and cuBLAS's kernels instrumented take minutes.
  # So: the checks of our kernels alone (--own-checks-only: no cuBLAS GEMM runs), beside the
  # engine tests, one process each on the one GPU (timings do not matter here).
  # The checks are split by prefill tile into parallel runs (--check-tiles; every run also
  # checks the other kernels), each logging every check as it passes (FUSELAB_LOG=info), so
  # that a run cut by its limit still says how far it got.
  # Arguments: which runs (default all), each run's time limit in RACECHECK_LIMIT.
  # With WITH_GPU_TESTS=1 the GPU tests, the engine's sanitizer runs and memcheck over the
  # checks of our kernels run beside them (nothing here is timed).
  shift
  runs=${*:-own_default own_mma_sync own_wgmma own_experimental engine_all_hazards engine_skinny engine_pdl}
  limit=${RACECHECK_LIMIT:-560}
  compute-sanitizer --version | tail -1
  t0=$(date +%s); pids=()
  if [ "${WITH_GPU_TESTS:-0}" = 1 ]; then
    (gpu_tests; engine_sanitizers; pdl_memcheck
     memcheck_checks own_checks --own-checks-only
     echo "after $(( $(date +%s) - t0 )) s") > "$R/beside_racecheck.txt" 2>&1 &
    pids+=($!)
  fi
  racecheck_run() {
    name=$1; shift
    timeout "$limit" compute-sanitizer --tool racecheck --print-limit 100000 "$@" \
      > "$R/sanitizer_racecheck_$name.txt" 2>&1
    echo "racecheck $name rc=$? after $(( $(date +%s) - t0 )) s (limit $limit)"
  }
  for run in $runs; do
    case $run in
      own_*)
        case $run in
          own_default) tiles=wg128pp,wg128ppu ;;  # the engine's tiles on Hopper
          own_mma_sync) tiles=r64,r128,r128w8,r128p,r256,r256s3 ;;
          own_wgmma) tiles=wg128,wg128x2,wg128x2u,wg128x2s,wg128n,wg192 ;;
          own_experimental) tiles=wg128p,wg128p64,wg192p,wg128ws,wg128wsn,wg128pp64,wg128q,wg128qp,wg128qws ;;
          *) echo "unknown racecheck run $run"; continue ;;
        esac
        FUSELAB_LOG=info FUSELAB_REQUIRE_GPU=1 racecheck_run "$run" $BIN kernels --device cuda --quick \
          --own-checks-only --check-tiles "$tiles" --markdown "$R/sanitizer_racecheck_$run.md" & pids+=($!)
        continue ;;
      engine_all_hazards) test=tiny_logits_on_cuda_match_the_cpu_backend ;;
      engine_skinny) test=skinny_decode_gemms_keep_the_logits ;;
      engine_pdl) test=programmatic_launch_keeps_the_decode_graphs_logits ;;
      *) echo "unknown racecheck run $run"; continue ;;
    esac
    racecheck_run "$run" gpu/tests/gpu-test "$test" --test-threads=1 --nocapture & pids+=($!)
  done
  wait "${pids[@]}"  # not a bare wait: that would wait for the log's tee as well
  cat "$R/beside_racecheck.txt" 2>/dev/null
  grep -E "ERROR SUMMARY" "$R/sanitizer_memcheck_own_checks.txt" 2>/dev/null
  grep -cE "\| ok \|" "$R/sanitizer_memcheck_own_checks.md" 2>/dev/null
  for f in "$R"/sanitizer_racecheck_*.txt; do
    echo "== $(basename "$f")"
    grep -E "RACECHECK SUMMARY|Internal Sanitizer Error|test result" "$f" | head -5
    echo "checks passed before the end: $(grep -c " checked" "$f")"
    grep -oE "Race reported between \w+ access at [A-Za-z0-9_]+" "$f" | awk '{print $NF}' | sort | uniq -c
  done
  for f in "$R"/sanitizer_racecheck_own_*.md; do echo "$(basename "$f"): $(grep -cE "\| ok \|" "$f") ok"; done
elif [ "$PART" = gpu-tests ]; then
  gpu_tests; checkpoint
  engine_sanitizers
  pdl_memcheck
elif [ "$PART" = skinny ]; then
  echo "== the skinny GEMM: its engine test, checks and timed rows, sanitizers on it alone"
  FUSELAB_REQUIRE_GPU=1 timeout 120 gpu/tests/gpu-test skinny --test-threads=1 --nocapture \
    > "$R/gpu_tests_skinny.txt" 2>&1
  echo "gpu-test skinny rc=$?"; grep -E "^test |test result|panicked" "$R/gpu_tests_skinny.txt"
  FUSELAB_REQUIRE_GPU=1 timeout 200 $BIN kernels --device cuda --quick --only "gemm " \
    --json "$R/kernels_skinny.json" --markdown "$R/kernels_skinny.md" > "$R/kernels_skinny_log.txt" 2>&1
  echo "kernels rc=$?"; grep -E "skinny|gemm (qkv|o|gate_up|down) .*T=64" "$R/kernels_skinny.md" | head -80
else
  $BIN workload --preset h200-64 --export gpu/w.jsonl | tail -3; cp gpu/w.jsonl "$R/w.jsonl"
  run() {
    name=$1; shift
    t0=$(date +%s.%N)
    timeout 150 $BIN bench --engine cuda --model llama3-8b --trace gpu/w.jsonl --out gpu/runs/$name "$@" | tail -3
    rc=$?; t1=$(date +%s.%N)
    echo "== $name rc=$rc process_wall_s=$(python3 -c "print(round($t1-$t0,2))")"
    cp gpu/runs/$name/summary.json "$R/$name.json" 2>/dev/null
    checkpoint
  }
  for P in continuous chunked splitfuse prepack static; do run $P --policy $P; done
  run continuous-no-graphs --policy continuous --no-cuda-graphs
  run continuous-skinny-gemm --policy continuous --cuda-skinny-gemm
  run continuous-gemm-tuning --policy continuous --cuda-gemm-tuning
  for B in 16384 32768 65536; do
    run continuous-budget$B --policy continuous --knob budget=$B
    run continuous-budget$B-skinny-gemm --policy continuous --knob budget=$B --cuda-skinny-gemm
  done
  run chunked-budget512 --policy chunked --knob budget=512
  run continuous-skinny-gemm-again --policy continuous --cuda-skinny-gemm
  run continuous-pdl --policy continuous --cuda-pdl
  run continuous-pdl-skinny-gemm --policy continuous --cuda-pdl --cuda-skinny-gemm
  run continuous-budget16384-pdl --policy continuous --knob budget=16384 --cuda-pdl
  run continuous-again --policy continuous
  for B in 16384 32768 65536; do
    run continuous-budget$B-again --policy continuous --knob budget=$B
    run continuous-budget$B-skinny-gemm-again --policy continuous --knob budget=$B --cuda-skinny-gemm
  done
  run continuous-profile --policy continuous --cuda-profile "$R/profile.json"
  run continuous-profile-no-graphs --policy continuous --no-cuda-graphs --cuda-profile "$R/profile_no_graphs.json"
  run continuous-profile-skinny-gemm --policy continuous --cuda-skinny-gemm --cuda-profile "$R/profile_skinny_gemm.json"
  run continuous-profile-no-graphs-skinny-gemm --policy continuous --no-cuda-graphs --cuda-skinny-gemm \
    --cuda-profile "$R/profile_no_graphs_skinny_gemm.json"
  run continuous-profile-pdl --policy continuous --cuda-pdl --cuda-profile "$R/profile_pdl.json"
  run continuous-profile-pdl-skinny-gemm --policy continuous --cuda-pdl --cuda-skinny-gemm \
    --cuda-profile "$R/profile_pdl_skinny_gemm.json"
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
