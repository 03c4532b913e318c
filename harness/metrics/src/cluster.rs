//! The per-request (cluster) bootstrap shared by `summary.json` and the gate.
//!
//! A request owns one latency value (TTFT, TPOT, E2E) or many (its ITL gaps).
//! The gaps of one request are not independent (they share its batch, its
//! position in the queue, its prompt length), so a bootstrap that resamples
//! pooled gaps as if they were independent gives intervals that are far too
//! narrow. A resample here draws *requests* with replacement and counts each
//! drawn request's values as often as it was drawn.
//!
//! [`Clustered`] holds the values sorted once, each tagged with its owner and
//! an integer weight (equal neighbouring gaps of one request are merged), so a
//! quantile of a resample is a weighted scan, not a sort: `O(requests + a few
//! percent of the values)` per resample with a [`ScanStart`].

use rand::Rng;

/// Integer-weighted values sorted ascending, each owned by one request.
///
/// # Example
/// ```
/// use fuselab_metrics::cluster::Clustered;
/// // Request 0 has gaps [1, 1, 3], request 1 has [2].
/// let c = Clustered::from_groups(&[vec![1.0, 1.0, 3.0], vec![2.0]]);
/// let start = c.scan_start(0.5);
/// // Request 0 drawn twice, request 1 never: [1, 1, 1, 1, 3, 3].
/// assert_eq!(c.quantile(&[2, 0], 0.5, &start), Some(1.0));
/// assert_eq!(c.quantile(&[1, 1], 0.5, &start), Some(1.5));
/// ```
#[derive(Clone, Debug, Default)]
pub struct Clustered {
    values: Vec<f64>,
    owners: Vec<u32>,
    weights: Vec<u32>,
    /// Σ weights per owner.
    owner_weight: Vec<u64>,
}

/// How far below a quantile (as a fraction of the sample) its scan starts.
const SCAN_MARGIN: f64 = 0.02;

/// Where a quantile's scan may start: the sorted index `lo` and each owner's
/// weight below it. Only an optimisation; a wrong guess falls back to a full scan.
#[derive(Clone, Debug, Default)]
pub struct ScanStart {
    lo: usize,
    below: Vec<u64>,
}

impl ScanStart {
    /// Each owner's weight below the start.
    pub fn below(&self) -> &[u64] {
        &self.below
    }
}

/// Appends one request's values to `items` as `(owner, value, weight)`
/// triples, merging equal neighbours into one weighted value (the gaps of a
/// chunk are all equal).
pub fn push_merged(owner: u32, values: &[f64], items: &mut Vec<(u32, f64, u32)>) {
    let mut last: Option<(f64, u32)> = None;
    for &g in values {
        match &mut last {
            Some((v, w)) if *v == g => *w += 1,
            _ => {
                if let Some((v, w)) = last.take() {
                    items.push((owner, v, w));
                }
                last = Some((g, 1));
            }
        }
    }
    if let Some((v, w)) = last {
        items.push((owner, v, w));
    }
}

impl Clustered {
    /// Builds from `(owner, value, weight)` triples with owners in
    /// `0..n_owners`; NaN values and zero weights are dropped.
    pub fn new(n_owners: usize, items: Vec<(u32, f64, u32)>) -> Self {
        // Sort by an order-preserving integer key of the value (IEEE total
        // order), which is much cheaper than float comparisons.
        let key = |v: f64| {
            let b = v.to_bits();
            if b >> 63 == 1 { !b } else { b | (1 << 63) }
        };
        let mut keyed: Vec<(u64, u32, u32)> = items
            .into_iter()
            .filter(|(_, v, w)| !v.is_nan() && *w > 0)
            .map(|(o, v, w)| (key(v), o, w))
            .collect();
        radix_sort(&mut keyed);
        let mut owner_weight = vec![0u64; n_owners];
        let mut values = Vec::with_capacity(keyed.len());
        let mut owners = Vec::with_capacity(keyed.len());
        let mut weights = Vec::with_capacity(keyed.len());
        for (k, o, w) in keyed {
            owner_weight[o as usize] += u64::from(w);
            let bits = if k >> 63 == 1 { k & !(1 << 63) } else { !k };
            values.push(f64::from_bits(bits));
            owners.push(o);
            weights.push(w);
        }
        Self {
            values,
            owners,
            weights,
            owner_weight,
        }
    }

