//! `fuselab tune`: a Bayesian-optimisation campaign (or random / grid search)
//! over the knobs of an external command (`--objective-cmd`) or of the
//! simulated engine (`--engine sim --policy ... --objective goodput`).
//! Every trial is journaled to `<out>/trials.jsonl` (fsynced), so a killed
//! campaign continues with `--resume`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use fuselab_core::Error;
use fuselab_tune::{
    CampaignEnd, CommandObjective, CommandTrial, Config, Direction, ExecOptions, Executor,
    ExecutorSpec, LocalExecutor, Objective, ObjectiveDef, Outcome, OutcomeConstraint, Problem,
    RayExecutor, RayResources, SearchSpace, SlurmExecutor, Status, Trial, TrialContext, TunerKind,
    campaign_meta, open_campaign, pareto_trials, recommend, run_campaign, run_campaign_on,
};
use serde::{Deserialize, Serialize};

use crate::Outcome as CliOutcome;
use crate::cmd::bench::{EngineOpts, policy_config, slo};
use crate::cmd::workload::WorkloadOpts;
use crate::config;
use crate::exec::{self, Point};

/// Arguments of `fuselab tune`. Every flag can also come from `--config FILE`
/// (engine flags under `[engine]`, workload flags under `[workload]`).
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TuneArgs {
    /// Read any of these flags from a TOML file (keys are the flag names
    /// without `--`); flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Knobs to tune, comma-separated: `name=lo..hi[:log]`, `name=a|b|c`,
    /// `name=lo..hi:pow2`, e.g. `budget=256..8192:log,block=16|32|64|128`. A range
    /// of integers is an integer knob: `x=-3..3` tries -3, -2, …, 3, while
    /// `x=-3.0..3.0` is a real one. The campaign prints the parsed space first.
    #[arg(long, value_name = "SPEC")]
    pub space: Option<String>,

    /// A constraint between knobs, e.g. `budget >= block` (repeatable).
    #[arg(long = "constraint", value_name = "EXPR")]
    #[serde(default)]
    pub constraint: Vec<String>,

    /// Tune an external command instead of an engine: `{knob}` placeholders are
    /// replaced by the values; the last line of its stdout must be a number.
    #[arg(long, value_name = "CMD")]
    pub objective_cmd: Option<String>,

    /// Tune a server's launch flags: start `CMD` (with `{knob}` placeholders)
    /// for each trial, wait until `--server-ready` answers, benchmark it with
    /// `--engine http://…` and the workload flags, then stop it (SIGTERM to
    /// its process group, SIGKILL after 10 s). Start-up failures, out of
    /// memory (from the exit status or the log), crashes and servers never
    /// ready are recorded as failed trials, with the reason.
    #[arg(long, value_name = "CMD")]
    pub server_cmd: Option<String>,

    /// URL that answers 2xx once the server is ready [default: the engine URL's /v1/models].
    #[arg(long, value_name = "URL")]
    pub server_ready: Option<String>,

    /// How long a server may take to become ready, e.g. `120s` [default: 120s].
    #[arg(long, value_name = "DURATION")]
    pub server_timeout: Option<String>,

    /// Minimise the command's number (the default is to maximise it).
    #[arg(long)]
    #[serde(default)]
    pub minimize: bool,

    /// Engine objective(s): goodput, throughput, output-throughput, effective-throughput,
    /// p99-e2e, p99-ttft, p99-tpot; two comma-separated give a Pareto front [default: goodput].
    #[arg(long, value_name = "NAME[,NAME]")]
    pub objective: Option<String>,

    /// Outcome constraint on the engine run, e.g. `p99-e2e<=30` (seconds; repeatable).
    #[arg(long = "outcome", value_name = "METRIC<=X")]
    #[serde(default)]
    pub outcome: Vec<String>,

    /// Number of trials [default: 40].
    #[arg(long, value_name = "N")]
    pub budget: Option<usize>,

    /// Campaign folder (journal, campaign.json, one run folder per trial)
    /// [default: campaigns/tune-<tuner>-s<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Trials in flight at once: whenever one finishes, the next is suggested
    /// with the others pending (asynchronous Kriging-believer batches)
    /// [default: 1; with `--executor local:K`, K].
    #[arg(long, value_name = "K")]
    pub parallel: Option<usize>,

    /// Where trials run: `local[:K]` (each trial a process on this machine,
    /// K at once), `slurm` (each trial an `sbatch` job; `--parallel` in
    /// flight) or `ray=http://HOST:8265` (each trial a Ray job through the Ray
    /// Jobs API). A trial is the same `fuselab bench` (or `--objective-cmd`)
    /// command line in every executor, writing its run folder under `--out`,
    /// which must be on a file system the nodes share. Without it, trials run
    /// inside this process.
    #[arg(long, value_name = "EXECUTOR")]
    pub executor: Option<String>,

    /// Extra `sbatch` arguments for every trial (split on white space), e.g.
    /// `--partition gpu --gres gpu:1 --time 30:00`.
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true)]
    pub slurm_args: Option<String>,

    /// Resources each trial's Ray job reserves, e.g. `num_cpus=1,num_gpus=1`.
    #[arg(long, value_name = "NAME=N,...")]
    pub ray_resources: Option<String>,

    /// Re-submit a trial whose job the cluster lost (cancelled, preempted,
    /// timed out, node died) up to N times before recording it as failed
    /// [default: 0].
    #[arg(long, value_name = "N")]
    pub retry_lost: Option<u32>,

    /// How often the executor's scheduler is polled, e.g. `1s` [default: 500ms].
    #[arg(long, value_name = "DURATION")]
    pub poll_interval: Option<String>,

    /// With `--executor local[:N]`: one trial per GPU, each seeing only its own
    /// through `CUDA_VISIBLE_DEVICES`: `all` (the devices `CUDA_VISIBLE_DEVICES`
    /// lists, else every GPU `nvidia-smi` sees) or a list such as `0,2,3`.
    /// `local` alone runs as many trials at once as there are GPUs. The GPUs'
    /// busy fraction over the campaign (NVML) goes to `gpus.json`.
    #[arg(long, value_name = "all|LIST")]
    pub gpus: Option<String>,

    /// Per-trial time limit of `--objective-cmd`, e.g. `30s`, `500ms`, `2m`
    /// [default: none]. With `--objective-cmd`, `--timeout SECONDS` means the same.
    #[arg(long, value_name = "DURATION")]
    pub trial_timeout: Option<String>,

    /// Continue the campaign in `--out` from its journal.
    #[arg(long)]
    #[serde(default)]
    pub resume: bool,

    /// Run each engine trial N times back to back: the trial's folder becomes
    /// a repeat folder (rep-1 … rep-N and repeat.json, as `bench --repeat`)
    /// and the trial's objective and outcome values are the means over the
    /// runs, so run-to-run noise of real-time engines averages out.
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,

    /// Seed of the tuner's suggestions (not of the workload: that is `--seed`)
    /// [default: the workload's `--seed`, else 42]. The same seed replays the
    /// same suggestions.
    #[arg(long, value_name = "S")]
    pub tune_seed: Option<u64>,

    /// Tuner: bo, random or grid [default: bo].
    #[arg(long, value_name = "NAME")]
    pub tuner: Option<String>,

    /// Tune a kernel's configuration instead of the engine: `decode_attention`
    /// (CPU: `splits`; CUDA: `splits`, `warps`, `stages`) or `prefill_attention`
    /// (CPU: `q_tile`, `kv_tile`; CUDA: `warpgroups`, `kv_tile`, `stages`,
    /// `min_blocks`, `paired`). Each trial checks the result against the f64
    /// reference at every `--shape` (a wrong result or a configuration outside
    /// the limits is an infeasible trial) and minimises the weighted mean time
    /// per call (CPU: median of 5 × 8 calls; CUDA: one module compiled per
    /// configuration, median of 10 × 32 launches). `--space` defaults to the
    /// kernel's whole space.
    #[arg(long, value_name = "NAME")]
    pub kernel: Option<String>,

    /// With `--kernel`: the device whose kernels are tuned [default: cpu].
    #[arg(long, value_name = "DEVICE", requires = "kernel")]
    pub device: Option<String>,

    /// With `--kernel`: a shape to tune at (repeatable), decode
    /// `batch=B,ctx=C`, prefill `q=Q,ctx=C`, optionally `,heads=H/KVxD`
    /// and `,weight=W` (how often it occurs) [default: one small shape].
    #[arg(long = "shape", value_name = "SPEC", requires = "kernel")]
    #[serde(default)]
    pub shape: Vec<String>,

    /// With `--kernel`: the shapes a run produced, from its folder's steps
    /// (decode-only or prefill-only steps, the 4 most frequent, weighted by
    /// how often they occur); instead of `--shape`.
    #[arg(long, value_name = "RUN", requires = "kernel")]
    pub shapes_from: Option<PathBuf>,

    /// With `--kernel`: after the campaign, run `fuselab bench --config FILE`
    /// twice, with the defaults and with the campaign's `tuning.json`
    /// (`--tuning-table`), into `OUT/then-bench/{untuned,tuned}`, and report
    /// the end-to-end change (TTFT, TPOT, throughput) beside the kernel's
    /// speed-up in `OUT/then-bench.md` (the CPU engine, like the kernels).
    #[arg(long, value_name = "FILE", requires = "kernel")]
    pub then_bench: Option<PathBuf>,

    /// Test knob, with `--kernel`: corrupt the kernel's output for the
    /// configurations with `KNOB=VALUE`, to check that a wrong result is
    /// recorded infeasible and the campaign goes on.
    #[arg(long, value_name = "KNOB=VALUE", requires = "kernel")]
    pub inject_fault: Option<String>,

    /// Compare tuners: run the same campaign (space, objective, budget, seeds)
    /// once per tuner of the list, e.g. `bo,grid,random`, into `OUT/<tuner>/`,
    /// then write `OUT/compare.json` and `OUT/compare.md`: each tuner's best
    /// and the evaluations it needed to come within `--compare-within` of the
    /// best any of them found (the space's optimum when the grid covered it).
    /// `NAME:N` gives that tuner a budget of its own, e.g. `bo:24,grid` with
    /// `--budget 96` (the grid's whole space, BO a quarter of it).
    #[arg(long, value_name = "TUNERS", conflicts_with = "tuner")]
    pub compare: Option<String>,

    /// With `--compare`: the tolerance, relative to the best value [default: 0.02].
    #[arg(
        long,
        value_name = "FRACTION",
        requires = "compare",
        allow_negative_numbers = true
    )]
    pub compare_within: Option<f64>,

    #[command(flatten)]
    #[serde(default)]
    pub engine: EngineOpts,

    /// Scheduling policy whose knobs are tuned [default: splitfuse].
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,

    /// A fixed policy knob, `NAME=VALUE` (repeatable).
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    #[serde(default)]
    pub knob: Vec<String>,

    /// Fixed knobs from a published system's defaults: `sarathi` or `vllm-v1`
    /// (see `fuselab bench --help`); `--knob` and the space win.
    #[arg(long, value_name = "SET")]
    pub knobs_from: Option<String>,

    /// SLOs for goodput: `ttft=2s,tpot=100ms,e2e=30s` or `fastgen:4`.
    #[arg(long, value_name = "SLO")]
    pub slo: Option<String>,

    /// Refused: the workload preset is `--preset`, as in `bench` and `sweep`.
    #[arg(long = "workload", value_name = "NAME", hide = true)]
    #[serde(skip)]
    pub workload_preset: Option<String>,

    #[command(flatten)]
    #[serde(default)]
    pub workload: WorkloadOpts,
}

