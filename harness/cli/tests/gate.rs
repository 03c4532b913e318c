//! `fuselab gate` end to end on run folders written with the run store.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use fuselab_reports::synth::{SynthConfig, synth_run};
use predicates::prelude::*;

/// Writes a synthetic run folder; `slow` stretches every token time.
fn write_run(dir: &Path, name: &str, noise_seed: u64, slow: f64) -> PathBuf {
    let cfg = SynthConfig {
        requests: 200,
        noise_seed,
        tpot_s: 0.03 * slow,
        prefill_s_per_token: 0.0002 * slow,
        step_s: 0.1,
        ..Default::default()
    };
    let run = synth_run(name, &cfg);
    let path = dir.join(name);
    fuselab_store::write_run(&path, false, &run.summary, &run.requests, &run.steps).unwrap();
    path
}

fn fuselab() -> Command {
    let mut c = Command::cargo_bin("fuselab").unwrap();
    c.env_remove("FUSELAB_BASELINES");
    c
}

#[test]
fn a_run_gated_against_itself_passes() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 1, 1.0);
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&a)
        .args(["--resamples", "200"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("| ttft_p50 | ms | lower |"))
        .stdout(predicate::str::contains("PASS"))
        .stdout(predicate::str::contains("regressed").not());
}

#[test]
fn a_slower_candidate_fails_with_markdown_and_junit() {
    let tmp = tempfile::tempdir().unwrap();
    let base = write_run(tmp.path(), "base", 1, 1.0);
    let cand = write_run(tmp.path(), "cand", 2, 1.15);
    let md = tmp.path().join("summary.md");
    let junit = tmp.path().join("junit.xml");
    std::fs::write(&md, "# earlier step\n").unwrap();
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&base)
        .arg("--candidate")
        .arg(&cand)
        .args(["--resamples", "200", "--markdown"])
        .arg(&md)
        .arg("--junit")
        .arg(&junit)
        .assert()
        .code(1)
        .stdout(
            predicate::str::contains("| output_throughput |")
                .and(predicate::str::contains("**regressed**")),
        )
        .stderr(
            predicate::str::contains("FAIL").and(predicate::str::contains("output_throughput")),
        );
    let md = std::fs::read_to_string(md).unwrap();
    assert!(
        md.starts_with("# earlier step\n## fuselab gate: FAIL"),
        "{md}"
    );
    let xml = std::fs::read_to_string(junit).unwrap();
    assert!(xml.contains("<testcase classname=\"fuselab.gate\" name=\"output_throughput\""));
    assert!(xml.contains("<failure type=\"regression\" message=\"output_throughput regressed\">"));
    assert_eq!(xml.matches("<testcase ").count(), 13);
}

#[test]
fn save_baseline_then_gate_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("baselines");
    let a = write_run(tmp.path(), "a", 1, 1.0);
    let b = write_run(tmp.path(), "b", 2, 1.0);
    fuselab()
        .env("FUSELAB_BASELINES", &store)
        .args(["gate", "--save-baseline", "main", "--candidate"])
        .arg(&a)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("saved baseline \"main\""));
    assert!(store.join("main/summary.json").is_file());
    fuselab()
        .env("FUSELAB_BASELINES", &store)
        .args(["gate", "--baseline", "main", "--candidate"])
        .arg(&b)
        .args(["--resamples", "200"])
        .assert()
        .code(0)
        .stdout(predicate::str::contains("Baseline: `a`"));
    fuselab()
        .env("FUSELAB_BASELINES", &store)
        .args(["gate", "--baseline", "nightly", "--candidate"])
        .arg(&b)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("no baseline \"nightly\"")
                .and(predicate::str::contains("--save-baseline")),
        );
}

#[test]
fn a_missing_run_folder_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 1, 1.0);
    let missing = tmp.path().join("no-such-run");
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&missing)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("cannot read candidate run")
                .and(predicate::str::contains("no-such-run")),
        );
}

#[test]
fn a_schema_version_mismatch_exits_2_naming_both_versions() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 1, 1.0);
    let b = write_run(tmp.path(), "b", 2, 1.0);
    let summary = b.join("summary.json");
    let text = std::fs::read_to_string(&summary).unwrap();
    std::fs::write(
        &summary,
        text.replacen(
            &format!("\"schema_version\": {}", fuselab_core::SCHEMA_VERSION),
            &format!("\"schema_version\": {}", fuselab_core::SCHEMA_VERSION + 1),
            1,
        ),
    )
    .unwrap();
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&b)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains(format!(
                "schema version {}",
                fuselab_core::SCHEMA_VERSION + 1
            ))
            .and(predicate::str::contains(format!(
                "version {}",
                fuselab_core::SCHEMA_VERSION
            ))),
        );
}

#[test]
fn an_unknown_threshold_metric_exits_2_listing_valid_metrics() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 1, 1.0);
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&a)
        .args(["--threshold", "latency=5%"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("unknown metric \"latency\"")
                .and(predicate::str::contains("ttft_p50"))
                .and(predicate::str::contains("effective_throughput")),
        );
}

#[test]
fn different_hardware_is_refused_unless_allowed() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 1, 1.0);
    let b = write_run(tmp.path(), "b", 2, 1.0);
    let summary = b.join("summary.json");
    let text = std::fs::read_to_string(&summary).unwrap();
    std::fs::write(
        &summary,
        text.replacen("\"hardware\": \"none\"", "\"hardware\": \"h200\"", 1),
    )
    .unwrap();
    fuselab()
        .args(["gate", "--baseline"])
        .arg(&a)
        .arg("--candidate")
        .arg(&b)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("hardware")
                .and(predicate::str::contains("--allow-hardware-mismatch")),
        );
    fuselab()
        .args([
            "gate",
            "--allow-hardware-mismatch",
            "--resamples",
            "100",
            "--baseline",
        ])
        .arg(&a)
        .arg("--candidate")
        .arg(&b)
        .assert()
        .code(0)
        .stderr(predicate::str::contains("warning: different hardware"));
}
