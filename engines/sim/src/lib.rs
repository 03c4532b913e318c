//! # fuselab-sim
//!
//! The simulated backend: no numerics, only time. [`SimBackend`] prices every
//! [`ForwardBatch`] the engine schedules with a per-operator model of our own
//! CUDA engine (DESIGN.md §3.2, research/engine.md §b and §e.5), fitted to
//! measurements of it ([`Calibration`], module `calib`):
//!
//! `t_step = gpu_scale × (layers × (Σ_gemm t + t_prefill_attn + t_decode_attn + t_elementwise) + t_head) + t_allreduce + t_host`
//!
//! * Token-level GEMMs and element-wise kernels run over every computed row: a
//!   padded batch (static, prepack) computes `rows × row_len`, a decode step
//!   replayed from a CUDA graph its batch bucket's rows.
//! * Prefill attention is one ragged call over every chunk of the step, priced
//!   by its causal and prefix FLOPs and KV reads; decode attention by (rows,
//!   Σ KV), per launch path (eager, graph); both over the real sequences, with
//!   a factor for the cache's block size.
//! * Tensor parallelism divides GEMMs, heads and KV by `tp` and adds two ring
//!   all-reduces per layer over NVLink (PCIe on L40S).
//! * The default calibration is the one measured on the H200 and shipped with
//!   fuselab (`engines/sim/calibration/h200-llama3-8b.json`; `--calibration
//!   FILE` loads another). Other GPUs are priced with its efficiencies and
//!   floors at their own datasheet peaks (engines/sim/calibration/README.md
//!   compares that with published measurements).
//!
//! The KV budget is `memory × utilisation − weights / tp` per GPU (minus the
//! resident LoRA adapters, see below).
//!
//! With a draft model ([`SimConfig::draft`], speculative decoding) the
//! draft's passes are priced by the same model with the draft's shape, its
//! weights come off the KV budget and its KV shares the target's blocks. A
//! verify entry (a decode of `1 + k` tokens) is priced as `1 + k` tokens
//! through the GEMMs and the LM head and `1 + k` decode rows, row `j`
//! attending `start + j + 1` positions, as the CUDA engine runs it (each row
//! reads its KV).
//!
//! ## LoRA (multi-LoRA slots and MeteoRA)
//! An adapter of rank `r` adds `A` (`r × d_in`) and `B` (`d_out × r`) to each
//! of the four projections of every layer ([`fuselab_engine::lora_projections`]);
//! weights in bf16. Per projection and layer the BGMV/SGMV pair is priced as
//! two kernels, shrink `x·Aᵀ` and expand `(x·Aᵀ)·Bᵀ` added to the output,
//! each `max(F/(η_c·peak), bytes/(η_m·BW)) + t₀` with the priors
//! η_c = 0.35, η_m = 0.6 (gather kernels run far below cuBLAS; to be replaced
//! by the CUDA kernel's measurements). `F = 2·T·d·r` and the bytes count the
//! activations read and written once plus each *distinct* adapter's `A` or
//! `B` once, `T` being the tokens that use an adapter.
//!
//! *Load cost model.* An adapter absent from the device slots is copied from
//! pinned host memory before the step that first needs it, synchronously (as
//! vLLM's `set_active_adapters` does): `bytes / (0.8 · host_bw) + 2·4·layers ×
//! 5 µs`, the second term one copy per `A` and `B` tensor of every adapted
//! projection. With tensor parallelism each GPU copies its `1/tp` share in
//! parallel. Loads are serial with the step, so they add to its time.
//!
//! *MeteoRA* embeds all adapters (no loads; their memory comes off the KV
//! budget). Every token of every projection first runs the gate (`d_in × N`
//! logits), then shrink/expand over its `top_k` adapters; the distinct
//! adapters a step touches are taken as their expectation under a uniform
//! gate, `N·(1 − (1 − k/N)^T)`.

pub mod anchors;
mod calib;
mod fit;
pub mod fitting;
mod hardware;
pub mod raw;

use std::collections::BTreeMap;

use fuselab_core::Error;
use fuselab_engine::{
    AdapterStep, Backend, BackendError, ForwardBatch, KvGeometry, LoraConfig, LoraMode, ModelShape,
    StepOutput, adapter_params,
};

