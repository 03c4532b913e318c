//! The HTTP engine: drives an OpenAI-compatible server with streaming
//! requests and turns what it receives into harness events.
//!
//! Each request is a task on the harness's runtime. It sends the prompt as
//! token ids or as text of the exact length, asks for exactly `output_len`
//! tokens (`max_tokens`, `min_tokens`, `ignore_eos`), reads the SSE stream
//! and reports one [`TokenEvent`] per received chunk, stamped on arrival.
//! A chunk's token count comes from the server's cumulative `usage` when it
//! sends one per chunk (`stream_options.continuous_usage_stats`), else from
//! the tokenizer, else one per chunk. After `[DONE]` it reports the server's
//! final `usage` and `x-request-id` ([`EngineEvent::Server`]) and finishes.
//! An HTTP error, a stream cut before `[DONE]` or an error chunk fails that
//! request only; a cancel (timeout) aborts its task and closes its connection.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fuselab_core::{RequestId, RequestSpec, RequestStatus, ServerSide, TokenEvent};
use fuselab_harness::{
    EngineChannels, EngineCommand, EngineEvent, EngineHandle, EventSink, HarnessError, RunClock,
};
use tokio::sync::mpsc;

use crate::prometheus::Scraped;
use crate::protocol::{ResponseChunk, error_message};
use crate::{HttpError, SseParser, TextTokenizer};

/// Which API a run uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// `/v1/completions`: prompts as token ids or text, counted exactly.
    Completions,
    /// `/v1/chat/completions`: one user message; the server's chat template
    /// adds prompt tokens, so prompt lengths are not checked exactly.
    Chat,
}

impl Endpoint {
    fn path(self) -> &'static str {
        match self {
            Self::Completions => "/v1/completions",
            Self::Chat => "/v1/chat/completions",
        }
    }
}

/// How prompts are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PromptFormat {
    /// A list of token ids (exact by construction; completions only).
    TokenIds,
    /// Text built with the tokenizer to have exactly the requested count,
    /// verified afterwards against the server's `usage.prompt_tokens`.
    Text,
}

impl PromptFormat {
    /// The name recorded in a run's knobs.
    pub fn name(self) -> &'static str {
        match self {
            Self::TokenIds => "token-ids",
            Self::Text => "tokenizer-text",
        }
    }
}

/// Everything the HTTP engine needs.
#[derive(Clone, Debug)]
pub struct HttpEngineConfig {
    /// `http://HOST:PORT` (a trailing `/v1` or `/` is dropped).
    pub base_url: String,
    /// The model name sent in every request.
    pub model: String,
    /// Bearer token.
    pub api_key: Option<String>,
    /// Completions or chat.
    pub endpoint: Endpoint,
    /// Token ids or text.
    pub prompt: PromptFormat,
    /// Tokenizer for text prompts and for counting chunks without usage.
    pub tokenizer: Option<Arc<TextTokenizer>>,
    /// Ids of token-id prompts are drawn from `[0, vocab)`.
    pub vocab: u32,
    /// Retries of a request whose connection failed before any answer (0: none).
    pub retries: u32,
    /// Distinguishes this run's `x-request-id`s from other runs' (see [`request_uuid`]).
    pub run_nonce: u64,
    /// Send `stream_options` (usage in the stream). Some servers reject it.
    pub stream_usage: bool,
    /// Scrape `/metrics` at this interval during the run (`None`: never).
    pub scrape_interval: Option<Duration>,
    /// TCP connect timeout.
    pub connect_timeout: Duration,
    /// Connections to open (and keep in the pool) before the run's clock
    /// starts, so that the first requests do not pay for TCP set-up.
    pub preconnect: usize,
}

impl HttpEngineConfig {
    /// A config for `base_url` with defaults: completions, token-id prompts,
    /// no key, usage in the stream, no retries, no scraping.
    pub fn new(base_url: &str, model: &str) -> Self {
        Self {
            base_url: normalise_base(base_url),
            model: model.into(),
            api_key: None,
            endpoint: Endpoint::Completions,
            prompt: PromptFormat::TokenIds,
            tokenizer: None,
            vocab: 32_000,
            retries: 0,
            run_nonce: 0,
            stream_usage: true,
            scrape_interval: None,
            connect_timeout: Duration::from_secs(10),
            preconnect: 0,
        }
    }
}

