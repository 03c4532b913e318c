//! One CUDA kernel-tuning trial: compile the configuration (once; modules are
//! kept per configuration), check its output against the f64 CPU reference
//! on the rows `fuselab kernels` checks (every tile edge, the last row, a
//! few random ones), then time it as `fuselab kernels` does (N = 32
//! back-to-back launches between two events after a hold, median of 10).
//!
//! A configuration outside the limits, or one NVRTC refuses, is
//! [`Evaluation::Invalid`]; a wrong or non-finite result is
//! [`Evaluation::Wrong`]: infeasible trials, never a crash.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::CudaSlice;
use half::bf16;

use super::reference::{self, AttnGeometry};
use super::rng::SplitMix;
use super::tuned::{CompiledDecode, CompiledPrefill, DecodeConfig, PrefillConfig};
use super::{CudaDevice, CudaError, DecodeWorkspace, HEAD_DIM, LaunchTimer, PagedAttention};
use crate::tunable::{Evaluation, Fault, KernelShape};

/// Tokens per KV-cache block of the trials (the engine's).
const BLOCK_SIZE: usize = 16;
/// Relative error (worst row) a bf16 kernel may show.
const TOLERANCE: f64 = 1e-2;
/// Timing: warm-up calls, samples, launches per sample.
const WARMUP: usize = 3;
const REPEATS: usize = 10;
const LAUNCHES: usize = 32;

/// Which kernel a [`CudaTrials`] tunes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CudaKernel {
    /// The wgmma prefill attention kernel ([`PrefillConfig`]).
    Prefill,
    /// The paged decode attention kernel ([`DecodeConfig`]).
    Decode,
}

/// The inputs of one shape on the device, and the reference rows.
struct Case {
    k: CudaSlice<bf16>,
    v: CudaSlice<bf16>,
    q: CudaSlice<bf16>,
    out: CudaSlice<bf16>,
    tables: CudaSlice<i32>,
    ctx: CudaSlice<i32>,
    cu_q: CudaSlice<i32>,
    max_blocks: usize,
    shape: KernelShape,
    /// Rows checked (global query-row indices) and their reference values.
    rows: Vec<usize>,
    want: Vec<f32>,
}

impl Case {
    fn new(dev: &CudaDevice, shape: &KernelShape, seed: u64) -> Result<Self, CudaError> {
        let mut rng = SplitMix::new(seed);
        let h = shape.heads;
        let blocks = shape.ctx.div_ceil(BLOCK_SIZE);
        let total_blocks = blocks * shape.batch + 3;
        let perm = rng.permutation(total_blocks);
        let mut flat = vec![0i32; shape.batch * blocks];
        let mut host_tables = Vec::new();
        for b in 0..shape.batch {
            let t: Vec<usize> = perm[b * blocks..(b + 1) * blocks].to_vec();
            for (i, &blk) in t.iter().enumerate() {
                flat[b * blocks + i] = blk as i32;
            }
            host_tables.push(t);
        }
        let n = total_blocks * BLOCK_SIZE * h.n_kv_heads * HEAD_DIM;
        let mut k = dev.alloc_bf16(n)?;
        let mut v = dev.alloc_bf16(n)?;
        dev.fill_uniform(&mut k, rng.next_u64(), 1.0)?;
        dev.fill_uniform(&mut v, rng.next_u64(), 1.0)?;
        let rows_total = shape.batch * shape.q_len;
        let mut q = dev.alloc_bf16(rows_total * h.n_heads * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let out = dev.alloc_bf16(rows_total * h.n_heads * HEAD_DIM)?;
        let cu: Vec<i32> = (0..=shape.batch)
            .map(|b| (b * shape.q_len) as i32)
            .collect();
        let mut rows = Vec::new();
        for b in 0..shape.batch {
            rows.extend(
                super::bench::edge_rows(shape.q_len, 4, &mut rng)
                    .into_iter()
                    .map(|r| b * shape.q_len + r),
            );
        }
        let f32s = |x: &CudaSlice<bf16>| -> Result<Vec<f32>, CudaError> {
            Ok(dev.download(x)?.iter().map(|v| v.to_f32()).collect())
        };
        let g = AttnGeometry {
            hq: h.n_heads,
            hkv: h.n_kv_heads,
            head_dim: HEAD_DIM,
            block_size: BLOCK_SIZE,
            scale: 1.0 / (HEAD_DIM as f64).sqrt(),
        };
        let want = reference::paged_attention_rows(
            g,
            &f32s(&q)?,
            &vec![shape.q_len; shape.batch],
            &vec![shape.ctx; shape.batch],
            &f32s(&k)?,
            &f32s(&v)?,
            &host_tables,
            &rows,
        );
        Ok(Self {
            k,
            v,
            q,
            out,
            tables: dev.upload(&flat)?,
            ctx: dev.upload(&vec![shape.ctx as i32; shape.batch])?,
            cu_q: dev.upload(&cu)?,
            max_blocks: blocks,
            shape: shape.clone(),
            rows,
            want,
        })
    }
}

/// What a trial runs: a compiled configuration, or the built-in default path.
enum Candidate {
    Prefill(Arc<CompiledPrefill>),
    Decode(Arc<CompiledDecode>, usize),
    Default,
}

/// The state of a CUDA tuning campaign: the device, the timer, the inputs of
/// every shape and every configuration compiled so far.
pub struct CudaTrials {
    kernel: CudaKernel,
    dev: CudaDevice,
    timer: LaunchTimer,
    ws: DecodeWorkspace,
    cases: HashMap<String, Case>,
    prefill: HashMap<PrefillConfig, Arc<CompiledPrefill>>,
    /// Decode modules by (warps, stages); the split count is a launch argument.
    decode: HashMap<(usize, usize), Arc<CompiledDecode>>,
    compiles: usize,
}

impl std::fmt::Debug for CudaTrials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaTrials")
            .field("kernel", &self.kernel)
            .field("device", &self.dev.info().name)
            .field("compiles", &self.compiles)
            .finish_non_exhaustive()
    }
}

