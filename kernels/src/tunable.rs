//! Kernels with a configuration space, for kernel-tuning campaigns
//! (`fuselab tune --kernel NAME --device cpu`).
//!
//! A [`TunableKernel`] names its knobs in the tuner's space syntax
//! ([`TunableKernel::space`]), takes the shapes to tune at
//! ([`TunableKernel::parse_shape`], weighted), and evaluates one
//! configuration ([`TunableKernel::evaluate`]): on every shape it checks the
//! kernel's output against the f64 reference (a wrong result is an
//! [`Evaluation::Wrong`], an invalid configuration an
//! [`Evaluation::Invalid`]: infeasible trials, never a crash) and times it
//! with the method of `fuselab kernels` — the median over repeats of `N`
//! back-to-back calls. The CPU kernels run here; the CUDA kernels (the wgmma
//! prefill kernel's tiles, warpgroups, stages and grid; the decode kernel's
//! warps, stages and splits) run through [`crate::cuda::tune`], one module
//! compiled per configuration. An [`Evaluator`] holds what a campaign keeps
//! between trials (the GPU, compiled modules, inputs and references).
//!
//! A campaign's result is a [`TuningTable`] entry (JSON, keyed by device,
//! driver, kernel and shape bucket, with the shapes it was tuned at); the CPU
//! and CUDA backends load a table at start-up (`--tuning-table FILE`) and
//! fall back to the hand-picked defaults for kernels and shapes it does not
//! cover.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::KernelError;
use crate::cpu::attention::{FlashConfig, SeqChunk, flash_attention, naive_attention};
use crate::cpu::decode::{DecodeSeq, paged_decode_attention};
use crate::cpu::paged::{AttnShape, PagedKv};
use crate::cuda::tune::{CudaKernel, CudaTrials};

/// Back-to-back calls timed together.
const CALLS: usize = 8;

/// Timed repeats of [`CALLS`] calls; the median counts.
const REPEATS: usize = 5;

/// Largest relative error (max |Δ| over max |reference|) a correct kernel shows.
pub const TOLERANCE: f32 = 1e-4;

/// Block size of the paged KV cache the evaluations build.
const BLOCK: usize = 16;

/// The kernels a campaign can tune.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TunableKernel {
    /// CPU paged decode attention (split-KV); knob `splits`.
    CpuDecodeAttention,
    /// CPU ragged causal flash attention; knobs `q_tile`, `kv_tile`.
    CpuPrefillAttention,
    /// CUDA paged decode attention; knobs `splits`, `warps`, `stages`.
    CudaDecodeAttention,
    /// CUDA wgmma prefill attention; knobs `warpgroups`, `kv_tile`, `stages`,
    /// `min_blocks`, `paired`.
    CudaPrefillAttention,
}

/// One shape a kernel is tuned at.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelShape {
    /// Decode: sequences; prefill: 1.
    pub batch: usize,
    /// Query tokens per sequence (decode: 1).
    pub q_len: usize,
    /// Positions attended, the query's included.
    pub ctx: usize,
    /// Heads (query, KV) and head size.
    pub heads: AttnShape,
    /// Weight of the shape in the campaign's objective (how often it occurs).
    pub weight: f64,
}

impl fmt::Display for KernelShape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.q_len == 1 {
            write!(f, "batch={},ctx={}", self.batch, self.ctx)?;
        } else if self.batch == 1 {
            write!(f, "q={},ctx={}", self.q_len, self.ctx)?;
        } else {
            write!(f, "batch={},q={},ctx={}", self.batch, self.q_len, self.ctx)?;
        }
        write!(
            f,
            ",heads={}/{}x{},weight={}",
            self.heads.n_heads, self.heads.n_kv_heads, self.heads.head_dim, self.weight
        )
    }
}

/// What one configuration did.
#[derive(Clone, Debug, PartialEq)]
pub enum Evaluation {
    /// Correct on every shape: the weighted mean time per call, ms, and per shape (ms, error).
    Timed {
        /// Σ weight · ms / Σ weight.
        ms: f64,
        /// Per shape: median ms per call and the relative error.
        per_shape: Vec<(f64, f32)>,
    },
    /// The kernel refused the configuration (e.g. a zero tile).
    Invalid(String),
    /// The result is wrong on a shape.
    Wrong(String),
}

