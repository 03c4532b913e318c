//! The HTML report from synthetic runs and a synthetic sweep: self-contained,
//! escaped, bounded in size, with the expected charts.

use std::collections::BTreeMap;
use std::path::Path;

use fuselab_core::{LoadKind, SCHEMA_VERSION, SweepPoint, SweepSummary};
use fuselab_reports::synth::{SynthConfig, synth_run};
use fuselab_reports::{
    CampaignData, LineStyle, ReportInput, SweepData, TrialStatus, load_input, render_report,
    report_charts,
};

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
                spec_k: None,
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
        ReportInput::Campaign(
            CampaignData::parse("tune-bo", CAMPAIGN_1, &trials_1(true), Path::new("tune-bo"))
                .unwrap(),
        ),
    ]
}

/// `campaign.json` of a one-objective campaign with an outcome constraint and
/// a knob named `<b>` (names are user input).
const CAMPAIGN_1: &str = r#"{
  "schema": 1,
  "problem": {
    "space": {
      "params": [
        {"name": "<b>", "domain": {"kind": "int", "lo": 1, "hi": 9, "log": false}},
        {"name": "x", "domain": {"kind": "float", "lo": 0.0, "hi": 1.0, "log": false}}
      ],
      "constraints": []
    },
    "objectives": [{"name": "goodput", "direction": "maximize"}],
    "constraints": [{"name": "p99_e2e_s", "upper": true, "threshold": 2.0}]
  },
  "tuner": "bo",
  "seed": 7,
  "objective": "command: ./bench.sh {<b>} {x}"
}"#;

