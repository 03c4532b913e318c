//! # fuselab-metrics
//!
//! Metrics from raw per-token records (DESIGN.md §5, research/anchors.md §b):
//! TTFT, TPOT, ITL (per token and per chunk), E2E, request and token
//! throughput, goodput and SLO attainment, FastGen effective throughput,
//! engine-side aggregates, and percentiles by linear interpolation with
//! bootstrap confidence intervals.
//!
//! This crate is pure computation: it reads [`fuselab_core::RequestRecord`]s and
//! [`fuselab_core::StepRecord`]s and returns a [`fuselab_core::Metrics`]. It does
//! no I/O (the run store does) and knows nothing about engines.
//!
//! ```
//! use fuselab_core::{RequestRecord, RequestStatus, Slo, TokenChunk};
//! let r = RequestRecord {
//!     id: 0, prompt_len: 512, output_len: 3, t_scheduled: 0.0, t_sent: 0.0,
//!     tokens: vec![TokenChunk { index: 0, t: 0.5, n_tokens: 1 }, TokenChunk { index: 1, t: 0.7, n_tokens: 2 }],
//!     t_done: Some(0.7), status: RequestStatus::Ok, error: None,
//!     server: None,
//! };
//! let slo = fuselab_metrics::parse_slo("ttft=1s").unwrap();
//! let m = fuselab_metrics::compute_metrics(&[r], None, &slo, 42);
//! assert_eq!(m.ttft_s.p50, 0.5);
//! assert_eq!(m.slo_attainment, 1.0);
//! ```
//!
//! ## Design notes
//!
//! *Why store chunks rather than tokens?* Streaming servers may deliver several
//! tokens at once. Per-token ITL spreads a chunk's gap over its tokens, while the
//! per-chunk gaps stay available for comparison with vLLM's figures (see
//! [`request_metrics`]).
//!
//! *Why an exact bootstrap instead of subsampling?* Percentile intervals are
//! bootstrapped by sampling order statistics directly (see [`latency_stats`]).
//! This costs the same for 100 samples and 1 000 000, with no approximation.
//!
//! *Why a per-request bootstrap for ITL?* A run's ITL gaps come in clusters:
//! one request's gaps share its batches and its queueing, so they are not
//! independent draws. [`clustered_latency_stats`] resamples whole requests
//! (the same [`cluster`] code the CI gate uses), so the stored intervals are
//! as wide as the request-to-request variation makes them.

pub mod cluster;
mod request;
mod run;
mod slo;
mod stats;

pub use request::{
    FASTGEN_PROMPT_RATE, FASTGEN_RATES, RequestMetrics, meets_fastgen_sla, request_metrics,
};
pub use run::{
    compute_metrics, engine_stats, fastgen_key, length_check, mean_metrics, meets_slo, spec_stats,
};
pub use slo::{format_slo, parse_slo};
pub use stats::{
    BOOTSTRAP_RESAMPLES, CI_PERCENTILES, clustered_latency_stats, latency_stats,
    latency_stats_with, percentile,
};
