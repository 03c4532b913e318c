//! A run's detail view: percentile table, TTFT and ITL histograms or CDFs,
//! tokens per step, KV utilisation and provenance.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Cell, Paragraph, Row, Sparkline, Table};

use super::{Axes, Series, YFrom, fmt, line_chart, rebin, section};
use crate::detail::{Distribution, RunDetail};
use crate::state::DetailScreen;

/// Draws the run in `area`.
pub(super) fn render(run: &RunDetail, screen: &DetailScreen, frame: &mut Frame, area: Rect) {
    let m = &run.summary.metrics;
    let big = area.height >= 40;
    let show_prov = screen.provenance || big;
    let prov_h = if big {
        run.provenance.len() as u16 + 1
    } else {
        area.height
    };
    let [table_area, charts_area, steps_area, prov_area] = if screen.provenance && !big {
        [Rect::default(), Rect::default(), Rect::default(), area]
    } else {
        Layout::vertical([
            Constraint::Length(7),
            Constraint::Min(6),
            Constraint::Length(if run.steps.is_some() { 5 } else { 2 }),
            Constraint::Length(if show_prov { prov_h } else { 0 }),
        ])
        .areas(area)
    };
    if table_area.height > 0 {
        let wide = table_area.width >= 100;
        let [pct, side] = Layout::horizontal([
            Constraint::Length(if wide { 62 } else { 44 }),
            Constraint::Min(20),
        ])
        .areas(table_area);
        percentiles(run, frame, pct, wide);
        let eff = |k: &str| {
            m.effective_throughput
                .get(k)
                .map_or("-".into(), |v| fmt::num(*v))
        };
        let mut lines = vec![
            format!("requests   {} ({} ok)", m.requests, m.completed),
            format!("window     {}", fmt::secs(m.window_s)),
            format!("req/s      {}", fmt::num(m.request_throughput)),
            format!("out tok/s  {}", fmt::num(m.output_token_throughput)),
            format!(
                "goodput    {} ({:.0}% SLO)",
                fmt::num(m.goodput),
                100.0 * m.slo_attainment
            ),
            format!("eff@2/4/6  {} {} {}", eff("2"), eff("4"), eff("6")),
        ];
        if let Some(e) = &m.engine {
            lines.push(format!(
                "preempt {} · pad {} · cache hit {:.0}%",
                e.preemptions,
                e.padding_tokens,
                100.0 * e.prefix_cache_hit_rate
            ));
        }
        frame.render_widget(
            Paragraph::new(lines.into_iter().map(Line::from).collect::<Vec<_>>())
                .block(section("throughput")),
            side,
        );
    }
    if charts_area.height > 0 {
        let [a, b] = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)])
            .areas(charts_area);
        distribution(frame, a, "TTFT", &run.ttft, screen.cdf, Color::Cyan);
        distribution(frame, b, "ITL", &run.itl, screen.cdf, Color::Yellow);
    }
    if steps_area.height > 0 {
        steps(run, frame, steps_area);
    }
    if show_prov && prov_area.height > 0 {
        let key_w = 9;
        let lines: Vec<Line> = run
            .provenance
            .iter()
            .map(|(k, v)| {
                Line::from(vec![
                    ratatui::text::Span::styled(
                        format!("{k:<key_w$} "),
                        Style::new().fg(Color::Gray),
                    ),
                    ratatui::text::Span::raw(v.clone()),
                ])
            })
            .collect();
        frame.render_widget(
            Paragraph::new(lines).block(section("provenance")),
            prov_area,
        );
    }
}

fn percentiles(run: &RunDetail, frame: &mut Frame, area: Rect, wide: bool) {
    let m = &run.summary.metrics;
    let rows = [
        ("TTFT", &m.ttft_s),
        ("TPOT", &m.tpot_s),
        ("ITL", &m.itl_s),
        ("E2E", &m.e2e_s),
        ("lag", &m.schedule_lag_s),
    ];
    let right = |s: String| Cell::from(Line::from(s).right_aligned());
    // Narrow terminals drop p95 and the mean.
    type Stat = fn(&fuselab_core::LatencyStats) -> f64;
    let cols: Vec<(&str, Stat)> = [
        ("p50", (|s| s.p50) as Stat),
        ("p90", |s| s.p90),
        ("p95", |s| s.p95),
        ("p99", |s| s.p99),
        ("mean", |s| s.mean),
        ("max", |s| s.max),
    ]
    .into_iter()
    .filter(|(h, _)| wide || !matches!(*h, "p95" | "mean"))
    .collect();
    let header = Row::new(
        std::iter::once(Cell::from("")).chain(cols.iter().map(|(h, _)| right((*h).into()))),
    )
    .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray));
    let body: Vec<Row> = rows
        .iter()
        .map(|(name, s)| {
            Row::new(
                std::iter::once(Cell::from(*name))
                    .chain(cols.iter().map(|(_, f)| right(fmt::secs(f(s))))),
            )
        })
        .collect();
    let widths = [Constraint::Length(5)]
        .into_iter()
        .chain(std::iter::repeat_n(Constraint::Length(8), cols.len()));
    frame.render_widget(
        Table::new(body, widths)
            .header(header)
            .block(section("latency percentiles")),
        area,
    );
}

