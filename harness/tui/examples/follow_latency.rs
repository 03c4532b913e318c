//! Measures how long a campaign's new trial takes to reach the screen when
//! another process writes it: this example re-runs itself as a writer
//! process that appends trials to a campaign journal at irregular
//! intervals (as `fuselab tune` does, one fsynced line per trial), while it
//! follows the folder with the TUI's own pieces: [`Follower`] polling every
//! [`FOLLOW_INTERVAL`], the folder read ([`live::open`]), the state update
//! and a frame drawn into a `TestBackend`. It prints the latency from each
//! append to the frame that first shows it.
//!
//! ```text
//! cargo run -p fuselab-tui --example follow_latency [TRIALS]
//! ```

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use fuselab_tui::live::{self, Content};
use fuselab_tui::poll::{FOLLOW_INTERVAL, Follower};
use fuselab_tui::state::{App, DetailScreen, Screen};
use fuselab_tui::update::{Msg, update};
use fuselab_tune::{
    CampaignMeta, Direction, Journal, Outcome, Problem, SearchSpace, Trial, TrialRecord, Value,
};
use ratatui::Terminal;
use ratatui::backend::TestBackend;

fn unix_ns(t: SystemTime) -> u128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// The writer process: creates the campaign, then appends `n` trials,
/// printing each append's time (Unix ns) once it is fsynced.
fn writer(dir: &Path, n: usize) {
    let problem = Problem::single(
        SearchSpace::parse("x=0.0..1").expect("space"),
        "y",
        Direction::Maximize,
    );
    let meta = CampaignMeta {
        schema: fuselab_tune::journal::JOURNAL_SCHEMA,
        problem: problem.clone(),
        tuner: "random".into(),
        seed: 1,
        objective: "follow_latency example".into(),
    };
    let mut journal = Journal::create(dir, &meta).expect("journal");
    println!("ready");
    for i in 0..n {
        // Irregular gaps, 300–700 ms, so appends land at every phase of the poll.
        std::thread::sleep(Duration::from_millis(300 + (i as u64 * 137) % 400));
        let x = (i as f64 * 0.37) % 1.0;
        let t = Trial {
            index: i,
            config: fuselab_tune::Config(vec![Value::Float(x)]),
            outcome: Outcome::ok(vec![x * (1.0 - x)], vec![]),
        };
        journal
            .append(&TrialRecord::from_trial(&problem, &t))
            .expect("append");
        println!("{} {}", i + 1, unix_ns(SystemTime::now()));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("writer") {
        writer(Path::new(&args[2]), args[3].parse().expect("n"));
        return;
    }
    let n: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(20);
    let tmp = std::env::temp_dir().join(format!("fuselab-follow-{}", std::process::id()));
    let dir = tmp.join("campaign");
    let mut child = Command::new(std::env::current_exe().expect("exe"))
        .args(["writer", &dir.display().to_string(), &n.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("writer");
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    assert_eq!(lines.next().expect("ready").expect("line"), "ready");
    let appended = std::sync::Arc::new(std::sync::Mutex::new(Vec::<u128>::new()));
    let sink = appended.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            let t: u128 = line
                .split(' ')
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            sink.lock().expect("lock").push(t);
        }
    });

    let mut app = App::new(vec![tmp.clone()]);
    app.screens
        .push(Screen::Detail(DetailScreen::new(dir.clone())));
    let mut term = Terminal::new(TestBackend::new(120, 40)).expect("backend");
    let mut follower = Follower::new(&dir, FOLLOW_INTERVAL);
    let mut shown_at: Vec<u128> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while shown_at.len() < n && Instant::now() < deadline {
        let now = Instant::now();
        if let Some(fp) = follower.changed(now) {
            follower.mark_read(fp);
            let result = live::open(&dir).map_err(|e| e.to_string());
            update(
                &mut app,
                Msg::Opened {
                    path: dir.clone(),
                    result,
                },
            );
            term.draw(|f| fuselab_tui::view::render(&app, f))
                .expect("draw");
            let drawn = unix_ns(SystemTime::now());
            if let Some(Screen::Detail(d)) = app.top()
                && let Some(o) = d.content.ready()
                && let Content::Campaign(c) = &o.content
            {
                while shown_at.len() < c.data.trials.len() {
                    shown_at.push(drawn);
                }
            }
        }
        // The app's loop waits for a key at most this long.
        std::thread::sleep(
            follower
                .timeout(Instant::now())
                .min(Duration::from_millis(50)),
        );
    }
    let _ = child.wait();
    let appended = appended.lock().expect("lock").clone();
    let lat: Vec<f64> = appended
        .iter()
        .zip(&shown_at)
        .map(|(a, s)| (*s as f64 - *a as f64) / 1e6)
        .collect();
    for (i, l) in lat.iter().enumerate() {
        println!("trial {:>2}: shown {l:7.1} ms after it was appended", i + 1);
    }
    let max = lat.iter().copied().fold(0.0, f64::max);
    let mean = lat.iter().sum::<f64>() / lat.len().max(1) as f64;
    println!(
        "{} trials: mean {mean:.1} ms, max {max:.1} ms (poll interval {} ms; requirement: < 1000 ms)",
        lat.len(),
        FOLLOW_INTERVAL.as_millis()
    );
    let _ = std::fs::remove_dir_all(&tmp);
    assert_eq!(lat.len(), n, "every trial was shown");
    assert!(max < 1000.0, "a trial took {max:.0} ms to show");
}
