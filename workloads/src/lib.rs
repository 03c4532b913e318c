//! # fuselab-workloads
//!
//! Seeded synthetic workloads, presets, arrival processes, prefix groups and
//! trace replay. Everything here turns a [`WorkloadSpec`] (from `fuselab-core`)
//! into a `Vec<RequestSpec>`: an exact, absolute schedule of requests with exact
//! prompt and output token counts. This crate does no timing and sends nothing;
//! the harness drives the schedule and the engines serve it.
//!
//! ```
//! use fuselab_workloads::{digest, export_jsonl, generate, preset};
//!
//! let mut spec = preset("fastgen-2600")?;
//! spec.n = 100;
//! spec.seed = 7;
//! let requests = generate(&spec)?;
//! assert_eq!(requests.len(), 100);
//! // The same spec always gives the same bytes, hence the same digest.
//! assert_eq!(digest(&requests), digest(&generate(&spec)?));
//! assert_eq!(export_jsonl(&requests).iter().filter(|&&b| b == b'\n').count(), 100);
//! # Ok::<(), fuselab_core::Error>(())
//! ```
//!
//! ## Design notes
//!
//! *Why several random streams?* Prompt lengths, output lengths and arrival gaps
//! each come from their own ChaCha12 stream derived from the one seed, so that
//! changing the rate (or the output distribution) of an experiment leaves every
//! other column of the workload untouched: two runs at different loads serve
//! exactly the same requests.
//!
//! *Why absolute arrival times?* A client that sleeps for each inter-arrival gap
//! under-delivers its rate by the time it spends sending (vLLM measured about 9%
//! at 200 QPS). Arrival times here are cumulative sums from 0, the first request
//! arriving at 0; the harness sends against that schedule and records the lag.
//! Unlike vLLM we do not rescale the schedule so that the last arrival is
//! exactly `n/rate`: rescaling would make the gaps dependent and fail a
//! goodness-of-fit test against the exponential distribution.
//!
//! *Why microseconds?* Arrival times are rounded to whole microseconds and
//! exported with exactly six decimals. That makes the JSONL text stable:
//! export → import → export is byte-identical whatever float parser reads it.
//! Rates are therefore capped at [`MAX_RATE`] requests per second.

mod generate;
mod lora;
mod presets;
pub mod stats;
mod trace;

pub use fuselab_core::{
    Arrivals, Error, LengthDist, LoraSpec, Popularity, PrefixSpec, RequestSpec, Result,
    WorkloadSpec,
};
pub use generate::{DEFAULT_SEED, MAX_RATE, MAX_REQUESTS, generate, validate};
pub use lora::{AdapterSampler, MAX_ADAPTERS, MAX_RANK, MAX_ZIPF_S, validate_lora};
pub use presets::{
    Preset, describe_arrivals, describe_length, preset, preset_model, preset_names, presets,
};
pub use trace::{
    DEFAULT_TRACE_RANK, digest, export_jsonl, export_to_file, parse_trace, read_trace, replay,
    trace_spec, write_jsonl,
};
