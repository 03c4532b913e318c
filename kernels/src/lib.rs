//! # fuselab-kernels
//!
//! Attention, normalisation and activation kernels for fuselab's real-numerics
//! backends, each with a plain reference implementation to test against.
//!
//! The CPU kernels (f32) live in [`cpu`], one module per kernel family:
//!
//! * [`cpu::paged`]: the paged KV cache layout (blocks of `block_size` tokens
//!   addressed through per-sequence block tables) and the KV write;
//! * [`cpu::attention`]: ragged (varlen) causal flash attention with online
//!   softmax reading K/V through block tables, and the naive dense reference;
//! * [`cpu::decode`]: paged decode attention with split-KV (Flash-Decoding)
//!   and a log-sum-exp merge;
//! * [`cpu::norm`], [`cpu::rope`], [`cpu::activation`]: RMSNorm, rotary
//!   position embeddings (Llama-3 style) and SiLU·mul.
//!
//! [`tunable`] exposes the kernels' configuration spaces for kernel-tuning
//! campaigns, with a correctness check and the timing of each configuration.
//!
//! One attention kernel covers whole prefill, chunked prefill at an offset,
//! decode and prepacked rows, because every [`cpu::attention::SeqChunk`] is
//! attended as its own causal sequence.

pub mod cpu;
pub mod cuda;
mod error;
pub mod tunable;

pub use error::KernelError;
