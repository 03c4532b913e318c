//! `fuselab tune`: the external-command objective, failure handling, kill and
//! resume, and bad input.

use std::path::Path;
use std::process::Command as StdCommand;
use std::time::{Duration, Instant};

use assert_cmd::Command;
use predicates::prelude::*;

fn fuselab() -> Command {
    Command::cargo_bin("fuselab").expect("fuselab binary")
}

fn journal(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("trials.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.ends_with('}'))
        .map(|l| serde_json::from_str(l).expect("journal line is JSON"))
        .collect()
}

const QUADRATIC: &str = r#"awk "BEGIN{print -({x1}-1)^2-({x2}+0.5)^2}""#;

#[test]
fn tunes_a_command_and_reports_the_best_observed_trial() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let assert = fuselab()
        .args([
            "tune",
            "--objective-cmd",
            QUADRATIC,
            "--space",
            "x1=-3.0..3,x2=-2.0..2",
            "--budget",
            "14",
            "--seed",
            "3",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("best: x1=")
                .and(predicate::str::contains("14 trials: 14 ok"))
                // Noise-free: the best observation is the answer, no model pick.
                .and(predicate::str::contains("model's pick").not()),
        );
    let j = journal(&out);
    assert_eq!(j.len(), 14);
    let (best_trial, best) = j
        .iter()
        .filter_map(|r| Some((r["trial"].as_u64()?, r["objective"].as_f64()?)))
        .fold((0, f64::NEG_INFINITY), |m, t| if t.1 > m.1 { t } else { m });
    // "best" is the best observed trial, never a model estimate worse than it.
    let stdout = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    let best_line = stdout.lines().find(|l| l.starts_with("best: ")).unwrap();
    assert!(
        best_line.ends_with(&format!("[trial {best_trial}]")),
        "{best_line}: the best observation is trial {best_trial}"
    );
    assert!(
        best > -0.05,
        "the maximum is 0 at (1, -0.5); best found {best}"
    );
    for (i, r) in j.iter().enumerate() {
        assert_eq!(r["trial"], i);
        assert_eq!(r["status"], "ok");
        assert!(
            out.join(r["run"].as_str().unwrap())
                .join("stdout.txt")
                .exists()
        );
    }
    // Minimising the same command walks to the corners instead.
    let out2 = dir.path().join("min");
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            QUADRATIC,
            "--space",
            "x1=-3.0..3,x2=-2.0..2",
            "--budget",
            "12",
            "--minimize",
            "--tuner",
            "random",
        ])
        .arg("--out")
        .arg(&out2)
        .assert()
        .success();
    assert_eq!(journal(&out2).len(), 12);
}

/// k = 0: killed by a signal; 1: prints nothing; 2: exits 3; 3: starts a
/// grandchild that sleeps past the timeout (its pid appended to PIDS); 4, 5:
/// prints a number. The grid visits every k twice.
const FAULTY: &str = r#"case {k} in 0) kill -9 $$;; 1) true;; 2) echo oops >&2; exit 3;; 3) sleep 30 & echo $! >> PIDS; wait; echo 1;; *) echo {k};; esac"#;

