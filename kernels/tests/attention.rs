//! Flash and split-KV decode attention against the naive dense reference on
//! seeded random inputs: odd lengths, chunks at block boundaries, several block
//! sizes and GQA ratios. Outputs are poisoned with NaN first, so an unwritten
//! element fails the comparison, and a padding row between chunks must stay NaN.

use fuselab_kernels::cpu::attention::{FlashConfig, SeqChunk, flash_attention, naive_attention};
use fuselab_kernels::cpu::decode::{DecodeSeq, paged_decode_attention};
use fuselab_kernels::cpu::paged::{AttnShape, PagedKv};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Seq {
    start: usize,
    n: usize,
    k: Vec<f32>,
    v: Vec<f32>,
    table: Vec<u32>,
    q_row: usize,
}

fn rand_vec(rng: &mut ChaCha8Rng, n: usize, amp: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-amp..amp)).collect()
}

/// Builds a paged cache holding every sequence's K/V at shuffled blocks, and a
/// packed `q` with one NaN padding row after each chunk.
fn setup(
    rng: &mut ChaCha8Rng,
    shape: AttnShape,
    block_size: usize,
    chunks: &[(usize, usize)],
) -> (PagedKv, Vec<Seq>, Vec<f32>, usize) {
    let kw = shape.kv_width();
    let blocks_needed: usize = chunks
        .iter()
        .map(|(s, n)| (s + n).div_ceil(block_size))
        .sum();
    let num_blocks = blocks_needed + 3;
    let mut ids: Vec<u32> = (0..num_blocks as u32).collect();
    ids.shuffle(rng);
    let mut kv = PagedKv::new(block_size, num_blocks, kw).unwrap();
    let mut seqs = Vec::new();
    let mut row = 0;
    for &(start, n) in chunks {
        let len = start + n;
        let table: Vec<u32> = ids.drain(..len.div_ceil(block_size)).collect();
        let k = rand_vec(rng, len * kw, 1.0);
        let v = rand_vec(rng, len * kw, 1.0);
        kv.write(&table, 0, &k, &v).unwrap();
        seqs.push(Seq {
            start,
            n,
            k,
            v,
            table,
            q_row: row,
        });
        row += n + 1;
    }
    let q = rand_vec(rng, row * shape.q_width(), 1.5);
    (kv, seqs, q, row)
}

fn assert_close(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len());
    for (i, (a, b)) in got.iter().zip(want).enumerate() {
        assert!(
            (a - b).abs() <= 2e-5 + 1e-4 * b.abs(),
            "{what}: element {i}: kernel {a} vs reference {b}"
        );
    }
}

fn check_against_naive(
    out: &[f32],
    q: &[f32],
    seqs: &[Seq],
    shape: AttnShape,
    scale: f32,
    what: &str,
) {
    let qw = shape.q_width();
    for (i, s) in seqs.iter().enumerate() {
        let rows = s.q_row * qw..(s.q_row + s.n) * qw;
        let want = naive_attention(&q[rows.clone()], &s.k, &s.v, shape, s.start, scale).unwrap();
        assert_close(&out[rows], &want, &format!("{what}, seq {i}"));
        let pad = (s.q_row + s.n) * qw..(s.q_row + s.n + 1) * qw;
        assert!(
            out[pad].iter().all(|x| x.is_nan()),
            "{what}: padding row after seq {i} was written"
        );
    }
}

const SHAPES: [(usize, usize, usize); 5] =
    [(4, 4, 8), (4, 2, 16), (8, 2, 8), (6, 1, 4), (8, 2, 32)];

#[test]
fn flash_equals_naive_across_lengths_blocks_and_gqa() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for &block_size in &[1usize, 3, 4, 16] {
        for &(h, hkv, d) in &SHAPES {
            let shape = AttnShape {
                n_heads: h,
                n_kv_heads: hkv,
                head_dim: d,
            };
            // (start_pos, n_tokens): whole prefills, chunks at and off block
            // boundaries, decodes, and odd lengths.
            let chunks = [
                (0, 1),
                (0, 17),
                (block_size, 5),
                (2 * block_size + 1, 1),
                (7, 13),
                (0, 33),
                (31, 2),
            ];
            let (kv, seqs, q, rows) = setup(&mut rng, shape, block_size, &chunks);
            let scale = 1.0 / (d as f32).sqrt();
            let tables: Vec<SeqChunk<'_>> = seqs
                .iter()
                .map(|s| SeqChunk {
                    q_row: s.q_row,
                    start_pos: s.start,
                    n_tokens: s.n,
                    block_table: &s.table,
                })
                .collect();
            for cfg in [
                FlashConfig::default(),
                FlashConfig {
                    q_tile: 1,
                    kv_tile: 1,
                    threads: 1,
                },
                FlashConfig {
                    q_tile: 5,
                    kv_tile: 7,
                    threads: 3,
                },
            ] {
                let mut out = vec![f32::NAN; rows * shape.q_width()];
                flash_attention(&q, &kv, shape, &tables, scale, cfg, &mut out).unwrap();
                let what = format!("flash bs={block_size} h={h}/{hkv} d={d} {cfg:?}");
                check_against_naive(&out, &q, &seqs, shape, scale, &what);
            }
        }
    }
}

