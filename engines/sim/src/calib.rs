//! The cost model's calibration: efficiency curves and fixed costs fitted to
//! our own CUDA engine (`fuselab calibrate --engine cuda`, then `--fit`).
//!
//! A [`Calibration`] prices one engine step the way the CUDA backend runs it
//! ([`Calibration::price`]):
//! * per layer: RMSNorm ×2, the qkv GEMM, fused RoPE + KV write, decode
//!   attention over the decode rows, one ragged prefill-attention call over
//!   every prompt chunk, the o GEMM (added into the residual), gate_up,
//!   SiLU·mul, down (added into the residual); once: the embedding gather and,
//!   over the sampled rows, a row gather, RMSNorm, the LM head and argmax;
//! * GEMMs and element-wise kernels run over every computed row (a padded batch
//!   computes `rows × row_len`; a graph-replayed decode step its bucket's rows);
//!   attention runs over the real sequences only;
//! * plus the host's share of the step ([`StepOverhead`]).
//!
//! Curves are expressed against the datasheet peaks of the calibration's
//! [`Calibration::hardware`]; another GPU is priced with the same efficiencies
//! and floors and its own peaks ([`Calibration::price`] takes the peaks).
//!
//! The forms, for peak FLOP/s `P` and bandwidth `BW`:
//! * GEMM `[T,k]·[k,n]`: `‖(F/(η_c·P), B/(η_m·BW), t₀)‖_p`, `F = 2Tkn`,
//!   `B = 2(kn + Tk + Tn)` (a roofline whose knee is soft where compute and
//!   memory times are close: tile quantisation, tails, imperfect overlap);
//! * prefill attention over chunks `(c_i, k_i)`:
//!   `‖((F_causal/η_causal + F_prefix/η_prefix)/(P·Q/(Q + q½)), B/(η_m·BW), t₀)‖_p`
//!   with `F_causal = Σ 2·H·d·c²`, `F_prefix = Σ 4·H·d·c·k`, `Q = Σ c`, and `B`
//!   the KV read once per chunk plus q and the output;
//! * decode attention of `b` rows reading `B` KV bytes (one curve per launch
//!   path, eager or graph): `B/(η_m·BW·b/(b + b½)) + s·b + t₀`;
//! * element-wise kernels: `‖(bytes/(η_m·BW), t₀)‖_p`, one curve per kernel.
//!
//! Each curve is corrected by what it misses of its own sweep
//! ([`Corrections`]): the measured/curve ratio at the fitted shapes,
//! interpolated in log space between the nearest ones (tile quantisation,
//! split counts, L2-resident working sets are not in any smooth curve).

use std::collections::BTreeMap;
use std::sync::OnceLock;

use fuselab_engine::{BatchShape, ForwardBatch, ModelShape};
use serde::{Deserialize, Serialize};

/// Version of the calibration file format.
pub const CALIBRATION_SCHEMA: u32 = 1;

/// The measured H200 calibration shipped with fuselab (the default of every
/// simulated run; other hardware scales it by its peaks).
const DEFAULT_FILE: &str = include_str!("../calibration/h200-llama3-8b.json");

/// Decode-graph batch buckets of the CUDA backend (a graph-replayed step
/// computes its bucket's rows).
pub const GRAPH_BUCKETS: [u32; 19] = [
    1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256,
];

/// A GEMM efficiency curve: a roofline with a soft knee.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GemmCurve {
    /// Fraction of peak FLOP/s.
    pub eta_c: f64,
    /// Fraction of peak bandwidth.
    pub eta_m: f64,
    /// Shortest time of the kernel, seconds (the same on every GPU).
    pub floor_s: f64,
    /// Sharpness of the knee (`p → ∞` is the hard `max` of the roofline).
    pub p: f64,
}

/// `‖(a, b, c)‖_p`, scaled for numerical safety.
pub(crate) fn pnorm3(a: f64, b: f64, c: f64, p: f64) -> f64 {
    let m = a.max(b).max(c);
    if m <= 0.0 {
        return 0.0;
    }
    m * ((a / m).powf(p) + (b / m).powf(p) + (c / m).powf(p)).powf(1.0 / p)
}

impl GemmCurve {
    /// Seconds for `flops` and `bytes` on hardware with `peak` FLOP/s and `bw` bytes/s.
    pub fn time(&self, flops: f64, bytes: f64, peak: f64, bw: f64) -> f64 {
        pnorm3(
            flops / (self.eta_c * peak),
            bytes / (self.eta_m * bw),
            self.floor_s,
            self.p,
        )
    }
}

