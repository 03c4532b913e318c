#!/usr/bin/env bash
# In-process vs over HTTP (issue 11): the same workload through the same
# engine, once in process and once through `fuselab serve` and `fuselab bench
# --engine http://…` on loopback. Token counts must match request by
# request; the metrics' ratios (HTTP / in-process) show what HTTP adds.
#
#   harness/http/bench/inprocess-vs-http.sh OUT_DIR
#   (env: FUSELAB, ENGINE, POLICY, PRESET, N, RATE, PORT, WARMUP seconds left out of both runs,
#    EXTRA flags for both engines, e.g. "--model llama3-8b")
# ENGINE=sim compares the simulator on its virtual clock with the same
# simulator paced in real time behind the server; ENGINE=cpu or cuda runs the
# real engine both ways.
set -euo pipefail
OUT="${1:?usage: inprocess-vs-http.sh OUT_DIR}"
FUSELAB="${FUSELAB:-fuselab}"
ENGINE="${ENGINE:-sim}"
POLICY="${POLICY:-splitfuse}"
PRESET="${PRESET:-fastgen-1200}"
N="${N:-200}"
RATE="${RATE:-4}"
PORT="${PORT:-18778}"
EXTRA=(${EXTRA:-})
mkdir -p "$OUT"
rm -rf "$OUT/inproc" "$OUT/http"
WARM=(${WARMUP:+--warmup $WARMUP})
"$FUSELAB" bench --engine "$ENGINE" --policy "$POLICY" "${EXTRA[@]}" --preset "$PRESET" --n "$N" --rate "$RATE" \
    "${WARM[@]}" --out "$OUT/inproc" | tee "$OUT/inproc.txt"
"$FUSELAB" serve --engine "$ENGINE" --policy "$POLICY" "${EXTRA[@]}" --port "$PORT" > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 600); do
    grep -q " at http://" "$OUT/serve.log" && break
    sleep 0.1
done
"$FUSELAB" bench --engine "http://127.0.0.1:$PORT" --preset "$PRESET" --n "$N" --rate "$RATE" \
    "${WARM[@]}" --out "$OUT/http" | tee "$OUT/http.txt"
python3 - "$OUT" <<'PY' | tee "$OUT/ratios.txt"
import json, sys
out = sys.argv[1]
a = json.load(open(f"{out}/inproc/summary.json"))["metrics"]
b = json.load(open(f"{out}/http/summary.json"))["metrics"]
print(f"requests: in-process {a['requests']} ({a['completed']} ok), over HTTP {b['requests']} ({b['completed']} ok)")
rows = [("TTFT p50", "ttft_s", "p50"), ("TTFT p99", "ttft_s", "p99"), ("TPOT p50", "tpot_s", "p50"),
        ("TPOT p99", "tpot_s", "p99"), ("ITL p50", "itl_s", "p50"), ("E2E p50", "e2e_s", "p50"), ("E2E p99", "e2e_s", "p99")]
print(f"{'metric':<22}{'in-process':>14}{'over HTTP':>14}{'HTTP/in-process':>18}")
for name, k, q in rows:
    x, y = a[k][q], b[k][q]
    print(f"{name:<22}{1e3 * x:>12.3f}ms{1e3 * y:>12.3f}ms{y / x if x else float('nan'):>18.3f}")
for name, k in [("output tok/s", "output_token_throughput"), ("requests/s", "request_throughput")]:
    x, y = a[k], b[k]
    print(f"{name:<22}{x:>14.2f}{y:>14.2f}{y / x if x else float('nan'):>18.3f}")
if b.get("lengths"):
    print("length check over HTTP:", b["lengths"])
PY
