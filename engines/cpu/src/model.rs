//! The Llama forward pass over ragged batches with a paged KV cache, and the
//! naive dense oracle that recomputes a whole sequence without a cache.

use candle_core::{Device, Tensor};
use fuselab_kernels::cpu::activation::silu_mul;
use fuselab_kernels::cpu::attention::{FlashConfig, SeqChunk, flash_attention, naive_attention};
use fuselab_kernels::cpu::decode::{DecodeSeq, paged_decode_attention};
use fuselab_kernels::cpu::norm::{rms_norm, rms_norm_ref};
use fuselab_kernels::cpu::paged::{AttnShape, PagedKv};
use fuselab_kernels::cpu::rope::Rope;

use crate::lora::{LoraWeights, Mix, Proj};
use crate::{CpuError, ModelShape, Weights};

/// The adapters of one forward pass: the weights and, per sequence, its
/// adapter (`None`: base model; ignored under MeteoRA, whose gate decides).
#[derive(Clone, Copy, Debug)]
pub struct LoraInput<'a> {
    /// Every adapter.
    pub weights: &'a LoraWeights,
    /// One entry per sequence of the pass.
    pub adapters: &'a [Option<u32>],
}

/// Per-row mixtures for one projection: fixed per row (multi-LoRA) or from the gate.
struct RowLora<'a> {
    weights: &'a LoraWeights,
    fixed: Option<Vec<Mix>>,
}

impl RowLora<'_> {
    fn add(&self, layer: usize, p: Proj, x: &[f32], rows: usize, y: &mut [f32]) {
        match &self.fixed {
            Some(m) => self.weights.apply(layer, p, x, m, y),
            None => {
                let m = self.weights.gate(layer, p, x, rows);
                self.weights.apply(layer, p, x, &m, y);
            }
        }
    }
}

/// One sequence's chunk in a ragged forward pass.
#[derive(Clone, Copy, Debug)]
pub struct SeqInput<'a> {
    /// Token ids at positions `start_pos .. start_pos + tokens.len()`.
    pub tokens: &'a [u32],
    /// Position of the first token; earlier positions must already be in the KV cache.
    pub start_pos: usize,
    /// The sequence's KV blocks covering positions `0 .. start_pos + tokens.len()`.
    pub block_table: &'a [u32],
    /// Whether to return the logits of the chunk's last position.
    pub sample: bool,
    /// Whether this is a one-token decode (uses the split-KV decode kernel).
    pub decode: bool,
    /// Whether to return the logits of every position of the chunk (a
    /// speculative verify) instead of the last one only.
    pub verify: bool,
}

/// Kernel choices of the forward pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ForwardOptions {
    /// KV partitions of the split-KV decode kernel; 0 sends decodes through
    /// the flash kernel instead.
    pub decode_splits: usize,
    /// Flash kernel tiles and threads.
    pub flash: FlashConfig,
}

impl Default for ForwardOptions {
    /// 4 decode splits; flash attention spread over every available core.
    fn default() -> Self {
        Self {
            decode_splits: 4,
            flash: FlashConfig {
                threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
                ..FlashConfig::default()
            },
        }
    }
}

/// A Llama-architecture model with its weights.
#[derive(Clone, Debug)]
pub struct Model {
    cfg: ModelShape,
    w: Weights,
    rope: Rope,
    shape: AttnShape,
    scale: f32,
}

fn matmul(x: &[f32], rows: usize, w: &Tensor) -> Result<Vec<f32>, CpuError> {
    let (k, _) = w.dims2()?;
    if rows == 0 {
        return Ok(Vec::new());
    }
    let t = Tensor::from_slice(x, (rows, k), &Device::Cpu)?;
    Ok(t.matmul(w)?.flatten_all()?.to_vec1::<f32>()?)
}

