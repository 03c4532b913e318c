use fuselab_reports::gate::{GateConfig, compare};
use fuselab_reports::synth::{SynthConfig, synth_run};
#[test]
fn timing() {
    let runs: Vec<_> = (0..20).map(|s| synth_run("a", &SynthConfig { noise_seed: s, summary_metrics: false, ..Default::default() })).collect();
    for b in [10, 200] {
    let t = std::time::Instant::now();
    for i in 0..10 { compare(&runs[2*i..2*i+1], &runs[2*i+1..2*i+2], &GateConfig { resamples: b, ..Default::default() }).unwrap(); }
    eprintln!("compare x10 B={b}: {:?}", t.elapsed());
    }
}
