//! `fuselab workload` through the binary: acceptance criteria of issue 2 and
//! every bad-input path (exit code 2, a clear message, no panic).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

fn fuselab() -> Command {
    Command::cargo_bin("fuselab").expect("the fuselab binary is built")
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/workload")
        .join(name)
}

/// Runs `fuselab workload ARGS --export <tmp>/NAME` and returns the exported bytes.
fn export(dir: &Path, name: &str, args: &[&str]) -> Vec<u8> {
    let path = dir.join(name);
    fuselab()
        .arg("workload")
        .args(args)
        .arg("--export")
        .arg(&path)
        .assert()
        .success()
        .stdout(contains("digest          sha256:"));
    std::fs::read(&path).expect("export written")
}

fn column(bytes: &[u8], key: &str) -> Vec<f64> {
    std::str::from_utf8(bytes)
        .expect("utf-8")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("valid JSON line");
            v[key].as_f64().expect("numeric field")
        })
        .collect()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

fn std_dev(xs: &[f64]) -> f64 {
    let m = mean(xs);
    (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt()
}

/// Asserts a workload error: exit code 2, `error:` with every fragment, no panic.
fn fails(args: &[&str], fragments: &[&str]) {
    let mut assert = fuselab()
        .arg("workload")
        .args(args)
        .assert()
        .code(2)
        .stderr(contains("error:"))
        .stderr(contains("panicked").not());
    for f in fragments {
        assert = assert.stderr(contains(*f));
    }
}

#[test]
fn fastgen_2600_acceptance() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--preset", "fastgen-2600", "--n", "10000", "--seed", "7"];
    let a = export(dir.path(), "a.jsonl", &args);
    assert_eq!(a.iter().filter(|&&b| b == b'\n').count(), 10_000);

    let prompt = column(&a, "prompt_len");
    let output = column(&a, "output_len");
    let (pm, ps) = (mean(&prompt), std_dev(&prompt));
    let (om, os) = (mean(&output), std_dev(&output));
    assert!((pm / 2600.0 - 1.0).abs() < 0.02, "prompt mean {pm}");
    assert!((ps / 780.0 - 1.0).abs() < 0.05, "prompt std {ps}");
    assert!((om / 60.0 - 1.0).abs() < 0.02, "output mean {om}");
    assert!((os / 18.0 - 1.0).abs() < 0.05, "output std {os}");

    // The same command again: identical bytes. Seed 8: different bytes.
    assert_eq!(export(dir.path(), "b.jsonl", &args), a);
    let c = export(
        dir.path(),
        "c.jsonl",
        &["--preset", "fastgen-2600", "--n", "10000", "--seed", "8"],
    );
    assert_ne!(c, a);
}

#[test]
fn poisson_rate_4_mean_interarrival() {
    let dir = tempfile::tempdir().unwrap();
    let out = fuselab()
        .args([
            "workload",
            "--preset",
            "fastgen-1200",
            "--n",
            "10000",
            "--seed",
            "7",
            "--rate",
            "4",
        ])
        .arg("--export")
        .arg(dir.path().join("w.jsonl"))
        .assert()
        .success()
        .stdout(contains("arrivals   poisson 4 req/s"))
        .stdout(contains("KS vs Exp(rate) D = "))
        .stdout(contains(": pass"))
        .get_output()
        .stdout
        .clone();
    let bytes = std::fs::read(dir.path().join("w.jsonl")).unwrap();
    let t = column(&bytes, "arrival_s");
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let m = mean(&gaps);
    assert!((m / 0.25 - 1.0).abs() < 0.03, "mean inter-arrival {m}");
    // The printed summary agrees with the file.
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains(&format!("mean {m:.6} s")), "{text}");
}

#[test]
fn gamma_burstiness_half_has_cv_sqrt2() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--preset",
        "fastgen-1200",
        "--n",
        "10000",
        "--rate",
        "4",
        "--arrivals",
        "gamma",
        "--burstiness",
        "0.5",
    ];
    let bytes = export(dir.path(), "g.jsonl", &args);
    let t = column(&bytes, "arrival_s");
    let gaps: Vec<f64> = t.windows(2).map(|w| w[1] - w[0]).collect();
    let cv = std_dev(&gaps) / mean(&gaps);
    assert!((cv / 2f64.sqrt() - 1.0).abs() < 0.05, "CV {cv}");
}

#[test]
fn changing_the_rate_keeps_lengths() {
    let dir = tempfile::tempdir().unwrap();
    let a = export(
        dir.path(),
        "a.jsonl",
        &["--preset", "long-8k", "--n", "200", "--rate", "1"],
    );
    let b = export(
        dir.path(),
        "b.jsonl",
        &["--preset", "long-8k", "--n", "200", "--rate", "9"],
    );
    assert_eq!(column(&a, "prompt_len"), column(&b, "prompt_len"));
    assert_eq!(column(&a, "output_len"), column(&b, "output_len"));
    assert_ne!(column(&a, "arrival_s"), column(&b, "arrival_s"));
}

#[test]
fn trace_round_trip_is_identity() {
    let dir = tempfile::tempdir().unwrap();
    let first = export(
        dir.path(),
        "first.jsonl",
        &[
            "--preset",
            "sharegpt-like",
            "--n",
            "300",
            "--prefix-groups",
            "3",
            "--prefix-len",
            "64",
            "--burstiness",
            "0.3",
        ],
    );
    let replay = dir.path().join("first.jsonl");
    let second = export(
        dir.path(),
        "second.jsonl",
        &["--trace", replay.to_str().unwrap()],
    );
    assert_eq!(second, first);
}

