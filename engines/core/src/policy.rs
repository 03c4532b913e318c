//! The five scheduling policies and their knobs (DESIGN.md §3.1).
//!
//! A [`PolicyConfig`] is a policy plus every knob it has. Knobs are set by name
//! from strings (`budget=768`), so the CLI, TOML files and the autotuner all
//! share one parser, and [`PolicyConfig::knobs`] reports every knob in effect,
//! defaults included, for provenance.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use fuselab_core::Error;

use crate::{EngineError, Result};

/// A scheduling policy.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PolicyKind {
    /// Static batching with padding (HF `generate`): `batch` requests, prompts
    /// padded to the longest, decode until every row is done.
    Static,
    /// Continuous batching with prefill priority (vLLM v0 default): each step is
    /// all-prefill or all-decode; preemption by recompute.
    Continuous,
    /// Chunked prefill, decode first (Sarathi-Serve / vLLM v1): every running
    /// decode, then prompt chunks FCFS in the remaining token budget.
    Chunked,
    /// DeepSpeed-FastGen Dynamic SplitFuse: decodes first, then prompts FCFS
    /// split exactly at the token budget, remainder at the queue's front.
    SplitFuse,
    /// Prepacking: prompts bin-packed (best-fit decreasing) into rows of the
    /// longest prompt's length, then decoded as static batching does.
    Prepack,
}

impl PolicyKind {
    /// Every policy, in the order reports list them.
    pub const ALL: [PolicyKind; 5] = [
        Self::Static,
        Self::Continuous,
        Self::Chunked,
        Self::SplitFuse,
        Self::Prepack,
    ];

    /// The name used on the command line and in files.
    pub fn name(self) -> &'static str {
        match self {
            Self::Static => "static",
            Self::Continuous => "continuous",
            Self::Chunked => "chunked",
            Self::SplitFuse => "splitfuse",
            Self::Prepack => "prepack",
        }
    }

    /// One line describing the policy and the system it reproduces.
    pub fn description(self) -> &'static str {
        match self {
            Self::Static => "static batching with padding (HF generate)",
            Self::Continuous => "continuous batching, prefill first (vLLM v0)",
            Self::Chunked => "chunked prefill, decode first (Sarathi-Serve / vLLM v1)",
            Self::SplitFuse => "Dynamic SplitFuse (DeepSpeed-FastGen)",
            Self::Prepack => "prepacked prompts, best-fit decreasing (Prepacking)",
        }
    }

    /// The knobs this policy accepts.
    pub fn knob_names(self) -> &'static [&'static str] {
        match self {
            Self::Static | Self::Prepack => &[
                "batch",
                "block",
                "max_len",
                "stream",
                "spec_k",
                "spec_adaptive",
                "max_loras",
            ],
            Self::Continuous | Self::Chunked => &[
                "budget",
                "max_seqs",
                "block",
                "watermark",
                "max_len",
                "stream",
                "prefix_cache",
                "spec_k",
                "spec_adaptive",
                "max_loras",
            ],
            Self::SplitFuse => &[
                "budget",
                "max_seqs",
                "max_tracked",
                "block",
                "max_len",
                "stream",
                "prefix_cache",
                "spec_k",
                "spec_adaptive",
                "max_loras",
            ],
        }
    }

    /// Parses a comma-separated list of policy names, or `all` for all five.
    ///
    /// # Errors
    /// An [`Error::Invalid`] naming the unknown policy and listing the valid ones.
    ///
    /// # Example
    /// ```
    /// use fuselab_engine::PolicyKind;
    /// assert_eq!(PolicyKind::parse_list("all").unwrap().len(), 5);
    /// assert_eq!(PolicyKind::parse_list("static, splitfuse").unwrap(),
    ///            vec![PolicyKind::Static, PolicyKind::SplitFuse]);
    /// assert!(PolicyKind::parse_list("vllm").is_err());
    /// ```
    pub fn parse_list(s: &str) -> Result<Vec<Self>> {
        if s.trim() == "all" {
            return Ok(Self::ALL.to_vec());
        }
        let mut out = Vec::new();
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let k: Self = part.parse()?;
            if !out.contains(&k) {
                out.push(k);
            }
        }
        if out.is_empty() {
            return Err(Error::invalid(
                "--policy",
                "no policy given",
                format!(
                    "give `all` or a comma-separated list of {}",
                    valid_policies()
                ),
            )
            .into());
        }
        Ok(out)
    }
}

