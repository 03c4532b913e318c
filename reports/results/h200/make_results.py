#!/usr/bin/env python3
"""Builds reports/results/h200/e2e.json and e2e.md from one device run's files.

usage: make_results.py RES_DIR DEST_DIR [PREVIOUS_E2E_JSON]

RES_DIR holds what both parts of device-run.sh wrote (res-kernels.tgz and res-e2e.tgz
unpacked into one folder); PREVIOUS_E2E_JSON, when given, is the e2e.json this run
replaces, whose figures are kept beside the new ones.
"""
import json, re, sys, pathlib

src = pathlib.Path(sys.argv[1])
dst = pathlib.Path(sys.argv[2])
prev = json.loads(pathlib.Path(sys.argv[3]).read_text()) if len(sys.argv) > 3 else None
log = "".join((src / n).read_text() for n in ("log-kernels.txt", "log-e2e.txt", "log-gpu-tests.txt", "log.txt")
              if (src / n).exists())
policies = ["continuous", "chunked", "splitfuse", "prepack", "static"]
workload = [json.loads(l) for l in (src / "w.jsonl").read_text().splitlines()] \
    if (src / "w.jsonl").exists() else None
fl = {}
for p in policies:
    f = src / f"{p}.json"
    if not f.exists():
        continue
    s = json.loads(f.read_text())
    m = s["metrics"]
    pw = re.search(rf"== {p} rc=(\d+) process_wall_s=([\d.]+)", log)
    e = m.get("engine") or {}
    fl[p] = {
        "e2e_wall_s": round(m["window_s"], 3),
        "completed": m["completed"],
        "requests": m["requests"],
        "output_tok_s": round(m["output_token_throughput"], 1),
        "ttft_p50_s": round(m["ttft_s"]["p50"], 3),
        "ttft_p99_s": round(m["ttft_s"]["p99"], 3),
        "tpot_p50_s": round(m["tpot_s"]["p50"], 5),
        "process_wall_s": float(pw.group(2)) if pw else None,
        "engine": e,
        "knobs": s["provenance"]["engine"].get("knobs"),
        "workload_digest": s["provenance"].get("workload_digest"),
    }
variants = {}
for name, what in [("continuous-no-graphs", "decode steps kernel by kernel (--no-cuda-graphs)"),
                   ("continuous-skinny-gemm", "decode GEMMs on fuselab's skinny kernel (tiled weight copies streamed by bulk copies into wgmma, k split over clusters), not cuBLAS (--cuda-skinny-gemm)"),
                   ("continuous-skinny-gemm-again", "continuous with --cuda-skinny-gemm again, after the other runs (run-to-run spread)"),
                   ("continuous-again", "continuous (default) again, after the other runs (run-to-run spread)"),
                   ("continuous-pdl", "decode graphs captured with programmatic dependent launch (--cuda-pdl)"),
                   ("continuous-pdl-again", "continuous with --cuda-pdl again, after the other runs (run-to-run spread)"),
                   ("continuous-pdl-skinny-gemm", "programmatic launch with the skinny decode GEMMs, which stream their first weight tiles before the wait (--cuda-pdl --cuda-skinny-gemm)"),
                   ("continuous-pdl-skinny-gemm-again", "continuous with --cuda-pdl --cuda-skinny-gemm again (run-to-run spread)"),
                   ("continuous-budget16384-pdl", "token budget 16384 with programmatic launch (--knob budget=16384 --cuda-pdl)"),
                   ("continuous-budget16384-pdl-skinny-gemm", "token budget 16384, programmatic launch, skinny decode GEMMs (--knob budget=16384 --cuda-pdl --cuda-skinny-gemm)"),
                   ("continuous-budget16384-skinny-gemm", "token budget 16384 with the skinny decode GEMMs (--knob budget=16384 --cuda-skinny-gemm)"),
                   ("continuous-no-gemm-tuning", "decode GEMMs on cuBLAS's default algorithm, no cuBLASLt tuning at the warm-up (--no-cuda-gemm-tuning, when tuning was the default)"),
                   ("continuous-gemm-tuning", "decode GEMMs through the cuBLASLt algorithms timed at the warm-up (--cuda-gemm-tuning)"),
                   ("continuous-r256", "the mma.sync prefill tile r256 (--cuda-prefill-tile r256)"),
                   ("continuous-wg128x2", "the previous default prefill tile wg128x2 (--cuda-prefill-tile wg128x2)"),
                   ("continuous-budget16384", "token budget 16384 (--knob budget=16384)"),
                   ("continuous-budget16384-again", "token budget 16384 again (run-to-run spread)"),
                   ("continuous-budget16384-skinny-gemm-again", "token budget 16384 with the skinny decode GEMMs again (run-to-run spread)"),
                   ("continuous-budget32768", "token budget 32768 (--knob budget=32768)"),
                   ("continuous-budget32768-again", "token budget 32768 again (run-to-run spread)"),
                   ("continuous-budget32768-skinny-gemm", "token budget 32768 with the skinny decode GEMMs (--knob budget=32768 --cuda-skinny-gemm)"),
                   ("continuous-budget32768-skinny-gemm-again", "token budget 32768 with the skinny decode GEMMs again (run-to-run spread)"),
                   ("continuous-budget65536", "token budget 65536 (--knob budget=65536)"),
                   ("continuous-budget65536-again", "token budget 65536 again (run-to-run spread)"),
                   ("continuous-budget65536-skinny-gemm", "token budget 65536 with the skinny decode GEMMs (--knob budget=65536 --cuda-skinny-gemm)"),
                   ("continuous-budget65536-skinny-gemm-again", "token budget 65536 with the skinny decode GEMMs again (run-to-run spread)"),
                   ("chunked-budget512", "chunked, 512-token chunks (--knob budget=512): unpaired ping-pong tile wg128ppu by default"),
                   ("chunked-budget512-x2s", "chunked, 512-token chunks, the previous default split tile (--cuda-prefill-tile wg128x2s)")]:
    f = src / f"{name}.json"
    if f.exists():
        m = json.loads(f.read_text())["metrics"]
        variants[name] = {"what": what, "e2e_wall_s": round(m["window_s"], 3),
                          "ttft_p50_s": round(m["ttft_s"]["p50"], 3), "tpot_p50_s": round(m["tpot_s"]["p50"], 5),
                          "steps": (m.get("engine") or {}).get("steps")}
