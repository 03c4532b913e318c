//! Workloads shared by the sim tests and examples.
#![allow(dead_code)]

use fuselab_core::{RequestRecord, RequestSpec};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp, Normal};

/// `n` requests with prompts N(mean, 0.3·mean) clamped to [lo, hi], outputs
/// N(out, 0.3·out) clamped to [1, 3·out] (or exactly `out` when `fixed_out`),
/// Poisson arrivals at `rate` (all at 0 when `rate` is None).
#[allow(clippy::too_many_arguments)]
pub fn workload(
    n: u64,
    mean: f64,
    lo: u32,
    hi: u32,
    out: f64,
    fixed_out: bool,
    rate: Option<f64>,
    seed: u64,
) -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let p = Normal::new(mean, 0.3 * mean).unwrap();
    let o = Normal::new(out, 0.3 * out).unwrap();
    let mut t = 0.0;
    (0..n)
        .map(|id| {
            if let Some(r) = rate {
                t += Exp::new(r).unwrap().sample(&mut rng);
            }
            let prompt_len =
                (p.sample(&mut rng).round() as i64).clamp(i64::from(lo), i64::from(hi)) as u32;
            let output_len = if fixed_out {
                out as u32
            } else {
                (o.sample(&mut rng).round() as i64).clamp(1, (3.0 * out) as i64) as u32
            };
            RequestSpec {
                id,
                arrival_s: t,
                prompt_len,
                output_len,
                prefix_group: None,
                prefix_len: 0,
                conversation: None,
                adapter: None,
            }
        })
        .collect()
}

/// The DESIGN.md §8 workload: 64 requests, N(2600, 780) clamped [256, 4096], 128 out, all at 0.
pub fn design_s8(seed: u64) -> Vec<RequestSpec> {
    workload(64, 2600.0, 256, 4096, 128.0, true, None, seed)
}

/// Linear-interpolation percentile of `v` (sorted in place).
pub fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return f64::NAN;
    }
    let x = q * (v.len() - 1) as f64;
    let (i, f) = (x.floor() as usize, x - x.floor());
    if i + 1 < v.len() {
        v[i] * (1.0 - f) + v[i + 1] * f
    } else {
        v[i]
    }
}

/// (p99 TTFT, output tokens/s over first send → last token, mean TPOT) of a run.
pub fn summary(records: &[RequestRecord]) -> (f64, f64, f64) {
    let mut ttft: Vec<f64> = records
        .iter()
        .filter_map(|r| Some(r.t_first_token()? - r.t_sent))
        .collect();
    let start = records
        .iter()
        .map(|r| r.t_sent)
        .fold(f64::INFINITY, f64::min);
    let end = records
        .iter()
        .filter_map(RequestRecord::t_last_token)
        .fold(0.0, f64::max);
    let toks: u64 = records.iter().map(RequestRecord::tokens_received).sum();
    let tpots: Vec<f64> = records
        .iter()
        .filter(|r| r.tokens.len() > 1)
        .map(|r| {
            (r.t_last_token().unwrap() - r.t_first_token().unwrap()) / (r.tokens.len() - 1) as f64
        })
        .collect();
    let tpot = tpots.iter().sum::<f64>() / tpots.len().max(1) as f64;
    (
        percentile(&mut ttft, 0.99),
        toks as f64 / (end - start),
        tpot,
    )
}