/// The prefill-attention curve (one ragged call over every chunk of a step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrefillAttnCurve {
    /// Fraction of peak on the causal (chunk × chunk) part.
    pub eta_causal: f64,
    /// Fraction of peak on the prefix (chunk × earlier context) part.
    pub eta_prefix: f64,
    /// New tokens in the call at which half the device is busy.
    pub q_half: f64,
    /// Fraction of peak bandwidth on the KV reads.
    pub eta_m: f64,
    /// Shortest time of the call, seconds.
    pub floor_s: f64,
    /// Sharpness of the knee between compute, memory and floor.
    pub p: f64,
}

/// The attention geometry of one GPU's share of a model: query heads, KV
/// heads and head dimension.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Heads {
    /// Query heads.
    pub q: f64,
    /// KV heads.
    pub kv: f64,
    /// Head dimension.
    pub dim: f64,
}

impl Heads {
    /// The heads of `m` split over `tp` GPUs.
    pub fn of(m: &ModelShape, tp: u32) -> Self {
        Self {
            q: m.n_heads as f64 / f64::from(tp),
            kv: m.n_kv_heads.div_ceil(tp as usize) as f64,
            dim: m.head_dim as f64,
        }
    }

    /// bf16 K and V bytes of one token in one layer.
    pub fn kv_bytes(&self) -> f64 {
        2.0 * 2.0 * self.kv * self.dim
    }
}

impl PrefillAttnCurve {
    /// Seconds for one call over `chunks` `(new tokens, prior context)`.
    pub fn time(&self, chunks: &[(f64, f64)], h: Heads, peak: f64, bw: f64) -> f64 {
        let (mut fc, mut fp, mut q, mut kv) = (0.0, 0.0, 0.0, 0.0);
        for &(c, k) in chunks {
            fc += 2.0 * h.q * h.dim * c * c;
            fp += 4.0 * h.q * h.dim * c * k;
            q += c;
            kv += c + k;
        }
        if q <= 0.0 {
            return 0.0;
        }
        let par = q / (q + self.q_half);
        let tc = (fc / self.eta_causal + fp / self.eta_prefix) / (peak * par);
        let bytes = kv * h.kv_bytes() + q * 2.0 * 2.0 * h.q * h.dim;
        pnorm3(tc, bytes / (self.eta_m * bw), self.floor_s, self.p)
    }
}

/// The decode-attention curve of one launch path.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecodeAttnCurve {
    /// Asymptotic fraction of peak bandwidth.
    pub eta_m: f64,
    /// Rows at which half the device is busy.
    pub batch_half: f64,
    /// Cost of each row, seconds.
    pub per_row_s: f64,
    /// Fixed cost, seconds.
    pub floor_s: f64,
}

impl DecodeAttnCurve {
    /// Seconds for `rows` decode rows reading `bytes` of KV.
    pub fn time(&self, rows: f64, bytes: f64, bw: f64) -> f64 {
        if rows <= 0.0 {
            return 0.0;
        }
        let par = rows / (rows + self.batch_half);
        bytes / (self.eta_m * par * bw) + self.per_row_s * rows + self.floor_s
    }
}

/// An element-wise kernel: bandwidth-bound with a floor.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ElementwiseCurve {
    /// Fraction of peak bandwidth.
    pub eta_m: f64,
    /// Shortest time, seconds.
    pub floor_s: f64,
    /// Sharpness of the knee between bandwidth and floor.
    pub p: f64,
}

impl ElementwiseCurve {
    /// Seconds for `bytes` read plus written.
    pub fn time(&self, bytes: f64, bw: f64) -> f64 {
        pnorm3(bytes / (self.eta_m * bw), self.floor_s, 0.0, self.p)
    }
}

/// What a curve misses of its own sweep: `ln(measured / curve)` at the
/// fitted shapes, by their features (logs of the shape's sizes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Corrections {
    /// `(features, ln(measured / curve))` of every fitted shape.
    pub points: Vec<(Vec<f64>, f64)>,
}

impl Corrections {
    /// Neighbours the correction is interpolated from.
    const NEIGHBOURS: usize = 3;

