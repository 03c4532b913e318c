//! [`CudaBackend`]: the bf16 Llama forward pass behind the engine's [`Backend`] trait.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::{CudaGraph, CudaSlice};
use fuselab_core::RequestId;
use fuselab_engine::{
    AcceptanceModel, AdapterStep, Backend, BackendError, BatchShape, DraftInfo, ForwardBatch,
    KvGeometry, LoraConfig, StepOutput,
};
use fuselab_kernels::cpu::rope::Rope;
use fuselab_kernels::cuda::{CudaDevice, DecodeWorkspace, GemmOut, PagedAttention, PrefillTile};
use half::bf16;

use crate::CudaBackendError;
use crate::lora::{DeviceLora, Proj};
use crate::profile::{DecodeStep, Op, OpProfile, Phase, Recorder};
use crate::weights::{DeviceWeights, LayerWeights};
use fuselab_engine::ModelShape;

/// Knobs of the CUDA backend.
#[derive(Clone, Debug, PartialEq)]
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
    /// Run every kernel path once when the KV cache is allocated (default true), so
    /// that module loads, cuBLAS heuristics and buffer growth happen before the
    /// first request rather than inside its step.
    pub warm_up: bool,
    /// Replay decode-only steps of up to 256 rows from CUDA graphs captured per
    /// batch-size bucket (default true; graphs are captured at the warm-up and
    /// again after a buffer grows).
    pub graphs: bool,
    /// GEMMs of at most 64 rows (decode steps) on fuselab's skinny kernel (tiled copies
    /// of the weights streamed by bulk copies into wgmma, k split over clusters) instead
    /// of cuBLAS where the device has `sm_90a`; the copies cost the decode GEMM weights'
    /// size again, off the KV budget (default false: on the H200 it is level with cuBLAS
    /// on gate_up and down, 1.15-1.26x slower on qkv and o).
    pub skinny_gemm: bool,
    /// Capture the decode graphs with programmatic dependent launch (sm_90): fuselab's
    /// own kernels in them may start while the kernel before them finishes, the skinny
    /// GEMM streaming its first weight tiles meanwhile
    /// ([`CudaDevice::set_programmatic_launch`]; default false: on the H200 a decode step
    /// at batch 64 took 10.10 ms with it against 9.97 ms without).
    pub pdl: bool,
    /// At the warm-up, time cuBLASLt's algorithms for the decode GEMMs of every graph
    /// bucket over all layers' weights and run each shape through the fastest where it
    /// beats cuBLAS's default ([`CudaDevice::tune_gemm`]; default false: on the H200 it
    /// measured no end-to-end gain, 5.283 s against 5.262 s without, for 2.5 s of start-up).
    pub gemm_tuning: bool,
    /// The prefill attention kernel's tile (default: the device's
    /// [`CudaDevice::default_prefill_tile`]).
    pub prefill_tile: Option<PrefillTile>,
    /// Tuned kernel configurations (`fuselab tune --kernel … --device cuda`):
    /// the entries measured on this GPU and driver replace the default prefill
    /// and decode attention kernels for the shapes of their buckets
    /// ([`CudaDevice::use_tuning`]); a table with no entry for this GPU is an error.
    pub tuning: Option<fuselab_kernels::tunable::TuningTable>,
    /// Record per-operator GPU time ([`crate::profile`]) and write it to this file
    /// (JSON, and a markdown table beside it with the extension `.md`) when the
    /// backend is dropped.
    pub profile: Option<PathBuf>,
}

impl Default for CudaOptions {
    fn default() -> Self {
        Self {
            device: 0,
            memory_fraction: 0.9,
            kv_budget_bytes: None,
            keep_logits: false,
            warm_up: true,
            graphs: true,
            skinny_gemm: false,
            pdl: false,
            gemm_tuning: false,
            prefill_tile: None,
            tuning: None,
            profile: None,
        }
    }
}

/// Where the CUDA backend's draft model comes from (speculative decoding).
#[derive(Clone, Debug, PartialEq)]
pub enum DraftSource {
    /// A model of its own shape with seeded random weights, e.g.
    /// `llama3.2-1b-h128` beside `llama3-8b` (same vocabulary as the target).
    Model {
        /// The draft's shape.
        shape: ModelShape,
        /// Seed of its weights.
        seed: u64,
    },
    /// Made from the target: its first `layers` layers with its embeddings,
    /// final norm and head, every matrix plus seeded uniform noise of `noise`
    /// times the matrix's RMS (random target weights only, whose RMS is known).
    Perturbed {
        /// Layers kept (1 ..= the target's).
        layers: usize,
        /// Noise relative to each matrix's RMS (0: none).
        noise: f64,
        /// Seed of the noise.
        seed: u64,
    },
}

/// The draft model beside the target ([`CudaBackend::with_draft`]).
#[derive(Clone, Debug, PartialEq)]
pub struct DraftOptions {
    /// Its shape and weights.
    pub source: DraftSource,
    /// A modelled acceptance coin: the target's verification keeps a draft
    /// token when the coin accepts its position (and otherwise its own greedy
    /// token), so acceptance is i.i.d. α while draft and target still run
    /// for real. `None`: greedy verification (measured acceptance).
    pub alpha: Option<AcceptanceModel>,
}

/// Prompt tokens of the warm-up's prefill (at most the cache and the context).
const WARM_UP_PREFILL: usize = 8192;

/// Sequences of the warm-up's decode step.
const WARM_UP_DECODE: usize = 64;

/// Rows of the decode graphs: a step replays the smallest that holds it.
const GRAPH_BUCKETS: [usize; 19] = [
    1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
];

/// The device buffers every decode graph reads: fixed addresses, uploaded into
/// before each replay (`GRAPH_BUCKETS`' largest rows; tables `width` wide).
struct GraphMeta {
    tokens: CudaSlice<i32>,
    positions: CudaSlice<i32>,
    slots: CudaSlice<i32>,
    ctx: CudaSlice<i32>,
    tables: CudaSlice<i32>,
    width: usize,
}

/// A decode step captured for `rows` rows.
struct DecodeGraph {
    rows: usize,
    graph: CudaGraph,
    /// (activation rows, sampling rows, decode workspace rows) at capture: the
    /// buffers only grow, so different sizes mean the graph points at freed memory.
    sizes: (usize, usize, usize),
}

