//! `fuselab bench`: one benchmark — engine × policy × workload × load → a run folder.

use std::path::PathBuf;

use fuselab_core::Error;
use fuselab_engine::{PolicyConfig, PolicyKind};
use serde::{Deserialize, Serialize};

use crate::Outcome;
use crate::cmd::workload::WorkloadOpts;
use crate::config;
use crate::exec::{self, EngineKind, EngineSpec, Point};

/// Arguments of `fuselab bench`. Every flag can also come from `--config FILE`:
/// engine flags go in an `[engine]` table (`kind`, `hardware`, `model`, `tp`),
/// workload flags in a `[workload]` table, the rest at the top level.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct BenchArgs {
    /// Read any of these flags from a TOML file (keys are the flag names
    /// without `--`, workload flags under `[workload]`); flags given here win.
    #[arg(long, value_name = "FILE")]
    #[serde(skip)]
    pub config: Option<PathBuf>,

    #[command(flatten)]
    #[serde(default)]
    pub engine: EngineOpts,

    /// Scheduling policy: static, continuous, chunked, splitfuse or prepack [default: splitfuse].
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,

    /// Set a policy knob, e.g. `--knob budget=768 --knob max_seqs=256` (repeatable).
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    #[serde(default)]
    pub knob: Vec<String>,

    /// Speculative decoding: draft tokens per sequence and step, verified in
    /// one forward (the `spec_k` knob; 0 off) [default: 0].
    #[arg(long, value_name = "K")]
    pub spec_k: Option<u32>,

    /// Start from a published system's knobs, `--knob` still winning: `sarathi`
    /// (budget 512, max_seqs 128) or `vllm-v1` (8192 / 1024 on GPUs of ≥ 70 GiB
    /// other than the A100, else 2048 / 256).
    #[arg(long, value_name = "SET")]
    pub knobs_from: Option<String>,

    /// SLOs for goodput: `ttft=2s,tpot=100ms,e2e=30s` or `fastgen:4` [default: none].
    #[arg(long, value_name = "SLO")]
    pub slo: Option<String>,

    /// Run folder to write [default: runs/bench-<policy>-<workload>-s<seed>].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,

    /// Replace fuselab's files in an existing run folder.
    #[arg(long)]
    #[serde(default)]
    pub force: bool,

    /// Run the same configuration N times back to back into OUT/rep-1 …
    /// OUT/rep-N, with OUT/repeat.json marking them as one configuration.
    /// `gate` and `report` accept OUT and pool the runs, so run-to-run noise
    /// enters their intervals. Real-time engines need N ≥ 3 for an honest
    /// gate, and more on a noisy machine (README, "Using the CI gate").
    #[arg(long, value_name = "N")]
    pub repeat: Option<u32>,

    /// Start this server for the run (with `--engine http://HOST:PORT`, its
    /// address): wait until `--server-ready` answers, benchmark it, stop its
    /// process group (SIGTERM, SIGKILL after 10 s). Its output goes to
    /// OUT/server.log; a server that exits, runs out of memory or is never
    /// ready fails the run with the reason.
    #[arg(long, value_name = "CMD")]
    pub server_cmd: Option<String>,

    /// With --server-cmd: the URL that answers 2xx once the server is ready
    /// [default: the engine URL's /v1/models].
    #[arg(long, value_name = "URL")]
    pub server_ready: Option<String>,

    /// With --server-cmd: how long the server may take to become ready, e.g. `120s` [default: 120s].
    #[arg(long, value_name = "DURATION")]
    pub server_timeout: Option<String>,

    #[command(flatten)]
    #[serde(default)]
    pub workload: WorkloadOpts,
}

impl BenchArgs {
    /// The server this run starts, if `--server-cmd` is given.
    pub fn server_launch(&self) -> anyhow::Result<Option<exec::ServerLaunch>> {
        server_launch(
            &self.engine,
            self.server_cmd.as_deref(),
            self.server_ready.as_deref(),
            self.server_timeout.as_deref(),
        )
    }
}

/// The `--server-cmd`, `--server-ready` and `--server-timeout` flags (of
/// `bench`, and of `tune`, whose command holds `{knob}` placeholders) as a
/// launch of the server at the `--engine http://…` address; `None` without
/// `--server-cmd`.
///
/// # Errors
/// `--server-ready` or `--server-timeout` without `--server-cmd`, an engine
/// that is not a URL, a bad duration or ready URL.
pub fn server_launch(
    engine: &EngineOpts,
    cmd: Option<&str>,
    ready: Option<&str>,
    timeout: Option<&str>,
) -> anyhow::Result<Option<exec::ServerLaunch>> {
    let Some(cmd) = cmd else {
        if ready.is_some() || timeout.is_some() {
            return Err(Error::invalid(
                if ready.is_some() {
                    "--server-ready"
                } else {
                    "--server-timeout"
                },
                "applies only with --server-cmd",
                "give --server-cmd 'CMD', or drop it",
            )
            .into());
        }
        return Ok(None);
    };
    let Some(EngineChoice::Http(url)) = &engine.engine else {
        return Err(Error::invalid(
            "--server-cmd",
            "needs the server's URL as the engine",
            "give --engine http://HOST:PORT, the address the command listens on",
        )
        .into());
    };
    let timeout = timeout
        .map(|t| crate::cmd::tune::parse_duration_for(t, "--server-timeout"))
        .transpose()?;
    Ok(Some(exec::ServerLaunch::new(cmd, url, ready, timeout)?))
}

