//! Tests of the update logic: keys and messages in, state and effects out.

use std::path::{Path, PathBuf};

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use super::*;
use crate::catalog::{Entry, EntryKind, EntryStatus};
use crate::live::{CampaignView, Content, Opened, Suggestion};
use crate::state::{App, Loadable, Screen};

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn code(c: KeyCode) -> Msg {
    Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
}

fn entry(name: &str, kind: EntryKind) -> Entry {
    Entry {
        path: PathBuf::from(name),
        name: name.into(),
        kind,
        status: EntryStatus::Done,
        modified: None,
        engine: "sim".into(),
        hardware: "h200".into(),
        policy: if name.contains("chunked") {
            "chunked"
        } else {
            "splitfuse"
        }
        .into(),
        workload: "fastgen-1200".into(),
        load: "4/s".into(),
        metrics: None,
        note: String::new(),
    }
}

fn app() -> App {
    let mut app = App::new(vec!["runs".into(), "campaigns".into()]);
    update(
        &mut app,
        Msg::Scanned(vec![
            entry("runs/a-splitfuse", EntryKind::Run),
            entry("runs/b-chunked", EntryKind::Run),
            entry("runs/sweep", EntryKind::Sweep),
            entry("campaigns/c", EntryKind::Campaign),
        ]),
    );
    app
}

fn send(app: &mut App, msgs: impl IntoIterator<Item = Msg>) -> Vec<Effect> {
    msgs.into_iter().flat_map(|m| update(app, m)).collect()
}

fn selected(app: &App) -> String {
    app.browse.selected_entry().unwrap().name.clone()
}

#[test]
fn arrows_and_vim_keys_move_and_clamp() {
    let mut app = app();
    assert_eq!(selected(&app), "runs/a-splitfuse");
    send(&mut app, [key('j'), code(KeyCode::Down)]);
    assert_eq!(selected(&app), "runs/sweep");
    send(&mut app, [key('k')]);
    assert_eq!(selected(&app), "runs/b-chunked");
    send(&mut app, [key('G')]);
    assert_eq!(selected(&app), "campaigns/c");
    send(&mut app, [key('j'), code(KeyCode::PageDown)]);
    assert_eq!(selected(&app), "campaigns/c", "clamped at the end");
    send(&mut app, [key('g')]);
    assert_eq!(selected(&app), "runs/a-splitfuse");
    send(&mut app, [code(KeyCode::Up)]);
    assert_eq!(selected(&app), "runs/a-splitfuse", "clamped at the start");
}

#[test]
fn the_selection_follows_its_folder_across_rescans() {
    let mut app = app();
    send(&mut app, [key('j')]);
    let mut entries = app.browse.entries.clone();
    entries.insert(0, entry("runs/new", EntryKind::Run));
    send(&mut app, [Msg::Scanned(entries)]);
    assert_eq!(selected(&app), "runs/b-chunked");
}

#[test]
fn typing_filters_and_q_is_text_while_filtering() {
    let mut app = app();
    send(&mut app, [key('/')]);
    assert!(app.browse.filtering && app.typing());
    send(&mut app, "chunked q".chars().map(key));
    assert!(!app.quit, "q is part of the filter");
    assert_eq!(app.browse.filter, "chunked q");
    assert!(app.browse.visible().is_empty());
    send(
        &mut app,
        [code(KeyCode::Backspace), code(KeyCode::Backspace)],
    );
    assert_eq!(app.browse.visible().len(), 1);
    assert_eq!(selected(&app), "runs/b-chunked");
    send(&mut app, [code(KeyCode::Enter)]);
    assert!(!app.browse.filtering);
    assert_eq!(app.browse.filter, "chunked");
    // Enter now opens the one match.
    let fx = send(&mut app, [code(KeyCode::Enter)]);
    assert_eq!(fx, [Effect::Open("runs/b-chunked".into())]);
    send(&mut app, [code(KeyCode::Esc)]);
    send(&mut app, [key('/'), code(KeyCode::Esc)]);
    assert_eq!(app.browse.filter, "", "Esc clears the filter");
    assert_eq!(app.browse.visible().len(), 4);
}

