//! `fuselab tune --executor`: trials through a local process pool, a real
//! single-node Slurm and a real Ray head. The Slurm tests run when
//! `FUSELAB_SLURM=1` and the Ray tests when `FUSELAB_RAY_ADDRESS` is set
//! (`.ci/run` starts both with `harness/tune/tests/cluster/start-*.sh`);
//! otherwise they print why and pass without running.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command as StdCommand, Stdio};
use std::time::{Duration, Instant};

use assert_cmd::Command;

fn fuselab() -> Command {
    Command::cargo_bin("fuselab").unwrap()
}

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .split_inclusive('\n')
        .filter(|l| l.ends_with('\n') && !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn slurm() -> bool {
    let on = std::env::var("FUSELAB_SLURM").is_ok_and(|v| v == "1");
    if !on {
        eprintln!(
            "skipped: FUSELAB_SLURM is not 1 (start Slurm with harness/tune/tests/cluster/start-slurm.sh)"
        );
    }
    on
}

fn ray() -> Option<String> {
    let a = std::env::var("FUSELAB_RAY_ADDRESS")
        .ok()
        .filter(|a| !a.is_empty());
    if a.is_none() {
        eprintln!(
            "skipped: FUSELAB_RAY_ADDRESS is unset (start Ray with harness/tune/tests/cluster/start-ray.sh)"
        );
    }
    a
}

/// Polls `cond` every 20 ms; panics with `what` after `limit` (a hang guard,
/// not a performance threshold).
fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SIM: &[&str] = &[
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
    "24",
    "--tune-seed",
    "11",
    "--poll-interval",
    "100ms",
];

/// Runs the 24-trial sim campaign with `executor` args; returns the best
/// goodput and checks every trial ran.
fn sim_campaign(dir: &Path, name: &str, executor: &[&str]) -> f64 {
    let out = dir.join(name);
    let t0 = Instant::now();
    fuselab()
        .args(SIM)
        .args(executor)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let recs = lines(&out.join("trials.jsonl"));
    assert_eq!(recs.len(), 24, "{name}");
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{name}: {recs:?}");
    let best = recs
        .iter()
        .map(|r| r["objective"].as_f64().unwrap())
        .fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "{name}: best goodput {best:.4} in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    best
}

fn assert_same_best(local: f64, other: f64, what: &str) {
    // Asynchronous completion order differs between executors, so the
    // campaigns differ; their bests must agree within 1 % (the spread of
    // the top configurations of this space is about 0.3 %).
    assert!(
        (local - other).abs() <= 0.01 * local,
        "{what}: best {other} vs local {local}"
    );
}

#[test]
fn slurm_runs_a_24_trial_sim_campaign_with_4_in_flight_and_finds_the_local_best() {
    if !slurm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = sim_campaign(dir.path(), "local", &["--executor", "local:4"]);
    let s = sim_campaign(
        dir.path(),
        "slurm",
        &[
            "--executor",
            "slurm",
            "--parallel",
            "4",
            "--slurm-args",
            "--partition debug --time 10",
        ],
    );
    let jobs = lines(&dir.path().join("slurm/jobs.jsonl"));
    assert!(jobs.iter().all(|j| j["executor"] == "slurm"));
    assert_same_best(local, s, "slurm");
}

#[test]
fn ray_runs_a_24_trial_sim_campaign_with_4_in_flight_and_finds_the_local_best() {
    let Some(addr) = ray() else { return };
    let dir = tempfile::tempdir().unwrap();
    let local = sim_campaign(dir.path(), "local", &["--executor", "local:4"]);
    let r = sim_campaign(
        dir.path(),
        "ray",
        &[
            "--executor",
            &format!("ray={addr}"),
            "--parallel",
            "4",
            "--ray-resources",
            "num_cpus=1",
        ],
    );
    assert_same_best(local, r, "ray");
}

/// A command campaign whose slot-1 trial blocks on its first attempt until
/// the test cancels it through the scheduler (`cancel`), with `--retry-lost`
/// `retry`; returns the records.
fn cancel_one(executor: &[&str], retry: u32, cancel: impl Fn(&str)) -> Vec<serde_json::Value> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let once = dir.path().join("once");
    let cmd = format!(
        // `exec`: the cancelled trial is the sleep itself, so the signal ends
        // it (no shell left to carry on and exit 0 after its child died).
        r#"if [ "$FUSELAB_TRIAL" = 1 ] && [ ! -e {o} ]; then touch {o}; exec sleep 120; fi; echo {{x}}"#,
        o = once.display()
    );
    let mut child = StdCommand::new(assert_cmd::cargo::cargo_bin("fuselab"))
        .args(["tune", "--objective-cmd", &cmd, "--space", "x=0.0..1"])
        .args([
            "--tuner",
            "random",
            "--budget",
            "5",
            "--poll-interval",
            "100ms",
        ])
        .args(["--retry-lost", &retry.to_string()])
        .args(executor)
        .arg("--out")
        .arg(&out)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("slot 1 to start", Duration::from_secs(120), || {
        once.exists()
    });
    // The trials that completed before the cancel.
    let before = lines(&out.join("trials.jsonl"));
    let job = lines(&out.join("jobs.jsonl"))
        .into_iter()
        .find(|j| j["slot"] == 1)
        .unwrap();
    cancel(job["job"].as_str().unwrap());
    let status = child.wait().unwrap();
    assert!(status.success());
    let recs = lines(&out.join("trials.jsonl"));
    assert_eq!(recs.len(), 5);
    assert_eq!(
        &recs[..before.len()],
        &before[..],
        "completed trials are kept"
    );
    recs
}

