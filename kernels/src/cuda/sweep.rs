//! Operator sweeps for the simulator's calibration (`fuselab calibrate --engine cuda`).
//!
//! Every kernel the CUDA engine launches for Llama-3-8B is timed over the
//! shapes a serving step can give it, with the method of [`super::bench`]
//! ([`LaunchTimer`]: N ≥ 32 back-to-back launches between two CUDA events after
//! a read-probe hold, divided by N; the median of R samples):
//!
//! * **GEMMs** at the model's shapes (fused qkv, o and down added into the
//!   residual as the engine does, gate_up, lm_head) over 1 … 16384 token rows
//!   (lm_head over the sampled rows, 1 … 2048), weights cold (rotated over
//!   copies totalling ≥ 3× L2);
//! * **prefill attention** over (chunk `c`, prior context `k`) with `c + k`
//!   up to 32768, on the tile the engine picks
//!   ([`CudaDevice::default_prefill_tile`]), plus ragged calls of several
//!   chunks (the batching rule);
//! * **decode attention** over (batch, context) with uniform and mixed
//!   contexts, both as the engine runs it: eager steps with
//!   [`CudaDevice::decode_attention`]'s split for the longest context, and
//!   graph-replayed decode steps with [`CudaDevice::decode_attention_balanced`]
//!   at the split the graphs are captured with (the model's context length);
//! * **element-wise** kernels of a layer and of the head (RMSNorm, fused RoPE +
//!   KV write, SiLU·mul, embedding gather, row gather, argmax).
//!
//! The ceilings (read probe, copy, GEMM 8192³) are measured first so that a fit
//! can express efficiencies against measured rather than datasheet peaks.

use cudarc::driver::CudaSlice;
use half::bf16;

use super::bench::{
    FFN, Fill, GemmCase, HIDDEN, KV_HEADS, MIN_LAUNCHES, PagedSetup, Q_HEADS, QKV_WIDTH, inv_freq,
    mixed_decode_lengths, scattered_slots,
};
use super::rng::SplitMix;
use super::{CudaDevice, CudaError, DecodeWorkspace, DeviceInfo, HEAD_DIM, LaunchTimer, TimeStats};

/// Llama-3-8B vocabulary (the LM head's width).
pub const VOCAB: usize = 128_256;
/// Llama-3-8B context length: the decode graphs' split is chosen for it.
pub const CONTEXT_LEN: usize = 8192;
const EPS: f32 = 1e-5;

/// Token rows of the GEMM sweep.
pub const GEMM_TOKENS: [usize; 24] = [
    1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
    6144, 8192, 12288, 16384,
];
/// Sampled rows of the LM-head sweep.
pub const HEAD_TOKENS: [usize; 12] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048];
/// Chunk lengths of the prefill sweep.
pub const PREFILL_CHUNKS: [usize; 10] = [16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384];
/// Prior contexts of the prefill sweep (`chunk + prior ≤ 32768`).
pub const PREFILL_PRIORS: [usize; 6] = [0, 512, 2048, 8192, 16384, 24576];
/// Longest context of the prefill sweep.
pub const PREFILL_MAX_CTX: usize = 32768;
/// Batches of the decode sweep (all of them decode-graph buckets).
pub const DECODE_BATCHES: [usize; 9] = [1, 2, 4, 8, 16, 32, 64, 128, 256];
/// Per-sequence contexts of the decode sweep.
pub const DECODE_CONTEXTS: [usize; 8] = [128, 512, 1024, 2048, 4096, 8192, 16384, 32768];
/// Largest `batch × context` of the decode sweep (KV tokens).
pub const DECODE_MAX_KV: usize = 1 << 20;
/// Token rows of the element-wise sweep.
pub const ELEMENTWISE_TOKENS: [usize; 7] = [1, 16, 64, 256, 1024, 4096, 16384];

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// A coarse grid (a few points per operator) for smoke runs.
    pub quick: bool,
    /// Seed of the random inputs.
    pub seed: u64,
    /// Back-to-back launches per sample (at least [`MIN_LAUNCHES`]).
    pub launches: usize,
    /// Samples per shape.
    pub repeats: usize,
}

