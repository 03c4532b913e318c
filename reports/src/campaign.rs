//! Tuning campaigns as report input: a campaign folder written by
//! `fuselab tune --out DIR` holds `campaign.json` (what was tuned: knobs,
//! objectives with their directions, outcome constraints, tuner, seed) and
//! `trials.jsonl` (one finished trial a line, in completion order).
//!
//! The journal is parsed here with serde rather than through fuselab-tune, so
//! that reports depend only on the data formats, not on the tuner. Reading
//! follows the tuner's own journal reader: a torn last line (no trailing
//! newline, left by a kill mid-write) is dropped and noted; any other bad
//! line is an error naming the file and line. Unknown fields are tolerated so
//! that a report can still be drawn from a journal written by a newer
//! fuselab.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Error, Result};

/// The journal file of a campaign folder.
pub const TRIALS_FILE: &str = "trials.jsonl";
/// The settings file of a campaign folder.
pub const CAMPAIGN_FILE: &str = "campaign.json";
/// The `campaign.json` schema this crate reads.
pub const CAMPAIGN_SCHEMA: u32 = 1;

/// Whether an objective is minimised or maximised.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Direction {
    /// Whether `a` is strictly better than `b`.
    pub fn better(self, a: f64, b: f64) -> bool {
        match self {
            Self::Minimize => a < b,
            Self::Maximize => a > b,
        }
    }

    /// `minimised` or `maximised`.
    pub fn verb(self) -> &'static str {
        match self {
            Self::Minimize => "minimised",
            Self::Maximize => "maximised",
        }
    }
}

/// A named objective of a campaign.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct ObjectiveInfo {
    /// Name, e.g. `goodput` or `value`.
    pub name: String,
    /// Whether larger or smaller is better.
    pub direction: Direction,
}

/// An outcome constraint (e.g. an SLO) of a campaign.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct OutcomeConstraintInfo {
    /// Name of the measured outcome.
    pub name: String,
    /// `true`: the value must be ≤ threshold; `false`: ≥ threshold.
    pub upper: bool,
    /// Threshold.
    pub threshold: f64,
}

/// A knob of the search space.
#[derive(Clone, Debug, PartialEq)]
pub struct KnobInfo {
    /// Knob name (user-provided: escape before showing).
    pub name: String,
    /// Its domain in words, e.g. `float [-3, 3]` or `ordinal {16, 32}`.
    pub domain: String,
}

/// `campaign.json`: what a campaign tunes.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignSettings {
    /// The knobs, in the space's order.
    pub knobs: Vec<KnobInfo>,
    /// Known constraints between knobs, as written (e.g. `budget >= block`).
    pub knob_constraints: Vec<String>,
    /// The objectives (one, or several for a Pareto campaign).
    pub objectives: Vec<ObjectiveInfo>,
    /// Outcome constraints; trials missing one are `infeasible`.
    pub constraints: Vec<OutcomeConstraintInfo>,
    /// Tuner name (`bo`, `random`, `grid`).
    pub tuner: String,
    /// The tuner's seed.
    pub seed: u64,
    /// What each trial evaluates (the command, or the engine objective).
    pub evaluates: String,
}

/// The status of a finished trial.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrialStatus {
    /// Ran and met every outcome constraint.
    Ok,
    /// Ran but missed an outcome constraint.
    Infeasible,
    /// Produced no result.
    Failed,
    /// Passed its time limit.
    Timeout,
    /// Crashed (signal, panic).
    Crashed,
}

impl TrialStatus {
    /// Every status, in table order.
    pub const ALL: [TrialStatus; 5] = [
        Self::Ok,
        Self::Infeasible,
        Self::Failed,
        Self::Timeout,
        Self::Crashed,
    ];

    /// Whether the trial produced objective values.
    pub fn ran(self) -> bool {
        matches!(self, Self::Ok | Self::Infeasible)
    }

