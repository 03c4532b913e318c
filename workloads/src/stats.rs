//! Descriptive statistics of a workload and goodness-of-fit checks of its
//! arrival process (Kolmogorov–Smirnov against the exponential).

use fuselab_core::{Arrivals, RequestSpec};

/// Arithmetic mean; 0 for no samples.
pub fn mean(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    xs.iter().sum::<f64>() / xs.len() as f64
}

/// Sample standard deviation (n − 1 in the denominator); 0 for fewer than two samples.
pub fn std_dev(xs: &[f64]) -> f64 {
    if xs.len() < 2 {
        return 0.0;
    }
    let m = mean(xs);
    let ss: f64 = xs.iter().map(|x| (x - m) * (x - m)).sum();
    (ss / (xs.len() - 1) as f64).sqrt()
}

/// Percentile `p` in `[0, 100]` with linear interpolation between closest
/// ranks (numpy's default); 0 for no samples. The input need not be sorted.
///
/// # Example
/// ```
/// use fuselab_workloads::stats::percentile;
/// assert_eq!(percentile(&[4.0, 1.0, 3.0, 2.0], 50.0), 2.5);
/// assert_eq!(percentile(&[1.0, 2.0], 100.0), 2.0);
/// ```
pub fn percentile(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    percentile_sorted(&v, p)
}

fn percentile_sorted(v: &[f64], p: f64) -> f64 {
    let rank = (p.clamp(0.0, 100.0) / 100.0) * (v.len() - 1) as f64;
    let lo = rank.floor() as usize;
    let hi = rank.ceil() as usize;
    v[lo] + (v[hi] - v[lo]) * (rank - lo as f64)
}

/// CDF of the exponential distribution with the given rate.
pub fn exponential_cdf(x: f64, rate: f64) -> f64 {
    if x <= 0.0 {
        0.0
    } else {
        1.0 - (-rate * x).exp()
    }
}

/// The one-sample Kolmogorov–Smirnov statistic
/// `D = sup_x |F_n(x) − F(x)|` of `samples` against the CDF `cdf`;
/// 0 for no samples.
///
/// # Example
/// ```
/// use fuselab_workloads::stats::ks_statistic;
/// // Four points at the quartiles of U(0, 1): D = 1/8 (half a step).
/// let d = ks_statistic(&[0.125, 0.375, 0.625, 0.875], |x| x.clamp(0.0, 1.0));
/// assert!((d - 0.125).abs() < 1e-12);
/// ```
pub fn ks_statistic(samples: &[f64], cdf: impl Fn(f64) -> f64) -> f64 {
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len() as f64;
    v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let f = cdf(x);
            let above = (i + 1) as f64 / n - f;
            let below = f - i as f64 / n;
            above.max(below)
        })
        .fold(0.0, f64::max)
}

/// Asymptotic critical value of the one-sample KS statistic at significance
/// `alpha`: `sqrt(−ln(α/2) / 2) / sqrt(n)` (1.628/√n at α = 0.01). The fit is
/// rejected when `D` exceeds it. Accurate for n above about 35.
pub fn ks_critical_value(n: usize, alpha: f64) -> f64 {
    (-(alpha / 2.0).ln() / 2.0).sqrt() / (n.max(1) as f64).sqrt()
}

/// Mean, spread and percentiles of one length column.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LengthStats {
    /// Mean.
    pub mean: f64,
    /// Sample standard deviation.
    pub std: f64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
    /// Sum.
    pub total: u64,
}

impl LengthStats {
    fn of(xs: &[u32]) -> Self {
        let mut v: Vec<f64> = xs.iter().map(|&x| f64::from(x)).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return Self::default();
        }
        Self {
            mean: mean(&v),
            std: std_dev(&v),
            min: v[0],
            p50: percentile_sorted(&v, 50.0),
            p99: percentile_sorted(&v, 99.0),
            max: v[v.len() - 1],
            total: xs.iter().map(|&x| u64::from(x)).sum(),
        }
    }
}

/// Goodness of fit of the inter-arrival gaps to the exponential distribution.
#[derive(Clone, Debug, PartialEq)]
pub struct KsTest {
    /// The rate of the exponential tested against.
    pub rate: f64,
    /// The KS statistic `D`.
    pub statistic: f64,
    /// The critical value at `alpha`.
    pub critical: f64,
    /// Significance level.
    pub alpha: f64,
}

impl KsTest {
    /// Whether the gaps are consistent with the exponential at `alpha`.
    pub fn passes(&self) -> bool {
        self.statistic <= self.critical
    }
}

/// What a workload looks like: the figures `fuselab workload` prints.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    /// Number of requests.
    pub count: usize,
    /// Prompt lengths.
    pub prompt: LengthStats,
    /// Output lengths.
    pub output: LengthStats,
    /// Last minus first arrival, seconds.
    pub arrival_span_s: f64,
    /// Mean gap between consecutive arrivals, seconds (0 for fewer than two requests).
    pub interarrival_mean_s: f64,
    /// Coefficient of variation of the gaps (std / mean; 0 when the mean is 0).
    pub interarrival_cv: f64,
    /// KS test of the gaps against the exponential, for Poisson arrivals.
    pub ks: Option<KsTest>,
    /// Distinct prefix groups.
    pub prefix_groups: usize,
    /// Distinct multi-turn conversations (0 when there are none).
    pub conversations: usize,
    /// Most turns in one conversation.
    pub max_turns: u32,
    /// Mean think time before a later turn, seconds (0 when there are none).
    pub think_mean_s: f64,
    /// Prompt tokens that repeat the conversation so far (the previous turn's
    /// prompt and output): the part a prefix cache can serve.
    pub history_tokens: u64,
}