pub use calib::{
    CALIBRATION_SCHEMA, Calibration, CalibrationError, ChunkedCheck, Corrections, DecodeAttnCurve,
    ELEMENTWISE, ElementwiseCurve, ErrorStat, GEMMS, GemmCurve, Heads, PrefillAttnCurve, Priced,
    ServingCheck, Source, StepOverhead, Target, Validation, elementwise_bytes, gemm_shape,
    gemm_work,
};
pub use hardware::{HARDWARE, Hardware, hardware};

/// Errors of the simulated backend.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// Bad user input (unknown hardware or model, bad `tp`, a model that does not fit).
    #[error(transparent)]
    Input(#[from] Error),
    /// A `--calibration` file could not be used.
    #[error(transparent)]
    Calibration(#[from] CalibrationError),
}

/// Fraction of device memory the engine may use (vLLM's `gpu_memory_utilization`).
pub const DEFAULT_MEM_UTIL: f64 = 0.9;
/// Launch floor of a LoRA kernel, seconds (prior).
const KERNEL_FLOOR_S: f64 = 2e-6;
/// NCCL ring all-reduce: achieved fraction of link bandwidth and fixed latency
/// (Vidur's `nccl_cpu_launch_overhead_ms = 0.02`).
const ALLREDUCE_ETA: f64 = 0.8;
const ALLREDUCE_LATENCY_S: f64 = 2e-5;
/// LoRA shrink/expand kernels: compute and bandwidth efficiency (priors).
const LORA_ETA_C: f64 = 0.35;
const LORA_ETA_M: f64 = 0.6;
/// Host-to-device copies of adapter weights: achieved fraction of PCIe
/// bandwidth and the fixed cost of each tensor copy, seconds.
const HOST_ETA: f64 = 0.8;
const HOST_COPY_S: f64 = 5e-6;

/// What to simulate.
#[derive(Clone, Debug, PartialEq)]
pub struct SimConfig {
    /// Hardware profile name (see [`HARDWARE`]).
    pub hardware: String,
    /// Model shape name (see [`fuselab_engine::MODEL_NAMES`]).
    pub model: String,
    /// Tensor-parallel degree (1, 2, 4 or 8).
    pub tp: u32,
    /// Fraction of device memory the engine may use.
    pub mem_util: f64,
    /// Host-side cost per step, seconds, in place of the calibration's
    /// (`None`: the calibration's fitted [`StepOverhead`]).
    pub step_overhead_s: Option<f64>,
    /// A calibration file in place of the shipped H200 one (`--calibration`).
    pub calibration: Option<std::path::PathBuf>,
    /// Whether decode-only steps are priced as CUDA-graph replays (the CUDA
    /// engine's default).
    pub graphs: bool,
    /// Model shape of the draft model for speculative decoding (`None`: none).
    pub draft: Option<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            hardware: "h200".into(),
            model: "llama3-8b".into(),
            tp: 1,
            mem_util: DEFAULT_MEM_UTIL,
            step_overhead_s: None,
            calibration: None,
            graphs: true,
            draft: None,
        }
    }
}

/// The time of one step, split by operator family (seconds, whole model).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCost {
    /// qkv, o, gate_up and down projections.
    pub gemm_s: f64,
    /// LM head on the sampled positions.
    pub lm_head_s: f64,
    /// Prefill attention.
    pub prefill_attn_s: f64,
    /// Decode attention.
    pub decode_attn_s: f64,
    /// Norms, RoPE, activation, residuals, KV writes.
    pub elementwise_s: f64,
    /// Tensor-parallel all-reduces.
    pub allreduce_s: f64,
    /// Host-side step overhead.
    pub overhead_s: f64,
    /// LoRA shrink/expand kernels (and MeteoRA's gates).
    pub lora_s: f64,
    /// Copying adapters into device slots before the step.
    pub adapter_load_s: f64,
}

impl StepCost {
    /// The step's total time.
    pub fn total_s(&self) -> f64 {
        self.gemm_s
            + self.lm_head_s
            + self.prefill_attn_s
            + self.decode_attn_s
            + self.elementwise_s
            + self.allreduce_s
            + self.overhead_s
            + self.lora_s
            + self.adapter_load_s
    }
}

