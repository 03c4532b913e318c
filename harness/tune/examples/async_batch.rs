//! Asynchronous batch BO against sequential and synchronous-batch BO on
//! Hartmann-6: simple regret after 24 trials and the virtual wall time,
//! over seeds, with trial durations log-normal (median 1, σ 0.5) and the
//! same durations in every mode ([`fuselab_tune::testfns::batch_regret`]).
//!
//! `cargo run --release -p fuselab-tune --example async_batch [-- SEEDS [K]]`

use fuselab_tune::testfns::{Batching, HARTMANN6, batch_regret, median, quantile};

fn main() -> fuselab_tune::Result<()> {
    let mut args = std::env::args().skip(1);
    let seeds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let k: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(4);
    let budget = 24;
    println!(
        "hartmann6, {budget} trials, {k} in flight, {seeds} seeds: simple regret and virtual wall time \
         (trial durations log-normal, median 1)"
    );
    println!(
        "{:<28}{:>16}{:>16}{:>16}{:>16}",
        "mode", "regret median", "regret p25", "regret p75", "wall median"
    );
    for (name, mode) in [
        ("sequential (1 in flight)", Batching::Sequential),
        ("synchronous batches", Batching::Synchronous),
        ("asynchronous batches", Batching::Asynchronous),
    ] {
        let mut regrets = Vec::new();
        let mut walls = Vec::new();
        for seed in 0..seeds {
            let r = batch_regret(&HARTMANN6, mode, k, budget, 1000 + seed)?;
            regrets.push(r.regret);
            walls.push(r.makespan);
        }
        println!(
            "{name:<28}{:>16.4}{:>16.4}{:>16.4}{:>16.2}",
            median(&regrets),
            quantile(&regrets, 0.25),
            quantile(&regrets, 0.75),
            median(&walls)
        );
    }
    Ok(())
}
