#!/bin/bash
# Builds what device-run.sh runs on the GPU machine (which has no Rust toolchain) and
# lays it out in gpu/ (ignored by git): the fuselab binary, the GPU test executables
# of fuselab-cuda and fuselab-kernels, and the HF baseline script. Run from the
# repository root on the CPU machine; then carry gpu/ to the device.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/fuselab/target}"
cargo build --profile gpu -p fuselab-cli --locked
mkdir -p gpu/tests
cp "$CARGO_TARGET_DIR/gpu/fuselab" gpu/fuselab
rm -f gpu/tests/*
cargo test --profile gpu -p fuselab-cuda -p fuselab-kernels --locked --no-run --message-format=json \
  | python3 -c '
import json, sys, shutil, os
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        name = m["target"]["name"] + "-" + m["target"]["kind"][0]
        shutil.copy(m["executable"], os.path.join("gpu/tests", name))
        print("gpu/tests/" + name)
'
strip gpu/fuselab gpu/tests/*
cp ../shared/peers/hf_baseline.py gpu/ 2>/dev/null || cp "$(dirname "$0")/../../../../shared/peers/hf_baseline.py" gpu/
du -sh gpu