/// A kernel-tuning trial: check and time one configuration of `kernel`
/// in-process (see [`fuselab_kernels::tunable`]).
#[derive(Clone)]
struct KernelObjective {
    kernel: fuselab_kernels::tunable::TunableKernel,
    evaluator: std::sync::Arc<fuselab_kernels::tunable::Evaluator>,
    shapes: Vec<fuselab_kernels::tunable::KernelShape>,
    fault: Option<fuselab_kernels::tunable::Fault>,
    seed: u64,
}

impl Objective for KernelObjective {
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &Config) -> Outcome {
        use fuselab_kernels::tunable::Evaluation;
        let mut knobs = Vec::new();
        for (p, v) in ctx.space.params().iter().zip(&config.0) {
            match v.as_f64() {
                Some(x) if x.fract() == 0.0 => knobs.push((p.name.clone(), x as i64)),
                _ => {
                    return Outcome::failed(
                        Status::Infeasible,
                        format!("{} = {v} is not a whole number", p.name),
                    );
                }
            }
        }
        match self
            .evaluator
            .evaluate(&knobs, &self.shapes, self.fault.as_ref(), self.seed)
        {
            Evaluation::Timed { ms, per_shape } => {
                let lines: Vec<String> = self
                    .shapes
                    .iter()
                    .zip(&per_shape)
                    .map(|(s, (ms, err))| format!("{s}: {ms:.4} ms, relative error {err:.1e}"))
                    .collect();
                let _ = std::fs::write(ctx.run_dir.join("kernel.txt"), lines.join("\n") + "\n");
                Outcome::ok(vec![ms], Vec::new())
            }
            Evaluation::Invalid(m) => Outcome::failed(Status::Infeasible, format!("invalid: {m}")),
            Evaluation::Wrong(m) => Outcome::failed(Status::Infeasible, m),
        }
    }

    fn describe(&self) -> String {
        let shapes: Vec<String> = self.shapes.iter().map(ToString::to_string).collect();
        format!("kernel {} at {}", self.kernel.name(), shapes.join("; "))
    }
}

/// A kernel flag's problem without the error type's prefix.
fn kernel_message(e: fuselab_kernels::KernelError) -> String {
    match e {
        fuselab_kernels::KernelError::Config(m) => m,
        other => other.to_string(),
    }
}

/// The kernel objective of `--kernel`, its flags checked.
fn kernel_objective(
    args: &TuneArgs,
    kernel: fuselab_kernels::tunable::TunableKernel,
    space: &SearchSpace,
    seed: u64,
    executor: bool,
    parallel: usize,
) -> anyhow::Result<KernelObjective> {
    if args.objective_cmd.is_some() || args.server_cmd.is_some() {
        bail!(Error::invalid(
            "--kernel",
            "given together with --objective-cmd or --server-cmd",
            "tune either a kernel, a command or a server"
        ));
    }
    if args.policy.is_some()
        || args.objective.is_some()
        || !args.knob.is_empty()
        || !args.outcome.is_empty()
    {
        bail!(Error::invalid(
            "--kernel",
            "given together with engine flags (--policy/--objective/--knob/--outcome)",
            "a kernel campaign minimises the kernel's time; drop the engine flags"
        ));
    }
    if executor || parallel > 1 {
        bail!(Error::invalid(
            if executor { "--executor" } else { "--parallel" },
            "kernel trials time the device, so they run one at a time in this process",
            "drop it"
        ));
    }
    let known: Vec<String> = fuselab_tune::SearchSpace::parse(kernel.space())
        .map(|s| s.params().iter().map(|p| p.name.clone()).collect())
        .unwrap_or_default();
    if let Some(p) = space.params().iter().find(|p| !known.contains(&p.name)) {
        bail!(Error::invalid(
            "--space",
            format!("`{}` is not a knob of {}", p.name, kernel.name()),
            format!("its space is {}", kernel.space())
        ));
    }
    if !args.shape.is_empty() && args.shapes_from.is_some() {
        bail!(Error::invalid(
            "--shapes-from",
            "given together with --shape",
            "take the shapes from a run folder or list them, not both"
        ));
    }
    let shapes = if let Some(run) = &args.shapes_from {
        shapes_from_run(kernel, run)?
    } else if args.shape.is_empty() {
        kernel.default_shapes()
    } else {
        args.shape
            .iter()
            .map(|s| {
                kernel.parse_shape(s).map_err(|e| {
                    Error::invalid("--shape", kernel_message(e), "see fuselab tune --help")
                })
            })
            .collect::<Result<_, _>>()?
    };
    let fault = args
        .inject_fault
        .as_deref()
        .map(|f| {
            fuselab_kernels::tunable::Fault::parse(f).map_err(|e| {
                Error::invalid(
                    "--inject-fault",
                    kernel_message(e),
                    "e.g. --inject-fault splits=4",
                )
            })
        })
        .transpose()?;
    let evaluator = kernel.evaluator().map_err(|e| {
        Error::invalid(
            "--device",
            kernel_message(e),
            "run on a machine with an NVIDIA GPU (driver, NVRTC and cuBLAS), or tune the CPU kernels with --device cpu",
        )
    })?;
    if let Some(gpu) = evaluator.gpu() {
        eprintln!(
            "tuning {} on {} (driver {})",
            kernel.name(),
            gpu.0,
            gpu.1.as_deref().unwrap_or("unknown")
        );
    }
    Ok(KernelObjective {
        kernel,
        evaluator: std::sync::Arc::new(evaluator),
        shapes,
        fault,
        seed,
    })
}

/// The shapes a run's steps produced (`--shapes-from RUN`), weighted by how
/// often they occur: decode steps as `batch = decode rows` at the mean
/// context (KV blocks in use before the step, i.e. after the previous one,
/// × block size ÷ sequences; blocks of requests that finish in the step are
/// freed after it), prefill steps as
/// `batch = sequences` whole prompts of the mean new-token count (a step
/// record does not say which chunks follow a prefix); lengths rounded to 64,
/// the 4 most frequent shapes kept.
fn shapes_from_run(
    kernel: fuselab_kernels::tunable::TunableKernel,
    run: &std::path::Path,
) -> anyhow::Result<Vec<fuselab_kernels::tunable::KernelShape>> {
    let bad = |problem: String| {
        Error::invalid(
            "--shapes-from",
            problem,
            "give a run folder that `fuselab bench` wrote (with steps.parquet)",
        )
    };
    let folder = fuselab_store::RunFolder::open(run).map_err(|e| bad(e.to_string()))?;
    let summary = folder.read_summary().map_err(|e| bad(e.to_string()))?;
    let steps = folder.read_steps().map_err(|e| bad(e.to_string()))?;
    let block = summary
        .provenance
        .engine
        .knobs
        .get("block")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(16) as usize;
    let decode = kernel.name() == "decode_attention";
    let round = |x: f64| ((x / 64.0).round() as usize).max(1) * 64;
    let mut counts: std::collections::BTreeMap<(usize, usize, usize), usize> = Default::default();
    let mut kv_before = 0;
    for st in &steps {
        let seqs = st.n_seqs.max(1) as usize;
        let ctx = kv_before.max(st.kv_blocks_used) as f64 * block as f64 / seqs as f64;
        kv_before = st.kv_blocks_used;
        let key = if decode {
            if st.decode_tokens == 0 || st.prefill_tokens > 0 {
                continue;
            }
            (st.decode_tokens as usize, 1, round(ctx))
        } else {
            if st.prefill_tokens == 0 || st.decode_tokens > 0 {
                continue;
            }
            let q = round(f64::from(st.prefill_tokens) / seqs as f64);
            (seqs, q, q)
        };
        *counts.entry(key).or_default() += 1;
    }
    let mut by_count: Vec<_> = counts.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    by_count.truncate(4);
    if by_count.is_empty() {
        bail!(bad(format!(
            "{} has no {} steps",
            run.display(),
            if decode {
                "decode-only"
            } else {
                "prefill-only"
            }
        )));
    }
    by_count
        .into_iter()
        .map(|((batch, q, ctx), n)| {
            let spec = if decode {
                format!("batch={batch},ctx={ctx},weight={n}")
            } else if batch == 1 {
                format!("q={q},ctx={ctx},weight={n}")
            } else {
                format!("batch={batch},q={q},ctx={ctx},weight={n}")
            };
            kernel
                .parse_shape(&spec)
                .map_err(|e| bad(format!("shape {spec}: {}", kernel_message(e))).into())
        })
        .collect()
}

