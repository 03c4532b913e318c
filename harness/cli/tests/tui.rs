//! The terminal UI end to end, in a real terminal: tmux runs
//! `fuselab tui --runs DIR` on run folders made by `fuselab bench`; the test
//! types keys and reads the screen. It checks the run list, the filter, the
//! compare view of two runs, a short simulated sweep started from the form
//! with its points arriving, and that `q` exits with status 0 and leaves the
//! alternate screen. Skipped (with a note) where tmux is not installed; CI
//! installs it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const FUSELAB: &str = env!("CARGO_BIN_EXE_fuselab");
const TIMEOUT: Duration = Duration::from_secs(60);

struct Tmux {
    session: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> String {
        let out = Command::new("tmux").args(args).output().expect("tmux runs");
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn screen(&self) -> String {
        self.cmd(&["capture-pane", "-p", "-t", &self.session])
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.session];
        args.extend_from_slice(keys);
        self.cmd(&args);
    }

    fn text(&self, text: &str) {
        self.cmd(&["send-keys", "-t", &self.session, "-l", text]);
    }

    /// Polls the screen until `ok` holds; panics with the screen after
    /// [`TIMEOUT`].
    fn wait(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            assert!(
                start.elapsed() < TIMEOUT,
                "timed out waiting for {what}; the screen:\n{s}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["kill-session", "-t", &self.session])
            .output();
    }
}

fn bench(dir: &Path, policy: &str, name: &str) {
    let out = Command::new(FUSELAB)
        .args([
            "bench",
            "--engine",
            "sim",
            "--policy",
            policy,
            "--preset",
            "fastgen-1200",
            "--n",
            "60",
            "--rate",
            "4",
            "--out",
        ])
        .arg(dir.join("runs").join(name))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.display().to_string().replace('\'', r"'\''"))
}

#[test]
fn tui_browses_filters_compares_starts_a_sweep_and_quits_cleanly() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (CI installs it; apt-get install tmux)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    bench(&dir, "splitfuse", "bench-splitfuse");
    bench(&dir, "chunked", "bench-chunked");
    let exit_file = dir.join("exit");
    let script = format!(
        "cd {dir} && {exe} tui --runs runs; echo EXIT=$? > {exit}; echo TUI-DONE; sleep 120",
        dir = shell_quote(&dir),
        exe = shell_quote(Path::new(FUSELAB)),
        exit = shell_quote(&exit_file),
    );
    let tmux = Tmux {
        session: format!("fuselab-tui-test-{}", std::process::id()),
    };
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        &tmux.session,
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &script,
    ]);

    // The run list.
    tmux.wait("the run list", |s| {
        s.contains("runs/bench-splitfuse")
            && s.contains("runs/bench-chunked")
            && s.contains("2 folders")
    });

    // Filter by typing, then clear the filter.
    tmux.keys(&["/"]);
    tmux.text("chunk");
    tmux.wait("the filtered list", |s| {
        s.contains("1 shown")
            && s.contains("runs/bench-chunked")
            && !s.contains("runs/bench-splitfuse")
    });
    tmux.keys(&["Escape"]);
    tmux.wait("the full list again", |s| {
        !s.contains("shown") && s.contains("runs/bench-splitfuse")
    });

    // Mark both runs and compare them.
    tmux.keys(&["g"]);
    tmux.keys(&["Space"]);
    tmux.keys(&["Space"]);
    tmux.wait("two marks", |s| s.contains("2 marked"));
    tmux.keys(&["c"]);
    let s = tmux.wait("the compare view", |s| {
        s.contains("compare · baseline") && s.contains("ttft_p50") && s.contains("goodput")
    });
    assert!(
        ["improved", "regressed", "no change"]
            .iter()
            .any(|v| s.contains(v)),
        "verdicts shown:\n{s}"
    );
    tmux.keys(&["h"]);
    tmux.wait("the list", |s| s.contains("2 folders"));

    // Start a short simulated sweep from the form and follow it.
    tmux.keys(&["n"]);
    tmux.wait("the form", |s| s.contains("new bench"));
    tmux.keys(&["Right"]);
    let s = tmux.wait("the sweep form", |s| s.contains("new sweep"));
    assert!(s.contains("2,4,8"), "{s}");
    tmux.keys(&["Enter"]);
    tmux.wait("the sweep's first points", |s| {
        s.contains("sweep ·") && s.contains("points (live percentile table)")
    });
    let s = tmux.wait("every point of the sweep", |s| {
        s.contains("6/6 points") && s.contains("complete")
    });
    assert!(s.contains("splitfuse") && s.contains("chunked"), "{s}");
    tmux.keys(&["h"]);
    tmux.wait("the list with the sweep", |s| {
        s.contains("3 folders") && s.contains("sweep")
    });

    // Quit: exit status 0, and the terminal is back on the shell's screen.
    tmux.keys(&["q"]);
    let s = tmux.wait("the shell after the TUI", |s| s.contains("TUI-DONE"));
    assert!(
        !s.contains("fuselab · runs"),
        "the TUI's screen is gone:\n{s}"
    );
    let exit = std::fs::read_to_string(&exit_file).unwrap();
    assert_eq!(exit.trim(), "EXIT=0");
    let alt = tmux.cmd(&[
        "display-message",
        "-p",
        "-t",
        &tmux.session,
        "#{alternate_on}",
    ]);
    assert_eq!(alt.trim(), "0", "alternate screen left");
    // The sweep folder is complete on disk.
    let sweeps: Vec<_> = std::fs::read_dir(dir.join("runs"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("sweep-"))
        .collect();
    assert_eq!(sweeps.len(), 1);
    assert!(sweeps[0].path().join("curve.txt").is_file());
    assert_eq!(
        std::fs::read_to_string(sweeps[0].path().join("tui-job.exit"))
            .unwrap()
            .trim(),
        "0"
    );
}

