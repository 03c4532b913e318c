//! [`CudaBackend`]: the bf16 Llama forward pass behind the engine's [`Backend`] trait.

use std::path::Path;

use cudarc::driver::CudaSlice;
use fuselab_core::RequestId;
use fuselab_engine::{Backend, BackendError, BatchShape, ForwardBatch, KvGeometry, StepOutput};
use fuselab_kernels::cpu::rope::Rope;
use fuselab_kernels::cuda::{CudaDevice, DecodeWorkspace, PagedAttention};
use half::bf16;

use crate::CudaBackendError;
use crate::weights::DeviceWeights;
use fuselab_engine::ModelShape;

/// Knobs of the CUDA backend.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CudaOptions {
    /// GPU ordinal (default 0).
    pub device: usize,
    /// Fraction of the device's free memory (measured before the weights are
    /// uploaded) that weights plus KV cache may take (default 0.9); the rest is
    /// left to activations, cuBLAS and the driver.
    pub memory_fraction: f64,
    /// A fixed KV budget in bytes instead of the fraction above (tests).
    pub kv_budget_bytes: Option<u64>,
    /// Keep the logits of sampled positions in [`StepOutput::logits`] (tests;
    /// costs a device-to-host copy of `vocab` values per sampled row).
    pub keep_logits: bool,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            device: 0,
            memory_fraction: 0.9,
            kv_budget_bytes: None,
            keep_logits: false,
        }
    }
}

/// Activation buffers, grown to the largest step seen.
#[derive(Debug)]
struct Scratch {
    /// Token rows the buffers hold.
    rows: usize,
    x: CudaSlice<bf16>,
    h: CudaSlice<bf16>,
    q: CudaSlice<bf16>,
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    attn: CudaSlice<bf16>,
    o: CudaSlice<bf16>,
    gate_up: CudaSlice<bf16>,
    act: CudaSlice<bf16>,
}

impl Scratch {
    fn new(dev: &CudaDevice, cfg: &ModelShape, rows: usize) -> Result<Self, CudaBackendError> {
        let a = |w: usize| dev.alloc_bf16(rows * w);
        Ok(Self {
            rows,
            x: a(cfg.hidden)?,
            h: a(cfg.hidden)?,
            q: a(cfg.q_width())?,
            k: a(cfg.kv_width())?,
            v: a(cfg.kv_width())?,
            attn: a(cfg.q_width())?,
            o: a(cfg.hidden)?,
            gate_up: a(2 * cfg.ffn)?,
            act: a(cfg.ffn)?,
        })
    }
}

/// Buffers of the sampled rows: gathered hidden states, normed, logits, ids.
#[derive(Debug)]
struct HeadScratch {
    rows: usize,
    last: CudaSlice<bf16>,
    normed: CudaSlice<bf16>,
    logits: CudaSlice<bf16>,
    ids: CudaSlice<i32>,
}

impl HeadScratch {
    fn new(dev: &CudaDevice, cfg: &ModelShape, rows: usize) -> Result<Self, CudaBackendError> {
        Ok(Self {
            rows,
            last: dev.alloc_bf16(rows * cfg.hidden)?,
            normed: dev.alloc_bf16(rows * cfg.hidden)?,
            logits: dev.alloc_bf16(rows * cfg.vocab)?,
            ids: dev
                .stream()
                .alloc_zeros::<i32>(rows)
                .map_err(|e| CudaBackendError::driver("allocating sampled ids", e))?,
        })
    }
}

/// One layer's paged K and V caches (`[num_blocks, block_size, kv_heads, 128]`).
#[derive(Debug)]
struct LayerKv {
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
}

/// Per-step metadata built on the host.
#[derive(Debug, Default)]
struct StepPlan {
    /// Token rows computed (real tokens, then padding).
    rows: usize,
    tokens: Vec<i32>,
    positions: Vec<i32>,
    slots: Vec<i64>,
    /// Decode entries (one token each) occupy rows `0 .. n_decode`.
    n_decode: usize,
    dec_ctx: Vec<i32>,
    dec_tables: Vec<i32>,
    dec_max_blocks: usize,
    dec_max_ctx: usize,
    /// Prompt chunks follow, at `cu_q[i] .. cu_q[i + 1]`.
    n_prefill: usize,
    cu_q: Vec<i32>,
    pre_ctx: Vec<i32>,
    pre_tables: Vec<i32>,
    pre_max_blocks: usize,
    pre_max_q: usize,
    /// Rows whose last hidden state is sampled, in entry order.
    sample_rows: Vec<i32>,
    sample_ids: Vec<RequestId>,
}

