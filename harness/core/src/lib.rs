//! # fuselab-core
//!
//! The vocabulary every other fuselab crate speaks: what a request is
//! ([`RequestSpec`]), what an engine emits ([`TokenEvent`]), what the harness
//! records ([`RequestRecord`], [`StepRecord`]), how a workload is described
//! ([`WorkloadSpec`]) and what a finished run is summarised as ([`RunSummary`]).
//!
//! This crate is deliberately small: it depends on `serde`, `serde_json` and
//! `thiserror` only, so that workloads, engines, kernels and reports can all
//! depend on it without pulling in a runtime, a tensor library or a dataframe
//! library. It contains no I/O and no policy.
//!
//! ## Design notes
//!
//! *Why are times `f64` seconds from the run's start?* Every record, whether it
//! comes from the real-time harness or from the simulator's virtual clock, is
//! measured against the same origin, so metrics code never needs to know which
//! clock produced it, and Parquet columns stay plain `f64`.
//!
//! *Why are prompt tokens synthesised here?* The CPU and CUDA engines need real
//! token ids, and the same request must get the same ids in every engine and
//! every run. [`RequestSpec::prompt_tokens`] derives them from the request id
//! (and the prefix group) with a fixed hash, so no token array has to travel
//! with the workload.

mod error;
mod record;
mod request;
mod summary;
mod time;
mod workload;

pub use error::{Error, Result};
pub use record::{
    RequestRecord, RequestStatus, ServerMetricSample, ServerSide, StepRecord, TokenChunk,
    TokenEvent,
};
pub use request::{RequestId, RequestSpec, Turn, TurnLinks};
pub use summary::{
    EngineInfo, EngineStats, LatencyStats, LengthCheck, LoadKind, MaxLoadUnderSlo, Metrics,
    Provenance, RepeatSummary, RunSummary, SCHEMA_VERSION, Slo, SpecStats, SweepPoint,
    SweepSummary,
};
pub use time::{utc_from_unix, utc_now};
pub use workload::{
    Arrivals, ConversationSpec, LengthDist, LoraSpec, Popularity, PrefixSpec, WorkloadSpec,
};
