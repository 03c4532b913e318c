//! Running a campaign: the [`Objective`] trait (what a trial evaluates), the
//! external-command objective behind `fuselab tune --objective-cmd`, and the
//! loop that asks the tuner, evaluates (in parallel batches), journals every
//! finished trial and tells the tuner.
//!
//! Failures are data, never aborts: a trial that exits non-zero, prints no
//! number, crashes, panics or passes its timeout is journaled with its status
//! and the campaign goes on.

use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::bo::{BoOptions, BoTuner};
use crate::error::{Error, Result};
use crate::journal::{CampaignMeta, JOURNAL_SCHEMA, Journal, TrialRecord};
use crate::space::{Config, SearchSpace, Value};
use crate::tuner::{GridTuner, Outcome, Problem, RandomTuner, Status, Trial, Tuner};

/// Where and as what a trial runs.
#[derive(Debug, Clone)]
pub struct TrialContext<'a> {
    /// Provisional trial number (the journal numbers trials in completion order).
    pub slot: usize,
    /// The search space (to name knobs).
    pub space: &'a SearchSpace,
    /// An empty folder the trial may write into.
    pub run_dir: PathBuf,
}

/// What a trial evaluates. Implementations report failures as an
/// [`Outcome`] with a failed status rather than by panicking (a panic is
/// caught and recorded as `crashed` anyway).
pub trait Objective: Sync {
    /// Evaluates one configuration; objective and constraint values must
    /// follow the problem's order.
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &Config) -> Outcome;
    /// One line saying what is evaluated (stored in `campaign.json`).
    fn describe(&self) -> String;
}

/// Runs an external command per trial: `{name}` placeholders in the template
/// are replaced by the knob values, the command runs under `sh -c` in its
/// own process group (killed as a whole on timeout), and the last non-empty
/// line of its standard output must hold the objective value(s) followed by
/// any outcome-constraint values, separated by white space. The knob values
/// are also exported as `FUSELAB_KNOB_<name>`, and the trial folder as
/// `FUSELAB_RUN_DIR`; stdout and stderr are saved there.
#[derive(Debug, Clone)]
pub struct CommandObjective {
    template: String,
    timeout: Option<Duration>,
    n_objectives: usize,
    n_constraints: usize,
}

impl CommandObjective {
    /// Validates the template against the space: every `{placeholder}` must
    /// be a knob. The last line must hold `n_objectives` objective values
    /// followed by `n_constraints` outcome-constraint values.
    pub fn new(
        template: &str,
        space: &SearchSpace,
        timeout: Option<Duration>,
        n_objectives: usize,
        n_constraints: usize,
    ) -> Result<Self> {
        if template.trim().is_empty() {
            return Err(Error::invalid(
                "--objective-cmd",
                "the command is empty",
                "e.g. --objective-cmd 'python3 f.py {x1} {x2}'",
            ));
        }
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else { break };
            let name = &after[..close];
            let is_ident = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
            if is_ident && !space.params().iter().any(|p| p.name == name) {
                let known: Vec<&str> = space.params().iter().map(|p| p.name.as_str()).collect();
                return Err(Error::invalid(
                    "--objective-cmd",
                    format!(
                        "placeholder {{{name}}} is not a knob of --space (knobs: {})",
                        known.join(", ")
                    ),
                    "add the knob to --space or fix the placeholder",
                ));
            }
            rest = &after[close + 1..];
        }
        for p in space.params() {
            if !template.contains(&format!("{{{}}}", p.name)) {
                tracing::warn!(
                    "knob `{}` does not appear in --objective-cmd as {{{}}}; it is passed only as FUSELAB_KNOB_{}",
                    p.name,
                    p.name,
                    p.name
                );
            }
        }
        Ok(Self {
            template: template.to_string(),
            timeout,
            n_objectives: n_objectives.max(1),
            n_constraints,
        })
    }

    /// The command line for a configuration.
    pub fn render(&self, space: &SearchSpace, config: &Config) -> String {
        let mut cmd = self.template.clone();
        for (p, v) in space.params().iter().zip(&config.0) {
            cmd = cmd.replace(&format!("{{{}}}", p.name), &v.to_string());
        }
        cmd
    }
}