impl Default for SweepOptions {
    fn default() -> Self {
        Self {
            quick: false,
            seed: 2026,
            launches: MIN_LAUNCHES,
            repeats: 5,
        }
    }
}

/// How a decode-attention row was launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodePath {
    /// [`CudaDevice::decode_attention`] with the split for the longest context
    /// (the engine's eager steps: mixed batches, more than 256 rows).
    Eager,
    /// [`CudaDevice::decode_attention_balanced`] with the split of the decode
    /// graphs (the engine's graph-replayed decode-only steps).
    Graph,
}

/// The shape of one timed row.
#[derive(Clone, Debug, PartialEq)]
pub enum SweepShape {
    /// `y = x·wᵀ` (or `y += x·wᵀ`) of `tokens × k` by `k → n`.
    Gemm {
        /// `qkv`, `o`, `gate_up`, `down` or `lm_head`.
        name: &'static str,
        /// Rows of `x`.
        tokens: usize,
        /// Input features.
        k: usize,
        /// Output features.
        n: usize,
        /// Added into the output (β = 1), as the engine's o and down GEMMs.
        accumulate: bool,
    },
    /// One ragged prefill-attention call: `(new tokens, prior context)` per sequence.
    PrefillAttn {
        /// The call's chunks.
        chunks: Vec<(usize, usize)>,
        /// The tile's label.
        tile: &'static str,
    },
    /// One decode-attention call.
    DecodeAttn {
        /// Sequences.
        batch: usize,
        /// Keys attended, summed over the sequences.
        kv_tokens: usize,
        /// Longest context.
        max_ctx: usize,
        /// How it was launched.
        path: DecodePath,
        /// Splits per sequence.
        splits: usize,
        /// `uniform` or a description of the mixed contexts.
        contexts: String,
    },
    /// An element-wise or gather kernel over `tokens` rows.
    Elementwise {
        /// `rms_norm`, `qkv_rope_cache`, `silu_mul`, `embed_gather`, `gather_rows`, `argmax`.
        name: &'static str,
        /// Rows.
        tokens: usize,
        /// Bytes read plus written.
        bytes: f64,
    },
}

/// One timed shape.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepRow {
    /// What was timed.
    pub shape: SweepShape,
    /// Per-launch time.
    pub stats: TimeStats,
}

/// Everything one sweep measured.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The device.
    pub device: DeviceInfo,
    /// Read-only probe, GB/s.
    pub read_gbs: f64,
    /// Device copy (read + write), GB/s.
    pub copy_gbs: f64,
    /// cuBLAS bf16 GEMM 8192³, TFLOP/s.
    pub gemm_tflops: f64,
    /// The timing method in words.
    pub method: String,
    /// Every row.
    pub rows: Vec<SweepRow>,
}

/// The (chunk, prior) grid of the prefill sweep.
pub fn prefill_grid(quick: bool) -> Vec<(usize, usize)> {
    let (chunks, priors): (&[usize], &[usize]) = if quick {
        (&[128, 2048], &[0, 4096])
    } else {
        (&PREFILL_CHUNKS, &PREFILL_PRIORS)
    };
    let mut grid = Vec::new();
    for &c in chunks {
        for &k in priors {
            if c + k <= PREFILL_MAX_CTX {
                grid.push((c, k));
            }
        }
    }
    grid
}

/// Ragged calls of several chunks (the simulator's batching rule).
pub fn ragged_prefill_cases(quick: bool) -> Vec<Vec<(usize, usize)>> {
    let mut cases = vec![vec![(2560, 0); 3], vec![(512, 2048); 4]];
    if !quick {
        cases.extend([
            vec![(512, 0); 4],
            vec![(256, 1024); 8],
            vec![(128, 0); 16],
            vec![(1024, 3072), (512, 0), (64, 7000)],
            vec![(2048, 0), (2048, 6144)],
        ]);
    }
    cases
}

