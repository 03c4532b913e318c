//! Speculative decoding on the CPU engine with real numerics: a draft made
//! from the `tiny` target by a documented perturbation (its first layers,
//! seeded noise on every matrix) runs beside it.
//!
//! * Exactness: greedy output ids with speculation equal those without, for
//!   every policy, and under continuous batching with a KV cache small
//!   enough to preempt and recompute.
//! * Measured acceptance falls as the draft's noise grows.
//! * With the draft an exact copy steered by a seeded coin (i.i.d.
//!   acceptance α), block efficiency matches (1 − α^(k+1)) / (1 − α) within 5 %.

use std::collections::BTreeMap;

use fuselab_core::{RequestId, RequestSpec, RequestStatus};
use fuselab_cpu::{CpuBackend, CpuOptions, DraftOptions, Model, ModelShape};
use fuselab_engine::{AcceptanceModel, NativeEngine, PolicyConfig, PolicyKind};

fn target() -> Model {
    static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| Model::random(ModelShape::tiny(), 77).expect("tiny model"))
        .clone()
}

fn backend(kv_budget_bytes: u64, draft: Option<DraftOptions>) -> CpuBackend {
    let b = CpuBackend::new(
        target(),
        CpuOptions {
            kv_budget_bytes,
            ..CpuOptions::default()
        },
    );
    match draft {
        Some(d) => b.with_draft(d).expect("draft"),
        None => b,
    }
}

fn requests(n: u64, output: u32) -> Vec<RequestSpec> {
    (0..n)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: 5 + (id as u32 * 13) % 30,
            output_len: output + (id as u32 * 7) % 9,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect()
}

#[derive(Debug, Default)]
struct Run {
    ids: BTreeMap<RequestId, Vec<u32>>,
    proposed: u64,
    accepted: u64,
    decode_entries: u64,
    preemptions: u64,
}

fn run(b: CpuBackend, policy: &PolicyConfig, specs: &[RequestSpec]) -> Run {
    let mut engine = NativeEngine::new(b, policy.clone()).unwrap();
    for s in specs {
        engine.submit(s, 0.0);
    }
    let mut out = Run::default();
    let mut now = 0.0;
    while engine.has_work() {
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        engine.check_kv().unwrap();
        for f in &r.finished {
            assert_eq!(
                f.status,
                RequestStatus::Ok,
                "{}: {:?}",
                policy.kind,
                f.error
            );
        }
        for (id, t) in r.token_ids {
            out.ids.entry(id).or_default().extend(t);
        }
        if let Some(rec) = r.record {
            out.proposed += u64::from(rec.spec_proposed);
            out.accepted += u64::from(rec.spec_accepted);
            out.decode_entries += u64::from(rec.decode_seqs);
        }
    }
    out.preemptions = engine.preemptions();
    engine.check_drained().unwrap();
    for s in specs {
        assert_eq!(out.ids[&s.id].len() as u32, s.output_len);
    }
    out
}

fn policy(kind: PolicyKind, knobs: &[&str]) -> PolicyConfig {
    PolicyConfig::with_knobs(kind, knobs.iter().copied()).unwrap()
}

#[test]
fn greedy_output_is_exact_under_every_policy_and_after_preemption() {
    let specs = requests(5, 10);
    let draft = DraftOptions {
        layers: Some(2),
        noise: 0.05,
        seed: 5,
        alpha: None,
    };
    for kind in PolicyKind::ALL {
        let extra: &[&str] = match kind {
            PolicyKind::Static | PolicyKind::Prepack => &["batch=3"],
            PolicyKind::Chunked | PolicyKind::SplitFuse => &["budget=24"],
            PolicyKind::Continuous => &[],
        };
        let plain = run(backend(64 << 20, None), &policy(kind, extra), &specs);
        let mut knobs = extra.to_vec();
        knobs.push("spec_k=3");
        let spec = run(
            backend(64 << 20, Some(draft)),
            &policy(kind, &knobs),
            &specs,
        );
        assert!(spec.proposed > 0 && spec.accepted > 0, "{kind}: {spec:?}");
        assert_eq!(spec.ids, plain.ids, "{kind}");
    }
    // A cache of 10 blocks of 16 tokens (target and draft KV): requests are
    // preempted and recomputed, the draft's KV recomputed with them.
    let per_token = fuselab_engine::Backend::kv_bytes_per_token(&backend(1, Some(draft)));
    let knobs = ["spec_k=4", "spec_adaptive=on", "max_len=160"];
    let plain = run(
        backend(64 << 20, None),
        &policy(PolicyKind::Continuous, &[]),
        &specs,
    );
    let spec = run(
        backend(10 * 16 * per_token, Some(draft)),
        &policy(PolicyKind::Continuous, &knobs),
        &specs,
    );
    assert!(spec.preemptions > 0, "no preemption: {spec:?}");
    assert_eq!(spec.ids, plain.ids, "after preemption and recompute");
}

#[test]
fn measured_acceptance_falls_as_the_perturbation_grows() {
    let specs = requests(3, 40);
    let p = policy(PolicyKind::Chunked, &["spec_k=4"]);
    let mut rates = Vec::new();
    for noise in [0.0, 0.003, 0.01, 0.03, 0.1] {
        let draft = DraftOptions {
            layers: None,
            noise,
            seed: 9,
            alpha: None,
        };
        let r = run(backend(64 << 20, Some(draft)), &p, &specs);
        rates.push(r.accepted as f64 / r.proposed as f64);
    }
    assert!(rates[0] > 0.95, "an exact copy is accepted: {rates:?}");
    assert!(
        rates.windows(2).all(|w| w[1] < w[0]),
        "acceptance must fall with noise: {rates:?}"
    );
    assert!(rates[4] < 0.5 * rates[0], "{rates:?}");
}

#[test]
fn block_efficiency_matches_the_closed_form_for_iid_acceptance() {
    let specs: Vec<RequestSpec> = (0..4)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: 8,
            output_len: 500,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    let (alpha, k) = (0.7, 4);
    let draft = DraftOptions {
        alpha: Some(AcceptanceModel::new(alpha, 21).unwrap()),
        ..DraftOptions::default()
    };
    let r = run(
        backend(64 << 20, Some(draft)),
        &policy(PolicyKind::Chunked, &["spec_k=4"]),
        &specs,
    );
    let efficiency = (r.decode_entries + r.accepted) as f64 / r.decode_entries as f64;
    let want = fuselab_engine::expected_block_efficiency(alpha, k);
    assert!(
        (efficiency / want - 1.0).abs() < 0.05,
        "block efficiency {efficiency:.3} vs closed form {want:.3}"
    );
    let rate = r.accepted as f64 / r.proposed as f64;
    // Rounds stop at the first rejection, so the accepted fraction of
    // proposed drafts is below α; the per-position coin is α exactly.
    assert!(rate < alpha && rate > 0.35, "{rate}");
}
