//! Running a campaign: the [`Objective`] trait (what a trial evaluates), the
//! external-command objective behind `fuselab tune --objective-cmd`, and the
//! loop that asks the tuner, evaluates (keeping K trials in flight, in
//! process or through an [`Executor`]), journals every finished trial and
//! tells the tuner.
//!
//! Failures are data, never aborts: a trial that exits non-zero, prints no
//! number, crashes, panics or passes its timeout is journaled with its status
//! and the campaign goes on.

use std::collections::{BTreeMap, HashMap, HashSet};
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
use crate::executor::{Executor, JobRef, JobSpec, JobState, sh_quote};
use crate::journal::{CampaignMeta, JOURNAL_SCHEMA, JobLog, JobRecord, Journal, TrialRecord};
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

/// A trial as a shell command line, for the executors (`--executor`): the
/// campaign writes it to `command.sh` in the trial's run folder and runs it
/// through `job.sh`, which saves stdout and stderr there and writes the exit
/// status to `exit-code` as its last act.
pub trait CommandTrial: Sync {
    /// The command line for `config`; `run_dir` is the trial's (absolute)
    /// run folder, which the command may write into.
    fn command(&self, space: &SearchSpace, config: &Config, run_dir: &Path) -> Result<String>;
    /// The outcome of a command that exited 0, from its stdout and whatever
    /// it wrote into `run_dir`.
    fn outcome(&self, run_dir: &Path, stdout: &str) -> Outcome;
    /// Per-trial time limit (enforced by `timeout` in the job script).
    fn timeout(&self) -> Option<Duration> {
        None
    }
    /// One line saying what is evaluated (stored in `campaign.json`).
    fn describe(&self) -> String;
}

impl CommandTrial for CommandObjective {
    fn command(&self, space: &SearchSpace, config: &Config, _run_dir: &Path) -> Result<String> {
        Ok(self.render(space, config))
    }
    fn outcome(&self, _run_dir: &Path, stdout: &str) -> Outcome {
        match parse_last_line(stdout, self.n_objectives + self.n_constraints) {
            Ok(mut v) => {
                let cons = v.split_off(self.n_objectives);
                Outcome::ok(v, cons)
            }
            Err(m) => Outcome::failed(Status::Failed, m),
        }
    }
    fn timeout(&self) -> Option<Duration> {
        self.timeout
    }
    fn describe(&self) -> String {
        Objective::describe(self)
    }
}

/// How a campaign runs its trials through an [`Executor`].
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// Trials kept in flight.
    pub parallel: usize,
    /// How many times a lost job (cancelled, preempted, timed out by the
    /// scheduler, node died) is re-submitted before it is recorded as failed.
    pub retry_lost: u32,
    /// Time between polls of the scheduler.
    pub poll_interval: Duration,
    /// How long a job the scheduler says has ended may take to show its
    /// `exit-code` file (shared file systems lag) before it counts as lost.
    pub exit_grace: Duration,
    /// The working directory of every job (relative paths in the command
    /// resolve against it; on a cluster it must be on the shared file system).
    pub cwd: PathBuf,
}

impl Default for ExecOptions {
    fn default() -> Self {
        Self {
            parallel: 1,
            retry_lost: 0,
            poll_interval: Duration::from_millis(500),
            exit_grace: Duration::from_secs(10),
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }
}

/// A trial submitted and not yet recorded.
#[derive(Debug, Clone)]
struct InFlight {
    slot: usize,
    attempt: u32,
    config: Config,
    run_dir: PathBuf,
    job: Option<String>,
    retry_after: Option<String>,
}

/// How a trial in flight ended.
enum Finish {
    /// Recorded as is.
    Done(Outcome),
    /// Lost to the cluster (cancelled, preempted, timed out by the scheduler,
    /// node died): re-submitted if `retry_lost` allows, else recorded.
    Lost(Outcome),
}

/// Where the campaign loop starts and awaits trials.
trait Backend {
    /// The executor kind journaled with each submission.
    fn kind(&self) -> &'static str;
    /// Starts a trial; returns its job id, if it has one that outlives the
    /// campaign process.
    fn launch(&mut self, f: &InFlight, space: &SearchSpace) -> Result<Option<String>>;
    /// Blocks until at least one trial in flight has finished; returns the
    /// finished ones by slot.
    fn wait(&mut self, inflight: &[InFlight]) -> Result<Vec<(usize, Finish)>>;
}

/// In-process trials, one scoped thread each.
struct ThreadBackend<'scope, 'env> {
    scope: &'scope std::thread::Scope<'scope, 'env>,
    objective: &'env dyn Objective,
    space: &'env SearchSpace,
    tx: mpsc::Sender<(usize, Outcome)>,
    rx: mpsc::Receiver<(usize, Outcome)>,
}

impl Backend for ThreadBackend<'_, '_> {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    fn launch(&mut self, f: &InFlight, _space: &SearchSpace) -> Result<Option<String>> {
        let (objective, space, tx) = (self.objective, self.space, self.tx.clone());
        let (slot, config, run_dir) = (f.slot, f.config.clone(), f.run_dir.clone());
        self.scope.spawn(move || {
            let ctx = TrialContext {
                slot,
                space,
                run_dir,
            };
            let _ = tx.send((slot, evaluate_guarded(objective, &ctx, &config)));
        });
        Ok(None)
    }