/// `--compare`: one campaign per tuner of `list`, then the comparison.
fn compare_tuners(args: &TuneArgs, list: &str) -> anyhow::Result<CliOutcome> {
    let hint = "give two or more of bo, grid, random (each optionally NAME:BUDGET), e.g. --compare bo:24,grid,random";
    let mut kinds: Vec<TunerKind> = Vec::new();
    let mut budgets: Vec<Option<usize>> = Vec::new();
    for item in list.split(',').map(str::trim) {
        let (name, budget) = match item.split_once(':') {
            Some((n, b)) => {
                let b: usize = b.trim().parse().ok().filter(|&b| b > 0).ok_or_else(|| {
                    Error::invalid(
                        "--compare",
                        format!("`{item}`: the budget `{b}` is not a whole number > 0"),
                        hint,
                    )
                })?;
                (n.trim(), Some(b))
            }
            None => (item, None),
        };
        let kind: TunerKind = name
            .parse()
            .map_err(|_| Error::invalid("--compare", format!("unknown tuner `{name}`"), hint))?;
        if kinds.contains(&kind) {
            bail!(Error::invalid("--compare", format!("`{name}` twice"), hint));
        }
        kinds.push(kind);
        budgets.push(budget);
    }
    if kinds.len() < 2 {
        bail!(Error::invalid(
            "--compare",
            format!("`{list}` names one tuner"),
            hint
        ));
    }
    let within = args.compare_within.unwrap_or(0.02);
    if !(within.is_finite() && within >= 0.0) {
        bail!(Error::invalid(
            "--compare-within",
            format!("{within} is not a tolerance ≥ 0"),
            "give a fraction of the best value, e.g. --compare-within 0.02 for 2 %"
        ));
    }
    let seed = args.tune_seed.or(args.workload.seed).unwrap_or(42);
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("campaigns/compare-s{seed}")));
    let mut journals = Vec::new();
    for (&kind, budget) in kinds.iter().zip(&budgets) {
        eprintln!("== {} campaign", kind.name());
        let dir = out.join(kind.name());
        run(TuneArgs {
            compare: None,
            compare_within: None,
            budget: budget.or(args.budget),
            tuner: Some(kind.name().into()),
            out: Some(dir.clone()),
            ..args.clone()
        })
        .with_context(|| format!("the {} campaign of --compare", kind.name()))?;
        let meta = fuselab_tune::Journal::read_meta(&dir)?;
        let (_, trials) = fuselab_tune::Journal::resume(&dir)?;
        journals.push((kind, meta.problem, trials));
    }
    let runs: Vec<fuselab_tune::compare::TunerRun<'_>> = journals
        .iter()
        .map(|(kind, _, trials)| fuselab_tune::compare::TunerRun {
            tuner: kind.name(),
            trials,
        })
        .collect();
    let cmp = fuselab_tune::compare::compare(&journals[0].1, &runs, within);
    let mut md = format!("# Tuners compared\n\n{}\n", cmp.markdown());
    for kind in kinds.iter().filter(|k| **k != TunerKind::Grid) {
        md.push_str(&format!("- {}\n", cmp.verdict(kind.name(), 0.25)));
    }
    std::fs::write(
        out.join("compare.json"),
        serde_json::to_string_pretty(&cmp)?,
    )
    .with_context(|| format!("writing {}", out.join("compare.json").display()))?;
    std::fs::write(out.join("compare.md"), &md)
        .with_context(|| format!("writing {}", out.join("compare.md").display()))?;
    print!("{md}");
    println!("comparison written to {}", out.join("compare.md").display());
    Ok(CliOutcome::Success)
}

/// Parses `30s`, `500ms`, `2m`, `1h` or plain seconds.
fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    parse_duration_for(s, "--trial-timeout")
}

/// [`parse_duration`] for `flag`.
pub(crate) fn parse_duration_for(s: &str, flag: &str) -> anyhow::Result<Duration> {
    let t = s.trim();
    let (num, mult) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = t.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (t, 1.0)
    };
    match num.trim().parse::<f64>() {
        Ok(v) if v > 0.0 && v.is_finite() => Ok(Duration::from_secs_f64(v * mult)),
        _ => Err(Error::invalid(
            flag,
            format!("`{s}` is not a positive duration"),
            "e.g. 30s, 500ms, 2m",
        )
        .into()),
    }
}

/// An engine metric usable as objective or outcome constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Metric {
    Goodput,
    Throughput,
    OutputThroughput,
    EffectiveThroughput,
    P99E2e,
    P99Ttft,
    P99Tpot,
}

impl Metric {
    const ALL: &'static str =
        "goodput, throughput, output-throughput, effective-throughput, p99-e2e, p99-ttft, p99-tpot";

