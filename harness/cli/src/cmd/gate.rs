//! `fuselab gate`: the CI regression gate. Compares candidate runs against a
//! baseline per metric with a bootstrap noise model and exits 0 (pass),
//! 1 (a metric regressed) or 2 (error). See `fuselab_reports::gate` for the
//! statistics and the default thresholds.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context, bail};
use fuselab_reports::gate::{self, GateConfig, GateMetric};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::config;

/// Arguments of `fuselab gate`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(
    after_help = "Metrics and default thresholds: ttft/tpot/itl/e2e p50 5%, p99 10%; \
request/output/total throughput 3%; goodput and effective_throughput 5%. \
A metric regresses only when the whole confidence interval of its relative change \
lies beyond its threshold in the bad direction.\n\
Exit codes: 0 pass, 1 regression, 2 error."
)]
pub struct GateArgs {
    /// Read flags from this TOML file (keys are flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Baseline: a run folder, or a name stored with --save-baseline. Repeat for repeated runs.
    #[arg(long, value_name = "RUN|NAME")]
    #[serde(default)]
    pub baseline: Vec<String>,
    /// Candidate run folder. Repeat for repeated runs of the same configuration.
    #[arg(long, value_name = "RUN")]
    #[serde(default)]
    pub candidate: Vec<PathBuf>,
    /// Per-metric threshold, e.g. `ttft_p99=10%` or `output_throughput=0.02` (repeatable).
    #[arg(long, value_name = "METRIC=PCT")]
    #[serde(default)]
    pub threshold: Vec<String>,
    /// Append the Markdown table to this file (e.g. "$GITHUB_STEP_SUMMARY").
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
    /// Write JUnit XML here: one test case per metric, a failure per regression.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Store the candidate run(s) as the baseline NAME (after a passing gate, or alone).
    #[arg(long, value_name = "NAME")]
    pub save_baseline: Option<String>,
    /// Where named baselines live [default: $FUSELAB_BASELINES, else .fuselab/baselines].
    #[arg(long, value_name = "DIR")]
    pub baselines_dir: Option<PathBuf>,
    /// Bootstrap resamples [default: 1000].
    #[arg(long, value_name = "N")]
    pub resamples: Option<usize>,
    /// Confidence level of the intervals [default: 0.95].
    #[arg(long, value_name = "LEVEL")]
    pub confidence: Option<f64>,
    /// Seed of the bootstrap [default: 24301].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,
    /// Compare runs from different engines or hardware anyway (with a warning).
    #[arg(long)]
    #[serde(default)]
    pub allow_hardware_mismatch: bool,
}

/// Runs `fuselab gate`.
pub fn run(args: GateArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    let mut thresholds = BTreeMap::new();
    for t in &args.threshold {
        let (m, v): (GateMetric, f64) = gate::parse_threshold(t)?;
        thresholds.insert(m, v);
    }
    if args.candidate.is_empty() {
        bail!(
            "--candidate RUN is required (the run folder to judge, or to store with --save-baseline)"
        );
    }
    if args.baseline.is_empty() && args.save_baseline.is_none() {
        bail!(
            "give --baseline RUN|NAME to compare against, or --save-baseline NAME to store the candidate"
        );
    }
    if let Some(name) = &args.save_baseline {
        gate::validate_name(name)?;
    }
    let dir = args
        .baselines_dir
        .clone()
        .unwrap_or_else(gate::baselines_dir);
    let mut candidates = Vec::new();
    for path in &args.candidate {
        candidates.push(
            fuselab_reports::load_run(path)
                .with_context(|| format!("cannot read candidate run {}", path.display()))?,
        );
    }
    let mut outcome = Outcome::Success;
    if !args.baseline.is_empty() {
        let mut baselines = Vec::new();
        for arg in &args.baseline {
            for path in gate::resolve_baseline(arg, &dir)? {
                baselines.push(
                    fuselab_reports::load_run(&path)
                        .with_context(|| format!("cannot read baseline run {}", path.display()))?,
                );
            }
        }
        let defaults = GateConfig::default();
        let cfg = GateConfig {
            thresholds,
            resamples: args.resamples.unwrap_or(defaults.resamples),
            confidence: args.confidence.unwrap_or(defaults.confidence),
            seed: args.seed.unwrap_or(defaults.seed),
            allow_hardware_mismatch: args.allow_hardware_mismatch,
        };
        let report = gate::compare(&baselines, &candidates, &cfg)?;
        for w in &report.warnings {
            eprintln!("warning: {w}");
        }
        let md = report.to_markdown();
        print!("{md}");
        if let Some(path) = &args.markdown {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .with_context(|| format!("cannot open {}", path.display()))?;
            f.write_all(md.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(path) = &args.junit {
            std::fs::write(path, report.to_junit())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        eprintln!("{}", report.headline());
        if report.regressed() {
            outcome = Outcome::Regression;
        }
    }
    if let Some(name) = &args.save_baseline {
        if outcome == Outcome::Regression {
            eprintln!("not saving baseline {name:?}: the candidate regressed");
        } else {
            let saved = gate::save_baseline(&args.candidate, name, &dir)?;
            eprintln!("saved baseline {name:?} in {}", saved.display());
        }
    }
    Ok(outcome)
}