fn valid_policies() -> String {
    PolicyKind::ALL.map(PolicyKind::name).join(", ")
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for PolicyKind {
    type Err = EngineError;

    fn from_str(s: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s.trim())
            .ok_or_else(|| {
                Error::invalid(
                    "--policy",
                    format!("unknown policy `{s}`"),
                    format!("valid policies: {} (or `all`)", valid_policies()),
                )
                .into()
            })
    }
}

/// A policy with all its knobs. Fields a policy does not use are ignored by it
/// (and rejected by [`Self::set_knob`]).
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyConfig {
    /// The policy.
    pub kind: PolicyKind,
    /// Token budget per step (`max_num_batched_tokens`, `chunk_size`,
    /// `max_ragged_batch_size`); `None` means the policy default
    /// (continuous: `max(max_len, 2048)`; chunked: 2048; splitfuse: 768).
    pub budget: Option<u32>,
    /// Most sequences in one step (`max_num_seqs` 256; splitfuse's
    /// `max_ragged_sequence_count` 512).
    pub max_seqs: u32,
    /// Most sequences holding KV at once (splitfuse's `max_tracked_sequences`, 2048).
    pub max_tracked: u32,
    /// KV block size in tokens (16; splitfuse 64).
    pub block: u32,
    /// Fraction of KV blocks kept free when admitting (vLLM's 0.01).
    pub watermark: f64,
    /// Requests per batch for static and prepack (16).
    pub batch: u32,
    /// Longest request (prompt + output) the engine accepts; longer ones are
    /// rejected. `None` means the model's context length (vLLM's
    /// `max_model_len` default), filled in by [`crate::NativeEngine::new`]
    /// from the backend, or [`DEFAULT_MAX_LEN`] when the backend has no model.
    pub max_len: Option<u32>,
    /// Whether tokens reach the client as they are generated. `None` means
    /// the policy's default: off for static and prepack, which model HF
    /// `generate`/pipelines (the whole batch is returned when its last row
    /// ends, so TTFT = E2E = the batch's end), on for the serving engines.
    /// Off, a request's tokens arrive together when its result is returned.
    pub stream: Option<bool>,
    /// Automatic prefix caching: full KV blocks are kept, hashed by their
    /// tokens and prefix, and reused by later requests with the same prefix.
    /// On for continuous and chunked (vLLM v1 enables it by default), off for
    /// splitfuse (DeepSpeed-FastGen has no prefix cache). Static and prepack
    /// have no such knob: they model Hugging Face `generate` pipelines, which
    /// keep no KV across batches.
    pub prefix_cache: bool,
    /// Device slots for LoRA adapters (vLLM's `max_loras`, default 1): the
    /// most distinct adapters the running requests may use at once.
    pub max_loras: u32,
    /// Speculative decoding: draft tokens proposed per sequence and decode
    /// step (0: off). Every policy has it; a decode of a speculating sequence
    /// computes `1 + k` verify tokens, which count against the token budget
    /// and need KV blocks. Needs a backend with a draft model.
    pub spec_k: u32,
    /// Adapt each sequence's draft length to its acceptance, up to `spec_k`
    /// ([`crate::adapt_k`]).
    pub spec_adaptive: bool,
}

/// The knob sets `--knobs-from` accepts: a published system's defaults, with
/// where they come from.
pub const KNOB_SETS: [(&str, &str); 2] = [
    (
        "sarathi",
        "Sarathi-Serve: budget 512, max_seqs 128 (SarathiSchedulerConfig chunk_size, max_num_seqs)",
    ),
    (
        "vllm-v1",
        "vLLM v1 API server: budget 8192, max_seqs 1024 on GPUs of at least 70 GiB other than \
         the A100, else 2048 and 256 (EngineArgs.get_batch_defaults)",
    ),
];

/// The device a knob set is chosen for: its name and memory in GiB.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceClass {
    /// Hardware name, e.g. `h200`, `a100-80g`.
    pub name: String,
    /// Device memory, GiB.
    pub memory_gib: f64,
}

