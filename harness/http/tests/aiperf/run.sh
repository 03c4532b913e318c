#!/usr/bin/env bash
# NVIDIA AIPerf (a widely used benchmark client, unchanged, from PyPI) drives
# `fuselab serve`: a streaming completions benchmark with fixed input and
# output lengths, then a check of AIPerf's own per-request records (ISL and
# OSL as AIPerf counted them with the server's tokenizer) against what was
# asked. Not part of CI (AIPerf's install is large); results in results/.
#
#   harness/http/tests/aiperf/run.sh OUT_DIR      (env: FUSELAB, ENGINE, ISL, OSL, CONCURRENCY, REQUESTS, PORT)
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
OUT="${1:?usage: run.sh OUT_DIR}"
FUSELAB="${FUSELAB:-fuselab}"
ENGINE="${ENGINE:-sim}"
ISL="${ISL:-512}" OSL="${OSL:-64}" CONCURRENCY="${CONCURRENCY:-8}" REQUESTS="${REQUESTS:-64}"
PORT="${PORT:-18555}"
VENV="${FUSELAB_PY_CACHE:-$HOME/.cache/fuselab/py}/aiperf"
if [[ ! -x "$VENV/bin/aiperf" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q aiperf==0.13.0
fi
mkdir -p "$OUT/tokenizer"
rm -rf "$OUT/aiperf"
"$FUSELAB" serve --engine "$ENGINE" --port "$PORT" --write-tokenizer "$OUT/tokenizer/tokenizer.json" \
    > "$OUT/serve.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true; wait $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 300); do grep -q " at http://" "$OUT/serve.log" && break; sleep 0.1; done
echo '{"tokenizer_class": "PreTrainedTokenizerFast", "model_max_length": 8192}' > "$OUT/tokenizer/tokenizer_config.json"
MODEL=$(python3 -c "import json,urllib.request; print(json.load(urllib.request.urlopen('http://127.0.0.1:$PORT/v1/models'))['data'][0]['id'])")
# A local tokenizer directory needs no hub (and AIPerf 0.13 refuses local paths in offline mode).
"$VENV/bin/aiperf" profile --model "$MODEL" --url "http://127.0.0.1:$PORT" \
    --endpoint-type completions --streaming --tokenizer "$OUT/tokenizer" \
    --isl "$ISL" --isl-stddev 0 --osl "$OSL" --osl-stddev 0 \
    --extra-inputs ignore_eos:true --extra-inputs "min_tokens:$OSL" \
    --concurrency "$CONCURRENCY" --request-count "$REQUESTS" --num-dataset-entries "$REQUESTS" \
    --random-seed 42 --ui-type none --no-gpu-telemetry \
    --export-level records --artifact-dir "$OUT/aiperf" > "$OUT/aiperf.log" 2>&1 || {
        tail -30 "$OUT/aiperf.log"; exit 1; }
tail -25 "$OUT/aiperf.log"
python3 - "$OUT/aiperf/profile_export.jsonl" "$ISL" "$OSL" "$REQUESTS" <<'PY' | tee "$OUT/check.txt"
import json, sys
path, isl, osl, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
recs = [json.loads(l) for l in open(path) if l.strip()]
def val(r, k):
    v = r.get("metrics", {}).get(k)
    return v.get("value") if isinstance(v, dict) else v
errors = [r for r in recs if r.get("error")]
isls = [val(r, "input_sequence_length") for r in recs]
osls = [val(r, "output_sequence_length") for r in recs]
ttft = sorted(val(r, "time_to_first_token") for r in recs if val(r, "time_to_first_token") is not None)
print(f"AIPerf records: {len(recs)} (asked {n}), errors: {len(errors)}")
print(f"ISL as AIPerf counted it: min {min(isls)} max {max(isls)} (asked {isl})")
print(f"OSL as AIPerf counted it: min {min(osls)} max {max(osls)} (asked {osl})")
if ttft:
    print(f"AIPerf TTFT p50 {ttft[len(ttft) // 2]:.2f} ms")
ok = len(recs) == n and not errors and set(isls) == {isl} and set(osls) == {osl}
print("PASS: every request had exactly the asked lengths" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
