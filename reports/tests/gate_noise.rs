//! Issue item 16: single-run gates of real-time engines. Synthetic runs
//! labelled as the `cpu` engine, with a run-wide speed factor per run
//! (`SynthConfig::run_noise`, machine noise between runs) that the bootstrap
//! over one run's requests cannot see. Seeded, so every count is exact.

use fuselab_reports::RunData;
use fuselab_reports::gate::{GateConfig, GateMetric, NoiseFloor, Verdict, compare, measure_noise};
use fuselab_reports::synth::{SynthConfig, synth_run};

/// A run of the `cpu` engine (or `engine`) with run-to-run noise `run_noise`
/// and every time stretched by `slow`.
fn run(engine: &str, noise_seed: u64, run_noise: f64, slow: f64) -> RunData {
    let cfg = SynthConfig {
        requests: 150,
        noise_seed,
        run_noise,
        tpot_s: 0.03 * slow,
        prefill_s_per_token: 0.0002 * slow,
        summary_metrics: false,
        ..Default::default()
    };
    let mut r = synth_run(&format!("r{noise_seed}"), &cfg);
    r.summary.provenance.engine.engine = engine.into();
    r
}

fn cfg(seed: u64, floors: Vec<NoiseFloor>) -> GateConfig {
    GateConfig {
        resamples: 300,
        seed,
        noise_floors: floors,
        ..GateConfig::default()
    }
}

fn floor_from(runs: &[RunData]) -> NoiseFloor {
    measure_noise(runs).expect("a floor from repeated runs")
}

#[test]
fn without_a_floor_a_single_real_time_run_is_inconclusive_not_regressed() {
    let (b, c) = (run("cpu", 1, 0.0, 1.0), run("cpu", 2, 0.0, 1.15));
    let report = compare(
        std::slice::from_ref(&b),
        std::slice::from_ref(&c),
        &cfg(1, vec![]),
    )
    .unwrap();
    assert!(!report.regressed(), "{}", report.to_markdown());
    let unsure = report.inconclusive();
    assert!(unsure.contains(&GateMetric::OutputThroughput), "{unsure:?}");
    assert!(report.headline().starts_with("INCONCLUSIVE"));
    assert!(
        report
            .warnings
            .iter()
            .any(|w| w.contains("--measure-noise") && w.contains("--repeat 3")),
        "{:?}",
        report.warnings
    );
    assert!(
        report.to_junit().contains("errors=\"")
            && report.to_junit().contains("<error type=\"inconclusive\"")
    );
    // The same data from a deterministic engine is called a regression.
    let mut bs = b;
    let mut cs = c;
    bs.summary.provenance.engine.engine = "sim".into();
    cs.summary.provenance.engine.engine = "sim".into();
    let report = compare(&[bs], &[cs], &cfg(1, vec![])).unwrap();
    assert!(report.regressed() && report.inconclusive().is_empty());
}

#[test]
fn a_noise_floor_widens_single_run_intervals_by_its_cv() {
    let (b, c) = (run("cpu", 1, 0.0, 1.0), run("cpu", 2, 0.0, 1.15));
    let mut floor = floor_from(&[
        run("cpu", 10, 0.05, 1.0),
        run("cpu", 11, 0.05, 1.0),
        run("cpu", 12, 0.05, 1.0),
    ]);
    let width = |floor: &NoiseFloor| {
        let r = compare(
            std::slice::from_ref(&b),
            std::slice::from_ref(&c),
            &cfg(3, vec![floor.clone()]),
        )
        .unwrap();
        let m = r
            .comparisons
            .iter()
            .find(|m| m.metric == GateMetric::OutputThroughput)
            .unwrap()
            .clone();
        (r, m.ci.unwrap().1 - m.ci.unwrap().0, m.verdict)
    };
    for v in floor.cv.values_mut() {
        *v = 0.001;
    }
    let (r, tight, verdict) = width(&floor);
    assert_eq!(verdict, Verdict::Regressed, "{}", r.to_markdown());
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("widened by the run-to-run noise floor measured from 3 runs")),
        "{:?}",
        r.warnings
    );
    for v in floor.cv.values_mut() {
        *v = 0.20;
    }
    let (r, wide, verdict) = width(&floor);
    assert_eq!(verdict, Verdict::NoChange, "{}", r.to_markdown());
    // Two sides with CV 20% each: the interval of the ratio spans far more than ±20%.
    assert!(wide > 0.5 && wide > 10.0 * tight, "{wide} vs {tight}");
    // A floor of another engine does not apply.
    floor.engine = "cuda".into();
    let r = compare(&[b], &[c], &cfg(3, vec![floor])).unwrap();
    assert!(!r.inconclusive().is_empty());
}

