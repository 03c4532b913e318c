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

/// A synthetic run labelled as the real-time `cpu` engine, with machine
/// noise `run_noise` between runs.
fn write_cpu_run(dir: &Path, name: &str, noise_seed: u64, run_noise: f64) -> PathBuf {
    let cfg = SynthConfig {
        requests: 150,
        noise_seed,
        run_noise,
        step_s: 0.1,
        ..Default::default()
    };
    let mut run = synth_run(name, &cfg);
    run.summary.provenance.engine.engine = "cpu".into();
    let path = dir.join(name);
    fuselab_store::write_run(&path, false, &run.summary, &run.requests, &run.steps).unwrap();
    path
}

/// Issue item 16: one run a side of a real-time engine is inconclusive until
/// the machine's noise floor is measured; then the gate widens the intervals
/// and passes identical code.
#[test]
fn single_real_time_runs_need_a_noise_floor() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("baselines");
    // rep-0 is 15% faster than rep-1: within a 20% machine noise.
    let a = write_cpu_run(tmp.path(), "a", 1, 0.0);
    let cfg = SynthConfig {
        requests: 150,
        noise_seed: 2,
        tpot_s: 0.03 * 1.12,
        prefill_s_per_token: 0.0002 * 1.12,
        step_s: 0.1,
        ..Default::default()
    };
    let mut b = synth_run("b", &cfg);
    b.summary.provenance.engine.engine = "cpu".into();
    let b_path = tmp.path().join("b");
    fuselab_store::write_run(&b_path, false, &b.summary, &b.requests, &b.steps).unwrap();
    let gate = |extra: &[&str]| {
        let mut c = fuselab();
        c.env("FUSELAB_BASELINES", &store)
            .args(["gate", "--resamples", "300", "--baseline"])
            .arg(&a)
            .arg("--candidate")
            .arg(&b_path)
            .args(extra);
        c
    };
    let junit = tmp.path().join("j.xml");
    gate(&["--junit", junit.to_str().unwrap()])
        .assert()
        .code(2)
        .stdout(predicate::str::contains("*inconclusive*"))
        .stderr(
            predicate::str::contains("INCONCLUSIVE")
                .and(predicate::str::contains("--measure-noise"))
                .and(predicate::str::contains("--repeat 3")),
        );
    assert!(
        std::fs::read_to_string(&junit)
            .unwrap()
            .contains("<error type=\"inconclusive\"")
    );
    // Two runs are too few for a floor.
    let noisy: Vec<PathBuf> = (0..4)
        .map(|i| write_cpu_run(tmp.path(), &format!("n{i}"), 10 + i, 0.2))
        .collect();
    fuselab()
        .env("FUSELAB_BASELINES", &store)
        .args(["gate", "--measure-noise", "--candidate"])
        .arg(&noisy[0])
        .arg("--candidate")
        .arg(&noisy[1])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("at least 3 runs"));
    let mut m = fuselab();
    m.env("FUSELAB_BASELINES", &store)
        .args(["gate", "--measure-noise"]);
    for n in &noisy {
        m.arg("--candidate").arg(n);
    }
    m.assert().code(0).stdout(
        predicate::str::contains("output_throughput")
            .and(predicate::str::contains("from 4 runs stored in")),
    );
    let floor: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(store.join("noise.json")).unwrap()).unwrap();
    assert_eq!(floor["floors"][0]["engine"], "cpu");
    assert_eq!(floor["floors"][0]["runs"], 4);
    gate(&[])
        .assert()
        .code(0)
        .stderr(predicate::str::contains(
            "widened by the run-to-run noise floor measured from 4 runs",
        ))
        .stdout(predicate::str::contains("inconclusive").not());
    // A corrupt floor file is a clear error.
    std::fs::write(
        store.join("noise.json"),
        "{\"schema_version\": 1, \"floor\": []}",
    )
    .unwrap();
    gate(&[]).assert().code(2).stderr(
        predicate::str::contains("noise.json").and(predicate::str::contains("--measure-noise")),
    );
}

/// `bench --repeat N` writes one configuration that `gate` accepts as a
/// folder and pools; a planted `--slowdown` is caught (the simulator is
/// deterministic, so this needs no wall clock).
#[test]
fn bench_repeat_folders_gate_as_one_configuration_and_slowdown_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let bench = |out: &str, extra: &[&str]| {
        let mut c = fuselab();
        c.current_dir(tmp.path())
            .args(["bench", "--engine", "sim", "--policy", "chunked"])
            .args([
                "--preset",
                "fastgen-2600",
                "--n",
                "24",
                "--rate",
                "3",
                "--seed",
                "5",
            ])
            .args(["--out", out])
            .args(extra);
        c
    };
    bench("base", &["--repeat", "3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("#3").and(predicate::str::contains("repeat folder")));
    let base = tmp.path().join("base");
    for k in 1..=3 {
        assert!(base.join(format!("rep-{k}/summary.json")).is_file());
    }
    let repeat: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(base.join("repeat.json")).unwrap()).unwrap();
    assert_eq!(
        repeat["runs"],
        serde_json::json!(["rep-1", "rep-2", "rep-3"])
    );
    bench("slow", &["--repeat", "2", "--slowdown", "1.25"])
        .assert()
        .success();
    let slow: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("slow/rep-1/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(slow["provenance"]["engine"]["knobs"]["slowdown"], 1.25);
    fuselab()
        .args(["gate", "--resamples", "200", "--baseline"])
        .arg(&base)
        .arg("--candidate")
        .arg(&base)
        .assert()
        .code(0)
        .stdout(
            predicate::str::contains("`base/rep-1`, `base/rep-2`, `base/rep-3` · candidate")
                .and(predicate::str::contains("runs resampled too")),
        );
    fuselab()
        .args(["gate", "--resamples", "200", "--baseline"])
        .arg(&base)
        .arg("--candidate")
        .arg(tmp.path().join("slow"))
        .assert()
        .code(1)
        .stderr(predicate::str::contains("FAIL").and(predicate::str::contains("tpot_p50")));
    // The report takes the repeat folder as one configuration.
    let html = tmp.path().join("r.html");
    fuselab()
        .args(["report"])
        .arg(&base)
        .arg("--output")
        .arg(&html)
        .assert()
        .success();
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(
        page.contains("3 repeated runs of one configuration"),
        "repeat note missing"
    );
    // Bad values name the flag.
    bench("bad", &["--repeat", "0"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--repeat"));
    bench("bad", &["--slowdown", "0.5"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--slowdown")
                .and(predicate::str::contains("between 1 and 100")),
        );
    fuselab()
        .current_dir(tmp.path())
        .args(["bench", "--engine", "null", "--slowdown", "1.1"])
        .args(["--preset", "fastgen-2600", "--n", "4"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--slowdown").and(predicate::str::contains("null")));
}
