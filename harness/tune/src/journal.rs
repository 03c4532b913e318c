//! The campaign folder: `campaign.json` (what is being tuned, written once)
//! and `trials.jsonl`, an append-only journal with one trial a line, each
//! line flushed and fsynced before the trial is told to the tuner — so a
//! campaign killed at any moment loses no completed trial and `--resume`
//! continues from the journal.
//!
//! A line looks like
//! `{"trial":3,"knobs":{"x1":0.5,"x2":-1.0},"objective":1.25,"constraints":{},"status":"ok","run":"trials/0003","duration_s":0.21}`.
//! A kill can leave a torn last line (no trailing newline, truncated JSON);
//! reading tolerates exactly that and truncates it away. Any other bad line
//! is an error naming the line.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::Value;
use crate::tuner::{Outcome, Problem, Status, Trial};

/// Version of `campaign.json` and the journal line format.
pub const JOURNAL_SCHEMA: u32 = 1;

/// `campaign.json`: what a campaign tunes, so `--resume` can refuse a
/// mismatched space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CampaignMeta {
    /// [`JOURNAL_SCHEMA`].
    pub schema: u32,
    /// The problem (space, objectives, outcome constraints).
    pub problem: Problem,
    /// Tuner name.
    pub tuner: String,
    /// Seed.
    pub seed: u64,
    /// What is evaluated (the command template, or the engine objective).
    pub objective: String,
}

/// One journal line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrialRecord {
    /// 0-based trial number (lines are in this order).
    pub trial: usize,
    /// Knob values.
    pub knobs: BTreeMap<String, Value>,
    /// The (first) objective value; `null` when the trial did not run.
    pub objective: Option<f64>,
    /// All objective values, only with several objectives.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub objectives: Vec<f64>,
    /// Outcome-constraint values by name.
    #[serde(default)]
    pub constraints: BTreeMap<String, f64>,
    /// Status.
    pub status: Status,
    /// Run folder, relative to the campaign folder when inside it.
    pub run: Option<String>,
    /// Wall-clock duration, seconds.
    pub duration_s: f64,
    /// Failure reason or notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// Submission number of the trial (its run folder's number); trials
    /// finish out of submission order when several are in flight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slot: Option<usize>,
    /// The executor's job id of the attempt that produced this record
    /// (`local:PID`, `slurm:JOBID`, `ray:SUBMISSION_ID`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

impl TrialRecord {
    /// The journal line of a trial.
    pub fn from_trial(problem: &Problem, t: &Trial) -> Self {
        let o = &t.outcome;
        Self {
            trial: t.index,
            knobs: problem.space.to_map(&t.config),
            objective: o.objectives.first().copied().filter(|v| v.is_finite()),
            objectives: if o.objectives.len() > 1 {
                o.objectives.clone()
            } else {
                Vec::new()
            },
            constraints: problem
                .constraints
                .iter()
                .zip(&o.constraints)
                .map(|(c, v)| (c.name.clone(), *v))
                .collect(),
            status: o.status,
            run: o.run_dir.clone(),
            duration_s: o.duration_s,
            message: o.message.clone(),
            slot: None,
            job: None,
        }
    }

    /// The trial back, validated against the problem.
    pub fn to_trial(&self, problem: &Problem) -> Result<Trial> {
        let config = problem.space.from_map(&self.knobs)?;
        let objectives = if self.objectives.is_empty() {
            self.objective.into_iter().collect()
        } else {
            self.objectives.clone()
        };
        let mut constraints = Vec::new();
        if self.status.ran() {
            if objectives.len() != problem.objectives.len() {
                return Err(Error::invalid(
                    "objective",
                    format!(
                        "trial {} has {} objective values, the campaign has {}",
                        self.trial,
                        objectives.len(),
                        problem.objectives.len()
                    ),
                    "use a new --out folder",
                ));
            }
            for c in &problem.constraints {
                let v = self.constraints.get(&c.name).ok_or_else(|| {
                    Error::invalid(
                        "constraints",
                        format!("trial {} lacks constraint `{}`", self.trial, c.name),
                        "use a new --out folder",
                    )
                })?;
                constraints.push(*v);
            }
        }
        Ok(Trial {
            index: self.trial,
            config,
            outcome: Outcome {
                status: self.status,
                objectives: if self.status.ran() {
                    objectives
                } else {
                    Vec::new()
                },
                constraints,
                run_dir: self.run.clone(),
                duration_s: self.duration_s,
                message: self.message.clone(),
            },
        })
    }
}

