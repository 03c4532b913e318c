//! The compare view: two or more marked folders, each judged against the
//! first with the CI gate's own comparison ([`fuselab_reports::gate::compare`]:
//! the same bootstrap noise model, thresholds and verdicts as `fuselab gate`),
//! and their latency–throughput curves overlaid.
//!
//! A run or repeat folder is one side as the gate reads it (a repeat folder
//! pools its `rep-N` runs). A sweep is represented in the verdict table by
//! its first policy's highest-load point and contributes one curve per
//! policy; a campaign by its best trial's run.

use std::path::{Path, PathBuf};

use fuselab_core::Metrics;
use fuselab_reports::RunData;
use fuselab_reports::gate::{self, GateConfig, GateReport};

use crate::catalog::{self, EntryKind};
use crate::error::{Error, Result};

/// One latency–throughput curve: points sorted by load.
#[derive(Clone, Debug, PartialEq)]
pub struct Curve {
    /// Legend label.
    pub label: String,
    /// `(load, metrics)` per point.
    pub points: Vec<(f64, Metrics)>,
}

/// One compared folder.
#[derive(Clone, Debug, PartialEq)]
pub struct Side {
    /// Its name (folder name).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Which run stands for it in the verdict table, when not itself.
    pub stand_in: Option<String>,
}

/// Everything the compare view shows.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareView {
    /// The folders, baseline first.
    pub sides: Vec<Side>,
    /// For each side after the first: the gate's report against the first,
    /// or why it could not compare.
    pub reports: Vec<std::result::Result<GateReport, String>>,
    /// Curves of every side.
    pub curves: Vec<Curve>,
}

fn name_of(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

/// Loads one side: its runs for the gate and its curves.
fn load_side(path: &Path) -> Result<(Side, Vec<RunData>, Vec<Curve>)> {
    let kind = catalog::classify(path).ok_or_else(|| Error::NotAFolder {
        path: path.to_path_buf(),
    })?;
    let name = name_of(path);
    let runs_of = |dir: &Path| -> Result<Vec<RunData>> {
        gate::run_folders(dir)?
            .iter()
            .map(|d| fuselab_reports::load_run(d).map_err(Error::from))
            .collect()
    };
    let single_curve = |runs: &[RunData]| -> Vec<Curve> {
        let metrics: Vec<Metrics> = runs.iter().map(|r| r.summary.metrics.clone()).collect();
        let load = runs.first().and_then(RunData::load).unwrap_or(0.0);
        fuselab_metrics::mean_metrics(&metrics)
            .map(|m| Curve {
                label: name.clone(),
                points: vec![(load, m)],
            })
            .into_iter()
            .collect()
    };
    match kind {
        EntryKind::Run | EntryKind::Repeat => {
            let runs = runs_of(path)?;
            let curves = single_curve(&runs);
            Ok((
                Side {
                    name: name.clone(),
                    kind,
                    stand_in: None,
                },
                runs,
                curves,
            ))
        }
        EntryKind::Sweep => {
            let sweep = fuselab_store::read_sweep(path)?;
            let mut curves: Vec<Curve> = Vec::new();
            for p in &sweep.points {
                let label = format!("{name}:{}", p.policy);
                match curves.iter_mut().find(|c| c.label == label) {
                    Some(c) => c.points.push((p.load, p.metrics.clone())),
                    None => curves.push(Curve {
                        label,
                        points: vec![(p.load, p.metrics.clone())],
                    }),
                }
            }
            for c in &mut curves {
                c.points.sort_by(|a, b| a.0.total_cmp(&b.0));
            }
            let first = sweep.points.first().map(|p| p.policy.clone());
            let top = sweep
                .points
                .iter()
                .filter(|p| Some(&p.policy) == first.as_ref())
                .max_by(|a, b| a.load.total_cmp(&b.load))
                .ok_or_else(|| Error::NotAFolder {
                    path: path.to_path_buf(),
                })?;
            let runs = runs_of(&path.join(&top.run))?;
            Ok((
                Side {
                    name,
                    kind,
                    stand_in: Some(top.run.clone()),
                },
                runs,
                curves,
            ))
        }
        EntryKind::Campaign => {
            let c = fuselab_reports::load_campaign(path)?;
            let best = c
                .best_trials(1)
                .first()
                .and_then(|t| t.run.clone())
                .ok_or_else(|| Error::NotAFolder {
                    path: path.to_path_buf(),
                })?;
            let runs = runs_of(&path.join(&best))?;
            let curves = single_curve(&runs);
            Ok((
                Side {
                    name,
                    kind,
                    stand_in: Some(best),
                },
                runs,
                curves,
            ))
        }
        EntryKind::Pending => Err(Error::NotAFolder {
            path: path.to_path_buf(),
        }),
    }
}

/// The gate configuration of the compare view: `fuselab gate`'s defaults,
/// with the noise floors stored for this machine (`FUSELAB_BASELINES` or
/// `.fuselab/baselines`), and runs of different hardware compared with a
/// warning rather than refused (the view is for exploring).
pub fn gate_config() -> GateConfig {
    GateConfig {
        allow_hardware_mismatch: true,
        noise_floors: gate::load_noise(&gate::baselines_dir())
            .map(|n| n.floors)
            .unwrap_or_default(),
        ..GateConfig::default()
    }
}

/// Compares the folders at `paths` (at least two), the first as baseline.
pub fn compare(paths: &[PathBuf], cfg: &GateConfig) -> Result<CompareView> {
    let mut sides = Vec::new();
    let mut runs = Vec::new();
    let mut curves = Vec::new();
    for p in paths {
        let (side, r, c) = load_side(p)?;
        sides.push(side);
        runs.push(r);
        curves.extend(c);
    }
    let reports = runs
        .iter()
        .skip(1)
        .map(|cand| gate::compare(&runs[0], cand, cfg).map_err(|e| e.to_string()))
        .collect();
    Ok(CompareView {
        sides,
        reports,
        curves,
    })
}
