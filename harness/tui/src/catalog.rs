//! The browse list: every run, repeat, sweep and campaign folder under the
//! roots, with the figures shown in its row. Only the small JSON files are
//! read (never the Parquet tables), and an entry is re-read only when its
//! folder's [`Fingerprint`] changed, so rescanning every second is cheap.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use fuselab_core::{Arrivals, Metrics, RunSummary};

use crate::job::{self, JobInfo, JobState};
use crate::poll::Fingerprint;

/// What a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// A run folder (`summary.json`).
    Run,
    /// A repeat folder (`repeat.json` and `rep-N` runs).
    Repeat,
    /// A sweep folder (`sweep.json` and one run per point).
    Sweep,
    /// A tuning campaign (`campaign.json` and `trials.jsonl`).
    Campaign,
    /// Work started from the TUI that has written nothing yet.
    Pending,
}

impl EntryKind {
    /// Short name for the list.
    pub fn label(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Repeat => "repeat",
            Self::Sweep => "sweep",
            Self::Campaign => "tune",
            Self::Pending => "job",
        }
    }
}

/// Whether a folder's work is complete.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryStatus {
    /// Complete.
    Done,
    /// A TUI-started job whose process is alive.
    Running,
    /// Incomplete, written by a process the TUI does not know (it may still
    /// be running; see the age column).
    Partial,
    /// A TUI-started job that exited with this non-zero status.
    Failed(i32),
    /// A TUI-started job that is gone without an exit status.
    Stopped,
}

impl EntryStatus {
    /// Short name for the list.
    pub fn label(self) -> String {
        match self {
            Self::Done => "done".into(),
            Self::Running => "running".into(),
            Self::Partial => "partial".into(),
            Self::Failed(c) => format!("exit {c}"),
            Self::Stopped => "stopped".into(),
        }
    }
}

/// One row of the browse list.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The folder.
    pub path: PathBuf,
    /// Its name: the path from the root's parent, e.g. `runs/sweep-a`.
    pub name: String,
    /// What it holds.
    pub kind: EntryKind,
    /// Whether its work is complete.
    pub status: EntryStatus,
    /// Modification time of its main file (newest first in the list).
    pub modified: Option<SystemTime>,
    /// Engine kind (`sim`, `cpu`, …), empty when unknown.
    pub engine: String,
    /// Hardware profile or device.
    pub hardware: String,
    /// Scheduling policy (or the sweep's policies).
    pub policy: String,
    /// Workload preset name.
    pub workload: String,
    /// The load: `4/s`, `8 clients`, or a sweep's range.
    pub load: String,
    /// The figures shown: the run's metrics, a sweep's highest-load point's,
    /// a campaign's best trial's.
    pub metrics: Option<Metrics>,
    /// A short note: points of a sweep, trials and best value of a campaign,
    /// the reason an entry could not be read.
    pub note: String,
}

impl Entry {
    fn new(path: &Path, name: String, kind: EntryKind) -> Self {
        Self {
            path: path.to_path_buf(),
            name,
            kind,
            status: EntryStatus::Done,
            modified: None,
            engine: String::new(),
            hardware: String::new(),
            policy: String::new(),
            workload: String::new(),
            load: String::new(),
            metrics: None,
            note: String::new(),
        }
    }

    /// Whether every whitespace-separated term of `filter` occurs
    /// (case-insensitively) in the entry's name, kind, status, engine,
    /// hardware, policy, workload or load.
    pub fn matches(&self, filter: &str) -> bool {
        let hay = format!(
            "{} {} {} {} {} {} {} {}",
            self.name,
            self.kind.label(),
            self.status.label(),
            self.engine,
            self.hardware,
            self.policy,
            self.workload,
            self.load
        )
        .to_lowercase();
        filter
            .split_whitespace()
            .all(|t| hay.contains(&t.to_lowercase()))
    }

    fn provenance(&mut self, s: &RunSummary) {
        let e = &s.provenance.engine;
        self.engine = e.engine.clone();
        self.hardware = e.hardware.clone().unwrap_or_default();
        self.policy = e.policy.clone().unwrap_or_default();
        self.workload = s.provenance.workload.name.clone();
        self.load = load_label(&s.provenance.workload.arrivals);
    }
}

/// A short label for the load of a workload (`4/s`, `8 clients`, `burst`).
pub fn load_label(arrivals: &Arrivals) -> String {
    match arrivals {
        Arrivals::Poisson { rate } | Arrivals::Constant { rate } | Arrivals::Gamma { rate, .. } => {
            format!("{rate}/s")
        }
        Arrivals::Ramp {
            start_rate,
            end_rate,
        } => format!("{start_rate}-{end_rate}/s"),
        Arrivals::Burst => "burst".into(),
        Arrivals::ClosedLoop { clients } => format!("{clients} cl"),
        Arrivals::Trace => "trace".into(),
    }
}