/// The (batch, per-sequence context) grid of the decode sweep.
pub fn decode_grid(quick: bool) -> Vec<(usize, usize)> {
    let (batches, ctxs): (&[usize], &[usize]) = if quick {
        (&[1, 64], &[512, 4096])
    } else {
        (&DECODE_BATCHES, &DECODE_CONTEXTS)
    };
    let mut grid = Vec::new();
    for &b in batches {
        for &c in ctxs {
            if b * c <= DECODE_MAX_KV {
                grid.push((b, c));
            }
        }
    }
    grid
}

struct Timer<'a> {
    dev: &'a CudaDevice,
    timer: LaunchTimer,
    launches: usize,
    repeats: usize,
}

impl Timer<'_> {
    fn time(&mut self, f: impl FnMut() -> Result<(), CudaError>) -> Result<TimeStats, CudaError> {
        self.timer.time(self.dev, 3, self.repeats, self.launches, f)
    }
}

/// Runs the whole sweep on GPU 0; `progress` gets a line per operator group.
///
/// # Errors
/// `no CUDA driver found (...)` without a GPU; driver, NVRTC and cuBLAS errors.
pub fn run_sweep(opts: &SweepOptions, progress: &mut dyn FnMut(&str)) -> Result<Sweep, CudaError> {
    let dev = CudaDevice::new(0)?;
    let mut rng = SplitMix::new(opts.seed);
    let launches = opts.launches.max(MIN_LAUNCHES);
    let repeats = opts.repeats.max(1);
    let mut t = Timer {
        dev: &dev,
        timer: LaunchTimer::new(&dev)?,
        launches,
        repeats,
    };
    let mut sweep = Sweep {
        device: dev.info().clone(),
        read_gbs: 0.0,
        copy_gbs: 0.0,
        gemm_tflops: 0.0,
        method: format!(
            "median (p10–p90) of {repeats} samples, each {launches} back-to-back launches between two CUDA \
             events / {launches}, after a read-probe hold (kernels/src/cuda/bench.rs, top); GEMM weights \
             rotated over copies totalling >= 3x L2"
        ),
        rows: Vec::new(),
    };

    progress("ceilings (read probe, copy, GEMM 8192³)");
    {
        let n = 1usize << 30; // bf16 elements: 2 GiB read
        let mut src = dev.alloc_bf16(n)?;
        dev.fill_uniform(&mut src, rng.next_u64(), 1.0)?;
        let mut sink = dev
            .stream()
            .alloc_zeros::<u32>(dev.read_probe_blocks())
            .map_err(super::CudaError::driver("allocating the read probe's sink"))?;
        let st = t.time(|| dev.read_probe(&src, &mut sink))?;
        sweep.read_gbs = (n * 2) as f64 / (st.median_ms * 1e-3) / 1e9;
        drop((src, sink));
        let n = 1usize << 28;
        let mut src = dev.alloc_bf16(n)?;
        dev.fill_uniform(&mut src, rng.next_u64(), 1.0)?;
        let mut dst = dev.alloc_bf16(n)?;
        let st = t.time(|| dev.copy(&src, &mut dst))?;
        sweep.copy_gbs = 2.0 * (n * 2) as f64 / (st.median_ms * 1e-3) / 1e9;
        drop((src, dst));
        let gs = 8192;
        let mut a = dev.alloc_bf16(gs * gs)?;
        let mut b = dev.alloc_bf16(gs * gs)?;
        dev.fill_uniform(&mut a, rng.next_u64(), 1.0)?;
        dev.fill_uniform(&mut b, rng.next_u64(), 1.0)?;
        let mut c = dev.alloc_bf16(gs * gs)?;
        let st = t.time(|| dev.gemm(&a, &b, &mut c, gs, gs, gs))?;
        sweep.gemm_tflops = 2.0 * (gs as f64).powi(3) / (st.median_ms * 1e-3) / 1e12;
    }

    gemm_rows(&mut t, &mut rng, opts.quick, &mut sweep.rows, progress)?;
    prefill_rows(&mut t, &mut rng, opts.quick, &mut sweep.rows, progress)?;
    decode_rows(&mut t, &mut rng, opts.quick, &mut sweep.rows, progress)?;
    elementwise_rows(&mut t, &mut rng, opts.quick, &mut sweep.rows, progress)?;
    Ok(sweep)
}

