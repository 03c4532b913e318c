//! [`CpuBackend`]: the model behind the engine's [`Backend`] trait.

use std::path::Path;

use std::collections::BTreeSet;

use fuselab_engine::{
    AcceptanceModel, AdapterStep, Backend, BackendError, DraftInfo, ForwardBatch, KvGeometry,
    LoraConfig, LoraMode, Sampler, SamplerStream, StepOutput,
};
use fuselab_kernels::cpu::paged::PagedKv;

use crate::lora::LoraWeights;
use crate::model::{ForwardOptions, LoraInput, SeqInput, argmax};
use crate::{CpuError, Model, ModelShape, Weights, config};

/// Knobs of the CPU backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CpuOptions {
    /// Bytes the KV cache may use (default 256 MiB).
    pub kv_budget_bytes: u64,
    /// Keep the logits of sampled positions in [`StepOutput::logits`] (tests).
    pub keep_logits: bool,
    /// Kernel choices.
    pub forward: ForwardOptions,
    /// Sample at a temperature instead of greedily (`None`, the default).
    /// With a draft, speculative sampling's standard rule verifies its
    /// proposals ([`Sampler::verify`]).
    pub sampling: Option<Sampler>,
}

impl Default for CpuOptions {
    fn default() -> Self {
        Self {
            kv_budget_bytes: 256 << 20,
            keep_logits: false,
            forward: ForwardOptions::default(),
            sampling: None,
        }
    }
}

/// How the CPU backend's draft model is made from its target (speculative
/// decoding): see [`crate::Weights::perturbed`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DraftOptions {
    /// Layers kept (the target's first ones); `None` keeps them all.
    pub layers: Option<usize>,
    /// Noise on every matrix, relative to the matrix's RMS (0: none).
    pub noise: f64,
    /// Seed of the noise.
    pub seed: u64,
    /// A modelled acceptance coin: the draft's proposal for a position is
    /// kept when the coin accepts it, else replaced by its second choice, so
    /// a draft that agrees with its target is accepted i.i.d. with this
    /// probability. `None`: proposals are the draft's own (measured acceptance).
    pub alpha: Option<AcceptanceModel>,
}

impl Default for DraftOptions {
    /// An exact copy of the target (every layer, no noise), no coin.
    fn default() -> Self {
        Self {
            layers: None,
            noise: 0.0,
            seed: 0,
            alpha: None,
        }
    }
}

/// A draft model with its own paged KV cache (indexed by the target's block tables).
#[derive(Debug)]
struct Draft {
    model: Model,
    kv: Vec<PagedKv>,
    opts: DraftOptions,
    /// At a temperature: the distribution each pending proposal was drawn
    /// from, by (request, position), until the target verifies it.
    proposals: std::collections::HashMap<(fuselab_core::RequestId, u32), Vec<f32>>,
}

/// Real f32 numerics on the CPU: a Llama model and its paged KV cache, and
/// optionally a draft model beside it ([`Self::with_draft`]).
#[derive(Debug)]
pub struct CpuBackend {
    model: Model,
    opts: CpuOptions,
    kv: Vec<PagedKv>,
    geometry: Option<KvGeometry>,
    logit_log: Vec<SampledLogits>,
    lora: Option<LoraWeights>,
    /// Multi-LoRA: the adapters in the device slots and the next step's adapters.
    resident: BTreeSet<u32>,
    staged: AdapterStep,
    draft: Option<Draft>,
}

/// Logits of one sampled position, kept when [`CpuOptions::keep_logits`] is on.
#[derive(Clone, Debug, PartialEq)]
pub struct SampledLogits {
    /// The request.
    pub request: fuselab_core::RequestId,
    /// Position (in the sequence) of the token whose logits these are.
    pub pos: u32,
    /// Whether it was computed by a decode entry.
    pub is_decode: bool,
    /// Tokens computed for the request in that step.
    pub chunk: u32,
    /// Other entries in that step's batch.
    pub batch_entries: usize,
    /// The logits (`vocab` values).
    pub logits: Vec<f32>,
}

impl CpuBackend {
    /// A backend running `model` with `opts`; the KV cache is allocated by `init_kv`.
    pub fn new(model: Model, opts: CpuOptions) -> Self {
        Self {
            model,
            opts,
            kv: Vec::new(),
            geometry: None,
            logit_log: Vec::new(),
            lora: None,
            resident: BTreeSet::new(),
            staged: AdapterStep::default(),
            draft: None,
        }
    }

