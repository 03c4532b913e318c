//! Opened folders: what the detail, sweep and campaign views show, read from
//! disk each time the followed folder changes. A sweep's points and a
//! campaign's trials are read from the files the running process appends
//! to, so work started by another `fuselab` (or by an earlier TUI) is
//! followed the same way as work started here.

use std::path::{Path, PathBuf};

use fuselab_core::{LoadKind, Metrics, SweepSummary};
use fuselab_reports::CampaignData;

use crate::catalog::{self, EntryKind};
use crate::detail::RunDetail;
use crate::error::{Error, Result};
use crate::job::{self, JobInfo, JobState};

/// Lines of a job's log shown under its view.
pub const LOG_LINES: usize = 6;

/// A followed folder, ready to draw.
#[derive(Clone, Debug, PartialEq)]
pub struct Opened {
    /// The folder.
    pub path: PathBuf,
    /// What it holds.
    pub content: Content,
    /// The job that writes it, when the TUI started it.
    pub job: Option<(JobInfo, JobState)>,
    /// The last lines of the job's log.
    pub log: Vec<String>,
}

/// The content of an opened folder.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per screen
pub enum Content {
    /// A run or repeat folder.
    Run(Box<RunDetail>),
    /// A sweep folder (complete or in progress).
    Sweep(SweepView),
    /// A campaign folder (complete or in progress).
    Campaign(Box<CampaignView>),
    /// A TUI job that has written no result yet.
    Pending,
}

/// A sweep, complete or in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepView {
    /// `sweep.json` as written so far (every finished point).
    pub summary: SweepSummary,
    /// Whether the sweep finished (`curve.txt` is written last).
    pub complete: bool,
}

impl SweepView {
    /// The policies in order of first appearance.
    pub fn policies(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for p in &self.summary.points {
            if !out.contains(&p.policy.as_str()) {
                out.push(&p.policy);
            }
        }
        out
    }

    /// The unit of the load column.
    pub fn load_unit(&self) -> &'static str {
        match self.summary.load_kind {
            LoadKind::Rate => "rate",
            LoadKind::Clients => "clients",
        }
    }
}

/// The tuner's next suggestion for a campaign.
#[derive(Clone, Debug, PartialEq)]
pub enum Suggestion {
    /// Being computed.
    Computing,
    /// The configuration the tuner would try next.
    Next(String),
    /// The budget is spent or the space exhausted.
    Complete,
    /// The tuner could not be rebuilt (the reason).
    Unavailable(String),
}

/// A campaign, complete or in progress.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignView {
    /// `campaign.json` and the journal as written so far.
    pub data: CampaignData,
    /// The budget of trials, when known (from the command that started it).
    pub budget: Option<usize>,
    /// Best feasible value of the first objective after each trial.
    pub best_so_far: Vec<(usize, f64)>,
    /// Indices of the Pareto-optimal trials (the best ones for one objective).
    pub pareto: Vec<usize>,
    /// The tuner's next suggestion.
    pub suggestion: Suggestion,
}

impl CampaignView {
    /// Derives the view of `data` in `dir`.
    pub fn new(dir: &Path, data: CampaignData) -> Self {
        Self {
            budget: campaign_budget(dir, &data),
            best_so_far: data.best_so_far(0),
            pareto: data.pareto_front(),
            suggestion: Suggestion::Computing,
            data,
        }
    }
}

/// The budget of a campaign: `--budget N` of the command that started it
/// (its TUI job, else the provenance of a trial's run folder), 40 (the
/// default of `fuselab tune`) when that command gives none, `None` when no
/// command is known.
pub fn campaign_budget(dir: &Path, data: &CampaignData) -> Option<usize> {
    let args: Vec<String> = match job::read_job(dir).ok().flatten() {
        Some(info) => info.args,
        None => {
            let run = data.trials.iter().find_map(|t| t.run.clone())?;
            let s = fuselab_store::read_summary(&dir.join(run)).ok()?;
            s.provenance
                .command?
                .split_whitespace()
                .map(str::to_string)
                .collect()
        }
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--budget" {
            return it.next().and_then(|v| v.parse().ok());
        }
        if let Some(v) = a.strip_prefix("--budget=") {
            return v.parse().ok();
        }
    }
    Some(40)
}

