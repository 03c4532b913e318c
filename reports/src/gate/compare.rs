//! The comparison: point estimates, bootstrap confidence intervals of the
//! relative change, and verdicts.

use std::collections::BTreeMap;

use fuselab_core::{SCHEMA_VERSION, Slo};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StudentT};

use super::metric::{Better, GateMetric};
use super::noise::{NoiseFloor, cv_per_metric, is_real_time, point_values};
use super::samples::RunSamples;
use crate::{Error, Result, RunData};
use fuselab_metrics::cluster::draw_counts;

/// The FastGen generation rate used when the baseline's SLO sets none (tok/s).
pub const DEFAULT_FASTGEN_RATE: f64 = 4.0;

/// How the gate compares.
#[derive(Clone, Debug, PartialEq)]
pub struct GateConfig {
    /// Threshold per metric as a fraction; metrics not listed use
    /// [`GateMetric::default_threshold`].
    pub thresholds: BTreeMap<GateMetric, f64>,
    /// Bootstrap resamples.
    pub resamples: usize,
    /// Two-sided confidence level of the interval, e.g. 0.95.
    pub confidence: f64,
    /// Seed of the bootstrap.
    pub seed: u64,
    /// Compare runs from different hardware anyway (with a warning).
    pub allow_hardware_mismatch: bool,
    /// Run-to-run noise floors known for this machine (`noise.json`); the one
    /// matching the runs' engine, hardware and host widens single-run sides.
    pub noise_floors: Vec<NoiseFloor>,
}

impl Default for GateConfig {
    fn default() -> Self {
        Self {
            thresholds: BTreeMap::new(),
            resamples: 1000,
            confidence: 0.95,
            seed: 0x5eed,
            allow_hardware_mismatch: false,
            noise_floors: Vec::new(),
        }
    }
}

impl GateConfig {
    /// The threshold in effect for `m`.
    pub fn threshold(&self, m: GateMetric) -> f64 {
        self.thresholds
            .get(&m)
            .copied()
            .unwrap_or_else(|| m.default_threshold())
    }
}

/// The verdict for one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The whole interval lies beyond the threshold in the good direction.
    Improved,
    /// The whole interval lies beyond the threshold in the bad direction.
    Regressed,
    /// Anything else: within noise.
    NoChange,
    /// The metric is undefined on one side (e.g. goodput 0 in the baseline).
    NotApplicable,
    /// The interval lies beyond the threshold, but a side is one run of a
    /// real-time engine with no run-to-run noise estimate: the change cannot
    /// be told from machine noise, so the gate does not call it.
    Inconclusive,
}

impl Verdict {
    /// Lowercase name used in outputs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Improved => "improved",
            Self::Regressed => "regressed",
            Self::NoChange => "no change",
            Self::NotApplicable => "n/a",
            Self::Inconclusive => "inconclusive",
        }
    }
}

/// Criterion's `compare_to_threshold`, extended to metrics where higher is
/// better: `ci` is the interval of the relative change `candidate/baseline − 1`.
///
/// # Example
/// ```
/// use fuselab_reports::gate::{Better, Verdict, verdict};
/// assert_eq!(verdict((0.06, 0.09), 0.05, Better::Lower), Verdict::Regressed);
/// assert_eq!(verdict((0.04, 0.09), 0.05, Better::Lower), Verdict::NoChange);
/// assert_eq!(verdict((-0.09, -0.06), 0.05, Better::Higher), Verdict::Regressed);
/// assert_eq!(verdict((0.06, 0.09), 0.05, Better::Higher), Verdict::Improved);
/// ```
pub fn verdict(ci: (f64, f64), threshold: f64, better: Better) -> Verdict {
    let (lb, ub) = match better {
        Better::Lower => ci,
        Better::Higher => (-ci.1, -ci.0),
    };
    if ub < -threshold {
        Verdict::Improved
    } else if lb > threshold {
        Verdict::Regressed
    } else {
        Verdict::NoChange
    }
}