    fn wait(&mut self, _inflight: &[InFlight]) -> Result<Vec<(usize, Finish)>> {
        let mut out = Vec::new();
        let first = self.rx.recv().map_err(|_| {
            Error::executor("in-process", "every trial thread ended without a result")
        })?;
        out.push(first);
        while let Ok(more) = self.rx.try_recv() {
            out.push(more);
        }
        Ok(out
            .into_iter()
            .map(|(slot, o)| (slot, Finish::Done(o)))
            .collect())
    }
}

/// Trials as jobs of an [`Executor`].
struct JobBackend<'a> {
    executor: &'a mut dyn Executor,
    trial: &'a dyn CommandTrial,
    opts: &'a ExecOptions,
    /// When the scheduler first said a job ended without an `exit-code`.
    ended_at: HashMap<usize, Instant>,
}

/// The exit status a trial's `job.sh` wrote, if it has finished.
fn read_exit_code(run_dir: &Path) -> Option<i32> {
    std::fs::read_to_string(run_dir.join("exit-code"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Seconds between the job script's start and its `exit-code`.
fn job_duration(run_dir: &Path) -> Option<f64> {
    let t = |name: &str| std::fs::metadata(run_dir.join(name)).ok()?.modified().ok();
    t("exit-code")?
        .duration_since(t("started")?)
        .ok()
        .map(|d| d.as_secs_f64())
}

fn tail_line(text: &str) -> String {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(160)
        .collect()
}

/// The outcome of a job whose script wrote exit status `code`.
fn exit_outcome(trial: &dyn CommandTrial, run_dir: &Path, code: i32) -> Outcome {
    let read = |n: &str| std::fs::read_to_string(run_dir.join(n)).unwrap_or_default();
    let mut out = if code == 0 {
        trial.outcome(run_dir, &read("stdout.txt"))
    } else if code == 124 && trial.timeout().is_some() {
        Outcome::failed(
            Status::Timeout,
            format!(
                "passed the {:.3?} timeout and was killed",
                trial.timeout().unwrap_or_default()
            ),
        )
    } else if code > 128 {
        Outcome::failed(Status::Crashed, format!("killed by signal {}", code - 128))
    } else {
        let tail = tail_line(&read("stderr.txt"));
        Outcome::failed(
            Status::Failed,
            if tail.is_empty() {
                format!("exit status {code}")
            } else {
                format!("exit status {code}: {tail}")
            },
        )
    };
    if let Some(d) = job_duration(run_dir) {
        out.duration_s = d;
    }
    out
}

/// The job script of a trial: exports the knobs, runs `command.sh` (under
/// `timeout` when the trial has a limit), saves its output and writes its
/// exit status to `exit-code` last.
fn job_script(trial: &dyn CommandTrial, f: &InFlight, space: &SearchSpace, cwd: &Path) -> String {
    let q = |p: &Path| sh_quote(&p.to_string_lossy());
    let run = &f.run_dir;
    let mut s = format!(
        "#!/bin/sh\n# fuselab trial {}, attempt {}: written by the campaign, run by its executor.\n\
         cd {} || exit 97\n",
        f.slot,
        f.attempt,
        q(cwd)
    );
    let mut export = |k: &str, v: &str| {
        s.push_str(&format!("{k}={}; export {k}\n", sh_quote(v)));
    };
    export("FUSELAB_RUN_DIR", &run.to_string_lossy());
    export("FUSELAB_TRIAL", &f.slot.to_string());
    for (p, v) in space.params().iter().zip(&f.config.0) {
        export(
            &format!("FUSELAB_KNOB_{}", p.name.replace(['-', '.'], "_")),
            &v.to_string(),
        );
    }
    let limit = trial
        .timeout()
        .map(|t| format!("timeout -k 10 {:.3} ", t.as_secs_f64()))
        .unwrap_or_default();
    s.push_str(&format!(
        ": > {started}\n{limit}sh {cmd} > {out} 2> {err} < /dev/null\ncode=$?\n\
         echo \"$code\" > {tmp} && mv {tmp} {exit}\nexit \"$code\"\n",
        started = q(&run.join("started")),
        cmd = q(&run.join("command.sh")),
        out = q(&run.join("stdout.txt")),
        err = q(&run.join("stderr.txt")),
        tmp = q(&run.join("exit-code.tmp")),
        exit = q(&run.join("exit-code")),
    ));
    s
}

impl Backend for JobBackend<'_> {
    fn kind(&self) -> &'static str {
        self.executor.kind()
    }

    fn launch(&mut self, f: &InFlight, space: &SearchSpace) -> Result<Option<String>> {
        let command = self.trial.command(space, &f.config, &f.run_dir)?;
        let write = |name: &str, text: &str| {
            let p = f.run_dir.join(name);
            std::fs::write(&p, text).map_err(|e| Error::io(&p, e))
        };
        write("command.sh", &format!("{command}\n"))?;
        write("command.txt", &format!("{command}\n"))?;
        let script = f.run_dir.join("job.sh");
        write("job.sh", &job_script(self.trial, f, space, &self.opts.cwd))?;
        let id = self.executor.submit(&JobSpec {
            name: format!("fuselab-t{:04}", f.slot),
            script,
            run_dir: f.run_dir.clone(),
            cwd: self.opts.cwd.clone(),
        })?;
        tracing::info!(
            "trial slot {} attempt {} submitted to {} as job {id}",
            f.slot,
            f.attempt,
            self.executor.kind()
        );
        Ok(Some(id))
    }

    fn wait(&mut self, inflight: &[InFlight]) -> Result<Vec<(usize, Finish)>> {
        loop {
            let refs: Vec<JobRef<'_>> = inflight
                .iter()
                .map(|f| JobRef {
                    id: f.job.as_deref().unwrap_or(""),
                    run_dir: &f.run_dir,
                })
                .collect();
            let states = self.executor.poll(&refs)?;
            let mut done = Vec::new();
            for (f, st) in inflight.iter().zip(states) {
                let code = read_exit_code(&f.run_dir);
                let lost = |status: Status, reason: String| {
                    let mut o = Outcome::failed(status, reason);
                    o.duration_s = job_duration(&f.run_dir).unwrap_or(0.0);
                    if matches!(status, Status::Lost | Status::Timeout) {
                        Finish::Lost(o)
                    } else {
                        Finish::Done(o)
                    }
                };
                let fin = match (code, st) {
                    // Killed by a signal while the scheduler says "cancelled"
                    // (or "node failed"): the scheduler's verdict wins.
                    (Some(c), JobState::Lost { status, reason }) if c > 128 => {
                        Some(lost(status, reason))
                    }
                    // A signal death is final only once the scheduler agrees
                    // (scancel signals the command before the job ends).
                    (Some(c), st) if c <= 128 || st.is_final() => {
                        Some(Finish::Done(exit_outcome(self.trial, &f.run_dir, c)))
                    }
                    (None, JobState::Lost { status, reason }) => Some(lost(status, reason)),
                    (None, JobState::Ended { detail }) => {
                        let since = *self.ended_at.entry(f.slot).or_insert_with(Instant::now);
                        (since.elapsed() >= self.opts.exit_grace).then(|| {
                            lost(
                                Status::Lost,
                                format!("the job ended ({detail}) but its script wrote no exit code (killed?)"),
                            )
                        })
                    }
                    _ => None,
                };
                if let Some(fin) = fin {
                    self.ended_at.remove(&f.slot);
                    done.push((f.slot, fin));
                }
            }
            if !done.is_empty() {
                return Ok(done);
            }
            std::thread::sleep(self.opts.poll_interval);
        }
    }
}

/// Reads the records of a journal that [`Journal::resume`] already repaired.
fn read_records(dir: &Path) -> Result<Vec<TrialRecord>> {
    let p = Journal::path_in(dir);
    let text = std::fs::read_to_string(&p).unwrap_or_default();
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l).map_err(|e| Error::Journal {
                path: p.clone(),
                line: i + 1,
                message: e.to_string(),
            })
        })
        .collect()
}