/// The simulated backend.
///
/// # Example
/// ```
/// use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind, simulate};
/// let sim = fuselab_sim::SimBackend::from_names("h200", "llama3-8b", 1).unwrap();
/// let mut engine = NativeEngine::new(sim, PolicyConfig::new(PolicyKind::SplitFuse)).unwrap();
/// let specs: Vec<_> = (0..4).map(|id| fuselab_core::RequestSpec {
///     id, arrival_s: 0.0, prompt_len: 2048, output_len: 16, prefix_group: None, prefix_len: 0, conversation: None, adapter: None,
/// }).collect();
/// let run = simulate(&specs, None, &mut engine).unwrap();
/// assert!(run.makespan_s() > 0.01 && run.makespan_s() < 1.0);
/// ```
#[derive(Clone, Debug)]
pub struct SimBackend {
    cfg: SimConfig,
    hw: Hardware,
    model: ModelShape,
    draft: Option<ModelShape>,
    cal: std::sync::Arc<Calibration>,
    geometry: Option<KvGeometry>,
    lora: Option<LoraConfig>,
    staged: AdapterStep,
}

impl SimBackend {
    /// Builds the backend.
    ///
    /// # Errors
    /// [`SimError::Input`] for an unknown hardware or model (listing the valid
    /// names), a bad `tp` or utilisation, or a model whose weights do not fit
    /// (giving both sizes).
    pub fn new(cfg: &SimConfig) -> Result<Self, SimError> {
        let hw = *hardware(&cfg.hardware)?;
        let model = ModelShape::preset(&cfg.model)?;
        if ![1, 2, 4, 8].contains(&cfg.tp) || !model.n_heads.is_multiple_of(cfg.tp as usize) {
            return Err(Error::invalid(
                "--tp",
                format!(
                    "tensor-parallel degree {} is not supported for {}",
                    cfg.tp, model.name
                ),
                format!(
                    "give 1, 2, 4 or 8 dividing the model's {} query heads",
                    model.n_heads
                ),
            )
            .into());
        }
        if !(cfg.mem_util > 0.0 && cfg.mem_util <= 1.0) {
            return Err(Error::invalid(
                "mem_util",
                format!("{} is not in (0, 1]", cfg.mem_util),
                "give a fraction such as 0.9",
            )
            .into());
        }
        if let Some(o) = cfg.step_overhead_s
            && !(o >= 0.0 && o.is_finite())
        {
            return Err(Error::invalid(
                "step_overhead_s",
                format!("{o} is not a non-negative number of seconds"),
                "give e.g. 0.0003",
            )
            .into());
        }
        let draft = cfg
            .draft
            .as_deref()
            .map(ModelShape::preset)
            .transpose()
            .map_err(|e| {
                Error::invalid(
                    "--draft",
                    e.to_string(),
                    "name a model shape for the draft, e.g. --draft llama3.2-1b",
                )
            })?;
        if let Some(d) = &draft
            && (d.vocab != model.vocab || !d.n_heads.is_multiple_of(cfg.tp as usize))
        {
            return Err(Error::invalid(
                "--draft",
                format!(
                    "draft {} (vocabulary {}, {} heads) cannot serve {} (vocabulary {}) at tp {}",
                    d.name, d.vocab, d.n_heads, model.name, model.vocab, cfg.tp
                ),
                "a draft must share its target's vocabulary and split over the same tp",
            )
            .into());
        }
        let usable = hw.memory_bytes * cfg.mem_util;
        let weights = (model.weight_bytes(2) + draft.as_ref().map_or(0, |d| d.weight_bytes(2)))
            as f64
            / f64::from(cfg.tp);
        if weights >= usable {
            return Err(Error::invalid(
                "--model",
                format!(
                    "{} needs {:.1} GB of weights per GPU at tp {} but {} offers {:.1} GB ({:.0} % of {:.1} GB)",
                    model.name,
                    weights / 1e9,
                    cfg.tp,
                    hw.name,
                    usable / 1e9,
                    cfg.mem_util * 100.0,
                    hw.memory_bytes / 1e9
                ),
                "raise --tp, pick a smaller model or a larger GPU",
            )
            .into());
        }
        let cal = match &cfg.calibration {
            Some(path) => std::sync::Arc::new(Calibration::read(path)?),
            None => std::sync::Arc::new(Calibration::default_h200().clone()),
        };
        Ok(Self {
            cfg: cfg.clone(),
            hw,
            model,
            draft,
            cal,
            geometry: None,
            lora: None,
            staged: AdapterStep::default(),
        })
    }

