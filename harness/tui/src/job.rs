//! Work started from the TUI: a detached `fuselab` child process writing a
//! new folder under the runs root, and the small files beside its output
//! that let any later TUI follow it.
//!
//! The child runs as `sh -c '"$@"; echo $? > tui-job.exit' …` in its own
//! process group, with standard input closed and its output appended to
//! `tui-job.log`, so it neither reads from nor writes to the terminal and a
//! Ctrl-C or hang-up sent to the TUI's group does not reach it: closing the
//! TUI leaves it running. The wrapper shell records the exit status even
//! when no TUI is watching.

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The job description, written once the child is started.
pub const JOB_FILE: &str = "tui-job.json";
/// The child's exit status, written by the wrapper shell when it ends.
pub const EXIT_FILE: &str = "tui-job.exit";
/// The child's standard output and error.
pub const LOG_FILE: &str = "tui-job.log";

/// Version of [`JOB_FILE`].
pub const JOB_SCHEMA: u32 = 1;

/// What kind of work a job runs: the `fuselab` subcommand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WorkKind {
    /// `fuselab bench`: one run folder.
    Bench,
    /// `fuselab sweep`: a sweep folder.
    Sweep,
    /// `fuselab tune`: a campaign folder.
    Tune,
}

impl WorkKind {
    /// Every kind, in form order.
    pub const ALL: [WorkKind; 3] = [Self::Bench, Self::Sweep, Self::Tune];

    /// The subcommand.
    pub fn name(self) -> &'static str {
        match self {
            Self::Bench => "bench",
            Self::Sweep => "sweep",
            Self::Tune => "tune",
        }
    }
}

/// `tui-job.json`: how a folder's work was started.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobInfo {
    /// [`JOB_SCHEMA`].
    pub schema: u32,
    /// The subcommand.
    pub kind: WorkKind,
    /// The `fuselab` arguments after the executable.
    pub args: Vec<String>,
    /// Process id of the wrapper shell.
    pub pid: u32,
    /// Unix time it started.
    pub started_unix_s: u64,
    /// Points (sweep) or trials (tune) the work will produce, when known.
    #[serde(default)]
    pub planned: Option<usize>,
}

/// Where a job stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// The process is alive and has not recorded an exit status.
    Running,
    /// It ended with this exit status.
    Exited(i32),
    /// It is gone without an exit status (killed).
    Stopped,
}

/// What to start.
#[derive(Clone, Debug, PartialEq)]
pub struct JobRequest {
    /// The subcommand.
    pub kind: WorkKind,
    /// Arguments after the subcommand, without `--out`.
    pub args: Vec<String>,
    /// Points or trials planned, when known.
    pub planned: Option<usize>,
}

/// A started job.
#[derive(Debug)]
pub struct Started {
    /// The output folder.
    pub dir: PathBuf,
    /// Its description, as written to [`JOB_FILE`].
    pub info: JobInfo,
    /// The wrapper shell; reap it with `try_wait` so it does not linger as a
    /// zombie while the TUI runs.
    pub child: Child,
}

/// Reads a folder's [`JOB_FILE`], `None` when it has none.
pub fn read_job(dir: &Path) -> Result<Option<JobInfo>> {
    let path = dir.join(JOB_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|source| Error::Json { path, source })
}

/// Where the job of `dir` stands: its exit status when recorded, else
/// whether its process is alive (on systems without `/proc` a job without an
/// exit status counts as running).
pub fn job_state(dir: &Path, info: &JobInfo) -> JobState {
    if let Ok(text) = std::fs::read_to_string(dir.join(EXIT_FILE))
        && let Ok(code) = text.trim().parse::<i32>()
    {
        return JobState::Exited(code);
    }
    let proc = Path::new("/proc");
    if !proc.is_dir() || proc.join(info.pid.to_string()).is_dir() {
        JobState::Running
    } else {
        JobState::Stopped
    }
}

/// The last `n` lines of a folder's [`LOG_FILE`] (progress bars redrawn
/// with carriage returns show their latest state).
pub fn log_tail(dir: &Path, n: usize) -> Vec<String> {
    let Ok(mut f) = std::fs::File::open(dir.join(LOG_FILE)) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(16 * 1024)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<String> = text
        .lines()
        .map(|l| l.rsplit('\r').find(|s| !s.trim().is_empty()).unwrap_or(""))
        .map(strip_ansi)
        .filter(|l| !l.trim().is_empty())
        .collect();
    lines[lines.len().saturating_sub(n)..].to_vec()
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else if !c.is_control() || c == '\t' {
            out.push(c);
        }
    }
    out
}