/// Ctrl-C quits with status 0 and restores the terminal; a resize to the
/// smallest supported size (80×24) redraws the list at that size.
#[test]
fn tui_survives_a_resize_and_ctrl_c_restores_the_terminal() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("skipped: tmux is not installed (CI installs it; apt-get install tmux)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir: PathBuf = tmp.path().to_path_buf();
    bench(&dir, "splitfuse", "bench-splitfuse");
    let exit_file = dir.join("exit");
    let script = format!(
        "cd {dir} && {exe} tui --runs runs; echo EXIT=$? > {exit}; echo TUI-DONE; sleep 120",
        dir = shell_quote(&dir),
        exe = shell_quote(Path::new(FUSELAB)),
        exit = shell_quote(&exit_file),
    );
    let tmux = Tmux {
        session: format!("fuselab-tui-ctrlc-{}", std::process::id()),
    };
    tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        &tmux.session,
        "-x",
        "120",
        "-y",
        "40",
        "sh",
        "-c",
        &script,
    ]);
    tmux.wait("the run list", |s| s.contains("runs/bench-splitfuse"));
    tmux.cmd(&["resize-window", "-t", &tmux.session, "-x", "80", "-y", "24"]);
    tmux.wait("the list at 80×24", |s| {
        let lines: Vec<&str> = s.lines().collect();
        lines
            .first()
            .is_some_and(|l| l.contains("fuselab ·") && l.chars().count() == 80)
            && lines.iter().any(|l| l.contains("runs/bench-splitfuse"))
            && lines.iter().any(|l| l.contains("q quit"))
    });
    tmux.keys(&["C-c"]);
    let s = tmux.wait("the shell after the TUI", |s| s.contains("TUI-DONE"));
    assert!(!s.contains("fuselab ·"), "the TUI's screen is gone:\n{s}");
    assert_eq!(
        std::fs::read_to_string(&exit_file).unwrap().trim(),
        "EXIT=0"
    );
    let alt = tmux.cmd(&[
        "display-message",
        "-p",
        "-t",
        &tmux.session,
        "#{alternate_on}",
    ]);
    assert_eq!(alt.trim(), "0", "alternate screen left");
}
