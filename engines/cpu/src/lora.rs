//! LoRA adapters on the CPU: seeded random adapters for the four projections
//! of every layer, the batched per-token application (BGMV: each token
//! gathers its own adapter's `A` and `B`), MeteoRA's per-token top-k gate,
//! and merging one adapter into the base weights (`W + scale · Bᵀ·Aᵀ` in the
//! model's `[d_in, d_out]` layout) for the reference runs.
//!
//! A projection `y = x·W` becomes `y = x·W + Σ_j w_j · scale · B_j (A_j x)`
//! over the token's mixture `(adapter j, weight w_j)`: one adapter with
//! weight 1 in multi-LoRA serving, the gate's top-k softmax under MeteoRA.
//! `scale = alpha / rank` with `alpha = rank`, so 1.

use fuselab_engine::{LoraConfig, LoraMode, LoraTensor, lora_projections, lora_tensor};

use crate::{CpuError, ModelShape};

/// The four adapted projections, in [`lora_projections`] order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proj {
    /// Fused q, k, v.
    Qkv = 0,
    /// Attention output.
    O = 1,
    /// Fused gate and up.
    GateUp = 2,
    /// MLP down.
    Down = 3,
}

/// `A` (`rank × d_in`) and `B` (`d_out × rank`), row-major.
#[derive(Clone, Debug)]
struct Pair {
    a: Vec<f32>,
    b: Vec<f32>,
}

/// MeteoRA's gate of one projection: logits `W_g·x + bias` over the adapters.
#[derive(Clone, Debug)]
struct Gate {
    w: Vec<f32>,
    bias: Vec<f32>,
}

/// Every adapter a CPU backend serves (and the MeteoRA gates).
#[derive(Clone, Debug)]
pub struct LoraWeights {
    cfg: LoraConfig,
    dims: [(usize, usize); 4],
    scale: f32,
    /// `[adapter][layer][projection]`.
    pairs: Vec<Vec<[Pair; 4]>>,
    /// `[layer][projection]`, MeteoRA only.
    gates: Vec<[Gate; 4]>,
}

/// Adapters and weights of one token.
pub(crate) type Mix = Vec<(usize, f32)>;

