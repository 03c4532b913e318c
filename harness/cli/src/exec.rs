//! Running benchmark points: engine × policy × workload → records, metrics and
//! a run folder. Shared by `bench`, `sweep` and `run`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use fuselab_core::{
    Arrivals, EngineInfo, Error, Metrics, Provenance, RequestRecord, RequestSpec, RequestStatus,
    RunSummary, SCHEMA_VERSION, Slo, StepRecord, WorkloadSpec,
};
use fuselab_engine::{
    LoraConfig, LoraMode, ModelShape, NativeEngine, PolicyConfig, Slowdown, simulate,
};
use fuselab_harness::{
    EngineHandle, NativeEngineHandle, NullEngine, RealtimePlan, run_realtime_blocking,
};
use fuselab_sim::{SimBackend, SimConfig};
use serde::{Deserialize, Serialize};

/// Which engine runs a point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EngineKind {
    /// The simulated backend: a calibrated cost model on a virtual clock.
    Sim,
    /// The CPU backend: real numerics of a Llama-architecture model, in real time.
    Cpu,
    /// Answers every request at once: measures the harness's own overhead.
    Null,
    /// The CUDA backend: bf16 Llama on an NVIDIA GPU (random weights), in real time.
    Cuda,
    /// An OpenAI-compatible server over HTTP (`--engine http://HOST:PORT`).
    #[value(skip)]
    Http,
}

impl EngineKind {
    /// The name written into provenance.
    pub fn name(self) -> &'static str {
        match self {
            Self::Sim => "sim",
            Self::Cpu => "cpu",
            Self::Null => "null",
            Self::Cuda => "cuda",
            Self::Http => "http",
        }
    }

    /// The model shape used when none is given.
    pub fn default_model(self) -> &'static str {
        match self {
            Self::Sim | Self::Cuda => "llama3-8b",
            Self::Cpu | Self::Null => "tiny",
            Self::Http => "",
        }
    }
}

/// The engine side of a point.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineSpec {
    /// Which engine.
    pub kind: EngineKind,
    /// Hardware profile (sim).
    pub hardware: String,
    /// Model shape.
    pub model: String,
    /// Tensor-parallel degree.
    pub tp: u32,
    /// The simulator's calibration file (`None`: the shipped H200 one).
    pub calibration: Option<PathBuf>,
    /// Safetensors weights for the CPU engine (seeded random when `None`).
    pub weights: Option<PathBuf>,
    /// The CPU or CUDA engine's tuned kernel configurations (`--tuning-table`).
    pub tuning_table: Option<PathBuf>,
    /// Where the CUDA engine writes its per-operator profile (`--cuda-profile`).
    pub cuda_profile: Option<PathBuf>,
    /// Whether the CUDA engine replays decode steps from CUDA graphs.
    pub cuda_graphs: bool,
    /// Whether the CUDA engine runs small GEMMs on its skinny kernel.
    pub cuda_skinny_gemm: bool,
    /// Whether the CUDA engine captures its decode graphs with programmatic dependent launch.
    pub cuda_pdl: bool,
    /// Whether the CUDA engine times cuBLASLt's algorithms for its decode GEMMs at the
    /// warm-up and keeps the fastest.
    pub cuda_gemm_tuning: bool,
    /// The CUDA engine's prefill attention tile (`None`: the device's default).
    pub cuda_prefill_tile: Option<fuselab_kernels::cuda::PrefillTile>,
    /// Per-request timeout for real-time engines, seconds.
    pub timeout_s: Option<f64>,
    /// Warm-up for real-time engines: requests due before it run but are not measured.
    pub warmup_s: Option<f64>,
    /// Measurement window after the warm-up for real-time engines, seconds.
    pub window_s: Option<f64>,
    /// Test knob: stretch every engine step by this factor (see [`Slowdown`]).
    pub slowdown: Option<f64>,
    /// The null engine's fixed latencies (`None`: it answers at once).
    pub delay: Option<fuselab_harness::NullDelay>,
    /// The server and client settings of `--engine http://…`.
    pub http: Option<HttpSpec>,
    /// The speculative-decoding flags (used when the policy's `spec_k > 0`).
    pub spec: crate::cmd::bench::SpecSpec,
    /// MeteoRA's top-k (`--meteora`): the workload's adapters all embedded,
    /// a gate picks each token's adapters (`None`: multi-LoRA slots).
    pub meteora: Option<u32>,
}

/// The draft the simulator prices when speculating without `--draft`.
pub const DEFAULT_SIM_DRAFT: &str = "llama3.2-1b";

/// The CPU draft's noise without `--draft-noise`.
pub const DEFAULT_DRAFT_NOISE: f64 = 0.01;

/// The HTTP engine's resolved flags.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSpec {
    /// The server's base URL.
    pub url: String,
    /// The served model (`None`: the first one `/v1/models` lists).
    pub model: Option<String>,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Completions or chat.
    pub endpoint: fuselab_http::Endpoint,
    /// Token ids or text.
    pub prompt: fuselab_http::PromptFormat,
    /// The server's tokenizer.
    pub tokenizer: Option<PathBuf>,
    /// Token-id prompts draw from `[0, vocab)`.
    pub vocab: u32,
    /// Scrape `/metrics` this often (`None`: never).
    pub scrape_interval_s: Option<f64>,
    /// Retries of failed connections.
    pub retries: u32,
    /// Connections opened before the run (`None`: the closed-loop client count, else 0).
    pub preconnect: Option<usize>,
    /// Send `stream_options`.
    pub stream_usage: bool,
    /// Allowed fraction of requests with a length mismatch.
    pub max_length_mismatch: f64,
    /// Report mismatches without failing.
    pub allow_length_mismatch: bool,
}

/// One benchmark point, fully resolved.
#[derive(Debug, Clone)]
pub struct Point {
    /// Engine to run.
    pub engine: EngineSpec,
    /// Policy with every knob.
    pub policy: PolicyConfig,
    /// The workload's description (for provenance).
    pub workload: WorkloadSpec,
    /// The requests themselves.
    pub requests: Vec<RequestSpec>,
    /// SLOs for goodput.
    pub slo: Slo,
}

