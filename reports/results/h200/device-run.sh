#!/bin/bash
# One device command, one build: the GPU test binaries with FUSELAB_REQUIRE_GPU=1 (a
# missing GPU fails them), the kernels (with the PyTorch baseline) and the h200-64
# end-to-end experiment beside HF. Run from the repository root with the binaries in gpu/
# (gpu/fuselab, gpu/tests/*, gpu/hf_baseline.py); everything lands in $OUT/res.tgz.
#
#   cargo build --profile gpu -p fuselab-cli
#   cargo test --profile gpu -p fuselab-cuda -p fuselab-kernels --no-run
#   (copy target/gpu/fuselab and the test executables into gpu/, then on the device:)
#   bash reports/results/h200/device-run.sh
set -u
R=$OUT/res; mkdir -p "$R" gpu/runs
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== GPU tests (FUSELAB_REQUIRE_GPU=1)"
for t in gpu/tests/*; do
  name=$(basename "$t")
  FUSELAB_REQUIRE_GPU=1 timeout 300 "$t" --test-threads=1 --nocapture > "$R/gpu_tests_$name.txt" 2>&1
  echo "$name rc=$?"; grep -E "^test |test result" "$R/gpu_tests_$name.txt"
done
echo "== kernels"
python3 kernels/examples/torch_baseline.py "$R/kernels_torch_baseline.txt"
FUSELAB_REQUIRE_GPU=1 ./gpu/fuselab kernels --device cuda --baseline "$R/kernels_torch_baseline.txt" \
  --json "$R/kernels.json" --markdown "$R/kernels.md"
echo "kernels rc=$?"
BIN=gpu/fuselab
$BIN workload --preset h200-64 --export gpu/w.jsonl | tail -3; cp gpu/w.jsonl "$R/w.jsonl"
for P in continuous chunked splitfuse prepack static; do
  t0=$(date +%s.%N)
  timeout 150 $BIN bench --engine cuda --model llama3-8b --policy $P --trace gpu/w.jsonl --out gpu/runs/$P | tail -3
  rc=$?; t1=$(date +%s.%N)
  echo "== $P rc=$rc process_wall_s=$(python3 -c "print(round($t1-$t0,2))")"
  cp gpu/runs/$P/summary.json "$R/$P.json" 2>/dev/null
done
echo "== HF baselines"
timeout 300 python3 gpu/hf_baseline.py --workload gpu/w.jsonl --out "$R/hf.json"; echo "hf rc=$?"
echo done
# The device returns a handful of files: everything travels as one tarball.
cp "$OUT/log.txt" "$R/log.txt"
tar czf "$OUT/res.tgz" -C "$OUT" res && rm -rf "$R"