/// Activation buffers, grown to the largest step seen.
#[derive(Debug)]
struct Scratch {
    /// Token rows the buffers hold.
    rows: usize,
    x: CudaSlice<bf16>,
    h: CudaSlice<bf16>,
    qkv: CudaSlice<bf16>,
    q: CudaSlice<bf16>,
    attn: CudaSlice<bf16>,
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
            qkv: a(cfg.q_width() + 2 * cfg.kv_width())?,
            q: a(cfg.q_width())?,
            attn: a(cfg.q_width())?,
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

/// The step's metadata on the device: persistent buffers that only grow, so a
/// step uploads into them instead of allocating.
#[derive(Debug, Default)]
struct DeviceMeta {
    tokens: Option<CudaSlice<i32>>,
    positions: Option<CudaSlice<i32>>,
    slots: Option<CudaSlice<i32>>,
    dec_ctx: Option<CudaSlice<i32>>,
    dec_tables: Option<CudaSlice<i32>>,
    pre_ctx: Option<CudaSlice<i32>>,
    pre_tables: Option<CudaSlice<i32>>,
    cu_q: Option<CudaSlice<i32>>,
    sample_rows: Option<CudaSlice<i32>>,
}

/// Copies `host` (or one 0 when empty) into `buf`, growing it to the next power of two.
fn upload_into(
    dev: &CudaDevice,
    buf: &mut Option<CudaSlice<i32>>,
    host: &[i32],
) -> Result<(), CudaBackendError> {
    let host = if host.is_empty() { &[0][..] } else { host };
    if buf.as_ref().is_none_or(|b| b.len() < host.len()) {
        *buf = None;
        *buf = Some(
            dev.stream()
                .alloc_zeros::<i32>(host.len().next_power_of_two().max(64))
                .map_err(|e| CudaBackendError::driver("allocating step metadata", e))?,
        );
    }
    let b = buf
        .as_mut()
        .ok_or_else(|| CudaBackendError::Batch("internal: step metadata buffer missing".into()))?;
    dev.stream()
        .memcpy_htod(host, b)
        .map_err(|e| CudaBackendError::driver("copying step metadata", e))
}

fn meta(buf: &Option<CudaSlice<i32>>) -> Result<&CudaSlice<i32>, CudaBackendError> {
    buf.as_ref()
        .ok_or_else(|| CudaBackendError::Batch("internal: step metadata not uploaded".into()))
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
    slots: Vec<i32>,
    /// Decode entries (one token each) occupy rows `0 .. n_decode`.
    n_decode: usize,
    dec_ctx: Vec<i32>,
    dec_tables: Vec<i32>,
    dec_max_blocks: usize,
    dec_max_ctx: usize,
    /// Keys the decode entries attend, summed.
    dec_context_tokens: u64,
    /// Prompt chunks follow, at `cu_q[i] .. cu_q[i + 1]`.
    n_prefill: usize,
    cu_q: Vec<i32>,
    pre_ctx: Vec<i32>,
    pre_tables: Vec<i32>,
    pre_max_blocks: usize,
    pre_max_q: usize,
    /// Rows whose hidden state goes through the head: one per sampled entry
    /// (its last row), every row of a verify entry; in entry order.
    sample_rows: Vec<i32>,
    /// What each sampled entry gets back from the head rows.
    outputs: Vec<SampledEntry>,
    /// First row of each batch entry, in entry order (LoRA maps entries to rows).
    first_row: Vec<usize>,
}

/// A sampled entry's head rows: `first .. first + n` of [`StepPlan::sample_rows`].
#[derive(Debug)]
struct SampledEntry {
    request: RequestId,
    first: usize,
    /// 1, or `k + 1` for a verify entry (a decode entry of `k` drafts).
    n: usize,
    start_pos: u32,
    /// A verify entry's drafts (its tokens after the first).
    drafts: Vec<u32>,
}

/// How decode attention splits the context.
#[derive(Clone, Copy, Debug)]
enum DecodeSplit {
    /// [`CudaDevice::decode_attention`]'s choice for the batch's longest context.
    Auto { max_ctx: usize },
    /// Every sequence in this many parts ([`CudaDevice::decode_attention_balanced`]).
    Balanced(usize),
}

/// Decode entries' metadata on the device.
struct DecodeInputs<'a> {
    batch: usize,
    max_blocks: usize,
    ctx: &'a CudaSlice<i32>,
    tables: &'a CudaSlice<i32>,
    split: DecodeSplit,
}

/// Prompt chunks' metadata on the device.
struct PrefillInputs<'a> {
    batch: usize,
    max_blocks: usize,
    ctx: &'a CudaSlice<i32>,
    tables: &'a CudaSlice<i32>,
    cu_q: &'a CudaSlice<i32>,
    max_q: usize,
    /// `--cuda-prefill-tile`; none: the tuned kernel or the device's default.
    tile: Option<PrefillTile>,
}

/// Where one forward reads the step's metadata.
struct StepInputs<'a> {
    block_size: usize,
    tokens: &'a CudaSlice<i32>,
    positions: &'a CudaSlice<i32>,
    slots: &'a CudaSlice<i32>,
    decode: Option<DecodeInputs<'a>>,
    prefill: Option<PrefillInputs<'a>>,
}

