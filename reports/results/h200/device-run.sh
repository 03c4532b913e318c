#!/bin/bash
# Kernels (with the PyTorch baseline) and the h200-64 end-to-end experiment beside HF,
# all in one device command; everything lands in $OUT/res and comes back as one tarball.
set -u
cd "$(dirname "$0")/.."
R=/tmp/res; mkdir -p $R gpu/runs
exec > >(tee "$OUT/log.txt") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
echo "== kernels"
python3 kernels/examples/torch_baseline.py $R/kernels_torch_baseline.txt
./gpu/fuselab kernels --device cuda --baseline $R/kernels_torch_baseline.txt --json $R/kernels.json --markdown $R/kernels.md
echo "kernels rc=$?"
BIN=gpu/fuselab
$BIN workload --preset h200-64 --export gpu/w.jsonl | tail -3
for P in continuous chunked splitfuse prepack static; do
  t0=$(date +%s.%N)
  timeout 150 $BIN bench --engine cuda --model llama3-8b --policy $P --trace gpu/w.jsonl --out gpu/runs/$P | tail -3
  rc=$?; t1=$(date +%s.%N)
  echo "== $P rc=$rc process_wall_s=$(python3 -c "print(round($t1-$t0,2))")"
  cp gpu/runs/$P/summary.json "$R/$P.json" 2>/dev/null
done
echo "== HF baselines"
timeout 300 python3 gpu/hf_baseline.py --workload gpu/w.jsonl --out "$R/hf.json"; echo "hf rc=$?"
cp "$OUT/log.txt" $R/log.txt 2>/dev/null
tar czf "$OUT/res.tgz" -C /tmp res
echo done
