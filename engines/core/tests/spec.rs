//! Speculative decoding through the engine with a fake two-model backend
//! whose target is a deterministic function of the previous token (so a
//! wrong draft token changes everything the target computes after it) and
//! whose draft proposes the target's token or, by a seeded coin, a wrong
//! one. Both models keep a fake KV store (the token id in every slot), and
//! every pass checks that each position it attends to holds the true token
//! in *that* model's cache: rollbacks, the draft's catch-up, preemption and
//! prefix-cache hits must all leave both caches right.
//!
//! Checked for every policy, with and without preemption and the prefix
//! cache: the output ids equal the run without speculation, no KV block is
//! leaked, the token budget counts verify tokens, and the acceptance and
//! block efficiency follow the coin.

use std::collections::{BTreeMap, HashMap};

use fuselab_core::{RequestId, RequestSpec, RequestStatus};
use fuselab_engine::{
    AcceptanceModel, Backend, BackendError, DraftInfo, ForwardBatch, KvGeometry, NativeEngine,
    PolicyConfig, PolicyKind, StepOutput,
};

const VOCAB: u32 = 997;

/// The target's greedy token after token `x` at position `pos`.
fn next(x: u32, pos: u32) -> u32 {
    ((u64::from(x) * 7919 + u64::from(pos) * 104_729 + 13) % u64::from(VOCAB)) as u32
}

struct Fake {
    kv_tokens: u64,
    block_size: u32,
    /// Each request's true sequence: prompt, then the greedy continuation.
    truth: BTreeMap<RequestId, Vec<u32>>,
    target_slots: HashMap<(u32, u32), u32>,
    draft_slots: HashMap<(u32, u32), u32>,
    coin: AcceptanceModel,
    with_draft: bool,
    /// Per request in a draft round: the position of its last true token.
    round: BTreeMap<RequestId, u32>,
}

impl Fake {
    fn new(kv_tokens: u64, specs: &[RequestSpec], alpha: f64, with_draft: bool) -> Self {
        let truth = specs
            .iter()
            .map(|s| {
                let mut t = s.prompt_tokens(VOCAB);
                while t.len() < (s.prompt_len + s.output_len) as usize {
                    let p = t.len() as u32 - 1;
                    t.push(next(t[p as usize], p));
                }
                (s.id, t)
            })
            .collect();
        Self {
            kv_tokens,
            block_size: 0,
            truth,
            target_slots: HashMap::new(),
            draft_slots: HashMap::new(),
            coin: AcceptanceModel::new(alpha, 3).unwrap(),
            with_draft,
            round: BTreeMap::new(),
        }
    }

    /// Checks that every position before each entry (up to its last true
    /// one, `last`) holds its true token in `slots`, that the entry's first
    /// `known` tokens are true, then writes the entry's tokens.
    fn pass(
        slots: &mut HashMap<(u32, u32), u32>,
        truth: &BTreeMap<RequestId, Vec<u32>>,
        bs: u32,
        batch: &ForwardBatch,
        known: impl Fn(&fuselab_engine::BatchEntry) -> (u32, u32),
    ) -> Result<(), BackendError> {
        for e in &batch.entries {
            let want = &truth[&e.request];
            let slot = |pos: u32| (e.block_table[(pos / bs) as usize], pos % bs);
            let (k, last) = known(e);
            for pos in 0..e.start_pos.min(last.saturating_add(1)) {
                if slots.get(&slot(pos)) != Some(&want[pos as usize]) {
                    return Err(BackendError::Device(format!(
                        "request {} reads position {pos}: {:?}, not {}",
                        e.request,
                        slots.get(&slot(pos)),
                        want[pos as usize]
                    )));
                }
            }
            let (k, start) = (k as usize, e.start_pos as usize);
            if e.tokens[..k] != want[start..start + k] {
                return Err(BackendError::Device(format!(
                    "request {} positions {start}..{}: wrong tokens",
                    e.request,
                    start + k
                )));
            }
            if (e.block_table.len() as u32) * bs < e.start_pos + e.n_tokens {
                return Err(BackendError::Device("block table too short".into()));
            }
            for (j, &t) in e.tokens.iter().enumerate() {
                slots.insert(slot(e.start_pos + j as u32), t);
            }
        }
        Ok(())
    }
}

