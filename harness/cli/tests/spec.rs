//! Speculative decoding through the binary (issue 17): `bench --spec-k` on
//! the simulator (modelled acceptance) and the CPU engine (a measured draft),
//! provenance and metrics in the run folder, `sweep --spec k=…` with its
//! speculation table (snapshot), and every bad input exiting 2 with the flag
//! named.

use predicates::prelude::*;
use predicates::str::contains;

mod common;
use common::{fuselab, summary};

const SMALL: [&str; 6] = ["--preset", "fastgen-1200", "--n", "24", "--seed", "3"];

#[test]
fn bench_on_sim_records_modelled_acceptance_and_its_figures() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--policy", "chunked"])
        .args(["--spec-k", "4", "--spec-alpha", "0.8", "--rate", "2"])
        .args(SMALL)
        .args(["--out", "r"])
        .assert()
        .success()
        .stdout(contains("speculation: k=4 · draft llama3.2-1b").and(contains("(modelled α=0.8)")));
    let s = summary(&tmp.path().join("r"));
    let knobs = &s["provenance"]["engine"]["knobs"];
    assert_eq!(knobs["spec_k"], 4);
    assert_eq!(knobs["spec_acceptance"], "modelled");
    assert_eq!(knobs["spec_alpha"], 0.8);
    assert_eq!(knobs["spec_draft"], "llama3.2-1b");
    let spec = &s["metrics"]["engine"]["spec"];
    assert_eq!(spec["source"], "modelled α=0.8");
    let be = spec["block_efficiency"].as_f64().unwrap();
    let want = fuselab_engine::expected_block_efficiency(0.8, 4);
    assert!(be > 1.0 && be <= want * 1.05, "{be} vs {want}");
    let shares =
        spec["draft_time_share"].as_f64().unwrap() + spec["verify_time_share"].as_f64().unwrap();
    assert!((shares - 1.0).abs() < 1e-9);
    // The steps table carries the speculative columns.
    let steps = fuselab_store::RunFolder::open(tmp.path().join("r"))
        .unwrap()
        .read_steps()
        .unwrap();
    assert!(steps.iter().any(|s| s.spec_proposed > 0 && s.draft_s > 0.0));
}

#[test]
fn bench_on_cpu_measures_acceptance_with_a_perturbed_draft() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args([
            "bench", "--engine", "cpu", "--policy", "chunked", "--spec-k", "3",
        ])
        .args(["--draft-layers", "4", "--draft-noise", "0.01"])
        .args(["--preset", "cpu-small", "--n", "4", "--out", "r"])
        .assert()
        .success()
        .stdout(contains("(measured)"));
    let s = summary(&tmp.path().join("r"));
    let knobs = &s["provenance"]["engine"]["knobs"];
    assert_eq!(knobs["spec_acceptance"], "measured");
    assert!(
        knobs["spec_draft"]
            .as_str()
            .unwrap()
            .contains("first 4 of 4 layers, noise 0.01")
    );
    assert!(s["metrics"]["engine"]["spec"]["accepted"].as_u64().unwrap() > 0);
    assert_eq!(s["metrics"]["engine"]["spec"]["source"], "measured");
}

#[test]
fn bench_on_cpu_samples_at_a_temperature_with_speculative_sampling() {
    let tmp = tempfile::tempdir().unwrap();
    let run = |out: &str, extra: &[&str]| {
        fuselab(tmp.path())
            .args(["bench", "--engine", "cpu", "--policy", "chunked"])
            .args(["--temperature", "0.8", "--preset", "cpu-small", "--n", "4"])
            .args(extra)
            .args(["--out", out])
            .assert()
            .success();
        summary(&tmp.path().join(out))
    };
    let s = run("spec", &["--spec-k", "3", "--draft-noise", "0.05"]);
    assert_eq!(s["provenance"]["engine"]["knobs"]["temperature"], 0.8);
    let accepted = s["metrics"]["engine"]["spec"]["accepted"].as_u64().unwrap();
    let proposed = s["metrics"]["engine"]["spec"]["proposed"].as_u64().unwrap();
    assert!(
        accepted > 0 && accepted < proposed,
        "{accepted} of {proposed}"
    );
    let plain = run("plain", &[]);
    assert_eq!(
        plain["metrics"]["completed"], s["metrics"]["completed"],
        "every request completes either way"
    );
}

