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
                spec_k: None,
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
            predicate::str::contains("cannot read run, sweep or campaign folder")
                .and(predicate::str::contains("nope")),
        );
}

/// `fuselab tune --objective-cmd` writes a campaign folder; `fuselab report`
/// draws its convergence, counts its trials by status (the command fails on
/// one knob value, so failures are data) and lists the best trials.
#[test]
fn report_of_a_tuning_campaign() {
    let tmp = tempfile::tempdir().unwrap();
    let campaign = tmp.path().join("campaigns/quad");
    Command::cargo_bin("fuselab")
        .unwrap()
        .args([
            "tune",
            "--objective-cmd",
            r#"if [ {blk} -eq 64 ]; then exit 3; fi; awk "BEGIN{print -({x1}-1)^2}""#,
            "--space",
            "x1=-3.0..3,blk=16|32|64",
            "--budget",
            "6",
            "--seed",
            "5",
        ])
        .arg("--out")
        .arg(&campaign)
        .assert()
        .success();
    let journal: Vec<serde_json::Value> = std::fs::read_to_string(campaign.join("trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(journal.len(), 6);
    let count = |s: &str| journal.iter().filter(|r| r["status"] == s).count();
    let best = journal
        .iter()
        .filter(|r| r["status"] == "ok")
        .max_by(|a, b| {
            let (x, y) = (a["objective"].as_f64(), b["objective"].as_f64());
            x.unwrap().total_cmp(&y.unwrap())
        })
        .map(|r| r["trial"].as_u64().unwrap());

    let out = tmp.path().join("r.html");
    let charts = tmp.path().join("charts");
    Command::cargo_bin("fuselab")
        .unwrap()
        .arg("report")
        .arg(&campaign)
        .arg("-o")
        .arg(&out)
        .arg("--charts")
        .arg(&charts)
        .assert()
        .code(0)
        .stdout(predicate::str::contains("charts: 1 SVG files"));
    let html = std::fs::read_to_string(&out).unwrap();
    assert!(html.contains("<h2>Tuning</h2>"));
    assert!(html.contains("<h3>Campaign quad</h3>"));
    assert!(html.contains("<figure id=\"chart-convergence-1\">"));
    for status in ["ok", "failed"] {
        let row = format!(
            "<tr><td>{status}</td><td class=\"num\">{}</td>",
            count(status)
        );
        assert!(html.contains(&row), "missing {row}");
    }
    if let Some(best) = best {
        let table = html.split("<table id=\"campaign-1-best\">").nth(1).unwrap();
        let first_row = table.split("<tr>").nth(2).unwrap();
        assert!(
            first_row.starts_with(&format!("<td class=\"num\">{best}</td><td>ok</td>")),
            "best trial {best} first: {first_row}"
        );
    }
    let svg = std::fs::read_to_string(charts.join("convergence-1.svg")).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("best so far"));
}