    /// One group of values per owner (request), in owner order.
    pub fn from_groups<G: AsRef<[f64]>>(groups: &[G]) -> Self {
        let mut items = Vec::new();
        for (o, g) in groups.iter().enumerate() {
            push_merged(o as u32, g.as_ref(), &mut items);
        }
        Self::new(groups.len(), items)
    }

    /// Σ weights per owner: how many values each request contributes.
    pub fn owner_weight(&self) -> &[u64] {
        &self.owner_weight
    }

    /// Number of owners (requests), including those without values.
    pub fn owners(&self) -> usize {
        self.owner_weight.len()
    }

    /// Precomputes a scan start a little below quantile `q` (0..1) of the full sample.
    pub fn scan_start(&self, q: f64) -> ScanStart {
        let total: u64 = self.weights.iter().map(|&w| u64::from(w)).sum();
        let target = ((q - SCAN_MARGIN).max(0.0) * total as f64) as u64;
        let mut cum = 0u64;
        let mut lo = 0;
        while lo < self.values.len() && cum + u64::from(self.weights[lo]) <= target {
            cum += u64::from(self.weights[lo]);
            lo += 1;
        }
        let mut below = vec![0u64; self.owner_weight.len()];
        for i in 0..lo {
            below[self.owners[i] as usize] += u64::from(self.weights[i]);
        }
        ScanStart { lo, below }
    }

    /// Quantile `q` (0..1) of the sample in which owner `o` counts `counts[o]`
    /// times, by linear interpolation on the expanded sample (numpy's default,
    /// the same as [`crate::percentile`]). `total` is the resample's weight
    /// (Σ counts × owner weight) and `below` its weight before `start`.
    /// `None` when empty.
    pub fn quantile_with(
        &self,
        counts: &[u32],
        q: f64,
        start: &ScanStart,
        total: u64,
        below: u64,
    ) -> Option<f64> {
        if total == 0 {
            return None;
        }
        let h = q.clamp(0.0, 1.0) * (total - 1) as f64;
        let k = h.floor() as u64;
        let frac = h - k as f64;
        let (mut i, mut cum) = if below <= k {
            (start.lo, below)
        } else {
            (0, 0)
        };
        // Find the value at expanded rank k, then the one at rank k + 1.
        let mut lo_val: Option<f64> = None;
        let n = self.values.len();
        while i < n {
            let w = u64::from(self.weights[i]) * u64::from(counts[self.owners[i] as usize]);
            if w > 0 {
                if let Some(lo) = lo_val {
                    return Some(lo + frac * (self.values[i] - lo));
                }
                if cum + w > k {
                    if frac == 0.0 || cum + w > k + 1 {
                        return Some(self.values[i]);
                    }
                    lo_val = Some(self.values[i]);
                }
                cum += w;
            }
            i += 1;
        }
        lo_val
    }

    /// [`Self::quantile_with`], computing the totals itself.
    pub fn quantile(&self, counts: &[u32], q: f64, start: &ScanStart) -> Option<f64> {
        let weigh =
            |w: &[u64]| -> u64 { w.iter().zip(counts).map(|(&w, &c)| w * u64::from(c)).sum() };
        self.quantile_with(
            counts,
            q,
            start,
            weigh(&self.owner_weight),
            weigh(&start.below),
        )
    }

