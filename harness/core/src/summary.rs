//! The `summary.json` of a run folder: provenance and metrics.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::WorkloadSpec;

/// Version of the run-folder schema (`summary.json` and the Parquet columns).
/// Version 2 added the prefix-cache columns of `steps.parquet` and figures of
/// [`EngineStats`].
/// Readers refuse other versions with [`crate::Error::SchemaMismatch`].
pub const SCHEMA_VERSION: u32 = 2;

/// Which engine ran, on what, with which knobs.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineInfo {
    /// Engine kind: `sim`, `cpu`, `cuda`, `null` or `http`.
    pub engine: String,
    /// Hardware profile or device name.
    #[serde(default)]
    pub hardware: Option<String>,
    /// Model shape name.
    #[serde(default)]
    pub model: Option<String>,
    /// Scheduling policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// Every knob in effect, defaults included.
    #[serde(default)]
    pub knobs: BTreeMap<String, serde_json::Value>,
}

/// Where a run came from, so that any number can be traced and reproduced.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `CARGO_PKG_VERSION` of the binary.
    pub fuselab_version: String,
    /// Git commit of the binary's source, when known.
    #[serde(default)]
    pub git_commit: Option<String>,
    /// Host CPU model.
    pub host_cpu: String,
    /// GPU model and driver, when a GPU was used.
    #[serde(default)]
    pub host_gpu: Option<String>,
    /// Engine and knobs.
    pub engine: EngineInfo,
    /// The workload.
    pub workload: WorkloadSpec,
    /// SHA-256 of the workload's JSONL export.
    pub workload_digest: String,
    /// Seed of the run.
    pub seed: u64,
    /// The command line that produced the run.
    #[serde(default)]
    pub command: Option<String>,
    /// Unix time the run started.
    #[serde(default)]
    pub started_unix_s: Option<u64>,
}

/// Distribution summary of a latency metric, in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatencyStats {
    /// Number of samples.
    pub count: u64,
    /// Arithmetic mean.
    pub mean: f64,
    /// Smallest sample.
    pub min: f64,
    /// Largest sample.
    pub max: f64,
    /// Median (linear interpolation).
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 95% bootstrap confidence intervals of the percentiles, keyed `p50`, `p90`, `p99`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ci95: BTreeMap<String, [f64; 2]>,
}

/// Service-level objectives. A request is good when it meets every one given.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Slo {
    /// Maximum time to first token, seconds.
    #[serde(default)]
    pub ttft_s: Option<f64>,
    /// Maximum time per output token, seconds.
    #[serde(default)]
    pub tpot_s: Option<f64>,
    /// Maximum end-to-end latency, seconds.
    #[serde(default)]
    pub e2e_s: Option<f64>,
    /// FastGen SLA: prompt at 512 tok/s and cumulative generation at this rate (tok/s).
    #[serde(default)]
    pub fastgen_rate: Option<f64>,
}

/// Engine-side aggregates from `steps.parquet`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineStats {
    /// Forward steps run.
    pub steps: u64,
    /// Prompt tokens computed (recomputation included).
    pub prefill_tokens: u64,
    /// Decode tokens computed.
    pub decode_tokens: u64,
    /// Padding tokens computed and wasted.
    pub padding_tokens: u64,
    /// Preemptions (each forces a recompute).
    pub preemptions: u64,
    /// Mean KV-cache utilisation over steps, 0..1.
    pub kv_utilisation_mean: f64,
    /// Peak KV-cache utilisation, 0..1.
    pub kv_utilisation_peak: f64,
    /// Mean tokens per step.
    pub tokens_per_step_mean: f64,
    /// Total busy time of the engine in seconds.
    pub busy_s: f64,
    /// Tokens of admitted requests looked up in the prefix cache.
    pub prefix_query_tokens: u64,
    /// Of those, tokens served from the prefix cache.
    pub prefix_hit_tokens: u64,
    /// `prefix_hit_tokens / prefix_query_tokens` (0 with no lookups or the cache off).
    pub prefix_cache_hit_rate: f64,
    /// LoRA adapters loaded into device slots.
    #[serde(default)]
    pub adapter_loads: u64,
    /// Adapter loads per second of engine time (first step's start to last step's end).
    #[serde(default)]
    pub adapter_loads_per_s: f64,
    /// Mean fraction of the adapter slots holding an adapter, over steps (0 without LoRA).
    #[serde(default)]
    pub adapter_slot_utilisation: f64,
    /// Mean distinct adapters per step.
    #[serde(default)]
    pub adapters_per_step_mean: f64,
    /// Speculative-decoding figures, when the engine speculated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec: Option<SpecStats>,
}

/// Speculative-decoding aggregates of a run's steps.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpecStats {
    /// Verify passes of one sequence with at least one draft token.
    pub rounds: u64,
    /// Draft tokens proposed.
    pub proposed: u64,
    /// Draft tokens accepted.
    pub accepted: u64,
    /// `accepted / proposed`.
    pub acceptance_rate: f64,
    /// Accepted drafts per round (`accepted / rounds`).
    pub mean_accepted_len: f64,
    /// Tokens generated per target forward of a decoding sequence: decode
    /// tokens emitted over decode entries (1 without speculation).
    pub block_efficiency: f64,
    /// Share of the engine's busy time spent in draft passes.
    pub draft_time_share: f64,
    /// Share of the engine's busy time spent in target forwards (verify and prefill).
    pub verify_time_share: f64,
    /// Where acceptance came from: `measured` (a real draft) or `modelled
    /// α=…` (a seeded coin), from the engine's provenance; empty when unknown.
    #[serde(default)]
    pub source: String,
}

