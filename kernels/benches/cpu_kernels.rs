//! CPU kernel micro-benchmarks (criterion; not a test): ragged flash prefill
//! attention, split-KV paged decode attention, RMSNorm and SiLU·mul at the
//! shapes the CPU engine uses (the `tiny` model: 8 query / 2 KV heads of 32)
//! and at one Llama-3 head shape (32 / 8 heads of 128). Each kernel's output is
//! checked once against its reference before it is timed. Attention reports
//! FLOP/s (causal FLOPs = 2·2·S²·H·D/2); norms report elements/s.
//!
//! `cargo bench -p fuselab-kernels --bench cpu_kernels` (`-- --test` runs each once).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fuselab_kernels::cpu::activation::silu_mul;
use fuselab_kernels::cpu::attention::{FlashConfig, SeqChunk, flash_attention, naive_attention};
use fuselab_kernels::cpu::decode::{DecodeSeq, paged_decode_attention};
use fuselab_kernels::cpu::norm::{rms_norm, rms_norm_ref};
use fuselab_kernels::cpu::paged::{AttnShape, PagedKv};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const BLOCK: usize = 16;

fn random(n: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn max_rel_err(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0f32, |m, x| m.max(x.abs())).max(1e-6);
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs())) / scale
}

/// One sequence of `len` tokens whose K/V fill a paged cache.
fn filled_cache(
    shape: AttnShape,
    len: usize,
    rng: &mut ChaCha8Rng,
) -> (PagedKv, Vec<u32>, Vec<f32>, Vec<f32>) {
    let blocks = len.div_ceil(BLOCK);
    let mut kv = PagedKv::new(BLOCK, blocks, shape.kv_width()).expect("cache");
    // Reversed block order so the kernels really follow the table.
    let table: Vec<u32> = (0..blocks as u32).rev().collect();
    let k = random(len * shape.kv_width(), rng);
    let v = random(len * shape.kv_width(), rng);
    kv.write(&table, 0, &k, &v).expect("write");
    (kv, table, k, v)
}

fn prefill(c: &mut Criterion) {
    let mut group = c.benchmark_group("prefill_attention");
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for (label, shape, len) in [
        (
            "tiny",
            AttnShape {
                n_heads: 8,
                n_kv_heads: 2,
                head_dim: 32,
            },
            512,
        ),
        (
            "llama3",
            AttnShape {
                n_heads: 32,
                n_kv_heads: 8,
                head_dim: 128,
            },
            256,
        ),
    ] {
        let (kv, table, k, v) = filled_cache(shape, len, &mut rng);
        let q = random(len * shape.q_width(), &mut rng);
        let scale = 1.0 / (shape.head_dim as f32).sqrt();
        let chunks = [SeqChunk {
            q_row: 0,
            start_pos: 0,
            n_tokens: len,
            block_table: &table,
        }];
        let mut out = vec![f32::NAN; q.len()];
        flash_attention(
            &q,
            &kv,
            shape,
            &chunks,
            scale,
            FlashConfig::default(),
            &mut out,
        )
        .expect("flash");
        let reference = naive_attention(&q, &k, &v, shape, 0, scale).expect("naive");
        let err = max_rel_err(&out, &reference);
        assert!(
            err < 1e-4,
            "flash attention differs from the reference by {err}"
        );
        let flops = 2.0 * 2.0 * (len * len) as f64 * (shape.n_heads * shape.head_dim) as f64 / 2.0;
        group.throughput(Throughput::Elements(flops as u64));
        group.bench_function(BenchmarkId::new(format!("{label}/causal"), len), |b| {
            b.iter(|| {
                flash_attention(
                    &q,
                    &kv,
                    shape,
                    &chunks,
                    scale,
                    FlashConfig::default(),
                    &mut out,
                )
            })
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_attention");
    let mut rng = ChaCha8Rng::seed_from_u64(2);
    let shape = AttnShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 32,
    };
    let (batch, ctx) = (16usize, 1024usize);
    let (kv, table, k, v) = filled_cache(shape, ctx, &mut rng);
    let q = random(batch * shape.q_width(), &mut rng);
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    // Every sequence shares the cache's positions (the bench times reads, not ownership).
    let seqs: Vec<DecodeSeq<'_>> = (0..batch)
        .map(|i| DecodeSeq {
            q_row: i,
            pos: ctx - 1,
            block_table: &table,
        })
        .collect();
    let mut out = vec![f32::NAN; q.len()];
    paged_decode_attention(&q, &kv, shape, &seqs, scale, 4, &mut out).expect("decode");
    let row = shape.q_width();
    let reference = naive_attention(&q[..row], &k, &v, shape, ctx - 1, scale).expect("naive");
    let err = max_rel_err(&out[..row], &reference);
    assert!(
        err < 1e-4,
        "decode attention differs from the reference by {err}"
    );
    let bytes = (batch * ctx * shape.kv_width() * 2 * 4) as u64;
    group.throughput(Throughput::Bytes(bytes));
    for splits in [1usize, 4] {
        group.bench_function(
            BenchmarkId::new(format!("b{batch}xctx{ctx}/splits"), splits),
            |b| b.iter(|| paged_decode_attention(&q, &kv, shape, &seqs, scale, splits, &mut out)),
        );
    }
    group.finish();
}

fn elementwise(c: &mut Criterion) {
    let mut group = c.benchmark_group("elementwise");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (tokens, hidden, ffn) = (64usize, 4096usize, 14336usize);
    let x = random(tokens * hidden, &mut rng);
    let w = random(hidden, &mut rng);
    let mut y = vec![f32::NAN; x.len()];
    for (row, out) in x.chunks(hidden).zip(y.chunks_mut(hidden)) {
        rms_norm(row, &w, 1e-5, out).expect("rms_norm");
    }
    let err = max_rel_err(&y[..hidden], &rms_norm_ref(&x[..hidden], &w, 1e-5));
    assert!(err < 1e-5, "rms_norm differs from the reference by {err}");
    group.throughput(Throughput::Elements((tokens * hidden) as u64));
    group.bench_function(format!("rms_norm/T{tokens}xhidden{hidden}"), |b| {
        b.iter(|| {
            for (row, out) in x.chunks(hidden).zip(y.chunks_mut(hidden)) {
                rms_norm(row, &w, 1e-5, out).expect("rms_norm");
            }
        })
    });
    let gate = random(tokens * ffn, &mut rng);
    let up = random(tokens * ffn, &mut rng);
    let mut act = vec![f32::NAN; gate.len()];
    silu_mul(&gate, &up, &mut act).expect("silu_mul");
    let expect = gate[0] / (1.0 + (-gate[0]).exp()) * up[0];
    assert!((act[0] - expect).abs() <= 1e-6 * expect.abs().max(1.0));
    group.throughput(Throughput::Elements((tokens * ffn) as u64));
    group.bench_function(format!("silu_mul/T{tokens}xffn{ffn}"), |b| {
        b.iter(|| silu_mul(&gate, &up, &mut act))
    });
    group.finish();
}

criterion_group!(benches, prefill, decode, elementwise);
criterion_main!(benches);
