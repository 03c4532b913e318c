//! Shared helpers of the invariance tests: the backends under test, a
//! recording wrapper, the oracle comparison.

#![allow(dead_code)]

use std::collections::BTreeMap;

use fuselab_core::RequestId;
use fuselab_cpu::{CpuBackend, CpuOptions, Model, ModelShape, SampledLogits};
use fuselab_engine::{Backend, BackendError, ForwardBatch, KvGeometry, StepOutput};

/// Relative tolerance of the invariance tests (f32).
pub const REL_TOL: f32 = 1e-4;

/// A backend the invariance tests can run: real numerics, kept logits and a
/// dense oracle.
pub trait UnderTest: Backend {
    /// Logits kept since the last call.
    fn take_logits(&mut self) -> Vec<SampledLogits>;
    /// Logits of every position of `tokens`, recomputed densely without a KV cache.
    fn oracle(&self, tokens: &[u32]) -> Vec<Vec<f32>>;
}

impl UnderTest for CpuBackend {
    fn take_logits(&mut self) -> Vec<SampledLogits> {
        CpuBackend::take_logits(self)
    }

    fn oracle(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        self.model().naive_logits(tokens).expect("oracle")
    }
}

/// Makes a fresh backend: `(kv_budget_bytes, decode_splits)`.
pub type MakeBackend = fn(u64, usize) -> Box<dyn UnderTestDyn>;

/// The backends available in this build, by name; each call makes a fresh
/// one with the same weights, keeping logits, with `kv_budget_bytes` of KV.
pub fn backends() -> Vec<(&'static str, MakeBackend)> {
    vec![("cpu", |kv_budget, decode_splits| {
        // Building random weights is the slow part in dev builds: do it once.
        static MODEL: std::sync::OnceLock<Model> = std::sync::OnceLock::new();
        let model =
            MODEL.get_or_init(|| Model::random(ModelShape::tiny(), 1234).expect("tiny model"));
        let b = CpuBackend::new(
            model.clone(),
            CpuOptions {
                kv_budget_bytes: kv_budget,
                keep_logits: true,
                forward: fuselab_cpu::ForwardOptions {
                    decode_splits,
                    ..Default::default()
                },
                ..CpuOptions::default()
            },
        );
        Box::new(b)
    })]
}

/// Object-safe [`UnderTest`] (so the list above can hold any backend).
pub trait UnderTestDyn: UnderTest + Send {}
impl<T: UnderTest + Send> UnderTestDyn for T {}

impl Backend for Box<dyn UnderTestDyn> {
    fn name(&self) -> &str {
        (**self).name()
    }
    fn needs_tokens(&self) -> bool {
        (**self).needs_tokens()
    }
    fn kv_bytes_per_token(&self) -> u64 {
        (**self).kv_bytes_per_token()
    }
    fn vocab_size(&self) -> u32 {
        (**self).vocab_size()
    }
    fn kv_budget_bytes(&self) -> u64 {
        (**self).kv_budget_bytes()
    }
    fn init_kv(&mut self, g: KvGeometry) -> Result<(), BackendError> {
        (**self).init_kv(g)
    }
    fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
        (**self).forward(b)
    }
}

impl UnderTest for Box<dyn UnderTestDyn> {
    fn take_logits(&mut self) -> Vec<SampledLogits> {
        (**self).take_logits()
    }
    fn oracle(&self, tokens: &[u32]) -> Vec<Vec<f32>> {
        (**self).oracle(tokens)
    }
}

/// Wraps a backend and records every token id it was given per request and
/// position, checking that a recomputed position gets the same token.
pub struct Recorder<B> {
    /// The backend.
    pub inner: B,
    /// Token ids by request, by position.
    pub tokens: BTreeMap<RequestId, Vec<u32>>,
    /// Largest batch (entries) seen, and whether prefills and decodes were mixed.
    pub max_entries: usize,
    /// Steps mixing a prefill chunk and a decode.
    pub mixed_steps: usize,
    /// Steps with more than one prefill entry.
    pub multi_prefill_steps: usize,
    /// Entries that recomputed an already computed position (after preemption).
    pub recomputes: usize,
    /// Prompt token ids by request, when the test gives them: a request's first
    /// entry may then start past position 0 (a prefix-cache hit), and the
    /// skipped positions are filled from here.
    pub prompts: BTreeMap<RequestId, Vec<u32>>,
    /// First entries that started past position 0 (prefix-cache hits).
    pub cache_hits: usize,
}

impl<B> Recorder<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            tokens: BTreeMap::new(),
            max_entries: 0,
            mixed_steps: 0,
            multi_prefill_steps: 0,
            recomputes: 0,
            prompts: BTreeMap::new(),
            cache_hits: 0,
        }
    }
}

impl<B: Backend> Backend for Recorder<B> {
    fuselab_engine::forward_backend_to_inner!();

    fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.max_entries = self.max_entries.max(b.entries.len());
        let prefills = b.entries.iter().filter(|e| !e.is_decode).count();
        if prefills > 0 && prefills < b.entries.len() {
            self.mixed_steps += 1;
        }
        if prefills > 1 {
            self.multi_prefill_steps += 1;
        }
        for e in &b.entries {
            let seq = self.tokens.entry(e.request).or_default();
            let start = e.start_pos as usize;
            if start > seq.len()
                && let Some(prompt) = self.prompts.get(&e.request)
                && start <= prompt.len()
            {
                seq.extend_from_slice(&prompt[seq.len()..start]);
                self.cache_hits += 1;
            }
            for (i, &t) in e.tokens.iter().enumerate() {
                let p = e.start_pos as usize + i;
                if p < seq.len() {
                    assert_eq!(
                        seq[p], t,
                        "request {} position {p} got a different token",
                        e.request
                    );
                    if i == 0 {
                        self.recomputes += 1;
                    }
                } else {
                    assert_eq!(p, seq.len(), "request {} skipped positions", e.request);
                    seq.push(t);
                }
            }
        }
        self.inner.forward(b)
    }
}

/// Largest absolute difference over the largest reference magnitude.
pub fn rel_err(got: &[f32], want: &[f32]) -> f32 {
    assert_eq!(got.len(), want.len());
    let scale = want
        .iter()
        .fold(0f32, |m, v| m.max(v.abs()))
        .max(f32::MIN_POSITIVE);
    got.iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// Oracle logits by token sequence, shared by the scenarios of one backend
/// (the dense f64 oracle is slow in dev builds).
pub type OracleCache = BTreeMap<Vec<u32>, Vec<Vec<f32>>>;

/// Checks every kept logits vector against the oracle over the request's full
/// token sequence; returns how many were checked.
pub fn check_against_oracle(
    backend: &dyn UnderTestDyn,
    cache: &mut OracleCache,
    logits: &[SampledLogits],
    sequences: &BTreeMap<RequestId, Vec<u32>>,
    what: &str,
) -> usize {
    for l in logits {
        let seq = &sequences[&l.request];
        let want = cache
            .entry(seq.clone())
            .or_insert_with(|| backend.oracle(seq));
        let err = rel_err(&l.logits, &want[l.pos as usize]);
        assert!(
            err <= REL_TOL,
            "{what}: request {} position {} (chunk {}, decode {}, {} entries in batch): relative error {err:e}",
            l.request,
            l.pos,
            l.chunk,
            l.is_decode,
            l.batch_entries
        );
    }
    logits.len()
}
