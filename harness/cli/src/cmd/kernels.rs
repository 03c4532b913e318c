//! `fuselab kernels`: check every kernel against its CPU reference, then time
//! it at the Llama-3-8B shapes against the measured copy and GEMM ceilings.

use std::path::PathBuf;

use anyhow::Context as _;
use fuselab_kernels::cuda::bench::{self, Baseline, BenchOptions};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::config;

/// Arguments of `fuselab kernels`. Every flag can also come from `--config FILE`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct KernelsArgs {
    /// Read any of these flags from a TOML file (keys are the flag names
    /// without `--`); flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Where to run: the CUDA kernels on GPU 0, or the CPU references [default: cuda].
    #[arg(long, value_enum)]
    pub device: Option<DeviceKind>,

    /// Fewer shapes and repeats.
    #[arg(long)]
    #[serde(default)]
    pub quick: bool,

    /// Time only kernels whose name starts with this (e.g. `prefill`); checks always run.
    #[arg(long, value_name = "KERNEL")]
    pub only: Option<String>,

    /// Baseline rates to print ratios against: `key value` lines as written by
    /// kernels/examples/torch_baseline.py in the same device command.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Seed of the random inputs [default: 2026].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Also write the numbers as JSON (with the command, date, driver and device).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,

    /// Also write the printed table as Markdown.
    #[arg(long, value_name = "FILE")]
    pub markdown: Option<PathBuf>,
}

/// `--device` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceKind {
    /// The NVRTC-compiled CUDA kernels and cuBLAS on GPU 0.
    Cuda,
    /// The CPU references.
    Cpu,
}

/// Runs `fuselab kernels`.
///
/// # Errors
/// No CUDA driver (`--device cuda` on a machine without one), an unreadable
/// baseline, a failed correctness check, or an output file that cannot be written.
pub fn run(args: KernelsArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    let baseline = match &args.baseline {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading --baseline {}", path.display()))?;
            Baseline::parse(&text).with_context(|| format!("in --baseline {}", path.display()))?
        }
        None => Baseline::default(),
    };
    let opts = BenchOptions {
        quick: args.quick,
        seed: args.seed.unwrap_or(2026),
        baseline,
        only: args.only.clone(),
    };
    let device = args.device.unwrap_or(DeviceKind::Cuda);
    let report = match device {
        DeviceKind::Cuda => bench::run_cuda(&opts),
        DeviceKind::Cpu => bench::run_cpu(&opts),
    }?;
    let table = report.markdown();
    println!("{table}");
    let command = std::env::args().collect::<Vec<_>>().join(" ");
    if let Some(path) = &args.json {
        std::fs::write(path, report.json(&command, &bench::utc_now()))
            .with_context(|| format!("writing --json {}", path.display()))?;
    }
    if let Some(path) = &args.markdown {
        let md = format!(
            "command: `{command}`\n\ndate: {}\n\n{table}",
            bench::utc_now()
        );
        std::fs::write(path, md)
            .with_context(|| format!("writing --markdown {}", path.display()))?;
    }
    if !report.all_checks_passed() {
        let failed: Vec<String> = report
            .checks
            .iter()
            .filter(|c| !c.passed())
            .map(|c| {
                format!(
                    "{} ({}): relative error {:.2e} > {:.0e}",
                    c.kernel, c.shape, c.rel_err, c.tolerance
                )
            })
            .collect();
        anyhow::bail!(
            "kernels failed their correctness checks: {}",
            failed.join("; ")
        );
    }
    Ok(Outcome::Success)
}
