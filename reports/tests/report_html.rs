//! The HTML report from synthetic runs and a synthetic sweep: self-contained,
//! escaped, bounded in size, with the expected charts.

use std::collections::BTreeMap;

use fuselab_core::{LoadKind, SCHEMA_VERSION, SweepPoint, SweepSummary};
use fuselab_reports::synth::{SynthConfig, synth_run};
use fuselab_reports::{ReportInput, SweepData, render_report, report_charts};

fn run(name: &str, policy: &str, clients: usize, tpot: f64) -> fuselab_reports::RunData {
    synth_run(
        name,
        &SynthConfig {
            requests: 120,
            clients,
            tpot_s: tpot,
            policy: policy.into(),
            step_s: 0.05,
            failure_rate: if policy == "static" { 0.02 } else { 0.0 },
            ..Default::default()
        },
    )
}

fn sweep() -> SweepData {
    let mut points = Vec::new();
    let mut runs = BTreeMap::new();
    for (policy, tpot) in [("splitfuse", 0.02), ("static", 0.035)] {
        for clients in [2usize, 4, 8] {
            // Per-token time grows with the batch, as on a real engine.
            let r = run(
                &format!("{policy}-c{clients}"),
                policy,
                clients,
                tpot * (1.0 + 0.1 * clients as f64),
            );
            points.push(SweepPoint {
                policy: policy.into(),
                load: clients as f64,
                run: r.name().to_string(),
                metrics: r.summary.metrics.clone(),
            });
            runs.insert(r.name().to_string(), r);
        }
    }
    SweepData {
        summary: SweepSummary {
            schema_version: SCHEMA_VERSION,
            name: "clients-sweep".into(),
            load_kind: LoadKind::Clients,
            points,
            max_under_slo: Vec::new(),
        },
        runs,
        source: None,
    }
}

fn inputs() -> Vec<ReportInput> {
    let mut evil = run("evil <img src=x onerror=alert(1)>", "splitfuse", 8, 0.025);
    evil.summary
        .provenance
        .engine
        .knobs
        .insert("note".into(), serde_json::json!("<script>x</script>"));
    vec![
        ReportInput::Run(run("baseline-run", "splitfuse", 8, 0.02)),
        ReportInput::Run(evil),
        ReportInput::Sweep(sweep()),
    ]
}

/// The page's structure: headings, figures and table rows (tags stripped).
fn structure(html: &str) -> String {
    let mut out = Vec::new();
    let strip = |s: &str| {
        let mut t = String::new();
        let mut in_tag = false;
        for c in s.chars() {
            match c {
                '<' => in_tag = true,
                '>' => in_tag = false,
                c if !in_tag => t.push(c),
                _ => {}
            }
        }
        t
    };
    for line in html.lines() {
        let l = line.trim();
        if l.starts_with("<h1") || l.starts_with("<h2") || l.starts_with("<h3") {
            out.push(format!("{}: {}", &l[1..3], strip(l)));
        } else if let Some(rest) = l.strip_prefix("<figure id=\"") {
            out.push(format!("figure {}", rest.split('"').next().unwrap_or("")));
        } else if l.starts_with("<tr>") {
            let cells: Vec<String> = l
                .split("<t")
                .filter(|c| c.starts_with('d') || c.starts_with('h'))
                .filter(|c| !c.starts_with("head") && !c.starts_with("body"))
                .map(|c| strip(c.split_once('>').map_or("", |(_, rest)| rest)))
                .collect();
            out.push(format!("  row: {}", cells.join(" | ")));
        } else if l.starts_with("<div class=\"table-wrap\"><table id=\"") {
            out.push(format!("table {}", l.split('"').nth(3).unwrap_or("")));
        } else if l.starts_with("<p class=\"note") {
            out.push(format!("note: {}", strip(l)));
        }
    }
    out.join("\n")
}

#[test]
fn report_is_self_contained_escaped_and_has_every_chart() {
    let title = "<script>alert(1)</script>";
    let html = render_report(&inputs(), title).unwrap();
    // No URL of any kind: nothing to fetch, works offline.
    for bad in [
        "http://", "https://", "url(", "src=\"", "<link", "@import", "<iframe",
    ] {
        assert!(!html.contains(bad), "report contains {bad:?}");
    }
    // The title appears only escaped; no script element at all.
    assert!(!html.contains("<script"), "raw script tag in report");
    assert!(html.contains("<title>&lt;script&gt;alert(1)&lt;/script&gt;</title>"));
    assert!(html.contains("<h1>&lt;script&gt;alert(1)&lt;/script&gt;</h1>"));
    // User strings inside SVG text (legends) are escaped too.
    assert!(!html.contains("<img"));
    assert!(html.contains("evil &lt;img src=x onerror=alert(1)&gt;"));
    for id in [
        "ttft-vs-throughput",
        "tpot-vs-throughput",
        "effective-throughput",
        "ttft-cdf",
        "itl-cdf",
        "e2e-cdf",
        "batch-composition-1",
        "kv-utilisation",
    ] {
        assert!(
            html.contains(&format!("<figure id=\"chart-{id}\">")),
            "missing chart {id}"
        );
    }
    assert_eq!(
        html.matches("<svg ").count(),
        html.matches("</svg>").count()
    );
    insta::assert_snapshot!("report_structure", structure(&html));
}

#[test]
fn a_ten_thousand_request_run_stays_under_two_megabytes() {
    let big = synth_run(
        "big",
        &SynthConfig {
            requests: 10_000,
            clients: 64,
            output_mean: 128.0,
            step_s: 0.02,
            summary_metrics: false,
            ..Default::default()
        },
    );
    assert!(big.steps.len() > 5_000, "{} steps", big.steps.len());
    let html = render_report(&[ReportInput::Run(big)], "big").unwrap();
    eprintln!("10k-request report: {} bytes", html.len());
    assert!(html.len() < 2 * 1024 * 1024, "{} bytes", html.len());
}

#[test]
fn charts_render_as_standalone_svg_and_png() {
    let charts = report_charts(&inputs());
    assert!(charts.len() >= 8);
    for c in charts.iter().take(3) {
        let svg = c.to_svg().unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("xmlns="));
        let png = c.to_png().unwrap();
        assert_eq!(&png[..4], b"\x89PNG");
        // A chart with text and lines compresses, but not to nothing.
        assert!(png.len() > 5_000, "{} bytes", png.len());
    }
}