kernels = json.loads((src / "kernels.json").read_text()) if (src / "kernels.json").exists() else None
# Without the kernels part, the read probe of the `skinny` part (same machine, 1 GiB) sets the decode floor.
probe_run = kernels or (json.loads((src / "kernels_skinny.json").read_text())
                        if (src / "kernels_skinny.json").exists() else None)
def decode_vs_probe(name):
    """The batch-64 decode steps of profile `name` against their bytes at the read probe."""
    f = src / name
    if not (f.exists() and probe_run):
        return None
    profile = json.loads(f.read_text())
    steps = [d for d in profile["decode_steps"] if d["batch"] == 64]
    if not steps:
        return None
    ms = sum(d["wall_ms"] for d in steps) / len(steps)
    byts = sum(profile["weight_bytes_per_step"] + d["context_tokens"] * profile["kv_bytes_per_token"]
               for d in steps) / len(steps)
    floor_ms = byts / (probe_run["read_gbs"] * 1e9) * 1e3
    return {"steps": len(steps), "mean_ms": round(ms, 3), "mean_gb": round(byts / 1e9, 2),
            "read_probe_gbs": round(probe_run["read_gbs"], 1), "floor_ms": round(floor_ms, 3),
            "read_probe_from": probe_run["command"],
            "ratio": round(ms / floor_ms, 3), "met": ms <= 1.10 * floor_ms}


decode_check = decode_vs_probe("profile.json")


def decode_classes(name):
    """Kernel-by-kernel decode (profile `name`): each class's ms a step against the bytes it
    must read at the read probe. Llama-3-8B, the model of every run on this page."""
    f = src / name
    if not (f.exists() and probe_run):
        return []
    profile = json.loads(f.read_text())
    ph = profile["phases"]["decode"]
    steps = [d for d in profile["decode_steps"] if d["batch"] == 64]
    if not ph["steps"] or len(steps) != ph["steps"]:
        return []
    layers, hidden, qkv, ffn, vocab = 32, 4096, 6144, 14336, 128256
    kv = sum(d["context_tokens"] for d in steps) / len(steps) * profile["kv_bytes_per_token"]
    weights = {"gemm_qkv": layers * hidden * qkv * 2, "gemm_o_residual": layers * hidden * hidden * 2,
               "gemm_gate_up": layers * hidden * 2 * ffn * 2, "gemm_down_residual": layers * ffn * hidden * 2,
               "head": hidden * vocab * 2, "decode_attention": kv}
    gbs = probe_run["read_gbs"] * 1e9
    rows = []
    for op, ms in ph["ops_ms"].items():
        if ms <= 0:
            continue
        per_step = ms / ph["steps"]
        b = weights.get(op)
        rows.append({"class": op, "ms_per_step": round(per_step, 3),
                     "gb_per_step": round(b / 1e9, 3) if b else None,
                     "floor_ms": round(b / gbs * 1e3, 3) if b else None,
                     "ratio": round(per_step / (b / gbs * 1e3), 3) if b else None})
    return rows


