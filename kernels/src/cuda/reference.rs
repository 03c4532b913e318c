//! Plain f64 references for the CUDA kernels' checks (inputs are the bf16
//! values the device sees, widened to f32).

/// `‖out − reference‖₂ / ‖reference‖₂`; NaN when either holds a NaN or the lengths differ.
pub fn rel_err(out: &[f32], reference: &[f32]) -> f64 {
    if out.len() != reference.len() {
        return f64::NAN;
    }
    let (mut num, mut den) = (0f64, 0f64);
    for (&o, &r) in out.iter().zip(reference) {
        let d = f64::from(o) - f64::from(r);
        num += d * d;
        den += f64::from(r) * f64::from(r);
    }
    if num.is_nan() || den.is_nan() {
        return f64::NAN;
    }
    if den == 0.0 {
        return if num == 0.0 { 0.0 } else { f64::INFINITY };
    }
    (num / den).sqrt()
}

/// RMSNorm of each `hidden`-wide row: `x / sqrt(mean(x²) + eps) · w`.
pub fn rms_norm(x: &[f32], w: &[f32], hidden: usize, eps: f64) -> Vec<f32> {
    let mut out = Vec::with_capacity(x.len());
    for row in x.chunks_exact(hidden) {
        let ms = row
            .iter()
            .map(|&v| f64::from(v) * f64::from(v))
            .sum::<f64>()
            / hidden as f64;
        let inv = 1.0 / (ms + eps).sqrt();
        out.extend(
            row.iter()
                .zip(w)
                .map(|(&v, &g)| (f64::from(v) * inv * f64::from(g)) as f32),
        );
    }
    out
}

/// Rotates `heads` heads of `head_dim` per token in place ("rotate half" pairing).
pub fn rope(x: &mut [f32], heads: usize, head_dim: usize, positions: &[i32], inv_freq: &[f64]) {
    let half = head_dim / 2;
    for (row, &p) in x.chunks_exact_mut(heads * head_dim).zip(positions) {
        for head in row.chunks_exact_mut(head_dim) {
            for j in 0..half {
                let a = f64::from(p) * inv_freq[j];
                let (s, c) = a.sin_cos();
                let (x1, x2) = (f64::from(head[j]), f64::from(head[j + half]));
                head[j] = (x1 * c - x2 * s) as f32;
                head[j + half] = (x2 * c + x1 * s) as f32;
            }
        }
    }
}

/// `silu(gate) · up` for rows `[gate (ffn) | up (ffn)]`.
pub fn silu_mul(gate_up: &[f32], ffn: usize) -> Vec<f32> {
    let mut out = Vec::with_capacity(gate_up.len() / 2);
    for row in gate_up.chunks_exact(2 * ffn) {
        let (g, u) = row.split_at(ffn);
        out.extend(g.iter().zip(u).map(|(&g, &u)| {
            let g = f64::from(g);
            (g / (1.0 + (-g).exp()) * f64::from(u)) as f32
        }));
    }
    out
}