impl Summary {
    /// Summarises requests; `arrivals` selects the goodness-of-fit test
    /// (Poisson arrivals are tested against Exp(rate) at α = 0.01). With
    /// conversations, inter-arrival statistics are those of conversation
    /// starts (first turns), which is what the arrival process draws.
    pub fn of(requests: &[RequestSpec], arrivals: &Arrivals) -> Self {
        let prompt: Vec<u32> = requests.iter().map(|r| r.prompt_len).collect();
        let output: Vec<u32> = requests.iter().map(|r| r.output_len).collect();
        let links = fuselab_core::TurnLinks::of(requests);
        let starts: Vec<f64> = requests
            .iter()
            .zip(&links.waits)
            .filter(|(_, w)| !**w)
            .map(|(r, _)| r.arrival_s)
            .collect();
        let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        let mut conversations: Vec<u64> = requests
            .iter()
            .filter_map(|r| r.conversation.as_ref().map(|c| c.id))
            .collect();
        conversations.sort_unstable();
        conversations.dedup();
        let thinks: Vec<f64> = requests
            .iter()
            .zip(&links.waits)
            .filter(|(_, w)| **w)
            .map(|(r, _)| r.conversation.as_ref().map_or(0.0, |c| c.think_s))
            .collect();
        let history_tokens = links
            .next
            .iter()
            .enumerate()
            .filter_map(|(i, n)| n.map(|j| (i, j)))
            .map(|(i, j)| {
                let prior = u64::from(requests[i].prompt_len) + u64::from(requests[i].output_len);
                prior.min(u64::from(requests[j].prompt_len))
            })
            .sum();
        let gap_mean = mean(&gaps);
        let first = requests
            .iter()
            .map(|r| r.arrival_s)
            .fold(f64::INFINITY, f64::min);
        let last = requests
            .iter()
            .map(|r| r.arrival_s)
            .fold(f64::NEG_INFINITY, f64::max);
        let ks = match *arrivals {
            Arrivals::Poisson { rate } if gaps.len() >= 2 => {
                let alpha = 0.01;
                Some(KsTest {
                    rate,
                    statistic: ks_statistic(&gaps, |x| exponential_cdf(x, rate)),
                    critical: ks_critical_value(gaps.len(), alpha),
                    alpha,
                })
            }
            _ => None,
        };
        let mut groups: Vec<u32> = requests.iter().filter_map(|r| r.prefix_group).collect();
        groups.sort_unstable();
        groups.dedup();
        Self {
            count: requests.len(),
            prompt: LengthStats::of(&prompt),
            output: LengthStats::of(&output),
            arrival_span_s: if requests.is_empty() {
                0.0
            } else {
                last - first
            },
            interarrival_mean_s: gap_mean,
            interarrival_cv: if gap_mean > 0.0 {
                std_dev(&gaps) / gap_mean
            } else {
                0.0
            },
            ks,
            prefix_groups: groups.len(),
            conversations: conversations.len(),
            max_turns: requests
                .iter()
                .filter_map(|r| r.conversation.as_ref().map(|c| c.turn + 1))
                .max()
                .unwrap_or(0),
            think_mean_s: mean(&thinks),
            history_tokens,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_statistics() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), 5.0);
        assert!((std_dev(&xs) - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert_eq!(percentile(&xs, 0.0), 2.0);
        assert_eq!(percentile(&xs, 100.0), 9.0);
        assert_eq!(mean(&[]), 0.0);
        assert_eq!(std_dev(&[1.0]), 0.0);
    }

    #[test]
    fn ks_critical_matches_table() {
        assert!((ks_critical_value(1, 0.01) - 1.6276).abs() < 1e-3);
        assert!((ks_critical_value(1, 0.05) - 1.3581).abs() < 1e-3);
        assert!((ks_critical_value(10_000, 0.01) - 0.016276).abs() < 1e-5);
    }

    #[test]
    fn ks_of_constant_gaps_against_exponential_fails() {
        let gaps = vec![0.25; 1000];
        let d = ks_statistic(&gaps, |x| exponential_cdf(x, 4.0));
        // F(0.25) = 1 − e^{−1} ≈ 0.632, so D ≈ 0.632 at the jump.
        assert!((d - (1.0 - (-1.0f64).exp())).abs() < 1e-9);
    }

    #[test]
    fn summary_figures() {
        let r = |id, t: f64, p, o, g| RequestSpec {
            id,
            arrival_s: t,
            prompt_len: p,
            output_len: o,
            prefix_group: g,
            prefix_len: if g.is_some() { 1 } else { 0 },
            conversation: None,
            adapter: None,
        };
        let reqs = [
            r(0, 0.0, 10, 1, Some(0)),
            r(1, 1.0, 20, 2, Some(1)),
            r(2, 3.0, 30, 3, Some(0)),
        ];
        let s = Summary::of(&reqs, &Arrivals::Constant { rate: 1.0 });
        assert_eq!(s.count, 3);
        assert_eq!(
            (s.prompt.mean, s.prompt.p50, s.prompt.total),
            (20.0, 20.0, 60)
        );
        assert_eq!(s.output.total, 6);
        assert_eq!(s.arrival_span_s, 3.0);
        assert_eq!(s.interarrival_mean_s, 1.5);
        assert_eq!(s.prefix_groups, 2);
        assert!(s.ks.is_none());
    }
}
