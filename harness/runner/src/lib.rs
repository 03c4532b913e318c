//! # fuselab-harness
//!
//! Drives engines in real time on tokio and records what a client sees.
//!
//! * [`run_realtime`] (async) and [`run_realtime_blocking`] (builds a runtime,
//!   optionally wires Ctrl-C) run a [`RealtimePlan`]: open-loop load on an
//!   absolute schedule (each request is sent at `t0 + arrival_s`, never by
//!   sleeping an interval after the previous send) or a closed loop of N
//!   clients; per-request `t_scheduled` and `t_sent` (their difference is the
//!   schedule lag); a warm-up and a measurement window; a per-request timeout;
//!   cancellation through a [`CancelToken`] that keeps what was measured; a
//!   progress bar on terminals.
//! * Engines plug in through [`EngineHandle`]: the in-process engine runs on its
//!   own OS thread ([`NativeEngineHandle`]) with requests and events over
//!   channels; [`NullEngine`] answers at once, to measure the harness itself;
//!   an HTTP client engine fits the same trait.
//! * The result is a [`HarnessRun`]: a [`fuselab_core::RequestRecord`] per
//!   request (plus [`fuselab_core::StepRecord`]s from in-process engines).
//!
//! ```
//! use fuselab_core::RequestSpec;
//! use fuselab_harness::{NullEngine, RealtimePlan, run_realtime_blocking};
//!
//! let reqs: Vec<RequestSpec> = (0..20)
//!     .map(|i| RequestSpec { id: i, arrival_s: i as f64 * 0.001, prompt_len: 8,
//!                            output_len: 4, prefix_group: None, prefix_len: 0, conversation: None, adapter: None })
//!     .collect();
//! let run = run_realtime_blocking(RealtimePlan::open_loop(reqs), Box::new(NullEngine::default()), false).unwrap();
//! assert_eq!(run.records.len(), 20);
//! assert!(run.records.iter().all(|r| r.tokens_received() == 4));
//! ```

mod cancel;
mod engine;
mod error;
mod native;
mod null;
mod run;
pub mod search;

pub use cancel::CancelToken;
pub use engine::{
    EngineChannels, EngineCommand, EngineEvent, EngineHandle, EventReceiver, EventSink, Prepare,
    RunClock,
};
pub use error::HarnessError;
pub use native::{NativeEngineHandle, StepEngine};
pub use null::{NullDelay, NullEngine, NullMode};
pub use run::{HarnessRun, RealtimePlan, run_realtime, run_realtime_blocking};
