//! Snapshot tests of every view at 80×24 and 160×48, drawn into ratatui's
//! `TestBackend` from deterministic synthetic data (no clock, no disk).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fuselab_core::{LoadKind, SCHEMA_VERSION, SweepPoint, SweepSummary};
use fuselab_reports::gate::{self, GateConfig};
use fuselab_reports::synth::{SynthConfig, synth_run};
use fuselab_reports::{CampaignData, RunData};
use fuselab_tui::catalog::{Entry, EntryKind, EntryStatus};
use fuselab_tui::compare::{CompareView, Curve, Side};
use fuselab_tui::detail::RunDetail;
use fuselab_tui::form::Form;
use fuselab_tui::job::{JobInfo, JobState, WorkKind};
use fuselab_tui::live::{CampaignView, Content, Opened, Suggestion, SweepView};
use fuselab_tui::state::{App, CompareScreen, DetailScreen, Loadable, Screen};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

const SIZES: [(u16, u16); 2] = [(80, 24), (160, 48)];

fn t(secs: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000 + secs)
}

fn run(name: &str, policy: &str, clients: usize, tpot: f64) -> RunData {
    let mut r = synth_run(
        name,
        &SynthConfig {
            requests: 300,
            clients,
            tpot_s: tpot,
            step_s: 0.05,
            policy: policy.into(),
            ..SynthConfig::default()
        },
    );
    r.summary.provenance.engine.engine = "sim".into();
    r.summary.provenance.engine.hardware = Some("h200".into());
    r.source = Some(PathBuf::from("runs").join(name));
    r
}

fn draw(app: &App, name: &str) {
    for (w, h) in SIZES {
        let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
        term.draw(|f| fuselab_tui::view::render(app, f)).unwrap();
        insta::assert_snapshot!(format!("{name}_{w}x{h}"), term.backend());
    }
}

fn entry(r: &RunData, kind: EntryKind, status: EntryStatus, age: u64) -> Entry {
    let p = &r.summary.provenance;
    Entry {
        path: r.source.clone().unwrap(),
        name: r.source.clone().unwrap().display().to_string(),
        kind,
        status,
        modified: Some(t(10_000 - age)),
        engine: p.engine.engine.clone(),
        hardware: p.engine.hardware.clone().unwrap_or_default(),
        policy: p.engine.policy.clone().unwrap_or_default(),
        workload: p.workload.name.clone(),
        load: fuselab_tui::catalog::load_label(&p.workload.arrivals),
        metrics: Some(r.summary.metrics.clone()),
        note: String::new(),
    }
}

fn app_with_entries() -> App {
    let mut app = App::new(vec!["runs".into(), "campaigns".into()]);
    app.now = t(10_000);
    let a = run("bench-splitfuse", "splitfuse", 16, 0.03);
    let b = run("bench-chunked", "chunked", 16, 0.027);
    let s = run("sweep-fastgen", "splitfuse,chunked", 8, 0.03);
    let c = run("tune-bo-s42", "splitfuse", 4, 0.02);
    let mut sweep = entry(&s, EntryKind::Sweep, EntryStatus::Running, 3);
    sweep.load = "2-8 cl".into();
    sweep.note = "5 points".into();
    let mut tune = entry(&c, EntryKind::Campaign, EntryStatus::Done, 7200);
    tune.name = "campaigns/tune-bo-s42".into();
    tune.path = "campaigns/tune-bo-s42".into();
    tune.note = "12 trials, best goodput 30.1".into();
    app.browse.entries = vec![
        sweep,
        entry(&b, EntryKind::Run, EntryStatus::Done, 65),
        entry(&a, EntryKind::Repeat, EntryStatus::Done, 4000),
        tune,
    ];
    app.browse.scanned = true;
    app.browse.select(1);
    app.browse.marked = vec!["runs/bench-splitfuse".into(), "runs/bench-chunked".into()];
    app
}

#[test]
fn browse() {
    let mut app = app_with_entries();
    draw(&app, "browse");
    app.browse.filtering = true;
    app.browse.filter = "chunk".into();
    app.browse.select(0);
    draw(&app, "browse_filtered");
    app.browse.filtering = false;
    app.browse.filter.clear();
    app.help = true;
    draw(&app, "help");
}

#[test]
fn browse_empty() {
    let mut app = App::new(vec!["runs".into()]);
    app.browse.scanned = true;
    draw(&app, "browse_empty");
}

fn with_screen(screen: Screen) -> App {
    let mut app = app_with_entries();
    app.screens.push(screen);
    app
}

fn opened(path: &str, content: Content, job: Option<(JobInfo, JobState)>, log: &[&str]) -> Opened {
    Opened {
        path: path.into(),
        content,
        job,
        log: log.iter().map(|s| s.to_string()).collect(),
    }
}

#[test]
fn run_detail() {
    let r = run("bench-splitfuse", "splitfuse", 16, 0.03);
    let detail = RunDetail::new(&r);
    let mut screen = DetailScreen::new("runs/bench-splitfuse".into());
    screen.content = Loadable::Ready(opened(
        "runs/bench-splitfuse",
        Content::Run(Box::new(detail)),
        None,
        &[],
    ));
    draw(&with_screen(Screen::Detail(screen.clone())), "run");
    screen.cdf = true;
    draw(&with_screen(Screen::Detail(screen.clone())), "run_cdf");
    screen.cdf = false;
    screen.provenance = true;
    draw(&with_screen(Screen::Detail(screen)), "run_provenance");
}

fn job(kind: WorkKind, args: &str, planned: Option<usize>) -> JobInfo {
    JobInfo {
        schema: 1,
        kind,
        args: args.split(' ').map(String::from).collect(),
        pid: 1,
        started_unix_s: 0,
        planned,
    }
}

