//! `fuselab bench`, `sweep` and `run` through the binary (issue 3): run folders,
//! sweep folders, the default experiment and every bad-input path.

use predicates::prelude::*;
use predicates::str::contains;

mod common;
use common::{fuselab, summary};

const SMALL: [&str; 6] = ["--preset", "fastgen-2600", "--n", "48", "--seed", "3"];

#[test]
fn bench_writes_a_complete_run_folder_with_the_documented_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args([
            "bench",
            "--engine",
            "sim",
            "--hardware",
            "h200",
            "--model",
            "llama3-8b",
        ])
        .args([
            "--policy",
            "splitfuse",
            "--knob",
            "budget=1024",
            "--rate",
            "2",
        ])
        .args(SMALL)
        .args(["--slo", "fastgen:4", "--out", "runs/sf"])
        .assert()
        .success()
        .stdout(contains("splitfuse").and(contains("TTFT p99")));
    let run = tmp.path().join("runs/sf");
    for f in [
        "summary.json",
        "requests.parquet",
        "tokens.parquet",
        "steps.parquet",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let s = summary(&run);
    assert_eq!(s["schema_version"], fuselab_core::SCHEMA_VERSION);
    assert_eq!(s["provenance"]["engine"]["policy"], "splitfuse");
    assert_eq!(s["provenance"]["engine"]["knobs"]["budget"], 1024);
    assert_eq!(s["provenance"]["seed"], 3);
    let m = &s["metrics"];
    assert_eq!(m["requests"], 48);
    assert_eq!(m["completed"], 48);
    for key in ["ttft_s", "tpot_s", "itl_s", "e2e_s"] {
        for q in ["mean", "p50", "p90", "p99"] {
            assert!(m[key][q].as_f64().unwrap() > 0.0, "{key}.{q}");
        }
    }
    for key in [
        "request_throughput",
        "output_token_throughput",
        "total_token_throughput",
        "goodput",
        "slo_attainment",
    ] {
        assert!(m[key].as_f64().unwrap() > 0.0, "{key}");
    }
    for k in ["2", "4", "6"] {
        assert!(
            m["effective_throughput"][k].as_f64().is_some(),
            "effective_throughput.{k}"
        );
    }
    let engine = &m["engine"];
    assert!(engine["steps"].as_u64().unwrap() > 0);
    assert_eq!(engine["padding_tokens"], 0, "splitfuse never pads");
}

#[test]
fn the_same_seed_gives_the_same_metrics_and_static_pads() {
    let tmp = tempfile::tempdir().unwrap();
    for out in ["a", "b"] {
        fuselab(tmp.path())
            .args(["bench", "--policy", "static", "--rate", "2"])
            .args(SMALL)
            .args(["--out", out])
            .assert()
            .success();
    }
    let (a, b) = (
        summary(&tmp.path().join("a")),
        summary(&tmp.path().join("b")),
    );
    assert_eq!(a["metrics"], b["metrics"]);
    assert!(a["metrics"]["engine"]["padding_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn bench_refuses_an_existing_run_folder_unless_forced() {
    let tmp = tempfile::tempdir().unwrap();
    let args = ["bench", "--rate", "4", "--out", "r"];
    fuselab(tmp.path())
        .args(args)
        .args(SMALL)
        .assert()
        .success();
    fuselab(tmp.path())
        .args(args)
        .args(SMALL)
        .assert()
        .code(2)
        .stderr(contains("--force"));
    fuselab(tmp.path())
        .args(args)
        .args(SMALL)
        .arg("--force")
        .assert()
        .success();
}

#[test]
fn bench_reads_its_flags_from_toml_and_rejects_unknown_keys() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("b.toml"),
        "policy = \"chunked\"\nknob = [\"budget=512\"]\nout = \"from-toml\"\n\n[engine]\nhardware = \"a100-80g\"\n\n[workload]\npreset = \"fastgen-1200\"\nn = 32\nrate = 1.0\n",
    )
    .unwrap();
    fuselab(tmp.path())
        .args(["bench", "--config", "b.toml"])
        .assert()
        .success();
    let s = summary(&tmp.path().join("from-toml"));
    assert_eq!(s["provenance"]["engine"]["hardware"], "a100-80g");
    assert_eq!(s["provenance"]["engine"]["knobs"]["budget"], 512);
    assert_eq!(s["provenance"]["workload"]["name"], "fastgen-1200");

    std::fs::write(tmp.path().join("bad.toml"), "polcy = \"static\"\n").unwrap();
    fuselab(tmp.path())
        .args(["bench", "--config", "bad.toml"])
        .assert()
        .code(2)
        .stderr(contains("polcy"));
}