fn normalise_base(url: &str) -> String {
    let url = url.trim_end_matches('/');
    url.strip_suffix("/v1").unwrap_or(url).to_owned()
}

/// The engine; see the module docs.
#[derive(Debug)]
pub struct HttpEngine {
    config: Arc<HttpEngineConfig>,
    scraped: Scraped,
    client: Option<reqwest::Client>,
}

impl HttpEngine {
    /// An engine for `config`.
    ///
    /// # Errors
    /// [`HttpError::Config`] when text prompts are asked for without a
    /// tokenizer, or token ids on the chat endpoint.
    pub fn new(config: HttpEngineConfig) -> Result<Self, HttpError> {
        if config.prompt == PromptFormat::Text && config.tokenizer.is_none() {
            return Err(HttpError::Config {
                field: "--tokenizer",
                problem:
                    "text prompts need the server's tokenizer; give --tokenizer tokenizer.json"
                        .into(),
            });
        }
        if config.prompt == PromptFormat::TokenIds && config.endpoint == Endpoint::Chat {
            return Err(HttpError::Config {
                field: "--prompt-format",
                problem: "chat messages are text; use --prompt-format text with --tokenizer".into(),
            });
        }
        Ok(Self {
            config: Arc::new(config),
            scraped: Scraped::default(),
            client: None,
        })
    }

    /// The server metrics this engine scrapes during its run.
    pub fn scraped(&self) -> Scraped {
        self.scraped.clone()
    }

    /// The model names a server lists at `GET /v1/models`.
    ///
    /// # Errors
    /// [`HttpError::Server`] when it cannot be asked or answers oddly.
    pub async fn list_models(
        base_url: &str,
        api_key: Option<&str>,
    ) -> Result<Vec<String>, HttpError> {
        let url = format!("{}/v1/models", normalise_base(base_url));
        let err = |message: String| HttpError::Server {
            url: url.clone(),
            message,
        };
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| err(e.to_string()))?;
        let mut req = client.get(&url);
        if let Some(k) = api_key {
            req = req.bearer_auth(k);
        }
        let resp = req.send().await.map_err(|e| err(describe(&e)))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| err(e.to_string()))?;
        if !status.is_success() {
            return Err(err(format!("HTTP {status}: {}", error_message(&body))));
        }
        let v: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| err(format!("not JSON: {e}")))?;
        Ok(v.get("data")
            .and_then(|d| d.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default())
    }
}

/// Asks the server to count the text prompts of completed requests whose
/// stream carried no `usage` (llama.cpp's server never streams it), so that
/// their lengths are still checked: `POST /tokenize` (vLLM, SGLang, `fuselab
/// serve`), else `POST /extras/tokenize` (llama-cpp-python). Fills in
/// `prompt_tokens` and returns how many prompts were counted; 0 when the
/// server has neither endpoint.
///
/// # Errors
/// [`HttpError::Server`] when the client cannot be built.
pub async fn verify_prompt_lengths(
    config: &HttpEngineConfig,
    specs: &[RequestSpec],
    records: &mut [fuselab_core::RequestRecord],
) -> Result<usize, HttpError> {
    if config.prompt != PromptFormat::Text || config.endpoint != Endpoint::Completions {
        return Ok(0);
    }
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| HttpError::Server {
            url: config.base_url.clone(),
            message: e.to_string(),
        })?;
    let by_id: HashMap<RequestId, &RequestSpec> = specs.iter().map(|s| (s.id, s)).collect();
    let routes = [("/tokenize", "prompt"), ("/extras/tokenize", "input")];
    let mut route: Option<usize> = None;
    let mut counted = 0;
    for rec in records.iter_mut() {
        let Some(server) = rec.server.as_mut() else {
            continue;
        };
        if rec.status != RequestStatus::Ok || server.prompt_tokens.is_some() {
            continue;
        }
        let Some(text) = by_id.get(&rec.id).and_then(|s| prompt_text(config, s)) else {
            continue;
        };
        let candidates: Vec<usize> = match route {
            Some(r) => vec![r],
            None => vec![0, 1],
        };
        for r in candidates {
            let (path, field) = routes[r];
            let mut req = client
                .post(format!("{}{path}", config.base_url))
                .json_body(&serde_json::json!({ "model": config.model, field: text }));
            if let Some(k) = &config.api_key {
                req = req.bearer_auth(k);
            }
            let Ok(resp) = req.send().await else { continue };
            if !resp.status().is_success() {
                continue;
            }
            let Ok(v) = resp
                .text()
                .await
                .map(|t| serde_json::from_str::<serde_json::Value>(&t))
            else {
                continue;
            };
            let Ok(v) = v else { continue };
            let n = v
                .get("count")
                .and_then(serde_json::Value::as_u64)
                .or_else(|| {
                    v.get("tokens")
                        .and_then(|t| t.as_array())
                        .map(|a| a.len() as u64)
                });
            if let Some(n) = n {
                server.prompt_tokens = u32::try_from(n).ok();
                route = Some(r);
                counted += 1;
                break;
            }
        }
        if route.is_none() {
            return Ok(0);
        }
    }
    Ok(counted)
}