/// The Llama architecture in bf16 on one NVIDIA GPU: NVRTC kernels for norms,
/// RoPE, SiLU·mul, the paged KV write and attention; cuBLAS for the GEMMs.
pub struct CudaBackend {
    dev: Arc<CudaDevice>,
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
    meta: DeviceMeta,
    weights_kind: &'static str,
    recorder: Option<Recorder>,
    profile: OpProfile,
    graph_meta: Option<GraphMeta>,
    graphs: Vec<DecodeGraph>,
    graph_replays: u64,
    /// The draft model (speculative decoding), on the same device and stream.
    draft: Option<Box<CudaBackend>>,
    /// What the draft is, and the modelled acceptance coin if any.
    draft_info: Option<(String, Option<AcceptanceModel>)>,
    /// LoRA adapters ([`CudaBackend::with_lora`]).
    lora: Option<DeviceLora>,
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
            .field("draft", &self.draft_info)
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
        let mut dev = CudaDevice::new(opts.device)?;
        if let Some(table) = &opts.tuning {
            let done = dev.use_tuning(table)?;
            for l in done.applied.iter().chain(&done.skipped) {
                tracing::info!("tuning table: {l}");
            }
            if done.applied.is_empty() {
                return Err(CudaBackendError::Config {
                    field: "tuning_table",
                    problem: format!(
                        "no entry applies to {} (driver {}): {}; tune on this GPU with `fuselab tune --kernel NAME --device cuda`",
                        dev.info().name,
                        dev.info().driver_release.as_deref().unwrap_or("unknown"),
                        done.skipped.join("; ")
                    ),
                });
            }
        }
        let dev = Arc::new(dev);
        let skinny = dev.set_skinny_gemm(opts.skinny_gemm);
        if let Some(t) = opts.prefill_tile
            && t.needs_sm90a()
            && !dev.has_wgmma()
        {
            return Err(CudaBackendError::Config {
                field: "prefill_tile",
                problem: format!(
                    "{} needs Hopper's wgmma but this device's kernels are built for {}; use r128 or r256",
                    t.label(),
                    dev.info().arch
                ),
            });
        }
        let (free, _) = dev
            .stream()
            .context()
            .mem_get_info()
            .map_err(|e| CudaBackendError::driver("reading free device memory", e))?;
        let tiled_bytes = if skinny {
            skinny_tiled_bytes(&dev, &cfg)
        } else {
            0
        };
        let weight_bytes = cfg.weight_bytes(crate::config::ELEM_BYTES) + tiled_bytes;
        let usable = (free as f64 * opts.memory_fraction) as u64;
        if weight_bytes >= usable {
            return Err(CudaBackendError::OutOfMemory(format!(
                "{} needs {weight_bytes} bytes of weights ({tiled_bytes} of them the skinny GEMM's tiled copies) but {usable} of {free} free bytes are usable",
                cfg.name
            )));
        }
        let kv_budget = opts.kv_budget_bytes.unwrap_or(usable - weight_bytes);
        let w = make(&dev, &cfg)?;
        if skinny {
            tile_decode_weights(&dev, &cfg, &w)?;
        }
        Self::assemble(dev, cfg, opts, w, kv_budget, weights_kind)
    }

    /// A backend over weights already on `dev`.
    fn assemble(
        dev: Arc<CudaDevice>,
        cfg: ModelShape,
        opts: CudaOptions,
        w: DeviceWeights,
        kv_budget: u64,
        weights_kind: &'static str,
    ) -> Result<Self, CudaBackendError> {
        let weight_bytes = cfg.weight_bytes(crate::config::ELEM_BYTES);
        let rope = Rope::new(crate::config::rope(&cfg)).map_err(|e| CudaBackendError::Config {
            field: "rope_theta",
            problem: e.to_string(),
        })?;
        let inv: Vec<f32> = rope.inv_freq().iter().map(|&f| f as f32).collect();
        let inv_freq = dev.upload(&inv)?;
        let decode_ws = DecodeWorkspace::new(&dev)?;
        dev.synchronize()?;
        let recorder = opts
            .profile
            .as_ref()
            .map(|_| Recorder::new(dev.stream().context().clone()));
        let profile = OpProfile {
            weight_bytes_per_step: weight_bytes
                - (cfg.vocab * cfg.hidden) as u64 * crate::config::ELEM_BYTES,
            kv_bytes_per_token: cfg.kv_bytes_per_token(1, crate::config::ELEM_BYTES),
            ..OpProfile::default()
        };
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
            meta: DeviceMeta::default(),
            weights_kind,
            recorder,
            profile,
            graph_meta: None,
            graphs: Vec::new(),
            graph_replays: 0,
            draft: None,
            draft_info: None,
            lora: None,
        })
    }

    /// Adds a draft model beside the target (speculative decoding), before
    /// the KV cache is allocated: its weights come off the KV budget and its
    /// KV lives in the same blocks as the target's (one block table indexes
    /// both caches), so a rollback of the table rolls back both.
    ///
    /// # Errors
    /// [`CudaBackendError::Config`] naming `draft` (a vocabulary other than
    /// the target's, a shape the kernels cannot run, the KV cache already
    /// allocated), `draft_layers` or `draft_noise`; too little memory.
    pub fn with_draft(mut self, opts: DraftOptions) -> Result<Self, CudaBackendError> {
        let bad =
            |field: &'static str, problem: String| CudaBackendError::Config { field, problem };
        if self.geometry.is_some() {
            return Err(bad(
                "draft",
                "the KV cache is already allocated; add the draft before init_kv".into(),
            ));
        }
        let (cfg, w, name) = match &opts.source {
            DraftSource::Model { shape, seed } => {
                crate::config::validate(shape)?;
                if shape.vocab != self.cfg.vocab {
                    return Err(bad(
                        "draft",
                        format!(
                            "{} has a vocabulary of {} but the target {} has {}; a draft must share the target's tokenizer",
                            shape.name, shape.vocab, self.cfg.name, self.cfg.vocab
                        ),
                    ));
                }
                let w = DeviceWeights::random(&self.dev, shape, *seed)?;
                let name = format!("{}, random weights (seed {seed})", shape.name);
                (shape.clone(), w, name)
            }
            DraftSource::Perturbed {
                layers,
                noise,
                seed,
            } => {
                if self.weights_kind != "random" {
                    return Err(bad(
                        "draft",
                        "a draft made from the target needs its random weights (their RMS sets the noise); name a draft model instead".into(),
                    ));
                }
                if *layers == 0 || *layers > self.cfg.n_layers {
                    return Err(bad(
                        "draft_layers",
                        format!(
                            "{layers} layers, but the target {} has {}",
                            self.cfg.name, self.cfg.n_layers
                        ),
                    ));
                }
                if !(noise.is_finite() && *noise >= 0.0) {
                    return Err(bad("draft_noise", format!("{noise} is not a scale ≥ 0")));
                }
                let w = self
                    .w
                    .perturbed(&self.dev, &self.cfg, *layers, *noise as f32, *seed)?;
                let cfg = ModelShape {
                    n_layers: *layers,
                    ..self.cfg.clone()
                };
                let name = format!(
                    "{}: first {layers} of {} layers, noise {noise} (seed {seed})",
                    self.cfg.name, self.cfg.n_layers
                );
                (cfg, w, name)
            }
        };
        let draft_bytes = w.bytes();
        // A budget measured from free memory pays for the draft's weights; a
        // fixed one is the KV cache's alone.
        if self.opts.kv_budget_bytes.is_none() {
            if draft_bytes >= self.kv_budget {
                return Err(CudaBackendError::OutOfMemory(format!(
                    "the draft's {draft_bytes} bytes of weights leave nothing of the {} bytes of KV budget",
                    self.kv_budget
                )));
            }
            self.kv_budget -= draft_bytes;
        }
        let draft_opts = CudaOptions {
            kv_budget_bytes: Some(u64::MAX),
            keep_logits: false,
            profile: None,
            ..self.opts.clone()
        };
        let draft = Self::assemble(self.dev.clone(), cfg, draft_opts, w, u64::MAX, "random")?;
        tracing::info!(draft = %name, draft_bytes, kv_budget = self.kv_budget, "cuda draft model ready");
        self.draft = Some(Box::new(draft));
        self.draft_info = Some((name, opts.alpha));
        Ok(self)
    }

    /// Serves seeded random LoRA adapters, the values of the CPU backend's
    /// `LoraWeights::random` for the same shape, `cfg` and `seed`
    /// ([`fuselab_engine::lora_tensor`]): multi-LoRA in `slots` device slots
    /// (each request names its adapter; loads copy from host memory) or
    /// MeteoRA (every adapter resident, a gate picks each token's top-k).
    /// Call it before `init_kv`: the adapters' device memory comes out of the
    /// KV budget.
    ///
    /// # Errors
    /// A bad config (0 adapters, rank 0, 0 slots, a top-k outside
    /// `1..=adapters`), a call after `init_kv`, or too little device memory.
    pub fn with_lora(mut self, cfg: LoraConfig, seed: u64) -> Result<Self, CudaBackendError> {
        if self.geometry.is_some() {
            return Err(CudaBackendError::Config {
                field: "lora",
                problem: "adapters must be added before the KV cache is allocated".into(),
            });
        }
        let bytes = crate::lora::device_bytes(&self.cfg, &cfg);
        if self.opts.kv_budget_bytes.is_none() {
            if bytes >= self.kv_budget {
                return Err(CudaBackendError::OutOfMemory(format!(
                    "{} adapters of rank {} need {bytes} bytes of device memory but only {} are left after the weights",
                    cfg.resident_adapters(),
                    cfg.rank,
                    self.kv_budget
                )));
            }
            self.kv_budget -= bytes;
        }
        self.lora = Some(DeviceLora::new(&self.dev, &self.cfg, cfg, seed)?);
        tracing::info!(?cfg, bytes, "cuda backend serves LoRA adapters");
        Ok(self)
    }

    /// Makes every MeteoRA gate one-hot on `adapter` (zero weights, bias 1 on
    /// it), so top-k = 1 always picks it with weight exactly 1 (tests).
    ///
    /// # Errors
    /// Outside MeteoRA mode or for an unknown adapter.
    pub fn set_one_hot_gate(&mut self, adapter: u32) -> Result<(), CudaBackendError> {
        let dev = &self.dev;
        self.lora
            .as_mut()
            .ok_or_else(|| CudaBackendError::Batch("the backend serves no LoRA adapters".into()))?
            .set_one_hot_gate(dev, adapter)
    }

    /// Adapters copied into a device slot so far (MeteoRA's initial loads included).
    pub fn lora_loads(&self) -> u64 {
        self.lora.as_ref().map_or(0, |l| l.loads)
    }

    /// Steps replayed from CUDA graphs so far (the warm-up's included).
    pub fn graph_replays(&self) -> u64 {
        self.graph_replays
    }

    /// What the per-operator profile has measured so far (empty unless
    /// [`CudaOptions::profile`] is set).
    pub fn profile(&self) -> &OpProfile {
        &self.profile
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
        // Decodes first (rows 0 .. n_decode), longest context first so that the
        // attention's longest blocks start first; then prompt chunks in batch
        // order. A verify entry (a decode entry of k + 1 tokens) is k + 1 decode
        // rows, row j attending the first start + j + 1 positions: its K and V
        // are written before attention in every layer, so this is causal.
        let mut decodes: Vec<usize> = (0..batch.entries.len())
            .filter(|&i| batch.entries[i].n_tokens > 0 && batch.entries[i].is_decode)
            .collect();
        decodes.sort_by_key(|&i| std::cmp::Reverse(batch.entries[i].start_pos));
        let prefills: Vec<usize> = (0..batch.entries.len())
            .filter(|&i| batch.entries[i].n_tokens > 0 && !batch.entries[i].is_decode)
            .collect();
        let capacity = geo.num_blocks as usize * bs;
        if i32::try_from(capacity).is_err() {
            return Err(CudaBackendError::Batch(format!(
                "a cache of {capacity} token slots does not fit the kernels' 32-bit slot ids"
            )));
        }
        let blocks_of = |e: &fuselab_engine::BatchEntry| {
            (e.start_pos + e.n_tokens).div_ceil(geo.block_size) as usize
        };
        p.dec_max_blocks = decodes
            .iter()
            .map(|&i| blocks_of(&batch.entries[i]))
            .max()
            .unwrap_or(0);
        p.pre_max_blocks = prefills
            .iter()
            .map(|&i| blocks_of(&batch.entries[i]))
            .max()
            .unwrap_or(0);
        let table_row = |e: &fuselab_engine::BatchEntry, width: usize| -> Vec<i32> {
            let row = e.block_table[..blocks_of(e)].iter().map(|&b| b as i32);
            row.chain(std::iter::repeat(0)).take(width).collect()
        };
        let order = decodes
            .iter()
            .map(|&i| (i, true))
            .chain(prefills.iter().map(|&i| (i, false)));
        for (i, pass_decode) in order {
            let e = &batch.entries[i];
            let n = e.n_tokens as usize;
            let start = e.start_pos as usize;
            first_row[i] = p.tokens.len();
            for (j, &t) in e.tokens.iter().enumerate() {
                let pos = start + j;
                p.tokens.push(t as i32);
                p.positions.push(pos as i32);
                let blk = e.block_table[pos / bs] as usize;
                p.slots.push((blk * bs + pos % bs) as i32);
                if pass_decode {
                    p.n_decode += 1;
                    p.dec_context_tokens += pos as u64 + 1;
                    p.dec_ctx.push(pos as i32 + 1);
                    p.dec_max_ctx = p.dec_max_ctx.max(pos + 1);
                    p.dec_tables.extend(table_row(e, p.dec_max_blocks));
                }
            }
            if !pass_decode {
                if p.n_prefill == 0 {
                    p.cu_q.push(first_row[i] as i32);
                }
                p.n_prefill += 1;
                p.cu_q.push(p.tokens.len() as i32);
                p.pre_ctx.push((start + n) as i32);
                p.pre_max_q = p.pre_max_q.max(n);
                p.pre_tables.extend(table_row(e, p.pre_max_blocks));
            }
        }
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
            if e.n_tokens == 0 {
                continue;
            }
            let verify = e.is_decode && e.n_tokens > 1;
            if !(e.sample || verify) {
                continue;
            }
            let n = if verify { e.n_tokens as usize } else { 1 };
            let last = first_row[i] + e.n_tokens as usize;
            p.outputs.push(SampledEntry {
                request: e.request,
                first: p.sample_rows.len(),
                n,
                start_pos: e.start_pos,
                drafts: if verify {
                    e.tokens[1..].to_vec()
                } else {
                    Vec::new()
                },
            });
            p.sample_rows.extend((last - n..last).map(|r| r as i32));
        }
        p.first_row = first_row;
        Ok(p)
    }

    fn run(&mut self, batch: &ForwardBatch) -> Result<StepOutput, CudaBackendError> {
        let started = Instant::now();
        let geo = self.geometry.ok_or_else(|| {
            CudaBackendError::Batch("the KV cache is not allocated; call init_kv first".into())
        })?;
        self.dev
            .stream()
            .context()
            .bind_to_thread()
            .map_err(|e| CudaBackendError::driver("binding the context to the engine thread", e))?;
        let p = self.plan(batch, geo)?;
        if p.rows == 0 {
            return Ok(StepOutput::default());
        }
        self.ensure_buffers(p.rows, p.sample_rows.len())?;
        let graph = self.graph_for(&p, geo)?;
        if let Some(l) = self.lora.as_mut() {
            let rows = graph.map_or(p.rows, |i| self.graphs[i].rows);
            l.stage_rows(&self.dev, batch, &p.first_row, rows)?;
        }
        let out = match graph {
            Some(i) => self.run_graph(&p, i)?,
            None => self.run_eager(&p, geo)?,
        };
        if let Some(r) = self.recorder.as_ref() {
            let wall_ms = started.elapsed().as_secs_f64() * 1e3;
            let spans = r.spans()?;
            self.profile
                .add_step(Phase::of(p.n_decode, p.n_prefill), p.rows, wall_ms, &spans);
            if p.n_prefill == 0 {
                self.profile.decode_steps.push(DecodeStep {
                    batch: p.n_decode,
                    context_tokens: p.dec_context_tokens,
                    wall_ms,
                });
            }
        }
        Ok(out)
    }

    /// Grows the activation and sampling buffers to `rows` and `sampled` rows.
    fn ensure_buffers(&mut self, rows: usize, sampled: usize) -> Result<(), CudaBackendError> {
        if self.scratch.as_ref().is_none_or(|s| s.rows < rows) {
            // Drop the old buffers first so that their memory can be reused.
            self.scratch = None;
            let n = rows.next_power_of_two().max(64);
            self.scratch = Some(Scratch::new(&self.dev, &self.cfg, n)?);
        }
        if sampled > 0 && self.head.as_ref().is_none_or(|s| s.rows < sampled) {
            self.head = None;
            self.head = Some(HeadScratch::new(
                &self.dev,
                &self.cfg,
                sampled.next_power_of_two(),
            )?);
        }
        if let (Some(l), Some(s)) = (self.lora.as_mut(), self.scratch.as_ref()) {
            l.ensure_rows(&self.dev, s.rows)?;
        }
        Ok(())
    }

    /// Every layer over `t` rows, reading the step's metadata from `inp`.
    #[allow(clippy::too_many_arguments)]
    fn layers(
        dev: &CudaDevice,
        cfg: &ModelShape,
        w: &DeviceWeights,
        inv_freq: &CudaSlice<f32>,
        kv: &mut [LayerKv],
        s: &mut Scratch,
        ws: &mut DecodeWorkspace,
        rec: &mut Option<Recorder>,
        inp: &StepInputs<'_>,
        t: usize,
        mut lora: Option<&mut DeviceLora>,
    ) -> Result<(), CudaBackendError> {
        let stream = dev.stream();
        let mut mark = |op: Op| -> Result<(), CudaBackendError> {
            match rec.as_mut() {
                Some(r) => r.mark(stream, op),
                None => Ok(()),
            }
        };
        let (hd, qw, kw, f) = (cfg.hidden, cfg.q_width(), cfg.kv_width(), cfg.ffn);
        let qkv_w = qw + 2 * kw;
        let scale = 1.0 / (cfg.head_dim as f32).sqrt();
        let paged = |batch, max_blocks, ctx_lens, block_tables| PagedAttention {
            batch,
            num_q_heads: cfg.n_heads,
            num_kv_heads: cfg.n_kv_heads,
            block_size: inp.block_size,
            max_blocks_per_seq: max_blocks,
            ctx_lens,
            block_tables,
            scale,
        };
        dev.embed_gather(&w.embed, inp.tokens, &mut s.x, t, hd)?;
        mark(Op::Embed)?;
        // LoRA after each adapted projection: y += B·(A·x) per row's adapter.
        let mut adapt = |l: usize, p: Proj, x: &CudaSlice<bf16>, y: &mut CudaSlice<bf16>| match lora
            .as_deref_mut()
        {
            Some(lo) => lo.apply(dev, l, p, x, y, t).map(|()| true),
            None => Ok(false),
        };
        for (l, (lw, kv)) in w.layers.iter().zip(kv.iter_mut()).enumerate() {
            dev.rms_norm(&s.x, &lw.attn_norm, &mut s.h, t, hd, cfg.rms_eps)?;
            mark(Op::Norm)?;
            // One GEMM at every size: three into the fused buffer measured 4-93 %
            // slower on the H200 (reports/results/h200/kernels.md, qkv comparison rows).
            dev.gemm(&s.h, &lw.wqkv, &mut s.qkv, t, hd, qkv_w)?;
            mark(Op::Qkv)?;
            if adapt(l, Proj::Qkv, &s.h, &mut s.qkv)? {
                mark(Op::Lora)?;
            }
            dev.qkv_rope_cache(
                &s.qkv,
                &mut s.q,
                &mut kv.k,
                &mut kv.v,
                inp.positions,
                inp.slots,
                inv_freq,
                t,
                cfg.n_heads,
                cfg.n_kv_heads,
            )?;
            mark(Op::RopeKv)?;
            if let Some(d) = &inp.decode {
                let pa = paged(d.batch, d.max_blocks, d.ctx, d.tables);
                match d.split {
                    DecodeSplit::Auto { max_ctx } => {
                        dev.decode_attention(
                            &pa,
                            &s.q,
                            &kv.k,
                            &kv.v,
                            &mut s.attn,
                            ws,
                            max_ctx,
                            None,
                        )?;
                    }
                    DecodeSplit::Balanced(n) => {
                        dev.decode_attention_balanced(&pa, &s.q, &kv.k, &kv.v, &mut s.attn, ws, n)?;
                    }
                }
                mark(Op::DecodeAttention)?;
            }
            if let Some(pr) = &inp.prefill {
                let pa = paged(pr.batch, pr.max_blocks, pr.ctx, pr.tables);
                dev.prefill_attention_with(
                    &pa,
                    &s.q,
                    &kv.k,
                    &kv.v,
                    &mut s.attn,
                    pr.cu_q,
                    t,
                    pr.max_q,
                    pr.tile,
                )?;
                mark(Op::PrefillAttention)?;
            }
            dev.gemm_acc(&s.attn, &lw.wo, &mut s.x, t, qw, hd)?;
            mark(Op::OProj)?;
            if adapt(l, Proj::O, &s.attn, &mut s.x)? {
                mark(Op::Lora)?;
            }
            dev.rms_norm(&s.x, &lw.mlp_norm, &mut s.h, t, hd, cfg.rms_eps)?;
            mark(Op::Norm)?;
            dev.gemm(&s.h, &lw.w_gate_up, &mut s.gate_up, t, hd, 2 * f)?;
            mark(Op::GateUp)?;
            if adapt(l, Proj::GateUp, &s.h, &mut s.gate_up)? {
                mark(Op::Lora)?;
            }
            dev.silu_mul(&s.gate_up, &mut s.act, t, f)?;
            mark(Op::SiluMul)?;
            dev.gemm_acc(&s.act, &lw.w_down, &mut s.x, t, f, hd)?;
            mark(Op::Down)?;
            if adapt(l, Proj::Down, &s.act, &mut s.x)? {
                mark(Op::Lora)?;
            }
        }
        Ok(())
    }

    /// Final norm, `lm_head` and argmax of `rows` hidden states already in `hs.last`
    /// (or, with `from_x`, the first `rows` rows of `s.x`).
    fn head(
        dev: &CudaDevice,
        cfg: &ModelShape,
        w: &DeviceWeights,
        s: &Scratch,
        hs: &mut HeadScratch,
        rows: usize,
        from_x: bool,
    ) -> Result<(), CudaBackendError> {
        let hd = cfg.hidden;
        let input = if from_x { &s.x } else { &hs.last };
        dev.rms_norm(input, &w.norm, &mut hs.normed, rows, hd, cfg.rms_eps)?;
        dev.gemm(&hs.normed, &w.lm_head, &mut hs.logits, rows, hd, cfg.vocab)?;
        dev.argmax_rows(&hs.logits, &mut hs.ids, rows, cfg.vocab)?;
        Ok(())
    }

    /// Copies the sampled ids (and, with [`CudaOptions::keep_logits`], their logits)
    /// back: `rows[i]` is the head row of `p.sample_rows[i]`. A verify entry gets
    /// its tokens in [`StepOutput::verified`] (the coin's verdicts where
    /// acceptance is modelled) and its last in [`StepOutput::sampled`].
    fn collect(&mut self, p: &StepPlan, rows: &[usize]) -> Result<StepOutput, CudaBackendError> {
        let mut out = StepOutput::default();
        let dev = &self.dev;
        let Some(hs) = self.head.as_ref().filter(|_| !rows.is_empty()) else {
            dev.synchronize()?;
            return Ok(out);
        };
        let n = rows.iter().max().map_or(0, |&r| r + 1);
        let mut ids = vec![0i32; n];
        dev.stream()
            .memcpy_dtoh(&hs.ids.slice(0..n), &mut ids)
            .map_err(|e| CudaBackendError::driver("copying sampled ids", e))?;
        let vocab = self.cfg.vocab;
        let mut logits = Vec::new();
        if self.opts.keep_logits {
            logits = vec![bf16::ZERO; n * vocab];
            dev.stream()
                .memcpy_dtoh(&hs.logits.slice(0..n * vocab), &mut logits)
                .map_err(|e| CudaBackendError::driver("copying logits", e))?;
        }
        dev.synchronize()?;
        let coin = self.draft_info.as_ref().and_then(|d| d.1);
        for o in &p.outputs {
            let head_rows = &rows[o.first..o.first + o.n];
            let mut tokens: Vec<u32> = head_rows.iter().map(|&r| ids[r].max(0) as u32).collect();
            if self.opts.keep_logits {
                for &r in head_rows {
                    let row = &logits[r * vocab..(r + 1) * vocab];
                    out.logits
                        .push((o.request, row.iter().map(|v| v.to_f32()).collect()));
                }
            }
            if let Some(coin) = coin {
                // The draft token for position start + 1 + j is kept when the coin accepts it.
                for (j, &d) in o.drafts.iter().enumerate() {
                    if coin.accepts(o.request, o.start_pos + 1 + j as u32) {
                        tokens[j] = d;
                    }
                }
            }
            let last = tokens.last().copied().unwrap_or(0);
            out.sampled.push((o.request, last));
            if o.n > 1 {
                out.verified.push((o.request, tokens));
            }
        }
        Ok(out)
    }

    /// Current (activation, sampling, decode workspace) buffer rows.
    fn buffer_sizes(&self) -> (usize, usize, usize) {
        (
            self.scratch.as_ref().map_or(0, |s| s.rows),
            self.head.as_ref().map_or(0, |h| h.rows),
            self.decode_ws.rows(),
        )
    }

    /// The decode graph this step replays (captured now if needed), or `None` for
    /// an eager step: prefill work, more rows than the largest bucket,
    /// or a block table wider than the graphs' tables.
    fn graph_for(
        &mut self,
        p: &StepPlan,
        geo: KvGeometry,
    ) -> Result<Option<usize>, CudaBackendError> {
        if !self.opts.graphs || p.n_prefill > 0 || p.n_decode == 0 {
            return Ok(None);
        }
        let Some(&rows) = GRAPH_BUCKETS.iter().find(|&&b| b >= p.rows) else {
            return Ok(None);
        };
        if self.graph_meta.is_none() {
            let width = (self.cfg.context_len as usize)
                .div_ceil(geo.block_size as usize)
                .max(1);
            let max = GRAPH_BUCKETS[GRAPH_BUCKETS.len() - 1];
            let dev = &self.dev;
            let filled = |n: usize, v: i32| dev.upload(&vec![v; n]);
            self.graph_meta = Some(GraphMeta {
                tokens: filled(max, 0)?,
                positions: filled(max, 0)?,
                slots: filled(max, -1)?,
                ctx: filled(max, 0)?,
                tables: filled(max * width, 0)?,
                width,
            });
        }
        if self
            .graph_meta
            .as_ref()
            .is_some_and(|g| p.dec_max_blocks > g.width)
        {
            return Ok(None);
        }
        let sizes = self.buffer_sizes();
        if let Some(i) = self.graphs.iter().position(|g| g.rows == rows) {
            if self.graphs[i].sizes == sizes {
                return Ok(Some(i));
            }
            self.graphs.remove(i);
        }
        let graph = self.capture_decode(rows, geo)?;
        self.graphs.push(graph);
        Ok(Some(self.graphs.len() - 1))
    }

    /// Captures a decode step of `rows` rows reading [`GraphMeta`]: every layer with
    /// balanced split-KV attention, then the head over all rows.
    fn capture_decode(
        &mut self,
        rows: usize,
        geo: KvGeometry,
    ) -> Result<DecodeGraph, CudaBackendError> {
        let (hkv, ctx) = (self.cfg.n_kv_heads, self.cfg.context_len as usize);
        let splits = self.dev.decode_splits(rows, hkv, ctx);
        // Sized for every bucket at once, so capturing one never moves another's buffers.
        let largest = GRAPH_BUCKETS[GRAPH_BUCKETS.len() - 1];
        self.ensure_buffers(largest, largest)?;
        let need = GRAPH_BUCKETS
            .iter()
            .map(|&b| b * self.cfg.n_heads * self.dev.decode_splits(b, hkv, ctx))
            .max()
            .unwrap_or(0);
        if self.decode_ws.rows() < need {
            self.decode_ws = DecodeWorkspace::with_rows(&self.dev, need)?;
        }
        let sizes = self.buffer_sizes();
        let gm = self
            .graph_meta
            .as_ref()
            .ok_or_else(|| CudaBackendError::Batch("internal: graph metadata missing".into()))?;
        let inp = StepInputs {
            block_size: geo.block_size as usize,
            tokens: &gm.tokens,
            positions: &gm.positions,
            slots: &gm.slots,
            decode: Some(DecodeInputs {
                batch: rows,
                max_blocks: gm.width,
                ctx: &gm.ctx,
                tables: &gm.tables,
                split: DecodeSplit::Balanced(splits),
            }),
            prefill: None,
        };
        let (dev, cfg, w, inv_freq) = (&self.dev, &self.cfg, &self.w, &self.inv_freq);
        let (kv, ws) = (&mut self.kv, &mut self.decode_ws);
        let missing = || CudaBackendError::Batch("internal: buffers missing".into());
        let s = self.scratch.as_mut().ok_or_else(missing)?;
        let hs = self.head.as_mut().ok_or_else(missing)?;
        let lora = self.lora.as_mut();
        let mut no_recorder = None;
        dev.set_programmatic_launch(self.opts.pdl);
        let graph = dev.capture(|| {
            Self::layers(
                dev,
                cfg,
                w,
                inv_freq,
                kv,
                s,
                ws,
                &mut no_recorder,
                &inp,
                rows,
                lora,
            )?;
            Self::head(dev, cfg, w, s, hs, rows, true)
        });
        dev.set_programmatic_launch(false);
        let graph = graph?;
        tracing::debug!(rows, splits, "captured a decode graph");
        Ok(DecodeGraph { rows, graph, sizes })
    }

    /// A decode-only step replayed from graph `i`.
    fn run_graph(&mut self, p: &StepPlan, i: usize) -> Result<StepOutput, CudaBackendError> {
        let rows = self.graphs[i].rows;
        let gm = self
            .graph_meta
            .as_mut()
            .ok_or_else(|| CudaBackendError::Batch("internal: graph metadata missing".into()))?;
        let pad = |v: &[i32], fill: i32| -> Vec<i32> {
            v.iter()
                .copied()
                .chain(std::iter::repeat(fill))
                .take(rows)
                .collect()
        };
        let mut tables = vec![0i32; rows * gm.width];
        for (r, row) in p.dec_tables.chunks(p.dec_max_blocks.max(1)).enumerate() {
            tables[r * gm.width..r * gm.width + row.len()].copy_from_slice(row);
        }
        let stream = self.dev.stream();
        let copy = |host: &[i32], dst: &mut CudaSlice<i32>| {
            stream
                .memcpy_htod(host, dst)
                .map_err(|e| CudaBackendError::driver("copying decode metadata", e))
        };
        copy(&pad(&p.tokens, 0), &mut gm.tokens)?;
        copy(&pad(&p.positions, 0), &mut gm.positions)?;
        copy(&pad(&p.slots, -1), &mut gm.slots)?;
        copy(&pad(&p.dec_ctx, 0), &mut gm.ctx)?;
        copy(&tables, &mut gm.tables)?;
        if let Some(r) = self.recorder.as_mut() {
            r.begin(stream)?;
        }
        self.graphs[i]
            .graph
            .launch()
            .map_err(|e| CudaBackendError::driver("launching a decode graph", e))?;
        self.graph_replays += 1;
        if let Some(r) = self.recorder.as_mut() {
            r.mark(stream, Op::DecodeGraph)?;
        }
        let sampled: Vec<usize> = p.sample_rows.iter().map(|&r| r as usize).collect();
        self.collect(p, &sampled)
    }

    /// The step launched kernel by kernel.
    fn run_eager(&mut self, p: &StepPlan, geo: KvGeometry) -> Result<StepOutput, CudaBackendError> {
        let dev = &self.dev;
        if let Some(r) = self.recorder.as_mut() {
            r.begin(dev.stream())?;
        }
        let m = &mut self.meta;
        upload_into(dev, &mut m.tokens, &p.tokens)?;
        upload_into(dev, &mut m.positions, &p.positions)?;
        upload_into(dev, &mut m.slots, &p.slots)?;
        upload_into(dev, &mut m.dec_ctx, &p.dec_ctx)?;
        upload_into(dev, &mut m.dec_tables, &p.dec_tables)?;
        upload_into(dev, &mut m.pre_ctx, &p.pre_ctx)?;
        upload_into(dev, &mut m.pre_tables, &p.pre_tables)?;
        upload_into(dev, &mut m.cu_q, &p.cu_q)?;
        upload_into(dev, &mut m.sample_rows, &p.sample_rows)?;
        let m = &self.meta;
        let inp = StepInputs {
            block_size: geo.block_size as usize,
            tokens: meta(&m.tokens)?,
            positions: meta(&m.positions)?,
            slots: meta(&m.slots)?,
            decode: (p.n_decode > 0)
                .then(|| -> Result<_, CudaBackendError> {
                    Ok(DecodeInputs {
                        batch: p.n_decode,
                        max_blocks: p.dec_max_blocks,
                        ctx: meta(&m.dec_ctx)?,
                        tables: meta(&m.dec_tables)?,
                        split: DecodeSplit::Auto {
                            max_ctx: p.dec_max_ctx,
                        },
                    })
                })
                .transpose()?,
            prefill: (p.n_prefill > 0)
                .then(|| -> Result<_, CudaBackendError> {
                    Ok(PrefillInputs {
                        batch: p.n_prefill,
                        max_blocks: p.pre_max_blocks,
                        ctx: meta(&m.pre_ctx)?,
                        tables: meta(&m.pre_tables)?,
                        cu_q: meta(&m.cu_q)?,
                        max_q: p.pre_max_q,
                        tile: self.opts.prefill_tile,
                    })
                })
                .transpose()?,
        };
        let s = self.scratch.as_mut().ok_or_else(|| {
            CudaBackendError::Batch("internal: activation buffers missing".into())
        })?;
        Self::layers(
            dev,
            &self.cfg,
            &self.w,
            &self.inv_freq,
            &mut self.kv,
            s,
            &mut self.decode_ws,
            &mut self.recorder,
            &inp,
            p.rows,
            self.lora.as_mut(),
        )?;
        let ns = p.sample_rows.len();
        if ns > 0 {
            let hs = self.head.as_mut().ok_or_else(|| {
                CudaBackendError::Batch("internal: sampling buffers missing".into())
            })?;
            dev.gather_rows(
                &s.x,
                meta(&m.sample_rows)?,
                &mut hs.last,
                ns,
                self.cfg.hidden,
            )?;
            Self::head(dev, &self.cfg, &self.w, s, hs, ns, false)?;
            if let Some(r) = self.recorder.as_mut() {
                r.mark(dev.stream(), Op::Head)?;
            }
        }
        let rows: Vec<usize> = (0..ns).collect();
        self.collect(p, &rows)
    }

    /// Runs a prefill of up to [`WARM_UP_PREFILL`] tokens and a decode step of up to
    /// [`WARM_UP_DECODE`] sequences over the freshly allocated cache (no request owns
    /// a block yet), outside any measured window and unprofiled.
    fn warm_up(&mut self) -> Result<(), CudaBackendError> {
        let Some(geo) = self.geometry else {
            return Ok(());
        };
        let bs = geo.block_size as usize;
        let capacity = geo.num_blocks as usize * bs;
        let n = WARM_UP_PREFILL
            .min(capacity)
            .min(self.cfg.context_len as usize)
            .max(1);
        let table = |blocks: std::ops::Range<usize>| blocks.map(|b| b as u32).collect::<Vec<_>>();
        let prefill = fuselab_engine::BatchEntry {
            request: 0,
            start_pos: 0,
            n_tokens: n as u32,
            sample: true,
            is_decode: false,
            tokens: (0..n as u32).map(|i| i % self.cfg.vocab as u32).collect(),
            block_table: table(0..n.div_ceil(bs)),
            row: None,
        };
        // `rows` one-token decodes over blocks 0 .. rows.
        let decode = |rows: usize| ForwardBatch {
            entries: (0..rows)
                .map(|i| fuselab_engine::BatchEntry {
                    request: i as RequestId + 1,
                    start_pos: 1,
                    n_tokens: 1,
                    sample: true,
                    is_decode: true,
                    tokens: vec![1],
                    block_table: table(i..i + 1),
                    row: None,
                })
                .collect(),
            shape: BatchShape::Ragged,
        };
        let recorder = self.recorder.take();
        let graphs = self.opts.graphs;
        self.opts.graphs = false;
        let result = (|| {
            self.run(&ForwardBatch {
                entries: vec![prefill],
                shape: BatchShape::Ragged,
            })?;
            self.run(&decode(WARM_UP_DECODE.min(geo.num_blocks as usize)))?;
            self.opts.graphs = graphs;
            let most = (geo.num_blocks as usize).min(GRAPH_BUCKETS[GRAPH_BUCKETS.len() - 1]);
            if self.opts.gemm_tuning && !self.opts.skinny_gemm {
                self.tune_decode_gemms(most)?;
            }
            if graphs {
                for rows in GRAPH_BUCKETS.into_iter().filter(|&b| b <= most) {
                    self.run(&decode(rows))?;
                }
            }
            Ok::<_, CudaBackendError>(())
        })();
        self.opts.graphs = graphs;
        self.recorder = recorder;
        result
    }

    /// [`CudaDevice::tune_gemm`] for the five GEMMs of a decode step (qkv, o, gate_up,
    /// down over every layer's weights; the LM head) at every graph bucket of up to
    /// `most` rows, on the scratch buffers (their contents are overwritten).
    fn tune_decode_gemms(&mut self, most: usize) -> Result<(), CudaBackendError> {
        let (Some(s), Some(hs)) = (self.scratch.as_mut(), self.head.as_mut()) else {
            return Ok(());
        };
        let (dev, cfg, w) = (&self.dev, &self.cfg, &self.w);
        let (hd, qw, f) = (cfg.hidden, cfg.q_width(), cfg.ffn);
        let qkv_w = qw + 2 * cfg.kv_width();
        let dense = GemmOut::dense;
        let acc = |n| GemmOut {
            accumulate: true,
            ..GemmOut::dense(n)
        };
        let layers = |pick: fn(&LayerWeights) -> &CudaSlice<bf16>| -> Vec<&CudaSlice<bf16>> {
            w.layers.iter().map(pick).collect()
        };
        let (wqkv, wo) = (layers(|l| &l.wqkv), layers(|l| &l.wo));
        let (wgu, wd) = (layers(|l| &l.w_gate_up), layers(|l| &l.w_down));
        let mut timer = fuselab_kernels::cuda::LaunchTimer::new(dev)?;
        let timer = &mut timer;
        let (mut adopted, mut shapes, mut default_us, mut tuned_us) = (0, 0, 0.0, 0.0);
        let t0 = Instant::now();
        for rows in GRAPH_BUCKETS
            .into_iter()
            .filter(|&b| b <= most && b <= s.rows && b <= hs.rows)
        {
            let results = [
                dev.tune_gemm(
                    timer,
                    &s.h,
                    &wqkv,
                    &mut s.qkv,
                    rows,
                    hd,
                    qkv_w,
                    dense(qkv_w),
                )?,
                dev.tune_gemm(timer, &s.attn, &wo, &mut s.x, rows, qw, hd, acc(hd))?,
                dev.tune_gemm(
                    timer,
                    &s.h,
                    &wgu,
                    &mut s.gate_up,
                    rows,
                    hd,
                    2 * f,
                    dense(2 * f),
                )?,
                dev.tune_gemm(timer, &s.act, &wd, &mut s.x, rows, f, hd, acc(hd))?,
                dev.tune_gemm(
                    timer,
                    &hs.normed,
                    &[&w.lm_head],
                    &mut hs.logits,
                    rows,
                    hd,
                    cfg.vocab,
                    dense(cfg.vocab),
                )?,
            ];
            for (i, r) in results.iter().enumerate() {
                if let Some(why) = &r.unavailable {
                    tracing::warn!(rows, gemm = i, "no cuBLASLt algorithm to tune: {why}");
                }
                shapes += 1;
                adopted += usize::from(r.adopted);
                if rows == WARM_UP_DECODE {
                    // Per step: the four layer GEMMs once a layer, the head once.
                    let times = if i < 4 { w.layers.len() as f64 } else { 1.0 };
                    default_us += times * r.default_us;
                    let best = r.best_us.filter(|_| r.adopted).unwrap_or(r.default_us);
                    tuned_us += times * best;
                }
            }
        }
        tracing::info!(
            shapes,
            adopted,
            seconds = t0.elapsed().as_secs_f64(),
            step_gemm_us_default = default_us,
            step_gemm_us_tuned = tuned_us,
            "cuda backend tuned the decode GEMMs (cuBLASLt algorithms by timing; per step at {WARM_UP_DECODE} rows)"
        );
        Ok(())
    }

    /// Writes the profile to [`CudaOptions::profile`] (JSON, and markdown beside it).
    fn write_profile(&self) -> std::io::Result<()> {
        let Some(path) = &self.opts.profile else {
            return Ok(());
        };
        std::fs::write(path, self.profile.to_json())?;
        let md = format!(
            "# CUDA per-operator profile\n\n{} on {} ({} steps)\n\n{}",
            self.cfg.name,
            self.dev.info().name,
            self.profile.phases.iter().map(|p| p.steps).sum::<u64>(),
            self.profile.markdown()
        );
        std::fs::write(path.with_extension("md"), md)
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        if let Err(e) = self.write_profile() {
            tracing::warn!(error = %e, path = ?self.opts.profile, "cannot write the CUDA profile");
        }
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
        let draft = self.draft.as_ref().map_or(0, |d| d.kv_bytes_per_token());
        self.cfg.kv_bytes_per_token(1, crate::config::ELEM_BYTES) + draft
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
        // A second allocation (another engine over the same backend) moves the
        // cache: graphs captured over the old one, and graph metadata sized for
        // the old block size, must not be replayed.
        self.graphs.clear();
        self.graph_meta = None;
        self.kv.clear();
        if let Some(d) = self.draft.as_mut() {
            d.init_kv(geometry)?;
        }
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
        if self.opts.warm_up {
            let t0 = Instant::now();
            self.warm_up().map_err(to_backend)?;
            tracing::info!(
                seconds = t0.elapsed().as_secs_f64(),
                "cuda backend warmed up"
            );
        }
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        self.run(batch).map_err(to_backend)
    }

    fn draft_model(&self) -> Option<DraftInfo> {
        let (name, coin) = self.draft_info.as_ref()?;
        Some(DraftInfo {
            name: name.clone(),
            modelled_alpha: coin.map(|c| c.alpha),
        })
    }

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let draft = self.draft.as_mut().ok_or_else(|| {
            BackendError::Unsupported(
                "speculative decoding needs a draft model: build the CUDA backend with_draft"
                    .into(),
            )
        })?;
        draft.run(batch).map_err(to_backend)
    }

    fn lora_adapters(&self) -> u32 {
        self.lora
            .as_ref()
            .map_or(0, |l| DeviceLora::config(l).nameable_adapters())
    }

    fn stage_adapters(&mut self, step: &AdapterStep) -> Result<(), BackendError> {
        match self.lora.as_mut() {
            Some(l) => l.stage(&self.dev, step).map_err(to_backend),
            None if step.uses_adapters() => Err(BackendError::Unsupported(
                "the CUDA backend serves no LoRA adapters; build it with with_lora".into(),
            )),
            None => Ok(()),
        }
    }
}