impl Evaluation {
    /// [`Evaluation::Timed`] of per-shape results: the weighted mean time.
    pub(crate) fn timed(shapes: &[KernelShape], per_shape: Vec<(f64, f32)>) -> Self {
        let total: f64 = shapes.iter().map(|s| s.weight).sum();
        let ms = shapes
            .iter()
            .zip(&per_shape)
            .map(|(s, (ms, _))| s.weight * ms)
            .sum::<f64>()
            / total.max(f64::MIN_POSITIVE);
        Self::Timed { ms, per_shape }
    }
}

/// Makes a configuration's results wrong on purpose (a test knob): when the
/// configuration has `knob = value`, the output is corrupted before the check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    /// The knob.
    pub knob: String,
    /// Its value.
    pub value: i64,
}

impl Fault {
    /// Parses `KNOB=VALUE`.
    ///
    /// # Errors
    /// [`KernelError::Config`] naming the expected form.
    pub fn parse(s: &str) -> Result<Self, KernelError> {
        let (k, v) = s.split_once('=').ok_or_else(|| {
            KernelError::Config(format!("`{s}` is not KNOB=VALUE (e.g. splits=4)"))
        })?;
        let value = v
            .trim()
            .parse()
            .map_err(|_| KernelError::Config(format!("`{v}` is not a whole number")))?;
        Ok(Self {
            knob: k.trim().into(),
            value,
        })
    }
}

/// Version of the tuning-table format.
pub const TUNING_TABLE_SCHEMA: u32 = 1;

/// Tuned kernel configurations, as `fuselab tune --kernel` writes them.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningTable {
    /// [`TUNING_TABLE_SCHEMA`].
    pub schema: u32,
    /// One entry per (device, kernel).
    pub entries: Vec<TuningEntry>,
}

/// One kernel's tuned configuration on one device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TuningEntry {
    /// The device it was measured on (the CPU model, or the GPU's name).
    pub device: String,
    /// The driver, for GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<String>,
    /// The kernel (`decode_attention`, `prefill_attention`).
    pub kernel: String,
    /// The shapes the entry applies to; none: every shape.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket: Option<ShapeBucket>,
    /// The shapes it was tuned at (with their weights).
    pub shapes: Vec<String>,
    /// The knobs.
    pub config: BTreeMap<String, i64>,
    /// Its weighted time per call, ms.
    pub ms: f64,
    /// The hand-picked default's, ms, measured in the same campaign.
    pub default_ms: Option<f64>,
}

/// The shapes a tuned configuration applies to: `dim` in `min..=max`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShapeBucket {
    /// `batch` (decode: sequences in the step) or `q_len` (prefill: the step's
    /// longest new-token count).
    pub dim: String,
    /// Smallest value, inclusive.
    pub min: usize,
    /// Largest value, inclusive.
    pub max: usize,
}

impl ShapeBucket {
    /// The bucket of a campaign's `shapes` for `kernel`: from the power of two
    /// below the smallest (exclusive) to the power of two at or above the
    /// largest, in the kernel's dimension.
    pub fn of(kernel: TunableKernel, shapes: &[KernelShape]) -> Option<Self> {
        let decode = matches!(
            kernel,
            TunableKernel::CpuDecodeAttention | TunableKernel::CudaDecodeAttention
        );
        let dim = |s: &KernelShape| if decode { s.batch } else { s.q_len };
        let lo = shapes.iter().map(dim).min()?;
        let hi = shapes.iter().map(dim).max()?;
        let below = if lo <= 1 {
            0
        } else {
            (lo - 1).next_power_of_two() / 2
        };
        Some(Self {
            dim: if decode { "batch" } else { "q_len" }.into(),
            min: below + 1,
            max: hi.next_power_of_two(),
        })
    }
}