/// One metric's comparison.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricComparison {
    /// The metric.
    pub metric: GateMetric,
    /// The threshold applied (fraction).
    pub threshold: f64,
    /// Baseline point estimate (mean over baseline runs), stored unit.
    pub baseline: Option<f64>,
    /// Candidate point estimate (mean over candidate runs), stored unit.
    pub candidate: Option<f64>,
    /// `candidate/baseline − 1`.
    pub change: Option<f64>,
    /// Bootstrap interval of the relative change.
    pub ci: Option<(f64, f64)>,
    /// The verdict.
    pub verdict: Verdict,
}

/// The gate's result.
#[derive(Clone, Debug, PartialEq)]
pub struct GateReport {
    /// Names of the baseline runs.
    pub baseline: Vec<String>,
    /// Names of the candidate runs.
    pub candidate: Vec<String>,
    /// One comparison per metric, in [`GateMetric::ALL`] order.
    pub comparisons: Vec<MetricComparison>,
    /// Whether requests were paired by id (same workload on both sides).
    pub paired: bool,
    /// Resamples used.
    pub resamples: usize,
    /// Confidence level used.
    pub confidence: f64,
    /// Things the reader should know (different workloads, hardware …).
    pub warnings: Vec<String>,
}

impl GateReport {
    /// Metrics that regressed.
    pub fn regressions(&self) -> Vec<GateMetric> {
        self.comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::Regressed)
            .map(|c| c.metric)
            .collect()
    }

    /// Whether any metric regressed (the gate fails, exit code 1).
    pub fn regressed(&self) -> bool {
        !self.regressions().is_empty()
    }

    /// Metrics beyond their threshold that the gate cannot tell from
    /// run-to-run noise (see [`Verdict::Inconclusive`]).
    pub fn inconclusive(&self) -> Vec<GateMetric> {
        self.comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::Inconclusive)
            .map(|c| c.metric)
            .collect()
    }
}

/// Checks that baseline and candidate runs can be compared: the same schema
/// version everywhere (an error giving both versions), and the same hardware
/// (an error unless `allow_hardware_mismatch`, then a warning). Returns
/// warnings (different workloads, host CPUs).
pub fn check_compatible(
    baseline: &[RunData],
    candidate: &[RunData],
    allow_hardware_mismatch: bool,
) -> Result<Vec<String>> {
    let mut warnings = Vec::new();
    let Some(base) = baseline.first() else {
        return Err(Error::Empty {
            side: "baseline".into(),
            problem: "no run given".into(),
        });
    };
    if candidate.is_empty() {
        return Err(Error::Empty {
            side: "candidate".into(),
            problem: "no run given".into(),
        });
    }
    for r in baseline.iter().chain(candidate) {
        let (a, b) = (base.summary.schema_version, r.summary.schema_version);
        if a != b || a != SCHEMA_VERSION {
            return Err(Error::Incompatible {
                what: "schema_version".into(),
                problem: format!(
                    "{} has schema version {a} but {} has schema version {b} (this fuselab reads {SCHEMA_VERSION})",
                    base.name(),
                    r.name()
                ),
                hint: "re-run both with the same fuselab version".into(),
            });
        }
    }
    let hw = |r: &RunData| {
        let p = &r.summary.provenance;
        (
            p.engine.engine.clone(),
            p.engine.hardware.clone().unwrap_or_default(),
            p.host_gpu.clone().unwrap_or_default(),
        )
    };
    for r in baseline.iter().chain(candidate).skip(1) {
        let (a, b) = (hw(base), hw(r));
        if a != b {
            let problem = format!(
                "{} ran on engine {:?}, hardware {:?}, GPU {:?} but {} on engine {:?}, hardware {:?}, GPU {:?}",
                base.name(),
                a.0,
                a.1,
                a.2,
                r.name(),
                b.0,
                b.1,
                b.2
            );
            if allow_hardware_mismatch {
                warnings.push(format!("different hardware: {problem}"));
            } else {
                return Err(Error::Incompatible {
                    what: "hardware".into(),
                    problem,
                    hint: "gate runs from the same engine and hardware, or pass --allow-hardware-mismatch".into(),
                });
            }
        }
        let (ca, cb) = (
            &base.summary.provenance.host_cpu,
            &r.summary.provenance.host_cpu,
        );
        let real_cpu = matches!(b.0.as_str(), "cpu");
        if ca != cb && real_cpu {
            let msg = format!(
                "{} ran on CPU {ca:?} but {} on {cb:?}",
                base.name(),
                r.name()
            );
            if allow_hardware_mismatch {
                warnings.push(format!("different hardware: {msg}"));
            } else {
                return Err(Error::Incompatible {
                    what: "hardware".into(),
                    problem: msg,
                    hint:
                        "gate CPU-engine runs from the same host, or pass --allow-hardware-mismatch"
                            .into(),
                });
            }
        }
        let (wa, wb) = (
            &base.summary.provenance.workload_digest,
            &r.summary.provenance.workload_digest,
        );
        if wa != wb {
            warnings.push(format!(
                "{} and {} ran different workloads (digests {} and {}); requests are not paired",
                base.name(),
                r.name(),
                short(wa),
                short(wb)
            ));
        }
    }
    Ok(warnings)
}

