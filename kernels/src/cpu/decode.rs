//! Paged decode attention with split-KV (Flash-Decoding) and a log-sum-exp merge.
//!
//! A decode step has one query token per sequence, so there is little
//! parallelism across queries; Flash-Decoding splits each sequence's KV range
//! into `num_splits` partitions, computes a partial softmax-weighted sum over
//! each (its maximum `m`, denominator `l` and unnormalised accumulator), and
//! merges the partials exactly:
//! `M = max m_i`, `L = Σ l_i e^{m_i − M}`, `o = Σ acc_i e^{m_i − M} / L`.

use crate::KernelError;
use crate::cpu::attention::{axpy, check_ragged, dot};
use crate::cpu::paged::{AttnShape, PagedKv};

/// One decoding sequence.
#[derive(Clone, Copy, Debug)]
pub struct DecodeSeq<'a> {
    /// Row of the query token in the `q` and `out` buffers.
    pub q_row: usize,
    /// Position of the query token; it attends to positions `0 ..= pos`.
    pub pos: usize,
    /// The sequence's KV blocks, covering positions `0 ..= pos`.
    pub block_table: &'a [u32],
}

/// A partial softmax over one KV partition for one head.
#[derive(Clone, Debug, PartialEq)]
pub struct Partial {
    /// Largest score in the partition (`-inf` when it is empty).
    pub m: f32,
    /// `Σ e^{s − m}` over the partition.
    pub l: f32,
    /// `Σ e^{s − m} v` over the partition (`head_dim` values).
    pub acc: Vec<f32>,
}

/// Merges partials of the same query head into the normalised output and
/// returns its log-sum-exp (`m + ln l` of the whole range).
pub fn lse_merge(parts: &[Partial], out: &mut [f32]) -> f32 {
    let big_m = parts.iter().map(|p| p.m).fold(f32::NEG_INFINITY, f32::max);
    out.fill(0.0);
    let mut big_l = 0.0;
    for p in parts.iter().filter(|p| p.l > 0.0) {
        let w = (p.m - big_m).exp();
        big_l += p.l * w;
        axpy(out, w, &p.acc);
    }
    let inv = 1.0 / big_l;
    out.iter_mut().for_each(|o| *o *= inv);
    big_m + big_l.ln()
}

/// Split-KV paged decode attention: writes `out[seq.q_row]` for every sequence.
///
/// `q` and `out` are `[rows, n_heads * head_dim]`. Each sequence's context
/// `0 ..= pos` is cut into `num_splits` nearly equal partitions (fewer when the
/// context is shorter), each reduced to a [`Partial`] and merged with
/// [`lse_merge`].
pub fn paged_decode_attention(
    q: &[f32],
    kv: &PagedKv,
    shape: AttnShape,
    seqs: &[DecodeSeq<'_>],
    scale: f32,
    num_splits: usize,
    out: &mut [f32],
) -> Result<(), KernelError> {
    check_ragged(q, out, kv, shape, seqs.iter().map(|s| (s.q_row, 1)))?;
    if num_splits == 0 {
        return Err(KernelError::Config("num_splits must be at least 1".into()));
    }
    for s in seqs {
        kv.check_table(s.block_table, s.pos + 1)?;
    }
    let (d, g, qw) = (shape.head_dim, shape.group(), shape.q_width());
    let mut parts: Vec<Partial> = Vec::new();
    let mut scores = Vec::new();
    for s in seqs {
        let ctx = s.pos + 1;
        let splits = num_splits.min(ctx);
        let per = ctx.div_ceil(splits);
        for h in 0..shape.n_heads {
            let kh = h / g;
            let qo = s.q_row * qw + h * d;
            let qv = &q[qo..qo + d];
            parts.clear();
            let mut p0 = 0;
            while p0 < ctx {
                let p1 = (p0 + per).min(ctx);
                scores.clear();
                let mut m = f32::NEG_INFINITY;
                for p in p0..p1 {
                    let k = &kv.k_at(s.block_table, p)[kh * d..(kh + 1) * d];
                    let sc = dot(qv, k) * scale;
                    m = m.max(sc);
                    scores.push(sc);
                }
                let mut acc = vec![0f32; d];
                let mut l = 0.0;
                for (p, sc) in (p0..p1).zip(&scores) {
                    let w = (sc - m).exp();
                    l += w;
                    axpy(
                        &mut acc,
                        w,
                        &kv.v_at(s.block_table, p)[kh * d..(kh + 1) * d],
                    );
                }
                parts.push(Partial { m, l, acc });
                p0 = p1;
            }
            lse_merge(&parts, &mut out[qo..qo + d]);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merging_partials_equals_one_softmax_over_the_union() {
        // scores 1, 2 (split A) and 3 (split B) with scalar values 10, 20, 30
        let e = |x: f32| x.exp();
        let a = Partial {
            m: 2.0,
            l: e(-1.0) + 1.0,
            acc: vec![10.0 * e(-1.0) + 20.0],
        };
        let b = Partial {
            m: 3.0,
            l: 1.0,
            acc: vec![30.0],
        };
        let mut out = [0f32];
        let lse = lse_merge(&[a, b], &mut out);
        let z = e(1.0) + e(2.0) + e(3.0);
        let want = (10.0 * e(1.0) + 20.0 * e(2.0) + 30.0 * e(3.0)) / z;
        assert!((out[0] - want).abs() < 1e-5, "{} vs {want}", out[0]);
        assert!((lse - z.ln()).abs() < 1e-5);
    }
}