/// Engine selection flags shared by `bench`, `sweep` and `tune`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct EngineOpts {
    /// Engine: sim, cpu, null, cuda, or the URL of an OpenAI-compatible server
    /// (`http://HOST:PORT`: vLLM, SGLang, TGI, llama.cpp, `fuselab serve`, …)
    /// [default: sim]. In a config file: `kind` under `[engine]`.
    #[arg(long, value_name = "ENGINE|URL", value_parser = EngineChoice::parse)]
    #[serde(rename = "kind")]
    pub engine: Option<EngineChoice>,

    /// Hardware profile for the simulator: a100-80g, h100-sxm, h200, l40s [default: h200].
    #[arg(long, value_name = "NAME")]
    pub hardware: Option<String>,

    /// The simulator's calibration, a file written by `fuselab calibrate --fit`
    /// [default: the H200 calibration shipped with fuselab, measured on our
    /// CUDA engine; other hardware scales it by its peaks].
    #[arg(long, value_name = "FILE")]
    pub calibration: Option<PathBuf>,

    /// Model shape: llama3-8b, llama3.1-8b, llama3-70b, llama3.1-70b (131072-token
    /// context), llama3.2-1b, llama3.2-1b-h128 (its heads regrouped to 128),
    /// llama2-7b, llama2-13b, tiny, tiny-128, small. Every engine takes every
    /// shape, except that CUDA needs heads of 128 (not tiny, small or llama3.2-1b); the
    /// `max_len` knob defaults to the shape's context length [default: llama3-8b,
    /// tiny for cpu; long-8k and long-32k pick llama3.1-8b].
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,

    /// Tensor-parallel degree [default: 1].
    #[arg(long, value_name = "N")]
    pub tp: Option<u32>,

    /// Safetensors weights (Hugging Face Llama names) for the CPU engine
    /// [default: seeded random weights].
    #[arg(long, value_name = "FILE")]
    pub weights: Option<PathBuf>,

    /// Kernel configurations tuned by `fuselab tune --kernel` (its
    /// `tuning.json`) for the CPU or CUDA engine: the entries of this
    /// machine's CPU replace the default decode splits and flash tiles; those
    /// of this GPU and driver replace the prefill and decode attention
    /// kernels for the shapes of their buckets.
    #[arg(long, value_name = "FILE")]
    pub tuning_table: Option<PathBuf>,

    /// Profile the CUDA engine per operator class (CUDA events around every
    /// class in every layer) and write the totals per phase to FILE (JSON) and
    /// FILE with extension `.md` (a table). The events cost a little GPU time:
    /// profile in a run of its own.
    #[arg(long, value_name = "FILE")]
    pub cuda_profile: Option<PathBuf>,

    /// Run the CUDA engine's decode steps kernel by kernel instead of replaying
    /// them from CUDA graphs (to measure what the graphs save). Recorded as knob
    /// `cuda_graphs`.
    #[arg(long)]
    #[serde(default)]
    pub no_cuda_graphs: bool,

    /// Run the CUDA engine's GEMMs of at most 64 rows (decode steps) on fuselab's
    /// skinny kernel instead of cuBLAS (Hopper only; it keeps tiled copies of the
    /// weights, their size again in device memory; on the H200 it is level with cuBLAS
    /// on the two large decode GEMMs and 1.15-1.26× slower on the two small ones, so it
    /// is off by default). Recorded as knob `skinny_gemm`.
    #[arg(long)]
    #[serde(default)]
    pub cuda_skinny_gemm: bool,

    /// Capture the CUDA engine's decode graphs with programmatic dependent launch
    /// (Hopper): fuselab's own kernels in a graph may start while the kernel before
    /// them finishes, the skinny GEMM streaming its first weight tiles meanwhile
    /// (cuBLAS's GEMMs launch as before). Off by default: on the H200 it measured no
    /// gain (a decode step at batch 64 10.10 ms against 9.97 ms). Recorded as knob `pdl`.
    #[arg(long)]
    #[serde(default)]
    pub cuda_pdl: bool,

    /// Time cuBLASLt's candidate algorithms for the CUDA engine's decode GEMMs at the
    /// warm-up (every graph bucket, over all layers' weights) and run each shape through
    /// the fastest where it beats cuBLAS's default (off by default: on the H200 it
    /// measured no end-to-end gain for 2.5 s of start-up). Recorded as knob `gemm_tuning`.
    #[arg(long)]
    #[serde(default)]
    pub cuda_gemm_tuning: bool,

    /// The CUDA engine's prefill attention kernel, by tile label (r64, r128,
    /// r128w8, r128p, r256, r256s3, wg128, wg128x2, wg128x2u, wg128x2s, wg128n,
    /// wg192, wg128pp, wg128ppu; compiled on first use: wg128p, wg128p64, wg192p,
    /// wg128ws, wg128wsn, wg128pp64, wg128q, wg128qp, wg128qws; see
    /// kernels/src/cuda/NOTES.md) [default on Hopper: wg128pp, or for calls too
    /// small to fill the GPU with its paired grid wg128ppu (one block per query
    /// tile) or wg128x2s (keys split), whichever fills it sooner; elsewhere r128
    /// below 2048 new tokens and r256 from there]. Recorded as knob `prefill_tile`.
    #[arg(long, value_name = "TILE")]
    pub cuda_prefill_tile: Option<String>,

    /// Per-request timeout in seconds for real-time engines (cpu, cuda, null) [default: none].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub timeout: Option<f64>,

    /// Warm-up in seconds for real-time engines: requests due before it run but
    /// are not measured [default: 0].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub warmup: Option<f64>,

    /// Measurement window in seconds after the warm-up for real-time engines;
    /// requests due after it are not sent [default: every request].
    #[arg(long, value_name = "SECONDS", allow_negative_numbers = true)]
    pub window: Option<f64>,

    /// The null engine answers after a fixed delay: `FIRST,PER_TOKEN`, e.g.
    /// `50ms,10ms` (the first token 50 ms after a request arrives, then one
    /// every 10 ms) [default: answer at once].
    #[arg(long, value_name = "FIRST,PER_TOKEN")]
    pub delay: Option<String>,

    #[command(flatten)]
    #[serde(default, flatten)]
    pub http: HttpOpts,

    /// TEST KNOB: make every engine step FACTOR times slower (≥ 1), to plant a
    /// known regression and check that the gate catches it. The CPU and CUDA
    /// engines sleep (FACTOR − 1) × each step's wall time; the simulator
    /// multiplies its predicted step time; a delayed null engine multiplies
    /// its delays. Recorded as knob `slowdown` [default: 1, no slowdown].
    #[arg(long, value_name = "FACTOR", allow_negative_numbers = true)]
    pub slowdown: Option<f64>,

    #[command(flatten)]
    #[serde(default, flatten)]
    pub spec: SpecOpts,

    /// MeteoRA mode: the workload's --adapters are all embedded in the model
    /// and a gate in every adapted projection picks each token's top K of
    /// them, mixed by the softmax of their gate logits (cpu, cuda and sim;
    /// 1 <= K <= --adapters). Requests then name no adapter (their drawn ids
    /// are dropped) and no slots are used. Recorded as knob `meteora_top_k`.
    #[arg(long, value_name = "K")]
    pub meteora: Option<u32>,
}

