#!/usr/bin/env bash
# Idempotent, cached install of llama.cpp's OpenAI-compatible server
# (llama-cpp-python[server], built CPU-only from source) plus the helpers
# the fixture needs (gguf, numpy, openai, tokenizers).
#
# Venv: ${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}/llamacpp
# Skips everything when the venv's marker file records the same pins.
# Prints the venv path as the last line of stdout.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION=0.3.36
GGUF_VERSION=0.19.0
NUMPY_VERSION=2.4.6
OPENAI_VERSION=3.57.0
TOKENIZERS_VERSION=0.23.3

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CACHE="${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}"
VENV="$CACHE/llamacpp"
MARKER="$VENV/.fuselab-pins"
PYTHON="${PYTHON:-python3}"

PINS="llama-cpp-python[server]==$LLAMA_CPP_PYTHON_VERSION gguf==$GGUF_VERSION numpy==$NUMPY_VERSION openai==$OPENAI_VERSION tokenizers==$TOKENIZERS_VERSION"
CONSTRAINTS="$HERE/constraints.txt"
# The marker covers the pins and the transitive constraints file.
WANT="$PINS $( { cat "$CONSTRAINTS" 2>/dev/null || true; } | sha256sum | cut -c1-16)"

if [[ -f "$MARKER" && "$(cat "$MARKER")" == "$WANT" && -x "$VENV/bin/python" ]]; then
    echo "llamacpp venv up to date: $VENV" >&2
    echo "$VENV"
    exit 0
fi

start=$(date +%s)
mkdir -p "$CACHE"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip >&2

# CPU-only, portable (no -march=native), no BLAS, no tests/examples.
# LLAVA_BUILD=OFF skips the multimodal (mtmd) library, which the text server
# never loads. scikit-build-core pulls cmake and ninja from PyPI when the system has none.
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_BLAS=OFF -DGGML_CUDA=OFF -DGGML_METAL=OFF -DGGML_VULKAN=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_TOOLS=OFF -DLLAVA_BUILD=OFF}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}"
export FORCE_CMAKE=1

cargs=()
[[ -f "$CONSTRAINTS" ]] && cargs=(-c "$CONSTRAINTS")
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --no-cache-dir "${cargs[@]}" $PINS >&2

echo "$WANT" > "$MARKER"
end=$(date +%s)
echo "llamacpp venv installed in $((end - start))s: $VENV" >&2
echo "$VENV"