#[test]
fn scancel_of_a_running_trial_is_recorded_with_slurms_reason_or_resubmitted() {
    if !slurm() {
        return;
    }
    let scancel = |id: &str| {
        assert!(
            StdCommand::new("scancel")
                .arg(id)
                .status()
                .unwrap()
                .success()
        );
    };
    let ex = ["--executor", "slurm", "--parallel", "2"];
    let recs = cancel_one(&ex, 0, scancel);
    let one = recs.iter().find(|r| r["slot"] == 1).unwrap();
    assert_eq!(one["status"], "lost", "{one}");
    assert!(
        one["message"]
            .as_str()
            .unwrap()
            .contains("slurm: CANCELLED"),
        "{one}"
    );
    assert_eq!(recs.iter().filter(|r| r["status"] == "ok").count(), 4);

    let recs = cancel_one(&ex, 1, scancel);
    let one = recs.iter().find(|r| r["slot"] == 1).unwrap();
    assert_eq!(one["status"], "ok", "{one}");
    assert!(
        one["message"]
            .as_str()
            .unwrap()
            .contains("slurm: CANCELLED"),
        "{one}"
    );
    assert_eq!(recs.iter().filter(|r| r["status"] == "ok").count(), 5);
}

#[test]
fn ray_job_stop_of_a_running_trial_is_recorded_with_rays_reason() {
    let Some(addr) = ray() else { return };
    let hostport = addr
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let ex = format!("ray={addr}");
    let recs = cancel_one(&["--executor", &ex, "--parallel", "2"], 0, |id| {
        let (code, body) = fuselab_tune::executor::http_request(
            &hostport,
            "POST",
            &format!("/api/jobs/{id}/stop"),
            None,
        )
        .unwrap();
        assert_eq!(code, 200, "{body}");
    });
    let one = recs.iter().find(|r| r["slot"] == 1).unwrap();
    assert_eq!(one["status"], "lost", "{one}");
    assert!(
        one["message"].as_str().unwrap().contains("ray: STOPPED"),
        "{one}"
    );
}