/// The loop: keep `parallel` trials in flight, asking the tuner for a new
/// point (with the pending ones accounted for) whenever one finishes.
#[allow(clippy::too_many_arguments)]
fn drive(
    problem: &Problem,
    tuner: &mut dyn Tuner,
    journal: &mut Journal,
    backend: &mut dyn Backend,
    budget: usize,
    parallel: usize,
    retry_lost: u32,
    on_trial: &mut dyn FnMut(&Trial),
) -> Result<CampaignEnd> {
    let parallel = parallel.max(1);
    let dir = journal.dir().to_path_buf();
    let runs = dir.join("runs");
    let (mut log, logged) = JobLog::open(&dir)?;
    let records = read_records(&dir)?;

    // Slot numbers are never reused: past the log, the journal and any run
    // folder left by a trial killed before it was logged.
    let mut next_slot = records.len();
    for r in &records {
        next_slot = next_slot.max(r.slot.map_or(0, |s| s + 1));
    }
    for r in &logged {
        next_slot = next_slot.max(r.slot + 1);
    }
    if let Ok(entries) = std::fs::read_dir(&runs) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let digits: String = name.chars().take_while(char::is_ascii_digit).collect();
            if let Ok(n) = digits.parse::<usize>() {
                next_slot = next_slot.max(n + 1);
            }
        }
    }

    // Re-attach to the jobs still in flight when the campaign was killed.
    let done_slots: HashSet<usize> = records.iter().filter_map(|r| r.slot).collect();
    let mut latest: BTreeMap<usize, &JobRecord> = BTreeMap::new();
    for r in &logged {
        if latest.get(&r.slot).is_none_or(|l| r.attempt >= l.attempt) {
            latest.insert(r.slot, r);
        }
    }
    let mut inflight: Vec<InFlight> = Vec::new();
    for (slot, r) in latest {
        if done_slots.contains(&slot) {
            continue;
        }
        let Some(job) = r.job.clone() else {
            tracing::warn!(
                "trial slot {slot} was running in the killed campaign process; it is lost and re-suggested"
            );
            continue;
        };
        if r.executor != backend.kind() {
            return Err(Error::invalid(
                "--resume",
                format!(
                    "trial slot {slot} is still in flight as {} job {job}",
                    r.executor
                ),
                format!("resume with --executor {} to re-attach to it", r.executor),
            ));
        }
        if tuner.trials().len() + inflight.len() >= budget {
            break;
        }
        eprintln!(
            "re-attaching to trial slot {slot}: {} job {job}",
            r.executor
        );
        inflight.push(InFlight {
            slot,
            attempt: r.attempt,
            config: problem.space.from_map(&r.knobs)?,
            run_dir: dir.join(&r.run),
            job: Some(job),
            retry_after: r.retry_after.clone(),
        });
    }

    let launch = |f: &mut InFlight, backend: &mut dyn Backend, log: &mut JobLog| -> Result<()> {
        if f.run_dir.exists() {
            std::fs::remove_dir_all(&f.run_dir).map_err(|e| Error::io(&f.run_dir, e))?;
        }
        std::fs::create_dir_all(&f.run_dir).map_err(|e| Error::io(&f.run_dir, e))?;
        f.job = backend.launch(f, &problem.space)?;
        log.append(&JobRecord {
            slot: f.slot,
            attempt: f.attempt,
            executor: backend.kind().into(),
            job: f.job.clone(),
            run: f
                .run_dir
                .strip_prefix(&dir)
                .unwrap_or(&f.run_dir)
                .display()
                .to_string(),
            knobs: problem.space.to_map(&f.config),
            retry_after: f.retry_after.clone(),
        })
    };

    let mut exhausted = false;
    loop {
        let told = tuner.trials().len();
        let room = parallel
            .saturating_sub(inflight.len())
            .min(budget.saturating_sub(told + inflight.len()));
        if room > 0 && !exhausted {
            let pending: Vec<Config> = inflight.iter().map(|f| f.config.clone()).collect();
            let configs = tuner.ask_pending(room, &pending)?;
            exhausted = configs.len() < room;
            for config in configs {
                let slot = next_slot;
                next_slot += 1;
                let mut f = InFlight {
                    slot,
                    attempt: 0,
                    config,
                    run_dir: runs.join(format!("{slot:04}")),
                    job: None,
                    retry_after: None,
                };
                launch(&mut f, backend, &mut log)?;
                inflight.push(f);
            }
        }
        if inflight.is_empty() {
            return Ok(if tuner.trials().len() >= budget {
                CampaignEnd::BudgetSpent
            } else {
                CampaignEnd::Exhausted
            });
        }
        for (slot, fin) in backend.wait(&inflight)? {
            let Some(pos) = inflight.iter().position(|f| f.slot == slot) else {
                continue;
            };
            let mut f = inflight.remove(pos);
            let outcome = match fin {
                Finish::Lost(o) if f.attempt < retry_lost => {
                    let why = o
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("{:?}", o.status));
                    eprintln!(
                        "trial slot {slot} lost ({why}); re-submitting (attempt {} of {})",
                        f.attempt + 2,
                        retry_lost + 1
                    );
                    f.attempt += 1;
                    f.run_dir = runs.join(format!("{slot:04}-r{}", f.attempt));
                    f.retry_after = Some(why);
                    launch(&mut f, backend, &mut log)?;
                    inflight.push(f);
                    continue;
                }
                Finish::Lost(o) | Finish::Done(o) => o,
            };
            let mut outcome = problem.classify(outcome);
            if let Some(prev) = &f.retry_after
                && outcome.status.ran()
            {
                outcome.message = Some(format!("re-submitted after: {prev}"));
            }
            let rel = f.run_dir.strip_prefix(&dir).unwrap_or(&f.run_dir);
            outcome
                .run_dir
                .get_or_insert_with(|| rel.display().to_string());
            let trial = Trial {
                index: tuner.trials().len(),
                config: f.config.clone(),
                outcome,
            };
            let mut rec = TrialRecord::from_trial(problem, &trial);
            rec.slot = Some(f.slot);
            rec.job = f.job.as_ref().map(|j| format!("{}:{j}", backend.kind()));
            journal.append(&rec)?;
            tuner.tell(trial.clone());
            on_trial(&trial);
        }
    }
}

