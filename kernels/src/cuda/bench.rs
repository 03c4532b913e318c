//! `fuselab kernels`: correctness checks against the CPU references, then
//! timings at the Llama-3-8B shapes the engine runs, against measured ceilings.
//!
//! # Method
//!
//! * **Timing.** Every row is [`LaunchTimer::time`]: a few warm-up calls, then
//!   R samples (`--repeats`, default 10; 5 with `--quick`), each N back-to-back
//!   launches (`--launches`, default and minimum 32) between two CUDA events,
//!   divided by N. Before each sample the stream is held busy by read-probe
//!   launches (1.5× the host's measured enqueue time of the N launches), so the
//!   host has queued all N before the first starts and the events bracket GPU
//!   work only, not host launch latency (one launch between two events, as
//!   before, made every T = 64 row mostly launch latency). Rows report the
//!   median and the p10 and p90 of the R samples; a row whose host could not
//!   keep ahead says so (`host-limited` samples).
//! * **Cold weights.** GEMMs rotate over weight copies totalling ≥ 3× L2, so
//!   weights come from HBM, as in the engine.
//! * **Ceilings.** Read-bound kernels (decode attention, the probe itself) are
//!   held to the read-only probe ([`CudaDevice::read_probe`]: a grid-stride
//!   16-byte read of 4 GiB that writes one word per block); the other memory
//!   rows to the float4 copy (bytes read plus bytes written); FLOP rows to the
//!   cuBLAS bf16 GEMM of 8192³ (a measured ceiling, not the hardware peak).
//!   Causal attention counts `2·2·S²·H·D/2` FLOPs.
//! * **Shapes.** The fused qkv GEMM against the three GEMMs into the strided
//!   fused buffer (the engine's choice at T ≥ 2048), the o and down GEMMs
//!   accumulating into the residual (β = 1), the fused RoPE + KV write, ragged
//!   3 × 2560 prefill, an 8192-token prompt as chunks after their prefix
//!   (summed, against one pass), and decode at batch 64 with uniform and mixed
//!   (N(2600, 780), seeded) contexts.
//! * **Sustained** (`--sustained SECONDS`): compute-bound rows (GEMMs at
//!   T ≥ 2048, prefill attention at S ≥ 8192) run back to back for that long,
//!   with the median SM clock and board power sampled through NVML every 20 ms
//!   ([`super::nvml`]); without NVML the rates are still given, with a note.
//! * **Checks** run first, on NaN-poisoned outputs against f64 references;
//!   a kernel that fails is not timed.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use half::bf16;

use super::nvml::{Nvml, Sampler};
use super::reference::{self as reference, AttnGeometry};
use super::rng::SplitMix;
use super::{
    CudaDevice, CudaError, DecodeWorkspace, GemmOut, GemmTuning, HEAD_DIM, LaunchTimer,
    PagedAttention, PrefillTile, SKINNY_MAX_TOKENS, SKINNY_SPLITS, SkinnyPlan, TimeStats,
};

/// Llama-3-8B hidden size.
pub const HIDDEN: usize = 4096;
/// Llama-3-8B query heads.
pub const Q_HEADS: usize = 32;
/// Llama-3-8B KV heads.
pub const KV_HEADS: usize = 8;
/// Llama-3-8B FFN width.
pub const FFN: usize = 14336;
/// Tokens per KV-cache block in the benchmarks.
pub const BLOCK_SIZE: usize = 16;
const EPS: f32 = 1e-5;
const THETA: f64 = 500_000.0;
/// Relative-error bound for bf16 outputs.
pub const BF16_TOL: f64 = 1e-2;
/// Width of the fused qkv projection's output.
pub const QKV_WIDTH: usize = (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM;

/// The engine's linear layers: (name, in features, out features).
pub const LINEARS: [(&str, usize, usize); 4] = [
    ("qkv", HIDDEN, QKV_WIDTH),
    ("o", Q_HEADS * HEAD_DIM, HIDDEN),
    ("gate_up", HIDDEN, 2 * FFN),
    ("down", FFN, HIDDEN),
];
/// The linear layers whose output the engine adds into the residual (`gemm_acc`).
pub const ACC_LINEARS: [(&str, usize, usize); 2] =
    [("o", Q_HEADS * HEAD_DIM, HIDDEN), ("down", FFN, HIDDEN)];
/// Token counts the GEMMs are timed at.
pub const GEMM_TOKENS: [usize; 4] = [64, 512, 2048, 8192];
/// Causal prefill lengths.
pub const PREFILL_LENS: [usize; 3] = [2048, 8192, 16384];
/// Ragged prefill: this many sequences of [`RAGGED_LEN`] new tokens in one call.
pub const RAGGED_SEQS: usize = 3;
/// Ragged prefill: new tokens per sequence.
pub const RAGGED_LEN: usize = 2560;
/// The prompt cut into chunks after their prefix.
pub const CHUNK_PROMPT: usize = 8192;
/// Chunk sizes of [`CHUNK_PROMPT`] (the last is one pass).
pub const CHUNK_SIZES: [usize; 3] = [512, 2048, 8192];
/// Decode batch.
pub const DECODE_BATCH: usize = 64;
/// Launches per timed sample unless `--launches` says more.
pub const MIN_LAUNCHES: usize = 32;

/// What to run.
#[derive(Clone, Debug, Default)]
pub struct BenchOptions {
    /// Fewer shapes and repeats.
    pub quick: bool,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Rates measured elsewhere (PyTorch) at the same shapes, to print ratios.
    pub baseline: Baseline,
    /// Time only the kernels whose name starts with this (checks always run).
    pub only: Option<String>,
    /// Back-to-back launches per timed sample (0: [`MIN_LAUNCHES`]; at least that).
    pub launches: usize,
    /// Timed samples per row (0: 10, or 5 with `quick`).
    pub repeats: usize,
    /// Seconds each compute-bound row also runs back to back, with NVML clock and power.
    pub sustained: Option<f64>,
    /// A tuning table (`fuselab tune --kernel … --device cuda`): its kernels for
    /// this GPU get rows of their own ("(tuned)"), and the default rows say
    /// which configuration they ran.
    pub tuning: Option<crate::tunable::TuningTable>,
    /// Only the checks of fuselab's own kernels: no ceilings, no timed rows and no
    /// check that runs a cuBLAS GEMM, so that nothing but our kernels runs (e.g. under
    /// compute-sanitizer racecheck, which fails with a kernel filter and runs out of
    /// time on cuBLAS's kernels).
    pub own_checks_only: bool,
    /// The prefill tiles whose attention checks run (`None`: every tile the device has),
    /// so that a slow tool such as racecheck can take the tiles in parallel runs.
    pub check_tiles: Option<Vec<super::PrefillTile>>,
}

impl BenchOptions {
    /// Launches per sample: `launches`, at least [`MIN_LAUNCHES`].
    pub fn launches(&self) -> usize {
        self.launches.max(MIN_LAUNCHES)
    }

    /// Samples per row.
    pub fn repeats(&self) -> usize {
        match (self.repeats, self.quick) {
            (0, true) => 5,
            (0, false) => 10,
            (r, _) => r,
        }
    }
}

/// Reference rates by key, read from `key value` lines (as torch_baseline.py
/// writes them): `copy_gbs`, `read_gbs`, `gemm8192_tflops`, `sdpa_causal_{S}`,
/// `sdpa_ragged_3x2560`, `sdpa_decode_b64_c4096`, `linear_{name}_t{T}`,
/// `linear_qkv3_t{T}` (q, k, v as three GEMMs) and `linear_acc_{name}_t{T}`
/// (added into the output, β = 1).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Baseline(pub BTreeMap<String, f64>);

impl Baseline {
    /// Parses `key value` lines; blank lines and `#` comments are skipped.
    pub fn parse(text: &str) -> Result<Self, CudaError> {
        let mut map = BTreeMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut it = line.split_whitespace();
            let (Some(k), Some(v), None) = (it.next(), it.next(), it.next()) else {
                return Err(CudaError::invalid(
                    "baseline",
                    format!("line {}: expected `key value`, got `{line}`", i + 1),
                ));
            };
            let v: f64 = v.parse().map_err(|_| {
                CudaError::invalid("baseline", format!("line {}: `{v}` is not a number", i + 1))
            })?;
            map.insert(k.to_string(), v);
        }
        Ok(Self(map))
    }

    /// The rate under `key`.
    pub fn get(&self, key: &str) -> Option<f64> {
        self.0.get(key).copied()
    }
}

/// Unit of a row's rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// 10¹² floating-point operations per second.
    TflopS,
    /// 10⁹ bytes per second.
    GbS,
    /// 10⁹ floating-point operations per second (CPU rows).
    GflopS,
}

impl Unit {
    /// Display label.
    pub fn label(self) -> &'static str {
        match self {
            Unit::TflopS => "TFLOP/s",
            Unit::GbS => "GB/s",
            Unit::GflopS => "GFLOP/s",
        }
    }
}

/// What a row's rate is divided by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ceiling {
    /// The float4 copy (bytes read plus written): read-and-write kernels.
    Copy,
    /// The read-only probe: read-bound kernels.
    Read,
    /// cuBLAS bf16 GEMM of 8192³.
    Gemm,
}

impl Ceiling {
    /// Short label, as in the JSON (`copy`, `read`, `gemm8192`).
    pub fn label(self) -> &'static str {
        match self {
            Ceiling::Copy => "copy",
            Ceiling::Read => "read",
            Ceiling::Gemm => "gemm8192",
        }
    }
}

/// One correctness check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Kernel name.
    pub kernel: String,
    /// Shape checked.
    pub shape: String,
    /// `‖out − ref‖ / ‖ref‖` (worst row), or a count of differing elements
    /// for bit-exact checks (tolerance 0).
    pub rel_err: f64,
    /// Bound it must stay under.
    pub tolerance: f64,
}

impl Check {
    /// Whether the error is within tolerance (NaN fails).
    pub fn passed(&self) -> bool {
        self.rel_err <= self.tolerance
    }
}

/// A goal a row is held to.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// What the goal is, e.g. `>= 300 TFLOP/s`.
    pub goal: String,
    /// Whether the measurement meets it.
    pub met: bool,
}

/// One timed kernel at one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    /// Kernel name.
    pub kernel: String,
    /// Shape.
    pub shape: String,
    /// Median time per launch in microseconds.
    pub time_us: f64,
    /// 10th percentile of the per-launch sample times, µs.
    pub p10_us: f64,
    /// 90th percentile of the per-launch sample times, µs.
    pub p90_us: f64,
    /// Launches per sample.
    pub launches: usize,
    /// Samples.
    pub repeats: usize,
    /// Samples in which the host could not stay ahead of the GPU.
    pub host_limited: usize,
    /// Unit of `rate`.
    pub unit: Unit,
    /// Achieved rate (at the median time).
    pub rate: f64,
    /// Which ceiling `fraction` is of.
    pub ceiling: Ceiling,
    /// `rate` over the measured ceiling.
    pub fraction: f64,
    /// Baseline rate at the same shape, when given.
    pub baseline: Option<f64>,
    /// Goal this row is held to.
    pub target: Option<Target>,
}

/// A ratio between two measurements (e.g. chunked prefill over one pass).
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// What is compared.
    pub name: String,
    /// The ratio.
    pub ratio: f64,
    /// How to read it.
    pub detail: String,
}

/// A compute-bound row run back to back for a while (`--sustained`).
#[derive(Clone, Debug, PartialEq)]
pub struct Sustained {
    /// Kernel name.
    pub kernel: String,
    /// Shape.
    pub shape: String,
    /// GPU seconds measured.
    pub seconds: f64,
    /// Launches made.
    pub launches: usize,
    /// Rate over the whole run.
    pub rate: f64,
    /// Unit of the rates.
    pub unit: Unit,
    /// The same row's burst rate (median of the short samples), when timed.
    pub burst_rate: Option<f64>,
    /// Median SM clock during the run, MHz (NVML).
    pub sm_clock_mhz: Option<f64>,
    /// Median board power during the run, W (NVML).
    pub power_w: Option<f64>,
    /// NVML readings taken.
    pub nvml_samples: usize,
}

/// Everything one run measured.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// `cuda` or `cpu`.
    pub device_kind: String,
    /// Device name.
    pub device: String,
    /// Driver version (CUDA) or host description (CPU).
    pub driver: String,
    /// Compile target of the kernels.
    pub arch: String,
    /// How the rows were timed.
    pub method: String,
    /// Measured copy bandwidth, GB/s (read + write).
    pub copy_gbs: f64,
    /// Measured read-only bandwidth, GB/s.
    pub read_gbs: f64,
    /// Measured matrix ceiling, TFLOP/s.
    pub gemm_tflops: f64,
    /// Correctness checks, in order.
    pub checks: Vec<Check>,
    /// Timings, in order.
    pub rows: Vec<Row>,
    /// Ratios between rows.
    pub comparisons: Vec<Comparison>,
    /// Sustained runs.
    pub sustained: Vec<Sustained>,
    /// Remarks (skipped kernels, shapes reduced on CPU).
    pub notes: Vec<String>,
}

