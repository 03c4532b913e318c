//! The gate's statistics on synthetic runs with known truth: the false-alarm
//! rate when nothing changed (A/A), and the detection rate of a 5% throughput
//! regression. Seeded, so the counts are exact and reproducible. Each of the
//! two main tests runs 200 gate comparisons (about half a minute in the dev
//! profile): the acceptance criterion is stated over 200 pairs.
//!
//! Noise in the synthetic runs (`SynthConfig::default`): every token gap and
//! every prefill is jittered log-normally (σ = 0.15), and each run gets a
//! run-wide speed factor with σ = 0.5% (machine noise between runs on a quiet
//! runner). Requests have 1000-token prompts and 64 output tokens on average,
//! 300 requests over 16 closed-loop clients. Baseline and candidate replay the same seeded workload, as a CI
//! job does, so the gate pairs requests.

use fuselab_reports::gate::{GateConfig, GateMetric, Verdict, compare};
use fuselab_reports::synth::{SynthConfig, synth_run};

const PAIRS: u64 = 200;

fn cfg(seed: u64) -> GateConfig {
    GateConfig {
        resamples: 200,
        seed,
        ..GateConfig::default()
    }
}

/// The default synthetic configuration, without summary metrics (the gate
/// reads the records only).
fn quiet(noise_seed: u64) -> SynthConfig {
    SynthConfig {
        noise_seed,
        summary_metrics: false,
        ..Default::default()
    }
}

#[test]
fn a_a_false_alarm_rate_is_at_most_one_percent() {
    let mut alarms = 0;
    let mut per_metric = std::collections::BTreeMap::<&str, usize>::new();
    for pair in 0..PAIRS {
        let base = synth_run("a", &quiet(2 * pair));
        let cand = synth_run("a2", &quiet(2 * pair + 1));
        let report = compare(&[base], &[cand], &cfg(pair)).unwrap();
        assert!(report.paired);
        for m in report.regressions() {
            *per_metric.entry(m.name()).or_default() += 1;
        }
        if report.regressed() {
            alarms += 1;
        }
    }
    eprintln!("A/A: {alarms} of {PAIRS} pairs raised a regression; per metric {per_metric:?}");
    assert!(
        alarms * 100 <= PAIRS as usize,
        "false alarms {alarms}/{PAIRS}: {per_metric:?}"
    );
}

#[test]
fn five_percent_throughput_regression_is_detected_in_95_percent() {
    let mut detected = 0;
    let mut any_metric = 0;
    for pair in 0..PAIRS {
        let base = synth_run("base", &quiet(2 * pair));
        // 5% less throughput: every token and prefill takes 1/0.95 as long.
        let slow = SynthConfig {
            noise_seed: 2 * pair + 1,
            tpot_s: 0.03 / 0.95,
            prefill_s_per_token: 0.0002 / 0.95,
            ..quiet(0)
        };
        let cand = synth_run("cand", &slow);
        let report = compare(&[base], &[cand], &cfg(1000 + pair)).unwrap();
        let c = report
            .comparisons
            .iter()
            .find(|c| c.metric == GateMetric::OutputThroughput)
            .unwrap();
        let ratio = c.candidate.unwrap() / c.baseline.unwrap();
        assert!(
            (ratio - 0.95).abs() < 0.03,
            "synthetic regression is {ratio}"
        );
        let v = c.verdict;
        if v == Verdict::Regressed {
            detected += 1;
        }
        if report.regressed() {
            any_metric += 1;
        }
    }
    eprintln!(
        "5% regression: output_throughput regressed in {detected} of {PAIRS}, gate failed in {any_metric}"
    );
    assert!(
        detected * 100 >= 95 * PAIRS as usize,
        "detected {detected}/{PAIRS}"
    );
}

#[test]
fn several_runs_per_side_widen_the_interval() {
    let runs = |seeds: std::ops::Range<u64>, noise: f64| -> Vec<_> {
        seeds
            .map(|s| {
                synth_run(
                    &format!("r{s}"),
                    &SynthConfig {
                        run_noise: noise,
                        ..quiet(s)
                    },
                )
            })
            .collect()
    };
    let width = |r: &fuselab_reports::gate::GateReport| {
        let c = r
            .comparisons
            .iter()
            .find(|c| c.metric == GateMetric::OutputThroughput)
            .unwrap();
        let (lo, hi) = c.ci.unwrap();
        hi - lo
    };
    // Quiet runs: the spread across runs is small, the interval narrow.
    let quiet = compare(&runs(0..3, 0.001), &runs(3..6, 0.001), &cfg(5)).unwrap();
    // Noisy machine (σ 3% between runs): the hierarchical bootstrap widens it.
    let noisy = compare(&runs(0..3, 0.03), &runs(3..6, 0.03), &cfg(5)).unwrap();
    assert!(
        width(&noisy) > 3.0 * width(&quiet),
        "{} vs {}",
        width(&noisy),
        width(&quiet)
    );
}

#[test]
fn the_bootstrap_is_deterministic_for_a_seed() {
    let a = synth_run("a", &SynthConfig::default());
    let b = synth_run(
        "b",
        &SynthConfig {
            noise_seed: 9,
            ..Default::default()
        },
    );
    let r1 = compare(std::slice::from_ref(&a), std::slice::from_ref(&b), &cfg(3)).unwrap();
    let r2 = compare(&[a], &[b], &cfg(3)).unwrap();
    assert_eq!(r1, r2);
    for c in &r1.comparisons {
        let (lo, hi) = c.ci.unwrap();
        assert!(lo <= hi && lo.is_finite() && hi.is_finite(), "{c:?}");
    }
}
