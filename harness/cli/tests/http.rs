//! fuselab over HTTP (issue 11): `fuselab serve` driven by `fuselab bench
//! --engine http://…`, by the official `openai` Python client, and fuselab's
//! client driving a real third-party server (llama.cpp's, through
//! llama-cpp-python). The Python tests run where `.ci/run` set up their
//! interpreter (FUSELAB_PYTHON, FUSELAB_LLAMACPP_VENV) and skip with the
//! reason printed elsewhere.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Process, Stdio};
use std::time::{Duration, Instant};

use predicates::str::contains;

mod common;
use common::{fuselab, summary};

/// A `fuselab serve` process on a free port, stopped with SIGTERM on drop.
struct Served {
    child: Child,
    url: String,
}

impl Served {
    fn start(args: &[&str]) -> Self {
        let bin = assert_cmd::cargo::cargo_bin("fuselab");
        let mut child = Process::new(bin)
            .arg("serve")
            .args(args)
            .args(["--port", "0"])
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("fuselab serve starts");
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let url = loop {
            let line = lines
                .next()
                .expect("fuselab serve printed its address before exiting")
                .unwrap();
            if let Some(at) = line.find(" at http://") {
                break line[at + 4..].split_whitespace().next().unwrap().to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Self { child, url }
    }

    /// Stops the server with SIGTERM; its exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        terminate(&self.child);
        let status = self.child.wait().unwrap();
        std::mem::forget(self);
        status
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        terminate(&self.child);
        let _ = self.child.wait();
    }
}

fn terminate(child: &Child) {
    let _ = Process::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
}

/// `(prompt_len, output_len, tokens received)` per request id, from a run folder.
fn tokens_by_request(dir: &Path) -> BTreeMap<u64, (u32, u32, u64)> {
    fuselab_store::read_run(dir)
        .unwrap()
        .requests
        .iter()
        .map(|r| (r.id, (r.prompt_len, r.output_len, r.tokens_received())))
        .collect()
}

const WORKLOAD: [&str; 6] = ["--preset", "cpu-small", "--n", "16", "--rate", "8"];

#[test]
fn in_process_and_over_http_against_fuselab_serve_serve_the_same_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--engine", "sim", "--policy", "chunked"]);
    fuselab(dir.path())
        .args(["bench", "--engine", &served.url, "--out", "http"])
        .args(WORKLOAD)
        .assert()
        .success()
        .stdout(contains("16 requests (16 ok)"));
    fuselab(dir.path())
        .args([
            "bench", "--engine", "sim", "--policy", "chunked", "--out", "inproc",
        ])
        .args(WORKLOAD)
        .assert()
        .success();
    let over_http = tokens_by_request(&dir.path().join("http"));
    let in_process = tokens_by_request(&dir.path().join("inproc"));
    assert_eq!(over_http, in_process);
    assert!(
        over_http
            .values()
            .all(|(_, out, got)| u64::from(*out) == *got)
    );

    let s = summary(&dir.path().join("http"));
    let lengths = &s["metrics"]["lengths"];
    assert_eq!(lengths["checked"], 16);
    assert_eq!(lengths["mismatch_rate"], 0.0);
    assert_eq!(s["provenance"]["engine"]["engine"], "http");
    assert_eq!(s["provenance"]["engine"]["model"], "fuselab-llama3-8b");
    let run = fuselab_store::read_run(dir.path().join("http")).unwrap();
    let ids: std::collections::HashSet<&str> = run
        .requests
        .iter()
        .map(|r| r.server.as_ref().unwrap().request_id.as_str())
        .collect();
    assert_eq!(ids.len(), 16, "every request has its own x-request-id");
    let scraped = fuselab_store::RunFolder::open(dir.path().join("http"))
        .unwrap()
        .read_server_metrics()
        .unwrap();
    assert!(
        scraped.iter().any(|s| s.name == "vllm:kv_cache_usage_perc"),
        "server metrics scraped into server_metrics.parquet"
    );
    assert!(served.stop().success(), "serve exits 0 on SIGTERM");
}

#[test]
fn a_missing_key_fails_every_request_with_the_servers_reason_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let served = Served::start(&["--engine", "null", "--api-key", "sekret"]);
    fuselab(dir.path())
        .env_remove("FUSELAB_API_KEY")
        .args([
            "bench",
            "--engine",
            &served.url,
            "--model",
            "fuselab-tiny",
            "--out",
            "r",
        ])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stdout(contains("HTTP 401: missing API key"));
    assert!(
        dir.path().join("r/requests.parquet").is_file(),
        "the folder is written"
    );
    fuselab(dir.path())
        .env("FUSELAB_API_KEY", "sekret")
        .args(["bench", "--engine", &served.url, "--out", "ok"])
        .args(WORKLOAD)
        .assert()
        .success();
}