decode_breakdown = decode_classes("profile_no_graphs.json")
decode_breakdown_skinny = decode_classes("profile_no_graphs_skinny_gemm.json")
# The same check on the profiles of the opt-in decode paths (same command).
decode_variants = {n: c for n, c in (
    ("--cuda-skinny-gemm", decode_vs_probe("profile_skinny_gemm.json")),
    ("--cuda-pdl", decode_vs_probe("profile_pdl.json")),
    ("--cuda-pdl --cuda-skinny-gemm", decode_vs_probe("profile_pdl_skinny_gemm.json"))) if c}
sdpa = []
if kernels:
    for r in kernels["rows"]:
        if r.get("target") == ">= PyTorch SDPA" and r.get("baseline") and "(default tile)" in r["shape"]:
            sdpa.append({"kernel": r["kernel"], "shape": r["shape"], "tflops": round(r["rate"], 1),
                         "sdpa_tflops": r["baseline"], "ratio": round(r["rate"] / r["baseline"], 3),
                         "met": bool(r.get("target_met"))})
sanitizer = {}
for f in sorted(src.glob("sanitizer_*.txt")):
    text = f.read_text()
    summary = re.findall(r"(?:ERROR|RACECHECK) SUMMARY: .*$", text, re.M)
    named = sorted(set(re.findall(r"(?:in|kernel) (\w+)(?:<|\(| at)", text)))
    hazard_kernels = sorted(set(re.findall(r"Race reported between \w+ access at (\w+)", text)))
    verdict = summary[-1] if summary else "(no summary line: it ran out of time)"
    if "Internal Sanitizer Error" in text:
        verdict += " (the tool itself failed: \"Internal Sanitizer Error\", so no verdict)"
    sanitizer[f.stem] = {"summary": verdict,
                         "result": (re.findall(r"^test result: .*$", text, re.M) or ["(no test result)"])[-1],
                         "kernels_named": [k for k in named if k][:20], "hazard_kernels": hazard_kernels}
tune_gpus = json.loads((src / "tune_gpus.json").read_text()) if (src / "tune_gpus.json").exists() else None
tune_lines = [l for l in (src / "tune_gpus.txt").read_text().splitlines()
              if re.match(r"^(executor:|GPU |campaign wall|best:|\d+ trials)", l)] \
    if (src / "tune_gpus.txt").exists() else []
hf = json.loads((src / "hf.json").read_text()) if (src / "hf.json").exists() else {}
hs, hc = hf.get("static_bs16_wall_s"), hf.get("continuous_batching_wall_s")
best = min(fl, key=lambda p: fl[p]["e2e_wall_s"]) if fl else None
for p, r in fl.items():
    r["ratio_hf_static_bs16"] = round(hs / r["e2e_wall_s"], 2) if hs else None
    r["ratio_hf_continuous"] = round(hc / r["e2e_wall_s"], 2) if hc else None

# The GPU tests that ran, from their own output.
tests = {}
for f in sorted(src.glob("gpu_tests_*.txt")):
    text = f.read_text()
    binary = f.stem[len("gpu_tests_"):]
    rc = re.search(rf"^{re.escape(binary)} rc=(\d+)", log, re.M)
    # With --nocapture a test's own output sits between "test NAME ... " and its result.
    results, current = {}, None
    for line in text.splitlines():
        m = re.match(r"^test (\S+) \.\.\. ?(.*)$", line)
        if m:
            current, rest = m.group(1), m.group(2).strip()
            if rest in ("ok", "FAILED", "ignored"):
                results[current], current = rest, None
        elif current and line.strip() in ("ok", "FAILED", "ignored"):
            results[current], current = line.strip(), None
    tests[binary] = {
        "rc": int(rc.group(1)) if rc else None,
        "tests": results,
        "summary": (re.findall(r"^test result: .*$", text, re.M) or ["(no result line)"])[-1],
        "skipped": re.findall(r"SKIPPED .*$", text, re.M),
        "numbers": [m.strip() for m in re.findall(
            r"((?:prefill of|decode at|step \d+ request|\w+ request \d+: max \|cold).*)$", text, re.M)],
    }

