//! `fuselab serve`: an OpenAI-compatible HTTP server over any harness engine
//! (the in-process engine on the sim, CPU or CUDA backend, or the null
//! engine with fixed delays), so that the benchmark clients users already
//! run (vLLM's `bench serve`, AIPerf, GuideLLM, the `openai` SDK) can drive
//! fuselab's engine unchanged.
//!
//! Routes: `POST /v1/completions` and `POST /v1/chat/completions`
//! (streaming and not), `GET /v1/models`, `GET /health`, `GET /metrics`
//! (Prometheus text, vLLM metric names), `POST /tokenize`, `POST /detokenize`.
//! Every bad request gets a 4xx with an OpenAI-style error body naming the
//! field; request bodies are capped in size and requests in number.
//!
//! The engine computes over synthetic token ids (a request's prompt length
//! is what matters to it, not the prompt's content); the text a client
//! receives is the tokenizer's rendering of those ids (` t<id>` words with
//! the built-in tokenizer), one piece per generated token.

mod api;
mod error;
mod link;
mod stats;

use std::sync::Arc;

pub use error::ServeError;
use fuselab_harness::EngineHandle;
use fuselab_http::TextTokenizer;

/// How the server is set up.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The model name served (`/v1/models`; requests naming another get 404).
    pub model: String,
    /// Tokenizer for text prompts and output text.
    pub tokenizer: Arc<TextTokenizer>,
    /// Output token ids are drawn from `[0, vocab)`.
    pub vocab: u32,
    /// Longest prompt + output accepted.
    pub context_len: u32,
    /// Required Bearer token (`None`: no authentication).
    pub api_key: Option<String>,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
    /// Most requests in flight; more get 429.
    pub max_concurrency: usize,
    /// `max_tokens` when a request gives none.
    pub default_max_tokens: u32,
    /// What serves (shown in `/v1/models` as `owned_by` and in logs).
    pub engine_label: String,
}

impl ServeConfig {
    /// Defaults for `model` over the built-in tokenizer of `vocab` ids.
    pub fn new(model: &str, vocab: u32, context_len: u32) -> Self {
        Self {
            model: model.into(),
            tokenizer: Arc::new(TextTokenizer::builtin(vocab)),
            vocab,
            context_len,
            api_key: None,
            max_body_bytes: 32 << 20,
            max_concurrency: 4096,
            default_max_tokens: 16,
            engine_label: "fuselab".into(),
        }
    }
}

/// A started server's engine and routes.
pub struct Server {
    router: axum::Router,
    link: Arc<link::Link>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").finish_non_exhaustive()
    }
}

impl Server {
    /// Starts `engine` and builds the routes. Call inside a tokio runtime.
    ///
    /// # Errors
    /// [`ServeError::Engine`] when the engine cannot start.
    pub fn start(engine: Box<dyn EngineHandle>, config: ServeConfig) -> Result<Self, ServeError> {
        let link = link::Link::start(engine, config)?;
        Ok(Self {
            router: api::router(link.clone()),
            link,
        })
    }

    /// Serves on `listener` until `shutdown` completes, then stops the engine.
    ///
    /// # Errors
    /// [`ServeError::Io`] when serving fails.
    pub async fn run(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        use axum::serve::ListenerExt as _;
        // Small SSE writes must leave at once, not wait for the last one's ACK.
        let link = self.link.clone();
        let listener = listener.tap_io(move |tcp| {
            link.stats
                .connections
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::warn!("TCP_NODELAY: {e}");
            }
        });
        let result = axum::serve(listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await;
        self.link.shutdown();
        result.map_err(ServeError::Io)
    }
}
