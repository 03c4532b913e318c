//! Speculative decoding on the CUDA engine (GPU tests; they skip with a
//! printed reason without a GPU and fail instead under `FUSELAB_REQUIRE_GPU=1`).
//!
//! * Exactness: greedy output ids with speculation equal those without, for
//!   every policy, with a `tiny-128` draft made from its target (2 of 4
//!   layers, seeded noise) and with a Llama-3.2-1B-shaped draft
//!   (`llama3.2-1b-h128`) beside Llama-3-8B, and under continuous batching
//!   with a KV cache small enough to preempt and recompute. bf16 logits are
//!   rounded, so two runs that batch a position differently (a verify row
//!   beside others, a prompt split into other chunks) can round nearly equal
//!   top logits apart: a request may diverge only where the token the
//!   speculating run picked has, in the plain run's logits at that position,
//!   a value within a few bf16 ulps of the plain run's top one. Every such tie
//!   is printed; any other difference fails.
//! * KV blocks of rejected drafts are returned: the block manager is checked
//!   after every step and drained at the end of every run.
//! * With a modelled acceptance α the block efficiency matches
//!   (1 − α^(k+1)) / (1 − α) within 5 %.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use fuselab_core::{RequestId, RequestSpec, RequestStatus};
use fuselab_cuda::{CudaBackend, CudaOptions, DraftOptions, DraftSource, ModelShape};
use fuselab_engine::{
    AcceptanceModel, Backend, BackendError, ForwardBatch, NativeEngine, PolicyConfig, PolicyKind,
    StepOutput,
};
use fuselab_kernels::cuda::gpu_or_skip;

mod common;
use common::cuda_or_skip;

/// bf16 ulps within which two logits count as tied.
const TIE_ULPS: f32 = 4.0;

/// The largest logit at one generated position and every other within
/// [`TIE_ULPS`] of it: (argmax, its value, the near ties with their values).
type Top = (u32, f32, Vec<(u32, f32)>);

/// The target's top logit and its near ties per (request, position of the generated token).
type TopLog = Arc<Mutex<BTreeMap<(RequestId, u32), Top>>>;

fn top(l: &[f32]) -> Top {
    let mut best = 0;
    for (i, v) in l.iter().enumerate() {
        if *v > l[best] {
            best = i;
        }
    }
    let floor = l[best] - TIE_ULPS * bf16_ulp(l[best]);
    let near = l
        .iter()
        .enumerate()
        .filter(|&(i, &v)| i != best && v >= floor)
        .map(|(i, &v)| (i as u32, v))
        .collect();
    (best as u32, l[best], near)
}

/// Forwards everything to the CUDA backend and records the target's top two
/// logits of every position it samples or verifies.
struct Recording {
    inner: CudaBackend,
    log: TopLog,
}

impl Backend for Recording {
    fuselab_engine::forward_backend_to_inner!();

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.inner.draft_forward(batch)
    }
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let out = self.inner.forward(batch)?;
        // Logits come in entry order: one row per sampled entry, k + 1 per verify entry.
        let mut rows = out.logits.iter();
        let mut log = self.log.lock().unwrap();
        for e in batch.entries.iter().filter(|e| e.n_tokens > 0) {
            let verify = e.is_decode && e.n_tokens > 1;
            if !(e.sample || verify) {
                continue;
            }
            let n = if verify { e.n_tokens } else { 1 };
            for j in 0..n {
                let (id, l) = rows.next().expect("a logits row per sampled position");
                assert_eq!(*id, e.request);
                log.insert((e.request, e.start_pos + e.n_tokens - n + j + 1), top(l));
            }
        }
        Ok(out)
    }
}

#[derive(Debug, Default)]
struct Run {
    ids: BTreeMap<RequestId, Vec<u32>>,
    proposed: u64,
    accepted: u64,
    decode_entries: u64,
    preemptions: u64,
}

fn run<B: Backend>(b: B, policy: &PolicyConfig, specs: &[RequestSpec]) -> Run {
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
        assert_eq!(
            out.ids[&s.id].len() as u32,
            s.output_len,
            "request {}",
            s.id
        );
    }
    out
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

fn policy(kind: PolicyKind, knobs: &[&str]) -> PolicyConfig {
    PolicyConfig::with_knobs(kind, knobs.iter().copied()).unwrap()
}

/// One bf16 ulp at `x` (8 significant bits).
fn bf16_ulp(x: f32) -> f32 {
    2f32.powi(x.abs().max(f32::MIN_POSITIVE).log2().floor() as i32 - 7)
}

