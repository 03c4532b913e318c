//! The terminal application: setup and teardown (the terminal is restored
//! on exit, on error, on Ctrl-C and on panic), the event loop, two
//! background workers for reading folders, and the polling that follows
//! the folder on screen.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use ratatui::DefaultTerminal;
use ratatui::crossterm::event::{self, Event};

use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::poll::{FOLLOW_INTERVAL, Follower, Poller, SCAN_INTERVAL};
use crate::state::App;
use crate::update::{Effect, Msg, update};

/// How to run the TUI.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// Folders to browse; new work goes under the first (tuning campaigns
    /// under one named `campaigns`, when given).
    pub roots: Vec<PathBuf>,
    /// The `fuselab` executable that new work runs.
    pub exe: PathBuf,
}

/// Longest wait for a key before looking at the workers' results.
const INPUT_WAIT: Duration = Duration::from_millis(50);

/// Work for the background threads.
enum Job {
    Scan(Vec<PathBuf>),
    Open(PathBuf),
    Compare(Vec<PathBuf>),
    Suggest {
        path: PathBuf,
        trials: usize,
        budget: Option<usize>,
    },
}

/// Does one job, returning its message.
fn perform(job: Job, catalog: &mut Catalog) -> Msg {
    match job {
        Job::Scan(roots) => Msg::Scanned(catalog.scan(&roots)),
        Job::Open(path) => Msg::Opened {
            result: crate::live::open(&path).map_err(|e| e.to_string()),
            path,
        },
        Job::Compare(paths) => Msg::Compared {
            result: crate::compare::compare(&paths, &crate::compare::gate_config())
                .map_err(|e| e.to_string()),
            paths,
        },
        Job::Suggest {
            path,
            trials,
            budget,
        } => Msg::Suggested {
            result: crate::live::next_suggestion(&path, budget).map_err(|e| e.to_string()),
            path,
            trials,
        },
    }
}

fn worker(results: Sender<Msg>) -> Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    std::thread::spawn(move || {
        let mut catalog = Catalog::new();
        for job in rx {
            // A closed channel means the TUI is exiting.
            if results.send(perform(job, &mut catalog)).is_err() {
                break;
            }
        }
    });
    tx
}

/// The loop's bookkeeping besides the [`App`] state.
struct Runner {
    exe: PathBuf,
    fast: Sender<Job>,
    slow: Sender<Job>,
    results: Receiver<Msg>,
    opening: HashSet<PathBuf>,
    scanning: bool,
    children: Vec<Child>,
}

impl Runner {
    fn new(exe: PathBuf) -> Self {
        let (tx, rx) = mpsc::channel();
        Self {
            exe,
            fast: worker(tx.clone()),
            slow: worker(tx),
            results: rx,
            opening: HashSet::new(),
            scanning: false,
            children: Vec::new(),
        }
    }

    fn open(&mut self, path: &Path) {
        if self.opening.insert(path.to_path_buf()) {
            let _ = self.fast.send(Job::Open(path.to_path_buf()));
        }
    }

    fn scan(&mut self, roots: &[PathBuf]) {
        if !self.scanning {
            self.scanning = true;
            let _ = self.fast.send(Job::Scan(roots.to_vec()));
        }
    }

    /// Carries out `effects` and every effect they lead to.
    fn perform(&mut self, app: &mut App, mut effects: Vec<Effect>) {
        while let Some(effect) = effects.pop() {
            match effect {
                Effect::Scan => self.scan(&app.roots),
                Effect::Open(path) => self.open(&path),
                Effect::Compare(paths) => {
                    let _ = self.slow.send(Job::Compare(paths));
                }
                Effect::Suggest {
                    path,
                    trials,
                    budget,
                } => {
                    let _ = self.slow.send(Job::Suggest {
                        path,
                        trials,
                        budget,
                    });
                }
                Effect::Start { request, dir } => {
                    let msg = match crate::job::spawn(&self.exe, &dir, &request) {
                        Ok(started) => {
                            self.children.push(started.child);
                            Msg::Started(Ok(started.dir))
                        }
                        Err(e) => Msg::Started(Err(e.to_string())),
                    };
                    effects.extend(update(app, msg));
                }
            }
        }
    }

    /// Hands finished reads to the app.
    fn drain(&mut self, app: &mut App) {
        while let Ok(msg) = self.results.try_recv() {
            match &msg {
                Msg::Opened { path, .. } => {
                    self.opening.remove(path);
                }
                Msg::Scanned(_) => self.scanning = false,
                _ => {}
            }
            let effects = update(app, msg);
            self.perform(app, effects);
        }
    }

    /// Reaps children that ended, so they do not linger as zombies.
    fn reap(&mut self) {
        self.children
            .retain_mut(|c| matches!(c.try_wait(), Ok(None)));
    }
}

/// Runs the TUI until the user quits. Work started from it keeps running.
pub fn run(options: Options) -> Result<()> {
    let mut terminal = ratatui::try_init().map_err(Error::Terminal)?;
    let result = event_loop(&mut terminal, options);
    let restored = ratatui::try_restore().map_err(Error::Terminal);
    result.and(restored)
}

fn event_loop(terminal: &mut DefaultTerminal, options: Options) -> Result<()> {
    let mut app = App::new(options.roots);
    app.now = SystemTime::now();
    let mut runner = Runner::new(options.exe);
    runner.perform(&mut app, vec![Effect::Scan]);
    let mut scan_poll = Poller::new(SCAN_INTERVAL);
    let mut follower: Option<Follower> = None;
    loop {
        terminal
            .draw(|frame| crate::view::render(&app, frame))
            .map_err(Error::Terminal)?;
        if app.quit {
            return Ok(());
        }
        let now = Instant::now();
        let mut wait = INPUT_WAIT.min(scan_poll.timeout(now));
        if let Some(f) = &follower {
            wait = wait.min(f.timeout(now));
        }
        if event::poll(wait).map_err(Error::Terminal)? {
            // Take every queued event before drawing again.
            loop {
                let msg = match event::read().map_err(Error::Terminal)? {
                    Event::Key(k) => Some(Msg::Key(k)),
                    Event::Resize(..) => Some(Msg::Resize),
                    _ => None,
                };
                if let Some(msg) = msg {
                    let effects = update(&mut app, msg);
                    runner.perform(&mut app, effects);
                }
                if app.quit || !event::poll(Duration::ZERO).map_err(Error::Terminal)? {
                    break;
                }
            }
        }
        runner.drain(&mut app);
        update(&mut app, Msg::Tick(SystemTime::now()));
        let now = Instant::now();
        let followed = app.followed().map(Path::to_path_buf);
        if follower.as_ref().map(Follower::path) != followed.as_deref() {
            follower = followed.map(|p| {
                let mut f = Follower::new(&p, FOLLOW_INTERVAL);
                // The screen was just opened (and is being read): poll from here.
                f.mark_read(crate::poll::Fingerprint::of(&p));
                let _ = f.changed(now);
                f
            });
        }
        if let Some(f) = &mut follower
            && let Some(fp) = f.changed(now)
            && !runner.opening.contains(f.path())
        {
            f.mark_read(fp);
            let path = f.path().to_path_buf();
            runner.open(&path);
        }
        if scan_poll.due(now) && app.top().is_none() {
            let roots = app.roots.clone();
            runner.scan(&roots);
        }
        runner.reap();
    }
}