impl Point {
    /// A point of `engine` × `policy` × `workload`, with the model-dependent
    /// defaults resolved: a preset meant for a long-context model picks it
    /// when `--model` was not given, and `max_len` defaults to the model's
    /// context length.
    ///
    /// # Errors
    /// When no request fits the model's context (or `max_len`), naming a
    /// model that fits, before anything runs. Some requests that do not fit
    /// are a warning: they will be rejected.
    pub fn new(
        engine: &crate::cmd::bench::EngineOpts,
        mut policy: PolicyConfig,
        workload: WorkloadSpec,
        mut requests: Vec<RequestSpec>,
        slo: Slo,
    ) -> anyhow::Result<Self> {
        let mut engine_spec = engine.resolve()?;
        if let Some(http) = &mut engine_spec.http {
            if http.model.is_none() {
                http.model = Some(served_model(http)?);
            }
            engine_spec.model = http.model.clone().unwrap_or_default();
        }
        if workload.lora.is_some()
            && !matches!(
                engine_spec.kind,
                EngineKind::Sim | EngineKind::Cpu | EngineKind::Cuda
            )
        {
            return Err(Error::invalid(
                "--adapters",
                format!(
                    "multi-LoRA is not supported on {} yet",
                    engine_spec.kind.name()
                ),
                "run LoRA workloads with --engine sim, cpu or cuda, or drop --adapters",
            )
            .into());
        }
        if let Some(k) = engine_spec.meteora {
            let Some(l) = workload.lora else {
                return Err(Error::invalid(
                    "--meteora",
                    "given, but the workload has no LoRA adapters",
                    "give the number of adapters to embed with --adapters N",
                )
                .into());
            };
            if k == 0 || k > l.adapters {
                return Err(Error::invalid(
                    "--meteora",
                    format!("top-k {k} is not between 1 and the {} adapters", l.adapters),
                    format!("give K between 1 and {}", l.adapters),
                )
                .into());
            }
            // MeteoRA's gate picks every token's adapters: requests name none.
            for r in &mut requests {
                r.adapter = None;
            }
        }
        if policy.speculates()
            && !matches!(
                engine_spec.kind,
                EngineKind::Sim | EngineKind::Cpu | EngineKind::Cuda
            )
        {
            return Err(Error::invalid(
                "--spec-k",
                format!(
                    "speculative decoding is not supported on {} yet",
                    engine_spec.kind.name()
                ),
                "use --engine sim (modelled acceptance), cpu or cuda (a real draft), or spec_k=0",
            )
            .into());
        }
        if policy.speculates()
            && engine_spec.kind == EngineKind::Sim
            && engine_spec.spec.alpha.is_none()
        {
            return Err(Error::invalid(
                "--spec-alpha",
                "the simulator computes no tokens, so speculative acceptance must be modelled",
                "give the per-token acceptance probability, e.g. --spec-alpha 0.7",
            )
            .into());
        }
        if matches!(engine_spec.kind, EngineKind::Null | EngineKind::Http) {
            return Ok(Self {
                engine: engine_spec,
                policy,
                workload,
                requests,
                slo,
            });
        }
        if engine.model.is_none()
            && engine_spec.kind != EngineKind::Cpu
            && let Some(model) = fuselab_workloads::preset_model(&workload.name)
        {
            warn_once(format!(
                "model {model}: the {} preset's model (pass --model to choose another)",
                workload.name
            ));
            engine_spec.model = model.into();
        }
        if policy.speculates() && engine_spec.kind == EngineKind::Cuda {
            // The draft flags are checked here, before the device is opened.
            cuda_draft(&engine_spec, 0)?;
        }
        let shape = ModelShape::preset(&engine_spec.model)?;
        policy.default_max_len(shape.context_len);
        check_fit(&engine_spec, &shape, &policy, &requests)?;
        Ok(Self {
            engine: engine_spec,
            policy,
            workload,
            requests,
            slo,
        })
    }
}

/// `knobs` with the knobs of the `--knobs-from` set in front, so that
/// `--knob` wins. The set is chosen for the engine's device: the simulated
/// hardware profile; for `cuda` a GPU of at least 70 GiB other than an A100
/// (the H200 this lab measures on) is assumed, and said.
pub fn with_knob_set(
    set: Option<&str>,
    engine: &crate::cmd::bench::EngineOpts,
    knobs: &[String],
) -> anyhow::Result<Vec<String>> {
    let Some(set) = set else {
        return Ok(knobs.to_vec());
    };
    let spec = engine.resolve()?;
    let device = match spec.kind {
        EngineKind::Sim => {
            let hw = fuselab_sim::hardware(&spec.hardware)?;
            Some(fuselab_engine::DeviceClass {
                name: hw.name.into(),
                memory_gib: hw.memory_bytes / f64::from(1u32 << 30),
            })
        }
        EngineKind::Cuda => {
            warn_once(format!(
                "--knobs-from {set} on --engine cuda assumes a GPU of at least 70 GiB that is not an A100"
            ));
            Some(fuselab_engine::DeviceClass {
                name: "cuda".into(),
                memory_gib: 70.0,
            })
        }
        EngineKind::Cpu | EngineKind::Null | EngineKind::Http => None,
    };
    let mut all = fuselab_engine::knob_set(set, device.as_ref())?;
    all.extend_from_slice(knobs);
    Ok(all)
}

/// Refuses a workload none of whose requests fit `max_len`; warns when some do not.
fn check_fit(
    engine: &EngineSpec,
    shape: &ModelShape,
    policy: &PolicyConfig,
    requests: &[RequestSpec],
) -> anyhow::Result<()> {
    let max_len = policy.max_len();
    let len = |r: &RequestSpec| u64::from(r.prompt_len) + u64::from(r.output_len);
    let over = requests
        .iter()
        .filter(|r| len(r) > u64::from(max_len))
        .count();
    if over == 0 {
        return Ok(());
    }
    let longest = requests.iter().map(len).max().unwrap_or(0);
    let limit = if policy.max_len == Some(shape.context_len) {
        format!(
            "the {}-token context of {}",
            shape.context_len, engine.model
        )
    } else {
        format!(
            "max_len {max_len} ({}'s context: {})",
            engine.model, shape.context_len
        )
    };
    let fits: Vec<String> = fuselab_engine::MODEL_NAMES
        .iter()
        .filter_map(|n| ModelShape::preset(n).ok())
        .filter(|m| u64::from(m.context_len) >= longest)
        .map(|m| format!("{} ({} tokens)", m.name, m.context_len))
        .collect();
    let hint = if fits.is_empty() {
        format!("no model shape has a context of {longest} tokens: shorten the workload")
    } else if policy.max_len.is_some_and(|m| m < shape.context_len) {
        format!(
            "raise --knob max_len to {longest} or more, or pick one of: --model {}",
            fits.join(", ")
        )
    } else {
        format!("pick a model that fits: --model {}", fits.join(", "))
    };
    if over == requests.len() {
        let field = if policy.max_len.is_some_and(|m| m < shape.context_len) {
            "--knob max_len"
        } else {
            "--model"
        };
        return Err(Error::invalid(
            field,
            format!(
                "none of the {} requests fits {limit}: prompt + output up to {longest} tokens",
                requests.len()
            ),
            hint,
        )
        .into());
    }
    warn_once(format!(
        "{over} of {} requests need more than {limit} (up to {longest} tokens) and will be rejected; {hint}",
        requests.len()
    ));
    Ok(())
}

