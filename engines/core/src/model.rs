//! Model shapes: the one description of a Llama-architecture model that every
//! backend uses (the simulator prices it, the CPU and CUDA backends run it).
//!
//! Presets follow each model's published `config.json`; `context_len` is the
//! context the model was trained for and is the default `max_len` of every
//! policy.

use fuselab_core::Error;

/// Llama-3.1 RoPE frequency scaling (`rope_scaling` with `rope_type: llama3`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeScaling {
    /// Divides low frequencies (8 for Llama-3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position / low_freq_factor` are scaled fully (1).
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position / high_freq_factor` are kept (4).
    pub high_freq_factor: f64,
    /// Context length the model was pretrained with (8192).
    pub original_max_position: f64,
}

impl RopeScaling {
    /// The scaling of every Llama-3.1 model.
    pub const LLAMA3_1: Self = Self {
        factor: 8.0,
        low_freq_factor: 1.0,
        high_freq_factor: 4.0,
        original_max_position: 8192.0,
    };
}

/// A decoder-only Llama-family model's shape (RMSNorm, RoPE, GQA, SwiGLU).
#[derive(Clone, Debug, PartialEq)]
pub struct ModelShape {
    /// Name used on the command line (`llama3-8b`, `tiny`, `custom`).
    pub name: String,
    /// Transformer layers.
    pub n_layers: usize,
    /// Hidden size.
    pub hidden: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (GQA).
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// MLP intermediate size.
    pub ffn: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Context length the model was trained for (`max_position_embeddings`).
    pub context_len: u32,
    /// RoPE base (`rope_theta`).
    pub rope_theta: f64,
    /// Optional Llama-3.1 RoPE frequency scaling.
    pub rope_scaling: Option<RopeScaling>,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Whether `lm_head` shares the embedding matrix.
    pub tie_embeddings: bool,
}

/// Names of the preset shapes, in the order `--help` lists them.
pub const MODEL_NAMES: [&str; 11] = [
    "llama3-8b",
    "llama3.1-8b",
    "llama3-70b",
    "llama3.1-70b",
    "llama3.2-1b",
    "llama3.2-1b-h128",
    "llama2-7b",
    "llama2-13b",
    "tiny",
    "tiny-128",
    "small",
];

impl ModelShape {
    /// Llama-3-8B: hidden 4096, 32 layers, 32 query / 8 KV heads of 128, FFN
    /// 14336, vocab 128256, RoPE theta 500000, 8192 context, untied `lm_head`.
    pub fn llama3_8b() -> Self {
        Self {
            name: "llama3-8b".into(),
            n_layers: 32,
            hidden: 4096,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 128,
            ffn: 14336,
            vocab: 128_256,
            context_len: 8192,
            rope_theta: 500_000.0,
            rope_scaling: None,
            rms_eps: 1e-5,
            tie_embeddings: false,
        }
    }

    /// Llama-3-70B: 80 layers, hidden 8192, 64 query / 8 KV heads, FFN 28672, 8192 context.
    pub fn llama3_70b() -> Self {
        Self {
            name: "llama3-70b".into(),
            n_layers: 80,
            hidden: 8192,
            n_heads: 64,
            ffn: 28672,
            ..Self::llama3_8b()
        }
    }

    /// Llama-3.2-1B (the usual draft for Llama-3-8B): 16 layers, hidden
    /// 2048, 32 query / 8 KV heads of 64, FFN 8192, vocab 128256, tied
    /// embeddings, 131072 context with Llama-3 RoPE scaling (factor 32).
    pub fn llama3_2_1b() -> Self {
        Self {
            name: "llama3.2-1b".into(),
            n_layers: 16,
            hidden: 2048,
            n_heads: 32,
            n_kv_heads: 8,
            head_dim: 64,
            ffn: 8192,
            context_len: 131_072,
            rope_scaling: Some(RopeScaling {
                factor: 32.0,
                ..RopeScaling::LLAMA3_1
            }),
            tie_embeddings: true,
            ..Self::llama3_8b()
        }
    }

    /// Llama-3.2-1B with its heads regrouped to 128 elements (the CUDA
    /// attention kernels' head size): 16 query / 4 KV heads of 128 instead of
    /// 32 / 8 of 64. Every GEMM, the parameter count, the KV bytes per token
    /// and the attention FLOPs are Llama-3.2-1B's; only the split of the same
    /// widths into heads differs. The CUDA engine's Llama-3.2-1B-shaped draft.
    pub fn llama3_2_1b_h128() -> Self {
        Self {
            name: "llama3.2-1b-h128".into(),
            n_heads: 16,
            n_kv_heads: 4,
            head_dim: 128,
            ..Self::llama3_2_1b()
        }
    }

    /// The 4-layer CPU test model: hidden 256, 8 query / 2 KV heads of 32, FFN
    /// 704, vocab 4096, 4096 context, RoPE theta 500000.
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
            context_len: 4096,
            ..Self::llama3_8b()
        }
    }

    /// `tiny` with heads of 128 (the CUDA attention kernels' head size):
    /// hidden 512, FFN 1408.
    pub fn tiny_128() -> Self {
        Self {
            name: "tiny-128".into(),
            hidden: 512,
            head_dim: 128,
            ffn: 1408,
            ..Self::tiny()
        }
    }

    /// 8 layers, hidden 512, 8 query / 2 KV heads of 64, FFN 1408, vocab 8192.
    pub fn small() -> Self {
        Self {
            name: "small".into(),
            n_layers: 8,
            hidden: 512,
            head_dim: 64,
            ffn: 1408,
            vocab: 8192,
            ..Self::tiny()
        }
    }

    /// The named preset (see [`MODEL_NAMES`]).
    ///
    /// # Errors
    /// An [`Error::Invalid`] for `--model` listing the valid names.
    pub fn preset(name: &str) -> Result<Self, Error> {
        let llama2 = Self {
            name: "llama2-7b".into(),
            n_kv_heads: 32,
            ffn: 11008,
            vocab: 32000,
            context_len: 4096,
            rope_theta: 10_000.0,
            ..Self::llama3_8b()
        };
        let llama3_1 = |base: Self, name: &str| Self {
            name: name.into(),
            context_len: 131_072,
            rope_scaling: Some(RopeScaling::LLAMA3_1),
            ..base
        };
        Ok(match name.trim() {
            "llama3-8b" => Self::llama3_8b(),
            "llama3.1-8b" => llama3_1(Self::llama3_8b(), "llama3.1-8b"),
            "llama3-70b" => Self::llama3_70b(),
            "llama3.1-70b" => llama3_1(Self::llama3_70b(), "llama3.1-70b"),
            "llama3.2-1b" => Self::llama3_2_1b(),
            "llama3.2-1b-h128" => Self::llama3_2_1b_h128(),
            "llama2-7b" => llama2,
            "llama2-13b" => Self {
                name: "llama2-13b".into(),
                n_layers: 40,
                hidden: 5120,
                n_heads: 40,
                n_kv_heads: 40,
                ffn: 13824,
                ..llama2
            },
            "tiny" => Self::tiny(),
            "tiny-128" => Self::tiny_128(),
            "small" => Self::small(),
            other => {
                return Err(Error::invalid(
                    "--model",
                    format!("unknown model `{other}`"),
                    format!("valid models: {}", MODEL_NAMES.join(", ")),
                ));
            }
        })
    }

    /// Checks that the shape is consistent.
    ///
    /// # Errors
    /// An [`Error::Invalid`] naming the field.
    pub fn validate(&self) -> Result<(), Error> {
        let bad = |field: &str, problem: String, hint: &str| {
            Err(Error::invalid(format!("model.{field}"), problem, hint))
        };
        for (field, v) in [
            ("n_layers", self.n_layers),
            ("hidden", self.hidden),
            ("n_heads", self.n_heads),
            ("n_kv_heads", self.n_kv_heads),
            ("head_dim", self.head_dim),
            ("ffn", self.ffn),
            ("vocab", self.vocab),
        ] {
            if v == 0 {
                return bad(field, "is 0".into(), "give a positive size");
            }
        }
        if !self.n_heads.is_multiple_of(self.n_kv_heads) {
            return bad(
                "n_kv_heads",
                format!(
                    "{} query heads are not a multiple of {} kv heads",
                    self.n_heads, self.n_kv_heads
                ),
                "give kv heads that divide the query heads",
            );
        }
        if !self.head_dim.is_multiple_of(2) {
            return bad(
                "head_dim",
                format!("{} is odd", self.head_dim),
                "RoPE needs an even head size",
            );
        }
        if self.vocab > i32::MAX as usize {
            return bad(
                "vocab",
                format!("{} does not fit 31 bits", self.vocab),
                "use a smaller vocabulary",
            );
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return bad(
                "rope_theta",
                format!("{} is not above 1", self.rope_theta),
                "give the model's rope_theta",
            );
        }
        if self.context_len < 2 {
            return bad(
                "context_len",
                format!("{} is below 2", self.context_len),
                "give the model's max_position_embeddings",
            );
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

    /// Parameters in the matmuls of one layer (q, k, v, o, gate, up, down).
    pub fn layer_params(&self) -> u64 {
        let (h, q, kv, f) = (self.hidden, self.q_width(), self.kv_width(), self.ffn);
        (h * (q + 2 * kv) + q * h + 3 * h * f) as u64
    }

    /// All parameters: layers, norms, embedding and `lm_head` (counted once when tied).
    pub fn params(&self) -> u64 {
        let (h, v) = (self.hidden as u64, self.vocab as u64);
        let head = if self.tie_embeddings { 0 } else { v * h };
        self.n_layers as u64 * (self.layer_params() + 2 * h) + v * h + head + h
    }

    /// Bytes of the weights at `bytes_per_param` bytes each (2 for bf16).
    pub fn weight_bytes(&self, bytes_per_param: u64) -> u64 {
        bytes_per_param * self.params()
    }

    /// KV cache bytes per token on one of `tp` GPUs at `bytes_per_elem` bytes
    /// an element (K and V, all layers; KV heads are split over the GPUs,
    /// replicated when there are fewer than `tp`).
    pub fn kv_bytes_per_token(&self, tp: u32, bytes_per_elem: u64) -> u64 {
        let heads = self.n_kv_heads.div_ceil(tp.max(1) as usize);
        2 * bytes_per_elem * (self.n_layers * heads * self.head_dim) as u64
    }

    /// Multiply-accumulate FLOPs (2 per MAC) of the dense math for `tokens`
    /// tokens of which `sampled` go through `lm_head`; attention excluded.
    pub fn dense_flops(&self, tokens: u64, sampled: u64) -> f64 {
        let per_token = self.n_layers as u64 * self.layer_params();
        2.0 * (per_token as f64 * tokens as f64
            + (self.hidden * self.vocab) as f64 * sampled as f64)
    }
}

impl Default for ModelShape {
    fn default() -> Self {
        Self::tiny()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_is_valid_and_named_as_listed() {
        for name in MODEL_NAMES {
            let m = ModelShape::preset(name).unwrap();
            assert_eq!(m.name, name);
            m.validate().unwrap();
        }
    }

    #[test]
    fn llama3_8b_matches_first_principles() {
        let m = ModelShape::llama3_8b();
        // research/engine.md §d.4: weights 16.06 GB, KV 128 KiB/token in bf16.
        assert_eq!(m.params(), 8_030_261_248);
        assert_eq!(m.kv_bytes_per_token(1, 2), 128 * 1024);
        assert_eq!(m.kv_bytes_per_token(2, 2), 64 * 1024);
        // Llama-3.2-1B's published 1.24 B parameters (tied embeddings), 32 KiB of KV a token.
        let d = ModelShape::llama3_2_1b();
        assert_eq!(d.params(), 1_235_814_400);
        assert_eq!(d.kv_bytes_per_token(1, 2), 32 * 1024);
        let h = ModelShape::llama3_2_1b_h128();
        assert_eq!(
            (
                h.params(),
                h.kv_bytes_per_token(1, 2),
                h.q_width(),
                h.kv_width()
            ),
            (
                d.params(),
                d.kv_bytes_per_token(1, 2),
                d.q_width(),
                d.kv_width()
            )
        );
        let m70 = ModelShape::preset("llama3.1-70b").unwrap();
        assert!(
            (m70.params() as f64 / 1e9 - 70.55).abs() < 0.1,
            "{}",
            m70.params()
        );
        assert_eq!(m70.context_len, 131_072);
        assert_eq!(
            ModelShape::preset("llama3.1-8b").unwrap().rope_scaling,
            Some(RopeScaling::LLAMA3_1)
        );
        assert_eq!(ModelShape::preset("llama2-13b").unwrap().context_len, 4096);
    }

    #[test]
    fn bad_names_and_shapes_name_the_field() {
        let e = ModelShape::preset("gpt4").unwrap_err().to_string();
        assert!(
            e.contains("--model") && e.contains("llama3.1-8b, llama3-70b"),
            "{e}"
        );
        let m = ModelShape {
            n_kv_heads: 3,
            ..ModelShape::tiny()
        };
        assert!(m.validate().unwrap_err().to_string().contains("n_kv_heads"));
    }
}
