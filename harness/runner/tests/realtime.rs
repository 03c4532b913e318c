//! The real-time harness under tokio's paused clock: schedule adherence,
//! closed-loop behaviour, timeouts, warm-up/window, cancellation and engine
//! failure. Virtual time makes every assertion exact; nothing here depends on
//! the wall clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fuselab_core::{RequestSpec, RequestStatus, TokenEvent};
use fuselab_harness::{
    CancelToken, EngineChannels, EngineCommand, EngineEvent, EngineHandle, EventSink, HarnessError,
    NullDelay, NullEngine, NullMode, RealtimePlan, RunClock, run_realtime,
};
use tokio::sync::mpsc;

fn spec(id: u64, arrival_s: f64, output_len: u32) -> RequestSpec {
    RequestSpec {
        id,
        arrival_s,
        prompt_len: 16,
        output_len,
        prefix_group: None,
        prefix_len: 0,
        conversation: None,
        adapter: None,
    }
}

/// Paused clock: no spin (spinning never lets virtual time advance), no bar.
fn paused(mut plan: RealtimePlan) -> RealtimePlan {
    plan.spin_s = 0.0;
    plan.progress = false;
    plan
}

/// Answers each request after `delay` (concurrently), one token per
/// `per_token`, and counts the cancels it receives.
struct DelayEngine {
    delay: Duration,
    cancels: Arc<AtomicUsize>,
    shut_down: Arc<AtomicUsize>,
    fatal_after: Option<usize>,
}

impl DelayEngine {
    fn new(delay_s: f64) -> Self {
        Self {
            delay: Duration::from_secs_f64(delay_s),
            cancels: Arc::new(AtomicUsize::new(0)),
            shut_down: Arc::new(AtomicUsize::new(0)),
            fatal_after: None,
        }
    }
}

impl EngineHandle for DelayEngine {
    fn name(&self) -> &str {
        "delay"
    }

    fn start(
        self: Box<Self>,
        clock: RunClock,
        events: EventSink,
    ) -> Result<EngineChannels, HarnessError> {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut seen = 0;
            while let Some(cmd) = rx.recv().await {
                match cmd {
                    EngineCommand::Submit { spec, .. } => {
                        seen += 1;
                        if self.fatal_after.is_some_and(|n| seen > n) {
                            events.send(EngineEvent::Fatal("device lost".into()));
                            continue;
                        }
                        let events = events.clone();
                        let delay = self.delay;
                        tokio::spawn(async move {
                            tokio::time::sleep(delay).await;
                            let t = clock.now_s();
                            events.send(EngineEvent::Tokens(TokenEvent {
                                request: spec.id,
                                index: 0,
                                t,
                                n_tokens: spec.output_len,
                            }));
                            events.send(EngineEvent::Finished {
                                id: spec.id,
                                status: RequestStatus::Ok,
                                error: None,
                                t,
                            });
                        });
                    }
                    EngineCommand::Cancel { .. } => {
                        self.cancels.fetch_add(1, Ordering::SeqCst);
                    }
                    EngineCommand::Shutdown => {
                        self.shut_down.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
        });
        Ok(EngineChannels {
            commands: tx,
            thread: None,
        })
    }
}

#[tokio::test(start_paused = true)]
async fn open_loop_follows_the_absolute_schedule_without_drift() {
    // Gaps of 10.5 ms are not whole timer ticks: sleeping an interval after each
    // send would drift by the rounding every request (50 ms after 100 requests).
    let reqs: Vec<RequestSpec> = (0..200).map(|i| spec(i, i as f64 * 0.0105, 3)).collect();
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(NullEngine::default()),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records.len(), 200);
    for r in &run.records {
        let lag = r.t_sent - r.t_scheduled;
        // -1e-9: seconds → Duration → seconds rounding
        assert!((-1e-9..1e-3).contains(&lag), "request {} lag {lag}", r.id);
        assert_eq!(r.status, RequestStatus::Ok);
        assert_eq!(r.tokens_received(), 3);
        assert_eq!(
            r.tokens.len(),
            1,
            "null engine answers in one chunk by default"
        );
        assert_eq!(r.t_done, Some(r.t_sent), "null engine answers at once");
    }
    assert_eq!(run.unsent, 0);
    assert!(!run.cancelled);
}