/// `y[t, n] = Σ_k x[t, k] · w[n, k]`.
pub fn gemm(x: &[f32], w: &[f32], tokens: usize, k: usize, n: usize) -> Vec<f32> {
    let mut y = vec![0f32; tokens * n];
    for t in 0..tokens {
        let xr = &x[t * k..(t + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let s: f64 = xr
                .iter()
                .zip(wr)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            y[t * n + j] = s as f32;
        }
    }
    y
}

/// Geometry of a paged attention reference call.
#[derive(Clone, Copy, Debug)]
pub struct AttnGeometry {
    /// Query heads.
    pub hq: usize,
    /// KV heads.
    pub hkv: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Tokens per cache block.
    pub block_size: usize,
    /// Softmax scale.
    pub scale: f64,
}

/// Causal attention over a paged cache (`[blocks, block_size, hkv, head_dim]`).
///
/// Sequence `b` has `q_lens[b]` new queries (rows of `q`, `[Σ q_lens, hq, head_dim]`)
/// at positions `ctx_lens[b] − q_lens[b] ..`, each attending keys `0 ..= position`
/// found through `tables[b]`. Decode is the case `q_lens[b] = 1`.
pub fn paged_attention(
    g: AttnGeometry,
    q: &[f32],
    q_lens: &[usize],
    ctx_lens: &[usize],
    k_cache: &[f32],
    v_cache: &[f32],
    tables: &[Vec<usize>],
) -> Vec<f32> {
    let rows: Vec<usize> = (0..q_lens.iter().sum()).collect();
    paged_attention_rows(g, q, q_lens, ctx_lens, k_cache, v_cache, tables, &rows)
}

/// [`paged_attention`] for the query rows `rows` only (global row indices,
/// ascending), each `[hq, head_dim]`, in that order: long prompts checked at
/// the rows that matter (tile edges) without an hour of f64 arithmetic.
#[allow(clippy::too_many_arguments)]
pub fn paged_attention_rows(
    g: AttnGeometry,
    q: &[f32],
    q_lens: &[usize],
    ctx_lens: &[usize],
    k_cache: &[f32],
    v_cache: &[f32],
    tables: &[Vec<usize>],
    rows: &[usize],
) -> Vec<f32> {
    let d = g.head_dim;
    let group = g.hq / g.hkv;
    let mut out = vec![0f32; rows.len() * g.hq * d];
    let mut scores = Vec::new();
    let mut start = 0usize;
    let mut wanted = rows.iter().enumerate().peekable();
    for (b, (&ql, &ctx)) in q_lens.iter().zip(ctx_lens).enumerate() {
        let prior = ctx - ql;
        while let Some(&(slot_out, &row)) = wanted.peek() {
            if row >= start + ql {
                break;
            }
            wanted.next();
            let pos = prior + (row - start);
            for h in 0..g.hq {
                let hk = h / group;
                let qv = &q[(row * g.hq + h) * d..][..d];
                let kv_off = |j: usize| {
                    let slot = tables[b][j / g.block_size] * g.block_size + j % g.block_size;
                    (slot * g.hkv + hk) * d
                };
                scores.clear();
                let mut mx = f64::NEG_INFINITY;
                for j in 0..=pos {
                    let kr = &k_cache[kv_off(j)..][..d];
                    let s: f64 = qv
                        .iter()
                        .zip(kr)
                        .map(|(&a, &b)| f64::from(a) * f64::from(b))
                        .sum::<f64>()
                        * g.scale;
                    mx = mx.max(s);
                    scores.push(s);
                }
                let mut den = 0f64;
                let mut acc = vec![0f64; d];
                for (j, &s) in scores.iter().enumerate() {
                    let p = (s - mx).exp();
                    den += p;
                    let vr = &v_cache[kv_off(j)..][..d];
                    for (a, &v) in acc.iter_mut().zip(vr) {
                        *a += p * f64::from(v);
                    }
                }
                let o = &mut out[(slot_out * g.hq + h) * d..][..d];
                for (o, a) in o.iter_mut().zip(&acc) {
                    *o = (a / den) as f32;
                }
            }
        }
        start += ql;
    }
    out
}

/// The largest [`rel_err`] over rows of `row_len` elements: an error confined
/// to a few rows (one tile, one head) is not averaged away.
pub fn max_row_rel_err(out: &[f32], reference: &[f32], row_len: usize) -> f64 {
    if out.len() != reference.len() || row_len == 0 || !out.len().is_multiple_of(row_len) {
        return f64::NAN;
    }
    out.chunks(row_len)
        .zip(reference.chunks(row_len))
        .map(|(o, r)| rel_err(o, r))
        .fold(0.0, |m, e| {
            if e.is_nan() || m.is_nan() {
                f64::NAN
            } else {
                m.max(e)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_err_flags_nan_and_measures_distance() {
        assert_eq!(rel_err(&[1.0, 2.0], &[1.0, 2.0]), 0.0);
        assert!(rel_err(&[f32::NAN, 2.0], &[1.0, 2.0]).is_nan());
        assert!(rel_err(&[1.0], &[1.0, 2.0]).is_nan());
        let e = rel_err(&[1.1, 2.0], &[1.0, 2.0]);
        assert!((e - 0.1 / 5f64.sqrt()).abs() < 1e-6, "{e}");
    }

    #[test]
    fn attention_of_one_key_returns_its_value() {
        let g = AttnGeometry {
            hq: 2,
            hkv: 1,
            head_dim: 4,
            block_size: 2,
            scale: 0.5,
        };
        let q = vec![0.3f32; 8];
        // Two blocks; the sequence uses block 1 only.
        let mut k = vec![0f32; 16];
        let mut v = vec![0f32; 16];
        k[8..12].copy_from_slice(&[1.0, -1.0, 0.5, 2.0]);
        v[8..12].copy_from_slice(&[4.0, 3.0, 2.0, 1.0]);
        let out = paged_attention(g, &q, &[1], &[1], &k, &v, &[vec![1]]);
        assert_eq!(out, vec![4.0, 3.0, 2.0, 1.0, 4.0, 3.0, 2.0, 1.0]);
    }

    #[test]
    fn causal_attention_matches_a_hand_computed_softmax() {
        let g = AttnGeometry {
            hq: 1,
            hkv: 1,
            head_dim: 1,
            block_size: 1,
            scale: 1.0,
        };
        // Two new tokens at positions 0 and 1; keys 1 and 2, values 10 and 20;
        // blocks stored in reverse order.
        let k = vec![2.0f32, 1.0];
        let v = vec![20.0f32, 10.0];
        let out = paged_attention(g, &[1.0, 1.0], &[2], &[2], &k, &v, &[vec![1, 0]]);
        assert_eq!(out[0], 10.0);
        let (p1, p2) = (1f64.exp(), 2f64.exp());
        let want = (10.0 * p1 + 20.0 * p2) / (p1 + p2);
        assert!((f64::from(out[1]) - want).abs() < 1e-4);
    }

    #[test]
    fn rms_norm_rope_silu_and_gemm_on_small_inputs() {
        let y = rms_norm(&[3.0, 4.0], &[1.0, 2.0], 2, 0.0);
        let inv = 1.0 / (12.5f64).sqrt();
        assert!((f64::from(y[0]) - 3.0 * inv).abs() < 1e-6);
        assert!((f64::from(y[1]) - 8.0 * inv).abs() < 1e-6);

        let mut x = vec![1.0f32, 0.0];
        rope(&mut x, 1, 2, &[1], &[std::f64::consts::FRAC_PI_2]);
        assert!(x[0].abs() < 1e-6 && (x[1] - 1.0).abs() < 1e-6, "{x:?}");

        let s = silu_mul(&[0.0, 2.0, 5.0, 3.0], 2);
        assert_eq!(s[0], 0.0);
        assert!((f64::from(s[1]) - 2.0 / (1.0 + (-2f64).exp()) * 3.0).abs() < 1e-5);

        let y = gemm(
            &[1.0, 2.0, 3.0, 4.0],
            &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0],
            2,
            2,
            3,
        );
        assert_eq!(y, vec![1.0, 2.0, 3.0, 3.0, 4.0, 7.0]);
    }
}
