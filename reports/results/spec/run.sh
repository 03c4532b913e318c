#!/usr/bin/env bash
# Speculative decoding on the simulated H200 (issue 17): speed-up vs the draft
# length k at modelled acceptance α ∈ {0.5, 0.7, 0.9}, one sweep each over
# closed-loop load (concurrent clients). Llama-3-8B target, Llama-3.2-1B draft
# (both priced by the calibrated H200 model), chunked prefill (vLLM v1
# defaults), the fastgen-1200 workload (1200-token prompts, 128-token outputs).
#
# Usage: reports/results/spec/run.sh [FUSELAB_BINARY]
# Writes raw/alpha-<α>.txt (the command's stdout: curve and speculation
# tables) and raw/alpha-<α>.sweep.json (every point's metrics); the sweep
# folders themselves go to a temporary directory.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-fuselab}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for alpha in 0.5 0.7 0.9; do
  "$bin" sweep --engine sim --hardware h200 --model llama3-8b --draft llama3.2-1b \
    --policies chunked --spec k=0,2,4,8 --spec-alpha "$alpha" \
    --clients 1,4,16,64,256 --preset fastgen-1200 --n 1024 --seed 42 \
    --out "$work/alpha-$alpha" > "$here/raw/alpha-$alpha.txt"
  sed '$d' "$here/raw/alpha-$alpha.txt" > "$here/raw/alpha-$alpha.tmp" && mv "$here/raw/alpha-$alpha.tmp" "$here/raw/alpha-$alpha.txt"
  cp "$work/alpha-$alpha/sweep.json" "$here/raw/alpha-$alpha.sweep.json"
done
# Every policy at α = 0.9, k ∈ {0, 4}: where the crossover comes depends on
# how the policy shares its step between prompts and verify tokens.
"$bin" sweep --engine sim --hardware h200 --model llama3-8b --draft llama3.2-1b \
  --policies all --spec k=0,4 --spec-alpha 0.9 \
  --clients 1,16,64 --preset fastgen-1200 --n 512 --seed 42 \
  --out "$work/policies" > "$here/raw/policies-alpha-0.9.txt"
sed '$d' "$here/raw/policies-alpha-0.9.txt" > "$here/raw/policies.tmp" && mv "$here/raw/policies.tmp" "$here/raw/policies-alpha-0.9.txt"
cp "$work/policies/sweep.json" "$here/raw/policies-alpha-0.9.sweep.json"
