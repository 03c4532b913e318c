//! Running benchmark points: engine × policy × workload → records, metrics and
//! a run folder. Shared by `bench`, `sweep` and `run`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fuselab_core::{
    Arrivals, EngineInfo, Metrics, Provenance, RequestRecord, RequestSpec, RunSummary,
    SCHEMA_VERSION, Slo, StepRecord, WorkloadSpec,
};
use fuselab_engine::{NativeEngine, PolicyConfig, Slowdown, simulate};
use fuselab_harness::{
    EngineHandle, NativeEngineHandle, NullEngine, RealtimePlan, run_realtime_blocking,
};
use fuselab_sim::{SimBackend, SimConfig};
use serde::{Deserialize, Serialize};

/// Which engine runs a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// The simulated backend: a calibrated cost model on a virtual clock.
    Sim,
    /// The CPU backend: real numerics of a Llama-architecture model, in real time.
    Cpu,
    /// Answers every request at once: measures the harness's own overhead.
    Null,
    /// The CUDA backend: bf16 Llama on an NVIDIA GPU (random weights), in real time.
    Cuda,
}

impl EngineKind {
    /// The name written into provenance.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Cpu => "cpu",
            Self::Null => "null",
            Self::Cuda => "cuda",
        }
    }

    /// The model shape used when none is given.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::Sim | Self::Cuda => "llama3-8b",
            Self::Cpu | Self::Null => "tiny",
        }
    }
}

/// The engine side of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// Which engine.
    pub kind: EngineKind,
    /// Hardware profile (sim).
    pub hardware: String,
    /// Model shape.
    pub model: String,
    /// Tensor-parallel degree.
    pub tp: u32,
    /// Safetensors weights for the CPU engine (seeded random when `None`).
    pub weights: Option<PathBuf>,
    /// Per-request timeout for real-time engines, seconds.
    pub timeout_s: Option<f64>,
    /// Warm-up for real-time engines: requests due before it run but are not measured.
    pub warmup_s: Option<f64>,
    /// Measurement window after the warm-up for real-time engines, seconds.
    pub window_s: Option<f64>,
    /// Test knob: stretch every engine step by this factor (see [`Slowdown`]).
    pub slowdown: Option<f64>,
}

/// One benchmark point, fully resolved.
#[derive(Debug, Clone)]
pub struct Point {
    /// Engine to run.
    pub engine: EngineSpec,
    /// Policy with every knob.
    pub policy: PolicyConfig,
    /// The workload's description (for provenance).
    pub workload: WorkloadSpec,
    /// The requests themselves.
    pub requests: Vec<RequestSpec>,
    /// SLOs for goodput.
    pub slo: Slo,
}

/// What a point produced.
#[derive(Debug, Clone)]
pub struct PointResult {
    /// Per-request records.
    pub records: Vec<RequestRecord>,
    /// Per-step records.
    pub steps: Vec<StepRecord>,
    /// Engine identity and knobs.
    pub info: EngineInfo,
    /// Computed metrics.
    pub metrics: Metrics,
    /// The run was cancelled (Ctrl-C): the records hold what was measured.
    pub cancelled: bool,
}