impl Report {
    /// An empty report for a device.
    fn new(kind: &str, device: String, driver: String, arch: String, method: String) -> Self {
        Self {
            device_kind: kind.into(),
            device,
            driver,
            arch,
            method,
            copy_gbs: 0.0,
            read_gbs: 0.0,
            gemm_tflops: 0.0,
            checks: Vec::new(),
            rows: Vec::new(),
            comparisons: Vec::new(),
            sustained: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether every correctness check passed.
    pub fn all_checks_passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    /// Rate of `flops` (or else of `bytes`) done in `ms`, with its unit and ceiling value.
    fn rate(&self, ms: f64, flops: Option<f64>, bytes: f64, ceiling: Ceiling) -> (Unit, f64, f64) {
        let c = match ceiling {
            Ceiling::Copy => self.copy_gbs,
            Ceiling::Read => self.read_gbs,
            Ceiling::Gemm => self.gemm_tflops,
        };
        match flops {
            Some(f) if self.device_kind == "cpu" => (Unit::GflopS, f / (ms * 1e-3) / 1e9, c * 1e3),
            Some(f) => (Unit::TflopS, f / (ms * 1e-3) / 1e12, c),
            None => (Unit::GbS, bytes / (ms * 1e-3) / 1e9, c),
        }
    }

    /// Adds a row: `flops` makes it a FLOP row (against the GEMM ceiling),
    /// otherwise `bytes` a bandwidth row against `mem_ceiling`.
    fn push_row(
        &mut self,
        kernel: &str,
        shape: String,
        t: TimeStats,
        flops: Option<f64>,
        bytes: f64,
        mem_ceiling: Ceiling,
    ) -> &mut Row {
        let ceiling = if flops.is_some() {
            Ceiling::Gemm
        } else {
            mem_ceiling
        };
        let (unit, rate, c) = self.rate(t.median_ms, flops, bytes, ceiling);
        self.rows.push(Row {
            kernel: kernel.to_string(),
            shape,
            time_us: t.median_ms * 1e3,
            p10_us: t.p10_ms * 1e3,
            p90_us: t.p90_ms * 1e3,
            launches: t.launches,
            repeats: t.repeats,
            host_limited: t.host_limited,
            unit,
            rate,
            ceiling,
            fraction: if c > 0.0 { rate / c } else { f64::NAN },
            baseline: None,
            target: None,
        });
        self.rows.last_mut().expect("row just pushed")
    }

    /// The report as Markdown: header, checks, timings, comparisons, sustained runs.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "device: {} ({}; {}; kernels for {})",
            self.device, self.device_kind, self.driver, self.arch
        );
        let timed = !self.rows.is_empty() || !self.sustained.is_empty();
        if !timed {
            s.push_str("ceilings: not measured (checks only, nothing timed)\n\n");
        } else if self.device_kind == "cpu" {
            let _ = writeln!(
                s,
                "ceilings: copy {:.0} GB/s (read + write), reference GEMM {:.1} GFLOP/s",
                self.copy_gbs,
                self.gemm_tflops * 1e3
            );
        } else {
            let _ = writeln!(
                s,
                "ceilings: read-only probe {:.0} GB/s, copy {:.0} GB/s (read + write), bf16 GEMM 8192³ {:.1} TFLOP/s (cuBLAS, not the hardware peak)",
                self.read_gbs, self.copy_gbs, self.gemm_tflops
            );
        }
        if timed {
            let _ = writeln!(s, "timing: {}\n", self.method);
        }
        if !self.checks.is_empty() {
            s.push_str("| check | shape | rel. error | bound | result |\n|---|---|---|---|---|\n");
            for c in &self.checks {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2e} | {:.0e} | {} |",
                    c.kernel,
                    c.shape,
                    c.rel_err,
                    c.tolerance,
                    if c.passed() { "ok" } else { "FAILED" }
                );
            }
            s.push('\n');
        }
        if !self.rows.is_empty() {
            s.push_str(
                "| kernel | shape | time (µs) | p10–p90 (µs) | rate | of ceiling | baseline | ratio | target |\n",
            );
            s.push_str("|---|---|---|---|---|---|---|---|---|\n");
        }
        for r in &self.rows {
            let (b, ratio) = match r.baseline {
                Some(b) => (
                    format!("{b:.1} {}", r.unit.label()),
                    format!("{:.2}", r.rate / b),
                ),
                None => ("-".into(), "-".into()),
            };
            let t = match &r.target {
                Some(t) => format!("{} {}", t.goal, if t.met { "met" } else { "MISSED" }),
                None => "-".into(),
            };
            let host = if r.host_limited > 0 {
                format!(" ({}/{} host-limited)", r.host_limited, r.repeats)
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1}–{:.1}{} | {:.1} {} | {:.1}% {} | {} | {} | {} |",
                r.kernel,
                r.shape,
                r.time_us,
                r.p10_us,
                r.p90_us,
                host,
                r.rate,
                r.unit.label(),
                r.fraction * 100.0,
                r.ceiling.label(),
                b,
                ratio,
                t
            );
        }
        if !self.comparisons.is_empty() {
            s.push_str("\n| comparison | ratio | reading |\n|---|---|---|\n");
            for c in &self.comparisons {
                let _ = writeln!(s, "| {} | {:.3} | {} |", c.name, c.ratio, c.detail);
            }
        }
        if !self.sustained.is_empty() {
            s.push_str(
                "\n| sustained | shape | seconds | launches | rate | burst rate | SM clock (MHz) | power (W) | NVML samples |\n|---|---|---|---|---|---|---|---|---|\n",
            );
            let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
            for u in &self.sustained {
                let _ = writeln!(
                    s,
                    "| {} | {} | {:.2} | {} | {:.1} {} | {} | {} | {} | {} |",
                    u.kernel,
                    u.shape,
                    u.seconds,
                    u.launches,
                    u.rate,
                    u.unit.label(),
                    u.burst_rate.map_or("-".into(), |b| format!("{b:.1}")),
                    opt(u.sm_clock_mhz),
                    opt(u.power_w),
                    u.nvml_samples
                );
            }
        }
        for n in &self.notes {
            let _ = writeln!(s, "\nnote: {n}");
        }
        s
    }

    /// The report as JSON, with the command that produced it and the date.
    pub fn json(&self, command: &str, date: &str) -> String {
        let mut s = String::from("{\n");
        let _ = writeln!(s, "  \"command\": {},", jstr(command));
        let _ = writeln!(s, "  \"date\": {},", jstr(date));
        let _ = writeln!(s, "  \"device_kind\": {},", jstr(&self.device_kind));
        let _ = writeln!(s, "  \"device\": {},", jstr(&self.device));
        let _ = writeln!(s, "  \"driver\": {},", jstr(&self.driver));
        let _ = writeln!(s, "  \"arch\": {},", jstr(&self.arch));
        let _ = writeln!(s, "  \"method\": {},", jstr(&self.method));
        let _ = writeln!(s, "  \"copy_gbs\": {},", jnum(self.copy_gbs));
        let _ = writeln!(s, "  \"read_gbs\": {},", jnum(self.read_gbs));
        let _ = writeln!(s, "  \"gemm_tflops\": {},", jnum(self.gemm_tflops));
        s.push_str("  \"checks\": [\n");
        for (i, c) in self.checks.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"kernel\": {}, \"shape\": {}, \"rel_err\": {}, \"tolerance\": {}, \"passed\": {}}}",
                jstr(&c.kernel),
                jstr(&c.shape),
                jnum(c.rel_err),
                jnum(c.tolerance),
                c.passed()
            );
            s.push_str(sep(i, self.checks.len()));
        }
        s.push_str("  ],\n  \"rows\": [\n");
        for (i, r) in self.rows.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"kernel\": {}, \"shape\": {}, \"time_us\": {}, \"time_p10_us\": {}, \"time_p90_us\": {}, \"launches\": {}, \"repeats\": {}, \"host_limited_samples\": {}, \"unit\": {}, \"rate\": {}, \"ceiling\": {}, \"fraction_of_ceiling\": {}, \"baseline\": {}, \"target\": {}, \"target_met\": {}}}",
                jstr(&r.kernel),
                jstr(&r.shape),
                jnum(r.time_us),
                jnum(r.p10_us),
                jnum(r.p90_us),
                r.launches,
                r.repeats,
                r.host_limited,
                jstr(r.unit.label()),
                jnum(r.rate),
                jstr(r.ceiling.label()),
                jnum(r.fraction),
                r.baseline.map_or("null".into(), jnum),
                r.target.as_ref().map_or("null".into(), |t| jstr(&t.goal)),
                r.target
                    .as_ref()
                    .map_or("null".into(), |t| t.met.to_string()),
            );
            s.push_str(sep(i, self.rows.len()));
        }
        s.push_str("  ],\n  \"comparisons\": [\n");
        for (i, c) in self.comparisons.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"name\": {}, \"ratio\": {}, \"detail\": {}}}",
                jstr(&c.name),
                jnum(c.ratio),
                jstr(&c.detail)
            );
            s.push_str(sep(i, self.comparisons.len()));
        }
        s.push_str("  ],\n  \"sustained\": [\n");
        let opt = |v: Option<f64>| v.map_or("null".into(), jnum);
        for (i, u) in self.sustained.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"kernel\": {}, \"shape\": {}, \"seconds\": {}, \"launches\": {}, \"unit\": {}, \"rate\": {}, \"burst_rate\": {}, \"sm_clock_mhz\": {}, \"power_w\": {}, \"nvml_samples\": {}}}",
                jstr(&u.kernel),
                jstr(&u.shape),
                jnum(u.seconds),
                u.launches,
                jstr(u.unit.label()),
                jnum(u.rate),
                opt(u.burst_rate),
                opt(u.sm_clock_mhz),
                opt(u.power_w),
                u.nvml_samples
            );
            s.push_str(sep(i, self.sustained.len()));
        }
        s.push_str("  ],\n  \"notes\": [");
        s.push_str(
            &self
                .notes
                .iter()
                .map(|n| jstr(n))
                .collect::<Vec<_>>()
                .join(", "),
        );
        s.push_str("]\n}\n");
        s
    }
}

fn sep(i: usize, n: usize) -> &'static str {
    if i + 1 < n { ",\n" } else { "\n" }
}

pub use fuselab_core::utc_now;

fn jstr(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            '\n' => o.push_str("\\n"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

fn jnum(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".into()
    }
}

fn to_f32(v: &[bf16]) -> Vec<f32> {
    v.iter().map(|x| x.to_f32()).collect()
}

pub(crate) fn inv_freq() -> Vec<f64> {
    (0..HEAD_DIM / 2)
        .map(|i| THETA.powf(-(2.0 * i as f64) / HEAD_DIM as f64))
        .collect()
}

fn attn_flops_causal(s: usize, heads: usize) -> f64 {
    2.0 * 2.0 * (s as f64) * (s as f64) * heads as f64 * HEAD_DIM as f64 / 2.0
}

/// The mixed decode contexts: `n` lengths drawn from N(2600, 780) (Box–Muller
/// on a SplitMix stream of `seed`), rounded and clamped to [256, 4224], the
/// spread of the `h200-64` workload's decode steps.
pub fn mixed_decode_lengths(n: usize, seed: u64) -> Vec<usize> {
    let mut rng = SplitMix::new(seed);
    (0..n)
        .map(|_| {
            // uniform() is in [-1, 1): u1 in (0, 1], u2 in [0, 1).
            let u1 = 1.0 - (f64::from(rng.uniform()) + 1.0) / 2.0;
            let u2 = (f64::from(rng.uniform()) + 1.0) / 2.0;
            let z = (-2.0 * u1.max(1e-12).ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            (2600.0 + 780.0 * z).round().clamp(256.0, 4224.0) as usize
        })
        .collect()
}

/// Rows of `len` new tokens to check at: every tile edge of 64, 128 and 256
/// rows (both sides), the last row, and `random` rows drawn from `rng`.
pub(crate) fn edge_rows(len: usize, random: usize, rng: &mut SplitMix) -> Vec<usize> {
    let mut rows = vec![0, 1, len.saturating_sub(1)];
    let mut e = 64;
    while e < len {
        rows.push(e - 1);
        rows.push(e);
        e += if e < 512 { 64 } else { 256 };
    }
    for _ in 0..random {
        rows.push(rng.below(len.max(1)));
    }
    rows.retain(|&r| r < len);
    rows.sort_unstable();
    rows.dedup();
    rows
}

/// Host copies of a paged cache's K and V.
type HostKv = Option<(Vec<f32>, Vec<f32>)>;

/// How a [`PagedSetup`] fills its cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fill {
    /// On the device only (timing).
    Device,
    /// Host-generated values, uploaded, kept on the host (small checks).
    Host,
    /// On the device, then downloaded (large checks).
    DeviceThenHost,
}

/// A paged cache with random contents and random block tables.
pub(crate) struct PagedSetup {
    pub(crate) k: CudaSlice<bf16>,
    pub(crate) v: CudaSlice<bf16>,
    tables: CudaSlice<i32>,
    ctx: CudaSlice<i32>,
    max_blocks: usize,
    host_tables: Vec<Vec<usize>>,
}

impl PagedSetup {
    pub(crate) fn new(
        dev: &CudaDevice,
        rng: &mut SplitMix,
        ctx_lens: &[usize],
        fill: Fill,
    ) -> Result<(Self, HostKv), CudaError> {
        let max_blocks = ctx_lens
            .iter()
            .map(|c| c.div_ceil(BLOCK_SIZE))
            .max()
            .unwrap_or(1)
            .max(1);
        let total_blocks: usize = ctx_lens
            .iter()
            .map(|c| c.div_ceil(BLOCK_SIZE))
            .sum::<usize>()
            + 3;
        let perm = rng.permutation(total_blocks);
        let mut host_tables = Vec::new();
        let mut flat = vec![0i32; ctx_lens.len() * max_blocks];
        let mut next = 0;
        for (b, &c) in ctx_lens.iter().enumerate() {
            let n = c.div_ceil(BLOCK_SIZE);
            let t: Vec<usize> = perm[next..next + n].to_vec();
            next += n;
            for (i, &blk) in t.iter().enumerate() {
                flat[b * max_blocks + i] = blk as i32;
            }
            host_tables.push(t);
        }
        let n = total_blocks * BLOCK_SIZE * KV_HEADS * HEAD_DIM;
        let (k, v, host) = if fill == Fill::Host {
            let hk = rng.bf16_vec(n, 1.0);
            let hv = rng.bf16_vec(n, 1.0);
            (
                dev.upload(&hk)?,
                dev.upload(&hv)?,
                Some((to_f32(&hk), to_f32(&hv))),
            )
        } else {
            let mut k = dev.alloc_bf16(n)?;
            let mut v = dev.alloc_bf16(n)?;
            dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
            dev.fill_uniform(&mut v, rng.next_u64(), 1.0)?;
            let host = if fill == Fill::DeviceThenHost {
                Some((to_f32(&dev.download(&k)?), to_f32(&dev.download(&v)?)))
            } else {
                None
            };
            (k, v, host)
        };
        let ctx: Vec<i32> = ctx_lens.iter().map(|&c| c as i32).collect();
        Ok((
            Self {
                k,
                v,
                tables: dev.upload(&flat)?,
                ctx: dev.upload(&ctx)?,
                max_blocks,
                host_tables,
            },
            host,
        ))
    }

    pub(crate) fn params(&self, batch: usize) -> PagedAttention<'_> {
        PagedAttention {
            batch,
            num_q_heads: Q_HEADS,
            num_kv_heads: KV_HEADS,
            block_size: BLOCK_SIZE,
            max_blocks_per_seq: self.max_blocks,
            ctx_lens: &self.ctx,
            block_tables: &self.tables,
            scale: 1.0 / (HEAD_DIM as f32).sqrt(),
        }
    }
}

fn geometry() -> AttnGeometry {
    AttnGeometry {
        hq: Q_HEADS,
        hkv: KV_HEADS,
        head_dim: HEAD_DIM,
        block_size: BLOCK_SIZE,
        scale: 1.0 / (HEAD_DIM as f64).sqrt(),
    }
}

fn nan_bf16(dev: &CudaDevice, n: usize) -> Result<CudaSlice<bf16>, CudaError> {
    dev.upload(&vec![bf16::NAN; n])
}

fn host_kv(host: HostKv) -> Result<(Vec<f32>, Vec<f32>), CudaError> {
    host.ok_or_else(|| CudaError::CheckFailed("host copy of the cache missing".into()))
}

/// Rows `rows` (of `row_len` elements) of `all`, concatenated.
fn pick_rows(all: &[f32], rows: &[usize], row_len: usize) -> Vec<f32> {
    rows.iter()
        .flat_map(|&r| {
            all.get(r * row_len..(r + 1) * row_len)
                .map_or_else(|| vec![f32::NAN; row_len], <[f32]>::to_vec)
        })
        .collect()
}

/// Elements whose bits differ (a length mismatch counts every element).
fn bit_diffs(a: &[bf16], b: &[bf16]) -> usize {
    if a.len() != b.len() {
        return a.len().max(b.len());
    }
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count()
}