    fn parse(s: &str, flag: &str) -> anyhow::Result<Self> {
        Ok(match s.trim() {
            "goodput" => Self::Goodput,
            "throughput" => Self::Throughput,
            "output-throughput" => Self::OutputThroughput,
            "effective-throughput" => Self::EffectiveThroughput,
            "p99-e2e" => Self::P99E2e,
            "p99-ttft" => Self::P99Ttft,
            "p99-tpot" => Self::P99Tpot,
            other => {
                return Err(Error::invalid(
                    flag,
                    format!("unknown metric `{other}`"),
                    format!("use one of {}", Self::ALL),
                )
                .into());
            }
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Goodput => "goodput",
            Self::Throughput => "throughput",
            Self::OutputThroughput => "output-throughput",
            Self::EffectiveThroughput => "effective-throughput",
            Self::P99E2e => "p99-e2e",
            Self::P99Ttft => "p99-ttft",
            Self::P99Tpot => "p99-tpot",
        }
    }

    fn direction(self) -> Direction {
        match self {
            Self::P99E2e | Self::P99Ttft | Self::P99Tpot => Direction::Minimize,
            _ => Direction::Maximize,
        }
    }

    fn value(self, m: &fuselab_core::Metrics) -> f64 {
        match self {
            Self::Goodput => m.goodput,
            Self::Throughput => m.request_throughput,
            Self::OutputThroughput => m.output_token_throughput,
            // The FastGen SLA at 4 tok/s is the paper's headline; fall back to the first one.
            Self::EffectiveThroughput => m
                .effective_throughput
                .get("4")
                .or_else(|| m.effective_throughput.values().next())
                .copied()
                .unwrap_or(0.0),
            Self::P99E2e => m.e2e_s.p99,
            Self::P99Ttft => m.ttft_s.p99,
            Self::P99Tpot => m.tpot_s.p99,
        }
    }
}

/// The simulated engine as a tuning objective: each trial runs the workload
/// through the policy with the trial's knobs and writes a run folder.
struct SimObjective {
    base: Point,
    /// The engine flags, for trials whose deployment knobs change them.
    engine: EngineOpts,
    /// Runs per trial (`--repeat`); `None` writes one plain run folder.
    repeat: Option<u32>,
    policy: String,
    fixed: Vec<String>,
    objectives: Vec<Metric>,
    outcomes: Vec<Metric>,
}

/// One trial's engine flags, policy and policy knobs.
#[derive(Debug, Clone)]
struct TrialSetup {
    engine: EngineOpts,
    policy: String,
    knobs: Vec<String>,
    /// A deployment knob changed the engine flags (the point must be rebuilt).
    engine_changed: bool,
}

/// Splits a configuration into deployment knobs — `hardware`, `tp`, `model`
/// and `policy`, which pick each trial's hardware, tensor-parallel degree,
/// model shape and policy, so that a campaign searches hardware × TP × policy
/// × knobs (Vidur-Search's question) — and policy knobs. When the policy is itself a knob, a
/// policy knob the trial's policy does not have is left out for that trial
/// (as `sweep` applies each knob to the policies that have it).
fn trial_setup(
    engine: &EngineOpts,
    policy: &str,
    fixed: &[String],
    space: &SearchSpace,
    config: &Config,
) -> anyhow::Result<TrialSetup> {
    let mut t = TrialSetup {
        engine: engine.clone(),
        policy: policy.to_owned(),
        knobs: fixed.to_vec(),
        engine_changed: false,
    };
    let mut policy_knobs = Vec::new();
    for (p, v) in space.params().iter().zip(&config.0) {
        let v = v.to_string();
        match p.name.as_str() {
            "hardware" => t.engine.hardware = Some(v),
            "model" => t.engine.model = Some(v),
            "tp" => {
                t.engine.tp = Some(v.parse().map_err(|_| {
                    Error::invalid(
                        "--space",
                        format!("tp = {v} is not a whole number"),
                        "e.g. tp=1|2|4|8",
                    )
                })?);
            }
            "policy" => {
                t.policy = v;
                continue;
            }
            name => {
                policy_knobs.push((name.to_owned(), v));
                continue;
            }
        }
        t.engine_changed = true;
    }
    let policy_is_a_knob = space.params().iter().any(|p| p.name == "policy");
    let kind: fuselab_engine::PolicyKind = t.policy.parse()?;
    let has = kind.knob_names();
    t.knobs.extend(
        policy_knobs
            .into_iter()
            .filter(|(name, _)| !policy_is_a_knob || has.contains(&name.as_str()))
            .map(|(name, v)| format!("{name}={v}")),
    );
    Ok(t)
}

/// Every value a deployment knob can take names real hardware, a model
/// shape, a policy or a whole TP degree, checked before any trial runs.
fn check_deployment_values(space: &SearchSpace) -> anyhow::Result<()> {
    use fuselab_tune::Domain;
    for p in space.params() {
        let values: Vec<String> = match &p.domain {
            Domain::Categorical { choices } => choices.clone(),
            Domain::Ordinal { values } => values.iter().map(ToString::to_string).collect(),
            Domain::Int { lo, hi, .. } if p.name == "tp" => {
                (*lo..=*hi).map(|v| v.to_string()).collect()
            }
            _ if ["hardware", "model", "policy", "tp"].contains(&p.name.as_str()) => {
                bail!(Error::invalid(
                    "--space",
                    format!(
                        "`{}` is a deployment knob and takes a list of choices",
                        p.name
                    ),
                    format!(
                        "e.g. {}",
                        match p.name.as_str() {
                            "hardware" => "hardware=a100-80g|h100-sxm|h200",
                            "model" => "model=llama3-8b|llama3-70b",
                            "policy" => "policy=chunked|splitfuse",
                            _ => "tp=1|2|4|8",
                        }
                    )
                ))
            }
            _ => continue,
        };
        for v in &values {
            let checked: anyhow::Result<()> = match p.name.as_str() {
                "hardware" => fuselab_sim::hardware(v).map(|_| ()).map_err(Into::into),
                "model" => fuselab_engine::ModelShape::preset(v)
                    .map(|_| ())
                    .map_err(Into::into),
                "policy" => v
                    .parse::<fuselab_engine::PolicyKind>()
                    .map(|_| ())
                    .map_err(Into::into),
                "tp" => v
                    .parse::<u32>()
                    .map(|_| ())
                    .map_err(|_| anyhow::anyhow!("tp = {v} is not a whole number")),
                _ => Ok(()),
            };
            checked.with_context(|| format!("--space: {}={v}", p.name))?;
        }
    }
    Ok(())
}

impl SimObjective {
    fn point(&self, space: &SearchSpace, config: &Config) -> anyhow::Result<Point> {
        let t = trial_setup(&self.engine, &self.policy, &self.fixed, space, config)?;
        let policy = policy_config(&t.policy, &t.knobs)?;
        if !t.engine_changed {
            return Ok(Point {
                policy,
                ..self.base.clone()
            });
        }
        Point::new(
            &t.engine,
            policy,
            self.base.workload.clone(),
            self.base.requests.clone(),
            self.base.slo.clone(),
        )
    }
}

impl Objective for SimObjective {
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &Config) -> Outcome {
        let point = match self.point(ctx.space, config) {
            Ok(p) => p,
            Err(e) => return Outcome::failed(Status::Failed, format!("{e:#}")),
        };
        let name = format!("trial-{:04}", ctx.slot);
        let measured = match self.repeat {
            Some(n) => fuselab_store::create_folder(&ctx.run_dir, true)
                .map_err(anyhow::Error::from)
                .and_then(|()| exec::run_repeats(&ctx.run_dir, &name, &point, n))
                .and_then(|runs| {
                    fuselab_metrics::mean_metrics(&runs)
                        .ok_or_else(|| anyhow::anyhow!("the trial produced no run"))
                }),
            None => exec::run_point(&point).map(|r| {
                if let Err(e) = exec::write_point(&ctx.run_dir, true, &name, &point, &r) {
                    tracing::warn!("trial {}: {e:#}", ctx.slot);
                }
                r.metrics
            }),
        };
        match measured {
            Ok(metrics) => metric_outcome(&metrics, &self.objectives, &self.outcomes),
            Err(e) => Outcome::failed(Status::Failed, format!("{e:#}")),
        }
    }

    fn describe(&self) -> String {
        format!(
            "sim engine {} {} policy {} workload {} ({} requests, seed {}); fixed knobs [{}]{}",
            self.base.engine.hardware,
            self.base.engine.model,
            self.policy,
            self.base.workload.name,
            self.base.requests.len(),
            self.base.workload.seed,
            self.fixed.join(", "),
            self.repeat
                .map(|n| format!("; {n} runs per trial (mean)"))
                .unwrap_or_default()
        )
    }
}

/// A trial's outcome from its metrics.
fn metric_outcome(
    metrics: &fuselab_core::Metrics,
    objectives: &[Metric],
    outcomes: &[Metric],
) -> Outcome {
    let vals: Vec<f64> = objectives.iter().map(|m| m.value(metrics)).collect();
    let cons: Vec<f64> = outcomes.iter().map(|m| m.value(metrics)).collect();
    if vals.iter().chain(&cons).any(|v| !v.is_finite()) {
        return Outcome::failed(
            Status::Failed,
            "the run produced a non-finite metric (no request completed?)",
        );
    }
    Outcome::ok(vals, cons)
}

/// A real server as the tuning objective: each trial starts the server
/// command with the trial's knobs, waits until it is ready, benchmarks it
/// over HTTP, and stops it; start-up failures, out-of-memory, crashes and
/// servers never ready are recorded as failed trials with the reason.
struct ServerObjective {
    command: CommandObjective,
    template: String,
    /// The launch settings (its `cmd` is the template, rendered per trial).
    launch: exec::ServerLaunch,
    engine: EngineOpts,
    workload: fuselab_core::WorkloadSpec,
    requests: Vec<fuselab_core::RequestSpec>,
    slo: fuselab_core::Slo,
    objectives: Vec<Metric>,
    outcomes: Vec<Metric>,
}

impl ServerObjective {
    /// The server of a trial: the template with the trial's knobs.
    fn launch(&self, space: &SearchSpace, config: &fuselab_tune::Config) -> exec::ServerLaunch {
        exec::ServerLaunch {
            cmd: self.command.render(space, config),
            ..self.launch.clone()
        }
    }

    fn measure(&self, ctx: &TrialContext<'_>) -> anyhow::Result<fuselab_core::Metrics> {
        let point = Point::new(
            &self.engine,
            fuselab_engine::PolicyConfig::new(fuselab_engine::PolicyKind::Continuous),
            self.workload.clone(),
            self.requests.clone(),
            self.slo.clone(),
        )?;
        let result = exec::run_point(&point)?;
        let name = format!("trial-{:04}", ctx.slot);
        exec::write_point(&ctx.run_dir, true, &name, &point, &result)?;
        exec::check_lengths(&point, &result, &ctx.run_dir)?;
        Ok(result.metrics)
    }
}

impl Objective for ServerObjective {
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &fuselab_tune::Config) -> Outcome {
        let start = std::time::Instant::now();
        let launch = self.launch(ctx.space, config);
        let _ = std::fs::create_dir_all(&ctx.run_dir);
        let _ = std::fs::write(
            ctx.run_dir.join("server-command.txt"),
            format!("{}\n", launch.cmd),
        );
        let mut out = match launch.run(&ctx.run_dir.join("server.log"), || self.measure(ctx)) {
            Err(f) => Outcome::failed(f.status, f.reason),
            Ok(Ok(metrics)) => metric_outcome(&metrics, &self.objectives, &self.outcomes),
            Ok(Err(e)) => Outcome::failed(Status::Failed, format!("{e:#}")),
        };
        out.duration_s = start.elapsed().as_secs_f64();
        out
    }

    fn describe(&self) -> String {
        format!(
            "server: {} (ready at {}), benchmarked over HTTP with workload {} ({} requests, seed {})",
            self.template,
            self.launch.ready_url,
            self.workload.name,
            self.requests.len(),
            self.workload.seed
        )
    }
}

fn parse_outcome(s: &str) -> anyhow::Result<(Metric, OutcomeConstraint)> {
    let (name, upper, thr) = if let Some((a, b)) = s.split_once("<=") {
        (a, true, b)
    } else if let Some((a, b)) = s.split_once(">=") {
        (a, false, b)
    } else {
        return Err(Error::invalid(
            "--outcome",
            format!("`{s}` has no <= or >="),
            "e.g. --outcome 'p99-e2e<=30'",
        )
        .into());
    };
    let m = Metric::parse(name, "--outcome")?;
    let threshold: f64 = thr.trim().trim_end_matches('s').parse().map_err(|_| {
        Error::invalid(
            "--outcome",
            format!("threshold `{thr}` is not a number"),
            "e.g. --outcome 'p99-e2e<=30'",
        )
    })?;
    Ok((
        m,
        OutcomeConstraint {
            name: m.name().into(),
            upper,
            threshold,
        },
    ))
}

