#!/bin/bash
# Kernel tuning on the H200 (issue 15), one device command (about 7 minutes):
#   1. the GPU tests that back it (FUSELAB_REQUIRE_GPU=1): every configuration family of
#      both kernels against the CPU reference, infeasible ones recorded, the engine's logits
#      with a tuning table equal to those without;
#   2. h200-64 on the CUDA engine, untuned (its steps give the campaigns their shapes);
#   3. per kernel, `tune --compare bo:N,grid`: the grid over the whole space and BO with a
#      quarter of its evaluations, at the shapes of that run (`--shapes-from`);
#   4. the two grids' tuning tables merged; `fuselab kernels --tuning-table` rows;
#   5. h200-64 untuned and tuned, alternating, three times each (continuous), and once
#      each for chunked and splitfuse.
# Run from the repository root with gpu/ built by reports/results/h200/build-for-device.sh;
# everything lands in $OUT/tuning.tgz (unpacked into reports/results/kernel-tuning/cuda-h200/).
#
# `cuda-run.sh link` instead: the GPU tests again, then h200-64 untuned and with
# slow-table.json (each grid's slowest feasible configuration, written by
# summarize.py --slow-table from the first run), alternating twice: a table reaches the engine.
set -u
R=$OUT/res; mkdir -p "$R" gpu/runs
exec > >(tee "$R/log.txt") 2>&1
BIN=gpu/fuselab
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv
pack() { tar -czf "$OUT/tuning.tgz" -C "$R" . ; }
trap pack EXIT
echo "== GPU tests"
[ -f gpu/tests.tar.xz ] && tar -xJf gpu/tests.tar.xz -C gpu
TESTS="cuda_tuning-test gpu-test"
[ "${1:-}" = link ] && TESTS=$(ls gpu/tests)
for t in $TESTS; do
  FUSELAB_REQUIRE_GPU=1 timeout 100 gpu/tests/$t --test-threads=1 --nocapture > "$R/gpu_tests_$t.txt" 2>&1
  echo "$t rc=$?"; grep -E "^test |test result" "$R/gpu_tests_$t.txt"
done
$BIN workload --preset h200-64 --export gpu/w.jsonl | tail -1
bench() {
  name=$1; shift
  timeout 120 $BIN bench --engine cuda --model llama3-8b --trace gpu/w.jsonl --out gpu/runs/$name --force "$@" | tail -2
  echo "== bench $name rc=$?"
  mkdir -p "$R/runs/$name"; cp gpu/runs/$name/summary.json "$R/runs/$name/" 2>/dev/null
}
if [ "${1:-}" = link ]; then
  for i in 1 2; do
    bench untuned-link-$i --policy continuous
    bench slow-$i --policy continuous --tuning-table reports/results/kernel-tuning/slow-table.json
  done
  exit 0
fi
bench untuned-0 --policy continuous
# prefill: 4 warpgroups x 2 tiles x 2 stages x 2 register caps x 2 grids = 64 configurations
# (32 modules); decode: the whole space, 8 split counts x 3 warps x 5 stages = 120 (15 modules).
for K in "prefill_attention:16:270:warpgroups=1..4,kv_tile=64|128,stages=2..3,min_blocks=1|2,paired=0|1" \
         "decode_attention:30:150:splits=1|2|3|4|6|8|12|16,warps=2|4|8,stages=2..6"; do
  IFS=: read -r kernel bo limit space <<< "$K"
  echo "== tune $kernel: grid over $space vs BO ($bo trials)"
  timeout $limit $BIN tune --kernel $kernel --device cuda --shapes-from gpu/runs/untuned-0 --space "$space" \
    --compare bo:$bo,grid --budget 200 --tune-seed 7 --out gpu/campaigns/$kernel > "$R/tune_$kernel.txt" 2>&1
  echo "tune $kernel rc=$?"
  grep -E "tuning |shape|came within|did not|tuning table|campaign wall|^\|" "$R/tune_$kernel.txt" | head -40
  mkdir -p "$R/campaigns/$kernel"
  (cd gpu/campaigns/$kernel && find . -maxdepth 2 -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' -o -name '*.txt' \) | tar -cf - -T - ) | tar -xf - -C "$R/campaigns/$kernel"
done
python3 - gpu/campaigns/prefill_attention/grid/tuning.json gpu/campaigns/decode_attention/grid/tuning.json > gpu/tuning.json <<'PY'
import json, sys
t = {"schema": 1, "entries": []}
for p in sys.argv[1:]:
    try: t["entries"] += json.load(open(p))["entries"]
    except Exception as e: print(f"merge: {p}: {e}", file=sys.stderr)
print(json.dumps(t, indent=2))
PY
cp gpu/tuning.json "$R/tuning.json"; cat gpu/tuning.json
echo "== kernels with the tuning table"
timeout 150 $BIN kernels --device cuda --quick --only decode_attention --tuning-table gpu/tuning.json \
  --markdown "$R/kernels_decode_tuned.md" > /dev/null 2>&1; echo "kernels decode rc=$?"
grep -E "decode_attention|tuning table" "$R/kernels_decode_tuned.md" | head -12
timeout 150 $BIN kernels --device cuda --quick --only prefill_attention --tuning-table gpu/tuning.json \
  --markdown "$R/kernels_prefill_tuned.md" > /dev/null 2>&1; echo "kernels prefill rc=$?"
grep -E "\(tuned\)|wg128x2 |tuning table" "$R/kernels_prefill_tuned.md" | head -12
echo "== end to end"
for i in 1 2 3; do
  bench untuned-$i --policy continuous
  bench tuned-$i --policy continuous --tuning-table gpu/tuning.json
done
for P in chunked splitfuse; do
  bench untuned-$P --policy $P
  bench tuned-$P --policy $P --tuning-table gpu/tuning.json
done