    /// The journal's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Infeasible => "infeasible",
            Self::Failed => "failed",
            Self::Timeout => "timeout",
            Self::Crashed => "crashed",
        }
    }
}

impl fmt::Display for TrialStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One knob value of a trial.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum KnobValue {
    /// An integer.
    Int(i64),
    /// A real number.
    Float(f64),
    /// A categorical label.
    Str(String),
}

impl fmt::Display for KnobValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Int(i) => write!(f, "{i}"),
            Self::Float(x) => write!(f, "{x}"),
            Self::Str(s) => f.write_str(s),
        }
    }
}

/// One journal line.
#[derive(Clone, Debug, PartialEq)]
pub struct TrialData {
    /// 0-based trial number.
    pub trial: usize,
    /// Knob values by name.
    pub knobs: BTreeMap<String, KnobValue>,
    /// Objective values in the campaign's order; empty unless the trial ran.
    pub objectives: Vec<f64>,
    /// Outcome-constraint values by name.
    pub constraints: BTreeMap<String, f64>,
    /// Status.
    pub status: TrialStatus,
    /// The trial's run folder, relative to the campaign folder.
    pub run: Option<String>,
    /// Wall-clock duration, seconds.
    pub duration_s: f64,
    /// Failure reason or notes.
    pub message: Option<String>,
}

/// A campaign folder's contents.
#[derive(Clone, Debug, PartialEq)]
pub struct CampaignData {
    /// The campaign's name (its folder's name).
    pub name: String,
    /// `campaign.json`.
    pub settings: CampaignSettings,
    /// The trials, in journal order.
    pub trials: Vec<TrialData>,
    /// Bytes of a torn last journal line that was dropped (0 if none).
    pub torn_bytes: usize,
    /// The folder it was read from.
    pub source: Option<PathBuf>,
}

#[derive(Deserialize)]
struct RawMeta {
    schema: u32,
    problem: RawProblem,
    tuner: String,
    seed: u64,
    objective: String,
}

#[derive(Deserialize)]
struct RawProblem {
    space: RawSpace,
    objectives: Vec<ObjectiveInfo>,
    #[serde(default)]
    constraints: Vec<OutcomeConstraintInfo>,
}

#[derive(Deserialize)]
struct RawSpace {
    params: Vec<RawParam>,
    #[serde(default)]
    constraints: Vec<serde_json::Value>,
}

#[derive(Deserialize)]
struct RawParam {
    name: String,
    domain: serde_json::Value,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(f64),
    Many(Vec<f64>),
}

#[derive(Deserialize)]
struct RawTrial {
    trial: usize,
    #[serde(default)]
    knobs: BTreeMap<String, KnobValue>,
    #[serde(default)]
    objective: Option<OneOrMany>,
    #[serde(default)]
    objectives: Vec<f64>,
    #[serde(default)]
    constraints: BTreeMap<String, f64>,
    status: TrialStatus,
    #[serde(default)]
    run: Option<String>,
    #[serde(default)]
    duration_s: f64,
    #[serde(default)]
    message: Option<String>,
}