/// Runs `fuselab tune`.
pub fn run(args: TuneArgs) -> anyhow::Result<CliOutcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    if let Some(p) = &args.workload_preset {
        bail!(Error::invalid(
            "--workload",
            "is not a flag of fuselab tune",
            format!("the workload preset is `--preset {p}`, as in bench and sweep")
        ));
    }
    let kernel = args
        .kernel
        .as_deref()
        .map(|k| {
            fuselab_kernels::tunable::TunableKernel::parse(
                k,
                args.device.as_deref().unwrap_or("cpu"),
            )
            .map_err(|e| {
                Error::invalid(
                    "--kernel",
                    kernel_message(e),
                    "e.g. --kernel decode_attention --device cpu",
                )
            })
        })
        .transpose()?;
    let Some(space_spec) = args.space.as_deref().or(kernel.map(|k| k.space())) else {
        bail!(Error::invalid(
            "--space",
            "missing",
            "e.g. --space 'x1=-3.0..3,x2=-2.0..2'"
        ));
    };
    let mut space = SearchSpace::parse(space_spec).context("--space")?;
    for c in &args.constraint {
        space = space.with_constraint(c).context("--constraint")?;
    }
    let budget = args.budget.unwrap_or(40);
    if budget == 0 {
        bail!(Error::invalid("--budget", "0 trials", "give at least 1"));
    }
    if let Some(list) = &args.compare {
        return compare_tuners(&args, list);
    }
    let parallel = args.parallel.unwrap_or(1);
    if parallel == 0 {
        bail!(Error::invalid("--parallel", "0", "give at least 1"));
    }
    let tuner_kind: TunerKind = args.tuner.as_deref().unwrap_or("bo").parse()?;
    // Without `--tune-seed`, `--seed` (a workload flag) seeds the tuner too.
    let seed = args.tune_seed.or(args.workload.seed).unwrap_or(42);
    let timeout = args
        .trial_timeout
        .as_deref()
        .map(parse_duration)
        .transpose()?;

    let launch = crate::cmd::bench::server_launch(
        &args.engine,
        args.server_cmd.as_deref(),
        args.server_ready.as_deref(),
        args.server_timeout.as_deref(),
    )?;
    let executor = args
        .executor
        .as_deref()
        .map(str::parse::<ExecutorSpec>)
        .transpose()?;
    let gpus = args.gpus.as_deref().map(resolve_gpus).transpose()?;
    let (executor, parallel) = match (&gpus, executor) {
        (None, executor) => {
            let parallel = executor_flags(&args, executor.as_ref(), parallel)?;
            (executor, parallel)
        }
        (Some(gpus), Some(ExecutorSpec::Local { slots })) => {
            // `local` alone: one trial per GPU.
            let slots = if args.executor.as_deref() == Some("local") {
                gpus.len()
            } else {
                slots
            };
            if slots > gpus.len() {
                bail!(Error::invalid(
                    "--gpus",
                    format!(
                        "--executor local:{slots} runs {slots} trials at once but --gpus gives {} GPU(s) ({})",
                        gpus.len(),
                        gpus.join(",")
                    ),
                    format!("use --executor local:{} or name more GPUs", gpus.len())
                ));
            }
            let executor = Some(ExecutorSpec::Local { slots });
            let parallel = executor_flags(&args, executor.as_ref(), parallel)?;
            (executor, parallel)
        }
        (Some(_), _) => bail!(Error::invalid(
            "--gpus",
            "places trials of the local executor only",
            "add --executor local:N (slurm and ray place GPUs with --slurm-args / --ray-resources)"
        )),
    };
    let mut tuned_kernel: Option<KernelObjective> = None;
    let (problem, objective, command): (
        Problem,
        Box<dyn Objective>,
        Option<Box<dyn CommandTrial>>,
    ) = if let Some(kernel) = kernel {
        let objective =
            kernel_objective(&args, kernel, &space, seed, executor.is_some(), parallel)?;
        tuned_kernel = Some(objective.clone());
        (
            Problem::single(space.clone(), "ms", Direction::Minimize),
            Box::new(objective),
            None,
        )
    } else if let Some(launch) = launch {
        let on_one_machine = matches!(executor, None | Some(ExecutorSpec::Local { .. }));
        if on_one_machine && parallel > 1 {
            bail!(Error::invalid(
                "--parallel",
                format!(
                    "{parallel} server trials at once on this machine would all listen on the engine URL's port"
                ),
                "run server trials one at a time here, or through --executor slurm or ray (one trial a node)"
            ));
        }
        let (p, o, c) = server_objective(&args, launch, &space)?;
        (p, o, Some(c))
    } else if let Some(cmd) = args.objective_cmd.as_deref() {
        if args.policy.is_some()
            || args.objective.is_some()
            || !args.knob.is_empty()
            || args.knobs_from.is_some()
            || !args.outcome.is_empty()
            || args.repeat.is_some()
        {
            bail!(Error::invalid(
                "--objective-cmd",
                "given together with engine flags (--policy/--objective/--knob/--knobs-from/--outcome/--repeat)",
                "tune either a command or the engine"
            ));
        }
        let dir = if args.minimize {
            Direction::Minimize
        } else {
            Direction::Maximize
        };
        let problem = Problem::single(space.clone(), "value", dir);
        // The engine flag `--timeout SECONDS` (per request) reads as the
        // per-trial limit when there is no engine.
        let timeout = match (timeout, args.engine.timeout) {
            (Some(t), _) => Some(t),
            (None, Some(s)) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
            (None, Some(s)) => bail!(Error::invalid(
                "--timeout",
                format!("{s} is not positive"),
                "give seconds > 0"
            )),
            (None, None) => None,
        };
        let obj = CommandObjective::new(cmd, &space, timeout, 1, 0)?;
        (problem, Box::new(obj.clone()), Some(Box::new(obj)))
    } else {
        if matches!(
            args.engine.engine,
            Some(crate::cmd::bench::EngineChoice::Http(_))
        ) {
            bail!(Error::invalid(
                "--engine",
                "a server's scheduling is its own: fuselab's policy knobs do not reach it",
                "tune the server's launch flags with --server-cmd 'CMD with {knob} placeholders'"
            ));
        }
        let policy = args.policy.clone().unwrap_or_else(|| "splitfuse".into());
        let fixed = exec::with_knob_set(args.knobs_from.as_deref(), &args.engine, &args.knob)?;
        // A knob the policy does not have (or a bad fixed knob) is a usage error, found
        // before any trial runs: try the fixed knobs plus one sample of the space.
        let mut rng = fuselab_tune::trial_rng(seed, 0);
        let probe = space
            .sample(&mut rng)
            .context("--constraint: no configuration satisfies the constraints")?;
        check_deployment_values(&space)?;
        let t = trial_setup(&args.engine, &policy, &fixed, &space, &probe)?;
        policy_config(&t.policy, &t.knobs)
            .with_context(|| format!("--space: the knobs of policy `{}`", t.policy))?;
        if t.engine_changed {
            t.engine.resolve().context("--space: a deployment knob")?;
        }
        let (objectives, outcomes, cons) = engine_objectives(&args)?;
        let (workload, requests) = args.workload.resolve()?;
        let base = Point::new(
            &args.engine,
            policy_config(&policy, &fixed)?,
            workload,
            requests,
            slo(args.slo.as_deref())?,
        )?;
        let problem = engine_problem(&space, &objectives, cons);
        let repeat = crate::cmd::bench::check_repeat(args.repeat)?;
        let bench = crate::cmd::bench::BenchArgs {
            config: None,
            engine: args.engine.clone(),
            policy: Some(policy.clone()),
            knob: fixed.clone(),
            spec_k: None,
            knobs_from: None,
            slo: args.slo.clone(),
            out: None,
            force: false,
            repeat,
            server_cmd: None,
            server_ready: None,
            server_timeout: None,
            workload: args.workload.clone(),
        };
        let command = SimCommand {
            exe: std::env::current_exe().context("locating the fuselab executable")?,
            bench,
            timeout,
            objectives: objectives.clone(),
            outcomes: outcomes.clone(),
            describe: String::new(),
        };
        let sim = SimObjective {
            base,
            engine: args.engine.clone(),
            repeat,
            policy,
            fixed,
            objectives,
            outcomes,
        };
        let command = SimCommand {
            describe: sim.describe(),
            ..command
        };
        (problem, Box::new(sim), Some(Box::new(command)))
    };

    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("campaigns/tune-{}-s{seed}", tuner_kind.name())));
    // Trials that run elsewhere get absolute paths to their run folders.
    let out = if executor.is_some() {
        std::path::absolute(&out).with_context(|| format!("--out {}", out.display()))?
    } else {
        out
    };
    let meta = campaign_meta(&problem, tuner_kind, seed, objective.as_ref());
    let (mut journal, done) = open_campaign(&out, &meta, args.resume)?;
    let mut tuner = tuner_kind.build(problem.clone(), seed, budget);
    if !done.is_empty() {
        eprintln!(
            "resuming {}: {} trial(s) already done",
            out.display(),
            done.len()
        );
    }
    for t in done {
        tuner.tell(t);
    }
    print!("{}", space_table(&space));
    println!(
        "tuner {} with tuner seed {seed} (--tune-seed){}; {budget} trials, {parallel} in flight{} → {}",
        tuner_kind.name(),
        match args.workload.seed {
            Some(w) if args.objective_cmd.is_none() => format!(", workload seed {w} (--seed)"),
            _ => String::new(),
        },
        match &executor {
            Some(_) => String::new(),
            None => " in this process".into(),
        },
        out.display()
    );
    let started = std::time::Instant::now();
    let on_trial = |t: &Trial| {
        eprintln!("[{}/{budget}] {}", t.index + 1, trial_line(&problem, t));
    };
    let end = match (&executor, command) {
        (Some(spec), Some(command)) => {
            let mut ex = build_executor(&args, spec, gpus.as_deref())?;
            println!("executor: {}", ex.describe());
            let watch = gpus.as_deref().map(GpuWatch::start);
            let opts = ExecOptions {
                parallel,
                retry_lost: args.retry_lost.unwrap_or(0),
                poll_interval: args
                    .poll_interval
                    .as_deref()
                    .map(|s| parse_duration_for(s, "--poll-interval"))
                    .transpose()?
                    .unwrap_or(Duration::from_millis(500)),
                ..ExecOptions::default()
            };
            let end = run_campaign_on(
                &problem,
                tuner.as_mut(),
                command.as_ref(),
                ex.as_mut(),
                &mut journal,
                budget,
                &opts,
                on_trial,
            );
            if let Some(w) = watch {
                w.finish(&out)?;
            }
            end?
        }
        _ => run_campaign(
            &problem,
            tuner.as_mut(),
            objective.as_ref(),
            &mut journal,
            budget,
            parallel,
            on_trial,
        )?,
    };
    println!(
        "campaign wall time: {:.2} s ({} trials, {parallel} in flight)",
        started.elapsed().as_secs_f64(),
        tuner.trials().len()
    );
    if end == CampaignEnd::Exhausted {
        eprintln!("the tuner has no configuration left to try (space or grid exhausted)");
    }
    print!("{}", report(&problem, tuner.trials(), seed));
    println!(
        "journal: {}",
        fuselab_tune::Journal::path_in(&out).display()
    );
    if let Some(k) = tuned_kernel {
        let speedup = write_tuning_table(&k, &problem, tuner.trials(), &out)?;
        if let (Some(config), Some(speedup)) = (&args.then_bench, speedup) {
            then_bench(config, &out, speedup)?;
        }
    }
    Ok(CliOutcome::Success)
}