/// The Llama architecture in bf16 on one NVIDIA GPU: NVRTC kernels for norms,
/// RoPE, SiLU·mul, the paged KV write and attention; cuBLAS for the GEMMs.
pub struct CudaBackend {
    dev: CudaDevice,
    cfg: ModelShape,
    opts: CudaOptions,
    w: DeviceWeights,
    inv_freq: CudaSlice<f32>,
    kv_budget: u64,
    kv: Vec<LayerKv>,
    geometry: Option<KvGeometry>,
    scratch: Option<Scratch>,
    head: Option<HeadScratch>,
    decode_ws: DecodeWorkspace,
    weights_kind: &'static str,
}

impl std::fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaBackend")
            .field("device", self.dev.info())
            .field("cfg", &self.cfg)
            .field("opts", &self.opts)
            .field("kv_budget", &self.kv_budget)
            .field("geometry", &self.geometry)
            .field("weights", &self.weights_kind)
            .finish_non_exhaustive()
    }
}

fn to_backend(e: CudaBackendError) -> BackendError {
    match e {
        CudaBackendError::OutOfMemory(m) => BackendError::OutOfMemory(m),
        other => BackendError::Device(other.to_string()),
    }
}

impl CudaBackend {
    /// Shape `cfg` with seeded random weights filled on the device.
    ///
    /// # Errors
    /// `no CUDA driver found (...)` without a GPU; an invalid shape; too little memory.
    pub fn random(cfg: ModelShape, seed: u64, opts: CudaOptions) -> Result<Self, CudaBackendError> {
        Self::build(cfg, opts, "random", |dev, cfg| {
            DeviceWeights::random(dev, cfg, seed)
        })
    }

    /// Shape `cfg` with weights from a safetensors file (Hugging Face Llama names,
    /// F32/F16/BF16; rounded to bf16).
    pub fn from_safetensors(
        cfg: ModelShape,
        path: &Path,
        opts: CudaOptions,
    ) -> Result<Self, CudaBackendError> {
        Self::build(cfg, opts, "file", |dev, cfg| {
            DeviceWeights::from_safetensors(dev, cfg, path)
        })
    }

    /// What the CLI needs: the preset `model` (`llama3-8b`, `tiny`) with random
    /// weights seeded by `seed` and default options.
    pub fn load(model: &str, seed: u64) -> Result<Self, CudaBackendError> {
        Self::random(ModelShape::preset(model)?, seed, CudaOptions::default())
    }

    fn build(
        cfg: ModelShape,
        opts: CudaOptions,
        weights_kind: &'static str,
        make: impl FnOnce(&CudaDevice, &ModelShape) -> Result<DeviceWeights, CudaBackendError>,
    ) -> Result<Self, CudaBackendError> {
        crate::config::validate(&cfg)?;
        if !(opts.memory_fraction > 0.0 && opts.memory_fraction <= 1.0) {
            return Err(CudaBackendError::Config {
                field: "memory_fraction",
                problem: format!("{} must be in (0, 1]", opts.memory_fraction),
            });
        }
        let dev = CudaDevice::new(opts.device)?;
        let (free, _) = dev
            .stream()
            .context()
            .mem_get_info()
            .map_err(|e| CudaBackendError::driver("reading free device memory", e))?;
        let weight_bytes = cfg.weight_bytes(crate::config::ELEM_BYTES);
        let usable = (free as f64 * opts.memory_fraction) as u64;
        if weight_bytes >= usable {
            return Err(CudaBackendError::OutOfMemory(format!(
                "{} needs {weight_bytes} bytes of weights but {usable} of {free} free bytes are usable",
                cfg.name
            )));
        }
        let kv_budget = opts.kv_budget_bytes.unwrap_or(usable - weight_bytes);
        let w = make(&dev, &cfg)?;
        let rope = Rope::new(crate::config::rope(&cfg)).map_err(|e| CudaBackendError::Config {
            field: "rope_theta",
            problem: e.to_string(),
        })?;
        let inv: Vec<f32> = rope.inv_freq().iter().map(|&f| f as f32).collect();
        let inv_freq = dev.upload(&inv)?;
        let decode_ws = DecodeWorkspace::new(&dev)?;
        dev.synchronize()?;
        tracing::info!(
            device = %dev.info().name,
            model = %cfg.name,
            weight_bytes,
            kv_budget,
            "cuda backend ready"
        );
        Ok(Self {
            dev,
            cfg,
            opts,
            w,
            inv_freq,
            kv_budget,
            kv: Vec::new(),
            geometry: None,
            scratch: None,
            head: None,
            decode_ws,
            weights_kind,
        })
    }

