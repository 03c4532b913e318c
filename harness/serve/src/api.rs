//! The HTTP routes and their handlers.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use fuselab_core::RequestStatus;
use fuselab_http::protocol::{
    ChatRequest, CompletionRequest, Content, Prompt, StreamOptions, Usage,
};
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::sync::OwnedSemaphorePermit;

use crate::error::ApiError;
use crate::link::{Link, Progress};

type Shared = State<Arc<Link>>;

pub(crate) fn router(link: Arc<Link>) -> Router {
    Router::new()
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .route("/tokenize", post(tokenize))
        .route("/detokenize", post(detokenize))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(link)
}

async fn not_found() -> ApiError {
    ApiError::invalid(
        None,
        "no such route; this server serves /v1/completions, /v1/chat/completions, /v1/models, /health, /metrics, /tokenize and /detokenize",
    )
    .with(StatusCode::NOT_FOUND, "invalid_request_error", "not_found")
}

async fn method_not_allowed() -> ApiError {
    ApiError::invalid(None, "method not allowed on this route (POST for completions, chat, tokenize and detokenize; GET for models, health and metrics)")
        .with(StatusCode::METHOD_NOT_ALLOWED, "invalid_request_error", "method_not_allowed")
}

fn authorise(link: &Link, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(key) = &link.config.api_key else {
        return Ok(());
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match given {
        Some(g) if g.trim() == key => Ok(()),
        Some(_) => Err(ApiError::invalid(None, "incorrect API key").with(
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "invalid_api_key",
        )),
        None => Err(ApiError::invalid(
            None,
            "missing API key: send the header `Authorization: Bearer <key>` (the key given to `fuselab serve --api-key`)",
        )
        .with(StatusCode::UNAUTHORIZED, "authentication_error", "missing_api_key")),
    }
}

/// Reads and parses a JSON body within the size limit.
async fn json_body<T: DeserializeOwned>(link: &Link, body: Body) -> Result<T, ApiError> {
    let limit = link.config.max_body_bytes;
    let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::invalid(
            None,
            format!("request body is larger than the server's limit of {limit} bytes (`fuselab serve --max-body-bytes`)"),
        )
        .with(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request_error", "body_too_large")
    })?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::invalid(None, format!("invalid JSON body: {e}")))
}

fn check_model(link: &Link, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        Some(m) if m != link.config.model => Err(ApiError::invalid(
            Some("model"),
            format!(
                "the model `{m}` does not exist; this server serves `{}` (GET /v1/models)",
                link.config.model
            ),
        )
        .with(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            "model_not_found",
        )),
        _ => Ok(()),
    }
}

/// A validated generation request.
struct Job {
    prompt_len: u32,
    max_tokens: u32,
    stream: bool,
    options: StreamOptions,
    chat: bool,
}

fn token_count(
    link: &Link,
    max_tokens: Option<i64>,
    min_tokens: Option<i64>,
    n: Option<i64>,
    param: &'static str,
) -> Result<u32, ApiError> {
    if let Some(n) = n
        && n != 1
    {
        return Err(ApiError::invalid(
            Some("n"),
            format!(
                "n = {n}: this server returns one choice per request; send n = 1 or leave it out"
            ),
        ));
    }
    let max = match max_tokens {
        None => i64::from(link.config.default_max_tokens),
        Some(m) if m < 1 => {
            return Err(ApiError::invalid(
                Some(param),
                format!("{param} = {m}: it must be at least 1"),
            ));
        }
        Some(m) => m,
    };
    if let Some(min) = min_tokens
        && (min < 0 || min > max)
    {
        return Err(ApiError::invalid(
            Some("min_tokens"),
            format!("min_tokens = {min}: it must be between 0 and {param} ({max})"),
        ));
    }
    u32::try_from(max)
        .map_err(|_| ApiError::invalid(Some(param), format!("{param} = {max} is too large")))
}