impl TuningTable {
    /// Reads a table.
    ///
    /// # Errors
    /// [`KernelError::Config`] naming the file and what is wrong.
    pub fn load(path: &Path) -> Result<Self, KernelError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| KernelError::Config(format!("cannot read {}: {e}", path.display())))?;
        let t: Self = serde_json::from_str(&text).map_err(|e| {
            KernelError::Config(format!("{} is not a tuning table: {e}", path.display()))
        })?;
        if t.schema != TUNING_TABLE_SCHEMA {
            return Err(KernelError::Config(format!(
                "{} has schema {}, this fuselab reads {TUNING_TABLE_SCHEMA}",
                path.display(),
                t.schema
            )));
        }
        Ok(t)
    }

    /// Writes the table (pretty JSON).
    ///
    /// # Errors
    /// [`KernelError::Config`] naming the file.
    pub fn save(&self, path: &Path) -> Result<(), KernelError> {
        let text =
            serde_json::to_string_pretty(self).map_err(|e| KernelError::Config(e.to_string()))?;
        std::fs::write(path, text + "\n")
            .map_err(|e| KernelError::Config(format!("cannot write {}: {e}", path.display())))
    }

    /// The entry of `kernel` on `device`.
    pub fn lookup(&self, device: &str, kernel: &str) -> Option<&TuningEntry> {
        self.entries
            .iter()
            .find(|e| e.device == device && e.kernel == kernel)
    }

    /// Adds `entry`, replacing the one of the same device, driver, kernel and bucket.
    pub fn insert(&mut self, entry: TuningEntry) {
        self.entries.retain(|e| {
            !(e.device == entry.device
                && e.driver == entry.driver
                && e.kernel == entry.kernel
                && e.bucket == entry.bucket)
        });
        self.entries.push(entry);
    }
}

/// What a kernel campaign evaluates with: the kernel, and for a CUDA kernel
/// the GPU with everything kept between trials ([`CudaTrials`]).
#[derive(Debug)]
pub struct Evaluator {
    kernel: TunableKernel,
    cuda: Option<std::sync::Mutex<CudaTrials>>,
}

impl Evaluator {
    /// The kernel.
    pub fn kernel(&self) -> TunableKernel {
        self.kernel
    }

    /// Checks and times `config` on every shape (see [`TunableKernel::evaluate`]).
    pub fn evaluate(
        &self,
        config: &[(String, i64)],
        shapes: &[KernelShape],
        fault: Option<&Fault>,
        seed: u64,
    ) -> Evaluation {
        match &self.cuda {
            None => self.kernel.evaluate(config, shapes, fault, seed),
            Some(c) => {
                let knobs: BTreeMap<String, i64> = config.iter().cloned().collect();
                match c.lock() {
                    Ok(mut t) => t.evaluate(Some(&knobs), shapes, fault, seed),
                    Err(_) => Evaluation::Invalid("the GPU state was poisoned by a panic".into()),
                }
            }
        }
    }

    /// Checks and times what the engine runs without a tuning table: the CPU
    /// kernels' default configuration; on CUDA the built-in path (the default
    /// prefill tile, the decode kernel with the device's split heuristic).
    pub fn evaluate_default(&self, shapes: &[KernelShape], seed: u64) -> Evaluation {
        match &self.cuda {
            None => self
                .kernel
                .evaluate(&self.kernel.default_config(), shapes, None, seed),
            Some(c) => match c.lock() {
                Ok(mut t) => t.evaluate(None, shapes, None, seed),
                Err(_) => Evaluation::Invalid("the GPU state was poisoned by a panic".into()),
            },
        }
    }

    /// The GPU's name (the table's key) and driver; `None` for CPU kernels
    /// (the caller names the host CPU as its run folders do).
    pub fn gpu(&self) -> Option<(String, Option<String>)> {
        let t = self.cuda.as_ref()?.lock().ok()?;
        let info = t.device().info();
        Some((info.name.clone(), info.driver_release.clone()))
    }

