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

/// A model of 16 tokens, small enough to sample thousands of requests.
fn tiny_vocab_16() -> Model {
    let shape = ModelShape {
        name: "tiny-v16".into(),
        n_layers: 2,
        hidden: 64,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 32,
        ffn: 128,
        vocab: 16,
        context_len: 64,
        ..ModelShape::tiny()
    };
    Model::random(shape, 3).expect("tiny-v16")
}

/// Output ids and, per request, the logits that chose its second output token.
fn sample_run(
    b: CpuBackend,
    policy: &PolicyConfig,
    specs: &[RequestSpec],
) -> (Run, BTreeMap<RequestId, Vec<f32>>) {
    let mut engine = NativeEngine::new(b, policy.clone()).unwrap();
    for s in specs {
        engine.submit(s, 0.0);
    }
    let mut out = Run::default();
    let mut logits = BTreeMap::new();
    let mut now = 0.0;
    while engine.has_work() {
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        engine.check_kv().unwrap();
        for (id, t) in r.token_ids {
            out.ids.entry(id).or_default().extend(t);
        }
        if let Some(rec) = r.record {
            out.proposed += u64::from(rec.spec_proposed);
            out.accepted += u64::from(rec.spec_accepted);
        }
        for l in engine.backend_mut().take_logits() {
            // The logits at the first output token's position choose the second.
            if l.pos == specs[l.request as usize].prompt_len {
                logits.insert(l.request, l.logits);
            }
        }
    }
    engine.check_drained().unwrap();
    for s in specs {
        assert_eq!(out.ids[&s.id].len() as u32, s.output_len);
    }
    (out, logits)
}

/// Pearson's χ² of `tokens` against the expected counts `expected`.
fn chi_square(tokens: &[u32], expected: &[f64]) -> f64 {
    let mut counts = vec![0f64; expected.len()];
    for &t in tokens {
        counts[t as usize] += 1.0;
    }
    counts
        .iter()
        .zip(expected)
        .map(|(o, e)| (o - e) * (o - e) / e.max(1e-9))
        .sum()
}

#[test]
fn at_a_temperature_speculative_sampling_keeps_the_target_distribution() {
    let model = tiny_vocab_16();
    let sampler = fuselab_engine::Sampler::new(1.0, 11).unwrap();
    // Identical prompts: each request's second token is drawn from the target
    // given the prompt and its own first token, which both runs share.
    let specs: Vec<RequestSpec> = (0..1500)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: 6,
            output_len: 4,
            prefix_group: Some(0),
            prefix_len: 6,
            conversation: None,
            adapter: None,
        })
        .collect();
    let opts = CpuOptions {
        kv_budget_bytes: 64 << 20,
        keep_logits: true,
        sampling: Some(sampler),
        ..CpuOptions::default()
    };
    let plain_policy = policy(PolicyKind::Continuous, &[]);
    let (plain, target_logits) =
        sample_run(CpuBackend::new(model.clone(), opts), &plain_policy, &specs);
    let draft = DraftOptions {
        layers: Some(1),
        noise: 0.3,
        seed: 5,
        alpha: None,
    };
    let spec_backend = CpuBackend::new(model.clone(), opts)
        .with_draft(draft)
        .unwrap();
    let (spec, _) = sample_run(
        spec_backend,
        &policy(PolicyKind::Continuous, &["spec_k=2"]),
        &specs,
    );
    let rate = spec.accepted as f64 / spec.proposed as f64;
    assert!(rate > 0.2 && rate < 0.95, "acceptance {rate}");
    // The expected counts of the second token under the target, and under the
    // draft alone (what a rule that kept every draft would produce).
    let draft_model = model.perturbed(1, 0.3, 5).unwrap();
    let (draft_run, draft_logits) =
        sample_run(CpuBackend::new(draft_model, opts), &plain_policy, &specs);
    let mut want = vec![0f64; 16];
    let (mut plain_t2, mut spec_t2) = (Vec::new(), Vec::new());
    // Where the draft's own run drew the same first token: expected counts of
    // the draft alone and of the target over those requests.
    let (mut draft_want, mut target_same) = (vec![0f64; 16], vec![0f64; 16]);
    let add = |acc: &mut [f64], p: Vec<f32>| {
        acc.iter_mut().zip(p).for_each(|(a, b)| *a += f64::from(b));
    };
    for s in &specs {
        let (p, q) = (&plain.ids[&s.id], &spec.ids[&s.id]);
        assert_eq!(
            p[0], q[0],
            "request {}: the first token comes from the same prefill",
            s.id
        );
        add(&mut want, sampler.probs(&target_logits[&s.id]));
        plain_t2.push(p[1]);
        spec_t2.push(q[1]);
        if draft_run.ids[&s.id][0] == p[0] {
            add(&mut draft_want, sampler.probs(&draft_logits[&s.id]));
            add(&mut target_same, sampler.probs(&target_logits[&s.id]));
        }
    }
    // χ² with 15 degrees of freedom: 37.7 is its 0.1 % quantile.
    let plain_chi = chi_square(&plain_t2, &want);
    let spec_chi = chi_square(&spec_t2, &want);
    let draft_gap: f64 = draft_want
        .iter()
        .zip(&target_same)
        .map(|(d, w)| (d - w) * (d - w) / w.max(1e-9))
        .sum();
    eprintln!(
        "χ² against the target: plain {plain_chi:.1}, speculative {spec_chi:.1} (acceptance {rate:.3}); the draft's expected counts lie {draft_gap:.0} away"
    );
    assert!(plain_chi < 37.7, "the plain sampler: χ² {plain_chi}");
    assert!(spec_chi < 37.7, "speculative sampling: χ² {spec_chi}");
    // A rule that kept the draft's tokens would score about this gap plus its
    // 15 degrees of freedom: far above the bound the two samplers meet.
    assert!(
        draft_gap > 100.0,
        "the test must tell the draft's distribution from the target's: {draft_gap}"
    );
}

#[test]
fn at_a_temperature_an_exact_copy_draft_is_always_accepted() {
    let opts = CpuOptions {
        kv_budget_bytes: 64 << 20,
        sampling: Some(fuselab_engine::Sampler::new(0.8, 2).unwrap()),
        ..CpuOptions::default()
    };
    let b = CpuBackend::new(target(), opts)
        .with_draft(DraftOptions {
            noise: 0.0,
            ..DraftOptions::default()
        })
        .unwrap();
    let r = run(
        b,
        &policy(PolicyKind::Chunked, &["spec_k=3"]),
        &requests(4, 30),
    );
    // min(1, p/q) = 1 when q = p (up to the float rounding of two forwards).
    let rate = r.accepted as f64 / r.proposed as f64;
    assert!(rate > 0.99, "{rate}: {r:?}");
    let e = CpuBackend::new(target(), opts)
        .with_draft(DraftOptions {
            alpha: Some(AcceptanceModel::new(0.5, 1).unwrap()),
            ..DraftOptions::default()
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("--spec-alpha"), "{e}");
}
