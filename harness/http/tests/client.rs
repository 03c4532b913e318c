//! The HTTP engine against a scripted server on loopback: how it reads
//! streams (token counts from usage, from the tokenizer, or one per chunk)
//! and how faults (HTTP 500, a stream cut short, a stalled server) end up as
//! per-request errors while the run completes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fuselab_core::{RequestSpec, RequestStatus};
use fuselab_harness::{CancelToken, RealtimePlan, run_realtime};
use fuselab_http::{HttpEngine, HttpEngineConfig, TextTokenizer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What the scripted server does with request `id`.
#[derive(Clone, Copy, Debug)]
enum Script {
    /// Streams `n` tokens, `per` per chunk, with cumulative usage on every chunk.
    Usage { n: u32, per: u32 },
    /// Streams `n` one-word chunks without usage.
    Plain { n: u32 },
    /// HTTP 500 with an OpenAI error body.
    Error500,
    /// Two chunks, then closes the connection.
    CutShort,
    /// Sends headers, then nothing.
    Stall,
}

/// Request headers and bodies the server saw, by request id.
type Seen = Arc<Mutex<HashMap<u64, (String, serde_json::Value)>>>;

async fn scripted_server(script: fn(u64) -> Script) -> (String, Seen) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            let record = record.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head, body) = loop {
                    let n = sock.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let head = text[..end].to_lowercase();
                        let len: usize = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length: "))
                            .and_then(|v| v.trim().parse().ok())
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break (head, text[end + 4..end + 4 + len].to_string());
                        }
                    }
                };
                let rid = head
                    .lines()
                    .find_map(|l| l.strip_prefix("x-request-id: "))
                    .unwrap_or("")
                    .to_string();
                let id = rid
                    .rsplit('-')
                    .next()
                    .and_then(|v| u64::from_str_radix(v, 16).ok())
                    .unwrap_or(0);
                let body: serde_json::Value = serde_json::from_str(&body).unwrap();
                record.lock().unwrap().insert(id, (rid, body));
                let sse = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let data = |s: String| format!("data: {s}\n\n");
                let out: Vec<String> = match script(id) {
                    Script::Usage { n, per } => {
                        let mut v: Vec<String> = (0..n / per)
                            .map(|k| {
                                let text = " w".repeat(per as usize);
                                data(format!(
                                    r#"{{"choices":[{{"text":"{text}"}}],"usage":{{"prompt_tokens":8,"completion_tokens":{}}}}}"#,
                                    (k + 1) * per
                                ))
                            })
                            .collect();
                        v.push(data(format!(r#"{{"choices":[],"usage":{{"prompt_tokens":8,"completion_tokens":{n}}}}}"#)));
                        v.push(data("[DONE]".into()));
                        v
                    }
                    Script::Plain { n } => {
                        let mut v: Vec<String> = (0..n)
                            .map(|_| data(r#"{"choices":[{"text":" t3"}]}"#.into()))
                            .collect();
                        v.push(data("[DONE]".into()));
                        v
                    }
                    Script::Error500 => {
                        let body =
                            r#"{"error":{"message":"engine on fire","type":"server_error"}}"#;
                        let _ = sock
                            .write_all(format!("HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len()).as_bytes())
                            .await;
                        return;
                    }
                    Script::CutShort => vec![
                        data(r#"{"choices":[{"text":" t1"}]}"#.into()),
                        data(r#"{"choices":[{"text":" t2"}]}"#.into()),
                    ],
                    Script::Stall => {
                        let _ = sock.write_all(sse.as_bytes()).await;
                        tokio::time::sleep(std::time::Duration::from_secs(3600)).await;
                        return;
                    }
                };
                let _ = sock.write_all(sse.as_bytes()).await;
                for part in out {
                    if sock.write_all(part.as_bytes()).await.is_err() {
                        return;
                    }
                    let _ = sock.flush().await;
                }
            });
        }
    });
    (url, seen)
}

fn spec(id: u64, prompt_len: u32, output_len: u32) -> RequestSpec {
    RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len,
        output_len,
        prefix_group: None,
        prefix_len: 0,
        conversation: None,
        adapter: None,
    }
}

fn plan(requests: Vec<RequestSpec>) -> RealtimePlan {
    let mut p = RealtimePlan::open_loop(requests);
    p.progress = false;
    p.spin_s = 0.0;
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_counts_chunks_and_requests_carry_ids_and_exact_lengths() {
    let (url, seen) = scripted_server(|id| match id {
        0 => Script::Usage { n: 6, per: 2 },
        _ => Script::Plain { n: 4 },
    })
    .await;
    let mut config = HttpEngineConfig::new(&format!("{url}/v1/"), "m");
    config.run_nonce = 7;
    config.vocab = 50;
    let engine = HttpEngine::new(config).unwrap();
    let run = run_realtime(
        plan(vec![spec(0, 8, 6), spec(1, 5, 4)]),
        Box::new(engine),
        CancelToken::new(),
    )
    .await
    .unwrap();
    let r0 = run.records.iter().find(|r| r.id == 0).unwrap();
    assert_eq!(r0.status, RequestStatus::Ok, "{:?}", r0.error);
    assert_eq!(
        r0.tokens.iter().map(|c| c.n_tokens).collect::<Vec<_>>(),
        [2, 2, 2]
    );
    assert_eq!(
        r0.tokens.iter().map(|c| c.index).collect::<Vec<_>>(),
        [0, 2, 4]
    );
    let s0 = r0.server.as_ref().unwrap();
    assert_eq!(
        (
            s0.request_id.as_str(),
            s0.prompt_tokens,
            s0.completion_tokens
        ),
        (fuselab_http::request_uuid(7, 0).as_str(), Some(8), Some(6))
    );
    assert!(s0.prompt_exact);
    let r1 = run.records.iter().find(|r| r.id == 1).unwrap();
    assert_eq!(
        r1.tokens_received(),
        4,
        "one token per chunk without usage or tokenizer"
    );
    assert_eq!(r1.server.as_ref().unwrap().completion_tokens, None);

    let seen = seen.lock().unwrap();
    let (rid, body) = &seen[&0];
    assert_eq!(rid, &fuselab_http::request_uuid(7, 0));
    let prompt = body["prompt"].as_array().unwrap();
    assert_eq!(prompt.len(), 8);
    assert!(prompt.iter().all(|t| t.as_u64().unwrap() < 50));
    assert_eq!(
        (body["max_tokens"].as_u64(), body["min_tokens"].as_u64()),
        (Some(6), Some(6))
    );
    assert_eq!(body["ignore_eos"], true);
    assert_eq!(body["stream"], true);
    assert_eq!(body["stream_options"]["include_usage"], true);
    let check = fuselab_metrics::length_check(&run.records).unwrap();
    assert_eq!((check.checked, check.mismatch_rate), (2, 0.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokenizer_counts_plain_chunks_and_text_prompts_are_exact() {
    let (url, seen) = scripted_server(|_| Script::Plain { n: 3 }).await;
    let mut config = HttpEngineConfig::new(&url, "m");
    config.prompt = fuselab_http::PromptFormat::Text;
    config.tokenizer = Some(Arc::new(TextTokenizer::builtin(100)));
    let run = run_realtime(
        plan(vec![spec(0, 12, 3)]),
        Box::new(HttpEngine::new(config).unwrap()),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records[0].tokens_received(), 3);
    let seen = seen.lock().unwrap();
    let prompt = seen[&0].1["prompt"].as_str().unwrap().to_owned();
    assert_eq!(
        TextTokenizer::builtin(100).encode(&prompt).unwrap().len(),
        12,
        "{prompt}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_fail_their_request_only_and_the_run_completes() {
    let (url, _) = scripted_server(|id| match id {
        0 => Script::Error500,
        1 => Script::CutShort,
        2 => Script::Stall,
        _ => Script::Usage { n: 4, per: 1 },
    })
    .await;
    let engine = HttpEngine::new(HttpEngineConfig::new(&url, "m")).unwrap();
    let mut p = plan((0..4).map(|i| spec(i, 4, 4)).collect());
    p.timeout_s = Some(1.0);
    let run = run_realtime(p, Box::new(engine), CancelToken::new())
        .await
        .unwrap();
    let by_id: HashMap<u64, _> = run.records.iter().map(|r| (r.id, r)).collect();
    assert_eq!(by_id[&0].status, RequestStatus::Failed);
    assert!(
        by_id[&0]
            .error
            .as_deref()
            .unwrap()
            .contains("HTTP 500: engine on fire"),
        "{:?}",
        by_id[&0].error
    );
    assert_eq!(by_id[&1].status, RequestStatus::Failed);
    assert!(
        by_id[&1]
            .error
            .as_deref()
            .unwrap()
            .contains("before [DONE] after 2 of 4 tokens"),
        "{:?}",
        by_id[&1].error
    );
    assert_eq!(
        by_id[&1].tokens_received(),
        2,
        "tokens before the cut are kept"
    );
    assert_eq!(by_id[&2].status, RequestStatus::Timeout);
    assert_eq!(by_id[&3].status, RequestStatus::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_fails_every_request_with_the_reason() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let engine = HttpEngine::new(HttpEngineConfig::new(&url, "m")).unwrap();
    let run = run_realtime(
        plan(vec![spec(0, 4, 2)]),
        Box::new(engine),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records[0].status, RequestStatus::Failed);
    assert!(
        run.records[0]
            .error
            .as_deref()
            .unwrap()
            .starts_with("sending:"),
        "{:?}",
        run.records[0].error
    );
}
