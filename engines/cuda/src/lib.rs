//! # fuselab-cuda
//!
//! The CUDA backend: a Llama-architecture model in bf16 on one NVIDIA GPU,
//! behind the engine's [`fuselab_engine::Backend`] trait.
//!
//! * Kernels come from [`fuselab_kernels::cuda`] (NVRTC at start-up): RMSNorm,
//!   one fused RoPE + paged K/V write, SiLU·mul, ragged flash prefill attention
//!   (on Hopper's `wgmma` where the device has it) and split-KV paged decode
//!   attention through block tables; GEMMs on cuBLAS: one fused QKV projection,
//!   and the o and down projections added into the residual stream (β = 1).
//! * The paged KV cache lives on the device, sized in
//!   [`fuselab_engine::Backend::init_kv`] from the budget
//!   `free memory × 0.9 − weights`; allocating it also runs every kernel path
//!   once (a warm-up) and captures the decode graphs, before any request.
//! * A step uploads its metadata (token ids, positions, KV slots, `cu_seqlens`,
//!   block tables, decodes longest first) into persistent device buffers, runs
//!   every layer over all the step's rows (padding rows too, for padded batches),
//!   applies `lm_head` only to the sampled rows, samples greedily on the device
//!   and copies back only the token ids; decode-only steps of up to 256 rows
//!   replay a CUDA graph captured for their batch-size bucket. It synchronises
//!   the stream before returning, so the engine's wall-clock step time is the
//!   real one.
//! * Speculative decoding ([`CudaBackend::with_draft`]): a draft model on the
//!   same device and stream, its own shape with random weights or made from the
//!   target (first layers, seeded noise), its KV in the target's blocks. The
//!   target verifies `k` drafts as `k + 1` decode rows of one sequence (row j
//!   attends the first `start + j + 1` positions), so a verify step is a
//!   decode step and can replay a graph.
//! * [`profile`]: opt-in per-operator GPU time per phase (`--cuda-profile`).
//! * LoRA ([`CudaBackend::with_lora`]): batched multi-LoRA in `max_loras` device
//!   slots (BGMV: each token row uses its own adapter, loads copied from host
//!   memory) or MeteoRA (every adapter resident, a per-token top-k gate), applied
//!   after each of the four projection GEMMs by NVRTC kernels; the adapters are
//!   the CPU backend's values for the same seed, and decode graphs stay on.
//! * Shapes: any [`ModelShape`] that [`validate_shape`] accepts, e.g. `llama3-8b`
//!   and `tiny-128`
//!   (heads of 128, which the attention kernels require). Weights are seeded
//!   random (filled on the GPU) or uploaded from a safetensors file.
//!
//! Without a driver every constructor fails with `no CUDA driver found (...)`;
//! call [`probe`] first to check cheaply (cudarc panics when `libcuda` is missing,
//! the probe does not).

mod backend;
mod config;
mod error;
mod lora;
pub mod profile;
mod weights;

pub use backend::{CudaBackend, CudaOptions, DraftOptions, DraftSource};
pub use config::validate as validate_shape;
pub use error::CudaBackendError;
pub use fuselab_engine::ModelShape;

/// Checks, without panicking, that the CUDA driver, NVRTC and cuBLAS libraries load.
///
/// # Errors
/// `no CUDA driver found (...)` or a missing-library error naming the fix.
pub fn probe() -> Result<(), CudaBackendError> {
    Ok(fuselab_kernels::cuda::probe_driver()?)
}
