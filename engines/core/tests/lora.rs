//! Multi-LoRA scheduling: adapter slots bound the distinct adapters running,
//! every batch adapter is resident, LRU loads and evictions are recorded, and
//! blocked requests wait without blocking others.

use std::collections::BTreeSet;

use fuselab_core::RequestSpec;
use fuselab_engine::{
    AdapterStep, Backend, BackendError, ForwardBatch, KvGeometry, NativeEngine, PolicyConfig,
    PolicyKind, StepOutput,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Prices a step at 1 ms plus 1 ms per adapter load; keeps what it was told.
struct Slotted {
    adapters: u32,
    staged: AdapterStep,
    resident: BTreeSet<u32>,
    max_loras: usize,
}

impl Backend for Slotted {
    fn name(&self) -> &str {
        "slotted"
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
    fn lora_adapters(&self) -> u32 {
        self.adapters
    }
    fn stage_adapters(&mut self, step: &AdapterStep) -> Result<(), BackendError> {
        for a in &step.evictions {
            assert!(
                self.resident.remove(a),
                "evicted adapter {a} was not resident"
            );
        }
        for &a in &step.loads {
            assert!(
                self.resident.insert(a),
                "loaded adapter {a} was already resident"
            );
        }
        assert!(self.resident.len() <= self.max_loras);
        self.staged = step.clone();
        Ok(())
    }
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        assert_eq!(self.staged.entries.len(), batch.entries.len());
        for a in self.staged.entries.iter().flatten() {
            assert!(
                self.resident.contains(a),
                "adapter {a} used but not resident"
            );
        }
        Ok(StepOutput {
            duration_s: Some(1e-3 * (1 + self.staged.loads.len()) as f64),
            ..Default::default()
        })
    }
}

fn requests(n: u64, adapters: u32, seed: u64) -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n)
        .map(|id| RequestSpec {
            id,
            arrival_s: id as f64 * 1e-3,
            prompt_len: rng.random_range(8..200),
            output_len: rng.random_range(1..30),
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: (id % 5 != 0).then(|| rng.random_range(0..adapters)),
        })
        .collect()
}

/// Runs the requests; returns (steps, loads, finished, adapters per step).
fn run(kind: PolicyKind, max_loras: u32, specs: &[RequestSpec]) -> (u64, u64, usize) {
    let policy = PolicyConfig::with_knobs(kind, [format!("max_loras={max_loras}")]).unwrap();
    let backend = Slotted {
        adapters: 16,
        staged: AdapterStep::default(),
        resident: BTreeSet::new(),
        max_loras: max_loras as usize,
    };
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    let (mut next, mut now, mut steps, mut loads, mut done) = (0, 0.0, 0, 0, 0);
    loop {
        while next < specs.len() && specs[next].arrival_s <= now {
            engine.submit(&specs[next], now);
            next += 1;
        }
        if !engine.has_work() {
            if next == specs.len() {
                break;
            }
            now = specs[next].arrival_s;
            continue;
        }
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        done += r.finished.iter().filter(|f| f.error.is_none()).count();
        if let Some(rec) = &r.record {
            steps += 1;
            loads += u64::from(rec.adapter_loads);
            assert_eq!(rec.adapter_slots, max_loras);
            assert!(rec.adapter_slots_used <= max_loras);
            assert!(rec.adapters_in_batch <= max_loras);
            assert_eq!(rec.adapter_loads as usize, r.audit.adapters.loads.len());
            // Distinct adapters of everything running stay within the slots.
            let spec_of = |id: u64| specs[id as usize].adapter;
            let running: BTreeSet<u32> = engine
                .requests()
                .iter()
                .filter(|s| s.running)
                .filter_map(|s| spec_of(s.id))
                .collect();
            assert!(running.len() <= max_loras as usize, "{running:?}");
            assert!(
                running
                    .iter()
                    .all(|a| engine.adapter_slots().is_resident(*a))
            );
        }
    }
    engine.check_drained().unwrap();
    (steps, loads, done)
}

#[test]
fn every_policy_serves_every_request_within_its_slots() {
    let specs = requests(120, 12, 1);
    for kind in PolicyKind::ALL {
        for slots in [1, 3, 16] {
            let (_, loads, done) = run(kind, slots, &specs);
            assert_eq!(done, specs.len(), "{kind} with {slots} slots");
            // 12 adapters are used; with 16 slots each is loaded exactly once.
            let used: BTreeSet<u32> = specs.iter().filter_map(|r| r.adapter).collect();
            if slots == 16 {
                assert_eq!(loads, used.len() as u64, "{kind}");
            } else {
                assert!(loads >= used.len() as u64, "{kind} with {slots} slots");
            }
        }
    }
}

/// With a slot per adapter each is loaded once; with fewer, adapters are
/// reloaded (not monotonically: one slot groups requests by adapter).
#[test]
fn too_few_slots_mean_reloads() {
    let specs = requests(200, 12, 2);
    let (_, one, _) = run(PolicyKind::Chunked, 1, &specs);
    let (_, four, _) = run(PolicyKind::Chunked, 4, &specs);
    let (_, all, _) = run(PolicyKind::Chunked, 12, &specs);
    assert!(one > all && four > all, "{one} {four} {all}");
    assert_eq!(all, 12);
}

#[test]
fn a_blocked_adapter_does_not_block_the_requests_behind_it() {
    // Three requests: adapter 0 (long), adapter 1 (must wait for the one
    // slot), then a base-model request that is admitted past it.
    let spec = |id: u64, adapter: Option<u32>, output_len| RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len: 16,
        output_len,
        prefix_group: None,
        prefix_len: 0,
        conversation: None,
        adapter,
    };
    let policy = PolicyConfig::with_knobs(PolicyKind::Chunked, ["max_loras=1"]).unwrap();
    let backend = Slotted {
        adapters: 2,
        staged: AdapterStep::default(),
        resident: BTreeSet::new(),
        max_loras: 1,
    };
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    for s in [spec(0, Some(0), 10), spec(1, Some(1), 2), spec(2, None, 2)] {
        engine.submit(&s, 0.0);
    }
    let first = engine.step(0.0).unwrap();
    let admitted: Vec<u64> = first.audit.admitted.iter().map(|a| a.0).collect();
    assert_eq!(admitted, [0, 2]);
    assert_eq!(first.audit.adapter_deferred, [1]);
    assert_eq!(first.audit.adapters.loads, [0]);
    // Request 1 is admitted only after request 0 ends, evicting adapter 0.
    let mut now = first.duration_s();
    let mut evicted = None;
    while engine.has_work() {
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        if r.audit.admitted.iter().any(|a| a.0 == 1) {
            assert_eq!(r.audit.adapters.loads, [1]);
            evicted = Some(r.audit.adapters.evictions.clone());
        }
    }
    assert_eq!(evicted, Some(vec![0]));
}

#[test]
fn adapters_beyond_the_backend_are_rejected_with_a_reason() {
    let policy = PolicyConfig::new(PolicyKind::Chunked);
    let backend = Slotted {
        adapters: 2,
        staged: AdapterStep::default(),
        resident: BTreeSet::new(),
        max_loras: 1,
    };
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    let mut r = requests(1, 2, 3).remove(0);
    r.adapter = Some(7);
    engine.submit(&r, 0.0);
    let report = engine.step(0.0).unwrap();
    let why = report.finished[0].error.clone().unwrap();
    assert!(why.contains("adapter 7") && why.contains("0..2"), "{why}");
}