/// Whether process `pid` has ended (gone, or a zombie awaiting its reaper).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn failed_trials_are_recorded_and_the_campaign_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("faults");
    let pids = dir.path().join("pids");
    let faulty = FAULTY.replace("PIDS", &pids.display().to_string());
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            &faulty,
            "--space",
            "k=0..5,x=a|b",
            "--budget",
            "12",
            "--tuner",
            "grid",
            "--timeout",
            "0.3",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(
            predicate::str::contains("12 trials: 4 ok, 0 infeasible, 8 failed")
                .and(predicate::str::contains("best: k=5")),
        );
    // The sleeping grandchildren were killed with their process group, not
    // left running or waited for.
    let pids = std::fs::read_to_string(&pids).unwrap();
    assert_eq!(pids.lines().count(), 2, "{pids}");
    for pid in pids.lines() {
        assert!(
            ended(pid),
            "the timed-out trial's grandchild {pid} still runs"
        );
    }
    let j = journal(&out);
    assert_eq!(j.len(), 12);
    let status_of = |k: i64| -> Vec<String> {
        j.iter()
            .filter(|r| r["knobs"]["k"] == k)
            .map(|r| r["status"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(status_of(0), ["crashed", "crashed"]);
    assert_eq!(status_of(1), ["failed", "failed"]);
    assert_eq!(status_of(2), ["failed", "failed"]);
    assert_eq!(status_of(3), ["timeout", "timeout"]);
    assert_eq!(status_of(5), ["ok", "ok"]);
    let exit3 = j.iter().find(|r| r["knobs"]["k"] == 2).unwrap();
    assert!(
        exit3["message"]
            .as_str()
            .unwrap()
            .contains("exit status 3: oops"),
        "{exit3}"
    );

    // BO learns from the same failures and keeps going too.
    let out_bo = dir.path().join("faults-bo");
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            FAULTY,
            "--space",
            "k=0..5,x=0.0..1",
            "--budget",
            "10",
            "--timeout",
            "0.3",
        ])
        .arg("--out")
        .arg(&out_bo)
        .assert()
        .success();
    assert_eq!(journal(&out_bo).len(), 10);
}

#[test]
fn sigkill_mid_campaign_then_resume_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("killed");
    let cmd = r#"sleep 0.1; awk "BEGIN{print -({x1}-1)^2-({x2}+0.5)^2}""#;
    let args = [
        "tune",
        "--objective-cmd",
        cmd,
        "--space",
        "x1=-3.0..3,x2=-2.0..2",
        "--budget",
        "12",
        "--seed",
        "5",
    ];
    let bin = assert_cmd::cargo::cargo_bin("fuselab");
    let mut child = StdCommand::new(&bin)
        .args(args)
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait (bounded) for a few completed trials, then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(60);
    while journal(&out).len() < 4 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let before = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    let complete: Vec<&str> = before
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n'))
        .collect();
    assert!(
        complete.len() >= 4 && complete.len() < 12,
        "killed after {} trials",
        complete.len()
    );

    fuselab()
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--resume")
        .assert()
        .success()
        .stderr(predicate::str::contains(format!(
            "{} trial(s) already done",
            complete.len()
        )))
        .stdout(predicate::str::contains("12 trials: 12 ok"));
    let after = std::fs::read_to_string(out.join("trials.jsonl")).unwrap();
    assert!(
        after.starts_with(&complete.concat()),
        "completed trials must be kept verbatim"
    );
    let j = journal(&out);
    assert_eq!(j.len(), 12);
    for (i, r) in j.iter().enumerate() {
        assert_eq!(r["trial"], i);
    }
    // Resuming a finished campaign runs nothing more.
    fuselab()
        .args(args)
        .arg("--out")
        .arg(&out)
        .arg("--resume")
        .assert()
        .success();
    assert_eq!(journal(&out).len(), 12);
}

#[test]
fn parallel_batches_fill_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("par");
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            QUADRATIC,
            "--space",
            "x1=-3.0..3,x2=-2.0..2",
            "--budget",
            "11",
            "--parallel",
            "3",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let j = journal(&out);
    assert_eq!(j.len(), 11);
    let distinct: std::collections::HashSet<String> =
        j.iter().map(|r| r["knobs"].to_string()).collect();
    assert_eq!(distinct.len(), 11, "a batch never repeats a point");
}

