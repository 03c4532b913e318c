//! The CPU half of `fuselab calibrate`: fit a calibration to raw measurements
//! (`--fit RAW --out FILE`), compare it with the GPU's Poisson serving runs,
//! and print what a calibration is and how well it predicts (`--show`).
//!
//! The serving comparison replays each run's trace through the simulator
//! exactly as a user would (`fuselab bench --engine sim --calibration FILE
//! --trace RAW/serving/NAME.trace.jsonl --policy P`, with the run's policy
//! knobs) and compares P50 and P90 TTFT and time per output token with the
//! run's own `summary.json`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fuselab_core::Error;
use fuselab_engine::{PolicyConfig, PolicyKind};
use fuselab_sim::{Calibration, ErrorStat, ServingCheck, anchors, fitting, raw::RawCalibration};

use crate::cmd::bench::{BenchArgs, EngineChoice, EngineOpts};
use crate::cmd::workload::WorkloadOpts;
use crate::exec::EngineKind;

/// Held-out per-step MAPE bound per policy (the bounds are shown beside the errors).
pub const STEP_BOUND: f64 = 0.05;
/// Held-out error bound per operator class.
pub const OP_BOUND: f64 = 0.08;
/// Serving P50 bound.
pub const SERVING_BOUND: f64 = 0.10;
/// Chunked-prefill bound.
pub const CHUNKED_BOUND: f64 = 0.10;

/// Fits `raw_dir` into the calibration file `out`, compares it with the
/// serving runs in `raw_dir/serving/`, and returns the report.
///
/// # Errors
/// An unreadable or unfittable raw folder, a serving run that cannot be
/// replayed, or an output that cannot be written.
pub fn fit(raw_dir: &Path, out: &Path) -> anyhow::Result<String> {
    let raw = RawCalibration::read(raw_dir)?;
    let mut cal = fitting::fit(
        &raw,
        &raw_dir.display().to_string(),
        &fuselab_core::utc_now(),
    )?;
    // The serving replays load the file as a user's bench run would; the
    // second write adds what they found.
    write(&cal, out)?;
    cal.validation.serving = serving_checks(raw_dir, out, &cal)?;
    write(&cal, out)?;
    Ok(show(&cal, None))
}

fn write(cal: &Calibration, out: &Path) -> anyhow::Result<()> {
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(cal)?;
    text.push('\n');
    std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))
}