fn gemm_rows(
    t: &mut Timer<'_>,
    rng: &mut SplitMix,
    quick: bool,
    rows: &mut Vec<SweepRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), CudaError> {
    let dev = t.dev;
    let tokens: &[usize] = if quick { &[1, 64, 2048] } else { &GEMM_TOKENS };
    let head: &[usize] = if quick { &[1, 64] } else { &HEAD_TOKENS };
    let shapes: [(&'static str, usize, usize, bool, &[usize]); 5] = [
        ("qkv", HIDDEN, QKV_WIDTH, false, tokens),
        ("o", Q_HEADS * HEAD_DIM, HIDDEN, true, tokens),
        ("gate_up", HIDDEN, 2 * FFN, false, tokens),
        ("down", FFN, HIDDEN, true, tokens),
        ("lm_head", HIDDEN, VOCAB, false, head),
    ];
    for (name, k, n, accumulate, tokens) in shapes {
        progress(&format!("gemm {name}: {} token counts", tokens.len()));
        for &tok in tokens {
            let mut case = GemmCase::new(dev, rng, (tok, k, n), false, accumulate)?;
            let stats = t.time(|| case.launch(dev))?;
            rows.push(SweepRow {
                shape: SweepShape::Gemm {
                    name,
                    tokens: tok,
                    k,
                    n,
                    accumulate,
                },
                stats,
            });
        }
    }
    Ok(())
}

fn prefill_rows(
    t: &mut Timer<'_>,
    rng: &mut SplitMix,
    quick: bool,
    rows: &mut Vec<SweepRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), CudaError> {
    let dev = t.dev;
    let mut cases: Vec<Vec<(usize, usize)>> =
        prefill_grid(quick).into_iter().map(|ck| vec![ck]).collect();
    cases.extend(ragged_prefill_cases(quick));
    progress(&format!("prefill attention: {} calls", cases.len()));
    for chunks in cases {
        let ctx: Vec<usize> = chunks.iter().map(|&(c, k)| c + k).collect();
        let (setup, _) = PagedSetup::new(dev, rng, &ctx, Fill::Device)?;
        let total: usize = chunks.iter().map(|c| c.0).sum();
        let max_q = chunks.iter().map(|c| c.0).max().unwrap_or(1);
        let mut q = dev.alloc_bf16(total * Q_HEADS * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let mut out = dev.alloc_bf16(total * Q_HEADS * HEAD_DIM)?;
        let mut cu = vec![0i32];
        for &(c, _) in &chunks {
            cu.push(cu[cu.len() - 1] + c as i32);
        }
        let dcu = dev.upload(&cu)?;
        let max_ctx = ctx.iter().copied().max().unwrap_or(1);
        let tile = dev.default_prefill_tile(max_q, max_ctx, chunks.len(), Q_HEADS);
        let p = setup.params(chunks.len());
        let stats = t.time(|| {
            dev.prefill_attention_tile(
                &p, &q, &setup.k, &setup.v, &mut out, &dcu, total, max_q, tile,
            )
        })?;
        rows.push(SweepRow {
            shape: SweepShape::PrefillAttn {
                chunks,
                tile: tile.label(),
            },
            stats,
        });
    }
    Ok(())
}

fn decode_rows(
    t: &mut Timer<'_>,
    rng: &mut SplitMix,
    quick: bool,
    rows: &mut Vec<SweepRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), CudaError> {
    let dev = t.dev;
    let mut cases: Vec<(Vec<usize>, String)> = decode_grid(quick)
        .into_iter()
        .map(|(b, c)| (vec![c; b], "uniform".to_string()))
        .collect();
    for b in [16usize, 64, 256] {
        if quick && b != 64 {
            continue;
        }
        let lens = mixed_decode_lengths(b, 64 + b as u64);
        cases.push((lens, "mixed N(2600, 780) in [256, 4224]".into()));
    }
    progress(&format!(
        "decode attention: {} shapes × 2 paths",
        cases.len()
    ));
    let mut ws = DecodeWorkspace::new(dev)?;
    for (lens, label) in cases {
        let batch = lens.len();
        let (setup, _) = PagedSetup::new(dev, rng, &lens, Fill::Device)?;
        let p = setup.params(batch);
        let max_ctx = lens.iter().copied().max().unwrap_or(1);
        let kv_tokens: usize = lens.iter().sum();
        let mut q: CudaSlice<bf16> = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
        dev.fill_uniform(&mut q, rng.next_u64(), 1.0)?;
        let mut out = dev.alloc_bf16(batch * Q_HEADS * HEAD_DIM)?;
        let mut used = 0;
        let stats = t.time(|| {
            used =
                dev.decode_attention(&p, &q, &setup.k, &setup.v, &mut out, &mut ws, max_ctx, None)?;
            Ok(())
        })?;
        rows.push(SweepRow {
            shape: SweepShape::DecodeAttn {
                batch,
                kv_tokens,
                max_ctx,
                path: DecodePath::Eager,
                splits: used,
                contexts: label.clone(),
            },
            stats,
        });
        let splits = dev.decode_splits(batch, KV_HEADS, CONTEXT_LEN);
        let stats = t.time(|| {
            dev.decode_attention_balanced(&p, &q, &setup.k, &setup.v, &mut out, &mut ws, splits)
        })?;
        rows.push(SweepRow {
            shape: SweepShape::DecodeAttn {
                batch,
                kv_tokens,
                max_ctx,
                path: DecodePath::Graph,
                splits,
                contexts: label,
            },
            stats,
        });
    }
    Ok(())
}

fn elementwise_rows(
    t: &mut Timer<'_>,
    rng: &mut SplitMix,
    quick: bool,
    rows: &mut Vec<SweepRow>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), CudaError> {
    let dev = t.dev;
    let tokens: &[usize] = if quick {
        &[1, 1024]
    } else {
        &ELEMENTWISE_TOKENS
    };
    progress(&format!(
        "element-wise kernels: {} token counts",
        tokens.len()
    ));
    let freqs: Vec<f32> = inv_freq().iter().map(|&f| f as f32).collect();
    let dfreq = dev.upload(&freqs)?;
    let mut table = dev.alloc_bf16(VOCAB * HIDDEN)?;
    dev.fill_uniform(&mut table, rng.next_u64(), 1.0)?;
    let kvw = KV_HEADS * HEAD_DIM;
    let mut push = |name: &'static str, tokens: usize, bytes: usize, stats: TimeStats| {
        rows.push(SweepRow {
            shape: SweepShape::Elementwise {
                name,
                tokens,
                bytes: bytes as f64,
            },
            stats,
        });
    };
    for &tok in tokens {
        let mut x = dev.alloc_bf16(tok * HIDDEN)?;
        dev.fill_uniform(&mut x, rng.next_u64(), 1.0)?;
        let mut w = dev.alloc_bf16(HIDDEN)?;
        dev.fill_uniform(&mut w, rng.next_u64(), 1.0)?;
        let mut y = dev.alloc_bf16(tok * HIDDEN)?;
        let st = t.time(|| dev.rms_norm(&x, &w, &mut y, tok, HIDDEN, EPS))?;
        push("rms_norm", tok, 2 * tok * HIDDEN * 2, st);

        let cap = (4 * tok).max(16);
        let mut qkv = dev.alloc_bf16(tok * QKV_WIDTH)?;
        dev.fill_uniform(&mut qkv, rng.next_u64(), 1.0)?;
        let mut q_out = dev.alloc_bf16(tok * Q_HEADS * HEAD_DIM)?;
        let pos: Vec<i32> = (0..tok as i32).collect();
        let dpos = dev.upload(&pos)?;
        let dslots = dev.upload(&scattered_slots(rng, tok, cap))?;
        let (mut kc, mut vc) = (dev.alloc_bf16(cap * kvw)?, dev.alloc_bf16(cap * kvw)?);
        let st = t.time(|| {
            dev.qkv_rope_cache(
                &qkv, &mut q_out, &mut kc, &mut vc, &dpos, &dslots, &dfreq, tok, Q_HEADS, KV_HEADS,
            )
        })?;
        push(
            "qkv_rope_cache",
            tok,
            tok * (QKV_WIDTH + Q_HEADS * HEAD_DIM + 2 * kvw) * 2 + 8 * tok,
            st,
        );

        let mut gu = dev.alloc_bf16(tok * 2 * FFN)?;
        dev.fill_uniform(&mut gu, rng.next_u64(), 4.0)?;
        let mut act = dev.alloc_bf16(tok * FFN)?;
        let st = t.time(|| dev.silu_mul(&gu, &mut act, tok, FFN))?;
        push("silu_mul", tok, 3 * tok * FFN * 2, st);

        let ids: Vec<i32> = (0..tok).map(|_| rng.below(VOCAB) as i32).collect();
        let dids = dev.upload(&ids)?;
        let mut e = dev.alloc_bf16(tok * HIDDEN)?;
        let st = t.time(|| dev.embed_gather(&table, &dids, &mut e, tok, HIDDEN))?;
        push("embed_gather", tok, 2 * tok * HIDDEN * 2 + 4 * tok, st);

        let rows_idx: Vec<i32> = (0..tok as i32).collect();
        let drows = dev.upload(&rows_idx)?;
        let mut g = dev.alloc_bf16(tok * HIDDEN)?;
        let st = t.time(|| dev.gather_rows(&x, &drows, &mut g, tok, HIDDEN))?;
        push("gather_rows", tok, 2 * tok * HIDDEN * 2 + 4 * tok, st);

        if tok <= 2048 {
            let mut logits = dev.alloc_bf16(tok * VOCAB)?;
            dev.fill_uniform(&mut logits, rng.next_u64(), 1.0)?;
            let mut out = dev
                .stream()
                .alloc_zeros::<i32>(tok)
                .map_err(super::CudaError::driver("allocating argmax ids"))?;
            let st = t.time(|| dev.argmax_rows(&logits, &mut out, tok, VOCAB))?;
            push("argmax", tok, tok * VOCAB * 2 + 4 * tok, st);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grids_stay_within_their_limits() {
        for quick in [false, true] {
            let p = prefill_grid(quick);
            assert!(!p.is_empty());
            assert!(p.iter().all(|&(c, k)| c + k <= PREFILL_MAX_CTX && c > 0));
            let d = decode_grid(quick);
            assert!(d.iter().all(|&(b, c)| b * c <= DECODE_MAX_KV));
            assert!(!ragged_prefill_cases(quick).is_empty());
        }
        // The full prefill grid reaches 32k of context and the largest chunk.
        let p = prefill_grid(false);
        assert!(p.contains(&(8192, 24576)) && p.contains(&(16384, 16384)));
        assert!(!p.contains(&(16384, 24576)));
        assert!(decode_grid(false).contains(&(256, 4096)));
        assert!(!decode_grid(false).contains(&(256, 8192)));
    }

    #[test]
    fn without_a_gpu_the_sweep_says_so() {
        if super::super::driver_present() {
            return;
        }
        let e = run_sweep(&SweepOptions::default(), &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("no CUDA driver"), "{e}");
    }
}
