//! The new-work form.

use ratatui::Frame;
use ratatui::layout::{Constraint, Flex, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph};

use crate::form::{FieldKey, Form, Value};
use crate::state::App;

type Hints = Vec<(&'static str, &'static str)>;

/// Draws the form; returns the key hints.
pub(super) fn render(app: &App, f: &Form, frame: &mut Frame, area: Rect) -> Hints {
    let kind = f.kind();
    let visible = f.visible();
    let h = (visible.len() as u16 + 6).min(area.height);
    let w = 76.min(area.width);
    let [r] = Layout::horizontal([Constraint::Length(w)])
        .flex(Flex::Center)
        .areas(area);
    let [r] = Layout::vertical([Constraint::Length(h)])
        .flex(Flex::Center)
        .areas(r);
    let dir = f.out_dir(&app.root_for(kind));
    let block = Block::bordered().title(format!(" new {} → {} ", kind.name(), dir.display()));
    let inner = block.inner(r);
    frame.render_widget(block, r);
    let focused = f.focused();
    let mut lines: Vec<Line> = Vec::new();
    for key in &visible {
        let value = f
            .fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .expect("visible fields exist");
        let on = *key == focused;
        let shown = match value {
            Value::Choice { .. } => format!("‹ {} ›", value.text()),
            Value::Text(t) if on => format!("{t}▏"),
            Value::Text(t) => t.clone(),
            Value::Button => value.text().into(),
        };
        let style = if on {
            Style::new().add_modifier(Modifier::REVERSED)
        } else {
            Style::new()
        };
        let mut spans = vec![
            Span::styled(
                format!("{:>10}  ", key.label(kind)),
                Style::new().fg(Color::Gray),
            ),
            Span::styled(format!("{shown:<28}"), style),
        ];
        if on || *key == FieldKey::Start {
            spans.push(Span::styled(
                format!("  {}", key.hint(kind)),
                Style::new().fg(Color::DarkGray),
            ));
        }
        lines.push(Line::from(spans));
    }
    lines.push(Line::from(""));
    match &f.error {
        Some(e) => lines.push(Line::styled(e.clone(), Style::new().fg(Color::Red))),
        None => lines.push(Line::styled(
            "runs detached: it goes on if the TUI is closed",
            Style::new().fg(Color::DarkGray),
        )),
    }
    frame.render_widget(Paragraph::new(lines), inner);
    vec![
        ("↑/↓", "field"),
        ("←/→", "change"),
        ("Enter", "start"),
        ("Esc", "cancel"),
    ]
}
