//! `fuselab bench` on the real-time engines (issue 4): the CPU engine runs
//! every policy through the same scheduler, the null engine measures the
//! harness, and bad weights exit 2 naming the tensor.

use std::path::Path;

use predicates::prelude::*;
use predicates::str::contains;

mod common;
use common::fuselab;

fn metrics(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    serde_json::from_str::<serde_json::Value>(&text).expect("JSON")["metrics"].clone()
}

/// Σ prompt tokens and Σ (output tokens − 1) of a workload, from its JSONL export.
fn implied_tokens(dir: &Path, workload: &[&str]) -> (u64, u64) {
    fuselab(dir)
        .arg("workload")
        .args(workload)
        .args(["--export", "implied.jsonl"])
        .assert()
        .success();
    let text = std::fs::read_to_string(dir.join("implied.jsonl")).unwrap();
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .fold((0, 0), |(p, d), r| {
            let out = r["output_len"].as_u64().unwrap();
            (p + r["prompt_len"].as_u64().unwrap(), d + out - 1)
        })
}

#[test]
fn the_cpu_engine_runs_every_policy_and_writes_the_same_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let workload = [
        "--preset",
        "sharegpt-like",
        "--n",
        "3",
        "--rate",
        "20",
        "--seed",
        "5",
    ];
    let (prompt_tokens, decode_tokens) = implied_tokens(tmp.path(), &workload);
    for policy in ["static", "continuous", "chunked", "splitfuse", "prepack"] {
        fuselab(tmp.path())
            .args(["bench", "--engine", "cpu", "--policy", policy])
            .args(workload)
            .args(["--out", policy])
            .assert()
            .success();
        let m = metrics(&tmp.path().join(policy));
        assert_eq!(m["completed"], 3, "{policy}");
        assert!(m["engine"]["steps"].as_u64().unwrap() > 0, "{policy}");
        // Every step is recorded, the last one too (it was once dropped).
        assert_eq!(m["engine"]["preemptions"], 0, "{policy}");
        assert_eq!(m["engine"]["decode_tokens"], decode_tokens, "{policy}");
        assert_eq!(m["engine"]["prefill_tokens"], prompt_tokens, "{policy}");
        for f in ["requests.parquet", "tokens.parquet", "steps.parquet"] {
            assert!(tmp.path().join(policy).join(f).is_file());
        }
    }
    let text = std::fs::read_to_string(tmp.path().join("static/summary.json")).unwrap();
    assert!(text.contains("\"weights\": \"random\""));
}

#[test]
fn the_null_engine_answers_every_request_with_its_token_count() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "null", "--preset", "fastgen-1200"])
        .args(["--n", "200", "--rate", "2000", "--out", "null"])
        .assert()
        .success();
    let m = metrics(&tmp.path().join("null"));
    assert_eq!(m["completed"], 200);
    assert!(m["engine"].is_null(), "the null engine has no steps");
}

#[test]
fn mis_shaped_weights_exit_2_naming_the_tensor_and_both_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("small.safetensors");
    fuselab_cpu::write_random_safetensors(&fuselab_cpu::ModelShape::small(), 1, &file).unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "cpu", "--model", "tiny", "--weights"])
        .arg(&file)
        .args(["--preset", "sharegpt-like", "--n", "1", "--out", "never"])
        .assert()
        .code(2)
        .stderr(contains("tensor model.").and(contains("has shape")));
    assert!(!tmp.path().join("never/summary.json").exists());
}

#[test]
fn engine_flags_that_do_not_apply_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, msg) in [
        (&["--engine", "cpu", "--hardware", "h200"][..], "--hardware"),
        (
            &["--engine", "sim", "--weights", "w.safetensors"][..],
            "--weights",
        ),
        (&["--engine", "cpu", "--timeout", "-1"][..], "--timeout"),
        (
            &["--engine", "sim", "--cuda-profile", "p.json"][..],
            "--cuda-profile",
        ),
        (
            &["--engine", "cpu", "--no-cuda-graphs"][..],
            "--no-cuda-graphs",
        ),
        (
            &["--engine", "sim", "--cuda-skinny-gemm"][..],
            "--cuda-skinny-gemm",
        ),
        (&["--engine", "cpu", "--cuda-pdl"][..], "--cuda-pdl"),
        (
            &["--engine", "cpu", "--cuda-prefill-tile", "r128"][..],
            "--cuda-prefill-tile",
        ),
        (
            &["--engine", "cuda", "--cuda-prefill-tile", "r1024"][..],
            "`r1024` is not a prefill tile",
        ),
    ] {
        fuselab(tmp.path())
            .arg("bench")
            .args(args)
            .args(["--preset", "sharegpt-like", "--n", "1", "--out", "never"])
            .assert()
            .code(2)
            .stderr(contains(msg));
    }
}