/// Speculative-decoding flags of the engine (the draft length itself is the
/// `spec_k` policy knob: `bench --spec-k N`, `sweep --spec k=…`, `--knob spec_k=N`).
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct SpecOpts {
    /// Speculative decoding, sim and cuda: the draft model's shape, priced
    /// beside the target on sim [default: llama3.2-1b], run with seeded random
    /// weights on cuda (e.g. llama3.2-1b-h128 for llama3-8b) [default on cuda:
    /// a draft made from the target, see --draft-layers].
    #[arg(long, value_name = "MODEL")]
    pub draft: Option<String>,

    /// Speculative decoding, cpu and cuda: the draft keeps the target's first N
    /// layers (with its embeddings and head) [default: all].
    #[arg(long, value_name = "N")]
    pub draft_layers: Option<usize>,

    /// Speculative decoding, cpu and cuda: seeded noise on every draft matrix, relative
    /// to its RMS; acceptance is measured and falls as it grows [default: 0.01].
    #[arg(long, value_name = "SCALE", allow_negative_numbers = true)]
    pub draft_noise: Option<f64>,

    /// Speculative decoding: model acceptance as a seeded coin of this
    /// per-token probability (recorded as `modelled`). Required on sim,
    /// which has no tokens; on cpu it steers the draft's proposals (an exact
    /// copy with no noise then gives i.i.d. acceptance α); on cuda it decides
    /// each verified draft token while draft and target still run for real.
    #[arg(long, value_name = "ALPHA", allow_negative_numbers = true)]
    pub spec_alpha: Option<f64>,

    /// cpu: sample at this temperature (Gumbel-max over logits / T, seeded
    /// by --seed) instead of greedily; with a draft, speculative sampling's
    /// standard rule verifies the proposals [default: greedy].
    #[arg(long, value_name = "T", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
}

/// The resolved speculative-decoding flags.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpecSpec {
    /// Draft shape for the simulator.
    pub draft: Option<String>,
    /// Layers of the CPU draft.
    pub draft_layers: Option<usize>,
    /// Noise of the CPU draft.
    pub draft_noise: Option<f64>,
    /// Modelled per-token acceptance.
    pub alpha: Option<f64>,
    /// Sampling temperature of the CPU engine (`None`: greedy).
    pub temperature: Option<f64>,
}

impl SpecSpec {
    /// The first flag given, for errors about flags that need speculation.
    pub fn any_set(&self) -> Option<&'static str> {
        [
            (self.draft.is_some(), "--draft"),
            (self.draft_layers.is_some(), "--draft-layers"),
            (self.draft_noise.is_some(), "--draft-noise"),
            (self.alpha.is_some(), "--spec-alpha"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }
}

/// `--engine`: a built-in engine or the URL of an OpenAI-compatible server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EngineChoice {
    /// One of fuselab's engines.
    Builtin(EngineKind),
    /// An OpenAI-compatible server at this base URL.
    Http(String),
}

