//! Percentiles and distribution summaries with bootstrap confidence intervals.
//!
//! ## Percentiles
//! [`percentile`] interpolates linearly between order statistics, exactly as
//! numpy's default (`method="linear"`): for `n` sorted samples and `q` in
//! percent, the rank is `h = (n − 1)·q/100` and the value is
//! `x[⌊h⌋] + (h − ⌊h⌋)·(x[⌊h⌋+1] − x[⌊h⌋])`.
//!
//! ## Bootstrap without resampling the data
//! A percentile-bootstrap interval needs the distribution of the statistic over
//! resamples of `n` draws with replacement. Drawing and sorting `n` values per
//! resample costs `O(B·n)`, which is seconds for 100 000 samples and 1 000
//! resamples. We do not subsample; we sample the *order statistics* directly:
//!
//! * a draw with replacement from the sorted samples is `x[⌊n·U⌋]` with `U`
//!   uniform on (0, 1), and `⌊n·U⌋` is monotone in `U`, so the `(k+1)`-th
//!   smallest draw of a resample is `x[⌊n·U₍ₖ₊₁₎⌋]`, where `U₍ₖ₊₁₎` is the
//!   `(k+1)`-th order statistic of `n` uniforms, distributed `Beta(k+1, n−k)`;
//! * given `U₍ₖ₊₁₎ = u`, the next order statistic is `u + (1 − u)·(1 − V^{1/(n−k−1)})`
//!   with `V` uniform (the minimum of the `n − k − 1` uniforms above `u`).
//!
//! This yields exactly the same distribution of the interpolated percentile as
//! the textbook resampling bootstrap, at `O(B)` cost for any `n`, so every
//! sample size gets the full [`BOOTSTRAP_RESAMPLES`] resamples. A test compares
//! it with the textbook bootstrap.
//!
//! The interval is the 2.5 % and 97.5 % percentiles of the bootstrap
//! distribution. With very few samples that distribution is discrete and the
//! interval can, in rare cases, miss the point estimate; it is then widened to
//! include it, so that `lo ≤ estimate ≤ hi` always holds.

use std::collections::BTreeMap;

use fuselab_core::LatencyStats;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Beta, Distribution};

/// Resamples per bootstrap interval.
pub const BOOTSTRAP_RESAMPLES: usize = 1000;

/// Percentiles (in percent) that get a confidence interval in
/// [`LatencyStats::ci95`], with their keys.
pub const CI_PERCENTILES: [(&str, f64); 3] = [("p50", 50.0), ("p90", 90.0), ("p99", 99.0)];

/// The `q`-th percentile (`q` in percent, clamped to `[0, 100]`) of samples
/// sorted in ascending order, by linear interpolation (numpy's default).
/// Returns `None` for an empty slice or a NaN `q`.
///
/// # Example
/// ```
/// use fuselab_metrics::percentile;
/// let x = [1.0, 2.0, 3.0, 4.0];
/// assert_eq!(percentile(&x, 50.0), Some(2.5));
/// assert_eq!(percentile(&x, 90.0), Some(3.7)); // rank 2.7
/// assert_eq!(percentile(&[], 50.0), None);
/// ```
pub fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() || q.is_nan() {
        return None;
    }
    let h = (sorted.len() - 1) as f64 * q.clamp(0.0, 100.0) / 100.0;
    Some(interpolate(sorted, h))
}

/// Value at fractional 0-based rank `h` of sorted samples.
fn interpolate(sorted: &[f64], h: f64) -> f64 {
    let k = h.floor() as usize;
    let frac = h - k as f64;
    let lo = sorted[k.min(sorted.len() - 1)];
    if frac == 0.0 || k + 1 >= sorted.len() {
        lo
    } else {
        lo + frac * (sorted[k + 1] - lo)
    }
}

/// Summarises latency samples (seconds): count, mean, min, max, p50/p90/p95/p99
/// and 95 % bootstrap intervals for p50/p90/p99 with [`BOOTSTRAP_RESAMPLES`]
/// resamples. Deterministic for a given `seed`. NaN samples are ignored; an
/// empty input gives the all-zero [`LatencyStats::default`].
///
/// # Example
/// ```
/// let s = fuselab_metrics::latency_stats(&[0.3, 0.1, 0.2], 7);
/// assert_eq!((s.count, s.p50, s.max), (3, 0.2, 0.3));
/// let [lo, hi] = s.ci95["p50"];
/// assert!(lo <= 0.2 && 0.2 <= hi);
/// ```
pub fn latency_stats(samples: &[f64], seed: u64) -> LatencyStats {
    latency_stats_with(samples, seed, BOOTSTRAP_RESAMPLES)
}

