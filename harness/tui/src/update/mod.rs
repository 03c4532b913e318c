//! State transitions: a key or a finished background read in, the new state
//! and the [`Effect`]s to carry out (reads, comparisons, starting work) out.
//! Pure: no I/O, no clock; the app loop performs the effects and feeds their
//! results back as [`Msg`]s, and the tests do the same by hand.

use std::path::PathBuf;
use std::time::SystemTime;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::catalog::{Entry, EntryKind};
use crate::compare::CompareView;
use crate::form::Form;
use crate::job::{JobRequest, WorkKind};
use crate::live::{Content, Opened, Suggestion};
use crate::state::{App, CompareScreen, DetailScreen, Loadable, Screen};

/// Something that happened.
#[derive(Clone, Debug, PartialEq)]
pub enum Msg {
    /// A key was pressed.
    Key(KeyEvent),
    /// The terminal was resized (the next frame lays out anew).
    Resize,
    /// Time passed (ages in the list are measured against it).
    Tick(SystemTime),
    /// The roots were scanned.
    Scanned(Vec<Entry>),
    /// A folder was read.
    Opened {
        /// The folder.
        path: PathBuf,
        /// Its view, or why it could not be read.
        result: Result<Opened, String>,
    },
    /// A comparison finished.
    Compared {
        /// The folders compared.
        paths: Vec<PathBuf>,
        /// The comparison, or why it failed.
        result: Result<CompareView, String>,
    },
    /// A campaign's next suggestion was computed.
    Suggested {
        /// The campaign folder.
        path: PathBuf,
        /// Trials it was computed after.
        trials: usize,
        /// The suggestion (`None`: complete), or why there is none.
        result: Result<Option<String>, String>,
    },
    /// New work was started in this folder, or could not be.
    Started(Result<PathBuf, String>),
}

/// Something for the app loop to do.
#[derive(Clone, Debug, PartialEq)]
pub enum Effect {
    /// Rescan the roots.
    Scan,
    /// Read a folder for its view.
    Open(PathBuf),
    /// Compare folders, the first as baseline.
    Compare(Vec<PathBuf>),
    /// Compute a campaign's next suggestion.
    Suggest {
        /// The campaign folder.
        path: PathBuf,
        /// Trials in the view it is for.
        trials: usize,
        /// Its budget, when known.
        budget: Option<usize>,
    },
    /// Start new work writing `dir`.
    Start {
        /// What to run.
        request: JobRequest,
        /// The new folder.
        dir: PathBuf,
    },
}

/// Rows a page key moves.
const PAGE: usize = 10;

/// Applies `msg` to `app` and returns what to do next.
pub fn update(app: &mut App, msg: Msg) -> Vec<Effect> {
    match msg {
        Msg::Key(key) => on_key(app, key),
        Msg::Resize => Vec::new(),
        Msg::Tick(now) => {
            app.now = now;
            Vec::new()
        }
        Msg::Scanned(entries) => {
            app.browse.entries = entries;
            app.browse.scanned = true;
            let i = app.browse.selected_index();
            app.browse.select(i);
            Vec::new()
        }
        Msg::Opened { path, result } => on_opened(app, path, result),
        Msg::Compared { paths, result } => {
            for s in &mut app.screens {
                if let Screen::Compare(c) = s
                    && c.paths == paths
                {
                    c.content = match &result {
                        Ok(v) => Loadable::Ready(v.clone()),
                        Err(e) => Loadable::Failed(e.clone()),
                    };
                }
            }
            Vec::new()
        }
        Msg::Suggested {
            path,
            trials,
            result,
        } => {
            for d in detail_screens(app, &path) {
                if let Loadable::Ready(o) = &mut d.content
                    && let Content::Campaign(c) = &mut o.content
                    && c.data.trials.len() == trials
                {
                    c.suggestion = match &result {
                        Ok(Some(s)) => Suggestion::Next(s.clone()),
                        Ok(None) => Suggestion::Complete,
                        Err(e) => Suggestion::Unavailable(e.clone()),
                    };
                }
            }
            Vec::new()
        }
        Msg::Started(Ok(dir)) => {
            if matches!(app.top(), Some(Screen::Form(_))) {
                app.screens.pop();
            }
            app.message = Some(format!("started: {}", dir.display()));
            app.screens
                .push(Screen::Detail(DetailScreen::new(dir.clone())));
            vec![Effect::Open(dir), Effect::Scan]
        }
        Msg::Started(Err(e)) => {
            match app.screens.last_mut() {
                Some(Screen::Form(f)) => f.error = Some(e),
                _ => app.message = Some(e),
            }
            Vec::new()
        }
    }
}

fn detail_screens<'a>(
    app: &'a mut App,
    path: &'a PathBuf,
) -> impl Iterator<Item = &'a mut DetailScreen> + 'a {
    app.screens.iter_mut().filter_map(move |s| match s {
        Screen::Detail(d) if &d.path == path => Some(d),
        _ => None,
    })
}

