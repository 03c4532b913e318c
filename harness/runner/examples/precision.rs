//! Harness precision against the `null` engine (a benchmark, not a test).
//!
//! Open loop: Poisson 1000 req/s for 5000 requests; reports the achieved
//! request throughput against the schedule's own rate (requests over the
//! scheduled arrival span; target within 1%) and the schedule lag
//! `t_sent − t_scheduled` (target p99 < 1 ms). Closed loop: 64 clients; reports
//! the request rate the harness sustains.
//!
//! `cargo run --release -p fuselab-harness --example precision [-- --requests N --rate R --clients C]`

use fuselab_core::RequestSpec;
use fuselab_harness::{HarnessRun, NullEngine, NullMode, RealtimePlan, run_realtime_blocking};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp};

fn arg(name: &str, default: f64) -> f64 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(v: &mut [f64], q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    let i = ((v.len() as f64 - 1.0) * q).round() as usize;
    v[i.min(v.len() - 1)]
}

fn summarise(label: &str, run: &HarnessRun) -> (f64, f64) {
    let n = run.records.len() as f64;
    let first = run
        .records
        .iter()
        .map(|r| r.t_sent)
        .fold(f64::INFINITY, f64::min);
    let last = run
        .records
        .iter()
        .filter_map(|r| r.t_done)
        .fold(0.0, f64::max);
    let ok = run
        .records
        .iter()
        .filter(|r| r.status == fuselab_core::RequestStatus::Ok)
        .count();
    let mut lags = run.schedule_lags();
    let rate = n / (last - first);
    let p99 = percentile(&mut lags, 0.99);
    println!(
        "{label}: {ok}/{} ok, achieved {rate:.1} req/s, lag p50 {:.1} µs p99 {:.1} µs max {:.1} µs",
        run.records.len(),
        percentile(&mut lags, 0.5) * 1e6,
        p99 * 1e6,
        lags.iter().copied().fold(0.0, f64::max) * 1e6
    );
    (rate, p99)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n = arg("--requests", 5000.0) as u64;
    let rate = arg("--rate", 1000.0);
    let clients = arg("--clients", 64.0) as u32;
    let mut rng = ChaCha8Rng::seed_from_u64(2026);
    let exp = Exp::new(rate)?;
    let mut t = 0.0;
    let reqs: Vec<RequestSpec> = (0..n)
        .map(|id| {
            t += exp.sample(&mut rng);
            RequestSpec {
                id,
                arrival_s: t,
                prompt_len: 128,
                output_len: 16,
                prefix_group: None,
                prefix_len: 0,
                conversation: None,
                adapter: None,
            }
        })
        .collect();
    let span = reqs.last().map_or(0.0, |r| r.arrival_s) - reqs.first().map_or(0.0, |r| r.arrival_s);
    let sched_rate = (n as f64 - 1.0) / span;
    println!(
        "schedule: {n} requests, Poisson {rate} req/s, span {span:.3} s, own rate {sched_rate:.1} req/s"
    );

    for mode in [NullMode::OneChunk, NullMode::PerToken] {
        let mut plan = RealtimePlan::open_loop(reqs.clone());
        plan.progress = false;
        let run = run_realtime_blocking(plan, Box::new(NullEngine::new(mode)), true)?;
        // throughput over the same definition as the schedule: (n − 1) gaps
        let first = run
            .records
            .iter()
            .map(|r| r.t_sent)
            .fold(f64::INFINITY, f64::min);
        let last = run
            .records
            .iter()
            .filter_map(|r| r.t_done)
            .fold(0.0, f64::max);
        let achieved = (run.records.len() as f64 - 1.0) / (last - first);
        let (_, p99) = summarise(&format!("open loop, null {mode:?}"), &run);
        println!(
            "  throughput {achieved:.1} req/s = {:+.3}% of the schedule's rate (target ±1%); p99 lag {:.1} µs (target < 1000 µs)",
            (achieved / sched_rate - 1.0) * 100.0,
            p99 * 1e6
        );
    }

    let closed: Vec<RequestSpec> = reqs
        .iter()
        .cloned()
        .cycle()
        .take(4 * n as usize)
        .enumerate()
        .map(|(i, mut r)| {
            r.id = i as u64;
            r
        })
        .collect();
    let mut plan = RealtimePlan::closed_loop(closed, clients);
    plan.progress = false;
    let run = run_realtime_blocking(plan, Box::new(NullEngine::default()), true)?;
    summarise(
        &format!("closed loop, {clients} clients, null OneChunk"),
        &run,
    );
    Ok(())
}