/// [`latency_stats`] with a chosen number of bootstrap resamples (0 disables
/// the intervals).
pub fn latency_stats_with(samples: &[f64], seed: u64, resamples: usize) -> LatencyStats {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|x| !x.is_nan()).collect();
    if sorted.is_empty() {
        return LatencyStats::default();
    }
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let p = |q| interpolate(&sorted, (n - 1) as f64 * q / 100.0);
    let mut ci95 = BTreeMap::new();
    if resamples > 0 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        for (key, q) in CI_PERCENTILES {
            let [lo, hi] = bootstrap_percentile_ci(&sorted, q, resamples, &mut rng);
            let est = p(q);
            ci95.insert(key.to_string(), [lo.min(est), hi.max(est)]);
        }
    }
    LatencyStats {
        count: n as u64,
        mean: sorted.iter().sum::<f64>() / n as f64,
        min: sorted[0],
        max: sorted[n - 1],
        p50: p(50.0),
        p90: p(90.0),
        p95: p(95.0),
        p99: p(99.0),
        ci95,
    }
}

/// [`latency_stats`] for samples grouped by request (each request's ITL
/// gaps): the same point statistics over the pooled values, but intervals
/// from a per-request (cluster) bootstrap, which draws whole requests with
/// replacement ([`crate::cluster`]). Gaps of one request are correlated, so
/// resampling them as if independent understates the uncertainty. With one
/// value per request both bootstraps have the same distribution.
///
/// # Example
/// ```
/// // One request with large gaps among small ones: p99 depends on whether it is drawn.
/// let mut groups = vec![vec![0.01; 50]; 19];
/// groups.push(vec![1.0; 50]);
/// let s = fuselab_metrics::clustered_latency_stats(&groups, 7);
/// assert_eq!((s.count, s.p99), (1000, 1.0));
/// let [lo, hi] = s.ci95["p99"];
/// assert!(lo < 0.02 && hi == 1.0);
/// ```
pub fn clustered_latency_stats<G: AsRef<[f64]>>(groups: &[G], seed: u64) -> LatencyStats {
    let pooled: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.as_ref().iter().copied())
        .collect();
    let mut stats = latency_stats_with(&pooled, seed, 0);
    if stats.count == 0 {
        return stats;
    }
    let clustered = crate::cluster::Clustered::from_groups(groups);
    let qs: Vec<f64> = CI_PERCENTILES.iter().map(|(_, q)| q / 100.0).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let Some(cis) =
        crate::cluster::cluster_quantile_cis(&clustered, &qs, BOOTSTRAP_RESAMPLES, 0.95, &mut rng)
    else {
        return stats;
    };
    for ((key, _), [lo, hi]) in CI_PERCENTILES.iter().zip(cis) {
        let est = match *key {
            "p50" => stats.p50,
            "p90" => stats.p90,
            _ => stats.p99,
        };
        stats
            .ci95
            .insert((*key).to_string(), [lo.min(est), hi.max(est)]);
    }
    stats
}

/// The 95 % percentile-bootstrap interval of the `q`-th percentile of `sorted`
/// (see the module docs for the order-statistic sampling).
fn bootstrap_percentile_ci(
    sorted: &[f64],
    q: f64,
    resamples: usize,
    rng: &mut ChaCha8Rng,
) -> [f64; 2] {
    let n = sorted.len();
    if n == 1 {
        return [sorted[0], sorted[0]];
    }
    let h = (n - 1) as f64 * q / 100.0;
    let k = h.floor() as usize;
    let frac = h - k as f64;
    // Both parameters are ≥ 1, so this cannot fail; fall back to the point
    // estimate rather than panic if it ever did.
    let Some(beta) = order_statistic_beta(n, k) else {
        let v = interpolate(sorted, h);
        return [v, v];
    };
    let mut stats: Vec<f64> = (0..resamples)
        .map(|_| resampled_percentile(sorted, k, frac, &beta, rng))
        .collect();
    stats.sort_by(f64::total_cmp);
    [
        interpolate(&stats, (resamples - 1) as f64 * 0.025),
        interpolate(&stats, (resamples - 1) as f64 * 0.975),
    ]
}