    /// Number of values (unweighted).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether there is no value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// Multinomial counts of `n` draws with replacement from `n` items: one
/// bootstrap resample of requests.
pub fn draw_counts<R: Rng + ?Sized>(rng: &mut R, n: usize, out: &mut Vec<u32>) {
    out.clear();
    out.resize(n, 0);
    if n == 0 {
        return;
    }
    for _ in 0..n {
        out[rng.random_range(0..n)] += 1;
    }
}

/// Percentile-bootstrap intervals of quantiles `qs` (0..1) of `c`, resampling
/// requests (owners) with replacement: `resamples` draws, two-sided level
/// `confidence`. Each interval is `[lo, hi]`; `None` for an empty sample.
pub fn cluster_quantile_cis<R: Rng + ?Sized>(
    c: &Clustered,
    qs: &[f64],
    resamples: usize,
    confidence: f64,
    rng: &mut R,
) -> Option<Vec<[f64; 2]>> {
    if c.is_empty() || resamples == 0 {
        return None;
    }
    let starts: Vec<ScanStart> = qs.iter().map(|&q| c.scan_start(q)).collect();
    let mut stats: Vec<Vec<f64>> = vec![Vec::with_capacity(resamples); qs.len()];
    let mut counts = Vec::new();
    for _ in 0..resamples {
        draw_counts(rng, c.owners(), &mut counts);
        for ((s, &q), start) in stats.iter_mut().zip(qs).zip(&starts) {
            // A resample that drew only requests without values has no quantile.
            if let Some(v) = c.quantile(&counts, q, start) {
                s.push(v);
            }
        }
    }
    let alpha = 1.0 - confidence;
    Some(
        stats
            .into_iter()
            .map(|mut s| {
                s.sort_by(f64::total_cmp);
                [
                    crate::percentile(&s, 100.0 * alpha / 2.0).unwrap_or(f64::NAN),
                    crate::percentile(&s, 100.0 * (1.0 - alpha / 2.0)).unwrap_or(f64::NAN),
                ]
            })
            .collect(),
    )
}

/// Sorts by key (then stably keeps input order): LSD radix sort, 16 bits a
/// pass, skipping passes where every key has the same digit. Several times
/// cheaper than a comparison sort for the large ITL samples.
fn radix_sort(items: &mut Vec<(u64, u32, u32)>) {
    let n = items.len();
    if n < 4096 {
        items.sort_unstable();
        return;
    }
    let mut buf = vec![(0u64, 0u32, 0u32); n];
    let mut counts = vec![0usize; 1 << 16];
    for pass in 0..4 {
        let shift = 16 * pass;
        counts.iter_mut().for_each(|c| *c = 0);
        for it in items.iter() {
            counts[((it.0 >> shift) & 0xffff) as usize] += 1;
        }
        if counts.contains(&n) {
            continue;
        }
        let mut sum = 0;
        for c in counts.iter_mut() {
            let here = *c;
            *c = sum;
            sum += here;
        }
        for it in items.iter() {
            let d = ((it.0 >> shift) & 0xffff) as usize;
            buf[counts[d]] = *it;
            counts[d] += 1;
        }
        std::mem::swap(items, &mut buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_quantile_matches_expanded_linear_interpolation() {
        let c = Clustered::new(3, vec![(0, 1.0, 1), (1, 2.0, 2), (2, 4.0, 1), (0, 3.0, 1)]);
        let start = c.scan_start(0.5);
        // Expanded with counts [1, 2, 1]: [1, 2, 2, 2, 2, 3, 4].
        let counts = [1, 2, 1];
        let expanded = vec![1.0, 2.0, 2.0, 2.0, 2.0, 3.0, 4.0];
        for q in [0.0, 0.1, 0.33, 0.5, 0.77, 0.9, 0.99, 1.0] {
            let want = crate::percentile(&expanded, q * 100.0);
            let got = c.quantile(&counts, q, &start);
            assert!(
                (want.unwrap() - got.unwrap()).abs() < 1e-12,
                "q={q}: {want:?} vs {got:?}"
            );
        }
        assert_eq!(c.quantile(&[0, 0, 0], 0.5, &start), None);
    }

    #[test]
    fn merging_keeps_every_value_once() {
        let mut items = Vec::new();
        push_merged(3, &[0.5, 0.5, 0.5, 0.2, 0.5], &mut items);
        assert_eq!(items, vec![(3, 0.5, 3), (3, 0.2, 1), (3, 0.5, 1)]);
        let c = Clustered::from_groups(&[vec![], vec![1.0, 1.0]]);
        assert_eq!((c.len(), c.owners(), c.owner_weight()), (1, 2, &[0, 2][..]));
    }

    #[test]
    fn radix_sort_orders_keys() {
        let mut v: Vec<(u64, u32, u32)> = (0..5000u32)
            .map(|i| {
                (
                    ((u64::from(i) * 7919) % 1009) << 20 | u64::from(i % 3),
                    i,
                    1,
                )
            })
            .collect();
        let mut w = v.clone();
        radix_sort(&mut v);
        w.sort_by_key(|t| t.0);
        assert_eq!(
            v.iter().map(|t| t.0).collect::<Vec<_>>(),
            w.iter().map(|t| t.0).collect::<Vec<_>>()
        );
    }
}
