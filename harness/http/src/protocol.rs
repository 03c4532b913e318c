//! The OpenAI-compatible wire format: request bodies as servers accept them
//! (unknown fields are ignored, as vLLM and OpenAI do, because clients send
//! many), streamed and whole responses, `usage`, and error bodies.

use serde::{Deserialize, Serialize};

/// A prompt as `/v1/completions` accepts it.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Prompt {
    /// Text.
    Text(String),
    /// Token ids.
    Tokens(Vec<i64>),
    /// A batch of texts (only one prompt per request is served).
    Texts(Vec<String>),
    /// A batch of token-id prompts (only one prompt per request is served).
    TokenBatch(Vec<Vec<i64>>),
}

/// `stream_options` of a streaming request.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct StreamOptions {
    /// Send a last chunk with the request's `usage`.
    #[serde(default)]
    pub include_usage: Option<bool>,
    /// Send the cumulative `usage` on every chunk (vLLM's extension).
    #[serde(default)]
    pub continuous_usage_stats: Option<bool>,
}

/// The body of `POST /v1/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct CompletionRequest {
    /// The model asked for.
    #[serde(default)]
    pub model: Option<String>,
    /// The prompt.
    pub prompt: Prompt,
    /// Tokens to generate.
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// At least this many tokens (vLLM's extension).
    #[serde(default)]
    pub min_tokens: Option<i64>,
    /// Keep generating past EOS (vLLM's extension; fuselab's engines always do).
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Stream the answer as server-sent events.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is served).
    #[serde(default)]
    pub n: Option<i64>,
}

/// Message content: text or a list of typed parts.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts such as `{"type": "text", "text": "…"}`.
    Parts(Vec<ContentPart>),
}

/// One part of a message's content.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ContentPart {
    /// The part's type (`text`; others are refused).
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
}

/// One chat message.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct ChatMessage {
    /// `system`, `user`, `assistant`, ….
    pub role: String,
    /// The content (absent for some assistant messages).
    #[serde(default)]
    pub content: Option<Content>,
}

/// The body of `POST /v1/chat/completions`.
#[derive(Clone, Debug, Deserialize)]
pub struct ChatRequest {
    /// The model asked for.
    #[serde(default)]
    pub model: Option<String>,
    /// The conversation.
    pub messages: Vec<ChatMessage>,
    /// Tokens to generate (legacy name).
    #[serde(default)]
    pub max_tokens: Option<i64>,
    /// Tokens to generate.
    #[serde(default)]
    pub max_completion_tokens: Option<i64>,
    /// At least this many tokens (vLLM's extension).
    #[serde(default)]
    pub min_tokens: Option<i64>,
    /// Keep generating past EOS.
    #[serde(default)]
    pub ignore_eos: Option<bool>,
    /// Stream the answer.
    #[serde(default)]
    pub stream: Option<bool>,
    /// Streaming options.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Number of choices (only 1 is served).
    #[serde(default)]
    pub n: Option<i64>,
}

/// Token counts of a request, as servers report them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Usage {
    /// Prompt tokens.
    #[serde(default)]
    pub prompt_tokens: u32,
    /// Generated tokens so far (streaming) or in all.
    #[serde(default)]
    pub completion_tokens: u32,
    /// Their sum.
    #[serde(default)]
    pub total_tokens: u32,
    /// Details of the prompt tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_tokens_details: Option<PromptTokensDetails>,
}

/// `usage.prompt_tokens_details`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct PromptTokensDetails {
    /// Prompt tokens served from a prefix cache.
    #[serde(default)]
    pub cached_tokens: Option<u32>,
}

/// One streamed chunk or whole response, as a client reads it: completions
/// carry `choices[].text`, chat `choices[].delta.content` (streamed) or
/// `choices[].message.content` (whole).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ResponseChunk {
    /// The choices (empty in a final usage-only chunk).
    #[serde(default)]
    pub choices: Vec<ChunkChoice>,
    /// Usage, when the server sends it.
    #[serde(default)]
    pub usage: Option<Usage>,
    /// An error reported inside the stream.
    #[serde(default)]
    pub error: Option<serde_json::Value>,
}

