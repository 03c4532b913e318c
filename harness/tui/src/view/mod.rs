//! Rendering: a pure function of the [`App`] state onto a ratatui
//! [`Frame`]. Every screen lays itself out from the frame's size, so any
//! terminal from 80×24 up works and a resize simply draws the next frame at
//! the new size; smaller terminals get a note instead of a broken layout.

mod browse;
mod compare;
mod detail;
pub mod fmt;
mod form;
mod live;

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::symbols::Marker;
use ratatui::text::{Line, Span};
use ratatui::widgets::{Axis, Block, Borders, Chart, Clear, Dataset, GraphType, Paragraph};

use crate::state::{App, Loadable, Screen};

/// The smallest terminal the layout is designed for.
pub const MIN_SIZE: (u16, u16) = (80, 24);

/// Series colours, in order.
pub(crate) const PALETTE: [Color; 8] = [
    Color::Cyan,
    Color::Yellow,
    Color::Magenta,
    Color::Green,
    Color::Red,
    Color::Blue,
    Color::LightCyan,
    Color::LightYellow,
];

/// Draws the whole screen.
pub fn render(app: &App, frame: &mut Frame) {
    let area = frame.area();
    if area.width < 40 || area.height < 10 {
        frame.render_widget(
            Paragraph::new(format!(
                "fuselab tui needs at least {}×{} (now {}×{}); q quits",
                MIN_SIZE.0, MIN_SIZE.1, area.width, area.height
            )),
            area,
        );
        return;
    }
    let [body, message, footer] = Layout::vertical([
        Constraint::Min(0),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(area);
    let hints = match app.top() {
        None => browse::render(app, frame, body),
        Some(Screen::Detail(d)) => live::render(d, frame, body),
        Some(Screen::Compare(c)) => compare::render(c, frame, body),
        Some(Screen::Form(f)) => form::render(app, f, frame, body),
    };
    let msg = app.message.clone().unwrap_or_default();
    frame.render_widget(
        Paragraph::new(fmt::clip(&msg, message.width as usize))
            .style(Style::new().fg(Color::Yellow)),
        message,
    );
    let mut spans = Vec::new();
    for (i, (k, what)) in hints
        .iter()
        .chain(&[("?", "keys"), ("q", "quit")])
        .enumerate()
    {
        if i > 0 {
            spans.push(Span::raw("  "));
        }
        spans.push(Span::styled(*k, Style::new().add_modifier(Modifier::BOLD)));
        spans.push(Span::raw(format!(" {what}")));
    }
    frame.render_widget(
        Paragraph::new(Line::from(spans)).style(Style::new().fg(Color::Gray)),
        footer,
    );
    if app.help {
        help(frame, area);
    }
}

/// Every key, for the `?` overlay.
pub const KEYS: [(&str, &str); 18] = [
    ("↑/↓ k/j", "move"),
    ("PgUp/PgDn ^u/^d", "move a page"),
    ("Home/End g/G", "first / last"),
    ("Enter → l", "open (a folder, a sweep point, a trial)"),
    ("Esc ← h Bksp", "back"),
    ("/", "filter the list (Enter keeps it, Esc clears it)"),
    ("Space", "mark / unmark for comparing (first = baseline)"),
    ("x", "clear the marks"),
    ("c", "compare the marked folders"),
    ("n", "start new work (bench, sweep, tune)"),
    ("r", "rescan the folders"),
    ("t", "run: histograms ↔ CDFs"),
    ("p", "run: provenance"),
    ("m", "curves: next latency metric"),
    ("form", "↑/↓ field · ←/→ choice · Enter start · Esc cancel"),
    ("?", "this help (any key closes it)"),
    ("q Ctrl-C", "quit; work started here keeps running"),
    ("", "open a running job's folder again to follow it"),
];

fn help(frame: &mut Frame, area: Rect) {
    let w = 76.min(area.width);
    let h = (KEYS.len() as u16 + 2).min(area.height);
    let [r] = Layout::horizontal([Constraint::Length(w)])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(h)])
        .flex(Flex::Center)
        .areas(r);
    frame.render_widget(Clear, r);
    let lines: Vec<Line> = KEYS
        .iter()
        .map(|(k, v)| {
            Line::from(vec![
                Span::styled(
                    format!("{k:>16}  "),
                    Style::new().add_modifier(Modifier::BOLD),
                ),
                Span::raw(*v),
            ])
        })
        .collect();
    frame.render_widget(
        Paragraph::new(lines).block(Block::bordered().title(" keys ")),
        r,
    );
}

/// A section title as a one-line top border.
pub(crate) fn section(title: impl Into<String>) -> Block<'static> {
    Block::new()
        .borders(Borders::TOP)
        .title(Span::styled(
            format!(" {} ", title.into()),
            Style::new().add_modifier(Modifier::BOLD),
        ))
        .border_style(Style::new().fg(Color::DarkGray))
}

/// Draws a loading or failure note; `true` when `content` is ready.
pub(crate) fn not_ready<T>(content: &Loadable<T>, frame: &mut Frame, area: Rect) -> bool {
    match content {
        Loadable::Ready(_) => false,
        Loadable::Loading => {
            frame.render_widget(Paragraph::new("reading…"), area);
            true
        }
        Loadable::Failed(e) => {
            frame.render_widget(
                Paragraph::new(format!("cannot read: {e}"))
                    .style(Style::new().fg(Color::Red))
                    .wrap(ratatui::widgets::Wrap { trim: true }),
                area,
            );
            true
        }
    }
}