fn add_into(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

impl Model {
    /// A model of shape `cfg` with the given weights.
    pub fn new(cfg: ModelShape, weights: Weights) -> Result<Self, CpuError> {
        cfg.validate()?;
        let rope = Rope::new(crate::config::rope(&cfg))?;
        let shape = AttnShape {
            n_heads: cfg.n_heads,
            n_kv_heads: cfg.n_kv_heads,
            head_dim: cfg.head_dim,
        };
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        Ok(Self {
            cfg,
            w: weights,
            rope,
            shape,
            scale,
        })
    }

    /// A model of shape `cfg` with seeded random weights.
    pub fn random(cfg: ModelShape, seed: u64) -> Result<Self, CpuError> {
        let w = Weights::random(&cfg, seed)?;
        Self::new(cfg, w)
    }

    /// The model's shape.
    pub fn config(&self) -> &ModelShape {
        &self.cfg
    }

    /// A draft for this model: its first `layers` layers with seeded noise
    /// on every matrix ([`Weights::perturbed`]).
    ///
    /// # Errors
    /// As [`Weights::perturbed`].
    pub fn perturbed(&self, layers: usize, noise: f64, seed: u64) -> Result<Self, CpuError> {
        let cfg = ModelShape {
            n_layers: layers,
            ..self.cfg.clone()
        };
        Self::new(cfg, self.w.perturbed(layers, noise, seed)?)
    }

    /// Allocates a zeroed paged KV cache: one [`PagedKv`] per layer.
    pub fn new_kv(&self, block_size: usize, num_blocks: usize) -> Result<Vec<PagedKv>, CpuError> {
        (0..self.cfg.n_layers)
            .map(|_| Ok(PagedKv::new(block_size, num_blocks, self.cfg.kv_width())?))
            .collect()
    }

    fn embed(&self, tokens: impl Iterator<Item = u32>) -> Result<Vec<f32>, CpuError> {
        let h = self.cfg.hidden;
        let mut x = Vec::new();
        for t in tokens {
            let t = t as usize;
            if t >= self.cfg.vocab {
                return Err(CpuError::Batch(format!(
                    "token id {t} is outside the vocabulary of {}",
                    self.cfg.vocab
                )));
            }
            x.extend_from_slice(&self.w.embed[t * h..(t + 1) * h]);
        }
        Ok(x)
    }

    /// Splits fused `[rows, q + 2kv]` projections into Q, K and V.
    fn split_qkv(&self, qkv: &[f32], rows: usize) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (qw, kw) = (self.cfg.q_width(), self.cfg.kv_width());
        let mut q = Vec::with_capacity(rows * qw);
        let mut k = Vec::with_capacity(rows * kw);
        let mut v = Vec::with_capacity(rows * kw);
        for r in qkv.chunks_exact(qw + 2 * kw) {
            q.extend_from_slice(&r[..qw]);
            k.extend_from_slice(&r[qw..qw + kw]);
            v.extend_from_slice(&r[qw + kw..]);
        }
        (q, k, v)
    }

    /// SwiGLU MLP of normed rows `h` (`[rows, hidden]`).
    fn mlp(
        &self,
        h: &[f32],
        rows: usize,
        layer: usize,
        lora: Option<&RowLora<'_>>,
    ) -> Result<Vec<f32>, CpuError> {
        let f = self.cfg.ffn;
        let mut gu = matmul(h, rows, &self.w.layers[layer].w_gate_up)?;
        if let Some(l) = lora {
            l.add(layer, Proj::GateUp, h, rows, &mut gu);
        }
        let mut gate = Vec::with_capacity(rows * f);
        let mut up = Vec::with_capacity(rows * f);
        for r in gu.chunks_exact(2 * f) {
            gate.extend_from_slice(&r[..f]);
            up.extend_from_slice(&r[f..]);
        }
        let mut act = vec![0f32; rows * f];
        silu_mul(&gate, &up, &mut act)?;
        let mut down = matmul(&act, rows, &self.w.layers[layer].w_down)?;
        if let Some(l) = lora {
            l.add(layer, Proj::Down, &act, rows, &mut down);
        }
        Ok(down)
    }

    /// This model with adapter `adapter` of `lora` merged into its weights
    /// (`W + scale·(B·A)ᵀ` in every adapted projection): the reference that
    /// batched multi-LoRA must match.
    ///
    /// # Errors
    /// [`CpuError::Batch`] for an unknown adapter or adapters of another
    /// shape; tensor errors.
    pub fn merged(&self, lora: &LoraWeights, adapter: u32) -> Result<Self, CpuError> {
        if adapter >= lora.config().adapters {
            return Err(CpuError::Batch(format!(
                "adapter {adapter} is not among the {} adapters",
                lora.config().adapters
            )));
        }
        let mut out = self.clone();
        for (l, lw) in out.w.layers.iter_mut().enumerate() {
            for (p, t) in [
                (Proj::Qkv, &mut lw.wqkv),
                (Proj::O, &mut lw.wo),
                (Proj::GateUp, &mut lw.w_gate_up),
                (Proj::Down, &mut lw.w_down),
            ] {
                let dims = t.dims2()?;
                let mut data = t.flatten_all()?.to_vec1::<f32>()?;
                lora.merge_into(adapter as usize, l, p, &mut data);
                *t = Tensor::from_vec(data, dims, &Device::Cpu)?;
            }
        }
        Ok(out)
    }

    /// Runs one ragged step: writes every chunk's K/V into `kv` and returns the
    /// logits of the last position of each chunk with `sample` (of every
    /// position of a chunk with `verify`), in chunk order.
    pub fn forward(
        &self,
        kv: &mut [PagedKv],
        seqs: &[SeqInput<'_>],
        opts: ForwardOptions,
    ) -> Result<Vec<Vec<f32>>, CpuError> {
        self.forward_lora(kv, seqs, opts, None)
    }

    /// [`Self::forward`] with LoRA adapters in every projection: each token
    /// uses its sequence's adapter (BGMV), or under MeteoRA its gate's top-k.
    ///
    /// # Errors
    /// As [`Self::forward`]; [`CpuError::Batch`] when `lora` names an adapter
    /// it does not hold or gives a different number of sequences.
    pub fn forward_lora(
        &self,
        kv: &mut [PagedKv],
        seqs: &[SeqInput<'_>],
        opts: ForwardOptions,
        lora: Option<LoraInput<'_>>,
    ) -> Result<Vec<Vec<f32>>, CpuError> {
        let (hd, qw, kw) = (self.cfg.hidden, self.cfg.q_width(), self.cfg.kv_width());
        if kv.len() != self.cfg.n_layers {
            return Err(CpuError::Batch(format!(
                "the KV cache has {} layers but the model {}; call init_kv first",
                kv.len(),
                self.cfg.n_layers
            )));
        }
        let rows: usize = seqs.iter().map(|s| s.tokens.len()).sum();
        if rows == 0 {
            return Ok(Vec::new());
        }
        let mut positions = Vec::with_capacity(rows);
        let mut first_row = Vec::with_capacity(seqs.len());
        for s in seqs {
            first_row.push(positions.len());
            let end = s.start_pos + s.tokens.len();
            let end32 = u32::try_from(end)
                .map_err(|_| CpuError::Batch(format!("position {end} does not fit 32 bits")))?;
            positions.extend((s.start_pos as u32)..end32);
        }
        let use_decode =
            |s: &SeqInput<'_>| opts.decode_splits > 0 && s.decode && s.tokens.len() == 1;
        let flash_chunks: Vec<SeqChunk<'_>> = seqs
            .iter()
            .zip(&first_row)
            .filter(|(s, _)| !use_decode(s) && !s.tokens.is_empty())
            .map(|(s, &r)| SeqChunk {
                q_row: r,
                start_pos: s.start_pos,
                n_tokens: s.tokens.len(),
                block_table: s.block_table,
            })
            .collect();
        let decode_seqs: Vec<DecodeSeq<'_>> = seqs
            .iter()
            .zip(&first_row)
            .filter(|(s, _)| use_decode(s))
            .map(|(s, &r)| DecodeSeq {
                q_row: r,
                pos: s.start_pos,
                block_table: s.block_table,
            })
            .collect();

        let lora = match lora {
            None => None,
            Some(li) => Some(self.row_lora(li, seqs)?),
        };
        let lora = lora.as_ref();
        let mut x = self.embed(seqs.iter().flat_map(|s| s.tokens.iter().copied()))?;
        let mut h = vec![0f32; rows * hd];
        let mut attn = vec![0f32; rows * qw];
        for (l, lw) in self.w.layers.iter().enumerate() {
            rms_norm(&x, &lw.attn_norm, self.cfg.rms_eps, &mut h)?;
            let mut qkv = matmul(&h, rows, &lw.wqkv)?;
            if let Some(lr) = lora {
                lr.add(l, Proj::Qkv, &h, rows, &mut qkv);
            }
            let (mut q, mut k, v) = self.split_qkv(&qkv, rows);
            self.rope.apply(&mut q, self.cfg.n_heads, &positions)?;
            self.rope.apply(&mut k, self.cfg.n_kv_heads, &positions)?;
            for (s, &r) in seqs.iter().zip(&first_row) {
                let n = s.tokens.len();
                kv[l].write(
                    s.block_table,
                    s.start_pos,
                    &k[r * kw..(r + n) * kw],
                    &v[r * kw..(r + n) * kw],
                )?;
            }
            if !flash_chunks.is_empty() {
                flash_attention(
                    &q,
                    &kv[l],
                    self.shape,
                    &flash_chunks,
                    self.scale,
                    opts.flash,
                    &mut attn,
                )?;
            }
            if !decode_seqs.is_empty() {
                paged_decode_attention(
                    &q,
                    &kv[l],
                    self.shape,
                    &decode_seqs,
                    self.scale,
                    opts.decode_splits,
                    &mut attn,
                )?;
            }
            let mut o = matmul(&attn, rows, &lw.wo)?;
            if let Some(lr) = lora {
                lr.add(l, Proj::O, &attn, rows, &mut o);
            }
            add_into(&mut x, &o);
            rms_norm(&x, &lw.mlp_norm, self.cfg.rms_eps, &mut h)?;
            add_into(&mut x, &self.mlp(&h, rows, l, lora)?);
        }
        let sampled: Vec<usize> = seqs
            .iter()
            .zip(&first_row)
            .filter(|(s, _)| (s.sample || s.verify) && !s.tokens.is_empty())
            .flat_map(|(s, &r)| {
                let first = if s.verify { r } else { r + s.tokens.len() - 1 };
                first..r + s.tokens.len()
            })
            .collect();
        let mut last = Vec::with_capacity(sampled.len() * hd);
        for &r in &sampled {
            last.extend_from_slice(&x[r * hd..(r + 1) * hd]);
        }
        self.head(&last, sampled.len(), false)
    }

    fn row_lora<'a>(
        &self,
        li: LoraInput<'a>,
        seqs: &[SeqInput<'_>],
    ) -> Result<RowLora<'a>, CpuError> {
        if li.adapters.len() != seqs.len() {
            return Err(CpuError::Batch(format!(
                "{} adapter entries for {} sequences",
                li.adapters.len(),
                seqs.len()
            )));
        }
        if matches!(
            li.weights.config().mode,
            fuselab_engine::LoraMode::Meteora { .. }
        ) {
            return Ok(RowLora {
                weights: li.weights,
                fixed: None,
            });
        }
        let have = li.weights.config().adapters;
        let mut mixes = Vec::new();
        for (s, a) in seqs.iter().zip(li.adapters) {
            let mix = match *a {
                Some(a) if a >= have => {
                    return Err(CpuError::Batch(format!(
                        "adapter {a} is not among the {have} adapters"
                    )));
                }
                Some(a) => vec![(a as usize, 1.0)],
                None => Vec::new(),
            };
            mixes.extend(std::iter::repeat_n(mix, s.tokens.len()));
        }
        Ok(RowLora {
            weights: li.weights,
            fixed: Some(mixes),
        })
    }

    /// Final norm and `lm_head` over `rows` hidden rows; one logits vector per row.
    fn head(&self, x: &[f32], rows: usize, reference: bool) -> Result<Vec<Vec<f32>>, CpuError> {
        let normed = if reference {
            rms_norm_ref(x, &self.w.norm, self.cfg.rms_eps)
        } else {
            let mut n = vec![0f32; x.len()];
            rms_norm(x, &self.w.norm, self.cfg.rms_eps, &mut n)?;
            n
        };
        let logits = matmul(&normed, rows, &self.w.lm_head)?;
        Ok(logits
            .chunks_exact(self.cfg.vocab)
            .map(<[f32]>::to_vec)
            .collect())
    }

    /// The oracle: recomputes the whole sequence `tokens` densely, with no KV
    /// cache, naive f64 attention and reference norms, and returns the logits of
    /// every position.
    pub fn naive_logits(&self, tokens: &[u32]) -> Result<Vec<Vec<f32>>, CpuError> {
        let n = tokens.len();
        let positions: Vec<u32> = (0..n as u32).collect();
        let mut x = self.embed(tokens.iter().copied())?;
        for (l, lw) in self.w.layers.iter().enumerate() {
            let h = rms_norm_ref(&x, &lw.attn_norm, self.cfg.rms_eps);
            let qkv = matmul(&h, n, &lw.wqkv)?;
            let (mut q, mut k, v) = self.split_qkv(&qkv, n);
            self.rope.apply(&mut q, self.cfg.n_heads, &positions)?;
            self.rope.apply(&mut k, self.cfg.n_kv_heads, &positions)?;
            let attn = naive_attention(&q, &k, &v, self.shape, 0, self.scale)?;
            add_into(&mut x, &matmul(&attn, n, &lw.wo)?);
            let h = rms_norm_ref(&x, &lw.mlp_norm, self.cfg.rms_eps);
            add_into(&mut x, &self.mlp(&h, n, l, None)?);
        }
        self.head(&x, n, true)
    }
}

/// Index of the largest logit (the first one on ties): greedy sampling.
pub(crate) fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, v) in logits.iter().enumerate() {
        if *v > logits[best] {
            best = i;
        }
    }
    best as u32
}