/// The serving runs of `raw_dir/serving/` (each `NAME/` with
/// `NAME.trace.jsonl` beside it) and their repeats on the same traces in
/// `raw_dir/serving-2/`, `serving-3/`, …, each trace replayed once through
/// the simulator with the calibration file `cal_file`.
fn serving_checks(
    raw_dir: &Path,
    cal_file: &Path,
    cal: &Calibration,
) -> anyhow::Result<Vec<ServingCheck>> {
    let dir = raw_dir.join("serving");
    let run_dirs = |d: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .filter(|e| e.path().join("summary.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let names = run_dirs(&dir);
    let repeats: Vec<PathBuf> = (2..)
        .map(|i| raw_dir.join(format!("serving-{i}")))
        .take_while(|d| d.is_dir())
        .collect();
    let scratch = std::env::temp_dir().join(format!("fuselab-calibrate-{}", std::process::id()));
    let mut checks = Vec::new();
    for name in names {
        let measured = fuselab_store::read_summary(&dir.join(&name))?;
        let trace = dir.join(format!("{name}.trace.jsonl"));
        if !trace.is_file() {
            anyhow::bail!(
                "serving run {}: its trace {} is missing; the device script exports it beside the run",
                dir.join(&name).display(),
                trace.display()
            );
        }
        let mut runs = vec![measured.metrics.clone()];
        for r in &repeats {
            if r.join(&name).join("summary.json").is_file() {
                runs.push(fuselab_store::read_summary(&r.join(&name))?.metrics);
            }
        }
        let engine = &measured.provenance.engine;
        let policy_name = engine
            .policy
            .clone()
            .with_context(|| format!("serving run {name}: summary.json names no policy"))?;
        let kind: PolicyKind = policy_name.parse()?;
        let mut knobs = Vec::new();
        for (k, v) in &engine.knobs {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if PolicyConfig::new(kind).set_knob(k, &v).is_ok() {
                knobs.push(format!("{k}={v}"));
            }
        }
        let out = scratch.join(&name);
        crate::cmd::bench::run(BenchArgs {
            engine: EngineOpts {
                engine: Some(EngineChoice::Builtin(EngineKind::Sim)),
                hardware: Some(cal.hardware.clone()),
                model: engine.model.clone().or_else(|| Some(cal.model.clone())),
                calibration: Some(cal_file.to_path_buf()),
                ..EngineOpts::default()
            },
            policy: Some(policy_name.clone()),
            knob: knobs,
            out: Some(out.clone()),
            force: true,
            workload: WorkloadOpts {
                trace: Some(trace.clone()),
                ..WorkloadOpts::default()
            },
            ..BenchArgs::default()
        })
        .with_context(|| format!("replaying serving run {name} on the simulator"))?;
        let sim = fuselab_store::read_summary(&out)?.metrics;
        let _ = std::fs::remove_dir_all(&out);
        let median = |f: fn(&fuselab_core::Metrics) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            let n = v.len();
            if n % 2 == 1 {
                v[n / 2]
            } else {
                0.5 * (v[n / 2 - 1] + v[n / 2])
            }
        };
        let specs = fuselab_workloads::read_trace(&trace)?;
        let span = specs.iter().map(|r| r.arrival_s).fold(0.0, f64::max);
        checks.push(ServingCheck {
            name: name.clone(),
            policy: policy_name,
            rate: (specs.len().saturating_sub(1)) as f64 / span.max(1e-9),
            requests: measured.metrics.completed as usize,
            runs: runs.iter().map(|m| [m.ttft_s.p50, m.tpot_s.p50]).collect(),
            ttft_p50_s: [median(|m| m.ttft_s.p50), sim.ttft_s.p50],
            ttft_p90_s: [median(|m| m.ttft_s.p90), sim.ttft_s.p90],
            tpot_p50_s: [median(|m| m.tpot_s.p50), sim.tpot_s.p50],
            tpot_p90_s: [median(|m| m.tpot_s.p90), sim.tpot_s.p90],
        });
    }
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(checks)
}

fn pct(x: f64) -> String {
    format!("{:.1} %", x * 100.0)
}

fn verdict(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISS" }
}

fn stat_row(s: &mut String, name: &str, e: &ErrorStat, bound: Option<f64>) {
    let _ = writeln!(
        s,
        "| {name} | {} | {} | {:+.1} % | {} | {:.3} | {} |",
        e.points,
        pct(e.mape),
        e.bias * 100.0,
        pct(e.max),
        e.total_ratio,
        bound.map_or("-".into(), |b| format!(
            "≤ {} {}",
            pct(b),
            verdict(e.mape <= b)
        ))
    );
}

/// What a calibration is and how well it predicts, as Markdown; with
/// `hardware` other than the calibration's, also its scaling to that GPU and
/// the published figures it is checked against.
pub fn show(cal: &Calibration, hardware: Option<&fuselab_sim::Hardware>) -> String {
    let src = &cal.source;
    let v = &cal.validation;
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Calibration: {} on {} ({})\n",
        cal.model,
        src.device,
        src.driver.as_deref().unwrap_or("driver unknown")
    );
    let _ = writeln!(s, "- measured {} by `{}`", src.measured, src.command);
    let _ = writeln!(s, "- build: {}; raw data: {}", src.build, src.raw);
    let _ = writeln!(s, "- fitted {}", src.fitted);
    let _ = writeln!(
        s,
        "- measured ceilings: read {:.0} GB/s, copy {:.0} GB/s, GEMM 8192³ {:.0} TFLOP/s; efficiencies are relative to the `{}` profile's datasheet peaks",
        src.ceilings[0], src.ceilings[1], src.ceilings[2], cal.hardware
    );
    let st = &cal.step;
    let _ = writeln!(
        s,
        "- step: kernels × {:.3} + host {:.0} µs (graph) | {:.0} µs (eager) + {:.1} µs per sequence; attention × {} by block size",
        st.gpu_scale,
        st.graph_s * 1e6,
        st.eager_s * 1e6,
        st.per_entry_s * 1e6,
        if cal.block_factor.is_empty() {
            "1".to_string()
        } else {
            cal.block_factor
                .iter()
                .map(|(b, f)| format!("{f:.3} at {b}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let _ = writeln!(
        s,
        "\n## Held-out operator shapes (every third of each sweep)\n\n| class | points | MAPE | bias | max | Σ sim / Σ real | bound |\n|---|---:|---:|---:|---:|---:|---|"
    );
    for (class, e) in &v.ops_held_out {
        stat_row(&mut s, class, e, Some(OP_BOUND));
    }
    let _ = writeln!(
        s,
        "\n## Whole steps\n\n| set | steps | MAPE | bias | max | Σ sim / Σ real | bound |\n|---|---:|---:|---:|---:|---:|---|"
    );
    stat_row(&mut s, "grid (fitted)", &v.grid_steps, None);
    for (set, e) in &v.steps {
        let bound = set.starts_with("policy:").then_some(STEP_BOUND);
        stat_row(&mut s, &format!("{set} (held out)"), e, bound);
    }
    if !v.chunked.is_empty() {
        let _ = writeln!(
            s,
            "\n## One long prompt prefilled in chunks\n\n| budget | prompt | measured ms | simulated ms | sim/real | bound |\n|---:|---:|---:|---:|---:|---|"
        );
        for c in &v.chunked {
            let r = c.simulated_s / c.measured_s;
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} | {r:.3} | ±10 % {} |",
                c.budget,
                c.prompt,
                c.measured_s * 1e3,
                c.simulated_s * 1e3,
                verdict((r - 1.0).abs() <= CHUNKED_BOUND)
            );
        }
    }
    if !v.serving.is_empty() {
        let _ = writeln!(
            s,
            "\n## Poisson serving, GPU vs simulator (same trace; real = median of the GPU runs)\n\n| run | rate req/s | requests | GPU runs: TTFT P50 ms / TPOT P50 ms | TTFT P50 real / sim | ratio | TTFT P90 ratio | TPOT P50 real / sim ms | ratio | TPOT P90 ratio | P50 bound |\n|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"
        );
        for c in &v.serving {
            let r = |x: [f64; 2]| x[1] / x[0];
            let ok = (r(c.ttft_p50_s) - 1.0).abs() <= SERVING_BOUND
                && (r(c.tpot_p50_s) - 1.0).abs() <= SERVING_BOUND;
            let _ = writeln!(
                s,
                "| {} | {:.2} | {} | {} | {:.3} / {:.3} s | {:.3} | {:.3} | {:.2} / {:.2} | {:.3} | {:.3} | ±10 % {} |",
                c.name,
                c.rate,
                c.requests,
                c.runs
                    .iter()
                    .map(|r| format!("{:.1} / {:.2}", r[0] * 1e3, r[1] * 1e3))
                    .collect::<Vec<_>>()
                    .join(", "),
                c.ttft_p50_s[0],
                c.ttft_p50_s[1],
                r(c.ttft_p50_s),
                r(c.ttft_p90_s),
                c.tpot_p50_s[0] * 1e3,
                c.tpot_p50_s[1] * 1e3,
                r(c.tpot_p50_s),
                r(c.tpot_p90_s),
                verdict(ok)
            );
        }
    }
    if let Some(hw) = hardware.filter(|h| h.name != cal.hardware) {
        let _ = writeln!(
            s,
            "\n## {}: the calibration scaled by peaks\n\nEfficiencies, floors and host costs as measured on {}; compute at {:.0} TFLOP/s dense bf16 and memory at {:.2} TB/s ({}).\n",
            hw.name,
            cal.hardware,
            hw.peak_flops / 1e12,
            hw.mem_bw / 1e12,
            hw.source
        );
        let rows = anchors::compare(cal, hw);
        if rows.is_empty() {
            let _ = writeln!(
                s,
                "No published per-operator measurements of this GPU to check against."
            );
        } else {
            let _ = writeln!(
                s,
                "| published figure | published | predicted | predicted/published |\n|---|---:|---:|---:|"
            );
            for r in rows {
                let _ = writeln!(
                    s,
                    "| {} | {:.3} | {:.3} | {:.2} |",
                    r.what,
                    r.published,
                    r.predicted,
                    r.predicted / r.published
                );
            }
        }
    }
    s
}

/// The calibration `--show` reads: `--calibration FILE`, else the shipped one
/// (which is for `llama3-8b`: another `--model` is an error).
///
/// # Errors
/// An unreadable file, an unknown hardware profile, or a model with no calibration.
pub fn show_command(
    calibration: Option<&PathBuf>,
    hardware: Option<&str>,
    model: Option<&str>,
) -> anyhow::Result<String> {
    let cal = match calibration {
        Some(p) => Calibration::read(p)?,
        None => Calibration::default_h200().clone(),
    };
    if let Some(m) = model
        && m != cal.model
    {
        return Err(Error::invalid(
            "--model",
            format!("`{m}`: this calibration was measured on {}", cal.model),
            format!(
                "give --model {} or a calibration of {m} with --calibration FILE",
                cal.model
            ),
        )
        .into());
    }
    let hw = hardware.map(fuselab_sim::hardware).transpose()?;
    Ok(show(&cal, hw))
}
