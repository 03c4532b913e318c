//! The inputs of a report or a gate: runs and sweeps as plain data.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use fuselab_core::{Arrivals, RequestRecord, RunSummary, StepRecord, SweepSummary};

use crate::Result;
use crate::campaign::{CampaignData, is_campaign_folder, load_campaign};

/// One run folder's contents: its `summary.json` and its request and step
/// tables.
#[derive(Clone, Debug, PartialEq)]
pub struct RunData {
    /// The run's `summary.json`.
    pub summary: RunSummary,
    /// Every request (`requests.parquet` joined with `tokens.parquet`).
    pub requests: Vec<RequestRecord>,
    /// Engine steps (`steps.parquet`); empty for engines that report none.
    pub steps: Vec<StepRecord>,
    /// The folder it was read from, shown in the provenance table.
    pub source: Option<PathBuf>,
    /// How many repeated runs of one configuration this stands for (1 for a
    /// plain run; N for a `bench --repeat N` folder, see [`load_repeat`]).
    pub repeats: usize,
    /// The server's Prometheus samples scraped during the run
    /// (`server_metrics.parquet`; HTTP engines only).
    pub server_metrics: Vec<fuselab_core::ServerMetricSample>,
}

impl RunData {
    /// A run without a source folder.
    pub fn new(summary: RunSummary, requests: Vec<RequestRecord>, steps: Vec<StepRecord>) -> Self {
        Self {
            summary,
            requests,
            steps,
            source: None,
            repeats: 1,
            server_metrics: Vec::new(),
        }
    }

    /// The run's name.
    pub fn name(&self) -> &str {
        &self.summary.name
    }

    /// The scheduling policy, or the engine kind when there is none.
    pub fn policy(&self) -> &str {
        let e = &self.summary.provenance.engine;
        e.policy.as_deref().unwrap_or(&e.engine)
    }

    /// The offered load: the request rate of open-loop arrivals or the client
    /// count of a closed loop; `None` for bursts, ramps and traces.
    pub fn load(&self) -> Option<f64> {
        match &self.summary.provenance.workload.arrivals {
            Arrivals::Poisson { rate } | Arrivals::Constant { rate } => Some(*rate),
            Arrivals::Gamma { rate, .. } => Some(*rate),
            Arrivals::ClosedLoop { clients } => Some(f64::from(*clients)),
            Arrivals::Ramp { .. } | Arrivals::Burst | Arrivals::Trace => None,
        }
    }
}

/// One sweep folder: its `sweep.json` and the run folders of some or all of
/// its points, keyed by [`fuselab_core::SweepPoint::run`].
#[derive(Clone, Debug, PartialEq)]
pub struct SweepData {
    /// The sweep's `sweep.json`.
    pub summary: SweepSummary,
    /// Loaded point runs, keyed by the point's `run` folder name. Points whose
    /// run is absent still appear in curves (their metrics are in `sweep.json`).
    pub runs: BTreeMap<String, RunData>,
    /// The folder it was read from.
    pub source: Option<PathBuf>,
}

impl SweepData {
    /// The point runs worth a CDF: each policy's highest-load point that was
    /// loaded, in policy order of first appearance.
    pub fn representative_runs(&self) -> Vec<&RunData> {
        let mut best: Vec<(&str, f64, &str)> = Vec::new();
        for p in &self.summary.points {
            match best.iter_mut().find(|(pol, _, _)| *pol == p.policy) {
                Some(entry) if p.load > entry.1 && self.runs.contains_key(&p.run) => {
                    *entry = (&p.policy, p.load, &p.run);
                }
                Some(_) => {}
                None if self.runs.contains_key(&p.run) => best.push((&p.policy, p.load, &p.run)),
                None => {}
            }
        }
        best.iter()
            .filter_map(|(_, _, run)| self.runs.get(*run))
            .collect()
    }
}