impl EngineChoice {
    /// Parses `sim`, `cpu`, `null`, `cuda` or `http(s)://HOST[:PORT]`.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(rest) = s
            .strip_prefix("http://")
            .or_else(|| s.strip_prefix("https://"))
        {
            if rest.trim_matches('/').is_empty() {
                return Err(format!(
                    "`{s}` has no host; give e.g. http://127.0.0.1:8000"
                ));
            }
            return Ok(Self::Http(s.to_owned()));
        }
        match <EngineKind as clap::ValueEnum>::from_str(s, true) {
            Ok(k) if k != EngineKind::Http => Ok(Self::Builtin(k)),
            _ => Err(format!(
                "unknown engine `{s}`: give sim, cpu, null, cuda, or the URL of an OpenAI-compatible server such as http://127.0.0.1:8000"
            )),
        }
    }

    /// The engine kind (`Http` for a URL).
    pub fn kind(&self) -> EngineKind {
        match self {
            Self::Builtin(k) => *k,
            Self::Http(_) => EngineKind::Http,
        }
    }
}

impl Serialize for EngineChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Builtin(k) => s.serialize_str(k.name()),
            Self::Http(url) => s.serialize_str(url),
        }
    }
}

impl<'de> Deserialize<'de> for EngineChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Flags of `--engine http://…`.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct HttpOpts {
    /// HTTP engine: Bearer token for the server (`fuselab serve`: the key clients must send).
    #[arg(
        long,
        value_name = "KEY",
        env = "FUSELAB_API_KEY",
        hide_env_values = true
    )]
    #[serde(skip)]
    pub api_key: Option<String>,

    /// HTTP engine: `completions` (/v1/completions; exact prompt lengths) or
    /// `chat` (/v1/chat/completions; the template adds prompt tokens) [default: completions].
    #[arg(long, value_name = "API")]
    pub endpoint: Option<String>,

    /// HTTP engine: the served model's Hugging Face `tokenizer.json`, for text
    /// prompts of an exact token count and for counting streamed text
    /// (`fuselab serve`: the tokenizer it serves).
    #[arg(long, value_name = "FILE")]
    pub tokenizer: Option<PathBuf>,

    /// HTTP engine: `token-ids` (exact by construction; completions only) or
    /// `text` (built with --tokenizer, checked against the server's usage)
    /// [default: text with --tokenizer or chat, else token-ids].
    #[arg(long, value_name = "FORMAT")]
    pub prompt_format: Option<String>,

    /// HTTP engine: token-id prompts draw ids from [0, N) [default: 1000, valid for any real vocabulary].
    #[arg(long, value_name = "N")]
    pub vocab: Option<u32>,

    /// HTTP engine: scrape the server's Prometheus /metrics every SECONDS into
    /// server_metrics.parquet; 0 turns it off [default: 1].
    #[arg(long, value_name = "SECONDS")]
    pub scrape_interval: Option<f64>,

    /// HTTP engine: open N connections before the run's clock starts, so the
    /// first requests do not pay for TCP set-up (at 1000 streams that costs
    /// tens of ms of TTFT in the first seconds) [default: the closed-loop
    /// client count, else 0].
    #[arg(long, value_name = "N")]
    pub preconnect: Option<usize>,

    /// HTTP engine: retry a request whose connection failed before any answer
    /// up to N times [default: 0, no retries].
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,

    /// HTTP engine: do not send `stream_options` (for servers that reject it);
    /// streamed chunks are then counted with --tokenizer, or one per chunk.
    #[arg(long)]
    #[serde(default)]
    pub no_stream_usage: bool,

    /// HTTP engine: the fraction of requests whose served prompt or output
    /// length may differ from the requested one before the run is an error
    /// [default: 0].
    #[arg(long, value_name = "FRACTION")]
    pub max_length_mismatch: Option<f64>,

    /// HTTP engine: report length mismatches without failing the run.
    #[arg(long)]
    #[serde(default)]
    pub allow_length_mismatch: bool,
}