/// An open journal, appending.
#[derive(Debug)]
pub struct Journal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: usize,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl Journal {
    /// The journal file of a campaign folder.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("trials.jsonl")
    }

    /// Starts a new campaign in `dir` (created if needed). Refuses a folder
    /// that already holds a journal with trials (use [`Journal::resume`]).
    pub fn create(dir: &Path, meta: &CampaignMeta) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = Self::path_in(dir);
        if std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
            return Err(Error::invalid(
                "--out",
                format!("{} already holds a campaign", dir.display()),
                "pass --resume to continue it, or choose a new folder",
            ));
        }
        let meta_path = dir.join("campaign.json");
        let tmp = dir.join("campaign.json.tmp");
        let text = serde_json::to_string_pretty(meta)
            .map_err(|e| Error::invalid("campaign", e.to_string(), "report this bug"))?;
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            f.write_all(text.as_bytes()).map_err(io(&tmp))?;
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &meta_path).map_err(io(&meta_path))?;
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        sync_dir(dir);
        Ok(Self {
            dir: dir.to_path_buf(),
            path,
            file,
            len: 0,
        })
    }

    /// Reads `campaign.json` of an existing campaign.
    pub fn read_meta(dir: &Path) -> Result<CampaignMeta> {
        let p = dir.join("campaign.json");
        let text = std::fs::read_to_string(&p).map_err(io(&p))?;
        let meta: CampaignMeta = serde_json::from_str(&text).map_err(|e| Error::Journal {
            path: p.clone(),
            line: e.line(),
            message: e.to_string(),
        })?;
        if meta.schema != JOURNAL_SCHEMA {
            return Err(Error::invalid(
                "campaign.json",
                format!(
                    "schema {} (this fuselab reads {JOURNAL_SCHEMA})",
                    meta.schema
                ),
                "start a new campaign",
            ));
        }
        Ok(meta)
    }

    /// Reopens a campaign's journal for appending and returns its records,
    /// dropping (and truncating away) a torn last line left by a kill.
    pub fn resume(dir: &Path) -> Result<(Self, Vec<TrialRecord>)> {
        let path = Self::path_in(dir);
        let (file, records) = open_jsonl(&path, |r: &TrialRecord, n| {
            if r.trial == n {
                Ok(())
            } else {
                Err(format!("trial {} out of order (expected {n})", r.trial))
            }
        })?;
        let len = records.len();
        Ok((
            Self {
                dir: dir.to_path_buf(),
                path,
                file,
                len,
            },
            records,
        ))
    }

    /// Appends one record, then flushes and fsyncs.
    pub fn append(&mut self, rec: &TrialRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec)
            .map_err(|e| Error::invalid("trial", e.to_string(), "report this bug"))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        self.len += 1;
        Ok(())
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the journal has no records.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The campaign folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// One line of `jobs.jsonl`: a trial submitted (or re-submitted after its
/// job was lost). With the trial records it tells a resumed campaign which
/// jobs are still in flight and how to re-attach to them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRecord {
    /// Submission number (the run folder's number).
    pub slot: usize,
    /// 0 for the first submission, 1 for the first re-submission, …
    pub attempt: u32,
    /// Executor kind: `in-process`, `local`, `slurm`, `ray`.
    pub executor: String,
    /// The executor's job id; `None` in process (cannot be re-attached).
    pub job: Option<String>,
    /// Run folder, relative to the campaign folder.
    pub run: String,
    /// Knob values.
    pub knobs: BTreeMap<String, Value>,
    /// Why the previous attempt was re-submitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
}

/// The append-only submission log of a campaign, `jobs.jsonl`.
#[derive(Debug)]
pub struct JobLog {
    path: PathBuf,
    file: File,
}

impl JobLog {
    /// The log of a campaign folder.
    pub fn path_in(dir: &Path) -> PathBuf {
        dir.join("jobs.jsonl")
    }

    /// Opens (creating) the log for appending and returns its records; a
    /// torn last line (a kill mid-write) is dropped and truncated away.
    pub fn open(dir: &Path) -> Result<(Self, Vec<JobRecord>)> {
        let path = Self::path_in(dir);
        let (file, records) = open_jsonl(&path, |_: &JobRecord, _| Ok(()))?;
        Ok((Self { path, file }, records))
    }

    /// Appends one record, then flushes and fsyncs.
    pub fn append(&mut self, rec: &JobRecord) -> Result<()> {
        let mut line = serde_json::to_string(rec)
            .map_err(|e| Error::invalid("job", e.to_string(), "report this bug"))?;
        line.push('\n');
        self.file
            .write_all(line.as_bytes())
            .map_err(io(&self.path))?;
        self.file.flush().map_err(io(&self.path))?;
        self.file.sync_data().map_err(io(&self.path))?;
        Ok(())
    }
}

