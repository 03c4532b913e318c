//! How fast the simulator runs a serving workload: 512 `fastgen-2600`
//! requests at 2 requests/s under splitfuse on the simulated H200 with
//! Llama-3-8B (issue 3's speed target: ≤ 0.5 s on one core).
//!
//! `cargo bench -p fuselab-sim --bench simulate`

use criterion::{Criterion, criterion_group, criterion_main};
use fuselab_core::Arrivals;
use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind, simulate};
use fuselab_sim::SimBackend;

fn bench(c: &mut Criterion) {
    let mut spec = fuselab_workloads::preset("fastgen-2600").expect("preset exists");
    spec.n = 512;
    spec.seed = 1;
    spec.arrivals = Arrivals::Poisson { rate: 2.0 };
    let requests = fuselab_workloads::generate(&spec).expect("valid workload");
    let mut group = c.benchmark_group("sim/h200/llama3-8b");
    group.sample_size(10);
    for kind in [PolicyKind::SplitFuse, PolicyKind::Continuous] {
        group.bench_function(format!("{}/fastgen-2600/n512/rate2", kind.name()), |b| {
            b.iter(|| {
                let sim = SimBackend::from_names("h200", "llama3-8b", 1).expect("known names");
                let mut engine =
                    NativeEngine::new(sim, PolicyConfig::new(kind)).expect("engine builds");
                let run = simulate(&requests, None, &mut engine).expect("run completes");
                // The benchmark checks its own output: every request finished.
                assert!(
                    run.records
                        .iter()
                        .all(|r| r.tokens.len() as u32 == r.output_len)
                );
                run.steps.len()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