impl HttpOpts {
    fn any_set(&self) -> Option<&'static str> {
        [
            (self.endpoint.is_some(), "--endpoint"),
            (self.tokenizer.is_some(), "--tokenizer"),
            (self.prompt_format.is_some(), "--prompt-format"),
            (self.vocab.is_some(), "--vocab"),
            (self.scrape_interval.is_some(), "--scrape-interval"),
            (self.retries.is_some(), "--retries"),
            (self.preconnect.is_some(), "--preconnect"),
            (self.no_stream_usage, "--no-stream-usage"),
            (self.max_length_mismatch.is_some(), "--max-length-mismatch"),
            (self.allow_length_mismatch, "--allow-length-mismatch"),
        ]
        .into_iter()
        .find_map(|(set, flag)| set.then_some(flag))
    }

    /// The resolved HTTP engine flags for `url`.
    fn resolve(&self, url: &str, model: Option<&str>) -> anyhow::Result<crate::exec::HttpSpec> {
        use fuselab_http::{Endpoint, PromptFormat};
        let endpoint = match self.endpoint.as_deref() {
            None | Some("completions") => Endpoint::Completions,
            Some("chat") => Endpoint::Chat,
            Some(other) => {
                return Err(Error::invalid(
                    "--endpoint",
                    format!("`{other}` is not an endpoint"),
                    "give completions or chat",
                )
                .into());
            }
        };
        let prompt = match self.prompt_format.as_deref() {
            None if self.tokenizer.is_some() || endpoint == Endpoint::Chat => PromptFormat::Text,
            None | Some("token-ids") => PromptFormat::TokenIds,
            Some("text") => PromptFormat::Text,
            Some(other) => {
                return Err(Error::invalid(
                    "--prompt-format",
                    format!("`{other}` is not a prompt format"),
                    "give token-ids or text",
                )
                .into());
            }
        };
        if prompt == PromptFormat::Text && self.tokenizer.is_none() {
            return Err(Error::invalid(
                "--tokenizer",
                "text prompts (chat, or --prompt-format text) need the server's tokenizer",
                "give --tokenizer PATH/tokenizer.json of the served model, or use --endpoint completions --prompt-format token-ids",
            )
            .into());
        }
        if prompt == PromptFormat::TokenIds && endpoint == Endpoint::Chat {
            return Err(Error::invalid(
                "--prompt-format",
                "token-ids does not apply to --endpoint chat (messages are text)",
                "use --prompt-format text with --tokenizer, or --endpoint completions",
            )
            .into());
        }
        let scrape = self.scrape_interval.unwrap_or(1.0);
        if !(scrape.is_finite() && scrape >= 0.0) {
            return Err(Error::invalid(
                "--scrape-interval",
                format!("{scrape} is not a number of seconds"),
                "give seconds ≥ 0 (0 turns scraping off)",
            )
            .into());
        }
        let mismatch = self.max_length_mismatch.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&mismatch) {
            return Err(Error::invalid(
                "--max-length-mismatch",
                format!("{mismatch} is not a fraction"),
                "give a fraction between 0 and 1, e.g. 0.01",
            )
            .into());
        }
        let vocab = self.vocab.unwrap_or(1000);
        if vocab == 0 {
            return Err(Error::invalid(
                "--vocab",
                "0 ids",
                "give the number of token ids to draw prompts from, e.g. 1000",
            )
            .into());
        }
        Ok(crate::exec::HttpSpec {
            url: url.to_owned(),
            model: model.map(str::to_owned),
            api_key: self.api_key.clone(),
            endpoint,
            prompt,
            tokenizer: self.tokenizer.clone(),
            vocab,
            scrape_interval_s: (scrape > 0.0).then_some(scrape),
            retries: self.retries.unwrap_or(0),
            preconnect: self.preconnect,
            stream_usage: !self.no_stream_usage,
            max_length_mismatch: mismatch,
            allow_length_mismatch: self.allow_length_mismatch,
        })
    }
}

