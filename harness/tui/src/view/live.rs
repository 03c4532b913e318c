//! The screen of an opened folder: its title and progress, the content
//! (run detail, sweep, campaign or a job that has written nothing yet) and,
//! for work started here, the tail of its log.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Gauge, Paragraph, Row, Table, TableState};

use super::{Axes, PALETTE, Series, YFrom, fmt, line_chart, not_ready, section};
use crate::job::JobState;
use crate::live::{CampaignView, Content, Opened, Suggestion, SweepView};
use crate::state::DetailScreen;

type Hints = Vec<(&'static str, &'static str)>;

/// Draws `screen`; returns the key hints.
pub(super) fn render(screen: &DetailScreen, frame: &mut Frame, area: Rect) -> Hints {
    let block = Block::bordered().title(format!(" {} ", screen.path.display()));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if not_ready(&screen.content, frame, inner) {
        return vec![("Esc", "back")];
    }
    let Some(opened) = screen.content.ready() else {
        return vec![];
    };
    let running = matches!(opened.job, Some((_, JobState::Running)));
    let log_h = if opened.job.is_some() && !opened.log.is_empty() {
        let most = if running { inner.height / 4 } else { 3 };
        (opened.log.len() as u16 + 1).min(most).max(2)
    } else {
        0
    };
    let [head, body, log] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(0),
        Constraint::Length(log_h),
    ])
    .areas(inner);
    header(opened, frame, head);
    if log_h > 0 {
        let lines: Vec<Line> = opened
            .log
            .iter()
            .rev()
            .take(log.height.saturating_sub(1) as usize)
            .rev()
            .map(|l| Line::from(fmt::clip(l, log.width as usize)))
            .collect();
        frame.render_widget(
            Paragraph::new(lines)
                .style(Style::new().fg(Color::Gray))
                .block(super::section("log")),
            log,
        );
    }
    match &opened.content {
        Content::Run(run) => {
            super::detail::render(run, screen, frame, body);
            vec![("t", "hist/CDF"), ("p", "provenance"), ("Esc", "back")]
        }
        Content::Sweep(s) => {
            sweep(s, screen, frame, body);
            vec![("Enter", "open point"), ("m", "metric"), ("Esc", "back")]
        }
        Content::Campaign(c) => {
            campaign(c, screen, frame, body);
            vec![("Enter", "open trial"), ("Esc", "back")]
        }
        Content::Pending => {
            let cmd = opened
                .job
                .as_ref()
                .map(|(j, _)| format!("fuselab {}", j.args.join(" ")))
                .unwrap_or_default();
            frame.render_widget(
                Paragraph::new(vec![
                    Line::from("waiting for the first result…"),
                    Line::from(cmd),
                ])
                .wrap(ratatui::widgets::Wrap { trim: true }),
                body,
            );
            vec![("Esc", "back")]
        }
    }
}