/// Reads the folder at `path` for its view.
pub fn open(path: &Path) -> Result<Opened> {
    let job = job::read_job(path).ok().flatten().map(|info| {
        let state = job::job_state(path, &info);
        (info, state)
    });
    let log = if job.is_some() {
        job::log_tail(path, LOG_LINES)
    } else {
        Vec::new()
    };
    let content = match catalog::classify(path) {
        Some(EntryKind::Run) => {
            Content::Run(Box::new(RunDetail::new(&fuselab_reports::load_run(path)?)))
        }
        Some(EntryKind::Repeat) => Content::Run(Box::new(RunDetail::new(
            &fuselab_reports::load_repeat(path)?,
        ))),
        Some(EntryKind::Sweep) => Content::Sweep(SweepView {
            summary: fuselab_store::read_sweep(path)?,
            complete: path.join("curve.txt").is_file(),
        }),
        Some(EntryKind::Campaign) => Content::Campaign(Box::new(CampaignView::new(
            path,
            fuselab_reports::load_campaign(path)?,
        ))),
        Some(EntryKind::Pending) => Content::Pending,
        None => {
            return Err(Error::NotAFolder {
                path: path.to_path_buf(),
            });
        }
    };
    Ok(Opened {
        path: path.to_path_buf(),
        content,
        job,
        log,
    })
}

/// What the tuner of the campaign in `dir` would try next, from its
/// `campaign.json` and journal. The journal is only read (a torn last line
/// is skipped, never truncated: another process may be writing it).
/// `Ok(None)` when the budget is spent or the space exhausted.
pub fn next_suggestion(dir: &Path, budget: Option<usize>) -> Result<Option<String>> {
    use fuselab_tune::{Journal, TrialRecord, TunerKind};
    let meta = Journal::read_meta(dir)?;
    let path = Journal::path_in(dir);
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let mut trials = Vec::new();
    for line in text.split_inclusive('\n') {
        if !line.ends_with('\n') || line.trim().is_empty() {
            continue;
        }
        let rec: TrialRecord = serde_json::from_str(line.trim()).map_err(|source| Error::Json {
            path: path.clone(),
            source,
        })?;
        trials.push(rec.to_trial(&meta.problem)?);
    }
    if budget.is_some_and(|b| trials.len() >= b) {
        return Ok(None);
    }
    let kind: TunerKind = meta.tuner.parse()?;
    let mut tuner = kind.build(
        meta.problem.clone(),
        meta.seed,
        budget.unwrap_or(trials.len() + 1),
    );
    for t in trials {
        tuner.tell(t);
    }
    Ok(tuner
        .ask(1)?
        .first()
        .map(|c| meta.problem.space.describe(c)))
}

/// The latency metric drawn against output throughput in the curves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CurveMetric {
    /// Median time to first token.
    TtftP50,
    /// 99th-percentile time to first token.
    TtftP99,
    /// Median time per output token.
    TpotP50,
    /// 99th-percentile inter-token latency.
    ItlP99,
    /// Median end-to-end latency.
    E2eP50,
}

impl CurveMetric {
    /// In the order `m` cycles through them.
    pub const ALL: [CurveMetric; 5] = [
        Self::TtftP99,
        Self::TtftP50,
        Self::TpotP50,
        Self::ItlP99,
        Self::E2eP50,
    ];

    /// Axis label.
    pub fn label(self) -> &'static str {
        match self {
            Self::TtftP50 => "TTFT p50",
            Self::TtftP99 => "TTFT p99",
            Self::TpotP50 => "TPOT p50",
            Self::ItlP99 => "ITL p99",
            Self::E2eP50 => "E2E p50",
        }
    }

    /// The value, seconds.
    pub fn value(self, m: &Metrics) -> f64 {
        match self {
            Self::TtftP50 => m.ttft_s.p50,
            Self::TtftP99 => m.ttft_s.p99,
            Self::TpotP50 => m.tpot_s.p50,
            Self::ItlP99 => m.itl_s.p99,
            Self::E2eP50 => m.e2e_s.p50,
        }
    }

    /// The next one.
    pub fn next(self) -> Self {
        let i = Self::ALL.iter().position(|&m| m == self).unwrap_or(0);
        Self::ALL[(i + 1) % Self::ALL.len()]
    }
}
