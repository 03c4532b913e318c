//! `fuselab bench`: one benchmark — engine × policy × workload × load → a run folder.

use std::path::PathBuf;

use fuselab_core::Error;
use fuselab_engine::{PolicyConfig, PolicyKind};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::cmd::workload::WorkloadOpts;
use crate::config;
use crate::exec::{self, EngineKind, EngineSpec, Point};

/// Arguments of `fuselab bench`. Every flag can also come from `--config FILE`:
/// engine flags go in an `[engine]` table (`kind`, `hardware`, `model`, `tp`),
/// workload flags in a `[workload]` table, the rest at the top level.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BenchArgs {
    /// Read any of these flags from a TOML file (keys are the flag names
    /// without `--`, workload flags under `[workload]`); flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    #[serde(default)]
    pub engine: EngineOpts,

    /// Scheduling policy: static, continuous, chunked, splitfuse or prepack [default: splitfuse].
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,

    /// Set a policy knob, e.g. `--knob budget=768 --knob max_seqs=256` (repeatable).
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    #[serde(default)]
    pub knob: Vec<String>,

    /// Start from a published system's knobs, `--knob` still winning: `sarathi`
    /// (budget 512, max_seqs 128) or `vllm-v1` (8192 / 1024 on GPUs of ≥ 70 GiB
    /// other than the A100, else 2048 / 256).
    #[arg(long, value_name = "SET")]
    pub knobs_from: Option<String>,

    /// SLOs for goodput: `ttft=2s,tpot=100ms,e2e=30s` or `fastgen:4` [default: none].
    #[arg(long, value_name = "SLO")]
    pub slo: Option<String>,

    /// Run folder to write [default: runs/bench-<policy>-<workload>-s<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace fuselab's files in an existing run folder.
    #[arg(long)]
    #[serde(default)]
    pub force: bool,

    /// Run the same configuration N times back to back into OUT/rep-1 …
    /// OUT/rep-N, with OUT/repeat.json marking them as one configuration.
    /// `gate` and `report` accept OUT and pool the runs, so run-to-run noise
    /// enters their intervals. Real-time engines need N ≥ 3 for an honest
    /// gate, and more on a noisy machine (README, "Using the CI gate").
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,

    #[command(flatten)]
    #[serde(default)]
    pub workload: WorkloadOpts,
}

/// Engine selection flags shared by `bench`, `sweep` and `tune`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineOpts {
    /// Engine [default: sim]. In a config file: `kind` under `[engine]`.
    #[arg(long, value_enum)]
    #[serde(rename = "kind")]
    pub engine: Option<EngineKind>,

    /// Hardware profile for the simulator: a100-80g, h100-sxm, h200, l40s [default: h200].
    #[arg(long, value_name = "NAME")]
    pub hardware: Option<String>,

    /// Model shape: llama3-8b, llama3.1-8b, llama3-70b, llama3.1-70b (131072-token
    /// context), llama2-7b, llama2-13b, tiny, tiny-128, small. Every engine takes
    /// every shape, except that CUDA needs heads of 128 (not tiny or small); the
    /// `max_len` knob defaults to the shape's context length [default: llama3-8b,
    /// tiny for cpu; long-8k and long-32k pick llama3.1-8b].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Tensor-parallel degree [default: 1].
    #[arg(long, value_name = "N")]
    pub tp: Option<u32>,

    /// Safetensors weights (Hugging Face Llama names) for the CPU engine
    /// [default: seeded random weights].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,

    /// Per-request timeout in seconds for real-time engines (cpu, cuda, null) [default: none].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,

    /// Warm-up in seconds for real-time engines: requests due before it run but
    /// are not measured [default: 0].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub warmup: Option<f64>,

    /// Measurement window in seconds after the warm-up for real-time engines;
    /// requests due after it are not sent [default: every request].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub window: Option<f64>,

    /// The null engine answers after a fixed delay: `FIRST,PER_TOKEN`, e.g.
    /// `50ms,10ms` (the first token 50 ms after a request arrives, then one
    /// every 10 ms) [default: answer at once].
    #[arg(long, value_name = "FIRST,PER_TOKEN")]
    pub delay: Option<String>,

    /// TEST KNOB: make every engine step FACTOR times slower (≥ 1), to plant a
    /// known regression and check that the gate catches it. The CPU and CUDA
    /// engines sleep (FACTOR − 1) × each step's wall time; the simulator
    /// multiplies its predicted step time; a delayed null engine multiplies
    /// its delays. Recorded as knob `slowdown` [default: 1, no slowdown].
    #[arg(long, value_name = "FACTOR", allow_negative_numbers = true)]
    pub slowdown: Option<f64>,
}

