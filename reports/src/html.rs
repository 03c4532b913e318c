//! The self-contained HTML report.

use std::fmt::Write as _;

use fuselab_core::{Metrics, RunSummary};
use fuselab_metrics::fastgen_key;

use crate::campaign::{Direction, KnobValue};
use crate::charts::{
    Chart, MAX_OVERLAY, detail_runs, effective_rate, engine_groups, group_suffix, report_charts,
};
pub use crate::charts::{MAX_CDF_POINTS, MAX_STEP_POINTS};
use crate::{ReportInput, Result, RunData, escape_html as esc};

const CSS: &str = r#"
:root { color-scheme: light; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       margin: 0 auto; max-width: 1180px; padding: 1.2rem 1.6rem 3rem; color: #1d2330; background: #fff; line-height: 1.45; }
header { border-bottom: 2px solid #0072b2; margin-bottom: 1rem; }
h1 { font-size: 1.7rem; margin: 0.2rem 0 0.3rem; overflow-wrap: anywhere; }
h2 { font-size: 1.3rem; margin-top: 2.2rem; border-bottom: 1px solid #d8dde6; padding-bottom: 0.2rem; }
h3 { font-size: 1.05rem; margin-top: 1.4rem; }
.meta { color: #5a6375; font-size: 0.9rem; margin: 0 0 0.8rem; }
nav ul { list-style: none; padding: 0; margin: 0.4rem 0 0; display: flex; flex-wrap: wrap; gap: 0.4rem 1.1rem; font-size: 0.92rem; }
nav a { color: #0063a0; text-decoration: none; }
nav a:hover { text-decoration: underline; }
.note { background: #fff8e5; border-left: 4px solid #e69f00; padding: 0.45rem 0.8rem; margin: 0.5rem 0; font-size: 0.93rem; }
.note.info { background: #eef6fc; border-left-color: #0072b2; }
figure { margin: 1rem 0 1.6rem; }
figure svg { max-width: 100%; height: auto; display: block; border: 1px solid #e3e7ee; border-radius: 4px; }
figcaption { color: #5a6375; font-size: 0.88rem; margin-top: 0.35rem; }
.table-wrap { overflow-x: auto; margin: 0.6rem 0 1.2rem; }
table { border-collapse: collapse; font-size: 0.8rem; max-width: 100%; }
th, td { border: 1px solid #dfe3ea; padding: 0.22rem 0.4rem; text-align: left; vertical-align: top; overflow-wrap: break-word; }
th { background: #f3f5f9; font-weight: 600; vertical-align: bottom; }
td:first-child { min-width: 7rem; max-width: 16rem; overflow-wrap: anywhere; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; overflow-wrap: normal; }
tr:nth-child(even) td { background: #fafbfd; }
code { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 0.85em; overflow-wrap: anywhere; }
footer { margin-top: 3rem; color: #8a92a3; font-size: 0.82rem; }
"#;

fn ms(s: f64) -> String {
    let v = s * 1e3;
    if v >= 1000.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 0.01 || a == 0.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.4}")
    }
}

/// A table with a header row (escaped when written); every cell is
/// already-escaped HTML.
struct Table {
    head: Vec<String>,
    rows: Vec<Vec<(String, bool)>>,
}

impl Table {
    fn new<S: AsRef<str>>(head: Vec<S>) -> Self {
        Self {
            head: head.iter().map(|h| esc(h.as_ref())).collect(),
            rows: Vec::new(),
        }
    }

    fn write(&self, out: &mut String, id: &str) {
        let _ = write!(
            out,
            "<div class=\"table-wrap\"><table id=\"{id}\">\n<thead><tr>"
        );
        for h in &self.head {
            let _ = write!(out, "<th>{h}</th>");
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            out.push_str("<tr>");
            for (cell, numeric) in row {
                if *numeric {
                    let _ = write!(out, "<td class=\"num\">{cell}</td>");
                } else {
                    let _ = write!(out, "<td>{cell}</td>");
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table></div>\n");
    }
}

fn t(s: &str) -> (String, bool) {
    (esc(s), false)
}
fn n(s: String) -> (String, bool) {
    (s, true)
}

fn metric_cells(m: &Metrics, eff_key: &str) -> Vec<(String, bool)> {
    vec![
        n(format!("{}/{}", m.completed, m.requests)),
        n(ms(m.ttft_s.p50)),
        n(ms(m.ttft_s.p99)),
        n(ms(m.tpot_s.p50)),
        n(ms(m.tpot_s.p99)),
        n(ms(m.itl_s.p99)),
        n(ms(m.e2e_s.p50)),
        n(ms(m.e2e_s.p99)),
        n(num(m.request_throughput)),
        n(num(m.output_token_throughput)),
        n(num(m.goodput)),
        n(format!("{:.1}%", 100.0 * m.slo_attainment)),
        n(m.effective_throughput
            .get(eff_key)
            .map(|v| num(*v))
            .unwrap_or_else(|| "–".into())),
    ]
}

const METRIC_HEAD: [&str; 13] = [
    "completed / sent",
    "TTFT p50 (ms)",
    "TTFT p99 (ms)",
    "TPOT p50 (ms)",
    "TPOT p99 (ms)",
    "ITL p99 (ms)",
    "E2E p50 (ms)",
    "E2E p99 (ms)",
    "req/s",
    "output tok/s",
    "goodput (req/s)",
    "SLO attainment",
    "effective (req/s)",
];

/// Whether the run's model had random weights, from its engine knobs:
/// `weights = "random"` (or starting with `random`), `random_weights = true`;
/// CPU and CUDA engines without a `weights`/`weights_path` knob naming a file
/// use seeded random weights by design.
fn random_weights(s: &RunSummary) -> Option<bool> {
    let e = &s.provenance.engine;
    let knob = |k: &str| e.knobs.get(k);
    if let Some(v) = knob("random_weights").and_then(|v| v.as_bool()) {
        return Some(v);
    }
    for k in ["weights", "weights_path", "weights_file"] {
        if let Some(v) = knob(k).and_then(|v| v.as_str()) {
            return Some(v.is_empty() || v.starts_with("random"));
        }
    }
    matches!(e.engine.as_str(), "cpu" | "cuda").then_some(true)
}

fn notes(inputs: &[ReportInput], runs: &[(String, &RunData)]) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    let mut all: Vec<(String, &RunSummary)> = Vec::new();
    for i in inputs {
        match i {
            ReportInput::Run(r) => all.push((r.name().to_string(), &r.summary)),
            ReportInput::Sweep(s) => {
                for r in s.runs.values() {
                    all.push((format!("{}/{}", s.summary.name, r.name()), &r.summary));
                }
            }
            ReportInput::Campaign(c) => {
                if c.torn_bytes > 0 {
                    out.push((
                        false,
                        format!(
                            "Campaign <code>{}</code>: the last journal line was torn ({} bytes without a newline, from a kill mid-write) and is left out; <code>fuselab tune --resume</code> drops it too.",
                            esc(&c.name),
                            c.torn_bytes
                        ),
                    ));
                }
                let no_value = c.trials.iter().filter(|t| !t.status.ran()).count();
                if no_value > 0 {
                    out.push((
                        true,
                        format!(
                            "Campaign <code>{}</code>: {no_value} of {} trials failed, timed out or crashed and produced no value.",
                            esc(&c.name),
                            c.trials.len()
                        ),
                    ));
                }
            }
        }
    }
    let random: Vec<String> = all
        .iter()
        .filter(|(_, s)| random_weights(s) == Some(true))
        .map(|(n, s)| {
            format!(
                "<code>{}</code> ({} engine{})",
                esc(n),
                esc(&s.provenance.engine.engine),
                s.provenance
                    .engine
                    .model
                    .as_ref()
                    .map(|m| format!(", model {}", esc(m)))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !random.is_empty() {
        out.push((
            false,
            format!(
                "<strong>Random weights.</strong> These runs used seeded random weights: {}. \
                 Speed depends only on the model's shape, so timings are those of real weights of the same shape; \
                 the generated text is meaningless.",
                random.join(", ")
            ),
        ));
    }
    let sim: Vec<String> = all
        .iter()
        .filter(|(_, s)| s.provenance.engine.engine == "sim")
        .map(|(n, s)| {
            format!(
                "<code>{}</code>{}",
                esc(n),
                s.provenance
                    .engine
                    .hardware
                    .as_ref()
                    .map(|h| format!(" ({})", esc(h)))
                    .unwrap_or_default()
            )
        })
        .collect();
    if !sim.is_empty() {
        out.push((
            true,
            format!(
                "<strong>Simulated.</strong> Times of {} come from the cost model of the simulated hardware on a virtual clock, not from a measurement.",
                sim.join(", ")
            ),
        ));
    }
    for (label, r) in runs {
        let m = &r.summary.metrics;
        if r.repeats > 1 {
            out.push((
                true,
                format!(
                    "<code>{}</code>: {} repeated runs of one configuration. Tables show the mean over the runs; distributions pool their requests; engine steps are the first run's.",
                    esc(label),
                    r.repeats
                ),
            ));
        }
        if m.failed > 0 {
            out.push((
                false,
                format!(
                    "<code>{}</code>: {} of {} requests did not complete; latency figures cover completed requests only.",
                    esc(label),
                    m.failed,
                    m.requests
                ),
            ));
        }
        if let Some(e) = &m.engine
            && e.preemptions > 0
        {
            out.push((
                true,
                format!(
                    "<code>{}</code>: {} preemptions (each recomputes a request's prompt).",
                    esc(label),
                    e.preemptions
                ),
            ));
        }
    }
    out
}

fn figure(out: &mut String, chart: &Chart) -> Result<()> {
    let _ = writeln!(out, "<figure id=\"chart-{}\">", esc(&chart.id));
    out.push_str(&chart.to_inline_svg()?);
    let _ = writeln!(
        out,
        "<figcaption>{}</figcaption>\n</figure>",
        esc(&chart.caption)
    );
    Ok(())
}

fn knobs_text(s: &RunSummary) -> String {
    let k = &s.provenance.engine.knobs;
    if k.is_empty() {
        return "–".into();
    }
    k.iter()
        .map(|(key, v)| {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            format!("{}={}", esc(key), esc(&v))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn workload_text(s: &RunSummary) -> String {
    let w = &s.provenance.workload;
    let mut t = format!("{} · n={} · seed {}", w.name, w.n, w.seed);
    if let Ok(a) = serde_json::to_string(&w.arrivals) {
        let _ = write!(t, " · arrivals {a}");
    }
    if let Ok(p) = serde_json::to_string(&w.prompt) {
        let _ = write!(t, " · prompt {p}");
    }
    if let Ok(o) = serde_json::to_string(&w.output) {
        let _ = write!(t, " · output {o}");
    }
    t
}

/// Renders one self-contained HTML page (inline CSS and SVG, no script, no
/// URL) from runs and sweeps. `title` and every name, knob and path from the
/// inputs are HTML-escaped. CDFs and step series are downsampled
/// ([`MAX_CDF_POINTS`], [`MAX_STEP_POINTS`]), so the page stays small
/// (well under 2 MB for a 10 000-request run).
pub fn render_report(inputs: &[ReportInput], title: &str) -> Result<String> {
    let charts = report_charts(inputs);
    let groups = engine_groups(inputs);
    let multi = groups.len() > 1;
    let group_runs: Vec<Vec<(String, &RunData)>> =
        groups.iter().map(|(_, m)| detail_runs(m)).collect();
    let runs: Vec<(String, &RunData)> = group_runs.concat();
    let all: Vec<&ReportInput> = inputs.iter().collect();
    let rate = effective_rate(&all);
    let group_chart = |base: &str, k: usize| {
        let id = format!("{base}{}", group_suffix(k));
        charts.iter().find(|c| c.id == id)
    };
    let group_head = |out: &mut String, k: usize| {
        if multi {
            let _ = writeln!(out, "<h3>{}</h3>", esc(&groups[k].0));
        }
    };
    let eff_key = fastgen_key(rate);
    let chart = |id: &str| charts.iter().find(|c| c.id == id);
    let n_runs = inputs
        .iter()
        .filter(|i| matches!(i, ReportInput::Run(_)))
        .count();
    let n_campaigns = inputs
        .iter()
        .filter(|i| matches!(i, ReportInput::Campaign(_)))
        .count();
    let n_sweeps = inputs.len() - n_runs - n_campaigns;

    let mut out = String::with_capacity(256 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"fuselab {}\">\n<title>{}</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        esc(title)
    );
    let _ = writeln!(out, "<header>\n<h1>{}</h1>", esc(title));
    let _ = writeln!(
        out,
        "<p class=\"meta\">fuselab {} report · {} run{} · {} sweep{}{} · inputs: {}</p>",
        env!("CARGO_PKG_VERSION"),
        n_runs,
        if n_runs == 1 { "" } else { "s" },
        n_sweeps,
        if n_sweeps == 1 { "" } else { "s" },
        match n_campaigns {
            0 => String::new(),
            1 => " · 1 campaign".into(),
            k => format!(" · {k} campaigns"),
        },
        inputs
            .iter()
            .map(|i| format!("<code>{}</code>", esc(i.name())))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let has_sweeps = n_sweeps > 0;
    let has_steps = runs.iter().any(|(_, r)| !r.steps.is_empty());
    let mut toc: Vec<(&str, &str)> = vec![("notes", "Notes"), ("summary", "Summary")];
    if chart("ttft-vs-throughput").is_some() {
        toc.push(("latency-throughput", "Latency vs throughput"));
    }
    if chart("effective-throughput").is_some() {
        toc.push(("effective-throughput", "Effective throughput"));
    }
    if chart("ttft-cdf").is_some() {
        toc.push(("distributions", "Latency distributions"));
    }
    if has_steps {
        toc.push(("engine-steps", "Engine steps"));
    }
    let has_server = charts.iter().any(|c| c.id.starts_with("server-"));
    if has_server {
        toc.push(("server-telemetry", "Server telemetry"));
    }
    if n_campaigns > 0 {
        toc.push(("tuning", "Tuning"));
    }
    toc.push(("provenance", "Provenance"));
    out.push_str("<nav><ul>");
    for (id, name) in &toc {
        let _ = write!(out, "<li><a href=\"#{id}\">{name}</a></li>");
    }
    out.push_str("</ul></nav>\n</header>\n");

    // Notes.
    out.push_str("<section id=\"notes\">\n<h2>Notes</h2>\n");
    let ns = notes(inputs, &runs);
    if ns.is_empty() {
        out.push_str(
            "<p>Nothing unusual: every request completed and no engine caveat applies.</p>\n",
        );
    }
    for (info, text) in ns {
        let _ = writeln!(
            out,
            "<p class=\"note{}\">{text}</p>",
            if info { " info" } else { "" }
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"meta\">Latencies are measured client-side from send time. Effective throughput uses the FastGen SLA at {} tok/s; goodput uses each run's own SLO.</p>",
        num(rate)
    );
    out.push_str("</section>\n");

    // Summary: one table per engine and hardware (named in its heading).
    out.push_str("<section id=\"summary\">\n<h2>Summary</h2>\n");
    if runs.is_empty() {
        out.push_str("<p>No run data loaded (sweeps and campaigns are summarised below).</p>\n");
    }
    for (k, group) in group_runs.iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let _ = writeln!(out, "<h3>{}</h3>", esc(&groups[k].0));
        let mut head = vec!["run", "policy"];
        head.extend(METRIC_HEAD);
        let mut table = Table::new(head);
        for (label, r) in group {
            let e = &r.summary.provenance.engine;
            let mut row = vec![t(label), t(e.policy.as_deref().unwrap_or("–"))];
            row.extend(metric_cells(&r.summary.metrics, &eff_key));
            table.rows.push(row);
        }
        table.write(&mut out, &format!("summary-table{}", group_suffix(k)));
    }
    out.push_str("</section>\n");

    // Latency vs throughput, sweeps: per engine group.
    if chart("ttft-vs-throughput").is_some() {
        out.push_str("<section id=\"latency-throughput\">\n<h2>Latency vs throughput</h2>\n");
    }
    for (k, (_, members)) in groups.iter().enumerate() {
        let Some(c) = group_chart("ttft-vs-throughput", k) else {
            continue;
        };
        group_head(&mut out, k);
        figure(&mut out, c)?;
        if let Some(c) = group_chart("tpot-vs-throughput", k) {
            figure(&mut out, c)?;
        }
        for input in members {
            let ReportInput::Sweep(s) = input else {
                continue;
            };
            let _ = writeln!(out, "<h3>Sweep {}</h3>", esc(&s.summary.name));
            let mut head = vec!["policy", "load"];
            head.extend(METRIC_HEAD);
            let mut table = Table::new(head);
            for p in &s.summary.points {
                let mut row = vec![t(&p.policy), n(num(p.load))];
                row.extend(metric_cells(&p.metrics, &eff_key));
                table.rows.push(row);
            }
            table.write(&mut out, &format!("sweep-{}", esc(&s.summary.name)));
            if !s.summary.max_under_slo.is_empty() {
                let mut table = Table::new(vec![
                    "policy",
                    "max load under SLO",
                    "attainment target",
                    "SLO",
                    "probes",
                ]);
                for m in &s.summary.max_under_slo {
                    table.rows.push(vec![
                        t(&m.policy),
                        n(m.max_load.map(num).unwrap_or_else(|| "none".into())),
                        n(format!("{:.0}%", 100.0 * m.attainment_target)),
                        t(&fuselab_metrics::format_slo(&m.slo)),
                        t(&m.probes
                            .iter()
                            .map(|[l, a]| format!("{}→{:.0}%", num(*l), 100.0 * a))
                            .collect::<Vec<_>>()
                            .join(" ")),
                    ]);
                }
                table.write(&mut out, &format!("max-under-slo-{}", esc(&s.summary.name)));
            }
        }
    }
    if chart("ttft-vs-throughput").is_some() {
        if !has_sweeps {
            out.push_str("<p class=\"meta\">No sweep given: each run is one point. Run <code>fuselab sweep</code> for curves.</p>\n");
        }
        out.push_str("</section>\n");
    }
    if chart("effective-throughput").is_some() {
        out.push_str("<section id=\"effective-throughput\">\n<h2>Effective throughput</h2>\n");
        for k in 0..groups.len() {
            if let Some(c) = group_chart("effective-throughput", k) {
                group_head(&mut out, k);
                figure(&mut out, c)?;
            }
        }
        out.push_str("</section>\n");
    }
    if chart("ttft-cdf").is_some() {
        out.push_str("<section id=\"distributions\">\n<h2>Latency distributions</h2>\n");
        for k in 0..groups.len() {
            if group_chart("ttft-cdf", k).is_none() {
                continue;
            }
            group_head(&mut out, k);
            for id in ["ttft-cdf", "itl-cdf", "e2e-cdf"] {
                if let Some(c) = group_chart(id, k) {
                    figure(&mut out, c)?;
                }
            }
        }
        out.push_str("</section>\n");
    }
    if has_server {
        out.push_str("<section id=\"server-telemetry\">\n<h2>Server telemetry</h2>\n");
        for k in 0..groups.len() {
            let shown: Vec<_> = ["server-kv", "server-queue", "server-prefix-cache"]
                .into_iter()
                .filter_map(|id| group_chart(id, k))
                .collect();
            if shown.is_empty() {
                continue;
            }
            group_head(&mut out, k);
            for c in shown {
                figure(&mut out, c)?;
            }
        }
        out.push_str("</section>\n");
    }
    if has_steps {
        out.push_str("<section id=\"engine-steps\">\n<h2>Engine steps</h2>\n");
        let mut batch = charts
            .iter()
            .filter(|c| c.id.starts_with("batch-composition-"));
        for (k, group) in group_runs.iter().enumerate() {
            let with_steps = group
                .iter()
                .take(MAX_OVERLAY)
                .filter(|(_, r)| !r.steps.is_empty())
                .count();
            if with_steps == 0 {
                continue;
            }
            group_head(&mut out, k);
            for c in batch.by_ref().take(with_steps) {
                figure(&mut out, c)?;
            }
            if let Some(c) = group_chart("kv-utilisation", k) {
                figure(&mut out, c)?;
            }
        }
        let mut table = Table::new(vec![
            "run",
            "steps",
            "prefill tokens",
            "decode tokens",
            "padding tokens",
            "preemptions",
            "tokens/step",
            "KV mean",
            "KV peak",
            "prefix hit",
            "busy (s)",
        ]);
        for (label, r) in &runs {
            if let Some(e) = &r.summary.metrics.engine {
                table.rows.push(vec![
                    t(label),
                    n(e.steps.to_string()),
                    n(e.prefill_tokens.to_string()),
                    n(e.decode_tokens.to_string()),
                    n(e.padding_tokens.to_string()),
                    n(e.preemptions.to_string()),
                    n(num(e.tokens_per_step_mean)),
                    n(format!("{:.1}%", 100.0 * e.kv_utilisation_mean)),
                    n(format!("{:.1}%", 100.0 * e.kv_utilisation_peak)),
                    n(format!("{:.1}%", 100.0 * e.prefix_cache_hit_rate)),
                    n(num(e.busy_s)),
                ]);
            }
        }
        if !table.rows.is_empty() {
            out.push_str("<h3>Engine statistics</h3>\n");
            table.write(&mut out, "engine-table");
        }
        out.push_str("</section>\n");
    }

    if n_campaigns > 0 {
        tuning_section(&mut out, inputs, &charts)?;
    }

    // Provenance.
    out.push_str("<section id=\"provenance\">\n<h2>Provenance</h2>\n");
    let mut table = Table::new(vec![
        "run",
        "source",
        "fuselab",
        "git commit",
        "host CPU",
        "GPU",
        "engine",
        "hardware",
        "model",
        "policy",
        "weights",
        "seed",
        "started (unix s)",
    ]);
    let mut config = Table::new(vec![
        "run",
        "workload",
        "workload digest",
        "knobs",
        "command",
    ]);
    for (label, r) in &runs {
        let p = &r.summary.provenance;
        let weights = match random_weights(&r.summary) {
            Some(true) => "random (seeded)",
            Some(false) => "from file",
            None => "–",
        };
        table.rows.push(vec![
            t(label),
            (
                r.source
                    .as_ref()
                    .map(|s| format!("<code>{}</code>", esc(&s.display().to_string())))
                    .unwrap_or_else(|| "–".into()),
                false,
            ),
            t(&p.fuselab_version),
            (
                match p.git_commit.as_deref() {
                    Some(c) => format!(
                        "<code title=\"{}\">{}</code>",
                        esc(c),
                        esc(c.get(..12).unwrap_or(c))
                    ),
                    None => "<code>–</code>".into(),
                },
                false,
            ),
            t(&p.host_cpu),
            t(p.host_gpu.as_deref().unwrap_or("–")),
            t(&p.engine.engine),
            t(p.engine.hardware.as_deref().unwrap_or("–")),
            t(p.engine.model.as_deref().unwrap_or("–")),
            t(p.engine.policy.as_deref().unwrap_or("–")),
            t(weights),
            n(p.seed.to_string()),
            n(p.started_unix_s
                .map(|s| s.to_string())
                .unwrap_or_else(|| "–".into())),
        ]);
        config.rows.push(vec![
            t(label),
            t(&workload_text(&r.summary)),
            (format!("<code>{}</code>", esc(&p.workload_digest)), false),
            (knobs_text(&r.summary), false),
            (
                format!("<code>{}</code>", esc(p.command.as_deref().unwrap_or("–"))),
                false,
            ),
        ]);
    }
    if runs.is_empty() {
        out.push_str("<p>No run folders loaded.</p>\n");
    } else {
        table.write(&mut out, "provenance-table");
        out.push_str("<h3>Configuration</h3>\n");
        config.write(&mut out, "config-table");
    }
    for input in inputs {
        if let ReportInput::Sweep(s) = input {
            let _ = writeln!(
                out,
                "<p class=\"meta\">Sweep <code>{}</code>: {} points over {} (schema {}){}.</p>",
                esc(&s.summary.name),
                s.summary.points.len(),
                match s.summary.load_kind {
                    fuselab_core::LoadKind::Rate => "request rates",
                    fuselab_core::LoadKind::Clients => "client counts",
                },
                s.summary.schema_version,
                s.source
                    .as_ref()
                    .map(|p| format!(", from <code>{}</code>", esc(&p.display().to_string())))
                    .unwrap_or_default()
            );
        }
        if let ReportInput::Campaign(c) = input {
            let _ = writeln!(
                out,
                "<p class=\"meta\">Campaign <code>{}</code>: {} trials, tuner {}, seed {}{}.</p>",
                esc(&c.name),
                c.trials.len(),
                esc(&c.settings.tuner),
                c.settings.seed,
                c.source
                    .as_ref()
                    .map(|p| format!(", from <code>{}</code>", esc(&p.display().to_string())))
                    .unwrap_or_default()
            );
        }
    }
    out.push_str("</section>\n");
    let _ = writeln!(
        out,
        "<footer>Generated by fuselab {}. Self-contained: no script, no font or image is fetched.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION")
    );
    Ok(out)
}

/// A number with `digits` significant digits, without float noise.
fn sig(v: f64, digits: i32) -> String {
    let a = v.abs();
    if !v.is_finite() {
        return "–".into();
    }
    if a == 0.0 {
        return "0".into();
    }
    let mag = a.log10().floor() as i32;
    if !(-3..6).contains(&mag) {
        return format!("{v:.*e}", (digits - 1).max(0) as usize);
    }
    let decimals = (digits - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

fn knob_text(v: &KnobValue) -> String {
    match v {
        KnobValue::Float(x) => sig(*x, 5),
        other => other.to_string(),
    }
}

/// How many trials the best-trials table lists at most.
const MAX_BEST_TRIALS: usize = 10;
/// How many failed trials are listed with their reason at most.
const MAX_FAILED_TRIALS: usize = 10;

/// The Tuning section: per campaign its settings, convergence chart(s), the
/// Pareto front, the trial counts by status and the best trials.
fn tuning_section(out: &mut String, inputs: &[ReportInput], charts: &[Chart]) -> Result<()> {
    out.push_str("<section id=\"tuning\">\n<h2>Tuning</h2>\n");
    let campaigns = inputs.iter().filter_map(|i| match i {
        ReportInput::Campaign(c) => Some(c),
        _ => None,
    });
    for (ci, c) in campaigns.enumerate() {
        let st = &c.settings;
        let multi = st.objectives.len() > 1;
        let _ = writeln!(out, "<h3>Campaign {}</h3>", esc(&c.name));
        let objectives = st
            .objectives
            .iter()
            .map(|o| format!("<code>{}</code> ({})", esc(&o.name), o.direction.verb()))
            .collect::<Vec<_>>()
            .join(", ");
        let constraints = st
            .constraints
            .iter()
            .map(|k| {
                format!(
                    "<code>{} {} {}</code>",
                    esc(&k.name),
                    if k.upper { "≤" } else { "≥" },
                    sig(k.threshold, 6)
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "<p class=\"meta\">{} trials · tuner {} · seed {} · objective{} {}{} · evaluates <code>{}</code></p>",
            c.trials.len(),
            esc(&st.tuner),
            st.seed,
            if multi { "s" } else { "" },
            objectives,
            if constraints.is_empty() {
                String::new()
            } else {
                format!(" · outcome constraints {constraints}")
            },
            esc(&st.evaluates)
        );
        if !st.knobs.is_empty() {
            let mut knobs = Table::new(vec!["knob", "domain"]);
            for k in &st.knobs {
                knobs.rows.push(vec![
                    (format!("<code>{}</code>", esc(&k.name)), false),
                    t(&k.domain),
                ]);
            }
            knobs.write(out, &format!("campaign-{}-knobs", ci + 1));
            if !st.knob_constraints.is_empty() {
                let _ = writeln!(
                    out,
                    "<p class=\"meta\">Knob constraints: {}</p>",
                    st.knob_constraints
                        .iter()
                        .map(|k| format!("<code>{}</code>", esc(k)))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
            }
        }
        if c.trials.is_empty() {
            out.push_str("<p>The journal holds no finished trial yet.</p>\n");
            continue;
        }
        let conv = crate::charts::campaign_chart_id("convergence", ci, None);
        for chart in charts
            .iter()
            .filter(|ch| ch.id == conv || ch.id.starts_with(&format!("{conv}-")))
        {
            figure(out, chart)?;
        }
        let pareto = crate::charts::campaign_chart_id("pareto", ci, None);
        if let Some(chart) = charts.iter().find(|ch| ch.id == pareto) {
            figure(out, chart)?;
        }
        // Counts by status.
        let mut counts = Table::new(vec!["status", "trials", "share"]);
        for (status, k) in c.status_counts() {
            counts.rows.push(vec![
                t(status.as_str()),
                n(k.to_string()),
                n(format!("{:.0}%", 100.0 * k as f64 / c.trials.len() as f64)),
            ]);
        }
        out.push_str("<h3>Trials by status</h3>\n");
        counts.write(out, &format!("campaign-{}-status", ci + 1));
        // Best trials.
        let best = c.best_trials(MAX_BEST_TRIALS);
        let front_len = if multi { c.pareto_front().len() } else { 0 };
        if multi {
            let _ = writeln!(
                out,
                "<h3>Pareto-optimal trials</h3>\n<p class=\"meta\">{front_len} non-dominated feasible trial(s){}, by {}.</p>",
                if front_len > best.len() {
                    format!(", the first {} shown", best.len())
                } else {
                    String::new()
                },
                esc(&st.objectives[0].name)
            );
        } else {
            let _ = writeln!(
                out,
                "<h3>Best trials</h3>\n<p class=\"meta\">The {} best feasible trial(s), best first.</p>",
                best.len()
            );
        }
        if best.is_empty() {
            out.push_str("<p>No trial ran and met every outcome constraint.</p>\n");
        } else {
            let mut head: Vec<String> = vec!["trial".into(), "status".into()];
            head.extend(st.objectives.iter().map(|o| {
                format!(
                    "{} {}",
                    o.name,
                    match o.direction {
                        Direction::Maximize => "↑",
                        Direction::Minimize => "↓",
                    }
                )
            }));
            head.extend(st.constraints.iter().map(|k| k.name.clone()));
            // Knobs in the space's order, then any the journal has beyond it.
            let mut knob_names: Vec<&str> = st.knobs.iter().map(|k| k.name.as_str()).collect();
            for t in &best {
                for name in t.knobs.keys() {
                    if !knob_names.contains(&name.as_str()) {
                        knob_names.push(name);
                    }
                }
            }
            head.extend(knob_names.iter().map(|k| k.to_string()));
            head.extend(["duration (s)".to_string(), "run".to_string()]);
            let mut table = Table::new(head);
            for tr in &best {
                let mut row = vec![n(tr.trial.to_string()), t(tr.status.as_str())];
                row.extend(tr.objectives.iter().map(|v| n(sig(*v, 5))));
                row.extend(st.constraints.iter().map(|k| {
                    n(tr.constraints
                        .get(&k.name)
                        .map(|v| sig(*v, 5))
                        .unwrap_or_else(|| "–".into()))
                }));
                row.extend(knob_names.iter().map(|k| {
                    tr.knobs
                        .get(*k)
                        .map(|v| {
                            (
                                esc(&knob_text(v)),
                                matches!(v, KnobValue::Int(_) | KnobValue::Float(_)),
                            )
                        })
                        .unwrap_or_else(|| t("–"))
                }));
                row.push(n(sig(tr.duration_s, 3)));
                row.push((
                    tr.run
                        .as_ref()
                        .map(|r| format!("<code>{}</code>", esc(r)))
                        .unwrap_or_else(|| "–".into()),
                    false,
                ));
                table.rows.push(row);
            }
            table.write(out, &format!("campaign-{}-best", ci + 1));
        }
        // Why trials failed.
        let failed: Vec<_> = c.trials.iter().filter(|t| !t.status.ran()).collect();
        if !failed.is_empty() {
            let _ = writeln!(
                out,
                "<h3>Failed trials</h3>\n<p class=\"meta\">{} trial(s) produced no value{}.</p>",
                failed.len(),
                if failed.len() > MAX_FAILED_TRIALS {
                    format!("; the first {MAX_FAILED_TRIALS} are listed")
                } else {
                    String::new()
                }
            );
            let mut table = Table::new(vec!["trial", "status", "duration (s)", "reason"]);
            for tr in failed.iter().take(MAX_FAILED_TRIALS) {
                table.rows.push(vec![
                    n(tr.trial.to_string()),
                    t(tr.status.as_str()),
                    n(sig(tr.duration_s, 3)),
                    t(tr.message.as_deref().unwrap_or("–")),
                ]);
            }
            table.write(out, &format!("campaign-{}-failed", ci + 1));
        }
    }
    out.push_str("</section>\n");
    Ok(())
}
