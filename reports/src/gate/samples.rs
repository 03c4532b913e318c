//! Per-request samples of a run, arranged so that one bootstrap resample
//! (a count per request) re-evaluates every gate metric in linear time. The
//! quantiles use the cluster bootstrap of `fuselab_metrics::cluster`, the same
//! code behind the intervals in `summary.json`.

use fuselab_core::{RequestId, RequestRecord, RequestStatus, Slo};
use fuselab_metrics::cluster::{Clustered, ScanStart, push_merged};
use fuselab_metrics::{meets_fastgen_sla, request_metrics};

use super::metric::GateMetric;

/// Everything the gate needs from one run, indexed by request (sorted by id).
#[derive(Clone, Debug)]
pub(crate) struct RunSamples {
    /// Request ids, ascending; the owner index of every sample.
    pub ids: Vec<RequestId>,
    ttft: Clustered,
    tpot: Clustered,
    e2e: Clustered,
    itl: Clustered,
    starts: [ScanStart; 8],
    completed: Vec<f64>,
    output_tokens: Vec<f64>,
    total_tokens: Vec<f64>,
    good: Vec<f64>,
    fastgen_ok: Vec<f64>,
    /// Each request's share of the busy time (∫ 1/concurrency over its lifetime).
    share: Vec<f64>,
    /// Window time with no request in flight: set by the arrival schedule,
    /// held fixed under resampling.
    idle: f64,
    /// FastGen span minus the throughput window (`t_done` can end after the last token).
    fastgen_extra: f64,
}

impl RunSamples {
    /// Derives samples from a run's requests. `slo` decides goodput and
    /// `fastgen_rate` the effective-throughput SLA (both taken from the
    /// baseline so the two sides are judged alike).
    pub(crate) fn new(requests: &[RequestRecord], slo: &Slo, fastgen_rate: f64) -> Self {
        let mut reqs: Vec<&RequestRecord> = requests.iter().collect();
        reqs.sort_by_key(|r| r.id);
        let n = reqs.len();
        let mut ttft = Vec::with_capacity(n);
        let mut tpot = Vec::with_capacity(n);
        let mut e2e = Vec::with_capacity(n);
        let mut itl = Vec::new();
        let mut completed = vec![0.0; n];
        let mut output_tokens = vec![0.0; n];
        let mut total_tokens = vec![0.0; n];
        let mut good = vec![0.0; n];
        let mut fastgen_ok = vec![0.0; n];
        for (i, r) in reqs.iter().enumerate() {
            let o = i as u32;
            if r.status == RequestStatus::Ok {
                completed[i] = 1.0;
                let out = r.tokens_received() as f64;
                output_tokens[i] = out;
                total_tokens[i] = out + f64::from(r.prompt_len);
            }
            if let Some(m) = request_metrics(r) {
                ttft.push((o, m.ttft_s, 1));
                e2e.push((o, m.e2e_s, 1));
                if let Some(t) = m.tpot_s {
                    tpot.push((o, t, 1));
                }
                // Gaps of one request are mostly equal within a chunk: merge
                // equal neighbours into one weighted value.
                push_merged(o, &m.itl_s, &mut itl);
                let within = |limit: Option<f64>, v: f64| limit.is_none_or(|l| v <= l);
                // `fuselab_metrics::meets_slo`, without recomputing the metrics.
                let fastgen_ok_here = meets_fastgen_sla(r, fastgen_rate);
                if within(slo.ttft_s, m.ttft_s)
                    && within(slo.tpot_s, m.tpot_s.unwrap_or(0.0))
                    && within(slo.e2e_s, m.e2e_s)
                    && slo.fastgen_rate.is_none_or(|g| {
                        if g == fastgen_rate {
                            fastgen_ok_here
                        } else {
                            meets_fastgen_sla(r, g)
                        }
                    })
                {
                    good[i] = 1.0;
                }
                if fastgen_ok_here {
                    fastgen_ok[i] = 1.0;
                }
            }
        }
        let ttft = Clustered::new(n, ttft);
        let tpot = Clustered::new(n, tpot);
        let e2e = Clustered::new(n, e2e);
        let itl = Clustered::new(n, itl);
        let starts = [
            ttft.scan_start(0.5),
            ttft.scan_start(0.99),
            tpot.scan_start(0.5),
            tpot.scan_start(0.99),
            itl.scan_start(0.5),
            itl.scan_start(0.99),
            e2e.scan_start(0.5),
            e2e.scan_start(0.99),
        ];
        debug_assert!(GateMetric::ALL[4] == GateMetric::ItlP50);
        let (share, idle, fastgen_extra) = busy_shares(&reqs);
        Self {
            ids: reqs.iter().map(|r| r.id).collect(),
            ttft,
            tpot,
            e2e,
            itl,
            starts,
            completed,
            output_tokens,
            total_tokens,
            good,
            fastgen_ok,
            share,
            idle,
            fastgen_extra,
        }
    }