#[test]
fn bad_speculation_flags_exit_2_naming_the_flag() {
    let tmp = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 15] = [
        (&["--engine", "sim", "--spec-k", "4"], "--spec-alpha"),
        (
            &["--engine", "sim", "--spec-k", "17", "--spec-alpha", "0.5"],
            "--spec-k",
        ),
        (
            &["--engine", "sim", "--spec-k", "2", "--spec-alpha", "1.5"],
            "--spec-alpha",
        ),
        (&["--engine", "sim", "--spec-alpha", "0.5"], "--spec-alpha"),
        (
            &[
                "--engine",
                "sim",
                "--spec-k",
                "2",
                "--spec-alpha",
                "0.5",
                "--draft",
                "nope",
            ],
            "--draft",
        ),
        (
            &["--engine", "cpu", "--spec-k", "2", "--draft-noise", "-1"],
            "--draft-noise",
        ),
        (
            &["--engine", "cpu", "--spec-k", "2", "--draft-layers", "9"],
            "--draft-layers",
        ),
        (
            &[
                "--engine",
                "sim",
                "--spec-k",
                "2",
                "--spec-alpha",
                "0.5",
                "--draft-layers",
                "2",
            ],
            "--draft-layers",
        ),
        (
            &[
                "--engine",
                "cuda",
                "--spec-k",
                "2",
                "--draft",
                "llama3.2-1b",
            ],
            "--draft: the CUDA engine cannot run llama3.2-1b",
        ),
        (
            &[
                "--engine",
                "cuda",
                "--spec-k",
                "2",
                "--draft",
                "llama3.2-1b-h128",
                "--draft-noise",
                "0.1",
            ],
            "--draft-noise: shapes a draft made from the target",
        ),
        (
            &["--engine", "cuda", "--spec-k", "2", "--draft-layers", "40"],
            "--draft-layers: 40 layers, but llama3-8b has 32",
        ),
        (
            &["--engine", "null", "--spec-k", "2"],
            "not supported on null yet",
        ),
        (
            &["--engine", "cpu", "--temperature", "0"],
            "--temperature: 0 is not a temperature > 0",
        ),
        (
            &["--engine", "sim", "--temperature", "0.7"],
            "--temperature: does not apply to --engine sim",
        ),
        (
            &[
                "--engine",
                "cpu",
                "--spec-k",
                "2",
                "--spec-alpha",
                "0.5",
                "--temperature",
                "0.7",
            ],
            "--spec-alpha: a modelled acceptance coin",
        ),
    ];
    for (args, flag) in cases {
        let preset = if args[1] == "cpu" {
            "cpu-small"
        } else {
            "fastgen-1200"
        };
        fuselab(tmp.path())
            .arg("bench")
            .args(args)
            .args(["--preset", preset, "--n", "4", "--out", "never"])
            .assert()
            .code(2)
            .stderr(contains(flag));
        assert!(!tmp.path().join("never/summary.json").exists(), "{args:?}");
    }
    fuselab(tmp.path())
        .args([
            "sweep",
            "--engine",
            "sim",
            "--spec",
            "k=0,x",
            "--spec-alpha",
            "0.5",
        ])
        .args(["--clients", "1", "--preset", "fastgen-1200", "--n", "4"])
        .assert()
        .code(2)
        .stderr(contains("--spec"));
}

#[test]
fn sweep_over_k_reports_speed_up_and_where_it_stops_paying() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["sweep", "--engine", "sim", "--policies", "chunked"])
        .args([
            "--spec",
            "k=0,4",
            "--spec-alpha",
            "0.9",
            "--clients",
            "1,64",
        ])
        .args([
            "--preset",
            "fastgen-1200",
            "--n",
            "64",
            "--seed",
            "5",
            "--out",
            "s",
        ])
        .assert()
        .success()
        .stdout(contains("speed-up E2E"));
    let curve = std::fs::read_to_string(tmp.path().join("s/curve.txt")).unwrap();
    let spec = &curve[curve.find("policy   k").expect("the speculation table")..];
    insta::assert_snapshot!("sweep_spec_table", spec);
    for run in ["chunked-k0/clients-1", "chunked-k4/clients-64"] {
        assert!(
            tmp.path()
                .join("s")
                .join(run)
                .join("summary.json")
                .is_file()
        );
    }
}

#[test]
fn tune_searches_the_draft_length_with_the_other_knobs() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args([
            "tune",
            "--engine",
            "sim",
            "--policy",
            "chunked",
            "--spec-alpha",
            "0.9",
        ])
        .args([
            "--space",
            "spec_k=0..8,budget=256..4096:log",
            "--objective",
            "p99-e2e",
        ])
        .args([
            "--budget",
            "6",
            "--preset",
            "fastgen-1200",
            "--n",
            "32",
            "--clients",
            "4",
        ])
        .args(["--out", "c"])
        .assert()
        .success()
        .stdout(contains("best: spec_k="));
    let journal = std::fs::read_to_string(tmp.path().join("c/trials.jsonl")).unwrap();
    let mut ks = std::collections::BTreeSet::new();
    for line in journal.lines() {
        let t: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(t["status"], "ok", "{line}");
        let k = t["knobs"]["spec_k"].as_u64().unwrap();
        ks.insert(k);
        let run = tmp.path().join("c").join(t["run"].as_str().unwrap());
        let s = summary(&run);
        let knobs = &s["provenance"]["engine"]["knobs"];
        if k > 0 {
            assert_eq!(knobs["spec_k"], k);
            assert_eq!(knobs["spec_acceptance"], "modelled");
        } else {
            assert!(knobs.get("spec_k").is_none());
        }
    }
    assert!(ks.len() >= 3, "the tuner tried {ks:?}");
}