/// A domain of `campaign.json` in words; unknown shapes as compact JSON.
fn domain_text(d: &serde_json::Value) -> String {
    let num = |k: &str| d.get(k).map(|v| v.to_string()).unwrap_or_default();
    let log = d.get("log").and_then(|v| v.as_bool()).unwrap_or(false);
    let list = |k: &str| {
        d.get(k)
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .map(|v| match v {
                        serde_json::Value::String(s) => s.clone(),
                        v => v.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default()
    };
    match d.get("kind").and_then(|k| k.as_str()) {
        Some(kind @ ("int" | "float")) => format!(
            "{kind} [{}, {}]{}",
            num("lo"),
            num("hi"),
            if log { " (log)" } else { "" }
        ),
        Some("ordinal") => format!("ordinal {{{}}}", list("values")),
        Some("categorical") => format!("categorical {{{}}}", list("choices")),
        _ => d.to_string(),
    }
}

fn parse_error(path: &Path, line: usize, message: impl Into<String>) -> Error {
    Error::Core(fuselab_core::Error::Parse {
        path: path.to_path_buf(),
        line,
        message: message.into(),
    })
}

impl CampaignSettings {
    /// Parses `campaign.json`; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let raw: RawMeta = serde_json::from_str(text).map_err(|e| {
            parse_error(
                path,
                e.line(),
                format!("{e} (is this a campaign folder written by `fuselab tune`?)"),
            )
        })?;
        if raw.schema != CAMPAIGN_SCHEMA {
            return Err(Error::invalid(
                format!("{}: schema", path.display()),
                format!(
                    "schema {} (this fuselab reads {CAMPAIGN_SCHEMA})",
                    raw.schema
                ),
                "report it with the fuselab version that wrote it",
            ));
        }
        if raw.problem.objectives.is_empty() {
            return Err(Error::invalid(
                format!("{}: problem.objectives", path.display()),
                "the campaign has no objective",
                "campaign.json must list at least one objective",
            ));
        }
        Ok(Self {
            knobs: raw
                .problem
                .space
                .params
                .iter()
                .map(|p| KnobInfo {
                    name: p.name.clone(),
                    domain: domain_text(&p.domain),
                })
                .collect(),
            knob_constraints: raw
                .problem
                .space
                .constraints
                .iter()
                .map(|c| match c.get("text").and_then(|t| t.as_str()) {
                    Some(t) => t.to_string(),
                    None => c.to_string(),
                })
                .collect(),
            objectives: raw.problem.objectives,
            constraints: raw.problem.constraints,
            tuner: raw.tuner,
            seed: raw.seed,
            evaluates: raw.objective,
        })
    }
}

impl CampaignData {
    /// Parses a campaign from the texts of `campaign.json` and `trials.jsonl`.
    /// `dir` names the files in errors. A torn last journal line is dropped
    /// (see [`CampaignData::torn_bytes`]); any other bad line is an error
    /// naming it.
    pub fn parse(name: &str, campaign_json: &str, trials_jsonl: &str, dir: &Path) -> Result<Self> {
        let settings = CampaignSettings::parse(campaign_json, &dir.join(CAMPAIGN_FILE))?;
        let path = dir.join(TRIALS_FILE);
        let n_obj = settings.objectives.len();
        let mut trials: Vec<TrialData> = Vec::new();
        let mut torn_bytes = 0;
        let lines: Vec<&str> = trials_jsonl.split_inclusive('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            let body = line.trim();
            if body.is_empty() {
                continue;
            }
            if !line.ends_with('\n') && i + 1 == lines.len() {
                // The tuner writes each line with its newline in one write:
                // a last line without one is a kill mid-write, and the tuner
                // itself drops it on `--resume`. The report notes it.
                torn_bytes = line.len();
                break;
            }
            let raw: RawTrial =
                serde_json::from_str(body).map_err(|e| parse_error(&path, i + 1, e.to_string()))?;
            if raw.trial != trials.len() {
                return Err(parse_error(
                    &path,
                    i + 1,
                    format!(
                        "trial {} out of order (expected {}); the journal is damaged",
                        raw.trial,
                        trials.len()
                    ),
                ));
            }
            let objectives = if raw.status.ran() {
                let v = if raw.objectives.is_empty() {
                    match raw.objective {
                        Some(OneOrMany::One(x)) => vec![x],
                        Some(OneOrMany::Many(v)) => v,
                        None => Vec::new(),
                    }
                } else {
                    raw.objectives
                };
                if v.len() != n_obj {
                    return Err(parse_error(
                        &path,
                        i + 1,
                        format!(
                            "trial {} is `{}` with {} objective value(s), but {CAMPAIGN_FILE} names {n_obj} objective(s)",
                            raw.trial,
                            raw.status,
                            v.len()
                        ),
                    ));
                }
                v
            } else {
                Vec::new()
            };
            trials.push(TrialData {
                trial: raw.trial,
                knobs: raw.knobs,
                objectives,
                constraints: raw.constraints,
                status: raw.status,
                run: raw.run,
                duration_s: raw.duration_s,
                message: raw.message,
            });
        }
        Ok(Self {
            name: name.to_string(),
            settings,
            trials,
            torn_bytes,
            source: None,
        })
    }

