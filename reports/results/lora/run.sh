#!/bin/sh
# Multi-LoRA sweep on the simulated H200 (llama3-8b, bf16, chunked prefill,
# 16 adapter slots, rank 16): adapters {1, 8, 64, 512} x Zipf s {0, 1.1},
# ShareGPT-like traffic at three Poisson rates. Writes sweep/ and sweep.txt here.
set -eu
cd "$(dirname "$0")"
fuselab sweep --engine sim --hardware h200 --model llama3-8b \
  --policies chunked --knob max_loras=16 \
  --preset sharegpt-like --n 1000 --seed 42 --lora-rank 16 \
  --rates 4,16,64 \
  --sweep-adapters 1,8,64,512 --sweep-zipf 0,1.1 \
  --out sweep --force | tee sweep.txt
