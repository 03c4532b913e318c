//! # fuselab-store
//!
//! The run store (DESIGN.md §7). A **run folder** holds:
//!
//! * `summary.json`: [`fuselab_core::RunSummary`] as pretty JSON, with
//!   `schema_version`, provenance and metrics;
//! * `requests.parquet`, `tokens.parquet` and `steps.parquet`: the raw records,
//!   written with polars (the column layout is documented in the `tables`
//!   module source and below).
//!
//! A **sweep folder** holds `sweep.json` ([`fuselab_core::SweepSummary`]) and
//! one run folder per point. A **repeat folder** (`fuselab bench --repeat N`)
//! holds `repeat.json` ([`fuselab_core::RepeatSummary`]) and the run folders
//! `rep-1` … `rep-N` of one configuration. [`folder_kind`] tells them apart.
//!
//! | file | columns |
//! |---|---|
//! | `requests.parquet` | `id` u64, `prompt_len` u32, `output_len` u32, `t_scheduled` f64, `t_sent` f64, `t_done` f64 (nullable), `status` str, `error` str (nullable) |
//! | `tokens.parquet` | `id` u64, `index` u32, `t` f64, `n_tokens` u32: one row per streamed chunk |
//! | `steps.parquet` | `step` u64, `t_start` f64, `duration_s` f64, `n_seqs`, `prefill_tokens`, `decode_tokens`, `padding_tokens`, `kv_blocks_used`, `kv_blocks_total`, `preemptions`, `waiting`, `running` (u32) |
//!
//! Reading a folder gives back exactly what was written.
//!
//! This crate stores and loads. It computes no metrics (`fuselab-metrics` does)
//! and renders nothing (`fuselab-reports` does).
//!
//! ## Design notes
//!
//! *Why is `summary.json` written last, and atomically?* Every file is written
//! to a temporary name, flushed to disk and renamed into place. The summary
//! comes after the tables, so a run killed half-way never looks complete: a
//! folder without `summary.json` is not a run folder.
//!
//! *Why does `--force` not delete the folder?* It removes only the files
//! fuselab writes. A mistyped `--out ~` then cannot destroy anything else.
//!
//! *Why check `schema_version` before parsing?* A summary from another version
//! may have different fields. Reporting "written by schema 2, this build reads
//! 1" is more useful than an unknown-field error.

mod error;
mod folder;
mod provenance;
mod tables;

pub use error::{Error, Result};
pub use folder::{
    FolderKind, REPEAT_FILE, REQUESTS_FILE, RunFolder, SERVER_METRICS_FILE, STEPS_FILE,
    SUMMARY_FILE, SWEEP_FILE, StoredRun, TOKENS_FILE, create_folder, find_run_folders, folder_kind,
    read_repeat, read_run, read_summary, read_sweep, repeat_run_folders, write_repeat, write_run,
    write_sweep,
};
pub use provenance::{git_commit, host_cpu};