#[test]
fn the_cuda_engine_without_a_driver_exits_2_saying_so() {
    if fuselab_cuda::probe().is_ok() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED the_cuda_engine_without_a_driver_exits_2_saying_so: a CUDA driver is present"
        );
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "cuda", "--model", "tiny"])
        .args(["--preset", "sharegpt-like", "--n", "2", "--out", "never"])
        .assert()
        .code(2)
        .stderr(contains("no CUDA driver found (").and(contains("panicked").not()));
    assert!(!tmp.path().join("never/summary.json").exists());
}

#[test]
fn ctrl_c_writes_what_was_measured_then_exits_2() {
    use std::io::BufRead as _;
    let tmp = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("fuselab"))
        .current_dir(tmp.path())
        .args(["bench", "--engine", "null", "--preset", "sharegpt-like"])
        .args([
            "--n",
            "2000",
            "--rate",
            "20",
            "--arrivals",
            "constant",
            "--out",
            "cut",
        ])
        // The harness logs each send at debug level: interrupt after the third.
        .env("FUSELAB_LOG", "fuselab_harness=debug")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let (sent_tx, sent_rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let mut sends = 0;
        for line in stderr.lines().map_while(Result::ok) {
            if line.contains("request sent") {
                sends += 1;
                if sends == 3 {
                    let _ = sent_tx.send(());
                }
            }
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    sent_rx.recv().expect("the run sends requests");
    let status = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let code = child.wait().unwrap().code();
    let stderr = reader.join().unwrap();
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("cancelled by Ctrl-C"), "{stderr}");
    let m = metrics(&tmp.path().join("cut"));
    let n = m["requests"].as_u64().unwrap();
    assert!((3..2000).contains(&n), "{n} requests kept");
}

#[test]
fn warmup_and_window_select_the_measured_requests() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "null", "--preset", "sharegpt-like"])
        .args(["--n", "1000", "--rate", "100", "--arrivals", "constant"])
        .args(["--warmup", "0.5", "--window", "1", "--out", "w"])
        .assert()
        .success();
    let n = metrics(&tmp.path().join("w"))["requests"].as_u64().unwrap();
    assert!(
        (99..=101).contains(&n),
        "{n} measured requests, expected the 100 due in [0.5 s, 1.5 s)"
    );
    fuselab(tmp.path())
        .args([
            "bench",
            "--engine",
            "sim",
            "--warmup",
            "1",
            "--preset",
            "sharegpt-like",
        ])
        .args(["--n", "1", "--out", "never"])
        .assert()
        .code(2)
        .stderr(contains("--warmup"));
}

#[test]
fn the_null_engine_takes_a_delay_and_a_slowdown_and_refuses_bad_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |extra: &[&str], out: &str| {
        fuselab(tmp.path())
            .args(["bench", "--engine", "null", "--delay", "20ms,5ms"])
            .args(extra)
            .args(["--preset", "sharegpt-like", "--n", "5", "--rate", "50"])
            .args(["--out", out])
            .assert()
            .success();
        metrics(&tmp.path().join(out))
    };
    // The schedule itself is checked exactly under tokio's paused clock
    // (harness/runner/tests/realtime.rs); here the flags and provenance.
    let m = run(&[], "plain");
    assert_eq!(m["completed"], 5);
    let knobs = |d: &str| {
        let text = std::fs::read_to_string(tmp.path().join(d).join("summary.json")).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap()["provenance"]["engine"]["knobs"]
            .clone()
    };
    assert_eq!(knobs("plain")["delay_per_token_s"], 0.005);
    run(&["--slowdown", "2"], "slow");
    assert_eq!(knobs("slow")["slowdown"], 2.0);
    for (args, msg) in [
        (&["--delay", "5ms"][..], "is not FIRST,PER_TOKEN"),
        (&["--delay", "5ms,-1ms"][..], "is not a duration"),
        (
            &["--slowdown", "1.1"][..],
            "an instant null engine has nothing to slow",
        ),
    ] {
        fuselab(tmp.path())
            .args(["bench", "--engine", "null"])
            .args(args)
            .args(["--preset", "sharegpt-like", "--n", "2", "--out", "bad"])
            .assert()
            .code(2)
            .stderr(contains(msg));
    }
    fuselab(tmp.path())
        .args(["bench", "--engine", "cpu", "--delay", "5ms,1ms"])
        .args(["--preset", "sharegpt-like", "--n", "2", "--out", "bad"])
        .assert()
        .code(2)
        .stderr(contains("--delay").and(contains("null")));
}