#[test]
fn sweep_in_progress() {
    let mut points = Vec::new();
    for (pol, tpot) in [("splitfuse", 0.03), ("chunked", 0.026)] {
        for clients in [2, 4, 8] {
            if pol == "chunked" && clients == 8 {
                continue; // not finished yet
            }
            let r = run(&format!("{pol}-{clients}"), pol, clients, tpot);
            points.push(SweepPoint {
                policy: pol.into(),
                load: clients as f64,
                run: format!("{pol}/clients-{clients}"),
                metrics: r.summary.metrics,
                spec_k: None,
            });
        }
    }
    let sweep = SweepView {
        summary: SweepSummary {
            schema_version: SCHEMA_VERSION,
            name: "sweep".into(),
            load_kind: LoadKind::Clients,
            points,
            max_under_slo: Vec::new(),
        },
        complete: false,
    };
    let mut screen = DetailScreen::new("runs/sweep-fastgen".into());
    screen.selected = 2;
    screen.content = Loadable::Ready(opened(
        "runs/sweep-fastgen",
        Content::Sweep(sweep),
        Some((
            job(WorkKind::Sweep, "sweep --clients 2,4,8", Some(6)),
            JobState::Running,
        )),
        &[
            "[4/6] chunked at 2 clients",
            "[5/6] chunked at 4 clients",
            "[6/6] chunked at 8 clients",
        ],
    ));
    draw(&with_screen(Screen::Detail(screen)), "sweep");
}

const META2: &str = r#"{"schema":1,"problem":{"space":{"params":[{"name":"budget","domain":{"kind":"int","lo":256,"hi":4096,"log":true}},{"name":"max_seqs","domain":{"kind":"ordinal","values":[64,128,256]}}],"constraints":[]},
    "objectives":[{"name":"goodput","direction":"maximize"},{"name":"p99-e2e","direction":"minimize"}],"constraints":[]},"tuner":"bo","seed":42,"objective":"sim"}"#;

#[test]
fn campaign_in_progress() {
    let journal: String = (0..9)
        .map(|i| {
            let budget = 256 + 421 * i;
            let g = 20.0 + 10.0 * (1.0 - (-(i as f64) / 3.0).exp()) + (i % 3) as f64;
            let e2e = 2.0 + 0.15 * g + (i % 2) as f64 * 0.4;
            let status = if i == 5 { "failed" } else { "ok" };
            let obj = if i == 5 {
                "\"objective\":null,".to_string()
            } else {
                format!("\"objective\":{g},\"objectives\":[{g},{e2e}],")
            };
            format!(
                "{{\"trial\":{i},\"knobs\":{{\"budget\":{budget},\"max_seqs\":{}}},{obj}\"constraints\":{{}},\"status\":\"{status}\",\"run\":\"runs/{i:04}\",\"duration_s\":0.4}}\n",
                [64, 128, 256][i % 3]
            )
        })
        .collect();
    let data = CampaignData::parse("tune-bo-s42", META2, &journal, Path::new("c")).unwrap();
    let mut view = CampaignView::new(Path::new("/nonexistent"), data);
    view.budget = Some(20);
    view.suggestion = Suggestion::Next("budget=1870, max_seqs=128".into());
    let mut screen = DetailScreen::new("campaigns/tune-bo-s42".into());
    screen.content = Loadable::Ready(opened(
        "campaigns/tune-bo-s42",
        Content::Campaign(Box::new(view)),
        None,
        &[],
    ));
    draw(&with_screen(Screen::Detail(screen)), "campaign");
}

#[test]
fn compare() {
    let a = run("bench-splitfuse", "splitfuse", 16, 0.03);
    let b = run("bench-chunked", "chunked", 16, 0.027);
    let c = run("bench-slow", "splitfuse", 16, 0.036);
    let cfg = GateConfig::default();
    let view = CompareView {
        sides: [&a, &b, &c]
            .iter()
            .map(|r| Side {
                name: r.name().into(),
                kind: EntryKind::Run,
                stand_in: None,
            })
            .collect(),
        reports: vec![
            gate::compare(std::slice::from_ref(&a), std::slice::from_ref(&b), &cfg)
                .map_err(|e| e.to_string()),
            gate::compare(std::slice::from_ref(&a), std::slice::from_ref(&c), &cfg)
                .map_err(|e| e.to_string()),
        ],
        curves: [&a, &b, &c]
            .iter()
            .map(|r| Curve {
                label: r.name().into(),
                points: vec![(16.0, r.summary.metrics.clone())],
            })
            .collect(),
    };
    let screen = CompareScreen {
        paths: vec![
            "runs/bench-splitfuse".into(),
            "runs/bench-chunked".into(),
            "runs/bench-slow".into(),
        ],
        content: Loadable::Ready(view),
        metric: fuselab_tui::live::CurveMetric::TtftP99,
        scroll: 0,
    };
    draw(&with_screen(Screen::Compare(screen)), "compare");
}

#[test]
fn form() {
    let mut f = Form::new(WorkKind::Sweep, "sweep-1800001000");
    f.move_focus(7);
    draw(&with_screen(Screen::Form(f.clone())), "form_sweep");
    let mut tune = Form::new(WorkKind::Tune, "tune-1800001000");
    tune.error = Some("trials: `0` is not a positive number".into());
    draw(&with_screen(Screen::Form(tune)), "form_tune");
}

#[test]
fn loading_and_failure() {
    let screen = DetailScreen::new("runs/broken".into());
    let mut failed = screen.clone();
    failed.content =
        Loadable::Failed("runs/broken: not a run, sweep, repeat or campaign folder".into());
    draw(&with_screen(Screen::Detail(failed)), "failed");
}