/// Re-bins `values` to `width` columns: each column gets the sum (`sum`) or
/// the mean of the values that fall in it.
pub(crate) fn rebin(values: &[f64], width: usize, sum: bool) -> Vec<f64> {
    if values.is_empty() || width == 0 {
        return Vec::new();
    }
    (0..width)
        .map(|c| {
            let a = c * values.len() / width;
            let b = ((c + 1) * values.len() / width)
                .max(a + 1)
                .min(values.len());
            let s: f64 = values[a..b].iter().sum();
            if sum { s } else { s / (b - a) as f64 }
        })
        .collect()
}

/// A series for [`line_chart`].
pub(crate) struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    pub color: Color,
    /// Draw points only (no line).
    pub scatter: bool,
}

/// Whether a chart's value axis starts at zero.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum YFrom {
    /// Latencies: from zero, so that ratios read true.
    Zero,
    /// Objective values: from the data.
    Data,
}

fn bounds(series: &[Series], axis: fn(&(f64, f64)) -> f64, from_zero: bool) -> [f64; 2] {
    let vals = series.iter().flat_map(|s| s.points.iter().map(axis));
    let (mut lo, mut hi) = vals
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if !lo.is_finite() {
        return [0.0, 1.0];
    }
    if from_zero {
        lo = lo.min(0.0);
    }
    if hi - lo <= 1e-3 * hi.abs().max(lo.abs()).max(1e-12) {
        let pad = hi.abs().max(1e-9) * 0.1;
        lo -= pad;
        hi += pad;
    } else {
        hi += (hi - lo) * 0.05;
    }
    [lo, hi]
}

/// A chart's axes.
pub(crate) struct Axes<'a> {
    /// Title of the x axis.
    pub x: &'a str,
    /// Title of the y axis.
    pub y: &'a str,
    /// Formats the y labels.
    pub y_fmt: fn(f64) -> String,
    /// Where the y axis starts.
    pub y_from: YFrom,
}

/// A braille line chart with three labels on each axis.
pub(crate) fn line_chart(
    frame: &mut Frame,
    area: Rect,
    block: Block<'_>,
    series: &[Series],
    axes: Axes<'_>,
) {
    let Axes {
        x: x_label,
        y: y_label,
        y_fmt,
        y_from,
    } = axes;
    if series.iter().all(|s| s.points.is_empty()) {
        frame.render_widget(Paragraph::new("no points yet").block(block), area);
        return;
    }
    let xb = bounds(series, |p| p.0, false);
    let yb = bounds(series, |p| p.1, y_from == YFrom::Zero);
    let datasets: Vec<Dataset> = series
        .iter()
        .map(|s| {
            let scatter = s.scatter || s.points.len() == 1;
            let d = Dataset::default()
                .marker(if scatter {
                    Marker::Dot
                } else {
                    Marker::Braille
                })
                .style(Style::new().fg(s.color))
                .data(&s.points);
            // One series needs no legend.
            let d = if series.len() > 1 {
                d.name(s.label.clone())
            } else {
                d
            };
            if scatter {
                d.graph_type(GraphType::Scatter)
            } else {
                d.graph_type(GraphType::Line)
            }
        })
        .collect();
    let labels = |b: [f64; 2], f: fn(f64) -> String| vec![f(b[0]), f((b[0] + b[1]) / 2.0), f(b[1])];
    let chart = Chart::new(datasets)
        .block(block)
        .x_axis(
            Axis::default()
                .title(x_label.to_string())
                .bounds(xb)
                .labels(labels(xb, fmt::num))
                .style(Style::new().fg(Color::Gray)),
        )
        .y_axis(
            Axis::default()
                .title(y_label.to_string())
                .bounds(yb)
                .labels(labels(yb, y_fmt))
                .style(Style::new().fg(Color::Gray)),
        )
        .legend_position(Some(ratatui::widgets::LegendPosition::TopLeft))
        .hidden_legend_constraints((Constraint::Percentage(60), Constraint::Percentage(60)));
    frame.render_widget(chart, area);
}

/// Picks the columns that fit `width`: `cols` are `(width, priority)`
/// (0 first); returns their indices in the original order. Each column
/// costs its width plus one space.
pub(crate) fn fit_columns(cols: &[(u16, u8)], width: u16) -> Vec<usize> {
    let mut order: Vec<usize> = (0..cols.len()).collect();
    order.sort_by_key(|&i| (cols[i].1, i));
    let mut used = 0u16;
    let mut keep = Vec::new();
    for i in order {
        let w = cols[i].0 + 1;
        if used + w <= width {
            used += w;
            keep.push(i);
        }
    }
    keep.sort_unstable();
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebin_sums_or_averages() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(rebin(&v, 2, true), [3.0, 7.0]);
        assert_eq!(rebin(&v, 2, false), [1.5, 3.5]);
        assert_eq!(rebin(&v, 8, true).len(), 8);
        assert!(rebin(&[], 5, true).is_empty());
    }

    #[test]
    fn columns_fit_by_priority() {
        let cols = [(10, 0), (10, 2), (10, 1)];
        assert_eq!(fit_columns(&cols, 22), [0, 2]);
        assert_eq!(fit_columns(&cols, 40), [0, 1, 2]);
    }
}