    /// Serves LoRA adapters: multi-LoRA slots (requests name adapters) or
    /// MeteoRA (a per-token gate over all of them).
    ///
    /// # Errors
    /// [`SimError::Input`] for 0 adapters, rank 0 or `top_k` outside
    /// `1..=adapters`, or when the resident adapters leave no memory for KV.
    pub fn with_lora(mut self, lora: LoraConfig) -> Result<Self, SimError> {
        if lora.adapters == 0 || lora.rank == 0 {
            return Err(Error::invalid(
                "--adapters",
                format!("{} adapters of rank {}", lora.adapters, lora.rank),
                "give at least one adapter (--adapters N) of rank >= 1 (--lora-rank R)",
            )
            .into());
        }
        if let LoraMode::Meteora { top_k } = lora.mode
            && !(1..=lora.adapters).contains(&top_k)
        {
            return Err(Error::invalid(
                "--meteora-top-k",
                format!("top-k {top_k} with {} adapters", lora.adapters),
                format!("give a top-k between 1 and {}", lora.adapters),
            )
            .into());
        }
        self.lora = Some(lora);
        if self.kv_budget_bytes() == 0 {
            return Err(Error::invalid(
                "--adapters",
                format!(
                    "{} resident adapters of rank {} ({:.1} GB) leave no memory for the KV cache",
                    lora.resident_adapters(),
                    lora.rank,
                    self.lora_bytes() / 1e9
                ),
                "use fewer slots (--knob max_loras=N), fewer MeteoRA adapters or a lower rank",
            )
            .into());
        }
        Ok(self)
    }

    /// The LoRA configuration, if the backend serves adapters.
    pub fn lora(&self) -> Option<&LoraConfig> {
        self.lora.as_ref()
    }

    /// Bytes per GPU of one adapter (bf16, its `1/tp` share).
    pub fn adapter_bytes(&self) -> f64 {
        self.lora.map_or(0.0, |l| {
            2.0 * adapter_params(&self.model, l.rank) as f64 / f64::from(self.cfg.tp)
        })
    }

    /// Bytes per GPU of the resident adapters.
    fn lora_bytes(&self) -> f64 {
        self.lora.map_or(0.0, |l| {
            f64::from(l.resident_adapters()) * self.adapter_bytes()
        })
    }

    /// Seconds to copy one adapter from host memory into a device slot
    /// (the load-cost model of the crate docs).
    pub fn adapter_load_s(&self) -> f64 {
        let copies = 2.0 * 4.0 * self.model.n_layers as f64;
        self.adapter_bytes() / (HOST_ETA * self.hw.host_bw) + copies * HOST_COPY_S
    }

    /// Prices one step with its adapters: [`Self::step_cost`] plus the LoRA
    /// kernels and the adapter loads.
    pub fn step_cost_with_adapters(&self, batch: &ForwardBatch, step: &AdapterStep) -> StepCost {
        let mut cost = self.step_cost(batch);
        let Some(lora) = self.lora else {
            return cost;
        };
        let m = &self.model;
        let tp = f64::from(self.cfg.tp);
        let (h, ffn) = (m.hidden as f64, m.ffn as f64 / tp);
        let q = (m.n_heads * m.head_dim) as f64 / tp;
        let kv = (m.n_kv_heads.div_ceil(self.cfg.tp as usize) * m.head_dim) as f64;
        let shapes = [(h, q + 2.0 * kv), (q, h), (h, 2.0 * ffn), (ffn, h)];
        let r = f64::from(lora.rank);
        let n_adapters = f64::from(lora.adapters);
        let (peak, bw) = (self.hw.peak_flops, self.hw.mem_bw);
        let kernel = |flops: f64, bytes: f64| {
            (flops / (LORA_ETA_C * peak)).max(bytes / (LORA_ETA_M * bw)) + KERNEL_FLOOR_S
        };
        // (tokens through the adapters, adapters per token, distinct adapters, gate?)
        let (t, per_token, distinct, gate) = match lora.mode {
            LoraMode::Slots { .. } => {
                let t: u32 = batch
                    .entries
                    .iter()
                    .zip(&step.entries)
                    .filter(|(_, a)| a.is_some())
                    .map(|(e, _)| e.n_tokens)
                    .sum();
                (f64::from(t), 1.0, step.distinct().len() as f64, false)
            }
            LoraMode::Meteora { top_k } => {
                let t = f64::from(batch.real_tokens());
                let k = f64::from(top_k);
                let distinct = n_adapters * (1.0 - (1.0 - k / n_adapters).powf(t));
                (t, k, distinct, true)
            }
        };
        if t > 0.0 {
            let mut per_layer = 0.0;
            for (k_in, n_out) in shapes {
                if gate {
                    per_layer += kernel(
                        2.0 * t * k_in * n_adapters,
                        2.0 * (n_adapters * k_in + t * k_in + t * n_adapters),
                    );
                }
                per_layer += kernel(
                    2.0 * t * per_token * k_in * r,
                    2.0 * (t * k_in + distinct * r * k_in + t * per_token * r),
                );
                per_layer += kernel(
                    2.0 * t * per_token * r * n_out,
                    2.0 * (t * per_token * r + distinct * r * n_out + 2.0 * t * n_out),
                );
            }
            cost.lora_s = m.n_layers as f64 * per_layer;
        }
        cost.adapter_load_s = step.loads.len() as f64 * self.adapter_load_s();
        cost
    }