#[tokio::test(start_paused = true)]
async fn open_loop_sends_in_arrival_order_even_when_specs_are_not_sorted() {
    let reqs = vec![
        spec(0, 0.3, 1),
        spec(1, 0.1, 1),
        spec(2, 0.2, 1),
        spec(3, 0.1, 1),
    ];
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(NullEngine::default()),
        CancelToken::new(),
    )
    .await
    .unwrap();
    let sent: Vec<f64> = run.records.iter().map(|r| r.t_sent).collect();
    for (r, t) in run.records.iter().zip(&sent) {
        assert!((t - r.t_scheduled).abs() < 1e-3, "{} sent at {t}", r.id);
    }
    assert!(sent[1] <= sent[2] && sent[2] <= sent[0]);
}

#[tokio::test(start_paused = true)]
async fn the_delayed_null_engine_keeps_its_latencies_exactly() {
    let reqs = vec![spec(0, 0.0, 4), spec(1, 0.5, 2)];
    let delay = NullDelay {
        first_token_s: 0.05,
        per_token_s: 0.01,
    };
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(NullEngine::delayed(delay)),
        CancelToken::new(),
    )
    .await
    .unwrap();
    for r in &run.records {
        assert_eq!(r.status, RequestStatus::Ok);
        assert_eq!(r.tokens_received(), u64::from(r.output_len));
        for c in &r.tokens {
            let want = r.t_sent + 0.05 + 0.01 * f64::from(c.index);
            assert!(
                (c.t - want).abs() < 2e-3,
                "request {} token {}: {} vs {want}",
                r.id,
                c.index,
                c.t
            );
        }
        assert_eq!(r.t_done, r.t_last_token());
    }
}

#[tokio::test(start_paused = true)]
async fn null_engine_per_token_mode_emits_one_event_per_token() {
    let reqs = vec![spec(0, 0.0, 5), spec(1, 0.01, 1)];
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(NullEngine::new(NullMode::PerToken)),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records[0].tokens.len(), 5);
    assert_eq!(
        run.records[0]
            .tokens
            .iter()
            .map(|c| c.index)
            .collect::<Vec<_>>(),
        vec![0, 1, 2, 3, 4]
    );
    assert_eq!(run.records[1].tokens_received(), 1);
}

