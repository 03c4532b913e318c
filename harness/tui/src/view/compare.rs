//! The compare view: the gate's ratios and verdicts against the first
//! folder, and the latency–throughput curves overlaid.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use fuselab_reports::gate::{GateMetric, Verdict};

use super::{Axes, PALETTE, Series, YFrom, fmt, line_chart, not_ready, section};
use crate::state::CompareScreen;

type Hints = Vec<(&'static str, &'static str)>;

fn verdict_style(v: Verdict) -> Style {
    match v {
        Verdict::Improved => Style::new().fg(Color::Green),
        Verdict::Regressed => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Verdict::Inconclusive => Style::new().fg(Color::Yellow),
        Verdict::NoChange | Verdict::NotApplicable => Style::new().fg(Color::Gray),
    }
}

/// Draws the compare screen; returns the key hints.
pub(super) fn render(c: &CompareScreen, frame: &mut Frame, area: Rect) -> Hints {
    let hints = vec![("↑/↓", "scroll"), ("m", "metric"), ("Esc", "back")];
    let names: Vec<String> = c
        .paths
        .iter()
        .map(|p| {
            p.file_name().map_or_else(
                || p.display().to_string(),
                |n| n.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let block = Block::bordered().title(format!(
        " compare · baseline {} vs {} ",
        names[0],
        names[1..].join(", ")
    ));
    let inner = block.inner(area);
    frame.render_widget(block, area);
    if not_ready(&c.content, frame, inner) {
        return hints;
    }
    let Some(v) = c.content.ready() else {
        return hints;
    };
    let warnings: Vec<String> = v
        .reports
        .iter()
        .enumerate()
        .flat_map(|(i, r)| match r {
            Ok(rep) => rep
                .warnings
                .iter()
                .map(|w| format!("{}: {w}", v.sides[i + 1].name))
                .collect::<Vec<_>>(),
            Err(e) => vec![format!("{}: cannot compare: {e}", v.sides[i + 1].name)],
        })
        .chain(v.sides.iter().filter_map(|s| {
            s.stand_in
                .as_ref()
                .map(|r| format!("{} is represented by {r}", s.name))
        }))
        .collect();
    let warn_h = (warnings.len() as u16).min(inner.height / 6).min(3);
    let table_h = (GateMetric::ALL.len() as u16 + 2).min(inner.height / 2 + 2);
    let [table, chart, warn] = Layout::vertical([
        Constraint::Length(table_h),
        Constraint::Min(5),
        Constraint::Length(warn_h),
    ])
    .areas(inner);
    // Ratio table: metric, baseline, then per candidate ratio + verdict.
    let wide = inner.width >= 120;
    let mut heads: Vec<Cell> = vec![
        Cell::from("metric"),
        Cell::from("unit"),
        Cell::from(Line::from("baseline").right_aligned()),
    ];
    let mut widths = vec![
        Constraint::Length(20),
        Constraint::Length(5),
        Constraint::Length(9),
    ];
    for s in &v.sides[1..] {
        heads.push(Cell::from(
            Line::from(fmt::clip(&s.name, 9)).right_aligned(),
        ));
        widths.push(Constraint::Length(9));
        if wide {
            heads.push(Cell::from(Line::from("95% CI").right_aligned()));
            widths.push(Constraint::Length(16));
        }
        heads.push(Cell::from("verdict"));
        widths.push(Constraint::Length(12));
    }
    let rows: Vec<Row> = GateMetric::ALL
        .iter()
        .enumerate()
        .skip(c.scroll)
        .map(|(j, m)| {
            let base = v
                .reports
                .iter()
                .find_map(|r| r.as_ref().ok())
                .and_then(|r| r.comparisons.get(j))
                .and_then(|mc| mc.baseline);
            let mut cells = vec![
                Cell::from(m.name()),
                Cell::from(m.unit()),
                Cell::from(
                    Line::from(base.map_or("-".into(), |b| fmt::num(b * m.display_scale())))
                        .right_aligned(),
                ),
            ];
            for r in &v.reports {
                match r.as_ref().ok().and_then(|r| r.comparisons.get(j)) {
                    Some(mc) => {
                        let ratio = mc.change.map_or("-".into(), |ch| fmt::ratio(1.0 + ch));
                        cells.push(Cell::from(Line::from(ratio).right_aligned()));
                        if wide {
                            let ci = mc.ci.map_or("-".into(), |(a, b)| {
                                format!("{}…{}", fmt::pct(a), fmt::pct(b))
                            });
                            cells.push(Cell::from(Line::from(ci).right_aligned()));
                        }
                        cells.push(Cell::from(Span::styled(
                            mc.verdict.as_str(),
                            verdict_style(mc.verdict),
                        )));
                    }
                    None => {
                        cells.push(Cell::from(Line::from("-").right_aligned()));
                        if wide {
                            cells.push(Cell::from(""));
                        }
                        cells.push(Cell::from("error"));
                    }
                }
            }
            Row::new(cells)
        })
        .collect();
    frame.render_widget(
        Table::new(rows, widths)
            .header(
                Row::new(heads).style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray)),
            )
            .block(section(
                "ratio to baseline · gate verdicts (same noise model as fuselab gate)",
            )),
        table,
    );
    let metric = c.metric;
    let series: Vec<Series> = v
        .curves
        .iter()
        .enumerate()
        .map(|(i, cv)| Series {
            label: cv.label.clone(),
            points: cv
                .points
                .iter()
                .map(|(_, m)| (m.output_token_throughput, 1e3 * metric.value(m)))
                .collect(),
            color: PALETTE[i % PALETTE.len()],
            scatter: cv.points.len() == 1,
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
    if warn_h > 0 {
        let lines: Vec<Line> = warnings
            .iter()
            .take(warn_h as usize)
            .map(|w| Line::from(fmt::clip(w, warn.width as usize)))
            .collect();
        frame.render_widget(
            Paragraph::new(lines).style(Style::new().fg(Color::Yellow)),
            warn,
        );
    }
    hints
}
