#!/usr/bin/env bash
# Installs Ray (pip `ray[default]`, pinned, into a cached venv) and starts a
# local Ray head whose dashboard serves the Ray Jobs API on
# http://127.0.0.1:8265, for the executor tests. Idempotent: a venv with the
# same pin and a head that answers are left alone.
# Venv: ${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}/ray
# Prints the Jobs API address as the last line of stdout.
set -euo pipefail

RAY_VERSION=2.60.0
CACHE="${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}"
VENV="$CACHE/ray"
MARKER="$VENV/.fuselab-pins"
PYTHON="${PYTHON:-python3}"
ADDRESS=http://127.0.0.1:8265

log() { echo "start-ray: $*" >&2; }

if [[ ! -f "$MARKER" || "$(cat "$MARKER")" != "ray[default]==$RAY_VERSION" || ! -x "$VENV/bin/ray" ]]; then
    start=$(date +%s)
    mkdir -p "$CACHE"
    rm -rf "$VENV"
    "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip >&2
    "$VENV/bin/python" -m pip install --quiet "ray[default]==$RAY_VERSION" >&2
    echo "ray[default]==$RAY_VERSION" > "$MARKER"
    log "installed ray[default]==$RAY_VERSION in $(( $(date +%s) - start )) s"
fi

up() { curl -fsS "$ADDRESS/api/version" >/dev/null 2>&1; }
if ! up; then
    # 4 logical CPUs so that 4 one-CPU trials fit on a 2-core machine.
    RAY_USAGE_STATS_ENABLED=0 "$VENV/bin/ray" start --head --num-cpus 4 \
        --dashboard-host 127.0.0.1 --dashboard-port 8265 --disable-usage-stats >&2
    for _ in $(seq 150); do up && break; sleep 0.2; done
fi
if ! up; then
    log "the Ray dashboard did not answer at $ADDRESS"; exit 1
fi
log "ray head up at $ADDRESS"
echo "$ADDRESS"