/// Prints a warning on stderr once per process (a sweep builds many points).
fn warn_once(message: String) {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut seen = SEEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !seen.contains(&message) {
        eprintln!("warning: {message}");
        seen.push(message);
    }
}

/// What a point produced.
#[derive(Debug, Clone)]
pub struct PointResult {
    /// Per-request records.
    pub records: Vec<RequestRecord>,
    /// Per-step records.
    pub steps: Vec<StepRecord>,
    /// Engine identity and knobs.
    pub info: EngineInfo,
    /// Computed metrics.
    pub metrics: Metrics,
    /// The run was cancelled (Ctrl-C): the records hold what was measured.
    pub cancelled: bool,
    /// The server's Prometheus samples (HTTP engines that scrape).
    pub server_metrics: Vec<fuselab_core::ServerMetricSample>,
}

/// The adapters a point's backend serves: the workload's, in the policy's
/// `max_loras` slots, or all embedded behind MeteoRA's gate (`--meteora`).
pub fn lora_config(
    engine: &EngineSpec,
    workload: &WorkloadSpec,
    policy: &PolicyConfig,
) -> Option<LoraConfig> {
    workload.lora.map(|l| LoraConfig {
        adapters: l.adapters,
        rank: l.rank,
        mode: match engine.meteora {
            Some(top_k) => LoraMode::Meteora { top_k },
            None => LoraMode::Slots {
                slots: policy.max_loras,
            },
        },
    })
}

/// Runs a point to completion (or until Ctrl-C for real-time engines).
pub fn run_point(point: &Point) -> anyhow::Result<PointResult> {
    let clients = match point.workload.arrivals {
        Arrivals::ClosedLoop { clients } => Some(clients),
        _ => None,
    };
    let mut info = EngineInfo {
        engine: point.engine.kind.name().into(),
        hardware: None,
        model: Some(point.engine.model.clone()),
        policy: Some(point.policy.kind.name().into()),
        knobs: point.policy.knobs(),
    };
    let mut cancelled = false;
    let mut server_metrics = Vec::new();
    let slowdown = point.engine.slowdown.unwrap_or(1.0);
    let (records, steps) = match point.engine.kind {
        EngineKind::Sim => {
            let speculates = point.policy.speculates();
            let mut backend = SimBackend::new(&SimConfig {
                hardware: point.engine.hardware.clone(),
                model: point.engine.model.clone(),
                tp: point.engine.tp,
                calibration: point.engine.calibration.clone(),
                draft: speculates.then(|| {
                    point
                        .engine
                        .spec
                        .draft
                        .clone()
                        .unwrap_or_else(|| DEFAULT_SIM_DRAFT.into())
                }),
                ..SimConfig::default()
            })?;
            if let Some(l) = lora_config(&point.engine, &point.workload, &point.policy) {
                backend = backend.with_lora(l)?;
            }
            let acceptance = match point.engine.spec.alpha {
                Some(a) if speculates => Some(fuselab_engine::AcceptanceModel::new(
                    a,
                    point.workload.seed,
                )?),
                _ => None,
            };
            let mut engine = NativeEngine::with_spec(
                Slowdown::new(backend, slowdown),
                point.policy.clone(),
                acceptance,
            )?;
            let run = simulate(&point.requests, clients, &mut engine)
                .with_context(|| format!("simulating policy {}", point.policy.kind))?;
            info.knobs = engine.knobs();
            if let Some(LoraConfig {
                mode: LoraMode::Meteora { top_k },
                ..
            }) = lora_config(&point.engine, &point.workload, &point.policy)
            {
                info.knobs.insert("meteora_top_k".into(), top_k.into());
            }
            info.knobs.insert("tp".into(), point.engine.tp.into());
            info.knobs.insert(
                "calibration".into(),
                point
                    .engine
                    .calibration
                    .as_ref()
                    .map_or_else(
                        || {
                            let c = fuselab_sim::Calibration::default_h200();
                            format!(
                                "shipped: {} {}, measured {}",
                                c.source.device, c.model, c.source.measured
                            )
                        },
                        |p| p.display().to_string(),
                    )
                    .into(),
            );
            info.hardware = Some(point.engine.hardware.clone());
            (run.records, run.steps)
        }
        EngineKind::Cpu | EngineKind::Null | EngineKind::Cuda | EngineKind::Http => {
            let mut engine_spec = point.engine.clone();
            if let Some(http) = &mut engine_spec.http {
                http.preconnect = http.preconnect.or(clients.map(|c| c as usize));
            }
            let (engine, scraped_from) = realtime_engine(
                &engine_spec,
                &point.policy,
                point.workload.seed,
                &mut info,
                false,
                lora_config(&point.engine, &point.workload, &point.policy),
            )?;
            let mut plan = match clients {
                Some(c) => RealtimePlan::closed_loop(point.requests.clone(), c),
                None => RealtimePlan::open_loop(point.requests.clone()),
            };
            plan.timeout_s = point.engine.timeout_s;
            plan.warmup_s = point.engine.warmup_s.unwrap_or(0.0);
            plan.window_s = point.engine.window_s;
            let mut run = run_realtime_blocking(plan, engine, true)?;
            if let Some(http) = &point.engine.http
                && http.prompt == fuselab_http::PromptFormat::Text
            {
                verify_prompts(http, &point.requests, &mut run.records)?;
            }
            if let Some(err) = &run.engine_error {
                tracing::error!("engine failed: {err}");
            }
            cancelled = run.cancelled;
            if let Some(scraped) = scraped_from {
                if let Some(err) = scraped.first_error() {
                    warn_once(format!("server metrics: {err}"));
                }
                server_metrics = scraped.take();
            }
            (run.records, run.steps)
        }
    };
    if let Some(f) = point.engine.slowdown {
        info.knobs.insert("slowdown".into(), f.into());
    }
    let step_records = (!steps.is_empty()).then_some(steps.as_slice());
    let mut metrics =
        fuselab_metrics::compute_metrics(&records, step_records, &point.slo, point.workload.seed);
    if let Some(spec) = metrics.engine.as_mut().and_then(|e| e.spec.as_mut()) {
        spec.source = acceptance_source(&info.knobs);
    }
    Ok(PointResult {
        records,
        steps,
        info,
        metrics,
        cancelled,
        server_metrics,
    })
}

