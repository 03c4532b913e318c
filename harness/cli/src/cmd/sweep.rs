//! `fuselab sweep`: a load sweep per policy → latency–throughput curves, and
//! optionally the highest load that meets an SLO.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fuselab_core::{
    Error, LoadKind, MaxLoadUnderSlo, SCHEMA_VERSION, Slo, SweepPoint, SweepSummary,
};
use fuselab_engine::{PolicyConfig, PolicyKind};
use fuselab_harness::search::{SearchSettings, find_max_load};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::cmd::bench::{EngineOpts, slo};
use crate::cmd::workload::WorkloadOpts;
use crate::config;
use crate::exec::{self, Point};

/// Arguments of `fuselab sweep`. Every flag can also come from `--config FILE`
/// (engine flags under `[engine]`, workload flags under `[workload]`).
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SweepArgs {
    /// Read any of these flags from a TOML file; flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    #[serde(default)]
    pub engine: EngineOpts,

    /// Policies to compare: `all` or a comma-separated list [default: all].
    #[arg(long, value_name = "LIST")]
    pub policies: Option<String>,

    /// Open-loop request rates to sweep, e.g. `0.5,1,2,4`.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    #[serde(default)]
    pub rates: Vec<f64>,

    /// Set a knob on every policy that has it, e.g. `--knob budget=1024` (repeatable).
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    #[serde(default)]
    pub knob: Vec<String>,

    /// Speculative decoding: sweep the draft length too, `k=0,2,4,8` (0 is
    /// the run without speculation that speed-ups are measured against).
    /// Needs --spec-alpha on sim; the table of acceptance, block efficiency,
    /// draft share and speed-up per load follows the curve.
    #[arg(long, value_name = "k=LIST")]
    pub spec: Option<String>,

    /// Start every policy that has these knobs from a published system's:
    /// `sarathi` or `vllm-v1` (see `fuselab bench --help`); `--knob` wins.
    #[arg(long, value_name = "SET")]
    pub knobs_from: Option<String>,

    /// SLOs for goodput and the search: `ttft=2s,tpot=100ms` or `fastgen:4`.
    #[arg(long, value_name = "SLO")]
    pub slo: Option<String>,

    /// Also search each policy's highest rate whose SLO attainment reaches --attainment.
    #[arg(long)]
    #[serde(default)]
    pub find_max_under_slo: bool,

    /// Attainment the search requires [default: 0.9].
    #[arg(long, value_name = "FRACTION")]
    pub attainment: Option<f64>,

    /// Sweep folder to write [default: runs/sweep-<workload>-s<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace fuselab's files in an existing sweep folder.
    #[arg(long)]
    #[serde(default)]
    pub force: bool,

    /// Run every point N times back to back: each point folder becomes a
    /// repeat folder (rep-1 … rep-N and repeat.json, as `bench --repeat`), the
    /// curve shows the mean over the runs, and the SLO search averages the
    /// attainment of N runs per probe.
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,

    /// Multi-LoRA axis: numbers of adapters to sweep, e.g. `1,8,64,512`; each
    /// (adapters, --sweep-zipf) pair is a full sweep in its own subfolder,
    /// summarised in `lora.txt`. Slots are the `max_loras` knob.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    #[serde(default)]
    pub sweep_adapters: Vec<u32>,

    /// Multi-LoRA axis: Zipf exponents of adapter popularity to sweep, e.g.
    /// `0,1.1` [default: 0, uniform].
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    #[serde(default)]
    pub sweep_zipf: Vec<f64>,

    #[command(flatten)]
    #[serde(default)]
    pub workload: WorkloadOpts,
}

/// The multi-LoRA summary table of a sweep over adapters × Zipf exponents.
pub const LORA_FILE: &str = "lora.txt";

/// The sweep folder's plain-text curve table (the one printed at the end).
pub const CURVE_FILE: &str = "curve.txt";