fn kill_group(pid: u32) {
    // The command runs in its own process group; kill all of it so that
    // grandchildren (`sleep` under `sh -c`) do not hold the pipes open.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Parses the last non-empty line of `stdout` into exactly `n` finite numbers.
pub fn parse_last_line(stdout: &str, n: usize) -> std::result::Result<Vec<f64>, String> {
    let Some(line) = stdout.lines().rev().map(str::trim).find(|l| !l.is_empty()) else {
        return Err(
            "the command printed nothing on stdout (its last line must be the objective value)"
                .into(),
        );
    };
    let vals: std::result::Result<Vec<f64>, _> =
        line.split_whitespace().map(f64::from_str).collect();
    match vals {
        Ok(v) if v.len() == n && v.iter().all(|x| x.is_finite()) => Ok(v),
        Ok(v) if v.len() == n => Err(format!("last line `{line}` holds a non-finite number")),
        _ => Err(format!(
            "last line of stdout `{}` is not {n} number(s)",
            line.chars().take(80).collect::<String>()
        )),
    }
}

impl Objective for CommandObjective {
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &Config) -> Outcome {
        let cmdline = self.render(ctx.space, config);
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(&cmdline)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        cmd.env("FUSELAB_RUN_DIR", &ctx.run_dir)
            .env("FUSELAB_TRIAL", ctx.slot.to_string());
        for (p, v) in ctx.space.params().iter().zip(&config.0) {
            cmd.env(
                format!("FUSELAB_KNOB_{}", p.name.replace(['-', '.'], "_")),
                v.to_string(),
            );
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Outcome::failed(
                    Status::Failed,
                    format!("cannot start `sh -c {cmdline}`: {e}"),
                );
            }
        };
        let pid = child.id();
        let reader = |pipe: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut p) = pipe {
                    let _ = p.read_to_end(&mut buf);
                }
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out_t = reader(
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let err_t = reader(
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn Read + Send>),
        );
        let start = Instant::now();
        let mut timed_out = false;
        let status = loop {
            match child.try_wait() {
                Ok(Some(s)) => break Some(s),
                Ok(None) => {}
                Err(_) => break None,
            }
            if self.timeout.is_some_and(|t| start.elapsed() >= t) {
                timed_out = true;
                kill_group(pid);
                break child.wait().ok();
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        // Whatever the command left running in its group must not outlive it.
        kill_group(pid);
        let stdout = out_t.join().unwrap_or_default();
        let stderr = err_t.join().unwrap_or_default();
        let _ = std::fs::write(ctx.run_dir.join("stdout.txt"), &stdout);
        let _ = std::fs::write(ctx.run_dir.join("stderr.txt"), &stderr);
        let _ = std::fs::write(ctx.run_dir.join("command.txt"), format!("{cmdline}\n"));
        let mut out = if timed_out {
            Outcome::failed(
                Status::Timeout,
                format!(
                    "passed the {:.3?} timeout and was killed",
                    self.timeout.unwrap_or_default()
                ),
            )
        } else {
            match status {
                None => Outcome::failed(Status::Failed, "could not wait for the command"),
                Some(s) if s.signal().is_some() => Outcome::failed(
                    Status::Crashed,
                    format!("killed by signal {}", s.signal().unwrap_or_default()),
                ),
                Some(s) if !s.success() => {
                    let tail = stderr
                        .lines()
                        .last()
                        .unwrap_or("")
                        .chars()
                        .take(120)
                        .collect::<String>();
                    Outcome::failed(
                        Status::Failed,
                        format!(
                            "exit status {}{}",
                            s.code().unwrap_or(-1),
                            if tail.is_empty() {
                                String::new()
                            } else {
                                format!(": {tail}")
                            }
                        ),
                    )
                }
                Some(_) => match parse_last_line(&stdout, self.n_objectives + self.n_constraints) {
                    Ok(mut v) => {
                        let cons = v.split_off(self.n_objectives);
                        Outcome::ok(v, cons)
                    }
                    Err(m) => Outcome::failed(Status::Failed, m),
                },
            }
        };
        out.duration_s = start.elapsed().as_secs_f64();
        out
    }

    fn describe(&self) -> String {
        format!("command: {}", self.template)
    }
}

/// The tuners selectable by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunerKind {
    /// Bayesian optimisation.
    Bo,
    /// Random search.
    Random,
    /// Grid search.
    Grid,
}

impl FromStr for TunerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bo" => Ok(Self::Bo),
            "random" => Ok(Self::Random),
            "grid" => Ok(Self::Grid),
            _ => Err(Error::invalid(
                "--tuner",
                format!("unknown tuner `{s}`"),
                "use bo, random or grid",
            )),
        }
    }
}

impl TunerKind {
    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bo => "bo",
            Self::Random => "random",
            Self::Grid => "grid",
        }
    }

    /// A fresh tuner of this kind.
    pub fn build(self, problem: Problem, seed: u64, budget: usize) -> Box<dyn Tuner + Send> {
        match self {
            Self::Bo => Box::new(BoTuner::new(problem, seed, BoOptions::default())),
            Self::Random => Box::new(RandomTuner::new(problem, seed)),
            Self::Grid => Box::new(GridTuner::new(problem, budget)),
        }
    }
}