/// Counts text prompts with the server's tokenizer where its stream gave no usage.
fn verify_prompts(
    http: &HttpSpec,
    specs: &[RequestSpec],
    records: &mut [RequestRecord],
) -> anyhow::Result<()> {
    let missing = records
        .iter()
        .filter(|r| r.server.as_ref().is_some_and(|s| s.prompt_tokens.is_none()))
        .count();
    if missing == 0 {
        return Ok(());
    }
    let config = http_config(http)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let counted = rt.block_on(fuselab_http::verify_prompt_lengths(&config, specs, records))?;
    if counted == 0 {
        warn_once(format!(
            "the server reported no prompt lengths and has no tokenize endpoint: the {missing} text prompts are unchecked"
        ));
    } else {
        tracing::info!("counted {counted} prompts with the server's tokenize endpoint");
    }
    Ok(())
}

/// The HTTP engine for `http`.
pub fn http_engine(http: &HttpSpec) -> anyhow::Result<fuselab_http::HttpEngine> {
    Ok(fuselab_http::HttpEngine::new(http_config(http)?)?)
}

/// The HTTP client's configuration for `http`.
fn http_config(http: &HttpSpec) -> anyhow::Result<fuselab_http::HttpEngineConfig> {
    let tokenizer = http
        .tokenizer
        .as_deref()
        .map(fuselab_http::TextTokenizer::from_file)
        .transpose()?
        .map(std::sync::Arc::new);
    let mut config =
        fuselab_http::HttpEngineConfig::new(&http.url, http.model.as_deref().unwrap_or_default());
    config.api_key = http.api_key.clone();
    config.endpoint = http.endpoint;
    config.prompt = http.prompt;
    config.tokenizer = tokenizer;
    config.vocab = http.vocab;
    config.retries = http.retries;
    config.preconnect = http.preconnect.unwrap_or(0);
    config.stream_usage = http.stream_usage;
    config.scrape_interval = http
        .scrape_interval_s
        .map(std::time::Duration::from_secs_f64);
    config.run_nonce = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    Ok(config)
}

/// The first model a server lists at `/v1/models`.
fn served_model(http: &HttpSpec) -> anyhow::Result<String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let models = rt
        .block_on(fuselab_http::HttpEngine::list_models(
            &http.url,
            http.api_key.as_deref(),
        ))
        .map_err(|e| {
            Error::invalid(
                "--engine",
                format!("cannot ask the server which model it serves: {e}"),
                "check that the server is up at that URL, or give --model NAME",
            )
        })?;
    match models.into_iter().next() {
        Some(m) => {
            warn_once(format!(
                "model {m}: the first one the server lists (pass --model to choose another)"
            ));
            Ok(m)
        }
        None => Err(Error::invalid(
            "--model",
            format!("{}/v1/models lists no model", http.url),
            "give the served model's name with --model NAME",
        )
        .into()),
    }
}

/// Fails a run whose served lengths differ from the requested ones on more
/// than the allowed fraction of requests (the folder is already written).
pub fn check_lengths(point: &Point, result: &PointResult, out: &Path) -> anyhow::Result<()> {
    let (Some(http), Some(check)) = (&point.engine.http, &result.metrics.lengths) else {
        return Ok(());
    };
    if check.mismatch_rate <= http.max_length_mismatch || http.allow_length_mismatch {
        if check.mismatch_rate > 0.0 {
            println!("{}", length_note(check));
        }
        return Ok(());
    }
    Err(Error::invalid(
        "run",
        format!(
            "{} (allowed: {:.1}%; per-request counts in {}/requests.parquet)",
            length_note(check),
            100.0 * http.max_length_mismatch,
            out.display()
        ),
        "make the server honour max_tokens/min_tokens/ignore_eos and the prompt (token ids, or --tokenizer with its tokenizer.json), or pass --allow-length-mismatch",
    )
    .into())
}

fn length_note(c: &fuselab_core::LengthCheck) -> String {
    format!(
        "length mismatch on {:.1}% of {} requests: {} prompt (server prompt_tokens − requested: {:+.1} on average), {} output",
        100.0 * c.mismatch_rate,
        c.checked,
        c.prompt_mismatches,
        c.prompt_diff_mean,
        c.output_mismatches
    )
}

/// Records the adapters a backend serves as knobs: `lora_adapters`,
/// `lora_rank`, and `meteora_top_k` in MeteoRA mode.
fn insert_lora_knobs(info: &mut EngineInfo, l: &LoraConfig) {
    info.knobs.insert("lora_adapters".into(), l.adapters.into());
    info.knobs.insert("lora_rank".into(), l.rank.into());
    if let LoraMode::Meteora { top_k } = l.mode {
        info.knobs.insert("meteora_top_k".into(), top_k.into());
    }
}

/// The scraped server metrics of an HTTP engine's run, when it scrapes.
pub type Scraped = Option<fuselab_http::prometheus::Scraped>;

