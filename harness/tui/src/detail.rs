//! A run's detail view data, derived once when the run is loaded: the
//! percentile table comes from `summary.json`; the TTFT and ITL histograms
//! and CDFs, the tokens per step and the KV utilisation over time are
//! computed from the records into fixed-size arrays, so that a frame only
//! re-bins a few hundred numbers to the screen width, whatever the size of
//! the run.

use std::path::PathBuf;

use fuselab_core::{RunSummary, StepRecord};
use fuselab_reports::RunData;

/// Bins of the precomputed histograms.
pub const HIST_BINS: usize = 120;
/// Points of the precomputed CDFs.
pub const CDF_POINTS: usize = 200;
/// Time bins of the precomputed step series.
pub const STEP_BINS: usize = 320;

/// A latency distribution, precomputed for drawing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distribution {
    /// Samples.
    pub count: usize,
    /// Lower edge of the first bin, seconds.
    pub lo: f64,
    /// Upper edge of the last bin, seconds (the 99.5th percentile, so that a
    /// few outliers do not flatten the picture).
    pub hi: f64,
    /// Sample counts per bin; samples above `hi` are counted in `overflow`.
    pub bins: Vec<u64>,
    /// Samples above `hi`.
    pub overflow: u64,
    /// `(seconds, fraction ≤ seconds)` at evenly spaced fractions.
    pub cdf: Vec<(f64, f64)>,
}

impl Distribution {
    /// The distribution of `samples` (any order; non-finite values dropped).
    pub fn new(mut samples: Vec<f64>) -> Self {
        samples.retain(|v| v.is_finite());
        if samples.is_empty() {
            return Self::default();
        }
        samples.sort_by(f64::total_cmp);
        let n = samples.len();
        let q = |f: f64| fuselab_metrics::percentile(&samples, 100.0 * f).unwrap_or(0.0);
        let lo = samples[0];
        let mut hi = q(0.995).max(lo);
        if hi <= lo {
            hi = lo + lo.abs().max(1e-9) * 1e-3;
        }
        let mut bins = vec![0u64; HIST_BINS];
        let mut overflow = 0;
        let width = (hi - lo) / HIST_BINS as f64;
        for &v in &samples {
            if v > hi {
                overflow += 1;
            } else {
                let b = (((v - lo) / width) as usize).min(HIST_BINS - 1);
                bins[b] += 1;
            }
        }
        let cdf = (0..=CDF_POINTS)
            .map(|i| {
                let f = i as f64 / CDF_POINTS as f64;
                (q(f), f)
            })
            .collect();
        Self {
            count: n,
            lo,
            hi,
            bins,
            overflow,
            cdf,
        }
    }
}

/// Engine steps over time, binned.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StepSeries {
    /// Steps in the run.
    pub steps: usize,
    /// End of the last step, seconds.
    pub t_end: f64,
    /// Mean prefill tokens per step in each time bin.
    pub prefill: Vec<f64>,
    /// Mean decode tokens per step in each time bin.
    pub decode: Vec<f64>,
    /// Mean KV-cache utilisation (0..1) in each time bin.
    pub kv: Vec<f64>,
}

impl StepSeries {
    /// Bins `steps` by start time into [`STEP_BINS`] bins; `None` without steps.
    pub fn new(steps: &[StepRecord]) -> Option<Self> {
        let last = steps.last()?;
        let t0 = steps.first().map_or(0.0, |s| s.t_start);
        let t_end = steps
            .iter()
            .map(|s| s.t_start + s.duration_s)
            .fold(last.t_start + last.duration_s, f64::max);
        let span = (t_end - t0).max(1e-12);
        let mut sums = vec![[0.0f64; 3]; STEP_BINS];
        let mut counts = vec![0u32; STEP_BINS];
        for s in steps {
            let b = (((s.t_start - t0) / span * STEP_BINS as f64) as usize).min(STEP_BINS - 1);
            sums[b][0] += f64::from(s.prefill_tokens);
            sums[b][1] += f64::from(s.decode_tokens);
            sums[b][2] += if s.kv_blocks_total > 0 {
                f64::from(s.kv_blocks_used) / f64::from(s.kv_blocks_total)
            } else {
                0.0
            };
            counts[b] += 1;
        }
        let mean = |k: usize| -> Vec<f64> {
            let mut out: Vec<f64> = sums
                .iter()
                .zip(&counts)
                .map(|(s, &c)| if c > 0 { s[k] / f64::from(c) } else { f64::NAN })
                .collect();
            // Bins without a step (idle time) carry the previous value for KV,
            // zero for tokens.
            let mut prev = 0.0;
            for v in &mut out {
                if v.is_nan() {
                    *v = if k == 2 { prev } else { 0.0 };
                }
                prev = *v;
            }
            out
        };
        Some(Self {
            steps: steps.len(),
            t_end,
            prefill: mean(0),
            decode: mean(1),
            kv: mean(2),
        })
    }
}