    /// Number of requests (owners).
    pub(crate) fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the run has completed requests with latency samples.
    pub(crate) fn has_latencies(&self) -> bool {
        !self.ttft.is_empty()
    }

    /// Evaluates every metric of [`GateMetric::ALL`] (in that order) on the
    /// resample where request `i` counts `counts[i]` times. Throughputs divide
    /// the resampled numerator by the resampled busy time plus the (fixed)
    /// idle time. `None` where undefined.
    ///
    /// One pass over the requests gathers every sum; the quantiles then scan
    /// their sorted samples from a precomputed start, so a resample costs
    /// O(requests + a few percent of the ITL gaps).
    pub(crate) fn eval_all(&self, counts: &[u32]) -> [Option<f64>; 13] {
        let clustered = [&self.ttft, &self.tpot, &self.itl, &self.e2e];
        let mut totals = [0u64; 4];
        let mut belows = [0u64; 8];
        let mut sums = [0.0f64; 6];
        let weights = clustered.map(Clustered::owner_weight);
        let below: [&[u64]; 8] = std::array::from_fn(|j| self.starts[j].below());
        // Indexed loops: this is the bootstrap's hot loop, and plain indexing
        // stays cheap in unoptimised test builds.
        #[allow(clippy::needless_range_loop)]
        for i in 0..counts.len() {
            let c = counts[i];
            if c == 0 {
                continue;
            }
            let c64 = u64::from(c);
            let cf = f64::from(c);
            for (t, w) in totals.iter_mut().zip(&weights) {
                *t += w[i] * c64;
            }
            for (b, st) in belows.iter_mut().zip(&below) {
                *b += st[i] * c64;
            }
            sums[0] += self.completed[i] * cf;
            sums[1] += self.output_tokens[i] * cf;
            sums[2] += self.total_tokens[i] * cf;
            sums[3] += self.good[i] * cf;
            sums[4] += self.fastgen_ok[i] * cf;
            sums[5] += self.share[i] * cf;
        }
        // starts: ttft 50/99, tpot 50/99, itl 50/99, e2e 50/99.
        let q = |s: usize, p: f64| {
            clustered[s / 2].quantile_with(counts, p, &self.starts[s], totals[s / 2], belows[s])
        };
        let window = sums[5] + self.idle;
        let rate = |num: f64, w: f64| (w > 0.0).then(|| num / w);
        [
            q(0, 0.5),
            q(1, 0.99),
            q(2, 0.5),
            q(3, 0.99),
            q(4, 0.5),
            q(5, 0.99),
            q(6, 0.5),
            q(7, 0.99),
            rate(sums[0], window),
            rate(sums[1], window),
            rate(sums[2], window),
            rate(sums[3], window),
            rate(sums[4], window + self.fastgen_extra),
        ]
    }

    /// [`Self::eval_all`] for one metric.
    #[cfg(test)]
    pub(crate) fn eval(&self, metric: GateMetric, counts: &[u32]) -> Option<f64> {
        let j = GateMetric::ALL.iter().position(|m| *m == metric)?;
        self.eval_all(counts)[j]
    }
}