impl LoraWeights {
    /// Seeded random adapters (and gates, for MeteoRA) for `shape`, the
    /// values of [`lora_tensor`] (bf16-exact, the same on every backend).
    ///
    /// # Errors
    /// [`CpuError::Batch`] for 0 adapters, rank 0 or a MeteoRA `top_k`
    /// outside `1..=adapters`.
    pub fn random(shape: &ModelShape, cfg: LoraConfig, seed: u64) -> Result<Self, CpuError> {
        if cfg.adapters == 0 || cfg.rank == 0 {
            return Err(CpuError::Batch(format!(
                "LoRA needs at least one adapter of rank >= 1, got {} of rank {}",
                cfg.adapters, cfg.rank
            )));
        }
        if let LoraMode::Meteora { top_k } = cfg.mode
            && !(1..=cfg.adapters).contains(&top_k)
        {
            return Err(CpuError::Batch(format!(
                "MeteoRA top-k {top_k} is not between 1 and the {} adapters",
                cfg.adapters
            )));
        }
        let dims = lora_projections(shape).map(|(_, i, o)| (i, o));
        let tensor =
            |t: LoraTensor, layer: usize, p: usize| lora_tensor(shape, &cfg, seed, t, layer, p);
        let pairs = (0..cfg.adapters)
            .map(|adapter| {
                (0..shape.n_layers)
                    .map(|l| {
                        std::array::from_fn(|p| Pair {
                            a: tensor(LoraTensor::A { adapter }, l, p),
                            b: tensor(LoraTensor::B { adapter }, l, p),
                        })
                    })
                    .collect()
            })
            .collect();
        let n = cfg.adapters as usize;
        let gates = match cfg.mode {
            LoraMode::Meteora { .. } => (0..shape.n_layers)
                .map(|l| {
                    std::array::from_fn(|p| Gate {
                        w: tensor(LoraTensor::Gate, l, p),
                        bias: vec![0.0; n],
                    })
                })
                .collect(),
            LoraMode::Slots { .. } => Vec::new(),
        };
        Ok(Self {
            cfg,
            dims,
            scale: 1.0,
            pairs,
            gates,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    /// Makes every MeteoRA gate one-hot on `adapter` (zero weights, bias 1 on
    /// it, 0 elsewhere), so top-k = 1 always picks it with weight exactly 1.
    ///
    /// # Errors
    /// [`CpuError::Batch`] outside MeteoRA mode or for an unknown adapter.
    pub fn set_one_hot_gate(&mut self, adapter: u32) -> Result<(), CpuError> {
        if self.gates.is_empty() || adapter >= self.cfg.adapters {
            return Err(CpuError::Batch(format!(
                "a one-hot gate needs MeteoRA mode and an adapter below {}, got {adapter}",
                self.cfg.adapters
            )));
        }
        for g in self.gates.iter_mut().flatten() {
            g.w.iter_mut().for_each(|w| *w = 0.0);
            g.bias.iter_mut().for_each(|b| *b = 0.0);
            g.bias[adapter as usize] = 1.0;
        }
        Ok(())
    }

    /// The MeteoRA mixture of each row of `x` (`rows × d_in`): the `top_k`
    /// largest gate logits (ties to the lower id), weighted by their softmax.
    pub(crate) fn gate(&self, layer: usize, p: Proj, x: &[f32], rows: usize) -> Vec<Mix> {
        let LoraMode::Meteora { top_k } = self.cfg.mode else {
            return vec![Vec::new(); rows];
        };
        let (d_in, _) = self.dims[p as usize];
        let g = &self.gates[layer][p as usize];
        let n = self.cfg.adapters as usize;
        (0..rows)
            .map(|r| {
                let xr = &x[r * d_in..(r + 1) * d_in];
                let mut logits: Vec<(f32, usize)> = (0..n)
                    .map(|j| (dot(&g.w[j * d_in..(j + 1) * d_in], xr) + g.bias[j], j))
                    .collect();
                logits.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
                logits.truncate(top_k as usize);
                let max = logits[0].0;
                let e: Vec<f32> = logits.iter().map(|(l, _)| (l - max).exp()).collect();
                let sum: f32 = e.iter().sum();
                logits
                    .iter()
                    .zip(e)
                    .map(|(&(_, j), w)| (j, w / sum))
                    .collect()
            })
            .collect()
    }

    /// Adds each row's adapter deltas to `y` (`rows × d_out`) for inputs `x`
    /// (`rows × d_in`): per row and adapter, `s = A·x`, `y += w·scale·B·s`.
    pub(crate) fn apply(&self, layer: usize, p: Proj, x: &[f32], mixes: &[Mix], y: &mut [f32]) {
        let (d_in, d_out) = self.dims[p as usize];
        let r = self.cfg.rank as usize;
        let mut s = vec![0f32; r];
        for (row, mix) in mixes.iter().enumerate() {
            let xr = &x[row * d_in..(row + 1) * d_in];
            let yr = &mut y[row * d_out..(row + 1) * d_out];
            for &(adapter, w) in mix {
                let pair = &self.pairs[adapter][layer][p as usize];
                for (k, sk) in s.iter_mut().enumerate() {
                    *sk = dot(&pair.a[k * d_in..(k + 1) * d_in], xr);
                }
                let ws = w * self.scale;
                for (j, yj) in yr.iter_mut().enumerate() {
                    *yj += ws * dot(&pair.b[j * r..(j + 1) * r], &s);
                }
            }
        }
    }

    /// `W + scale · (B·A)ᵀ` for a weight `w` stored `[d_in, d_out]` row-major.
    pub(crate) fn merge_into(&self, adapter: usize, layer: usize, p: Proj, w: &mut [f32]) {
        let (d_in, d_out) = self.dims[p as usize];
        let r = self.cfg.rank as usize;
        let pair = &self.pairs[adapter][layer][p as usize];
        for i in 0..d_in {
            for j in 0..d_out {
                let mut acc = 0f32;
                for k in 0..r {
                    acc += pair.b[j * r + k] * pair.a[k * d_in + i];
                }
                w[i * d_out + j] += self.scale * acc;
            }
        }
    }
}

fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