#[test]
fn bad_engine_input_exits_2_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (
            &["--policy", "vllm"],
            "valid policies: static, continuous, chunked, splitfuse, prepack",
        ),
        (&["--knob", "budgett=5"], "budgett"),
        (&["--knob", "budget=-5"], "budget"),
        (&["--hardware", "tpu"], "h200"),
        (&["--model", "gpt5"], "llama3-8b"),
    ];
    for (args, message) in cases {
        fuselab(tmp.path())
            .arg("bench")
            .args(args)
            .args(SMALL)
            .args(["--out", "never"])
            .assert()
            .code(2)
            .stderr(contains(message));
    }
    assert!(!tmp.path().join("never/summary.json").exists());
}

#[test]
fn sweep_writes_a_curve_per_policy_and_finds_the_max_rate_under_the_slo() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["sweep", "--policies", "static,splitfuse", "--rates", "1,4"])
        .args(SMALL)
        .args(["--slo", "ttft=1s", "--find-max-under-slo", "--out", "sw"])
        .args(["--export", "w.jsonl"])
        .assert()
        .success()
        .stdout(contains("max rate under SLO").and(contains("ITL p99")));
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sw/sweep.json")).unwrap())
            .unwrap();
    let points = sweep["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for p in points {
        let run = tmp.path().join("sw").join(p["run"].as_str().unwrap());
        assert!(run.join("summary.json").is_file());
    }
    let exported = std::fs::read_to_string(tmp.path().join("w.jsonl")).unwrap();
    assert_eq!(
        exported.lines().count(),
        48,
        "the first load's workload, written once"
    );
    let curve = std::fs::read_to_string(tmp.path().join("sw/curve.txt")).unwrap();
    assert!(curve.contains("TTFT p90") && curve.contains("max rate under SLO"));
    let found = sweep["max_under_slo"].as_array().unwrap();
    assert_eq!(found.len(), 2);
    for f in found {
        assert_eq!(f["attainment_target"], 0.9);
        assert!(!f["probes"].as_array().unwrap().is_empty());
    }
}

#[test]
fn sweep_input_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--policies", "all"], "no loads given"),
        (
            &["--rates", "1,2", "--clients", "2"],
            "cannot be combined with --rates",
        ),
        (&["--rates", "1,-2"], "-2 is not a positive load"),
        (&["--rates", "1", "--find-max-under-slo"], "needs an SLO"),
    ];
    for (args, message) in cases {
        fuselab(tmp.path())
            .arg("sweep")
            .args(args)
            .args(SMALL)
            .args(["--out", "never"])
            .assert()
            .code(2)
            .stderr(contains(message));
    }
}