impl EngineOpts {
    /// Applies the defaults.
    pub fn resolve(&self) -> anyhow::Result<EngineSpec> {
        let kind = self.engine.unwrap_or(EngineKind::Sim);
        let only_for = |flag: &str, set: bool, engines: &str| -> anyhow::Result<()> {
            if set {
                return Err(Error::invalid(
                    flag,
                    format!("does not apply to --engine {}", kind.name()),
                    format!("it applies to --engine {engines}; drop it"),
                )
                .into());
            }
            Ok(())
        };
        only_for(
            "--hardware",
            self.hardware.is_some() && kind != EngineKind::Sim,
            "sim",
        )?;
        only_for("--tp", self.tp.is_some() && kind != EngineKind::Sim, "sim")?;
        only_for(
            "--weights",
            self.weights.is_some() && kind != EngineKind::Cpu,
            "cpu",
        )?;
        only_for(
            "--timeout",
            self.timeout.is_some() && kind == EngineKind::Sim,
            "cpu, cuda or null",
        )?;
        only_for(
            "--warmup",
            self.warmup.is_some() && kind == EngineKind::Sim,
            "cpu, cuda or null",
        )?;
        only_for(
            "--window",
            self.window.is_some() && kind == EngineKind::Sim,
            "cpu, cuda or null",
        )?;
        only_for(
            "--delay",
            self.delay.is_some() && kind != EngineKind::Null,
            "null",
        )?;
        let delay = self.delay.as_deref().map(parse_delay).transpose()?;
        only_for(
            "--slowdown",
            self.slowdown.is_some() && kind == EngineKind::Null && delay.is_none(),
            "sim, cpu, cuda, or null with --delay (an instant null engine has nothing to slow)",
        )?;
        if let Some(f) = self.slowdown
            && !(f.is_finite() && (1.0..=100.0).contains(&f))
        {
            return Err(Error::invalid(
                "--slowdown",
                format!("{f} is not a slowdown factor between 1 and 100"),
                "give a factor like 1.10 for a 10% slower engine",
            )
            .into());
        }
        for (flag, value, zero_ok) in [
            ("--timeout", self.timeout, false),
            ("--warmup", self.warmup, true),
            ("--window", self.window, false),
        ] {
            if let Some(t) = value
                && !(t.is_finite() && (t > 0.0 || (zero_ok && t == 0.0)))
            {
                let bound = if zero_ok { ">= 0" } else { "> 0" };
                return Err(Error::invalid(
                    flag,
                    format!("{t} is not a valid number of seconds"),
                    format!("give seconds {bound}"),
                )
                .into());
            }
        }
        Ok(EngineSpec {
            kind,
            hardware: self.hardware.clone().unwrap_or_else(|| "h200".into()),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| kind.default_model().into()),
            tp: self.tp.unwrap_or(1),
            weights: self.weights.clone(),
            timeout_s: self.timeout,
            warmup_s: self.warmup,
            window_s: self.window,
            slowdown: self.slowdown,
            delay,
        })
    }
}

/// Parses `--delay FIRST,PER_TOKEN` (`50ms,10ms`, `0.05,0.01`).
fn parse_delay(s: &str) -> anyhow::Result<fuselab_harness::NullDelay> {
    let bad = |what: String| {
        Error::invalid(
            "--delay",
            what,
            "give the first-token and per-token delays, e.g. --delay 50ms,10ms",
        )
    };
    let Some((first, per)) = s.split_once(',') else {
        return Err(bad(format!("`{s}` is not FIRST,PER_TOKEN")).into());
    };
    let secs = |v: &str| -> anyhow::Result<f64> {
        let v = v.trim();
        let (num, mult) = match v.strip_suffix("ms") {
            Some(n) => (n, 1e-3),
            None => (v.strip_suffix('s').unwrap_or(v), 1.0),
        };
        match num.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x * mult),
            _ => Err(bad(format!("`{v}` is not a duration ≥ 0")).into()),
        }
    };
    Ok(fuselab_harness::NullDelay {
        first_token_s: secs(first)?,
        per_token_s: secs(per)?,
    })
}

/// Builds a policy from its name and `NAME=VALUE` knobs.
pub fn policy_config(name: &str, knobs: &[String]) -> anyhow::Result<PolicyConfig> {
    let kind: PolicyKind = name.parse()?;
    Ok(PolicyConfig::with_knobs(kind, knobs)?)
}

