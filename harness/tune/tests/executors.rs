//! The campaign loop with trials in flight: asynchronous batches in process,
//! the local executor's job ids in the journal, and lost jobs re-submitted.

use std::path::Path;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use fuselab_tune::testfns::{Batching, HARTMANN6, batch_regret};
use fuselab_tune::{
    BoOptions, BoTuner, CommandObjective, Config, Direction, ExecOptions, Journal, LocalExecutor,
    Objective, Outcome, Problem, SearchSpace, TrialContext, Tuner, TunerKind, campaign_meta,
    open_campaign, run_campaign, run_campaign_on,
};

fn lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Slot 0 blocks until four other trials have finished: with synchronous
/// batches of 2 the campaign would wait on it forever; asynchronously the
/// other slot keeps going and slot 0 is recorded after at least three others.
struct SlowFirst {
    finished: Mutex<usize>,
    cv: Condvar,
}

impl Objective for SlowFirst {
    fn evaluate(&self, ctx: &TrialContext<'_>, config: &Config) -> Outcome {
        if ctx.slot == 0 {
            let mut n = self.finished.lock().unwrap();
            while *n < 4 {
                n = self.cv.wait(n).unwrap();
            }
        }
        let x = config.0[0].as_f64().unwrap();
        *self.finished.lock().unwrap() += 1;
        self.cv.notify_all();
        Outcome::ok(vec![(x - 0.3).powi(2)], vec![])
    }
    fn describe(&self) -> String {
        "slow first".into()
    }
}

#[test]
fn asynchronous_batches_do_not_wait_for_the_slowest_trial() {
    let dir = tempfile::tempdir().unwrap();
    let problem = Problem::single(
        SearchSpace::parse("x=0.0..1").unwrap(),
        "y",
        Direction::Minimize,
    );
    let obj = SlowFirst {
        finished: Mutex::new(0),
        cv: Condvar::new(),
    };
    let meta = campaign_meta(&problem, TunerKind::Bo, 3, &obj);
    let (mut journal, _) = open_campaign(dir.path(), &meta, false).unwrap();
    let mut tuner = TunerKind::Bo.build(problem.clone(), 3, 6);
    run_campaign(&problem, tuner.as_mut(), &obj, &mut journal, 6, 2, |_| {}).unwrap();
    let recs = lines(&Journal::path_in(dir.path()));
    assert_eq!(recs.len(), 6);
    let slots: Vec<u64> = recs.iter().map(|r| r["slot"].as_u64().unwrap()).collect();
    // With two in flight, slots 1, 2 and 3 are recorded before slot 4 starts,
    // and slot 0 ends only after slot 4 has counted itself finished; whether
    // slot 0 or slot 4 is recorded first is a race between their threads.
    let pos = slots.iter().position(|&s| s == 0).unwrap();
    assert!(pos >= 3, "slot 0 did not hold back the others: {slots:?}");
    assert_eq!(&slots[..3], [1, 2, 3], "{slots:?}");
    let mut sorted = slots.clone();
    sorted.sort();
    assert_eq!(sorted, vec![0, 1, 2, 3, 4, 5]);
}

#[test]
fn pending_points_are_believed_and_never_repeated() {
    let space = SearchSpace::parse("a=1..6,x=0.0..1").unwrap();
    let problem = Problem::single(space, "y", Direction::Minimize);
    let mut bo = BoTuner::new(problem, 9, BoOptions::default());
    for i in 0..8 {
        let c = bo.ask(1).unwrap().remove(0);
        let y = (c.0[0].as_f64().unwrap() - 3.0).powi(2) + c.0[1].as_f64().unwrap();
        bo.tell(fuselab_tune::Trial {
            index: i,
            config: c,
            outcome: Outcome::ok(vec![y], vec![]),
        });
    }
    let alone = bo.ask(1).unwrap();
    let pending = bo.ask(1).unwrap();
    assert_eq!(alone, pending, "the same history gives the same suggestion");
    let next = bo.ask_pending(3, &pending).unwrap();
    assert_eq!(next.len(), 3);
    assert!(
        !next.contains(&pending[0]),
        "a pending point is not suggested again"
    );
    // The same question gets the same answer (deterministic).
    assert_eq!(bo.ask_pending(3, &pending).unwrap(), next);
}

