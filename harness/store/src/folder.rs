//! Run and sweep folders: creation, kinds, `summary.json` and `sweep.json`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use fuselab_core::{
    RepeatSummary, RequestRecord, RunSummary, SCHEMA_VERSION, ServerMetricSample, StepRecord,
    SweepSummary,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::tables;

/// Name of a run folder's summary (written last: its presence marks a complete run).
pub const SUMMARY_FILE: &str = "summary.json";
/// Name of a run folder's per-request table.
pub const REQUESTS_FILE: &str = "requests.parquet";
/// Name of a run folder's per-chunk table.
pub const TOKENS_FILE: &str = "tokens.parquet";
/// Name of a run folder's per-step table.
pub const STEPS_FILE: &str = "steps.parquet";
/// Name of a run folder's scraped server metrics (HTTP engines).
pub const SERVER_METRICS_FILE: &str = "server_metrics.parquet";
/// Name of a sweep folder's summary.
pub const SWEEP_FILE: &str = "sweep.json";
/// Name of a repeat folder's summary (`bench --repeat N`).
pub const REPEAT_FILE: &str = "repeat.json";

/// Files fuselab owns in a folder; `--force` removes these and nothing else.
const OWNED_FILES: [&str; 7] = [
    SUMMARY_FILE,
    SERVER_METRICS_FILE,
    REPEAT_FILE,
    REQUESTS_FILE,
    TOKENS_FILE,
    STEPS_FILE,
    SWEEP_FILE,
];

/// What a folder holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FolderKind {
    /// A run folder (`summary.json` and the Parquet tables).
    Run,
    /// A sweep folder (`sweep.json` and one run folder per point).
    Sweep,
    /// A repeat folder (`repeat.json` and one run folder per repeat).
    Repeat,
}

/// Tells whether `path` is a run, sweep or repeat folder. A missing folder
/// gives [`fuselab_core::Error::Io`] naming it; a folder with none of
/// `summary.json`, `sweep.json` and `repeat.json` gives [`Error::NotAFolderOfRuns`].
pub fn folder_kind(path: &Path) -> Result<FolderKind> {
    let meta = fs::metadata(path).map_err(|e| fuselab_core::Error::io(path, e))?;
    if !meta.is_dir() {
        return Err(not_a_dir(path).into());
    }
    if path.join(SWEEP_FILE).is_file() {
        Ok(FolderKind::Sweep)
    } else if path.join(REPEAT_FILE).is_file() {
        Ok(FolderKind::Repeat)
    } else if path.join(SUMMARY_FILE).is_file() {
        Ok(FolderKind::Run)
    } else {
        Err(Error::NotAFolderOfRuns {
            path: path.to_path_buf(),
        })
    }
}

fn not_a_dir(path: &Path) -> fuselab_core::Error {
    fuselab_core::Error::io(
        path,
        std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder"),
    )
}

