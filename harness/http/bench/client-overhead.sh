#!/usr/bin/env bash
# Client overhead at high concurrency (issue 11): `fuselab serve --engine null
# --delay 50ms,10ms` answers every request with its first token 50 ms after
# arrival and one token every 10 ms after that, so whatever `fuselab bench
# --engine http://…` measures beyond those delays is the client's (and the
# loopback's) overhead. An open-loop trace at RATE req/s of OUT-token answers
# keeps RATE × (0.05 + 0.01·(OUT−1)) streams in flight (≈1000 at the
# defaults).
#
#   harness/http/bench/client-overhead.sh OUT_DIR
#   (env: FUSELAB, RATE, N, OUT_TOKENS, PROMPT, PORT, WARMUP seconds, PRECONNECT connections,
#    SERVER_CPUS and CLIENT_CPUS: taskset CPU lists that keep the server and the load
#    generator on cores of their own, e.g. 0-3 and 4-15; each sizes its runtime to them)
set -euo pipefail
OUT="${1:?usage: client-overhead.sh OUT_DIR}"
FUSELAB="${FUSELAB:-fuselab}"
RATE="${RATE:-1000}"
N="${N:-8000}"
OUT_TOKENS="${OUT_TOKENS:-100}"
PROMPT="${PROMPT:-64}"
PORT="${PORT:-18777}"
mkdir -p "$OUT"
server_pin=() client_pin=()
[ -n "${SERVER_CPUS:-}" ] && server_pin=(taskset -c "$SERVER_CPUS")
[ -n "${CLIENT_CPUS:-}" ] && client_pin=(taskset -c "$CLIENT_CPUS")
echo "server cpus: ${SERVER_CPUS:-all}, client cpus: ${CLIENT_CPUS:-all} (of $(nproc))"
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

python3 - "$OUT/trace.jsonl" "$RATE" "$N" "$PROMPT" "$OUT_TOKENS" <<'PY'
import sys
path, rate, n, prompt, out = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
with open(path, "w") as f:
    for i in range(n):
        f.write(f'{{"arrival_s": {i / rate:.6f}, "prompt_len": {prompt}, "output_len": {out}}}\n')
PY

"${server_pin[@]}" "$FUSELAB" serve --engine null --delay 50ms,10ms --port "$PORT" --max-concurrency 100000 \
    > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 100); do
    grep -q " at http://" "$OUT/serve.log" && break
    sleep 0.1
done
rm -rf "$OUT/run"
"${client_pin[@]}" "$FUSELAB" bench --engine "http://127.0.0.1:$PORT" --trace "$OUT/trace.jsonl" \
    --scrape-interval 0 ${WARMUP:+--warmup $WARMUP} ${PRECONNECT:+--preconnect $PRECONNECT} \
    --out "$OUT/run" | tee "$OUT/bench.txt"
python3 -c "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:$PORT/metrics').read().decode())" \
    > "$OUT/server-metrics.txt" || true
grep -E "^fuselab:http_connections_total|^vllm:time_to_first_token_seconds_(sum|count)" "$OUT/server-metrics.txt" || true
# TTFT overhead by second of the run, where pyarrow is installed.
python3 - "$OUT/run" <<'PY' || true
import sys
try:
    import pyarrow.parquet as pq
except ImportError:
    sys.exit(0)
d = sys.argv[1]
req = pq.read_table(f"{d}/requests.parquet").to_pydict()
tok = pq.read_table(f"{d}/tokens.parquet").to_pydict()
first = {}
for i, idx, t in zip(tok["id"], tok["index"], tok["t"]):
    if idx == 0:
        first[i] = t
by_sec = {}
for i, ts in zip(req["id"], req["t_sent"]):
    if i in first:
        by_sec.setdefault(int(ts), []).append(1e3 * (first[i] - ts) - 50.0)
print("second  requests  TTFT overhead p50 / p99 / max (ms)")
for s in sorted(by_sec):
    v = sorted(by_sec[s])
    q = lambda p: v[min(len(v) - 1, int(p * len(v)))]
    print(f"{s:>6}  {len(v):>8}  {q(0.5):7.3f} / {q(0.99):7.3f} / {v[-1]:7.3f}")
PY

python3 - "$OUT/run/summary.json" "$OUT_TOKENS" <<'PY' | tee "$OUT/overhead.txt"
import json, sys
m = json.load(open(sys.argv[1]))["metrics"]
out = int(sys.argv[2])
ms = lambda s: 1e3 * s
in_flight = m["request_throughput"] * m["e2e_s"]["mean"]
print(f"requests {m['requests']}, completed {m['completed']}, failed {m['failed']}")
print(f"streams in flight (Little's law: throughput x mean E2E) {in_flight:.0f}")
print(f"TTFT  p50 {ms(m['ttft_s']['p50']):.3f} ms  p99 {ms(m['ttft_s']['p99']):.3f} ms  -> overhead over 50 ms: p50 {ms(m['ttft_s']['p50']) - 50:+.3f} ms, p99 {ms(m['ttft_s']['p99']) - 50:+.3f} ms")
print(f"ITL   p50 {ms(m['itl_s']['p50']):.3f} ms  p99 {ms(m['itl_s']['p99']):.3f} ms  -> overhead over 10 ms: p50 {ms(m['itl_s']['p50']) - 10:+.3f} ms, p99 {ms(m['itl_s']['p99']) - 10:+.3f} ms")
print(f"E2E   mean {ms(m['e2e_s']['mean']):.3f} ms (ideal {50 + 10 * (out - 1)} ms)")
print(f"send lag vs the absolute schedule: p50 {ms(m['schedule_lag_s']['p50']):.3f} ms, p99 {ms(m['schedule_lag_s']['p99']):.3f} ms")
ok = m["failed"] == 0 and ms(m["ttft_s"]["p99"]) - 50 <= 1.0 and ms(m["itl_s"]["p99"]) - 10 <= 1.0
print("PASS: no errors, p99 overheads <= 1 ms" if ok else "FAIL: errors or a p99 overhead above 1 ms")
sys.exit(0 if ok else 1)
PY