/// A JSON body without reqwest's `json` feature.
trait JsonBody {
    fn json_body(self, v: &serde_json::Value) -> Self;
}

impl JsonBody for reqwest::RequestBuilder {
    fn json_body(self, v: &serde_json::Value) -> Self {
        self.header("content-type", "application/json")
            .body(serde_json::to_vec(v).unwrap_or_default())
    }
}

/// The `x-request-id` of request `id` in the run with `nonce`: a UUID (version
/// 4 layout, as servers that validate the header require, llama-cpp-python
/// among them) whose first 64 bits come from the nonce and whose last 12 hex
/// digits are the request id, so client and server records join.
///
/// ```
/// assert_eq!(fuselab_http::request_uuid(0x1234_5678_9abc_def0, 42), "12345678-9abc-4ef0-8000-00000000002a");
/// ```
pub fn request_uuid(nonce: u64, id: u64) -> String {
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        nonce >> 32,
        (nonce >> 16) & 0xffff,
        nonce & 0x0fff,
        0x8000 | ((id >> 48) & 0x3fff),
        id & 0xffff_ffff_ffff
    )
}

/// A reqwest error with its causes (reqwest's own message is terse).
fn describe(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

fn start_error(message: String) -> HarnessError {
    HarnessError::EngineStart {
        engine: "http".into(),
        message,
    }
}

impl HttpEngine {
    fn client(&mut self) -> Result<reqwest::Client, HarnessError> {
        if let Some(c) = &self.client {
            return Ok(c.clone());
        }
        let client = reqwest::Client::builder()
            .connect_timeout(self.config.connect_timeout)
            .pool_max_idle_per_host(usize::MAX)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .http1_only()
            .build()
            .map_err(|e| start_error(format!("HTTP client: {e}")))?;
        self.client = Some(client.clone());
        Ok(client)
    }
}

impl EngineHandle for HttpEngine {
    fn name(&self) -> &str {
        "http"
    }

    /// Opens `preconnect` connections at once (`GET /v1/models` on each,
    /// all in flight together) so the pool holds them when the run starts.
    fn prepare(&mut self) -> fuselab_harness::Prepare<'_> {
        Box::pin(async move {
            let client = self.client()?;
            let n = self.config.preconnect;
            if n == 0 {
                return Ok(());
            }
            let url = format!("{}/v1/models", self.config.base_url);
            let mut calls = tokio::task::JoinSet::new();
            for _ in 0..n {
                let mut req = client.get(&url);
                if let Some(k) = &self.config.api_key {
                    req = req.bearer_auth(k);
                }
                calls.spawn(async move {
                    let resp = req.send().await?;
                    resp.bytes().await
                });
            }
            let mut failed = None;
            while let Some(r) = calls.join_next().await {
                if let Ok(Err(e)) = r {
                    failed.get_or_insert(describe(&e));
                }
            }
            match failed {
                Some(e) => Err(start_error(format!(
                    "opening {n} connections to {url}: {e}"
                ))),
                None => Ok(()),
            }
        })
    }

    fn start(
        mut self: Box<Self>,
        clock: RunClock,
        events: EventSink,
    ) -> Result<EngineChannels, HarnessError> {
        let client = self.client()?;
        let (tx, mut rx) = mpsc::unbounded_channel();
        let config = self.config.clone();
        let stop_scrape = config.scrape_interval.map(|interval| {
            let (stop, stopped) = tokio::sync::oneshot::channel();
            tokio::spawn(crate::prometheus::scrape(
                client.clone(),
                format!("{}/metrics", config.base_url),
                interval,
                clock,
                self.scraped.clone(),
                stopped,
            ));
            stop
        });
        tokio::spawn(async move {
            let mut tasks: HashMap<RequestId, tokio::task::AbortHandle> = HashMap::new();
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    EngineCommand::Submit { spec, .. } => {
                        tasks.retain(|_, t| !t.is_finished());
                        let id = spec.id;
                        let task = tokio::spawn(serve_one(
                            client.clone(),
                            config.clone(),
                            spec,
                            clock,
                            events.clone(),
                        ));
                        tasks.insert(id, task.abort_handle());
                    }
                    EngineCommand::Cancel { id, .. } => {
                        if let Some(t) = tasks.remove(&id) {
                            t.abort();
                        }
                    }
                    EngineCommand::Shutdown => break,
                }
            }
            for t in tasks.values() {
                t.abort();
            }
            drop(stop_scrape);
        });
        Ok(EngineChannels {
            commands: tx,
            thread: None,
        })
    }
}