fn short(s: &str) -> &str {
    s.get(..12).unwrap_or(s)
}

/// Compares candidate runs against baseline runs.
///
/// The noise model:
/// * **Per-request bootstrap.** A resample draws each run's requests with
///   replacement and re-evaluates every metric on the drawn requests.
///   Percentiles are taken over the drawn requests' samples (ITL pools the
///   drawn requests' gaps: a cluster bootstrap). Throughputs have no
///   per-request samples, so they are recomputed from the resample: the drawn
///   requests' completions or tokens divided by the drawn requests' share of
///   the engine's busy time (each request's `∫ dt / concurrency` over its
///   lifetime) plus the run's idle time, which the arrival schedule sets and
///   is held fixed. With every request drawn once this is exactly the
///   metrics crate's number.
/// * **Pairing.** When every run holds the same request ids (the same seeded
///   workload), baseline and candidate are resampled with the same draw, so
///   the workload's own variation cancels in the ratio.
/// * **Several runs per side.** The side's estimate is the mean over its runs,
///   and each resample also draws the runs with replacement (a hierarchical
///   bootstrap), so the spread across runs widens the interval.
/// * **One run of a real-time engine.** A single run says nothing about how
///   much a second run of the same code would differ (machine noise), and
///   the request bootstrap alone then raises false alarms. Such a side's
///   resampled value of metric `m` is multiplied by `exp(cv_m · T)`, where
///   `cv_m` is the run-to-run coefficient of variation, taken at its 95 %
///   upper confidence bound (see [`cv_upper_bound_factor`]), and `T` a
///   Student-t variable with `k − 1` degrees of freedom for a `cv` estimated
///   from `k` runs (the predictive spread of one more run). `cv` comes from the noise
///   floor in `cfg.noise_floors` measured on the same engine, hardware and
///   host, else from the other side's runs when it has at least three. With
///   neither, a change beyond its threshold is [`Verdict::Inconclusive`]. Each
///   case adds a warning. Deterministic engines (the simulator) need none of
///   this.
///
/// The interval is the percentile interval of `candidate/baseline − 1` over
/// the resamples, at `cfg.confidence`; see [`verdict`]. Goodput and the
/// effective throughput of both sides are judged against the baseline's SLO.
pub fn compare(
    baseline: &[RunData],
    candidate: &[RunData],
    cfg: &GateConfig,
) -> Result<GateReport> {
    let warnings = check_compatible(baseline, candidate, cfg.allow_hardware_mismatch)?;
    if !(cfg.confidence > 0.0 && cfg.confidence < 1.0) {
        return Err(Error::invalid(
            "--confidence",
            format!("{} is not between 0 and 1", cfg.confidence),
            "give a level like 0.95",
        ));
    }
    if cfg.resamples < 10 {
        return Err(Error::invalid(
            "--resamples",
            format!("{} is too few", cfg.resamples),
            "use at least 100, e.g. 1000",
        ));
    }
    let slo: Slo = baseline[0].summary.metrics.slo.clone();
    let rate = slo.fastgen_rate.unwrap_or(DEFAULT_FASTGEN_RATE);
    let mk = |side: &str, runs: &[RunData]| -> Result<Vec<RunSamples>> {
        runs.iter()
            .map(|r| {
                let s = RunSamples::new(&r.requests, &slo, rate);
                if s.has_latencies() {
                    Ok(s)
                } else {
                    Err(Error::Empty {
                        side: side.into(),
                        problem: format!(
                            "run {} has no completed request with tokens ({} requests recorded)",
                            r.name(),
                            r.requests.len()
                        ),
                    })
                }
            })
            .collect()
    };
    let base = mk("baseline", baseline)?;
    let cand = mk("candidate", candidate)?;
    let mut warnings = warnings;
    let floors = &cfg.noise_floors;
    let base_noise = side_noise(
        "baseline",
        baseline,
        ("candidate", candidate, &cand),
        floors,
        &mut warnings,
    );
    let cand_noise = side_noise(
        "candidate",
        candidate,
        ("baseline", baseline, &base),
        floors,
        &mut warnings,
    );
    let unknown_noise =
        matches!(base_noise, RunNoise::Unknown) || matches!(cand_noise, RunNoise::Unknown);
    let paired = base.iter().chain(&cand).all(|s| s.ids == base[0].ids);

    let metrics = GateMetric::ALL;
    let n_metrics = metrics.len();
    let point = |runs: &[RunSamples], j: usize| -> Option<f64> {
        let mut sum = 0.0;
        for s in runs {
            sum += s.eval_all(&vec![1; s.len()])[j]?;
        }
        Some(sum / runs.len() as f64)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut rel: Vec<Vec<f64>> = vec![Vec::with_capacity(cfg.resamples); n_metrics];
    let mut shared_counts = vec![0u32; base[0].len()];
    let mut counts = Vec::new();
    // One side's resampled values: the mean over its (resampled) runs.
    let mut side_vals =
        |runs: &[RunSamples], noise: &RunNoise, rng: &mut ChaCha8Rng, shared: Option<&[u32]>| {
            let mut out = [Some(0.0f64); 13];
            let k = runs.len();
            for _ in 0..k {
                let s = &runs[if k == 1 { 0 } else { rng.random_range(0..k) }];
                let c: &[u32] = match shared {
                    Some(c) => c,
                    None => {
                        draw_counts(rng, s.len(), &mut counts);
                        &counts
                    }
                };
                let vals = s.eval_all(c);
                for (acc, v) in out.iter_mut().zip(vals) {
                    *acc = match (*acc, v) {
                        (Some(a), Some(v)) => Some(a + v / k as f64),
                        _ => None,
                    };
                }
            }
            if let RunNoise::Floor { cv, t } = noise {
                for (acc, &c) in out.iter_mut().zip(cv) {
                    if let Some(v) = acc
                        && c > 0.0
                    {
                        *v *= (c * t.sample(rng)).exp();
                    }
                }
            }
            out
        };
    for _ in 0..cfg.resamples {
        let shared = if paired {
            draw_counts(&mut rng, shared_counts.len(), &mut shared_counts);
            Some(shared_counts.as_slice())
        } else {
            None
        };
        let bv = side_vals(&base, &base_noise, &mut rng, shared);
        let cv = side_vals(&cand, &cand_noise, &mut rng, shared);
        for j in 0..n_metrics {
            if let (Some(b), Some(c)) = (bv[j], cv[j])
                && b > 0.0
                && b.is_finite()
                && c.is_finite()
            {
                rel[j].push(c / b - 1.0);
            }
        }
    }
    let alpha = 1.0 - cfg.confidence;
    let comparisons = metrics
        .iter()
        .enumerate()
        .map(|(j, &m)| {
            let threshold = cfg.threshold(m);
            let (b, c) = (point(&base, j), point(&cand, j));
            let change = match (b, c) {
                (Some(b), Some(c)) if b > 0.0 => Some(c / b - 1.0),
                _ => None,
            };
            let samples = &mut rel[j];
            // An interval needs most resamples defined; otherwise say n/a.
            let ci = (change.is_some() && samples.len() * 2 > cfg.resamples).then(|| {
                samples.sort_by(f64::total_cmp);
                (
                    fuselab_metrics::percentile(samples, 100.0 * alpha / 2.0).unwrap_or(0.0),
                    fuselab_metrics::percentile(samples, 100.0 * (1.0 - alpha / 2.0))
                        .unwrap_or(0.0),
                )
            });
            let v = match ci.map(|ci| verdict(ci, threshold, m.better())) {
                Some(Verdict::Regressed | Verdict::Improved) if unknown_noise => {
                    Verdict::Inconclusive
                }
                Some(v) => v,
                None => Verdict::NotApplicable,
            };
            MetricComparison {
                metric: m,
                threshold,
                baseline: b,
                candidate: c,
                change,
                ci,
                verdict: v,
            }
        })
        .collect();
    Ok(GateReport {
        baseline: baseline.iter().map(|r| r.name().to_string()).collect(),
        candidate: candidate.iter().map(|r| r.name().to_string()).collect(),
        comparisons,
        paired,
        resamples: cfg.resamples,
        confidence: cfg.confidence,
        warnings,
    })
}

/// What a side's resamples add for run-to-run noise (see [`compare`]).
enum RunNoise {
    /// Nothing: several runs (resampled) or a deterministic engine.
    None,
    /// Metric `j` is multiplied by `exp(cv[j] · T)`, `T ~ t`.
    Floor { cv: [f64; 13], t: StudentT<f64> },
    /// One real-time run and no estimate of its run-to-run noise.
    Unknown,
}

/// Decides a side's [`RunNoise`] and says so in `warnings`. `other` is the
/// other side's name, runs and samples.
fn side_noise(
    side: &str,
    runs: &[RunData],
    other: (&str, &[RunData], &[RunSamples]),
    floors: &[NoiseFloor],
    warnings: &mut Vec<String>,
) -> RunNoise {
    let run = &runs[0];
    let engine = &run.summary.provenance.engine.engine;
    if runs.len() > 1 || !is_real_time(engine) {
        return RunNoise::None;
    }
    let who = format!(
        "{side} is one run ({}) of the real-time engine {engine}",
        run.name()
    );
    let t = |k: usize| StudentT::new((k.max(2) - 1) as f64).ok();
    if let Some(f) = floors.iter().find(|f| f.matches(run))
        && let Some(t) = t(f.runs)
    {
        let up = cv_upper_bound_factor(f.runs);
        let cv: [f64; 13] = std::array::from_fn(|j| up * f.cv_of(GateMetric::ALL[j]));
        let when = f
            .measured_unix_s
            .map(|s| format!(" on {}", fuselab_core::utc_from_unix(s)))
            .unwrap_or_default();
        warnings.push(format!(
            "{who}: its interval is widened by the run-to-run noise floor measured from {} runs{when} ({})",
            f.runs,
            cv_summary(&cv)
        ));
        let p = &run.summary.provenance;
        if f.workload_digest != p.workload_digest || f.policy != p.engine.policy {
            warnings.push(format!(
                "the noise floor was measured on another configuration (policy {}, workload {}) than {} (policy {}, workload {}); measure it on the gated configuration for the fairest intervals",
                f.policy.as_deref().unwrap_or("-"),
                short(&f.workload_digest),
                run.name(),
                p.engine.policy.as_deref().unwrap_or("-"),
                short(&p.workload_digest)
            ));
        }
        return RunNoise::Floor { cv, t };
    }
    let (other_side, other_runs, other_samples) = other;
    if other_runs.len() >= super::noise::MIN_NOISE_RUNS
        && let Some(t) = t(other_runs.len())
    {
        let values: Vec<_> = other_samples.iter().map(point_values).collect();
        let up = cv_upper_bound_factor(other_runs.len());
        let cv = cv_per_metric(&values).map(|c| up * c.unwrap_or(0.0));
        warnings.push(format!(
            "{who}: no noise floor is stored, so its interval is widened by the run-to-run spread of the {other_side}'s {} runs ({})",
            other_runs.len(),
            cv_summary(&cv)
        ));
        return RunNoise::Floor { cv, t };
    }
    warnings.push(format!(
        "{who}, and no run-to-run noise floor is known: its interval holds request-to-request variation only, so a change beyond a threshold is reported as inconclusive rather than called; run each side 3 times (fuselab bench --repeat 3) or measure the machine noise once (fuselab gate --measure-noise --candidate REPEAT_DIR)"
    ));
    RunNoise::Unknown
}

/// The factor from a coefficient of variation estimated from `k` runs to its
/// one-sided 95 % upper confidence bound, `sqrt((k − 1) / χ²₀.₀₅(k − 1))`.
///
/// A noise floor comes from a few runs made back to back, which spread less
/// than runs made at other times on the same machine (measured on the
/// project's 2-core machine: 5 back-to-back repeats gave a TPOT p50 CV of
/// 4.9 %, 14 runs over 7 minutes 11 %); taking the bound, 2.4× for 5 runs,
/// keeps single-run gates from calling that drift a regression.
fn cv_upper_bound_factor(k: usize) -> f64 {
    // χ²₀.₀₅ for 1 … 10 degrees of freedom; Wilson–Hilferty beyond.
    const LOWER_5PCT: [f64; 10] = [
        0.003_93, 0.1026, 0.3518, 0.7107, 1.1455, 1.6354, 2.1673, 2.7326, 3.3251, 3.9403,
    ];
    let df = k.max(2) - 1;
    let chi2 = match LOWER_5PCT.get(df - 1) {
        Some(&q) => q,
        None => {
            let d = df as f64;
            let c = 2.0 / (9.0 * d);
            d * (1.0 - c - 1.644_854 * c.sqrt()).powi(3)
        }
    };
    (df as f64 / chi2).sqrt()
}

/// `CV tpot_p99 4.1%, …`: the three largest coefficients of variation.
fn cv_summary(cv: &[f64; 13]) -> String {
    let mut by: Vec<(f64, GateMetric)> = cv.iter().copied().zip(GateMetric::ALL).collect();
    by.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<String> = by
        .iter()
        .take(3)
        .map(|(c, m)| format!("{m} {:.1}%", 100.0 * c))
        .collect();
    format!("largest run-to-run CV: {}", top.join(", "))
}

#[cfg(test)]
mod tests {
    use super::cv_upper_bound_factor;

    #[test]
    fn the_cv_upper_bound_follows_the_chi_square_quantiles() {
        // sqrt(df / χ²₀.₀₅(df)): df 4 → χ² 0.7107; df 30 → 18.493 (tables).
        assert!((cv_upper_bound_factor(5) - (4.0f64 / 0.7107).sqrt()).abs() < 1e-9);
        let wh = cv_upper_bound_factor(31);
        assert!((wh / (30.0f64 / 18.493).sqrt() - 1.0).abs() < 0.01, "{wh}");
        // More runs, a tighter bound; never below 1.
        let f: Vec<f64> = (2..60).map(cv_upper_bound_factor).collect();
        assert!(f.windows(2).all(|w| w[1] < w[0]) && f.iter().all(|&x| x > 1.0));
    }
}