/// Creates an output folder (and its parents). An existing empty folder is
/// reused. An existing non-empty folder is refused with [`Error::Exists`]
/// unless `force`, in which case fuselab's own files in it (`summary.json`, the
/// Parquet tables, `sweep.json`) are removed and everything else is left
/// alone, so that `--force` can never delete unrelated data.
pub fn create_folder(path: &Path, force: bool) -> Result<()> {
    match fs::read_dir(path) {
        Ok(mut entries) => {
            if entries.next().is_some() {
                if !force {
                    return Err(Error::Exists {
                        path: path.to_path_buf(),
                    });
                }
                for name in OWNED_FILES {
                    let file = path.join(name);
                    match fs::remove_file(&file) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(fuselab_core::Error::io(file, e).into()),
                    }
                }
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(path).map_err(|e| fuselab_core::Error::io(path, e).into())
        }
        Err(_) if path.exists() => Err(not_a_dir(path).into()),
        Err(e) => Err(fuselab_core::Error::io(path, e).into()),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same folder,
/// flushed to disk, then renamed over `path`. An interrupted write leaves
/// either the old file or none, never half a file.
pub(crate) fn write_atomic(
    path: &Path,
    write: impl FnOnce(&mut fs::File) -> Result<()>,
) -> Result<()> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let result = (|| {
        let mut file = fs::File::create(&tmp).map_err(|e| fuselab_core::Error::io(&tmp, e))?;
        write(&mut file)?;
        file.sync_all()
            .map_err(|e| fuselab_core::Error::io(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| fuselab_core::Error::io(path, e))?;
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    write_atomic(path, |file| {
        let json_err = |source| Error::Json {
            path: path.to_path_buf(),
            source,
        };
        serde_json::to_writer_pretty(&mut *file, value).map_err(json_err)?;
        file.write_all(b"\n")
            .map_err(|e| fuselab_core::Error::io(path, e).into())
    })
}

/// Reads a versioned JSON file, checking `schema_version` before the rest so
/// that a file from another version gives [`fuselab_core::Error::SchemaMismatch`]
/// rather than a confusing field error.
fn read_versioned_json<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = fs::read_to_string(path).map_err(|e| fuselab_core::Error::io(path, e))?;
    let json_err = |source| Error::Json {
        path: path.to_path_buf(),
        source,
    };
    let value: serde_json::Value = serde_json::from_str(&text).map_err(json_err)?;
    let found = value
        .get("schema_version")
        .and_then(serde_json::Value::as_u64);
    match found {
        Some(v) if v == u64::from(SCHEMA_VERSION) => {}
        Some(v) => {
            return Err(fuselab_core::Error::SchemaMismatch {
                path: path.to_path_buf(),
                found: u32::try_from(v).unwrap_or(u32::MAX),
                expected: SCHEMA_VERSION,
            }
            .into());
        }
        None => {
            return Err(Error::Table {
                path: path.to_path_buf(),
                problem: "no numeric `schema_version` field; this is not a file fuselab wrote"
                    .into(),
            });
        }
    }
    serde_json::from_value(value).map_err(json_err)
}

/// Writes a sweep folder's `sweep.json` (pretty JSON, atomically) into `dir`,
/// which must exist (see [`create_folder`]).
pub fn write_sweep(dir: &Path, sweep: &SweepSummary) -> Result<()> {
    write_json(&dir.join(SWEEP_FILE), sweep)
}

/// Reads a sweep folder's `sweep.json`, checking its schema version. `dir`
/// may also be the `sweep.json` file itself.
pub fn read_sweep(dir: &Path) -> Result<SweepSummary> {
    read_versioned_json(&folder_file(dir, SWEEP_FILE))
}

/// Writes a repeat folder's `repeat.json` (pretty JSON, atomically) into
/// `dir`; write it after the runs, so that its presence marks a complete set.
pub fn write_repeat(dir: &Path, repeat: &RepeatSummary) -> Result<()> {
    write_json(&dir.join(REPEAT_FILE), repeat)
}

/// Reads a repeat folder's `repeat.json`, checking its schema version.
pub fn read_repeat(dir: &Path) -> Result<RepeatSummary> {
    read_versioned_json(&folder_file(dir, REPEAT_FILE))
}

/// The run folders of a repeat folder, in run order, each checked to hold a
/// `summary.json`.
pub fn repeat_run_folders(dir: &Path) -> Result<Vec<PathBuf>> {
    let repeat = read_repeat(dir)?;
    let mut out = Vec::with_capacity(repeat.runs.len());
    for rel in &repeat.runs {
        let run = dir.join(rel);
        if !run.join(SUMMARY_FILE).is_file() {
            return Err(Error::NotAFolderOfRuns { path: run });
        }
        out.push(run);
    }
    Ok(out)
}

/// Reads only a run folder's `summary.json`, checking its schema version
/// (cheap: no Parquet is opened). `dir` may also be the `summary.json` file
/// itself.
pub fn read_summary(dir: &Path) -> Result<RunSummary> {
    read_versioned_json(&folder_file(dir, SUMMARY_FILE))
}

/// `dir/name`, or `dir` itself when it is a file.
fn folder_file(dir: &Path, name: &str) -> PathBuf {
    if dir.is_file() {
        dir.to_path_buf()
    } else {
        dir.join(name)
    }
}

/// Every run folder at or under `root` (following no symlinks, at most 4
/// levels deep), sorted by path. Sweep folders are searched too, so this finds
/// the run folder of every sweep point.
pub fn find_run_folders(root: &Path) -> Result<Vec<PathBuf>> {
    fn walk(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) -> Result<()> {
        if dir.join(SUMMARY_FILE).is_file() {
            out.push(dir.to_path_buf());
        }
        if depth == 0 {
            return Ok(());
        }
        let entries = fs::read_dir(dir).map_err(|e| fuselab_core::Error::io(dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| fuselab_core::Error::io(dir, e))?;
            let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
            if is_dir {
                walk(&entry.path(), depth - 1, out)?;
            }
        }
        Ok(())
    }
    if !root.is_dir() {
        let e = fs::metadata(root).err().unwrap_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a folder")
        });
        return Err(fuselab_core::Error::io(root, e).into());
    }
    let mut out = Vec::new();
    walk(root, 4, &mut out)?;
    out.sort();
    Ok(out)
}

/// Everything stored in a run folder.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredRun {
    /// `summary.json`.
    pub summary: RunSummary,
    /// `requests.parquet` joined with `tokens.parquet`, in stored order.
    pub requests: Vec<RequestRecord>,
    /// `steps.parquet` (empty for engines without step records).
    pub steps: Vec<StepRecord>,
}