/// The knobs of the named set (see [`KNOB_SETS`]) as `name=value` strings,
/// for `device` (`None`: no GPU).
///
/// # Errors
/// An [`Error::Invalid`] for `--knobs-from` listing the valid sets.
///
/// # Example
/// ```
/// use fuselab_engine::{DeviceClass, knob_set};
/// let h200 = DeviceClass { name: "h200".into(), memory_gib: 140.4 };
/// assert_eq!(knob_set("vllm-v1", Some(&h200)).unwrap(), ["budget=8192", "max_seqs=1024"]);
/// let a100 = DeviceClass { name: "a100-80g".into(), memory_gib: 80.0 };
/// assert_eq!(knob_set("vllm-v1", Some(&a100)).unwrap(), ["budget=2048", "max_seqs=256"]);
/// assert_eq!(knob_set("sarathi", None).unwrap(), ["budget=512", "max_seqs=128"]);
/// ```
pub fn knob_set(name: &str, device: Option<&DeviceClass>) -> Result<Vec<String>> {
    let (budget, seqs) = match name.trim() {
        "sarathi" => (512, 128),
        "vllm-v1" => {
            let large = device
                .is_some_and(|d| d.memory_gib >= 70.0 && !d.name.to_lowercase().contains("a100"));
            if large { (8192, 1024) } else { (2048, 256) }
        }
        other => {
            return Err(Error::invalid(
                "--knobs-from",
                format!("unknown knob set `{other}`"),
                format!("valid sets: {}", KNOB_SETS.map(|(n, _)| n).join(", ")),
            )
            .into());
        }
    };
    Ok(vec![format!("budget={budget}"), format!("max_seqs={seqs}")])
}

/// `max_len` of a backend that knows no context length.
pub const DEFAULT_MAX_LEN: u32 = 8192;

impl PolicyConfig {
    /// The policy with its default knobs.
    pub fn new(kind: PolicyKind) -> Self {
        let (max_seqs, block) = match kind {
            PolicyKind::SplitFuse => (512, 64),
            _ => (256, 16),
        };
        Self {
            kind,
            budget: None,
            max_seqs,
            max_tracked: 2048,
            block,
            watermark: 0.01,
            batch: 16,
            max_len: None,
            stream: None,
            prefix_cache: matches!(kind, PolicyKind::Continuous | PolicyKind::Chunked),
            max_loras: 1,
            spec_k: 0,
            spec_adaptive: false,
        }
    }

    /// Whether the policy speculates (`spec_k > 0`).
    pub fn speculates(&self) -> bool {
        self.spec_k > 0
    }

    /// Whether tokens are streamed (the `stream` knob or the policy's default).
    pub fn streams(&self) -> bool {
        self.stream.unwrap_or(!matches!(
            self.kind,
            PolicyKind::Static | PolicyKind::Prepack
        ))
    }

    /// The longest request accepted: the `max_len` knob, else [`DEFAULT_MAX_LEN`].
    pub fn max_len(&self) -> u32 {
        self.max_len.unwrap_or(DEFAULT_MAX_LEN)
    }

    /// Sets `max_len` to the model's context length unless the knob was given.
    pub fn default_max_len(&mut self, context_len: u32) {
        self.max_len.get_or_insert(context_len);
    }