/// `--then-bench`: the benchmark of `config` without and with the tuning
/// table of `out`, and the change.
fn then_bench(
    config: &std::path::Path,
    out: &std::path::Path,
    kernel_speedup: Option<f64>,
) -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating the fuselab executable")?;
    let table = out.join("tuning.json");
    let mut metrics = Vec::new();
    for (name, tuned) in [("untuned", false), ("tuned", true)] {
        let dir = out.join("then-bench").join(name);
        let mut cmd = std::process::Command::new(&exe);
        cmd.arg("bench")
            .arg("--config")
            .arg(config)
            .arg("--out")
            .arg(&dir)
            .arg("--force");
        if tuned {
            cmd.arg("--tuning-table").arg(&table);
        }
        let status = cmd
            .status()
            .with_context(|| format!("running the {name} benchmark of --then-bench"))?;
        if !status.success() {
            bail!(Error::invalid(
                "--then-bench",
                format!("the {name} benchmark failed ({status}); its output is above"),
                "give a bench config (TOML) of the engine whose kernels were tuned (engine = \"cpu\" or \"cuda\")"
            ));
        }
        let m = fuselab_store::RunFolder::open(&dir)?
            .read_summary()?
            .metrics;
        metrics.push(m);
    }
    let (u, t) = (&metrics[0], &metrics[1]);
    let rows = [
        ("TTFT p50 (s)", u.ttft_s.p50, t.ttft_s.p50),
        ("TPOT p50 (s)", u.tpot_s.p50, t.tpot_s.p50),
        ("E2E p50 (s)", u.e2e_s.p50, t.e2e_s.p50),
        (
            "output tok/s",
            u.output_token_throughput,
            t.output_token_throughput,
        ),
    ];
    let mut md = format!(
        "# Tuned kernels, end to end\n\nBenchmark `{}` without and with `{}`; kernel speed-up over the default: {}.\n\n| metric | untuned | tuned | tuned / untuned |\n|---|---:|---:|---:|\n",
        config.display(),
        table.display(),
        kernel_speedup.map_or("not measured".into(), |s| format!("{s:.3}×"))
    );
    for (name, a, b) in rows {
        md.push_str(&format!("| {name} | {a:.6} | {b:.6} | {:.3} |\n", b / a));
    }
    std::fs::write(out.join("then-bench.md"), &md)
        .with_context(|| format!("writing {}", out.join("then-bench.md").display()))?;
    print!("{md}");
    Ok(())
}

/// Writes `OUT/tuning.json`: the best feasible configuration of a kernel
/// campaign, beside the hand-picked default measured now on the same shapes.
fn write_tuning_table(
    k: &KernelObjective,
    problem: &Problem,
    trials: &[Trial],
    out: &std::path::Path,
) -> anyhow::Result<Option<Option<f64>>> {
    use fuselab_kernels::tunable::{Evaluation, TUNING_TABLE_SCHEMA, TuningEntry, TuningTable};
    let Some(best) = trials
        .iter()
        .filter(|t| t.outcome.status == Status::Ok)
        .min_by(|a, b| a.outcome.objectives[0].total_cmp(&b.outcome.objectives[0]))
    else {
        println!("no feasible configuration: no tuning table written");
        return Ok(None);
    };
    let config: std::collections::BTreeMap<String, i64> = problem
        .space
        .params()
        .iter()
        .zip(&best.config.0)
        .filter_map(|(p, v)| v.as_f64().map(|x| (p.name.clone(), x as i64)))
        .collect();
    let default_ms = match k.evaluator.evaluate_default(&k.shapes, k.seed) {
        Evaluation::Timed { ms, .. } => Some(ms),
        _ => None,
    };
    let (device, driver) = k
        .evaluator
        .gpu()
        .unwrap_or_else(|| (fuselab_store::host_cpu(), None));
    let bucket = (k.kernel.device() == "cuda")
        .then(|| fuselab_kernels::tunable::ShapeBucket::of(k.kernel, &k.shapes))
        .flatten();
    let entry = TuningEntry {
        device,
        driver,
        bucket,
        kernel: k.kernel.name().into(),
        shapes: k.shapes.iter().map(ToString::to_string).collect(),
        config,
        ms: best.outcome.objectives[0],
        default_ms,
    };
    let speedup = default_ms.map(|d| d / entry.ms);
    let mut table = TuningTable {
        schema: TUNING_TABLE_SCHEMA,
        entries: Vec::new(),
    };
    table.insert(entry);
    let path = out.join("tuning.json");
    table
        .save(&path)
        .map_err(|e| anyhow::anyhow!("{}", kernel_message(e)))?;
    println!(
        "tuning table: {} ({}{})",
        path.display(),
        table.entries[0]
            .config
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(","),
        speedup.map_or(String::new(), |s| format!(", {s:.2}× the default's speed"))
    );
    Ok(Some(speedup))
}

/// Checks the executor flags against `--executor`; returns the number of
/// trials in flight.
fn executor_flags(
    args: &TuneArgs,
    executor: Option<&ExecutorSpec>,
    parallel: usize,
) -> anyhow::Result<usize> {
    let needs = |flag: &str, kind: &str| {
        Error::invalid(
            flag,
            format!("applies only with --executor {kind}"),
            format!("add --executor {kind}, or drop {flag}"),
        )
    };
    if args.slurm_args.is_some() && !matches!(executor, Some(ExecutorSpec::Slurm)) {
        bail!(needs("--slurm-args", "slurm"));
    }
    if args.ray_resources.is_some() && !matches!(executor, Some(ExecutorSpec::Ray { .. })) {
        bail!(needs("--ray-resources", "ray=http://HOST:8265"));
    }
    if executor.is_none() {
        if args.retry_lost.is_some() {
            bail!(needs("--retry-lost", "local|slurm|ray=ADDRESS"));
        }
        if args.poll_interval.is_some() {
            bail!(needs("--poll-interval", "local|slurm|ray=ADDRESS"));
        }
    }
    match executor {
        Some(ExecutorSpec::Local { slots }) => match args.parallel {
            Some(p) if p != *slots => bail!(Error::invalid(
                "--parallel",
                format!("{p} disagrees with --executor local:{slots}"),
                format!("give one of them: --executor local:{p}")
            )),
            _ => Ok(*slots),
        },
        _ => Ok(parallel),
    }
}