#[test]
fn same_seed_replays_the_same_suggestions() {
    let dir = tempfile::tempdir().unwrap();
    let run = |name: &str| {
        let out = dir.path().join(name);
        fuselab()
            .args([
                "tune",
                "--objective-cmd",
                QUADRATIC,
                "--space",
                "x1=-3.0..3,x2=-2.0..2",
                "--budget",
                "9",
                "--seed",
                "11",
            ])
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        journal(&out)
            .iter()
            .map(|r| r["knobs"].to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run("a"), run("b"));
}

#[test]
fn bad_input_exits_2_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("bad");
    let cases: &[(&[&str], &str)] = &[
        (&["--space", "x1=-3.0..3,x2"], "expected `name=DOMAIN`"),
        (&["--space", "x1=3..-3"], "empty range"),
        (&["--space", "x1=0..3:log"], "positive lower bound"),
        (&["--space", "x1=a|"], "empty choice"),
        (
            &["--space", "x1=-3.0..3", "--constraint", "x1 >= y"],
            "neither a number nor a knob",
        ),
        (&["--space", "x1=-3.0..3", "--timeout", "soon"], "--timeout"),
        (
            &["--space", "x1=-3.0..3", "--trial-timeout", "soon"],
            "--trial-timeout",
        ),
        (
            &["--space", "x1=-3.0..3", "--tuner", "tpe"],
            "unknown tuner",
        ),
    ];
    for (extra, needle) in cases {
        fuselab()
            .args(["tune", "--objective-cmd", "echo {x1}"])
            .args(*extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .code(2)
            .stderr(predicate::str::contains(*needle));
    }
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            "echo {x9}",
            "--space",
            "x1=-3.0..3",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("placeholder {x9} is not a knob"));
    // A knob the engine policy does not have.
    fuselab()
        .args([
            "tune",
            "--engine",
            "sim",
            "--policy",
            "splitfuse",
            "--space",
            "budget=256..8192:log,chunk=1..4",
            "--budget",
            "3",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("has no knob `chunk`"));
    // Resuming with a different space is refused.
    let c = dir.path().join("c");
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            "echo {x1}",
            "--space",
            "x1=-3.0..3",
            "--budget",
            "2",
        ])
        .arg("--out")
        .arg(&c)
        .assert()
        .success();
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            "echo {x1}",
            "--space",
            "x1=-4.0..3",
            "--budget",
            "3",
            "--resume",
        ])
        .arg("--out")
        .arg(&c)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("different problem"));
    // Starting over an existing campaign without --resume is refused.
    fuselab()
        .args([
            "tune",
            "--objective-cmd",
            "echo {x1}",
            "--space",
            "x1=-3.0..3",
            "--budget",
            "3",
        ])
        .arg("--out")
        .arg(&c)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--resume"));
}

#[test]
fn tunes_the_simulated_engine() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sim");
    fuselab()
        .args([
            "tune",
            "--engine",
            "sim",
            "--hardware",
            "h200",
            "--model",
            "llama3-8b",
            "--preset",
            "fastgen-2600",
            "--n",
            "60",
            "--rate",
            "8",
            "--policy",
            "splitfuse",
            "--space",
            "budget=256..8192:log,max_seqs=16..512:log,block=16|32|64|128",
            "--objective",
            "goodput",
            "--slo",
            "fastgen:4",
            "--budget",
            "5",
        ])
        .arg("--out")
        .arg(&out)
        .assert()
        .success()
        .stdout(predicate::str::contains("best: budget=").and(predicate::str::contains("goodput")));
    let j = journal(&out);
    assert_eq!(j.len(), 5);
    assert!(
        out.join(j[0]["run"].as_str().unwrap())
            .join("summary.json")
            .exists()
    );

    // Two objectives and an outcome constraint: ParEGO and the Pareto front.
    let pareto = dir.path().join("pareto");
    fuselab()
        .args([
            "tune",
            "--engine",
            "sim",
            "--preset",
            "fastgen-2600",
            "--n",
            "60",
            "--rate",
            "16",
            "--policy",
            "splitfuse",
            "--space",
            "budget=256..8192:pow2,max_seqs=16..512:pow2",
            "--objective",
            "throughput,p99-e2e",
            "--outcome",
            "p99-ttft<=5",
            "--budget",
            "8",
        ])
        .arg("--out")
        .arg(&pareto)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "Pareto front (throughput vs p99-e2e)",
        ));
    let j = journal(&pareto);
    assert_eq!(j.len(), 8);
    for r in &j {
        if r["status"] == "ok" || r["status"] == "infeasible" {
            assert_eq!(r["objectives"].as_array().unwrap().len(), 2, "{r}");
            let ttft = r["constraints"]["p99-ttft"].as_f64().unwrap();
            assert_eq!(r["status"] == "ok", ttft <= 5.0, "{r}");
        }
    }
}

