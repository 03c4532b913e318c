//! What the CUDA backend needs of a [`ModelShape`]: heads of exactly
//! [`HEAD_DIM`] (128) elements, 8-aligned widths and at most 8 query heads
//! per KV head (the attention kernels' limits).

use fuselab_engine::ModelShape;
use fuselab_kernels::cpu::rope::{Llama3Scaling, RopeConfig};
use fuselab_kernels::cuda::HEAD_DIM;

use crate::CudaBackendError;

/// Bytes of one bf16 element of the weights and the KV cache.
pub(crate) const ELEM_BYTES: u64 = 2;

/// Checks that the kernels can run `shape`.
///
/// # Errors
/// [`CudaBackendError::Config`] naming the field.
pub fn validate(shape: &ModelShape) -> Result<(), CudaBackendError> {
    shape.validate()?;
    let bad =
        |field: &'static str, problem: String| Err(CudaBackendError::Config { field, problem });
    if shape.head_dim != HEAD_DIM {
        return bad(
            "head_dim",
            format!(
                "{} elements per head, but the CUDA attention kernels take {HEAD_DIM}; use `tiny-128` instead of `tiny`",
                shape.head_dim
            ),
        );
    }
    for (field, v) in [("hidden", shape.hidden), ("ffn", shape.ffn)] {
        if !v.is_multiple_of(8) {
            return bad(field, format!("{v} is not a multiple of 8"));
        }
    }
    if shape.n_heads / shape.n_kv_heads > 8 {
        return bad(
            "n_kv_heads",
            format!(
                "{} query heads must be 1 to 8 times the {} kv heads",
                shape.n_heads, shape.n_kv_heads
            ),
        );
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_8b_and_tiny_128_run_and_tiny_is_refused_with_a_hint() {
        validate(&ModelShape::llama3_8b()).unwrap();
        validate(&ModelShape::tiny_128()).unwrap();
        let e = validate(&ModelShape::tiny()).unwrap_err().to_string();
        assert!(e.contains("head_dim") && e.contains("tiny-128"), "{e}");
        let c = ModelShape {
            ffn: 100,
            ..ModelShape::tiny_128()
        };
        assert!(validate(&c).unwrap_err().to_string().contains("ffn"));
        let c = ModelShape {
            n_kv_heads: 1,
            n_heads: 16,
            ..ModelShape::tiny_128()
        };
        assert!(validate(&c).unwrap_err().to_string().contains("n_kv_heads"));
    }
}