/// Block-permuted cache slots for `t` tokens in a cache of `cap` tokens.
pub(crate) fn scattered_slots(rng: &mut SplitMix, t: usize, cap: usize) -> Vec<i32> {
    let perm = rng.permutation(cap / BLOCK_SIZE);
    (0..t)
        .map(|i| (perm[i / BLOCK_SIZE] * BLOCK_SIZE + i % BLOCK_SIZE) as i32)
        .collect()
}

/// A GEMM check's inputs, `x` `[t, k]` and `w` `[n, k]`, what `y` holds before (added
/// into where `out.accumulate`), and the reference result.
struct GemmCheck {
    x: Vec<bf16>,
    w: Vec<bf16>,
    y0: Vec<bf16>,
    out: GemmOut,
    want: Vec<f32>,
}

impl GemmCheck {
    fn new(rng: &mut SplitMix, (t, k, n): (usize, usize, usize), accumulate: bool) -> Self {
        let x = rng.bf16_vec(t * k, 1.0);
        let w = rng.bf16_vec(n * k, 0.05);
        let y0 = rng.bf16_vec(t * n, 2.0);
        let mut want = reference::gemm(&to_f32(&x), &to_f32(&w), t, k, n);
        if accumulate {
            for (o, &a) in want.iter_mut().zip(&y0) {
                *o = (f64::from(*o) + f64::from(a.to_f32())) as f32;
            }
        }
        Self {
            x,
            w,
            y0,
            out: GemmOut {
                accumulate,
                ..GemmOut::dense(n)
            },
            want,
        }
    }

    /// `y` on the device before the GEMM: `y0` where it adds into y, else NaNs (so that
    /// an output left unwritten fails the check).
    fn fresh_y(&self, dev: &CudaDevice) -> Result<CudaSlice<bf16>, CudaError> {
        if self.out.accumulate {
            dev.upload(&self.y0)
        } else {
            nan_bf16(dev, self.y0.len())
        }
    }
}

/// Appends `c` and logs it (at `info`, e.g. `FUSELAB_LOG=info`), so that a run cut short,
/// say by a sanitizer's time limit, shows how far it got.
fn record(checks: &mut Vec<Check>, c: Check) {
    tracing::info!(kernel = %c.kernel, shape = %c.shape, rel_err = c.rel_err, "checked");
    checks.push(c);
}

/// The prefill tiles the checks run: every tile `dev` has, or those of
/// [`BenchOptions::check_tiles`].
fn checked_tiles(dev: &CudaDevice, opts: &BenchOptions) -> Vec<super::PrefillTile> {
    dev.prefill_tiles()
        .into_iter()
        .filter(|t| opts.check_tiles.as_ref().is_none_or(|w| w.contains(t)))
        .collect()
}

/// Runs every check on fresh random inputs (odd lengths included); with `cublas` false,
/// the checks that run a cuBLAS GEMM are left out (`--own-checks-only`).
fn run_checks(
    dev: &CudaDevice,
    rng: &mut SplitMix,
    cublas: bool,
    tiles: &[super::PrefillTile],
) -> Result<Vec<Check>, CudaError> {
    let mut checks = Vec::new();
    // The worst row decides: an error confined to a few rows is not averaged away.
    fn add(
        checks: &mut Vec<Check>,
        kernel: &str,
        shape: String,
        row_len: usize,
        out: &[f32],
        want: &[f32],
    ) {
        record(
            checks,
            Check {
                kernel: kernel.into(),
                shape,
                rel_err: reference::max_row_rel_err(out, want, row_len),
                tolerance: BF16_TOL,
            },
        );
    }

    // RMSNorm.
    let t = 7;
    let x = rng.bf16_vec(t * HIDDEN, 2.0);
    let w = rng.bf16_vec(HIDDEN, 1.0);
    let (dx, dw) = (dev.upload(&x)?, dev.upload(&w)?);
    let mut dy = nan_bf16(dev, t * HIDDEN)?;
    dev.rms_norm(&dx, &dw, &mut dy, t, HIDDEN, EPS)?;
    let want = reference::rms_norm(&to_f32(&x), &to_f32(&w), HIDDEN, f64::from(EPS));
    add(
        &mut checks,
        "rms_norm",
        format!("T={t} hidden={HIDDEN}"),
        HIDDEN,
        &to_f32(&dev.download(&dy)?),
        &want,
    );

    // RoPE.
    let t = 13;
    let q = rng.bf16_vec(t * Q_HEADS * HEAD_DIM, 1.0);
    let k = rng.bf16_vec(t * KV_HEADS * HEAD_DIM, 1.0);
    let pos: Vec<i32> = (0..t).map(|_| rng.below(20_000) as i32).collect();
    let freqs = inv_freq();
    let f32_freqs: Vec<f32> = freqs.iter().map(|&f| f as f32).collect();
    let (mut dq, mut dk) = (dev.upload(&q)?, dev.upload(&k)?);
    let (dpos, dfreq) = (dev.upload(&pos)?, dev.upload(&f32_freqs)?);
    dev.rope(&mut dq, &mut dk, &dpos, &dfreq, t, Q_HEADS, KV_HEADS)?;
    let (mut wq, mut wk) = (to_f32(&q), to_f32(&k));
    reference::rope(&mut wq, Q_HEADS, HEAD_DIM, &pos, &freqs);
    reference::rope(&mut wk, KV_HEADS, HEAD_DIM, &pos, &freqs);
    let mut got = to_f32(&dev.download(&dq)?);
    got.extend(to_f32(&dev.download(&dk)?));
    wq.extend(wk);
    add(
        &mut checks,
        "rope",
        format!("T={t} positions<20000"),
        HEAD_DIM,
        &got,
        &wq,
    );

    // SiLU·mul.
    let t = 5;
    let gu = rng.bf16_vec(t * 2 * FFN, 4.0);
    let dgu = dev.upload(&gu)?;
    let mut dout = nan_bf16(dev, t * FFN)?;
    dev.silu_mul(&dgu, &mut dout, t, FFN)?;
    add(
        &mut checks,
        "silu_mul",
        format!("T={t} ffn={FFN}"),
        FFN,
        &to_f32(&dev.download(&dout)?),
        &reference::silu_mul(&to_f32(&gu), FFN),
    );

    // KV write: scattered slots, one skipped token; untouched slots keep their poison.
    let t = 37;
    let slots_cap = 8 * BLOCK_SIZE;
    let w = KV_HEADS * HEAD_DIM;
    let k = rng.bf16_vec(t * w, 1.0);
    let v = rng.bf16_vec(t * w, 1.0);
    let perm = rng.permutation(slots_cap);
    let mut slots: Vec<i64> = perm[..t].iter().map(|&s| s as i64).collect();
    slots[11] = -1;
    let init = rng.bf16_vec(slots_cap * w, 1.0);
    let (mut kc, mut vc) = (dev.upload(&init)?, dev.upload(&init)?);
    dev.kv_write(
        &dev.upload(&k)?,
        &dev.upload(&v)?,
        &mut kc,
        &mut vc,
        &dev.upload(&slots)?,
        t,
        KV_HEADS,
    )?;
    let (mut want_k, mut want_v) = (to_f32(&init), to_f32(&init));
    for (i, &s) in slots.iter().enumerate() {
        if s >= 0 {
            let s = s as usize;
            want_k[s * w..(s + 1) * w].copy_from_slice(&to_f32(&k[i * w..(i + 1) * w]));
            want_v[s * w..(s + 1) * w].copy_from_slice(&to_f32(&v[i * w..(i + 1) * w]));
        }
    }
    let mut got = to_f32(&dev.download(&kc)?);
    got.extend(to_f32(&dev.download(&vc)?));
    want_k.extend(want_v);
    add(
        &mut checks,
        "kv_write",
        format!("T={t} slots in {slots_cap}, one skipped"),
        KV_HEADS * HEAD_DIM,
        &got,
        &want_k,
    );

    if cublas {
        // GEMM.
        let (t, kk, n) = (37, HIDDEN, 1000);
        let x = rng.bf16_vec(t * kk, 1.0);
        let w = rng.bf16_vec(n * kk, 1.0);
        let mut dy = nan_bf16(dev, t * n)?;
        dev.gemm(&dev.upload(&x)?, &dev.upload(&w)?, &mut dy, t, kk, n)?;
        add(
            &mut checks,
            "gemm",
            format!("T={t} {kk}->{n}"),
            n,
            &to_f32(&dev.download(&dy)?),
            &reference::gemm(&to_f32(&x), &to_f32(&w), t, kk, n),
        );
    }

    // Ragged causal prefill through block tables: a single token, a chunk after a
    // prefix, and a multi-tile sequence.
    let q_lens = [1usize, 37, 150];
    let ctx_lens = [1usize, 114, 155];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, Fill::Host)?;
    let (hk, hv) = host.ok_or_else(|| CudaError::CheckFailed("host cache missing".into()))?;
    let total: usize = q_lens.iter().sum();
    let q = rng.bf16_vec(total * Q_HEADS * HEAD_DIM, 1.0);
    let dq = dev.upload(&q)?;
    let mut cu = vec![0i32];
    for &l in &q_lens {
        cu.push(cu.last().copied().unwrap_or(0) + l as i32);
    }
    let dcu = dev.upload(&cu)?;
    let want = reference::paged_attention(
        geometry(),
        &to_f32(&q),
        &q_lens,
        &ctx_lens,
        &hk,
        &hv,
        &setup.host_tables,
    );
    for &tile in tiles {
        let mut out = nan_bf16(dev, total * Q_HEADS * HEAD_DIM)?;
        dev.prefill_attention_tile(
            &setup.params(3),
            &dq,
            &setup.k,
            &setup.v,
            &mut out,
            &dcu,
            total,
            150,
            tile,
        )?;
        add(
            &mut checks,
            &format!("prefill_attention ({})", tile.label()),
            "q_len 1/37/150, ctx 1/114/155, 32q/8kv".into(),
            Q_HEADS * HEAD_DIM,
            &to_f32(&dev.download(&out)?),
            &want,
        );
    }

    // The long-prompt tiles over several tiles: a whole 2300-token prompt and a
    // 2048-token chunk after a 5952-token prefix (8k of context), checked row by
    // row at every tile edge of either sequence.
    let q_lens = [2300usize, 2048];
    let ctx_lens = [2300usize, 8000];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, Fill::Host)?;
    let (hk, hv) = host.ok_or_else(|| CudaError::CheckFailed("host cache missing".into()))?;
    let total: usize = q_lens.iter().sum();
    let q = rng.bf16_vec(total * Q_HEADS * HEAD_DIM, 1.0);
    let dq = dev.upload(&q)?;
    let dcu = dev.upload(&[0i32, 2300, 4348])?;
    let mut rows: Vec<usize> = [0, 2300]
        .iter()
        .flat_map(|&start: &usize| {
            let len = if start == 0 { 2300 } else { 2048 };
            [
                0,
                1,
                63,
                64,
                127,
                128,
                255,
                256,
                511,
                512,
                1023,
                1024,
                2047,
                len - 1,
            ]
            .into_iter()
            .filter(move |&r| r < len)
            .map(move |r| start + r)
        })
        .collect();
    rows.sort_unstable();
    rows.dedup();
    let want = reference::paged_attention_rows(
        geometry(),
        &to_f32(&q),
        &q_lens,
        &ctx_lens,
        &hk,
        &hv,
        &setup.host_tables,
        &rows,
    );
    let row_len = Q_HEADS * HEAD_DIM;
    for &tile in tiles {
        let mut out = nan_bf16(dev, total * row_len)?;
        dev.prefill_attention_tile(
            &setup.params(2),
            &dq,
            &setup.k,
            &setup.v,
            &mut out,
            &dcu,
            total,
            2300,
            tile,
        )?;
        let all = to_f32(&dev.download(&out)?);
        let got: Vec<f32> = rows
            .iter()
            .flat_map(|&r| all[r * row_len..(r + 1) * row_len].iter().copied())
            .collect();
        add(
            &mut checks,
            &format!("prefill_attention ({})", tile.label()),
            format!(
                "q_len 2300 + 2048 after 5952 (ctx 8000), {} rows at tile edges",
                rows.len()
            ),
            row_len,
            &got,
            &want,
        );
    }

    // Split-KV decode over odd context lengths, default and forced split counts.
    let ctx_lens = [1usize, 63, 1000, 4097];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, Fill::Host)?;
    let (hk, hv) = host.ok_or_else(|| CudaError::CheckFailed("host cache missing".into()))?;
    let b = ctx_lens.len();
    let q = rng.bf16_vec(b * Q_HEADS * HEAD_DIM, 1.0);
    let dq = dev.upload(&q)?;
    let want = reference::paged_attention(
        geometry(),
        &to_f32(&q),
        &[1; 4],
        &ctx_lens,
        &hk,
        &hv,
        &setup.host_tables,
    );
    let mut ws = DecodeWorkspace::new(dev)?;
    for splits in [None, Some(1), Some(7)] {
        let mut out = nan_bf16(dev, b * Q_HEADS * HEAD_DIM)?;
        let used = dev.decode_attention(
            &setup.params(b),
            &dq,
            &setup.k,
            &setup.v,
            &mut out,
            &mut ws,
            4097,
            splits,
        )?;
        add(
            &mut checks,
            "decode_attention",
            format!("ctx 1/63/1000/4097, {used} splits"),
            Q_HEADS * HEAD_DIM,
            &to_f32(&dev.download(&out)?),
            &want,
        );
    }
    more_checks(dev, rng, &mut checks, cublas)?;
    Ok(checks)
}