#[test]
fn http_flags_elsewhere_and_bad_urls_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args(["bench", "--engine", "sim", "--tokenizer", "t.json"])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stderr(contains("--tokenizer"))
        .stderr(contains("http://HOST:PORT"));
    fuselab(dir.path())
        .args(["bench", "--engine", "ftp://x"])
        .assert()
        .code(2)
        .stderr(contains("unknown engine `ftp://x`"));
    fuselab(dir.path())
        .args([
            "bench",
            "--engine",
            "http://127.0.0.1:9",
            "--endpoint",
            "chat",
            "--model",
            "m",
        ])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stderr(contains("--tokenizer"));
    fuselab(dir.path())
        .args(["serve", "--engine", "null", "--scrape-interval", "2"])
        .assert()
        .code(2)
        .stderr(contains("does not apply to `fuselab serve`"));
}

/// The interpreter named by `var`, or a printed reason to skip.
fn python(var: &str) -> Option<PathBuf> {
    match std::env::var_os(var) {
        Some(p) => Some(PathBuf::from(p)),
        None => {
            eprintln!(
                "SKIPPED: {var} is not set (.ci/run sets it up; see harness/http/tests/llamacpp/README.md)"
            );
            None
        }
    }
}

#[test]
fn the_openai_python_client_streams_a_completion_and_a_chat_from_fuselab_serve() {
    let Some(python) = python("FUSELAB_PYTHON") else {
        return;
    };
    let served = Served::start(&["--engine", "null", "--delay", "1ms,1ms", "--api-key", "k"]);
    let script = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key="k")
model = client.models.list().data[0].id
texts, usage = [], None
for chunk in client.completions.create(model=model, prompt=[1, 2, 3], max_tokens=7, stream=True,
                                        stream_options={"include_usage": True}):
    if chunk.choices:
        texts.append(chunk.choices[0].text)
    if chunk.usage:
        usage = chunk.usage
assert len(texts) == 7 and usage.completion_tokens == 7 and usage.prompt_tokens == 3, (texts, usage)
deltas = []
for chunk in client.chat.completions.create(model=model, messages=[{"role": "user", "content": "t1 t2"}],
                                            max_tokens=5, stream=True):
    if chunk.choices and chunk.choices[0].delta.content:
        deltas.append(chunk.choices[0].delta.content)
assert len(deltas) == 5, deltas
whole = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "t1"}], max_tokens=2)
assert whole.usage.completion_tokens == 2 and whole.choices[0].message.content.split() != []
try:
    client.completions.create(model="nope", prompt="t1")
    raise SystemExit("unknown model accepted")
except openai.NotFoundError as e:
    assert "does not exist" in str(e)
print("openai", openai.__version__, "ok", "".join(texts).split(), "".join(deltas).split())
"#;
    let out = Process::new(python)
        .args(["-c", script, &served.url])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" ok "), "{stdout}");
    eprintln!("{stdout}");
}

/// Waits until `GET /v1/models` answers 200 at `port`.
fn wait_ready(port: u16, server: &mut Child) {
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(120) {
        if let Ok(Some(status)) = server.try_wait() {
            panic!("the server exited early: {status}");
        }
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = s.write_all(b"GET /v1/models HTTP/1.0\r\n\r\n");
            let mut reply = String::new();
            let _ = s.read_to_string(&mut reply);
            if reply.starts_with("HTTP/1.1 200") || reply.starts_with("HTTP/1.0 200") {
                return;
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("the server was not ready within 120 s");
}

#[test]
fn fuselab_drives_llama_cpps_server_with_exact_prompt_and_output_lengths() {
    let Some(venv) = python("FUSELAB_LLAMACPP_VENV") else {
        return;
    };
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../http/tests/llamacpp");
    let dir = tempfile::tempdir().unwrap();
    let status = Process::new(venv.join("bin/python"))
        .arg(fixture.join("make_gguf.py"))
        .arg(dir.path())
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "make_gguf.py");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let mut server = Process::new("bash")
        .arg(fixture.join("serve.sh"))
        .arg(dir.path())
        .arg(port.to_string())
        .env("FUSELAB_LLAMACPP_VENV", &venv)
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    wait_ready(port, &mut server);
    let url = format!("http://127.0.0.1:{port}");
    let bench = fuselab(dir.path())
        .args([
            "bench",
            "--engine",
            &url,
            "--model",
            "tiny",
            "--tokenizer",
            "tokenizer.json",
            "--out",
            "llama",
        ])
        .args([
            "--preset",
            "cpu-small",
            "--n",
            "12",
            "--clients",
            "2",
            "--scrape-interval",
            "0",
        ])
        .output()
        .unwrap();
    terminate(&server);
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&bench.stdout);
    assert!(
        bench.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&bench.stderr)
    );
    let s = summary(&dir.path().join("llama"));
    let lengths = &s["metrics"]["lengths"];
    assert_eq!(lengths["checked"], 12, "{lengths}");
    assert_eq!(lengths["prompt_mismatches"], 0, "{lengths}");
    assert_eq!(lengths["output_mismatches"], 0, "{lengths}");
    let run = fuselab_store::read_run(dir.path().join("llama")).unwrap();
    for r in &run.requests {
        assert_eq!(
            r.tokens_received(),
            u64::from(r.output_len),
            "request {}",
            r.id
        );
        assert_eq!(
            r.server.as_ref().unwrap().prompt_tokens,
            Some(r.prompt_len),
            "request {}",
            r.id
        );
    }
    assert_eq!(
        s["provenance"]["engine"]["knobs"]["prompt_format"],
        "tokenizer-text"
    );
    eprintln!("llama.cpp: {stdout}");
}