    /// Adds a draft model made from the target by `opts` (before `init_kv`).
    ///
    /// # Errors
    /// A bad layer count or noise scale (naming `--draft-layers` or `--draft-noise`).
    pub fn with_draft(mut self, opts: DraftOptions) -> Result<Self, CpuError> {
        if opts.alpha.is_some() && self.opts.sampling.is_some() {
            return Err(CpuError::Shape(fuselab_core::Error::invalid(
                "--spec-alpha",
                "a modelled acceptance coin steers greedy proposals; it cannot be combined with sampling at a temperature",
                "drop --spec-alpha (acceptance is then measured) or --temperature",
            )));
        }
        let layers = opts.layers.unwrap_or(self.model.config().n_layers);
        let model = self.model.perturbed(layers, opts.noise, opts.seed)?;
        self.draft = Some(Draft {
            model,
            kv: Vec::new(),
            opts,
            proposals: Default::default(),
        });
        Ok(self)
    }

    /// Serves seeded random LoRA adapters ([`LoraWeights::random`]): multi-LoRA
    /// slots, where each request names its adapter, or MeteoRA, where a gate
    /// picks each token's adapters.
    ///
    /// # Errors
    /// As [`LoraWeights::random`].
    pub fn with_lora(mut self, cfg: LoraConfig, seed: u64) -> Result<Self, CpuError> {
        self.lora = Some(LoraWeights::random(self.model.config(), cfg, seed)?);
        Ok(self)
    }

    /// Serves the given adapters.
    #[must_use]
    pub fn with_lora_weights(mut self, lora: LoraWeights) -> Self {
        self.lora = Some(lora);
        self
    }

    /// The adapters, if any.
    pub fn lora(&self) -> Option<&LoraWeights> {
        self.lora.as_ref()
    }

    /// The `tiny` model ([`ModelShape::tiny`]) with weights seeded by `seed`
    /// and default options.
    pub fn tiny(seed: u64) -> Result<Self, CpuError> {
        Self::random(ModelShape::tiny(), seed)
    }

    /// A model of shape `cfg` with weights seeded by `seed` and default options.
    pub fn random(cfg: ModelShape, seed: u64) -> Result<Self, CpuError> {
        Ok(Self::new(Model::random(cfg, seed)?, CpuOptions::default()))
    }

    /// A model of shape `cfg` with weights from a safetensors file (Hugging
    /// Face Llama names) and default options.
    pub fn from_safetensors(cfg: ModelShape, path: &Path) -> Result<Self, CpuError> {
        let w = Weights::from_safetensors(&cfg, path)?;
        Ok(Self::new(Model::new(cfg, w)?, CpuOptions::default()))
    }

    /// What the CLI needs: the preset `model` (`tiny`, `small`) with weights
    /// from `weights` (safetensors, Hugging Face Llama names) or, without a
    /// file, seeded random weights from `seed`.
    ///
    /// # Errors
    /// An unknown preset; an unreadable file; a missing or mis-shaped tensor
    /// (the message names the tensor and both shapes).
    pub fn load(model: &str, weights: Option<&Path>, seed: u64) -> Result<Self, CpuError> {
        let cfg = ModelShape::preset(model)?;
        match weights {
            Some(path) => Self::from_safetensors(cfg, path),
            None => Self::random(cfg, seed),
        }
    }

    /// Replaces the options (before `init_kv`).
    #[must_use]
    pub fn with_options(mut self, opts: CpuOptions) -> Self {
        self.opts = opts;
        self
    }

    /// The options in effect.
    pub fn options(&self) -> &CpuOptions {
        &self.opts
    }