    /// The factor at `x`: inverse-square-distance weighted mean of the
    /// nearest shapes' log ratios (1 without points).
    pub fn factor(&self, x: &[f64]) -> f64 {
        if self.points.is_empty() {
            return 1.0;
        }
        let mut near: Vec<(f64, f64)> = self
            .points
            .iter()
            .map(|(f, r)| {
                let d2: f64 = f.iter().zip(x).map(|(a, b)| (a - b).powi(2)).sum();
                (d2, *r)
            })
            .collect();
        near.sort_by(|a, b| a.0.total_cmp(&b.0));
        if near[0].0 < 1e-18 {
            return near[0].1.exp();
        }
        let (mut w, mut wr) = (0.0, 0.0);
        for &(d2, r) in near.iter().take(Self::NEIGHBOURS) {
            w += 1.0 / d2;
            wr += r / d2;
        }
        (wr / w).exp()
    }
}

/// Distance, in feature units, between an L2-resident working set and one
/// that streams from memory (so that corrections do not mix the two).
const RESIDENT_GAP: f64 = 3.0;

fn resident_feature(resident: bool) -> f64 {
    if resident { RESIDENT_GAP } else { 0.0 }
}

/// Features of a GEMM shape: `[ln rows]` (the sweep's weights are cold, as
/// in a step).
pub fn rows_features(rows: f64) -> Vec<f64> {
    vec![rows.max(1.0).ln()]
}

/// Features of an element-wise shape: `[ln rows, resident]`.
pub fn elementwise_features(rows: f64, resident: bool) -> Vec<f64> {
    vec![rows.max(1.0).ln(), resident_feature(resident)]
}

/// Features of a prefill-attention call: `[ln Σc, ln(1 + Σk/Σc), ln chunks]`.
pub fn prefill_features(chunks: &[(f64, f64)]) -> Vec<f64> {
    let q: f64 = chunks.iter().map(|c| c.0).sum::<f64>().max(1.0);
    let k: f64 = chunks.iter().map(|c| c.1).sum();
    vec![
        q.ln(),
        (1.0 + k / q).ln(),
        (chunks.len().max(1) as f64).ln(),
    ]
}

/// Features of a decode-attention call: `[ln rows, ln(KV tokens per row), resident]`.
pub fn decode_features(rows: f64, kv_tokens: f64, resident: bool) -> Vec<f64> {
    let rows = rows.max(1.0);
    vec![
        rows.ln(),
        (kv_tokens / rows).max(1.0).ln(),
        resident_feature(resident),
    ]
}

/// What a step costs beyond its kernels:
/// `t = gpu_scale · Σ kernels + graph_s | eager_s + per_entry_s · entries`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepOverhead {
    /// Kernels run back to back in a real step relative to the operator
    /// sweep's timing of each alone.
    pub gpu_scale: f64,
    /// Fixed host cost of a graph-replayed decode step, seconds.
    pub graph_s: f64,
    /// Fixed host cost of an eagerly launched step, seconds.
    pub eager_s: f64,
    /// Host cost per sequence of the batch (planning, metadata), seconds.
    pub per_entry_s: f64,
}

/// An error statistic of predictions against measurements.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorStat {
    /// Mean absolute percentage error (0.05 = 5 %).
    pub mape: f64,
    /// Mean signed error of predicted vs measured (+: predicted slower).
    pub bias: f64,
    /// Largest absolute percentage error.
    pub max: f64,
    /// Points compared.
    pub points: usize,
    /// Σ predicted / Σ measured (time-weighted: for steps, the makespan's ratio).
    pub total_ratio: f64,
}

impl ErrorStat {
    /// The statistic of `(measured, predicted)` pairs.
    pub fn of(pairs: impl IntoIterator<Item = (f64, f64)>) -> Self {
        let mut s = ErrorStat::default();
        let (mut sum_m, mut sum_p) = (0.0, 0.0);
        for (m, p) in pairs {
            sum_m += m;
            sum_p += p;
            let e = (p - m) / m;
            s.mape += e.abs();
            s.bias += e;
            s.max = s.max.max(e.abs());
            s.points += 1;
        }
        if s.points > 0 {
            s.mape /= s.points as f64;
            s.bias /= s.points as f64;
            s.total_ratio = sum_p / sum_m;
        }
        s
    }
}

/// Prefill of one long prompt in chunks: measured vs priced.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkedCheck {
    /// Token budget of a step.
    pub budget: u32,
    /// Prompt length.
    pub prompt: u32,
    /// Measured seconds per prompt (sum of its steps).
    pub measured_s: f64,
    /// Priced seconds per prompt (the same batches).
    pub simulated_s: f64,
}

