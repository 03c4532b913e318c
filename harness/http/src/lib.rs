//! OpenAI-compatible HTTP for fuselab.
//!
//! - [`protocol`]: the request and response bodies of `/v1/completions` and
//!   `/v1/chat/completions` (streaming and not), as servers such as vLLM,
//!   SGLang, TGI and llama.cpp speak them, and OpenAI-style error bodies.
//! - [`tokenizer`]: Hugging Face `tokenizer.json` tokenizers, the built-in
//!   word tokenizer of fuselab's random-weight models, and prompt text of an
//!   exact token count.
//! - [`HttpEngine`]: a harness engine that drives any OpenAI-compatible server
//!   over streaming HTTP, one record per received chunk.
//! - [`prometheus`]: parsing a server's Prometheus `/metrics` and scraping it
//!   during a run.

mod client;
mod error;
pub mod prometheus;
pub mod protocol;
mod sse;
pub mod tokenizer;

pub use client::{
    Endpoint, HttpEngine, HttpEngineConfig, PromptFormat, request_uuid, verify_prompt_lengths,
};
pub use error::HttpError;
pub use sse::SseParser;
pub use tokenizer::TextTokenizer;