/// Checks `spec` against `plain` (see the module docs); returns (tokens
/// compared equal, near-tie divergences).
fn compare(
    what: &str,
    specs: &[RequestSpec],
    plain: &Run,
    plain_top: &TopLog,
    spec: &Run,
) -> (usize, usize) {
    let top = plain_top.lock().unwrap();
    let (mut equal, mut ties, mut total) = (0, 0, 0);
    for s in specs {
        let (want, got) = (&plain.ids[&s.id], &spec.ids[&s.id]);
        total += want.len();
        let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) else {
            equal += want.len();
            continue;
        };
        equal += i;
        let pos = s.prompt_len + i as u32;
        let (first, v1, near) = top
            .get(&(s.id, pos))
            .unwrap_or_else(|| panic!("{what}: no logits of request {} at {pos}", s.id));
        assert_eq!(
            *first, want[i],
            "{what}: the plain run's token is its argmax"
        );
        let Some(&(_, v2)) = near.iter().find(|(t, _)| *t == got[i]) else {
            panic!(
                "{what}: request {} output {i} (position {pos}): {} with speculation, {} without; \
                 the plain run's top is {first} ({v1}) and its near ties (within {TIE_ULPS} ulps) \
                 are {near:?}: not a bf16 tie",
                s.id, got[i], want[i]
            );
        };
        let gap = v1 - v2;
        eprintln!(
            "{what}: request {} diverges at output {i} on a bf16 tie: {first} ({v1}) vs {} ({v2}), \
             gap {gap} = {:.1} ulp, {} tokens within {TIE_ULPS} ulps of the top",
            s.id,
            got[i],
            gap / bf16_ulp(*v1),
            near.len() + 1
        );
        ties += 1;
    }
    assert!(
        2 * equal >= total,
        "{what}: only {equal} of {total} tokens compared equal before ties"
    );
    (equal, ties)
}

struct Case {
    target: ModelShape,
    draft: DraftSource,
    test: &'static str,
}

impl Case {
    fn backend(&self, kv_budget: u64, draft: Option<&DraftOptions>) -> Option<(Recording, TopLog)> {
        let opts = CudaOptions {
            kv_budget_bytes: Some(kv_budget),
            keep_logits: true,
            ..CudaOptions::default()
        };
        let b = cuda_or_skip(self.test, || {
            CudaBackend::random(self.target.clone(), 42, opts)
        })?;
        let inner = match draft {
            Some(d) => b.with_draft(d.clone()).expect("the draft"),
            None => b,
        };
        let log = TopLog::default();
        Some((
            Recording {
                inner,
                log: log.clone(),
            },
            log,
        ))
    }

    /// Every policy with and without `spec_k = 3`, then continuous batching
    /// preempting and recomputing with `spec_k = 4` adaptive.
    fn exactness(&self) {
        if !gpu_or_skip(self.test) {
            return;
        }
        let specs = requests(5, 10);
        let draft = DraftOptions {
            source: self.draft.clone(),
            alpha: None,
        };
        let roomy = 64 << 20;
        let roomy = roomy * (self.target.kv_bytes_per_token(1, 2) / 4096).max(1);
        let (mut equal, mut ties) = (0, 0);
        for kind in PolicyKind::ALL {
            let extra: &[&str] = match kind {
                PolicyKind::Static | PolicyKind::Prepack => &["batch=3"],
                PolicyKind::Chunked | PolicyKind::SplitFuse => &["budget=24"],
                PolicyKind::Continuous => &[],
            };
            let Some((b, plain_top)) = self.backend(roomy, None) else {
                return;
            };
            let plain = run(b, &policy(kind, extra), &specs);
            let mut knobs = extra.to_vec();
            knobs.push("spec_k=3");
            let (b, _) = self.backend(roomy, Some(&draft)).unwrap();
            let spec = run(b, &policy(kind, &knobs), &specs);
            assert!(spec.proposed > 0, "{kind}: {spec:?}");
            let (e, t) = compare(
                &format!("{} {kind}", self.test),
                &specs,
                &plain,
                &plain_top,
                &spec,
            );
            eprintln!(
                "{} {kind}: {e} tokens equal, {t} bf16 ties; {} of {} drafts accepted",
                self.test, spec.accepted, spec.proposed
            );
            equal += e;
            ties += t;
        }
        // A cache of 10 blocks of 16 tokens (target and draft KV): requests are
        // preempted and recomputed, the draft's KV recomputed with them.
        let (probe, _) = self.backend(roomy, Some(&draft)).unwrap();
        let per_token = probe.kv_bytes_per_token();
        drop(probe);
        let knobs = ["spec_k=4", "spec_adaptive=on", "max_len=160"];
        let (b, plain_top) = self.backend(roomy, None).unwrap();
        let plain = run(b, &policy(PolicyKind::Continuous, &[]), &specs);
        let (b, _) = self.backend(10 * 16 * per_token, Some(&draft)).unwrap();
        let spec = run(b, &policy(PolicyKind::Continuous, &knobs), &specs);
        assert!(spec.preemptions > 0, "no preemption: {spec:?}");
        let (e, t) = compare(
            &format!("{} preempting", self.test),
            &specs,
            &plain,
            &plain_top,
            &spec,
        );
        eprintln!(
            "{} preempting: {} preemptions, {e} tokens equal, {t} bf16 ties",
            self.test, spec.preemptions
        );
        equal += e;
        ties += t;
        eprintln!(
            "{}: {equal} tokens equal, {ties} bf16 ties in all",
            self.test
        );
    }
}

