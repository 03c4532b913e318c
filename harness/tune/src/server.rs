//! A server under tuning: started per trial with the trial's flags, waited
//! for until ready, stopped afterwards, and its failures told apart (start-up
//! failure, out of memory, crash, not ready in time), as vLLM's
//! `auto_tune.sh` does around each grid point.

use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::tuner::Status;

/// A running server process (its own process group), logging to a file.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    log: std::path::PathBuf,
}

/// Why a server did not serve a trial.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFailure {
    /// How the trial is recorded: `Failed` (start-up failure, out of
    /// memory), `Crashed` (killed by a signal) or `Timeout` (never ready).
    pub status: Status,
    /// What happened, with the log's telling line.
    pub reason: String,
}

/// Log lines that mean the server ran out of memory.
const OOM_MARKERS: [&str; 6] = [
    "out of memory",
    "outofmemoryerror",
    "cuda_error_out_of_memory",
    "cannot allocate memory",
    "memoryerror",
    "oom",
];

impl ServerProcess {
    /// Starts `sh -c cmdline` in its own process group with stdout and
    /// stderr appended to `log`.
    ///
    /// # Errors
    /// A [`ServerFailure`] when it cannot be started.
    pub fn start(cmdline: &str, log: &Path) -> Result<Self, ServerFailure> {
        let fail = |e: std::io::Error| ServerFailure {
            status: Status::Failed,
            reason: format!("cannot start `{cmdline}`: {e}"),
        };
        let out = std::fs::File::create(log).map_err(fail)?;
        let err = out.try_clone().map_err(fail)?;
        let child = Command::new("sh")
            .arg("-c")
            .arg(cmdline)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0)
            .spawn()
            .map_err(fail)?;
        Ok(Self {
            child,
            log: log.to_path_buf(),
        })
    }

    /// Polls `ready_url` (plain `http://HOST:PORT/PATH`) until it answers
    /// 2xx, the process exits, or `timeout` passes.
    ///
    /// # Errors
    /// A [`ServerFailure`] classified from the exit status and the log, or
    /// `Timeout`.
    pub fn wait_ready(
        &mut self,
        ready_url: &str,
        timeout: Duration,
    ) -> Result<Duration, ServerFailure> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(self.failure(status, "exited before it was ready"));
            }
            if http_ok(ready_url) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= timeout {
                return Err(ServerFailure {
                    status: Status::Timeout,
                    reason: format!(
                        "not ready at {ready_url} within {:.0?}{}",
                        timeout,
                        last_line(&self.log)
                            .map(|l| format!("; log: {l}"))
                            .unwrap_or_default()
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exit status, if the process has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Classifies how the server ended.
    pub fn failure(&self, status: ExitStatus, when: &str) -> ServerFailure {
        classify(
            status,
            &std::fs::read_to_string(&self.log).unwrap_or_default(),
            when,
        )
    }

    /// Stops the whole process group: SIGTERM, then SIGKILL after `grace`.
    /// Returns the exit status.
    pub fn stop(mut self, grace: Duration) -> Option<ExitStatus> {
        let pid = self.child.id();
        if let Some(s) = self.exited() {
            signal_group(pid, "KILL");
            return Some(s);
        }
        signal_group(pid, "TERM");
        let start = Instant::now();
        while start.elapsed() < grace {
            if let Some(s) = self.exited() {
                signal_group(pid, "KILL");
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        signal_group(pid, "KILL");
        self.child.wait().ok()
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            signal_group(self.child.id(), "KILL");
            let _ = self.child.wait();
        }
    }
}

fn signal_group(pid: u32, signal: &str) {
    let _ = Command::new("kill")
        .args([format!("-{signal}"), "--".into(), format!("-{pid}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

fn last_line(log: &Path) -> Option<String> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(|l| l.chars().take(160).collect())
}

/// Out of memory (from the log, or SIGKILL / exit 137, the OOM killer's
/// mark), a crash (another signal) or a failed start (any other exit).
pub fn classify(status: ExitStatus, log: &str, when: &str) -> ServerFailure {
    let oom_line = log.lines().find(|l| {
        let l = l.to_lowercase();
        OOM_MARKERS.iter().any(|m| {
            if *m == "oom" {
                l.split(|c: char| !c.is_ascii_alphanumeric())
                    .any(|w| w == "oom")
            } else {
                l.contains(m)
            }
        })
    });
    let tail = log
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("")
        .chars()
        .take(160)
        .collect::<String>();
    let code = status.code();
    let signal = status.signal();
    if let Some(line) = oom_line {
        return ServerFailure {
            status: Status::Failed,
            reason: format!(
                "out of memory: the server {when} ({}): {}",
                describe(status),
                line.trim()
            ),
        };
    }
    if code == Some(137) || signal == Some(9) {
        return ServerFailure {
            status: Status::Failed,
            reason: format!(
                "out of memory (killed with SIGKILL, as the OOM killer does): the server {when}"
            ),
        };
    }
    if let Some(sig) = signal {
        return ServerFailure {
            status: Status::Crashed,
            reason: format!(
                "the server {when}: killed by signal {sig}{}",
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; log: {tail}")
                }
            ),
        };
    }
    ServerFailure {
        status: Status::Failed,
        reason: format!(
            "the server {when} ({}){}",
            describe(status),
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ),
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("signal {s}"),
        _ => "unknown status".into(),
    }
}

/// Whether `GET url` answers 2xx within a second (plain HTTP/1.0).
fn http_ok(url: &str) -> bool {
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let Ok(addrs) = std::net::ToSocketAddrs::to_socket_addrs(host) else {
        return false;
    };
    for addr in addrs {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
            continue;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        if s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").as_bytes())
            .is_err()
        {
            continue;
        }
        let mut head = [0u8; 12];
        if s.read_exact(&mut head).is_ok() {
            let text = String::from_utf8_lossy(&head);
            return text.starts_with("HTTP/1.") && text.as_bytes().get(9) == Some(&b'2');
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exit(code: i32) -> ExitStatus {
        ExitStatus::from_raw(code << 8)
    }

    #[test]
    fn oom_crash_and_start_failures_are_told_apart() {
        let f = classify(
            exit(1),
            "loading\ntorch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2 GiB\n",
            "exited before it was ready",
        );
        assert_eq!(f.status, Status::Failed);
        assert!(f.reason.starts_with("out of memory"), "{}", f.reason);
        assert!(
            classify(exit(137), "", "exited")
                .reason
                .contains("OOM killer")
        );
        assert!(
            classify(ExitStatus::from_raw(9), "", "exited")
                .reason
                .starts_with("out of memory")
        );
        let crash = classify(ExitStatus::from_raw(11), "segfault here\n", "exited");
        assert_eq!(crash.status, Status::Crashed);
        assert!(crash.reason.contains("signal 11"), "{}", crash.reason);
        let bad = classify(
            exit(2),
            "error: --port: 99999 is invalid\n",
            "exited before it was ready",
        );
        assert_eq!(bad.status, Status::Failed);
        assert!(
            bad.reason.contains("(exit status 2): error: --port"),
            "{}",
            bad.reason
        );
        assert!(
            !classify(exit(1), "zoom level ok\n", "x")
                .reason
                .starts_with("out of memory")
        );
    }

    #[test]
    fn a_server_that_exits_early_is_reported_and_stop_kills_the_group() {
        let dir = std::env::temp_dir().join(format!("fuselab-server-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = ServerProcess::start(
            "echo 'RuntimeError: CUDA out of memory' >&2; exit 1",
            &dir.join("a.log"),
        )
        .unwrap();
        let f = s
            .wait_ready("http://127.0.0.1:9/", Duration::from_secs(30))
            .unwrap_err();
        assert!(f.reason.starts_with("out of memory"), "{}", f.reason);
        let mut s = ServerProcess::start("sleep 30 & sleep 30", &dir.join("b.log")).unwrap();
        let f = s
            .wait_ready("http://127.0.0.1:9/", Duration::from_millis(200))
            .unwrap_err();
        assert_eq!(f.status, Status::Timeout);
        let status = s.stop(Duration::from_secs(5)).unwrap();
        assert_eq!(status.signal(), Some(15), "SIGTERM reached the group");
        std::fs::remove_dir_all(dir).ok();
    }
}
