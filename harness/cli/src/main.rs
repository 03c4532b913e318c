//! The `fuselab` binary: the composition root that knows every implementation.
//!
//! Exit codes: 0 success, 1 a gate found a regression, 2 usage, config or
//! runtime error, or an inconclusive gate.

mod cmd;
mod config;
mod exec;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// fuselab: a laboratory for LLM inference performance.
#[derive(Debug, Parser)]
#[command(name = "fuselab", version, long_about = None)]
#[command(
    about = "fuselab: a laboratory for LLM inference performance (workloads, engines, sweeps, tuning, reports, CI gate)."
)]
#[command(
    after_help = "Exit codes: 0 success, 1 regression found by `gate`, 2 usage/config/runtime error \
(or a `gate` that cannot tell a change from run-to-run noise)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate or replay a workload, summarise it and export it as JSONL.
    Workload(cmd::workload::WorkloadArgs),
    /// One benchmark: engine × policy × workload × load → a run folder.
    Bench(Box<cmd::bench::BenchArgs>),
    /// A load sweep per policy → latency–throughput curves; optionally the max load under an SLO.
    Sweep(Box<cmd::sweep::SweepArgs>),
    /// The default experiment (embedded config): every policy, a sweep, the SLO capacity.
    Run(cmd::run::RunArgs),
    /// Measure the simulator's ground truth on our own CUDA engine (operators and whole steps).
    Calibrate(Box<cmd::calibrate::CalibrateArgs>),
    /// Check the kernels against their CPU references and time them at the engine's shapes.
    Kernels(cmd::kernels::KernelsArgs),
    /// HTML report (self-contained, offline) from run and sweep folders; charts as SVG or PNG.
    Report(cmd::report::ReportArgs),
    /// CI regression gate: candidate vs baseline per metric; exit 0 pass, 1 regression, 2 error.
    Gate(Box<cmd::gate::GateArgs>),
    /// Bayesian-optimisation campaign over engine knobs or an external command; resumable.
    Tune(Box<cmd::tune::TuneArgs>),
    /// Serve an engine over an OpenAI-compatible HTTP API (completions, chat, models, metrics).
    #[command(mut_arg("endpoint", |a| a.hide(true)))]
    #[command(mut_arg("prompt_format", |a| a.hide(true)))]
    #[command(mut_arg("vocab", |a| a.hide(true)))]
    #[command(mut_arg("scrape_interval", |a| a.hide(true)))]
    #[command(mut_arg("preconnect", |a| a.hide(true)))]
    #[command(mut_arg("retries", |a| a.hide(true)))]
    #[command(mut_arg("no_stream_usage", |a| a.hide(true)))]
    #[command(mut_arg("max_length_mismatch", |a| a.hide(true)))]
    #[command(mut_arg("allow_length_mismatch", |a| a.hide(true)))]
    #[command(mut_arg("timeout", |a| a.hide(true)))]
    #[command(mut_arg("warmup", |a| a.hide(true)))]
    #[command(mut_arg("window", |a| a.hide(true)))]
    Serve(Box<cmd::serve::ServeArgs>),
    /// Interactive terminal UI: browse, compare and follow runs, sweeps and campaigns; start new work.
    Tui(cmd::tui::TuiArgs),
}

/// What a subcommand reports besides errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Everything passed.
    Success,
    /// A regression gate failed (exit code 1).
    Regression,
}

fn main() -> ExitCode {
    init_tracing();
    let cli = Cli::parse();
    let result: anyhow::Result<Outcome> = match cli.command {
        Command::Workload(args) => cmd::workload::run(args),
        Command::Bench(args) => cmd::bench::run(*args),
        Command::Sweep(args) => cmd::sweep::run(*args),
        Command::Run(args) => cmd::run::run(args),
        Command::Kernels(args) => cmd::kernels::run(args),
        Command::Calibrate(args) => cmd::calibrate::run(*args),
        Command::Report(args) => cmd::report::run(args),
        Command::Gate(args) => cmd::gate::run(*args),
        Command::Tune(args) => cmd::tune::run(*args),
        Command::Serve(args) => cmd::serve::run(*args),
        Command::Tui(args) => cmd::tui::run(args),
    };
    match result {
        Ok(Outcome::Success) => ExitCode::SUCCESS,
        Ok(Outcome::Regression) => ExitCode::from(1),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("FUSELAB_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