/// Runs a point to completion (or until Ctrl-C for real-time engines).
pub fn run_point(point: &Point) -> anyhow::Result<PointResult> {
    let clients = match point.workload.arrivals {
        Arrivals::ClosedLoop { clients } => Some(clients),
        _ => None,
    };
    let mut info = EngineInfo {
        engine: point.engine.kind.name().into(),
        hardware: None,
        model: Some(point.engine.model.clone()),
        policy: Some(point.policy.kind.name().into()),
        knobs: point.policy.knobs(),
    };
    let mut cancelled = false;
    let slowdown = point.engine.slowdown.unwrap_or(1.0);
    let (records, steps) = match point.engine.kind {
        EngineKind::Sim => {
            let backend = SimBackend::new(&SimConfig {
                hardware: point.engine.hardware.clone(),
                model: point.engine.model.clone(),
                tp: point.engine.tp,
                ..SimConfig::default()
            })?;
            let mut engine =
                NativeEngine::new(Slowdown::new(backend, slowdown), point.policy.clone())?;
            let run = simulate(&point.requests, clients, &mut engine)
                .with_context(|| format!("simulating policy {}", point.policy.kind))?;
            info.knobs = engine.knobs();
            info.knobs.insert("tp".into(), point.engine.tp.into());
            info.hardware = Some(point.engine.hardware.clone());
            (run.records, run.steps)
        }
        EngineKind::Cpu | EngineKind::Null | EngineKind::Cuda => {
            let engine: Box<dyn EngineHandle> = if point.engine.kind == EngineKind::Cuda {
                // Probe first: without a driver this is a clean error (exit 2), never a panic.
                fuselab_cuda::probe()?;
                let cfg = fuselab_cuda::CudaModelConfig::preset(&point.engine.model)?;
                let (policy, seed) = (point.policy.clone(), point.workload.seed);
                info.hardware = Some("cuda:0".into());
                info.knobs.insert("weights".into(), "random".into());
                // The device is opened on the engine's own thread (CUDA contexts are per thread).
                Box::new(NativeEngineHandle::new("cuda", move || {
                    let backend = fuselab_cuda::CudaBackend::random(
                        cfg,
                        seed,
                        fuselab_cuda::CudaOptions::default(),
                    )?;
                    Ok(NativeEngine::new(Slowdown::new(backend, slowdown), policy)?)
                }))
            } else if point.engine.kind == EngineKind::Cpu {
                let backend = fuselab_cpu::CpuBackend::load(
                    &point.engine.model,
                    point.engine.weights.as_deref(),
                    point.workload.seed,
                )?;
                let policy = point.policy.clone();
                info.hardware = Some(fuselab_store::host_cpu());
                info.knobs.insert(
                    "weights".into(),
                    point
                        .engine
                        .weights
                        .as_ref()
                        .map_or_else(|| "random".into(), |p| p.display().to_string().into()),
                );
                Box::new(NativeEngineHandle::new("cpu", move || {
                    Ok(NativeEngine::new(Slowdown::new(backend, slowdown), policy)?)
                }))
            } else {
                info.policy = None;
                info.model = None;
                info.knobs.clear();
                Box::new(NullEngine::default())
            };
            let mut plan = match clients {
                Some(c) => RealtimePlan::closed_loop(point.requests.clone(), c),
                None => RealtimePlan::open_loop(point.requests.clone()),
            };
            plan.timeout_s = point.engine.timeout_s;
            plan.warmup_s = point.engine.warmup_s.unwrap_or(0.0);
            plan.window_s = point.engine.window_s;
            let run = run_realtime_blocking(plan, engine, true)?;
            if let Some(err) = &run.engine_error {
                tracing::error!("engine failed: {err}");
            }
            cancelled = run.cancelled;
            (run.records, run.steps)
        }
    };
    if let Some(f) = point.engine.slowdown {
        info.knobs.insert("slowdown".into(), f.into());
    }
    let step_records = (!steps.is_empty()).then_some(steps.as_slice());
    let metrics =
        fuselab_metrics::compute_metrics(&records, step_records, &point.slo, point.workload.seed);
    Ok(PointResult {
        records,
        steps,
        info,
        metrics,
        cancelled,
    })
}

/// Builds the `summary.json` of a point.
pub fn summary(name: &str, point: &Point, result: &PointResult) -> RunSummary {
    RunSummary {
        schema_version: SCHEMA_VERSION,
        name: name.into(),
        provenance: Provenance {
            fuselab_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: fuselab_store::git_commit(),
            host_cpu: fuselab_store::host_cpu(),
            host_gpu: None,
            engine: result.info.clone(),
            workload: point.workload.clone(),
            workload_digest: fuselab_workloads::digest(&point.requests),
            seed: point.workload.seed,
            command: Some(command_line()),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
        },
        metrics: result.metrics.clone(),
    }
}