#[test]
fn asynchronous_batches_finish_sooner_than_synchronous_ones_on_the_same_durations() {
    let seq = batch_regret(&HARTMANN6, Batching::Sequential, 4, 12, 5).unwrap();
    let sync = batch_regret(&HARTMANN6, Batching::Synchronous, 4, 12, 5).unwrap();
    let asyn = batch_regret(&HARTMANN6, Batching::Asynchronous, 4, 12, 5).unwrap();
    assert!(asyn.makespan < sync.makespan, "{asyn:?} vs {sync:?}");
    assert!(sync.makespan < seq.makespan, "{sync:?} vs {seq:?}");
    for r in [seq, sync, asyn] {
        assert!(r.regret >= 0.0 && r.regret.is_finite(), "{r:?}");
    }
}

fn command_campaign(
    dir: &Path,
    cmd: &str,
    budget: usize,
    opts: &ExecOptions,
) -> Vec<serde_json::Value> {
    let space = SearchSpace::parse("x=0.0..1").unwrap();
    let problem = Problem::single(space.clone(), "value", Direction::Maximize);
    let obj = CommandObjective::new(cmd, &space, None, 1, 0).unwrap();
    let meta = campaign_meta(&problem, TunerKind::Random, 1, &obj);
    let (mut journal, _) = open_campaign(dir, &meta, false).unwrap();
    let mut tuner = TunerKind::Random.build(problem.clone(), 1, budget);
    let mut ex = LocalExecutor::new(opts.parallel);
    run_campaign_on(
        &problem,
        tuner.as_mut(),
        &obj,
        &mut ex,
        &mut journal,
        budget,
        opts,
        |_| {},
    )
    .unwrap();
    lines(&Journal::path_in(dir))
}

#[test]
fn a_local_campaign_journals_job_ids_and_failures() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let opts = ExecOptions {
        parallel: 3,
        poll_interval: Duration::from_millis(10),
        ..ExecOptions::default()
    };
    // Slot 2 fails, the others print their knob.
    let recs = command_campaign(
        &out,
        r#"if [ "$FUSELAB_TRIAL" = 2 ]; then echo boom >&2; exit 3; fi; echo {x}"#,
        7,
        &opts,
    );
    assert_eq!(recs.len(), 7);
    let jobs = lines(&out.join("jobs.jsonl"));
    assert_eq!(jobs.len(), 7);
    for r in &recs {
        let slot = r["slot"].as_u64().unwrap();
        let job = jobs.iter().find(|j| j["slot"] == slot).unwrap();
        assert_eq!(r["job"], format!("local:{}", job["job"].as_str().unwrap()));
        if slot == 2 {
            assert_eq!(r["status"], "failed");
            assert_eq!(r["message"], "exit status 3: boom");
        } else {
            assert_eq!(r["status"], "ok");
            assert_eq!(r["objective"], r["knobs"]["x"]);
        }
    }
}

#[test]
fn a_job_killed_under_the_campaign_is_lost_then_resubmitted_once() {
    for retry in [0u32, 1] {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("c");
        let once = dir.path().join("once");
        let opts = ExecOptions {
            parallel: 2,
            retry_lost: retry,
            poll_interval: Duration::from_millis(10),
            exit_grace: Duration::ZERO,
            ..ExecOptions::default()
        };
        // The first attempt of slot 1 kills its own job (its process group),
        // as a preemption or a dead node would: no exit code is written.
        let cmd = format!(
            r#"if [ "$FUSELAB_TRIAL" = 1 ] && [ ! -e {o} ]; then touch {o}; kill -KILL 0; fi; echo {{x}}"#,
            o = once.display()
        );
        let recs = command_campaign(&out, &cmd, 5, &opts);
        assert_eq!(recs.len(), 5, "retry {retry}");
        let one = recs.iter().find(|r| r["slot"] == 1).unwrap();
        let jobs = lines(&out.join("jobs.jsonl"));
        let subs = jobs.iter().filter(|j| j["slot"] == 1).count();
        if retry == 0 {
            assert_eq!(one["status"], "lost", "{one}");
            assert!(
                one["message"]
                    .as_str()
                    .unwrap()
                    .contains("wrote no exit code"),
                "{one}"
            );
            assert_eq!(subs, 1);
        } else {
            assert_eq!(one["status"], "ok", "{one}");
            assert_eq!(one["run"], "runs/0001-r1");
            assert!(
                one["message"]
                    .as_str()
                    .unwrap()
                    .starts_with("re-submitted after:")
            );
            assert_eq!(subs, 2);
        }
        let ok = recs.iter().filter(|r| r["status"] == "ok").count();
        assert_eq!(ok, if retry == 0 { 4 } else { 5 });
    }
}