#[tokio::test(start_paused = true)]
async fn closed_loop_keeps_exactly_n_requests_in_flight() {
    let clients = 4;
    let reqs: Vec<RequestSpec> = (0..22).map(|i| spec(i, 0.0, 2)).collect();
    let run = run_realtime(
        paused(RealtimePlan::closed_loop(reqs, clients)),
        Box::new(DelayEngine::new(0.25)),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records.len(), 22);
    assert!(run.records.iter().all(|r| r.status == RequestStatus::Ok));
    // Requests go out in order, `clients` at a time: request i is in wave i / 4.
    for r in &run.records {
        let wave = (r.id / u64::from(clients)) as f64;
        assert!(
            (r.t_sent - wave * 0.25).abs() < 2e-3 * (wave + 1.0),
            "request {} sent at {}",
            r.id,
            r.t_sent
        );
        // A closed-loop request is due when its client frees up: its wave's start.
        assert!(
            (r.t_scheduled - wave * 0.25).abs() < 2e-3 * (wave + 1.0),
            "request {} due at {}",
            r.id,
            r.t_scheduled
        );
        assert!(r.t_sent >= r.t_scheduled);
    }
    // In flight at any instant: never more than `clients`, and exactly
    // `clients` while the queue lasts.
    let mut edges: Vec<(f64, i32)> = run
        .records
        .iter()
        .flat_map(|r| [(r.t_sent, 1), (r.t_done.unwrap(), -1)])
        .collect();
    edges.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut live = 0;
    let mut peak = 0;
    for (_, d) in edges {
        live += d;
        peak = peak.max(live);
    }
    assert_eq!(peak, clients as i32);
    // 22 requests in waves of 4 → 6 waves of 0.25 s.
    let last = run
        .records
        .iter()
        .filter_map(|r| r.t_done)
        .fold(0.0, f64::max);
    assert!((last - 1.5).abs() < 0.02, "makespan {last}");
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_recorded_and_cancelled_in_the_engine() {
    let engine = DelayEngine::new(2.0);
    let cancels = engine.cancels.clone();
    let shut_down = engine.shut_down.clone();
    let reqs = vec![spec(0, 0.0, 1), spec(1, 0.5, 1)];
    let mut plan = paused(RealtimePlan::open_loop(reqs));
    plan.timeout_s = Some(1.0);
    let run = run_realtime(plan, Box::new(engine), CancelToken::new())
        .await
        .unwrap();
    // The engine task reads its commands (cancels, then shutdown) after the run returns.
    while shut_down.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    for r in &run.records {
        assert_eq!(r.status, RequestStatus::Timeout);
        assert!(r.tokens.is_empty(), "late tokens are not recorded");
        let waited = r.t_done.unwrap() - r.t_sent;
        assert!(
            (1.0..1.002).contains(&waited),
            "request {} timed out after {waited}",
            r.id
        );
    }
    assert_eq!(cancels.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn warm_up_and_window_split_and_limit_the_requests() {
    let reqs: Vec<RequestSpec> = (0..20).map(|i| spec(i, i as f64 * 0.5, 1)).collect();
    let mut plan = paused(RealtimePlan::open_loop(reqs));
    plan.warmup_s = 2.0;
    plan.window_s = Some(5.0);
    let run = run_realtime(plan, Box::new(NullEngine::default()), CancelToken::new())
        .await
        .unwrap();
    assert_eq!(
        run.warmup.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![0, 1, 2, 3]
    );
    assert_eq!(
        run.records.iter().map(|r| r.id).collect::<Vec<_>>(),
        (4..14).collect::<Vec<_>>()
    );
    assert_eq!(run.unsent, 6);
    assert_eq!(run.window_start_s, 2.0);
    assert!((run.window_end_s - 6.5).abs() < 2e-3);
    assert!((run.request_rate() - 10.0 / 4.5).abs() < 0.01);
}

#[tokio::test(start_paused = true)]
async fn closed_loop_window_stops_new_requests() {
    let reqs: Vec<RequestSpec> = (0..100).map(|i| spec(i, 0.0, 1)).collect();
    let mut plan = paused(RealtimePlan::closed_loop(reqs, 2));
    plan.warmup_s = 1.0;
    plan.window_s = Some(2.0);
    let run = run_realtime(plan, Box::new(DelayEngine::new(0.5)), CancelToken::new())
        .await
        .unwrap();
    // sends at 0, 0.5 (warm-up: 4), 1.0, 1.5, 2.0, 2.5 (measured: 8), none from 3.0 on
    assert_eq!(run.warmup.len(), 4);
    assert_eq!(run.records.len(), 8);
    assert_eq!(run.unsent, 88);
}

#[tokio::test(start_paused = true)]
async fn cancellation_keeps_what_was_measured() {
    let cancel = CancelToken::new();
    let c = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs_f64(1.05)).await;
        c.cancel();
    });
    let reqs: Vec<RequestSpec> = (0..10).map(|i| spec(i, i as f64 * 0.3, 1)).collect();
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(DelayEngine::new(0.5)),
        cancel,
    )
    .await
    .unwrap();
    assert!(run.cancelled);
    // sent at 0, 0.3, 0.6, 0.9; finished by 1.05: the first two
    let status: Vec<RequestStatus> = run.records.iter().map(|r| r.status).collect();
    assert_eq!(
        status,
        vec![
            RequestStatus::Ok,
            RequestStatus::Ok,
            RequestStatus::Cancelled,
            RequestStatus::Cancelled
        ]
    );
    assert_eq!(run.unsent, 6);
    assert!((run.window_end_s - 1.05).abs() < 2e-3);
}

