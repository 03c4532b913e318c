//! The acceptance study: median simple regret over 10 seeds of the BO tuner
//! against random search on Branin, Hartmann-6 and Hartmann-6 with
//! N(0, 0.1²) observation noise.
//!
//! Run in release: `cargo run --release -p fuselab-tune --example regret`
//! (optionally `-- SEEDS [branin|hartmann6|noisy]`).

use fuselab_tune::testfns::{BRANIN, HARTMANN6, TestFn, Which, median, quantile, regret_curve};

fn study(
    tf: &TestFn,
    noise: f64,
    budget: usize,
    checkpoints: &[usize],
    seeds: u64,
) -> fuselab_tune::Result<()> {
    let mut rows = Vec::new();
    for which in [Which::Bo, Which::Random] {
        let mut curves = Vec::new();
        for seed in 0..seeds {
            let t0 = std::time::Instant::now();
            let c = regret_curve(tf, which, budget, noise, 1000 + seed)?;
            if which == Which::Bo {
                eprintln!(
                    "  {} seed {seed}: final regret {:.2e} ({:.1} s)",
                    tf.name,
                    c.last().copied().unwrap_or(f64::NAN),
                    t0.elapsed().as_secs_f64()
                );
            }
            curves.push(c);
        }
        rows.push((which, curves));
    }
    let title = if noise > 0.0 {
        format!(
            "{} + N(0, {noise}²) noise (true regret of the posterior-mean recommendation)",
            tf.name
        )
    } else {
        tf.name.to_string()
    };
    println!("\n{title}: simple regret over {seeds} seeds, median (p90)");
    print!("{:<8}", "evals");
    for c in checkpoints {
        print!("{c:>18}");
    }
    println!();
    for (which, curves) in &rows {
        print!("{:<8}", format!("{which:?}"));
        for &c in checkpoints {
            let v: Vec<f64> = curves.iter().map(|cv| cv[c.min(cv.len()) - 1]).collect();
            print!(
                "{:>18}",
                format!("{:.2e} ({:.2e})", median(&v), quantile(&v, 0.9))
            );
        }
        println!();
    }
    Ok(())
}

fn main() -> fuselab_tune::Result<()> {
    let seeds: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(10);
    let only = std::env::args().nth(2).unwrap_or_default();
    if only.is_empty() || only == "branin" {
        study(&BRANIN, 0.0, 40, &[10, 15, 20, 25, 30, 40], seeds)?;
    }
    if only.is_empty() || only == "hartmann6" {
        study(&HARTMANN6, 0.0, 80, &[20, 30, 40, 50, 60, 80], seeds)?;
    }
    if only.is_empty() || only == "noisy" {
        study(&HARTMANN6, 0.1, 80, &[20, 30, 40, 50, 60, 80], seeds)?;
    }
    Ok(())
}