/// Each request's share of the busy time, the idle time of the throughput
/// window, and the FastGen span's extra time past the window.
///
/// A request in flight over `[t_sent, end]` gets `∫ dt / n(t)` where `n(t)` is
/// the number of requests in flight: the shares add up to the busy time, and a
/// request that keeps the engine busy longer gets a larger share. Resampling
/// requests then resamples the time they took. The window is the metrics
/// crate's (first send to last token); lifetimes are clipped to it.
fn busy_shares(reqs: &[&RequestRecord]) -> (Vec<f64>, f64, f64) {
    let n = reqs.len();
    let t0 = reqs.iter().map(|r| r.t_sent).fold(f64::INFINITY, f64::min);
    let t_last = reqs
        .iter()
        .filter_map(|r| r.t_last_token())
        .fold(f64::NEG_INFINITY, f64::max);
    if !t0.is_finite() || !t_last.is_finite() || t_last <= t0 {
        return (vec![0.0; n], 0.0, 0.0);
    }
    let t_end = reqs
        .iter()
        .filter_map(|r| r.t_done.or_else(|| r.t_last_token()))
        .fold(f64::NEG_INFINITY, f64::max);
    let window = t_last - t0;
    let fastgen_extra = (t_end - t0 - window).max(0.0);
    // Events: (time, +1 start / -1 end, request).
    let mut events: Vec<(f64, i8, usize)> = Vec::with_capacity(2 * n);
    for (i, r) in reqs.iter().enumerate() {
        let end = r
            .t_last_token()
            .or(r.t_done)
            .unwrap_or(r.t_sent)
            .clamp(t0, t_last);
        let start = r.t_sent.clamp(t0, t_last);
        if end > start {
            events.push((start, 1, i));
            events.push((end, -1, i));
        }
    }
    events.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    let mut f_start = vec![0.0; n];
    let mut share = vec![0.0; n];
    let (mut f, mut active, mut t_prev) = (0.0f64, 0i64, t0);
    let mut busy = 0.0;
    for (t, kind, i) in events {
        if active > 0 {
            f += (t - t_prev) / active as f64;
            busy += t - t_prev;
        }
        t_prev = t;
        if kind > 0 {
            f_start[i] = f;
            active += 1;
        } else {
            share[i] = f - f_start[i];
            active -= 1;
        }
    }
    let idle = (window - busy).max(0.0);
    (share, idle, fastgen_extra)
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselab_core::TokenChunk;

    fn req(id: u64, t_sent: f64, times: &[f64]) -> RequestRecord {
        RequestRecord {
            id,
            prompt_len: 100,
            output_len: times.len() as u32,
            t_scheduled: t_sent,
            t_sent,
            tokens: times
                .iter()
                .enumerate()
                .map(|(i, &t)| TokenChunk {
                    index: i as u32,
                    t,
                    n_tokens: 1,
                })
                .collect(),
            t_done: times.last().copied(),
            status: RequestStatus::Ok,
            error: None,
            server: None,
        }
    }

    #[test]
    fn shares_add_up_to_busy_time_and_split_overlaps() {
        // Request 0 alone on [0, 1], both on [1, 2], request 1 alone on [2, 4]; idle never.
        let a = req(0, 0.0, &[0.5, 2.0]);
        let b = req(1, 1.0, &[1.5, 4.0]);
        let (share, idle, _) = busy_shares(&[&a, &b]);
        assert!((share[0] - 1.5).abs() < 1e-12);
        assert!((share[1] - 2.5).abs() < 1e-12);
        assert_eq!(idle, 0.0);
        // A gap between two requests is idle time.
        let c = req(0, 0.0, &[1.0]);
        let d = req(1, 3.0, &[4.0]);
        let (share, idle, _) = busy_shares(&[&c, &d]);
        assert_eq!(share, vec![1.0, 1.0]);
        assert!((idle - 2.0).abs() < 1e-12);
    }

    #[test]
    fn point_throughput_equals_the_metrics_crate() {
        let reqs: Vec<RequestRecord> = (0..20u32)
            .map(|i| {
                let s = f64::from(i) * 0.3;
                req(u64::from(i), s, &[s + 0.2, s + 0.4, s + 0.9])
            })
            .collect();
        let s = RunSamples::new(&reqs, &Slo::default(), 4.0);
        let m = fuselab_metrics::compute_metrics(&reqs, None, &Slo::default(), 1);
        let ones = vec![1; reqs.len()];
        let close = |a: f64, b: f64| (a - b).abs() < 1e-9 * b.abs().max(1.0);
        assert!(close(
            s.eval(GateMetric::RequestThroughput, &ones).unwrap(),
            m.request_throughput
        ));
        assert!(close(
            s.eval(GateMetric::OutputThroughput, &ones).unwrap(),
            m.output_token_throughput
        ));
        assert!(close(
            s.eval(GateMetric::TotalThroughput, &ones).unwrap(),
            m.total_token_throughput
        ));
        assert!(close(
            s.eval(GateMetric::Goodput, &ones).unwrap(),
            m.goodput
        ));
        assert!(close(
            s.eval(GateMetric::EffectiveThroughput, &ones).unwrap(),
            m.effective_throughput["4"]
        ));
        assert!(close(
            s.eval(GateMetric::TtftP99, &ones).unwrap(),
            m.ttft_s.p99
        ));
        assert!(close(
            s.eval(GateMetric::ItlP50, &ones).unwrap(),
            m.itl_s.p50
        ));
        assert!(close(
            s.eval(GateMetric::E2eP50, &ones).unwrap(),
            m.e2e_s.p50
        ));
        // With an SLO that some requests miss, goodput still matches.
        let slo = Slo {
            ttft_s: Some(0.22),
            tpot_s: Some(0.4),
            e2e_s: None,
            fastgen_rate: None,
        };
        let mut reqs = reqs;
        for r in reqs.iter_mut().step_by(3) {
            for c in &mut r.tokens {
                c.t += 0.05;
            }
        }
        let s = RunSamples::new(&reqs, &slo, 2.0);
        let m = fuselab_metrics::compute_metrics(&reqs, None, &slo, 1);
        assert!(
            m.slo_attainment > 0.0 && m.slo_attainment < 1.0,
            "{}",
            m.slo_attainment
        );
        assert!(close(
            s.eval(GateMetric::Goodput, &ones).unwrap(),
            m.goodput
        ));
    }
}