    /// Whether the campaign has two or more objectives (a Pareto campaign).
    pub fn is_multi_objective(&self) -> bool {
        self.settings.objectives.len() >= 2
    }

    /// The best feasible (`ok`) value of objective `k` after each trial,
    /// from the first `ok` trial on: `(trial, best so far)`.
    pub fn best_so_far(&self, k: usize) -> Vec<(usize, f64)> {
        let Some(dir) = self.settings.objectives.get(k).map(|o| o.direction) else {
            return Vec::new();
        };
        let mut best: Option<f64> = None;
        let mut out = Vec::new();
        for t in &self.trials {
            if t.status == TrialStatus::Ok
                && let Some(&v) = t.objectives.get(k)
                && v.is_finite()
                && best.is_none_or(|b| dir.better(v, b))
            {
                best = Some(v);
            }
            if let Some(b) = best {
                out.push((t.trial, b));
            }
        }
        out
    }

    /// Indices (into [`CampaignData::trials`]) of the feasible (`ok`) trials
    /// that no other feasible trial dominates over all objectives, sorted by
    /// the first objective (ascending) and then trial number. With one
    /// objective this is the best trial(s).
    pub fn pareto_front(&self) -> Vec<usize> {
        let dirs: Vec<Direction> = self
            .settings
            .objectives
            .iter()
            .map(|o| o.direction)
            .collect();
        let ok: Vec<usize> = self
            .trials
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                t.status == TrialStatus::Ok
                    && t.objectives.len() == dirs.len()
                    && t.objectives.iter().all(|v| v.is_finite())
            })
            .map(|(i, _)| i)
            .collect();
        let dominates = |a: &[f64], b: &[f64]| {
            let mut strictly = false;
            for ((x, y), d) in a.iter().zip(b).zip(&dirs) {
                if d.better(*y, *x) {
                    return false;
                }
                strictly |= d.better(*x, *y);
            }
            strictly
        };
        let mut front: Vec<usize> = ok
            .iter()
            .copied()
            .filter(|&i| {
                !ok.iter()
                    .any(|&j| dominates(&self.trials[j].objectives, &self.trials[i].objectives))
            })
            .collect();
        front.sort_by(|&a, &b| {
            self.trials[a].objectives[0]
                .total_cmp(&self.trials[b].objectives[0])
                .then(a.cmp(&b))
        });
        front
    }

    /// The trials worth a table: with one objective the `n` best feasible
    /// trials, best first; with several the Pareto front (at most `n`).
    pub fn best_trials(&self, n: usize) -> Vec<&TrialData> {
        if self.is_multi_objective() {
            return self
                .pareto_front()
                .into_iter()
                .take(n)
                .map(|i| &self.trials[i])
                .collect();
        }
        let dir = self.settings.objectives[0].direction;
        let mut ok: Vec<&TrialData> = self
            .trials
            .iter()
            .filter(|t| {
                t.status == TrialStatus::Ok && t.objectives.first().is_some_and(|v| v.is_finite())
            })
            .collect();
        ok.sort_by(|a, b| {
            let (x, y) = (a.objectives[0], b.objectives[0]);
            match dir {
                Direction::Maximize => y.total_cmp(&x),
                Direction::Minimize => x.total_cmp(&y),
            }
            .then(a.trial.cmp(&b.trial))
        });
        ok.truncate(n);
        ok
    }

    /// How many trials ended with each status, every status listed.
    pub fn status_counts(&self) -> Vec<(TrialStatus, usize)> {
        TrialStatus::ALL
            .iter()
            .map(|&s| (s, self.trials.iter().filter(|t| t.status == s).count()))
            .collect()
    }
}