/// The checks of the engine's newer paths at the shapes it runs them: the fused
/// RoPE + KV write, β = 1 and strided GEMMs, direct and balanced decode at
/// batch 64, and prefill over several tiles (ragged 3 × 2560 and a chunk after
/// a long prefix).
fn more_checks(
    dev: &CudaDevice,
    rng: &mut SplitMix,
    checks: &mut Vec<Check>,
    cublas: bool,
) -> Result<(), CudaError> {
    fn push(checks: &mut Vec<Check>, kernel: &str, shape: String, rel_err: f64, tol: f64) {
        record(
            checks,
            Check {
                kernel: kernel.into(),
                shape,
                rel_err,
                tolerance: tol,
            },
        );
    }
    let freqs = inv_freq();
    let f32_freqs: Vec<f32> = freqs.iter().map(|&f| f as f32).collect();
    let dfreq = dev.upload(&f32_freqs)?;
    let (qw, kw) = (Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);

    // Fused RoPE + KV write against the f64 RoPE and a host KV write, and bit for
    // bit against `rope` then `kv_write` on the GPU.
    for (t, offset) in [(37usize, 0usize), (2048, 3000)] {
        let cap = (t + 3 * BLOCK_SIZE).div_ceil(BLOCK_SIZE) * BLOCK_SIZE;
        let qkv = rng.bf16_vec(t * QKV_WIDTH, 1.0);
        let pos: Vec<i32> = (0..t).map(|i| (offset + i) as i32).collect();
        let mut slots = scattered_slots(rng, t, cap);
        slots[t / 3] = -1;
        let init = rng.bf16_vec(cap * kw, 1.0);
        let (dqkv, dpos, dslots) = (dev.upload(&qkv)?, dev.upload(&pos)?, dev.upload(&slots)?);
        let mut q_out = nan_bf16(dev, t * qw)?;
        let (mut kc, mut vc) = (dev.upload(&init)?, dev.upload(&init)?);
        dev.qkv_rope_cache(
            &dqkv, &mut q_out, &mut kc, &mut vc, &dpos, &dslots, &dfreq, t, Q_HEADS, KV_HEADS,
        )?;
        let (got_q, got_k, got_v) = (
            dev.download(&q_out)?,
            dev.download(&kc)?,
            dev.download(&vc)?,
        );
        // Host split of the fused rows.
        let (mut hq, mut hk, mut hv) = (
            Vec::with_capacity(t * qw),
            Vec::with_capacity(t * kw),
            Vec::with_capacity(t * kw),
        );
        for row in qkv.chunks_exact(QKV_WIDTH) {
            hq.extend_from_slice(&row[..qw]);
            hk.extend_from_slice(&row[qw..qw + kw]);
            hv.extend_from_slice(&row[qw + kw..]);
        }
        let (mut wq, mut wk) = (to_f32(&hq), to_f32(&hk));
        reference::rope(&mut wq, Q_HEADS, HEAD_DIM, &pos, &freqs);
        reference::rope(&mut wk, KV_HEADS, HEAD_DIM, &pos, &freqs);
        let hv32 = to_f32(&hv);
        let (mut want_k, mut want_v) = (to_f32(&init), to_f32(&init));
        for (i, &s) in slots.iter().enumerate() {
            if let Ok(s) = usize::try_from(s) {
                want_k[s * kw..(s + 1) * kw].copy_from_slice(&wk[i * kw..(i + 1) * kw]);
                want_v[s * kw..(s + 1) * kw].copy_from_slice(&hv32[i * kw..(i + 1) * kw]);
            }
        }
        let mut got = to_f32(&got_q);
        got.extend(to_f32(&got_k));
        got.extend(to_f32(&got_v));
        wq.extend(want_k);
        wq.extend(want_v);
        push(
            checks,
            "qkv_rope_cache",
            format!("T={t} positions {offset}.., slots in {cap}, one skipped"),
            reference::max_row_rel_err(&got, &wq, HEAD_DIM),
            BF16_TOL,
        );
        // The two-kernel path on the same inputs.
        let (mut dq, mut dk) = (dev.upload(&hq)?, dev.upload(&hk)?);
        dev.rope(&mut dq, &mut dk, &dpos, &dfreq, t, Q_HEADS, KV_HEADS)?;
        let slots64: Vec<i64> = slots.iter().map(|&s| i64::from(s)).collect();
        let (mut kc2, mut vc2) = (dev.upload(&init)?, dev.upload(&init)?);
        dev.kv_write(
            &dk,
            &dev.upload(&hv)?,
            &mut kc2,
            &mut vc2,
            &dev.upload(&slots64)?,
            t,
            KV_HEADS,
        )?;
        let diffs = bit_diffs(&got_q, &dev.download(&dq)?)
            + bit_diffs(&got_k, &dev.download(&kc2)?)
            + bit_diffs(&got_v, &dev.download(&vc2)?);
        push(
            checks,
            "qkv_rope_cache",
            format!(
                "T={t}: bit-exact against rope + kv_write on the GPU (value: differing elements)"
            ),
            diffs as f64,
            0.0,
        );
    }

    if cublas {
        // gemm_acc: y += x·wᵀ into a random y, at the o and down shapes.
        for (name, t, k, n) in [
            ("o", 13usize, Q_HEADS * HEAD_DIM, HIDDEN),
            ("down", 5, FFN, HIDDEN),
        ] {
            let x = rng.bf16_vec(t * k, 1.0);
            let w = rng.bf16_vec(n * k, 0.05);
            let y0 = rng.bf16_vec(t * n, 2.0);
            let mut dy = dev.upload(&y0)?;
            dev.gemm_acc(&dev.upload(&x)?, &dev.upload(&w)?, &mut dy, t, k, n)?;
            let mut want = reference::gemm(&to_f32(&x), &to_f32(&w), t, k, n);
            for (o, &a) in want.iter_mut().zip(&y0) {
                *o = (f64::from(*o) + f64::from(a.to_f32())) as f32;
            }
            push(
                checks,
                "gemm_acc",
                format!("{name}: T={t} {k}->{n}, y += x·wᵀ (β = 1, C = D)"),
                reference::max_row_rel_err(&to_f32(&dev.download(&dy)?), &want, n),
                BF16_TOL,
            );
        }

        // The decode GEMMs through the fastest cuBLASLt candidate (adopted even where cuBLAS's
        // default was faster, so that the check runs a cuBLASLt algorithm), then back to cuBLAS.
        let mut timer = LaunchTimer::new(dev)?;
        for (name, t, k, n, acc) in [
            ("o", 64usize, Q_HEADS * HEAD_DIM, HIDDEN, true),
            ("qkv", 64, HIDDEN, QKV_WIDTH, false),
            ("down", 24, FFN, HIDDEN, true),
            ("gate_up", 1, HIDDEN, 2 * FFN, false),
        ] {
            let case = GemmCheck::new(rng, (t, k, n), acc);
            let out = case.out;
            let (dx, dw) = (dev.upload(&case.x)?, dev.upload(&case.w)?);
            let mut scratch = dev.alloc_bf16(t * n)?;
            let tuning =
                dev.tune_gemm_adopting(&mut timer, &dx, &[&dw], &mut scratch, t, k, n, out, true)?;
            let mut dy = case.fresh_y(dev)?;
            dev.gemm_ex(&dx, &dw, &mut dy, t, k, n, out)?;
            dev.clear_gemm_tuning();
            push(
                checks,
                "gemm_tuned",
                format!(
                    "{name}: T={t} {k}->{n}{}, fastest of {} cuBLASLt candidates{}",
                    if acc { ", y += x·wᵀ" } else { "" },
                    tuning.candidates,
                    if tuning.adopted {
                        ""
                    } else {
                        " (none ran: cuBLAS)"
                    }
                ),
                reference::max_row_rel_err(&to_f32(&dev.download(&dy)?), &case.want, n),
                BF16_TOL,
            );
        }
    }

    // The skinny GEMM of decode steps: k split over clusters of 4 and 2 and unsplit, adding
    // into y or not, up to 64 rows, and more tiles than two blocks per SM.
    if dev.has_wgmma() {
        for (name, t, k, n, acc) in [
            ("o", 64usize, Q_HEADS * HEAD_DIM, HIDDEN, true),
            ("o", 33, Q_HEADS * HEAD_DIM, HIDDEN, false),
            ("qkv", 7, HIDDEN, QKV_WIDTH, false),
            ("qkv", 64, HIDDEN, QKV_WIDTH, false),
            ("down", 5, FFN, HIDDEN, true),
            ("down", 64, FFN, HIDDEN, true),
            ("gate_up", 3, HIDDEN, 2 * FFN, false),
            ("gate_up", 64, HIDDEN, 2 * FFN, false),
            ("many tiles", 9, 512, 34816, true),
        ] {
            let case = GemmCheck::new(rng, (t, k, n), acc);
            let plan = dev.skinny_plan(k, n);
            let (dx, dw) = (dev.upload(&case.x)?, dev.upload(&case.w)?);
            // The row-major weight by TMA, then its tiled copy by bulk copies.
            for tiled in [false, true] {
                if tiled {
                    dev.tile_for_skinny(&dw, n, k)?;
                }
                let mut dy = case.fresh_y(dev)?;
                dev.gemm_skinny(&dx, &dw, &mut dy, t, k, n, case.out)?;
                push(
                    checks,
                    if tiled {
                        "gemm_skinny tiled"
                    } else {
                        "gemm_skinny"
                    },
                    format!(
                        "{name}: T={t} {k}->{n}, {} k split(s), {} stages{}",
                        plan.splits,
                        plan.stages,
                        if acc { ", y += x·wᵀ" } else { "" }
                    ),
                    reference::max_row_rel_err(&to_f32(&dev.download(&dy)?), &case.want, n),
                    BF16_TOL,
                );
            }
            dev.clear_skinny_tiles();
        }
    }

    if cublas {
        // gemm_ex: q, k and v as three GEMMs from views of the fused weight into the
        // strided fused buffer; then a narrow block at an offset whose neighbours
        // must keep their poison.
        let t = 13;
        let x = rng.bf16_vec(t * HIDDEN, 1.0);
        let w = rng.bf16_vec(QKV_WIDTH * HIDDEN, 0.05);
        let (dx, dw) = (dev.upload(&x)?, dev.upload(&w)?);
        let mut dy = nan_bf16(dev, t * QKV_WIDTH)?;
        for (lo, n) in [(0, qw), (qw, kw), (qw + kw, kw)] {
            let view = dw.slice(lo * HIDDEN..(lo + n) * HIDDEN);
            let out = GemmOut {
                ld: QKV_WIDTH,
                offset: lo,
                accumulate: false,
            };
            dev.gemm_ex(&dx, &view, &mut dy, t, HIDDEN, n, out)?;
        }
        let want = reference::gemm(&to_f32(&x), &to_f32(&w), t, HIDDEN, QKV_WIDTH);
        push(
            checks,
            "gemm_ex",
            format!(
                "qkv as 3 GEMMs (weight views) into [T={t}, {QKV_WIDTH}] at offsets 0/{qw}/{}",
                qw + kw
            ),
            reference::max_row_rel_err(&to_f32(&dev.download(&dy)?), &want, QKV_WIDTH),
            BF16_TOL,
        );
        let (n, ld, offset) = (1000usize, 1216usize, 100usize);
        let wn = &w[..n * HIDDEN];
        let mut dy = nan_bf16(dev, offset + t * ld)?;
        let out = GemmOut {
            ld,
            offset,
            accumulate: false,
        };
        dev.gemm_ex(&dx, &dev.upload(wn)?, &mut dy, t, HIDDEN, n, out)?;
        let all = dev.download(&dy)?;
        let want = reference::gemm(&to_f32(&x), &to_f32(wn), t, HIDDEN, n);
        let mut got = Vec::with_capacity(t * n);
        let mut outside = 0usize;
        for (i, v) in all.iter().enumerate() {
            let inside = i >= offset && (i - offset) % ld < n && (i - offset) / ld < t;
            if inside {
                got.push(v.to_f32());
            } else if !v.is_nan() {
                outside += 1;
            }
        }
        let err = reference::max_row_rel_err(&got, &want, n);
        push(
            checks,
            "gemm_ex",
            format!(
                "T={t} {HIDDEN}->{n} at offset {offset}, ld {ld}; {outside} elements written outside"
            ),
            if outside > 0 { f64::INFINITY } else { err },
            BF16_TOL,
        );
    }

    // Decode: balanced splits over odd lengths (empty splits included).
    let ctx_lens = [1usize, 63, 1000, 4097];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, Fill::Host)?;
    let (hk, hv) = host_kv(host)?;
    let b = ctx_lens.len();
    let q = rng.bf16_vec(b * qw, 1.0);
    let dq = dev.upload(&q)?;
    let want = reference::paged_attention(
        geometry(),
        &to_f32(&q),
        &[1; 4],
        &ctx_lens,
        &hk,
        &hv,
        &setup.host_tables,
    );
    let mut ws = DecodeWorkspace::new(dev)?;
    for splits in [1usize, 3, 8] {
        let mut out = nan_bf16(dev, b * qw)?;
        dev.decode_attention_balanced(
            &setup.params(b),
            &dq,
            &setup.k,
            &setup.v,
            &mut out,
            &mut ws,
            splits,
        )?;
        push(
            checks,
            "decode_attention_balanced",
            format!("ctx 1/63/1000/4097, {splits} splits per sequence"),
            reference::max_row_rel_err(&to_f32(&dev.download(&out)?), &want, qw),
            BF16_TOL,
        );
    }
    drop((setup, hk, hv));

    // Decode at the engine's batch: 64 mixed contexts, longest first, checked
    // at 12 sequences (first, last, longest, shortest and random ones).
    let mut lens = mixed_decode_lengths(DECODE_BATCH, 64);
    lens.sort_unstable_by(|a, b| b.cmp(a));
    let max_ctx = lens.iter().copied().max().unwrap_or(1);
    let (setup, host) = PagedSetup::new(dev, rng, &lens, Fill::DeviceThenHost)?;
    let (hk, hv) = host_kv(host)?;
    let q = rng.bf16_vec(DECODE_BATCH * qw, 1.0);
    let dq = dev.upload(&q)?;
    let mut rows = vec![0, 1, DECODE_BATCH / 2, DECODE_BATCH - 2, DECODE_BATCH - 1];
    while rows.len() < 12 {
        rows.push(rng.below(DECODE_BATCH));
    }
    rows.sort_unstable();
    rows.dedup();
    let want = reference::paged_attention_rows(
        geometry(),
        &to_f32(&q),
        &[1; DECODE_BATCH],
        &lens,
        &hk,
        &hv,
        &setup.host_tables,
        &rows,
    );
    drop((hk, hv));
    let p = setup.params(DECODE_BATCH);
    let label = format!(
        "B={DECODE_BATCH} mixed ctx {}..{max_ctx} longest first, {} of 64 sequences",
        lens.last().copied().unwrap_or(0),
        rows.len()
    );
    for variant in 0..5 {
        let mut out = nan_bf16(dev, DECODE_BATCH * qw)?;
        let (kernel, what) = match variant {
            0 => {
                let s = dev.decode_attention(
                    &p, &dq, &setup.k, &setup.v, &mut out, &mut ws, max_ctx, None,
                )?;
                ("decode_attention", format!("{s} split(s) (default)"))
            }
            1 => {
                let s = dev.decode_attention(
                    &p,
                    &dq,
                    &setup.k,
                    &setup.v,
                    &mut out,
                    &mut ws,
                    max_ctx,
                    Some(4),
                )?;
                ("decode_attention", format!("{s} splits"))
            }
            v => {
                let s = [1usize, 2, 4][v - 2];
                dev.decode_attention_balanced(&p, &dq, &setup.k, &setup.v, &mut out, &mut ws, s)?;
                (
                    "decode_attention_balanced",
                    format!("{s} splits per sequence"),
                )
            }
        };
        let got = pick_rows(&to_f32(&dev.download(&out)?), &rows, qw);
        push(
            checks,
            kernel,
            format!("{label}, {what}"),
            reference::max_row_rel_err(&got, &want, qw),
            BF16_TOL,
        );
    }
    drop(setup);

    // Prefill over several tiles of every shape: ragged 3 × 2560 and a
    // 2048-token chunk after a 6144-token prefix, in one call.
    let q_lens = [RAGGED_LEN, RAGGED_LEN, RAGGED_LEN, 2048];
    let ctx_lens = [RAGGED_LEN, RAGGED_LEN, RAGGED_LEN, 8192];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, Fill::DeviceThenHost)?;
    let (hk, hv) = host_kv(host)?;
    let total: usize = q_lens.iter().sum();
    let q = rng.bf16_vec(total * qw, 1.0);
    let dq = dev.upload(&q)?;
    let mut cu = vec![0i32];
    let mut rows = Vec::new();
    for &l in &q_lens {
        let start = cu.last().copied().unwrap_or(0) as usize;
        rows.extend(edge_rows(l, 6, rng).into_iter().map(|r| start + r));
        cu.push((start + l) as i32);
    }
    let dcu = dev.upload(&cu)?;
    let want = reference::paged_attention_rows(
        geometry(),
        &to_f32(&q),
        &q_lens,
        &ctx_lens,
        &hk,
        &hv,
        &setup.host_tables,
        &rows,
    );
    drop((hk, hv));
    let default = dev.default_prefill_tile(RAGGED_LEN, 8192, q_lens.len(), Q_HEADS);
    for tile in dev.prefill_tiles() {
        let mut out = nan_bf16(dev, total * qw)?;
        dev.prefill_attention_tile(
            &setup.params(q_lens.len()),
            &dq,
            &setup.k,
            &setup.v,
            &mut out,
            &dcu,
            total,
            RAGGED_LEN,
            tile,
        )?;
        let got = pick_rows(&to_f32(&dev.download(&out)?), &rows, qw);
        push(
            checks,
            &format!("prefill_attention ({})", tile.label()),
            format!(
                "ragged 3×{RAGGED_LEN} + 2048 after 6144 (ctx 8192){}, {} rows at tile edges + 6 random per sequence",
                if tile == default {
                    ", default tile"
                } else {
                    ""
                },
                rows.len()
            ),
            reference::max_row_rel_err(&got, &want, qw),
            BF16_TOL,
        );
    }
    Ok(())
}