/// A real-time engine for `engine` × `policy`, filling in `info`. With
/// `pace_sim`, the simulator runs in real time (each step sleeps out its
/// predicted duration), as `fuselab serve --engine sim` needs; otherwise
/// the simulator has no real-time engine.
pub fn realtime_engine(
    engine: &EngineSpec,
    policy: &PolicyConfig,
    weights_seed: u64,
    info: &mut EngineInfo,
    pace_sim: bool,
    lora: Option<LoraConfig>,
) -> anyhow::Result<(Box<dyn EngineHandle>, Scraped)> {
    let slowdown = engine.slowdown.unwrap_or(1.0);
    let handle: Box<dyn EngineHandle> = if engine.kind == EngineKind::Http {
        let http = engine
            .http
            .as_ref()
            .expect("an HTTP engine has HTTP settings");
        let engine = http_engine(http)?;
        info.policy = None;
        info.knobs.clear();
        info.knobs.insert("url".into(), http.url.clone().into());
        info.knobs.insert(
            "endpoint".into(),
            match http.endpoint {
                fuselab_http::Endpoint::Completions => "completions",
                fuselab_http::Endpoint::Chat => "chat",
            }
            .into(),
        );
        info.knobs
            .insert("prompt_format".into(), http.prompt.name().into());
        if let Some(t) = &http.tokenizer {
            info.knobs
                .insert("tokenizer".into(), t.display().to_string().into());
        }
        let scraped = engine.scraped();
        return Ok((Box::new(engine), http.scrape_interval_s.map(|_| scraped)));
    } else if engine.kind == EngineKind::Sim {
        if !pace_sim {
            anyhow::bail!("the simulator runs on a virtual clock here; it has no real-time engine");
        }
        let speculates = policy.speculates();
        let backend = SimBackend::new(&SimConfig {
            hardware: engine.hardware.clone(),
            model: engine.model.clone(),
            tp: engine.tp,
            calibration: engine.calibration.clone(),
            draft: speculates.then(|| {
                engine
                    .spec
                    .draft
                    .clone()
                    .unwrap_or_else(|| DEFAULT_SIM_DRAFT.into())
            }),
            ..SimConfig::default()
        })?;
        let acceptance = match engine.spec.alpha {
            Some(a) if speculates => Some(fuselab_engine::AcceptanceModel::new(a, weights_seed)?),
            _ => None,
        };
        let policy = policy.clone();
        info.hardware = Some(format!("{} (simulated, in real time)", engine.hardware));
        Box::new(NativeEngineHandle::new("sim", move || {
            Ok(NativeEngine::with_spec(
                fuselab_engine::RealTime::new(Slowdown::new(backend, slowdown)),
                policy,
                acceptance,
            )?)
        }))
    } else if engine.kind == EngineKind::Cuda {
        // Probe first: without a driver this is a clean error (exit 2), never a panic.
        fuselab_cuda::probe()?;
        let cfg = fuselab_engine::ModelShape::preset(&engine.model)?;
        let (policy, seed) = (policy.clone(), weights_seed);
        info.hardware = Some("cuda:0".into());
        info.knobs.insert("weights".into(), "random".into());
        info.knobs
            .insert("cuda_graphs".into(), engine.cuda_graphs.into());
        info.knobs
            .insert("skinny_gemm".into(), engine.cuda_skinny_gemm.into());
        info.knobs.insert("pdl".into(), engine.cuda_pdl.into());
        info.knobs
            .insert("gemm_tuning".into(), engine.cuda_gemm_tuning.into());
        if let Some(t) = engine.cuda_prefill_tile {
            info.knobs.insert("prefill_tile".into(), t.label().into());
        }
        let tuning = engine
            .tuning_table
            .as_deref()
            .map(|path| -> anyhow::Result<_> {
                let (table, lines) = cuda_tuning(path)?;
                info.knobs
                    .insert("tuning_table".into(), path.display().to_string().into());
                info.knobs
                    .insert("tuned_kernels".into(), lines.join("; ").into());
                Ok(table)
            })
            .transpose()?;
        let opts = fuselab_cuda::CudaOptions {
            tuning,
            profile: engine.cuda_profile.clone(),
            graphs: engine.cuda_graphs,
            skinny_gemm: engine.cuda_skinny_gemm,
            pdl: engine.cuda_pdl,
            gemm_tuning: engine.cuda_gemm_tuning,
            prefill_tile: engine.cuda_prefill_tile,
            ..fuselab_cuda::CudaOptions::default()
        };
        let draft = if policy.speculates() {
            let d = cuda_draft(engine, seed)?;
            info.knobs.insert("spec_draft".into(), d.1.clone().into());
            info.knobs.insert(
                "spec_acceptance".into(),
                if d.0.alpha.is_some() {
                    "modelled"
                } else {
                    "measured"
                }
                .into(),
            );
            if let Some(a) = d.0.alpha {
                info.knobs.insert("spec_alpha".into(), a.alpha.into());
            }
            Some(d.0)
        } else {
            None
        };
        if let Some(l) = &lora {
            insert_lora_knobs(info, l);
        }
        // The device is opened on the engine's own thread (CUDA contexts are per thread).
        Box::new(NativeEngineHandle::new("cuda", move || {
            let mut backend = fuselab_cuda::CudaBackend::random(cfg, seed, opts)?;
            if let Some(l) = lora {
                backend = backend.with_lora(l, seed)?;
            }
            if let Some(d) = draft {
                backend = backend.with_draft(d)?;
            }
            Ok(NativeEngine::new(Slowdown::new(backend, slowdown), policy)?)
        }))
    } else if engine.kind == EngineKind::Cpu {
        let mut backend =
            fuselab_cpu::CpuBackend::load(&engine.model, engine.weights.as_deref(), weights_seed)?;
        if let Some(l) = lora {
            backend = backend.with_lora(l, weights_seed)?;
            insert_lora_knobs(info, &l);
        }
        if let Some(path) = &engine.tuning_table {
            let (forward, applied) = tuned_forward(path, backend.options().forward)?;
            info.knobs
                .insert("tuning_table".into(), path.display().to_string().into());
            info.knobs
                .insert("tuned_kernels".into(), applied.join("; ").into());
            let opts = fuselab_cpu::CpuOptions {
                forward,
                ..*backend.options()
            };
            backend = backend.with_options(opts);
        }
        if let Some(t) = engine.spec.temperature {
            let sampling = Some(fuselab_engine::Sampler::new(t, weights_seed)?);
            let opts = fuselab_cpu::CpuOptions {
                sampling,
                ..*backend.options()
            };
            backend = backend.with_options(opts);
            info.knobs.insert("temperature".into(), t.into());
        }
        if policy.speculates() {
            let alpha = engine
                .spec
                .alpha
                .map(|a| fuselab_engine::AcceptanceModel::new(a, weights_seed))
                .transpose()?;
            backend = backend.with_draft(fuselab_cpu::DraftOptions {
                layers: engine.spec.draft_layers,
                noise: engine.spec.draft_noise.unwrap_or(DEFAULT_DRAFT_NOISE),
                seed: weights_seed,
                alpha,
            })?;
            use fuselab_engine::Backend as _;
            if let Some(d) = backend.draft_model() {
                info.knobs.insert("spec_draft".into(), d.name.into());
                info.knobs.insert(
                    "spec_acceptance".into(),
                    if d.modelled_alpha.is_some() {
                        "modelled"
                    } else {
                        "measured"
                    }
                    .into(),
                );
                if let Some(a) = d.modelled_alpha {
                    info.knobs.insert("spec_alpha".into(), a.into());
                }
            }
        }
        let policy = policy.clone();
        info.hardware = Some(fuselab_store::host_cpu());
        info.knobs.insert(
            "weights".into(),
            engine
                .weights
                .as_ref()
                .map_or_else(|| "random".into(), |p| p.display().to_string().into()),
        );
        Box::new(NativeEngineHandle::new("cpu", move || {
            Ok(NativeEngine::new(Slowdown::new(backend, slowdown), policy)?)
        }))
    } else {
        info.policy = None;
        info.model = None;
        info.knobs.clear();
        match engine.delay {
            Some(d) => {
                let f = slowdown;
                info.knobs
                    .insert("delay_first_s".into(), d.first_token_s.into());
                info.knobs
                    .insert("delay_per_token_s".into(), d.per_token_s.into());
                Box::new(
                    NullEngine::delayed(fuselab_harness::NullDelay {
                        first_token_s: d.first_token_s * f,
                        per_token_s: d.per_token_s * f,
                    })
                    .on_precise_clock(),
                )
            }
            None => Box::new(NullEngine::default()),
        }
    };
    Ok((handle, None))
}