fn on_opened(app: &mut App, path: PathBuf, result: Result<Opened, String>) -> Vec<Effect> {
    let mut effects = Vec::new();
    let mut stale = None;
    for d in detail_screens(app, &path) {
        match &result {
            Ok(new) => {
                let mut new = new.clone();
                // Keep a suggestion computed for the same trials.
                if let (Some(Content::Campaign(oc)), Content::Campaign(c)) =
                    (d.content.ready().map(|o| &o.content), &mut new.content)
                    && oc.data.trials.len() == c.data.trials.len()
                    && oc.suggestion != Suggestion::Computing
                {
                    c.suggestion = oc.suggestion.clone();
                }
                if let Content::Campaign(c) = &new.content
                    && c.suggestion == Suggestion::Computing
                    && !effects.iter().any(|e| matches!(e, Effect::Suggest { .. }))
                {
                    effects.push(Effect::Suggest {
                        path: path.clone(),
                        trials: c.data.trials.len(),
                        budget: c.budget,
                    });
                }
                d.content = Loadable::Ready(new);
                let rows = d.rows();
                d.selected = d.selected.min(rows.saturating_sub(1));
            }
            // A folder being written can be caught half-way: keep showing
            // what was read before and say why it was not refreshed.
            Err(e) => match &d.content {
                Loadable::Ready(_) => stale = Some(format!("not refreshed: {e}")),
                _ => d.content = Loadable::Failed(e.clone()),
            },
        }
    }
    if stale.is_some() {
        app.message = stale;
    }
    effects
}

fn key_is(key: &KeyEvent, c: char) -> bool {
    key.code == KeyCode::Char(c)
        && !key
            .modifiers
            .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT)
}

fn on_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    if key.kind == KeyEventKind::Release {
        return Vec::new();
    }
    if key.code == KeyCode::Char('c') && key.modifiers.contains(KeyModifiers::CONTROL) {
        app.quit = true;
        return Vec::new();
    }
    if app.help {
        // Any key closes the help; `q` still quits.
        app.help = false;
        if key_is(&key, 'q') {
            app.quit = true;
        }
        return Vec::new();
    }
    if !app.typing() {
        if key_is(&key, 'q') {
            app.quit = true;
            return Vec::new();
        }
        if key_is(&key, '?') {
            app.help = true;
            return Vec::new();
        }
    }
    app.message = None;
    match app.screens.last_mut() {
        None => browse_key(app, key),
        Some(Screen::Form(_)) => form_key(app, key),
        Some(Screen::Detail(_)) => detail_key(app, key),
        Some(Screen::Compare(_)) => compare_key(app, key),
    }
}

/// Up/down movement keys: `Some(delta)` (large deltas for page and ends).
fn movement(key: &KeyEvent) -> Option<isize> {
    match key.code {
        KeyCode::Up => Some(-1),
        KeyCode::Down => Some(1),
        KeyCode::PageUp => Some(-(PAGE as isize)),
        KeyCode::PageDown => Some(PAGE as isize),
        KeyCode::Home => Some(isize::MIN / 2),
        KeyCode::End => Some(isize::MAX / 2),
        KeyCode::Char('k') if key_is(key, 'k') => Some(-1),
        KeyCode::Char('j') if key_is(key, 'j') => Some(1),
        KeyCode::Char('g') if key_is(key, 'g') => Some(isize::MIN / 2),
        KeyCode::Char('G') => Some(isize::MAX / 2),
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => {
            Some(-(PAGE as isize))
        }
        KeyCode::Char('d') if key.modifiers.contains(KeyModifiers::CONTROL) => Some(PAGE as isize),
        _ => None,
    }
}

fn moved(index: usize, delta: isize, len: usize) -> usize {
    if len == 0 {
        return 0;
    }
    (index as isize)
        .saturating_add(delta)
        .clamp(0, len as isize - 1) as usize
}

