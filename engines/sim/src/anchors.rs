//! Published measurements of other GPUs that the scaled H200 calibration is
//! checked against (research/engine.md §b.1 and §d.2).
//!
//! * Vidur's MLP profiles (`data/profiling/compute/{a100,h100}/<model>/mlp.csv`,
//!   microsoft/vidur@7d47513, TP 1, median per layer): the whole layer without
//!   attention (QKV, O, gate/up, down, SiLU·mul, RMSNorm ×2, RoPE, residual
//!   adds, KV write) against the token count. They are PyTorch timings of one
//!   launch each, so their 1-token rows carry PyTorch's dispatch.
//! * FlashAttention-2 and -3 forward, causal, head dimension 128, on the H100
//!   SXM5 (the FlashAttention-3 paper's figure), TFLOP/s against sequence length.
//!
//! Vidur's attention profiles are not in the repository snapshot the research
//! read (every `attention.csv` is over 4 MiB), and nothing here is published for
//! the L40S: its profile is the scaled calibration unchecked.

use fuselab_engine::{BatchEntry, BatchShape, ForwardBatch, ModelShape};

use crate::calib::{Calibration, Heads, Target};
use crate::hardware::Hardware;

/// One published per-layer time of the layer without attention.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MlpAnchor {
    /// Hardware profile.
    pub hardware: &'static str,
    /// Model shape.
    pub model: &'static str,
    /// Tokens in the pass.
    pub tokens: u32,
    /// Vidur's median, milliseconds per layer.
    pub ms: f64,
}

/// Vidur's MLP rows (research/engine.md §b.1).
pub const VIDUR_MLP: [MlpAnchor; 14] = [
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 1,
        ms: 0.303,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 64,
        ms: 0.351,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 128,
        ms: 0.41,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 512,
        ms: 1.08,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 2048,
        ms: 4.55,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 8192,
        ms: 17.0,
    },
    MlpAnchor {
        hardware: "a100-80g",
        model: "llama3-8b",
        tokens: 16384,
        ms: 33.8,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 1,
        ms: 0.175,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 128,
        ms: 0.199,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 256,
        ms: 0.286,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 512,
        ms: 0.375,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 1024,
        ms: 0.657,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 2048,
        ms: 1.26,
    },
    MlpAnchor {
        hardware: "h100-sxm",
        model: "llama2-7b",
        tokens: 4096,
        ms: 2.61,
    },
];

/// One published causal-attention throughput.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionAnchor {
    /// Hardware profile.
    pub hardware: &'static str,
    /// Kernel.
    pub kernel: &'static str,
    /// Sequence length (one causal pass).
    pub seq: u32,
    /// Forward TFLOP/s (causal FLOPs `2·H·d·s²`).
    pub tflops: f64,
}

/// FlashAttention-2 and -3, H100 SXM5, causal, head dimension 128 (research/engine.md §d.2).
pub const FLASH_H100: [AttentionAnchor; 8] = [
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA2",
        seq: 2048,
        tflops: 298.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA2",
        seq: 4096,
        tflops: 319.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA2",
        seq: 8192,
        tflops: 333.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA2",
        seq: 16384,
        tflops: 335.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA3",
        seq: 2048,
        tflops: 521.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA3",
        seq: 4096,
        tflops: 579.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA3",
        seq: 8192,
        tflops: 602.0,
    },
    AttentionAnchor {
        hardware: "h100-sxm",
        kernel: "FA3",
        seq: 16384,
        tflops: 616.0,
    },
];

/// A published figure beside what the calibration predicts for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What is compared, e.g. `llama3-8b, 2048 tokens, ms/layer without attention`.
    pub what: String,
    /// The published figure.
    pub published: f64,
    /// The calibration's prediction, in the same unit.
    pub predicted: f64,
}

/// The calibration against every published figure of `hw`.
pub fn compare(cal: &Calibration, hw: &Hardware) -> Vec<Comparison> {
    let mut out = Vec::new();
    for a in VIDUR_MLP.iter().filter(|a| a.hardware == hw.name) {
        let Ok(model) = ModelShape::preset(a.model) else {
            continue;
        };
        let batch = ForwardBatch {
            entries: vec![BatchEntry {
                n_tokens: a.tokens,
                ..BatchEntry::default()
            }],
            shape: BatchShape::Ragged,
        };
        let p = cal.price(&batch, Target::on(hw, &model, 1, 16), false);
        let layers = model.n_layers as f64;
        out.push(Comparison {
            what: format!(
                "{}, {} tokens: ms per layer without attention (Vidur)",
                a.model, a.tokens
            ),
            published: a.ms,
            predicted: cal.step.gpu_scale * (p.gemm_s + p.elementwise_s) / layers * 1e3,
        });
    }
    if let Ok(model) = ModelShape::preset("llama3-8b") {
        let heads = Heads::of(&model, 1);
        for a in FLASH_H100.iter().filter(|a| a.hardware == hw.name) {
            let s = f64::from(a.seq);
            let t =
                cal.step.gpu_scale * cal.prefill_s(&[(s, 0.0)], heads, hw.peak_flops, hw.mem_bw);
            out.push(Comparison {
                what: format!("causal attention, {} tokens: TFLOP/s ({})", a.seq, a.kernel),
                published: a.tflops,
                predicted: 2.0 * heads.q * heads.dim * s * s / t / 1e12,
            });
        }
    }
    out
}