/// The full `fuselab` argument list of a request writing to `dir`.
pub fn command_args(request: &JobRequest, dir: &Path) -> Vec<String> {
    let mut args = vec![request.kind.name().to_string()];
    args.extend(request.args.iter().cloned());
    args.push("--out".into());
    args.push(dir.display().to_string());
    if request.kind != WorkKind::Tune {
        // The folder already holds the job's own files; `--force` lets the
        // child use it and removes only fuselab's files (none yet).
        args.push("--force".into());
    }
    args
}

/// Starts `request` as a detached child of `exe` writing the new folder
/// `dir`, which must not exist yet or be empty.
pub fn spawn(exe: &Path, dir: &Path, request: &JobRequest) -> Result<Started> {
    if std::fs::read_dir(dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(Error::Form {
            field: "name",
            problem: format!("{} already exists; choose another name", dir.display()),
        });
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let log_path = dir.join(LOG_FILE);
    let log = std::fs::File::create(&log_path).map_err(|e| Error::io(&log_path, e))?;
    let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
    let args = command_args(request, dir);
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(r#""$@"; echo $? > "$0""#)
        .arg(dir.join(EXIT_FILE))
        .arg(exe)
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(log))
        .stderr(Stdio::from(log2));
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt as _;
        cmd.process_group(0);
    }
    let shown = format!("{} {}", exe.display(), args.join(" "));
    let child = cmd.spawn().map_err(|source| Error::Spawn {
        command: shown,
        source,
    })?;
    let info = JobInfo {
        schema: JOB_SCHEMA,
        kind: request.kind,
        args,
        pid: child.id(),
        started_unix_s: crate::state::unix_now(),
        planned: request.planned,
    };
    let path = dir.join(JOB_FILE);
    let text = serde_json::to_string_pretty(&info).map_err(|source| Error::Json {
        path: path.clone(),
        source,
    })?;
    let tmp = dir.join(format!(".{JOB_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(|e| Error::io(&tmp, e))?;
    std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(Started {
        dir: dir.to_path_buf(),
        info,
        child,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_tail_keeps_the_latest_progress_and_strips_colours() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(LOG_FILE),
            "first\n[1/4] a\r[2/4] b\n\u{1b}[31mred\u{1b}[0m\n\nlast\n",
        )
        .unwrap();
        assert_eq!(log_tail(dir.path(), 3), ["[2/4] b", "red", "last"]);
        assert!(log_tail(&dir.path().join("none"), 3).is_empty());
    }

    #[test]
    fn command_args_end_with_the_folder() {
        let req = JobRequest {
            kind: WorkKind::Sweep,
            args: vec!["--rates".into(), "1,2".into()],
            planned: Some(2),
        };
        assert_eq!(
            command_args(&req, Path::new("runs/x")),
            ["sweep", "--rates", "1,2", "--out", "runs/x", "--force"]
        );
        let tune = JobRequest {
            kind: WorkKind::Tune,
            ..req
        };
        assert_eq!(command_args(&tune, Path::new("c")).last().unwrap(), "c");
    }

    #[cfg(unix)]
    #[test]
    fn a_spawned_job_records_its_exit_status() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("job");
        // `sh` stands in for fuselab: `sh sweep …` fails with status 127.
        let started = spawn(
            Path::new("sh"),
            &out,
            &JobRequest {
                kind: WorkKind::Bench,
                args: vec![],
                planned: None,
            },
        )
        .unwrap();
        let mut child = started.child;
        child.wait().unwrap();
        let info = read_job(&out).unwrap().unwrap();
        assert_eq!(info.kind, WorkKind::Bench);
        match job_state(&out, &info) {
            JobState::Exited(code) => assert_ne!(code, 0),
            other => panic!("{other:?}"),
        }
        assert!(
            spawn(
                Path::new("sh"),
                &out,
                &JobRequest {
                    kind: WorkKind::Bench,
                    args: vec![],
                    planned: None,
                }
            )
            .is_err(),
            "refuses a used folder"
        );
    }
}