/// One choice of a [`ResponseChunk`].
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChunkChoice {
    /// Completion text.
    #[serde(default)]
    pub text: Option<String>,
    /// Chat delta.
    #[serde(default)]
    pub delta: Option<ChatDelta>,
    /// Chat message (non-streaming).
    #[serde(default)]
    pub message: Option<ChatDelta>,
    /// Why generation stopped, on the last chunk.
    #[serde(default)]
    pub finish_reason: Option<String>,
}

/// The content of a chat delta or message.
#[derive(Clone, Debug, Default, Deserialize)]
pub struct ChatDelta {
    /// Answer text.
    #[serde(default)]
    pub content: Option<String>,
    /// Reasoning text, from servers that separate it.
    #[serde(default)]
    pub reasoning_content: Option<String>,
}

impl ResponseChunk {
    /// The text the chunk adds, over all its choices.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.choices {
            if let Some(t) = &c.text {
                s.push_str(t);
            }
            for d in [&c.delta, &c.message].into_iter().flatten() {
                for t in [&d.reasoning_content, &d.content].into_iter().flatten() {
                    s.push_str(t);
                }
            }
        }
        s
    }
}

/// An OpenAI-style error body: `{"error": {"message", "type", "param", "code"}}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// What is wrong and how to fix it.
    pub message: String,
    /// `invalid_request_error`, `authentication_error`, ….
    #[serde(rename = "type")]
    pub kind: String,
    /// The offending field, when there is one.
    pub param: Option<String>,
    /// A machine-readable code (`model_not_found`, …) or the HTTP status.
    pub code: Option<String>,
}

/// The message of an error body, or the body itself when it is not one.
pub fn error_message(body: &str) -> String {
    #[derive(Deserialize)]
    struct Any {
        error: serde_json::Value,
    }
    match serde_json::from_str::<Any>(body) {
        Ok(Any { error }) => match error.get("message").and_then(|m| m.as_str()) {
            Some(m) => m.to_owned(),
            None => error.to_string(),
        },
        Err(_) => {
            let body = body.trim();
            body.chars().take(300).collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_of_every_shape_parse() {
        let p = |s: &str| serde_json::from_str::<CompletionRequest>(s).unwrap().prompt;
        assert_eq!(p(r#"{"prompt":"hi"}"#), Prompt::Text("hi".into()));
        assert_eq!(p(r#"{"prompt":[1,2]}"#), Prompt::Tokens(vec![1, 2]));
        assert_eq!(p(r#"{"prompt":["a"]}"#), Prompt::Texts(vec!["a".into()]));
        assert_eq!(
            p(r#"{"prompt":[[3]],"unknown":1}"#),
            Prompt::TokenBatch(vec![vec![3]])
        );
    }

    #[test]
    fn chunk_text_reads_completion_and_chat_shapes() {
        let c: ResponseChunk =
            serde_json::from_str(r#"{"choices":[{"text":" t1 t2","finish_reason":null}]}"#)
                .unwrap();
        assert_eq!(c.text(), " t1 t2");
        let c: ResponseChunk = serde_json::from_str(
            r#"{"choices":[{"delta":{"role":"assistant","content":"x"}}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#,
        )
        .unwrap();
        assert_eq!(c.text(), "x");
        assert_eq!(c.usage.unwrap().completion_tokens, 1);
    }

    #[test]
    fn error_message_reads_openai_bodies_and_plain_text() {
        assert_eq!(
            error_message(r#"{"error":{"message":"bad","type":"x","param":null,"code":null}}"#),
            "bad"
        );
        assert_eq!(
            error_message("Internal Server Error\n"),
            "Internal Server Error"
        );
    }
}
