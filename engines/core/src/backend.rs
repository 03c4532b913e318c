//! The seam between the scheduler and whatever executes a step.

use fuselab_core::RequestId;

use crate::{AdapterStep, ForwardBatch};

/// How the KV cache is laid out in blocks; the engine decides it and the
/// backend allocates storage for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvGeometry {
    /// Tokens per block.
    pub block_size: u32,
    /// Blocks in the cache.
    pub num_blocks: u32,
}

/// What a backend returns for one step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepOutput {
    /// The step's duration when the backend knows it (the simulator's
    /// predicted cost). `None` means the engine measures wall time itself.
    pub duration_s: Option<f64>,
    /// Sampled token per entry with `sample == true`, in entry order.
    pub sampled: Vec<(RequestId, u32)>,
    /// Logits of the sampled positions, when the backend was asked to keep them.
    pub logits: Vec<(RequestId, Vec<f32>)>,
    /// For each speculative verify entry (a decode entry of more than one
    /// token, see [`crate::BatchEntry`]), the target's greedy token after
    /// each of its positions, in entry order. Backends without real tokens
    /// leave it empty.
    pub verified: Vec<(RequestId, Vec<u32>)>,
}

/// The draft model a backend runs beside its target (speculative decoding).
#[derive(Clone, Debug, PartialEq)]
pub struct DraftInfo {
    /// What the draft is, for provenance (e.g. `llama3.2-1b`, or
    /// `tiny, noise 0.1, 2 of 4 layers`).
    pub name: String,
    /// When the draft's proposals are steered by a seeded acceptance coin of
    /// this per-token probability, acceptance is *modelled*, not measured.
    pub modelled_alpha: Option<f64>,
}

/// Errors a backend can report for a step; the engine fails the affected
/// requests and records the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// The device ran out of memory.
    #[error("out of memory: {0}")]
    OutOfMemory(String),
    /// Anything else from the device or the numerics.
    #[error("backend error: {0}")]
    Device(String),
    /// The backend cannot do what the step asks (e.g. it has no draft model,
    /// or the step uses LoRA adapters it does not serve).
    #[error("{0}")]
    Unsupported(String),
}

/// Implements every [`Backend`] method but `forward` and `draft_forward` for a
/// wrapper type by forwarding to its `inner` field, so wrappers (a slowdown,
/// real-time pacing, a test's recorder) state only what they change and never
/// forget a method. Use it inside `impl Backend for Wrapper { … }`.
#[macro_export]
macro_rules! forward_backend_to_inner {
    () => {
        fn name(&self) -> &str {
            self.inner.name()
        }

        fn needs_tokens(&self) -> bool {
            self.inner.needs_tokens()
        }

        fn kv_bytes_per_token(&self) -> u64 {
            self.inner.kv_bytes_per_token()
        }

        fn vocab_size(&self) -> u32 {
            self.inner.vocab_size()
        }

        fn context_len(&self) -> Option<u32> {
            self.inner.context_len()
        }

        fn kv_budget_bytes(&self) -> u64 {
            self.inner.kv_budget_bytes()
        }

        fn init_kv(&mut self, geometry: $crate::KvGeometry) -> Result<(), $crate::BackendError> {
            self.inner.init_kv(geometry)
        }

        fn lora_adapters(&self) -> u32 {
            self.inner.lora_adapters()
        }

        fn stage_adapters(
            &mut self,
            step: &$crate::AdapterStep,
        ) -> Result<(), $crate::BackendError> {
            self.inner.stage_adapters(step)
        }

        fn draft_model(&self) -> Option<$crate::DraftInfo> {
            self.inner.draft_model()
        }
    };
}

/// Executes forward steps. Implemented by the CPU, CUDA and simulated backends.
pub trait Backend {
    /// Short name: `cpu`, `cuda`, `sim`.
    fn name(&self) -> &str;

    /// Whether entries must carry token ids and block tables (real numerics).
    fn needs_tokens(&self) -> bool;

    /// Bytes of KV cache per token for the backend's model (all layers, K and V).
    fn kv_bytes_per_token(&self) -> u64;

    /// Vocabulary size of the backend's model; the engine draws prompt token
    /// ids from `[0, vocab)`. Backends that need tokens must override it (the
    /// default 0 makes [`crate::NativeEngine::new`] refuse them).
    fn vocab_size(&self) -> u32 {
        0
    }

    /// Context length of the backend's model, the default of the `max_len`
    /// knob; `None` when the backend has no model (then
    /// [`crate::DEFAULT_MAX_LEN`] applies).
    fn context_len(&self) -> Option<u32> {
        None
    }

    /// Bytes the backend can give to the KV cache (device memory × utilisation − weights).
    fn kv_budget_bytes(&self) -> u64;

    /// Allocates KV storage for `geometry`; called once before the first step.
    fn init_kv(&mut self, geometry: KvGeometry) -> Result<(), BackendError>;

    /// LoRA adapters the backend serves (ids `0 .. n`); 0, the default, means
    /// none, and the engine rejects requests that name an adapter.
    fn lora_adapters(&self) -> u32 {
        0
    }

    /// Tells the backend which adapter each entry of the next
    /// [`Self::forward`] uses and which adapters to load into device slots
    /// first (see [`crate::AdapterSlots`]). Called before every step of an
    /// engine whose backend serves adapters. The default refuses any step
    /// that uses an adapter.
    ///
    /// # Errors
    /// [`BackendError::Unsupported`] from the default when the step uses adapters.
    fn stage_adapters(&mut self, step: &AdapterStep) -> Result<(), BackendError> {
        if step.uses_adapters() {
            return Err(BackendError::Unsupported(format!(
                "multi-LoRA is not supported on {} yet",
                self.name()
            )));
        }
        Ok(())
    }

    /// Runs one step.
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError>;

    /// The draft model beside the target, for speculative decoding: a short
    /// description for provenance (`None`: the backend has none and cannot
    /// speculate). A backend with a draft counts the draft's KV in
    /// [`Self::kv_bytes_per_token`] and its weights in
    /// [`Self::kv_budget_bytes`]: the draft's KV lives in the same blocks as
    /// the target's (one block table indexes both models' caches), so a
    /// rollback of the table rolls back both.
    fn draft_model(&self) -> Option<DraftInfo> {
        None
    }

    /// Runs one forward of the draft model: the same contract as
    /// [`Self::forward`] (entries, block tables, one sampled token per
    /// `sample` entry), over the draft's own KV cache.
    ///
    /// # Errors
    /// [`BackendError::Unsupported`] by default: the backend has no draft model.
    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let _ = batch;
        Err(BackendError::Unsupported(format!(
            "speculative decoding is not supported on {} yet: it has no draft model",
            self.name()
        )))
    }
}