/// A GEMM at one engine shape, with rotating weight copies totalling ≥ 3× L2.
pub(crate) struct GemmCase {
    x: CudaSlice<bf16>,
    ws: Vec<CudaSlice<bf16>>,
    y: CudaSlice<bf16>,
    t: usize,
    k: usize,
    n: usize,
    /// Three GEMMs (q, k, v) from views of the fused weight into the fused buffer.
    split_qkv: bool,
    accumulate: bool,
    i: usize,
}

impl GemmCase {
    pub(crate) fn new(
        dev: &CudaDevice,
        rng: &mut SplitMix,
        (t, k, n): (usize, usize, usize),
        split_qkv: bool,
        accumulate: bool,
    ) -> Result<Self, CudaError> {
        let wbytes = n * k * 2;
        let copies = (3 * dev.info().l2_bytes.max(1))
            .div_ceil(wbytes)
            .clamp(1, 8);
        let mut ws = Vec::with_capacity(copies);
        for _ in 0..copies {
            let mut w = dev.alloc_bf16(n * k)?;
            dev.fill_uniform(&mut w, rng.next_u64(), 0.02)?;
            ws.push(w);
        }
        let mut x = dev.alloc_bf16(t * k)?;
        dev.fill_uniform(&mut x, rng.next_u64(), 1.0)?;
        let mut y = dev.alloc_bf16(t * n)?;
        if accumulate {
            dev.fill_uniform(&mut y, rng.next_u64(), 1.0)?;
        }
        Ok(Self {
            x,
            ws,
            y,
            t,
            k,
            n,
            split_qkv,
            accumulate,
            i: 0,
        })
    }

    pub(crate) fn launch(&mut self, dev: &CudaDevice) -> Result<(), CudaError> {
        self.i = (self.i + 1) % self.ws.len();
        let w = &self.ws[self.i];
        let (t, k, n) = (self.t, self.k, self.n);
        if self.split_qkv {
            let (qw, kw) = (Q_HEADS * HEAD_DIM, KV_HEADS * HEAD_DIM);
            for (lo, width) in [(0, qw), (qw, kw), (qw + kw, kw)] {
                let view = w.slice(lo * k..(lo + width) * k);
                let out = GemmOut {
                    ld: n,
                    offset: lo,
                    accumulate: false,
                };
                dev.gemm_ex(&self.x, &view, &mut self.y, t, k, width, out)?;
            }
            Ok(())
        } else if self.accumulate {
            dev.gemm_acc(&self.x, w, &mut self.y, t, k, n)
        } else {
            dev.gemm(&self.x, w, &mut self.y, t, k, n)
        }
    }

    fn flops(&self) -> f64 {
        2.0 * (self.t * self.k * self.n) as f64
    }

    /// [`CudaDevice::tune_gemm`] for this case's shape over its weight copies (so that
    /// the candidates read their weights from DRAM, as in a decode step).
    fn tune(&mut self, g: &mut Gpu<'_>) -> Result<GemmTuning, CudaError> {
        let ws: Vec<&CudaSlice<bf16>> = self.ws.iter().collect();
        let out = GemmOut {
            accumulate: self.accumulate,
            ..GemmOut::dense(self.n)
        };
        g.dev.tune_gemm(
            &mut g.timer,
            &self.x,
            &ws,
            &mut self.y,
            self.t,
            self.k,
            self.n,
            out,
        )
    }
}

/// Causal prefill of `batch` sequences of `len` new tokens each (no prefix).
struct PrefillCase {
    setup: PagedSetup,
    q: CudaSlice<bf16>,
    out: CudaSlice<bf16>,
    cu: CudaSlice<i32>,
    batch: usize,
    len: usize,
}

impl PrefillCase {
    fn new(
        dev: &CudaDevice,
        rng: &mut SplitMix,
        batch: usize,
        len: usize,
    ) -> Result<Self, CudaError> {
        let (setup, _) = PagedSetup::new(dev, rng, &vec![len; batch], Fill::Device)?;
        let total = batch * len;
        let mut q = dev.alloc_bf16(total * Q_HEADS * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let out = dev.alloc_bf16(total * Q_HEADS * HEAD_DIM)?;
        let cu: Vec<i32> = (0..=batch).map(|b| (b * len) as i32).collect();
        Ok(Self {
            setup,
            q,
            out,
            cu: dev.upload(&cu)?,
            batch,
            len,
        })
    }

    fn launch(&mut self, dev: &CudaDevice, tile: PrefillTile) -> Result<(), CudaError> {
        dev.prefill_attention_tile(
            &self.setup.params(self.batch),
            &self.q,
            &self.setup.k,
            &self.setup.v,
            &mut self.out,
            &self.cu,
            self.batch * self.len,
            self.len,
            tile,
        )
    }

    fn launch_tuned(
        &mut self,
        dev: &CudaDevice,
        k: &super::tuned::CompiledPrefill,
    ) -> Result<(), CudaError> {
        dev.prefill_attention_compiled(
            &self.setup.params(self.batch),
            &self.q,
            &self.setup.k,
            &self.setup.v,
            &mut self.out,
            &self.cu,
            self.batch * self.len,
            self.len,
            k,
        )
    }

    fn flops(&self) -> f64 {
        self.batch as f64 * attn_flops_causal(self.len, Q_HEADS)
    }
}

/// The timer and the per-row settings of one GPU run.
struct Gpu<'a> {
    dev: &'a CudaDevice,
    timer: LaunchTimer,
    warm: usize,
    reps: usize,
    launches: usize,
}

impl Gpu<'_> {
    fn time(&mut self, f: impl FnMut() -> Result<(), CudaError>) -> Result<TimeStats, CudaError> {
        self.timer
            .time(self.dev, self.warm, self.reps, self.launches, f)
    }
}

/// Target of a prefill row: PyTorch SDPA at the same shape where measured,
/// else 300 TFLOP/s at 8192.
fn prefill_target(row: &mut Row, baseline: Option<f64>, s: usize) {
    row.baseline = baseline;
    row.target = match baseline {
        Some(b) => Some(Target {
            goal: ">= PyTorch SDPA".into(),
            met: row.rate >= b,
        }),
        None if s == 8192 => Some(Target {
            goal: ">= 300 TFLOP/s".into(),
            met: row.rate >= 300.0,
        }),
        None => None,
    };
}

/// Checks, then times every kernel on the GPU.
pub fn run_cuda(opts: &BenchOptions) -> Result<Report, CudaError> {
    let mut dev = CudaDevice::new(0)?;
    let tuned_lines = match &opts.tuning {
        Some(t) => {
            let done = dev.use_tuning(t)?;
            done.applied.into_iter().chain(done.skipped).collect()
        }
        None => Vec::new(),
    };
    let info = dev.info().clone();
    let mut rng = SplitMix::new(opts.seed);
    let (launches, reps) = (opts.launches(), opts.repeats());
    let mut report = Report::new(
        "cuda",
        info.name.clone(),
        format!(
            "driver {}, CUDA driver API {}.{}, {} SMs, {} MB L2",
            info.driver_release
                .as_deref()
                .unwrap_or("(release unknown)"),
            info.driver_version / 1000,
            (info.driver_version % 1000) / 10,
            info.sm_count,
            info.l2_bytes >> 20
        ),
        info.arch.clone(),
        format!(
            "median (p10–p90) of {reps} samples, each {launches} back-to-back launches between two CUDA events / {launches}, \
             after a read-probe hold so the host has queued them all (method at the top of kernels/src/cuda/bench.rs)"
        ),
    );
    report.notes.extend(
        tuned_lines
            .into_iter()
            .map(|l| format!("tuning table: {l}")),
    );
    let tiles = checked_tiles(&dev, opts);
    if opts.check_tiles.is_some() {
        report.notes.push(format!(
            "--check-tiles: the prefill attention checks ran on {} only",
            tiles
                .iter()
                .map(|t| t.label())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if opts.own_checks_only {
        report.checks = run_checks(&dev, &mut rng, false, &tiles)?;
        report.notes.push(
            "--own-checks-only: fuselab's kernels checked, no cuBLAS GEMM run, nothing timed"
                .into(),
        );
        return Ok(report);
    }
    let mut g = Gpu {
        dev: &dev,
        timer: LaunchTimer::new(&dev)?,
        warm: 3,
        reps,
        launches,
    };

    // Ceilings: read-only probe, copy, GEMM 8192³.
    let n = if opts.quick { 1 << 29 } else { 1 << 31 }; // bf16 elements: 1 / 4 GiB
    let mut src = dev.alloc_bf16(n)?;
    dev.fill_uniform(&mut src, rng.next_u64(), 1.0)?;
    let mut sink = dev
        .stream()
        .alloc_zeros::<u32>(dev.read_probe_blocks())
        .map_err(CudaError::driver("allocating the read probe's sink"))?;
    let t = g.time(|| dev.read_probe(&src, &mut sink))?;
    report.read_gbs = (n * 2) as f64 / (t.median_ms * 1e-3) / 1e9;
    report.push_row(
        "read_probe",
        format!("{} GiB read", (n * 2) >> 30),
        t,
        None,
        (n * 2) as f64,
        Ceiling::Read,
    );
    drop((src, sink));
    let n = if opts.quick { 1 << 28 } else { 1 << 29 }; // 0.5 / 1 GiB each way
    let mut src = dev.alloc_bf16(n)?;
    dev.fill_uniform(&mut src, rng.next_u64(), 1.0)?;
    let mut dst = dev.alloc_bf16(n)?;
    let t = g.time(|| dev.copy(&src, &mut dst))?;
    report.copy_gbs = 2.0 * (n * 2) as f64 / (t.median_ms * 1e-3) / 1e9;
    report.push_row(
        "copy",
        format!("{} MiB read + written", (n * 2) >> 20),
        t,
        None,
        2.0 * (n * 2) as f64,
        Ceiling::Copy,
    );
    drop((src, dst));
    let gs = 8192;
    let mut a = dev.alloc_bf16(gs * gs)?;
    let mut bm = dev.alloc_bf16(gs * gs)?;
    dev.fill_uniform(&mut a, rng.next_u64(), 1.0)?;
    dev.fill_uniform(&mut bm, rng.next_u64(), 1.0)?;
    let mut c = dev.alloc_bf16(gs * gs)?;
    let t = g.time(|| dev.gemm(&a, &bm, &mut c, gs, gs, gs))?;
    report.gemm_tflops = 2.0 * (gs as f64).powi(3) / (t.median_ms * 1e-3) / 1e12;
    drop((a, bm, c));
    // The rows above were pushed before their ceilings were known.
    let (rg, cg) = (report.read_gbs, report.copy_gbs);
    for r in &mut report.rows {
        let c = if r.ceiling == Ceiling::Read { rg } else { cg };
        r.fraction = if c > 0.0 { r.rate / c } else { f64::NAN };
    }

    let t0 = Instant::now();
    report.checks = run_checks(&dev, &mut rng, true, &tiles)?;
    report.notes.push(format!(
        "checks took {:.1} s (f64 references on one CPU thread)",
        t0.elapsed().as_secs_f64()
    ));
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.kernel.clone())
        .collect();
    let mut seen = Vec::new();
    for f in &failed {
        if !seen.contains(f) {
            report
                .notes
                .push(format!("{f} failed a check and was not timed"));
            seen.push(f.clone());
        }
    }
    let base = &opts.baseline;
    for (key, what, unit) in [
        ("read_gbs", "PyTorch read-only sum", "GB/s"),
        ("copy_gbs", "PyTorch device copy", "GB/s"),
        ("gemm8192_tflops", "PyTorch bf16 matmul 8192³", "TFLOP/s"),
    ] {
        if let Some(b) = base.get(key) {
            report
                .notes
                .push(format!("{what} in the same command: {b:.1} {unit}"));
        }
    }
    if let Some(b) = base.get("read_gbs")
        && report.read_gbs > 0.0
    {
        report.comparisons.push(Comparison {
            name: "read probe: fuselab / PyTorch sum".into(),
            ratio: report.read_gbs / b,
            detail: "below 1: the ceiling for read-bound rows is set low".into(),
        });
    }

    let sel = Select {
        failed,
        only: opts.only.as_deref(),
    };
    elementwise_rows(&mut g, &mut rng, opts, &sel, &mut report)?;
    gemm_rows(&mut g, &mut rng, opts, &sel, &mut report)?;
    decode_rows(&mut g, &mut rng, opts, &sel, &mut report)?;
    prefill_rows(&mut g, &mut rng, opts, &sel, &mut report)?;
    if report.rows.iter().any(|r| r.host_limited > 0) {
        report.notes.push(
            "rows marked host-limited had samples in which the host took longer to enqueue the launches \
             than the hold plus the GPU time: their times may include host gaps"
                .into(),
        );
    }
    if let Some(secs) = opts.sustained {
        sustained_rows(&mut g, &mut rng, secs, &sel, &mut report)?;
    }
    Ok(report)
}

/// Which rows to time: none whose kernel failed a check, and with `--only`
/// those whose kernel name starts with it.
struct Select<'a> {
    failed: Vec<String>,
    only: Option<&'a str>,
}

impl Select<'_> {
    /// Whether a row of kernel `name` is timed.
    fn row(&self, name: &str) -> bool {
        !self.failed.iter().any(|f| name.starts_with(f.as_str()))
            && self.only.is_none_or(|o| name.starts_with(o))
    }

    /// [`Self::row`] where a longer name with the same start must not count
    /// (`decode_attention` without `decode_attention_balanced`).
    fn row_exact(&self, name: &str) -> bool {
        !self.failed.iter().any(|f| f == name)
            && self
                .only
                .is_none_or(|o| name.starts_with(o) && !o.starts_with(&format!("{name}_")))
    }

    /// Whether any row whose kernel name starts with `prefix` may be timed.
    fn group(&self, prefix: &str) -> bool {
        self.only
            .is_none_or(|o| o.starts_with(prefix) || prefix.starts_with(o))
    }
}

