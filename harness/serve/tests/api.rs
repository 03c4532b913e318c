//! The server's HTTP surface, driven with a real HTTP client on loopback:
//! answers of every shape, and the right 4xx with an OpenAI-style body for
//! every kind of bad request.

use fuselab_harness::{NullDelay, NullEngine, NullMode};
use fuselab_serve::{ServeConfig, Server};
use serde_json::{Value, json};

/// Starts a server over `engine` on a free port; returns its base URL.
async fn start(engine: NullEngine, tune: impl FnOnce(&mut ServeConfig)) -> String {
    let mut config = ServeConfig::new("m", 1000, 256);
    tune(&mut config);
    let server = Server::start(Box::new(engine), config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(server.run(listener, std::future::pending()));
    format!("http://{addr}")
}

async fn post(url: &str, path: &str, body: &str, key: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new()
        .post(format!("{url}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.text().await.unwrap())
}

fn error_of(body: &str) -> Value {
    let v: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let err = v["error"].clone();
    assert!(
        err["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(err["type"].as_str().is_some(), "{body}");
    err
}

/// The `data:` payloads of an SSE body.
fn events(body: &str) -> Vec<String> {
    body.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_completion_has_one_token_per_chunk_then_usage_and_done() {
    let url = start(NullEngine::new(NullMode::PerToken), |_| {}).await;
    let body = json!({"model": "m", "prompt": [1, 2, 3, 4], "max_tokens": 5, "stream": true,
                      "stream_options": {"include_usage": true}, "ignore_eos": true, "extra": 1});
    let (status, text) = post(&url, "/v1/completions", &body.to_string(), None).await;
    assert_eq!(status, 200, "{text}");
    let ev = events(&text);
    assert_eq!(ev.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> = ev[..ev.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let content: Vec<&Value> = chunks
        .iter()
        .filter(|c| !c["choices"].as_array().unwrap().is_empty())
        .collect();
    assert_eq!(content.len(), 5);
    for c in &content {
        let text = c["choices"][0]["text"].as_str().unwrap();
        assert_eq!(text.split_whitespace().count(), 1, "{text}");
        assert_eq!(c["object"], "text_completion");
    }
    assert_eq!(content[4]["choices"][0]["finish_reason"], "length");
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(
        (
            usage["prompt_tokens"].as_u64(),
            usage["completion_tokens"].as_u64()
        ),
        (Some(4), Some(5))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continuous_usage_counts_every_chunk_and_text_prompts_are_tokenized() {
    let url = start(NullEngine::new(NullMode::PerToken), |_| {}).await;
    let body = json!({"prompt": "t1 t2 t3", "max_tokens": 3, "stream": true,
                      "stream_options": {"continuous_usage_stats": true}});
    let (_, text) = post(&url, "/v1/completions", &body.to_string(), None).await;
    let ev = events(&text);
    let counts: Vec<u64> = ev[..ev.len() - 1]
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(e).unwrap()["usage"]["completion_tokens"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(counts, [1, 2, 3, 3]);
    let first: Value = serde_json::from_str(&ev[0]).unwrap();
    assert_eq!(first["usage"]["prompt_tokens"], 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_streams_deltas_and_whole_answers_carry_usage() {
    let url = start(NullEngine::new(NullMode::OneChunk), |_| {}).await;
    let body = json!({"model": "m", "messages": [{"role": "user", "content": "t5 t6"}],
                      "max_completion_tokens": 4, "stream": true});
    let (status, text) = post(&url, "/v1/chat/completions", &body.to_string(), None).await;
    assert_eq!(status, 200, "{text}");
    let first: Value = serde_json::from_str(&events(&text)[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    assert_eq!(
        first["choices"][0]["delta"]["content"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .count(),
        4
    );

    let whole = json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "t1"}]}], "max_tokens": 2});
    let (status, text) = post(&url, "/v1/chat/completions", &whole.to_string(), None).await;
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    assert_eq!(v["usage"]["prompt_tokens"], 1);
    assert_eq!(v["usage"]["completion_tokens"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_4xx_with_an_openai_error_body() {
    let url = start(NullEngine::default(), |c| c.max_body_bytes = 2048).await;
    let cases: Vec<(&str, String, u16, Option<&str>)> = vec![
        ("/v1/completions", "{not json".into(), 400, None),
        (
            "/v1/completions",
            json!({"prompt": "t1", "max_tokens": -5}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "t1", "max_tokens": 0}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "t1", "max_tokens": 2, "min_tokens": 3}).to_string(),
            400,
            Some("min_tokens"),
        ),
        (
            "/v1/completions",
            json!({"model": "nope", "prompt": "t1"}).to_string(),
            404,
            Some("model"),
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, 99999]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": ["t1", "t2"]}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "", "max_tokens": 1}).to_string(),
            400,
            Some("prompt"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "t1", "n": 3}).to_string(),
            400,
            Some("n"),
        ),
        (
            "/v1/completions",
            json!({"prompt": "t1", "max_tokens": 300}).to_string(),
            400,
            Some("max_tokens"),
        ),
        (
            "/v1/completions",
            json!({"max_tokens": 3}).to_string(),
            400,
            None,
        ),
        (
            "/v1/completions",
            json!({"prompt": "t1", "max_tokens": "many"}).to_string(),
            400,
            None,
        ),
        (
            "/v1/completions",
            format!("{{\"prompt\": \"{}\"}}", "t1 ".repeat(1000)),
            413,
            None,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}).to_string(),
            400,
            Some("messages"),
        ),
        (
            "/detokenize",
            json!({"tokens": [-1]}).to_string(),
            400,
            Some("tokens"),
        ),
        ("/v1/nothing", "{}".into(), 404, None),
    ];
    for (path, body, want, param) in cases {
        let (status, text) = post(&url, path, &body, None).await;
        assert_eq!(
            status,
            want,
            "{path} {}: {text}",
            &body[..body.len().min(80)]
        );
        let err = error_of(&text);
        if let Some(p) = param {
            assert_eq!(err["param"], p, "{path} {body}: {text}");
        }
    }
    let resp = reqwest::get(format!("{url}/v1/completions")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 405);
    error_of(&resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_key_is_checked_on_every_route_but_health_and_metrics() {
    let url = start(NullEngine::default(), |c| c.api_key = Some("sekret".into())).await;
    let body = json!({"prompt": "t1", "max_tokens": 1}).to_string();
    let (status, text) = post(&url, "/v1/completions", &body, None).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&text)["code"], "missing_api_key");
    let (status, text) = post(&url, "/v1/completions", &body, Some("wrong")).await;
    assert_eq!(status, 401);
    assert_eq!(error_of(&text)["type"], "authentication_error");
    let (status, _) = post(&url, "/v1/completions", &body, Some("sekret")).await;
    assert_eq!(status, 200);
    let models = reqwest::get(format!("{url}/v1/models")).await.unwrap();
    assert_eq!(models.status().as_u16(), 401);
    assert_eq!(
        reqwest::get(format!("{url}/health"))
            .await
            .unwrap()
            .status()
            .as_u16(),
        200
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_limit_get_429() {
    let slow = NullEngine::delayed(NullDelay {
        first_token_s: 2.0,
        per_token_s: 0.0,
    });
    let url = start(slow, |c| c.max_concurrency = 1).await;
    let body = json!({"prompt": "t1", "max_tokens": 1}).to_string();
    let first = {
        let (url, body) = (url.clone(), body.clone());
        tokio::spawn(async move { post(&url, "/v1/completions", &body, None).await })
    };
    // Wait until the first request is in flight, as /metrics says.
    loop {
        let m = reqwest::get(format!("{url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let s = fuselab_http::prometheus::parse(&m);
        if s.iter()
            .any(|x| x.name == "fuselab:requests_in_flight" && x.value == 1.0)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let (status, text) = post(&url, "/v1/completions", &body, None).await;
    assert_eq!(status, 429, "{text}");
    assert_eq!(error_of(&text)["type"], "rate_limit_error");
    assert_eq!(first.await.unwrap().0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_tokenize_detokenize_and_metrics() {
    let url = start(NullEngine::default(), |_| {}).await;
    let models: Value = reqwest::get(format!("{url}/v1/models"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"][0]["id"], "m");
    assert_eq!(models["data"][0]["max_model_len"], 256);
    let (_, t) = post(
        &url,
        "/tokenize",
        &json!({"prompt": "t7 t8"}).to_string(),
        None,
    )
    .await;
    let t: Value = serde_json::from_str(&t).unwrap();
    assert_eq!(t["tokens"], json!([7, 8]));
    assert_eq!(t["count"], 2);
    let (_, d) = post(
        &url,
        "/detokenize",
        &json!({"tokens": [7, 8]}).to_string(),
        None,
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&d).unwrap()["prompt"],
        "t7 t8"
    );
    post(
        &url,
        "/v1/completions",
        &json!({"prompt": [1, 2], "max_tokens": 3}).to_string(),
        None,
    )
    .await;
    let m = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let s = fuselab_http::prometheus::parse(&m);
    let get = |n: &str| s.iter().find(|x| x.name == n).map(|x| x.value);
    assert_eq!(get("vllm:prompt_tokens_total"), Some(2.0));
    assert_eq!(get("vllm:generation_tokens_total"), Some(3.0));
    assert_eq!(get("vllm:request_success_total"), Some(1.0));
    assert_eq!(get("vllm:num_requests_running"), Some(0.0));
}