fn header(o: &Opened, frame: &mut Frame, area: Rect) {
    let mut spans = Vec::new();
    let kind = match &o.content {
        Content::Run(r) if r.repeats > 1 => format!("repeat ×{}", r.repeats),
        Content::Run(_) => "run".into(),
        Content::Sweep(_) => "sweep".into(),
        Content::Campaign(_) => "tune".into(),
        Content::Pending => "job".into(),
    };
    spans.push(Span::styled(
        kind,
        Style::new().add_modifier(Modifier::BOLD),
    ));
    match &o.content {
        Content::Run(r) => {
            let p = &r.summary.provenance;
            let e = &p.engine;
            spans.push(Span::raw(format!(
                " · {} {} {} · {} @ {} · seed {}",
                e.engine,
                e.hardware.as_deref().unwrap_or(""),
                e.policy.as_deref().unwrap_or(""),
                p.workload.name,
                crate::catalog::load_label(&p.workload.arrivals),
                p.seed
            )));
        }
        Content::Sweep(s) => spans.push(Span::raw(format!(
            " · {} · {} points{}",
            s.policies().join(", "),
            s.summary.points.len(),
            if s.complete { " · complete" } else { "" }
        ))),
        Content::Campaign(c) => {
            let objs: Vec<String> = c
                .data
                .settings
                .objectives
                .iter()
                .map(|o| format!("{} ({})", o.name, o.direction.verb()))
                .collect();
            spans.push(Span::raw(format!(
                " · {} seed {} · {}",
                c.data.settings.tuner,
                c.data.settings.seed,
                objs.join(" vs ")
            )));
        }
        Content::Pending => {}
    }
    if let Some((_, state)) = &o.job {
        let (text, color) = match state {
            JobState::Running => ("running".to_string(), Color::Green),
            JobState::Exited(0) => ("finished".to_string(), Color::Gray),
            JobState::Exited(c) => (format!("failed (exit {c})"), Color::Red),
            JobState::Stopped => ("stopped".to_string(), Color::Red),
        };
        spans.push(Span::raw(" · "));
        spans.push(Span::styled(text, Style::new().fg(color)));
    }
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

fn progress(frame: &mut Frame, area: Rect, done: usize, planned: Option<usize>, what: &str) {
    let label = match planned {
        Some(p) => format!("{done}/{p} {what}"),
        None => format!("{done} {what}"),
    };
    let ratio = planned.map_or(0.0, |p| (done as f64 / p.max(1) as f64).min(1.0));
    frame.render_widget(
        Gauge::default()
            .ratio(ratio)
            .label(label)
            .gauge_style(Style::new().fg(Color::Green).bg(Color::Black)),
        area,
    );
}

fn planned(o: Option<&Opened>) -> Option<usize> {
    o.and_then(|o| o.job.as_ref()).and_then(|(j, _)| j.planned)
}

fn sweep(s: &SweepView, screen: &DetailScreen, frame: &mut Frame, area: Rect) {
    let metric = screen.metric;
    let [gauge, chart, table] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Percentage(50),
        Constraint::Min(4),
    ])
    .areas(area);
    let planned = planned(screen.content.ready()).or(s.complete.then_some(s.summary.points.len()));
    progress(frame, gauge, s.summary.points.len(), planned, "points");
    let series: Vec<Series> = s
        .policies()
        .iter()
        .enumerate()
        .map(|(i, pol)| {
            let mut pts: Vec<(f64, f64, f64)> = s
                .summary
                .points
                .iter()
                .filter(|p| &p.policy == pol)
                .map(|p| {
                    (
                        p.load,
                        p.metrics.output_token_throughput,
                        1e3 * metric.value(&p.metrics),
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            Series {
                label: (*pol).to_string(),
                points: pts.iter().map(|p| (p.1, p.2)).collect(),
                color: PALETTE[i % PALETTE.len()],
                scatter: false,
            }
        })
        .collect();
    line_chart(
        frame,
        chart,
        section(format!(
            "latency–throughput · {} (m changes)",
            metric.label()
        )),
        &series,
        Axes {
            x: "output tok/s",
            y: "ms",
            y_fmt: fmt::num,
            y_from: YFrom::Zero,
        },
    );
    let right = |v: String| Cell::from(Line::from(v).right_aligned());
    // (header, width, priority): the columns that fit are shown.
    let cols: [(&str, u16, u8); 11] = [
        ("policy", 10, 0),
        (s.load_unit(), 7, 0),
        ("done/s", 6, 8),
        ("tok/s", 6, 1),
        ("TTFT p50", 8, 2),
        ("TTFT p99", 8, 3),
        ("ITL p50", 8, 7),
        ("ITL p99", 8, 4),
        ("TPOT p99", 8, 5),
        ("E2E p50", 8, 9),
        ("SLO att", 7, 6),
    ];
    let keep = super::fit_columns(&cols.map(|(_, w, p)| (w, p)), table.width);
    let header = Row::new(keep.iter().map(|&i| {
        if i == 0 {
            Cell::from(cols[i].0)
        } else {
            right(cols[i].0.into())
        }
    }))
    .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray));
    let rows: Vec<Row> = s
        .summary
        .points
        .iter()
        .map(|p| {
            let m = &p.metrics;
            let cell = |i: usize| match i {
                0 => Cell::from(p.policy.clone()),
                1 => right(fmt::num(p.load)),
                2 => right(fmt::num(m.request_throughput)),
                3 => right(fmt::num(m.output_token_throughput)),
                4 => right(fmt::secs(m.ttft_s.p50)),
                5 => right(fmt::secs(m.ttft_s.p99)),
                6 => right(fmt::secs(m.itl_s.p50)),
                7 => right(fmt::secs(m.itl_s.p99)),
                8 => right(fmt::secs(m.tpot_s.p99)),
                9 => right(fmt::secs(m.e2e_s.p50)),
                _ => right(format!("{:.2}", m.slo_attainment)),
            };
            Row::new(keep.iter().map(|&i| cell(i)))
        })
        .collect();
    let widths: Vec<Constraint> = keep
        .iter()
        .map(|&i| {
            if i == 0 {
                Constraint::Min(cols[i].1)
            } else {
                Constraint::Length(cols[i].1)
            }
        })
        .collect();
    let n = rows.len();
    let table_w = Table::new(rows, widths)
        .header(header)
        .block(section("points (live percentile table)"))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
    let mut state = TableState::default().with_selected((n > 0).then_some(screen.selected));
    frame.render_stateful_widget(table_w, table, &mut state);
}