impl Backend for Fake {
    fn name(&self) -> &str {
        "fake"
    }
    fn needs_tokens(&self) -> bool {
        true
    }
    fn vocab_size(&self) -> u32 {
        VOCAB
    }
    fn kv_bytes_per_token(&self) -> u64 {
        1
    }
    fn kv_budget_bytes(&self) -> u64 {
        self.kv_tokens
    }
    fn init_kv(&mut self, g: KvGeometry) -> Result<(), BackendError> {
        self.block_size = g.block_size;
        Ok(())
    }
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let verify = |e: &fuselab_engine::BatchEntry| e.is_decode && e.n_tokens > 1;
        Self::pass(
            &mut self.target_slots,
            &self.truth,
            self.block_size,
            batch,
            |e| (if verify(e) { 1 } else { e.n_tokens }, u32::MAX),
        )?;
        for e in &batch.entries {
            self.round.remove(&e.request);
        }
        let mut out = StepOutput {
            duration_s: Some(1e-3 + 1e-6 * f64::from(batch.real_tokens())),
            ..StepOutput::default()
        };
        for e in batch.entries.iter().filter(|e| e.sample) {
            let outs: Vec<u32> = e
                .tokens
                .iter()
                .enumerate()
                .map(|(j, &x)| next(x, e.start_pos + j as u32))
                .collect();
            out.sampled.push((e.request, *outs.last().unwrap()));
            if verify(e) {
                out.verified.push((e.request, outs));
            }
        }
        Ok(out)
    }
    fn draft_model(&self) -> Option<DraftInfo> {
        self.with_draft.then(|| DraftInfo {
            name: "fake draft".into(),
            modelled_alpha: Some(self.coin.alpha),
        })
    }
    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        // A round's first pass catches up to the sequence's last true token;
        // later passes feed the draft's own proposals.
        let mut known = BTreeMap::new();
        for e in &batch.entries {
            let first = !self.round.contains_key(&e.request);
            let last = *self
                .round
                .entry(e.request)
                .or_insert(e.start_pos + e.n_tokens - 1);
            known.insert(e.request, (if first { e.n_tokens } else { 0 }, last));
        }
        Self::pass(
            &mut self.draft_slots,
            &self.truth,
            self.block_size,
            batch,
            |e| known[&e.request],
        )?;
        let mut out = StepOutput {
            duration_s: Some(2e-4),
            ..StepOutput::default()
        };
        for e in &batch.entries {
            let pos = e.start_pos + e.n_tokens - 1;
            let good = next(*e.tokens.last().unwrap(), pos);
            let t = if self.coin.accepts(e.request, pos + 1) {
                good
            } else {
                (good + 1) % VOCAB
            };
            out.sampled.push((e.request, t));
        }
        Ok(out)
    }
}

fn requests(n: u64, shared_prefix: bool) -> Vec<RequestSpec> {
    (0..n)
        .map(|id| RequestSpec {
            id,
            arrival_s: id as f64 * 2e-3,
            prompt_len: 20 + (id as u32 * 37) % 60,
            output_len: 5 + (id as u32 * 53) % 40,
            prefix_group: shared_prefix.then_some((id % 2) as u32),
            prefix_len: if shared_prefix { 32 } else { 0 },
            conversation: None,
            adapter: None,
        })
        .collect()
}

#[derive(Debug, Default)]
struct Run {
    ids: BTreeMap<RequestId, Vec<u32>>,
    /// Tokens delivered in events (streamed, or held until the result).
    events: BTreeMap<RequestId, u32>,
    preemptions: u64,
    proposed: u64,
    accepted: u64,
    decode_entries: u64,
    hits: u64,
}

