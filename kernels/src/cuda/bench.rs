//! `fuselab kernels`: correctness checks against the CPU references, then
//! timings at the Llama-3-8B shapes the engine uses, against measured ceilings.
//!
//! The copy-bandwidth ceiling is a grid-stride float4 copy (bytes read plus
//! bytes written); the matrix ceiling is a cuBLAS bf16 GEMM of 8192³. Times
//! are medians of CUDA-event-timed repeats after warm-up, on random data.
//! Causal attention counts `2·2·S²·H·D/2` FLOPs.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Instant;

use cudarc::driver::CudaSlice;
use half::bf16;

use super::reference::{self as reference, AttnGeometry};
use super::rng::SplitMix;
use super::{CudaDevice, CudaError, DecodeWorkspace, HEAD_DIM, PagedAttention, PrefillTile};

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

/// The engine's linear layers: (name, in features, out features).
pub const LINEARS: [(&str, usize, usize); 4] = [
    ("qkv", HIDDEN, (Q_HEADS + 2 * KV_HEADS) * HEAD_DIM),
    ("o", Q_HEADS * HEAD_DIM, HIDDEN),
    ("gate_up", HIDDEN, 2 * FFN),
    ("down", FFN, HIDDEN),
];
/// Token counts the GEMMs are timed at.
pub const GEMM_TOKENS: [usize; 4] = [64, 512, 2048, 8192];
/// Causal prefill lengths.
pub const PREFILL_LENS: [usize; 3] = [2048, 8192, 16384];

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
}