impl EngineOpts {
    /// Applies the defaults.
    pub fn resolve(&self) -> anyhow::Result<EngineSpec> {
        let kind = self
            .engine
            .as_ref()
            .map_or(EngineKind::Sim, EngineChoice::kind);
        let only_for = |flag: &str, set: bool, engines: &str| -> anyhow::Result<()> {
            if set {
                return Err(Error::invalid(
                    flag,
                    format!("does not apply to --engine {}", kind.name()),
                    format!("it applies to --engine {engines}; drop it"),
                )
                .into());
            }
            Ok(())
        };
        only_for(
            "--hardware",
            self.hardware.is_some() && kind != EngineKind::Sim,
            "sim",
        )?;
        if kind != EngineKind::Http
            && let Some(flag) = self.http.any_set()
        {
            only_for(flag, true, "http://HOST:PORT")?;
        }
        only_for("--tp", self.tp.is_some() && kind != EngineKind::Sim, "sim")?;
        only_for(
            "--calibration",
            self.calibration.is_some() && kind != EngineKind::Sim,
            "sim",
        )?;
        if let Some(path) = &self.calibration {
            // Checked before anything runs or any folder is made.
            fuselab_sim::Calibration::read(path)?;
        }
        only_for(
            "--weights",
            self.weights.is_some() && kind != EngineKind::Cpu,
            "cpu",
        )?;
        only_for(
            "--tuning-table",
            self.tuning_table.is_some() && !matches!(kind, EngineKind::Cpu | EngineKind::Cuda),
            "cpu or cuda",
        )?;
        if let Some(path) = &self.tuning_table {
            // Checked before anything runs or any folder is made.
            if kind == EngineKind::Cpu {
                crate::exec::tuned_forward(path, fuselab_cpu::ForwardOptions::default())?;
            } else {
                crate::exec::cuda_tuning(path)?;
            }
        }
        only_for(
            "--cuda-profile",
            self.cuda_profile.is_some() && kind != EngineKind::Cuda,
            "cuda",
        )?;
        only_for(
            "--cuda-prefill-tile",
            self.cuda_prefill_tile.is_some() && kind != EngineKind::Cuda,
            "cuda",
        )?;
        let cuda_prefill_tile = self
            .cuda_prefill_tile
            .as_deref()
            .map(|l| {
                fuselab_kernels::cuda::PrefillTile::from_label(l).ok_or_else(|| {
                    Error::invalid(
                        "--cuda-prefill-tile",
                        format!("`{l}` is not a prefill tile"),
                        format!(
                            "use one of {}",
                            fuselab_kernels::cuda::PrefillTile::ALL
                                .map(|t| t.label())
                                .join(", ")
                        ),
                    )
                })
            })
            .transpose()?;
        only_for(
            "--cuda-skinny-gemm",
            self.cuda_skinny_gemm && kind != EngineKind::Cuda,
            "cuda",
        )?;
        only_for(
            "--cuda-pdl",
            self.cuda_pdl && kind != EngineKind::Cuda,
            "cuda",
        )?;
        only_for(
            "--no-cuda-graphs",
            self.no_cuda_graphs && kind != EngineKind::Cuda,
            "cuda",
        )?;
        only_for(
            "--cuda-gemm-tuning",
            self.cuda_gemm_tuning && kind != EngineKind::Cuda,
            "cuda",
        )?;
        only_for(
            "--timeout",
            self.timeout.is_some() && kind == EngineKind::Sim,
            "cpu, cuda, null or http",
        )?;
        only_for(
            "--warmup",
            self.warmup.is_some() && kind == EngineKind::Sim,
            "cpu, cuda, null or http",
        )?;
        only_for(
            "--window",
            self.window.is_some() && kind == EngineKind::Sim,
            "cpu, cuda, null or http",
        )?;
        only_for(
            "--delay",
            self.delay.is_some() && kind != EngineKind::Null,
            "null",
        )?;
        let delay = self.delay.as_deref().map(parse_delay).transpose()?;
        only_for(
            "--slowdown",
            self.slowdown.is_some()
                && (kind == EngineKind::Http || (kind == EngineKind::Null && delay.is_none())),
            "sim, cpu, cuda, or null with --delay (an instant null engine has nothing to slow)",
        )?;
        if let Some(f) = self.slowdown
            && !(f.is_finite() && (1.0..=100.0).contains(&f))
        {
            return Err(Error::invalid(
                "--slowdown",
                format!("{f} is not a slowdown factor between 1 and 100"),
                "give a factor like 1.10 for a 10% slower engine",
            )
            .into());
        }
        for (flag, value, zero_ok) in [
            ("--timeout", self.timeout, false),
            ("--warmup", self.warmup, true),
            ("--window", self.window, false),
        ] {
            if let Some(t) = value
                && !(t.is_finite() && (t > 0.0 || (zero_ok && t == 0.0)))
            {
                let bound = if zero_ok { ">= 0" } else { "> 0" };
                return Err(Error::invalid(
                    flag,
                    format!("{t} is not a valid number of seconds"),
                    format!("give seconds {bound}"),
                )
                .into());
            }
        }
        only_for(
            "--meteora",
            self.meteora.is_some()
                && !matches!(kind, EngineKind::Sim | EngineKind::Cpu | EngineKind::Cuda),
            "sim, cpu or cuda",
        )?;
        if self.meteora == Some(0) {
            return Err(Error::invalid(
                "--meteora",
                "0 is not a top-k: the gate must pick at least one adapter per token",
                "give K between 1 and the number of --adapters, e.g. --meteora 1",
            )
            .into());
        }
        let spec = self.spec.resolve(kind)?;
        let http = match &self.engine {
            Some(EngineChoice::Http(url)) => Some(self.http.resolve(url, self.model.as_deref())?),
            _ => None,
        };
        Ok(EngineSpec {
            kind,
            http,
            hardware: self.hardware.clone().unwrap_or_else(|| "h200".into()),
            model: self
                .model
                .clone()
                .unwrap_or_else(|| kind.default_model().into()),
            tp: self.tp.unwrap_or(1),
            calibration: self.calibration.clone(),
            weights: self.weights.clone(),
            tuning_table: self.tuning_table.clone(),
            cuda_profile: self.cuda_profile.clone(),
            cuda_graphs: !self.no_cuda_graphs,
            cuda_skinny_gemm: self.cuda_skinny_gemm,
            cuda_pdl: self.cuda_pdl,
            cuda_gemm_tuning: self.cuda_gemm_tuning,
            cuda_prefill_tile,
            timeout_s: self.timeout,
            warmup_s: self.warmup,
            window_s: self.window,
            slowdown: self.slowdown,
            delay,
            spec,
            meteora: self.meteora,
        })
    }
}