/// `--gpus all|LIST`: the GPU ids trials are placed on.
fn resolve_gpus(spec: &str) -> anyhow::Result<Vec<String>> {
    let bad = |what: String| Error::invalid("--gpus", what, "give all or GPU ids such as 0,1,3");
    let ids: Vec<String> = if spec.trim() == "all" {
        match std::env::var("CUDA_VISIBLE_DEVICES") {
            Ok(v) if !v.trim().is_empty() => v.split(',').map(|s| s.trim().to_string()).collect(),
            _ => {
                let out = std::process::Command::new("nvidia-smi")
                    .args(["--query-gpu=index", "--format=csv,noheader"])
                    .output();
                match out {
                    Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                        .lines()
                        .map(|l| l.trim().to_string())
                        .filter(|l| !l.is_empty())
                        .collect(),
                    Ok(o) => bail!(bad(format!(
                        "all: nvidia-smi failed ({}): {}",
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    ))),
                    Err(e) => bail!(bad(format!(
                        "all: nvidia-smi cannot run ({e}): no GPU found"
                    ))),
                }
            }
        }
    } else {
        spec.split(',').map(|s| s.trim().to_string()).collect()
    };
    if ids.is_empty() {
        bail!(bad(format!("`{spec}` names no GPU")));
    }
    for id in &ids {
        let ok = !id.is_empty()
            && (id.chars().all(|c| c.is_ascii_digit())
                || (id.starts_with("GPU-") || id.starts_with("MIG-")) && id.len() > 4);
        if !ok {
            bail!(bad(format!(
                "`{id}` is not a GPU index or UUID (GPU-…/MIG-…)"
            )));
        }
    }
    let mut seen = std::collections::BTreeSet::new();
    if let Some(d) = ids.iter().find(|id| !seen.insert(id.as_str())) {
        bail!(bad(format!("GPU {d} is named twice")));
    }
    Ok(ids)
}

/// NVML samplers of the campaign's GPUs (those given by index); NVML missing is a note.
struct GpuWatch {
    started: std::time::Instant,
    samplers: Vec<(String, fuselab_kernels::cuda::nvml::Sampler)>,
    notes: Vec<String>,
}

impl GpuWatch {
    fn start(gpus: &[String]) -> Self {
        let mut samplers = Vec::new();
        let mut notes = Vec::new();
        for id in gpus {
            match id.parse::<u32>() {
                Ok(i) => match fuselab_kernels::cuda::nvml::Nvml::open(i) {
                    Ok(n) => samplers.push((
                        id.clone(),
                        fuselab_kernels::cuda::nvml::Sampler::start(std::sync::Arc::new(n)),
                    )),
                    Err(e) => notes.push(format!("GPU {id}: not sampled ({e})")),
                },
                Err(_) => notes.push(format!("GPU {id}: not sampled (NVML here takes indices)")),
            }
        }
        Self {
            started: std::time::Instant::now(),
            samplers,
            notes,
        }
    }

    /// Stops sampling, prints each GPU's busy fraction and writes `gpus.json` in `out`.
    fn finish(self, out: &std::path::Path) -> anyhow::Result<()> {
        let wall_s = self.started.elapsed().as_secs_f64();
        let mut gpus = Vec::new();
        for (id, sampler) in self.samplers {
            let s = sampler.stop();
            let busy = s.busy();
            match busy {
                Some((f, mean)) => println!(
                    "GPU {id}: busy in {:.1} % of {} NVML samples over {wall_s:.1} s (mean utilisation {mean:.1} %)",
                    100.0 * f,
                    s.utilization_pct.len()
                ),
                None => println!("GPU {id}: NVML returned no utilisation samples"),
            }
            gpus.push(serde_json::json!({
                "gpu": id,
                "samples": s.utilization_pct.len(),
                "busy_fraction": busy.map(|b| b.0),
                "mean_utilization_pct": busy.map(|b| b.1),
                "median_sm_clock_mhz": s.median_clock_mhz(),
                "median_power_w": s.median_power_w(),
                "error": s.error,
            }));
        }
        for n in &self.notes {
            println!("{n}");
        }
        let doc = serde_json::json!({
            "what": "NVML utilisation of each GPU over the campaign: busy_fraction = share of samples (every 20 ms) with utilisation above 0",
            "wall_s": wall_s,
            "gpus": gpus,
            "notes": self.notes,
        });
        let path = out.join("gpus.json");
        std::fs::write(&path, serde_json::to_string_pretty(&doc)? + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
        Ok(())
    }
}

/// The executor of `--executor` (local trials placed on `gpus` when given).
fn build_executor(
    args: &TuneArgs,
    spec: &ExecutorSpec,
    gpus: Option<&[String]>,
) -> anyhow::Result<Box<dyn Executor>> {
    Ok(match spec {
        ExecutorSpec::Local { slots } => match gpus {
            Some(g) => Box::new(LocalExecutor::with_gpus(*slots, g.to_vec())),
            None => Box::new(LocalExecutor::new(*slots)),
        },
        ExecutorSpec::Slurm => Box::new(SlurmExecutor::new(
            args.slurm_args.as_deref().unwrap_or(""),
        )?),
        ExecutorSpec::Ray { address } => {
            let resources: RayResources = args
                .ray_resources
                .as_deref()
                .unwrap_or("num_cpus=1")
                .parse()?;
            // Submission ids must be unique on the cluster, across campaigns.
            let tag = format!(
                "{:x}-{:x}",
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis())
                    .unwrap_or(0),
                std::process::id()
            );
            Box::new(RayExecutor::new(address, resources, &tag))
        }
    })
}

/// A simulated-engine trial as a command line: `fuselab bench --config
/// RUN/bench.toml` with the trial's knobs, writing its run folder to
/// `RUN/bench`; the outcome is read from its `summary.json` (the mean over
/// the runs with `--repeat`).
struct SimCommand {
    exe: PathBuf,
    bench: crate::cmd::bench::BenchArgs,
    timeout: Option<Duration>,
    objectives: Vec<Metric>,
    outcomes: Vec<Metric>,
    describe: String,
}

impl SimCommand {
    fn metrics(&self, dir: &std::path::Path) -> anyhow::Result<fuselab_core::Metrics> {
        if self.bench.repeat.is_some() {
            let rep = fuselab_store::read_repeat(dir)?;
            let runs = rep
                .runs
                .iter()
                .map(|r| fuselab_store::read_summary(&dir.join(r)).map(|s| s.metrics))
                .collect::<Result<Vec<_>, _>>()?;
            fuselab_metrics::mean_metrics(&runs)
                .ok_or_else(|| anyhow::anyhow!("{}: the trial produced no run", dir.display()))
        } else {
            Ok(fuselab_store::read_summary(dir)?.metrics)
        }
    }
}

impl CommandTrial for SimCommand {
    fn command(
        &self,
        space: &SearchSpace,
        config: &Config,
        run_dir: &std::path::Path,
    ) -> fuselab_tune::Result<String> {
        let mut b = self.bench.clone();
        let policy = b.policy.clone().unwrap_or_else(|| "splitfuse".into());
        let t = trial_setup(&b.engine, &policy, &b.knob, space, config).map_err(|e| {
            fuselab_tune::Error::invalid("--space", format!("{e:#}"), "fix the deployment knobs")
        })?;
        b.engine = t.engine;
        b.policy = Some(t.policy);
        b.knob = t.knobs;
        bench_trial(&self.exe, b, run_dir)
    }