/// Writes a point's run folder.
pub fn write_point(
    dir: &Path,
    force: bool,
    name: &str,
    point: &Point,
    result: &PointResult,
) -> anyhow::Result<()> {
    fuselab_store::write_run(
        dir,
        force,
        &summary(name, point, result),
        &result.records,
        &result.steps,
    )
    .with_context(|| format!("writing the run folder {}", dir.display()))?;
    Ok(())
}

/// Runs `point` `n` times back to back into `dir/rep-1` … `dir/rep-n` (`dir`
/// must have been made by `fuselab_store::create_folder`) and then writes `dir/repeat.json`, so the folder is one
/// configuration for the gate and the report. Returns each run's metrics.
pub fn run_repeats(dir: &Path, name: &str, point: &Point, n: u32) -> anyhow::Result<Vec<Metrics>> {
    let mut runs = Vec::new();
    let mut metrics = Vec::new();
    for k in 1..=n {
        eprintln!("[{k}/{n}] repeat {k} of {name}");
        let rel = format!("rep-{k}");
        let rep_dir = dir.join(&rel);
        let result = run_point(point)?;
        // `dir` was checked by `create_folder`, so its rep folders are ours to replace.
        write_point(&rep_dir, true, &format!("{name}/{rel}"), point, &result)?;
        if result.cancelled {
            return Err(cancelled_error(&result, &rep_dir));
        }
        runs.push(rel);
        metrics.push(result.metrics);
    }
    fuselab_store::write_repeat(
        dir,
        &fuselab_core::RepeatSummary {
            schema_version: SCHEMA_VERSION,
            name: name.into(),
            runs,
        },
    )
    .with_context(|| format!("writing {}", dir.display()))?;
    Ok(metrics)
}

/// The error returned after a cancelled point's measurements were written.
pub fn cancelled_error(result: &PointResult, dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "cancelled by Ctrl-C: the {} requests measured so far are in {}",
        result.records.len(),
        dir.display()
    )
}

/// The command line of this process, for provenance.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// A terminal table comparing labelled metrics, one row each.
pub fn metrics_table(rows: &[(String, &Metrics)]) -> String {
    let header = [
        "policy",
        "load",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p50",
        "goodput",
        "SLO att",
        "eff@4",
        "preempt",
        "pad %",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(ToString::to_string).collect()];
    for (label, m) in rows {
        let (policy, load) = label.split_once('@').unwrap_or((label.as_str(), ""));
        let engine = m.engine.clone().unwrap_or_default();
        let computed = engine.prefill_tokens + engine.decode_tokens + engine.padding_tokens;
        let pad = if computed > 0 {
            100.0 * engine.padding_tokens as f64 / computed as f64
        } else {
            0.0
        };
        cells.push(vec![
            policy.to_string(),
            load.to_string(),
            format!("{:.3}", m.request_throughput),
            format!("{:.0}", m.output_token_throughput),
            secs(m.ttft_s.p50),
            secs(m.ttft_s.p99),
            secs(m.tpot_s.p50),
            secs(m.tpot_s.p99),
            secs(m.e2e_s.p50),
            format!("{:.3}", m.goodput),
            format!("{:.2}", m.slo_attainment),
            format!(
                "{:.3}",
                m.effective_throughput.get("4").copied().unwrap_or(0.0)
            ),
            engine.preemptions.to_string(),
            format!("{pad:.1}"),
        ]);
    }
    render_table(&cells)
}

/// Formats seconds with a unit that keeps three significant digits readable.
pub fn secs(s: f64) -> String {
    if s == 0.0 {
        "0".into()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// Renders rows as an aligned plain-text table; the first row is the header.
pub fn render_table(cells: &[Vec<String>]) -> String {
    let cols = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}
