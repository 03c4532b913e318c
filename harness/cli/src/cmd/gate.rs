//! `fuselab gate`: the CI regression gate. Compares candidate runs against a
//! baseline per metric with a bootstrap noise model and exits 0 (pass),
//! 1 (a metric regressed) or 2 (error, or a change that cannot be told from
//! run-to-run noise). `--measure-noise` stores the machine's noise floor.
//! See `fuselab_reports::gate` for the statistics and the default thresholds.

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
A single run of a real-time engine (cpu, cuda, null) says nothing about run-to-run noise: \
its interval is widened by the noise floor stored with --measure-noise, else by the other \
side's spread when that side has 3 or more runs; with neither, a change beyond its threshold \
is inconclusive and the gate exits 2. Use `bench --repeat 3` on both sides in CI.\n\
Exit codes: 0 pass, 1 regression, 2 error or inconclusive."
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
    /// Candidate run folder, or a repeat folder (`bench --repeat N`) whose runs
    /// count as one configuration. Repeat the flag for more runs.
    #[arg(long, value_name = "RUN")]
    #[serde(default)]
    pub candidate: Vec<PathBuf>,
    /// Measure the machine's run-to-run noise floor from the --candidate runs
    /// (at least 3 repeats of one configuration, e.g. a `bench --repeat 5`
    /// folder) and store it as noise.json in the baselines directory. Later
    /// gates use it to widen the intervals of single runs of real-time
    /// engines.
    #[arg(long)]
    #[serde(default)]
    pub measure_noise: bool,
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
    let dir = args
        .baselines_dir
        .clone()
        .unwrap_or_else(gate::baselines_dir);
    let mut candidate_dirs = Vec::new();
    for path in &args.candidate {
        candidate_dirs.extend(gate::run_folders(path)?);
    }
    let mut candidates = Vec::new();
    for path in &candidate_dirs {
        candidates.push(
            fuselab_reports::load_run(path)
                .with_context(|| format!("cannot read candidate run {}", path.display()))?,
        );
    }
    if args.measure_noise {
        if !args.baseline.is_empty() || args.save_baseline.is_some() {
            return Err(fuselab_core::Error::invalid(
                "--measure-noise",
                "cannot be combined with --baseline or --save-baseline",
                "measure the noise in a step of its own, then gate",
            )
            .into());
        }
        return measure_noise(&candidates, &dir);
    }
    if args.baseline.is_empty() && args.save_baseline.is_none() {
        bail!(
            "give --baseline RUN|NAME to compare against, or --save-baseline NAME to store the candidate"
        );
    }
    if let Some(name) = &args.save_baseline {
        gate::validate_name(name)?;
    }
    let mut outcome = Outcome::Success;
    let mut inconclusive = None;
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
            noise_floors: gate::load_noise(&dir)?.floors,
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
        } else if !report.inconclusive().is_empty() {
            inconclusive = Some(report.headline());
        }
    }
    if let Some(name) = &args.save_baseline {
        if outcome == Outcome::Regression || inconclusive.is_some() {
            eprintln!("not saving baseline {name:?}: the gate did not pass");
        } else {
            let saved = gate::save_baseline(&candidate_dirs, name, &dir)?;
            eprintln!("saved baseline {name:?} in {}", saved.display());
        }
    }
    if let Some(headline) = inconclusive {
        bail!(
            "{headline}. A single run of a real-time engine cannot be told from machine noise: run each side several times (`fuselab bench --repeat 3`) or store a noise floor for this machine (`fuselab gate --measure-noise --candidate REPEAT_DIR`, into {})",
            dir.display()
        );
    }
    Ok(outcome)
}

/// `fuselab gate --measure-noise`: the floor from repeated runs, printed and
/// stored in `dir/noise.json`.
fn measure_noise(
    runs: &[fuselab_reports::RunData],
    dir: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let floor = gate::measure_noise(runs)?;
    let mut rows = vec![vec!["metric".to_string(), "run-to-run CV".to_string()]];
    for m in GateMetric::ALL {
        let cv = floor
            .cv
            .get(m.name())
            .map_or_else(|| "–".to_string(), |c| format!("{:.2}%", 100.0 * c));
        rows.push(vec![m.name().to_string(), cv]);
    }
    print!("{}", crate::exec::render_table(&rows));
    let path = gate::save_noise(dir, &floor)?;
    println!(
        "noise floor of engine {} on {} from {} runs stored in {}",
        floor.engine,
        floor.host_cpu,
        floor.runs,
        path.display()
    );
    Ok(Outcome::Success)
}