fn browse_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let b = &mut app.browse;
    if b.filtering {
        match key.code {
            KeyCode::Esc => {
                b.filter.clear();
                b.filtering = false;
            }
            KeyCode::Enter => b.filtering = false,
            KeyCode::Backspace => {
                b.filter.pop();
            }
            KeyCode::Up | KeyCode::Down | KeyCode::PageUp | KeyCode::PageDown => {
                let d = movement(&key).unwrap_or(0);
                let i = moved(b.selected_index(), d, b.visible().len());
                b.select(i);
                return Vec::new();
            }
            KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) => b.filter.push(c),
            _ => {}
        }
        let i = b.selected_index();
        b.select(i);
        return Vec::new();
    }
    if let Some(d) = movement(&key) {
        let i = moved(b.selected_index(), d, b.visible().len());
        b.select(i);
        return Vec::new();
    }
    match key.code {
        KeyCode::Char('/') => {
            b.filtering = true;
            Vec::new()
        }
        KeyCode::Esc if !b.filter.is_empty() => {
            b.filter.clear();
            Vec::new()
        }
        KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
            let Some(e) = b.selected_entry() else {
                return Vec::new();
            };
            let path = e.path.clone();
            app.screens
                .push(Screen::Detail(DetailScreen::new(path.clone())));
            vec![Effect::Open(path)]
        }
        KeyCode::Char(' ') => {
            if let Some(e) = b.selected_entry() {
                let path = e.path.clone();
                if e.kind == EntryKind::Pending {
                    app.message = Some("nothing to compare in this folder yet".into());
                } else if let Some(i) = b.marked.iter().position(|p| *p == path) {
                    b.marked.remove(i);
                } else {
                    b.marked.push(path);
                }
                let i = moved(b.selected_index(), 1, b.visible().len());
                b.select(i);
            }
            Vec::new()
        }
        KeyCode::Char('c') => {
            // Drop marks of folders that disappeared.
            let known: Vec<PathBuf> = b.entries.iter().map(|e| e.path.clone()).collect();
            b.marked.retain(|p| known.contains(p));
            if b.marked.len() < 2 {
                app.message = Some(format!(
                    "mark two or more with Space to compare ({} marked)",
                    b.marked.len()
                ));
                return Vec::new();
            }
            let paths = b.marked.clone();
            app.screens.push(Screen::Compare(CompareScreen {
                paths: paths.clone(),
                content: Loadable::Loading,
                metric: crate::live::CurveMetric::TtftP99,
                scroll: 0,
            }));
            vec![Effect::Compare(paths)]
        }
        KeyCode::Char('n') => {
            let name = format!("bench-{}", unix_secs(app.now));
            app.screens
                .push(Screen::Form(Form::new(WorkKind::Bench, &name)));
            Vec::new()
        }
        KeyCode::Char('r') => {
            app.message = Some("rescanning".into());
            vec![Effect::Scan]
        }
        KeyCode::Char('x') => {
            b.marked.clear();
            Vec::new()
        }
        _ => Vec::new(),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn is_back(key: &KeyEvent) -> bool {
    matches!(key.code, KeyCode::Esc | KeyCode::Backspace | KeyCode::Left) || key_is(key, 'h')
}

fn form_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Some(Screen::Form(f)) = app.screens.last_mut() else {
        return Vec::new();
    };
    f.error = None;
    match key.code {
        KeyCode::Esc => {
            app.screens.pop();
        }
        KeyCode::Up | KeyCode::BackTab => f.move_focus(-1),
        KeyCode::Down | KeyCode::Tab => f.move_focus(1),
        KeyCode::Left if !f.typing() => f.cycle(-1),
        KeyCode::Right if !f.typing() => f.cycle(1),
        KeyCode::Char(' ') if !f.typing() => f.cycle(1),
        KeyCode::Char('k') if !f.typing() => f.move_focus(-1),
        KeyCode::Char('j') if !f.typing() => f.move_focus(1),
        KeyCode::Char('h') if !f.typing() => f.cycle(-1),
        KeyCode::Char('l') if !f.typing() => f.cycle(1),
        KeyCode::Backspace => f.backspace(),
        KeyCode::Char(c)
            if f.typing()
                && !key
                    .modifiers
                    .intersects(KeyModifiers::CONTROL | KeyModifiers::ALT) =>
        {
            f.type_char(c);
        }
        KeyCode::Enter => {
            let form = f.clone();
            match form.request() {
                Ok(request) => {
                    let dir = form.out_dir(&app.root_for(request.kind));
                    return vec![Effect::Start { request, dir }];
                }
                Err(e) => f.error = Some(e.to_string()),
            }
        }
        _ => {}
    }
    Vec::new()
}

fn detail_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Some(Screen::Detail(d)) = app.screens.last_mut() else {
        return Vec::new();
    };
    if is_back(&key) {
        app.screens.pop();
        return vec![Effect::Scan];
    }
    if let Some(delta) = movement(&key) {
        d.selected = moved(d.selected, delta, d.rows());
        return Vec::new();
    }
    match key.code {
        KeyCode::Char('t') => d.cdf = !d.cdf,
        KeyCode::Char('p') => d.provenance = !d.provenance,
        KeyCode::Char('m') => d.metric = d.metric.next(),
        KeyCode::Enter | KeyCode::Right | KeyCode::Char('l') => {
            let Some(o) = d.content.ready() else {
                return Vec::new();
            };
            let run = match &o.content {
                Content::Sweep(s) => s.summary.points.get(d.selected).map(|p| p.run.clone()),
                Content::Campaign(c) => c.data.trials.get(d.selected).and_then(|t| t.run.clone()),
                _ => None,
            };
            if let Some(run) = run {
                let path = o.path.join(run);
                app.screens
                    .push(Screen::Detail(DetailScreen::new(path.clone())));
                return vec![Effect::Open(path)];
            }
        }
        _ => {}
    }
    Vec::new()
}

fn compare_key(app: &mut App, key: KeyEvent) -> Vec<Effect> {
    let Some(Screen::Compare(c)) = app.screens.last_mut() else {
        return Vec::new();
    };
    if is_back(&key) {
        app.screens.pop();
        return Vec::new();
    }
    if let Some(delta) = movement(&key) {
        c.scroll = moved(
            c.scroll,
            delta,
            fuselab_reports::gate::GateMetric::ALL.len(),
        );
        return Vec::new();
    }
    if key_is(&key, 'm') {
        c.metric = c.metric.next();
    }
    Vec::new()
}

#[cfg(test)]
mod tests;