#[test]
fn space_marks_in_order_and_c_compares_them() {
    let mut app = app();
    let fx = send(&mut app, [key('c')]);
    assert!(fx.is_empty());
    assert!(app.message.as_deref().unwrap().contains("mark two"));
    // Space marks and moves down; the first marked is the baseline.
    send(&mut app, [key('j'), key(' '), key('k'), key('k'), key(' ')]);
    assert_eq!(
        app.browse.marked,
        [
            PathBuf::from("runs/b-chunked"),
            PathBuf::from("runs/a-splitfuse")
        ]
    );
    assert_eq!(app.browse.mark_of(Path::new("runs/a-splitfuse")), Some(2));
    let fx = send(&mut app, [key('c')]);
    assert_eq!(
        fx,
        [Effect::Compare(vec![
            "runs/b-chunked".into(),
            "runs/a-splitfuse".into()
        ])]
    );
    assert!(matches!(app.top(), Some(Screen::Compare(c)) if c.content == Loadable::Loading));
    send(&mut app, [key('m')]);
    let Some(Screen::Compare(c)) = app.top() else {
        panic!()
    };
    assert_eq!(c.metric, crate::live::CurveMetric::TtftP50);
    send(&mut app, [key('h')]);
    assert!(app.top().is_none());
    // Unmark with Space again; x clears.
    send(&mut app, [key('g'), key(' ')]);
    assert_eq!(app.browse.marked, [PathBuf::from("runs/b-chunked")]);
    send(&mut app, [key('x')]);
    assert!(app.browse.marked.is_empty());
}

#[test]
fn q_and_ctrl_c_quit_and_help_toggles() {
    let mut app = app();
    send(&mut app, [key('?')]);
    assert!(app.help);
    send(&mut app, [key('j')]);
    assert!(!app.help && !app.quit, "any key closes the help");
    assert_eq!(selected(&app), "runs/a-splitfuse", "and does nothing else");
    send(&mut app, [key('q')]);
    assert!(app.quit);
    let mut app = self::app();
    send(&mut app, [key('/')]);
    send(
        &mut app,
        [Msg::Key(KeyEvent::new(
            KeyCode::Char('c'),
            KeyModifiers::CONTROL,
        ))],
    );
    assert!(app.quit, "Ctrl-C quits even while typing");
}

fn campaign_view(trials: usize) -> Opened {
    let meta = r#"{"schema":1,"problem":{"space":{"params":[{"name":"budget","domain":{"kind":"int","lo":256,"hi":4096,"log":true}}],"constraints":[]},"objectives":[{"name":"goodput","direction":"maximize"}],"constraints":[]},"tuner":"bo","seed":1,"objective":"sim"}"#;
    let journal: String = (0..trials)
        .map(|i| {
            format!(
                "{{\"trial\":{i},\"knobs\":{{\"budget\":{}}},\"objective\":{},\"constraints\":{{}},\"status\":\"ok\",\"run\":\"runs/{i:04}\",\"duration_s\":0.1}}\n",
                300 + 100 * i,
                1.0 + i as f64
            )
        })
        .collect();
    let data = fuselab_reports::CampaignData::parse("c", meta, &journal, Path::new("campaigns/c"))
        .unwrap();
    let mut view = CampaignView::new(Path::new("/nonexistent"), data);
    view.budget = Some(10);
    Opened {
        path: "campaigns/c".into(),
        content: Content::Campaign(Box::new(view)),
        job: None,
        log: Vec::new(),
    }
}

