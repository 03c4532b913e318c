//! # fuselab-engine
//!
//! The in-process inference engine: a paged KV block manager, the five
//! scheduling policies of DESIGN.md §3.1, ragged forward batches, the
//! [`Backend`] trait that CPU, CUDA and simulated backends implement, and the
//! engine loop that turns scheduled steps into [`fuselab_core::TokenEvent`]s.
//!
//! The scheduler code is the same for every backend: the simulator prices the
//! very batches the real backends execute.
//!
//! ## Using it
//! * Build a [`PolicyConfig`] (`PolicyConfig::with_knobs(kind, ["budget=768"])`).
//! * Wrap a backend: [`NativeEngine::new`].
//! * Either drive it yourself ([`NativeEngine::submit`], [`NativeEngine::step`]
//!   with your clock) or run a whole workload on a virtual clock with [`simulate`].
//!
//! ## Policies (exact rules in research/engine.md §a)
//! | policy | step rule | default knobs |
//! |---|---|---|
//! | `static` | `batch` requests padded to the longest prompt, decode until all rows finish; tokens returned when the batch ends (HF `generate`) | batch 16, block 16, stream off |
//! | `continuous` | all-prefill step when prompts fit, else all-decode; preempt newest | budget max(max_len, 2048), max_seqs 256, block 16, watermark 0.01, prefix_cache on |
//! | `chunked` | every running decode, then partial prefills, then new prompts, chunked to the budget | budget 2048, max_seqs 256 (vLLM v0.6's chunked-prefill defaults; `--knobs-from sarathi` or `vllm-v1` for those systems'), block 16, watermark 0.01, prefix_cache on |
//! | `splitfuse` | decodes, then prompts split exactly at the budget; whole remaining prompt must fit in KV | budget 768, max_seqs 512, max_tracked 2048, block 64, prefix_cache off |
//! | `prepack` | prompts packed best-fit-decreasing into rows of the longest prompt, then decode as static | batch 16, block 16, stream off |
//!
//! Sources of the defaults: vLLM v0 `EngineArgs` (continuous), vLLM v0.6
//! chunked prefill (chunked), DeepSpeed-MII `DSStateManagerConfig`
//! (splitfuse), HF pipelines (static, prepack); research/engine.md §a.
//!
//! Every policy accepts `stream` (off for static and prepack, whose tokens
//! reach the client together when the batch ends, as HF `generate` returns
//! them; on elsewhere) and `max_len` (default: the model's context length, as
//! vLLM's `max_model_len`): requests with more prompt + output tokens are
//! rejected.
//!
//! ## Multi-LoRA
//! Requests may name a LoRA adapter ([`fuselab_core::RequestSpec::adapter`]).
//! Adapters live in `max_loras` device slots (a knob of every policy, default
//! 1 as in vLLM) with LRU replacement; a waiting request is admitted only when
//! its adapter is resident or can be loaded in this step, and each step's
//! loads and evictions are recorded ([`AdapterSlots`], [`AdapterStep`]).
//!
//! ## Speculative decoding
//! Every policy takes `spec_k` (draft tokens per sequence and decode step, 0
//! off) and `spec_adaptive`. The backend's draft model proposes, the target
//! verifies `1 + k` positions per sequence in the step's one ragged forward
//! (counted against the token budget), greedy exact match keeps the longest
//! accepted prefix plus one token, and rejected positions' KV is rolled back.
//! Acceptance is measured (a real draft) or modelled ([`AcceptanceModel`]);
//! see the `spec` module and [`NativeEngine::with_spec`].
//!
//! ## Prefix caching
//! With `prefix_cache` on, the [`BlockManager`] keeps every full KV block,
//! hashed by its token ids and its parent's hash, after its request ends, and
//! a request leaving the waiting queue starts its prefill after the cached
//! blocks of its tokens (vLLM automatic prefix caching). Admission counts
//! only the blocks a hit does not cover, plus the evictable cached blocks it
//! takes; evictable blocks count as free capacity. A backend without real
//! token ids (the simulator) still gets synthetic ones, so the cache keys on
//! the same prompt ids either way.

mod backend;
mod batch;
mod driver;
mod engine;
mod error;
mod kv;
mod lora;
mod model;
mod pack;
mod policy;
mod realtime;
mod sched;
mod slowdown;
mod spec;

pub use backend::{Backend, BackendError, DraftInfo, KvGeometry, StepOutput};
pub use batch::{BatchEntry, BatchShape, ForwardBatch};
pub use driver::{SimRun, simulate};
pub use engine::{FinishedRequest, NativeEngine, RequestState, StepReport};
pub use error::{EngineError, Result};
pub use kv::{BlockManager, PrefixHit};
pub use lora::{
    AdapterSlots, AdapterStep, LoraConfig, LoraMode, LoraTensor, adapter_params, lora_projections,
    lora_tensor,
};
pub use model::{MODEL_NAMES, ModelShape, RopeScaling};
pub use pack::best_fit_decreasing;
pub use policy::{
    DEFAULT_MAX_LEN, DeviceClass, KNOB_SETS, PolicyConfig, PolicyKind, knob_set, parse_knob,
};
pub use realtime::RealTime;
pub use sched::StepAudit;
pub use slowdown::Slowdown;
pub use spec::{
    AcceptanceModel, MAX_SPEC_K, Sampler, SamplerStream, Verdict, adapt_k,
    expected_block_efficiency, greedy_accepted, rejection_sample,
};