gpu = re.search(r"^name, memory.total.*\n(.*)$", log, re.M)
implied_decode = sum(r["output_len"] - 1 for r in workload) if workload else None
out = {
    "what": "64-request h200-64 workload (burst at t=0, prompts N(2600, 0.3*2600) clamped [256, 4096], 128 output tokens each), Llama-3-8B shape, bf16 random weights, greedy decoding; fuselab CUDA engine per policy vs HF transformers on the same exported workload in the same device command",
    "device": (lambda f: f"{f[0]} ({f[1]}, driver {f[2]}" + (f", {f[4]} power limit)" if len(f) > 4 else ")"))(
        [x.strip() for x in gpu.group(1).split(",")]) if gpu else None,
    "weights": "random bf16 (seeded); speed depends on shapes, not values: every request runs exactly its prompt and its 128 output tokens (no EOS), so the work per step is fixed by the workload",
    "implied_decode_tokens": implied_decode,
    "fuselab": fl,
    "hf": hf,
    "gpu_tests": tests,
    "best": {"policy": best, "e2e_wall_s": fl[best]["e2e_wall_s"] if best else None, "target_s": 5.0,
             "met": bool(best and fl[best]["e2e_wall_s"] <= 5.0)},
    "variants": variants,
    "decode_step_vs_read_probe": decode_check,
    "decode_step_vs_read_probe_variants": decode_variants,
    "decode_kernel_by_kernel_vs_bytes": decode_breakdown,
    "decode_kernel_by_kernel_vs_bytes_skinny_gemm": decode_breakdown_skinny,
    "prefill_attention_vs_sdpa": sdpa,
    "chunk_after_prefix": [c for c in (kernels or {}).get("comparisons", []) if c["name"].startswith("chunks")],
    "sanitizer": sanitizer,
    "tune_gpus": tune_gpus,
    "previous": {p: {k: r.get(k) for k in ("e2e_wall_s", "ttft_p50_s", "ttft_p99_s")} | {
        "steps": r["engine"].get("steps"), "decode_tokens": r["engine"].get("decode_tokens")}
        for p, r in (prev or {}).get("fuselab", {}).items()},
}
dst.mkdir(parents=True, exist_ok=True)
(dst / "e2e.json").write_text(json.dumps(out, indent=1) + "\n")