/// `kill -9` of the campaign process while trials are in flight, then
/// `--resume`: the jobs still running are re-attached (not re-submitted)
/// and no completed trial is lost.
fn kill_and_resume(executor: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let gate = dir.path().join("gate");
    // Slots 0 and 1 finish at once; the later ones wait for the gate (at
    // most 2 minutes, so a failed test leaves nothing running for long).
    let cmd = format!(
        r#"if [ "$FUSELAB_TRIAL" -ge 2 ]; then i=0; while [ ! -e {g} ] && [ $i -lt 2400 ]; do sleep 0.05; i=$((i+1)); done; fi; echo {{x}}"#,
        g = gate.display()
    );
    let args: Vec<String> = [
        "tune",
        "--objective-cmd",
        &cmd,
        "--space",
        "x=0.0..1",
        "--budget",
        "7",
        "--tune-seed",
        "4",
        "--poll-interval",
        "100ms",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain(executor.iter().map(|s| s.to_string()))
    .chain(["--out".to_string(), out.display().to_string()])
    .collect();
    let bin = assert_cmd::cargo::cargo_bin("fuselab");
    let mut child = StdCommand::new(&bin)
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Two trials done and three blocked in flight (slots 2, 3, 4).
    wait_for(
        "2 trials and 5 submissions",
        Duration::from_secs(120),
        || lines(&out.join("trials.jsonl")).len() == 2 && lines(&out.join("jobs.jsonl")).len() == 5,
    );
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let before = lines(&out.join("trials.jsonl"));
    let jobs_before = lines(&out.join("jobs.jsonl"));
    assert_eq!(before.len(), 2);

    let log = dir.path().join("resume.log");
    let mut resumed = StdCommand::new(&bin)
        .args(&args)
        .arg("--resume")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // The resumed campaign re-attaches to the three blocked jobs, then the
    // gate opens and they finish.
    wait_for("re-attaching", Duration::from_secs(60), || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("re-attaching to trial slot")
            .count()
            == 3
    });
    std::fs::write(&gate, "").unwrap();
    assert!(resumed.wait().unwrap().success());

    let recs = lines(&out.join("trials.jsonl"));
    assert_eq!(recs.len(), 7);
    assert_eq!(
        &recs[..2],
        &before[..],
        "completed trials are kept as they were"
    );
    let mut slots: Vec<u64> = recs.iter().map(|r| r["slot"].as_u64().unwrap()).collect();
    slots.sort();
    assert_eq!(slots, (0..7).collect::<Vec<_>>(), "each slot recorded once");
    assert!(recs.iter().all(|r| r["status"] == "ok"), "{recs:?}");
    // Slots 2-4 were not re-submitted: one submission each, and their
    // records name the job started before the kill.
    let jobs = lines(&out.join("jobs.jsonl"));
    let mut per_slot: BTreeMap<u64, usize> = BTreeMap::new();
    for j in &jobs {
        *per_slot.entry(j["slot"].as_u64().unwrap()).or_default() += 1;
    }
    assert!(per_slot.values().all(|&n| n == 1), "{per_slot:?}");
    for slot in 2..5u64 {
        let j = jobs_before.iter().find(|j| j["slot"] == slot).unwrap();
        let r = recs.iter().find(|r| r["slot"] == slot).unwrap();
        assert_eq!(
            r["job"],
            format!(
                "{}:{}",
                j["executor"].as_str().unwrap(),
                j["job"].as_str().unwrap()
            )
        );
    }
}

#[test]
fn kill_9_of_a_local_campaign_then_resume_reattaches_and_loses_nothing() {
    kill_and_resume(&["--executor", "local:3"]);
}

#[test]
fn kill_9_of_a_slurm_campaign_then_resume_reattaches_and_loses_nothing() {
    if !slurm() {
        return;
    }
    kill_and_resume(&["--executor", "slurm", "--parallel", "3"]);
}

#[test]
fn kill_9_of_a_ray_campaign_then_resume_reattaches_and_loses_nothing() {
    let Some(addr) = ray() else { return };
    kill_and_resume(&["--executor", &format!("ray={addr}"), "--parallel", "3"]);
}

#[test]
fn executor_flags_are_checked_before_any_trial() {
    for (args, want) in [
        (vec!["--executor", "kube"], "--executor"),
        (vec!["--executor", "local:0"], "--executor"),
        (vec!["--slurm-args", "--partition x"], "--slurm-args"),
        (vec!["--ray-resources", "num_cpus=1"], "--ray-resources"),
        (vec!["--retry-lost", "1"], "--retry-lost"),
        (
            vec!["--executor", "local:2", "--parallel", "3"],
            "--parallel",
        ),
        (
            vec![
                "--executor",
                "ray=http://127.0.0.1:1",
                "--ray-resources",
                "cpus",
            ],
            "--ray-resources",
        ),
        (
            vec!["--executor", "slurm", "--slurm-args", "--output x"],
            "--slurm-args",
        ),
    ] {
        fuselab()
            .args(["tune", "--objective-cmd", "echo 1", "--space", "x=0.0..1"])
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(want));
    }
}