/// The prompt's token ids: `[0, vocab)`, within the tokenizer's vocabulary.
fn prompt_ids(config: &HttpEngineConfig, spec: &RequestSpec) -> Vec<u32> {
    let vocab = config
        .tokenizer
        .as_ref()
        .map_or(config.vocab, |t| t.vocab_size().min(config.vocab.max(1)));
    spec.prompt_tokens(vocab.max(1))
}

/// The prompt text of `spec` (text prompts), as sent.
pub(crate) fn prompt_text(config: &HttpEngineConfig, spec: &RequestSpec) -> Option<String> {
    let tok = config.tokenizer.as_ref()?;
    Some(tok.text_with_tokens(&prompt_ids(config, spec)).0)
}

/// The request body for `spec`, and whether its prompt length is exact.
fn body(config: &HttpEngineConfig, spec: &RequestSpec) -> (serde_json::Value, bool) {
    use serde_json::json;
    let n = spec.output_len;
    let ids = prompt_ids(config, spec);
    let text = |ids: &[u32]| {
        config
            .tokenizer
            .as_ref()
            .map(|t| t.text_with_tokens(ids).0)
            .unwrap_or_default()
    };
    let mut b = match config.endpoint {
        Endpoint::Completions => {
            let prompt = match config.prompt {
                PromptFormat::TokenIds => json!(ids),
                PromptFormat::Text => json!(text(&ids)),
            };
            json!({ "model": config.model, "prompt": prompt, "max_tokens": n })
        }
        Endpoint::Chat => json!({
            "model": config.model,
            "messages": [{ "role": "user", "content": text(&ids) }],
            "max_tokens": n,
            "max_completion_tokens": n,
        }),
    };
    let obj = b.as_object_mut().expect("a JSON object");
    obj.insert("stream".into(), json!(true));
    obj.insert("min_tokens".into(), json!(n));
    obj.insert("ignore_eos".into(), json!(true));
    obj.insert("temperature".into(), json!(0.0));
    if config.stream_usage {
        obj.insert(
            "stream_options".into(),
            json!({ "include_usage": true, "continuous_usage_stats": true }),
        );
    }
    (b, config.endpoint == Endpoint::Completions)
}