/// Acceptance, CI-sized: on the simulated engine BO reaches within 2% of the
/// exhaustive grid optimum (72 configurations, computed here with the grid
/// tuner) in 15 trials, for 2 seeds. The full 10-seed study over the issue's
/// 144-point space is in the report of issue 6. About 10 s: the grid is 72
/// simulated runs.
#[test]
fn bo_matches_the_exhaustive_grid_on_the_simulated_engine() {
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "tune",
        "--engine",
        "sim",
        "--hardware",
        "h200",
        "--model",
        "llama3-8b",
        "--preset",
        "fastgen-2600",
        "--n",
        "100",
        "--rate",
        "16",
        "--seed",
        "42",
        "--policy",
        "splitfuse",
        "--space",
        "budget=256..8192:pow2,max_seqs=16..512:pow2,block=16|64",
        "--objective",
        "goodput",
        "--slo",
        "fastgen:4",
    ];
    let best = |out: &Path| -> f64 {
        journal(out)
            .iter()
            .filter_map(|r| r["objective"].as_f64())
            .fold(f64::NEG_INFINITY, f64::max)
    };
    let grid = dir.path().join("grid");
    fuselab()
        .args(common)
        .args(["--tuner", "grid", "--budget", "72"])
        .arg("--out")
        .arg(&grid)
        .assert()
        .success();
    assert_eq!(journal(&grid).len(), 72);
    let optimum = best(&grid);
    for s in ["1", "2"] {
        let out = dir.path().join(format!("bo{s}"));
        fuselab()
            .args(common)
            .args(["--budget", "15", "--tune-seed", s])
            .arg("--out")
            .arg(&out)
            .assert()
            .success();
        let b = best(&out);
        assert!(
            b >= 0.98 * optimum,
            "seed {s}: best goodput {b} vs grid optimum {optimum}"
        );
    }
}