/// What a report is made of.
#[derive(Clone, Debug, PartialEq)]
#[allow(clippy::large_enum_variant)] // a handful per report; boxing would only add noise
pub enum ReportInput {
    /// A single run folder.
    Run(RunData),
    /// A sweep folder.
    Sweep(SweepData),
    /// A tuning campaign folder (`fuselab tune --out DIR`).
    Campaign(CampaignData),
}

impl ReportInput {
    /// The name shown in legends and tables.
    pub fn name(&self) -> &str {
        match self {
            Self::Run(r) => r.name(),
            Self::Sweep(s) => &s.summary.name,
            Self::Campaign(c) => &c.name,
        }
    }
}

impl From<fuselab_store::StoredRun> for RunData {
    fn from(r: fuselab_store::StoredRun) -> Self {
        Self::new(r.summary, r.requests, r.steps)
    }
}

/// Reads a run folder.
pub fn load_run(path: &Path) -> Result<RunData> {
    let mut run = RunData::from(fuselab_store::read_run(path)?);
    run.server_metrics = fuselab_store::RunFolder::open(path)?.read_server_metrics()?;
    run.source = Some(path.to_path_buf());
    Ok(run)
}

/// Reads a repeat folder (`bench --repeat N`) as one configuration: the
/// summary of its first run with the metrics averaged over every run
/// ([`fuselab_metrics::mean_metrics`]), the requests of every run (so
/// distributions pool the repeats) and the steps of the first run.
pub fn load_repeat(path: &Path) -> Result<RunData> {
    let repeat = fuselab_store::read_repeat(path)?;
    let mut runs = Vec::new();
    for dir in fuselab_store::repeat_run_folders(path)? {
        runs.push(load_run(&dir)?);
    }
    let metrics: Vec<_> = runs.iter().map(|r| r.summary.metrics.clone()).collect();
    let Some(mean) = fuselab_metrics::mean_metrics(&metrics) else {
        return Err(fuselab_store::Error::NotAFolderOfRuns {
            path: path.to_path_buf(),
        }
        .into());
    };
    let n = runs.len();
    let mut iter = runs.into_iter();
    let mut first = iter.next().expect("mean_metrics saw at least one run");
    for r in iter {
        first.requests.extend(r.requests);
    }
    first.summary.name = repeat.name;
    first.summary.metrics = mean;
    first.source = Some(path.to_path_buf());
    first.repeats = n;
    Ok(first)
}

/// Reads a run folder, a repeat folder (as one configuration, see
/// [`load_repeat`]), a sweep folder or a tuning campaign folder (one that
/// holds `trials.jsonl`). For a sweep, only each policy's highest-load point
/// run is read (the one whose distributions the report draws); every point's
/// metrics come from `sweep.json`. For a campaign, `campaign.json` and the
/// journal are read (a torn last journal line is dropped and noted).
pub fn load_input(path: &Path) -> Result<ReportInput> {
    if is_campaign_folder(path) {
        return Ok(ReportInput::Campaign(load_campaign(path)?));
    }
    match fuselab_store::folder_kind(path)? {
        fuselab_store::FolderKind::Run => Ok(ReportInput::Run(load_run(path)?)),
        fuselab_store::FolderKind::Repeat => Ok(ReportInput::Run(load_repeat(path)?)),
        fuselab_store::FolderKind::Sweep => {
            let summary = fuselab_store::read_sweep(path)?;
            let mut top: BTreeMap<&str, (f64, &str)> = BTreeMap::new();
            for p in &summary.points {
                let e = top.entry(&p.policy).or_insert((p.load, &p.run));
                if p.load > e.0 {
                    *e = (p.load, &p.run);
                }
            }
            let mut runs = BTreeMap::new();
            for (_, run) in top.values() {
                let dir = path.join(run);
                // A point of `sweep --repeat N` is a repeat folder.
                let data = if dir.join(fuselab_store::REPEAT_FILE).is_file() {
                    load_repeat(&dir)?
                } else {
                    load_run(&dir)?
                };
                runs.insert(run.to_string(), data);
            }
            Ok(ReportInput::Sweep(SweepData {
                summary,
                runs,
                source: Some(path.to_path_buf()),
            }))
        }
    }
}