/// Runs trials in process until `budget` trials are journaled (counting
/// those already told to `tuner`), keeping `parallel` in flight: whenever
/// one finishes the tuner suggests the next with the others pending
/// (asynchronous batches), so no slot waits for the slowest trial. Each
/// finished trial is journaled (fsynced) and told to the tuner in
/// completion order, then passed to `on_trial`.
pub fn run_campaign(
    problem: &Problem,
    tuner: &mut dyn Tuner,
    objective: &dyn Objective,
    journal: &mut Journal,
    budget: usize,
    parallel: usize,
    mut on_trial: impl FnMut(&Trial),
) -> Result<CampaignEnd> {
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel();
        let mut backend = ThreadBackend {
            scope,
            objective,
            space: &problem.space,
            tx,
            rx,
        };
        drive(
            problem,
            tuner,
            journal,
            &mut backend,
            budget,
            parallel,
            0,
            &mut on_trial,
        )
    })
}

/// Runs trials as jobs of `executor` until `budget` trials are journaled,
/// keeping `opts.parallel` in flight (asynchronous batches, as
/// [`run_campaign`]). Every submission is logged with its job id in
/// `jobs.jsonl` before the campaign waits on it, so a campaign process that
/// is killed and resumed re-attaches to the jobs still running and loses no
/// trial. A job the cluster loses (cancelled, preempted, timed out, node
/// died) is re-submitted up to `opts.retry_lost` times, then recorded with
/// the scheduler's reason.
// The same arguments as `run_campaign`, plus the executor.
#[allow(clippy::too_many_arguments)]
pub fn run_campaign_on(
    problem: &Problem,
    tuner: &mut dyn Tuner,
    trial: &dyn CommandTrial,
    executor: &mut dyn Executor,
    journal: &mut Journal,
    budget: usize,
    opts: &ExecOptions,
    mut on_trial: impl FnMut(&Trial),
) -> Result<CampaignEnd> {
    let mut backend = JobBackend {
        executor,
        trial,
        opts,
        ended_at: HashMap::new(),
    };
    drive(
        problem,
        tuner,
        journal,
        &mut backend,
        budget,
        opts.parallel,
        opts.retry_lost,
        &mut on_trial,
    )
}

/// Formats a value for tables.
pub fn fmt_value(v: &Value) -> String {
    match v {
        Value::Float(x) => format!("{x:.4}"),
        other => other.to_string(),
    }
}
