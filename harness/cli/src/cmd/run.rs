//! `fuselab run`: the default experiment, from a TOML embedded in the binary.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fuselab_core::{Error, SweepSummary};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::cmd::bench::EngineOpts;
use crate::cmd::sweep::{self, SweepArgs};
use crate::cmd::workload::WorkloadOpts;
use crate::config;
use crate::exec::{self, EngineKind};

/// The embedded default experiment.
pub const DEFAULT_EXPERIMENT: &str = include_str!("../default-experiment.toml");

/// Arguments of `fuselab run`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Run this experiment file instead of the embedded default (see --print-config).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print the embedded default experiment and exit.
    #[arg(long)]
    pub print_config: bool,

    /// Output folder [default: runs/<name>-<UTC date and time>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace fuselab's files in an existing output folder.
    #[arg(long)]
    pub force: bool,
}

/// An experiment file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Experiment {
    /// Name, used for the default output folder.
    pub name: String,
    /// The workload every part uses.
    pub workload: WorkloadOpts,
    /// The simulated-engine sweep.
    #[serde(default)]
    pub sim: Option<SimPart>,
    /// A short real-time run of the CPU engine.
    #[serde(default)]
    pub cpu: Option<CpuPart>,
}

/// The CPU part of an experiment: every policy once, in real time, on a small
/// workload of its own (the CPU engine runs a tiny model with real numerics).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CpuPart {
    /// Model preset (`tiny` or `small`).
    pub model: Option<String>,
    /// `all` or a comma-separated list.
    pub policies: Option<String>,
    /// Open-loop request rate (give this or `clients`).
    pub rate: Option<f64>,
    /// Closed loop with this many clients (give this or `rate`).
    pub clients: Option<u32>,
    /// SLO for goodput.
    pub slo: Option<String>,
    /// The CPU part's own workload.
    pub workload: WorkloadOpts,
}

/// The simulated part of an experiment: a rate sweep of several policies.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SimPart {
    /// Hardware profile.
    pub hardware: Option<String>,
    /// Model shape.
    pub model: Option<String>,
    /// Tensor-parallel degree.
    pub tp: Option<u32>,
    /// `all` or a comma-separated list.
    pub policies: Option<String>,
    /// Request rates to sweep.
    pub rates: Vec<f64>,
    /// Knobs applied to every policy that has them.
    #[serde(default)]
    pub knob: Vec<String>,
    /// SLO for goodput and the search.
    pub slo: Option<String>,
    /// Whether to search the highest rate meeting the SLO.
    #[serde(default)]
    pub find_max_under_slo: bool,
    /// Attainment the search requires.
    pub attainment: Option<f64>,
}

/// Runs `fuselab run`.
pub fn run(args: RunArgs) -> anyhow::Result<Outcome> {
    if args.print_config {
        print!("{DEFAULT_EXPERIMENT}");
        return Ok(Outcome::Success);
    }
    let experiment: Experiment = match &args.config {
        Some(path) => config::load(path)?,
        None => config::parse(
            DEFAULT_EXPERIMENT,
            Path::new("<embedded default experiment>"),
        )?,
    };
    if let Some(cpu) = &experiment.cpu
        && cpu.rate.is_some() == cpu.clients.is_some()
    {
        return Err(Error::invalid(
            "[cpu]",
            "needs exactly one of `rate` (open loop) and `clients` (closed loop)",
            "e.g. clients = 4",
        )
        .into());
    }
    if experiment.sim.is_none() && experiment.cpu.is_none() {
        return Err(Error::invalid(
            "[sim]",
            "the experiment has nothing to run",
            "add a [sim] or [cpu] table (see `fuselab run --print-config`)",
        )
        .into());
    }
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("runs/{}-{}", experiment.name, utc_stamp())));
    fuselab_store::create_folder(&out, args.force)?;

    let mut inputs = Vec::new();
    if let Some(sim) = &experiment.sim {
        eprintln!(
            "== simulated sweep ({})",
            sim.hardware.as_deref().unwrap_or("h200")
        );
        let sweep_args = SweepArgs {
            engine: EngineOpts {
                engine: None,
                hardware: sim.hardware.clone(),
                model: sim.model.clone(),
                tp: sim.tp,
                ..EngineOpts::default()
            },
            policies: sim.policies.clone(),
            rates: sim.rates.clone(),
            knob: sim.knob.clone(),
            slo: sim.slo.clone(),
            find_max_under_slo: sim.find_max_under_slo,
            attainment: sim.attainment,
            workload: experiment.workload.clone(),
            ..SweepArgs::default()
        };
        let sim_dir = out.join("sim");
        let sweep = run_sweep(&sweep_args, &sim_dir, &format!("{}-sim", experiment.name))?;
        print!("{}", sweep::curve_table(&sweep));
        println!();
        print!("{}", comparison_table(&sweep));
        inputs.push(fuselab_reports::load_input(&sim_dir)?);
    }
    if let Some(cpu) = &experiment.cpu {
        eprintln!(
            "== CPU engine, real time ({})",
            cpu.model.as_deref().unwrap_or("tiny")
        );
        let sweep_args = SweepArgs {
            engine: EngineOpts {
                engine: Some(crate::cmd::bench::EngineChoice::Builtin(EngineKind::Cpu)),
                model: cpu.model.clone(),
                ..EngineOpts::default()
            },
            policies: cpu.policies.clone(),
            rates: cpu.rate.into_iter().collect(),
            slo: cpu.slo.clone(),
            workload: WorkloadOpts {
                clients: cpu.clients.into_iter().collect(),
                ..cpu.workload.clone()
            },
            ..SweepArgs::default()
        };
        let cpu_dir = out.join("cpu");
        let sweep = run_sweep(&sweep_args, &cpu_dir, &format!("{}-cpu", experiment.name))?;
        println!();
        print!("{}", sweep::curve_table(&sweep));
        inputs.push(fuselab_reports::load_input(&cpu_dir)?);
    }

    let report = out.join("report.html");
    let html = fuselab_reports::render_report(
        &inputs,
        &format!("fuselab run: {} experiment", experiment.name),
    )?;
    std::fs::write(&report, html).with_context(|| format!("writing {}", report.display()))?;
    println!(
        "\nresults in {}\nreport  {}",
        out.display(),
        report.display()
    );
    Ok(Outcome::Success)
}