/// Poisson serving runs on the GPU (the same trace, repeated) and the
/// simulator serving that trace; "measured" is the median over the runs.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServingCheck {
    /// Run name, e.g. `splitfuse-85`.
    pub name: String,
    /// Policy.
    pub policy: String,
    /// Arrival rate, requests/s.
    pub rate: f64,
    /// Requests measured per run.
    pub requests: usize,
    /// Each run's measured `[P50 TTFT, P50 time per output token]`, seconds.
    pub runs: Vec<[f64; 2]>,
    /// `[measured, simulated]` P50 TTFT, seconds.
    pub ttft_p50_s: [f64; 2],
    /// `[measured, simulated]` P90 TTFT, seconds.
    pub ttft_p90_s: [f64; 2],
    /// `[measured, simulated]` P50 time per output token, seconds.
    pub tpot_p50_s: [f64; 2],
    /// `[measured, simulated]` P90 time per output token, seconds.
    pub tpot_p90_s: [f64; 2],
}

/// How well the calibration predicts what it was not fitted to.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Validation {
    /// Held-out operator shapes (every third of each operator's sweep), per
    /// class: `gemm`, `lm_head`, `prefill_attn`, `decode_attn`, `elementwise`.
    pub ops_held_out: BTreeMap<String, ErrorStat>,
    /// The shapes the curves were fitted to, per class.
    pub ops_fitted: BTreeMap<String, ErrorStat>,
    /// The grid steps the step overhead was fitted to.
    pub grid_steps: ErrorStat,
    /// Held-out whole steps per set: `policy:NAME` (each scheduler's own
    /// batches) and `chunked:BUDGET`.
    pub steps: BTreeMap<String, ErrorStat>,
    /// One long prompt prefilled in chunks, per budget.
    pub chunked: Vec<ChunkedCheck>,
    /// Poisson serving runs, measured vs simulated.
    pub serving: Vec<ServingCheck>,
}

/// Where a calibration comes from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Source {
    /// The GPU it was measured on.
    pub device: String,
    /// Its driver, where known.
    pub driver: Option<String>,
    /// When it was measured (RFC 3339).
    pub measured: String,
    /// The measuring command.
    pub command: String,
    /// fuselab's version and commit at the measurement.
    pub build: String,
    /// The raw measurements' folder, as given to `--fit`.
    pub raw: String,
    /// When it was fitted (RFC 3339).
    pub fitted: String,
    /// Measured ceilings of the device: read-only probe GB/s, copy GB/s, GEMM 8192³ TFLOP/s.
    pub ceilings: [f64; 3],
}

/// A fitted calibration of the cost model (the file `--calibration` loads).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// [`CALIBRATION_SCHEMA`].
    pub schema: u32,
    /// Hardware profile whose datasheet peaks the efficiencies are relative to.
    pub hardware: String,
    /// Model shape it was measured on.
    pub model: String,
    /// L2 cache of the measured device, bytes: a working set below it stays
    /// resident between back-to-back launches.
    pub l2_bytes: u64,
    /// Provenance.
    pub source: Source,
    /// GEMM curves keyed `qkv`, `o`, `gate_up`, `down`, `lm_head`.
    pub gemm: BTreeMap<String, GemmCurve>,
    /// Prefill attention.
    pub prefill_attn: PrefillAttnCurve,
    /// Decode attention, keyed by launch path: `eager`, `graph`.
    pub decode_attn: BTreeMap<String, DecodeAttnCurve>,
    /// Attention time on a cache of other block sizes relative to the sweep's
    /// 16-token blocks, keyed by block size.
    pub block_factor: BTreeMap<u32, f64>,
    /// Element-wise kernels keyed `rms_norm`, `qkv_rope_cache`, `silu_mul`,
    /// `embed_gather`, `gather_rows`, `argmax`.
    pub elementwise: BTreeMap<String, ElementwiseCurve>,
    /// Each curve's corrections, keyed `gemm:NAME`, `prefill_attn`,
    /// `decode:PATH`, `elementwise:NAME`.
    pub corrections: BTreeMap<String, Corrections>,
    /// The host's share of a step.
    pub step: StepOverhead,
    /// Errors on what the fit did not see.
    pub validation: Validation,
}