/// Scans roots into a list, re-reading only folders that changed.
#[derive(Debug, Default)]
pub struct Catalog {
    cache: HashMap<PathBuf, (Fingerprint, Entry)>,
}

impl Catalog {
    /// An empty catalog.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every entry under `roots` (missing roots are skipped), newest first.
    pub fn scan(&mut self, roots: &[PathBuf]) -> Vec<Entry> {
        let mut found = Vec::new();
        for root in roots {
            let base = root.parent().unwrap_or(Path::new(""));
            walk(root, base, 4, &mut found);
        }
        let mut out = Vec::with_capacity(found.len());
        let mut cache = HashMap::with_capacity(found.len());
        for (path, name) in found {
            let fp = Fingerprint::of(&path);
            let entry = match self.cache.remove(&path) {
                Some((old, e)) if old == fp && e.status != EntryStatus::Running => e,
                _ => read_entry(&path, name),
            };
            cache.insert(path, (fp, entry.clone()));
            out.push(entry);
        }
        self.cache = cache;
        sort_newest_first(&mut out);
        out
    }
}

/// Sorts entries by modification time, newest first, then by name.
pub fn sort_newest_first(entries: &mut [Entry]) {
    entries.sort_by(|a, b| b.modified.cmp(&a.modified).then(a.name.cmp(&b.name)));
}

fn walk(dir: &Path, base: &Path, depth: usize, out: &mut Vec<(PathBuf, String)>) {
    if classify(dir).is_some() {
        let name = dir.strip_prefix(base).unwrap_or(dir).display().to_string();
        out.push((dir.to_path_buf(), name));
        return;
    }
    if depth == 0 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut subdirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .map(|e| e.path())
        .collect();
    subdirs.sort();
    for d in subdirs {
        walk(&d, base, depth - 1, out);
    }
}

/// What `dir` holds, `None` for a plain folder.
pub fn classify(dir: &Path) -> Option<EntryKind> {
    if fuselab_reports::is_campaign_folder(dir) {
        Some(EntryKind::Campaign)
    } else if dir.join(fuselab_store::SWEEP_FILE).is_file() {
        Some(EntryKind::Sweep)
    } else if dir.join(fuselab_store::REPEAT_FILE).is_file() {
        Some(EntryKind::Repeat)
    } else if dir.join(fuselab_store::SUMMARY_FILE).is_file() {
        Some(EntryKind::Run)
    } else if dir.join(job::JOB_FILE).is_file() {
        Some(EntryKind::Pending)
    } else {
        None
    }
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Reads one folder's row (errors become the row's note).
pub fn read_entry(path: &Path, name: String) -> Entry {
    let kind = classify(path).unwrap_or(EntryKind::Pending);
    let mut e = Entry::new(path, name, kind);
    if let Err(err) = fill(&mut e) {
        e.note = format!("unreadable: {err}");
    }
    let job = job::read_job(path).ok().flatten();
    if let Some(info) = &job {
        e.status = match job::job_state(path, info) {
            JobState::Running => EntryStatus::Running,
            JobState::Exited(0) => e.status,
            JobState::Exited(c) => EntryStatus::Failed(c),
            JobState::Stopped => EntryStatus::Stopped,
        };
        if e.modified.is_none() {
            e.modified = modified(&path.join(job::JOB_FILE));
        }
        if kind == EntryKind::Pending {
            e.note = pending_note(info);
        }
    }
    e
}

fn pending_note(info: &JobInfo) -> String {
    format!("fuselab {}", info.args.join(" "))
}