#[test]
fn the_workload_flag_is_refused_with_a_hint_and_the_space_is_printed_first() {
    let dir = tempfile::tempdir().unwrap();
    fuselab()
        .args(["tune", "--engine", "sim", "--workload", "fastgen-2600"])
        .args(["--space", "budget=256..1024"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--workload")
                .and(predicate::str::contains("--preset fastgen-2600")),
        );
    fuselab()
        .args(["tune", "--objective-cmd", QUADRATIC])
        .args(["--space", "x1=-3..3,x2=-2.0..2", "--budget", "3"])
        .arg("--out")
        .arg(dir.path().join("c"))
        .assert()
        .success()
        .stdout(
            predicate::str::contains("search space (2 knobs):")
                .and(predicate::str::is_match(r"x1\s+integer\s+-3 … 3\s+linear").unwrap())
                .and(predicate::str::is_match(r"x2\s+real\s+-2 … 2\s+linear").unwrap())
                .and(predicate::str::contains(
                    "note: x1 takes the 7 integers -3 … 3; write -3.0..3.0 for a real range",
                ))
                .and(predicate::str::contains("tuner seed 42 (--tune-seed)")),
        );
}

/// Issue item 16: `tune --repeat N` measures each trial N times; the trial's
/// folder is a repeat folder and its value the mean of the runs.
#[test]
fn tune_repeat_makes_each_trial_a_repeat_folder() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("rep");
    fuselab()
        .args(["tune", "--engine", "sim", "--preset", "fastgen-2600"])
        .args(["--n", "24", "--rate", "8", "--policy", "splitfuse"])
        .args([
            "--space",
            "budget=256..4096:log",
            "--objective",
            "throughput",
        ])
        .args(["--budget", "2", "--repeat", "2"])
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let j = journal(&out);
    assert_eq!(j.len(), 2);
    let trial = out.join(j[0]["run"].as_str().unwrap());
    assert!(trial.join("repeat.json").is_file());
    let run = |k: u32| -> serde_json::Value {
        let p = trial.join(format!("rep-{k}/summary.json"));
        serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
    };
    // The simulator is deterministic: the mean of two equal runs is the run.
    let (a, b) = (run(1), run(2));
    let tput = a["metrics"]["request_throughput"].as_f64().unwrap();
    assert_eq!(tput, b["metrics"]["request_throughput"].as_f64().unwrap());
    let value = j[0]["objective"]
        .as_f64()
        .unwrap_or_else(|| panic!("no value in {}", j[0]));
    assert!((value - tput).abs() < 1e-9 * tput, "{value} vs {tput}");
    fuselab()
        .args(["tune", "--objective-cmd", "echo 1", "--space", "x=0.0..1"])
        .args(["--budget", "1", "--repeat", "2"])
        .arg("--out")
        .arg(dir.path().join("cmd"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--repeat"));
}

/// Each trial of a deployment search ran on the hardware, TP degree and
/// policy its knobs name; policy knobs reach only the policies that have them.
fn check_deployment_trials(campaign: &Path, bench_subdir: &str) {
    let trials = journal(campaign);
    assert_eq!(trials.len(), 8);
    let mut seen = std::collections::BTreeSet::new();
    for t in &trials {
        assert_eq!(t["status"], "ok", "{t}");
        let run = campaign.join(t["run"].as_str().unwrap()).join(bench_subdir);
        let text = std::fs::read_to_string(run.join("summary.json")).unwrap();
        let engine =
            &serde_json::from_str::<serde_json::Value>(&text).unwrap()["provenance"]["engine"];
        let k = &t["knobs"];
        assert_eq!(engine["hardware"], k["hardware"], "{t}");
        assert_eq!(engine["policy"], k["policy"], "{t}");
        assert_eq!(engine["knobs"]["tp"], k["tp"], "{t}");
        if k["policy"] == "static" {
            assert!(
                engine["knobs"].get("budget").is_none(),
                "static has no budget: {engine}"
            );
        } else {
            assert_eq!(engine["knobs"]["budget"], k["budget"], "{t}");
        }
        seen.insert((k["hardware"].to_string(), k["policy"].to_string()));
    }
    assert!(seen.len() > 2, "the search varied the deployment: {seen:?}");
}

#[test]
fn a_deployment_search_runs_each_trial_on_its_hardware_tp_and_policy() {
    let dir = tempfile::tempdir().unwrap();
    let space =
        "hardware=a100-80g|h200,tp=1|2,policy=chunked|splitfuse|static,budget=256..4096:log";
    for (name, executor) in [("inproc", None), ("local", Some("local:2"))] {
        let out = dir.path().join(name);
        let mut cmd = fuselab();
        cmd.args([
            "tune",
            "--engine",
            "sim",
            "--preset",
            "fastgen-2600",
            "--n",
            "32",
            "--rate",
            "8",
        ])
        .args([
            "--space",
            space,
            "--objective",
            "goodput",
            "--slo",
            "fastgen:4",
            "--budget",
            "8",
        ])
        .arg("--out")
        .arg(&out);
        if let Some(e) = executor {
            cmd.args(["--executor", e]);
        }
        cmd.assert().success();
        // In process a trial's folder is its run; through an executor, its `bench` subfolder.
        check_deployment_trials(&out, if executor.is_some() { "bench" } else { "" });
    }
}

#[test]
fn a_bad_deployment_knob_is_a_usage_error_before_any_trial() {
    let dir = tempfile::tempdir().unwrap();
    fuselab()
        .current_dir(dir.path())
        .args([
            "tune",
            "--engine",
            "sim",
            "--preset",
            "fastgen-2600",
            "--n",
            "8",
            "--rate",
            "8",
        ])
        .args([
            "--space",
            "hardware=h200|b300,budget=256..512",
            "--budget",
            "2",
        ])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("b300").or(predicate::str::contains("hardware")));
}

#[test]
fn compare_runs_each_tuner_on_the_same_problem_and_counts_evaluations_to_the_optimum() {
    let dir = tempfile::tempdir().unwrap();
    let quadratic = r#"awk "BEGIN{print -({x1}-1)^2-({x2}+1)^2}""#;
    fuselab()
        .current_dir(dir.path())
        .args(["tune", "--objective-cmd", quadratic])
        .args([
            "--space",
            "x1=-3..3,x2=-2..2",
            "--budget",
            "35",
            "--seed",
            "3",
        ])
        .args(["--compare", "bo,grid,random", "--out", "c"])
        .assert()
        .success()
        .stdout(predicates::str::contains("evaluations to within 2 %"));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("c/compare.json")).unwrap())
            .unwrap();
    assert_eq!(c["space_size"], 35);
    assert_eq!(
        c["exhaustive"], true,
        "the grid covers all 35 configurations"
    );
    assert_eq!(c["reference"], 0.0, "the optimum at (1, -1)");
    let rows = c["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    for r in rows {
        assert_eq!(r["evaluations"], 35, "{r}");
        assert!(r["to_target"].as_u64().unwrap() <= 35, "{r}");
    }
    for tuner in ["bo", "grid", "random"] {
        assert!(
            dir.path()
                .join("c")
                .join(tuner)
                .join("trials.jsonl")
                .exists()
        );
    }
    let md = std::fs::read_to_string(dir.path().join("c/compare.md")).unwrap();
    assert!(
        md.contains("- bo came within 2 %") && md.contains("- random "),
        "{md}"
    );
}