fn check_context(link: &Link, prompt_len: u32, max_tokens: u32) -> Result<(), ApiError> {
    if prompt_len == 0 {
        return Err(ApiError::invalid(
            Some("prompt"),
            "the prompt is empty; send at least one token",
        ));
    }
    let ctx = link.config.context_len;
    if u64::from(prompt_len) + u64::from(max_tokens) > u64::from(ctx) {
        return Err(ApiError::invalid(
            Some("max_tokens"),
            format!(
                "this model's maximum context length is {ctx} tokens, but {prompt_len} prompt tokens and {max_tokens} output tokens were asked for; shorten the prompt or lower max_tokens"
            ),
        ));
    }
    Ok(())
}

fn prompt_ids(link: &Link, prompt: Prompt) -> Result<u32, ApiError> {
    let tok = &link.config.tokenizer;
    let vocab = link.config.vocab;
    let text_len = |s: &str| -> Result<u32, ApiError> {
        let ids = tok
            .encode(s)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
    };
    let ids_len = |ids: &[i64]| -> Result<u32, ApiError> {
        if let Some(bad) = ids.iter().find(|&&i| i < 0 || i >= i64::from(vocab)) {
            return Err(ApiError::invalid(
                Some("prompt"),
                format!("token id {bad} is out of range: ids must be in [0, {vocab})"),
            ));
        }
        Ok(u32::try_from(ids.len()).unwrap_or(u32::MAX))
    };
    let one = |n: usize| -> Result<(), ApiError> {
        if n == 1 {
            Ok(())
        } else {
            Err(ApiError::invalid(
                Some("prompt"),
                format!("{n} prompts in one request: send one prompt per request"),
            ))
        }
    };
    match prompt {
        Prompt::Text(s) => text_len(&s),
        Prompt::Tokens(ids) => ids_len(&ids),
        Prompt::Texts(v) => {
            one(v.len())?;
            text_len(&v[0])
        }
        Prompt::TokenBatch(v) => {
            one(v.len())?;
            ids_len(&v[0])
        }
    }
}

async fn completions(State(link): Shared, headers: HeaderMap, body: Body) -> Response {
    let job = async {
        authorise(&link, &headers)?;
        let req: CompletionRequest = json_body(&link, body).await?;
        check_model(&link, req.model.as_deref())?;
        let max_tokens = token_count(&link, req.max_tokens, req.min_tokens, req.n, "max_tokens")?;
        let prompt_len = prompt_ids(&link, req.prompt)?;
        check_context(&link, prompt_len, max_tokens)?;
        Ok::<_, ApiError>(Job {
            prompt_len,
            max_tokens,
            stream: req.stream.unwrap_or(false),
            options: req.stream_options.unwrap_or_default(),
            chat: false,
        })
    }
    .await;
    generate(link, headers, job).await
}

