//! Executors: where a trial's command line runs. The campaign process only
//! suggests, submits, polls and records; the trial itself is a shell script
//! (`job.sh` in its run folder, written by the campaign) that runs the same
//! command in every executor and writes its exit status to `exit-code` in
//! the run folder as its last act. Three executors:
//!
//! * [`LocalExecutor`] (`--executor local[:K]`): each trial a process group
//!   on this machine. Re-attachable: a campaign killed with SIGKILL leaves
//!   its trials running, and a resumed campaign watches them by process id.
//!   With GPUs ([`LocalExecutor::with_gpus`], `--gpus`), each trial gets one
//!   GPU of its own through `CUDA_VISIBLE_DEVICES` (named in `gpu` in its run
//!   folder), taken from those no running trial holds.
//! * [`SlurmExecutor`] (`--executor slurm`): each trial an `sbatch` job with
//!   the user's `--slurm-args` (partition, `--gres`, `--time`, …); states come
//!   from `squeue` (which lists finished jobs for `MinJobAge`) and then
//!   `sacct`, so a cancelled, preempted, timed-out or node-failed job is
//!   reported with Slurm's reason.
//! * [`RayExecutor`] (`--executor ray=ADDRESS`): each trial a Ray job through
//!   the Ray Jobs REST API (`POST /api/jobs/`, `GET /api/jobs/{id}`,
//!   `POST /api/jobs/{id}/stop`) with per-trial resources.
//!
//! Job ids are journaled (`jobs.jsonl`), so `--resume` re-attaches to jobs
//! that are still running.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::str::FromStr;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::tuner::Status;

/// A job to submit: the trial's script and its run folder (both absolute).
#[derive(Debug, Clone)]
pub struct JobSpec {
    /// A short job name, e.g. `fuselab-t0005`.
    pub name: String,
    /// The shell script to run (`sh SCRIPT`).
    pub script: PathBuf,
    /// The trial's run folder (scheduler logs go there too).
    pub run_dir: PathBuf,
    /// The working directory of the job (the campaign's).
    pub cwd: PathBuf,
}

/// A submitted job, as the executor polls it.
#[derive(Debug, Clone, Copy)]
pub struct JobRef<'a> {
    /// The executor's id (process id, Slurm job id, Ray submission id).
    pub id: &'a str,
    /// The trial's run folder.
    pub run_dir: &'a Path,
}

/// What the scheduler says about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum JobState {
    /// Waiting for resources.
    Queued,
    /// Running.
    Running,
    /// Ended on its own (completed or failed); the trial's `exit-code` file
    /// says how. `detail` is the scheduler's word (e.g. `COMPLETED`).
    Ended {
        /// The scheduler's final state.
        detail: String,
    },
    /// Ended by the cluster rather than by the trial: cancelled, preempted,
    /// timed out, node failure. `status` is [`Status::Lost`] or
    /// [`Status::Timeout`].
    Lost {
        /// How the trial is recorded.
        status: Status,
        /// The scheduler's reason.
        reason: String,
    },
}

impl JobState {
    /// Whether the scheduler will not change its mind any more.
    pub fn is_final(&self) -> bool {
        matches!(self, Self::Ended { .. } | Self::Lost { .. })
    }
}