#[test]
fn compare_gives_a_tuner_its_own_budget() {
    let dir = tempfile::tempdir().unwrap();
    fuselab()
        .current_dir(dir.path())
        .args(["tune", "--objective-cmd", "echo {x}", "--space", "x=0..7"])
        .args(["--budget", "20", "--compare", "bo:2,grid", "--out", "c"])
        .assert()
        .success()
        .stdout(predicates::str::contains("| bo | 2 | 2 |"));
    let c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("c/compare.json")).unwrap())
            .unwrap();
    let evals: Vec<(String, u64)> = c["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["tuner"].as_str().unwrap().to_string(),
                r["evaluations"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(evals, vec![("bo".to_string(), 2), ("grid".to_string(), 8)]);
}

#[test]
fn a_kernel_campaign_takes_its_shapes_from_a_run_folder() {
    let dir = tempfile::tempdir().unwrap();
    fuselab()
        .current_dir(dir.path())
        .args([
            "bench", "--engine", "sim", "--preset", "h200-64", "--n", "6",
        ])
        .args(["--policy", "continuous", "--out", "r"])
        .assert()
        .success();
    fuselab()
        .current_dir(dir.path())
        .args(["tune", "--kernel", "decode_attention", "--shapes-from", "r"])
        .args([
            "--space",
            "splits=1..2",
            "--tuner",
            "grid",
            "--budget",
            "2",
            "--out",
            "k",
        ])
        .assert()
        .success();
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("k/tuning.json")).unwrap())
            .unwrap();
    let shapes = table["entries"][0]["shapes"].as_array().unwrap();
    assert!(!shapes.is_empty() && shapes.len() <= 4, "{shapes:?}");
    // Six prompts of N(2600, 780) decoding: batches of at most 6, contexts in the thousands,
    // weighted by how many decode steps had them.
    for s in shapes {
        let s = s.as_str().unwrap();
        let num = |key: &str| -> usize {
            s.split(',')
                .find_map(|p| p.strip_prefix(key))
                .unwrap()
                .parse()
                .unwrap()
        };
        assert!((1..=6).contains(&num("batch=")), "{s}");
        assert!(num("ctx=") >= 256 && num("ctx=").is_multiple_of(64), "{s}");
        assert!(num("weight=") >= 1, "{s}");
    }
}

