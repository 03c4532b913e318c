//! What engines emit and what the harness records per request and per step.

use serde::{Deserialize, Serialize};

use crate::RequestId;

/// Tokens of one request that became visible to the client at time `t`.
///
/// A chunk of several tokens (`n_tokens > 1`) is how streaming servers often
/// deliver output; metrics spread its gap over its tokens.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenEvent {
    /// The request the tokens belong to.
    pub request: RequestId,
    /// 0-based index of the chunk's first token within the request's output.
    pub index: u32,
    /// Seconds from the run's start.
    pub t: f64,
    /// Number of tokens in the chunk (≥ 1).
    pub n_tokens: u32,
}

/// One streamed chunk as stored in a [`RequestRecord`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenChunk {
    /// 0-based index of the chunk's first token.
    pub index: u32,
    /// Seconds from the run's start.
    pub t: f64,
    /// Number of tokens in the chunk.
    pub n_tokens: u32,
}

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestStatus {
    /// All requested tokens arrived.
    Ok,
    /// The engine reported an error.
    Failed,
    /// The per-request timeout passed first.
    Timeout,
    /// The run was cancelled (e.g. Ctrl-C) before the request finished.
    Cancelled,
    /// The engine refused the request (e.g. prompt longer than it can hold).
    Rejected,
}

impl RequestStatus {
    /// The lowercase name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
            Self::Rejected => "rejected",
        }
    }

    /// Parses [`Self::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ok,
            Self::Failed,
            Self::Timeout,
            Self::Cancelled,
            Self::Rejected,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }
}

/// Everything measured about one request, in seconds from the run's start.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestRecord {
    /// The request.
    pub id: RequestId,
    /// Prompt tokens sent.
    pub prompt_len: u32,
    /// Output tokens asked for.
    pub output_len: u32,
    /// When the schedule said to send it.
    pub t_scheduled: f64,
    /// When it was actually sent (`t_sent − t_scheduled` is the client's schedule lag).
    pub t_sent: f64,
    /// Streamed chunks in arrival order.
    pub tokens: Vec<TokenChunk>,
    /// When the request finished (last token, error or timeout); `None` if never.
    pub t_done: Option<f64>,
    /// How it ended.
    pub status: RequestStatus,
    /// The error message for failed requests.
    pub error: Option<String>,
    /// What the server said about the request, for engines behind HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<ServerSide>,
}

/// What an HTTP server reported about one request: the id it was sent under
/// and the server's own token counts (`usage`), for checking that the
/// requested lengths were served.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSide {
    /// The `x-request-id` header sent with the request (joins with server logs).
    pub request_id: String,
    /// `usage.prompt_tokens`, when the server reported it (or, for a server
    /// whose stream carries no usage, its tokenize endpoint's count of the
    /// prompt, asked after the run).
    pub prompt_tokens: Option<u32>,
    /// `usage.completion_tokens`, when the server reported it.
    pub completion_tokens: Option<u32>,
    /// `usage.prompt_tokens_details.cached_tokens`, when the server reported it.
    pub cached_tokens: Option<u32>,
    /// Whether the prompt was sent so that the server's count must equal the
    /// requested length (false for chat, whose template adds tokens).
    pub prompt_exact: bool,
}

/// One sample of a server's Prometheus `/metrics`, scraped during a run
/// (written to `server_metrics.parquet`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerMetricSample {
    /// When it was scraped, seconds from the run's start.
    pub t: f64,
    /// Metric name, e.g. `vllm:num_requests_running`.
    pub name: String,
    /// Labels in Prometheus text form without braces (`model_name="x"`), empty when none.
    pub labels: String,
    /// The sample's value.
    pub value: f64,
}

impl RequestRecord {
    /// Total output tokens received.
    pub fn tokens_received(&self) -> u64 {
        self.tokens.iter().map(|c| u64::from(c.n_tokens)).sum()
    }

    /// Time of the first chunk, if any.
    pub fn t_first_token(&self) -> Option<f64> {
        self.tokens.first().map(|c| c.t)
    }

    /// Time of the last chunk, if any.
    pub fn t_last_token(&self) -> Option<f64> {
        self.tokens.last().map(|c| c.t)
    }
}

/// Engine-side figures for one forward step (written to `steps.parquet`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepRecord {
    /// 0-based step number.
    pub step: u64,
    /// Start of the step, seconds from the run's start.
    pub t_start: f64,
    /// Duration of the step in seconds.
    pub duration_s: f64,
    /// Sequences in the batch.
    pub n_seqs: u32,
    /// Prompt tokens computed (including recomputed ones after preemption).
    pub prefill_tokens: u32,
    /// Decode tokens computed.
    pub decode_tokens: u32,
    /// Padding tokens computed and thrown away (static and prepack policies).
    pub padding_tokens: u32,
    /// KV blocks in use after the step.
    pub kv_blocks_used: u32,
    /// KV blocks in the cache.
    pub kv_blocks_total: u32,
    /// Requests preempted while scheduling this step.
    pub preemptions: u32,
    /// Requests waiting when the step was scheduled.
    pub waiting: u32,
    /// Requests running when the step was scheduled.
    pub running: u32,
    /// Tokens of the requests admitted in this step looked up in the prefix
    /// cache (prompt, or prompt + generated for a recompute).
    #[serde(default)]
    pub prefix_query_tokens: u32,
    /// Of those, tokens served from the prefix cache (not prefilled).
    #[serde(default)]
    pub prefix_hit_tokens: u32,
    /// LoRA adapters copied into a device slot before this step.
    #[serde(default)]
    pub adapter_loads: u32,
    /// Resident adapters evicted (least recently used) to make room for those loads.
    #[serde(default)]
    pub adapter_evictions: u32,
    /// Distinct adapters used by the step's batch.
    #[serde(default)]
    pub adapters_in_batch: u32,
    /// Device adapter slots holding an adapter after the step.
    #[serde(default)]
    pub adapter_slots_used: u32,
    /// Device adapter slots (the `max_loras` knob; 0 when no request used an adapter).
    #[serde(default)]
    pub adapter_slots: u32,
    /// Seconds of `duration_s` spent in the draft model's passes
    /// (speculative decoding; 0 without it).
    #[serde(default)]
    pub draft_s: f64,
    /// Decode entries (sequences decoding) in the batch, verify entries included.
    #[serde(default)]
    pub decode_seqs: u32,
    /// Of those, sequences whose draft tokens were verified (speculative decoding).
    #[serde(default)]
    pub spec_seqs: u32,
    /// Draft tokens proposed and verified in the step.
    #[serde(default)]
    pub spec_proposed: u32,
    /// Of those, draft tokens the target accepted.
    #[serde(default)]
    pub spec_accepted: u32,
}
