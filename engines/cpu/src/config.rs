//! Model shapes.

use fuselab_kernels::cpu::rope::{Llama3Scaling, RopeConfig};

use crate::CpuError;

/// The shape of a Llama-architecture model.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    /// Name of the shape (`tiny`, `small`, `custom`).
    pub name: String,
    /// Transformer layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads.
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// MLP intermediate size.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// RoPE base (`rope_theta`).
    pub rope_theta: f64,
    /// Optional Llama-3 RoPE frequency scaling.
    pub rope_scaling: Option<Llama3Scaling>,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_embeddings: bool,
}

impl ModelConfig {
    /// 4 layers, hidden 256, 8 query / 2 KV heads of 32, FFN 704, vocab 4096,
    /// RoPE theta 500000, untied `lm_head`.
    pub fn tiny() -> Self {
        Self {
            name: "tiny".into(),
            n_layers: 4,
            hidden: 256,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 32,
            ffn: 704,
            vocab: 4096,
            rope_theta: 500_000.0,
            rope_scaling: None,
            rms_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// 8 layers, hidden 512, 8 query / 2 KV heads of 64, FFN 1408, vocab 8192.
    pub fn small() -> Self {
        Self {
            name: "small".into(),
            n_layers: 8,
            hidden: 512,
            n_heads: 8,
            n_kv_heads: 2,
            head_dim: 64,
            ffn: 1408,
            vocab: 8192,
            ..Self::tiny()
        }
    }

    /// The named preset: `tiny` or `small`.
    pub fn preset(name: &str) -> Result<Self, CpuError> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            other => Err(CpuError::Config {
                field: "model",
                problem: format!("unknown CPU model {other:?}; use tiny or small"),
            }),
        }
    }

    /// Checks the shape is consistent.
    pub fn validate(&self) -> Result<(), CpuError> {
        let positive = [
            ("n_layers", self.n_layers),
            ("hidden", self.hidden),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(CpuError::Config {
                    field,
                    problem: "must be positive".into(),
                });
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return Err(CpuError::Config {
                field: "n_kv_heads",
                problem: format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_heads, self.n_kv_heads
                ),
            });
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(CpuError::Config {
                field: "head_dim",
                problem: format!("{} is odd; RoPE needs an even head size", self.head_dim),
            });
        }
        if self.vocab > u32::MAX as usize {
            return Err(CpuError::Config {
                field: "vocab",
                problem: format!("{} does not fit token ids of 32 bits", self.vocab),
            });
        }
        Ok(())
    }

    /// Width of one token's queries (`n_heads * head_dim`).
    pub fn q_width(&self) -> usize {
        self.n_heads * self.head_dim
    }

    /// Width of one token's keys or values (`n_kv_heads * head_dim`).
    pub fn kv_width(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// KV cache bytes per token: all layers, K and V, f32.
    pub fn kv_bytes_per_token(&self) -> u64 {
        (self.n_layers * 2 * self.kv_width() * std::mem::size_of::<f32>()) as u64
    }

    /// Parameters in the model (embedding and `lm_head` counted once when tied).
    pub fn parameters(&self) -> u64 {
        let (h, q, kv, f, v) = (
            self.hidden,
            self.q_width(),
            self.kv_width(),
            self.ffn,
            self.vocab,
        );
        let layer = h * (q + 2 * kv) + q * h + 3 * h * f + 2 * h;
        let head = if self.tie_embeddings { 0 } else { v * h };
        (v * h + head + self.n_layers * layer + h) as u64
    }

    /// Multiply-accumulate FLOPs (2 per MAC) of the dense math for `tokens`
    /// tokens of which `sampled` go through `lm_head`; attention excluded.
    pub fn dense_flops(&self, tokens: u64, sampled: u64) -> f64 {
        let (h, q, kv, f, v) = (
            self.hidden,
            self.q_width(),
            self.kv_width(),
            self.ffn,
            self.vocab,
        );
        let per_token = self.n_layers * (h * (q + 2 * kv) + q * h + 3 * h * f);
        2.0 * (per_token as f64 * tokens as f64 + (h * v) as f64 * sampled as f64)
    }

    pub(crate) fn rope(&self) -> RopeConfig {
        RopeConfig {
            head_dim: self.head_dim,
            theta: self.rope_theta,
            scaling: self.rope_scaling,
        }
    }
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self::tiny()
    }
}
