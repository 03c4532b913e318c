//! `fuselab report`: one self-contained HTML file from run, sweep and tuning
//! campaign folders, and optionally every chart on its own
//! (`--charts DIR --format svg|png`).

use std::path::PathBuf;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::config;

/// File format of `--charts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ChartFormat {
    /// Standalone SVG files.
    Svg,
    /// PNG images (rasterised with an embedded font).
    Png,
}

/// Arguments of `fuselab report`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ReportArgs {
    /// Read flags from this TOML file (keys are flag names); flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Run folders, sweep folders and tuning campaign folders (`fuselab tune --out`); several are overlaid for comparison.
    #[arg(value_name = "RUN")]
    #[serde(default)]
    pub runs: Vec<PathBuf>,
    /// Title of the report [default: "fuselab report"].
    #[arg(long, value_name = "T")]
    pub title: Option<String>,
    /// The HTML file to write [default: report.html].
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Also write every chart on its own into this folder.
    #[arg(long, value_name = "DIR")]
    pub charts: Option<PathBuf>,
    /// Format of the `--charts` files [default: svg].
    #[arg(long, value_enum)]
    pub format: Option<ChartFormat>,
}

/// Runs `fuselab report`.
pub fn run(args: ReportArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    if args.runs.is_empty() {
        bail!(
            "give at least one run, sweep or campaign folder, e.g. `fuselab report runs/demo -o report.html`"
        );
    }
    if args.format.is_some() && args.charts.is_none() {
        bail!(
            "--format applies to --charts DIR; add --charts DIR to write the charts on their own"
        );
    }
    let mut inputs = Vec::with_capacity(args.runs.len());
    for path in &args.runs {
        let input = fuselab_reports::load_input(path).with_context(|| {
            format!(
                "cannot read run, sweep or campaign folder {}",
                path.display()
            )
        })?;
        inputs.push(input);
    }
    let title = args.title.as_deref().unwrap_or("fuselab report");
    let html =
        fuselab_reports::render_report(&inputs, title).context("cannot render the report")?;
    let output = args
        .output
        .clone()
        .unwrap_or_else(|| PathBuf::from("report.html"));
    if let Some(parent) = output.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
    }
    std::fs::write(&output, &html).with_context(|| format!("cannot write {}", output.display()))?;
    println!(
        "report: {} ({} KiB)",
        output.display(),
        html.len().div_ceil(1024)
    );
    if let Some(dir) = &args.charts {
        let format = args.format.unwrap_or(ChartFormat::Svg);
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let charts = fuselab_reports::report_charts(&inputs);
        for chart in &charts {
            let (path, bytes) = match format {
                ChartFormat::Svg => (
                    dir.join(format!("{}.svg", chart.id)),
                    chart.to_svg()?.into_bytes(),
                ),
                ChartFormat::Png => (dir.join(format!("{}.png", chart.id)), chart.to_png()?),
            };
            std::fs::write(&path, bytes)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!(
            "charts: {} {} files in {}",
            charts.len(),
            match format {
                ChartFormat::Svg => "SVG",
                ChartFormat::Png => "PNG",
            },
            dir.display()
        );
    }
    Ok(Outcome::Success)
}