/// Where trials run. Implementations are driven from one thread.
pub trait Executor: Send {
    /// The executor's kind: `local`, `slurm` or `ray` (journaled, so a
    /// resume with another kind is refused).
    fn kind(&self) -> &'static str;
    /// A one-line description (`local:4`, `slurm (--partition debug)`, …).
    fn describe(&self) -> String;
    /// Submits a job; returns its id.
    fn submit(&mut self, job: &JobSpec) -> Result<String>;
    /// The states of submitted jobs (same order as `jobs`).
    fn poll(&mut self, jobs: &[JobRef<'_>]) -> Result<Vec<JobState>>;
    /// Cancels a job (best effort: a job already ended is not an error).
    fn cancel(&mut self, job: JobRef<'_>) -> Result<()>;
}

/// `--executor`: which executor, parsed from `local[:K]`, `slurm` or
/// `ray=ADDRESS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutorSpec {
    /// `local[:K]`: K concurrent local processes.
    Local {
        /// Trials in flight.
        slots: usize,
    },
    /// `slurm`: one `sbatch` job per trial.
    Slurm,
    /// `ray=ADDRESS`: one Ray job per trial; ADDRESS is the dashboard's
    /// `http://HOST:PORT` (default port 8265).
    Ray {
        /// `HOST:PORT` of the Ray dashboard (Jobs API).
        address: String,
    },
}

impl FromStr for ExecutorSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = |problem: String| {
            Error::invalid(
                "--executor",
                problem,
                "use local, local:K (K trials at once), slurm, or ray=http://HOST:8265",
            )
        };
        let s = s.trim();
        if s == "local" {
            return Ok(Self::Local { slots: 1 });
        }
        if let Some(k) = s.strip_prefix("local:") {
            return match k.parse::<usize>() {
                Ok(k) if k >= 1 => Ok(Self::Local { slots: k }),
                _ => Err(bad(format!(
                    "`{k}` in `{s}` is not a positive number of slots"
                ))),
            };
        }
        if s == "slurm" {
            return Ok(Self::Slurm);
        }
        if let Some(a) = s.strip_prefix("ray=") {
            let hostport = a
                .strip_prefix("http://")
                .unwrap_or(a)
                .trim_end_matches('/')
                .to_string();
            if a.starts_with("https://") || hostport.is_empty() || hostport.contains('/') {
                return Err(bad(format!(
                    "`{a}` is not the Ray dashboard's http://HOST[:PORT]"
                )));
            }
            let address = if hostport.contains(':') {
                hostport
            } else {
                format!("{hostport}:8265")
            };
            return Ok(Self::Ray { address });
        }
        if s == "ray" {
            return Err(bad(
                "`ray` needs the dashboard address, e.g. ray=http://127.0.0.1:8265".into(),
            ));
        }
        Err(bad(format!("unknown executor `{s}`")))
    }
}

