//! Model shapes of the CUDA backend (head size fixed at 128 by the attention kernels).

use fuselab_kernels::cuda::HEAD_DIM;

use crate::CudaBackendError;

/// The shape of a Llama-architecture model run in bf16 on the GPU.
///
/// The attention kernels need heads of exactly [`HEAD_DIM`] (128) elements,
/// so there is no head-size field.
#[derive(Clone, Debug, PartialEq)]
pub struct CudaModelConfig {
    /// Name of the shape (`llama3-8b`, `tiny`, `custom`).
    pub name: String,
    /// Transformer layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// MLP intermediate size.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RoPE base (`rope_theta`).
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
}

impl CudaModelConfig {
    /// Llama-3-8B: hidden 4096, 32 layers, 32 query / 8 KV heads of 128, FFN
    /// 14336, vocab 128256, RoPE theta 500000, untied `lm_head`.
    pub fn llama3_8b() -> Self {
        Self {
            name: "llama3-8b".into(),
            n_layers: 32,
            hidden: 4096,
            n_heads: 32,
            n_kv_heads: 8,
            ffn: 14336,
            vocab: 128_256,
            rope_theta: 500_000.0,
            rms_eps: 1e-5,
        }
    }

    /// The CUDA `tiny`: 4 layers, hidden 512, 8 query / 2 KV heads of 128, FFN
    /// 1408, vocab 4096, RoPE theta 500000.
    ///
    /// The CPU engine's `tiny` has heads of 32, which the CUDA attention
    /// kernels do not support, hence this shape of its own.
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            n_layers: 4,
            hidden: 512,
            n_heads: 8,
            n_kv_heads: 2,
            ffn: 1408,
            vocab: 4096,
            rope_theta: 500_000.0,
            rms_eps: 1e-5,
        }
    }

    /// The named preset: `llama3-8b` or `tiny`.
    pub fn preset(name: &str) -> Result<Self, CudaBackendError> {
        match name {
            "llama3-8b" => Ok(Self::llama3_8b()),
            "tiny" => Ok(Self::tiny()),
            other => Err(CudaBackendError::Config {
                field: "model",
                problem: format!("unknown CUDA model {other:?}; use llama3-8b or tiny"),
            }),
        }
    }

    /// Checks that the kernels can run the shape.
    pub fn validate(&self) -> Result<(), CudaBackendError> {
        let bad =
            |field: &'static str, problem: String| Err(CudaBackendError::Config { field, problem });
        for (field, v) in [
            ("n_layers", self.n_layers),
            ("hidden", self.hidden),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
        ] {
            if v == 0 {
                return bad(field, "must be positive".into());
            }
        }
        for (field, v) in [("hidden", self.hidden), ("ffn", self.ffn)] {
            if !v.is_multiple_of(8) {
                return bad(field, format!("{v} is not a multiple of 8"));
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) || self.n_heads / self.n_kv_heads > 8 {
            return bad(
                "n_kv_heads",
                format!(
                    "{} query heads must be 1 to 8 times the {} kv heads",
                    self.n_heads, self.n_kv_heads
                ),
            );
        }
        if self.vocab > i32::MAX as usize {
            return bad("vocab", format!("{} does not fit 31 bits", self.vocab));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad("rope_theta", format!("{} must be above 1", self.rope_theta));
        }
        Ok(())
    }

    /// Elements per head (always 128).
    pub const fn head_dim(&self) -> usize {
        HEAD_DIM
    }

    /// Width of one token's queries.
    pub fn q_width(&self) -> usize {
        self.n_heads * HEAD_DIM
    }

    /// Width of one token's keys or values.
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * HEAD_DIM
    }

    /// KV cache bytes per token: all layers, K and V, bf16.
    pub fn kv_bytes_per_token(&self) -> u64 {
        (self.n_layers * 2 * self.kv_width() * 2) as u64
    }

    /// Parameters (embedding and untied `lm_head` both counted).
    pub fn parameters(&self) -> u64 {
        let (h, q, kv, f, v) = (
            self.hidden,
            self.q_width(),
            self.kv_width(),
            self.ffn,
            self.vocab,
        );
        let layer = h * (q + 2 * kv) + q * h + 3 * h * f + 2 * h;
        (2 * v * h + self.n_layers * layer + h) as u64
    }

    /// Bytes of the bf16 weights.
    pub fn weight_bytes(&self) -> u64 {
        2 * self.parameters()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_8b_has_eight_billion_parameters_and_128_kib_of_kv_per_token() {
        let c = CudaModelConfig::llama3_8b();
        c.validate().unwrap();
        assert_eq!(c.parameters(), 8_030_261_248);
        assert_eq!(c.kv_bytes_per_token(), 32 * 2 * 1024 * 2);
        CudaModelConfig::tiny().validate().unwrap();
    }

    #[test]
    fn bad_shapes_name_the_field() {
        let e = CudaModelConfig::preset("gpt2").unwrap_err().to_string();
        assert!(e.contains("model") && e.contains("llama3-8b"), "{e}");
        let c = CudaModelConfig {
            n_kv_heads: 3,
            ..CudaModelConfig::tiny()
        };
        assert!(c.validate().unwrap_err().to_string().contains("n_kv_heads"));
        let c = CudaModelConfig {
            ffn: 100,
            ..CudaModelConfig::tiny()
        };
        assert!(c.validate().unwrap_err().to_string().contains("ffn"));
    }
}