fn run(specs: &[RequestSpec], policy: &PolicyConfig, kv_tokens: u64, alpha: f64) -> Run {
    let fake = Fake::new(kv_tokens, specs, alpha, true);
    let mut engine = NativeEngine::new(fake, policy.clone()).unwrap();
    let budget = policy.token_budget();
    let mut out = Run::default();
    let (mut next_req, mut now) = (0usize, 0.0f64);
    loop {
        while next_req < specs.len() && specs[next_req].arrival_s <= now {
            engine.submit(&specs[next_req], now);
            next_req += 1;
        }
        if !engine.has_work() {
            if next_req == specs.len() {
                break;
            }
            now = specs[next_req].arrival_s;
            continue;
        }
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        engine.check_kv().unwrap();
        // Rejected positions are rolled back: a decoding sequence holds
        // exactly the blocks of its computed tokens.
        for q in engine.requests().iter().filter(|q| q.decoding()) {
            assert_eq!(
                engine.kv().table(q.id).len() as u32,
                engine.kv().blocks_for(q.computed),
                "{}: request {} holds blocks past its {} computed tokens",
                policy.kind,
                q.id,
                q.computed
            );
        }
        for f in &r.finished {
            assert_eq!(
                f.status,
                RequestStatus::Ok,
                "{}: {:?}",
                policy.kind,
                f.error
            );
        }
        for (id, t) in &r.token_ids {
            out.ids.entry(*id).or_default().extend(t);
        }
        for ev in &r.events {
            let n = out.events.entry(ev.request).or_default();
            assert_eq!(ev.index, *n, "{}: token index out of order", policy.kind);
            *n += ev.n_tokens;
        }
        if let Some(rec) = r.record {
            if let Some(b) = budget {
                // Verify tokens count against the budget.
                assert!(rec.prefill_tokens + rec.decode_tokens <= b);
            }
            assert!(rec.spec_accepted <= rec.spec_proposed);
            assert_eq!(rec.decode_tokens, rec.decode_seqs + rec.spec_proposed);
            out.proposed += u64::from(rec.spec_proposed);
            out.accepted += u64::from(rec.spec_accepted);
            out.decode_entries += u64::from(rec.decode_seqs);
            out.hits += u64::from(rec.prefix_hit_tokens);
        }
    }
    out.preemptions = engine.preemptions();
    engine.check_drained().unwrap();
    out
}

fn policies(spec_k: u32, extra: &[&str]) -> Vec<PolicyConfig> {
    PolicyKind::ALL
        .iter()
        .map(|&kind| {
            let mut knobs = vec![format!("spec_k={spec_k}")];
            knobs.extend(extra.iter().map(|s| s.to_string()));
            match kind {
                PolicyKind::Static | PolicyKind::Prepack => knobs.push("batch=4".into()),
                PolicyKind::Continuous => knobs.push("budget=160".into()),
                _ => knobs.push("budget=96".into()),
            }
            PolicyConfig::with_knobs(kind, knobs).unwrap()
        })
        .collect()
}

#[test]
fn greedy_output_with_speculation_equals_output_without_for_every_policy() {
    let specs = requests(12, false);
    for (p0, pk) in policies(0, &[]).iter().zip(policies(4, &[])) {
        let plain = run(&specs, p0, 1 << 16, 0.7);
        let spec = run(&specs, &pk, 1 << 16, 0.7);
        assert_eq!(plain.proposed, 0);
        assert!(spec.proposed > 0, "{}", pk.kind);
        assert_eq!(spec.ids, plain.ids, "{}", pk.kind);
        for s in &specs {
            assert_eq!(spec.ids[&s.id].len() as u32, s.output_len);
            assert_eq!(spec.events[&s.id], s.output_len, "{} events", pk.kind);
        }
    }
}

#[test]
fn exact_after_preemption_and_with_the_prefix_cache_and_adaptive_k() {
    let specs = requests(12, true);
    let tight = 400; // tokens of KV: requests are preempted and recomputed
    for extra in [&[][..], &["spec_adaptive=on"][..]] {
        for (p0, pk) in policies(0, &[]).iter().zip(policies(6, extra)) {
            if matches!(pk.kind, PolicyKind::Static | PolicyKind::Prepack) {
                continue;
            }
            let plain = run(&specs, p0, 1 << 16, 0.6);
            let spec = run(&specs, &pk, tight, 0.6);
            assert_eq!(spec.ids, plain.ids, "{} {extra:?}", pk.kind);
            if pk.kind == PolicyKind::Continuous {
                assert!(spec.preemptions > 0, "{}: no preemption", pk.kind);
            }
            if pk.prefix_caching() {
                let roomy = run(&specs, &pk, 1 << 16, 0.6);
                assert!(roomy.hits > 0, "{}: no prefix hit", pk.kind);
                assert_eq!(roomy.ids, plain.ids);
            }
        }
    }
}

#[test]
fn acceptance_follows_the_coin() {
    let specs: Vec<RequestSpec> = (0..8)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: 16,
            output_len: 400,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    let policy = PolicyConfig::with_knobs(PolicyKind::Chunked, ["spec_k=4"]).unwrap();
    let mut rates = Vec::new();
    for alpha in [0.3, 0.7, 0.95] {
        let r = run(&specs, &policy, 1 << 16, alpha);
        let rate = r.accepted as f64 / r.proposed as f64;
        rates.push(rate);
        let efficiency = (r.decode_entries + r.accepted) as f64 / r.decode_entries as f64;
        let want = fuselab_engine::expected_block_efficiency(alpha, 4);
        assert!(
            (efficiency / want - 1.0).abs() < 0.05,
            "α {alpha}: block efficiency {efficiency} vs {want}"
        );
    }
    assert!(rates[0] < rates[1] && rates[1] < rates[2], "{rates:?}");
}