#[test]
fn a_followed_campaign_updates_and_asks_for_its_next_suggestion_once_per_trial() {
    let mut app = app();
    send(&mut app, [key('G')]);
    let fx = send(&mut app, [code(KeyCode::Enter)]);
    let path = PathBuf::from("campaigns/c");
    assert_eq!(fx, [Effect::Open(path.clone())]);
    assert_eq!(app.followed(), Some(path.as_path()));
    let fx = send(
        &mut app,
        [Msg::Opened {
            path: path.clone(),
            result: Ok(campaign_view(2)),
        }],
    );
    let suggest = Effect::Suggest {
        path: path.clone(),
        trials: 2,
        budget: Some(10),
    };
    assert_eq!(fx, [suggest]);
    send(
        &mut app,
        [Msg::Suggested {
            path: path.clone(),
            trials: 2,
            result: Ok(Some("budget=777".into())),
        }],
    );
    let suggestion = |app: &App| match app.top() {
        Some(Screen::Detail(d)) => match &d.content.ready().unwrap().content {
            Content::Campaign(c) => (c.data.trials.len(), c.suggestion.clone()),
            _ => panic!(),
        },
        _ => panic!(),
    };
    assert_eq!(suggestion(&app), (2, Suggestion::Next("budget=777".into())));
    // The same trials read again: the suggestion is kept, not recomputed.
    let fx = send(
        &mut app,
        [Msg::Opened {
            path: path.clone(),
            result: Ok(campaign_view(2)),
        }],
    );
    assert!(fx.is_empty());
    assert_eq!(suggestion(&app).1, Suggestion::Next("budget=777".into()));
    // A new trial: shown at once, suggestion recomputed; a late answer for
    // the old count is ignored.
    let fx = send(
        &mut app,
        [Msg::Opened {
            path: path.clone(),
            result: Ok(campaign_view(3)),
        }],
    );
    assert_eq!(fx.len(), 1);
    send(
        &mut app,
        [Msg::Suggested {
            path: path.clone(),
            trials: 2,
            result: Ok(Some("stale".into())),
        }],
    );
    assert_eq!(suggestion(&app), (3, Suggestion::Computing));
    // A failed re-read keeps the last good view.
    send(
        &mut app,
        [Msg::Opened {
            path: path.clone(),
            result: Err("torn".into()),
        }],
    );
    assert_eq!(suggestion(&app).0, 3);
    assert!(app.message.as_deref().unwrap().contains("torn"));
    // Enter opens the selected trial's run folder.
    let fx = send(&mut app, [key('G'), code(KeyCode::Enter)]);
    assert_eq!(fx, [Effect::Open("campaigns/c/runs/0002".into())]);
    assert_eq!(app.screens.len(), 2);
    send(&mut app, [code(KeyCode::Backspace), code(KeyCode::Left)]);
    assert!(app.top().is_none());
}

#[test]
fn the_form_starts_work_under_the_right_root() {
    let mut app = app();
    app.now = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100);
    send(&mut app, [key('n')]);
    assert!(matches!(app.top(), Some(Screen::Form(_))));
    // On a choice field letters are keys: l cycles bench → sweep.
    send(&mut app, [key('l')]);
    // Down to the loads field and type.
    for _ in 0..7 {
        send(&mut app, [code(KeyCode::Down)]);
    }
    assert!(app.typing());
    send(&mut app, (0..5).map(|_| code(KeyCode::Backspace)));
    send(&mut app, "1,2q".chars().map(key));
    assert!(!app.quit, "q is text in a text field");
    let fx = send(&mut app, [code(KeyCode::Enter)]);
    let Some(Screen::Form(f)) = app.top() else {
        panic!()
    };
    assert!(
        f.error.as_deref().unwrap().starts_with("load:"),
        "{:?}",
        f.error
    );
    assert!(fx.is_empty());
    send(&mut app, [code(KeyCode::Backspace)]);
    let fx = send(&mut app, [code(KeyCode::Enter)]);
    let [Effect::Start { request, dir }] = fx.as_slice() else {
        panic!("{fx:?}")
    };
    assert_eq!(request.kind, WorkKind::Sweep);
    assert_eq!(request.planned, Some(4));
    assert_eq!(dir, Path::new("runs/sweep-100"));
    // Started: the form gives way to the job's folder, followed.
    let fx = send(&mut app, [Msg::Started(Ok(dir.clone()))]);
    assert_eq!(fx, [Effect::Open(dir.clone()), Effect::Scan]);
    assert_eq!(app.followed(), Some(dir.as_path()));
    assert_eq!(app.screens.len(), 1);
    // Tuning campaigns go under `campaigns`.
    assert_eq!(app.root_for(WorkKind::Tune), Path::new("campaigns"));
    assert_eq!(app.root_for(WorkKind::Bench), Path::new("runs"));
}

#[test]
fn a_failed_start_stays_on_the_form_with_the_reason() {
    let mut app = app();
    send(&mut app, [key('n')]);
    send(
        &mut app,
        [Msg::Started(Err("runs/x already exists".into()))],
    );
    let Some(Screen::Form(f)) = app.top() else {
        panic!()
    };
    assert_eq!(f.error.as_deref(), Some("runs/x already exists"));
    send(&mut app, [code(KeyCode::Esc)]);
    assert!(app.top().is_none());
}
