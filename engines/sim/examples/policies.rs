//! Prints what each policy predicts on the simulated H200 with Llama-3-8B for
//! the DESIGN.md §8 workload and for FastGen-like traffic at 2 requests/s.
//!
//! `cargo run -p fuselab-sim --example policies`

#[path = "../tests/common/mod.rs"]
mod common;

use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind, simulate};
use fuselab_sim::SimBackend;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let cal = fuselab_sim::calibration()?;
    println!("calibration fit (H200, PyTorch ops), MAPE per operator:");
    for (op, m) in &cal.mape {
        println!("  {op:>13}: {:5.1} %", m * 100.0);
    }
    let s8 = common::design_s8(8);
    println!("\nDESIGN.md §8 workload (64 × N(2600,780)[256,4096] prompts, 128 out, t=0), h200 llama3-8b:");
    println!("{:>11} {:>10} {:>8} {:>10} {:>8}", "policy", "makespan", "steps", "padding", "preempt");
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
    println!("\nFastGen-like traffic (256 × N(2600,30%) prompts, N(60,30%) out, Poisson 2 req/s), h200 llama3-8b:");
    println!("{:>11} {:>10} {:>12} {:>10}", "policy", "p99 TTFT", "out tok/s", "mean TPOT");
    for kind in PolicyKind::ALL {
        let sim = SimBackend::from_names("h200", "llama3-8b", 1)?;
        let mut engine = NativeEngine::new(sim, PolicyConfig::new(kind))?;
        let run = simulate(&fg, None, &mut engine)?;
        let (p99, thr, tpot) = common::summary(&run.records);
        println!("{:>11} {:>9.3}s {:>12.0} {:>9.1}ms", kind.name(), p99, thr, tpot * 1e3);
    }
    Ok(())
}