fn elementwise_rows(
    g: &mut Gpu<'_>,
    rng: &mut SplitMix,
    opts: &BenchOptions,
    sel: &Select<'_>,
    report: &mut Report,
) -> Result<(), CudaError> {
    let dev = g.dev;
    let freqs: Vec<f32> = inv_freq().iter().map(|&f| f as f32).collect();
    let dfreq = dev.upload(&freqs)?;
    let tokens: &[usize] = if opts.quick { &[8192] } else { &[64, 8192] };
    for &t in tokens {
        let pos: Vec<i32> = (0..t as i32).collect();
        let dpos = dev.upload(&pos)?;
        if sel.row("rms_norm") {
            let mut x = dev.alloc_bf16(t * HIDDEN)?;
            dev.fill_uniform(&mut x, rng.next_u64(), 1.0)?;
            let mut w = dev.alloc_bf16(HIDDEN)?;
            dev.fill_uniform(&mut w, rng.next_u64(), 1.0)?;
            let mut y = dev.alloc_bf16(t * HIDDEN)?;
            let st = g.time(|| dev.rms_norm(&x, &w, &mut y, t, HIDDEN, EPS))?;
            report.push_row(
                "rms_norm",
                format!("T={t} hidden={HIDDEN}"),
                st,
                None,
                (2 * t * HIDDEN * 2) as f64,
                Ceiling::Copy,
            );
        }
        if sel.row("rope") {
            let mut q = dev.alloc_bf16(t * Q_HEADS * HEAD_DIM)?;
            let mut k = dev.alloc_bf16(t * KV_HEADS * HEAD_DIM)?;
            dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
            dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
            let st = g.time(|| dev.rope(&mut q, &mut k, &dpos, &dfreq, t, Q_HEADS, KV_HEADS))?;
            let bytes = 2 * t * (Q_HEADS + KV_HEADS) * HEAD_DIM * 2;
            report.push_row(
                "rope",
                format!("T={t} 32q+8kv heads"),
                st,
                None,
                bytes as f64,
                Ceiling::Copy,
            );
        }
        if sel.row("silu_mul") {
            let mut gu = dev.alloc_bf16(t * 2 * FFN)?;
            dev.fill_uniform(&mut gu, rng.next_u64(), 4.0)?;
            let mut out = dev.alloc_bf16(t * FFN)?;
            let st = g.time(|| dev.silu_mul(&gu, &mut out, t, FFN))?;
            report.push_row(
                "silu_mul",
                format!("T={t} ffn={FFN}"),
                st,
                None,
                (3 * t * FFN * 2) as f64,
                Ceiling::Copy,
            );
        }
        let w = KV_HEADS * HEAD_DIM;
        let cap = 4 * t;
        if sel.row("kv_write") {
            let mut k = dev.alloc_bf16(t * w)?;
            let mut v = dev.alloc_bf16(t * w)?;
            dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
            dev.fill_uniform(&mut v, rng.next_u64(), 1.0)?;
            let slots: Vec<i64> = scattered_slots(rng, t, cap)
                .into_iter()
                .map(i64::from)
                .collect();
            let dslots = dev.upload(&slots)?;
            let (mut kc, mut vc) = (dev.alloc_bf16(cap * w)?, dev.alloc_bf16(cap * w)?);
            let st = g.time(|| dev.kv_write(&k, &v, &mut kc, &mut vc, &dslots, t, KV_HEADS))?;
            report.push_row(
                "kv_write",
                format!("T={t} 8 kv heads"),
                st,
                None,
                (2 * 2 * t * w * 2) as f64,
                Ceiling::Copy,
            );
        }
        if sel.row("qkv_rope_cache") {
            let mut qkv = dev.alloc_bf16(t * QKV_WIDTH)?;
            dev.fill_uniform(&mut qkv, rng.next_u64(), 1.0)?;
            let mut q_out = dev.alloc_bf16(t * Q_HEADS * HEAD_DIM)?;
            let dslots = dev.upload(&scattered_slots(rng, t, cap))?;
            let (mut kc, mut vc) = (dev.alloc_bf16(cap * w)?, dev.alloc_bf16(cap * w)?);
            let st = g.time(|| {
                dev.qkv_rope_cache(
                    &qkv, &mut q_out, &mut kc, &mut vc, &dpos, &dslots, &dfreq, t, Q_HEADS,
                    KV_HEADS,
                )
            })?;
            // Reads the fused rows, writes q and the cache's K and V, plus 8 B of metadata a token.
            let bytes = t * (QKV_WIDTH + Q_HEADS * HEAD_DIM + 2 * w) * 2 + 8 * t;
            let rope_kv: f64 = report
                .rows
                .iter()
                .filter(|r| {
                    (r.kernel == "rope" && r.shape == format!("T={t} 32q+8kv heads"))
                        || (r.kernel == "kv_write" && r.shape == format!("T={t} 8 kv heads"))
                })
                .map(|r| r.time_us)
                .sum();
            let row = report.push_row(
                "qkv_rope_cache",
                format!(
                    "T={t} fused qkv → q + paged K/V ({:.1} MB)",
                    bytes as f64 / 1e6
                ),
                st,
                None,
                bytes as f64,
                Ceiling::Copy,
            );
            let fused = row.time_us;
            if rope_kv > 0.0 {
                report.comparisons.push(Comparison {
                    name: format!("qkv_rope_cache T={t}: fused / (rope + kv_write)"),
                    ratio: fused / rope_kv,
                    detail: "below 1: the fused kernel is faster than the two it replaces".into(),
                });
            }
        }
    }
    if !opts.quick {
        report.notes.push(
            "T=64 elementwise rows are L2-resident (their working set is far below L2)".into(),
        );
    }
    Ok(())
}

