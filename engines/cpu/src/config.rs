//! How the CPU backend reads a [`ModelShape`]: RoPE parameters and the f32
//! KV cache's size.

use fuselab_engine::ModelShape;
use fuselab_kernels::cpu::rope::{Llama3Scaling, RopeConfig};

/// Bytes of one f32 element of the KV cache.
pub(crate) const KV_ELEM_BYTES: u64 = std::mem::size_of::<f32>() as u64;

/// The rotary-embedding parameters of `shape`.
pub(crate) fn rope(shape: &ModelShape) -> RopeConfig {
    RopeConfig {
        head_dim: shape.head_dim,
        theta: shape.rope_theta,
        scaling: shape.rope_scaling.map(|s| Llama3Scaling {
            factor: s.factor,
            low_freq_factor: s.low_freq_factor,
            high_freq_factor: s.high_freq_factor,
            original_max_position: s.original_max_position,
        }),
    }
}