impl CudaTrials {
    /// Opens GPU 0 for a campaign over `kernel`.
    ///
    /// # Errors
    /// [`CudaError::NoDriver`] where there is no usable GPU.
    pub fn new(kernel: CudaKernel) -> Result<Self, CudaError> {
        let dev = CudaDevice::new(0)?;
        let timer = LaunchTimer::new(&dev)?;
        let ws = DecodeWorkspace::new(&dev)?;
        Ok(Self {
            kernel,
            dev,
            timer,
            ws,
            cases: HashMap::new(),
            prefill: HashMap::new(),
            decode: HashMap::new(),
            compiles: 0,
        })
    }

    /// The device.
    pub fn device(&self) -> &CudaDevice {
        &self.dev
    }

    /// Modules compiled so far (one per distinct compiled configuration).
    pub fn compiles(&self) -> usize {
        self.compiles
    }

    /// The hand-picked default as knobs, for `shape` (decode: the device's
    /// split heuristic there).
    pub fn default_knobs(&self, shape: &KernelShape) -> std::collections::BTreeMap<String, i64> {
        match self.kernel {
            CudaKernel::Prefill => PrefillConfig::default().knobs(),
            CudaKernel::Decode => DecodeConfig {
                warps: 4,
                stages: 3,
                splits: self
                    .dev
                    .decode_splits(shape.batch, shape.heads.n_kv_heads, shape.ctx),
            }
            .knobs(),
        }
    }

    /// Checks and times `knobs` on every shape (`None`: the built-in default path).
    pub fn evaluate(
        &mut self,
        knobs: Option<&std::collections::BTreeMap<String, i64>>,
        shapes: &[KernelShape],
        fault: Option<&Fault>,
        seed: u64,
    ) -> Evaluation {
        let broken = match (knobs, fault) {
            (Some(k), Some(f)) => k.get(&f.knob) == Some(&f.value),
            _ => false,
        };
        let candidate = match knobs.map(|k| self.compiled(k)).transpose() {
            Ok(c) => c.unwrap_or(Candidate::Default),
            Err(e) => return Evaluation::Invalid(message(e)),
        };
        let mut per_shape = Vec::new();
        for (i, shape) in shapes.iter().enumerate() {
            match self.shape_trial(&candidate, shape, broken, seed ^ (i as u64 + 1)) {
                Ok(r) => per_shape.push(r),
                Err(e) => return e,
            }
        }
        Evaluation::timed(shapes, per_shape)
    }

