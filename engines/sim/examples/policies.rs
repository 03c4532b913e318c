//! Prints what each policy predicts on the simulated H200 with Llama-3-8B for
//! the DESIGN.md §8 workload and for FastGen-like traffic at 2 requests/s.
//!
//! `cargo run -p fuselab-sim --example policies`

#[path = "../tests/common/mod.rs"]
mod common;

use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind, simulate};
use fuselab_sim::SimBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cal = fuselab_sim::Calibration::default_h200();
    println!(
        "calibration: {} on {}, measured {}; held-out MAPE per operator class:",
        cal.model, cal.source.device, cal.source.measured
    );
    for (class, e) in &cal.validation.ops_held_out {
        println!("  {class:>13}: {:5.1} %", e.mape * 100.0);
    }
    for (set, e) in &cal.validation.steps {
        println!("  {set:>16}: per-step MAPE {:5.1} %", e.mape * 100.0);
    }
    let s8 = common::design_s8(8);
    println!(
        "\nDESIGN.md §8 workload (64 × N(2600,780)[256,4096] prompts, 128 out, t=0), h200 llama3-8b:"
    );
    println!(
        "{:>11} {:>10} {:>8} {:>10} {:>8}",
        "policy", "makespan", "steps", "padding", "preempt"
    );
    for kind in PolicyKind::ALL {
        let sim = SimBackend::from_names("h200", "llama3-8b", 1)?;
        let mut engine = NativeEngine::new(sim, PolicyConfig::new(kind))?;
        let run = simulate(&s8, None, &mut engine)?;
        let pad: u64 = run.steps.iter().map(|s| u64::from(s.padding_tokens)).sum();
        println!(
            "{:>11} {:>9.2}s {:>8} {:>10} {:>8}",
            kind.name(),
            run.makespan_s(),
            run.steps.len(),
            pad,
            engine.preemptions()
        );
    }
    let fg = common::workload(256, 2600.0, 16, 7800, 60.0, false, Some(2.0), 11);
    println!(
        "\nFastGen-like traffic (256 × N(2600,30%) prompts, N(60,30%) out, Poisson 2 req/s), h200 llama3-8b:"
    );
    println!(
        "{:>11} {:>10} {:>12} {:>10}",
        "policy", "p99 TTFT", "out tok/s", "mean TPOT"
    );
    for kind in PolicyKind::ALL {
        let sim = SimBackend::from_names("h200", "llama3-8b", 1)?;
        let mut engine = NativeEngine::new(sim, PolicyConfig::new(kind))?;
        let run = simulate(&fg, None, &mut engine)?;
        let (p99, thr, tpot) = common::summary(&run.records);
        println!(
            "{:>11} {:>9.3}s {:>12.0} {:>9.1}ms",
            kind.name(),
            p99,
            thr,
            tpot * 1e3
        );
    }
    println!("\nRising load (512 FastGen-2600-like requests, 128 out), ragged policies:");
    println!(
        "{:>5} {:>11} {:>10} {:>12} {:>10} {:>9}",
        "rate", "policy", "p99 TTFT", "out tok/s", "mean TPOT", "wall"
    );
    for rate in [2.0, 8.0, 16.0] {
        let specs = common::workload(512, 2600.0, 16, 7800, 128.0, false, Some(rate), 5);
        for kind in [
            PolicyKind::Continuous,
            PolicyKind::Chunked,
            PolicyKind::SplitFuse,
        ] {
            let sim = SimBackend::from_names("h200", "llama3-8b", 1)?;
            let mut engine = NativeEngine::new(sim, PolicyConfig::new(kind))?;
            let t0 = std::time::Instant::now();
            let run = simulate(&specs, None, &mut engine)?;
            let wall = t0.elapsed().as_secs_f64();
            let (p99, thr, tpot) = common::summary(&run.records);
            println!(
                "{rate:>5} {:>11} {:>9.3}s {:>12.0} {:>8.1}ms {:>8.3}s",
                kind.name(),
                p99,
                thr,
                tpot * 1e3,
                wall
            );
        }
    }
    Ok(())
}
