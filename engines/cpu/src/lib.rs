//! # fuselab-cpu
//!
//! The CPU backend: a Llama-architecture model (RMSNorm, RoPE, grouped-query
//! attention, SwiGLU, tied or untied `lm_head`) with real f32 numerics.
//!
//! * Dense math (projections, MLP, `lm_head`) runs on candle-core CPU tensors.
//! * Attention runs through [`fuselab_kernels`] over a paged KV cache that the
//!   backend owns ([`CpuBackend`] allocates it in
//!   [`fuselab_engine::Backend::init_kv`]): ragged flash attention for prompt
//!   chunks, split-KV paged attention for decodes.
//! * Weights are seeded random at a configurable size ([`ModelShape::tiny`] by
//!   default) or loaded from a safetensors file with Hugging Face Llama names.
//! * LoRA ([`CpuBackend::with_lora`]): batched multi-LoRA, each token with
//!   its own adapter's `A` and `B` in all four projections (BGMV), or
//!   MeteoRA's per-token top-k gate over all adapters; [`Model::merged`]
//!   folds one adapter into the weights for reference runs.
//! * A draft model for speculative decoding ([`CpuBackend::with_draft`]) is
//!   made from the target by a documented perturbation — its first layers,
//!   seeded noise on every matrix ([`Weights::perturbed`]) — so its
//!   acceptance is *measured*; an optional seeded coin ([`DraftOptions::alpha`])
//!   makes acceptance i.i.d. at a chosen rate (*modelled*).
//! * [`Model::naive_logits`] recomputes a whole sequence densely, with no KV
//!   cache: the oracle of the invariance tests.
//!
//! ```
//! use fuselab_cpu::CpuBackend;
//! use fuselab_engine::{Backend, BatchEntry, ForwardBatch, KvGeometry};
//!
//! let mut b = CpuBackend::tiny(42).unwrap();
//! b.init_kv(KvGeometry { block_size: 16, num_blocks: 4 }).unwrap();
//! let batch = ForwardBatch {
//!     entries: vec![BatchEntry {
//!         request: 1, start_pos: 0, n_tokens: 3, sample: true, is_decode: false,
//!         tokens: vec![5, 17, 99], block_table: vec![2], row: None,
//!     }],
//!     ..Default::default()
//! };
//! let out = b.forward(&batch).unwrap();
//! assert_eq!(out.sampled.len(), 1);
//! ```

mod backend;
mod config;
mod error;
mod lora;
mod model;
mod weights;

pub use backend::{CpuBackend, CpuOptions, DraftOptions, SampledLogits};
pub use error::CpuError;
pub use fuselab_engine::ModelShape;
pub use lora::{LoraWeights, Proj};
pub use model::{ForwardOptions, LoraInput, Model, SeqInput};
pub use weights::{Weights, write_random_safetensors};