#[tokio::test(start_paused = true)]
async fn a_dying_engine_fails_its_requests_and_says_why() {
    let mut engine = DelayEngine::new(0.1);
    engine.fatal_after = Some(2);
    let reqs: Vec<RequestSpec> = (0..5).map(|i| spec(i, i as f64, 1)).collect();
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(engine),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.engine_error.as_deref(), Some("device lost"));
    assert_eq!(run.records[0].status, RequestStatus::Ok);
    assert_eq!(run.records[2].status, RequestStatus::Failed);
    assert_eq!(run.records[2].error.as_deref(), Some("device lost"));
}

#[tokio::test(start_paused = true)]
async fn invalid_plans_name_the_field() {
    let bad = [
        RealtimePlan::closed_loop(vec![spec(0, 0.0, 1)], 0),
        RealtimePlan {
            timeout_s: Some(0.0),
            ..RealtimePlan::open_loop(vec![])
        },
        RealtimePlan::open_loop(vec![spec(0, 0.0, 1), spec(1, f64::NAN, 1)]),
    ];
    for (plan, field) in bad
        .into_iter()
        .zip(["clients", "timeout", "requests[1].arrival_s"])
    {
        let e = run_realtime(plan, Box::new(NullEngine::default()), CancelToken::new())
            .await
            .unwrap_err();
        assert!(e.to_string().contains(field), "{e}");
    }
}

fn turn(id: u64, conv: u64, turn: u32, arrival_s: f64, think_s: f64) -> RequestSpec {
    RequestSpec {
        conversation: Some(fuselab_core::Turn {
            id: conv,
            turn,
            think_s,
        }),
        ..spec(id, arrival_s, 1)
    }
}

#[tokio::test(start_paused = true)]
async fn a_later_turn_is_sent_its_think_time_after_the_previous_turn_ends() {
    // Two conversations of three turns; every request takes 0.5 s. Turn k + 1
    // goes think_s after turn k ended, not at its (earlier) arrival_s.
    let reqs = vec![
        turn(0, 7, 0, 0.0, 0.0),
        turn(1, 8, 0, 0.2, 0.0),
        turn(2, 7, 1, 1.0, 1.0),
        turn(3, 8, 1, 1.2, 2.0),
        turn(4, 7, 2, 1.5, 0.25),
        turn(5, 8, 2, 9.0, 0.0),
    ];
    let run = run_realtime(
        paused(RealtimePlan::open_loop(reqs)),
        Box::new(DelayEngine::new(0.5)),
        CancelToken::new(),
    )
    .await
    .unwrap();
    let sent: Vec<f64> = run.records.iter().map(|r| r.t_sent).collect();
    // conversation 7: 0 → done 0.5, +1.0 → 1.5 → done 2.0, +0.25 → 2.25
    // conversation 8: 0.2 → done 0.7, +2.0 → 2.7 → done 3.2, arrival 9.0 wins
    let want = [0.0, 0.2, 1.5, 2.7, 2.25, 9.0];
    for ((r, t), w) in run.records.iter().zip(&sent).zip(want) {
        assert!(
            (t - w).abs() < 2e-3,
            "request {} sent at {t}, want {w}",
            r.id
        );
        assert!(
            (r.t_scheduled - w).abs() < 1e-9,
            "request {} scheduled {}",
            r.id,
            r.t_scheduled
        );
        assert_eq!(r.status, RequestStatus::Ok);
    }
    assert_eq!(run.unsent, 0);
}

#[tokio::test(start_paused = true)]
async fn turns_after_the_window_are_not_sent_and_closed_loop_turns_are_refused() {
    let reqs = vec![turn(0, 1, 0, 0.0, 0.0), turn(1, 1, 1, 0.1, 3.0)];
    let plan = RealtimePlan {
        window_s: Some(2.0),
        ..paused(RealtimePlan::open_loop(reqs.clone()))
    };
    let run = run_realtime(plan, Box::new(DelayEngine::new(0.5)), CancelToken::new())
        .await
        .unwrap();
    assert_eq!((run.records.len(), run.unsent), (1, 1));
    let e = run_realtime(
        paused(RealtimePlan::closed_loop(reqs, 2)),
        Box::new(NullEngine::default()),
        CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(
        e.to_string().contains("clients") && e.to_string().contains("multi-turn"),
        "{e}"
    );
}