#[test]
fn bad_compare_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, flag) in [
        (&["--compare", "bo"][..], "--compare"),
        (&["--compare", "bo,bo"][..], "--compare"),
        (&["--compare", "bo,annealing"][..], "--compare"),
        (
            &["--compare", "bo,grid", "--compare-within", "-1"][..],
            "--compare-within",
        ),
        (&["--compare", "bo,grid", "--tuner", "bo"][..], "--tuner"),
        (&["--compare", "bo:0,grid"][..], "--compare: `bo:0`"),
        (&["--compare", "bo:x,grid"][..], "not a whole number"),
    ] {
        fuselab()
            .current_dir(dir.path())
            .args([
                "tune",
                "--objective-cmd",
                "echo 1",
                "--space",
                "x=0..3",
                "--budget",
                "2",
            ])
            .args(extra)
            .args(["--out", "never"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(flag));
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn a_kernel_campaign_records_a_wrong_configuration_infeasible_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    fuselab()
        .current_dir(dir.path())
        .args(["tune", "--kernel", "decode_attention", "--device", "cpu"])
        .args([
            "--shape",
            "batch=2,ctx=200",
            "--shape",
            "batch=1,ctx=64,weight=2",
        ])
        .args(["--space", "splits=1..6", "--tuner", "grid", "--budget", "6"])
        .args(["--inject-fault", "splits=4", "--out", "k"])
        .assert()
        .success()
        .stdout(predicates::str::contains(
            "6 trials: 5 ok, 1 infeasible, 0 failed",
        ));
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.path().join("k/trials.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for t in &lines {
        let splits = t["knobs"]["splits"].as_i64().unwrap();
        if splits == 4 {
            assert_eq!(t["status"], "infeasible", "{t}");
            assert!(
                t["message"]
                    .as_str()
                    .unwrap()
                    .contains("wrong result at batch=2,ctx=200"),
                "{t}"
            );
        } else {
            assert_eq!(t["status"], "ok", "{t}");
            assert!(t["objective"].as_f64().unwrap() > 0.0, "{t}");
            let run = dir.path().join("k").join(t["run"].as_str().unwrap());
            let text = std::fs::read_to_string(run.join("kernel.txt")).unwrap();
            assert!(
                text.contains("batch=1,ctx=64") && text.contains("relative error"),
                "{text}"
            );
        }
    }
    // Without --space the kernel's whole space is searched.
    fuselab()
        .current_dir(dir.path())
        .args([
            "tune",
            "--kernel",
            "prefill_attention",
            "--shape",
            "q=16,ctx=40",
        ])
        .args(["--tuner", "random", "--budget", "2", "--out", "p"])
        .assert()
        .success()
        .stdout(predicates::str::contains("q_tile").and(predicates::str::contains("kv_tile")));
}

#[test]
fn bad_kernel_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, want) in [
        (
            &["--kernel", "gemm"][..],
            "invalid --kernel: unknown kernel `gemm`",
        ),
        (
            &["--kernel", "decode_attention", "--device", "tpu"][..],
            "unknown device `tpu`",
        ),
        (
            &[
                "--kernel",
                "decode_attention",
                "--shapes-from",
                "no-such-run",
            ][..],
            "--shapes-from",
        ),
        (
            &[
                "--kernel",
                "decode_attention",
                "--shapes-from",
                "r",
                "--shape",
                "batch=2,ctx=9",
            ][..],
            "--shapes-from: given together with --shape",
        ),
        (
            &[
                "--kernel",
                "prefill_attention",
                "--device",
                "cuda",
                "--shape",
                "q=9,ctx=9,heads=8/2x32",
            ][..],
            "the CUDA kernels take 128",
        ),
        (
            &["--kernel", "decode_attention", "--shape", "batch=2"][..],
            "--shape",
        ),
        (
            &["--kernel", "decode_attention", "--space", "tile=1..2"][..],
            "not a knob of decode_attention",
        ),
        (
            &["--kernel", "decode_attention", "--parallel", "2"][..],
            "--parallel",
        ),
        (
            &["--kernel", "decode_attention", "--inject-fault", "splits"][..],
            "--inject-fault",
        ),
        (
            &["--kernel", "decode_attention", "--policy", "chunked"][..],
            "engine flags",
        ),
        (&["--shape", "batch=2,ctx=9"][..], "--kernel"),
        (
            &["--kernel", "decode_attention", "--device", "cuda"][..],
            "cannot tune decode_attention on the GPU: no CUDA driver found",
        ),
    ] {
        if extra == ["--kernel", "decode_attention", "--device", "cuda"]
            && fuselab_kernels::cuda::driver_present()
        {
            continue; // a machine with a GPU tunes it
        }

        fuselab()
            .current_dir(dir.path())
            .args(["tune", "--budget", "1"])
            .args(extra)
            .args(["--out", "never"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(want));
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn a_kernel_campaign_writes_a_tuning_table_the_cpu_engine_loads_and_then_benches_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("b.toml"),
        "policy = \"chunked\"\n[engine]\nkind = \"cpu\"\n[workload]\npreset = \"cpu-small\"\nn = 4\nseed = 1\nclients = 2\n",
    )
    .unwrap();
    fuselab()
        .current_dir(dir.path())
        .args([
            "tune",
            "--kernel",
            "decode_attention",
            "--shape",
            "batch=2,ctx=128",
        ])
        .args(["--space", "splits=1..3", "--tuner", "grid", "--budget", "3"])
        .args(["--then-bench", "b.toml", "--out", "k"])
        .assert()
        .success()
        .stdout(predicates::str::contains("tuning table: k/tuning.json"));
    let table: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("k/tuning.json")).unwrap())
            .unwrap();
    let entry = &table["entries"][0];
    assert_eq!(entry["kernel"], "decode_attention");
    let splits = entry["config"]["splits"].as_i64().unwrap();
    assert!((1..=3).contains(&splits), "{entry}");
    assert!(entry["default_ms"].as_f64().unwrap() > 0.0, "{entry}");
    let md = std::fs::read_to_string(dir.path().join("k/then-bench.md")).unwrap();
    assert!(
        md.contains("| TPOT p50 (s) |") && md.contains("kernel speed-up"),
        "{md}"
    );
    let tuned: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("k/then-bench/tuned/summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(
        tuned["provenance"]["engine"]["knobs"]["tuned_kernels"],
        format!("decode_attention splits={splits}")
    );
    let untuned =
        std::fs::read_to_string(dir.path().join("k/then-bench/untuned/summary.json")).unwrap();
    assert!(!untuned.contains("tuned_kernels"));
    // Bad tables: another machine's, not a table, and on an engine without tunable kernels.
    let other = table
        .to_string()
        .replace(entry["device"].as_str().unwrap(), "some other cpu");
    std::fs::write(dir.path().join("other.json"), other).unwrap();
    std::fs::write(dir.path().join("bad.json"), "{\"schema\":1}").unwrap();
    for (engine, file, want) in [
        ("cpu", "other.json", "has no entry for this machine's CPU"),
        ("cpu", "bad.json", "not a tuning table"),
        ("cuda", "k/tuning.json", "has no entry of a CUDA kernel"),
        (
            "sim",
            "k/tuning.json",
            "--tuning-table: does not apply to --engine sim",
        ),
    ] {
        fuselab()
            .current_dir(dir.path())
            .args(["bench", "--engine", engine, "--tuning-table", file])
            .args(["--preset", "cpu-small", "--n", "2", "--out", "never"])
            .assert()
            .code(2)
            .stderr(predicates::str::contains(want));
    }
    assert!(!dir.path().join("never").exists());
}