/// Serves one request to its end and reports it.
async fn serve_one(
    client: reqwest::Client,
    config: Arc<HttpEngineConfig>,
    spec: RequestSpec,
    clock: RunClock,
    events: EventSink,
) {
    let request_id = request_uuid(config.run_nonce, spec.id);
    let (body, prompt_exact) = body(&config, &spec);
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let url = format!("{}{}", config.base_url, config.endpoint.path());
    let mut server = ServerSide {
        request_id: request_id.clone(),
        prompt_exact,
        ..ServerSide::default()
    };
    let call = Call {
        client: &client,
        config: &config,
        url: &url,
        body,
        request_id: &request_id,
        spec: &spec,
        clock,
        events: &events,
    };
    let outcome = call.stream(&mut server).await;
    let t = clock.now_s();
    events.send(EngineEvent::Server {
        id: spec.id,
        info: server,
    });
    let (status, error) = match outcome {
        Ok(()) => (RequestStatus::Ok, None),
        Err(e) => (RequestStatus::Failed, Some(e)),
    };
    events.send(EngineEvent::Finished {
        id: spec.id,
        status,
        error,
        t,
    });
}

/// One request on the wire.
struct Call<'a> {
    client: &'a reqwest::Client,
    config: &'a HttpEngineConfig,
    url: &'a str,
    body: Vec<u8>,
    request_id: &'a str,
    spec: &'a RequestSpec,
    clock: RunClock,
    events: &'a EventSink,
}

impl Call<'_> {
    /// Sends the request and reads its stream to `[DONE]`, reporting chunks as
    /// they arrive and the server's counts into `server`.
    async fn stream(self, server: &mut ServerSide) -> Result<(), String> {
        let Call {
            client,
            config,
            url,
            body,
            request_id,
            spec,
            clock,
            events,
        } = self;
        let mut attempt = 0;
        let mut resp = loop {
            let mut req = client
                .post(url)
                .header("content-type", "application/json")
                .header("accept", "text/event-stream")
                .header("x-request-id", request_id)
                .body(body.clone());
            if let Some(k) = &config.api_key {
                req = req.bearer_auth(k);
            }
            match req.send().await {
                Ok(r) => break r,
                Err(e) if attempt < config.retries && (e.is_connect() || e.is_request()) => {
                    attempt += 1;
                    tracing::debug!(request = spec.id, attempt, "retrying after: {e}");
                }
                Err(e) => return Err(format!("sending: {}", describe(&e))),
            }
        };
        let status = resp.status();
        if !status.is_success() {
            let text = resp.text().await.unwrap_or_default();
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                error_message(&text)
            ));
        }
        let mut parser = SseParser::default();
        let mut index = 0u32;
        let mut done = false;
        loop {
            let bytes = match resp.chunk().await {
                Ok(Some(b)) => b,
                Ok(None) => break,
                Err(e) => {
                    return Err(format!(
                        "stream broke after {index} of {} tokens: {}",
                        spec.output_len,
                        describe(&e)
                    ));
                }
            };
            let t = clock.now_s();
            for data in parser.push(&bytes) {
                if data.trim() == "[DONE]" {
                    done = true;
                    continue;
                }
                let chunk: ResponseChunk = serde_json::from_str(&data)
                    .map_err(|e| format!("unreadable stream chunk ({e}): {}", clip(&data)))?;
                if let Some(err) = &chunk.error {
                    return Err(format!(
                        "server error in stream: {}",
                        error_message(&format!("{{\"error\":{err}}}"))
                    ));
                }
                let text = chunk.text();
                let n = match chunk.usage {
                    Some(u) => {
                        server.prompt_tokens = Some(u.prompt_tokens);
                        server.completion_tokens = Some(u.completion_tokens);
                        if let Some(c) = u.prompt_tokens_details.and_then(|d| d.cached_tokens) {
                            server.cached_tokens = Some(c);
                        }
                        // Cumulative usage: whatever it counts beyond the tokens seen so far.
                        if chunk.choices.is_empty() {
                            0
                        } else {
                            u.completion_tokens.saturating_sub(index)
                        }
                    }
                    None if text.is_empty() => 0,
                    None => match &config.tokenizer {
                        Some(tok) => u32::try_from(tok.count(&text)).unwrap_or(u32::MAX).max(1),
                        None => 1,
                    },
                };
                if n > 0 {
                    events.send(EngineEvent::Tokens(TokenEvent {
                        request: spec.id,
                        index,
                        t,
                        n_tokens: n,
                    }));
                    index += n;
                }
            }
        }
        if !done {
            return Err(format!(
                "stream closed before [DONE] after {index} of {} tokens",
                spec.output_len
            ));
        }
        Ok(())
    }
}

fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}
