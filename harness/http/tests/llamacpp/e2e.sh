#!/usr/bin/env bash
# End to end: install (cached), write the model, start the server in the
# background, run probe.py against it, stop the server.
#   e2e.sh [WORK_DIR] [PORT]     (defaults: a mktemp dir, 18088)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WORK="${1:-$(mktemp -d)}"
PORT="${2:-18088}"
VENV="$("$HERE/setup.sh" | tail -n 1)"
"$VENV/bin/python" "$HERE/make_gguf.py" "$WORK"
"$HERE/serve.sh" "$WORK" "$PORT" > "$WORK/server.log" 2>&1 &
SERVER_PID=$!
trap 'kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true' EXIT
t0=$(date +%s%N)
for _ in $(seq 120); do
    if "$VENV/bin/python" -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$PORT/v1/models', timeout=2)" 2>/dev/null; then
        break
    fi
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 30 "$WORK/server.log" >&2; exit 1; }
    sleep 0.5
done
echo "server ready after $(( ($(date +%s%N) - t0) / 1000000 )) ms (log: $WORK/server.log)"
"$VENV/bin/python" "$HERE/probe.py" "http://127.0.0.1:$PORT" --tokenizer "$WORK/tokenizer.json"