impl SpecOpts {
    /// Checks the flags against the engine.
    fn resolve(&self, kind: EngineKind) -> anyhow::Result<SpecSpec> {
        let spec = SpecSpec {
            draft: self.draft.clone(),
            draft_layers: self.draft_layers,
            draft_noise: self.draft_noise,
            alpha: self.spec_alpha,
            temperature: self.temperature,
        };
        if let Some(t) = spec.temperature {
            if kind != EngineKind::Cpu {
                return Err(Error::invalid(
                    "--temperature",
                    format!("does not apply to --engine {}", kind.name()),
                    "the CUDA engine and the simulator decode greedily; sample at a temperature with --engine cpu",
                )
                .into());
            }
            fuselab_engine::Sampler::new(t, 0)?;
            if spec.alpha.is_some() {
                return Err(Error::invalid(
                    "--spec-alpha",
                    "a modelled acceptance coin steers greedy proposals; it cannot be combined with --temperature",
                    "drop --spec-alpha (acceptance is then measured) or --temperature",
                )
                .into());
            }
        }
        if let Some(flag) = spec.any_set()
            && matches!(kind, EngineKind::Null | EngineKind::Http)
        {
            return Err(Error::invalid(
                flag,
                format!("does not apply to --engine {}", kind.name()),
                "speculative decoding runs in fuselab's engines: --engine sim, cpu or cuda",
            )
            .into());
        }
        let only = |flag: &str, set: bool, engines: &[EngineKind]| -> anyhow::Result<()> {
            if set && !engines.contains(&kind) {
                let names: Vec<&str> = engines.iter().map(|e| e.name()).collect();
                return Err(Error::invalid(
                    flag,
                    format!("does not apply to --engine {}", kind.name()),
                    format!("it applies to --engine {}; drop it", names.join(" or ")),
                )
                .into());
            }
            Ok(())
        };
        only(
            "--draft",
            spec.draft.is_some(),
            &[EngineKind::Sim, EngineKind::Cuda],
        )?;
        let made_from_target = [EngineKind::Cpu, EngineKind::Cuda];
        only(
            "--draft-layers",
            spec.draft_layers.is_some(),
            &made_from_target,
        )?;
        only(
            "--draft-noise",
            spec.draft_noise.is_some(),
            &made_from_target,
        )?;
        if let (Some(d), Some(flag)) = (
            &spec.draft,
            [
                (spec.draft_layers.is_some(), "--draft-layers"),
                (spec.draft_noise.is_some(), "--draft-noise"),
            ]
            .into_iter()
            .find_map(|(set, flag)| set.then_some(flag)),
        ) {
            return Err(Error::invalid(
                flag,
                format!(
                    "shapes a draft made from the target, but --draft {d} names a model of its own"
                ),
                "give either --draft MODEL or --draft-layers/--draft-noise",
            )
            .into());
        }
        if let Some(a) = spec.alpha
            && !(0.0..=1.0).contains(&a)
        {
            return Err(Error::invalid(
                "--spec-alpha",
                format!("{a} is not a probability"),
                "give the per-token acceptance probability in [0, 1], e.g. --spec-alpha 0.7",
            )
            .into());
        }
        if let Some(n) = spec.draft_noise
            && !(n.is_finite() && n >= 0.0)
        {
            return Err(Error::invalid(
                "--draft-noise",
                format!("{n} is not a noise scale"),
                "give a scale ≥ 0 relative to each matrix's RMS, e.g. --draft-noise 0.05",
            )
            .into());
        }
        if spec.draft_layers == Some(0) {
            return Err(Error::invalid(
                "--draft-layers",
                "0 layers",
                "give at least 1 (the draft keeps the target's first N layers)",
            )
            .into());
        }
        if let Some(d) = &spec.draft
            && fuselab_engine::ModelShape::preset(d).is_err()
        {
            return Err(Error::invalid(
                "--draft",
                format!("unknown model `{d}`"),
                format!(
                    "name a model shape for the draft, e.g. --draft llama3.2-1b (valid: {})",
                    fuselab_engine::MODEL_NAMES.join(", ")
                ),
            )
            .into());
        }
        Ok(spec)
    }
}

/// Parses `--delay FIRST,PER_TOKEN` (`50ms,10ms`, `0.05,0.01`).
fn parse_delay(s: &str) -> anyhow::Result<fuselab_harness::NullDelay> {
    let bad = |what: String| {
        Error::invalid(
            "--delay",
            what,
            "give the first-token and per-token delays, e.g. --delay 50ms,10ms",
        )
    };
    let Some((first, per)) = s.split_once(',') else {
        return Err(bad(format!("`{s}` is not FIRST,PER_TOKEN")).into());
    };
    let secs = |v: &str| -> anyhow::Result<f64> {
        let v = v.trim();
        let (num, mult) = match v.strip_suffix("ms") {
            Some(n) => (n, 1e-3),
            None => (v.strip_suffix('s').unwrap_or(v), 1.0),
        };
        match num.trim().parse::<f64>() {
            Ok(x) if x.is_finite() && x >= 0.0 => Ok(x * mult),
            _ => Err(bad(format!("`{v}` is not a duration ≥ 0")).into()),
        }
    };
    Ok(fuselab_harness::NullDelay {
        first_token_s: secs(first)?,
        per_token_s: secs(per)?,
    })
}

/// Builds a policy from its name and `NAME=VALUE` knobs.
pub fn policy_config(name: &str, knobs: &[String]) -> anyhow::Result<PolicyConfig> {
    let kind: PolicyKind = name.parse()?;
    Ok(PolicyConfig::with_knobs(kind, knobs)?)
}

/// Parses `--slo`, empty when not given.
pub fn slo(spec: Option<&str>) -> anyhow::Result<fuselab_core::Slo> {
    Ok(match spec {
        Some(s) => fuselab_metrics::parse_slo(s)?,
        None => fuselab_core::Slo::default(),
    })
}