/// A free loopback port (bound, then released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn tune_server_cmd_beats_the_servers_default_and_records_the_oom_region_as_failed() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("fuselab");
    let workload = ["--preset", "fastgen-2600", "--n", "16", "--rate", "10"];
    // The default server (splitfuse, budget 768), measured the same way.
    let served = Served::start(&["--engine", "sim"]);
    fuselab(dir.path())
        .args(["bench", "--engine", &served.url, "--out", "default"])
        .args(workload)
        .assert()
        .success();
    drop(served);
    let default_p99 = summary(&dir.path().join("default"))["metrics"]["ttft_s"]["p99"]
        .as_f64()
        .unwrap();

    // Budgets above 3000 "run out of memory" at start-up, as a real server would.
    let port = free_port();
    let cmd = format!(
        "if [ {{budget}} -gt 3000 ]; then echo 'torch.OutOfMemoryError: CUDA out of memory' >&2; exit 1; fi; \
         exec {} serve --engine sim --port {port} --knob budget={{budget}}",
        bin.display()
    );
    let out = fuselab(dir.path())
        .args([
            "tune",
            "--server-cmd",
            &cmd,
            "--engine",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args([
            "--space",
            "budget=256..8192:log",
            "--objective",
            "p99-ttft",
            "--budget",
            "10",
        ])
        .args(["--server-timeout", "60s", "--out", "campaign"])
        .args(workload)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let journal = std::fs::read_to_string(dir.path().join("campaign/trials.jsonl")).unwrap();
    let trials: Vec<serde_json::Value> = journal
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(trials.len(), 10);
    let oom: Vec<&serde_json::Value> = trials.iter().filter(|t| t["status"] == "failed").collect();
    assert!(!oom.is_empty(), "the OOM region was tried: {journal}");
    for t in &oom {
        assert!(t["knobs"]["budget"].as_i64().unwrap() > 3000, "{t}");
        assert!(
            t["message"].as_str().unwrap().starts_with("out of memory"),
            "{t}"
        );
    }
    let best = trials
        .iter()
        .filter(|t| t["status"] == "ok")
        .map(|t| t["objective"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert!(
        best < default_p99,
        "best p99 TTFT {best} is not below the default's {default_p99}\n{stdout}"
    );
    eprintln!(
        "default p99 TTFT {default_p99:.4} s, best {best:.4} s ({:.2}× the default)\n{stdout}",
        best / default_p99
    );
    // The server of every trial was stopped: the port is free again.
    assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
}

#[test]
fn tuning_a_server_without_server_cmd_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args([
            "tune",
            "--engine",
            "http://127.0.0.1:9",
            "--space",
            "budget=256..1024",
        ])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stderr(contains("--server-cmd"));
}

#[test]
fn bench_server_cmd_starts_benchmarks_and_stops_the_server_and_names_an_oom() {
    let dir = tempfile::tempdir().unwrap();
    let bin = assert_cmd::cargo::cargo_bin("fuselab");
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    fuselab(dir.path())
        .args(["bench", "--engine", &url, "--out", "run"])
        .args([
            "--server-cmd",
            &format!("exec {} serve --engine null --port {port}", bin.display()),
        ])
        .args(WORKLOAD)
        .assert()
        .success()
        .stdout(contains("16 requests (16 ok)"));
    assert!(dir.path().join("run/server.log").is_file());
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "the server was stopped"
    );
    fuselab(dir.path())
        .args(["bench", "--engine", &url, "--out", "oom"])
        .args([
            "--server-cmd",
            "echo 'RuntimeError: CUDA out of memory' >&2; exit 1",
        ])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stderr(contains(
            "out of memory: the server exited before it was ready",
        ));
    fuselab(dir.path())
        .args(["bench", "--engine", "sim", "--server-cmd", "true"])
        .args(WORKLOAD)
        .assert()
        .code(2)
        .stderr(contains("--server-cmd"));
}
