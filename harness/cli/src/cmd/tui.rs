//! `fuselab tui`: the interactive terminal UI over run, sweep and campaign
//! folders (see the `fuselab-tui` crate).

use std::path::PathBuf;

use anyhow::Context as _;

use crate::Outcome;

/// Arguments of `fuselab tui`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TuiArgs {
    /// Folder to browse (repeatable); new work goes under the first, tuning
    /// campaigns under one named `campaigns` when given [default: ./runs and
    /// ./campaigns].
    #[arg(long = "runs", value_name = "DIR")]
    pub runs: Vec<PathBuf>,
}

/// Runs `fuselab tui`.
pub fn run(args: TuiArgs) -> anyhow::Result<Outcome> {
    let roots = if args.runs.is_empty() {
        vec![PathBuf::from("runs"), PathBuf::from("campaigns")]
    } else {
        args.runs
    };
    let exe =
        std::env::current_exe().context("finding the fuselab executable to start work with")?;
    fuselab_tui::run(fuselab_tui::Options { roots, exe }).context("fuselab tui")?;
    Ok(Outcome::Success)
}
