//! Criterion benchmark: one frame of a 10,000-request run's detail view,
//! drawn into a 160×48 `TestBackend`. The derived data (histograms, CDFs,
//! step series) is computed once, as when the run is read; the benchmark
//! measures what every frame costs. Checked once before measuring.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use fuselab_reports::synth::{SynthConfig, synth_run};
use fuselab_tui::detail::RunDetail;
use fuselab_tui::live::{Content, Opened};
use fuselab_tui::state::{App, DetailScreen, Loadable, Screen};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn app_10k() -> App {
    let mut run = synth_run(
        "bench-10k",
        &SynthConfig {
            requests: 10_000,
            clients: 64,
            step_s: 0.02,
            summary_metrics: true,
            ..SynthConfig::default()
        },
    );
    run.source = Some("runs/bench-10k".into());
    let detail = RunDetail::new(&run);
    assert_eq!(detail.summary.metrics.requests, 10_000);
    assert!(detail.itl.count > 500_000, "{}", detail.itl.count);
    let mut screen = DetailScreen::new("runs/bench-10k".into());
    screen.content = Loadable::Ready(Opened {
        path: "runs/bench-10k".into(),
        content: Content::Run(Box::new(detail)),
        job: None,
        log: Vec::new(),
    });
    let mut app = App::new(vec!["runs".into()]);
    app.screens.push(Screen::Detail(screen));
    app
}

fn render(c: &mut Criterion) {
    let app = app_10k();
    let mut group = c.benchmark_group("render");
    for cdf in [false, true] {
        let mut app = app.clone();
        if let Some(Screen::Detail(d)) = app.screens.last_mut() {
            d.cdf = cdf;
        }
        let mut term = Terminal::new(TestBackend::new(160, 48)).expect("test backend");
        term.draw(|f| fuselab_tui::view::render(&app, f))
            .expect("draws");
        let text = format!("{}", term.backend());
        assert!(text.contains("n=10000"), "{text}");
        let id = if cdf {
            "detail-10k/cdf"
        } else {
            "detail-10k/histograms"
        };
        group.bench_function(id, |b| {
            b.iter(|| {
                term.draw(|f| fuselab_tui::view::render(black_box(&app), f))
                    .expect("draws");
            });
        });
    }
    group.finish();
}

criterion_group!(benches, render);
criterion_main!(benches);