/// A fully resolved sweep.
#[derive(Debug, Clone)]
pub struct SweepPlan {
    /// Engine side.
    pub engine: EngineOpts,
    /// Policies with their knobs.
    pub policies: Vec<PolicyConfig>,
    /// What is varied and its values.
    pub load_kind: LoadKind,
    /// The loads, ascending.
    pub loads: Vec<f64>,
    /// Workload flags (the load is overridden per point).
    pub workload: WorkloadOpts,
    /// SLOs.
    pub slo: Slo,
    /// Search settings when the max-load search runs.
    pub search: Option<SearchSettings>,
    /// `--export`: where to write the workload of the first load, once.
    pub export: Option<PathBuf>,
    /// Runs per point (`--repeat`); `None` writes plain run folders.
    pub repeat: Option<u32>,
    /// Whether `--spec` sweeps the draft length (each policy appears once per `k`).
    pub spec_sweep: bool,
}

/// Parses `--spec k=0,2,4,8`.
fn parse_spec(s: &str) -> anyhow::Result<Vec<u32>> {
    let hint = format!(
        "give the draft lengths to sweep, e.g. --spec k=0,2,4,8 (each 0 to {}; include 0 for the speed-up)",
        fuselab_engine::MAX_SPEC_K
    );
    let Some(list) = s.trim().strip_prefix("k=") else {
        return Err(Error::invalid("--spec", format!("`{s}` is not k=LIST"), hint).into());
    };
    let mut ks = Vec::new();
    for part in list.split(',').map(str::trim) {
        match part.parse::<u32>() {
            Ok(k) if k <= fuselab_engine::MAX_SPEC_K => ks.push(k),
            _ => {
                return Err(Error::invalid(
                    "--spec",
                    format!("`{part}` is not a draft length"),
                    hint,
                )
                .into());
            }
        }
    }
    ks.sort_unstable();
    ks.dedup();
    Ok(ks)
}

/// Runs `fuselab sweep`.
pub fn run(args: SweepArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    if !args.sweep_adapters.is_empty() || !args.sweep_zipf.is_empty() {
        return run_lora_grid(&args);
    }
    let plan = plan(&args)?;
    // Check the workload flags before creating anything.
    point_at(&plan, &plan.policies[0], plan.loads[0])?;
    let out = args.out.clone().unwrap_or_else(|| {
        let w = plan
            .workload
            .preset
            .clone()
            .unwrap_or_else(|| "trace".into());
        PathBuf::from(format!(
            "runs/sweep-{w}-s{}",
            plan.workload.seed.unwrap_or(42)
        ))
    });
    fuselab_store::create_folder(&out, args.force)?;
    let sweep = execute(&plan, &out, "sweep")?;
    print!("{}", curve_table(&sweep));
    if let Some(spec) = spec_table(&sweep) {
        println!();
        print!("{spec}");
    }
    if !sweep.max_under_slo.is_empty() {
        print!("{}", max_load_table(&sweep.max_under_slo));
    }
    println!("sweep folder {}", out.display());
    Ok(Outcome::Success)
}

/// The (adapters, Zipf s) pairs of the multi-LoRA axis, checked.
pub fn lora_grid(args: &SweepArgs) -> anyhow::Result<Vec<(u32, f64)>> {
    if args.sweep_adapters.is_empty() {
        return Err(Error::invalid(
            "--sweep-zipf",
            "given without --sweep-adapters",
            "list the numbers of adapters too, e.g. --sweep-adapters 1,8,64,512",
        )
        .into());
    }
    for (flag, set) in [
        ("--adapters", args.workload.adapters.is_some()),
        ("--zipf", args.workload.zipf.is_some()),
    ] {
        if set {
            return Err(Error::invalid(
                flag,
                "cannot be combined with the --sweep-adapters axis",
                "drop it; the sweep sets adapters and popularity per point",
            )
            .into());
        }
    }
    if let Some(bad) = args
        .sweep_zipf
        .iter()
        .find(|s| !(s.is_finite() && **s >= 0.0))
    {
        return Err(Error::invalid(
            "--sweep-zipf",
            format!("{bad} is not a Zipf exponent >= 0"),
            "give exponents such as 0,1.1",
        )
        .into());
    }
    let zipf = if args.sweep_zipf.is_empty() {
        vec![0.0]
    } else {
        args.sweep_zipf.clone()
    };
    Ok(zipf
        .iter()
        .flat_map(|&s| args.sweep_adapters.iter().map(move |&n| (n, s)))
        .collect())
}

