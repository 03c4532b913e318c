//! Ragged (varlen) causal flash attention over a paged KV cache, and the naive
//! dense reference.
//!
//! Every [`SeqChunk`] is an independent causal sequence: its query rows are the
//! tokens at positions `start_pos .. start_pos + n_tokens`, and each attends to
//! the sequence's KV positions `0 ..= its own position`, read through the
//! chunk's block table. This one kernel therefore covers a whole prefill
//! (`start_pos = 0`), a chunked prefill at an offset, a decode (`n_tokens = 1`)
//! and prepacked rows (several short sequences side by side in one batch).
//!
//! The kernel tiles the query rows of one KV head's group (`q_tile` tokens ×
//! the heads sharing that KV head) against tiles of `kv_tile` positions and
//! keeps a running maximum, denominator and accumulator per row (online
//! softmax), so it never materialises a score matrix.

use crate::KernelError;
use crate::cpu::paged::{AttnShape, PagedKv};
use crate::error::check_len;

/// One sequence's chunk in a ragged attention call.
#[derive(Clone, Copy, Debug)]
pub struct SeqChunk<'a> {
    /// Row of the chunk's first token in the `q` and `out` buffers.
    pub q_row: usize,
    /// Position of the chunk's first token in its sequence.
    pub start_pos: usize,
    /// Tokens in the chunk.
    pub n_tokens: usize,
    /// The sequence's KV blocks, covering positions `0 .. start_pos + n_tokens`.
    pub block_table: &'a [u32],
}

/// Tile sizes of the flash kernel. The result does not depend on them beyond
/// floating-point rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlashConfig {
    /// Query tokens per tile.
    pub q_tile: usize,
    /// KV positions per tile.
    pub kv_tile: usize,
    /// Threads to spread (sequence, KV head) pairs over; 1 keeps the call on
    /// the calling thread. Small calls always stay on it.
    pub threads: usize,
}

impl Default for FlashConfig {
    fn default() -> Self {
        Self {
            q_tile: 16,
            kv_tile: 32,
            threads: 1,
        }
    }
}

/// Checks the common arguments of the ragged kernels and returns the row count.
pub(crate) fn check_ragged(
    q: &[f32],
    out: &[f32],
    kv: &PagedKv,
    shape: AttnShape,
    chunks: impl Iterator<Item = (usize, usize)>,
) -> Result<usize, KernelError> {
    shape.validate()?;
    if kv.kv_width() != shape.kv_width() {
        return Err(KernelError::Config(format!(
            "the KV cache holds {} values per token but the shape needs {}",
            kv.kv_width(),
            shape.kv_width()
        )));
    }
    let rows = q.len() / shape.q_width();
    check_len("q", q.len(), rows * shape.q_width())?;
    check_len("out", out.len(), q.len())?;
    for (i, (q_row, n)) in chunks.enumerate() {
        if q_row + n > rows {
            return Err(KernelError::Config(format!(
                "chunk {i} covers rows {q_row}..{} but q has {rows} rows",
                q_row + n
            )));
        }
    }
    Ok(rows)
}