fn fill(e: &mut Entry) -> crate::Result<()> {
    let path = e.path.clone();
    match e.kind {
        EntryKind::Run => {
            e.modified = modified(&path.join(fuselab_store::SUMMARY_FILE));
            let s = fuselab_store::read_summary(&path)?;
            e.provenance(&s);
            e.metrics = Some(s.metrics);
        }
        EntryKind::Repeat => {
            e.modified = modified(&path.join(fuselab_store::REPEAT_FILE));
            let runs = fuselab_store::repeat_run_folders(&path)?;
            let mut metrics = Vec::new();
            for (i, r) in runs.iter().enumerate() {
                let s = fuselab_store::read_summary(r)?;
                if i == 0 {
                    e.provenance(&s);
                }
                metrics.push(s.metrics);
            }
            e.metrics = fuselab_metrics::mean_metrics(&metrics);
            e.note = format!("{} runs", runs.len());
        }
        EntryKind::Sweep => {
            e.modified = modified(&path.join(fuselab_store::SWEEP_FILE));
            let sweep = fuselab_store::read_sweep(&path)?;
            if let Some(first) = sweep.points.first() {
                let dir = path.join(&first.run);
                let dir = if dir.join(fuselab_store::REPEAT_FILE).is_file() {
                    dir.join("rep-1")
                } else {
                    dir
                };
                if let Ok(s) = fuselab_store::read_summary(&dir) {
                    e.provenance(&s);
                }
            }
            let mut policies: Vec<&str> = Vec::new();
            for p in &sweep.points {
                if !policies.contains(&p.policy.as_str()) {
                    policies.push(&p.policy);
                }
            }
            e.policy = policies.join(",");
            let loads: Vec<f64> = sweep.points.iter().map(|p| p.load).collect();
            let lo = loads.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = loads.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let unit = match sweep.load_kind {
                fuselab_core::LoadKind::Rate => "/s",
                fuselab_core::LoadKind::Clients => " cl",
            };
            e.load = if loads.is_empty() {
                String::new()
            } else if lo == hi {
                format!("{lo}{unit}")
            } else {
                format!("{lo}-{hi}{unit}")
            };
            // The highest load of the first policy: the most loaded point.
            e.metrics = sweep
                .points
                .iter()
                .filter(|p| Some(p.policy.as_str()) == policies.first().copied())
                .max_by(|a, b| a.load.total_cmp(&b.load))
                .map(|p| p.metrics.clone());
            e.note = format!("{} points", sweep.points.len());
            if !path.join("curve.txt").is_file() {
                e.status = EntryStatus::Partial;
            }
        }
        EntryKind::Campaign => {
            e.modified = modified(&path.join(fuselab_reports::TRIALS_FILE));
            let c = fuselab_reports::load_campaign(&path)?;
            let obj = &c.settings.objectives[0];
            let best = c.best_trials(1).first().map(|t| (*t).clone());
            let with_run = best
                .as_ref()
                .and_then(|t| t.run.clone())
                .or_else(|| c.trials.iter().find_map(|t| t.run.clone()));
            if let Some(run) = with_run {
                let dir = path.join(run);
                if let Ok(s) = fuselab_store::read_summary(&dir) {
                    e.provenance(&s);
                    if best.as_ref().and_then(|t| t.run.as_ref()).is_some() {
                        e.metrics = Some(s.metrics);
                    }
                }
            }
            e.note = match &best {
                Some(t) => format!(
                    "{} trials, best {} {}",
                    c.trials.len(),
                    obj.name,
                    crate::view::fmt::num(t.objectives[0])
                ),
                None => format!("{} trials", c.trials.len()),
            };
            if let Some(budget) = crate::live::campaign_budget(&path, &c)
                && c.trials.len() < budget
            {
                e.status = EntryStatus::Partial;
            }
        }
        EntryKind::Pending => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: &str, secs: u64) -> Entry {
        let mut e = Entry::new(Path::new(name), name.into(), EntryKind::Run);
        e.modified = Some(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        e.policy = "splitfuse".into();
        e.engine = "sim".into();
        e
    }

    #[test]
    fn newest_first_then_by_name() {
        let mut v = vec![entry("b", 1), entry("a", 1), entry("c", 5)];
        sort_newest_first(&mut v);
        let names: Vec<&str> = v.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["c", "a", "b"]);
    }

    #[test]
    fn filter_terms_all_match_case_insensitively() {
        let e = entry("runs/bench-x", 0);
        assert!(e.matches(""));
        assert!(e.matches("SPLIT sim"));
        assert!(e.matches("bench run"));
        assert!(!e.matches("split chunked"));
    }

    #[test]
    fn scanning_skips_plain_and_hidden_folders() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("runs");
        std::fs::create_dir_all(root.join("nested/empty")).unwrap();
        std::fs::create_dir_all(root.join(".hidden")).unwrap();
        std::fs::write(root.join(".hidden").join(job::JOB_FILE), "{}").unwrap();
        std::fs::create_dir_all(root.join("nested/job")).unwrap();
        std::fs::write(root.join("nested/job").join(job::JOB_FILE), "not json").unwrap();
        let mut cat = Catalog::new();
        let found = cat.scan(&[root.clone(), dir.path().join("missing")]);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, "runs/nested/job");
        assert_eq!(found[0].kind, EntryKind::Pending);
    }
}