/// One cell of the multi-LoRA grid: its adapters, exponent and sweep.
pub type LoraCell = (u32, f64, SweepSummary);

/// Runs a full sweep per (adapters, Zipf s) pair into `adapters-N-zipf-S/`
/// subfolders and prints (and writes to `lora.txt`) their summary.
fn run_lora_grid(args: &SweepArgs) -> anyhow::Result<Outcome> {
    let grid = lora_grid(args)?;
    // Check every cell's flags before creating anything.
    let mut plans = Vec::new();
    for &(n, s) in &grid {
        let mut a = args.clone();
        a.workload.adapters = Some(n);
        a.workload.zipf = Some(s);
        let p = plan(&a)?;
        point_at(&p, &p.policies[0], p.loads[0])?;
        plans.push((n, s, p));
    }
    let out = args.out.clone().unwrap_or_else(|| {
        let w = args
            .workload
            .preset
            .clone()
            .unwrap_or_else(|| "trace".into());
        PathBuf::from(format!(
            "runs/sweep-lora-{w}-s{}",
            args.workload.seed.unwrap_or(42)
        ))
    });
    fuselab_store::create_folder(&out, args.force)?;
    let mut cells = Vec::new();
    for (n, s, p) in plans {
        eprintln!("== {n} adapters, Zipf s = {s}");
        let dir = out.join(format!("adapters-{n}-zipf-{s}"));
        fuselab_store::create_folder(&dir, true)?;
        let sweep = execute(&p, &dir, &format!("lora-a{n}-s{s}"))?;
        cells.push((n, s, sweep));
    }
    let table = lora_table(&cells);
    std::fs::write(out.join(LORA_FILE), &table)
        .with_context(|| format!("writing {}", out.join(LORA_FILE).display()))?;
    print!("{table}");
    println!("sweep folder {}", out.display());
    Ok(Outcome::Success)
}