/// The distribution of the `(k+1)`-th smallest of `n` uniforms: `Beta(k+1, n−k)`.
fn order_statistic_beta(n: usize, k: usize) -> Option<Beta<f64>> {
    Beta::new((k + 1) as f64, n.saturating_sub(k) as f64).ok()
}

/// One draw of the interpolated percentile at rank `k + frac` of a bootstrap
/// resample of `sorted`, from the order statistics of uniforms; `beta` is
/// `Beta(k+1, n−k)`.
fn resampled_percentile(
    sorted: &[f64],
    k: usize,
    frac: f64,
    beta: &Beta<f64>,
    rng: &mut ChaCha8Rng,
) -> f64 {
    let n = sorted.len();
    let index = |u: f64| ((n as f64 * u) as usize).min(n - 1);
    let u = beta.sample(rng);
    let lo = sorted[index(u)];
    if frac == 0.0 || k + 1 >= n {
        return lo;
    }
    let above = (n - k - 1) as f64;
    let v: f64 = rng.random();
    let u_next = u + (1.0 - u) * (1.0 - v.powf(1.0 / above));
    lo + frac * (sorted[index(u_next)] - lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::Rng;

    /// Frequency with which the sampled percentile equals `want`.
    fn freq(sorted: &[f64], q: f64, want: f64, draws: usize) -> f64 {
        let n = sorted.len();
        let h = (n - 1) as f64 * q / 100.0;
        let k = h.floor() as usize;
        let beta = order_statistic_beta(n, k).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(17);
        let hits = (0..draws)
            .filter(|_| resampled_percentile(sorted, k, h - k as f64, &beta, &mut rng) == want)
            .count();
        hits as f64 / draws as f64
    }

    /// Exact bootstrap probabilities for n = 5 draws with replacement from
    /// [0, 1, 10, 100, 1000]: P(min* = 0) = 1 − 0.8⁵; P(median* = 10) =
    /// P(Bin(5, 0.6) ≥ 3) − P(Bin(5, 0.4) ≥ 3); P(max* = 1000) = 1 − 0.8⁵.
    /// For q = 62.5 (rank 2.5) the resampled value is (10 + 100)/2 = 55 exactly
    /// when the 3rd smallest draw is 10 and the 4th is 100 (pair sums of these
    /// values are all distinct).
    #[test]
    fn order_statistic_sampler_has_exact_bootstrap_probabilities() {
        let x = [0.0, 1.0, 10.0, 100.0, 1000.0];
        let draws = 10_000;
        let p_min = 1.0 - 0.8f64.powi(5);
        let binom_ge3 = |p: f64| {
            let q = 1.0 - p;
            10.0 * p.powi(3) * q * q + 5.0 * p.powi(4) * q + p.powi(5)
        };
        let p_med = binom_ge3(0.6) - binom_ge3(0.4);
        // Enumerate the multinomial counts of draws below 10, equal to 10, 100
        // and 1000.
        let mut p_mid = 0.0;
        let fact = |n: u32| (1..=n).product::<u32>() as f64;
        for lo in 0..=5u32 {
            for two in 0..=5 - lo {
                for three in 0..=5 - lo - two {
                    let hi = 5 - lo - two - three;
                    // sorted draws: `lo` below 10, `two` 10s, `three` 100s, `hi` 1000s.
                    let third_is_2 = lo < 3 && lo + two >= 3;
                    let fourth_is_3 = lo + two < 4 && lo + two + three >= 4;
                    if third_is_2 && fourth_is_3 {
                        p_mid += fact(5) / (fact(lo) * fact(two) * fact(three) * fact(hi))
                            * 0.4f64.powi(lo as i32)
                            * 0.2f64.powi((two + three) as i32)
                            * 0.2f64.powi(hi as i32);
                    }
                }
            }
        }
        for (q, want, p) in [
            (0.0, 0.0, p_min),
            (50.0, 10.0, p_med),
            (100.0, 1000.0, p_min),
            (62.5, 55.0, p_mid),
        ] {
            let f = freq(&x, q, want, draws);
            assert!((f - p).abs() < 0.02, "q={q}: frequency {f}, exact {p}");
        }
    }

    #[test]
    fn percentile_matches_numpy_linear() {
        // numpy.percentile([10, 20, 30, 40, 50], [0, 25, 40, 90, 99, 100])
        let x = [10.0, 20.0, 30.0, 40.0, 50.0];
        let want = [
            (0.0, 10.0),
            (25.0, 20.0),
            (40.0, 26.0),
            (90.0, 46.0),
            (99.0, 49.6),
            (100.0, 50.0),
        ];
        for (q, v) in want {
            let got = percentile(&x, q).unwrap();
            assert!((got - v).abs() < 1e-12, "q={q}: {got} != {v}");
        }
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&x, -5.0), Some(10.0));
        assert_eq!(percentile(&x, 500.0), Some(50.0));
        assert_eq!(percentile(&x, f64::NAN), None);
    }

    #[test]
    fn stats_of_hand_samples() {
        let s = latency_stats(&[4.0, 1.0, 3.0, 2.0, f64::NAN], 1);
        assert_eq!(s.count, 4);
        assert_eq!(s.mean, 2.5);
        assert_eq!((s.min, s.max), (1.0, 4.0));
        assert_eq!(s.p50, 2.5);
        assert!((s.p90 - 3.7).abs() < 1e-12);
        assert!((s.p95 - 3.85).abs() < 1e-12);
        assert!((s.p99 - 3.97).abs() < 1e-12);
        assert_eq!(s.ci95.len(), 3);
        assert_eq!(latency_stats(&[], 1), LatencyStats::default());
        assert!(latency_stats_with(&[1.0, 2.0], 1, 0).ci95.is_empty());
    }

    /// The order-statistic bootstrap agrees with the textbook one (draw n with
    /// replacement, sort, take the percentile) within Monte-Carlo error.
    #[test]
    fn order_statistic_bootstrap_matches_textbook_bootstrap() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let mut data: Vec<f64> = (0..200)
            .map(|_| rng.random::<f64>().powi(3) * 10.0)
            .collect();
        data.sort_by(f64::total_cmp);
        let b = 2000;
        for q in [50.0, 90.0, 99.0] {
            let fast = bootstrap_percentile_ci(&data, q, b, &mut ChaCha8Rng::seed_from_u64(11));
            let mut slow: Vec<f64> = (0..b)
                .map(|_| {
                    let mut r: Vec<f64> = (0..data.len())
                        .map(|_| data[rng.random_range(0..data.len())])
                        .collect();
                    r.sort_by(f64::total_cmp);
                    percentile(&r, q).unwrap()
                })
                .collect();
            slow.sort_by(f64::total_cmp);
            let slow_ci = [
                percentile(&slow, 2.5).unwrap(),
                percentile(&slow, 97.5).unwrap(),
            ];
            // Compare the bounds in rank space: both should fall at nearly the same
            // position of the data.
            for (a, c) in fast.iter().zip(slow_ci) {
                let ra = data.partition_point(|x| x < a) as f64;
                let rc = data.partition_point(|x| *x < c) as f64;
                assert!(
                    (ra - rc).abs() <= 4.0,
                    "q={q}: fast {fast:?} slow {slow_ci:?}"
                );
            }
        }
    }

    #[test]
    fn bootstrap_of_large_sample_is_tight_and_fast() {
        let data: Vec<f64> = (0..100_000).map(|i| f64::from(i) / 100_000.0).collect();
        let s = latency_stats(&data, 5);
        let [lo, hi] = s.ci95["p50"];
        // The sample median of 100k uniforms has sd ≈ 0.5/√n ≈ 0.0016.
        assert!(lo < 0.5 && hi > 0.5 && hi - lo < 0.01, "{lo} {hi}");
    }

    proptest! {
        #[test]
        fn percentiles_are_monotone_in_q(
            mut x in prop::collection::vec(-1e6f64..1e6, 1..60),
            qa in 0.0f64..100.0, qb in 0.0f64..100.0,
        ) {
            x.sort_by(f64::total_cmp);
            let (lo, hi) = if qa <= qb { (qa, qb) } else { (qb, qa) };
            let (a, b) = (percentile(&x, lo).unwrap(), percentile(&x, hi).unwrap());
            prop_assert!(a <= b);
            prop_assert!(x[0] <= a && b <= x[x.len() - 1]);
        }

        #[test]
        fn ci_contains_estimate_and_is_deterministic(
            x in prop::collection::vec(0.0f64..100.0, 1..80),
            seed in any::<u64>(),
        ) {
            let s = latency_stats_with(&x, seed, 200);
            for (key, est) in [("p50", s.p50), ("p90", s.p90), ("p99", s.p99)] {
                let [lo, hi] = s.ci95[key];
                prop_assert!(lo <= est && est <= hi, "{key}: {lo} {est} {hi}");
                prop_assert!(s.min <= lo && hi <= s.max);
            }
            prop_assert_eq!(&s, &latency_stats_with(&x, seed, 200));
        }
    }
}
