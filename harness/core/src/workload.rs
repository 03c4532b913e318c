//! How a workload is described: length distributions, arrivals, prefixes.

use serde::{Deserialize, Serialize};

/// A distribution of token counts. Samples are rounded to integers and clamped
/// to `[min, max]` where the variant has them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LengthDist {
    /// Always `value`.
    Fixed {
        /// The length.
        value: u32,
    },
    /// Uniform over `[min, max]`, both inclusive.
    Uniform {
        /// Smallest length.
        min: u32,
        /// Largest length.
        max: u32,
    },
    /// Normal `N(mean, std)`, rounded and clamped to `[min, max]`.
    Normal {
        /// Mean before clamping.
        mean: f64,
        /// Standard deviation before clamping.
        std: f64,
        /// Lower clamp.
        min: u32,
        /// Upper clamp.
        max: u32,
    },
    /// Log-normal with the given median and log-space sigma, clamped to `[min, max]`.
    Lognormal {
        /// Median (`exp(mu)`).
        median: f64,
        /// Standard deviation of the underlying normal.
        sigma: f64,
        /// Lower clamp.
        min: u32,
        /// Upper clamp.
        max: u32,
    },
}

/// When requests arrive. Open-loop variants produce an absolute schedule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Arrivals {
    /// Poisson process: exponential inter-arrival times with mean `1/rate`.
    Poisson {
        /// Requests per second.
        rate: f64,
    },
    /// Gamma inter-arrival times with shape `burstiness` and mean `1/rate`
    /// (vLLM's convention: burstiness 1 is Poisson, < 1 is burstier).
    Gamma {
        /// Requests per second.
        rate: f64,
        /// Gamma shape; the coefficient of variation is `1/sqrt(burstiness)`.
        burstiness: f64,
    },
    /// Evenly spaced, `1/rate` apart.
    Constant {
        /// Requests per second.
        rate: f64,
    },
    /// Rate rising (or falling) linearly from `start_rate` to `end_rate` over the workload.
    Ramp {
        /// Rate at the first request.
        start_rate: f64,
        /// Rate at the last request.
        end_rate: f64,
    },
    /// Every request at time 0 (offline batch).
    Burst,
    /// Closed loop: `clients` clients, each sending its next request when the previous finishes.
    ClosedLoop {
        /// Concurrent clients.
        clients: u32,
    },
    /// Arrival times taken from a trace file.
    Trace,
}

/// Prefix sharing: requests are spread round-robin over `groups` groups whose
/// members share the first `len` prompt tokens.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefixSpec {
    /// Number of groups.
    pub groups: u32,
    /// Shared prefix length in tokens (capped at each prompt's length).
    pub len: u32,
}

/// Multi-turn conversations: conversations start by the arrival process; each
/// has `turns` turns, turn `k`'s prompt being the conversation so far plus a new
/// user message drawn from the prompt distribution, and output lengths drawn
/// from the output distribution. Turn `k + 1` is sent an exponentially
/// distributed think time (mean `think_s`) after turn `k` completes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConversationSpec {
    /// Turns per conversation (the last conversation may be cut short by `n`).
    pub turns: u32,
    /// Mean think time between turns, seconds (0: the next turn goes at once).
    pub think_s: f64,
}

/// How often each adapter is asked for.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Popularity {
    /// Every adapter equally likely.
    Uniform,
    /// Adapter `k` (0-based) drawn with probability proportional to
    /// `(k + 1)^-s`; `s = 0` is uniform, larger `s` is more skewed.
    Zipf {
        /// The exponent.
        s: f64,
    },
}

/// Multi-LoRA serving: requests spread over `adapters` adapters of one rank.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoraSpec {
    /// Number of distinct adapters (ids `0 .. adapters`).
    pub adapters: u32,
    /// Rank `r` of every adapter (A is `r × d_in`, B is `d_out × r`).
    pub rank: u32,
    /// How requests pick their adapter.
    pub popularity: Popularity,
}

/// A complete, reproducible description of a workload: the same spec gives
/// byte-identical requests.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadSpec {
    /// Preset name, `custom`, or `trace`.
    pub name: String,
    /// Number of requests.
    pub n: u64,
    /// Random seed.
    pub seed: u64,
    /// Prompt lengths.
    pub prompt: LengthDist,
    /// Output lengths.
    pub output: LengthDist,
    /// Arrival process.
    pub arrivals: Arrivals,
    /// Optional prefix sharing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<PrefixSpec>,
    /// Source file for trace replay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
    /// Optional multi-turn conversations (`n` counts turns, the arrival rate
    /// counts conversations).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<ConversationSpec>,
    /// Optional LoRA adapters: every request is served with one of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lora: Option<LoraSpec>,
}