    /// Modules compiled so far (CUDA; 0 on the CPU).
    pub fn compiles(&self) -> usize {
        self.cuda
            .as_ref()
            .and_then(|c| c.lock().ok().map(|t| t.compiles()))
            .unwrap_or(0)
    }
}

/// A small deterministic generator for the inputs (values in [-1, 1)).
fn fill(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed ^ 0x9e37_79b9_7f4a_7c15;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn rel_error(want: &[f32], got: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    want.iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

fn knob(config: &[(String, i64)], name: &str) -> Result<usize, String> {
    let v = config
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("the configuration has no `{name}`"))?;
    usize::try_from(v).map_err(|_| format!("{name} = {v} is negative"))
}

impl TunableKernel {
    /// The kernel named `name` on `device`.
    ///
    /// # Errors
    /// [`KernelError::Config`] listing the kernels, or saying that the CUDA
    /// kernels cannot be tuned yet.
    pub fn parse(name: &str, device: &str) -> Result<Self, KernelError> {
        match (name, device) {
            ("decode_attention", "cpu") => Ok(Self::CpuDecodeAttention),
            ("prefill_attention", "cpu") => Ok(Self::CpuPrefillAttention),
            ("decode_attention", "cuda") => Ok(Self::CudaDecodeAttention),
            ("prefill_attention", "cuda") => Ok(Self::CudaPrefillAttention),
            (_, "cpu" | "cuda") => Err(KernelError::Config(format!(
                "unknown kernel `{name}`; the tunable kernels are decode_attention and prefill_attention"
            ))),
            _ => Err(KernelError::Config(format!(
                "unknown device `{device}`; use cpu or cuda"
            ))),
        }
    }

    /// The kernel's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::CpuDecodeAttention | Self::CudaDecodeAttention => "decode_attention",
            Self::CpuPrefillAttention | Self::CudaPrefillAttention => "prefill_attention",
        }
    }

    /// `cpu` or `cuda`.
    pub fn device(self) -> &'static str {
        match self {
            Self::CpuDecodeAttention | Self::CpuPrefillAttention => "cpu",
            Self::CudaDecodeAttention | Self::CudaPrefillAttention => "cuda",
        }
    }

    fn cuda(self) -> Option<CudaKernel> {
        match self {
            Self::CudaDecodeAttention => Some(CudaKernel::Decode),
            Self::CudaPrefillAttention => Some(CudaKernel::Prefill),
            _ => None,
        }
    }

    /// What a campaign over this kernel evaluates with: for a CUDA kernel it
    /// opens the GPU.
    ///
    /// # Errors
    /// [`KernelError::Config`] saying why the GPU cannot be used.
    pub fn evaluator(self) -> Result<Evaluator, KernelError> {
        let cuda = self
            .cuda()
            .map(|k| {
                CudaTrials::new(k).map_err(|e| {
                    KernelError::Config(format!("cannot tune {} on the GPU: {e}", self.name()))
                })
            })
            .transpose()?;
        Ok(Evaluator {
            kernel: self,
            cuda: cuda.map(std::sync::Mutex::new),
        })
    }

    /// The configuration space, in the tuner's `--space` syntax.
    pub fn space(self) -> &'static str {
        match self {
            Self::CpuDecodeAttention => "splits=1..16",
            Self::CpuPrefillAttention => "q_tile=8..128:pow2,kv_tile=8..256:pow2",
            Self::CudaDecodeAttention => crate::cuda::tuned::DecodeConfig::SPACE,
            Self::CudaPrefillAttention => crate::cuda::tuned::PrefillConfig::SPACE,
        }
    }

    /// The hand-picked configuration the engine uses without a tuned one.
    /// (CUDA decode: 4 warps, 3 stages, one split; the engine's split
    /// heuristic depends on the shape, see [`Evaluator::evaluate_default`]).
    pub fn default_config(self) -> Vec<(String, i64)> {
        let d = FlashConfig::default();
        match self {
            Self::CpuDecodeAttention => vec![("splits".into(), 4)],
            Self::CpuPrefillAttention => vec![
                ("q_tile".into(), d.q_tile as i64),
                ("kv_tile".into(), d.kv_tile as i64),
            ],
            Self::CudaDecodeAttention => crate::cuda::tuned::DecodeConfig {
                warps: 4,
                stages: 3,
                splits: 1,
            }
            .knobs()
            .into_iter()
            .collect(),
            Self::CudaPrefillAttention => crate::cuda::tuned::PrefillConfig::default()
                .knobs()
                .into_iter()
                .collect(),
        }
    }

    /// Shapes to tune at when none are given.
    pub fn default_shapes(self) -> Vec<KernelShape> {
        let spec = match self {
            Self::CpuDecodeAttention => "batch=8,ctx=1024",
            Self::CpuPrefillAttention => "q=256,ctx=256",
            // h200-64: 64 sequences decoding at about 2600 + 64 positions; prefill
            // steps of about three 2600-token prompts.
            Self::CudaDecodeAttention => "batch=64,ctx=2664",
            Self::CudaPrefillAttention => "batch=3,q=2600,ctx=2600",
        };
        vec![self.parse_shape(spec).expect("the default shape parses")]
    }

    /// Parses a shape: decode `batch=B,ctx=C`, prefill `q=Q,ctx=C` (a chunk of
    /// Q tokens ending at position C; on CUDA also `batch=B` such chunks in
    /// one ragged call), each optionally with `heads=H/KV×D` (default
    /// 8/2×32, the `tiny` model's, on the CPU; 32/8×128, Llama-3-8B's, on
    /// CUDA) and `weight=W`.
    ///
    /// # Errors
    /// [`KernelError::Config`] naming the bad part.
    pub fn parse_shape(self, s: &str) -> Result<KernelShape, KernelError> {
        let bad = |what: String| {
            KernelError::Config(format!(
                "shape `{s}`: {what} (e.g. {})",
                match self {
                    Self::CpuDecodeAttention => "batch=8,ctx=1024,heads=8/2x32,weight=1",
                    Self::CpuPrefillAttention => "q=256,ctx=1024,heads=8/2x32,weight=1",
                    Self::CudaDecodeAttention => "batch=64,ctx=2664,heads=32/8x128,weight=1",
                    Self::CudaPrefillAttention => "batch=3,q=2600,ctx=2600,heads=32/8x128",
                }
            ))
        };
        let mut shape = KernelShape {
            batch: 1,
            q_len: 1,
            ctx: 0,
            heads: if self.cuda().is_some() {
                AttnShape {
                    n_heads: 32,
                    n_kv_heads: 8,
                    head_dim: 128,
                }
            } else {
                AttnShape {
                    n_heads: 8,
                    n_kv_heads: 2,
                    head_dim: 32,
                }
            },
            weight: 1.0,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| bad(format!("`{part}` is not NAME=VALUE")))?;
            let num = |v: &str| -> Result<usize, KernelError> {
                v.parse()
                    .ok()
                    .filter(|&n: &usize| n > 0)
                    .ok_or_else(|| bad(format!("{k} = `{v}` is not a whole number > 0")))
            };
            match (k, self) {
                (
                    "batch",
                    Self::CpuDecodeAttention
                    | Self::CudaDecodeAttention
                    | Self::CudaPrefillAttention,
                ) => shape.batch = num(v)?,
                ("q", Self::CpuPrefillAttention | Self::CudaPrefillAttention) => {
                    shape.q_len = num(v)?;
                }
                ("ctx", _) => shape.ctx = num(v)?,
                ("weight", _) => {
                    shape.weight = v
                        .parse()
                        .ok()
                        .filter(|w: &f64| w.is_finite() && *w > 0.0)
                        .ok_or_else(|| bad(format!("weight = `{v}` is not a number > 0")))?;
                }
                ("heads", _) => {
                    let (h, rest) = v
                        .split_once('/')
                        .ok_or_else(|| bad(format!("heads = `{v}` is not H/KVxD")))?;
                    let (kv, d) = rest
                        .split_once('x')
                        .ok_or_else(|| bad(format!("heads = `{v}` is not H/KVxD")))?;
                    shape.heads = AttnShape {
                        n_heads: num(h)?,
                        n_kv_heads: num(kv)?,
                        head_dim: num(d)?,
                    };
                    shape.heads.validate().map_err(|e| bad(e.to_string()))?;
                }
                _ => return Err(bad(format!("unknown part `{k}` for {}", self.name()))),
            }
        }
        if shape.ctx == 0 {
            return Err(bad("ctx is missing".into()));
        }
        if shape.q_len > shape.ctx {
            return Err(bad(format!(
                "q = {} exceeds ctx = {}",
                shape.q_len, shape.ctx
            )));
        }
        if self.cuda().is_some() {
            let h = shape.heads;
            if h.head_dim != crate::cuda::HEAD_DIM {
                return Err(bad(format!(
                    "heads of {} elements; the CUDA kernels take {}",
                    h.head_dim,
                    crate::cuda::HEAD_DIM
                )));
            }
            if h.n_heads / h.n_kv_heads > 8 {
                return Err(bad(format!(
                    "{} query heads per KV head; the CUDA kernels take at most 8",
                    h.n_heads / h.n_kv_heads
                )));
            }
        }
        Ok(shape)
    }

    /// Checks and times `config` of a CPU kernel on every shape; `fault`
    /// corrupts the output of the configuration it names (a test knob). CUDA
    /// kernels go through an [`Evaluator`] (this returns `Invalid` for them).
    pub fn evaluate(
        self,
        config: &[(String, i64)],
        shapes: &[KernelShape],
        fault: Option<&Fault>,
        seed: u64,
    ) -> Evaluation {
        if self.cuda().is_some() {
            return Evaluation::Invalid(format!(
                "the CUDA {} is evaluated through an Evaluator",
                self.name()
            ));
        }
        let mut per_shape = Vec::new();
        let broken =
            fault.is_some_and(|f| config.iter().any(|(k, v)| *k == f.knob && *v == f.value));
        for (i, shape) in shapes.iter().enumerate() {
            match self.evaluate_shape(config, shape, broken, seed ^ i as u64) {
                Ok(r) => per_shape.push(r),
                Err(e) => return e,
            }
        }
        Evaluation::timed(shapes, per_shape)
    }

    fn evaluate_shape(
        self,
        config: &[(String, i64)],
        shape: &KernelShape,
        broken: bool,
        seed: u64,
    ) -> Result<(f64, f32), Evaluation> {
        let invalid = |e: String| Evaluation::Invalid(e);
        let heads = shape.heads;
        let (qw, kw) = (heads.q_width(), heads.kv_width());
        let blocks = shape.ctx.div_ceil(BLOCK);
        let mut kv =
            PagedKv::new(BLOCK, blocks * shape.batch, kw).map_err(|e| invalid(e.to_string()))?;
        let tables: Vec<Vec<u32>> = (0..shape.batch)
            .map(|b| ((b * blocks) as u32..((b + 1) * blocks) as u32).collect())
            .collect();
        let mut kv_host = Vec::new();
        for (b, t) in tables.iter().enumerate() {
            let k = fill(shape.ctx * kw, seed ^ (2 * b as u64 + 1));
            let v = fill(shape.ctx * kw, seed ^ (2 * b as u64 + 2));
            kv.write(t, 0, &k, &v).map_err(|e| invalid(e.to_string()))?;
            kv_host.push((k, v));
        }
        let rows = shape.batch * shape.q_len;
        let q = fill(rows * qw, seed ^ 0xabc);
        let scale = 1.0 / (heads.head_dim as f32).sqrt();
        let start = shape.ctx - shape.q_len;
        let mut out = vec![0f32; rows * qw];
        let run = |out: &mut [f32]| -> Result<(), KernelError> {
            match self {
                Self::CpuDecodeAttention => {
                    let splits = knob(config, "splits").map_err(KernelError::Config)?;
                    let seqs: Vec<DecodeSeq<'_>> = tables
                        .iter()
                        .enumerate()
                        .map(|(b, t)| DecodeSeq {
                            q_row: b,
                            pos: shape.ctx - 1,
                            block_table: t,
                        })
                        .collect();
                    paged_decode_attention(&q, &kv, heads, &seqs, scale, splits, out)
                }
                Self::CpuPrefillAttention => {
                    let cfg = FlashConfig {
                        q_tile: knob(config, "q_tile").map_err(KernelError::Config)?,
                        kv_tile: knob(config, "kv_tile").map_err(KernelError::Config)?,
                        threads: 1,
                    };
                    let chunks = [SeqChunk {
                        q_row: 0,
                        start_pos: start,
                        n_tokens: shape.q_len,
                        block_table: &tables[0],
                    }];
                    flash_attention(&q, &kv, heads, &chunks, scale, cfg, out)
                }
                Self::CudaDecodeAttention | Self::CudaPrefillAttention => Err(KernelError::Config(
                    "a CUDA kernel has no CPU evaluation".into(),
                )),
            }
        };
        run(&mut out).map_err(|e| invalid(e.to_string()))?;
        if broken {
            out[0] += 1.0;
        }
        let mut want = Vec::with_capacity(rows * qw);
        for (b, (k, v)) in kv_host.iter().enumerate() {
            let qb = &q[b * shape.q_len * qw..(b + 1) * shape.q_len * qw];
            want.extend(
                naive_attention(qb, k, v, heads, start, scale)
                    .map_err(|e| invalid(e.to_string()))?,
            );
        }
        let err = rel_error(&want, &out);
        if err.is_nan() || err > TOLERANCE {
            return Err(Evaluation::Wrong(format!(
                "wrong result at {shape}: relative error {err:.2e} above {TOLERANCE:.0e}"
            )));
        }
        let mut samples = Vec::with_capacity(REPEATS);
        for _ in 0..REPEATS {
            let t0 = Instant::now();
            for _ in 0..CALLS {
                run(&mut out).map_err(|e| invalid(e.to_string()))?;
            }
            samples.push(t0.elapsed().as_secs_f64() * 1e3 / CALLS as f64);
        }
        samples.sort_by(f64::total_cmp);
        Ok((samples[REPEATS / 2], err))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_config_of_the_small_shapes_is_correct_and_a_fault_is_wrong() {
        let k = TunableKernel::CpuDecodeAttention;
        let shapes = vec![k.parse_shape("batch=2,ctx=100").unwrap()];
        for splits in [1, 3, 16] {
            let cfg = vec![("splits".to_string(), splits)];
            assert!(
                matches!(k.evaluate(&cfg, &shapes, None, 1), Evaluation::Timed { .. }),
                "splits={splits}"
            );
        }
        let fault = Fault::parse("splits=3").unwrap();
        let cfg = vec![("splits".to_string(), 3)];
        match k.evaluate(&cfg, &shapes, Some(&fault), 1) {
            Evaluation::Wrong(m) => assert!(m.contains("relative error"), "{m}"),
            other => panic!("{other:?}"),
        }
        let zero = vec![("splits".to_string(), 0)];
        assert!(matches!(
            k.evaluate(&zero, &shapes, None, 1),
            Evaluation::Invalid(_)
        ));
        let p = TunableKernel::CpuPrefillAttention;
        let shapes = vec![p.parse_shape("q=40,ctx=90,heads=4/2x16").unwrap()];
        let cfg = vec![("q_tile".to_string(), 8), ("kv_tile".to_string(), 32)];
        assert!(matches!(
            p.evaluate(&cfg, &shapes, None, 2),
            Evaluation::Timed { .. }
        ));
    }

    #[test]
    fn a_tuning_table_round_trips_and_refuses_unknown_fields() {
        let dir = std::env::temp_dir().join(format!("fuselab-tt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.json");
        let mut t = TuningTable {
            schema: TUNING_TABLE_SCHEMA,
            entries: Vec::new(),
        };
        let entry = |splits| TuningEntry {
            device: "cpu-x".into(),
            driver: None,
            bucket: None,
            kernel: "decode_attention".into(),
            shapes: vec!["batch=8,ctx=1024".into()],
            config: BTreeMap::from([("splits".to_string(), splits)]),
            ms: 1.0,
            default_ms: Some(1.5),
        };
        t.insert(entry(2));
        t.insert(entry(3));
        assert_eq!(t.entries.len(), 1, "the same device and kernel replace");
        t.save(&path).unwrap();
        let back = TuningTable::load(&path).unwrap();
        assert_eq!(
            back.lookup("cpu-x", "decode_attention").unwrap().config["splits"],
            3
        );
        assert!(back.lookup("cpu-y", "decode_attention").is_none());
        std::fs::write(&path, r#"{"schema":1,"entries":[],"extra":1}"#).unwrap();
        let e = TuningTable::load(&path).unwrap_err().to_string();
        assert!(
            e.contains("not a tuning table") && e.contains("extra"),
            "{e}"
        );
        std::fs::write(&path, r#"{"schema":9,"entries":[]}"#).unwrap();
        assert!(
            TuningTable::load(&path)
                .unwrap_err()
                .to_string()
                .contains("schema 9")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn cuda_shapes_default_to_llama3_8b_heads_and_buckets_cover_the_shapes() {
        let p = TunableKernel::parse("prefill_attention", "cuda").unwrap();
        let s = p.parse_shape("batch=3,q=2600,ctx=2600").unwrap();
        assert_eq!(
            (s.batch, s.q_len, s.heads.n_heads, s.heads.head_dim),
            (3, 2600, 32, 128)
        );
        assert_eq!(
            s.to_string(),
            "batch=3,q=2600,ctx=2600,heads=32/8x128,weight=1"
        );
        assert!(
            p.parse_shape("q=9,ctx=9,heads=8/2x32")
                .unwrap_err()
                .to_string()
                .contains("take 128")
        );
        assert!(
            p.parse_shape("q=9,ctx=9,heads=32/2x128")
                .unwrap_err()
                .to_string()
                .contains("at most 8")
        );
        let shapes: Vec<_> = ["batch=2,q=1024,ctx=1024", "batch=3,q=2688,ctx=2688"]
            .iter()
            .map(|s| p.parse_shape(s).unwrap())
            .collect();
        let b = ShapeBucket::of(p, &shapes).unwrap();
        assert_eq!((b.dim.as_str(), b.min, b.max), ("q_len", 513, 4096));
        let d = TunableKernel::parse("decode_attention", "cuda").unwrap();
        let b = ShapeBucket::of(d, &[d.parse_shape("batch=64,ctx=2600").unwrap()]).unwrap();
        assert_eq!((b.dim.as_str(), b.min, b.max), ("batch", 33, 64));
        let b = ShapeBucket::of(d, &[d.parse_shape("batch=1,ctx=9").unwrap()]).unwrap();
        assert_eq!((b.min, b.max), (1, 1));
        assert_eq!(d.space(), crate::cuda::tuned::DecodeConfig::SPACE);
        assert!(matches!(
            d.evaluate(&d.default_config(), &[], None, 1),
            Evaluation::Invalid(_)
        ));
    }

    #[test]
    fn bad_names_and_shapes_say_what_is_wrong() {
        let e = TunableKernel::parse("gemm", "cpu").unwrap_err().to_string();
        assert!(e.contains("decode_attention and prefill_attention"), "{e}");
        let e = TunableKernel::parse("decode_attention", "tpu")
            .unwrap_err()
            .to_string();
        assert!(e.contains("use cpu or cuda"), "{e}");
        let k = TunableKernel::CpuDecodeAttention;
        for (s, want) in [
            ("batch=8", "ctx is missing"),
            ("batch=0,ctx=9", "not a whole number > 0"),
            ("q=3,ctx=9", "unknown part `q`"),
            ("batch=1,ctx=9,heads=8x2", "not H/KVxD"),
            ("batch=1,ctx=9,weight=-1", "weight"),
        ] {
            let e = k.parse_shape(s).unwrap_err().to_string();
            assert!(e.contains(want), "{s}: {e}");
        }
        assert!(Fault::parse("splits").is_err() && Fault::parse("splits=x").is_err());
    }
}
