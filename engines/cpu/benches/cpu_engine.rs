//! CPU engine throughput (criterion; not a test): prefill and decode tokens/s
//! of the `tiny` model at batch 1 and 16, the dense-math GEMM rate in GFLOP/s,
//! and the machine's measured f32 GEMM peak (a large candle matmul) to give the
//! fraction. Criterion reports tokens/s (and GFLOP/s for the peak) as
//! throughput; a summary table with the GEMM rates is printed at the end.
//!
//! `cargo bench -p fuselab-cpu --bench cpu_engine`

use std::time::Instant;

use candle_core::{Device, Tensor};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use fuselab_cpu::{ForwardOptions, Model, ModelShape, SeqInput};
use fuselab_kernels::cpu::paged::PagedKv;

const PROMPT: usize = 128;
const BLOCK: usize = 16;

struct Setup {
    model: Model,
    kv: Vec<PagedKv>,
    tokens: Vec<Vec<u32>>,
    tables: Vec<Vec<u32>>,
}

fn setup(batch: usize) -> Setup {
    let model = Model::random(ModelShape::tiny(), 7).expect("tiny model");
    let per_seq = (PROMPT + 1).div_ceil(BLOCK);
    let kv = model.new_kv(BLOCK, batch * per_seq).expect("kv");
    let tokens = (0..batch)
        .map(|b| {
            (0..PROMPT as u32)
                .map(|i| (i * 31 + b as u32 * 7) % 4096)
                .collect()
        })
        .collect();
    let tables = (0..batch)
        .map(|b| ((b * per_seq) as u32..((b + 1) * per_seq) as u32).collect())
        .collect();
    Setup {
        model,
        kv,
        tokens,
        tables,
    }
}

fn prefill(s: &mut Setup) {
    let seqs: Vec<SeqInput<'_>> = s
        .tokens
        .iter()
        .zip(&s.tables)
        .map(|(t, b)| SeqInput {
            tokens: t,
            start_pos: 0,
            block_table: b,
            sample: true,
            decode: false,
            verify: false,
        })
        .collect();
    s.model
        .forward(&mut s.kv, &seqs, ForwardOptions::default())
        .expect("prefill");
}

fn decode(s: &mut Setup) {
    let one = [17u32];
    let seqs: Vec<SeqInput<'_>> = s
        .tables
        .iter()
        .map(|b| SeqInput {
            tokens: &one,
            start_pos: PROMPT,
            block_table: b,
            sample: true,
            decode: true,
            verify: false,
        })
        .collect();
    s.model
        .forward(&mut s.kv, &seqs, ForwardOptions::default())
        .expect("decode");
}

/// Median seconds of `f` over `reps` runs after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

const PEAK_N: usize = 1024;

fn peak_operands() -> (Tensor, Tensor) {
    let a = Tensor::ones((PEAK_N, PEAK_N), candle_core::DType::F32, &Device::Cpu).expect("a");
    let b = Tensor::ones((PEAK_N, PEAK_N), candle_core::DType::F32, &Device::Cpu).expect("b");
    (a, b)
}

fn benches(c: &mut Criterion) {
    let (a, b) = peak_operands();
    let mut g = c.benchmark_group("gemm_peak");
    g.sample_size(10);
    g.throughput(Throughput::Elements((2 * PEAK_N * PEAK_N * PEAK_N) as u64));
    g.bench_function("candle_f32_1024", |bch| {
        bch.iter(|| a.matmul(&b).expect("matmul"))
    });
    g.finish();

    for batch in [1usize, 16] {
        let mut s = setup(batch);
        let mut g = c.benchmark_group(format!("tiny_b{batch}"));
        g.sample_size(10);
        g.throughput(Throughput::Elements((batch * PROMPT) as u64));
        g.bench_function("prefill_128", |bch| bch.iter(|| prefill(&mut s)));
        prefill(&mut s);
        g.throughput(Throughput::Elements(batch as u64));
        g.bench_function("decode_at_128", |bch| bch.iter(|| decode(&mut s)));
        g.finish();
    }

    // Summary with GEMM rates (dense math only: projections, MLP, lm_head).
    let peak =
        2.0 * (PEAK_N as f64).powi(3) / time(5, || drop(a.matmul(&b).expect("matmul"))) / 1e9;
    println!("\nmeasured f32 GEMM peak (candle {PEAK_N}³): {peak:.1} GFLOP/s");
    println!(
        "{:<22} {:>12} {:>12} {:>10}",
        "tiny", "tokens/s", "GEMM GFLOP/s", "of peak"
    );
    let cfg = ModelShape::tiny();
    for batch in [1usize, 16] {
        let mut s = setup(batch);
        let tp = time(5, || prefill(&mut s));
        let td = time(9, || decode(&mut s));
        for (label, secs, tokens) in [("prefill", tp, batch * PROMPT), ("decode", td, batch)] {
            let gflops = cfg.dense_flops(tokens as u64, batch as u64) / secs / 1e9;
            println!(
                "{:<22} {:>12.0} {:>12.1} {:>9.1}%",
                format!("{label} batch {batch}"),
                tokens as f64 / secs,
                gflops,
                100.0 * gflops / peak
            );
        }
    }
}

criterion_group!(cpu_engine, benches);
criterion_main!(cpu_engine);