/// A run folder on disk: `summary.json`, `requests.parquet`, `tokens.parquet`
/// and `steps.parquet`.
///
/// # Example
/// ```no_run
/// # fn demo(summary: fuselab_core::RunSummary, records: Vec<fuselab_core::RequestRecord>) -> fuselab_store::Result<()> {
/// use fuselab_store::RunFolder;
/// let run = RunFolder::create("runs/demo", false)?; // refuses a non-empty folder
/// run.write_all(&summary, &records, &[])?;           // tables first, summary last
/// let back = RunFolder::open("runs/demo")?.read()?;
/// assert_eq!(back.requests, records);
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RunFolder {
    path: PathBuf,
}

impl RunFolder {
    /// Creates the folder for a new run (see [`create_folder`] for `force`).
    pub fn create(path: impl Into<PathBuf>, force: bool) -> Result<Self> {
        let path = path.into();
        create_folder(&path, force)?;
        Ok(Self { path })
    }

    /// Opens an existing run folder; fails naming the path if it is missing
    /// or has no `summary.json`.
    pub fn open(path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        match folder_kind(&path)? {
            FolderKind::Run => Ok(Self { path }),
            FolderKind::Sweep => Err(Error::Table {
                problem: format!(
                    "this is a sweep folder ({SWEEP_FILE}), not a run folder; open one of its point folders"
                ),
                path,
            }),
            FolderKind::Repeat => Err(Error::Table {
                problem: format!(
                    "this is a repeat folder ({REPEAT_FILE}), not a run folder; open one of its rep-N folders"
                ),
                path,
            }),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `summary.json` (pretty JSON, atomically).
    pub fn write_summary(&self, summary: &RunSummary) -> Result<()> {
        write_json(&self.path.join(SUMMARY_FILE), summary)
    }

    /// Writes `requests.parquet` and `tokens.parquet`. Request ids must be unique.
    pub fn write_requests(&self, requests: &[RequestRecord]) -> Result<()> {
        tables::write_requests(
            &self.path.join(REQUESTS_FILE),
            &self.path.join(TOKENS_FILE),
            requests,
        )
    }

    /// Writes `steps.parquet` (0 rows when `steps` is empty).
    pub fn write_steps(&self, steps: &[StepRecord]) -> Result<()> {
        tables::write_steps(&self.path.join(STEPS_FILE), steps)
    }

    /// Writes `server_metrics.parquet`.
    pub fn write_server_metrics(&self, samples: &[ServerMetricSample]) -> Result<()> {
        tables::write_server_metrics(&self.path.join(SERVER_METRICS_FILE), samples)
    }

    /// Reads `server_metrics.parquet`; empty when the run has none.
    pub fn read_server_metrics(&self) -> Result<Vec<ServerMetricSample>> {
        let path = self.path.join(SERVER_METRICS_FILE);
        if !path.exists() {
            return Ok(Vec::new());
        }
        tables::read_server_metrics(&path)
    }

    /// Writes the tables, then the summary, so a run interrupted while writing
    /// never looks complete.
    pub fn write_all(
        &self,
        summary: &RunSummary,
        requests: &[RequestRecord],
        steps: &[StepRecord],
    ) -> Result<()> {
        self.write_requests(requests)?;
        self.write_steps(steps)?;
        self.write_summary(summary)
    }

    /// Reads `summary.json`, checking its schema version.
    pub fn read_summary(&self) -> Result<RunSummary> {
        read_summary(&self.path)
    }

    /// Reads `requests.parquet` joined with `tokens.parquet`.
    pub fn read_requests(&self) -> Result<Vec<RequestRecord>> {
        tables::read_requests(&self.path.join(REQUESTS_FILE), &self.path.join(TOKENS_FILE))
    }

    /// Reads `steps.parquet`.
    pub fn read_steps(&self) -> Result<Vec<StepRecord>> {
        tables::read_steps(&self.path.join(STEPS_FILE))
    }

    /// Reads everything (summary first, so a schema mismatch is reported
    /// before any table is parsed).
    pub fn read(&self) -> Result<StoredRun> {
        let summary = self.read_summary()?;
        Ok(StoredRun {
            summary,
            requests: self.read_requests()?,
            steps: self.read_steps()?,
        })
    }
}

/// Creates a run folder at `path` (see [`create_folder`]) and writes a whole
/// run into it.
pub fn write_run(
    path: impl Into<PathBuf>,
    force: bool,
    summary: &RunSummary,
    requests: &[RequestRecord],
    steps: &[StepRecord],
) -> Result<RunFolder> {
    let folder = RunFolder::create(path, force)?;
    folder.write_all(summary, requests, steps)?;
    Ok(folder)
}

/// Reads a whole run folder.
pub fn read_run(path: impl Into<PathBuf>) -> Result<StoredRun> {
    RunFolder::open(path)?.read()
}
