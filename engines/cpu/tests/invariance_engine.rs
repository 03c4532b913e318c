//! Invariance tests through the real engine: the same seeded requests run
//! under every scheduling policy (static, continuous, chunked at budgets 1, 7
//! and 64, splitfuse, prepack) and under continuous batching with a KV cache so
//! small that requests are preempted and recomputed (with and without the
//! prefix cache, which lets a recompute reuse its own blocks). Every sampled logits
//! vector must equal the dense oracle's within 1e-4 relative, and every
//! schedule must generate the same tokens.

mod common;

use std::collections::BTreeMap;

use common::{MakeBackend, OracleCache, Recorder, backends, check_against_oracle};
use fuselab_core::{RequestId, RequestSpec};
use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn requests() -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    (0..6)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: rng.random_range(3..40),
            output_len: rng.random_range(6..14),
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect()
}

struct Outcome {
    sequences: BTreeMap<RequestId, Vec<u32>>,
    checked: usize,
    mixed_steps: usize,
    multi_prefill_steps: usize,
    recomputes: usize,
    preemptions: u64,
}

fn run(
    make: MakeBackend,
    cache: &mut OracleCache,
    kind: PolicyKind,
    knobs: &[&str],
    kv_budget: u64,
    what: &str,
) -> Outcome {
    let policy = PolicyConfig::with_knobs(kind, knobs.iter().copied()).unwrap();
    let mut engine = NativeEngine::new(Recorder::new(make(kv_budget, 4)), policy).unwrap();
    let reqs = requests();
    for r in &reqs {
        engine.submit(r, 0.0);
    }
    let mut now = 0.0;
    let mut finished = 0;
    let mut tokens: BTreeMap<RequestId, u32> = BTreeMap::new();
    while engine.has_work() {
        let report = engine.step(now).unwrap();
        now += report.duration_s();
        for e in &report.events {
            *tokens.entry(e.request).or_default() += e.n_tokens;
        }
        for f in &report.finished {
            assert_eq!(f.status, fuselab_core::RequestStatus::Ok, "{what}: {f:?}");
            finished += 1;
        }
        engine.check_kv().unwrap();
    }
    engine.check_drained().unwrap();
    assert_eq!(finished, reqs.len(), "{what}");
    for r in &reqs {
        assert_eq!(
            tokens[&r.id], r.output_len,
            "{what}: request {} token count",
            r.id
        );
    }
    let preemptions = engine.preemptions();
    let rec = engine.backend_mut();
    let logits = rec.inner.take_logits();
    let checked = check_against_oracle(rec.inner.as_ref(), cache, &logits, &rec.tokens, what);
    let expected: usize = reqs.iter().map(|r| r.output_len as usize).sum();
    assert!(
        checked >= expected,
        "{what}: {checked} logits for {expected} sampled tokens"
    );
    Outcome {
        sequences: rec.tokens.clone(),
        checked,
        mixed_steps: rec.mixed_steps,
        multi_prefill_steps: rec.multi_prefill_steps,
        recomputes: rec.recomputes,
        preemptions,
    }
}

#[test]
fn every_policy_yields_the_oracle_logits() {
    for (name, make) in backends() {
        let mut cache = OracleCache::new();
        let big = 64 << 20;
        let cases: Vec<(&str, PolicyKind, Vec<&str>, u64)> = vec![
            (
                "static",
                PolicyKind::Static,
                vec!["batch=4", "block=4"],
                big,
            ),
            ("prepack", PolicyKind::Prepack, vec!["batch=6"], big),
            ("continuous", PolicyKind::Continuous, vec![], big),
            (
                "chunked budget 1",
                PolicyKind::Chunked,
                vec!["budget=1", "block=4"],
                big,
            ),
            (
                "chunked budget 7",
                PolicyKind::Chunked,
                vec!["budget=7"],
                big,
            ),
            (
                "chunked budget 64",
                PolicyKind::Chunked,
                vec!["budget=64", "block=8"],
                big,
            ),
            (
                "splitfuse budget 7",
                PolicyKind::SplitFuse,
                vec!["budget=7"],
                big,
            ),
            // 6 blocks of 16 tokens for ~6 × 35 tokens: decodes run out of
            // blocks, the newest requests are preempted and recomputed.
            (
                "continuous preempting",
                PolicyKind::Continuous,
                vec!["prefix_cache=false"],
                6 * 16 * 2048,
            ),
            // The same with the prefix cache: a recompute starts after the
            // blocks of its own that are still cached.
            (
                "continuous preempting cached",
                PolicyKind::Continuous,
                vec![],
                6 * 16 * 2048,
            ),
        ];
        let mut outcomes = Vec::new();
        for (label, kind, knobs, kv) in cases {
            let what = format!("{name} {label}");
            outcomes.push((label, run(make, &mut cache, kind, &knobs, kv, &what)));
        }
        let by = |l: &str| &outcomes.iter().find(|(x, _)| *x == l).unwrap().1;
        assert!(
            by("chunked budget 7").mixed_steps > 0,
            "chunked budget 7 never mixed prefill and decode"
        );
        assert!(
            by("prepack").multi_prefill_steps > 0,
            "prepack never packed two prompts"
        );
        let p = by("continuous preempting");
        assert!(
            p.preemptions > 0 && p.recomputes > 0,
            "no preemption happened ({} / {})",
            p.preemptions,
            p.recomputes
        );
        assert!(by("continuous preempting cached").preemptions > 0);
        let reference = &outcomes[0].1.sequences;
        for (label, o) in &outcomes {
            assert!(o.checked > 0);
            assert_eq!(
                &o.sequences, reference,
                "{name} {label} generated other tokens than static"
            );
        }
    }
}