    /// Shorthand for [`Self::new`] with default utilisation and overhead.
    ///
    /// # Errors
    /// As [`Self::new`].
    pub fn from_names(hardware: &str, model: &str, tp: u32) -> Result<Self, SimError> {
        Self::new(&SimConfig {
            hardware: hardware.into(),
            model: model.into(),
            tp,
            ..SimConfig::default()
        })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    /// The hardware profile.
    pub fn hardware(&self) -> &Hardware {
        &self.hw
    }

    /// The model shape.
    pub fn model(&self) -> &ModelShape {
        &self.model
    }

    /// The KV geometry the engine chose, once [`Backend::init_kv`] ran.
    pub fn kv_geometry(&self) -> Option<KvGeometry> {
        self.geometry
    }

    /// The calibration the backend prices with.
    pub fn calibration(&self) -> &Calibration {
        &self.cal
    }

    /// Prices with `cal` in place of the configured calibration.
    pub fn with_calibration(mut self, cal: Calibration) -> Self {
        self.cal = std::sync::Arc::new(cal);
        self
    }

    /// Settings for provenance (`tp`, `mem_util`, the calibration, hardware peaks).
    pub fn describe(&self) -> BTreeMap<String, serde_json::Value> {
        let mut m = BTreeMap::new();
        m.insert("tp".into(), serde_json::json!(self.cfg.tp));
        m.insert("mem_util".into(), serde_json::json!(self.cfg.mem_util));
        if let Some(o) = self.cfg.step_overhead_s {
            m.insert("step_overhead_s".into(), serde_json::json!(o));
        }
        m.insert(
            "calibration".into(),
            serde_json::json!(format!(
                "{} {} measured {} ({})",
                self.cal.source.device,
                self.cal.model,
                self.cal.source.measured,
                self.cfg
                    .calibration
                    .as_ref()
                    .map_or("shipped".to_string(), |p| p.display().to_string())
            )),
        );
        m.insert(
            "peak_tflops".into(),
            serde_json::json!(self.hw.peak_flops / 1e12),
        );
        m.insert(
            "mem_bw_tbps".into(),
            serde_json::json!(self.hw.mem_bw / 1e12),
        );
        if let Some(l) = self.lora {
            m.insert("lora_adapters".into(), serde_json::json!(l.adapters));
            m.insert("lora_rank".into(), serde_json::json!(l.rank));
            match l.mode {
                LoraMode::Slots { slots } => {
                    m.insert("lora_slots".into(), serde_json::json!(slots))
                }
                LoraMode::Meteora { top_k } => {
                    m.insert("meteora_top_k".into(), serde_json::json!(top_k))
                }
            };
            m.insert(
                "adapter_load_ms".into(),
                serde_json::json!(self.adapter_load_s() * 1e3),
            );
        }
        m
    }

    /// The draft model's shape, when there is one.
    pub fn draft(&self) -> Option<&ModelShape> {
        self.draft.as_ref()
    }

    /// Prices one step of the target.
    pub fn step_cost(&self, batch: &ForwardBatch) -> StepCost {
        self.cost_of(&self.model, batch)
    }

    /// Prices one pass of the draft model (`None` without one).
    pub fn draft_cost(&self, batch: &ForwardBatch) -> Option<StepCost> {
        self.draft.as_ref().map(|d| self.cost_of(d, batch))
    }

    /// Prices one pass of `m` over `batch`.
    fn cost_of(&self, m: &ModelShape, batch: &ForwardBatch) -> StepCost {
        let tp = f64::from(self.cfg.tp);
        let block = self.geometry.map_or(16, |g| g.block_size);
        let p = self.cal.price(
            batch,
            Target::on(&self.hw, m, self.cfg.tp, block),
            self.cfg.graphs,
        );
        let k = self.cal.step.gpu_scale;
        let mut cost = StepCost {
            gemm_s: k * p.gemm_s,
            lm_head_s: k * p.lm_head_s,
            prefill_attn_s: k * p.prefill_attn_s,
            decode_attn_s: k * p.decode_attn_s,
            elementwise_s: k * p.elementwise_s,
            overhead_s: self.cfg.step_overhead_s.unwrap_or(p.host_s),
            ..StepCost::default()
        };
        if batch.is_empty() {
            cost.overhead_s = self.cfg.step_overhead_s.unwrap_or(0.0);
            return cost;
        }
        // Two ring all-reduces of the hidden states per layer.
        if self.cfg.tp > 1 {
            let bytes = 2.0 * p.rows * m.hidden as f64;
            let one = 2.0 * (tp - 1.0) / tp * bytes / (ALLREDUCE_ETA * self.hw.link_bw)
                + ALLREDUCE_LATENCY_S;
            cost.allreduce_s = m.n_layers as f64 * 2.0 * one;
        }
        cost
    }
}

impl Backend for SimBackend {
    fn name(&self) -> &str {
        "sim"
    }

