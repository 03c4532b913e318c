//! `fuselab serve`: fuselab's engine behind an OpenAI-compatible HTTP API,
//! for the benchmark clients users already run (and for `fuselab bench
//! --engine http://…` itself).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;
use fuselab_core::{EngineInfo, Error};
use fuselab_engine::ModelShape;

use crate::Outcome;
use crate::cmd::bench::{EngineOpts, policy_config};
use crate::exec::{self, EngineKind};

/// Arguments of `fuselab serve`.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub engine: EngineOpts,

    /// Scheduling policy: static, continuous, chunked, splitfuse or prepack [default: splitfuse].
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,

    /// Set a policy knob, e.g. `--knob budget=768` (repeatable).
    #[arg(long = "knob", value_name = "NAME=VALUE")]
    pub knob: Vec<String>,

    /// Start from a published system's knobs (`sarathi`, `vllm-v1`), `--knob` still winning.
    #[arg(long, value_name = "SET")]
    pub knobs_from: Option<String>,

    /// Address to listen on; anything but loopback exposes the server to the network.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,

    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    pub port: u16,

    /// The model name clients send and `/v1/models` lists [default: fuselab-<model>].
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,

    /// Most requests in flight; more get HTTP 429.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    pub max_concurrency: usize,

    /// Largest request body accepted, bytes; larger ones get HTTP 413.
    #[arg(long, value_name = "BYTES", default_value_t = 32 << 20)]
    pub max_body_bytes: usize,

    /// `max_tokens` of requests that give none.
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub default_max_tokens: u32,

    /// Write the built-in tokenizer of the model as a Hugging Face
    /// `tokenizer.json` to FILE (for clients that need one), then serve.
    #[arg(long, value_name = "FILE")]
    pub write_tokenizer: Option<PathBuf>,
}

/// Runs `fuselab serve` until Ctrl-C or SIGTERM.
pub fn run(args: ServeArgs) -> anyhow::Result<Outcome> {
    let mut opts = args.engine.clone();
    let http = std::mem::take(&mut opts.http);
    let (api_key, tokenizer_file) = (http.api_key.clone(), http.tokenizer.clone());
    if let Some(flag) = [
        (http.endpoint.is_some(), "--endpoint"),
        (http.prompt_format.is_some(), "--prompt-format"),
        (http.vocab.is_some(), "--vocab"),
        (http.scrape_interval.is_some(), "--scrape-interval"),
        (http.retries.is_some(), "--retries"),
        (http.preconnect.is_some(), "--preconnect"),
        (http.no_stream_usage, "--no-stream-usage"),
        (http.max_length_mismatch.is_some(), "--max-length-mismatch"),
        (http.allow_length_mismatch, "--allow-length-mismatch"),
        (opts.timeout.is_some(), "--timeout"),
        (opts.warmup.is_some(), "--warmup"),
        (opts.window.is_some(), "--window"),
    ]
    .into_iter()
    .find_map(|(set, flag)| set.then_some(flag))
    {
        return Err(Error::invalid(
            flag,
            "does not apply to `fuselab serve`",
            "it is a client flag of `fuselab bench --engine http://…`; drop it",
        )
        .into());
    }
    let spec = opts.resolve()?;
    if spec.kind == EngineKind::Http {
        return Err(Error::invalid(
            "--engine",
            "serve runs one of fuselab's engines, not a remote server",
            "give --engine sim, cpu, cuda or null",
        )
        .into());
    }
    let policy_name = args.policy.clone().unwrap_or_else(|| "splitfuse".into());
    let knobs = exec::with_knob_set(args.knobs_from.as_deref(), &opts, &args.knob)?;
    let mut policy = policy_config(&policy_name, &knobs)?;
    let model_name = if spec.kind == EngineKind::Null {
        opts.model.clone().unwrap_or_else(|| "tiny".into())
    } else {
        spec.model.clone()
    };
    let shape = ModelShape::preset(&model_name)?;
    policy.default_max_len(shape.context_len);
    let vocab = u32::try_from(shape.vocab).unwrap_or(u32::MAX);
    let tokenizer = match &tokenizer_file {
        Some(path) => fuselab_http::TextTokenizer::from_file(path)?,
        None => fuselab_http::TextTokenizer::builtin(vocab),
    };
    if let Some(path) = &args.write_tokenizer {
        std::fs::write(path, fuselab_http::TextTokenizer::builtin_json(vocab))
            .with_context(|| format!("writing the tokenizer to {}", path.display()))?;
        eprintln!(
            "wrote the built-in tokenizer ({vocab} words t0 … t{}) to {}",
            vocab - 1,
            path.display()
        );
    }
    let mut info = EngineInfo {
        engine: spec.kind.name().into(),
        hardware: None,
        model: Some(model_name.clone()),
        policy: Some(policy_name.clone()),
        knobs: policy.knobs(),
    };
    let served = args
        .served_model_name
        .clone()
        .unwrap_or_else(|| format!("fuselab-{model_name}"));
    let label = match spec.kind {
        EngineKind::Null => match spec.delay {
            Some(d) => format!(
                "null engine (first token {} ms, then {} ms per token)",
                d.first_token_s * 1e3,
                d.per_token_s * 1e3
            ),
            None => "null engine (answers at once)".into(),
        },
        EngineKind::Sim => format!("sim {} {model_name} {policy_name}", spec.hardware),
        k => format!("{} {model_name} {policy_name}", k.name()),
    };
    let mut config = fuselab_serve::ServeConfig::new(&served, vocab, shape.context_len);
    config.tokenizer = Arc::new(tokenizer);
    config.api_key = api_key;
    config.max_concurrency = args.max_concurrency.max(1);
    config.max_body_bytes = args.max_body_bytes;
    config.default_max_tokens = args.default_max_tokens.max(1);
    config.engine_label = label.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        // Latency over throughput: look at I/O readiness and at tasks woken from
        // outside the runtime (the sender thread, the null engine's clock) every
        // 8 polls rather than tokio's default 61 (device run 6: TTFT p99 at ~1000
        // streams +0.84 to +1.11 ms, against +0.88 to +3.22 ms with the default).
        .event_interval(8)
        .global_queue_interval(8)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async move {
        let (engine, _) = exec::realtime_engine(&spec, &policy, 0, &mut info, true, None)?;
        let addr = format!("{}:{}", args.host, args.port);
        let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|e| {
            Error::invalid(
                "--port",
                format!("cannot listen on {addr}: {e}"),
                "pick a free port (or --port 0 for any)",
            )
        })?;
        let local = listener.local_addr().context("reading the bound address")?;
        let server = fuselab_serve::Server::start(engine, config)?;
        eprintln!(
            "fuselab serve: {label}, model `{served}`, tokenizer {}, at http://{local} (Ctrl-C stops)",
            tokenizer_file
                .as_ref()
                .map_or_else(|| "built-in words".to_string(), |p| p.display().to_string())
        );
        server.run(listener, shutdown_signal()).await?;
        eprintln!("fuselab serve: stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(Outcome::Success)
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(t) => t,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