/// Opens a campaign folder: a new journal, or (with `resume`) the existing
/// one, checking it was written for the same problem and tuner. Returns the
/// journal and the trials already completed.
pub fn open_campaign(
    dir: &Path,
    meta: &CampaignMeta,
    resume: bool,
) -> Result<(Journal, Vec<Trial>)> {
    let journal_exists = std::fs::metadata(Journal::path_in(dir)).is_ok_and(|m| m.len() > 0);
    if !resume || (!journal_exists && !dir.join("campaign.json").exists()) {
        if resume {
            tracing::warn!(
                "{}: nothing to resume, starting a new campaign",
                dir.display()
            );
        }
        return Ok((Journal::create(dir, meta)?, Vec::new()));
    }
    let old = Journal::read_meta(dir)?;
    if old.problem != meta.problem {
        return Err(Error::invalid(
            "--resume",
            format!(
                "{} was started for a different problem: {}",
                dir.display(),
                old.problem.space
            ),
            "pass the same --space/--objective/--slo as the original campaign, or use a new --out folder",
        ));
    }
    if old.tuner != meta.tuner || old.seed != meta.seed {
        return Err(Error::invalid(
            "--resume",
            format!(
                "{} was started with --tuner {} --seed {}",
                dir.display(),
                old.tuner,
                old.seed
            ),
            "pass the same --tuner and --seed to resume it",
        ));
    }
    let (journal, records) = Journal::resume(dir)?;
    let trials = records
        .iter()
        .map(|r| r.to_trial(&meta.problem))
        .collect::<Result<Vec<_>>>()?;
    Ok((journal, trials))
}

/// A fresh `campaign.json` description.
pub fn campaign_meta(
    problem: &Problem,
    tuner: TunerKind,
    seed: u64,
    objective: &dyn Objective,
) -> CampaignMeta {
    CampaignMeta {
        schema: JOURNAL_SCHEMA,
        problem: problem.clone(),
        tuner: tuner.name().into(),
        seed,
        objective: objective.describe(),
    }
}

/// Why a campaign stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CampaignEnd {
    /// The budget of trials is spent.
    BudgetSpent,
    /// The tuner had nothing left to suggest (finite space or grid exhausted).
    Exhausted,
}

fn evaluate_guarded(objective: &dyn Objective, ctx: &TrialContext<'_>, config: &Config) -> Outcome {
    let start = Instant::now();
    let mut out = match catch_unwind(AssertUnwindSafe(|| objective.evaluate(ctx, config))) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Outcome::failed(Status::Crashed, format!("panicked: {msg}"))
        }
    };
    if out.duration_s == 0.0 {
        out.duration_s = start.elapsed().as_secs_f64();
    }
    out
}

/// Runs trials until `budget` trials are journaled (counting those already
/// told to `tuner`), `parallel` at a time. Each finished trial is journaled
/// (fsynced) and told to the tuner in completion order, then passed to
/// `on_trial`.
pub fn run_campaign(
    problem: &Problem,
    tuner: &mut dyn Tuner,
    objective: &dyn Objective,
    journal: &mut Journal,
    budget: usize,
    parallel: usize,
    mut on_trial: impl FnMut(&Trial),
) -> Result<CampaignEnd> {
    let parallel = parallel.max(1);
    let runs = journal.dir().join("runs");
    while tuner.trials().len() < budget {
        let done = tuner.trials().len();
        let k = parallel.min(budget - done);
        let configs = tuner.ask(k)?;
        if configs.is_empty() {
            return Ok(CampaignEnd::Exhausted);
        }
        let mut ctxs = Vec::new();
        for j in 0..configs.len() {
            let run_dir = runs.join(format!("{:04}", done + j));
            if run_dir.exists() {
                // Left over from a trial that was killed before it was journaled.
                std::fs::remove_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
            }
            std::fs::create_dir_all(&run_dir).map_err(|e| Error::io(&run_dir, e))?;
            ctxs.push(TrialContext {
                slot: done + j,
                space: &problem.space,
                run_dir,
            });
        }
        let (tx, rx) = mpsc::channel::<(usize, Outcome)>();
        let mut record = |j: usize,
                          outcome: Outcome,
                          tuner: &mut dyn Tuner,
                          journal: &mut Journal|
         -> Result<()> {
            let mut outcome = problem.classify(outcome);
            let rel = ctxs[j]
                .run_dir
                .strip_prefix(journal.dir())
                .unwrap_or(&ctxs[j].run_dir);
            outcome
                .run_dir
                .get_or_insert_with(|| rel.display().to_string());
            let trial = Trial {
                index: tuner.trials().len(),
                config: configs[j].clone(),
                outcome,
            };
            journal.append(&TrialRecord::from_trial(problem, &trial))?;
            tuner.tell(trial.clone());
            on_trial(&trial);
            Ok(())
        };
        if configs.len() == 1 {
            let o = evaluate_guarded(objective, &ctxs[0], &configs[0]);
            record(0, o, tuner, journal)?;
            continue;
        }
        std::thread::scope(|s| -> Result<()> {
            for (j, (ctx, c)) in ctxs.iter().zip(&configs).enumerate() {
                let tx = tx.clone();
                s.spawn(move || {
                    let _ = tx.send((j, evaluate_guarded(objective, ctx, c)));
                });
            }
            drop(tx);
            for (j, o) in rx.iter() {
                record(j, o, tuner, journal)?;
            }
            Ok(())
        })?;
    }
    Ok(CampaignEnd::BudgetSpent)
}

/// Formats a value for tables.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::Float(x) => format!("{x:.4}"),
        other => other.to_string(),
    }
}