/// Throughput, latency and adapter traffic per (adapters, Zipf s, policy, load).
pub fn lora_table(cells: &[LoraCell]) -> String {
    let mut rows = vec![
        [
            "adapters",
            "zipf s",
            "policy",
            "load",
            "req/s",
            "out tok/s",
            "TTFT p50",
            "TTFT p99",
            "TPOT p50",
            "TPOT p99",
            "loads/s",
            "loads",
            "slot use",
            "adapters/step",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for (n, s, sweep) in cells {
        for p in &sweep.points {
            let m = &p.metrics;
            let e = m.engine.clone().unwrap_or_default();
            rows.push(vec![
                n.to_string(),
                format!("{s}"),
                p.policy.clone(),
                format!("{}", p.load),
                format!("{:.3}", m.request_throughput),
                format!("{:.0}", m.output_token_throughput),
                exec::secs(m.ttft_s.p50),
                exec::secs(m.ttft_s.p99),
                exec::secs(m.tpot_s.p50),
                exec::secs(m.tpot_s.p99),
                format!("{:.1}", e.adapter_loads_per_s),
                e.adapter_loads.to_string(),
                format!("{:.2}", e.adapter_slot_utilisation),
                format!("{:.1}", e.adapters_per_step_mean),
            ]);
        }
    }
    exec::render_table(&rows)
}

/// Checks the flags and resolves them into a plan.
pub fn plan(args: &SweepArgs) -> anyhow::Result<SweepPlan> {
    let over_http = is_http(&args.engine);
    if over_http && (args.policies.is_some() || !args.knob.is_empty() || args.knobs_from.is_some())
    {
        return Err(Error::invalid(
            "--policies",
            "policies and knobs do not apply to --engine http://… (the server schedules)",
            "drop --policies/--knob/--knobs-from; sweep the server's load only",
        )
        .into());
    }
    let kinds = if over_http {
        vec![PolicyKind::Continuous]
    } else {
        PolicyKind::parse_list(args.policies.as_deref().unwrap_or("all"))?
    };
    let knobs = exec::with_knob_set(args.knobs_from.as_deref(), &args.engine, &args.knob)?;
    let mut policies = policies_with_knobs(&kinds, &knobs)?;
    let spec_sweep = args.spec.is_some();
    if let Some(spec) = &args.spec {
        if knobs.iter().any(|k| k.trim_start().starts_with("spec_k")) {
            return Err(Error::invalid(
                "--spec",
                "given together with --knob spec_k",
                "sweep the draft length with --spec k=LIST only",
            )
            .into());
        }
        let ks = parse_spec(spec)?;
        policies = policies
            .iter()
            .flat_map(|p| {
                ks.iter().map(move |&k| PolicyConfig {
                    spec_k: k,
                    ..p.clone()
                })
            })
            .collect();
    }
    let clients = &args.workload.clients;
    let (load_kind, loads) = match (args.rates.is_empty(), clients.is_empty()) {
        (false, true) => (LoadKind::Rate, args.rates.clone()),
        (true, false) => (
            LoadKind::Clients,
            clients.iter().map(|c| f64::from(*c)).collect(),
        ),
        (true, true) => {
            return Err(Error::invalid(
                "--rates",
                "no loads given",
                "give --rates 0.5,1,2,4 (open loop) or --clients 1,2,4,8 (closed loop)",
            )
            .into());
        }
        (false, false) => {
            return Err(Error::invalid(
                "--clients",
                "cannot be combined with --rates",
                "sweep either open-loop rates or closed-loop client counts",
            )
            .into());
        }
    };
    if let Some(bad) = loads.iter().find(|l| !(l.is_finite() && **l > 0.0)) {
        return Err(Error::invalid(
            "--rates",
            format!("{bad} is not a positive load"),
            "give positive numbers, e.g. --rates 0.5,1,2,4",
        )
        .into());
    }
    let mut loads = loads;
    loads.sort_by(f64::total_cmp);
    loads.dedup();
    for (flag, set) in [
        ("--rate", args.workload.rate.is_some()),
        ("--end-rate", args.workload.end_rate.is_some()),
    ] {
        if set {
            return Err(Error::invalid(
                flag,
                "is set per point by the sweep",
                "drop it and list the loads with --rates or --clients",
            )
            .into());
        }
    }
    let slo = slo(args.slo.as_deref())?;
    let search = if args.find_max_under_slo {
        if load_kind != LoadKind::Rate {
            return Err(Error::invalid(
                "--find-max-under-slo",
                "searches request rates",
                "sweep --rates (open loop) to use it",
            )
            .into());
        }
        if slo == Slo::default() {
            return Err(Error::invalid(
                "--find-max-under-slo",
                "needs an SLO",
                "give one with --slo, e.g. --slo ttft=2s,tpot=100ms or --slo fastgen:4",
            )
            .into());
        }
        let target = args.attainment.unwrap_or(0.9);
        if !(target > 0.0 && target <= 1.0) {
            return Err(Error::invalid(
                "--attainment",
                format!("{target} is not in (0, 1]"),
                "give a fraction such as 0.9",
            )
            .into());
        }
        Some(SearchSettings {
            target,
            ..SearchSettings::default()
        })
    } else {
        None
    };
    // Points resolve the workload once each; the export is written once, by `execute`.
    let mut workload = args.workload.clone();
    let export = workload.export.take();
    Ok(SweepPlan {
        engine: args.engine.clone(),
        policies,
        load_kind,
        loads,
        workload,
        slo,
        search,
        export,
        repeat: crate::cmd::bench::check_repeat(args.repeat)?,
        spec_sweep,
    })
}

/// Applies each knob to the policies that have it; a knob no policy has is an error.
pub fn policies_with_knobs(
    kinds: &[PolicyKind],
    knobs: &[String],
) -> anyhow::Result<Vec<PolicyConfig>> {
    let mut configs: Vec<PolicyConfig> = kinds.iter().map(|k| PolicyConfig::new(*k)).collect();
    for knob in knobs {
        let (name, value) = fuselab_engine::parse_knob(knob)?;
        let mut used = false;
        for c in &mut configs {
            if c.kind.knob_names().contains(&name) {
                c.set_knob(name, value)?;
                used = true;
            }
        }
        if !used {
            return Err(Error::invalid(
                "--knob",
                format!("no selected policy has a knob `{name}`"),
                format!(
                    "knobs of the selected policies: {}",
                    kinds
                        .iter()
                        .map(|k| format!("{k}: {}", k.knob_names().join(", ")))
                        .collect::<Vec<_>>()
                        .join("; ")
                ),
            )
            .into());
        }
    }
    Ok(configs)
}

fn point_at(plan: &SweepPlan, policy: &PolicyConfig, load: f64) -> anyhow::Result<Point> {
    let mut w = plan.workload.clone();
    match plan.load_kind {
        LoadKind::Rate => w.rate = Some(load),
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        LoadKind::Clients => w.clients = vec![load.round() as u32],
    }
    let (workload, requests) = w.resolve()?;
    Point::new(
        &plan.engine,
        policy.clone(),
        workload,
        requests,
        plan.slo.clone(),
    )
}

fn load_dir(kind: LoadKind, load: f64) -> String {
    match kind {
        LoadKind::Rate => format!("rate-{load}"),
        LoadKind::Clients => format!("clients-{load}"),
    }
}

fn is_http(engine: &EngineOpts) -> bool {
    matches!(
        engine.engine,
        Some(crate::cmd::bench::EngineChoice::Http(_))
    )
}

/// A point's curve label: the policy (with its draft length in a `--spec`
/// sweep), or `http` for a remote server.
fn point_label(plan: &SweepPlan, policy: &PolicyConfig) -> String {
    if is_http(&plan.engine) {
        "http".into()
    } else if plan.spec_sweep {
        format!("{} k={}", policy.kind.name(), policy.spec_k)
    } else {
        policy.kind.name().into()
    }
}

/// A point's folder under the sweep folder (no spaces).
fn point_dir(plan: &SweepPlan, policy: &PolicyConfig) -> String {
    point_label(plan, policy).replace(" k=", "-k")
}

/// Runs every point of `plan` into `out` (which must exist) and writes `sweep.json`.
///
/// `sweep.json` is rewritten (atomically) after every finished point, so a
/// follower such as `fuselab tui` sees the points arrive; `curve.txt`,
/// written last, marks a complete sweep.
pub fn execute(plan: &SweepPlan, out: &Path, name: &str) -> anyhow::Result<SweepSummary> {
    execute_with(plan, out, name, |_| {})
}

/// [`execute`], calling `on_point` after each point's `sweep.json` is written.
fn execute_with(
    plan: &SweepPlan,
    out: &Path,
    name: &str,
    mut on_point: impl FnMut(&SweepSummary),
) -> anyhow::Result<SweepSummary> {
    let write_partial = |points: &[SweepPoint],
                         max_under_slo: &[MaxLoadUnderSlo]|
     -> anyhow::Result<SweepSummary> {
        let partial = SweepSummary {
            schema_version: SCHEMA_VERSION,
            name: name.into(),
            load_kind: plan.load_kind,
            points: points.to_vec(),
            max_under_slo: max_under_slo.to_vec(),
        };
        fuselab_store::write_sweep(out, &partial)
            .with_context(|| format!("writing {}", out.display()))?;
        Ok(partial)
    };
    if let Some(path) = &plan.export {
        let first = point_at(plan, &plan.policies[0], plan.loads[0])?;
        fuselab_workloads::export_to_file(&first.requests, path)
            .with_context(|| format!("exporting the workload to {}", path.display()))?;
    }
    let total = plan.policies.len() * plan.loads.len();
    let mut points = Vec::new();
    let mut max_under_slo = Vec::new();
    let mut length_error: Option<anyhow::Error> = None;
    for policy in &plan.policies {
        let mut known = Vec::new();
        for &load in &plan.loads {
            eprintln!(
                "[{}/{total}] {} at {} {}",
                points.len() + 1,
                point_label(plan, policy),
                load,
                unit(plan.load_kind)
            );
            let point = point_at(plan, policy, load)?;
            let rel = format!(
                "{}/{}",
                point_dir(plan, policy),
                load_dir(plan.load_kind, load)
            );
            let spec_k = plan.spec_sweep.then_some(policy.spec_k);
            if let Some(n) = plan.repeat {
                let dir = out.join(&rel);
                fuselab_store::create_folder(&dir, true)?;
                let runs = exec::run_repeats(&dir, &rel, &point, n)?;
                let metrics = fuselab_metrics::mean_metrics(&runs)
                    .context("a repeated point produced no run")?;
                known.push((load, metrics.slo_attainment));
                points.push(SweepPoint {
                    policy: point_label(plan, policy),
                    load,
                    run: rel,
                    metrics,
                    spec_k,
                });
                on_point(&write_partial(&points, &max_under_slo)?);
                continue;
            }
            let result = exec::run_point(&point)?;
            exec::write_point(&out.join(&rel), true, &rel, &point, &result)?;
            if let Err(e) = exec::check_lengths(&point, &result, &out.join(&rel)) {
                eprintln!("  {e:#}");
                length_error.get_or_insert(e);
            }
            if let Some(note) = exec::failure_note(&result.records) {
                eprintln!("  {note}");
            }
            known.push((load, result.metrics.slo_attainment));
            let cancelled = result
                .cancelled
                .then(|| exec::cancelled_error(&result, &out.join(&rel)));
            points.push(SweepPoint {
                policy: point_label(plan, policy),
                load,
                run: rel,
                metrics: result.metrics,
                spec_k,
            });
            // Keep every finished point findable (and followable) at once.
            let partial = write_partial(&points, &max_under_slo)?;
            if let Some(err) = cancelled {
                return Err(err);
            }
            on_point(&partial);
        }
        if let Some(settings) = &plan.search {
            eprintln!(
                "searching the highest rate meeting the SLO for {}",
                policy.kind
            );
            let eval = |rate: f64| -> anyhow::Result<f64> {
                let point = point_at(plan, policy, rate)?;
                let n = plan.repeat.unwrap_or(1);
                let mut sum = 0.0;
                for _ in 0..n {
                    sum += exec::run_point(&point)?.metrics.slo_attainment;
                }
                Ok(sum / f64::from(n))
            };
            let found = find_max_load(eval, plan.loads[0], &known, settings)
                .with_context(|| format!("searching the SLO capacity of {}", policy.kind))?;
            max_under_slo.push(MaxLoadUnderSlo {
                policy: point_label(plan, policy),
                max_load: found.max_load,
                attainment_target: settings.target,
                slo: plan.slo.clone(),
                probes: found.probes.iter().map(|(l, a)| [*l, *a]).collect(),
            });
        }
    }
    let sweep = SweepSummary {
        schema_version: SCHEMA_VERSION,
        name: name.into(),
        load_kind: plan.load_kind,
        points,
        max_under_slo,
    };
    fuselab_store::write_sweep(out, &sweep)
        .with_context(|| format!("writing {}", out.display()))?;
    let mut tables = curve_table(&sweep);
    if let Some(spec) = spec_table(&sweep) {
        tables.push('\n');
        tables.push_str(&spec);
    }
    if !sweep.max_under_slo.is_empty() {
        tables.push('\n');
        tables.push_str(&max_load_table(&sweep.max_under_slo));
    }
    let curve = out.join(CURVE_FILE);
    std::fs::write(&curve, tables).with_context(|| format!("writing {}", curve.display()))?;
    if let Some(e) = length_error {
        return Err(e.context(format!("the sweep folder {} is complete", out.display())));
    }
    Ok(sweep)
}

fn unit(kind: LoadKind) -> &'static str {
    match kind {
        LoadKind::Rate => "req/s",
        LoadKind::Clients => "clients",
    }
}

/// The latency–throughput curve table of a sweep.
pub fn curve_table(sweep: &SweepSummary) -> String {
    let mut cells = vec![
        [
            "policy",
            "load",
            "req/s",
            "out tok/s",
            "TTFT p50",
            "TTFT p90",
            "TTFT p99",
            "ITL p50",
            "ITL p90",
            "ITL p99",
            "TPOT p99",
            "eff@2",
            "eff@4",
            "eff@6",
            "SLO att",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &sweep.points {
        let m = &p.metrics;
        let eff = |k: &str| {
            format!(
                "{:.3}",
                m.effective_throughput.get(k).copied().unwrap_or(0.0)
            )
        };
        cells.push(vec![
            p.policy.clone(),
            format!("{}", p.load),
            format!("{:.3}", m.request_throughput),
            format!("{:.0}", m.output_token_throughput),
            exec::secs(m.ttft_s.p50),
            exec::secs(m.ttft_s.p90),
            exec::secs(m.ttft_s.p99),
            exec::secs(m.itl_s.p50),
            exec::secs(m.itl_s.p90),
            exec::secs(m.itl_s.p99),
            exec::secs(m.tpot_s.p99),
            eff("2"),
            eff("4"),
            eff("6"),
            format!("{:.2}", m.slo_attainment),
        ]);
    }
    exec::render_table(&cells)
}

/// The speculative-decoding table of a `--spec` sweep: per policy, draft
/// length and load, the acceptance, mean accepted length, block efficiency,
/// draft share of busy time, and the speed-up against the same policy and
/// load at `k=0` (mean E2E latency and output throughput), then per policy
/// and `k` the lowest swept load where speculation stops paying (E2E
/// speed-up below 1). `None` for a sweep without `--spec`.
pub fn spec_table(sweep: &SweepSummary) -> Option<String> {
    if sweep.points.iter().all(|p| p.spec_k.is_none()) {
        return None;
    }
    let base_label = |p: &SweepPoint| {
        p.policy
            .split_once(" k=")
            .map_or(p.policy.clone(), |(b, _)| b.to_string())
    };
    let baseline = |p: &SweepPoint| {
        sweep
            .points
            .iter()
            .find(|q| q.spec_k == Some(0) && base_label(q) == base_label(p) && q.load == p.load)
    };
    let speedup = |p: &SweepPoint| {
        baseline(p).map(|b| {
            let ratio = |x: f64, y: f64| if y > 0.0 { x / y } else { 0.0 };
            (
                ratio(b.metrics.e2e_s.mean, p.metrics.e2e_s.mean),
                ratio(
                    p.metrics.output_token_throughput,
                    b.metrics.output_token_throughput,
                ),
            )
        })
    };
    let mut cells = vec![
        [
            "policy",
            "k",
            "load",
            "acceptance",
            "accept",
            "mean acc",
            "block eff",
            "draft %",
            "out tok/s",
            "TPOT p50",
            "E2E mean",
            "speed-up E2E",
            "speed-up tok/s",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for p in &sweep.points {
        let m = &p.metrics;
        let spec = m.engine.as_ref().and_then(|e| e.spec.clone());
        let f = |v: Option<f64>, digits: usize| {
            v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
        };
        let (e2e_x, tok_x) = speedup(p).unzip();
        cells.push(vec![
            base_label(p),
            p.spec_k.map_or_else(|| "-".into(), |k| k.to_string()),
            format!("{}", p.load),
            spec.as_ref()
                .map_or_else(|| "-".into(), |s| s.source.clone()),
            f(spec.as_ref().map(|s| s.acceptance_rate), 3),
            f(spec.as_ref().map(|s| s.mean_accepted_len), 2),
            f(spec.as_ref().map(|s| s.block_efficiency), 2),
            f(spec.as_ref().map(|s| 100.0 * s.draft_time_share), 0),
            format!("{:.0}", m.output_token_throughput),
            exec::secs(m.tpot_s.p50),
            exec::secs(m.e2e_s.mean),
            f(e2e_x, 2),
            f(tok_x, 2),
        ]);
    }
    let mut out = exec::render_table(&cells);
    let mut groups: Vec<(String, u32)> = sweep
        .points
        .iter()
        .filter_map(|p| p.spec_k.filter(|&k| k > 0).map(|k| (base_label(p), k)))
        .collect();
    groups.dedup();
    for (policy, k) in groups {
        let curve: Vec<(f64, f64)> = sweep
            .points
            .iter()
            .filter(|p| p.spec_k == Some(k) && base_label(p) == policy)
            .filter_map(|p| speedup(p).map(|(x, _)| (p.load, x)))
            .collect();
        if curve.is_empty() {
            continue;
        }
        let best = curve.iter().map(|c| c.1).fold(0.0, f64::max);
        let line = match curve.iter().position(|(_, x)| *x < 1.0) {
            Some(0) => format!(
                "{policy} k={k}: does not pay at any swept load (best E2E speed-up {best:.2})"
            ),
            Some(i) => format!(
                "{policy} k={k}: stops paying at load {} (E2E speed-up {:.2}; {:.2} at load {})",
                curve[i].0,
                curve[i].1,
                curve[i - 1].1,
                curve[i - 1].0
            ),
            None => format!(
                "{policy} k={k}: pays at every swept load (E2E speed-up ≥ {:.2})",
                curve.iter().map(|c| c.1).fold(f64::INFINITY, f64::min)
            ),
        };
        out.push_str(&line);
        out.push('\n');
    }
    Some(out)
}

/// The table of max-load-under-SLO results.
pub fn max_load_table(found: &[MaxLoadUnderSlo]) -> String {
    let mut cells = vec![
        [
            "policy",
            "max rate under SLO",
            "SLO",
            "attainment ≥",
            "probes",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for m in found {
        cells.push(vec![
            m.policy.clone(),
            m.max_load
                .map_or_else(|| "none".into(), |l| format!("{l:.3} req/s")),
            fuselab_metrics::format_slo(&m.slo),
            format!("{}", m.attainment_target),
            m.probes.len().to_string(),
        ]);
    }
    exec::render_table(&cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A follower (`fuselab tui`) sees each point as it finishes: after
    /// every point, `sweep.json` on disk already lists it, and `curve.txt`
    /// appears only at the end.
    #[test]
    fn sweep_json_is_written_after_every_point() {
        let args = SweepArgs {
            policies: Some("splitfuse,chunked".into()),
            rates: vec![2.0, 4.0],
            workload: WorkloadOpts {
                preset: Some("fastgen-1200".into()),
                n: Some(8),
                ..WorkloadOpts::default()
            },
            ..SweepArgs::default()
        };
        let plan = plan(&args).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut seen = Vec::new();
        let sweep = execute_with(&plan, dir.path(), "t", |partial| {
            let on_disk = fuselab_store::read_sweep(dir.path()).unwrap();
            assert_eq!(&on_disk, partial);
            assert!(!dir.path().join(CURVE_FILE).exists());
            let last = on_disk.points.last().unwrap();
            assert!(dir.path().join(&last.run).join("summary.json").is_file());
            seen.push(on_disk.points.len());
        })
        .unwrap();
        assert_eq!(seen, [1, 2, 3, 4]);
        assert_eq!(fuselab_store::read_sweep(dir.path()).unwrap(), sweep);
        assert!(dir.path().join(CURVE_FILE).is_file());
    }
}