#[test]
fn three_baseline_runs_stand_in_for_a_missing_floor() {
    let base: Vec<RunData> = (0..3).map(|i| run("cpu", 20 + i, 0.03, 1.0)).collect();
    let cand = run("cpu", 30, 0.03, 1.0);
    let r = compare(&base, &[cand], &cfg(5, vec![])).unwrap();
    assert!(
        r.inconclusive().is_empty() && !r.regressed(),
        "{}",
        r.to_markdown()
    );
    assert!(
        r.warnings
            .iter()
            .any(|w| w.contains("spread of the baseline's 3 runs")),
        "{:?}",
        r.warnings
    );
}

#[test]
fn measured_floor_recovers_the_run_noise_and_checks_its_inputs() {
    let runs: Vec<RunData> = (0..8).map(|i| run("cpu", 40 + i, 0.05, 1.0)).collect();
    let floor = floor_from(&runs);
    assert_eq!((floor.runs, floor.engine.as_str()), (8, "cpu"));
    let cv = floor.cv["output_throughput"];
    // Sample CV of 8 runs around a true 5% speed noise (plus request jitter).
    assert!((0.02..0.10).contains(&cv), "{cv}");
    let err = measure_noise(&runs[..2]).unwrap_err().to_string();
    assert!(
        err.contains("--measure-noise") && err.contains("at least 3"),
        "{err}"
    );
    let mut other = runs[..3].to_vec();
    other[2].summary.provenance.workload_digest = "different".into();
    let err = measure_noise(&other).unwrap_err().to_string();
    assert!(err.contains("differ in workload"), "{err}");
}

/// The false-alarm problem and its fix on synthetic machine noise (σ = 4% per
/// run): 40 single-run A/A pairs raise many alarms when the runs are judged
/// as if deterministic, and at most one with the measured floor.
#[test]
fn single_run_a_a_pairs_with_a_floor_rarely_alarm() {
    let floor = floor_from(
        &(0..6)
            .map(|i| run("cpu", 100 + i, 0.04, 1.0))
            .collect::<Vec<_>>(),
    );
    let (mut naive, mut honest) = (0, 0);
    for pair in 0..40u64 {
        let b = run("cpu", 200 + 2 * pair, 0.04, 1.0);
        let c = run("cpu", 201 + 2 * pair, 0.04, 1.0);
        let r = compare(
            std::slice::from_ref(&b),
            std::slice::from_ref(&c),
            &cfg(pair, vec![floor.clone()]),
        )
        .unwrap();
        honest += usize::from(r.regressed());
        let (mut bs, mut cs) = (b, c);
        bs.summary.provenance.engine.engine = "synthetic".into();
        cs.summary.provenance.engine.engine = "synthetic".into();
        naive += usize::from(
            compare(&[bs], &[cs], &cfg(pair, vec![]))
                .unwrap()
                .regressed(),
        );
    }
    eprintln!("A/A single runs: {naive}/40 alarms without the floor, {honest}/40 with it");
    assert!(
        naive >= 8,
        "the synthetic noise should fool the request bootstrap: {naive}"
    );
    assert!(honest <= 1, "{honest} false alarms with the floor");
}