/// Everything the detail view of a run shows.
#[derive(Clone, Debug, PartialEq)]
pub struct RunDetail {
    /// The folder.
    pub path: PathBuf,
    /// The run's `summary.json` (a repeat folder's first run with the mean metrics).
    pub summary: RunSummary,
    /// Runs it stands for (a repeat folder's N).
    pub repeats: usize,
    /// Time to first token of completed requests.
    pub ttft: Distribution,
    /// Inter-token gaps, pooled over requests.
    pub itl: Distribution,
    /// Engine steps, when recorded.
    pub steps: Option<StepSeries>,
    /// Provenance as `(key, value)` lines.
    pub provenance: Vec<(String, String)>,
}

impl RunDetail {
    /// Derives the detail view of `run`.
    pub fn new(run: &RunData) -> Self {
        let mut ttft = Vec::with_capacity(run.requests.len());
        let mut itl = Vec::new();
        for r in &run.requests {
            if let Some(m) = fuselab_metrics::request_metrics(r) {
                ttft.push(m.ttft_s);
                itl.extend_from_slice(&m.itl_s);
            }
        }
        Self {
            path: run.source.clone().unwrap_or_default(),
            summary: run.summary.clone(),
            repeats: run.repeats,
            ttft: Distribution::new(ttft),
            itl: Distribution::new(itl),
            steps: StepSeries::new(&run.steps),
            provenance: provenance_lines(&run.summary),
        }
    }
}

/// The provenance of a run as `(key, value)` lines.
pub fn provenance_lines(s: &RunSummary) -> Vec<(String, String)> {
    let p = &s.provenance;
    let e = &p.engine;
    let or_dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let knobs = e
        .knobs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ");
    let w = &p.workload;
    vec![
        ("engine".into(), e.engine.clone()),
        ("hardware".into(), or_dash(&e.hardware)),
        ("model".into(), or_dash(&e.model)),
        ("policy".into(), or_dash(&e.policy)),
        ("knobs".into(), knobs),
        (
            "workload".into(),
            format!(
                "{} · {} requests · seed {} · {}",
                w.name,
                w.n,
                p.seed,
                crate::catalog::load_label(&w.arrivals)
            ),
        ),
        (
            "digest".into(),
            p.workload_digest.chars().take(16).collect(),
        ),
        (
            "fuselab".into(),
            format!(
                "{} ({})",
                p.fuselab_version,
                p.git_commit.as_deref().unwrap_or("commit unknown")
            ),
        ),
        ("host cpu".into(), p.host_cpu.clone()),
        ("host gpu".into(), or_dash(&p.host_gpu)),
        (
            "started".into(),
            p.started_unix_s
                .map_or_else(|| "-".into(), fuselab_core::utc_from_unix),
        ),
        ("command".into(), or_dash(&p.command)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_every_sample() {
        let samples: Vec<f64> = (0..1000).map(|i| f64::from(i) * 1e-3).collect();
        let d = Distribution::new(samples);
        assert_eq!(d.count, 1000);
        assert_eq!(d.bins.iter().sum::<u64>() + d.overflow, 1000);
        assert!(d.overflow > 0 && d.overflow < 10, "{}", d.overflow);
        assert_eq!(d.cdf.len(), CDF_POINTS + 1);
        assert_eq!(d.cdf[0], (0.0, 0.0));
        assert!(d.cdf.windows(2).all(|w| w[0].0 <= w[1].0));
        assert_eq!(Distribution::new(vec![f64::NAN]), Distribution::default());
        let one = Distribution::new(vec![0.5; 3]);
        assert_eq!(one.bins.iter().sum::<u64>(), 3);
    }

    #[test]
    fn step_series_bins_by_time() {
        let steps: Vec<StepRecord> = (0..10)
            .map(|i| StepRecord {
                step: i,
                t_start: i as f64,
                duration_s: 1.0,
                prefill_tokens: if i < 5 { 100 } else { 0 },
                decode_tokens: 8,
                kv_blocks_used: 5,
                kv_blocks_total: 10,
                ..StepRecord::default()
            })
            .collect();
        let s = StepSeries::new(&steps).unwrap();
        assert_eq!(s.steps, 10);
        assert_eq!(s.t_end, 10.0);
        assert_eq!(s.prefill.len(), STEP_BINS);
        assert_eq!(s.prefill[0], 100.0);
        assert_eq!(*s.prefill.last().unwrap(), 0.0);
        assert!(s.kv.iter().all(|&k| k == 0.5));
        assert!(StepSeries::new(&[]).is_none());
    }
}