/// Quotes a string for `sh`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn run_tool(exe: &str, cmd: &mut Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| Error::executor(exe, format!("cannot run `{what}`: {e} (is it on PATH?)")))?;
    if !out.status.success() {
        return Err(Error::executor(
            exe,
            format!(
                "`{what}` failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

// ---------------------------------------------------------------- local

/// Trials as local process groups (`--executor local[:K]`).
#[derive(Debug, Default)]
pub struct LocalExecutor {
    slots: usize,
    children: HashMap<u32, Child>,
    /// GPU ids to place trials on (empty: no placement).
    gpus: Vec<String>,
    /// The GPU each running trial holds, by process id.
    held: HashMap<u32, String>,
}

/// The file in a trial's run folder naming the GPU it was given.
pub const GPU_FILE: &str = "gpu";

impl LocalExecutor {
    /// A local executor for `slots` trials at once (the campaign keeps that
    /// many in flight; the executor itself does not limit).
    pub fn new(slots: usize) -> Self {
        Self {
            slots: slots.max(1),
            ..Self::default()
        }
    }

    /// As [`Self::new`], each trial on one of `gpus` (CUDA device ids or UUIDs)
    /// that no running trial holds, through `CUDA_VISIBLE_DEVICES` (with
    /// `CUDA_DEVICE_ORDER=PCI_BUS_ID`, so ids count as `nvidia-smi` does).
    pub fn with_gpus(slots: usize, gpus: Vec<String>) -> Self {
        Self {
            gpus,
            ..Self::new(slots)
        }
    }

    /// Marks `pid`'s GPU free.
    fn release(&mut self, pid: u32) {
        self.held.remove(&pid);
    }

    /// Frees the GPUs of trials whose process has exited.
    fn reap(&mut self) {
        let pids: Vec<u32> = self.held.keys().copied().collect();
        for pid in pids {
            let gone = match self.children.get_mut(&pid) {
                Some(child) => !matches!(child.try_wait(), Ok(None)),
                None => !matches!(
                    std::fs::read_to_string(format!("/proc/{pid}/stat")),
                    Ok(stat) if !stat.rsplit_once(')').is_some_and(|(_, r)| r.trim_start().starts_with(['Z', 'X']))
                ),
            };
            if gone {
                self.release(pid);
            }
        }
    }

    /// A GPU no running trial holds. A trial counts as done once it writes its
    /// exit code, a moment before its process exits, so this waits briefly for
    /// a finished trial's process to go before giving up.
    fn free_gpu(&mut self) -> Option<String> {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            self.reap();
            if let Some(g) = self
                .gpus
                .iter()
                .find(|g| !self.held.values().any(|h| h == *g))
            {
                return Some(g.clone());
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// State letter of `/proc/PID/stat` and whether its command line mentions
/// `marker`; `None` when there is no such process.
fn proc_state(pid: u32, marker: &Path) -> Option<(char, bool)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(')')?.1.trim_start().chars().next()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mine = String::from_utf8_lossy(&cmdline).contains(&*marker.to_string_lossy());
    Some((state, mine))
}

impl Executor for LocalExecutor {
    fn kind(&self) -> &'static str {
        "local"
    }

    fn describe(&self) -> String {
        if self.gpus.is_empty() {
            format!("local:{}", self.slots)
        } else {
            format!(
                "local:{}, one trial per GPU of {}",
                self.slots,
                self.gpus.join(",")
            )
        }
    }

    fn submit(&mut self, job: &JobSpec) -> Result<String> {
        let mut cmd = Command::new("sh");
        let gpu = if self.gpus.is_empty() {
            None
        } else {
            let free = self.free_gpu().ok_or_else(|| {
                Error::executor(
                    "local",
                    format!(
                        "no free GPU for {}: all of {} are held by running trials",
                        job.name,
                        self.gpus.join(",")
                    ),
                )
            })?;
            std::fs::write(job.run_dir.join(GPU_FILE), format!("{free}\n")).map_err(|e| {
                Error::executor(
                    "local",
                    format!("cannot write {}: {e}", job.run_dir.join(GPU_FILE).display()),
                )
            })?;
            cmd.env("CUDA_VISIBLE_DEVICES", &free)
                .env("CUDA_DEVICE_ORDER", "PCI_BUS_ID");
            Some(free)
        };
        let child = cmd
            .arg(&job.script)
            .current_dir(&job.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .map_err(|e| {
                Error::executor(
                    "local",
                    format!("cannot start `sh {}`: {e}", job.script.display()),
                )
            })?;
        let pid = child.id();
        self.children.insert(pid, child);
        if let Some(g) = gpu {
            self.held.insert(pid, g);
        }
        Ok(pid.to_string())
    }

    fn poll(&mut self, jobs: &[JobRef<'_>]) -> Result<Vec<JobState>> {
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let pid: u32 = j.id.parse().map_err(|_| {
                Error::executor("local", format!("job id `{}` is not a process id", j.id))
            })?;
            let state = if let Some(child) = self.children.get_mut(&pid) {
                match child.try_wait() {
                    Ok(Some(s)) => {
                        self.children.remove(&pid);
                        self.release(pid);
                        JobState::Ended {
                            detail: format!("process {pid} {s}"),
                        }
                    }
                    Ok(None) => JobState::Running,
                    Err(e) => {
                        return Err(Error::executor("local", format!("waiting for {pid}: {e}")));
                    }
                }
            } else {
                // Re-attached after a resume: not our child; watch /proc.
                match proc_state(pid, j.run_dir) {
                    Some(('Z' | 'X', _)) | None | Some((_, false)) => {
                        self.release(pid);
                        JobState::Ended {
                            detail: format!("process {pid} is gone"),
                        }
                    }
                    Some(_) => {
                        // A re-attached trial keeps the GPU its run folder names.
                        if !self.gpus.is_empty()
                            && let Ok(g) = std::fs::read_to_string(j.run_dir.join(GPU_FILE))
                        {
                            self.held.insert(pid, g.trim().to_string());
                        }
                        JobState::Running
                    }
                }
            };
            out.push(state);
        }
        Ok(out)
    }

    fn cancel(&mut self, job: JobRef<'_>) -> Result<()> {
        let pid: u32 = job.id.parse().map_err(|_| {
            Error::executor("local", format!("job id `{}` is not a process id", job.id))
        })?;
        if self.children.contains_key(&pid) || proc_state(pid, job.run_dir).is_some_and(|s| s.1) {
            let _ = Command::new("kill")
                .args(["-KILL", "--", &format!("-{pid}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        self.release(pid);
        Ok(())
    }
}

// ---------------------------------------------------------------- slurm

/// Trials as `sbatch` jobs (`--executor slurm`).
#[derive(Debug, Clone, Default)]
pub struct SlurmExecutor {
    args: Vec<String>,
}

impl SlurmExecutor {
    /// An executor passing `args` (from `--slurm-args`, split on white
    /// space) to every `sbatch`, e.g. `--partition gpu --gres gpu:1 --time 30:00`.
    pub fn new(args: &str) -> Result<Self> {
        let args: Vec<String> = args.split_whitespace().map(str::to_string).collect();
        for a in &args {
            if a.contains(['\'', '"', '\\']) {
                return Err(Error::invalid(
                    "--slurm-args",
                    format!(
                        "`{a}` has quotes or backslashes; the arguments are split on white space"
                    ),
                    "write e.g. --slurm-args '--partition gpu --gres gpu:1 --time 30:00'",
                ));
            }
            for own in [
                "--output",
                "--error",
                "--job-name",
                "--chdir",
                "--parsable",
                "--wrap",
            ] {
                if a == own || a.starts_with(&format!("{own}=")) {
                    return Err(Error::invalid(
                        "--slurm-args",
                        format!("`{own}` is set by fuselab for each trial"),
                        "drop it; trial logs go to the trial's run folder",
                    ));
                }
            }
        }
        Ok(Self { args })
    }

    /// Maps a Slurm job state (and reason) to a [`JobState`].
    pub fn state(state: &str, reason: &str) -> JobState {
        let base = state.split_whitespace().next().unwrap_or("");
        let why = |s: &str| {
            let r = reason.trim();
            if r.is_empty() || r == "None" {
                format!("slurm: {s}")
            } else {
                format!("slurm: {s} ({r})")
            }
        };
        match base {
            "PENDING" | "CONFIGURING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED"
            | "RESIZING" | "SUSPENDED" => JobState::Queued,
            "RUNNING" | "COMPLETING" | "STAGE_OUT" | "SIGNALING" => JobState::Running,
            "COMPLETED" | "FAILED" => JobState::Ended { detail: why(base) },
            "TIMEOUT" | "DEADLINE" => JobState::Lost {
                status: Status::Timeout,
                reason: why(base),
            },
            "OUT_OF_MEMORY" => JobState::Lost {
                status: Status::Failed,
                reason: why("OUT_OF_MEMORY (the trial ran out of memory)"),
            },
            // CANCELLED, PREEMPTED, NODE_FAIL, BOOT_FAIL, REVOKED, SPECIAL_EXIT, …
            other => JobState::Lost {
                status: Status::Lost,
                reason: why(other),
            },
        }
    }
}

impl Executor for SlurmExecutor {
    fn kind(&self) -> &'static str {
        "slurm"
    }

    fn describe(&self) -> String {
        if self.args.is_empty() {
            "slurm".into()
        } else {
            format!("slurm ({})", self.args.join(" "))
        }
    }

    fn submit(&mut self, job: &JobSpec) -> Result<String> {
        let mut cmd = Command::new("sbatch");
        cmd.arg("--parsable")
            .arg(format!("--job-name={}", job.name))
            .arg(format!(
                "--output={}",
                job.run_dir.join("slurm-%j.out").display()
            ))
            .arg(format!("--chdir={}", job.cwd.display()))
            .args(&self.args)
            .arg(&job.script);
        let out = run_tool("slurm", &mut cmd, "sbatch")?;
        let id = out
            .trim()
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit() || c == '_') {
            return Err(Error::executor(
                "slurm",
                format!("sbatch printed `{}`, not a job id", out.trim()),
            ));
        }
        Ok(id)
    }

    fn poll(&mut self, jobs: &[JobRef<'_>]) -> Result<Vec<JobState>> {
        if jobs.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<&str> = jobs.iter().map(|j| j.id).collect();
        let list = ids.join(",");
        let mut known: HashMap<String, JobState> = HashMap::new();
        // `-t all` lists jobs that ended within MinJobAge too.
        let mut q = Command::new("squeue");
        q.args(["-h", "-t", "all", "-o", "%i|%T|%r", "-j", &list]);
        // squeue exits 1 when *every* id is unknown: not an error here.
        if let Ok(o) = q.stdin(Stdio::null()).stderr(Stdio::null()).output() {
            for line in String::from_utf8_lossy(&o.stdout).lines() {
                let mut f = line.splitn(3, '|');
                if let (Some(id), Some(st)) = (f.next(), f.next()) {
                    known.insert(id.trim().into(), Self::state(st, f.next().unwrap_or("")));
                }
            }
        }
        let missing: Vec<&str> = ids
            .iter()
            .copied()
            .filter(|i| !known.contains_key(*i))
            .collect();
        if !missing.is_empty() {
            // Older jobs: the accounting database, where there is one.
            let mut a = Command::new("sacct");
            a.args([
                "-n",
                "-P",
                "-X",
                "-o",
                "JobID,State,Reason",
                "-j",
                &missing.join(","),
            ]);
            if let Ok(o) = a.stdin(Stdio::null()).stderr(Stdio::null()).output()
                && o.status.success()
            {
                for line in String::from_utf8_lossy(&o.stdout).lines() {
                    let mut f = line.splitn(3, '|');
                    if let (Some(id), Some(st)) = (f.next(), f.next()) {
                        known
                            .entry(id.trim().into())
                            .or_insert_with(|| Self::state(st, f.next().unwrap_or("")));
                    }
                }
            }
        }
        Ok(ids
            .iter()
            .map(|i| {
                known.remove(*i).unwrap_or_else(|| JobState::Ended {
                    detail: format!("slurm: job {i} is unknown to squeue and sacct"),
                })
            })
            .collect())
    }

    fn cancel(&mut self, job: JobRef<'_>) -> Result<()> {
        run_tool("slurm", Command::new("scancel").arg(job.id), "scancel").map(|_| ())
    }
}

// ---------------------------------------------------------------- ray

/// Resources reserved for each trial's Ray job (`--ray-resources`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RayResources {
    /// `num_cpus`.
    pub num_cpus: Option<f64>,
    /// `num_gpus`.
    pub num_gpus: Option<f64>,
    /// `memory`, bytes.
    pub memory: Option<f64>,
    /// Custom resources.
    pub custom: BTreeMap<String, f64>,
}

impl FromStr for RayResources {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut r = Self::default();
        for item in s.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let bad = || {
                Error::invalid(
                    "--ray-resources",
                    format!("`{item}` is not NAME=NUMBER"),
                    "e.g. --ray-resources num_cpus=1,num_gpus=1",
                )
            };
            let (k, v) = item.split_once('=').ok_or_else(bad)?;
            let v: f64 = v.trim().parse().map_err(|_| bad())?;
            if !(v.is_finite() && v >= 0.0) {
                return Err(bad());
            }
            match k.trim() {
                "num_cpus" => r.num_cpus = Some(v),
                "num_gpus" => r.num_gpus = Some(v),
                "memory" => r.memory = Some(v),
                other => {
                    r.custom.insert(other.to_string(), v);
                }
            }
        }
        Ok(r)
    }
}

/// Trials as Ray jobs through the Ray Jobs REST API (`--executor ray=ADDRESS`).
#[derive(Debug, Clone)]
pub struct RayExecutor {
    address: String,
    resources: RayResources,
    /// Makes submission ids unique across campaigns.
    tag: String,
}

/// One HTTP/1.0 exchange (the Ray dashboard answers HTTP/1.0 with a
/// Content-Length and closes): returns the status code and body.
pub fn http_request(
    hostport: &str,
    method: &str,
    path: &str,
    body: Option<&str>,
) -> std::result::Result<(u16, String), String> {
    use std::net::ToSocketAddrs;
    let addrs = hostport
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {hostport}: {e}"))?;
    let mut last = format!("no address for {hostport}");
    for addr in addrs {
        let mut s = match std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)) {
            Ok(s) => s,
            Err(e) => {
                last = format!("cannot connect to {addr}: {e}");
                continue;
            }
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(60)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(30)));
        let body = body.unwrap_or("");
        let req = format!(
            "{method} {path} HTTP/1.0\r\nHost: {hostport}\r\nContent-Type: application/json\r\n\
             Accept: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes())
            .map_err(|e| format!("writing to {addr}: {e}"))?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf)
            .map_err(|e| format!("reading from {addr}: {e}"))?;
        let text = String::from_utf8_lossy(&buf).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let code = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse::<u16>().ok())
            .ok_or_else(|| {
                format!(
                    "{addr} answered `{}`, not HTTP",
                    head.lines().next().unwrap_or("")
                )
            })?;
        return Ok((code, body.to_string()));
    }
    Err(last)
}

impl RayExecutor {
    /// An executor for the Ray dashboard at `address` (`HOST:PORT`), each
    /// trial reserving `resources`; `tag` makes submission ids unique.
    pub fn new(address: &str, resources: RayResources, tag: &str) -> Self {
        Self {
            address: address.to_string(),
            resources,
            tag: tag.to_string(),
        }
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&str>,
    ) -> Result<(u16, serde_json::Value)> {
        let (code, text) = http_request(&self.address, method, path, body)
            .map_err(|e| Error::executor("ray", format!("{e} (is `ray start --head` running?)")))?;
        let v = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
        Ok((code, v))
    }

    /// Maps a Ray job status (and message) to a [`JobState`].
    pub fn state(status: &str, message: &str) -> JobState {
        let why = |s: &str| {
            let m = message.trim();
            if m.is_empty() {
                format!("ray: {s}")
            } else {
                format!("ray: {s}: {}", m.chars().take(300).collect::<String>())
            }
        };
        match status {
            "PENDING" => JobState::Queued,
            "RUNNING" => JobState::Running,
            "SUCCEEDED" | "FAILED" => JobState::Ended {
                detail: why(status),
            },
            // STOPPED (ray job stop) and anything unknown.
            other => JobState::Lost {
                status: Status::Lost,
                reason: why(other),
            },
        }
    }
}

impl Executor for RayExecutor {
    fn kind(&self) -> &'static str {
        "ray"
    }

    fn describe(&self) -> String {
        format!("ray at http://{}", self.address)
    }

    fn submit(&mut self, job: &JobSpec) -> Result<String> {
        let id = format!("{}-{}", job.name, self.tag);
        let mut body = serde_json::json!({
            "entrypoint": format!("sh {}", sh_quote(&job.script.to_string_lossy())),
            "submission_id": id,
            "metadata": {"fuselab_run_dir": job.run_dir.to_string_lossy()},
        });
        let r = &self.resources;
        if let Some(v) = r.num_cpus {
            body["entrypoint_num_cpus"] = v.into();
        }
        if let Some(v) = r.num_gpus {
            body["entrypoint_num_gpus"] = v.into();
        }
        if let Some(v) = r.memory {
            body["entrypoint_memory"] = (v as u64).into();
        }
        if !r.custom.is_empty() {
            body["entrypoint_resources"] = serde_json::to_value(&r.custom).unwrap_or_default();
        }
        let (code, v) = self.call("POST", "/api/jobs/", Some(&body.to_string()))?;
        if !(200..300).contains(&code) {
            return Err(Error::executor(
                "ray",
                format!("POST /api/jobs/ answered {code}: {v}"),
            ));
        }
        Ok(v["submission_id"].as_str().unwrap_or(&id).to_string())
    }

    fn poll(&mut self, jobs: &[JobRef<'_>]) -> Result<Vec<JobState>> {
        let mut out = Vec::with_capacity(jobs.len());
        for j in jobs {
            let (code, v) = self.call("GET", &format!("/api/jobs/{}", j.id), None)?;
            out.push(match code {
                200 => Self::state(
                    v["status"].as_str().unwrap_or("UNKNOWN"),
                    v["message"].as_str().unwrap_or(""),
                ),
                404 => JobState::Ended {
                    detail: format!("ray: job {} is unknown to the cluster", j.id),
                },
                c => {
                    return Err(Error::executor(
                        "ray",
                        format!("GET /api/jobs/{} answered {c}: {v}", j.id),
                    ));
                }
            });
        }
        Ok(out)
    }

    fn cancel(&mut self, job: JobRef<'_>) -> Result<()> {
        let (code, v) = self.call("POST", &format!("/api/jobs/{}/stop", job.id), None)?;
        if !(200..300).contains(&code) && code != 404 {
            return Err(Error::executor(
                "ray",
                format!("stopping {} answered {code}: {v}", job.id),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn executor_specs_parse_and_bad_ones_name_the_flag() {
        assert_eq!(
            "local".parse::<ExecutorSpec>().unwrap(),
            ExecutorSpec::Local { slots: 1 }
        );
        assert_eq!(
            "local:4".parse::<ExecutorSpec>().unwrap(),
            ExecutorSpec::Local { slots: 4 }
        );
        assert_eq!(
            "slurm".parse::<ExecutorSpec>().unwrap(),
            ExecutorSpec::Slurm
        );
        assert_eq!(
            "ray=http://10.0.0.1:8265/".parse::<ExecutorSpec>().unwrap(),
            ExecutorSpec::Ray {
                address: "10.0.0.1:8265".into()
            }
        );
        assert_eq!(
            "ray=head".parse::<ExecutorSpec>().unwrap(),
            ExecutorSpec::Ray {
                address: "head:8265".into()
            }
        );
        for bad in ["local:0", "local:x", "ray", "ray=https://h:1", "kube"] {
            let e = bad.parse::<ExecutorSpec>().unwrap_err().to_string();
            assert!(e.contains("--executor"), "{bad}: {e}");
        }
    }

    #[test]
    fn scheduler_states_map_to_trial_fates() {
        assert_eq!(
            SlurmExecutor::state("PENDING", "Resources"),
            JobState::Queued
        );
        assert_eq!(SlurmExecutor::state("RUNNING", "None"), JobState::Running);
        assert!(matches!(
            SlurmExecutor::state("COMPLETED", "None"),
            JobState::Ended { .. }
        ));
        match SlurmExecutor::state("CANCELLED by 0", "None") {
            JobState::Lost { status, reason } => {
                assert_eq!(status, Status::Lost);
                assert_eq!(reason, "slurm: CANCELLED");
            }
            s => panic!("{s:?}"),
        }
        match SlurmExecutor::state("NODE_FAIL", "NodeDown") {
            JobState::Lost { status, reason } => {
                assert_eq!(status, Status::Lost);
                assert_eq!(reason, "slurm: NODE_FAIL (NodeDown)");
            }
            s => panic!("{s:?}"),
        }
        assert!(matches!(
            SlurmExecutor::state("TIMEOUT", ""),
            JobState::Lost {
                status: Status::Timeout,
                ..
            }
        ));
        assert!(matches!(
            RayExecutor::state("STOPPED", "Job was intentionally stopped."),
            JobState::Lost {
                status: Status::Lost,
                ..
            }
        ));
        assert!(matches!(
            RayExecutor::state("FAILED", "x"),
            JobState::Ended { .. }
        ));
        assert!(SlurmExecutor::new("--partition debug --output x").is_err());
        assert!(SlurmExecutor::new("--partition 'a b'").is_err());
        let r: RayResources = "num_cpus=1,num_gpus=0.5,tpu=2".parse().unwrap();
        assert_eq!(r.num_cpus, Some(1.0));
        assert_eq!(r.custom["tpu"], 2.0);
        assert!(
            "num_cpus"
                .parse::<RayResources>()
                .unwrap_err()
                .to_string()
                .contains("--ray-resources")
        );
    }

    fn script(dir: &Path, body: &str) -> JobSpec {
        let s = dir.join("job.sh");
        std::fs::write(&s, body).unwrap();
        JobSpec {
            name: "t".into(),
            script: s,
            run_dir: dir.to_path_buf(),
            cwd: dir.to_path_buf(),
        }
    }

    fn wait_final(ex: &mut dyn Executor, id: &str, dir: &Path) -> JobState {
        loop {
            let s = ex.poll(&[JobRef { id, run_dir: dir }]).unwrap().remove(0);
            if s.is_final() {
                return s;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn local_trials_get_a_gpu_each_and_a_finished_trial_frees_its_gpu() {
        let root = tempfile::tempdir().unwrap();
        // Each trial records the device it sees, then blocks on a fifo of its own.
        let job = |name: &str| {
            let dir = root.path().join(name);
            std::fs::create_dir(&dir).unwrap();
            let fifo = dir.join("go");
            assert!(
                Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .unwrap()
                    .success()
            );
            let mut spec = script(
                &dir,
                &format!(
                    "echo $CUDA_VISIBLE_DEVICES $CUDA_DEVICE_ORDER > seen; read x < {}",
                    fifo.display()
                ),
            );
            spec.name = name.into();
            (spec, fifo)
        };
        let mut ex = LocalExecutor::with_gpus(2, vec!["3".into(), "5".into()]);
        assert_eq!(ex.describe(), "local:2, one trial per GPU of 3,5");
        let ((a, go_a), (b, go_b), (c, go_c)) = (job("a"), job("b"), job("c"));
        let ida = ex.submit(&a).unwrap();
        let idb = ex.submit(&b).unwrap();
        let gpu = |spec: &JobSpec| std::fs::read_to_string(spec.run_dir.join(GPU_FILE)).unwrap();
        assert_eq!((gpu(&a), gpu(&b)), ("3\n".into(), "5\n".into()));
        // Both GPUs held: a third trial has none.
        let err = ex.submit(&c).unwrap_err().to_string();
        assert!(err.contains("no free GPU for c"), "{err}");
        // Trial a ends; its GPU goes to the next trial.
        std::fs::write(&go_a, "go\n").unwrap();
        wait_final(&mut ex, &ida, &a.run_dir);
        let idc = ex.submit(&c).unwrap();
        assert_eq!(gpu(&c), "3\n");
        std::fs::write(&go_b, "go\n").unwrap();
        std::fs::write(&go_c, "go\n").unwrap();
        wait_final(&mut ex, &idb, &b.run_dir);
        wait_final(&mut ex, &idc, &c.run_dir);
        for spec in [&a, &b, &c] {
            let seen = std::fs::read_to_string(spec.run_dir.join("seen")).unwrap();
            assert_eq!(seen, format!("{} PCI_BUS_ID\n", gpu(spec).trim()));
        }
    }

    #[test]
    fn local_jobs_run_are_reattached_by_a_new_executor_and_cancel() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("go");
        assert!(
            Command::new("mkfifo")
                .arg(&fifo)
                .status()
                .unwrap()
                .success()
        );
        // The job blocks until the test opens the fifo, so "still running
        // when re-attached" does not depend on timing.
        let spec = script(
            dir.path(),
            &format!(
                ": > {d}/up; read x < {f}; echo $x > {d}/out",
                f = fifo.display(),
                d = dir.path().display()
            ),
        );
        let mut first = LocalExecutor::new(2);
        let id = first.submit(&spec).unwrap();
        // Past its exec (a process id is re-attached by its command line).
        while !dir.path().join("up").exists() {
            std::thread::sleep(Duration::from_millis(5));
        }
        // The campaign process "dies": its executor is dropped, the job lives on.
        drop(first);
        let mut second = LocalExecutor::new(2);
        let r = JobRef {
            id: &id,
            run_dir: dir.path(),
        };
        let seen = second.poll(&[r]).unwrap();
        // Release the job before asserting, so a failure leaves no process behind.
        std::fs::write(&fifo, "done\n").unwrap();
        assert_eq!(seen, vec![JobState::Running]);
        assert!(matches!(
            wait_final(&mut second, &id, dir.path()),
            JobState::Ended { .. }
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out")).unwrap(),
            "done\n"
        );

        // Cancel kills the whole group.
        let spec = script(dir.path(), &format!("read x < {}", fifo.display()));
        let mut ex = LocalExecutor::new(1);
        let id = ex.submit(&spec).unwrap();
        ex.cancel(JobRef {
            id: &id,
            run_dir: dir.path(),
        })
        .unwrap();
        assert!(matches!(
            wait_final(&mut ex, &id, dir.path()),
            JobState::Ended { .. }
        ));
    }
}
