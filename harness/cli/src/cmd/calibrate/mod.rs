//! `fuselab calibrate`: measure the simulator's ground truth on our own CUDA
//! engine.
//!
//! `fuselab calibrate --engine cuda --model llama3-8b --out DIR` (on a GPU)
//! times every operator of the CUDA backend over the shapes of serving steps
//! and whole steps of mixed batches through the real backend, and writes the
//! raw measurements to `DIR/calibration-raw.json`
//! ([`fuselab_sim::raw::RawCalibration`]) with `DIR/capacity.env` (the
//! request rates of the Poisson validation runs, from the measured capacity of
//! splitfuse and chunked). What is measured, and what the fit may and may not
//! see, is in [`collect`].

mod collect;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::config;

/// Arguments of `fuselab calibrate`. Every flag can also come from `--config FILE`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct CalibrateArgs {
    /// Read any of these flags from a TOML file (keys are the flag names
    /// without `--`); flags given on the command line win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    /// Measure on this engine: `cuda` (GPU 0) times our own kernels and steps.
    #[arg(long, value_enum)]
    pub engine: Option<CalibrateEngine>,

    /// Model shape to measure [default: llama3-8b, the only shape the operator sweeps cover].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Folder for the raw measurements (created; files in it are overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// A coarse grid (a few shapes per operator, one policy run) for smoke tests.
    #[arg(long)]
    #[serde(default)]
    pub quick: bool,

    /// Seed of the random weights and inputs [default: 2026].
    #[arg(long, value_name = "S")]
    pub seed: Option<u64>,

    /// Back-to-back launches per timed kernel sample (at least 32) [default: 32].
    #[arg(long, value_name = "N")]
    pub launches: Option<usize>,

    /// Timed samples per kernel shape [default: 5].
    #[arg(long, value_name = "R")]
    pub repeats: Option<usize>,
}

/// `--engine` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CalibrateEngine {
    /// The CUDA backend on GPU 0.
    Cuda,
}

/// Runs `fuselab calibrate`.
///
/// # Errors
/// Bad flags (naming the flag and the fix), no CUDA driver, a device error,
/// or an output folder that cannot be written.
pub fn run(args: CalibrateArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    let Some(engine) = args.engine else {
        anyhow::bail!(
            "calibrate needs --engine cuda (measure our own CUDA engine on GPU 0) and --out DIR"
        );
    };
    let Some(out) = args.out.clone() else {
        anyhow::bail!("--out DIR is missing: give the folder for the raw measurements");
    };
    let model = args.model.clone().unwrap_or_else(|| "llama3-8b".into());
    if model != "llama3-8b" {
        anyhow::bail!(
            "--model {model}: the operator sweeps are at the Llama-3-8B shapes only; give --model llama3-8b"
        );
    }
    if let Some(n) = args.launches
        && n < fuselab_kernels::cuda::bench::MIN_LAUNCHES
    {
        anyhow::bail!(
            "--launches {n}: at least {} back-to-back launches per sample are needed so that \
             launch latency is divided out",
            fuselab_kernels::cuda::bench::MIN_LAUNCHES
        );
    }
    if args.repeats == Some(0) {
        anyhow::bail!("--repeats must be at least 1");
    }
    match engine {
        CalibrateEngine::Cuda => collect::measure(&collect::Plan {
            out,
            model,
            quick: args.quick,
            seed: args.seed.unwrap_or(2026),
            launches: args
                .launches
                .unwrap_or(fuselab_kernels::cuda::bench::MIN_LAUNCHES),
            repeats: args.repeats.unwrap_or(5),
        })?,
    }
    Ok(Outcome::Success)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_checked_before_anything_runs() {
        let err = |a: CalibrateArgs| run(a).unwrap_err().to_string();
        let e = err(CalibrateArgs::default());
        assert!(e.contains("--engine cuda"), "{e}");
        let e = err(CalibrateArgs {
            engine: Some(CalibrateEngine::Cuda),
            ..Default::default()
        });
        assert!(e.contains("--out DIR"), "{e}");
        let base = CalibrateArgs {
            engine: Some(CalibrateEngine::Cuda),
            out: Some(std::env::temp_dir().join("fuselab-calibrate-never-written")),
            ..Default::default()
        };
        let e = err(CalibrateArgs {
            model: Some("tiny".into()),
            ..base.clone()
        });
        assert!(e.contains("--model tiny") && e.contains("llama3-8b"), "{e}");
        let e = err(CalibrateArgs {
            launches: Some(4),
            ..base.clone()
        });
        assert!(e.contains("--launches 4"), "{e}");
        let e = err(CalibrateArgs {
            repeats: Some(0),
            ..base
        });
        assert!(e.contains("--repeats"), "{e}");
    }
}
