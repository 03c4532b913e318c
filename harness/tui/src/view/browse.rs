//! The browse list.

use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table, TableState};

use super::fmt;
use crate::catalog::{Entry, EntryStatus};
use crate::state::App;

type Hints = Vec<(&'static str, &'static str)>;

/// `(header, width, priority)` of each column; `name` takes what is left.
const COLUMNS: [(&str, u16, u8); 17] = [
    ("", 2, 0),
    ("name", 20, 0),
    ("kind", 6, 1),
    ("status", 7, 10),
    ("age", 4, 12),
    ("engine", 6, 13),
    ("hardware", 9, 15),
    ("policy", 10, 2),
    ("workload", 13, 14),
    ("load", 8, 3),
    ("TTFT p50", 8, 4),
    ("TTFT p99", 8, 5),
    ("TPOT p50", 8, 6),
    ("tok/s", 6, 7),
    ("goodput", 7, 8),
    ("eff tput", 8, 11),
    ("note", 14, 16),
];

fn cell(e: &Entry, col: usize, app: &App) -> String {
    let m = e.metrics.as_ref();
    let f = |g: fn(&fuselab_core::Metrics) -> f64, secs: bool| {
        m.map_or_else(String::new, |m| {
            if secs {
                fmt::secs(g(m))
            } else {
                fmt::num(g(m))
            }
        })
    };
    match col {
        0 => app
            .browse
            .mark_of(&e.path)
            .map_or_else(String::new, |i| format!("{i}*")),
        1 => e.name.clone(),
        2 => e.kind.label().into(),
        3 => e.status.label(),
        4 => fmt::age(e.modified, app.now),
        5 => e.engine.clone(),
        6 => e.hardware.clone(),
        7 => e.policy.clone(),
        8 => e.workload.clone(),
        9 => e.load.clone(),
        10 => f(|m| m.ttft_s.p50, true),
        11 => f(|m| m.ttft_s.p99, true),
        12 => f(|m| m.tpot_s.p50, true),
        13 => f(|m| m.output_token_throughput, false),
        14 => f(|m| m.goodput, false),
        15 => m.map_or_else(String::new, |m| {
            let key = m
                .slo
                .fastgen_rate
                .map_or_else(|| "4".to_string(), fuselab_metrics::fastgen_key);
            m.effective_throughput
                .get(&key)
                .map_or_else(String::new, |v| fmt::num(*v))
        }),
        _ => e.note.clone(),
    }
}

/// Draws the browse list; returns the key hints.
pub(super) fn render(app: &App, frame: &mut Frame, area: Rect) -> Hints {
    let b = &app.browse;
    let visible = b.visible();
    let roots: Vec<String> = app.roots.iter().map(|r| r.display().to_string()).collect();
    let title = format!(
        " fuselab · {} · {} folders{}{} ",
        roots.join(", "),
        b.entries.len(),
        if b.filter.is_empty() {
            String::new()
        } else {
            format!(" · {} shown", visible.len())
        },
        if b.marked.is_empty() {
            String::new()
        } else {
            format!(" · {} marked", b.marked.len())
        },
    );
    let [table_area, filter_area, info_area] = Layout::vertical([
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let inner_width = table_area.width.saturating_sub(2);
    let cols = super::fit_columns(&COLUMNS.map(|(_, w, p)| (w, p)), inner_width);
    let widths: Vec<Constraint> = cols
        .iter()
        .map(|&i| {
            if i == 1 {
                Constraint::Min(COLUMNS[i].1)
            } else {
                Constraint::Length(COLUMNS[i].1)
            }
        })
        .collect();
    let header = Row::new(cols.iter().map(|&i| {
        let h = COLUMNS[i].0;
        if (10..16).contains(&i) {
            Cell::from(Line::from(h).right_aligned())
        } else {
            Cell::from(h)
        }
    }))
    .style(Style::new().add_modifier(Modifier::BOLD).fg(Color::Gray));
    let rows: Vec<Row> = visible
        .iter()
        .map(|e| {
            let style = match e.status {
                EntryStatus::Running => Style::new().fg(Color::Green),
                EntryStatus::Failed(_) | EntryStatus::Stopped => Style::new().fg(Color::Red),
                EntryStatus::Partial => Style::new().fg(Color::Yellow),
                EntryStatus::Done => Style::new(),
            };
            let style = if app.browse.mark_of(&e.path).is_some() {
                style.add_modifier(Modifier::BOLD)
            } else {
                style
            };
            Row::new(cols.iter().map(|&i| {
                let text = cell(e, i, app);
                if (10..16).contains(&i) {
                    Cell::from(Line::from(text).right_aligned())
                } else {
                    Cell::from(text)
                }
            }))
            .style(style)
        })
        .collect();
    let empty = rows.is_empty();
    let table = Table::new(rows, widths)
        .header(header)
        .block(Block::bordered().title(title))
        .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED))
        .highlight_symbol("")
        .column_spacing(1);
    let mut state = TableState::default().with_selected((!empty).then(|| b.selected_index()));
    frame.render_stateful_widget(table, table_area, &mut state);
    if empty {
        let note = if !b.scanned {
            "scanning…".to_string()
        } else if b.entries.is_empty() {
            format!(
                "no run, sweep or campaign folder under {}; press n to start one",
                roots.join(", ")
            )
        } else {
            "nothing matches the filter (Esc clears it)".into()
        };
        let inner = Rect {
            x: table_area.x + 2,
            y: table_area.y + 2,
            width: table_area.width.saturating_sub(4),
            height: 1,
        };
        frame.render_widget(
            Paragraph::new(note).style(Style::new().fg(Color::Gray)),
            inner,
        );
    }
    let filter_line = if b.filtering {
        Line::from(vec![
            Span::styled("/", Style::new().add_modifier(Modifier::BOLD)),
            Span::raw(b.filter.clone()),
            Span::styled("▏", Style::new().fg(Color::Gray)),
            Span::styled("   Enter keep · Esc clear", Style::new().fg(Color::Gray)),
        ])
    } else if !b.filter.is_empty() {
        Line::from(format!("filter: {}", b.filter))
    } else {
        Line::from("")
    };
    frame.render_widget(Paragraph::new(filter_line), filter_area);
    let info = b.selected_entry().map_or_else(String::new, |e| {
        let mut parts = vec![e.path.display().to_string()];
        if !e.note.is_empty() {
            parts.push(e.note.clone());
        }
        if !e.engine.is_empty() {
            parts.push(format!("{} {}", e.engine, e.hardware).trim().to_string());
        }
        if !e.workload.is_empty() {
            parts.push(e.workload.clone());
        }
        parts.join(" · ")
    });
    frame.render_widget(
        Paragraph::new(fmt::clip(&info, info_area.width as usize))
            .style(Style::new().fg(Color::Gray)),
        info_area,
    );
    if b.filtering {
        vec![("Enter", "keep filter"), ("Esc", "clear")]
    } else {
        vec![
            ("Enter", "open"),
            ("/", "filter"),
            ("Space", "mark"),
            ("c", "compare"),
            ("n", "new"),
        ]
    }
}