async fn chat(State(link): Shared, headers: HeaderMap, body: Body) -> Response {
    let job = async {
        authorise(&link, &headers)?;
        let req: ChatRequest = json_body(&link, body).await?;
        check_model(&link, req.model.as_deref())?;
        let (max, param) = match req.max_completion_tokens {
            Some(m) => (Some(m), "max_completion_tokens"),
            None => (req.max_tokens, "max_tokens"),
        };
        let max_tokens = token_count(&link, max, req.min_tokens, req.n, param)?;
        if req.messages.is_empty() {
            return Err(ApiError::invalid(Some("messages"), "messages is empty; send at least one message"));
        }
        let mut text = String::new();
        for (i, m) in req.messages.iter().enumerate() {
            match &m.content {
                None => {}
                Some(Content::Text(t)) => {
                    text.push(' ');
                    text.push_str(t);
                }
                Some(Content::Parts(parts)) => {
                    for p in parts {
                        if p.kind != "text" {
                            return Err(ApiError::invalid(
                                Some("messages"),
                                format!("message {i}: content part of type `{}` is not supported; send text parts", p.kind),
                            ));
                        }
                        text.push(' ');
                        text.push_str(p.text.as_deref().unwrap_or(""));
                    }
                }
            }
        }
        let prompt_len = prompt_ids(&link, Prompt::Text(text))?;
        check_context(&link, prompt_len, max_tokens)?;
        Ok(Job {
            prompt_len,
            max_tokens,
            stream: req.stream.unwrap_or(false),
            options: req.stream_options.unwrap_or_default(),
            chat: true,
        })
    }
    .await;
    generate(link, headers, job).await
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs a validated job and answers it, streamed or whole.
async fn generate(link: Arc<Link>, headers: HeaderMap, job: Result<Job, ApiError>) -> Response {
    let job = match job {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    let Ok(permit) = link.permits.clone().try_acquire_owned() else {
        return ApiError::invalid(
            None,
            format!(
                "too many requests in flight (limit {}); retry later or raise `fuselab serve --max-concurrency`",
                link.config.max_concurrency
            ),
        )
        .with(StatusCode::TOO_MANY_REQUESTS, "rate_limit_error", "too_many_requests")
        .into_response();
    };
    let request_id = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    link.stats.in_flight.fetch_add(1, Ordering::Relaxed);
    let (spec, progress) = link.submit(job.prompt_len, job.max_tokens);
    let id_text = format!("{}-{}", if job.chat { "chatcmpl" } else { "cmpl" }, spec.id);
    let answer = Answer {
        link: link.clone(),
        spec,
        progress,
        job,
        id: id_text,
        created: unix_now(),
        _permit: permit,
    };
    let mut resp = if answer.job.stream {
        answer.stream()
    } else {
        answer.whole().await
    };
    if let Some(rid) = request_id
        && let Ok(v) = rid.parse()
    {
        resp.headers_mut().insert("x-request-id", v);
    }
    resp
}

/// One request being answered.
struct Answer {
    link: Arc<Link>,
    spec: fuselab_core::RequestSpec,
    progress: tokio::sync::mpsc::UnboundedReceiver<Progress>,
    job: Job,
    id: String,
    created: u64,
    _permit: OwnedSemaphorePermit,
}

impl Answer {
    /// The text of output tokens `from..from + n`.
    fn text(&self, from: u32, n: u32) -> String {
        let tok = &self.link.config.tokenizer;
        let vocab = self.link.config.vocab;
        let mut s = String::new();
        for i in from..from + n {
            s.push_str(&tok.piece(self.spec.token_at(self.spec.prompt_len + i, vocab)));
        }
        s
    }

    fn usage(&self, completion: u32) -> Usage {
        Usage {
            prompt_tokens: self.job.prompt_len,
            completion_tokens: completion,
            total_tokens: self.job.prompt_len + completion,
            prompt_tokens_details: None,
        }
    }

    /// One choice of a streamed chunk, as JSON text.
    fn choice(&self, text: &str, finish: Option<&str>, first: bool) -> String {
        let text = serde_json::to_string(text).unwrap_or_default();
        let finish = finish.map_or_else(|| "null".to_owned(), |f| format!("\"{f}\""));
        if self.job.chat {
            let role = if first { "\"role\":\"assistant\"," } else { "" };
            format!(
                "{{\"index\":0,\"delta\":{{{role}\"content\":{text}}},\"logprobs\":null,\"finish_reason\":{finish}}}"
            )
        } else {
            format!("{{\"index\":0,\"text\":{text},\"logprobs\":null,\"finish_reason\":{finish}}}")
        }
    }

    /// An SSE event carrying `choices` (a JSON array's inside) and `usage`.
    fn chunk(&self, choices: &str, usage: Option<Usage>) -> Bytes {
        let object = if self.job.chat {
            "chat.completion.chunk"
        } else {
            "text_completion"
        };
        let usage = usage.map_or_else(
            || "null".to_owned(),
            |u| serde_json::to_string(&u).unwrap_or_default(),
        );
        let model = serde_json::to_string(&self.link.config.model).unwrap_or_default();
        Bytes::from(format!(
            "data: {{\"id\":\"{}\",\"object\":\"{object}\",\"created\":{},\"model\":{model},\"choices\":[{choices}],\"usage\":{usage}}}\n\n",
            self.id, self.created
        ))
    }

    fn finished(&self, status: RequestStatus, t_first: Option<f64>) {
        let now = self.link.clock.now_s();
        if let Some(t) = t_first {
            self.link.stats.first_token(t - self.spec.arrival_s);
        }
        self.link
            .stats
            .finished(status == RequestStatus::Ok, now - self.spec.arrival_s);
        self.link.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    async fn whole(mut self) -> Response {
        let mut n = 0;
        let mut t_first = None;
        let (status, error) = loop {
            match self.progress.recv().await {
                Some(Progress::Tokens(k)) => {
                    t_first.get_or_insert_with(|| self.link.clock.now_s());
                    n += k;
                }
                Some(Progress::Done(s, e)) => break (s, e),
                None => break (RequestStatus::Failed, Some("the engine stopped".into())),
            }
        };
        self.finished(status, t_first);
        if status != RequestStatus::Ok {
            return engine_error(status, error);
        }
        let text = self.text(0, n);
        let choice = if self.job.chat {
            json!({ "index": 0, "message": { "role": "assistant", "content": text }, "logprobs": null, "finish_reason": "length" })
        } else {
            json!({ "index": 0, "text": text, "logprobs": null, "finish_reason": "length" })
        };
        let object = if self.job.chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        let body = json!({
            "id": self.id, "object": object, "created": self.created,
            "model": self.link.config.model, "choices": [choice], "usage": self.usage(n),
        });
        (
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
        )
            .into_response()
    }

    fn stream(self) -> Response {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Result<Bytes, Infallible>>();
        tokio::spawn(self.pump(tx));
        let body = Body::from_stream(tokio_stream::wrappers::UnboundedReceiverStream::new(rx));
        (
            [
                (header::CONTENT_TYPE, "text/event-stream"),
                (header::CACHE_CONTROL, "no-cache"),
            ],
            body,
        )
            .into_response()
    }

    /// Writes the stream's events as the engine's tokens arrive.
    async fn pump(mut self, tx: tokio::sync::mpsc::UnboundedSender<Result<Bytes, Infallible>>) {
        let continuous = self.job.options.continuous_usage_stats.unwrap_or(false);
        let include = self.job.options.include_usage.unwrap_or(false) || continuous;
        let mut n = 0;
        let mut t_first = None;
        let outcome = loop {
            match self.progress.recv().await {
                Some(Progress::Tokens(k)) => {
                    let first = t_first.is_none();
                    t_first.get_or_insert_with(|| self.link.clock.now_s());
                    let text = self.text(n, k);
                    n += k;
                    let last = n >= self.job.max_tokens;
                    let choice = self.choice(&text, last.then_some("length"), first);
                    let usage = continuous.then(|| self.usage(n));
                    if tx.send(Ok(self.chunk(&choice, usage))).is_err() {
                        self.link.cancel(self.spec.id);
                        break (RequestStatus::Cancelled, None);
                    }
                }
                Some(Progress::Done(s, e)) => break (s, e),
                None => break (RequestStatus::Failed, Some("the engine stopped".into())),
            }
        };
        self.finished(outcome.0, t_first);
        match outcome {
            (RequestStatus::Ok, _) => {
                if include {
                    let _ = tx.send(Ok(self.chunk("", Some(self.usage(n)))));
                }
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
            }
            (RequestStatus::Cancelled, None) => {}
            (status, error) => {
                let msg = error.unwrap_or_else(|| format!("request {}", status.as_str()));
                let v = json!({ "error": { "message": msg, "type": "server_error", "param": null, "code": "500" } });
                let _ = tx.send(Ok(Bytes::from(format!("data: {v}\n\n"))));
                let _ = tx.send(Ok(Bytes::from_static(b"data: [DONE]\n\n")));
            }
        }
    }
}

fn engine_error(status: RequestStatus, error: Option<String>) -> Response {
    let msg = error.unwrap_or_else(|| format!("request {}", status.as_str()));
    let (code, kind) = match status {
        RequestStatus::Rejected => (StatusCode::BAD_REQUEST, "invalid_request_error"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "server_error"),
    };
    ApiError::invalid(None, msg)
        .with(
            code,
            kind,
            if code == StatusCode::BAD_REQUEST {
                "rejected"
            } else {
                "engine_error"
            },
        )
        .into_response()
}

async fn models(State(link): Shared, headers: HeaderMap) -> Response {
    if let Err(e) = authorise(&link, &headers) {
        return e.into_response();
    }
    let body = json!({
        "object": "list",
        "data": [{
            "id": link.config.model, "object": "model", "created": 0,
            "owned_by": link.config.engine_label, "root": link.config.model,
            "max_model_len": link.config.context_len,
        }],
    });
    (
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn health(State(link): Shared) -> Response {
    match link.fatal() {
        None => StatusCode::OK.into_response(),
        Some(msg) => ApiError::invalid(None, format!("the engine has failed: {msg}"))
            .with(
                StatusCode::SERVICE_UNAVAILABLE,
                "server_error",
                "engine_failed",
            )
            .into_response(),
    }
}

async fn metrics(State(link): Shared) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        link.stats.render(&link.config.model),
    )
        .into_response()
}

#[derive(serde::Deserialize)]
struct TokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<fuselab_http::protocol::ChatMessage>>,
}

async fn tokenize(State(link): Shared, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        authorise(&link, &headers)?;
        let req: TokenizeRequest = json_body(&link, body).await?;
        check_model(&link, req.model.as_deref())?;
        let text = match (req.prompt, req.messages) {
            (Some(p), None) => p,
            (None, Some(m)) => m
                .iter()
                .filter_map(|m| match &m.content {
                    Some(Content::Text(t)) => Some(t.clone()),
                    _ => None,
                })
                .collect::<Vec<_>>()
                .join(" "),
            _ => {
                return Err(ApiError::invalid(
                    Some("prompt"),
                    "send exactly one of `prompt` (text) or `messages`",
                ));
            }
        };
        let tokens = link
            .config
            .tokenizer
            .encode(&text)
            .map_err(|e| ApiError::invalid(Some("prompt"), e.to_string()))?;
        Ok::<_, ApiError>(json!({ "count": tokens.len(), "max_model_len": link.config.context_len, "tokens": tokens }))
    }
    .await;
    match result {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => e.into_response(),
    }
}

#[derive(serde::Deserialize)]
struct DetokenizeRequest {
    #[serde(default)]
    model: Option<String>,
    tokens: Vec<i64>,
}

async fn detokenize(State(link): Shared, headers: HeaderMap, body: Body) -> Response {
    let result = async {
        authorise(&link, &headers)?;
        let req: DetokenizeRequest = json_body(&link, body).await?;
        check_model(&link, req.model.as_deref())?;
        let size = link.config.tokenizer.vocab_size();
        let ids: Vec<u32> = req
            .tokens
            .iter()
            .map(|&t| {
                u32::try_from(t).ok().filter(|&t| t < size).ok_or_else(|| {
                    ApiError::invalid(
                        Some("tokens"),
                        format!("token id {t} is out of range: ids must be in [0, {size})"),
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        let text = link
            .config
            .tokenizer
            .decode(&ids)
            .map_err(|e| ApiError::invalid(Some("tokens"), e.to_string()))?;
        Ok::<_, ApiError>(json!({ "prompt": text }))
    }
    .await;
    match result {
        Ok(v) => ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(),
        Err(e) => e.into_response(),
    }
}
