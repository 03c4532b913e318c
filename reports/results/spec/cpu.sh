#!/usr/bin/env bash
# Speculative decoding on the CPU engine (real numerics, `tiny` with seeded
# random weights): measured acceptance of a draft made from the target by
# seeded noise on every matrix, and the block efficiency of an exact-copy
# draft steered by a seeded coin (i.i.d. acceptance α = 0.7, k = 4) against
# (1 − α^(k+1)) / (1 − α) = 2.7731.
#
# Usage: reports/results/spec/cpu.sh [FUSELAB_BINARY]; writes raw/cpu.txt.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
bin="${1:-fuselab}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
for id in 0 1 2 3; do
  echo "{\"id\": $id, \"arrival_s\": 0.0, \"prompt_len\": 8, \"output_len\": 500}"
done > "$work/long.jsonl"
{
  for noise in 0 0.003 0.01 0.03 0.1; do
    echo "## measured: --draft-noise $noise, k=4"
    "$bin" bench --engine cpu --policy chunked --spec-k 4 --draft-noise "$noise" \
      --trace "$work/long.jsonl" --out "$work/noise-$noise" | grep '^speculation'
  done
  echo "## modelled: exact copy, --spec-alpha 0.7, k=4"
  "$bin" bench --engine cpu --policy chunked --spec-k 4 --draft-noise 0 --spec-alpha 0.7 \
    --trace "$work/long.jsonl" --out "$work/alpha" | grep '^speculation'
} > "$here/raw/cpu.txt"
