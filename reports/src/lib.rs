//! # fuselab-reports
//!
//! What users look at and what guards their CI:
//!
//! * [`render_report`]: one self-contained HTML file (inline CSS, inline SVG
//!   charts drawn with plotters, no script, no external URL) from run and sweep
//!   folders, with latency–throughput curves, latency CDFs, effective
//!   throughput against load, per-step batch composition, KV utilisation,
//!   summary and provenance tables. Several inputs overlay for comparison.
//!   Tuning campaigns (`fuselab tune --out DIR`) add a Tuning section: the
//!   convergence curve, the Pareto front of multi-objective campaigns, the
//!   best trials and the trial counts by status.
//! * [`report_charts`] and [`Chart::to_svg`] / [`Chart::to_png`]: the same
//!   charts, each on its own, for papers and pull-request comments.
//! * [`gate`]: the CI regression gate. Candidate against baseline per metric,
//!   with a bootstrap confidence interval of the ratio and a verdict per
//!   metric (improved, regressed, no change); Markdown and JUnit XML output;
//!   a small store of named baselines.
//!
//! The inputs are plain data ([`RunData`], [`SweepData`], [`CampaignData`])
//! built from the run store's folders and campaign journals, so this crate
//! does no Parquet I/O itself (the baselines store only copies folders).
//!
//! ## Design notes
//!
//! *Why SVG in the page and not a JavaScript chart library?* A report must
//! open years later on a machine without network (guidellm#303): inline SVG
//! needs nothing but the browser. Plotters escapes every text it writes into
//! SVG, and every other user string goes through [`escape_html`].
//!
//! *Why a font crate?* PNG charts are rasterised by plotters' bitmap backend,
//! which needs real glyph outlines. DejaVu Sans (free license, shipped by the
//! `dejavu` crate) is embedded so PNG output never depends on system fonts.

mod campaign;
mod charts;
mod data;
mod error;
mod escape;
pub mod gate;
mod html;
#[doc(hidden)]
pub mod synth;

pub use campaign::{
    CAMPAIGN_FILE, CAMPAIGN_SCHEMA, CampaignData, CampaignSettings, Direction, KnobInfo, KnobValue,
    ObjectiveInfo, OutcomeConstraintInfo, TRIALS_FILE, TrialData, TrialStatus, is_campaign_folder,
    load_campaign,
};
pub use charts::{Chart, ChartKind, LineStyle, Series, report_charts};
pub use data::{ReportInput, RunData, SweepData, load_input, load_repeat, load_run};
pub use error::{Error, Result};
pub use escape::escape_html;
pub use html::{MAX_CDF_POINTS, MAX_STEP_POINTS, render_report};