/// The GEMMs the pricing needs.
pub const GEMMS: [&str; 5] = ["qkv", "o", "gate_up", "down", "lm_head"];
/// The launch paths of decode attention, each with its curve.
pub const DECODE_PATHS: [&str; 2] = ["eager", "graph"];

/// The element-wise kernels the pricing needs.
pub const ELEMENTWISE: [&str; 6] = [
    "rms_norm",
    "qkv_rope_cache",
    "silu_mul",
    "embed_gather",
    "gather_rows",
    "argmax",
];

/// Errors reading a calibration file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CalibrationError {
    /// The file could not be read.
    #[error("--calibration {path}: cannot read it: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a calibration of this schema.
    #[error(
        "--calibration {path}: {message}; give a file written by `fuselab calibrate --fit RAW --out FILE`"
    )]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (serde names the field).
        message: String,
    },
}

/// The correction key of a GEMM.
pub fn gemm_key(name: &str) -> &'static str {
    match name {
        "qkv" => "gemm:qkv",
        "o" => "gemm:o",
        "gate_up" => "gemm:gate_up",
        "down" => "gemm:down",
        _ => "gemm:lm_head",
    }
}

/// The correction key of a decode-attention path.
pub fn decode_key(path: &str) -> &'static str {
    if path == "graph" {
        "decode:graph"
    } else {
        "decode:eager"
    }
}

/// The correction key of an element-wise kernel.
pub fn elementwise_key(name: &str) -> &'static str {
    match name {
        "rms_norm" => "elementwise:rms_norm",
        "qkv_rope_cache" => "elementwise:qkv_rope_cache",
        "silu_mul" => "elementwise:silu_mul",
        "embed_gather" => "elementwise:embed_gather",
        "gather_rows" => "elementwise:gather_rows",
        _ => "elementwise:argmax",
    }
}

/// The GEMM FLOPs and bf16 bytes of `[t,k]·[k,n]`.
pub fn gemm_work(t: f64, k: f64, n: f64) -> (f64, f64) {
    (2.0 * t * k * n, 2.0 * (k * n + t * k + t * n))
}

/// Bytes the element-wise kernel `name` reads and writes for `t` rows of
/// model `m` on one of `tp` GPUs (the operator sweep's accounting).
pub fn elementwise_bytes(name: &str, t: f64, m: &ModelShape, tp: u32) -> f64 {
    let tp = f64::from(tp);
    let h = m.hidden as f64;
    let heads = Heads::of(m, tp as u32);
    let q = heads.q * heads.dim;
    let kv = heads.kv * heads.dim;
    match name {
        "rms_norm" => 2.0 * t * h * 2.0,
        "qkv_rope_cache" => t * ((q + 2.0 * kv) + q + 2.0 * kv) * 2.0 + 8.0 * t,
        "silu_mul" => 3.0 * t * (m.ffn as f64 / tp) * 2.0,
        "embed_gather" | "gather_rows" => 2.0 * t * h * 2.0 + 4.0 * t,
        "argmax" => t * (m.vocab as f64 / tp) * 2.0 + 4.0 * t,
        _ => 0.0,
    }
}

/// `(k, n)` of each GEMM of model `m` on one of `tp` GPUs.
pub fn gemm_shape(name: &str, m: &ModelShape, tp: u32) -> (f64, f64) {
    let tp = f64::from(tp);
    let h = m.hidden as f64;
    let heads = Heads::of(m, tp as u32);
    let ffn = m.ffn as f64 / tp;
    match name {
        "qkv" => (h, (heads.q + 2.0 * heads.kv) * heads.dim),
        "o" => (heads.q * heads.dim, h),
        "gate_up" => (h, 2.0 * ffn),
        "down" => (ffn, h),
        _ => (h, m.vocab as f64 / tp),
    }
}

/// A step's kernel time by family (seconds, whole model) and its host cost.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Priced {
    /// qkv, o, gate_up and down.
    pub gemm_s: f64,
    /// LM head.
    pub lm_head_s: f64,
    /// Prefill attention.
    pub prefill_attn_s: f64,
    /// Decode attention.
    pub decode_attn_s: f64,
    /// Element-wise kernels.
    pub elementwise_s: f64,
    /// The host's share ([`StepOverhead`]).
    pub host_s: f64,
    /// Rows through the GEMMs (padding and graph buckets included).
    pub rows: f64,
    /// Replayed from a decode graph.
    pub graph: bool,
}