/// The CUDA engine's draft from the speculative-decoding flags, and its
/// description for provenance (the same words the backend's `draft_model`
/// gives): `--draft MODEL` is a model of its own with random weights seeded by
/// `seed`, otherwise the draft is made from the target (`--draft-layers`,
/// `--draft-noise`, like the CPU engine's).
fn cuda_draft(
    engine: &EngineSpec,
    seed: u64,
) -> anyhow::Result<(fuselab_cuda::DraftOptions, String)> {
    let alpha = engine
        .spec
        .alpha
        .map(|a| fuselab_engine::AcceptanceModel::new(a, seed))
        .transpose()?;
    let (source, name) = match &engine.spec.draft {
        Some(model) => {
            let shape = ModelShape::preset(model)?;
            fuselab_cuda::validate_shape(&shape).map_err(|e| {
                Error::invalid(
                    "--draft",
                    format!("the CUDA engine cannot run {model}: {e}"),
                    "give a shape with heads of 128, e.g. --draft llama3.2-1b-h128 for llama3-8b",
                )
            })?;
            let name = format!("{model}, random weights (seed {seed})");
            (fuselab_cuda::DraftSource::Model { shape, seed }, name)
        }
        None => {
            let target = ModelShape::preset(&engine.model)?;
            let layers = engine.spec.draft_layers.unwrap_or(target.n_layers);
            if layers > target.n_layers {
                return Err(Error::invalid(
                    "--draft-layers",
                    format!(
                        "{layers} layers, but {} has {}",
                        target.name, target.n_layers
                    ),
                    format!("give 1 to {}", target.n_layers),
                )
                .into());
            }
            let noise = engine.spec.draft_noise.unwrap_or(DEFAULT_DRAFT_NOISE);
            let name = format!(
                "{}: first {layers} of {} layers, noise {noise} (seed {seed})",
                target.name, target.n_layers
            );
            (
                fuselab_cuda::DraftSource::Perturbed {
                    layers,
                    noise,
                    seed,
                },
                name,
            )
        }
    };
    Ok((fuselab_cuda::DraftOptions { source, alpha }, name))
}