#[test]
fn run_prints_its_embedded_config_and_runs_an_edited_copy() {
    let tmp = tempfile::tempdir().unwrap();
    let out = fuselab(tmp.path())
        .args(["run", "--print-config"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("[sim]") && text.contains("fastgen-2600"));
    let cpu_at = text
        .find("\n[cpu]")
        .expect("the default experiment has a [cpu] part");
    let small = format!(
        "{}\n[cpu]\npolicies = \"static,splitfuse\"\nrate = 8.0\n[cpu.workload]\npreset = \"sharegpt-like\"\nn = 3\n",
        &text[..cpu_at]
    )
    .replace("n = 300", "n = 24")
    .replace("rates = [1, 2, 4, 8, 16]", "rates = [1, 8]");
    std::fs::write(tmp.path().join("exp.toml"), small).unwrap();
    fuselab(tmp.path())
        .args(["run", "--config", "exp.toml", "--out", "out"])
        .assert()
        .success()
        .stdout(contains("best eff@4").and(contains("splitfuse")));
    assert!(tmp.path().join("out/sim/sweep.json").is_file());
    let cpu: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("out/cpu/sweep.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cpu["points"].as_array().unwrap().len(), 2);
    assert_eq!(cpu["points"][0]["metrics"]["completed"], 3);
    let html = std::fs::read_to_string(tmp.path().join("out/report.html")).unwrap();
    assert!(html.contains("<svg") && !html.contains("http://") && !html.contains("https://"));
    // The embedded CPU part is a closed loop; giving it a rate as well is refused.
    assert!(text.contains("clients = 4") && text.contains("preset = \"cpu-small\""));
    let both = text.replace("clients = 4", "clients = 4\nrate = 2.0");
    std::fs::write(tmp.path().join("both.toml"), both).unwrap();
    fuselab(tmp.path())
        .args(["run", "--config", "both.toml", "--out", "both"])
        .assert()
        .code(2)
        .stderr(contains("[cpu]").and(contains("exactly one of `rate`")));
}

#[test]
fn long_presets_run_on_a_long_context_model_and_say_so() {
    let tmp = tempfile::tempdir().unwrap();
    let long = ["--preset", "long-32k", "--n", "16", "--seed", "1"];
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--model", "llama3.1-8b"])
        .args(long)
        .args(["--out", "given"])
        .assert()
        .success()
        .stdout(contains("16 requests (16 ok)"));
    let s = summary(&tmp.path().join("given"));
    assert_eq!(s["metrics"]["completed"], 16);
    assert_eq!(s["provenance"]["engine"]["knobs"]["max_len"], 131_072);
    // Without --model the preset picks its model, and says so.
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim"])
        .args(long)
        .args(["--out", "picked"])
        .assert()
        .success()
        .stdout(contains("16 requests (16 ok)"))
        .stderr(contains("model llama3.1-8b: the long-32k preset's model"));
    assert_eq!(
        summary(&tmp.path().join("picked"))["provenance"]["engine"]["model"],
        "llama3.1-8b"
    );
}

#[test]
fn a_workload_no_request_of_which_fits_exits_2_before_running_naming_a_model_that_fits() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--model", "llama3-8b"])
        .args(["--preset", "long-32k", "--n", "16", "--out", "r"])
        .assert()
        .code(2)
        .stderr(contains(
            "none of the 16 requests fits the 8192-token context of llama3-8b",
        ))
        .stderr(contains("--model llama3.1-8b (131072 tokens)"));
    assert!(
        !tmp.path().join("r/summary.json").exists(),
        "refused before running"
    );
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--knob", "max_len=1000"])
        .args(SMALL)
        .args(["--out", "k"])
        .assert()
        .code(2)
        .stderr(contains("invalid --knob max_len"))
        .stderr(contains("raise --knob max_len to"));
}

#[test]
fn rejected_requests_are_counted_with_their_most_common_reason() {
    let tmp = tempfile::tempdir().unwrap();
    // long-8k on Llama-3's 8192-token context: most requests do not fit.
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--model", "llama3-8b"])
        .args([
            "--preset", "long-8k", "--n", "50", "--seed", "1", "--out", "r",
        ])
        .assert()
        .success()
        .stderr(contains(
            "requests need more than the 8192-token context of llama3-8b",
        ))
        .stdout(contains("of 50 requests did not complete ("))
        .stdout(contains(" rejected); most common reason ("))
        .stdout(contains("exceed max_len 8192"));
}

#[test]
fn bench_exits_2_when_no_request_succeeds_and_keeps_the_run_folder() {
    let tmp = tempfile::tempdir().unwrap();
    // vLLM v0 without chunking cannot prefill a prompt longer than its budget.
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--policy", "continuous"])
        .args(["--knob", "budget=100"])
        .args(["--preset", "fastgen-2600", "--n", "5", "--out", "r"])
        .assert()
        .code(2)
        .stdout(contains("5 of 5 requests did not complete (5 rejected)"))
        .stderr(contains("none of the 5 requests succeeded"));
    assert_eq!(summary(&tmp.path().join("r"))["metrics"]["failed"], 5);
}

#[test]
fn knob_sets_start_from_a_published_systems_knobs_and_knob_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let knobs = |dir: &str| summary(&tmp.path().join(dir))["provenance"]["engine"]["knobs"].clone();
    let run = |extra: &[&str], out: &str| {
        fuselab(tmp.path())
            .args(["bench", "--engine", "sim", "--policy", "chunked"])
            .args(extra)
            .args(["--preset", "fastgen-2600", "--n", "8", "--out", out])
            .assert()
            .success();
    };
    run(&["--knobs-from", "sarathi"], "sarathi");
    assert_eq!(
        (
            knobs("sarathi")["budget"].clone(),
            knobs("sarathi")["max_seqs"].clone()
        ),
        (512.into(), 128.into())
    );
    run(&["--knobs-from", "vllm-v1"], "v1-h200");
    assert_eq!(knobs("v1-h200")["budget"], 8192);
    assert_eq!(knobs("v1-h200")["max_seqs"], 1024);
    run(
        &["--knobs-from", "vllm-v1", "--hardware", "a100-80g"],
        "v1-a100",
    );
    assert_eq!(knobs("v1-a100")["budget"], 2048);
    run(
        &["--knobs-from", "sarathi", "--knob", "budget=1024"],
        "override",
    );
    assert_eq!(knobs("override")["budget"], 1024);
    assert_eq!(knobs("override")["max_seqs"], 128);
    // The default is vLLM v0.6's chunked prefill.
    run(&[], "default");
    assert_eq!(knobs("default")["budget"], 2048);
    fuselab(tmp.path())
        .args(["bench", "--knobs-from", "orca", "--out", "bad"])
        .assert()
        .code(2)
        .stderr(contains("--knobs-from").and(contains("valid sets: sarathi, vllm-v1")));
}