#[test]
fn a_conditional_knob_is_searched_only_where_its_condition_holds() {
    let dir = tempfile::tempdir().unwrap();
    let space = "decode=auto|balanced,splits=1..4 if decode=balanced";
    for (tuner, budget) in [("grid", "10"), ("bo", "5")] {
        let out = format!("c-{tuner}");
        fuselab()
            .current_dir(dir.path())
            .args(["tune", "--objective-cmd", "echo {splits}", "--space", space])
            .args(["--tuner", tuner, "--budget", budget, "--out", &out])
            .assert()
            .success()
            .stdout(predicates::str::contains(
                "splits is searched only where decode is balanced",
            ));
        let trials: Vec<serde_json::Value> =
            std::fs::read_to_string(dir.path().join(&out).join("trials.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        // One configuration with decode=auto, four with balanced: five distinct in all.
        assert_eq!(trials.len(), 5, "{tuner}: {trials:?}");
        let mut seen: Vec<String> = trials.iter().map(|t| t["knobs"].to_string()).collect();
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 5, "{tuner}: a repeated configuration");
        for t in &trials {
            if t["knobs"]["decode"] == "auto" {
                assert_eq!(
                    t["knobs"]["splits"], 1,
                    "{tuner}: inactive knob at its first value"
                );
            }
        }
    }
}
