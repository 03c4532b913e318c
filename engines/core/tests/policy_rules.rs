//! Each policy's defining rule, checked step by step against what the
//! engine's own state says was runnable before the step
//! ([`NativeEngine::requests`]), never against the scheduler's own audit.

use std::collections::BTreeSet;

use fuselab_core::{RequestId, RequestSpec};
use fuselab_engine::{
    Backend, BackendError, BatchShape, ForwardBatch, KvGeometry, NativeEngine, PolicyConfig,
    PolicyKind, RequestState, StepOutput, StepReport,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// One byte of KV per token (the budget is in tokens); keeps the last batch.
struct Cheap {
    kv_tokens: u64,
    last: ForwardBatch,
}

impl Backend for Cheap {
    fn name(&self) -> &str {
        "cheap"
    }
    fn needs_tokens(&self) -> bool {
        false
    }
    fn kv_bytes_per_token(&self) -> u64 {
        1
    }
    fn kv_budget_bytes(&self) -> u64 {
        self.kv_tokens
    }
    fn init_kv(&mut self, _: KvGeometry) -> Result<(), BackendError> {
        Ok(())
    }
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.last = batch.clone();
        Ok(StepOutput {
            duration_s: Some(1e-3 + 1e-6 * f64::from(batch.real_tokens())),
            ..Default::default()
        })
    }
}

/// What one step saw and did.
struct Step<'a> {
    before: &'a [RequestState],
    batch: &'a ForwardBatch,
    report: &'a StepReport,
    after: &'a [RequestState],
}

/// Runs `specs` on a virtual clock, calling `check` after every step.
fn drive(specs: &[RequestSpec], policy: PolicyConfig, kv_tokens: u64, mut check: impl FnMut(Step)) {
    let backend = Cheap {
        kv_tokens,
        last: ForwardBatch::default(),
    };
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    let (mut next, mut now) = (0, 0.0);
    let mut steps = 0;
    loop {
        while next < specs.len() && specs[next].arrival_s <= now {
            engine.submit(&specs[next], specs[next].arrival_s);
            next += 1;
        }
        if !engine.has_work() {
            if next == specs.len() {
                break;
            }
            now = specs[next].arrival_s;
            continue;
        }
        let before = engine.requests();
        let report = engine.step(now).unwrap();
        now += report.duration_s();
        let after = engine.requests();
        if report.record.is_some() {
            check(Step {
                before: &before,
                batch: &engine.backend().last,
                report: &report,
                after: &after,
            });
        }
        steps += 1;
        assert!(steps < 100_000, "no convergence");
    }
    engine.check_drained().unwrap();
}

fn spec(id: u64, arrival_s: f64, prompt_len: u32, output_len: u32) -> RequestSpec {
    RequestSpec {
        id,
        arrival_s,
        prompt_len,
        output_len,
        prefix_group: None,
        prefix_len: 0,
        conversation: None,
        adapter: None,
    }
}

fn random_specs(seed: u64, n: u64, max_prompt: u32) -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut t = 0.0;
    (0..n)
        .map(|id| {
            t += rng.random_range(0.0..0.01);
            spec(
                id,
                t,
                rng.random_range(1..=max_prompt),
                rng.random_range(1..=40),
            )
        })
        .collect()
}

fn running_ids(states: &[RequestState]) -> BTreeSet<RequestId> {
    states.iter().filter(|s| s.running).map(|s| s.id).collect()
}

#[test]
fn decode_first_policies_run_every_decode_then_fill_the_budget_with_prompt_chunks_fcfs() {
    for (kind, seed, budget) in [PolicyKind::Chunked, PolicyKind::SplitFuse]
        .into_iter()
        .flat_map(|k| (0..8).flat_map(move |s| [64u32, 512, 2048].map(|b| (k, s, b))))
    {
        let specs = random_specs(seed, 40, 3000);
        let knobs = [format!("budget={budget}"), "max_seqs=1024".into()];
        let policy = PolicyConfig::with_knobs(kind, &knobs).unwrap();
        let mut full_steps = 0;
        drive(&specs, policy, 1 << 24, |s| {
            let what = format!("{kind} seed {seed} budget {budget}");
            // Decode-first: every running decode is in the step.
            let decodes: BTreeSet<RequestId> = s
                .before
                .iter()
                .filter(|r| r.decoding())
                .map(|r| r.id)
                .collect();
            let in_step: BTreeSet<RequestId> = s
                .batch
                .entries
                .iter()
                .filter(|e| e.is_decode)
                .map(|e| e.request)
                .collect();
            assert_eq!(in_step, decodes, "{what}: decodes left out");
            // Then prompt chunks fill the budget: the running partial
            // prefills first, then the queue, in order, only the last cut.
            let prompt_work: Vec<(RequestId, u32)> = s
                .before
                .iter()
                .filter(|r| !r.done && r.prefill_left() > 0)
                .map(|r| (r.id, r.prefill_left()))
                .collect();
            let left: u32 = prompt_work.iter().map(|w| w.1).sum();
            let want = budget.min(decodes.len() as u32 + left);
            assert_eq!(s.batch.real_tokens(), want, "{what}: budget not filled");
            full_steps += u32::from(want == budget);
            let chunks: Vec<(RequestId, u32)> = s
                .batch
                .entries
                .iter()
                .filter(|e| !e.is_decode)
                .map(|e| (e.request, e.n_tokens))
                .collect();
            for (i, (&(id, n), &(want_id, want_n))) in chunks.iter().zip(&prompt_work).enumerate() {
                assert_eq!(id, want_id, "{what}: prompts out of FCFS order");
                if i + 1 < chunks.len() {
                    assert_eq!(n, want_n, "{what}: a chunk before the last was cut");
                }
            }
        });
        assert!(
            full_steps > 0,
            "{kind} seed {seed} budget {budget}: never full"
        );
    }
}

