//! The in-process engine on its own OS thread, driven in real time. The
//! backend reports each step's duration, so nothing here depends on how fast
//! the machine is; assertions are about counts, order and consistency only.

use fuselab_core::StepRecord;
use fuselab_core::{RequestSpec, RequestStatus};
use fuselab_engine::{
    Backend, BackendError, ForwardBatch, KvGeometry, NativeEngine, PolicyConfig, PolicyKind,
    StepOutput,
};
use fuselab_harness::{CancelToken, HarnessError, NativeEngineHandle, RealtimePlan, run_realtime};

struct Fixed;

impl Backend for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }
    fn needs_tokens(&self) -> bool {
        false
    }
    fn kv_bytes_per_token(&self) -> u64 {
        1
    }
    fn kv_budget_bytes(&self) -> u64 {
        1 << 20
    }
    fn init_kv(&mut self, _: KvGeometry) -> Result<(), BackendError> {
        Ok(())
    }
    fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
        Ok(StepOutput {
            duration_s: Some(1e-6 * f64::from(b.real_tokens())),
            ..Default::default()
        })
    }
}

fn specs(n: u64) -> Vec<RequestSpec> {
    (0..n)
        .map(|id| RequestSpec {
            id,
            arrival_s: id as f64 * 1e-3,
            prompt_len: 20 + id as u32,
            output_len: 3 + (id % 4) as u32,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_engine_serves_every_request_from_its_thread() {
    for kind in PolicyKind::ALL {
        let handle = NativeEngineHandle::new("fixed", move || {
            Ok(NativeEngine::new(Fixed, PolicyConfig::new(kind))?)
        });
        let mut plan = RealtimePlan::open_loop(specs(12));
        plan.progress = false;
        let run = run_realtime(plan, Box::new(handle), CancelToken::new())
            .await
            .unwrap();
        assert_eq!(run.engine, "fixed");
        assert_eq!(run.records.len(), 12, "{kind:?}");
        for r in &run.records {
            assert_eq!(r.status, RequestStatus::Ok, "{kind:?} {r:?}");
            assert_eq!(r.tokens_received(), u64::from(r.output_len), "{kind:?}");
            let idx: Vec<u32> = r.tokens.iter().map(|c| c.index).collect();
            // Streaming policies send one event per token; static and
            // prepack return a request's tokens at once, as HF generate does.
            let want: Vec<u32> = if PolicyConfig::new(kind).streams() {
                (0..r.output_len).collect()
            } else {
                vec![0]
            };
            assert_eq!(idx, want, "{kind:?}: token events, in order");
            assert!(r.t_sent >= r.t_scheduled);
            assert!(
                r.tokens[0].t >= r.t_sent,
                "{kind:?}: first token before the send"
            );
            assert_eq!(r.t_done, r.t_last_token());
        }
        let prefill: u32 = run.steps.iter().map(|s| s.prefill_tokens).sum();
        assert!(
            prefill >= specs(12).iter().map(|s| s.prompt_len).sum::<u32>(),
            "{kind:?}"
        );
        assert!(run.steps.windows(2).all(|w| w[0].step < w[1].step));
        assert_every_step_recorded(&run.steps, &specs(12), &format!("{kind:?}"));
    }
}

/// Every step the engine ran is in the run, the last one included: step
/// numbers are 0, 1, …, n−1 and the decode tokens add up to what the workload
/// implies (every output token after the first is one decode; nothing here
/// is preempted).
fn assert_every_step_recorded(steps: &[StepRecord], specs: &[RequestSpec], what: &str) {
    let numbers: Vec<u64> = steps.iter().map(|s| s.step).collect();
    assert_eq!(
        numbers,
        (0..steps.len() as u64).collect::<Vec<_>>(),
        "{what}: steps missing"
    );
    assert!(steps.iter().all(|s| s.preemptions == 0), "{what}");
    let decode: u64 = steps.iter().map(|s| u64::from(s.decode_tokens)).sum();
    let implied: u64 = specs.iter().map(|s| u64::from(s.output_len) - 1).sum();
    assert_eq!(decode, implied, "{what}: Σ decode tokens");
    let prefill: u64 = steps.iter().map(|s| u64::from(s.prefill_tokens)).sum();
    let prompts: u64 = specs.iter().map(|s| u64::from(s.prompt_len)).sum();
    assert_eq!(prefill, prompts, "{what}: Σ prefill tokens");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_through_the_native_engine() {
    let handle = NativeEngineHandle::new("fixed", || {
        Ok(NativeEngine::new(
            Fixed,
            PolicyConfig::new(PolicyKind::Chunked),
        )?)
    });
    let mut plan = RealtimePlan::closed_loop(specs(20), 3);
    plan.progress = false;
    let run = run_realtime(plan, Box::new(handle), CancelToken::new())
        .await
        .unwrap();
    assert_eq!(run.records.len(), 20);
    assert!(run.records.iter().all(|r| r.status == RequestStatus::Ok));
    assert!(run.steps.iter().all(|s| s.running + s.waiting <= 3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_that_cannot_be_built_is_a_start_error() {
    let handle = NativeEngineHandle::new("broken", || -> Result<NativeEngine<Fixed>, _> {
        Err("weights file missing".into())
    });
    let e = run_realtime(
        RealtimePlan::open_loop(specs(1)),
        Box::new(handle),
        CancelToken::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(e, HarnessError::EngineStart { .. }));
    assert!(
        e.to_string().contains("broken") && e.to_string().contains("weights file missing"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_sender_sends_everything_in_schedule_order() {
    let reqs: Vec<RequestSpec> = (0..40)
        .map(|id| RequestSpec {
            id,
            // not sorted by id: the sender orders by arrival
            arrival_s: ((id * 7) % 40) as f64 * 5e-4,
            prompt_len: 4,
            output_len: 2,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    let mut plan = RealtimePlan::open_loop(reqs);
    plan.progress = false;
    assert!(plan.spin_s > 0.0, "the default uses the thread sender");
    let run = run_realtime(
        plan,
        Box::new(fuselab_harness::NullEngine::default()),
        CancelToken::new(),
    )
    .await
    .unwrap();
    assert_eq!(run.records.len(), 40);
    let mut by_arrival: Vec<_> = run.records.iter().collect();
    by_arrival.sort_by(|a, b| a.t_scheduled.total_cmp(&b.t_scheduled));
    for w in by_arrival.windows(2) {
        assert!(w[0].t_sent <= w[1].t_sent, "sent out of schedule order");
    }
    for r in &run.records {
        assert!(
            r.t_sent - r.t_scheduled >= -1e-9,
            "request {} sent early",
            r.id
        );
        assert_eq!(r.status, RequestStatus::Ok);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thread_sender_stops_on_cancellation() {
    let reqs: Vec<RequestSpec> = (0..100)
        .map(|id| RequestSpec {
            id,
            arrival_s: id as f64 * 0.5,
            prompt_len: 4,
            output_len: 1,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    // Cancelled before it starts: the sender thread must still stop at once
    // (were it to send on, joining it would wait out the 50 s schedule).
    let cancel = CancelToken::new();
    cancel.cancel();
    let mut plan = RealtimePlan::open_loop(reqs);
    plan.progress = false;
    let run = run_realtime(
        plan,
        Box::new(fuselab_harness::NullEngine::default()),
        cancel,
    )
    .await
    .unwrap();
    assert!(run.cancelled);
    // only the request at t = 0 can have gone out before the cancel
    assert_eq!(run.records.len() as u64 + run.unsent, 100);
    assert!(run.unsent >= 99);
}

/// Building the engine (weights, KV cache, warm-up) is not run time: the
/// schedule's clock starts once the engine is ready, so a request due at
/// t = 0 is sent at once, not after the build. The build here takes 300 ms;
/// had the clock started before it, the request would go out that late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_run_clock_starts_after_the_engine_is_built() {
    let built = std::sync::Arc::new(std::sync::Mutex::new(None));
    let built_at = built.clone();
    let handle = NativeEngineHandle::new("slow-to-build", move || {
        std::thread::sleep(std::time::Duration::from_millis(300));
        *built_at.lock().unwrap() = Some(std::time::Instant::now());
        Ok(NativeEngine::new(
            Fixed,
            PolicyConfig::new(PolicyKind::Chunked),
        )?)
    });
    let mut plan = RealtimePlan::open_loop(specs(1));
    plan.progress = false;
    let started = std::time::Instant::now();
    let run = run_realtime(plan, Box::new(handle), CancelToken::new())
        .await
        .unwrap();
    let build_s = built
        .lock()
        .unwrap()
        .expect("built")
        .duration_since(started)
        .as_secs_f64();
    let r = &run.records[0];
    assert_eq!(r.status, RequestStatus::Ok);
    assert!(
        r.t_sent - r.t_scheduled < 0.5 * build_s,
        "sent {:.3} s after its schedule; the build took {build_s:.3} s",
        r.t_sent - r.t_scheduled
    );
}
