//! Hardware profiles and model shapes.
//!
//! Peaks are the vendors' *dense* bf16 tensor-core figures (the datasheets
//! print the 2:4-sparsity figure, twice as large, next to them; research/engine.md
//! §d.1 warns about tools that use the sparse one). Memory is what `nvidia-smi`
//! reports as total.

use fuselab_core::Error;

/// A GPU as the cost model sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Hardware {
    /// Profile name used on the command line.
    pub name: &'static str,
    /// Dense bf16 tensor-core peak, FLOP/s.
    pub peak_flops: f64,
    /// HBM (or GDDR) bandwidth, bytes/s.
    pub mem_bw: f64,
    /// Device memory, bytes.
    pub memory_bytes: f64,
    /// Per-GPU, per-direction bandwidth of the link used for tensor-parallel
    /// all-reduce (NVLink, or PCIe where there is none), bytes/s.
    pub link_bw: f64,
    /// Where the numbers come from.
    pub source: &'static str,
}

const MIB: f64 = 1024.0 * 1024.0;

/// The hardware profiles.
pub const HARDWARE: [Hardware; 4] = [
    Hardware {
        name: "a100-80g",
        peak_flops: 312e12,
        mem_bw: 2.039e12,
        memory_bytes: 81920.0 * MIB,
        link_bw: 300e9,
        source: "NVIDIA A100 Tensor Core GPU datasheet (SXM4 80GB): BF16 312 TFLOPS dense (624 with sparsity), \
                 HBM2e 2,039 GB/s, NVLink 600 GB/s (300 GB/s per direction)",
    },
    Hardware {
        name: "h100-sxm",
        peak_flops: 989e12,
        mem_bw: 3.35e12,
        memory_bytes: 81559.0 * MIB,
        link_bw: 450e9,
        source: "NVIDIA H100 Tensor Core GPU datasheet (SXM5): BF16 1,979 TFLOPS with sparsity = 989 dense, \
                 80 GB HBM3 3.35 TB/s, NVLink 900 GB/s (450 GB/s per direction)",
    },
    Hardware {
        name: "h200",
        peak_flops: 989e12,
        mem_bw: 4.8e12,
        memory_bytes: 143_771.0 * MIB,
        link_bw: 450e9,
        source: "NVIDIA H200 Tensor Core GPU datasheet (SXM): BF16 1,979 TFLOPS with sparsity = 989 dense, \
                 141 GB HBM3e 4.8 TB/s, NVLink 900 GB/s (450 GB/s per direction); measured here: \
                 cuBLAS bf16 GEMM 795 TFLOP/s, copy 3.94 TB/s (DESIGN.md §8)",
    },
    Hardware {
        name: "l40s",
        peak_flops: 362e12,
        mem_bw: 864e9,
        memory_bytes: 46068.0 * MIB,
        link_bw: 32e9,
        source: "NVIDIA L40S datasheet: BF16 tensor 362 TFLOPS dense (733 with sparsity), 48 GB GDDR6 864 GB/s, \
                 no NVLink: PCIe Gen4 x16 64 GB/s (32 GB/s per direction)",
    },
];

/// Looks a hardware profile up by name.
///
/// # Errors
/// An [`Error::Invalid`] for `--hardware` listing the valid names.
pub fn hardware(name: &str) -> Result<&'static Hardware, Error> {
    HARDWARE
        .iter()
        .find(|h| h.name == name.trim())
        .ok_or_else(|| {
            Error::invalid(
                "--hardware",
                format!("unknown hardware `{name}`"),
                format!(
                    "valid hardware profiles: {}",
                    HARDWARE.map(|h| h.name).join(", ")
                ),
            )
        })
}

/// A decoder-only Llama-family model's shape (RMSNorm, RoPE, GQA, SwiGLU; untied embeddings).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelShape {
    /// Name used on the command line.
    pub name: &'static str,
    /// Transformer layers.
    pub layers: u32,
    /// Hidden size.
    pub hidden: u32,
    /// Query heads.
    pub q_heads: u32,
    /// Key/value heads (GQA).
    pub kv_heads: u32,
    /// Head dimension.
    pub head_dim: u32,
    /// FFN (intermediate) size.
    pub ffn: u32,
    /// Vocabulary size.
    pub vocab: u32,
    /// Context length the model was trained for.
    pub max_len: u32,
}