/// Parses `--slo`, empty when not given.
pub fn slo(spec: Option<&str>) -> anyhow::Result<fuselab_core::Slo> {
    Ok(match spec {
        Some(s) => fuselab_metrics::parse_slo(s)?,
        None => fuselab_core::Slo::default(),
    })
}

/// Runs `fuselab bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    let policy_name = args.policy.clone().unwrap_or_else(|| "splitfuse".into());
    if policy_name.contains(',') || policy_name == "all" {
        return Err(Error::invalid(
            "--policy",
            format!("`{policy_name}` names several policies"),
            "bench runs one policy; use `fuselab sweep --policies ...` to compare several",
        )
        .into());
    }
    let knobs = exec::with_knob_set(args.knobs_from.as_deref(), &args.engine, &args.knob)?;
    let policy = policy_config(&policy_name, &knobs)?;
    let (workload, requests) = args.workload.resolve()?;
    let point = Point::new(
        &args.engine,
        policy,
        workload,
        requests,
        slo(args.slo.as_deref())?,
    )?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/bench-{}-{}-s{}",
            policy_name, point.workload.name, point.workload.seed
        ))
    });
    let repeat = check_repeat(args.repeat)?;
    // Refuse an existing folder before spending time on the run.
    fuselab_store::create_folder(&out, args.force)?;
    let name = out
        .file_name()
        .map_or_else(|| "bench".into(), |n| n.to_string_lossy().into_owned());
    let label = format!("{}@{}", policy_name, load_label(&point.workload.arrivals));
    let Some(n) = repeat else {
        let result = exec::run_point(&point)?;
        exec::write_point(&out, true, &name, &point, &result)?;
        if result.cancelled {
            return Err(exec::cancelled_error(&result, &out));
        }
        print!("{}", exec::metrics_table(&[(label, &result.metrics)]));
        println!(
            "{} requests ({} ok) · window {} · run folder {}",
            result.metrics.requests,
            result.metrics.completed,
            exec::secs(result.metrics.window_s),
            out.display()
        );
        if let Some(note) = exec::failure_note(&result.records) {
            println!("{note}");
        }
        return none_succeeded(&[result.metrics], &out);
    };
    let metrics = exec::run_repeats(&out, &name, &point, n)?;
    let rows: Vec<(String, &fuselab_core::Metrics)> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{label} #{}", i + 1), m))
        .collect();
    print!("{}", exec::metrics_table(&rows));
    println!(
        "{n} runs of {} requests · repeat folder {} (rep-1 … rep-{n})",
        metrics[0].requests,
        out.display()
    );
    let failed: u64 = metrics.iter().map(|m| m.failed).sum();
    if failed > 0 {
        println!(
            "{failed} of {} requests did not complete over the {n} runs (reasons in each rep-K/requests.parquet)",
            metrics.iter().map(|m| m.requests).sum::<u64>()
        );
    }
    none_succeeded(&metrics, &out)
}

/// Exit 2 when requests were sent and none of them succeeded in any run.
fn none_succeeded(
    runs: &[fuselab_core::Metrics],
    out: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let requests: u64 = runs.iter().map(|m| m.requests).sum();
    if requests > 0 && runs.iter().all(|m| m.completed == 0) {
        return Err(Error::invalid(
            "run",
            format!(
                "none of the {requests} requests succeeded (the run folder {} holds what happened)",
                out.display()
            ),
            "see the reason above; fix the workload, knobs or engine",
        )
        .into());
    }
    Ok(Outcome::Success)
}

/// Checks `--repeat N`: at least 1, at most 1000.
pub fn check_repeat(repeat: Option<u32>) -> anyhow::Result<Option<u32>> {
    match repeat {
        Some(n) if n == 0 || n > 1000 => Err(Error::invalid(
            "--repeat",
            format!("{n} is not a number of runs between 1 and 1000"),
            "give how many times to run the configuration, e.g. --repeat 3",
        )
        .into()),
        other => Ok(other),
    }
}

/// A short label for the load of a workload (`rate=2`, `clients=8`, `burst`).
pub fn load_label(arrivals: &fuselab_core::Arrivals) -> String {
    use fuselab_core::Arrivals as A;
    match arrivals {
        A::Poisson { rate } | A::Constant { rate } | A::Gamma { rate, .. } => format!("{rate}/s"),
        A::Ramp {
            start_rate,
            end_rate,
        } => format!("{start_rate}-{end_rate}/s"),
        A::Burst => "burst".into(),
        A::ClosedLoop { clients } => format!("{clients} clients"),
        A::Trace => "trace".into(),
    }
}