    /// The policy with its defaults overridden by `name=value` knob strings.
    ///
    /// # Errors
    /// An [`Error::Invalid`] for a malformed string, an unknown knob (listing
    /// the valid ones) or a value out of range.
    ///
    /// # Example
    /// ```
    /// use fuselab_engine::{PolicyConfig, PolicyKind};
    /// let p = PolicyConfig::with_knobs(PolicyKind::SplitFuse, ["budget=1024"]).unwrap();
    /// assert_eq!(p.token_budget(), Some(1024));
    /// assert_eq!(p.knobs()["block"], 64);
    /// let e = PolicyConfig::with_knobs(PolicyKind::Static, ["budget=1"]).unwrap_err();
    /// assert!(e.to_string().contains("valid knobs: batch, block, max_len, stream, spec_k, spec_adaptive, max_loras"));
    /// ```
    pub fn with_knobs<I, S>(kind: PolicyKind, knobs: I) -> Result<Self>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut cfg = Self::new(kind);
        for k in knobs {
            let (name, value) = parse_knob(k.as_ref())?;
            cfg.set_knob(name, value)?;
        }
        Ok(cfg)
    }

    /// Sets one knob from its string value.
    ///
    /// # Errors
    /// An [`Error::Invalid`] naming the knob for an unknown knob or a bad value.
    pub fn set_knob(&mut self, name: &str, value: &str) -> Result<()> {
        let name = name.trim();
        let value = value.trim();
        if !self.kind.knob_names().contains(&name) {
            return Err(Error::invalid(
                format!("--knob {name}"),
                format!("policy {} has no knob `{name}`", self.kind),
                format!("valid knobs: {}", self.kind.knob_names().join(", ")),
            )
            .into());
        }
        match name {
            "budget" => self.budget = Some(int_knob(name, value, 1, 1 << 20)?),
            "max_seqs" => self.max_seqs = int_knob(name, value, 1, 1 << 16)?,
            "max_tracked" => self.max_tracked = int_knob(name, value, 1, 1 << 20)?,
            "block" => self.block = int_knob(name, value, 1, 4096)?,
            "batch" => self.batch = int_knob(name, value, 1, 1 << 16)?,
            "max_len" => self.max_len = Some(int_knob(name, value, 2, 1 << 24)?),
            "stream" => self.stream = Some(bool_knob(name, value)?),
            "prefix_cache" => self.prefix_cache = bool_knob(name, value)?,
            "max_loras" => self.max_loras = int_knob(name, value, 1, 1 << 16)?,
            "spec_k" => {
                self.spec_k = int_knob(name, value, 0, crate::spec::MAX_SPEC_K)?;
            }
            "spec_adaptive" => self.spec_adaptive = bool_knob(name, value)?,
            "watermark" => {
                let w: f64 = value.parse().map_err(|_| {
                    Error::invalid(
                        "--knob watermark",
                        format!("`{value}` is not a number"),
                        "give a fraction in [0, 0.5), e.g. watermark=0.01",
                    )
                })?;
                if !(0.0..0.5).contains(&w) {
                    return Err(Error::invalid(
                        "--knob watermark",
                        format!("{value} is out of range"),
                        "give a fraction in [0, 0.5), e.g. watermark=0.01",
                    )
                    .into());
                }
                self.watermark = w;
            }
            _ => unreachable!("knob_names and set_knob disagree about `{name}`"),
        }
        Ok(())
    }

    /// The effective token budget per step; `None` for static and prepack,
    /// which are bounded by their batch size instead.
    pub fn token_budget(&self) -> Option<u32> {
        match self.kind {
            PolicyKind::Static | PolicyKind::Prepack => None,
            PolicyKind::Continuous => Some(self.budget.unwrap_or(self.max_len().max(2048))),
            PolicyKind::Chunked => Some(self.budget.unwrap_or(2048)),
            PolicyKind::SplitFuse => Some(self.budget.unwrap_or(768)),
        }
    }

    /// The fraction of blocks kept free at admission (0 for policies without a watermark).
    pub fn effective_watermark(&self) -> f64 {
        if self.kind.knob_names().contains(&"watermark") {
            self.watermark
        } else {
            0.0
        }
    }

    /// Whether the policy runs with the prefix cache on.
    pub fn prefix_caching(&self) -> bool {
        self.prefix_cache && self.kind.knob_names().contains(&"prefix_cache")
    }

    /// Every knob in effect, defaults resolved, keyed by knob name (the
    /// speculative-decoding knobs only when `spec_k > 0`).
    pub fn knobs(&self) -> BTreeMap<String, serde_json::Value> {
        self.kind
            .knob_names()
            .iter()
            .filter(|k| self.speculates() || !k.starts_with("spec_"))
            .map(|&k| {
                let v = match k {
                    "budget" => serde_json::json!(self.token_budget()),
                    "max_seqs" => serde_json::json!(self.max_seqs),
                    "max_tracked" => serde_json::json!(self.max_tracked),
                    "block" => serde_json::json!(self.block),
                    "watermark" => serde_json::json!(self.watermark),
                    "batch" => serde_json::json!(self.batch),
                    "stream" => serde_json::json!(self.streams()),
                    "prefix_cache" => serde_json::json!(self.prefix_cache),
                    "max_loras" => serde_json::json!(self.max_loras),
                    "spec_k" => serde_json::json!(self.spec_k),
                    "spec_adaptive" => serde_json::json!(self.spec_adaptive),
                    _ => serde_json::json!(self.max_len()),
                };
                (k.to_string(), v)
            })
            .collect()
    }
}