/// Reference rates by key (`copy_gbs`, `gemm8192_tflops`, `sdpa_causal_8192`,
/// `linear_qkv_t64`, `sdpa_decode_b64_c4096`), read from `key value` lines.
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

    fn get(&self, key: &str) -> Option<f64> {
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

/// One correctness check.
#[derive(Clone, Debug, PartialEq)]
pub struct Check {
    /// Kernel name.
    pub kernel: String,
    /// Shape checked.
    pub shape: String,
    /// `‖out − ref‖ / ‖ref‖`.
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
    /// Median time in microseconds.
    pub time_us: f64,
    /// Unit of `rate`.
    pub unit: Unit,
    /// Achieved rate.
    pub rate: f64,
    /// `rate` over the measured ceiling of its unit.
    pub fraction: f64,
    /// Baseline rate at the same shape, when given.
    pub baseline: Option<f64>,
    /// Goal this row is held to.
    pub target: Option<Target>,
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
    /// Measured copy bandwidth, GB/s (read + write).
    pub copy_gbs: f64,
    /// Measured matrix ceiling, TFLOP/s.
    pub gemm_tflops: f64,
    /// Correctness checks, in order.
    pub checks: Vec<Check>,
    /// Timings, in order.
    pub rows: Vec<Row>,
    /// Remarks (skipped kernels, shapes reduced on CPU).
    pub notes: Vec<String>,
}

impl Report {
    /// Whether every correctness check passed.
    pub fn all_checks_passed(&self) -> bool {
        self.checks.iter().all(Check::passed)
    }

    fn push_row(
        &mut self,
        kernel: &str,
        shape: String,
        ms: f64,
        flops: Option<f64>,
        bytes: f64,
    ) -> &mut Row {
        let (unit, rate, ceiling) = match flops {
            Some(f) if self.device_kind == "cpu" => {
                (Unit::GflopS, f / (ms * 1e-3) / 1e9, self.gemm_tflops * 1e3)
            }
            Some(f) => (Unit::TflopS, f / (ms * 1e-3) / 1e12, self.gemm_tflops),
            None => (Unit::GbS, bytes / (ms * 1e-3) / 1e9, self.copy_gbs),
        };
        self.rows.push(Row {
            kernel: kernel.to_string(),
            shape,
            time_us: ms * 1e3,
            unit,
            rate,
            fraction: if ceiling > 0.0 {
                rate / ceiling
            } else {
                f64::NAN
            },
            baseline: None,
            target: None,
        });
        self.rows.last_mut().expect("row just pushed")
    }

    /// The report as Markdown: header, checks, timings.
    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "device: {} ({}; {}; kernels for {})",
            self.device, self.device_kind, self.driver, self.arch
        );
        let _ = writeln!(
            s,
            "ceilings: copy {:.0} GB/s (read + write), bf16 GEMM 8192³ {:.1} TFLOP/s\n",
            self.copy_gbs, self.gemm_tflops
        );
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
        s.push_str(
            "| kernel | shape | time (µs) | rate | of ceiling | baseline | ratio | target |\n",
        );
        s.push_str("|---|---|---|---|---|---|---|---|\n");
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
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {:.1} {} | {:.1}% | {} | {} | {} |",
                r.kernel,
                r.shape,
                r.time_us,
                r.rate,
                r.unit.label(),
                r.fraction * 100.0,
                b,
                ratio,
                t
            );
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
        let _ = writeln!(s, "  \"copy_gbs\": {},", jnum(self.copy_gbs));
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
            s.push_str(if i + 1 < self.checks.len() {
                ",\n"
            } else {
                "\n"
            });
        }
        s.push_str("  ],\n  \"rows\": [\n");
        for (i, r) in self.rows.iter().enumerate() {
            let _ = write!(
                s,
                "    {{\"kernel\": {}, \"shape\": {}, \"time_us\": {}, \"unit\": {}, \"rate\": {}, \"fraction_of_ceiling\": {}, \"baseline\": {}, \"target\": {}, \"target_met\": {}}}",
                jstr(&r.kernel),
                jstr(&r.shape),
                jnum(r.time_us),
                jstr(r.unit.label()),
                jnum(r.rate),
                jnum(r.fraction),
                r.baseline.map_or("null".into(), jnum),
                r.target.as_ref().map_or("null".into(), |t| jstr(&t.goal)),
                r.target
                    .as_ref()
                    .map_or("null".into(), |t| t.met.to_string()),
            );
            s.push_str(if i + 1 < self.rows.len() { ",\n" } else { "\n" });
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

fn inv_freq() -> Vec<f64> {
    (0..HEAD_DIM / 2)
        .map(|i| THETA.powf(-(2.0 * i as f64) / HEAD_DIM as f64))
        .collect()
}

fn attn_flops_causal(s: usize, heads: usize) -> f64 {
    2.0 * 2.0 * (s as f64) * (s as f64) * heads as f64 * HEAD_DIM as f64 / 2.0
}

/// Host copies of a paged cache's K and V.
type HostKv = Option<(Vec<f32>, Vec<f32>)>;

/// A paged cache with random contents and random block tables.
struct PagedSetup {
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    tables: CudaSlice<i32>,
    ctx: CudaSlice<i32>,
    max_blocks: usize,
    host_tables: Vec<Vec<usize>>,
}

impl PagedSetup {
    fn new(
        dev: &CudaDevice,
        rng: &mut SplitMix,
        ctx_lens: &[usize],
        fill_host: bool,
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
        let (k, v, host) = if fill_host {
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
            (k, v, None)
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

    fn params(&self, batch: usize) -> PagedAttention<'_> {
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

/// Runs every check on fresh random inputs (odd lengths included).
fn run_checks(dev: &CudaDevice, rng: &mut SplitMix) -> Result<Vec<Check>, CudaError> {
    let mut checks = Vec::new();
    // The worst row decides: an error confined to a few rows is not averaged away.
    let mut add = |kernel: &str, shape: String, row_len: usize, out: &[f32], want: &[f32]| {
        checks.push(Check {
            kernel: kernel.into(),
            shape,
            rel_err: reference::max_row_rel_err(out, want, row_len),
            tolerance: BF16_TOL,
        });
    };

    // RMSNorm.
    let t = 7;
    let x = rng.bf16_vec(t * HIDDEN, 2.0);
    let w = rng.bf16_vec(HIDDEN, 1.0);
    let (dx, dw) = (dev.upload(&x)?, dev.upload(&w)?);
    let mut dy = nan_bf16(dev, t * HIDDEN)?;
    dev.rms_norm(&dx, &dw, &mut dy, t, HIDDEN, EPS)?;
    let want = reference::rms_norm(&to_f32(&x), &to_f32(&w), HIDDEN, f64::from(EPS));
    add(
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
        "kv_write",
        format!("T={t} slots in {slots_cap}, one skipped"),
        KV_HEADS * HEAD_DIM,
        &got,
        &want_k,
    );

    // GEMM.
    let (t, kk, n) = (37, HIDDEN, 1000);
    let x = rng.bf16_vec(t * kk, 1.0);
    let w = rng.bf16_vec(n * kk, 1.0);
    let mut dy = nan_bf16(dev, t * n)?;
    dev.gemm(&dev.upload(&x)?, &dev.upload(&w)?, &mut dy, t, kk, n)?;
    add(
        "gemm",
        format!("T={t} {kk}->{n}"),
        n,
        &to_f32(&dev.download(&dy)?),
        &reference::gemm(&to_f32(&x), &to_f32(&w), t, kk, n),
    );

    // Ragged causal prefill through block tables: a single token, a chunk after a
    // prefix, and a multi-tile sequence.
    let q_lens = [1usize, 37, 150];
    let ctx_lens = [1usize, 114, 155];
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, true)?;
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
    for tile in PrefillTile::ALL {
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
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, true)?;
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
    for tile in PrefillTile::ALL {
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
    let (setup, host) = PagedSetup::new(dev, rng, &ctx_lens, true)?;
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
            "decode_attention",
            format!("ctx 1/63/1000/4097, {used} splits"),
            Q_HEADS * HEAD_DIM,
            &to_f32(&dev.download(&out)?),
            &want,
        );
    }
    Ok(checks)
}

/// Checks, then times every kernel on the GPU.
pub fn run_cuda(opts: &BenchOptions) -> Result<Report, CudaError> {
    let dev = CudaDevice::new(0)?;
    let info = dev.info().clone();
    let mut rng = SplitMix::new(opts.seed);
    let (warm, reps) = if opts.quick { (2, 5) } else { (5, 20) };
    let mut report = Report {
        device_kind: "cuda".into(),
        device: info.name.clone(),
        driver: format!(
            "driver {}, CUDA driver API {}.{}, {} SMs, {} MB L2",
            info.driver_release
                .as_deref()
                .unwrap_or("(release unknown)"),
            info.driver_version / 1000,
            (info.driver_version % 1000) / 10,
            info.sm_count,
            info.l2_bytes >> 20
        ),
        arch: info.arch.clone(),
        copy_gbs: 0.0,
        gemm_tflops: 0.0,
        checks: Vec::new(),
        rows: Vec::new(),
        notes: Vec::new(),
    };

    // Ceilings.
    let n = if opts.quick { 1 << 28 } else { 1 << 29 }; // bf16 elements: 0.5 / 1 GiB
    let mut src = dev.alloc_bf16(n)?;
    dev.fill_uniform(&mut src, rng.next_u64(), 1.0)?;
    let mut dst = dev.alloc_bf16(n)?;
    let ms = dev.time_ms(warm, reps, || dev.copy(&src, &mut dst))?;
    report.copy_gbs = 2.0 * (n * 2) as f64 / (ms * 1e-3) / 1e9;
    drop((src, dst));
    let g = 8192;
    let mut a = dev.alloc_bf16(g * g)?;
    let mut bm = dev.alloc_bf16(g * g)?;
    dev.fill_uniform(&mut a, rng.next_u64(), 1.0)?;
    dev.fill_uniform(&mut bm, rng.next_u64(), 1.0)?;
    let mut c = dev.alloc_bf16(g * g)?;
    let ms = dev.time_ms(warm, reps, || dev.gemm(&a, &bm, &mut c, g, g, g))?;
    report.gemm_tflops = 2.0 * (g as f64).powi(3) / (ms * 1e-3) / 1e12;
    drop((a, bm, c));

    report.checks = run_checks(&dev, &mut rng)?;
    let failed: Vec<String> = report
        .checks
        .iter()
        .filter(|c| !c.passed())
        .map(|c| c.kernel.clone())
        .collect();
    let ok = |name: &str| {
        !failed.iter().any(|f| f.starts_with(name))
            && opts.only.as_deref().is_none_or(|o| name.starts_with(o))
    };
    for f in &failed {
        report
            .notes
            .push(format!("{f} failed its check and was not timed"));
    }
    let base = &opts.baseline;
    if let Some(b) = base.get("copy_gbs") {
        report.notes.push(format!(
            "PyTorch device copy in the same command: {b:.0} GB/s"
        ));
    }
    if let Some(b) = base.get("gemm8192_tflops") {
        report.notes.push(format!(
            "PyTorch bf16 matmul 8192³ in the same command: {b:.1} TFLOP/s"
        ));
    }

    // Elementwise kernels.
    let tokens: &[usize] = if opts.quick { &[8192] } else { &[64, 8192] };
    for &t in tokens {
        if ok("rms_norm") {
            let mut x = dev.alloc_bf16(t * HIDDEN)?;
            dev.fill_uniform(&mut x, rng.next_u64(), 1.0)?;
            let mut w = dev.alloc_bf16(HIDDEN)?;
            dev.fill_uniform(&mut w, rng.next_u64(), 1.0)?;
            let mut y = dev.alloc_bf16(t * HIDDEN)?;
            let ms = dev.time_ms(warm, reps, || dev.rms_norm(&x, &w, &mut y, t, HIDDEN, EPS))?;
            report.push_row(
                "rms_norm",
                format!("T={t} hidden={HIDDEN}"),
                ms,
                None,
                (2 * t * HIDDEN * 2) as f64,
            );
        }
        if ok("rope") {
            let mut q = dev.alloc_bf16(t * Q_HEADS * HEAD_DIM)?;
            let mut k = dev.alloc_bf16(t * KV_HEADS * HEAD_DIM)?;
            dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
            dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
            let pos: Vec<i32> = (0..t as i32).collect();
            let freqs: Vec<f32> = inv_freq().iter().map(|&f| f as f32).collect();
            let (dpos, dfreq) = (dev.upload(&pos)?, dev.upload(&freqs)?);
            let ms = dev.time_ms(warm, reps, || {
                dev.rope(&mut q, &mut k, &dpos, &dfreq, t, Q_HEADS, KV_HEADS)
            })?;
            let bytes = 2 * t * (Q_HEADS + KV_HEADS) * HEAD_DIM * 2;
            report.push_row(
                "rope",
                format!("T={t} 32q+8kv heads"),
                ms,
                None,
                bytes as f64,
            );
        }
        if ok("silu_mul") {
            let mut gu = dev.alloc_bf16(t * 2 * FFN)?;
            dev.fill_uniform(&mut gu, rng.next_u64(), 4.0)?;
            let mut out = dev.alloc_bf16(t * FFN)?;
            let ms = dev.time_ms(warm, reps, || dev.silu_mul(&gu, &mut out, t, FFN))?;
            report.push_row(
                "silu_mul",
                format!("T={t} ffn={FFN}"),
                ms,
                None,
                (3 * t * FFN * 2) as f64,
            );
        }
        if ok("kv_write") {
            let w = KV_HEADS * HEAD_DIM;
            let mut k = dev.alloc_bf16(t * w)?;
            let mut v = dev.alloc_bf16(t * w)?;
            dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
            dev.fill_uniform(&mut v, rng.next_u64(), 1.0)?;
            let cap = 4 * t;
            let perm = rng.permutation(cap / BLOCK_SIZE);
            let slots: Vec<i64> = (0..t)
                .map(|i| (perm[i / BLOCK_SIZE] * BLOCK_SIZE + i % BLOCK_SIZE) as i64)
                .collect();
            let dslots = dev.upload(&slots)?;
            let (mut kc, mut vc) = (dev.alloc_bf16(cap * w)?, dev.alloc_bf16(cap * w)?);
            let ms = dev.time_ms(warm, reps, || {
                dev.kv_write(&k, &v, &mut kc, &mut vc, &dslots, t, KV_HEADS)
            })?;
            report.push_row(
                "kv_write",
                format!("T={t} 8 kv heads"),
                ms,
                None,
                (2 * 2 * t * w * 2) as f64,
            );
        }
    }

    // GEMMs, rotating weight copies so that the weights come from memory, not L2.
    if ok("gemm") {
        let tokens: &[usize] = if opts.quick {
            &[64, 2048]
        } else {
            &GEMM_TOKENS
        };
        for (name, k, n) in LINEARS {
            let wbytes = n * k * 2;
            let copies = (3 * info.l2_bytes.max(1)).div_ceil(wbytes).clamp(1, 8);
            let mut ws = Vec::new();
            for _ in 0..copies {
                let mut w = dev.alloc_bf16(n * k)?;
                dev.fill_uniform(&mut w, rng.next_u64(), 0.02)?;
                ws.push(w);
            }
            for &t in tokens {
                let mut x = dev.alloc_bf16(t * k)?;
                dev.fill_uniform(&mut x, rng.next_u64(), 1.0)?;
                let mut y = dev.alloc_bf16(t * n)?;
                let mut i = 0usize;
                let ms = dev.time_ms(warm, reps.max(copies), || {
                    i += 1;
                    dev.gemm(&x, &ws[i % copies], &mut y, t, k, n)
                })?;
                let flops = 2.0 * (t * k * n) as f64;
                let row = report.push_row(
                    &format!("gemm {name}"),
                    format!("T={t} {k}->{n}"),
                    ms,
                    Some(flops),
                    0.0,
                );
                row.baseline = base.get(&format!("linear_{name}_t{t}"));
                if let Some(b) = row.baseline {
                    row.target = Some(Target {
                        goal: ">= 90% of cuBLAS via PyTorch".into(),
                        met: row.rate >= 0.9 * b,
                    });
                }
            }
        }
    }

    // Decode attention: batch 64 × context 4096 (K and V bytes read).
    if ok("decode_attention") {
        let (batch, ctx) = (64usize, 4096usize);
        let (setup, _) = PagedSetup::new(&dev, &mut rng, &vec![ctx; batch], false)?;
        let mut q = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let mut out = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
        let mut ws = DecodeWorkspace::new(&dev)?;
        let p = setup.params(batch);
        let bytes = (2 * batch * ctx * KV_HEADS * HEAD_DIM * 2) as f64;
        let auto = dev.decode_splits(batch, KV_HEADS, ctx);
        let sweep: Vec<usize> = if opts.quick {
            vec![auto]
        } else {
            vec![auto, 1, 2, 4, 8, 16]
        };
        for (i, s) in sweep.into_iter().enumerate() {
            if i > 0 && s == auto {
                continue;
            }
            let ms = dev.time_ms(warm, reps, || {
                dev.decode_attention(&p, &q, &setup.k, &setup.v, &mut out, &mut ws, ctx, Some(s))
                    .map(|_| ())
            })?;
            let label = if i == 0 {
                format!("B={batch} ctx={ctx} splits={s} (default)")
            } else {
                format!("B={batch} ctx={ctx} splits={s}")
            };
            let row = report.push_row("decode_attention", label, ms, None, bytes);
            if i == 0 {
                row.baseline = base.get("sdpa_decode_b64_c4096");
                row.target = Some(Target {
                    goal: ">= 80% of copy bandwidth".into(),
                    met: row.fraction >= 0.8,
                });
            }
        }
    }

    // Causal prefill attention, one sequence of S new tokens.
    let lens: &[usize] = if opts.quick { &[2048] } else { &PREFILL_LENS };
    for &s in lens {
        if !ok("prefill_attention") {
            break;
        }
        let (setup, _) = PagedSetup::new(&dev, &mut rng, &[s], false)?;
        let mut q = dev.alloc_bf16(s * Q_HEADS * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let mut out = dev.alloc_bf16(s * Q_HEADS * HEAD_DIM)?;
        let cu = dev.upload(&[0i32, s as i32])?;
        let p = setup.params(1);
        for tile in PrefillTile::ALL {
            let name = format!("prefill_attention ({})", tile.label());
            if !ok(&name) {
                continue;
            }
            let ms = dev.time_ms(warm, reps, || {
                dev.prefill_attention_tile(&p, &q, &setup.k, &setup.v, &mut out, &cu, s, s, tile)
            })?;
            let row = report.push_row(
                &name,
                format!("causal S={s} 32q/8kv"),
                ms,
                Some(attn_flops_causal(s, Q_HEADS)),
                0.0,
            );
            row.baseline = base.get(&format!("sdpa_causal_{s}"));
            if s == 8192 {
                row.target = Some(Target {
                    goal: ">= 300 TFLOP/s".into(),
                    met: row.rate >= 300.0,
                });
            }
        }
    }
    Ok(report)
}

fn cpu_time_ms(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// Times the CPU references (single thread, f64 accumulation) at reduced shapes.
pub fn run_cpu(opts: &BenchOptions) -> Result<Report, CudaError> {
    let mut rng = SplitMix::new(opts.seed);
    let q = opts.quick;
    let reps = if q { 2 } else { 5 };
    let mut report = Report {
        device_kind: "cpu".into(),
        device: format!("{} CPU", std::env::consts::ARCH),
        driver: format!(
            "{} threads available, references run on one",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
        arch: std::env::consts::ARCH.into(),
        copy_gbs: 0.0,
        gemm_tflops: 0.0,
        checks: Vec::new(),
        rows: Vec::new(),
        notes: vec!["CPU rows run the f64 references at reduced shapes (named in each row)".into()],
    };
    let n = if q { 1 << 20 } else { 1 << 25 };
    let src = vec![1.5f32; n];
    let mut dst = vec![0f32; n];
    let ms = cpu_time_ms(reps, || {
        dst.copy_from_slice(&src);
        std::hint::black_box(&mut dst);
    });
    report.copy_gbs = 2.0 * (n * 4) as f64 / (ms * 1e-3) / 1e9;
    let g = if q { 64 } else { 256 };
    let (a, b) = (vec![0.5f32; g * g], vec![0.25f32; g * g]);
    let ms = cpu_time_ms(reps, || {
        std::hint::black_box(reference::gemm(&a, &b, g, g, g));
    });
    report.gemm_tflops = 2.0 * (g as f64).powi(3) / (ms * 1e-3) / 1e12;

    let t = if q { 4 } else { 64 };
    let x = to_f32(&rng.bf16_vec(t * HIDDEN, 1.0));
    let w = to_f32(&rng.bf16_vec(HIDDEN, 1.0));
    let ms = cpu_time_ms(reps, || {
        std::hint::black_box(reference::rms_norm(&x, &w, HIDDEN, 1e-5));
    });
    report.push_row(
        "rms_norm",
        format!("T={t} hidden={HIDDEN}"),
        ms,
        None,
        (2 * t * HIDDEN * 4) as f64,
    );

    let mut qk = to_f32(&rng.bf16_vec(t * (Q_HEADS + KV_HEADS) * HEAD_DIM, 1.0));
    let pos: Vec<i32> = (0..t as i32).collect();
    let freqs = inv_freq();
    let ms = cpu_time_ms(reps, || {
        reference::rope(&mut qk, Q_HEADS + KV_HEADS, HEAD_DIM, &pos, &freqs)
    });
    report.push_row(
        "rope",
        format!("T={t} 32q+8kv heads"),
        ms,
        None,
        (2 * qk.len() * 4) as f64,
    );

    let gu = to_f32(&rng.bf16_vec(t * 2 * FFN, 4.0));
    let ms = cpu_time_ms(reps, || {
        std::hint::black_box(reference::silu_mul(&gu, FFN));
    });
    report.push_row(
        "silu_mul",
        format!("T={t} ffn={FFN}"),
        ms,
        None,
        (3 * t * FFN * 4) as f64,
    );

    let (gt, gk, gn) = if q { (2, 512, 512) } else { (8, HIDDEN, 6144) };
    let x = to_f32(&rng.bf16_vec(gt * gk, 1.0));
    let w = to_f32(&rng.bf16_vec(gn * gk, 1.0));
    let ms = cpu_time_ms(reps, || {
        std::hint::black_box(reference::gemm(&x, &w, gt, gk, gn));
    });
    report.push_row(
        "gemm qkv",
        format!("T={gt} {gk}->{gn}"),
        ms,
        Some(2.0 * (gt * gk * gn) as f64),
        0.0,
    );

    let (batch, ctx) = if q { (2, 128) } else { (4, 1024) };
    let ctx_lens = vec![ctx; batch];
    let blocks = batch * ctx / BLOCK_SIZE;
    let kv = to_f32(&rng.bf16_vec(blocks * BLOCK_SIZE * KV_HEADS * HEAD_DIM, 1.0));
    let tables: Vec<Vec<usize>> = (0..batch)
        .map(|b| (b * ctx / BLOCK_SIZE..(b + 1) * ctx / BLOCK_SIZE).collect())
        .collect();
    let qd = to_f32(&rng.bf16_vec(batch * Q_HEADS * HEAD_DIM, 1.0));
    let ms = cpu_time_ms(reps, || {
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
    );

    let s = if q { 64 } else { 512 };
    let kv = to_f32(&rng.bf16_vec(s * KV_HEADS * HEAD_DIM, 1.0));
    let tables = vec![(0..s / BLOCK_SIZE).collect::<Vec<_>>()];
    let qp = to_f32(&rng.bf16_vec(s * Q_HEADS * HEAD_DIM, 1.0));
    let ms = cpu_time_ms(reps.min(2), || {
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
    );
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn cpu_quick_report_has_every_kernel_and_valid_json() {
        let r = run_cpu(&BenchOptions {
            quick: true,
            seed: 1,
            baseline: Baseline::default(),
            only: None,
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
        let md = r.markdown();
        assert!(md.contains("| rms_norm |"), "{md}");
        let json = r.json("fuselab kernels --device cpu --quick", "2026-11-30");
        assert!(json.starts_with('{') && json.trim_end().ends_with('}'));
        assert!(json.contains("\"device_kind\": \"cpu\""));
    }

    #[test]
    fn gpu_checks_pass_or_skip_without_a_driver() {
        if !crate::cuda::gpu_or_skip("gpu_checks_pass_or_skip_without_a_driver") {
            return;
        }
        let dev = CudaDevice::new(0).unwrap();
        let checks = run_checks(&dev, &mut SplitMix::new(7)).unwrap();
        for c in &checks {
            assert!(c.passed(), "{} {}: {}", c.kernel, c.shape, c.rel_err);
        }
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

    #[test]
    fn checks_and_targets_render() {
        let mut r = Report {
            device_kind: "cuda".into(),
            device: "test".into(),
            driver: "d".into(),
            arch: "sm_90a".into(),
            copy_gbs: 4000.0,
            gemm_tflops: 800.0,
            checks: vec![Check {
                kernel: "rope".into(),
                shape: "T=1".into(),
                rel_err: f64::NAN,
                tolerance: BF16_TOL,
            }],
            rows: Vec::new(),
            notes: Vec::new(),
        };
        assert!(!r.all_checks_passed());
        let row = r.push_row("x", "s".into(), 2.0, Some(8e11), 0.0);
        assert!((row.rate - 400.0).abs() < 1e-9);
        assert!((row.fraction - 0.5).abs() < 1e-12);
        row.target = Some(Target {
            goal: ">= 300 TFLOP/s".into(),
            met: true,
        });
        let md = r.markdown();
        assert!(
            md.contains("FAILED") && md.contains(">= 300 TFLOP/s met"),
            "{md}"
        );
        assert!(r.json("c", "d").contains("\"rel_err\": null"));
    }
}
