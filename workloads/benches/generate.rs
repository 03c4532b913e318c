//! Generating and exporting one million requests (target: under 1 s).

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fuselab_workloads::{Arrivals, export_jsonl, generate, preset};

fn generate_and_export(c: &mut Criterion) {
    let mut spec = preset("fastgen-2600").expect("preset exists");
    spec.n = 1_000_000;
    spec.arrivals = Arrivals::Poisson { rate: 4.0 };
    // Check the output once before measuring.
    let bytes = export_jsonl(&generate(&spec).expect("valid spec"));
    assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 1_000_000);

    let mut group = c.benchmark_group("workload");
    group.sample_size(10);
    group.throughput(Throughput::Elements(spec.n));
    group.bench_function("generate+export/n=1000000/fastgen-2600/poisson", |b| {
        b.iter(|| export_jsonl(&generate(&spec).expect("valid spec")).len());
    });
    group.bench_function("generate/n=1000000/fastgen-2600/poisson", |b| {
        b.iter(|| generate(&spec).expect("valid spec").len());
    });
    group.finish();
}

criterion_group!(benches, generate_and_export);
criterion_main!(benches);