fn gemm_rows(
    g: &mut Gpu<'_>,
    rng: &mut SplitMix,
    opts: &BenchOptions,
    sel: &Select<'_>,
    report: &mut Report,
) -> Result<(), CudaError> {
    let dev = g.dev;
    let base = &opts.baseline;
    let tokens: &[usize] = if opts.quick {
        &[64, 2048]
    } else {
        &GEMM_TOKENS
    };
    let mut fused_qkv: BTreeMap<usize, f64> = BTreeMap::new();
    // Decode-size rows on cuBLAS, on the skinny kernel and through the cuBLASLt
    // algorithm tune_gemm picks (what the engine's warm-up does), side by side.
    if dev.has_wgmma() {
        let t = SKINNY_MAX_TOKENS;
        for (name, k, n) in LINEARS {
            if !sel.row(&format!("gemm {name}")) {
                continue;
            }
            let mut times = [0.0; 4];
            for (i, label) in [
                "on cuBLAS",
                "skinny",
                "tuned cuBLASLt",
                "skinny, tiled weights",
            ]
            .into_iter()
            .enumerate()
            {
                dev.set_skinny_gemm(i == 1 || i == 3);
                let mut case = GemmCase::new(dev, rng, (t, k, n), false, false)?;
                if i == 3 {
                    for w in &case.ws {
                        dev.tile_for_skinny(w, n, k)?;
                    }
                }
                let label = if i == 2 {
                    let r = case.tune(g)?;
                    format!(
                        "{label} (fastest of {} candidates{})",
                        r.candidates,
                        if r.adopted {
                            ""
                        } else {
                            "; cuBLAS's default kept"
                        }
                    )
                } else if i == 1 || i == 3 {
                    let plan = dev.skinny_plan(k, n);
                    format!("{label} ({} k splits, {} stages)", plan.splits, plan.stages)
                } else {
                    label.to_string()
                };
                let st = g.time(|| case.launch(dev))?;
                dev.clear_gemm_tuning();
                dev.clear_skinny_tiles();
                let row = report.push_row(
                    &format!("gemm {name}"),
                    format!("T={t} {k}->{n} {label}"),
                    st,
                    None,
                    (n * k * 2) as f64,
                    Ceiling::Read,
                );
                times[i] = row.time_us;
            }
            dev.set_skinny_gemm(false);
            report.comparisons.push(Comparison {
                name: format!("gemm {name} T={t}: skinny / cuBLAS"),
                ratio: times[1] / times[0],
                detail: "the skinny kernel reading the row-major weight by TMA boxes; below 1: \
                         faster than cuBLAS"
                    .into(),
            });
            report.comparisons.push(Comparison {
                name: format!("gemm {name} T={t}: skinny tiled / cuBLAS"),
                ratio: times[3] / times[0],
                detail: "the skinny kernel on the weight's tiled copy (what --cuda-skinny-gemm \
                         runs); below 1: faster than cuBLAS"
                    .into(),
            });
            report.comparisons.push(Comparison {
                name: format!("gemm {name} T={t}: tuned cuBLASLt / cuBLAS"),
                ratio: times[2] / times[0],
                detail: "below 1: the tuned algorithm is faster (the engine tunes its decode \
                         GEMMs at the warm-up with --cuda-gemm-tuning)"
                    .into(),
            });
            // Every plan of the skinny kernel at this shape on tiled weights, so that
            // skinny_plan's rule is read off measurements.
            let mut case = GemmCase::new(dev, rng, (t, k, n), false, false)?;
            for w in &case.ws {
                dev.tile_for_skinny(w, n, k)?;
            }
            for splits in SKINNY_SPLITS {
                for stages in [3, 4, 8] {
                    let plan = SkinnyPlan { splits, stages };
                    let st = g.time(|| {
                        case.i = (case.i + 1) % case.ws.len();
                        dev.gemm_skinny_planned(
                            &case.x,
                            &case.ws[case.i],
                            &mut case.y,
                            t,
                            k,
                            n,
                            GemmOut::dense(n),
                            plan,
                        )
                    })?;
                    report.push_row(
                        &format!("gemm {name}"),
                        format!(
                            "T={t} {k}->{n} skinny plan (tiled): {splits} k splits, {stages} stages ({} blocks)",
                            splits * n / 128
                        ),
                        st,
                        None,
                        (n * k * 2) as f64,
                        Ceiling::Read,
                    );
                }
            }
            dev.clear_skinny_tiles();
        }
    }
    for (name, k, n) in LINEARS {
        if !sel.row(&format!("gemm {name}")) {
            continue;
        }
        for &t in tokens {
            let mut case = GemmCase::new(dev, rng, (t, k, n), false, false)?;
            let st = g.time(|| case.launch(dev))?;
            let row = report.push_row(
                &format!("gemm {name}"),
                format!("T={t} {k}->{n}"),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            row.baseline = base.get(&format!("linear_{name}_t{t}"));
            if name == "qkv" {
                fused_qkv.insert(t, row.time_us);
            }
        }
    }
    for &t in tokens {
        if !sel.row("gemm_ex") {
            break;
        }
        let mut case = GemmCase::new(dev, rng, (t, HIDDEN, QKV_WIDTH), true, false)?;
        let st = g.time(|| case.launch(dev))?;
        let row = report.push_row(
            "gemm_ex qkv as q, k, v",
            format!("T={t} {HIDDEN}->{QKV_WIDTH} as 3 GEMMs into the fused buffer"),
            st,
            Some(case.flops()),
            0.0,
            Ceiling::Gemm,
        );
        row.baseline = base.get(&format!("linear_qkv3_t{t}"));
        let split = row.time_us;
        if let Some(&fused) = fused_qkv.get(&t) {
            report.comparisons.push(Comparison {
                name: format!("qkv T={t}: 3 GEMMs into the fused buffer / 1 fused GEMM"),
                ratio: split / fused,
                detail: "above 1: one fused GEMM is faster (the engine runs one at every size)"
                    .into(),
            });
        }
    }
    for (name, k, n) in ACC_LINEARS {
        if !sel.row(&format!("gemm_acc {name}")) {
            continue;
        }
        for &t in tokens {
            let mut case = GemmCase::new(dev, rng, (t, k, n), false, true)?;
            let st = g.time(|| case.launch(dev))?;
            let row = report.push_row(
                &format!("gemm_acc {name}"),
                format!("T={t} {k}->{n}, y += x·wᵀ"),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            row.baseline = base.get(&format!("linear_acc_{name}_t{t}"));
        }
    }
    if tokens.contains(&64) && sel.group("gemm") {
        report.notes.push(
            "GEMM baselines are cuBLAS through PyTorch: both sides call the same library, so a ratio \
             far from 1 points at the timing or the data, not at kernel quality"
                .into(),
        );
    }
    Ok(())
}

fn decode_rows(
    g: &mut Gpu<'_>,
    rng: &mut SplitMix,
    opts: &BenchOptions,
    sel: &Select<'_>,
    report: &mut Report,
) -> Result<(), CudaError> {
    let dev = g.dev;
    let batch = DECODE_BATCH;
    let mixed = mixed_decode_lengths(batch, 64);
    let mut longest_first = mixed.clone();
    longest_first.sort_unstable_by(|a, b| b.cmp(a));
    let cases: Vec<(String, Vec<usize>)> = vec![
        ("ctx=4096".to_string(), vec![4096; batch]),
        (
            format!(
                "mixed ctx N(2600, 780) in [256, 4224], mean {:.0}, in draw order",
                mixed.iter().sum::<usize>() as f64 / batch as f64
            ),
            mixed.clone(),
        ),
        ("mixed ctx, longest first".to_string(), longest_first),
    ];
    let mut q = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
    dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
    let mut out = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
    let mut ws = DecodeWorkspace::new(dev)?;
    for (ci, (label, lens)) in cases.iter().enumerate() {
        if !sel.group("decode_attention") {
            break;
        }
        let (setup, _) = PagedSetup::new(dev, rng, lens, Fill::Device)?;
        let p = setup.params(batch);
        let max_ctx = lens.iter().copied().max().unwrap_or(1);
        let bytes = (2 * lens.iter().sum::<usize>() * KV_HEADS * HEAD_DIM * 2) as f64;
        let auto = dev.decode_splits(batch, KV_HEADS, max_ctx);
        let mut sweep: Vec<Option<usize>> = vec![None];
        if !opts.quick && ci == 0 {
            sweep.extend(
                [1, 2, 4, 8, 16]
                    .into_iter()
                    .filter(|&s| s != auto)
                    .map(Some),
            );
        }
        for s in sweep {
            if !sel.row_exact("decode_attention") {
                break;
            }
            let mut used = 0;
            let st = g.time(|| {
                used = dev
                    .decode_attention(&p, &q, &setup.k, &setup.v, &mut out, &mut ws, max_ctx, s)?;
                Ok(())
            })?;
            let shape = format!(
                "B={batch} {label} splits={used}{}",
                match (s, dev.tuned_decode(batch)) {
                    (None, Some(t)) => format!(" (default: tuned {})", t.config.label()),
                    (None, None) => " (default)".into(),
                    _ => String::new(),
                }
            );
            let row = report.push_row("decode_attention", shape, st, None, bytes, Ceiling::Read);
            if s.is_none() {
                if ci == 0 {
                    row.baseline = opts.baseline.get("sdpa_decode_b64_c4096");
                }
                row.target = Some(Target {
                    goal: ">= 90% of the read probe".into(),
                    met: row.fraction >= 0.9,
                });
            }
        }
        if sel.row("decode_attention_balanced") {
            let splits: &[usize] = if opts.quick { &[2] } else { &[1, 2, 4] };
            for &s in splits {
                let st = g.time(|| {
                    dev.decode_attention_balanced(&p, &q, &setup.k, &setup.v, &mut out, &mut ws, s)
                })?;
                report.push_row(
                    "decode_attention_balanced",
                    format!("B={batch} {label} {s} splits per sequence"),
                    st,
                    None,
                    bytes,
                    Ceiling::Read,
                );
            }
        }
    }
    Ok(())
}

fn prefill_rows(
    g: &mut Gpu<'_>,
    rng: &mut SplitMix,
    opts: &BenchOptions,
    sel: &Select<'_>,
    report: &mut Report,
) -> Result<(), CudaError> {
    let dev = g.dev;
    let base = &opts.baseline;
    // Causal prefill attention, one sequence of S new tokens, every tile.
    let lens: &[usize] = if opts.quick { &[2048] } else { &PREFILL_LENS };
    for &s in lens {
        if !sel.group("prefill_attention") {
            break;
        }
        let mut case = PrefillCase::new(dev, rng, 1, s)?;
        for tile in dev.prefill_tiles() {
            let name = format!("prefill_attention ({})", tile.label());
            if !sel.row(&name) {
                continue;
            }
            let st = g.time(|| case.launch(dev, tile))?;
            let default = tile == dev.default_prefill_tile(s, s, 1, Q_HEADS);
            let row = report.push_row(
                &name,
                format!(
                    "causal S={s} 32q/8kv{}",
                    if default { " (default tile)" } else { "" }
                ),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            prefill_target(row, base.get(&format!("sdpa_causal_{s}")), s);
        }
        if let Some(k) = dev.tuned_prefill(s)
            && sel.row("prefill_attention (tuned)")
        {
            let st = g.time(|| case.launch_tuned(dev, k))?;
            let row = report.push_row(
                "prefill_attention (tuned)",
                format!("causal S={s} 32q/8kv {} (default)", k.config.label()),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            prefill_target(row, base.get(&format!("sdpa_causal_{s}")), s);
        }
    }

    // Ragged: 3 sequences of 2560 new tokens in one call.
    if sel.group("prefill_attention") {
        let mut case = PrefillCase::new(dev, rng, RAGGED_SEQS, RAGGED_LEN)?;
        let default = dev.default_prefill_tile(RAGGED_LEN, RAGGED_LEN, RAGGED_SEQS, Q_HEADS);
        let tiles: Vec<PrefillTile> = if opts.quick {
            vec![default]
        } else {
            std::iter::once(default)
                .chain(dev.prefill_tiles().into_iter().filter(|&t| t != default))
                .collect()
        };
        for tile in tiles {
            let name = format!("prefill_attention ({})", tile.label());
            if !sel.row(&name) {
                continue;
            }
            let st = g.time(|| case.launch(dev, tile))?;
            let row = report.push_row(
                &name,
                format!(
                    "ragged {RAGGED_SEQS}×{RAGGED_LEN} causal in one call{}",
                    if tile == default {
                        " (default tile)"
                    } else {
                        ""
                    }
                ),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            prefill_target(row, base.get("sdpa_ragged_3x2560"), 0);
        }
        if let Some(k) = dev.tuned_prefill(RAGGED_LEN)
            && sel.row("prefill_attention (tuned)")
        {
            let st = g.time(|| case.launch_tuned(dev, k))?;
            let row = report.push_row(
                "prefill_attention (tuned)",
                format!(
                    "ragged {RAGGED_SEQS}×{RAGGED_LEN} causal in one call {} (default)",
                    k.config.label()
                ),
                st,
                Some(case.flops()),
                0.0,
                Ceiling::Gemm,
            );
            prefill_target(row, base.get("sdpa_ragged_3x2560"), 0);
        }
    }

    // Chunk after prefix: an 8192-token prompt as chunks, each a call whose
    // queries sit after the prefix already in the cache; one unit = every chunk.
    if sel.group("prefill_attention") {
        let (setup, _) = PagedSetup::new(dev, rng, &[CHUNK_PROMPT], Fill::Device)?;
        let mut one_pass = None;
        let sizes: Vec<usize> = CHUNK_SIZES.iter().rev().copied().collect();
        for c in sizes {
            let chunks = CHUNK_PROMPT / c;
            // The engine's choice per chunk: its block table spans just its context.
            let tiles: Vec<PrefillTile> = (1..=chunks)
                .map(|i| dev.default_prefill_tile(c, i * c, 1, Q_HEADS))
                .collect();
            let tile = tiles[tiles.len() - 1];
            let name = format!("prefill_attention ({})", tile.label());
            if !sel.row(&name) {
                continue;
            }
            let mut labels: Vec<&str> = tiles.iter().map(|t| t.label()).collect();
            labels.dedup();
            let ctxs: Vec<CudaSlice<i32>> = (1..=chunks)
                .map(|i| dev.upload(&[(i * c) as i32]))
                .collect::<Result<_, _>>()?;
            let mut q = dev.alloc_bf16(c * Q_HEADS * HEAD_DIM)?;
            dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
            let mut out = dev.alloc_bf16(c * Q_HEADS * HEAD_DIM)?;
            let cu = dev.upload(&[0i32, c as i32])?;
            let st = g.time(|| {
                for (i, (ctx, &tile)) in ctxs.iter().zip(&tiles).enumerate() {
                    let p = PagedAttention {
                        ctx_lens: ctx,
                        max_blocks_per_seq: ((i + 1) * c).div_ceil(BLOCK_SIZE),
                        ..setup.params(1)
                    };
                    dev.prefill_attention_tile(
                        &p, &q, &setup.k, &setup.v, &mut out, &cu, c, c, tile,
                    )?;
                }
                Ok(())
            })?;
            let row = report.push_row(
                &name,
                format!(
                    "{CHUNK_PROMPT}-token prompt as {chunks} chunk(s) of {c} after their prefix (total, default tiles: {})",
                    labels.join(" then ")
                ),
                st,
                Some(attn_flops_causal(CHUNK_PROMPT, Q_HEADS)),
                0.0,
                Ceiling::Gemm,
            );
            let total = row.time_us;
            match one_pass {
                None => one_pass = Some(total),
                Some(one) => {
                    let ratio = total / one;
                    row.target = Some(Target {
                        goal: "within 10% of one pass".into(),
                        met: ratio <= 1.10,
                    });
                    report.comparisons.push(Comparison {
                        name: format!("chunks of {c} after prefix / one {CHUNK_PROMPT} pass"),
                        ratio,
                        detail: "summed time of the chunks over the same tokens in one call (goal ≤ 1.10)"
                            .into(),
                    });
                }
            }
        }
    }
    Ok(())
}

/// The compute-bound rows run back to back for `secs` each, with NVML's median
/// SM clock and power beside them.
fn sustained_rows(
    g: &mut Gpu<'_>,
    rng: &mut SplitMix,
    secs: f64,
    sel: &Select<'_>,
    report: &mut Report,
) -> Result<(), CudaError> {
    let dev = g.dev;
    let nvml = match Nvml::open(0) {
        Ok(n) => Some(Arc::new(n)),
        Err(e) => {
            report.notes.push(format!(
                "sustained mode: {e}; rates recorded without SM clock and power"
            ));
            None
        }
    };
    let secs = secs.max(0.1);
    let burst = |report: &Report, kernel: &str, shape: &str| {
        report
            .rows
            .iter()
            .find(|r| r.kernel == kernel && r.shape == shape)
            .map(|r| r.rate)
    };
    let run = |report: &mut Report,
               kernel: String,
               shape: String,
               flops: f64,
               f: &mut dyn FnMut() -> Result<(), CudaError>|
     -> Result<(), CudaError> {
        let sampler = nvml.as_ref().map(|n| Sampler::start(n.clone()));
        let (launches, ms) = dev.run_for(secs, g.launches, &mut *f)?;
        let samples = sampler.map(Sampler::stop).unwrap_or_default();
        if let Some(e) = &samples.error {
            report
                .notes
                .push(format!("NVML during sustained {kernel} {shape}: {e}"));
        }
        let rate = launches as f64 * flops / (ms * 1e-3) / 1e12;
        let burst_rate = burst(report, &kernel, &shape);
        report.sustained.push(Sustained {
            kernel,
            shape,
            seconds: ms / 1e3,
            launches,
            rate,
            unit: Unit::TflopS,
            burst_rate,
            sm_clock_mhz: samples.median_clock_mhz(),
            power_w: samples.median_power_w(),
            nvml_samples: samples.sm_clock_mhz.len(),
        });
        Ok(())
    };
    for t in [2048usize, 8192] {
        for (name, k, n) in LINEARS {
            if !sel.row(&format!("gemm {name}")) {
                continue;
            }
            let mut case = GemmCase::new(dev, rng, (t, k, n), false, false)?;
            let flops = case.flops();
            run(
                report,
                format!("gemm {name}"),
                format!("T={t} {k}->{n}"),
                flops,
                &mut || case.launch(dev),
            )?;
        }
        if sel.row("gemm_ex") {
            let mut case = GemmCase::new(dev, rng, (t, HIDDEN, QKV_WIDTH), true, false)?;
            let flops = case.flops();
            run(
                report,
                "gemm_ex qkv as q, k, v".into(),
                format!("T={t} {HIDDEN}->{QKV_WIDTH} as 3 GEMMs into the fused buffer"),
                flops,
                &mut || case.launch(dev),
            )?;
        }
        for (name, k, n) in ACC_LINEARS {
            if !sel.row(&format!("gemm_acc {name}")) {
                continue;
            }
            let mut case = GemmCase::new(dev, rng, (t, k, n), false, true)?;
            let flops = case.flops();
            run(
                report,
                format!("gemm_acc {name}"),
                format!("T={t} {k}->{n}, y += x·wᵀ"),
                flops,
                &mut || case.launch(dev),
            )?;
        }
    }
    for s in [8192usize, 16384] {
        let tile = dev.default_prefill_tile(s, s, 1, Q_HEADS);
        let name = format!("prefill_attention ({})", tile.label());
        if !sel.row(&name) {
            continue;
        }
        let mut case = PrefillCase::new(dev, rng, 1, s)?;
        let flops = case.flops();
        run(
            report,
            name,
            format!("causal S={s} 32q/8kv (default tile)"),
            flops,
            &mut || case.launch(dev, tile),
        )?;
    }
    Ok(())
}

/// Statistics of `reps` timed calls of `f` after one warm-up call (one launch each).
fn cpu_time(reps: usize, mut f: impl FnMut()) -> TimeStats {
    f();
    let t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    TimeStats::from_samples(&t, 1).unwrap_or(TimeStats {
        median_ms: f64::NAN,
        p10_ms: f64::NAN,
        p90_ms: f64::NAN,
        launches: 1,
        repeats: 0,
        host_limited: 0,
    })
}

/// Times the CPU references (single thread, f64 accumulation) at reduced shapes.
pub fn run_cpu(opts: &BenchOptions) -> Result<Report, CudaError> {
    let mut rng = SplitMix::new(opts.seed);
    let q = opts.quick;
    let reps = match opts.repeats {
        0 if q => 2,
        0 => 5,
        r => r,
    };
    let mut report = Report::new(
        "cpu",
        format!("{} CPU", std::env::consts::ARCH),
        format!(
            "{} threads available, references run on one",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        std::env::consts::ARCH.into(),
        format!("median (p10–p90) of {reps} timed calls after one warm-up"),
    );
    report
        .notes
        .push("CPU rows run the f64 references at reduced shapes (named in each row)".into());
    let n = if q { 1 << 20 } else { 1 << 25 };
    let src = vec![1.5f32; n];
    let mut dst = vec![0f32; n];
    let ms = cpu_time(reps, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    });
    report.copy_gbs = 2.0 * (n * 4) as f64 / (ms.median_ms * 1e-3) / 1e9;
    let g = if q { 64 } else { 256 };
    let (a, b) = (vec![0.5f32; g * g], vec![0.25f32; g * g]);
    let ms = cpu_time(reps, || {
        std::hint::black_box(reference::gemm(&a, &b, g, g, g));
    });
    report.gemm_tflops = 2.0 * (g as f64).powi(3) / (ms.median_ms * 1e-3) / 1e12;

    let t = if q { 4 } else { 64 };
    let x = to_f32(&rng.bf16_vec(t * HIDDEN, 1.0));
    let w = to_f32(&rng.bf16_vec(HIDDEN, 1.0));
    let ms = cpu_time(reps, || {
        std::hint::black_box(reference::rms_norm(&x, &w, HIDDEN, 1e-5));
    });
    report.push_row(
        "rms_norm",
        format!("T={t} hidden={HIDDEN}"),
        ms,
        None,
        (2 * t * HIDDEN * 4) as f64,
        Ceiling::Copy,
    );

    let mut qk = to_f32(&rng.bf16_vec(t * (Q_HEADS + KV_HEADS) * HEAD_DIM, 1.0));
    let pos: Vec<i32> = (0..t as i32).collect();
    let freqs = inv_freq();
    let ms = cpu_time(reps, || {
        reference::rope(&mut qk, Q_HEADS + KV_HEADS, HEAD_DIM, &pos, &freqs)
    });
    report.push_row(
        "rope",
        format!("T={t} 32q+8kv heads"),
        ms,
        None,
        (2 * qk.len() * 4) as f64,
        Ceiling::Copy,
    );

    let gu = to_f32(&rng.bf16_vec(t * 2 * FFN, 4.0));
    let ms = cpu_time(reps, || {
        std::hint::black_box(reference::silu_mul(&gu, FFN));
    });
    report.push_row(
        "silu_mul",
        format!("T={t} ffn={FFN}"),
        ms,
        None,
        (3 * t * FFN * 4) as f64,
        Ceiling::Copy,
    );

    let (gt, gk, gn) = if q { (2, 512, 512) } else { (8, HIDDEN, 6144) };
    let x = to_f32(&rng.bf16_vec(gt * gk, 1.0));
    let w = to_f32(&rng.bf16_vec(gn * gk, 1.0));
    let ms = cpu_time(reps, || {
        std::hint::black_box(reference::gemm(&x, &w, gt, gk, gn));
    });
    report.push_row(
        "gemm qkv",
        format!("T={gt} {gk}->{gn}"),
        ms,
        Some(2.0 * (gt * gk * gn) as f64),
        0.0,
        Ceiling::Copy,
    );

    let (batch, ctx) = if q { (2, 128) } else { (4, 1024) };
    let ctx_lens = vec![ctx; batch];
    let blocks = batch * ctx / BLOCK_SIZE;
    let kv = to_f32(&rng.bf16_vec(blocks * BLOCK_SIZE * KV_HEADS * HEAD_DIM, 1.0));
    let tables: Vec<Vec<usize>> = (0..batch)
        .map(|b| (b * ctx / BLOCK_SIZE..(b + 1) * ctx / BLOCK_SIZE).collect())
        .collect();
    let qd = to_f32(&rng.bf16_vec(batch * Q_HEADS * HEAD_DIM, 1.0));
    let ms = cpu_time(reps, || {
        std::hint::black_box(reference::paged_attention(
            geometry(),
            &qd,
            &vec![1; batch],
            &ctx_lens,
            &kv,
            &kv,
            &tables,
        ));
    });
    let bytes = (2 * batch * ctx * KV_HEADS * HEAD_DIM * 4) as f64;
    report.push_row(
        "decode_attention",
        format!("B={batch} ctx={ctx}"),
        ms,
        None,
        bytes,
        Ceiling::Copy,
    );

    let s = if q { 64 } else { 512 };
    let kv = to_f32(&rng.bf16_vec(s * KV_HEADS * HEAD_DIM, 1.0));
    let tables = vec![(0..s / BLOCK_SIZE).collect::<Vec<_>>()];
    let qp = to_f32(&rng.bf16_vec(s * Q_HEADS * HEAD_DIM, 1.0));
    let ms = cpu_time(reps.min(2), || {
        std::hint::black_box(reference::paged_attention(
            geometry(),
            &qp,
            &[s],
            &[s],
            &kv,
            &kv,
            &tables,
        ));
    });
    report.push_row(
        "prefill_attention",
        format!("causal S={s} 32q/8kv"),
        ms,
        Some(attn_flops_causal(s, Q_HEADS)),
        0.0,
        Ceiling::Copy,
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(ms: f64) -> TimeStats {
        TimeStats {
            median_ms: ms,
            p10_ms: ms * 0.9,
            p90_ms: ms * 1.2,
            launches: 32,
            repeats: 10,
            host_limited: 0,
        }
    }

    #[test]
    fn baseline_parses_pairs_and_names_bad_lines() {
        let b = Baseline::parse("# torch\ncopy_gbs 4100.5\n\nsdpa_causal_8192 640\n").unwrap();
        assert_eq!(b.get("copy_gbs"), Some(4100.5));
        assert_eq!(b.get("sdpa_causal_8192"), Some(640.0));
        let e = Baseline::parse("copy_gbs\n").unwrap_err().to_string();
        assert!(e.contains("line 1"), "{e}");
        let e = Baseline::parse("a 1\nb x\n").unwrap_err().to_string();
        assert!(e.contains("line 2") && e.contains("`x`"), "{e}");
    }

    #[test]
    fn baseline_reads_the_new_keys() {
        let text = "# torch 2.11 on NVIDIA H200\n# method: graph replay of 32 launches / 32, median of 10\n\
                    read_gbs 4110.2\nsdpa_ragged_3x2560 397.5\nlinear_qkv3_t2048 700.1\n\
                    linear_acc_down_t8192 720.0\nlinear_acc_o_t64 91.5\n";
        let b = Baseline::parse(text).unwrap();
        assert_eq!(b.get("read_gbs"), Some(4110.2));
        assert_eq!(b.get("sdpa_ragged_3x2560"), Some(397.5));
        assert_eq!(b.get("linear_qkv3_t2048"), Some(700.1));
        assert_eq!(b.get("linear_acc_down_t8192"), Some(720.0));
        assert_eq!(b.get("linear_acc_o_t64"), Some(91.5));
        assert_eq!(b.get("linear_qkv_t64"), None);
    }

    #[test]
    fn options_default_to_32_launches_and_10_repeats() {
        let o = BenchOptions::default();
        assert_eq!((o.launches(), o.repeats()), (32, 10));
        let o = BenchOptions {
            quick: true,
            launches: 8,
            ..Default::default()
        };
        assert_eq!((o.launches(), o.repeats()), (32, 5));
        let o = BenchOptions {
            launches: 64,
            repeats: 3,
            ..Default::default()
        };
        assert_eq!((o.launches(), o.repeats()), (64, 3));
    }

    #[test]
    fn mixed_lengths_are_seeded_clamped_and_centred() {
        let a = mixed_decode_lengths(64, 64);
        assert_eq!(a, mixed_decode_lengths(64, 64));
        assert_ne!(a, mixed_decode_lengths(64, 65));
        assert!(a.iter().all(|&l| (256..=4224).contains(&l)), "{a:?}");
        let many = mixed_decode_lengths(20_000, 1);
        let mean = many.iter().sum::<usize>() as f64 / many.len() as f64;
        let var = many.iter().map(|&l| (l as f64 - mean).powi(2)).sum::<f64>() / many.len() as f64;
        assert!((mean - 2600.0).abs() < 25.0, "{mean}");
        assert!((700.0..800.0).contains(&var.sqrt()), "{}", var.sqrt());
    }

    #[test]
    fn edge_rows_cover_every_tile_boundary() {
        let mut rng = SplitMix::new(3);
        let r = edge_rows(2560, 4, &mut rng);
        for want in [
            0, 1, 63, 64, 127, 128, 255, 256, 511, 512, 767, 768, 2303, 2304, 2559,
        ] {
            assert!(r.contains(&want), "{want} missing from {r:?}");
        }
        assert!(r.windows(2).all(|w| w[0] < w[1]));
        assert!(r.iter().all(|&x| x < 2560));
        assert_eq!(edge_rows(1, 2, &mut rng), vec![0]);
    }

    #[test]
    fn selection_skips_failed_kernels_and_honours_only() {
        let s = Select {
            failed: vec!["prefill_attention (r256)".into()],
            only: None,
        };
        assert!(s.row("prefill_attention (r128)"));
        assert!(!s.row("prefill_attention (r256)"));
        assert!(s.group("prefill_attention"));
        let s = Select {
            failed: Vec::new(),
            only: Some("decode_attention_balanced"),
        };
        assert!(s.group("decode_attention"));
        assert!(!s.row_exact("decode_attention"));
        assert!(s.row("decode_attention_balanced"));
        assert!(!s.group("gemm"));
        let s = Select {
            failed: Vec::new(),
            only: Some("decode"),
        };
        assert!(s.row_exact("decode_attention") && s.row("decode_attention_balanced"));
        let s = Select {
            failed: Vec::new(),
            only: Some("gemm_acc"),
        };
        assert!(!s.row("gemm qkv") && s.row("gemm_acc o") && s.group("gemm"));
    }

    #[test]
    fn bit_diffs_and_row_picking() {
        let a = [bf16::ONE, bf16::NAN, bf16::ZERO];
        assert_eq!(bit_diffs(&a, &a), 0);
        assert_eq!(bit_diffs(&a, &[bf16::ONE, bf16::NAN, bf16::NEG_ZERO]), 1);
        assert_eq!(bit_diffs(&a, &a[..2]), 3);
        let all = [0.0f32, 1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(pick_rows(&all, &[2, 0], 2), vec![4.0, 5.0, 0.0, 1.0]);
        assert!(pick_rows(&all, &[3], 2).iter().all(|v| v.is_nan()));
    }

    #[test]
    fn cpu_quick_report_has_every_kernel_and_valid_json() {
        let r = run_cpu(&BenchOptions {
            quick: true,
            seed: 1,
            ..Default::default()
        })
        .unwrap();
        let kernels: Vec<&str> = r.rows.iter().map(|r| r.kernel.as_str()).collect();
        for k in [
            "rms_norm",
            "rope",
            "silu_mul",
            "gemm qkv",
            "decode_attention",
            "prefill_attention",
        ] {
            assert!(kernels.contains(&k), "{k} missing from {kernels:?}");
        }
        assert!(r.rows.iter().all(|r| r.rate.is_finite() && r.rate > 0.0));
        assert!(
            r.rows
                .iter()
                .all(|r| r.p10_us <= r.time_us && r.time_us <= r.p90_us)
        );
        let md = r.markdown();
        assert!(md.contains("| rms_norm |"), "{md}");
        let json = r.json("fuselab kernels --device cpu --quick", "2026-11-30");
        assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
        assert!(json.contains("\"device_kind\": \"cpu\""));
        assert!(json.contains("\"time_p10_us\": ") && json.contains("\"sustained\": [\n  ]"));
    }

    #[test]
    fn gpu_checks_pass_or_skip_without_a_driver() {
        if !crate::cuda::gpu_or_skip("gpu_checks_pass_or_skip_without_a_driver") {
            return;
        }
        let dev = CudaDevice::new(0).unwrap();
        let tiles = dev.prefill_tiles();
        let checks = run_checks(&dev, &mut SplitMix::new(7), true, &tiles).unwrap();
        for c in &checks {
            assert!(c.passed(), "{} {}: {}", c.kernel, c.shape, c.rel_err);
        }
        // --own-checks-only: every check but the cuBLAS GEMMs', all passing.
        let own = run_checks(&dev, &mut SplitMix::new(7), false, &tiles).unwrap();
        let cublas = |c: &Check| {
            matches!(
                c.kernel.as_str(),
                "gemm" | "gemm_acc" | "gemm_tuned" | "gemm_ex"
            )
        };
        assert!(own.iter().all(|c| c.passed() && !cublas(c)));
        assert_eq!(own.len(), checks.iter().filter(|c| !cublas(c)).count());
    }

    #[test]
    fn cuda_device_without_a_driver_is_a_clear_error() {
        if crate::cuda::driver_present() {
            // Only a machine without a driver can check this; a GPU machine has other tests.
            use std::io::Write as _;
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED cuda_device_without_a_driver_is_a_clear_error: a CUDA driver is present"
            );
            return;
        }
        let e = CudaDevice::new(0).unwrap_err().to_string();
        assert!(e.starts_with("no CUDA driver found ("), "{e}");
        let e = run_cuda(&BenchOptions::default()).unwrap_err().to_string();
        assert!(e.starts_with("no CUDA driver found ("), "{e}");
    }

    fn test_report() -> Report {
        let mut r = Report::new(
            "cuda",
            "test".into(),
            "d".into(),
            "sm_90a".into(),
            "median of 10 samples of 32 launches".into(),
        );
        r.copy_gbs = 4000.0;
        r.read_gbs = 4100.0;
        r.gemm_tflops = 800.0;
        r
    }

    #[test]
    fn a_checks_only_report_claims_no_ceilings_and_no_timings() {
        let mut r = test_report();
        (r.copy_gbs, r.read_gbs, r.gemm_tflops) = (0.0, 0.0, 0.0);
        r.checks.push(Check {
            kernel: "rms_norm".into(),
            shape: "T=7".into(),
            rel_err: 1e-3,
            tolerance: BF16_TOL,
        });
        let md = r.markdown();
        assert!(md.contains("ceilings: not measured"), "{md}");
        assert!(!md.contains("read-only probe 0 GB/s"), "{md}");
        assert!(!md.contains("| kernel | shape | time"), "{md}");
        assert!(!md.contains("timing:"), "{md}");
        assert!(md.contains("| rms_norm | T=7 |"), "{md}");
        let mut t = test_report();
        t.push_row("x", "s".into(), stats(2.0), None, 1e6, Ceiling::Read);
        let timed = t.markdown();
        assert!(timed.contains("timing: median of 10 samples"), "{timed}");
        assert!(timed.contains("read-only probe 4100 GB/s"), "{timed}");
    }

    #[test]
    fn checks_and_targets_render() {
        let mut r = test_report();
        r.checks.push(Check {
            kernel: "rope".into(),
            shape: "T=1".into(),
            rel_err: f64::NAN,
            tolerance: BF16_TOL,
        });
        assert!(!r.all_checks_passed());
        let row = r.push_row("x", "s".into(), stats(2.0), Some(8e11), 0.0, Ceiling::Read);
        assert!((row.rate - 400.0).abs() < 1e-9);
        assert!((row.fraction - 0.5).abs() < 1e-12);
        assert_eq!(row.ceiling, Ceiling::Gemm, "FLOP rows are held to the GEMM");
        assert!((row.p10_us - 1800.0).abs() < 1e-9 && (row.p90_us - 2400.0).abs() < 1e-9);
        row.target = Some(Target {
            goal: ">= 300 TFLOP/s".into(),
            met: true,
        });
        let md = r.markdown();
        assert!(
            md.contains("FAILED") && md.contains(">= 300 TFLOP/s met"),
            "{md}"
        );
        assert!(md.contains("| 2000.0 | 1800.0–2400.0 |"), "{md}");
        assert!(md.contains("50.0% gemm8192"), "{md}");
        assert!(md.contains("read-only probe 4100 GB/s"), "{md}");
        let json = r.json("c", "d");
        assert!(json.contains("\"rel_err\": null"));
        assert!(json.contains("\"time_p10_us\": 1800"), "{json}");
        assert!(json.contains("\"ceiling\": \"gemm8192\""), "{json}");
        assert!(json.contains("\"read_gbs\": 4100"), "{json}");
        // The fields make_results.py and older readers use are still there.
        for key in [
            "\"time_us\"",
            "\"rate\"",
            "\"fraction_of_ceiling\"",
            "\"baseline\"",
            "\"target_met\"",
            "\"copy_gbs\"",
            "\"gemm_tflops\"",
        ] {
            assert!(json.contains(key), "{key} missing");
        }
    }

    #[test]
    fn bandwidth_rows_use_their_ceiling_and_flag_host_limits() {
        let mut r = test_report();
        let mut t = stats(1.0);
        t.host_limited = 3;
        let row = r.push_row(
            "decode_attention",
            "B=64".into(),
            t,
            None,
            4.1e9,
            Ceiling::Read,
        );
        assert!((row.rate - 4100.0).abs() < 1e-9);
        assert!((row.fraction - 1.0).abs() < 1e-12);
        let row = r.push_row(
            "kv_write",
            "T=1".into(),
            stats(1.0),
            None,
            2e9,
            Ceiling::Copy,
        );
        assert!((row.fraction - 0.5).abs() < 1e-12);
        let md = r.markdown();
        assert!(md.contains("(3/10 host-limited)"), "{md}");
        assert!(
            md.contains("100.0% read") && md.contains("50.0% copy"),
            "{md}"
        );
    }

    #[test]
    fn comparisons_and_sustained_rows_render_with_and_without_nvml() {
        let mut r = test_report();
        r.comparisons.push(Comparison {
            name: "chunks of 512 after prefix / one 8192 pass".into(),
            ratio: 1.0734,
            detail: "goal ≤ 1.10".into(),
        });
        r.sustained.push(Sustained {
            kernel: "gemm gate_up".into(),
            shape: "T=8192 4096->28672".into(),
            seconds: 3.01,
            launches: 1200,
            rate: 683.4,
            unit: Unit::TflopS,
            burst_rate: Some(760.0),
            sm_clock_mhz: Some(1485.0),
            power_w: Some(690.5),
            nvml_samples: 150,
        });
        r.sustained.push(Sustained {
            kernel: "gemm down".into(),
            shape: "T=8192".into(),
            seconds: 3.0,
            launches: 10,
            rate: 700.0,
            unit: Unit::TflopS,
            burst_rate: None,
            sm_clock_mhz: None,
            power_w: None,
            nvml_samples: 0,
        });
        let md = r.markdown();
        assert!(
            md.contains("| chunks of 512 after prefix / one 8192 pass | 1.073 |"),
            "{md}"
        );
        assert!(
            md.contains("| 683.4 TFLOP/s | 760.0 | 1485 | 690 | 150 |"),
            "{md}"
        );
        assert!(md.contains("| 700.0 TFLOP/s | - | - | - | 0 |"), "{md}");
        let json = r.json("c", "d");
        assert!(json.contains("\"ratio\": 1.0734"), "{json}");
        assert!(json.contains("\"sm_clock_mhz\": 1485"), "{json}");
        assert!(json.contains("\"power_w\": null"), "{json}");
    }
}