fn distribution(
    frame: &mut Frame,
    area: Rect,
    name: &str,
    d: &Distribution,
    cdf: bool,
    color: Color,
) {
    if d.count == 0 {
        frame.render_widget(Paragraph::new("no samples").block(section(name)), area);
        return;
    }
    if cdf {
        let series = [Series {
            label: format!("{name} CDF"),
            points: d.cdf.iter().map(|&(x, f)| (x * 1e3, f)).collect(),
            color,
            scatter: false,
        }];
        line_chart(
            frame,
            area,
            section(format!("{name} CDF · n={}", d.count)),
            &series,
            Axes {
                x: "ms",
                y: "",
                y_fmt: |v| format!("{v:.1}"),
                y_from: YFrom::Data,
            },
        );
        return;
    }
    let title = format!(
        "{name} histogram · n={}{}",
        d.count,
        if d.overflow > 0 {
            format!(" · {} above", d.overflow)
        } else {
            String::new()
        }
    );
    let [spark, axis] = Layout::vertical([Constraint::Min(1), Constraint::Length(1)]).areas(area);
    let counts: Vec<f64> = d.bins.iter().map(|&c| c as f64).collect();
    // The mean count of the bins under each column: the density, whatever
    // the ratio of bins to columns.
    let data: Vec<u64> = rebin(&counts, spark.width as usize, false)
        .into_iter()
        .map(|v| (16.0 * v).round() as u64)
        .collect();
    frame.render_widget(
        Sparkline::default()
            .block(section(title))
            .data(&data)
            .style(Style::new().fg(color)),
        spark,
    );
    let lo = fmt::secs(d.lo);
    let hi = fmt::secs(d.hi);
    let gap = (axis.width as usize).saturating_sub(lo.chars().count() + hi.chars().count() + 1);
    frame.render_widget(
        Paragraph::new(format!("{lo}{}{hi}", " ".repeat(gap))).style(Style::new().fg(Color::Gray)),
        axis,
    );
}

fn steps(run: &RunDetail, frame: &mut Frame, area: Rect) {
    let Some(s) = &run.steps else {
        frame.render_widget(
            Paragraph::new("this engine records no steps").block(section("engine steps")),
            area,
        );
        return;
    };
    let [tok, kv] =
        Layout::horizontal([Constraint::Percentage(60), Constraint::Percentage(40)]).areas(area);
    let [pre, dec] = Layout::vertical([Constraint::Length(3), Constraint::Min(2)]).areas(tok);
    let spark =
        |frame: &mut Frame, r: Rect, title: String, v: &[f64], color: Color, max: Option<u64>| {
            let data: Vec<u64> = rebin(v, r.width as usize, false)
                .into_iter()
                .map(|x| x.round() as u64)
                .collect();
            let mut w = Sparkline::default()
                .block(section(title))
                .data(&data)
                .style(Style::new().fg(color));
            if let Some(m) = max {
                w = w.max(m);
            }
            frame.render_widget(w, r);
        };
    let peak = |v: &[f64]| v.iter().copied().fold(0.0, f64::max);
    spark(
        frame,
        pre,
        format!(
            "prefill tok/step · peak {:.0} · {} steps over {}",
            peak(&s.prefill),
            s.steps,
            fmt::secs(s.t_end)
        ),
        &s.prefill,
        Color::Magenta,
        None,
    );
    spark(
        frame,
        dec,
        format!("decode tok/step · peak {:.0}", peak(&s.decode)),
        &s.decode,
        Color::Green,
        None,
    );
    let kv_pct: Vec<f64> = s.kv.iter().map(|k| 100.0 * k).collect();
    let e = run.summary.metrics.engine.clone().unwrap_or_default();
    spark(
        frame,
        kv,
        format!(
            "KV util · mean {:.0}% · peak {:.0}%",
            100.0 * e.kv_utilisation_mean,
            100.0 * e.kv_utilisation_peak
        ),
        &kv_pct,
        Color::Blue,
        Some(100),
    );
}