rows = ["| policy | e2e_wall_s | output tok/s | TTFT p50 | TTFT p99 | steps | decode tokens | padding % | completed | HF static bs16 (s) | ratio | HF continuous (s) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
for p in policies:
    if p in fl:
        r = fl[p]
        e = r["engine"]
        comp = e.get("prefill_tokens", 0) + e.get("decode_tokens", 0) + e.get("padding_tokens", 0)
        pad = 100.0 * e.get("padding_tokens", 0) / comp if comp else 0.0
        rows.append(f"| {p} | {r['e2e_wall_s']:.2f} | {r['output_tok_s']:.0f} | {r['ttft_p50_s']:.2f} s | {r['ttft_p99_s']:.2f} s | {e.get('steps')} | {e.get('decode_tokens')} | {pad:.1f} | {r['completed']}/{r['requests']} | {hs} | {r['ratio_hf_static_bs16']}× | {hc} | {r['ratio_hf_continuous']}× |")
prev_rows = ["| policy | e2e_wall_s then → now | TTFT p50 then → now | steps then → now | decode tokens then → now |", "|---|---|---|---|---|"]
for p in policies:
    if p in out["previous"] and p in fl:
        a, b = out["previous"][p], fl[p]
        prev_rows.append(f"| {p} | {a['e2e_wall_s']} → {b['e2e_wall_s']} | {a['ttft_p50_s']} → {b['ttft_p50_s']} | {a['steps']} → {b['engine'].get('steps')} | {a['decode_tokens']} → {b['engine'].get('decode_tokens')} |")
same_work = all(
    out["previous"][p]["steps"] == fl[p]["engine"].get("steps")
    and out["previous"][p]["decode_tokens"] == fl[p]["engine"].get("decode_tokens")
    for p in policies
    if p in out["previous"] and p in fl
)
prev_note = (
    "Steps and decode tokens are the same as in the previous run: the schedules did not change; "
    "the times differ by run-to-run noise and by any change to the code between the two builds."
    if same_work
    else "The runs differ in steps or decode tokens: the schedules changed between the two builds."
)
test_lines = []
for binary, t in tests.items():
    test_lines.append(f"- `{binary}` (exit {t['rc']}): {t['summary']}")
    for name, res in t["tests"].items():
        test_lines.append(f"  - `{name}`: {res}")
    for s in t["skipped"]:
        test_lines.append(f"  - {s}")
    for n in t["numbers"]:
        test_lines.append(f"  - {n}")
pw = ", ".join(f"{p} {fl[p]['process_wall_s']}" for p in policies if p in fl and fl[p]['process_wall_s'])
decode_ok = implied_decode is not None and all(
    fl[p]["engine"].get("decode_tokens") == implied_decode and fl[p]["engine"].get("preemptions") == 0
    for p in fl)
variant_table = "\n".join(
    ["| run | what | e2e_wall_s | TTFT p50 | TPOT p50 | steps |", "|---|---|---|---|---|---|"]
    + [f"| {n} | {v['what']} | {v['e2e_wall_s']} | {v['ttft_p50_s']} s | {v['tpot_p50_s'] * 1e3:.1f} ms | {v['steps']} |"
       for n, v in variants.items()]) if variants else "(none ran)"
profile_md = (src / "profile.md").read_text().split("\n", 4)[-1] if (src / "profile.md").exists() else "(no profile)"
if (src / "profile_no_graphs.md").exists():
    profile_md += "\n\nDecode kernel by kernel:\n\n" + (src / "profile_no_graphs.md").read_text().split("\n", 4)[-1]
decode_line = (f"Decode step at batch 64 ({decode_check['steps']} steps, CUDA graphs): mean {decode_check['mean_ms']} ms "
               f"for {decode_check['mean_gb']} GB of weights and K/V, against {decode_check['floor_ms']} ms at the "
               f"read-only probe's {decode_check['read_probe_gbs']} GB/s: {decode_check['ratio']}× "
               f"({'within' if decode_check['met'] else 'NOT within'} the 10 % goal; probe from "
               f"{decode_check['read_probe_from'].strip()}).") if decode_check else ""
def breakdown_md(rows):
    """The kernel-by-kernel decode rows as a table ('' when there are none)."""
    return "\n".join(
        ["| class | ms a step | GB read a step | ms at the read probe | × |", "|---|---:|---:|---:|---:|"]
        + [f"| {r['class']} | {r['ms_per_step']} | {r['gb_per_step'] if r['gb_per_step'] is not None else '-'} | "
           f"{r['floor_ms'] if r['floor_ms'] is not None else '-'} | {r['ratio'] if r['ratio'] is not None else '-'} |"
           for r in rows]) if rows else ""


breakdown_table = breakdown_md(decode_breakdown)
if decode_breakdown_skinny:
    breakdown_table += ("\n\nThe same with the skinny decode GEMMs (`--cuda-skinny-gemm`, "
                        "`profile_no_graphs_skinny_gemm.md`):\n\n" + breakdown_md(decode_breakdown_skinny))
decode_line += "".join(
    f" With `{n}`: {c['mean_ms']} ms, {c['ratio']}× ({'within' if c['met'] else 'NOT within'} 10 %)."
    for n, c in decode_variants.items())
sdpa_table = "\n".join(
    ["| kernel | shape | TFLOP/s | SDPA TFLOP/s | ratio | ≥ SDPA |", "|---|---|---|---|---|---|"]
    + [f"| {r['kernel']} | {r['shape']} | {r['tflops']} | {r['sdpa_tflops']} | {r['ratio']} | {'yes' if r['met'] else 'no'} |"
       for r in sdpa]) if sdpa else "(the kernels part did not run with this page's build: `kernels.md` is from the build its header names)"
chunk_lines = "\n".join(f"- {c['name']}: {c['ratio']:.3f} ({c['detail']})" for c in out["chunk_after_prefix"])
sanitizer_lines = "\n".join(
    f"- `{n}`: {v['summary']}" + (f"; {v['result']}" if v['result'] != "(no test result)" else "") + (f"; the hazards displayed are all in: {', '.join(v['hazard_kernels'])}" if v['hazard_kernels'] else "")
    for n, v in sanitizer.items()) or "(not run)"
builds = (src / "builds.md").read_text().strip() if (src / "builds.md").exists() else ""
md = f"""# H200 end to end: fuselab CUDA engine vs HF transformers

Workload: `fuselab workload --preset h200-64 --export w.jsonl` (64 requests, burst at t = 0,
prompts N(2600, 0.3·2600) clamped to [256, 4096], 128 output tokens each); Llama-3-8B shape in
bf16; greedy. Device: {out['device']}. fuselab: `fuselab bench --engine cuda --model llama3-8b
--policy P --trace w.jsonl` (default knobs); `e2e_wall_s` is the measured window, first send to
last token. HF: `hf_baseline.py --workload w.jsonl` (transformers {hf.get('transformers')}, torch
{hf.get('torch')}) in the same device command: static batch 16 took **{hs} s**, continuous
batching (`generate_batch`) **{hc} s**.

{chr(10).join(rows)}

Best policy with default knobs: **{best}**, {out['best']['e2e_wall_s']} s against the target of 5.0 s
({'met' if out['best']['met'] else 'NOT met'}; the practical floor is about 4.8 s: research/review/cuda.md §1).

Variants in the same command:

{variant_table}

## Where the time goes: the per-operator profile

`fuselab bench ... --policy continuous --cuda-profile profile.json` in the same command (CUDA
events around every operator class of every layer; a run of its own, as the events cost a
little). With CUDA graphs a decode step is one replayed graph (`decode_graph`); the second table
runs the decode steps kernel by kernel to split them. Full tables: `profile.md`,
`profile_no_graphs.md`; every step: `profile.json`.

{profile_md}

{decode_line}

{"Decode kernel by kernel (`profile_no_graphs.md`, events around each class) against what each class must read (weights; K/V for attention; the small kernels read activations only):" + chr(10) + chr(10) + breakdown_table if breakdown_table else ""}

## Kernels against PyTorch in the same command

From `kernels.md` (method: N = 32 back-to-back launches between two events, median of 10),
the tile the engine picks at each shape (every tile's row is in `kernels.md`):

{sdpa_table}

{chunk_lines}

## compute-sanitizer

{sanitizer_lines}

## One trial per GPU (`tune --executor local --gpus all`, one GPU here)

```
{chr(10).join(tune_lines) if tune_lines else '(not run)'}
```

Every step is recorded: the workload implies {implied_decode} decode tokens (64 × 127) and every
policy's steps add up to {'exactly that, with no preemption' if decode_ok else 'something else: see e2e.json'}.
`static` and `prepack` return each request's tokens when its batch of 16 ends, as HF `generate`
does (the `stream` knob, off for them by default), so their TTFT is the batch's end.

`ratio` = HF wall time / fuselab `e2e_wall_s` (higher is better for fuselab). Each fuselab
process, start-up included (NVRTC compile, 16 GB of weights filled on the device, the KV
cache), took {pw} s. The full console output of the device command is in `e2e_log.txt`.

## The GPU tests

Run by `device-run.sh` (its `kernels` or `gpu-tests` part) with `FUSELAB_REQUIRE_GPU=1`, so
that a test that cannot reach the GPU fails rather than skips; their full output is in
`gpu_tests_*.txt`.

{chr(10).join(test_lines) if test_lines else '(none ran)'}

## The figures this run replaces

{chr(10).join(prev_rows) if len(prev_rows) > 2 else '(no previous run given)'}

{prev_note}

## How it was run

{builds}

The parts of `device-run.sh` beside this file ran as device commands (a command may run at
most 10 minutes; which parts, in the note above), with the binaries and `hf_baseline.py`
carried in `gpu/`, built here by `build-for-device.sh`; `make_results.py` wrote this page from
what they returned, and `e2e_log.txt` is their consoles.

The weights are random (seeded, bf16). That does not change speed: every GEMM, attention and
norm costs the same for any values of the same shape and dtype, and decoding is greedy with no
end-of-sequence token, so every request computes exactly its prompt and 128 output tokens in
either engine; the schedule, and hence the work per step, depends only on the lengths.
"""
(dst / "e2e.md").write_text(md)
for n in ("profile.md", "profile_no_graphs.md", "profile.json", "profile_no_graphs.json",
          "profile_pdl.md", "profile_pdl.json", "profile_pdl_skinny_gemm.md", "profile_pdl_skinny_gemm.json",
          "profile_skinny_gemm.md", "profile_skinny_gemm.json",
          "profile_no_graphs_skinny_gemm.md", "profile_no_graphs_skinny_gemm.json"):
    if (src / n).exists():
        (dst / n).write_text((src / n).read_text())
print(md)