fn campaign(c: &CampaignView, screen: &DetailScreen, frame: &mut Frame, area: Rect) {
    let d = &c.data;
    let [gauge, main, next] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(4),
        Constraint::Length(1),
    ])
    .areas(area);
    progress(frame, gauge, d.trials.len(), c.budget, "trials");
    let suggestion = match &c.suggestion {
        Suggestion::Computing => "next suggestion: computing…".to_string(),
        Suggestion::Next(s) => format!("next suggestion: {s}"),
        Suggestion::Complete => "next suggestion: none (budget spent)".into(),
        Suggestion::Unavailable(e) => format!("next suggestion: unavailable ({e})"),
    };
    frame.render_widget(
        Paragraph::new(fmt::clip(&suggestion, next.width as usize))
            .style(Style::new().fg(Color::Cyan)),
        next,
    );
    let [left, right] =
        Layout::horizontal([Constraint::Percentage(55), Constraint::Percentage(45)]).areas(main);
    // Trials table.
    let knobs: Vec<&str> = d.settings.knobs.iter().map(|k| k.name.as_str()).collect();
    let objs: Vec<&str> = d
        .settings
        .objectives
        .iter()
        .map(|o| o.name.as_str())
        .collect();
    let mut heads: Vec<String> = vec!["#".into()];
    heads.extend(knobs.iter().map(|s| s.to_string()));
    heads.extend(objs.iter().map(|s| s.to_string()));
    heads.push("status".into());
    let header =
        Row::new(heads.clone()).style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray));
    let rows: Vec<Row> = d
        .trials
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let mut cells = vec![t.trial.to_string()];
            cells.extend(knobs.iter().map(|k| {
                t.knobs.get(*k).map_or("-".into(), |v| match v {
                    fuselab_reports::KnobValue::Float(x) => fmt::num(*x),
                    other => other.to_string(),
                })
            }));
            cells.extend(
                (0..objs.len()).map(|j| t.objectives.get(j).map_or("-".into(), |v| fmt::num(*v))),
            );
            cells.push(t.status.as_str().into());
            let style = if c.pareto.contains(&i) {
                Style::new().fg(Color::Green)
            } else {
                Style::new()
            };
            Row::new(cells).style(style)
        })
        .collect();
    let widths: Vec<Constraint> = heads
        .iter()
        .enumerate()
        .map(|(i, h)| {
            if i == 0 {
                Constraint::Length(4)
            } else {
                Constraint::Length((h.chars().count() as u16).max(7))
            }
        })
        .collect();
    let n = rows.len();
    let mut state = TableState::default().with_selected((n > 0).then_some(screen.selected));
    frame.render_stateful_widget(
        Table::new(rows, widths)
            .header(header)
            .block(section(format!(
                "trials ({} best in green)",
                if c.data.is_multi_objective() {
                    "Pareto"
                } else {
                    "the"
                }
            )))
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED)),
        left,
        &mut state,
    );
    // Charts.
    let [best, front] =
        Layout::vertical([Constraint::Percentage(50), Constraint::Percentage(50)]).areas(right);
    let o0 = &d.settings.objectives[0];
    line_chart(
        frame,
        best,
        section(format!("best {} so far", o0.name)),
        &[Series {
            label: "best".into(),
            points: c.best_so_far.iter().map(|&(t, v)| (t as f64, v)).collect(),
            color: Color::Cyan,
            scatter: false,
        }],
        Axes {
            x: "trial",
            y: "",
            y_fmt: fmt::num,
            y_from: YFrom::Data,
        },
    );
    if d.is_multi_objective() {
        let ok: Vec<(f64, f64)> = d
            .trials
            .iter()
            .filter(|t| t.objectives.len() >= 2)
            .map(|t| (t.objectives[0], t.objectives[1]))
            .collect();
        let pf: Vec<(f64, f64)> = c
            .pareto
            .iter()
            .map(|&i| (d.trials[i].objectives[0], d.trials[i].objectives[1]))
            .collect();
        line_chart(
            frame,
            front,
            section(format!("Pareto front · {} points", pf.len())),
            &[
                Series {
                    label: "trials".into(),
                    points: ok,
                    color: Color::Gray,
                    scatter: true,
                },
                Series {
                    label: "front".into(),
                    points: pf,
                    color: Color::Green,
                    scatter: false,
                },
            ],
            Axes {
                x: &d.settings.objectives[0].name,
                y: &d.settings.objectives[1].name,
                y_fmt: fmt::num,
                y_from: YFrom::Data,
            },
        );
    } else {
        let best: Vec<Line> = d
            .best_trials(front.height.saturating_sub(1) as usize)
            .iter()
            .map(|t| {
                let knobs: Vec<String> = t.knobs.iter().map(|(k, v)| format!("{k}={v}")).collect();
                Line::from(format!(
                    "#{:<3} {} → {}",
                    t.trial,
                    knobs.join(" "),
                    t.objectives.first().map_or("-".into(), |v| fmt::num(*v))
                ))
            })
            .collect();
        frame.render_widget(
            Paragraph::new(best).block(section("Pareto front (one objective: the best trials)")),
            front,
        );
    }
}
