#!/usr/bin/env python3
"""Tables of the H200 kernel-tuning run (cuda-run.sh) from its raw files, into RES/summary.md;
with --slow-table FILE also writes a tuning table of each grid's slowest feasible
configuration (to show that a table reaches the engine end to end)."""
import collections, json, statistics, sys
from pathlib import Path

res = Path(sys.argv[1])
out = []
tables = {"schema": 1, "entries": []}
for kernel in ["prefill_attention", "decode_attention"]:
    c = res / "campaigns" / kernel
    trials = [json.loads(l) for l in open(c / "grid" / "trials.jsonl")]
    ok = sorted((t for t in trials if t["status"] == "ok"), key=lambda t: t["objective"])
    grid_entry = json.load(open(c / "grid" / "tuning.json"))["entries"][0]
    out.append(f"## {kernel}\n")
    out.append(f"Shapes (from the untuned h200-64 run's steps, `--shapes-from`): "
               + "; ".join(f"`{s}`" for s in grid_entry["shapes"]) + "\n")
    out.append(open(c / "compare.md").read().replace("# Tuners compared\n", "").strip() + "\n")
    label = lambda t: ",".join(f"{k}={v}" for k, v in sorted(t["knobs"].items()))
    out.append("| rank | configuration | weighted ms per call | vs best |\n|---:|---|---:|---:|")
    for i, t in enumerate(ok):
        if i < 5 or i == len(ok) - 1:
            out.append(f"| {i + 1} | {label(t)} | {t['objective']:.4f} | {t['objective'] / ok[0]['objective']:.3f} |")
    out.append(f"\nHand-picked default (built-in path, same campaign): {grid_entry['default_ms']:.4f} ms; "
               f"the grid's best {grid_entry['ms']:.4f} ms ({grid_entry['default_ms'] / grid_entry['ms']:.3f}× the default's speed).\n")
    why = collections.Counter()
    for t in trials:
        if t["status"] != "ok":
            m = t.get("message", "")
            why["shared memory over the limit" if "shared memory" in m else
                "ptxas: insufficient registers" if "Insufficient registers" in m else m[:60]] += 1
    out.append("Infeasible (recorded, the campaign went on): "
               + ", ".join(f"{n} × {w}" for w, n in why.items()) + "\n")
    slow = dict(grid_entry, config=ok[-1]["knobs"], ms=ok[-1]["objective"])
    tables["entries"].append(slow)

out.append("## End to end (h200-64 on the CUDA engine, one device command)\n")
out.append("| run | policy | makespan s | TTFT p50 s | TPOT p50 ms | output tok/s |\n|---|---|---:|---:|---:|---:|")
groups = collections.defaultdict(list)
for p in sorted((res / "runs").glob("*/summary.json")):
    s = json.load(open(p)); m = s["metrics"]; name = p.parent.name
    pol = s["provenance"]["engine"]["policy"]
    out.append(f"| {name} | {pol} | {m['window_s']:.3f} | {m['ttft_s']['p50']:.3f} | {1e3 * m['tpot_s']['p50']:.2f} | {m['output_token_throughput']:.0f} |")
    kind = "tuned" if name.startswith("tuned") else "slow" if name.startswith("slow") else "untuned"
    groups[(kind, pol)].append(m["window_s"])
out.append("")
for (kind, pol), v in sorted(groups.items()):
    base = groups.get(("untuned", pol))
    rel = f", {statistics.mean(v) / statistics.mean(base):.4f}× untuned" if base and kind != "untuned" else ""
    spread = f" (min {min(v):.3f}, max {max(v):.3f}, n = {len(v)})" if len(v) > 1 else ""
    out.append(f"- {pol} {kind}: mean makespan {statistics.mean(v):.3f} s{spread}{rel}")
(res / "summary.md").write_text("# Kernel tuning on the H200: summary\n\n" + "\n".join(out) + "\n")
print((res / "summary.md").read_text())
if len(sys.argv) > 3 and sys.argv[2] == "--slow-table":
    Path(sys.argv[3]).write_text(json.dumps(tables, indent=2) + "\n")