    fn outcome(&self, run_dir: &std::path::Path, _stdout: &str) -> Outcome {
        match self.metrics(&run_dir.join("bench")) {
            Ok(m) => metric_outcome(&m, &self.objectives, &self.outcomes),
            Err(e) => Outcome::failed(Status::Failed, format!("{e:#}")),
        }
    }

    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// `--objective` (one or two engine metrics) and `--outcome` (constraints on
/// the run's metrics): the metrics to read and the constraints' definitions.
fn engine_objectives(
    args: &TuneArgs,
) -> anyhow::Result<(Vec<Metric>, Vec<Metric>, Vec<OutcomeConstraint>)> {
    let objectives: Vec<Metric> = args
        .objective
        .as_deref()
        .unwrap_or("goodput")
        .split(',')
        .map(|s| Metric::parse(s, "--objective"))
        .collect::<anyhow::Result<_>>()?;
    if objectives.len() > 2 {
        bail!(Error::invalid(
            "--objective",
            "more than two objectives",
            "give one, or two for a Pareto front"
        ));
    }
    let mut outcomes = Vec::new();
    let mut constraints = Vec::new();
    for o in &args.outcome {
        let (m, c) = parse_outcome(o)?;
        outcomes.push(m);
        constraints.push(c);
    }
    Ok((objectives, outcomes, constraints))
}

/// The tuning problem over `space` of an engine or server run's metrics.
fn engine_problem(
    space: &SearchSpace,
    objectives: &[Metric],
    constraints: Vec<OutcomeConstraint>,
) -> Problem {
    Problem {
        space: space.clone(),
        objectives: objectives
            .iter()
            .map(|m| ObjectiveDef {
                name: m.name().into(),
                direction: m.direction(),
            })
            .collect(),
        constraints,
    }
}

/// A trial as `fuselab bench --config RUN/bench.toml` writing `RUN/bench`.
fn bench_trial(
    exe: &std::path::Path,
    mut b: crate::cmd::bench::BenchArgs,
    run_dir: &std::path::Path,
) -> fuselab_tune::Result<String> {
    use fuselab_tune::executor::sh_quote;
    b.out = Some(run_dir.join("bench"));
    let toml_path = run_dir.join("bench.toml");
    let text = toml::to_string(&b).map_err(|e| {
        fuselab_tune::Error::invalid("trial", format!("bench.toml: {e}"), "report this bug")
    })?;
    std::fs::write(&toml_path, text).map_err(|e| fuselab_tune::Error::io(&toml_path, e))?;
    Ok(format!(
        "{} bench --config {}",
        sh_quote(&exe.to_string_lossy()),
        sh_quote(&toml_path.to_string_lossy())
    ))
}

/// What [`server_objective`] sets up.
type ServerCampaign = (Problem, Box<dyn Objective>, Box<dyn CommandTrial>);

/// The problem and objective of `--server-cmd`, and the trial as a command
/// line (`fuselab bench --server-cmd …`) for executors.
fn server_objective(
    args: &TuneArgs,
    launch: exec::ServerLaunch,
    space: &SearchSpace,
) -> anyhow::Result<ServerCampaign> {
    if args.objective_cmd.is_some()
        || args.policy.is_some()
        || !args.knob.is_empty()
        || args.knobs_from.is_some()
        || args.repeat.is_some()
    {
        bail!(Error::invalid(
            "--server-cmd",
            "given together with --objective-cmd, --policy, --knob, --knobs-from or --repeat",
            "the server's own settings go into the command; tune either a server or fuselab's engine"
        ));
    }
    let command = CommandObjective::new(&launch.cmd, space, None, 1, 0)?;
    let (objectives, outcomes, constraints) = engine_objectives(args)?;
    let (workload, requests) = args.workload.resolve()?;
    // Checked now; without --model the model is named per trial from /v1/models.
    let engine = args.engine.clone();
    engine.resolve()?;
    let problem = engine_problem(space, &objectives, constraints);
    let bench = crate::cmd::bench::BenchArgs {
        engine: engine.clone(),
        slo: args.slo.clone(),
        workload: args.workload.clone(),
        server_ready: Some(launch.ready_url.clone()),
        server_timeout: Some(format!("{}s", launch.ready_timeout.as_secs_f64())),
        ..Default::default()
    };
    let objective = ServerObjective {
        command: command.clone(),
        template: launch.cmd.clone(),
        launch,
        engine,
        workload,
        requests,
        slo: slo(args.slo.as_deref())?,
        objectives: objectives.clone(),
        outcomes: outcomes.clone(),
    };
    let trial = ServerCommand {
        exe: std::env::current_exe().context("locating the fuselab executable")?,
        command,
        bench,
        objectives,
        outcomes,
        describe: objective.describe(),
    };
    Ok((problem, Box::new(objective), Box::new(trial)))
}

/// A `--server-cmd` trial as one command line, for executors: `fuselab bench
/// --config RUN/bench.toml` with the trial's server command in it, which
/// starts the server, benchmarks it and stops it on whatever node runs it.
struct ServerCommand {
    exe: PathBuf,
    command: CommandObjective,
    bench: crate::cmd::bench::BenchArgs,
    objectives: Vec<Metric>,
    outcomes: Vec<Metric>,
    describe: String,
}

impl CommandTrial for ServerCommand {
    fn command(
        &self,
        space: &SearchSpace,
        config: &Config,
        run_dir: &std::path::Path,
    ) -> fuselab_tune::Result<String> {
        let mut b = self.bench.clone();
        b.server_cmd = Some(self.command.render(space, config));
        bench_trial(&self.exe, b, run_dir)
    }

    fn outcome(&self, run_dir: &std::path::Path, _stdout: &str) -> Outcome {
        match fuselab_store::read_summary(&run_dir.join("bench")) {
            Ok(s) => metric_outcome(&s.metrics, &self.objectives, &self.outcomes),
            Err(e) => Outcome::failed(Status::Failed, format!("{e:#}")),
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

/// The parsed search space, one knob a line: its type, range and scale, and
/// a note on integer ranges written without a decimal point.
fn space_table(space: &fuselab_tune::SearchSpace) -> String {
    use fuselab_tune::Domain;
    let mut rows = vec![vec![
        "knob".to_string(),
        "type".into(),
        "values".into(),
        "scale".into(),
    ]];
    let mut notes = Vec::new();
    for p in space.params() {
        if let Some(c) = &p.active_if {
            let values: Vec<String> = c.values.iter().map(ToString::to_string).collect();
            notes.push(format!(
                "{} is searched only where {} is {}; elsewhere it stays at its first value",
                p.name,
                c.parent,
                values.join(" or ")
            ));
        }
        let scale = |log: bool| if log { "log" } else { "linear" }.to_string();
        let (kind, values, scale) = match &p.domain {
            Domain::Int { lo, hi, log } => {
                // Few integers: was a real range meant?
                if hi - lo <= 10 {
                    notes.push(format!(
                        "note: {} takes the {} integers {lo} … {hi}; write {lo}.0..{hi}.0 for a real range",
                        p.name,
                        hi - lo + 1
                    ));
                }
                ("integer", format!("{lo} … {hi}"), scale(*log))
            }
            Domain::Float { lo, hi, log } => ("real", format!("{lo} … {hi}"), scale(*log)),
            Domain::Ordinal { values } => (
                "ordinal",
                values
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" | "),
                "rank".into(),
            ),
            Domain::Categorical { choices } => {
                ("categorical", choices.join(" | "), "one-hot".into())
            }
        };
        rows.push(vec![p.name.clone(), kind.into(), values, scale]);
    }
    let mut out = format!("search space ({} knobs):\n", space.params().len());
    out.push_str(&exec::render_table(&rows));
    for c in space.constraints() {
        out.push_str(&format!("constraint: {}\n", c.text()));
    }
    for n in &notes {
        out.push_str(n);
        out.push('\n');
    }
    out
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn trial_line(problem: &Problem, t: &Trial) -> String {
    let knobs = problem.space.describe(&t.config);
    match t.outcome.status {
        Status::Ok | Status::Infeasible => {
            let vals: Vec<String> = t.outcome.objectives.iter().map(|v| fmt_num(*v)).collect();
            format!("{knobs} → {} ({:?})", vals.join(", "), t.outcome.status)
        }
        s => format!(
            "{knobs} → {s:?}: {}",
            t.outcome.message.as_deref().unwrap_or("")
        ),
    }
}

/// The final report: best configuration with its uncertainty (or the Pareto
/// front) and the table of trials.
fn report(problem: &Problem, trials: &[Trial], seed: u64) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let mut header: Vec<String> = vec!["trial".into()];
    header.extend(problem.space.params().iter().map(|p| p.name.clone()));
    header.extend(problem.objectives.iter().map(|o| o.name.clone()));
    header.extend(problem.constraints.iter().map(|c| c.name.clone()));
    header.extend(["status".into(), "time".into()]);
    let mut rows = vec![header];
    for t in trials {
        let mut r = vec![t.index.to_string()];
        r.extend(t.config.0.iter().map(fuselab_tune::campaign::fmt_value));
        for i in 0..problem.objectives.len() {
            r.push(
                t.outcome
                    .objectives
                    .get(i)
                    .map_or("-".into(), |v| fmt_num(*v)),
            );
        }
        for i in 0..problem.constraints.len() {
            r.push(
                t.outcome
                    .constraints
                    .get(i)
                    .map_or("-".into(), |v| fmt_num(*v)),
            );
        }
        r.push(format!("{:?}", t.outcome.status).to_lowercase());
        r.push(exec::secs(t.outcome.duration_s));
        rows.push(r);
    }
    s.push_str(&exec::render_table(&rows));
    let failed = trials.iter().filter(|t| !t.outcome.status.ran()).count();
    let infeasible = trials
        .iter()
        .filter(|t| t.outcome.status == Status::Infeasible)
        .count();
    let _ = writeln!(
        s,
        "{} trials: {} ok, {infeasible} infeasible, {failed} failed",
        trials.len(),
        trials.len() - failed - infeasible
    );
    if problem.objectives.len() == 1 {
        match recommend(problem, trials, seed) {
            Some(r) => {
                let name = &problem.objectives[0].name;
                let _ = writeln!(
                    s,
                    "best: {} → {name} = {} [trial {}]",
                    problem.space.describe(&r.config),
                    fmt_num(r.observed[0]),
                    r.trial
                );
                if let Some(m) = &r.model {
                    let _ = writeln!(
                        s,
                        "model's pick under noise (learned noise sd {}): {} → {name} = {} observed, \
                         GP posterior {} ± {} [trial {}]",
                        fmt_num(m.noise_sd),
                        problem.space.describe(&m.config),
                        fmt_num(m.observed[0]),
                        fmt_num(m.mean),
                        fmt_num(m.sd),
                        m.trial
                    );
                }
            }
            None => {
                let _ = writeln!(s, "best: none (no trial succeeded and met the constraints)");
            }
        }
    } else {
        let front = pareto_trials(problem, trials);
        let names: Vec<&str> = problem.objectives.iter().map(|o| o.name.as_str()).collect();
        let _ = writeln!(
            s,
            "Pareto front ({}), {} point(s):",
            names.join(" vs "),
            front.len()
        );
        let mut front: Vec<&Trial> = front.iter().map(|&i| &trials[i]).collect();
        front.sort_by(|a, b| a.outcome.objectives[0].total_cmp(&b.outcome.objectives[0]));
        for t in front {
            let vals: Vec<String> = t.outcome.objectives.iter().map(|v| fmt_num(*v)).collect();
            let _ = writeln!(
                s,
                "  {} → {} [trial {}]",
                problem.space.describe(&t.config),
                vals.join(", "),
                t.index
            );
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn outcome_constraints() {
        let (m, c) = parse_outcome("p99-e2e<=30s").unwrap();
        assert_eq!(m, Metric::P99E2e);
        assert!(c.upper && c.threshold == 30.0);
        assert!(parse_outcome("p99-e2e<30").is_err());
        assert!(
            parse_outcome("latency<=3")
                .unwrap_err()
                .to_string()
                .contains("unknown metric")
        );
    }
}