#[test]
fn gpus_place_one_local_trial_per_gpu_and_are_checked_before_any_trial() {
    let dir = tempfile::tempdir().unwrap();
    // The objective is the GPU the trial sees: every trial must see one of ours.
    let campaign = |name: &str, gpus: &str, env: Option<&str>| {
        let out = dir.path().join(name);
        let mut cmd = fuselab();
        cmd.args([
            "tune",
            "--objective-cmd",
            "sleep 0.2; echo $CUDA_VISIBLE_DEVICES",
            "--space",
            "x=0.0..1",
            "--tuner",
            "random",
            "--budget",
            "6",
            "--executor",
            "local",
            "--gpus",
            gpus,
            "--poll-interval",
            "50ms",
        ])
        .arg("--out")
        .arg(&out);
        if let Some(v) = env {
            cmd.env("CUDA_VISIBLE_DEVICES", v);
        }
        let o = cmd.assert().success();
        let stdout = String::from_utf8_lossy(&o.get_output().stdout).to_string();
        let values: Vec<f64> = lines(&out.join("trials.jsonl"))
            .iter()
            .map(|r| r["objective"].as_f64().unwrap())
            .collect();
        let gpus_json: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("gpus.json")).unwrap()).unwrap();
        (values, stdout, gpus_json)
    };
    let (values, stdout, doc) = campaign("two", "3,5", None);
    assert!(
        stdout.contains("executor: local:2, one trial per GPU of 3,5"),
        "{stdout}"
    );
    assert_eq!(values.len(), 6);
    assert!(values.iter().all(|&v| v == 3.0 || v == 5.0), "{values:?}");
    // The first two trials start together, one on each GPU.
    assert!(values.contains(&3.0) && values.contains(&5.0), "{values:?}");
    assert!(doc["wall_s"].as_f64().unwrap() > 0.0);
    // `all` means the devices CUDA_VISIBLE_DEVICES lists.
    let (values, _, _) = campaign("all", "all", Some("7"));
    assert!(values.iter().all(|&v| v == 7.0), "{values:?}");

    for (args, want) in [
        (vec!["--gpus", "0"], "add --executor local:N"),
        (
            vec!["--executor", "local:3", "--gpus", "0,1"],
            "gives 2 GPU(s)",
        ),
        (vec!["--executor", "local", "--gpus", "0,0"], "named twice"),
        (
            vec!["--executor", "local", "--gpus", "zero"],
            "not a GPU index",
        ),
        (vec!["--executor", "slurm", "--gpus", "0"], "--gpus"),
    ] {
        fuselab()
            .args(["tune", "--objective-cmd", "echo 1", "--space", "x=0.0..1"])
            .args(&args)
            .assert()
            .code(2)
            .stderr(predicates::str::contains(want));
    }
    // No GPU to find: a clear error, not a campaign without placement.
    fuselab()
        .args(["tune", "--objective-cmd", "echo 1", "--space", "x=0.0..1"])
        .args(["--executor", "local", "--gpus", "all"])
        .env("CUDA_VISIBLE_DEVICES", "")
        .env("PATH", "/nonexistent")
        .assert()
        .code(2)
        .stderr(predicates::str::contains("no GPU found"));
}

/// A `--server-cmd` campaign through `executor`: each trial is `fuselab bench
/// --server-cmd …` on the executor's node; budgets above 3000 "run out of
/// memory" at start-up and are recorded failed with that reason.
fn server_campaign(executor: &str, out: &Path) {
    let bin = assert_cmd::cargo::cargo_bin("fuselab");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cmd = format!(
        "if [ {{budget}} -gt 3000 ]; then echo 'torch.OutOfMemoryError: CUDA out of memory' >&2; exit 1; fi; \
         exec {} serve --engine sim --port {port} --knob budget={{budget}}",
        bin.display()
    );
    let res = fuselab()
        .args([
            "tune",
            "--server-cmd",
            &cmd,
            "--engine",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args([
            "--space",
            "budget=256..8192:log",
            "--objective",
            "p99-ttft",
            "--budget",
            "6",
        ])
        .args([
            "--preset",
            "fastgen-2600",
            "--n",
            "8",
            "--rate",
            "10",
            "--executor",
            executor,
        ])
        .arg("--out")
        .arg(out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&res.stdout),
        String::from_utf8_lossy(&res.stderr)
    );
    let trials = lines(&out.join("trials.jsonl"));
    assert_eq!(trials.len(), 6);
    let mut ok = 0;
    for t in &trials {
        let budget = t["knobs"]["budget"].as_i64().unwrap();
        if budget > 3000 {
            assert_eq!(t["status"], "failed", "{t}");
            assert!(
                t["message"].as_str().unwrap().contains("out of memory"),
                "{t}"
            );
        } else {
            assert_eq!(t["status"], "ok", "{t}");
            let run = out.join(t["run"].as_str().unwrap());
            assert!(run.join("bench/summary.json").is_file(), "{t}");
            assert!(run.join("bench/server.log").is_file(), "{t}");
            ok += 1;
        }
    }
    assert!(ok > 0, "some trial ran: {trials:?}");
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "every trial's server stopped"
    );
}

#[test]
fn server_cmd_trials_run_through_the_local_executor() {
    let dir = tempfile::tempdir().unwrap();
    server_campaign("local:1", &dir.path().join("c"));
}

#[test]
fn server_cmd_trials_run_through_slurm() {
    if !slurm() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    server_campaign("slurm", &dir.path().join("c"));
}

#[test]
fn server_cmd_trials_on_one_machine_run_one_at_a_time() {
    fuselab()
        .args([
            "tune",
            "--server-cmd",
            "true",
            "--engine",
            "http://127.0.0.1:9",
            "--space",
            "x=1..2",
        ])
        .args(["--executor", "local:2", "--preset", "cpu-small", "--n", "4"])
        .assert()
        .code(2)
        .stderr(predicates::str::contains("--parallel"));
}