/// Opens (creating) a JSON-lines log for appending and returns its records,
/// each checked by `check` (given the number of records before it). A torn
/// last line — a kill mid-write — is dropped and truncated away; any other
/// unreadable or refused line is an error naming it.
fn open_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    mut check: impl FnMut(&T, usize) -> std::result::Result<(), String>,
) -> Result<(File, Vec<T>)> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(path)
        .map_err(io(path))?;
    let mut text = String::new();
    file.read_to_string(&mut text).map_err(io(path))?;
    let mut records = Vec::new();
    let mut good_len = 0usize;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    for (i, line) in lines.iter().enumerate() {
        let complete = line.ends_with('\n');
        let body = line.trim();
        if body.is_empty() {
            good_len += line.len();
            continue;
        }
        let bad = |message: String| Error::Journal {
            path: path.to_path_buf(),
            line: i + 1,
            message,
        };
        match serde_json::from_str::<T>(body) {
            Ok(r) if complete => {
                check(&r, records.len()).map_err(bad)?;
                records.push(r);
                good_len += line.len();
            }
            // The last line without its newline: the kill came mid-write.
            _ if !complete && i + 1 == lines.len() => {
                tracing::warn!(
                    "{}: dropping a torn last line ({} bytes)",
                    path.display(),
                    line.len()
                );
            }
            Ok(_) => unreachable!("complete lines are handled above"),
            Err(e) => return Err(bad(e.to_string())),
        }
    }
    if good_len < text.len() {
        file.set_len(good_len as u64).map_err(io(path))?;
        file.seek(SeekFrom::End(0)).map_err(io(path))?;
        file.sync_all().map_err(io(path))?;
    }
    Ok((file, records))
}

fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::{Config, SearchSpace};
    use crate::tuner::Direction;

    fn meta() -> CampaignMeta {
        CampaignMeta {
            schema: JOURNAL_SCHEMA,
            problem: Problem::single(
                SearchSpace::parse("a=1..9,x=0.0..1").unwrap(),
                "y",
                Direction::Minimize,
            ),
            tuner: "bo".into(),
            seed: 1,
            objective: "test".into(),
        }
    }

    fn trial(i: usize, ok: bool) -> Trial {
        Trial {
            index: i,
            config: Config(vec![Value::Int(i as i64 + 1), Value::Float(0.25)]),
            outcome: if ok {
                Outcome::ok(vec![i as f64 * 0.5], vec![])
            } else {
                Outcome::failed(Status::Timeout, "passed 1s")
            },
        }
    }

    #[test]
    fn round_trip_and_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta();
        let mut j = Journal::create(dir.path(), &m).unwrap();
        for i in 0..3 {
            j.append(&TrialRecord::from_trial(&m.problem, &trial(i, i != 1)))
                .unwrap();
        }
        drop(j);
        assert!(
            Journal::create(dir.path(), &m).is_err(),
            "refuses to overwrite"
        );
        // Simulate a kill mid-write.
        let p = Journal::path_in(dir.path());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"{\"trial\":3,\"knobs\":{\"a\":").unwrap();
        drop(f);
        let (mut j, recs) = Journal::resume(dir.path()).unwrap();
        assert_eq!(recs.len(), 3);
        let back: Vec<Trial> = recs
            .iter()
            .map(|r| r.to_trial(&m.problem).unwrap())
            .collect();
        assert_eq!(back, (0..3).map(|i| trial(i, i != 1)).collect::<Vec<_>>());
        j.append(&TrialRecord::from_trial(&m.problem, &trial(3, true)))
            .unwrap();
        let (_, recs) = Journal::resume(dir.path()).unwrap();
        assert_eq!(recs.len(), 4);
        assert_eq!(Journal::read_meta(dir.path()).unwrap(), m);
    }

    #[test]
    fn a_bad_middle_line_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let m = meta();
        let mut j = Journal::create(dir.path(), &m).unwrap();
        j.append(&TrialRecord::from_trial(&m.problem, &trial(0, true)))
            .unwrap();
        let p = Journal::path_in(dir.path());
        let mut f = OpenOptions::new().append(true).open(&p).unwrap();
        f.write_all(b"garbage\n").unwrap();
        j.append(&TrialRecord::from_trial(&m.problem, &trial(1, true)))
            .unwrap();
        let e = Journal::resume(dir.path()).unwrap_err().to_string();
        assert!(e.contains("trials.jsonl:2"), "{e}");
    }
}