#[test]
fn flash_handles_large_scores_without_overflow() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let shape = AttnShape {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 16,
    };
    let (kv, seqs, q, rows) = setup(&mut rng, shape, 4, &[(0, 40), (9, 3)]);
    let tables: Vec<SeqChunk<'_>> = seqs
        .iter()
        .map(|s| SeqChunk {
            q_row: s.q_row,
            start_pos: s.start,
            n_tokens: s.n,
            block_table: &s.table,
        })
        .collect();
    let scale = 20.0; // scores up to ~±700: exp would overflow without the running max
    let mut out = vec![f32::NAN; rows * shape.q_width()];
    flash_attention(
        &q,
        &kv,
        shape,
        &tables,
        scale,
        FlashConfig::default(),
        &mut out,
    )
    .unwrap();
    check_against_naive(&out, &q, &seqs, shape, scale, "large scores");
}

#[test]
fn threaded_flash_equals_naive_on_calls_big_enough_to_split() {
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let shape = AttnShape {
        n_heads: 8,
        n_kv_heads: 2,
        head_dim: 8,
    };
    // 300 × 300 × 8 score evaluations: above the threshold for threads
    let (kv, seqs, q, rows) = setup(&mut rng, shape, 16, &[(0, 300), (40, 9), (0, 1)]);
    let tables: Vec<SeqChunk<'_>> = seqs
        .iter()
        .map(|s| SeqChunk {
            q_row: s.q_row,
            start_pos: s.start,
            n_tokens: s.n,
            block_table: &s.table,
        })
        .collect();
    let scale = 1.0 / (shape.head_dim as f32).sqrt();
    for threads in [2, 4, 64] {
        let cfg = FlashConfig {
            threads,
            ..FlashConfig::default()
        };
        let mut out = vec![f32::NAN; rows * shape.q_width()];
        flash_attention(&q, &kv, shape, &tables, scale, cfg, &mut out).unwrap();
        check_against_naive(&out, &q, &seqs, shape, scale, &format!("threads {threads}"));
    }
}

#[test]
fn split_kv_decode_equals_naive() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    for &block_size in &[1usize, 4, 16] {
        for &(h, hkv, d) in &SHAPES {
            let shape = AttnShape {
                n_heads: h,
                n_kv_heads: hkv,
                head_dim: d,
            };
            let chunks = [
                (0, 1),
                (1, 1),
                (block_size - 1, 1),
                (block_size, 1),
                (40, 1),
                (66, 1),
            ];
            let (kv, seqs, q, rows) = setup(&mut rng, shape, block_size, &chunks);
            let scale = 1.0 / (d as f32).sqrt();
            let dec: Vec<DecodeSeq<'_>> = seqs
                .iter()
                .map(|s| DecodeSeq {
                    q_row: s.q_row,
                    pos: s.start,
                    block_table: &s.table,
                })
                .collect();
            for splits in [1usize, 2, 3, 7, 64] {
                let mut out = vec![f32::NAN; rows * shape.q_width()];
                paged_decode_attention(&q, &kv, shape, &dec, scale, splits, &mut out).unwrap();
                let what = format!("decode bs={block_size} h={h}/{hkv} d={d} splits={splits}");
                check_against_naive(&out, &q, &seqs, shape, scale, &what);
            }
        }
    }
}

#[test]
fn bad_arguments_are_errors_not_panics() {
    let shape = AttnShape {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
    };
    let kv = PagedKv::new(4, 2, shape.kv_width()).unwrap();
    let q = vec![0.0; 3 * shape.q_width()];
    let mut out = q.clone();
    let table = [0u32, 1];
    // positions 0..9 need 3 blocks of 4
    let too_long = [SeqChunk {
        q_row: 0,
        start_pos: 6,
        n_tokens: 3,
        block_table: &table,
    }];
    let e = flash_attention(
        &q,
        &kv,
        shape,
        &too_long,
        1.0,
        FlashConfig::default(),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("9 are needed"), "{e}");
    let past_end = [SeqChunk {
        q_row: 2,
        start_pos: 0,
        n_tokens: 2,
        block_table: &table,
    }];
    let e = flash_attention(
        &q,
        &kv,
        shape,
        &past_end,
        1.0,
        FlashConfig::default(),
        &mut out,
    )
    .unwrap_err();
    assert!(e.to_string().contains("q has 3 rows"), "{e}");
    let bad_gqa = AttnShape {
        n_heads: 3,
        ..shape
    };
    assert!(flash_attention(&q, &kv, bad_gqa, &[], 1.0, FlashConfig::default(), &mut out).is_err());
    let dec = [DecodeSeq {
        q_row: 0,
        pos: 8,
        block_table: &table,
    }];
    assert!(paged_decode_attention(&q, &kv, shape, &dec, 1.0, 2, &mut out).is_err());
    assert!(paged_decode_attention(&q, &kv, shape, &[], 1.0, 0, &mut out).is_err());
}
