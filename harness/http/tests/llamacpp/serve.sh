#!/usr/bin/env bash
# Serve OUT_DIR/tiny.gguf with llama-cpp-python's OpenAI-compatible server,
# in the foreground, on 127.0.0.1:PORT.
#
#   serve.sh OUT_DIR PORT
#
# Env: FUSELAB_LLAMACPP_CTX (n_ctx, default 4096),
#      FUSELAB_LLAMACPP_THREADS (n_threads, default 1),
#      FUSELAB_PY_CACHE (venv cache root, as in setup.sh).
# Run setup.sh and make_gguf.py first.
#
# --interrupt_requests False matters: by default llama-cpp-python aborts a
# running stream as soon as another request arrives (seen: the chunked SSE body
# of the earlier streams is cut off mid-way, IncompleteRead). With it off,
# concurrent requests queue and are served one at a time, each in full.
set -euo pipefail
if [[ $# -ne 2 ]]; then
    echo "usage: $0 OUT_DIR PORT" >&2
    exit 2
fi
OUT_DIR="$1"
PORT="$2"
VENV="${FUSELAB_LLAMACPP_VENV:-${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}/llamacpp}"
[[ -x "$VENV/bin/python" ]] || { echo "no venv at $VENV: run setup.sh" >&2; exit 1; }
[[ -f "$OUT_DIR/tiny.gguf" ]] || { echo "no $OUT_DIR/tiny.gguf: run make_gguf.py" >&2; exit 1; }
THREADS="${FUSELAB_LLAMACPP_THREADS:-1}"

exec "$VENV/bin/python" -m llama_cpp.server \
    --model "$OUT_DIR/tiny.gguf" \
    --model_alias tiny \
    --host 127.0.0.1 \
    --port "$PORT" \
    --n_ctx "${FUSELAB_LLAMACPP_CTX:-4096}" \
    --n_threads "$THREADS" \
    --n_threads_batch "$THREADS" \
    --n_gpu_layers 0 \
    --interrupt_requests False
