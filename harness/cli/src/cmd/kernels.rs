//! `fuselab kernels`: check every kernel against its CPU reference, then time
//! it at the Llama-3-8B shapes against the measured read, copy and GEMM
//! ceilings (N back-to-back launches per sample; median, p10, p90), with an
//! optional sustained run of the compute-bound rows beside NVML clock and power.

use std::path::PathBuf;

use anyhow::Context as _;
use fuselab_kernels::cuda::PrefillTile;
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

    /// Run only the correctness checks of fuselab's own kernels (CUDA): no ceilings, no
    /// timed rows and no check that runs a cuBLAS GEMM, so that nothing but our kernels
    /// runs, e.g. under `compute-sanitizer --tool racecheck` (which fails when given a
    /// kernel filter and runs out of time on cuBLAS's kernels).
    #[arg(long)]
    #[serde(default)]
    pub own_checks_only: bool,

    /// Run the prefill attention checks on these tiles only, by label, comma-separated
    /// (e.g. `wg128pp,wg128ppu`) [default: every tile]: so that a slow checker such as
    /// `compute-sanitizer --tool racecheck` can take the tiles in parallel runs (CUDA).
    #[arg(long, value_name = "TILES", value_delimiter = ',')]
    pub check_tiles: Option<Vec<String>>,

    /// Baseline rates to print ratios against: `key value` lines as written by
    /// kernels/examples/torch_baseline.py in the same device command.
    #[arg(long, value_name = "FILE")]
    pub baseline: Option<PathBuf>,

    /// Back-to-back launches per timed sample, divided out (at least 32) [default: 32].
    #[arg(long, value_name = "N")]
    pub launches: Option<usize>,

    /// Timed samples per row, reported as median, p10 and p90 [default: 10, 5 with --quick].
    #[arg(long, value_name = "R")]
    pub repeats: Option<usize>,

    /// Also run every compute-bound row (GEMMs at T >= 2048, prefill attention at
    /// S >= 8192) back to back for this many seconds, with the median SM clock and
    /// power from NVML (a note where NVML is missing).
    #[arg(long, value_name = "SECONDS")]
    pub sustained: Option<f64>,

    /// A tuning table of `fuselab tune --kernel … --device cuda`: its kernels
    /// for this GPU get rows of their own, and the default rows say which
    /// configuration they ran.
    #[arg(long, value_name = "FILE")]
    pub tuning_table: Option<std::path::PathBuf>,

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
    if let Some(n) = args.launches
        && n < bench::MIN_LAUNCHES
    {
        anyhow::bail!(
            "--launches {n}: at least {} back-to-back launches per sample are needed so that \
             launch latency is divided out",
            bench::MIN_LAUNCHES
        );
    }
    if args.repeats == Some(0) {
        anyhow::bail!("--repeats must be at least 1");
    }
    if let Some(s) = args.sustained
        && !(s.is_finite() && s > 0.0 && s <= 600.0)
    {
        anyhow::bail!("--sustained {s}: give a number of seconds in (0, 600]");
    }
    let check_tiles = args
        .check_tiles
        .as_deref()
        .map(|labels| {
            labels
                .iter()
                .map(|l| {
                    PrefillTile::from_label(l.trim()).with_context(|| {
                        format!(
                            "--check-tiles: `{l}` is not a prefill tile; use labels from {}",
                            PrefillTile::ALL.map(|t| t.label()).join(", ")
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<_>>>()
        })
        .transpose()?;
    if check_tiles.as_ref().is_some_and(Vec::is_empty) {
        anyhow::bail!("--check-tiles: give at least one tile label, e.g. `wg128pp`");
    }
    let opts = BenchOptions {
        quick: args.quick,
        seed: args.seed.unwrap_or(2026),
        baseline,
        only: args.only.clone(),
        launches: args.launches.unwrap_or(bench::MIN_LAUNCHES),
        repeats: args.repeats.unwrap_or(0),
        sustained: args.sustained,
        own_checks_only: args.own_checks_only,
        check_tiles,
        tuning: args
            .tuning_table
            .as_deref()
            .map(|p| crate::exec::cuda_tuning(p).map(|t| t.0))
            .transpose()?,
    };
    let device = args.device.unwrap_or(DeviceKind::Cuda);
    if opts.check_tiles.is_some() && device == DeviceKind::Cpu {
        anyhow::bail!(
            "--check-tiles applies to --device cuda (the CPU reference has no prefill tiles); \
             drop it or use --device cuda"
        );
    }
    if args.own_checks_only && device == DeviceKind::Cpu {
        anyhow::bail!(
            "--own-checks-only applies to --device cuda (the CPU references have no cuBLAS to \
             leave out); drop it or use --device cuda"
        );
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cpu(args: KernelsArgs) -> anyhow::Result<Outcome> {
        run(KernelsArgs {
            device: Some(DeviceKind::Cpu),
            quick: true,
            ..args
        })
    }

    #[test]
    fn timing_flags_are_validated_before_anything_runs() {
        let e = cpu(KernelsArgs {
            launches: Some(8),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--launches 8") && e.contains("at least 32"),
            "{e}"
        );
        let e = cpu(KernelsArgs {
            repeats: Some(0),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("--repeats"), "{e}");
        for bad in [0.0, -1.0, f64::NAN, 1e6] {
            let e = cpu(KernelsArgs {
                sustained: Some(bad),
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
            assert!(e.contains("--sustained"), "{e}");
        }
    }

    #[test]
    fn cpu_run_accepts_the_timing_flags() {
        let out = cpu(KernelsArgs {
            launches: Some(64),
            repeats: Some(2),
            ..Default::default()
        })
        .unwrap();
        assert!(matches!(out, Outcome::Success));
    }
}