    /// Takes the logits kept since the last call (empty unless
    /// [`CpuOptions::keep_logits`]); the engine loop does not forward
    /// [`StepOutput::logits`], so tests read them here through
    /// `NativeEngine::backend_mut`.
    pub fn take_logits(&mut self) -> Vec<SampledLogits> {
        std::mem::take(&mut self.logit_log)
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    fn run(&mut self, batch: &ForwardBatch) -> Result<StepOutput, CpuError> {
        self.pass(batch, false)
    }

    /// Runs `batch` through the target, or through the draft with `draft`.
    fn pass(&mut self, batch: &ForwardBatch, draft: bool) -> Result<StepOutput, CpuError> {
        if self.geometry.is_none() {
            return Err(CpuError::Batch(
                "the KV cache is not allocated; call init_kv first".into(),
            ));
        }
        for e in &batch.entries {
            if e.tokens.len() != e.n_tokens as usize {
                return Err(CpuError::Batch(format!(
                    "request {} has {} token ids for n_tokens {}; the CPU backend needs token ids",
                    e.request,
                    e.tokens.len(),
                    e.n_tokens
                )));
            }
        }
        let seqs: Vec<SeqInput<'_>> = batch
            .entries
            .iter()
            .map(|e| SeqInput {
                tokens: &e.tokens,
                start_pos: e.start_pos as usize,
                block_table: &e.block_table,
                sample: e.sample,
                decode: e.is_decode,
                verify: !draft && e.is_decode && e.n_tokens > 1,
            })
            .collect();
        if draft {
            let d = self.draft.as_mut().ok_or_else(|| {
                CpuError::Batch("a draft pass but the backend has no draft model".into())
            })?;
            let logits = d.model.forward(&mut d.kv, &seqs, self.opts.forward)?;
            let sampled = batch.entries.iter().filter(|e| e.sample && e.n_tokens > 0);
            let mut out = StepOutput::default();
            for (e, l) in sampled.zip(logits) {
                let pos = e.start_pos + e.n_tokens;
                let token = match (self.opts.sampling, d.opts.alpha) {
                    (Some(s), _) => {
                        let t = s.sample(&l, SamplerStream::Draft, e.request, pos);
                        d.proposals.insert((e.request, pos), s.probs(&l));
                        t
                    }
                    (None, Some(coin)) if !coin.accepts(e.request, pos) => second_choice(&l),
                    _ => argmax(&l),
                };
                out.sampled.push((e.request, token));
            }
            return Ok(out);
        }
        let staged = std::mem::take(&mut self.staged);
        let lora = match &self.lora {
            Some(weights) => {
                let adapters = if staged.entries.len() == seqs.len() {
                    staged.entries
                } else if matches!(weights.config().mode, LoraMode::Meteora { .. }) {
                    vec![None; seqs.len()]
                } else {
                    return Err(CpuError::Batch(format!(
                        "{} staged adapters for {} entries; the engine stages adapters before every step",
                        staged.entries.len(),
                        seqs.len()
                    )));
                };
                if let Some(a) = adapters
                    .iter()
                    .flatten()
                    .find(|a| !self.resident.contains(a))
                {
                    return Err(CpuError::Batch(format!(
                        "adapter {a} is used but not in a slot"
                    )));
                }
                Some((weights, adapters))
            }
            None => None,
        };
        let input = lora
            .as_ref()
            .map(|(weights, adapters)| LoraInput { weights, adapters });
        let logits = self
            .model
            .forward_lora(&mut self.kv, &seqs, self.opts.forward, input)?;
        let mut logits = logits.into_iter();
        let mut out = StepOutput::default();
        for (e, s) in batch.entries.iter().zip(&seqs) {
            if e.n_tokens == 0 || !(s.sample || s.verify) {
                continue;
            }
            let n = if s.verify { e.n_tokens } else { 1 };
            let mut verified = Vec::with_capacity(n as usize);
            let mut rows = Vec::new();
            for i in 0..n {
                let l = logits
                    .next()
                    .ok_or_else(|| CpuError::Batch("internal: too few logits".into()))?;
                let pos = e.start_pos + e.n_tokens - n + i + 1;
                verified.push(match self.opts.sampling {
                    Some(sampler) => sampler.sample(&l, SamplerStream::Target, e.request, pos),
                    None => argmax(&l),
                });
                if s.verify && self.opts.sampling.is_some() {
                    rows.push(l.clone());
                }
                if self.opts.keep_logits {
                    self.logit_log.push(SampledLogits {
                        request: e.request,
                        pos: e.start_pos + e.n_tokens - n + i,
                        is_decode: e.is_decode,
                        chunk: e.n_tokens,
                        batch_entries: batch.entries.len(),
                        logits: l.clone(),
                    });
                    out.logits.push((e.request, l));
                }
            }
            if let (Some(sampler), true) = (self.opts.sampling, s.verify) {
                let first = e.start_pos + 1;
                let draft = self.draft.as_mut().ok_or_else(|| {
                    CpuError::Batch("a verify entry but the backend has no draft model".into())
                })?;
                let q = (0..n - 1)
                    .map(|j| {
                        draft
                            .proposals
                            .remove(&(e.request, first + j))
                            .ok_or_else(|| {
                                CpuError::Batch(format!(
                                    "request {}: no draft distribution for position {}",
                                    e.request,
                                    first + j
                                ))
                            })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                verified = sampler.verify(&rows, &e.tokens[1..], &q, e.request, first);
            }
            if let Some(&last) = verified.last() {
                out.sampled.push((e.request, last));
            }
            if s.verify {
                out.verified.push((e.request, verified));
            }
        }
        Ok(out)
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }

    fn needs_tokens(&self) -> bool {
        true
    }

    fn context_len(&self) -> Option<u32> {
        Some(self.model.config().context_len)
    }

    fn kv_bytes_per_token(&self) -> u64 {
        let draft = self.draft.as_ref().map_or(0, |d| {
            d.model
                .config()
                .kv_bytes_per_token(1, config::KV_ELEM_BYTES)
        });
        self.model
            .config()
            .kv_bytes_per_token(1, config::KV_ELEM_BYTES)
            + draft
    }

    fn vocab_size(&self) -> u32 {
        // validated to fit u32 by ModelShape::validate
        u32::try_from(self.model.config().vocab).unwrap_or(u32::MAX)
    }

    fn kv_budget_bytes(&self) -> u64 {
        self.opts.kv_budget_bytes
    }

    fn init_kv(&mut self, geometry: KvGeometry) -> Result<(), BackendError> {
        let bytes = u64::from(geometry.block_size)
            * u64::from(geometry.num_blocks)
            * self.kv_bytes_per_token();
        if bytes > self.opts.kv_budget_bytes {
            return Err(BackendError::OutOfMemory(format!(
                "{} blocks of {} tokens need {bytes} bytes of KV cache but the budget is {}",
                geometry.num_blocks, geometry.block_size, self.opts.kv_budget_bytes
            )));
        }
        let (bs, n) = (geometry.block_size as usize, geometry.num_blocks as usize);
        self.kv = self
            .model
            .new_kv(bs, n)
            .map_err(|e| BackendError::Device(e.to_string()))?;
        if let Some(d) = &mut self.draft {
            d.kv = d
                .model
                .new_kv(bs, n)
                .map_err(|e| BackendError::Device(e.to_string()))?;
        }
        self.geometry = Some(geometry);
        tracing::debug!(?geometry, bytes, "cpu backend allocated KV cache");
        Ok(())
    }

    fn lora_adapters(&self) -> u32 {
        self.lora
            .as_ref()
            .map_or(0, |l| LoraWeights::config(l).nameable_adapters())
    }

    fn stage_adapters(&mut self, step: &AdapterStep) -> Result<(), BackendError> {
        for a in &step.evictions {
            self.resident.remove(a);
        }
        self.resident.extend(step.loads.iter().copied());
        self.staged = step.clone();
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.run(batch)
            .map_err(|e| BackendError::Device(e.to_string()))
    }

    fn draft_model(&self) -> Option<DraftInfo> {
        let d = self.draft.as_ref()?;
        let target = self.model.config();
        Some(DraftInfo {
            name: format!(
                "{}: first {} of {} layers, noise {} (seed {})",
                target.name,
                d.model.config().n_layers,
                target.n_layers,
                d.opts.noise,
                d.opts.seed
            ),
            modelled_alpha: d.opts.alpha.map(|a| a.alpha),
        })
    }

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.pass(batch, true)
            .map_err(|e| BackendError::Device(e.to_string()))
    }
}

/// The index of the second-largest logit: a proposal the target's greedy
/// choice (the largest) rejects when draft and target agree.
fn second_choice(logits: &[f32]) -> u32 {
    let best = argmax(logits) as usize;
    let mut second = usize::from(best == 0);
    for (i, v) in logits.iter().enumerate() {
        if i != best && *v > logits[second] {
            second = i;
        }
    }
    second as u32
}