/// The model shapes (from each model's published `config.json`).
pub const MODELS: [ModelShape; 5] = [
    ModelShape {
        name: "llama3-8b",
        layers: 32,
        hidden: 4096,
        q_heads: 32,
        kv_heads: 8,
        head_dim: 128,
        ffn: 14336,
        vocab: 128_256,
        max_len: 8192,
    },
    ModelShape {
        name: "llama2-7b",
        layers: 32,
        hidden: 4096,
        q_heads: 32,
        kv_heads: 32,
        head_dim: 128,
        ffn: 11008,
        vocab: 32000,
        max_len: 4096,
    },
    ModelShape {
        name: "llama2-13b",
        layers: 40,
        hidden: 5120,
        q_heads: 40,
        kv_heads: 40,
        head_dim: 128,
        ffn: 13824,
        vocab: 32000,
        max_len: 4096,
    },
    ModelShape {
        name: "llama3-70b",
        layers: 80,
        hidden: 8192,
        q_heads: 64,
        kv_heads: 8,
        head_dim: 128,
        ffn: 28672,
        vocab: 128_256,
        max_len: 8192,
    },
    ModelShape {
        name: "tiny",
        layers: 4,
        hidden: 256,
        q_heads: 8,
        kv_heads: 2,
        head_dim: 32,
        ffn: 704,
        vocab: 4096,
        max_len: 4096,
    },
];

/// Looks a model shape up by name.
///
/// # Errors
/// An [`Error::Invalid`] for `--model` listing the valid names.
pub fn model(name: &str) -> Result<&'static ModelShape, Error> {
    MODELS
        .iter()
        .find(|m| m.name == name.trim())
        .ok_or_else(|| {
            Error::invalid(
                "--model",
                format!("unknown model `{name}`"),
                format!("valid models: {}", MODELS.map(|m| m.name).join(", ")),
            )
        })
}

impl ModelShape {
    /// Parameters in matmuls of one layer (q, k, v, o, gate, up, down).
    pub fn layer_params(&self) -> u64 {
        let h = u64::from(self.hidden);
        let qd = u64::from(self.q_heads * self.head_dim);
        let kvd = u64::from(self.kv_heads * self.head_dim);
        h * (qd + 2 * kvd) + qd * h + 3 * h * u64::from(self.ffn)
    }

    /// All parameters: layers, norms, embedding and LM head (untied).
    pub fn params(&self) -> u64 {
        let h = u64::from(self.hidden);
        u64::from(self.layers) * (self.layer_params() + 2 * h) + 2 * u64::from(self.vocab) * h + h
    }

    /// bf16 weight bytes.
    pub fn weight_bytes(&self) -> u64 {
        2 * self.params()
    }

    /// bf16 KV bytes per token on one of `tp` GPUs (K and V, all layers; KV
    /// heads are split over the GPUs, replicated when there are fewer than `tp`).
    pub fn kv_bytes_per_token(&self, tp: u32) -> u64 {
        let heads = self.kv_heads.div_ceil(tp.max(1));
        2 * 2 * u64::from(self.layers) * u64::from(heads) * u64::from(self.head_dim)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama3_8b_matches_first_principles() {
        let m = model("llama3-8b").unwrap();
        // research/engine.md §d.4: weights 16.06 GB, KV 128 KiB/token.
        assert!(
            (m.weight_bytes() as f64 / 1e9 - 16.06).abs() < 0.02,
            "{}",
            m.weight_bytes()
        );
        assert_eq!(m.kv_bytes_per_token(1), 128 * 1024);
        assert_eq!(m.kv_bytes_per_token(2), 64 * 1024);
        let m70 = model("llama3-70b").unwrap();
        assert!(
            (m70.params() as f64 / 1e9 - 70.55).abs() < 0.1,
            "{}",
            m70.params()
        );
    }

    #[test]
    fn unknown_names_list_the_valid_ones() {
        let e = hardware("b200").unwrap_err().to_string();
        assert!(e.contains("a100-80g, h100-sxm, h200, l40s"), "{e}");
        let e = model("gpt4").unwrap_err().to_string();
        assert!(
            e.contains("llama3-8b, llama2-7b, llama2-13b, llama3-70b, tiny"),
            "{e}"
        );
    }
}