/// Splits a `name=value` knob string.
///
/// # Errors
/// An [`Error::Invalid`] when there is no `=` or the name is empty.
pub fn parse_knob(s: &str) -> Result<(&str, &str)> {
    match s.split_once('=') {
        Some((n, v)) if !n.trim().is_empty() && !v.trim().is_empty() => Ok((n.trim(), v.trim())),
        _ => Err(Error::invalid(
            "--knob",
            format!("`{s}` is not of the form name=value"),
            "write e.g. --knob budget=768",
        )
        .into()),
    }
}

fn bool_knob(name: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "on" | "1" | "yes" => Ok(true),
        "false" | "off" | "0" | "no" => Ok(false),
        _ => Err(Error::invalid(
            format!("--knob {name}"),
            format!("`{value}` is not a boolean"),
            format!("give {name}=true or {name}=false (also on/off, 1/0)"),
        )
        .into()),
    }
}

fn int_knob(name: &str, value: &str, min: u32, max: u32) -> Result<u32> {
    let hint = format!(
        "give an integer between {min} and {max}, e.g. {name}={}",
        if min == 0 {
            max.min(4)
        } else {
            min.max(16).min(max)
        }
    );
    let v: u64 = value.parse().map_err(|_| {
        Error::invalid(
            format!("--knob {name}"),
            format!("`{value}` is not an integer"),
            hint.clone(),
        )
    })?;
    if v < u64::from(min) || v > u64::from(max) {
        return Err(Error::invalid(
            format!("--knob {name}"),
            format!("{v} is out of range"),
            hint,
        )
        .into());
    }
    Ok(v as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_design() {
        let k = PolicyConfig::new(PolicyKind::Continuous).knobs();
        assert_eq!(k["budget"], 8192);
        assert_eq!(k["max_seqs"], 256);
        assert_eq!(k["block"], 16);
        assert_eq!(k["watermark"], 0.01);
        let k = PolicyConfig::new(PolicyKind::Chunked).knobs();
        assert_eq!(k["budget"], 2048);
        let k = PolicyConfig::new(PolicyKind::SplitFuse).knobs();
        assert_eq!(
            (k["budget"].clone(), k["max_seqs"].clone()),
            (768.into(), 512.into())
        );
        assert_eq!(
            (k["max_tracked"].clone(), k["block"].clone()),
            (2048.into(), 64.into())
        );
        let caching: Vec<bool> = PolicyKind::ALL
            .map(|k| PolicyConfig::new(k).prefix_caching())
            .to_vec();
        assert_eq!(caching, [false, true, true, false, false]);
        let p = PolicyConfig::with_knobs(PolicyKind::Chunked, ["prefix_cache=off"]).unwrap();
        assert_eq!(p.knobs()["prefix_cache"], false);
        let p = PolicyConfig::with_knobs(PolicyKind::SplitFuse, ["prefix_cache=true"]).unwrap();
        assert!(p.prefix_caching());
        let c = PolicyConfig::with_knobs(PolicyKind::Continuous, ["max_len=1024"]).unwrap();
        assert_eq!(c.token_budget(), Some(2048));
        assert_eq!(PolicyConfig::new(PolicyKind::Static).token_budget(), None);
    }

    #[test]
    fn bad_knobs_are_named() {
        let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["budget=0"]).unwrap_err();
        assert!(
            e.to_string().contains("--knob budget") && e.to_string().contains("out of range"),
            "{e}"
        );
        let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["bugdet=10"]).unwrap_err();
        assert!(
            e.to_string().contains("no knob `bugdet`")
                && e.to_string().contains("budget, max_seqs"),
            "{e}"
        );
        let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["watermark=x"]).unwrap_err();
        assert!(e.to_string().contains("not a number"), "{e}");
        let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["prefix_cache=maybe"]).unwrap_err();
        assert!(
            e.to_string().contains("--knob prefix_cache")
                && e.to_string().contains("not a boolean"),
            "{e}"
        );
        let e = PolicyConfig::with_knobs(PolicyKind::Static, ["prefix_cache=true"]).unwrap_err();
        assert!(e.to_string().contains("no knob `prefix_cache`"), "{e}");
        let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["budget"]).unwrap_err();
        assert!(e.to_string().contains("name=value"), "{e}");
        let e = "fastgen".parse::<PolicyKind>().unwrap_err();
        assert!(
            e.to_string()
                .contains("static, continuous, chunked, splitfuse, prepack"),
            "{e}"
        );
    }
}