/// The `(n, k)` of each layer's GEMM weights a decode step reads: q/k/v, o, gate/up
/// and down.
fn decode_gemm_shapes(cfg: &ModelShape) -> [(usize, usize); 4] {
    let (hd, qw, f) = (cfg.hidden, cfg.q_width(), cfg.ffn);
    [
        (qw + 2 * cfg.kv_width(), hd),
        (hd, qw),
        (2 * f, hd),
        (hd, f),
    ]
}

/// Bytes of the tiled copies [`tile_decode_weights`] makes: those of the weights the
/// skinny GEMM runs on `dev`.
fn skinny_tiled_bytes(dev: &CudaDevice, cfg: &ModelShape) -> u64 {
    let elems = |(n, k): (usize, usize)| {
        if dev.skinny_applies(1, k, n) {
            n * k
        } else {
            0
        }
    };
    let layer: usize = decode_gemm_shapes(cfg).into_iter().map(elems).sum();
    (cfg.n_layers * layer + elems((cfg.vocab, cfg.hidden))) as u64 * crate::config::ELEM_BYTES
}

/// Copies every decode GEMM weight (each layer's four projections, the LM head) into the
/// skinny GEMM's tiled layout ([`CudaDevice::tile_for_skinny`]), so that decode steps
/// stream each weight tile as one contiguous copy.
fn tile_decode_weights(
    dev: &CudaDevice,
    cfg: &ModelShape,
    w: &DeviceWeights,
) -> Result<(), CudaBackendError> {
    let [qkv, o, gate_up, down] = decode_gemm_shapes(cfg);
    for l in &w.layers {
        for (weight, (n, k)) in [
            (&l.wqkv, qkv),
            (&l.wo, o),
            (&l.w_gate_up, gate_up),
            (&l.w_down, down),
        ] {
            if dev.skinny_applies(1, k, n) {
                dev.tile_for_skinny(weight, n, k)?;
            }
        }
    }
    if dev.skinny_applies(1, cfg.hidden, cfg.vocab) {
        dev.tile_for_skinny(&w.lm_head, cfg.vocab, cfg.hidden)?;
    }
    tracing::info!(
        bytes = dev.skinny_tiled_bytes(),
        "decode GEMM weights tiled for the skinny GEMM"
    );
    Ok(())
}
