//! `fuselab report` end to end on run and sweep folders written with the run store.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use fuselab_core::{LoadKind, SCHEMA_VERSION, SweepPoint, SweepSummary};
use fuselab_reports::synth::{SynthConfig, synth_run};
use predicates::prelude::*;

fn write_run(dir: &Path, name: &str, clients: usize, policy: &str) -> PathBuf {
    let cfg = SynthConfig {
        requests: 80,
        clients,
        step_s: 0.1,
        policy: policy.into(),
        ..Default::default()
    };
    let run = synth_run(name, &cfg);
    let path = dir.join(name);
    fuselab_store::write_run(&path, false, &run.summary, &run.requests, &run.steps).unwrap();
    path
}

fn write_sweep(dir: &Path) -> PathBuf {
    let sweep = dir.join("sweep");
    std::fs::create_dir_all(&sweep).unwrap();
    let mut points = Vec::new();
    for policy in ["splitfuse", "static"] {
        for clients in [2usize, 8] {
            let name = format!("{policy}-c{clients}");
            let path = write_run(&sweep, &name, clients, policy);
            let summary = fuselab_store::read_summary(&path).unwrap();
            points.push(SweepPoint {
                policy: policy.into(),
                load: clients as f64,
                run: name,
                metrics: summary.metrics,
            });
        }
    }
    let summary = SweepSummary {
        schema_version: SCHEMA_VERSION,
        name: "sweep".into(),
        load_kind: LoadKind::Clients,
        points,
        max_under_slo: Vec::new(),
    };
    fuselab_store::write_sweep(&sweep, &summary).unwrap();
    sweep
}

#[test]
fn report_of_runs_and_a_sweep_with_svg_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 8, "splitfuse");
    let sweep = write_sweep(tmp.path());
    let out = tmp.path().join("out/report.html");
    let charts = tmp.path().join("charts");
    Command::cargo_bin("fuselab")
        .unwrap()
        .arg("report")
        .arg(&a)
        .arg(&sweep)
        .args(["--title", "<b>cmp</b>", "-o"])
        .arg(&out)
        .arg("--charts")
        .arg(&charts)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("report: ").and(predicate::str::contains("charts: ")));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("<h1>&lt;b&gt;cmp&lt;/b&gt;</h1>"));
    assert!(html.contains("<figure id=\"chart-ttft-vs-throughput\">"));
    assert!(html.contains("<h3>Sweep sweep</h3>"));
    assert!(!html.contains("http"));
    for id in [
        "ttft-vs-throughput",
        "ttft-cdf",
        "itl-cdf",
        "e2e-cdf",
        "kv-utilisation",
        "batch-composition-1",
    ] {
        let svg = std::fs::read_to_string(charts.join(format!("{id}.svg"))).unwrap();
        assert!(svg.starts_with("<svg"), "{id}");
    }
}

#[test]
fn png_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let a = write_run(tmp.path(), "a", 8, "splitfuse");
    let charts = tmp.path().join("png");
    Command::cargo_bin("fuselab")
        .unwrap()
        .arg("report")
        .arg(&a)
        .arg("-o")
        .arg(tmp.path().join("r.html"))
        .arg("--charts")
        .arg(&charts)
        .args(["--format", "png"])
        .assert()
        .code(0);
    let png = std::fs::read(charts.join("ttft-cdf.png")).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn a_missing_folder_exits_2() {
    let tmp = tempfile::tempdir().unwrap();
    Command::cargo_bin("fuselab")
        .unwrap()
        .arg("report")
        .arg(tmp.path().join("nope"))
        .arg("-o")
        .arg(tmp.path().join("r.html"))
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("cannot read run or sweep folder")
                .and(predicate::str::contains("nope")),
        );
}