#[test]
fn a_backend_without_a_draft_model_is_refused_by_name() {
    let specs = requests(1, false);
    let policy = PolicyConfig::with_knobs(PolicyKind::Chunked, ["spec_k=2"]).unwrap();
    let e = NativeEngine::new(Fake::new(1 << 16, &specs, 0.5, false), policy.clone())
        .err()
        .unwrap();
    assert!(
        e.to_string()
            .contains("speculative decoding is not supported on fake yet"),
        "{e}"
    );
    let coin = AcceptanceModel::new(0.5, 1).unwrap();
    let e = NativeEngine::with_spec(Fake::new(1 << 16, &specs, 0.5, true), policy, Some(coin))
        .err()
        .unwrap();
    assert!(e.to_string().contains("--spec-alpha"), "{e}");
    let e = PolicyConfig::with_knobs(PolicyKind::Chunked, ["spec_k=17"]).unwrap_err();
    assert!(e.to_string().contains("--knob spec_k"), "{e}");
}

#[test]
fn adaptive_drafts_shrink_when_rejected_and_grow_when_accepted() {
    let specs: Vec<RequestSpec> = (0..4)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: 16,
            output_len: 300,
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect();
    let per_round = |alpha: f64, adaptive: &str| {
        let p = PolicyConfig::with_knobs(
            PolicyKind::Chunked,
            ["spec_k=8", &format!("spec_adaptive={adaptive}")],
        )
        .unwrap();
        let r = run(&specs, &p, 1 << 16, alpha);
        r.proposed as f64 / (r.decode_entries as f64)
    };
    let (poor_fixed, poor_adaptive) = (per_round(0.2, "off"), per_round(0.2, "on"));
    let (good_fixed, good_adaptive) = (per_round(0.97, "off"), per_round(0.97, "on"));
    assert!(
        poor_adaptive < 0.5 * poor_fixed,
        "{poor_adaptive} vs {poor_fixed}"
    );
    assert!(
        good_adaptive > 0.8 * good_fixed,
        "{good_adaptive} vs {good_fixed}"
    );
}

proptest::proptest! {
    // A fixed seed keeps CI deterministic; set PROPTEST_RNG_SEED to explore others.
    #![proptest_config(proptest::test_runner::Config {
        cases: 96,
        failure_persistence: None,
        rng_seed: proptest::test_runner::RngSeed::Fixed(
            std::env::var("PROPTEST_RNG_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5bec),
        ),
        ..proptest::test_runner::Config::default()
    })]

    /// Random workloads, policies, draft lengths, acceptance rates and KV
    /// sizes: speculation never changes the output, leaks a block, breaks the
    /// budget or leaves rejected positions' blocks behind (all checked in `run`).
    #[test]
    fn speculation_is_exact_on_random_workloads(
        raw in proptest::collection::vec((1u32..90, 1u32..50, 0u16..30), 1..10),
        kind in proptest::sample::select(PolicyKind::ALL.to_vec()),
        k in 1u32..=8,
        adaptive in proptest::bool::ANY,
        shared in proptest::bool::ANY,
        alpha in proptest::sample::select(vec![0.0, 0.3, 0.8, 1.0]),
        kv_tokens in proptest::sample::select(vec![400u64, 1200, 1 << 16]),
    ) {
        let mut t = 0.0;
        let specs: Vec<RequestSpec> = raw
            .iter()
            .enumerate()
            .map(|(i, &(p, o, gap))| {
                t += f64::from(gap) * 1e-3;
                RequestSpec {
                    id: i as u64,
                    arrival_s: t,
                    prompt_len: p,
                    output_len: o,
                    prefix_group: shared.then_some((i % 2) as u32),
                    prefix_len: if shared { 32 } else { 0 },
                    conversation: None, adapter: None,
                }
            })
            .collect();
        let pick = |ps: Vec<PolicyConfig>| ps.into_iter().find(|p| p.kind == kind).unwrap();
        let plain = run(&specs, &pick(policies(0, &[])), 1 << 16, alpha);
        let extra: &[&str] = if adaptive { &["spec_adaptive=on"] } else { &[] };
        let spec = run(&specs, &pick(policies(k, extra)), kv_tokens, alpha);
        proptest::prop_assert_eq!(spec.ids, plain.ids);
    }
}