/// The tuning table of `path` for the CUDA engine, and one line per entry
/// (device, driver, kernel, bucket, configuration); the engine applies the
/// entries of its GPU and driver.
///
/// # Errors
/// A usage error naming `--tuning-table`: an unreadable or malformed file,
/// or one without a CUDA kernel's entry.
pub fn cuda_tuning(
    path: &Path,
) -> anyhow::Result<(fuselab_kernels::tunable::TuningTable, Vec<String>)> {
    use fuselab_kernels::tunable::TuningTable;
    let bad = |problem: String| {
        Error::invalid(
            "--tuning-table",
            problem,
            "give the tuning.json a `fuselab tune --kernel … --device cuda` campaign wrote on this GPU",
        )
    };
    let table = TuningTable::load(path).map_err(|e| bad(e.to_string()))?;
    let lines: Vec<String> = table
        .entries
        .iter()
        .filter(|e| e.driver.is_some())
        .map(|e| {
            let config: Vec<String> = e.config.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(
                "{} {}{} on {} (driver {})",
                e.kernel,
                config.join(","),
                e.bucket.as_ref().map_or(String::new(), |b| format!(
                    " for {} {}..={}",
                    b.dim, b.min, b.max
                )),
                e.device,
                e.driver.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if lines.is_empty() {
        anyhow::bail!(bad(format!(
            "{} has no entry of a CUDA kernel (entries without a driver are the CPU's)",
            path.display()
        )));
    }
    Ok((table, lines))
}

/// The CPU engine's kernel choices with the entries of `path` for this
/// machine's CPU applied, and what was applied.
///
/// # Errors
/// A usage error naming `--tuning-table`: an unreadable or malformed file,
/// or one without an entry for this machine's CPU.
pub fn tuned_forward(
    path: &Path,
    mut forward: fuselab_cpu::ForwardOptions,
) -> anyhow::Result<(fuselab_cpu::ForwardOptions, Vec<String>)> {
    use fuselab_kernels::tunable::TuningTable;
    let bad = |problem: String| {
        Error::invalid(
            "--tuning-table",
            problem,
            "give the tuning.json a `fuselab tune --kernel … --device cpu` campaign wrote on this machine",
        )
    };
    let table = TuningTable::load(path).map_err(|e| bad(e.to_string()))?;
    let device = fuselab_store::host_cpu();
    let mut applied = Vec::new();
    if let Some(e) = table.lookup(&device, "decode_attention")
        && let Some(&splits) = e.config.get("splits")
    {
        forward.decode_splits =
            usize::try_from(splits).map_err(|_| bad(format!("splits = {splits}")))?;
        applied.push(format!("decode_attention splits={splits}"));
    }
    if let Some(e) = table.lookup(&device, "prefill_attention") {
        for (knob, slot) in [
            ("q_tile", &mut forward.flash.q_tile),
            ("kv_tile", &mut forward.flash.kv_tile),
        ] {
            if let Some(&v) = e.config.get(knob) {
                *slot = usize::try_from(v).map_err(|_| bad(format!("{knob} = {v}")))?;
            }
        }
        applied.push(format!(
            "prefill_attention q_tile={} kv_tile={}",
            forward.flash.q_tile, forward.flash.kv_tile
        ));
    }
    if applied.is_empty() {
        let devices: std::collections::BTreeSet<&str> =
            table.entries.iter().map(|e| e.device.as_str()).collect();
        return Err(bad(format!(
            "{} has no entry for this machine's CPU ({device}); it lists {}",
            path.display(),
            devices.into_iter().collect::<Vec<_>>().join(", ")
        ))
        .into());
    }
    Ok((forward, applied))
}

/// Builds the `summary.json` of a point.
pub fn summary(name: &str, point: &Point, result: &PointResult) -> RunSummary {
    RunSummary {
        schema_version: SCHEMA_VERSION,
        name: name.into(),
        provenance: Provenance {
            fuselab_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: fuselab_store::git_commit(),
            host_cpu: fuselab_store::host_cpu(),
            host_gpu: None,
            engine: result.info.clone(),
            workload: point.workload.clone(),
            workload_digest: fuselab_workloads::digest(&point.requests),
            seed: point.workload.seed,
            command: Some(command_line()),
            started_unix_s: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs()),
        },
        metrics: result.metrics.clone(),
    }
}

/// Writes a point's run folder.
pub fn write_point(
    dir: &Path,
    force: bool,
    name: &str,
    point: &Point,
    result: &PointResult,
) -> anyhow::Result<()> {
    fuselab_store::write_run(
        dir,
        force,
        &summary(name, point, result),
        &result.records,
        &result.steps,
    )
    .with_context(|| format!("writing the run folder {}", dir.display()))?;
    if !result.server_metrics.is_empty() {
        fuselab_store::RunFolder::open(dir)?.write_server_metrics(&result.server_metrics)?;
    }
    Ok(())
}

/// How many requests did not complete and the most common reason, e.g.
/// `12 of 64 requests failed (12 rejected): most common reason (12×): prompt
/// (9000) + output (200) = 9200 tokens exceed max_len 8192; …`. `None` when
/// every request completed.
pub fn failure_note(records: &[RequestRecord]) -> Option<String> {
    let failed: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.status != RequestStatus::Ok)
        .collect();
    if failed.is_empty() {
        return None;
    }
    let mut by_status: std::collections::BTreeMap<&str, usize> = Default::default();
    // Messages differ only in their numbers when they share a reason.
    let mut by_reason: std::collections::BTreeMap<String, (usize, &RequestRecord)> =
        Default::default();
    for r in &failed {
        *by_status.entry(r.status.as_str()).or_default() += 1;
        let shape: String = r
            .error
            .as_deref()
            .unwrap_or("no reason given")
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
        by_reason
            .entry(format!("{}: {shape}", r.status.as_str()))
            .or_insert((0, r))
            .0 += 1;
    }
    let statuses: Vec<String> = by_status.iter().map(|(s, n)| format!("{n} {s}")).collect();
    let (count, example) = by_reason
        .values()
        .max_by_key(|(n, _)| *n)
        .copied()
        .expect("failed is not empty");
    Some(format!(
        "{} of {} requests did not complete ({}); most common reason ({count}×): {}",
        failed.len(),
        records.len(),
        statuses.join(", "),
        example.error.as_deref().unwrap_or("no reason given")
    ))
}

/// Runs `point` `n` times back to back into `dir/rep-1` … `dir/rep-n` (`dir`
/// must have been made by `fuselab_store::create_folder`) and then writes `dir/repeat.json`, so the folder is one
/// configuration for the gate and the report. Returns each run's metrics.
pub fn run_repeats(dir: &Path, name: &str, point: &Point, n: u32) -> anyhow::Result<Vec<Metrics>> {
    let mut runs = Vec::new();
    let mut metrics = Vec::new();
    for k in 1..=n {
        eprintln!("[{k}/{n}] repeat {k} of {name}");
        let rel = format!("rep-{k}");
        let rep_dir = dir.join(&rel);
        let result = run_point(point)?;
        // `dir` was checked by `create_folder`, so its rep folders are ours to replace.
        write_point(&rep_dir, true, &format!("{name}/{rel}"), point, &result)?;
        if result.cancelled {
            return Err(cancelled_error(&result, &rep_dir));
        }
        runs.push(rel);
        metrics.push(result.metrics);
    }
    fuselab_store::write_repeat(
        dir,
        &fuselab_core::RepeatSummary {
            schema_version: SCHEMA_VERSION,
            name: name.into(),
            runs,
        },
    )
    .with_context(|| format!("writing {}", dir.display()))?;
    Ok(metrics)
}

/// The error returned after a cancelled point's measurements were written.
pub fn cancelled_error(result: &PointResult, dir: &Path) -> anyhow::Error {
    anyhow::anyhow!(
        "cancelled by Ctrl-C: the {} requests measured so far are in {}",
        result.records.len(),
        dir.display()
    )
}

/// The command line of this process, for provenance.
pub fn command_line() -> String {
    std::env::args().collect::<Vec<_>>().join(" ")
}

/// A terminal table comparing labelled metrics, one row each.
pub fn metrics_table(rows: &[(String, &Metrics)]) -> String {
    let header = [
        "policy",
        "load",
        "req/s",
        "out tok/s",
        "TTFT p50",
        "TTFT p99",
        "TPOT p50",
        "TPOT p99",
        "E2E p50",
        "goodput",
        "SLO att",
        "eff@4",
        "preempt",
        "pad %",
        "cache hit %",
    ];
    let mut cells: Vec<Vec<String>> = vec![header.iter().map(ToString::to_string).collect()];
    for (label, m) in rows {
        let (policy, load) = label.split_once('@').unwrap_or((label.as_str(), ""));
        let engine = m.engine.clone().unwrap_or_default();
        let computed = engine.prefill_tokens + engine.decode_tokens + engine.padding_tokens;
        let pad = if computed > 0 {
            100.0 * engine.padding_tokens as f64 / computed as f64
        } else {
            0.0
        };
        cells.push(vec![
            policy.to_string(),
            load.to_string(),
            format!("{:.3}", m.request_throughput),
            format!("{:.0}", m.output_token_throughput),
            secs(m.ttft_s.p50),
            secs(m.ttft_s.p99),
            secs(m.tpot_s.p50),
            secs(m.tpot_s.p99),
            secs(m.e2e_s.p50),
            format!("{:.3}", m.goodput),
            format!("{:.2}", m.slo_attainment),
            format!(
                "{:.3}",
                m.effective_throughput.get("4").copied().unwrap_or(0.0)
            ),
            engine.preemptions.to_string(),
            format!("{pad:.1}"),
            format!("{:.1}", 100.0 * engine.prefix_cache_hit_rate),
        ]);
    }
    render_table(&cells)
}

/// One line on a speculating run: acceptance (measured or modelled), mean
/// accepted length, block efficiency and the draft/verify time shares;
/// `None` when the run did not speculate.
pub fn spec_line(result: &PointResult) -> Option<String> {
    let s = result.metrics.engine.as_ref()?.spec.as_ref()?;
    let knobs = &result.info.knobs;
    let source = &s.source;
    Some(format!(
        "speculation: k={} · draft {} · acceptance {:.3} ({source}) · mean accepted {:.2} · block efficiency {:.2} tokens/forward · draft {:.0}% / verify {:.0}% of busy time",
        knobs
            .get("spec_k")
            .map_or_else(|| "?".into(), ToString::to_string),
        knobs
            .get("spec_draft")
            .and_then(|d| d.as_str())
            .unwrap_or("?"),
        s.acceptance_rate,
        s.mean_accepted_len,
        s.block_efficiency,
        100.0 * s.draft_time_share,
        100.0 * s.verify_time_share,
    ))
}

/// Where a speculating run's acceptance came from, from its knobs:
/// `measured`, or `modelled α=0.7`.
fn acceptance_source(knobs: &std::collections::BTreeMap<String, serde_json::Value>) -> String {
    match (
        knobs.get("spec_acceptance").and_then(|a| a.as_str()),
        knobs.get("spec_alpha"),
    ) {
        (Some(a), Some(alpha)) => format!("{a} α={alpha}"),
        (Some(a), None) => a.to_string(),
        (None, _) => String::new(),
    }
}

/// Formats seconds with a unit that keeps three significant digits readable.
pub fn secs(s: f64) -> String {
    if s == 0.0 {
        "0".into()
    } else if s < 1e-3 {
        format!("{:.0}µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1}ms", s * 1e3)
    } else {
        format!("{s:.2}s")
    }
}

/// Renders rows as an aligned plain-text table; the first row is the header.
pub fn render_table(cells: &[Vec<String>]) -> String {
    let cols = cells.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            cells
                .iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for (i, row) in cells.iter().enumerate() {
        let line: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c == 0 {
                    format!("{s:<w$}", w = widths[c])
                } else {
                    format!("{s:>w$}", w = widths[c])
                }
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
        if i == 0 {
            let total = widths.iter().sum::<usize>() + 2 * cols.saturating_sub(1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
    out
}

/// A server that a run starts for itself (`bench --server-cmd`, and each
/// trial of `tune --server-cmd`): the command, where it answers once ready,
/// and how long it may take.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerLaunch {
    /// Shell command that runs the server in the foreground.
    pub cmd: String,
    /// URL that answers 2xx once the server is ready.
    pub ready_url: String,
    /// How long the server may take to become ready.
    pub ready_timeout: std::time::Duration,
}

impl ServerLaunch {
    /// The launch of `cmd` for the server at `engine_url`: ready at
    /// `ready_url` or, by default, `ENGINE_URL/v1/models`; within `timeout`
    /// (default 120 s).
    ///
    /// # Errors
    /// A ready URL that is not `http://`.
    pub fn new(
        cmd: &str,
        engine_url: &str,
        ready_url: Option<&str>,
        timeout: Option<std::time::Duration>,
    ) -> anyhow::Result<Self> {
        let ready_url = ready_url.map_or_else(
            || {
                format!(
                    "{}/v1/models",
                    engine_url.trim_end_matches('/').trim_end_matches("/v1")
                )
            },
            str::to_owned,
        );
        if !ready_url.starts_with("http://") {
            return Err(Error::invalid(
                "--server-ready",
                format!("`{ready_url}` is not an http:// URL"),
                "e.g. --server-ready http://127.0.0.1:8000/health",
            )
            .into());
        }
        Ok(Self {
            cmd: cmd.to_owned(),
            ready_url,
            ready_timeout: timeout.unwrap_or(std::time::Duration::from_secs(120)),
        })
    }

    /// Starts the server (its output in `log`), waits until it is ready, runs
    /// `body`, and stops the server's process group (SIGTERM, then SIGKILL
    /// after 10 s). The outer error is the server's failure — it exited or
    /// ran out of memory before it was ready, was never ready, or died
    /// during `body` — classified as a tuner trial status; the inner result
    /// is `body`'s.
    pub fn run<T>(
        &self,
        log: &Path,
        body: impl FnOnce() -> anyhow::Result<T>,
    ) -> Result<anyhow::Result<T>, fuselab_tune::server::ServerFailure> {
        use fuselab_tune::server::ServerProcess;
        let grace = std::time::Duration::from_secs(10);
        let mut server = ServerProcess::start(&self.cmd, log)?;
        if let Err(f) = server.wait_ready(&self.ready_url, self.ready_timeout) {
            server.stop(grace);
            return Err(f);
        }
        let result = body();
        let died = server
            .exited()
            .map(|s| server.failure(s, "died during the benchmark"));
        server.stop(grace);
        match died {
            Some(f) => Err(f),
            None => Ok(result),
        }
    }
}
