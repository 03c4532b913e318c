#!/usr/bin/env python3
"""Speed-up tables of the real-H200 sweeps (cuda-h200/alpha-*.sweep.json) as markdown."""
import json
import sys
from pathlib import Path

here = Path(__file__).resolve().parent / "cuda-h200"
rows = []
for alpha in ["0.5", "0.7", "0.9"]:
    sweep = json.loads((here / f"alpha-{alpha}.sweep.json").read_text())
    by = {}
    for p in sweep["points"]:
        k = int(p["policy"].split("k=")[1])
        by[(k, p["load"])] = p["metrics"]
    for (k, load), m in sorted(by.items()):
        if k == 0:
            continue
        base = by[(0, load)]
        tput = m["output_token_throughput"] / base["output_token_throughput"]
        e2e = base["e2e_s"]["mean"] / m["e2e_s"]["mean"]
        tpot = base["tpot_s"]["p50"] / m["tpot_s"]["p50"]
        spec = m["engine"].get("spec") or {}
        rows.append((alpha, k, int(load), m["completed"], base["completed"], tput, tpot, e2e,
                     spec.get("acceptance_rate"), spec.get("block_efficiency"), spec.get("draft_time_share")))
out = sys.stdout
out.write("| α | k | clients | requests (k / k=0) | speed-up tok/s | TPOT p50 | E2E mean | acceptance | block eff | draft share |\n")
out.write("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
for a, k, load, n, n0, t, tp, e, acc, be, ds in rows:
    f = lambda v, d=2: "-" if v is None else f"{v:.{d}f}"
    out.write(f"| {a} | {k} | {load} | {n} / {n0} | **{t:.2f}** | {tp:.2f} | {e:.2f} | {f(acc, 3)} | {f(be)} | {f(ds and 100 * ds, 0)} % |\n")
