//! `fuselab calibrate`: the simulator's calibration from our own CUDA engine.
//!
//! * `fuselab calibrate --engine cuda --model llama3-8b --out DIR` (on a GPU)
//!   times every operator of the CUDA backend over the shapes of serving steps
//!   and whole steps of mixed batches through the real backend, and writes the
//!   raw measurements to `DIR/calibration-raw.json`
//!   ([`fuselab_sim::raw::RawCalibration`]) with `DIR/capacity.env` (the
//!   request rates of the Poisson validation runs, from the measured capacity
//!   of splitfuse and chunked). What is measured, and what the fit may and may
//!   not see, is in [`collect`].
//! * `fuselab calibrate --fit DIR --out FILE` (anywhere) fits the calibration
//!   file the simulator loads (`--calibration FILE`) and validates it on the
//!   held-out steps and the serving runs ([`fit`]).
//! * `fuselab calibrate --show [--hardware H] [--model M] [--calibration FILE]`
//!   prints a calibration's source, date and held-out errors (by default the
//!   H200 one shipped with fuselab).

mod collect;
mod fit;

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

    /// Fit the raw measurements in DIR (what `--engine cuda --out DIR` wrote)
    /// into the calibration file `--out FILE`, and validate it.
    #[arg(long, value_name = "DIR")]
    pub fit: Option<PathBuf>,

    /// Print a calibration's source, date and held-out errors (the shipped
    /// H200 one, or `--calibration FILE`).
    #[arg(long)]
    #[serde(default)]
    pub show: bool,

    /// With --show: also scale the calibration to this hardware profile and
    /// compare it with published measurements of it.
    #[arg(long, value_name = "NAME")]
    pub hardware: Option<String>,

    /// With --show: the calibration file to show [default: the shipped H200 one].
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,

    /// Model shape to measure [default: llama3-8b, the only shape the operator sweeps cover].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// With --engine: the folder for the raw measurements (created; files in it
    /// are overwritten). With --fit: the calibration file to write.
    #[arg(long, value_name = "DIR|FILE")]
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
    let modes = [args.engine.is_some(), args.fit.is_some(), args.show]
        .iter()
        .filter(|&&m| m)
        .count();
    if modes > 1 {
        anyhow::bail!(
            "give one of --engine cuda (measure), --fit DIR (fit) or --show (print); they are separate steps"
        );
    }
    if !args.show && (args.hardware.is_some() || args.calibration.is_some()) {
        anyhow::bail!("--hardware and --calibration go with --show; drop them or add --show");
    }
    if args.show {
        print!(
            "{}",
            fit::show_command(
                args.calibration.as_ref(),
                args.hardware.as_deref(),
                args.model.as_deref()
            )?
        );
        return Ok(Outcome::Success);
    }
    if let Some(raw) = &args.fit {
        let Some(out) = &args.out else {
            anyhow::bail!(
                "--out FILE is missing: give the calibration file to write, e.g. --out h200-llama3-8b.json"
            );
        };
        print!("{}", fit::fit(raw, out)?);
        eprintln!("wrote {}", out.display());
        return Ok(Outcome::Success);
    }
    let Some(engine) = args.engine else {
        anyhow::bail!(
            "calibrate needs --engine cuda --out DIR (measure our own CUDA engine on GPU 0), \
             --fit DIR --out FILE (fit a calibration) or --show (print one)"
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
        assert!(
            e.contains("--engine cuda") && e.contains("--fit DIR"),
            "{e}"
        );
        let e = err(CalibrateArgs {
            fit: Some("raw".into()),
            show: true,
            ..Default::default()
        });
        assert!(e.contains("give one of"), "{e}");
        let e = err(CalibrateArgs {
            fit: Some("raw".into()),
            ..Default::default()
        });
        assert!(e.contains("--out FILE"), "{e}");
        let e = err(CalibrateArgs {
            hardware: Some("a100-80g".into()),
            ..Default::default()
        });
        assert!(e.contains("--show"), "{e}");
        let e = err(CalibrateArgs {
            show: true,
            model: Some("llama2-7b".into()),
            ..Default::default()
        });
        assert!(e.contains("--model") && e.contains("llama3-8b"), "{e}");
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