/// Six trials (ok, infeasible, failed, timeout), optionally followed by a
/// torn line as a kill mid-write leaves it.
fn trials_1(torn: bool) -> String {
    let mut s = String::new();
    let rows: [(u32, f64, &str, &str, &str); 6] = [
        (2, 0.5, "1.5", r#"{"p99_e2e_s":1.2}"#, "ok"),
        (4, 0.25, "2.5", r#"{"p99_e2e_s":1.5}"#, "ok"),
        (8, 0.9, "4.0", r#"{"p99_e2e_s":3.1}"#, "infeasible"),
        (3, 0.1, "null", "{}", "failed"),
        (5, 0.75, "3.25", r#"{"p99_e2e_s":1.9}"#, "ok"),
        (9, 0.0, "null", "{}", "timeout"),
    ];
    for (i, (b, x, obj, cons, status)) in rows.iter().enumerate() {
        let message = match *status {
            "failed" => r#","message":"exit status 1: <oops>""#,
            "timeout" => r#","message":"passed 1s""#,
            _ => "",
        };
        s.push_str(&format!(
            "{{\"trial\":{i},\"knobs\":{{\"<b>\":{b},\"x\":{x}}},\"objective\":{obj},\"constraints\":{cons},\"status\":\"{status}\",\"run\":\"runs/{i:04}\",\"duration_s\":0.5{message}}}\n"
        ));
    }
    if torn {
        s.push_str(r#"{"trial":6,"knobs":{"<b>":"#);
    }
    s
}

fn write_campaign(dir: &Path, campaign: &str, trials: &str) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("campaign.json"), campaign).unwrap();
    std::fs::write(dir.join("trials.jsonl"), trials).unwrap();
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
        "convergence-1",
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

#[test]
fn a_campaign_folder_renders_its_convergence_escaped_and_tolerates_a_torn_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("tune-bo");
    write_campaign(&dir, CAMPAIGN_1, &trials_1(true));
    let input = load_input(&dir).unwrap();
    let ReportInput::Campaign(c) = &input else {
        panic!("a folder with trials.jsonl is a campaign: {input:?}");
    };
    assert_eq!(c.name, "tune-bo");
    assert_eq!(c.trials.len(), 6, "the torn 7th line is left out");
    assert_eq!(c.torn_bytes, r#"{"trial":6,"knobs":{"<b>":"#.len());
    assert_eq!(c.trials[2].status, TrialStatus::Infeasible);
    // Best feasible so far: the infeasible 4.0 does not count.
    assert_eq!(
        c.best_so_far(0),
        vec![(0, 1.5), (1, 2.5), (2, 2.5), (3, 2.5), (4, 3.25), (5, 3.25)]
    );
    let best: Vec<usize> = c.best_trials(10).iter().map(|t| t.trial).collect();
    assert_eq!(best, vec![4, 1, 0]);

    let charts = report_charts(std::slice::from_ref(&input));
    let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["convergence-1"], "one objective: no Pareto chart");
    let conv = &charts[0];
    let styles: Vec<(&str, LineStyle, usize)> = conv
        .series
        .iter()
        .map(|s| (s.label.as_str(), s.style, s.points.len()))
        .collect();
    assert_eq!(
        styles,
        vec![
            ("ok", LineStyle::Markers, 3),
            ("infeasible", LineStyle::Hollow, 1),
            ("failed / timeout / crashed", LineStyle::Cross, 2),
            // 6 trials plus one extra corner per improvement (2).
            ("best so far", LineStyle::Plain, 8),
        ]
    );
    // Failed trials sit on the lowest value drawn.
    assert!(conv.series[2].points.iter().all(|p| p.1 == 1.5));
    assert!(conv.to_svg().unwrap().contains("best so far"));

    let html = render_report(&[input], "campaign").unwrap();
    assert!(html.contains("<figure id=\"chart-convergence-1\">"));
    assert!(html.contains("<a href=\"#tuning\">Tuning</a>"));
    assert!(!html.contains("<b>"), "raw knob name in the report");
    assert!(
        !html.contains("<oops>"),
        "raw failure message in the report"
    );
    assert!(html.contains("<th>&lt;b&gt;</th>"));
    assert!(html.contains("<code>&lt;b&gt;</code>"));
    assert!(html.contains("exit status 1: &lt;oops&gt;"));
    assert!(html.contains("last journal line was torn"));
    assert!(html.contains("<table id=\"campaign-1-best\">"));
    assert!(!html.contains("chart-pareto"));
    assert_eq!(
        html.matches("<svg ").count(),
        html.matches("</svg>").count()
    );
}

#[test]
fn a_two_objective_campaign_gets_a_pareto_chart_with_the_front_highlighted() {
    let meta = CAMPAIGN_1
        .replace(
            r#"[{"name": "goodput", "direction": "maximize"}]"#,
            r#"[{"name": "throughput", "direction": "maximize"}, {"name": "p99 <latency>", "direction": "minimize"}]"#,
        )
        .replace(
            r#"[{"name": "p99_e2e_s", "upper": true, "threshold": 2.0}]"#,
            "[]",
        );
    // (throughput ↑, latency ↓): 0, 1 and 4 trade off; 2 is dominated by 1;
    // 3 by 4; 5 failed.
    let pts = [
        ("[10.0,1.0]", "ok"),
        ("[20.0,2.0]", "ok"),
        ("[15.0,2.5]", "ok"),
        ("[25.0,4.0]", "ok"),
        ("[30.0,3.0]", "ok"),
        ("null", "crashed"),
    ];
    let mut journal = String::new();
    for (i, (obj, status)) in pts.iter().enumerate() {
        let (objective, objectives) = if *obj == "null" {
            ("null".to_string(), String::new())
        } else {
            (
                obj.trim_start_matches('[')
                    .split(',')
                    .next()
                    .unwrap()
                    .to_string(),
                format!(",\"objectives\":{obj}"),
            )
        };
        journal.push_str(&format!(
            "{{\"trial\":{i},\"knobs\":{{\"<b>\":{},\"x\":0.5}},\"objective\":{objective}{objectives},\"constraints\":{{}},\"status\":\"{status}\",\"run\":null,\"duration_s\":1.0}}\n",
            i + 1
        ));
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pareto");
    write_campaign(&dir, &meta, &journal);
    let input = load_input(&dir).unwrap();
    let ReportInput::Campaign(c) = &input else {
        panic!("not a campaign");
    };
    assert_eq!(c.pareto_front(), vec![0, 1, 4]);
    let charts = report_charts(std::slice::from_ref(&input));
    let ids: Vec<&str> = charts.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, vec!["convergence-1-1", "convergence-1-2", "pareto-1"]);
    let pareto = &charts[2];
    let front = pareto
        .series
        .iter()
        .find(|s| s.label == "Pareto front")
        .unwrap();
    assert_eq!(front.style, LineStyle::Solid);
    assert_eq!(front.points, vec![(10.0, 1.0), (20.0, 2.0), (30.0, 3.0)]);
    let dominated = pareto
        .series
        .iter()
        .find(|s| s.label == "dominated")
        .unwrap();
    assert_eq!(dominated.points, vec![(15.0, 2.5), (25.0, 4.0)]);
    // The minimised objective's best so far goes down, never up.
    let best = c.best_so_far(1);
    assert!(best.windows(2).all(|w| w[1].1 <= w[0].1));
    assert_eq!(best.last(), Some(&(5, 1.0)));

    let html = render_report(&[input], "pareto").unwrap();
    assert!(html.contains("<figure id=\"chart-pareto-1\">"));
    assert!(html.contains("<h3>Pareto-optimal trials</h3>"));
    assert!(html.contains("p99 &lt;latency&gt; ↓"));
    assert!(!html.contains("<latency>"));
    // Three front rows in the best-trials table.
    let table = html.split("<table id=\"campaign-1-best\">").nth(1).unwrap();
    let table = table.split("</table>").next().unwrap();
    assert_eq!(table.matches("<tr>").count(), 1 + 3);
}

#[test]
fn a_damaged_journal_is_an_error_naming_the_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("bad");
    let good = trials_1(false);
    let mut lines: Vec<&str> = good.lines().collect();
    lines.insert(2, "{not json");
    write_campaign(&dir, CAMPAIGN_1, &(lines.join("\n") + "\n"));
    let e = load_input(&dir).unwrap_err().to_string();
    assert!(e.contains("trials.jsonl:3"), "{e}");
    // A journal without its campaign.json cannot say what is maximised.
    std::fs::remove_file(dir.join("campaign.json")).unwrap();
    let e = load_input(&dir).unwrap_err().to_string();
    assert!(e.contains("campaign.json"), "{e}");
}

#[test]
fn a_campaign_without_trials_yet_renders_without_charts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fresh");
    write_campaign(&dir, CAMPAIGN_1, "");
    let input = load_input(&dir).unwrap();
    assert!(report_charts(std::slice::from_ref(&input)).is_empty());
    let html = render_report(&[input], "fresh").unwrap();
    assert!(html.contains("<h3>Campaign fresh</h3>"));
    assert!(html.contains("The journal holds no finished trial yet."));
    assert!(!html.contains("<figure"));
}

/// Issue item 15: a simulated H200 and a real CPU run never share axes or a
/// table, and legends sit in a column beside the plot.
#[test]
fn engines_and_hardware_get_their_own_charts_and_tables() {
    let mut sim = run("sim-run", "chunked", 8, 0.02);
    sim.summary.provenance.engine.engine = "sim".into();
    sim.summary.provenance.engine.hardware = Some("h200".into());
    let mut cpu = run("cpu-run", "chunked", 8, 0.9);
    cpu.summary.provenance.engine.engine = "cpu".into();
    cpu.summary.provenance.engine.hardware = Some("Xeon <x>".into());
    let inputs = [ReportInput::Run(sim), ReportInput::Run(cpu)];
    let html = render_report(&inputs, "mixed").unwrap();
    assert!(html.contains("<h3>simulated h200</h3>"));
    assert!(html.contains("<h3>cpu engine · Xeon &lt;x&gt;</h3>"));
    assert!(html.contains("<table id=\"summary-table\">"));
    assert!(html.contains("<table id=\"summary-table-2\">"));
    for id in [
        "ttft-vs-throughput",
        "effective-throughput",
        "ttft-cdf",
        "kv-utilisation",
    ] {
        for suffix in ["", "-2"] {
            assert!(
                html.contains(&format!("<figure id=\"chart-{id}{suffix}\">")),
                "missing chart {id}{suffix}"
            );
        }
    }
    let charts = report_charts(&inputs);
    let cdf = charts.iter().find(|c| c.id == "ttft-cdf-2").unwrap();
    assert!(
        cdf.title.ends_with("· cpu engine · Xeon <x>"),
        "{}",
        cdf.title
    );
    let labels: Vec<&str> = cdf.series.iter().map(|s| s.label.as_str()).collect();
    assert_eq!(labels, ["cpu-run"]);
    // Batch-composition charts stay numbered across groups.
    assert!(charts.iter().any(|c| c.id == "batch-composition-2"));
}

#[test]
fn twenty_legend_entries_sit_beside_the_plot_and_grow_the_chart() {
    let series = (0..20)
        .map(|i| fuselab_reports::Series {
            label: format!("series-{i:02}-with-a-rather-long-label-name"),
            color: i,
            style: LineStyle::Solid,
            points: vec![(0.0, f64::from(i as u32)), (1.0, f64::from(i as u32) + 1.0)],
        })
        .collect();
    let chart = fuselab_reports::Chart {
        id: "many".into(),
        title: "many".into(),
        x_label: "x".into(),
        y_label: "y".into(),
        kind: fuselab_reports::ChartKind::Lines,
        series,
        caption: String::new(),
    };
    let (w, h) = chart.size();
    assert!(h >= 70 + 20 * 18, "{h}");
    let svg = chart.to_svg().unwrap();
    // Every legend label (shortened from the front) is drawn right of the plot.
    for i in 0..20 {
        let tail = format!("{i:02}-with-a-rather-long-label-name");
        let at = svg
            .find(&tail)
            .unwrap_or_else(|| panic!("label {i} missing"));
        let open = svg[..at].rfind("<text").unwrap();
        let x: f64 = svg[open..at]
            .split("x=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        assert!(x > f64::from(w) - 260.0, "label {i} at x={x}");
    }
}