/// Issue item 16: `sweep --repeat N` makes every point a repeat folder and
/// the curve the mean over its runs; the report and the gate read them.
#[test]
fn sweep_repeat_makes_every_point_a_repeat_folder() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["sweep", "--policies", "chunked", "--rates", "1,4"])
        .args(SMALL)
        .args(["--repeat", "2", "--out", "sw"])
        .assert()
        .success();
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tmp.path().join("sw/sweep.json")).unwrap())
            .unwrap();
    for p in sweep["points"].as_array().unwrap() {
        let point = tmp.path().join("sw").join(p["run"].as_str().unwrap());
        assert!(point.join("repeat.json").is_file());
        let rep: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(point.join("rep-2/summary.json")).unwrap(),
        )
        .unwrap();
        // Deterministic simulator: the mean of equal runs is each run.
        assert_eq!(
            p["metrics"]["request_throughput"],
            rep["metrics"]["request_throughput"]
        );
    }
    fuselab(tmp.path())
        .args(["report", "sw", "-o", "r.html"])
        .assert()
        .success();
    let html = std::fs::read_to_string(tmp.path().join("r.html")).unwrap();
    assert!(html.contains("2 repeated runs of one configuration"));
    fuselab(tmp.path())
        .args([
            "gate",
            "--resamples",
            "100",
            "--baseline",
            "sw/chunked/rate-4",
        ])
        .args(["--candidate", "sw/chunked/rate-4"])
        .assert()
        .code(0)
        .stdout(contains("runs resampled too"));
    fuselab(tmp.path())
        .args(["sweep", "--policies", "chunked", "--rates", "1"])
        .args(SMALL)
        .args(["--repeat", "0", "--out", "never"])
        .assert()
        .code(2)
        .stderr(contains("--repeat"));
}