#[test]
fn continuous_preempts_the_newest_running_request() {
    // Six requests of 30 + 40 tokens in 16 blocks of 16: the first prefills fit,
    // decodes then run out of blocks and the newest requests must give way.
    let specs: Vec<RequestSpec> = (0..6).map(|id| spec(id, 0.0, 30, 40)).collect();
    let policy = PolicyConfig::with_knobs(PolicyKind::Continuous, ["block=16"]).unwrap();
    let mut preemptions = 0;
    drive(&specs, policy, 16 * 16, |s| {
        let was_running: Vec<RequestId> = s
            .before
            .iter()
            .filter(|r| r.running)
            .map(|r| r.id)
            .collect();
        let now_running = running_ids(s.after);
        let finished: BTreeSet<RequestId> = s.report.finished.iter().map(|f| f.id).collect();
        let preempted: Vec<RequestId> = was_running
            .iter()
            .copied()
            .filter(|id| !now_running.contains(id) && !finished.contains(id))
            .collect();
        if preempted.is_empty() {
            return;
        }
        preemptions += preempted.len();
        // The victims are the newest arrivals among those running.
        let mut by_age = was_running.clone();
        by_age.sort_unstable();
        let newest = &by_age[by_age.len() - preempted.len()..];
        let mut victims = preempted.clone();
        victims.sort_unstable();
        assert_eq!(
            victims, newest,
            "preempted {preempted:?} of {was_running:?}"
        );
        for id in &preempted {
            let r = s.after.iter().find(|r| r.id == *id).unwrap();
            assert_eq!(r.computed, 0, "request {id} keeps no KV: it recomputes");
        }
    });
    assert!(preemptions > 0, "the scenario must preempt");
}

#[test]
fn static_admits_nothing_until_its_whole_batch_ends_and_returns_tokens_then() {
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let specs: Vec<RequestSpec> = (0..10)
        .map(|id| spec(id, 0.0, rng.random_range(5..60), rng.random_range(1..20)))
        .collect();
    for kind in [PolicyKind::Static, PolicyKind::Prepack] {
        let policy = PolicyConfig::with_knobs(kind, ["batch=4"]).unwrap();
        let mut prefill_steps = 0;
        drive(&specs, policy, 1 << 20, |s| {
            let before = running_ids(s.before);
            let admitted: Vec<RequestId> =
                running_ids(s.after).difference(&before).copied().collect();
            let is_prefill = s.batch.prefill_tokens() > 0;
            if before.is_empty() {
                assert!(is_prefill, "{kind}: a new batch starts with its prefill");
                prefill_steps += 1;
            } else {
                assert!(
                    admitted.is_empty(),
                    "{kind}: {admitted:?} joined a running batch"
                );
                assert!(!is_prefill, "{kind}: prefill inside a running batch");
                let BatchShape::Padded { rows, .. } = s.batch.shape else {
                    panic!("{kind}: decode steps are padded");
                };
                // Finished rows keep their place: the whole batch is computed.
                let batch_rows = if kind == PolicyKind::Static {
                    before.len() as u32
                } else {
                    rows
                };
                assert_eq!(
                    rows, batch_rows,
                    "{kind}: rows dropped before the batch ended"
                );
            }
            // HF generate returns nothing until the batch ends, then everything.
            let batch_over = running_ids(s.after).is_empty();
            for ev in &s.report.events {
                assert!(batch_over, "{kind}: a token before the batch ended");
                let spec = &specs[ev.request as usize];
                assert_eq!((ev.index, ev.n_tokens), (0, spec.output_len), "{kind}");
            }
            if batch_over {
                assert_eq!(s.report.events.len(), s.report.finished.len(), "{kind}");
            }
        });
        assert_eq!(prefill_steps, 3, "{kind}: 10 requests in batches of 4");
    }
}

#[test]
fn static_with_streaming_on_returns_each_token_as_it_is_generated() {
    let specs: Vec<RequestSpec> = (0..4).map(|id| spec(id, 0.0, 10, 1 + id as u32)).collect();
    let policy = PolicyConfig::with_knobs(PolicyKind::Static, ["stream=on"]).unwrap();
    let mut events = 0;
    drive(&specs, policy, 1 << 20, |s| {
        events += s.report.events.len();
        assert!(s.report.events.iter().all(|e| e.n_tokens == 1));
    });
    assert_eq!(events, 1 + 2 + 3 + 4);
}

#[test]
fn prepack_packs_rows_best_fit_decreasing_not_first_fit() {
    // Longest prompt 10 is the row capacity. Best fit: {10} {7} {4, 4, 2};
    // first fit would give {10} {7, 2} {4, 4}.
    let specs: Vec<RequestSpec> = [10, 7, 4, 4, 2]
        .iter()
        .enumerate()
        .map(|(id, &p)| spec(id as u64, 0.0, p, 2))
        .collect();
    let policy = PolicyConfig::with_knobs(PolicyKind::Prepack, ["batch=5"]).unwrap();
    let mut checked = false;
    drive(&specs, policy, 1 << 20, |s| {
        if s.batch.prefill_tokens() == 0 {
            return;
        }
        let row = |id: RequestId| {
            s.batch
                .entries
                .iter()
                .find(|e| e.request == id)
                .and_then(|e| e.row)
                .unwrap()
        };
        assert_eq!(
            s.batch.shape,
            BatchShape::Padded {
                rows: 3,
                row_len: 10
            }
        );
        assert_eq!(row(4), row(2), "the 2-token prompt joins the fuller row");
        assert_eq!(row(2), row(3));
        assert_ne!(row(4), row(1), "first fit would put it beside the 7");
        checked = true;
    });
    assert!(checked);
}