#[test]
fn greedy_output_with_a_draft_made_from_tiny_128_is_exact_under_every_policy() {
    Case {
        target: ModelShape::tiny_128(),
        draft: DraftSource::Perturbed {
            layers: 2,
            noise: 0.05,
            seed: 5,
        },
        test: "greedy_output_with_a_draft_made_from_tiny_128_is_exact_under_every_policy",
    }
    .exactness();
}

#[test]
fn greedy_output_of_llama3_8b_with_a_llama3_2_1b_shaped_draft_is_exact_under_every_policy() {
    Case {
        target: ModelShape::llama3_8b(),
        draft: DraftSource::Model {
            shape: ModelShape::llama3_2_1b_h128(),
            seed: 7,
        },
        test: "greedy_output_of_llama3_8b_with_a_llama3_2_1b_shaped_draft_is_exact_under_every_policy",
    }
    .exactness();
}

#[test]
fn a_modelled_acceptance_gives_the_closed_form_block_efficiency() {
    let test = "a_modelled_acceptance_gives_the_closed_form_block_efficiency";
    if !gpu_or_skip(test) {
        return;
    }
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
    let case = Case {
        target: ModelShape::tiny_128(),
        draft: DraftSource::Perturbed {
            layers: 1,
            noise: 0.0,
            seed: 1,
        },
        test,
    };
    let draft = DraftOptions {
        source: case.draft.clone(),
        alpha: Some(AcceptanceModel::new(alpha, 21).unwrap()),
    };
    let Some((b, _)) = case.backend(64 << 20, Some(&draft)) else {
        return;
    };
    let info = b.draft_model().unwrap();
    assert_eq!(info.modelled_alpha, Some(alpha), "{info:?}");
    let r = run(b, &policy(PolicyKind::Chunked, &["spec_k=4"]), &specs);
    let efficiency = (r.decode_entries + r.accepted) as f64 / r.decode_entries as f64;
    let want = fuselab_engine::expected_block_efficiency(alpha, k);
    eprintln!("{test}: block efficiency {efficiency:.3} vs closed form {want:.3}");
    assert!(
        (efficiency / want - 1.0).abs() < 0.05,
        "block efficiency {efficiency:.3} vs closed form {want:.3}"
    );
    let rate = r.accepted as f64 / r.proposed as f64;
    assert!(rate < alpha && rate > 0.35, "{rate}");
}

#[test]
fn a_draft_of_another_vocabulary_or_too_many_layers_is_refused() {
    let test = "a_draft_of_another_vocabulary_or_too_many_layers_is_refused";
    let case = Case {
        target: ModelShape::tiny_128(),
        draft: DraftSource::Perturbed {
            layers: 9,
            noise: 0.0,
            seed: 1,
        },
        test,
    };
    let Some((b, _)) = case.backend(16 << 20, None) else {
        return;
    };
    let e = b
        .inner
        .with_draft(DraftOptions {
            source: case.draft.clone(),
            alpha: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("draft_layers") && e.contains("9 layers"), "{e}");
    let (b, _) = case.backend(16 << 20, None).unwrap();
    let e = b
        .inner
        .with_draft(DraftOptions {
            source: DraftSource::Model {
                shape: ModelShape::llama3_2_1b_h128(),
                seed: 1,
            },
            alpha: None,
        })
        .unwrap_err()
        .to_string();
    assert!(e.contains("vocabulary of 128256"), "{e}");
}
