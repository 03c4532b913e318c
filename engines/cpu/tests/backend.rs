//! The CPU backend behind the `Backend` trait: sizes, bad batches as errors
//! (never panics), greedy sampling, and the kept logits.

use fuselab_cpu::{CpuBackend, CpuOptions, ModelShape};
use fuselab_engine::{Backend, BatchEntry, ForwardBatch, KvGeometry};

fn micro() -> ModelShape {
    ModelShape {
        name: "micro".into(),
        n_layers: 2,
        hidden: 32,
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 8,
        ffn: 48,
        vocab: 97,
        ..ModelShape::tiny()
    }
}

fn entry(request: u64, start_pos: u32, tokens: Vec<u32>, block_table: Vec<u32>) -> BatchEntry {
    BatchEntry {
        request,
        start_pos,
        n_tokens: tokens.len() as u32,
        sample: true,
        is_decode: false,
        tokens,
        block_table,
        row: None,
    }
}

fn batch(entries: Vec<BatchEntry>) -> ForwardBatch {
    ForwardBatch {
        entries,
        ..Default::default()
    }
}

#[test]
fn reports_its_model_sizes() {
    let b = CpuBackend::tiny(0).unwrap();
    assert_eq!(b.name(), "cpu");
    assert!(b.needs_tokens());
    assert_eq!(b.vocab_size(), 4096);
    // 4 layers × (K + V) × 2 kv heads × 32 × 4 bytes
    assert_eq!(b.kv_bytes_per_token(), 4 * 2 * 64 * 4);
    assert_eq!(b.kv_budget_bytes(), 256 << 20);
    assert_eq!(
        ModelShape::tiny().params(),
        4096 * 256 * 2 + 4 * (256 * 384 + 256 * 256 + 3 * 256 * 704 + 512) + 256
    );
}

#[test]
fn load_reads_presets_and_files_with_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.safetensors");
    fuselab_cpu::write_random_safetensors(&ModelShape::tiny(), 11, &path).unwrap();
    let from_file = CpuBackend::load("tiny", Some(&path), 0).unwrap();
    let random = CpuBackend::load("tiny", None, 11).unwrap();
    let toks = [3u32, 1, 4, 1, 5];
    assert_eq!(
        from_file.model().naive_logits(&toks).unwrap(),
        random.model().naive_logits(&toks).unwrap()
    );
    // a tiny file read as `small`: the first tensor already has the wrong shape
    let e = CpuBackend::load("small", Some(&path), 0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("model.embed_tokens.weight")
            && e.contains("[4096, 256]")
            && e.contains("[8192, 512]"),
        "{e}"
    );
    assert!(
        CpuBackend::load("medium", None, 0)
            .unwrap_err()
            .to_string()
            .contains("medium")
    );
}

#[test]
fn bad_batches_are_errors() {
    let mut b = CpuBackend::random(micro(), 3).unwrap();
    let e = b
        .forward(&batch(vec![entry(1, 0, vec![1, 2], vec![0])]))
        .unwrap_err();
    assert!(e.to_string().contains("init_kv"), "{e}");
    let e = b
        .init_kv(KvGeometry {
            block_size: 16,
            num_blocks: 1 << 30,
        })
        .unwrap_err();
    assert!(e.to_string().contains("budget"), "{e}");
    b.init_kv(KvGeometry {
        block_size: 4,
        num_blocks: 8,
    })
    .unwrap();
    let mut no_tokens = entry(1, 0, vec![], vec![0]);
    no_tokens.n_tokens = 3;
    let e = b.forward(&batch(vec![no_tokens])).unwrap_err();
    assert!(
        e.to_string()
            .contains("request 1 has 0 token ids for n_tokens 3"),
        "{e}"
    );
    let e = b
        .forward(&batch(vec![entry(2, 0, vec![1, 500], vec![0])]))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("token id 500 is outside the vocabulary of 97"),
        "{e}"
    );
    let e = b
        .forward(&batch(vec![entry(3, 2, vec![1, 2, 3], vec![0])]))
        .unwrap_err();
    assert!(e.to_string().contains("5 are needed"), "{e}");
    let e = b
        .forward(&batch(vec![entry(4, 0, vec![1], vec![8])]))
        .unwrap_err();
    assert!(e.to_string().contains("block id 8"), "{e}");
    assert!(
        ModelShape::preset("huge")
            .unwrap_err()
            .to_string()
            .contains("valid models: llama3-8b")
    );
    let bad = ModelShape {
        n_kv_heads: 3,
        ..micro()
    };
    assert!(
        CpuBackend::random(bad, 0)
            .unwrap_err()
            .to_string()
            .contains("n_kv_heads")
    );
}

#[test]
fn samples_greedily_and_keeps_logits_on_request() {
    let mut b = CpuBackend::random(micro(), 3)
        .unwrap()
        .with_options(CpuOptions {
            keep_logits: true,
            ..Default::default()
        });
    b.init_kv(KvGeometry {
        block_size: 4,
        num_blocks: 8,
    })
    .unwrap();
    let mut quiet = entry(8, 0, vec![4, 5], vec![2]);
    quiet.sample = false;
    let out = b
        .forward(&batch(vec![
            entry(7, 0, vec![1, 2, 3, 4, 5], vec![3, 1]),
            quiet,
        ]))
        .unwrap();
    assert_eq!(out.sampled.len(), 1);
    assert_eq!(out.logits.len(), 1);
    let (id, tok) = out.sampled[0];
    let logits = &out.logits[0].1;
    assert_eq!(id, 7);
    let best = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert_eq!(logits[tok as usize], best);
    let kept = b.take_logits();
    assert_eq!((kept[0].request, kept[0].pos), (7, 4));
    assert!(b.take_logits().is_empty());
    let oracle = b.model().naive_logits(&[1, 2, 3, 4, 5]).unwrap();
    let err = logits
        .iter()
        .zip(&oracle[4])
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    assert!(err < 1e-4, "{err}");
}