/// Runs `fuselab bench`.
pub fn run(args: BenchArgs) -> anyhow::Result<Outcome> {
    let args = config::merge(args.clone(), args.config.as_deref())?;
    let policy_name = args.policy.clone().unwrap_or_else(|| "splitfuse".into());
    if policy_name.contains(',') || policy_name == "all" {
        return Err(Error::invalid(
            "--policy",
            format!("`{policy_name}` names several policies"),
            "bench runs one policy; use `fuselab sweep --policies ...` to compare several",
        )
        .into());
    }
    if let Some(launch) = args.server_launch()? {
        let out = args
            .out
            .clone()
            .unwrap_or_else(|| PathBuf::from("runs/bench-http-server"));
        fuselab_store::create_folder(&out, args.force)?;
        let mut inner = args.clone();
        inner.server_cmd = None;
        inner.server_ready = None;
        inner.server_timeout = None;
        inner.out = Some(out.clone());
        inner.force = true;
        return match launch.run(&out.join("server.log"), || run(inner)) {
            Ok(result) => result,
            Err(f) => Err(Error::invalid(
                "--server-cmd",
                f.reason,
                format!(
                    "see {} for the server's output",
                    out.join("server.log").display()
                ),
            )
            .into()),
        };
    }
    let mut knobs = exec::with_knob_set(args.knobs_from.as_deref(), &args.engine, &args.knob)?;
    if let Some(k) = args.spec_k {
        if args
            .knob
            .iter()
            .any(|k| k.trim_start().starts_with("spec_k"))
        {
            return Err(Error::invalid(
                "--spec-k",
                "given together with --knob spec_k",
                "give the draft length once",
            )
            .into());
        }
        knobs.push(format!("spec_k={k}"));
    }
    if let Some(k) = args.spec_k
        && k > fuselab_engine::MAX_SPEC_K
    {
        return Err(Error::invalid(
            "--spec-k",
            format!("{k} draft tokens per step is out of range"),
            format!("give 0 (off) to {}", fuselab_engine::MAX_SPEC_K),
        )
        .into());
    }
    let policy = policy_config(&policy_name, &knobs)?;
    // An explicit spec_k=0 (a tuner's baseline trial) keeps the flags quietly.
    let k_given =
        args.spec_k.is_some() || knobs.iter().any(|k| k.trim_start().starts_with("spec_k"));
    if !k_given
        && let Some(flag) = args
            .engine
            .spec
            .resolve(args.engine.resolve()?.kind)?
            .any_set()
    {
        return Err(Error::invalid(
            flag,
            "applies only with speculative decoding",
            "give --spec-k N (N ≥ 1) or --knob spec_k=N",
        )
        .into());
    }
    let (workload, requests) = args.workload.resolve()?;
    let point = Point::new(
        &args.engine,
        policy,
        workload,
        requests,
        slo(args.slo.as_deref())?,
    )?;
    let is_http = point.engine.kind == EngineKind::Http;
    let policy_name = if is_http { "http".into() } else { policy_name };
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!(
            "runs/bench-{}-{}-s{}",
            policy_name, point.workload.name, point.workload.seed
        ))
    });
    let repeat = check_repeat(args.repeat)?;
    // Refuse an existing folder before spending time on the run.
    fuselab_store::create_folder(&out, args.force)?;
    let name = out
        .file_name()
        .map_or_else(|| "bench".into(), |n| n.to_string_lossy().into_owned());
    let label = format!("{}@{}", policy_name, load_label(&point.workload.arrivals));
    let Some(n) = repeat else {
        let result = exec::run_point(&point)?;
        exec::write_point(&out, true, &name, &point, &result)?;
        if result.cancelled {
            return Err(exec::cancelled_error(&result, &out));
        }
        exec::check_lengths(&point, &result, &out)?;
        print!("{}", exec::metrics_table(&[(label, &result.metrics)]));
        if let Some(line) = exec::spec_line(&result) {
            println!("{line}");
        }
        println!(
            "{} requests ({} ok) · window {} · run folder {}",
            result.metrics.requests,
            result.metrics.completed,
            exec::secs(result.metrics.window_s),
            out.display()
        );
        if let Some(note) = exec::failure_note(&result.records) {
            println!("{note}");
        }
        return none_succeeded(&[result.metrics], &out);
    };
    let metrics = exec::run_repeats(&out, &name, &point, n)?;
    let rows: Vec<(String, &fuselab_core::Metrics)> = metrics
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("{label} #{}", i + 1), m))
        .collect();
    print!("{}", exec::metrics_table(&rows));
    println!(
        "{n} runs of {} requests · repeat folder {} (rep-1 … rep-{n})",
        metrics[0].requests,
        out.display()
    );
    let failed: u64 = metrics.iter().map(|m| m.failed).sum();
    if failed > 0 {
        println!(
            "{failed} of {} requests did not complete over the {n} runs (reasons in each rep-K/requests.parquet)",
            metrics.iter().map(|m| m.requests).sum::<u64>()
        );
    }
    none_succeeded(&metrics, &out)
}

/// Exit 2 when requests were sent and none of them succeeded in any run.
fn none_succeeded(
    runs: &[fuselab_core::Metrics],
    out: &std::path::Path,
) -> anyhow::Result<Outcome> {
    let requests: u64 = runs.iter().map(|m| m.requests).sum();
    if requests > 0 && runs.iter().all(|m| m.completed == 0) {
        return Err(Error::invalid(
            "run",
            format!(
                "none of the {requests} requests succeeded (the run folder {} holds what happened)",
                out.display()
            ),
            "see the reason above; fix the workload, knobs or engine",
        )
        .into());
    }
    Ok(Outcome::Success)
}

/// Checks `--repeat N`: at least 1, at most 1000.
pub fn check_repeat(repeat: Option<u32>) -> anyhow::Result<Option<u32>> {
    match repeat {
        Some(n) if n == 0 || n > 1000 => Err(Error::invalid(
            "--repeat",
            format!("{n} is not a number of runs between 1 and 1000"),
            "give how many times to run the configuration, e.g. --repeat 3",
        )
        .into()),
        other => Ok(other),
    }
}

/// A short label for the load of a workload (`rate=2`, `clients=8`, `burst`).
pub fn load_label(arrivals: &fuselab_core::Arrivals) -> String {
    use fuselab_core::Arrivals as A;
    match arrivals {
        A::Poisson { rate } | A::Constant { rate } | A::Gamma { rate, .. } => format!("{rate}/s"),
        A::Ramp {
            start_rate,
            end_rate,
        } => format!("{start_rate}-{end_rate}/s"),
        A::Burst => "burst".into(),
        A::ClosedLoop { clients } => format!("{clients} clients"),
        A::Trace => "trace".into(),
    }
}