#[test]
fn trace_replay_summary() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = export(
        dir.path(),
        "t.jsonl",
        &["--trace", fixture("trace.jsonl").to_str().unwrap()],
    );
    let text = String::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    // Sorted by arrival, numbered in arrival order, prompt_tokens counted.
    assert_eq!(
        lines[1],
        r#"{"id":1,"arrival_s":0.250000,"prompt_len":2048,"output_len":64,"prefix_group":0,"prefix_len":32}"#
    );
    assert_eq!(
        lines[2],
        r#"{"id":2,"arrival_s":0.500000,"prompt_len":4,"output_len":8}"#
    );
}

#[test]
fn config_file_supplies_flags_and_command_line_wins() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = fixture("valid.toml");
    let from_file = export(dir.path(), "f.jsonl", &["--config", cfg.to_str().unwrap()]);
    let flags = export(
        dir.path(),
        "g.jsonl",
        &[
            "--preset",
            "fastgen-1200",
            "--n",
            "50",
            "--seed",
            "3",
            "--arrivals",
            "gamma",
            "--rate",
            "2",
            "--burstiness",
            "0.5",
            "--prefix-groups",
            "4",
            "--prefix-len",
            "100",
        ],
    );
    assert_eq!(from_file, flags);
    let over = export(
        dir.path(),
        "h.jsonl",
        &["--config", cfg.to_str().unwrap(), "--n", "20"],
    );
    assert_eq!(over.iter().filter(|&&b| b == b'\n').count(), 20);
    assert!(
        std::str::from_utf8(&over)
            .unwrap()
            .contains(r#""prefix_group":3,"prefix_len":100"#)
    );
}

#[test]
fn list_shows_every_preset_with_parameters() {
    fuselab()
        .args(["workload", "--list"])
        .assert()
        .success()
        .stdout(contains("fastgen-1200"))
        .stdout(contains("prompt    N(2600, 780) in [16, 7800]"))
        .stdout(contains("output    N(60, 18) in [1, 180]"))
        .stdout(contains("long-8k"))
        .stdout(contains("long-32k"))
        .stdout(contains("sharegpt-like"))
        .stdout(contains("h200-64"))
        .stdout(contains("n         64 (default)"));
}

#[test]
fn h200_64_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = export(dir.path(), "h.jsonl", &["--preset", "h200-64"]);
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 64);
    assert!(column(&bytes, "arrival_s").iter().all(|&t| t == 0.0));
    assert!(column(&bytes, "output_len").iter().all(|&o| o == 128.0));
}

#[test]
fn unknown_preset_lists_valid_ones() {
    fails(
        &["--preset", "fastgen-9000"],
        &[
            "unknown preset `fastgen-9000`",
            "fastgen-1200",
            "fastgen-2600",
            "long-8k",
            "long-32k",
            "sharegpt-like",
            "h200-64",
        ],
    );
}

#[test]
fn negative_rate() {
    fails(
        &["--preset", "fastgen-2600", "--rate", "-1"],
        &["invalid rate: -1 is not positive"],
    );
    fails(
        &["--preset", "fastgen-2600", "--rate=0"],
        &["invalid rate: 0 is not positive"],
    );
    fails(
        &["--preset", "fastgen-2600", "--rate", "NaN"],
        &["invalid rate: NaN"],
    );
}

#[test]
fn zero_requests() {
    fails(
        &["--preset", "fastgen-2600", "--n", "0"],
        &["invalid n: 0 requests", "--n N"],
    );
}

#[test]
fn malformed_jsonl_line_names_line_and_field() {
    let trace = fixture("malformed.jsonl");
    fails(
        &["--trace", trace.to_str().unwrap()],
        &[
            "malformed.jsonl:4: field `output_len`: expected a whole number",
            "\"many\"",
        ],
    );
}

#[test]
fn unknown_toml_key_names_file_and_key() {
    let cfg = fixture("unknown-key.toml");
    fails(
        &["--config", cfg.to_str().unwrap()],
        &["unknown-key.toml:3: unknown field `request-rate`"],
    );
}

#[test]
fn other_bad_input() {
    fails(&[], &["no workload given", "--preset NAME"]);
    fails(
        &["--preset", "long-8k", "--burstiness", "0"],
        &["invalid burstiness"],
    );
    fails(
        &["--preset", "long-8k", "--clients", "0"],
        &["invalid clients: 0 clients"],
    );
    fails(
        &["--preset", "long-8k", "--clients", "4", "--rate", "2"],
        &["invalid --rate", "closed-loop"],
    );
    fails(
        &["--preset", "long-8k", "--prefix-groups", "4"],
        &["--prefix-len"],
    );
    fails(
        &["--trace", "/nonexistent/t.jsonl"],
        &["cannot access /nonexistent/t.jsonl"],
    );
    fails(
        &["--config", "/nonexistent/c.toml"],
        &["cannot access /nonexistent/c.toml"],
    );
    let trace = fixture("trace.jsonl");
    fails(
        &["--trace", trace.to_str().unwrap(), "--rate", "3"],
        &["invalid --rate: cannot be combined with --trace"],
    );
    fails(
        &["--trace", trace.to_str().unwrap(), "--n", "9"],
        &["holds only 4"],
    );
    // clap rejects a non-number with exit code 2 as well.
    fuselab()
        .args(["workload", "--preset", "long-8k", "--n", "many"])
        .assert()
        .code(2);
}