/// Ragged causal flash attention: writes `out[row]` for every row of every
/// chunk; other rows of `out` are left untouched.
///
/// `q` and `out` are `[rows, n_heads * head_dim]`; the chunks' K/V must already
/// be in `kv` (see [`PagedKv::write`]). `scale` multiplies the scores
/// (usually `1/sqrt(head_dim)`).
pub fn flash_attention(
    q: &[f32],
    kv: &PagedKv,
    shape: AttnShape,
    chunks: &[SeqChunk<'_>],
    scale: f32,
    cfg: FlashConfig,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_ragged(
        q,
        out,
        kv,
        shape,
        chunks.iter().map(|c| (c.q_row, c.n_tokens)),
    )?;
    if cfg.q_tile == 0 || cfg.kv_tile == 0 {
        return Err(KernelError::Config(
            "flash tile sizes must be positive".into(),
        ));
    }
    for c in chunks {
        kv.check_table(c.block_table, c.start_pos + c.n_tokens)?;
    }
    let (d, g, qw) = (shape.head_dim, shape.group(), shape.q_width());
    // Jobs: (chunk, KV head, first token, end token), query tokens cut into
    // spans of JOB_TOKENS so that one long prompt still spreads over threads.
    let jobs: Vec<(usize, usize, usize, usize)> = chunks
        .iter()
        .enumerate()
        .flat_map(|(ci, c)| {
            (0..shape.n_kv_heads).flat_map(move |kh| {
                (0..c.n_tokens)
                    .step_by(JOB_TOKENS)
                    .map(move |t| (ci, kh, t, (t + JOB_TOKENS).min(c.n_tokens)))
            })
        })
        .collect();
    // Score evaluations: below this, threads cost more than they save.
    let work: usize = chunks
        .iter()
        .map(|c| c.n_tokens * (c.start_pos + c.n_tokens) * shape.n_heads)
        .sum();
    let threads = cfg.threads.clamp(1, jobs.len().max(1));
    let run = |jobs: &[(usize, usize, usize, usize)]| -> Vec<Vec<f32>> {
        let mut scratch = Scratch::new(cfg, g, d);
        jobs.iter()
            .map(|&(c, kh, t_start, t_end)| {
                let mut local = vec![0f32; (t_end - t_start) * g * d];
                let span = (t_start, t_end);
                chunk_head(
                    q,
                    kv,
                    shape,
                    &chunks[c],
                    kh,
                    span,
                    scale,
                    cfg,
                    &mut scratch,
                    &mut local,
                );
                local
            })
            .collect()
    };
    let results: Vec<Vec<f32>> = if threads <= 1 || work < PARALLEL_MIN_WORK {
        run(&jobs)
    } else {
        let per = jobs.len().div_ceil(threads);
        std::thread::scope(|s| {
            let handles: Vec<_> = jobs
                .chunks(per)
                .map(|part| s.spawn(move || run(part)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    for (&(c, kh, t_start, t_end), local) in jobs.iter().zip(&results) {
        let c = &chunks[c];
        for (i, t) in (t_start..t_end).enumerate() {
            let o = (c.q_row + t) * qw + kh * g * d;
            out[o..o + g * d].copy_from_slice(&local[i * g * d..(i + 1) * g * d]);
        }
    }
    Ok(())
}

/// Query tokens per job of the threaded flash kernel.
const JOB_TOKENS: usize = 32;

/// Below this many score evaluations a call stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 16;

/// Per-thread buffers of the flash kernel.
struct Scratch {
    m: Vec<f32>,
    l: Vec<f32>,
    acc: Vec<f32>,
    kt: Vec<f32>,
    vt: Vec<f32>,
    s: Vec<f32>,
}

impl Scratch {
    fn new(cfg: FlashConfig, g: usize, d: usize) -> Self {
        let rows = cfg.q_tile * g;
        Self {
            m: vec![0.0; rows],
            l: vec![0.0; rows],
            acc: vec![0.0; rows * d],
            kt: vec![0.0; cfg.kv_tile * d],
            vt: vec![0.0; cfg.kv_tile * d],
            s: vec![0.0; cfg.kv_tile],
        }
    }
}

/// Attention of the query heads sharing KV head `kh` for the chunk's tokens
/// `span.0 .. span.1`; writes `local` as `[span tokens, group, head_dim]`.
#[allow(clippy::too_many_arguments)]
fn chunk_head(
    q: &[f32],
    kv: &PagedKv,
    shape: AttnShape,
    c: &SeqChunk<'_>,
    kh: usize,
    span: (usize, usize),
    scale: f32,
    cfg: FlashConfig,
    sc: &mut Scratch,
    local: &mut [f32],
) {
    let (d, g, qw) = (shape.head_dim, shape.group(), shape.q_width());
    let Scratch {
        m,
        l,
        acc,
        kt,
        vt,
        s,
    } = sc;
    let mut t0 = span.0;
    while t0 < span.1 {
        let t1 = (t0 + cfg.q_tile).min(span.1);
        let nr = (t1 - t0) * g;
        m[..nr].fill(f32::NEG_INFINITY);
        l[..nr].fill(0.0);
        acc[..nr * d].fill(0.0);
        let kv_end = c.start_pos + t1;
        let mut c0 = 0;
        while c0 < kv_end {
            let c1 = (c0 + cfg.kv_tile).min(kv_end);
            for p in c0..c1 {
                let j = p - c0;
                let ko = kh * d;
                kt[j * d..(j + 1) * d].copy_from_slice(&kv.k_at(c.block_table, p)[ko..ko + d]);
                vt[j * d..(j + 1) * d].copy_from_slice(&kv.v_at(c.block_table, p)[ko..ko + d]);
            }
            for r in 0..nr {
                let (ti, hj) = (t0 + r / g, r % g);
                let qpos = c.start_pos + ti;
                if c0 > qpos {
                    continue;
                }
                let last = c1.min(qpos + 1);
                let qo = (c.q_row + ti) * qw + (kh * g + hj) * d;
                let qv = &q[qo..qo + d];
                let n = last - c0;
                let mut tile_max = f32::NEG_INFINITY;
                for j in 0..n {
                    let v = dot(qv, &kt[j * d..(j + 1) * d]) * scale;
                    s[j] = v;
                    tile_max = tile_max.max(v);
                }
                let m_new = m[r].max(tile_max);
                let corr = (m[r] - m_new).exp();
                let a = &mut acc[r * d..(r + 1) * d];
                if corr != 1.0 {
                    a.iter_mut().for_each(|x| *x *= corr);
                }
                let mut sum = 0.0;
                for j in 0..n {
                    let p = (s[j] - m_new).exp();
                    sum += p;
                    axpy(a, p, &vt[j * d..(j + 1) * d]);
                }
                l[r] = l[r] * corr + sum;
                m[r] = m_new;
            }
            c0 = c1;
        }
        for r in 0..nr {
            let inv = 1.0 / l[r];
            let o = ((t0 - span.0) * g + r) * d;
            for (x, a) in local[o..o + d].iter_mut().zip(&acc[r * d..(r + 1) * d]) {
                *x = a * inv;
            }
        }
        t0 = t1;
    }
}

#[inline]
pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    // Four independent partial sums: vectorises and is deterministic.
    let mut acc = [0f32; 4];
    let chunks = a.len() / 4;
    for i in 0..chunks {
        for k in 0..4 {
            acc[k] += a[4 * i + k] * b[4 * i + k];
        }
    }
    let mut s = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    for i in chunks * 4..a.len() {
        s += a[i] * b[i];
    }
    s
}

#[inline]
pub(crate) fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Naive dense causal attention for one sequence, computed in f64: the
/// reference the flash and decode kernels are tested against.
///
/// `q` is `[n, n_heads * head_dim]` for positions `start_pos .. start_pos + n`;
/// `k` and `v` are `[len, n_kv_heads * head_dim]` for positions `0 .. len` with
/// `len >= start_pos + n`. Returns `[n, n_heads * head_dim]`.
pub fn naive_attention(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttnShape,
    start_pos: usize,
    scale: f32,
) -> Result<Vec<f32>, KernelError> {
    shape.validate()?;
    let (d, g, qw, kw) = (
        shape.head_dim,
        shape.group(),
        shape.q_width(),
        shape.kv_width(),
    );
    let n = q.len() / qw;
    check_len("q", q.len(), n * qw)?;
    let len = k.len() / kw;
    check_len("k", k.len(), len * kw)?;
    check_len("v", v.len(), len * kw)?;
    if len < start_pos + n {
        return Err(KernelError::Config(format!(
            "K/V hold {len} positions but queries reach position {}",
            start_pos + n
        )));
    }
    let mut out = vec![0f32; n * qw];
    let mut scores = vec![0f64; len];
    for i in 0..n {
        let ctx = start_pos + i + 1;
        for h in 0..shape.n_heads {
            let kh = h / g;
            let qv = &q[i * qw + h * d..i * qw + (h + 1) * d];
            for (p, sc) in scores[..ctx].iter_mut().enumerate() {
                let kv = &k[p * kw + kh * d..p * kw + (kh + 1) * d];
                let dotp: f64 = qv
                    .iter()
                    .zip(kv)
                    .map(|(a, b)| f64::from(*a) * f64::from(*b))
                    .sum();
                *sc = dotp * f64::from(scale);
            }
            let mx = scores[..ctx]
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max);
            let mut denom = 0.0;
            for sc in &mut scores[..ctx] {
                *sc = (*sc - mx).exp();
                denom += *sc;
            }
            for e in 0..d {
                let mut o = 0.0;
                for (p, w) in scores[..ctx].iter().enumerate() {
                    o += w * f64::from(v[p * kw + kh * d + e]);
                }
                out[i * qw + h * d + e] = (o / denom) as f32;
            }
        }
    }
    Ok(out)
}