/// The metrics of a run (DESIGN.md §5). Latencies in seconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Requests in the run.
    pub requests: u64,
    /// Requests that completed successfully.
    pub completed: u64,
    /// Requests that failed, timed out, were rejected or cancelled.
    pub failed: u64,
    /// Measurement window: first send to last token, seconds.
    pub window_s: f64,
    /// Time to first token.
    pub ttft_s: LatencyStats,
    /// Time per output token after the first.
    pub tpot_s: LatencyStats,
    /// Inter-token latency over all token gaps.
    pub itl_s: LatencyStats,
    /// End-to-end latency.
    pub e2e_s: LatencyStats,
    /// Client schedule lag, `t_sent − t_scheduled`.
    pub schedule_lag_s: LatencyStats,
    /// Completed requests per second over the window.
    pub request_throughput: f64,
    /// Output tokens per second over the window.
    pub output_token_throughput: f64,
    /// Prompt plus output tokens per second over the window.
    pub total_token_throughput: f64,
    /// The SLOs goodput was computed against.
    #[serde(default)]
    pub slo: Slo,
    /// Requests meeting every SLO per second (all completed requests when no SLO is given).
    pub goodput: f64,
    /// Fraction of requests meeting every SLO.
    pub slo_attainment: f64,
    /// FastGen effective throughput keyed by generation SLA rate (`"2"`, `"4"`, `"6"`).
    pub effective_throughput: BTreeMap<String, f64>,
    /// Engine-side figures, for in-process engines.
    #[serde(default)]
    pub engine: Option<EngineStats>,
    /// Requested vs served token counts, for engines behind HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lengths: Option<LengthCheck>,
}

/// Requested vs served token counts of the completed requests of a run
/// against an HTTP server: a prompt mismatch is a server `prompt_tokens`
/// other than the requested length (where the prompt was sent exactly); an
/// output mismatch is a received or server-reported output count other than
/// the requested one.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthCheck {
    /// Completed requests checked.
    pub checked: u64,
    /// Of those, requests whose server-reported prompt length differed.
    pub prompt_mismatches: u64,
    /// Of those, requests whose output length differed.
    pub output_mismatches: u64,
    /// Requests with either mismatch, as a fraction of `checked`.
    pub mismatch_rate: f64,
    /// Requests for which the server reported no usage at all.
    pub without_usage: u64,
    /// Mean of server prompt tokens minus requested, over requests with usage.
    pub prompt_diff_mean: f64,
}

/// The `summary.json` of a run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunSummary {
    /// [`SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Name of the run (its folder name by default).
    pub name: String,
    /// Where the run came from.
    pub provenance: Provenance,
    /// Computed metrics.
    pub metrics: Metrics,
}

/// What a sweep varied.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoadKind {
    /// Open-loop request rate (requests/s).
    Rate,
    /// Closed-loop client count.
    Clients,
}

/// One point of a sweep: a policy at a load, stored as a run folder.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepPoint {
    /// Scheduling policy (or engine label).
    pub policy: String,
    /// The load: a rate or a client count.
    pub load: f64,
    /// The point's run folder, relative to the sweep folder.
    pub run: String,
    /// The point's metrics (a copy of its `summary.json` metrics).
    pub metrics: Metrics,
    /// Draft tokens per step of a speculative-decoding sweep (`--spec k=…`;
    /// `Some(0)` is the run without speculation), `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_k: Option<u32>,
}

/// The highest load that met the SLO, per policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxLoadUnderSlo {
    /// Scheduling policy (or engine label).
    pub policy: String,
    /// Highest load with SLO attainment ≥ `attainment_target`, `None` if even the lowest failed.
    pub max_load: Option<f64>,
    /// Attainment required.
    pub attainment_target: f64,
    /// The SLO.
    pub slo: Slo,
    /// Loads probed, in order, with their attainment.
    pub probes: Vec<[f64; 2]>,
}

/// The `repeat.json` of a repeat folder: `N` runs of one configuration
/// (`fuselab bench --repeat N`), in subfolders `rep-1` … `rep-N`. The gate and
/// the report treat the folder as one configuration measured `N` times, so the
/// spread between the runs (machine noise) enters their intervals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepeatSummary {
    /// [`SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Name of the configuration.
    pub name: String,
    /// The repeated runs' folders, relative to the repeat folder, in run order.
    pub runs: Vec<String>,
}

/// The `sweep.json` of a sweep folder: a latency–throughput curve per policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SweepSummary {
    /// [`SCHEMA_VERSION`] at the time of writing.
    pub schema_version: u32,
    /// Name of the sweep.
    pub name: String,
    /// What was varied.
    pub load_kind: LoadKind,
    /// Every point, grouped by policy in load order.
    pub points: Vec<SweepPoint>,
    /// Results of the max-load-under-SLO search, when it ran.
    #[serde(default)]
    pub max_under_slo: Vec<MaxLoadUnderSlo>,
}