    /// The model shape.
    pub fn config(&self) -> &ModelShape {
        &self.cfg
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Builds the step's host metadata and checks the batch against the cache.
    fn plan(&self, batch: &ForwardBatch, geo: KvGeometry) -> Result<StepPlan, CudaBackendError> {
        let bs = geo.block_size as usize;
        let mut p = StepPlan::default();
        let is_dec = |e: &fuselab_engine::BatchEntry| e.is_decode && e.n_tokens == 1;
        for e in &batch.entries {
            let n = e.n_tokens as usize;
            if e.tokens.len() != n {
                return Err(CudaBackendError::Batch(format!(
                    "request {} has {} token ids for n_tokens {n}; the CUDA backend needs token ids",
                    e.request,
                    e.tokens.len()
                )));
            }
            let end = e.start_pos as usize + n;
            if e.block_table.len() < end.div_ceil(bs) {
                return Err(CudaBackendError::Batch(format!(
                    "request {} covers {end} positions but its block table has {} blocks of {bs}",
                    e.request,
                    e.block_table.len()
                )));
            }
            if let Some(b) = e.block_table.iter().find(|&&b| b >= geo.num_blocks) {
                return Err(CudaBackendError::Batch(format!(
                    "request {}: block {b} is outside the cache of {} blocks",
                    e.request, geo.num_blocks
                )));
            }
            if let Some(t) = e.tokens.iter().find(|&&t| t as usize >= self.cfg.vocab) {
                return Err(CudaBackendError::Batch(format!(
                    "request {}: token id {t} is outside the vocabulary of {}",
                    e.request, self.cfg.vocab
                )));
            }
        }
        let mut first_row = vec![0usize; batch.entries.len()];
        // Decodes first (rows 0 .. n_decode), then prompt chunks.
        for pass_decode in [true, false] {
            for (i, e) in batch.entries.iter().enumerate() {
                if e.n_tokens == 0 || is_dec(e) != pass_decode {
                    continue;
                }
                let n = e.n_tokens as usize;
                let start = e.start_pos as usize;
                let ctx = start + n;
                let blocks = ctx.div_ceil(bs);
                first_row[i] = p.tokens.len();
                for (j, &t) in e.tokens.iter().enumerate() {
                    let pos = start + j;
                    p.tokens.push(t as i32);
                    p.positions.push(pos as i32);
                    let blk = e.block_table[pos / bs] as usize;
                    p.slots.push((blk * bs + pos % bs) as i64);
                }
                if pass_decode {
                    p.n_decode += 1;
                    p.dec_ctx.push(ctx as i32);
                    p.dec_max_blocks = p.dec_max_blocks.max(blocks);
                    p.dec_max_ctx = p.dec_max_ctx.max(ctx);
                } else {
                    if p.n_prefill == 0 {
                        p.cu_q.push(first_row[i] as i32);
                    }
                    p.n_prefill += 1;
                    p.cu_q.push(p.tokens.len() as i32);
                    p.pre_ctx.push(ctx as i32);
                    p.pre_max_blocks = p.pre_max_blocks.max(blocks);
                    p.pre_max_q = p.pre_max_q.max(n);
                }
            }
        }
        let table = |dec: bool, width: usize| -> Vec<i32> {
            let mut t = Vec::new();
            for e in batch
                .entries
                .iter()
                .filter(|e| e.n_tokens > 0 && is_dec(e) == dec)
            {
                let blocks = (e.start_pos + e.n_tokens).div_ceil(geo.block_size) as usize;
                let row = e.block_table[..blocks].iter().map(|&b| b as i32);
                t.extend(row.chain(std::iter::repeat(0)).take(width));
            }
            t
        };
        p.dec_tables = table(true, p.dec_max_blocks);
        p.pre_tables = table(false, p.pre_max_blocks);
        let real = p.tokens.len();
        p.rows = match batch.shape {
            BatchShape::Ragged => real,
            // Padding rows cost the dense layers real work, as in a padded engine.
            BatchShape::Padded { rows, row_len } => real.max(rows as usize * row_len as usize),
        };
        p.tokens.resize(p.rows, 0);
        p.positions.resize(p.rows, 0);
        p.slots.resize(p.rows, -1);
        for (i, e) in batch.entries.iter().enumerate() {
            if e.sample && e.n_tokens > 0 {
                p.sample_rows
                    .push((first_row[i] + e.n_tokens as usize - 1) as i32);
                p.sample_ids.push(e.request);
            }
        }
        Ok(p)
    }

    fn run(&mut self, batch: &ForwardBatch) -> Result<StepOutput, CudaBackendError> {
        let geo = self.geometry.ok_or_else(|| {
            CudaBackendError::Batch("the KV cache is not allocated; call init_kv first".into())
        })?;
        self.dev
            .stream()
            .context()
            .bind_to_thread()
            .map_err(|e| CudaBackendError::driver("binding the context to the engine thread", e))?;
        let p = self.plan(batch, geo)?;
        let mut out = StepOutput::default();
        if p.rows == 0 {
            return Ok(out);
        }
        let cfg = &self.cfg;
        let (t, hd, qw, kw, f) = (p.rows, cfg.hidden, cfg.q_width(), cfg.kv_width(), cfg.ffn);
        if self.scratch.as_ref().is_none_or(|s| s.rows < t) {
            // Drop the old buffers first so that their memory can be reused.
            self.scratch = None;
            let rows = t.next_power_of_two().max(64);
            self.scratch = Some(Scratch::new(&self.dev, cfg, rows)?);
        }
        let ns = p.sample_rows.len();
        if ns > 0 && self.head.as_ref().is_none_or(|s| s.rows < ns) {
            self.head = None;
            self.head = Some(HeadScratch::new(&self.dev, cfg, ns.next_power_of_two())?);
        }
        let dev = &self.dev;
        let tokens = dev.upload(&p.tokens)?;
        let positions = dev.upload(&p.positions)?;
        let slots = dev.upload(&p.slots)?;
        let one = |v: &[i32]| -> Result<CudaSlice<i32>, CudaBackendError> {
            Ok(dev.upload(if v.is_empty() { &[0][..] } else { v })?)
        };
        let (dec_ctx, dec_bt) = (one(&p.dec_ctx)?, one(&p.dec_tables)?);
        let (pre_ctx, pre_bt, cu_q) = (one(&p.pre_ctx)?, one(&p.pre_tables)?, one(&p.cu_q)?);
        let s = self.scratch.as_mut().ok_or_else(|| {
            CudaBackendError::Batch("internal: activation buffers missing".into())
        })?;
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        dev.embed_gather(&self.w.embed, &tokens, &mut s.x, t, hd)?;
        for (lw, kv) in self.w.layers.iter().zip(self.kv.iter_mut()) {
            dev.rms_norm(&s.x, &lw.attn_norm, &mut s.h, t, hd, cfg.rms_eps)?;
            dev.gemm(&s.h, &lw.wq, &mut s.q, t, hd, qw)?;
            dev.gemm(&s.h, &lw.wk, &mut s.k, t, hd, kw)?;
            dev.gemm(&s.h, &lw.wv, &mut s.v, t, hd, kw)?;
            dev.rope(
                &mut s.q,
                &mut s.k,
                &positions,
                &self.inv_freq,
                t,
                cfg.n_heads,
                cfg.n_kv_heads,
            )?;
            dev.kv_write(&s.k, &s.v, &mut kv.k, &mut kv.v, &slots, t, cfg.n_kv_heads)?;
            if p.n_decode > 0 {
                let pa = PagedAttention {
                    batch: p.n_decode,
                    num_q_heads: cfg.n_heads,
                    num_kv_heads: cfg.n_kv_heads,
                    block_size: geo.block_size as usize,
                    max_blocks_per_seq: p.dec_max_blocks,
                    ctx_lens: &dec_ctx,
                    block_tables: &dec_bt,
                    scale,
                };
                dev.decode_attention(
                    &pa,
                    &s.q,
                    &kv.k,
                    &kv.v,
                    &mut s.attn,
                    &mut self.decode_ws,
                    p.dec_max_ctx,
                    None,
                )?;
            }
            if p.n_prefill > 0 {
                let pa = PagedAttention {
                    batch: p.n_prefill,
                    num_q_heads: cfg.n_heads,
                    num_kv_heads: cfg.n_kv_heads,
                    block_size: geo.block_size as usize,
                    max_blocks_per_seq: p.pre_max_blocks,
                    ctx_lens: &pre_ctx,
                    block_tables: &pre_bt,
                    scale,
                };
                dev.prefill_attention(&pa, &s.q, &kv.k, &kv.v, &mut s.attn, &cu_q, t, p.pre_max_q)?;
            }
            dev.gemm(&s.attn, &lw.wo, &mut s.o, t, qw, hd)?;
            dev.add_inplace(&mut s.x, &s.o, t * hd)?;
            dev.rms_norm(&s.x, &lw.mlp_norm, &mut s.h, t, hd, cfg.rms_eps)?;
            dev.gemm(&s.h, &lw.w_gate_up, &mut s.gate_up, t, hd, 2 * f)?;
            dev.silu_mul(&s.gate_up, &mut s.act, t, f)?;
            dev.gemm(&s.act, &lw.w_down, &mut s.o, t, f, hd)?;
            dev.add_inplace(&mut s.x, &s.o, t * hd)?;
        }
        if ns > 0 {
            let hs = self.head.as_mut().ok_or_else(|| {
                CudaBackendError::Batch("internal: sampling buffers missing".into())
            })?;
            let rows = dev.upload(&p.sample_rows)?;
            dev.gather_rows(&s.x, &rows, &mut hs.last, ns, hd)?;
            dev.rms_norm(&hs.last, &self.w.norm, &mut hs.normed, ns, hd, cfg.rms_eps)?;
            dev.gemm(
                &hs.normed,
                &self.w.lm_head,
                &mut hs.logits,
                ns,
                hd,
                cfg.vocab,
            )?;
            dev.argmax_rows(&hs.logits, &mut hs.ids, ns, cfg.vocab)?;
            let mut ids = vec![0i32; ns];
            dev.stream()
                .memcpy_dtoh(&hs.ids.slice(0..ns), &mut ids)
                .map_err(|e| CudaBackendError::driver("copying sampled ids", e))?;
            if self.opts.keep_logits {
                let mut l = vec![bf16::ZERO; ns * cfg.vocab];
                dev.stream()
                    .memcpy_dtoh(&hs.logits.slice(0..ns * cfg.vocab), &mut l)
                    .map_err(|e| CudaBackendError::driver("copying logits", e))?;
                dev.synchronize()?;
                for (r, id) in p.sample_ids.iter().enumerate() {
                    let row = &l[r * cfg.vocab..(r + 1) * cfg.vocab];
                    out.logits
                        .push((*id, row.iter().map(|v| v.to_f32()).collect()));
                }
            }
            dev.synchronize()?;
            out.sampled = p
                .sample_ids
                .iter()
                .zip(ids)
                .map(|(&r, id)| (r, id.max(0) as u32))
                .collect();
        }
        dev.synchronize()?;
        Ok(out)
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }

    fn needs_tokens(&self) -> bool {
        true
    }

    fn context_len(&self) -> Option<u32> {
        Some(self.cfg.context_len)
    }

    fn kv_bytes_per_token(&self) -> u64 {
        self.cfg.kv_bytes_per_token(1, crate::config::ELEM_BYTES)
    }

    fn vocab_size(&self) -> u32 {
        // validated to fit 31 bits by ModelShape::validate
        u32::try_from(self.cfg.vocab).unwrap_or(u32::MAX)
    }

    fn kv_budget_bytes(&self) -> u64 {
        self.kv_budget
    }

    fn init_kv(&mut self, geometry: KvGeometry) -> Result<(), BackendError> {
        let bytes = u64::from(geometry.block_size)
            * u64::from(geometry.num_blocks)
            * self.kv_bytes_per_token();
        if bytes > self.kv_budget {
            return Err(BackendError::OutOfMemory(format!(
                "{} blocks of {} tokens need {bytes} bytes of KV cache but the budget is {}",
                geometry.num_blocks, geometry.block_size, self.kv_budget
            )));
        }
        if !geometry.block_size.is_power_of_two() {
            return Err(BackendError::Device(format!(
                "block size {} is not a power of two; the CUDA kernels need 16, 32 or 64",
                geometry.block_size
            )));
        }
        self.dev
            .stream()
            .context()
            .bind_to_thread()
            .map_err(|e| BackendError::Device(format!("binding the CUDA context: {e}")))?;
        self.kv.clear();
        let n = geometry.num_blocks as usize * geometry.block_size as usize * self.cfg.kv_width();
        for _ in 0..self.cfg.n_layers {
            let k = self.dev.alloc_bf16(n).map_err(|e| {
                BackendError::OutOfMemory(format!("allocating {bytes} bytes of KV cache: {e}"))
            })?;
            let v = self.dev.alloc_bf16(n).map_err(|e| {
                BackendError::OutOfMemory(format!("allocating {bytes} bytes of KV cache: {e}"))
            })?;
            self.kv.push(LayerKv { k, v });
        }
        self.dev.synchronize().map_err(|e| to_backend(e.into()))?;
        self.geometry = Some(geometry);
        tracing::debug!(?geometry, bytes, "cuda backend allocated KV cache");
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.run(batch).map_err(to_backend)
    }
}
