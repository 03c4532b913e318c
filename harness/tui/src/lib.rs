//! # fuselab-tui
//!
//! The interactive terminal UI, `fuselab tui [--runs DIR]`:
//!
//! * **Browse** every run, repeat, sweep and campaign folder under the
//!   roots, newest first, with engine, hardware, policy, workload, load and
//!   the key metrics; filter by typing; open one for its detail view
//!   (percentile table, TTFT and ITL histograms or CDFs, tokens per step,
//!   KV utilisation, provenance).
//! * **Compare** two or more marked folders: the metric ratios against the
//!   first with the verdicts of the CI gate's own comparison
//!   ([`fuselab_reports::gate::compare`], not a re-implementation), and the
//!   latency–throughput curves overlaid as braille line charts.
//! * **Live**: start a bench, sweep or tune from a form as a detached
//!   `fuselab` child process, or follow a folder another process is
//!   writing: progress, the curve as points arrive, a live percentile
//!   table; for campaigns the trials table, the best-so-far curve, the
//!   Pareto front and the tuner's next suggestion.
//!
//! The crate is split the ratatui way: [`state`] (the model, no I/O),
//! [`update`] (pure key and message → state transitions, returning the
//! effects to perform), [`view`] (rendering, a pure function of the state),
//! and [`app`] (the terminal, the event loop, the background readers). The
//! folder readers are [`catalog`] (the list), [`live`] (an opened folder),
//! [`detail`] (a run's derived figures) and [`compare`]; [`job`] starts and
//! tracks new work and [`poll`] decides when to look at a followed folder
//! again.
//!
//! It is not a second implementation of anything: folders are read with
//! `fuselab-store` and `fuselab-reports`, verdicts come from the gate, and
//! the next suggestion from rebuilding the campaign's tuner with
//! `fuselab-tune` from its journal.
//!
//! ## Design notes
//!
//! *Why poll instead of watching the file system?* A followed folder is
//! checked every [`poll::FOLLOW_INTERVAL`] (250 ms) by comparing the size
//! and modification time of the handful of files fuselab writes; that is a
//! few `stat` calls, portable, and bounds the delay from a write to the
//! screen by one interval plus one read (measured by the `follow_latency`
//! example: every new trial of a campaign written by another process showed
//! within 0.26 s, well inside the 1 s requirement).
//!
//! *Why precompute the detail view?* A 10,000-request run has over a
//! million inter-token gaps. Histograms, CDFs and step series are reduced
//! to a few hundred numbers once, when the run is read ([`detail`]); a frame
//! only re-bins those to the screen width (criterion bench `render`).
//!
//! *How does started work survive the TUI?* The child runs in its own
//! process group with no terminal attached, and a wrapper shell records its
//! exit status in the folder ([`job`]); a later TUI finds the folder like any
//! other and follows it.

pub mod app;
pub mod catalog;
pub mod compare;
pub mod detail;
mod error;
pub mod form;
pub mod job;
pub mod live;
pub mod poll;
pub mod state;
pub mod update;
pub mod view;

pub use app::{Options, run};
pub use error::{Error, Result};