/// Whether `path` is a campaign folder (it holds `trials.jsonl`).
pub fn is_campaign_folder(path: &Path) -> bool {
    path.join(TRIALS_FILE).is_file()
}

/// Reads a campaign folder written by `fuselab tune --out DIR`.
pub fn load_campaign(path: &Path) -> Result<CampaignData> {
    let read = |name: &str| {
        let p = path.join(name);
        std::fs::read_to_string(&p).map_err(|e| Error::io(p, e))
    };
    let journal = read(TRIALS_FILE)?;
    let meta = read(CAMPAIGN_FILE)?;
    let name = path
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_else(|| path.display().to_string());
    let mut c = CampaignData::parse(&name, &meta, &journal, path)?;
    c.source = Some(path.to_path_buf());
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    const META2: &str = r#"{"schema":1,"problem":{"space":{"params":[{"name":"a","domain":{"kind":"int","lo":1,"hi":9,"log":false}}],"constraints":[]},
        "objectives":[{"name":"thr","direction":"maximize"},{"name":"lat","direction":"minimize"}],"constraints":[]},"tuner":"bo","seed":1,"objective":"engine"}"#;

    fn line(i: usize, obj: &str, status: &str) -> String {
        format!(
            "{{\"trial\":{i},\"knobs\":{{\"a\":{i}}},\"objective\":null,{obj}\"constraints\":{{}},\"status\":\"{status}\",\"run\":null,\"duration_s\":0.1}}\n"
        )
    }

    #[test]
    fn pareto_front_respects_directions_and_skips_infeasible() {
        // (thr↑, lat↓): 0 (1,1) and 1 (2,2) trade off; 2 (1,3) is dominated by
        // both; 3 (5,0) would dominate all but is infeasible; 4 failed.
        let j = [
            line(0, "\"objectives\":[1.0,1.0],", "ok"),
            line(1, "\"objectives\":[2.0,2.0],", "ok"),
            line(2, "\"objectives\":[1.0,3.0],", "ok"),
            line(3, "\"objectives\":[5.0,0.0],", "infeasible"),
            line(4, "", "failed"),
        ]
        .concat();
        let c = CampaignData::parse("c", META2, &j, Path::new("c")).unwrap();
        assert_eq!(c.pareto_front(), vec![0, 1]);
        assert_eq!(
            c.best_so_far(1),
            vec![(0, 1.0), (1, 1.0), (2, 1.0), (3, 1.0), (4, 1.0)]
        );
        assert_eq!(c.best_so_far(0).last(), Some(&(4, 2.0)));
        assert_eq!(c.status_counts()[0], (TrialStatus::Ok, 3));
        assert_eq!(c.settings.knobs[0].domain, "int [1, 9]");
    }

    #[test]
    fn a_bad_middle_line_is_an_error_naming_it_and_a_torn_tail_is_dropped() {
        let good = line(0, "\"objectives\":[1.0,1.0],", "ok");
        let e = CampaignData::parse(
            "c",
            META2,
            &format!("{good}garbage\n{good}"),
            Path::new("c"),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("trials.jsonl:2"), "{e}");
        let c = CampaignData::parse(
            "c",
            META2,
            &format!("{good}{{\"trial\":1,\"kn"),
            Path::new("c"),
        )
        .unwrap();
        assert_eq!((c.trials.len(), c.torn_bytes), (1, 14));
        // One objective value where the campaign has two.
        let bad = line(0, "", "ok").replace("\"objective\":null", "\"objective\":1.0");
        let e = CampaignData::parse("c", META2, &bad, Path::new("c"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 objective value(s)"), "{e}");
    }
}