fn run_sweep(args: &SweepArgs, dir: &Path, name: &str) -> anyhow::Result<SweepSummary> {
    let plan = sweep::plan(args)?;
    fuselab_store::create_folder(dir, true)?;
    sweep::execute(&plan, dir, name)
}

/// One row per policy: its best effective throughput, its peak throughput and
/// the highest rate meeting the SLO.
pub fn comparison_table(sweep: &SweepSummary) -> String {
    let mut cells = vec![
        [
            "policy",
            "max rate under SLO",
            "best eff@4",
            "peak out tok/s",
            "TTFT p99 @ low load",
            "ITL p99 @ low load",
        ]
        .map(String::from)
        .to_vec(),
    ];
    let mut policies: Vec<&str> = Vec::new();
    for p in &sweep.points {
        if !policies.contains(&p.policy.as_str()) {
            policies.push(&p.policy);
        }
    }
    for policy in policies {
        let pts: Vec<_> = sweep.points.iter().filter(|p| p.policy == policy).collect();
        let best_eff = pts
            .iter()
            .filter_map(|p| p.metrics.effective_throughput.get("4"))
            .fold(0.0f64, |a, b| a.max(*b));
        let peak = pts
            .iter()
            .map(|p| p.metrics.output_token_throughput)
            .fold(0.0f64, f64::max);
        let low = pts.first().map(|p| &p.metrics);
        let max = sweep
            .max_under_slo
            .iter()
            .find(|m| m.policy == policy)
            .map_or_else(
                || "-".to_string(),
                |m| {
                    m.max_load
                        .map_or_else(|| "none".into(), |l| format!("{l:.2} req/s"))
                },
            );
        cells.push(vec![
            policy.to_string(),
            max,
            format!("{best_eff:.3} req/s"),
            format!("{peak:.0}"),
            low.map_or_else(String::new, |m| exec::secs(m.ttft_s.p99)),
            low.map_or_else(String::new, |m| exec::secs(m.itl_s.p99)),
        ]);
    }
    let mut s = exec::render_table(&cells);
    if let Some(best) = sweep
        .max_under_slo
        .iter()
        .filter(|m| m.max_load.is_some())
        .max_by(|a, b| {
            a.max_load
                .partial_cmp(&b.max_load)
                .unwrap_or(std::cmp::Ordering::Equal)
        })
    {
        let _ = writeln!(
            s,
            "best policy under {}: {} at {:.2} req/s",
            fuselab_metrics::format_slo(&best.slo),
            best.policy,
            best.max_load.unwrap_or(0.0)
        );
    }
    s
}

/// `YYYYMMDD-HHMMSS` in UTC, for default folder names.
fn utc_stamp() -> String {
    fuselab_core::utc_now()
        .chars()
        .filter(|c| c.is_ascii_digit() || *c == 'T')
        .map(|c| if c == 'T' { '-' } else { c })
        .collect()
}