impl Priced {
    /// Kernel time before [`StepOverhead::gpu_scale`].
    pub fn kernels_s(&self) -> f64 {
        self.gemm_s + self.lm_head_s + self.prefill_attn_s + self.decode_attn_s + self.elementwise_s
    }
}

/// Where a step runs: the GPU's peaks, the model and its split.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Dense bf16 peak, FLOP/s.
    pub peak: f64,
    /// Memory bandwidth, bytes/s.
    pub bw: f64,
    /// The model.
    pub model: &'a ModelShape,
    /// Tensor-parallel degree.
    pub tp: u32,
    /// KV block size of the cache, tokens.
    pub block: u32,
}

impl<'a> Target<'a> {
    /// `model` split over `tp` GPUs of `hw`, on a cache of `block`-token blocks.
    pub fn on(hw: &crate::Hardware, model: &'a ModelShape, tp: u32, block: u32) -> Self {
        Self {
            peak: hw.peak_flops,
            bw: hw.mem_bw,
            model,
            tp,
            block,
        }
    }
}

impl Calibration {
    /// Reads a calibration file.
    ///
    /// # Errors
    /// [`CalibrationError`] naming the file and what is wrong with it.
    pub fn read(path: &std::path::Path) -> Result<Self, CalibrationError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| CalibrationError::Io {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text).map_err(|message| CalibrationError::Parse {
            path: shown,
            message,
        })
    }

    /// Parses and checks a calibration (every curve the pricing needs present).
    ///
    /// # Errors
    /// A message naming the bad field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let cal: Calibration = serde_json::from_str(text).map_err(|e| e.to_string())?;
        if cal.schema != CALIBRATION_SCHEMA {
            return Err(format!(
                "field `schema` is {} but this fuselab reads schema {CALIBRATION_SCHEMA}",
                cal.schema
            ));
        }
        for g in GEMMS {
            if !cal.gemm.contains_key(g) {
                return Err(format!("field `gemm` has no curve `{g}`"));
            }
        }
        for e in ELEMENTWISE {
            if !cal.elementwise.contains_key(e) {
                return Err(format!("field `elementwise` has no curve `{e}`"));
            }
        }
        for p in DECODE_PATHS {
            if !cal.decode_attn.contains_key(p) {
                return Err(format!("field `decode_attn` has no curve `{p}`"));
            }
        }
        Ok(cal)
    }

    /// The measured H200 calibration shipped with fuselab.
    pub fn default_h200() -> &'static Calibration {
        static CAL: OnceLock<Calibration> = OnceLock::new();
        CAL.get_or_init(|| {
            Calibration::parse(DEFAULT_FILE).unwrap_or_else(|e| {
                panic!("the embedded calibration is broken (a build defect): {e}")
            })
        })
    }

    fn corrected(&self, key: &str, x: &[f64]) -> f64 {
        self.corrections.get(key).map_or(1.0, |c| c.factor(x))
    }

    /// Seconds of the GEMM `name` over `rows` rows of `[k → n]`.
    pub fn gemm_s(&self, name: &str, rows: f64, k: f64, n: f64, peak: f64, bw: f64) -> f64 {
        let (f, b) = gemm_work(rows, k, n);
        self.gemm[name].time(f, b, peak, bw) * self.corrected(gemm_key(name), &rows_features(rows))
    }

    /// Seconds of one prefill-attention call over `chunks`.
    pub fn prefill_s(&self, chunks: &[(f64, f64)], h: Heads, peak: f64, bw: f64) -> f64 {
        self.prefill_attn.time(chunks, h, peak, bw)
            * self.corrected("prefill_attn", &prefill_features(chunks))
    }

    /// Seconds of one decode-attention call on `path` (`eager`, `graph`);
    /// `resident`: its KV is still in L2 from a launch just before (the
    /// sweep's small shapes; never in a step, where every layer reads its own).
    pub fn decode_s(
        &self,
        path: &str,
        rows: f64,
        kv_tokens: f64,
        h: Heads,
        bw: f64,
        resident: bool,
    ) -> f64 {
        self.decode_attn[path].time(rows, kv_tokens * h.kv_bytes(), bw)
            * self.corrected(
                decode_key(path),
                &decode_features(rows, kv_tokens, resident),
            )
    }

    /// Seconds of the element-wise kernel `name` over `rows` rows moving
    /// `bytes` (its input is the previous kernel's output: L2-resident when
    /// it fits).
    pub fn elementwise_s(&self, name: &str, rows: f64, bytes: f64, bw: f64) -> f64 {
        let resident = bytes < self.l2_bytes as f64;
        self.elementwise[name].time(bytes, bw)
            * self.corrected(elementwise_key(name), &elementwise_features(rows, resident))
    }

    /// The attention factor of a cache of `block`-token blocks.
    pub fn block_factor(&self, block: u32) -> f64 {
        self.block_factor.get(&block).copied().unwrap_or(1.0)
    }

    /// Prices one step of `batch` on `target` as the CUDA backend runs it
    /// (module docs). `graphs`: whether decode-only steps replay CUDA graphs.
    pub fn price(&self, batch: &ForwardBatch, target: Target<'_>, graphs: bool) -> Priced {
        let m = target.model;
        let (peak, bw) = (target.peak, target.bw);
        let layers = m.n_layers as f64;
        let heads = Heads::of(m, target.tp);
        let mut out = Priced::default();
        if batch.entries.is_empty() {
            return out;
        }
        let real: u32 = batch.entries.iter().map(|e| e.n_tokens).sum();
        let mut chunks = Vec::new();
        let (mut dec_rows, mut dec_kv) = (0.0, 0.0);
        let mut sampled = 0.0;
        for e in &batch.entries {
            if e.n_tokens == 0 {
                continue;
            }
            if e.is_decode {
                let n = f64::from(e.n_tokens);
                dec_rows += n;
                // Row j of a verify entry attends start + j + 1 positions.
                dec_kv += n * f64::from(e.start_pos) + n * (n + 1.0) / 2.0;
                sampled += n;
            } else {
                chunks.push((f64::from(e.n_tokens), f64::from(e.start_pos)));
                if e.sample {
                    sampled += 1.0;
                }
            }
        }
        let mut rows = match batch.shape {
            BatchShape::Ragged => f64::from(real),
            BatchShape::Padded { rows, row_len } => {
                f64::from(real).max(f64::from(rows) * f64::from(row_len))
            }
        };
        out.graph = graphs && chunks.is_empty() && dec_rows > 0.0;
        if out.graph {
            match GRAPH_BUCKETS.iter().find(|&&b| f64::from(b) >= rows) {
                Some(&b) => {
                    rows = f64::from(b);
                    sampled = rows;
                }
                None => out.graph = false,
            }
        }
        out.rows = rows;
        let mut gemm = 0.0;
        for name in ["qkv", "o", "gate_up", "down"] {
            let (k, n) = gemm_shape(name, m, target.tp);
            gemm += self.gemm_s(name, rows, k, n, peak, bw);
        }
        out.gemm_s = layers * gemm;
        let ew = |name: &str, t: f64| {
            self.elementwise_s(name, t, elementwise_bytes(name, t, m, target.tp), bw)
        };
        out.elementwise_s = layers
            * (2.0 * ew("rms_norm", rows) + ew("qkv_rope_cache", rows) + ew("silu_mul", rows))
            + ew("embed_gather", rows);
        if sampled > 0.0 {
            let (k, n) = gemm_shape("lm_head", m, target.tp);
            out.lm_head_s = self.gemm_s("lm_head", sampled, k, n, peak, bw);
            out.elementwise_s += ew("rms_norm", sampled) + ew("argmax", sampled);
            if !out.graph {
                out.elementwise_s += ew("gather_rows", sampled);
            }
        }
        let block = self.block_factor(target.block);
        if !chunks.is_empty() {
            out.prefill_attn_s = layers * block * self.prefill_s(&chunks, heads, peak, bw);
        }
        if dec_rows > 0.0 {
            let path = if out.graph { "graph" } else { "eager" };
            let attn_rows = if out.graph { rows } else { dec_rows };
            out.decode_attn_s =
                layers * block * self.decode_s(path, attn_rows, dec_kv, heads, bw, false);
        }
        let s = &self.step;
        let entries = batch.entries.iter().filter(|e| e.n_tokens > 0).count() as f64;
        out.host_s = if out.graph { s.graph_s } else { s.eager_s } + s.per_entry_s * entries;
        out
    }

    /// Seconds of one step (`gpu_scale · kernels + host`).
    pub fn step_s(&self, batch: &ForwardBatch, target: Target<'_>, graphs: bool) -> f64 {
        let p = self.price(batch, target, graphs);
        self.step.gpu_scale * p.kernels_s() + p.host_s
    }
}