    fn compiled(
        &mut self,
        knobs: &std::collections::BTreeMap<String, i64>,
    ) -> Result<Candidate, CudaError> {
        match self.kernel {
            CudaKernel::Prefill => {
                // Only configurations that passed `compile_prefill`'s checks are cached.
                let c = PrefillConfig::from_knobs(knobs)?;
                if let Some(k) = self.prefill.get(&c) {
                    return Ok(Candidate::Prefill(k.clone()));
                }
                // Pairing is a launch choice: both entries live in one module.
                let other = PrefillConfig {
                    paired: !c.paired,
                    ..c
                };
                let k = Arc::new(self.dev.compile_prefill(&c)?);
                self.compiles += 1;
                self.prefill.insert(c, k.clone());
                let twin = Arc::new(k.with_pairing(other.paired));
                self.prefill.insert(other, twin);
                Ok(Candidate::Prefill(k))
            }
            CudaKernel::Decode => {
                let c = DecodeConfig::from_knobs(knobs)?;
                c.validate(&self.dev)?;
                let key = (c.warps, c.stages);
                let k = match self.decode.get(&key) {
                    Some(k) => k.clone(),
                    None => {
                        let k = Arc::new(self.dev.compile_decode(&c)?);
                        self.compiles += 1;
                        self.decode.insert(key, k.clone());
                        k
                    }
                };
                Ok(Candidate::Decode(k, c.splits))
            }
        }
    }

    fn shape_trial(
        &mut self,
        candidate: &Candidate,
        shape: &KernelShape,
        broken: bool,
        seed: u64,
    ) -> Result<(f64, f32), Evaluation> {
        let driver = |e: CudaError| Evaluation::Invalid(message(e));
        if shape.heads.head_dim != HEAD_DIM {
            return Err(Evaluation::Invalid(format!(
                "{shape}: the CUDA kernels take heads of {HEAD_DIM} elements"
            )));
        }
        let key = shape.to_string();
        if !self.cases.contains_key(&key) {
            let case = Case::new(&self.dev, shape, seed).map_err(driver)?;
            self.cases.insert(key.clone(), case);
        }
        let Self {
            kernel,
            dev,
            timer,
            ws,
            cases,
            ..
        } = self;
        let case = cases.get_mut(&key).expect("inserted above");
        let (kernel, dev) = (*kernel, &*dev);
        let mut run = |case: &mut Case| -> Result<(), CudaError> {
            let p = PagedAttention {
                batch: case.shape.batch,
                num_q_heads: case.shape.heads.n_heads,
                num_kv_heads: case.shape.heads.n_kv_heads,
                block_size: BLOCK_SIZE,
                max_blocks_per_seq: case.max_blocks,
                ctx_lens: &case.ctx,
                block_tables: &case.tables,
                scale: 1.0 / (HEAD_DIM as f32).sqrt(),
            };
            let (q_len, ctx) = (case.shape.q_len, case.shape.ctx);
            let total = case.shape.batch * q_len;
            let (q, k, v, out, cu) = (&case.q, &case.k, &case.v, &mut case.out, &case.cu_q);
            match (kernel, candidate) {
                (CudaKernel::Prefill, Candidate::Prefill(c)) => {
                    dev.prefill_attention_compiled(&p, q, k, v, out, cu, total, q_len, c)
                }
                (CudaKernel::Prefill, _) => {
                    dev.prefill_attention_with(&p, q, k, v, out, cu, total, q_len, None)
                }
                (CudaKernel::Decode, Candidate::Decode(c, splits)) => dev
                    .decode_attention_compiled(&p, q, k, v, out, ws, ctx, c, *splits)
                    .map(drop),
                (CudaKernel::Decode, _) => dev
                    .decode_attention(&p, q, k, v, out, ws, ctx, None)
                    .map(drop),
            }
        };
        let n_out = case.out.len();
        case.out = dev.upload(&vec![bf16::NAN; n_out]).map_err(driver)?;
        run(case).map_err(driver)?;
        let got = dev.download(&case.out).map_err(driver)?;
        let row_len = shape.heads.n_heads * HEAD_DIM;
        let mut picked: Vec<f32> = case
            .rows
            .iter()
            .flat_map(|&r| {
                got[r * row_len..(r + 1) * row_len]
                    .iter()
                    .map(|v| v.to_f32())
            })
            .collect();
        if broken {
            picked[0] += 1.0;
        }
        let err = reference::max_row_rel_err(&picked, &case.want, HEAD_DIM);
        if err.is_nan() || err > TOLERANCE {
            return Err(Evaluation::Wrong(format!(
                "wrong result at {shape}: worst row's relative error {err:.2e} above {TOLERANCE:.0e}"
            )));
        }
        let stats = timer
            .time(dev, WARMUP, REPEATS, LAUNCHES, || run(case))
            .map_err(driver)?;
        Ok((stats.median_ms, err as f32))
    }
}

fn message(e: CudaError) -> String {
    match e {
        CudaError::InvalidArgument { reason, .. } => reason,
        other => other.to_string(),
    }
}