    fn needs_tokens(&self) -> bool {
        false
    }

    fn vocab_size(&self) -> u32 {
        self.model.vocab as u32
    }

    fn context_len(&self) -> Option<u32> {
        Some(self.model.context_len)
    }

    fn kv_bytes_per_token(&self) -> u64 {
        self.model.kv_bytes_per_token(self.cfg.tp, 2)
            + self
                .draft
                .as_ref()
                .map_or(0, |d| d.kv_bytes_per_token(self.cfg.tp, 2))
    }

    fn kv_budget_bytes(&self) -> u64 {
        let usable = self.hw.memory_bytes * self.cfg.mem_util;
        let weights = (self.model.weight_bytes(2)
            + self.draft.as_ref().map_or(0, |d| d.weight_bytes(2))) as f64
            / f64::from(self.cfg.tp);
        (usable - weights - self.lora_bytes()).max(0.0) as u64
    }

    fn lora_adapters(&self) -> u32 {
        match self.lora {
            Some(LoraConfig {
                adapters,
                mode: LoraMode::Slots { .. },
                ..
            }) => adapters,
            _ => 0,
        }
    }

    fn stage_adapters(&mut self, step: &AdapterStep) -> Result<(), BackendError> {
        self.staged = step.clone();
        Ok(())
    }

    fn draft_model(&self) -> Option<fuselab_engine::DraftInfo> {
        self.draft.as_ref().map(|d| fuselab_engine::DraftInfo {
            name: d.name.clone(),
            modelled_alpha: None,
        })
    }

    fn draft_forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let cost = self.draft_cost(batch).ok_or_else(|| {
            BackendError::Unsupported("the simulator was built without a draft model".into())
        })?;
        Ok(StepOutput {
            duration_s: Some(cost.total_s()),
            ..StepOutput::default()
        })
    }

    fn init_kv(&mut self, geometry: KvGeometry) -> Result<(), BackendError> {
        self.geometry = Some(geometry);
        Ok(())
    }

    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let cost = if self.lora.is_some() {
            let step = std::mem::take(&mut self.staged);
            self.step_cost_with_adapters(batch, &step)
        } else {
            self.step_cost(batch)
        };
        Ok(StepOutput {
            duration_s: Some(cost.total_s()),
            sampled: batch
                .entries
                .iter()
                .filter(|e| e.sample)
                .map(|e| (e.request, 0))
                .collect(),
            ..StepOutput::default()
        })
    }
}
