//! GPU tests of the CUDA backend. Where no GPU is usable (CPU CI) each test
//! writes `SKIPPED <test>: <reason>` where `cargo test` shows it and returns;
//! with `FUSELAB_REQUIRE_GPU=1` it fails instead.
//!
//! * `tiny-128` logits on CUDA match the CPU backend (same bf16-exact weights,
//!   uploaded from the host) within bf16 tolerance, through prompt chunks,
//!   mixed prefill + decode steps and a padded step;
//! * a 4100-token prompt through two layers of Llama-3-8B's shape (the
//!   256-row prefill tile over many tiles, then a decode) matches the CPU
//!   backend;
//! * the engine runs all five policies on `tiny-128` on CUDA to completion,
//!   every step recorded and every token accounted for.
//! * prefix-cache hits (a prefix group, a conversation's next turn) give the
//!   logits of a cold prefill: the hit requests' prefill starts after blocks
//!   another request wrote and only reads them.

use std::collections::BTreeMap;

use fuselab_core::{RequestId, RequestSpec};
use fuselab_cpu::{CpuBackend, CpuOptions};
use fuselab_cuda::{CudaBackend, CudaOptions, ModelShape};
use fuselab_engine::{
    Backend, BackendError, BatchEntry, BatchShape, ForwardBatch, KvGeometry, NativeEngine,
    PolicyConfig, PolicyKind, StepOutput,
};
use fuselab_kernels::cuda::gpu_or_skip;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{cuda_or_skip, write_bf16_weights};

fn entry(
    request: RequestId,
    start: u32,
    tokens: &[u32],
    table: &[u32],
    sample: bool,
    decode: bool,
) -> BatchEntry {
    BatchEntry {
        request,
        start_pos: start,
        n_tokens: tokens.len() as u32,
        sample,
        is_decode: decode,
        tokens: tokens.to_vec(),
        block_table: table.to_vec(),
        row: None,
    }
}

fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

#[test]
fn tiny_logits_on_cuda_match_the_cpu_backend_within_bf16_tolerance() {
    let test = "tiny_logits_on_cuda_match_the_cpu_backend";
    if !gpu_or_skip(test) {
        return;
    }
    let cuda_cfg = ModelShape::tiny_128();
    let cpu_cfg = cuda_cfg.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = write_bf16_weights(&cpu_cfg, 11, dir.path());
    let opts = CudaOptions {
        keep_logits: true,
        kv_budget_bytes: Some(64 << 20),
        ..CudaOptions::default()
    };
    let Some(mut cuda) = cuda_or_skip(test, || {
        CudaBackend::from_safetensors(cuda_cfg.clone(), &path, opts)
    }) else {
        return;
    };
    let mut cpu = CpuBackend::from_safetensors(cpu_cfg, &path)
        .unwrap()
        .with_options(CpuOptions {
            keep_logits: true,
            ..CpuOptions::default()
        });
    let geo = KvGeometry {
        block_size: 16,
        num_blocks: 16,
    };
    cuda.init_kv(geo).unwrap();
    cpu.init_kv(geo).unwrap();

    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let prompt_a: Vec<u32> = (0..37).map(|_| rng.random_range(0..4096)).collect();
    let prompt_b: Vec<u32> = (0..5).map(|_| rng.random_range(0..4096)).collect();
    let (ta, tb) = ([3u32, 0, 5], [9u32]);
    // Step 1: A's first chunk (not sampled) and B's whole prompt.
    let mut steps = vec![ForwardBatch {
        entries: vec![
            entry(1, 0, &prompt_a[..20], &ta[..2], false, false),
            entry(2, 0, &prompt_b, &tb, true, false),
        ],
        shape: BatchShape::Ragged,
    }];
    let mut compared = 0;
    let mut next: BTreeMap<RequestId, u32> = BTreeMap::new();
    for step in 0..4 {
        if step == 1 {
            // A's last chunk next to B's first decode (a mixed step).
            steps.push(ForwardBatch {
                entries: vec![
                    entry(1, 20, &prompt_a[20..], &ta, true, false),
                    entry(2, 5, &[next[&2]], &tb, true, true),
                ],
                shape: BatchShape::Ragged,
            });
        } else if step >= 2 {
            // Two decodes; the last step is padded (rows × row_len > real tokens).
            let s = (step - 2) as u32;
            steps.push(ForwardBatch {
                entries: vec![
                    entry(1, 37 + s, &[next[&1]], &ta, true, true),
                    entry(2, 6 + s, &[next[&2]], &tb, true, true),
                ],
                shape: if step == 3 {
                    BatchShape::Padded {
                        rows: 4,
                        row_len: 3,
                    }
                } else {
                    BatchShape::Ragged
                },
            });
        }
        let batch = &steps[step];
        let c = cpu.forward(batch).unwrap();
        let g = cuda.forward(batch).unwrap();
        assert_eq!(c.logits.len(), g.logits.len(), "step {step}");
        assert_eq!(g.sampled.len(), g.logits.len(), "step {step}");
        assert!(g.duration_s.is_none());
        for (((rc, lc), (rg, lg)), (rs, tok)) in c.logits.iter().zip(&g.logits).zip(&g.sampled) {
            assert_eq!((rc, rg), (rs, rs), "step {step}: entry order");
            assert_eq!(lg.len(), 4096);
            assert!(
                lg.iter().all(|v| v.is_finite()),
                "step {step}: non-finite logits"
            );
            let norm = lc.iter().map(|v| v * v).sum::<f32>().sqrt();
            let diff = lc
                .iter()
                .zip(lg)
                .map(|(a, b)| (a - b) * (a - b))
                .sum::<f32>()
                .sqrt();
            let max_ref = lc.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_diff = lc
                .iter()
                .zip(lg)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!(
                "step {step} request {rc}: relative L2 error {:.2e}, max |diff| {max_diff:.3} of max |logit| {max_ref:.2}",
                diff / norm
            );
            assert!(
                diff / norm < 3e-2,
                "step {step} request {rc}: rel err {}",
                diff / norm
            );
            assert!(
                max_diff < 0.08 * max_ref,
                "step {step} request {rc}: max diff {max_diff}"
            );
            // The device argmax is exactly the argmax of the device's own logits.
            assert_eq!(*tok, argmax(lg), "step {step} request {rc}: greedy sample");
            // Both continue with the CPU's token so that the inputs stay identical.
            next.insert(*rc, argmax(lc));
            compared += 1;
        }
    }
    assert_eq!(compared, 7);
}

/// Relative L2 error and max |diff| / max |reference| of `got` against `want`.
fn errors(want: &[f32], got: &[f32]) -> (f32, f32) {
    let norm = want.iter().map(|v| v * v).sum::<f32>().sqrt();
    let diff = want
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    let max_ref = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let max_diff = want
        .iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (diff / norm, max_diff / max_ref)
}

#[test]
fn a_4100_token_prompt_through_llama3_8b_layers_on_cuda_matches_the_cpu_backend() {
    let test = "a_4100_token_prompt_through_llama3_8b_layers_on_cuda_matches_the_cpu_backend";
    if !gpu_or_skip(test) {
        return;
    }
    // Llama-3-8B's layers (hidden 4096, 32 q / 8 kv heads of 128, FFN 14336),
    // two of them, and a small vocabulary so that the CPU reference is quick.
    let shape = ModelShape {
        name: "llama3-8b-2-layers".into(),
        n_layers: 2,
        vocab: 4096,
        ..ModelShape::llama3_8b()
    };
    let dir = tempfile::tempdir().unwrap();
    let path = write_bf16_weights(&shape, 17, dir.path());
    let opts = CudaOptions {
        keep_logits: true,
        kv_budget_bytes: Some(256 << 20),
        ..CudaOptions::default()
    };
    let Some(mut cuda) = cuda_or_skip(test, || {
        CudaBackend::from_safetensors(shape.clone(), &path, opts)
    }) else {
        return;
    };
    let mut cpu = CpuBackend::from_safetensors(shape.clone(), &path)
        .unwrap()
        .with_options(CpuOptions {
            keep_logits: true,
            kv_budget_bytes: 1 << 30,
            ..CpuOptions::default()
        });
    let geo = KvGeometry {
        block_size: 16,
        num_blocks: 300,
    };
    cuda.init_kv(geo).unwrap();
    cpu.init_kv(geo).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let prompt: Vec<u32> = (0..4100).map(|_| rng.random_range(0..4096)).collect();
    // Blocks in a scrambled order, as a paged cache hands them out.
    let table: Vec<u32> = (0..257).map(|i| (i * 7) % 300).collect();
    let whole = ForwardBatch {
        entries: vec![entry(1, 0, &prompt, &table, true, false)],
        shape: BatchShape::Ragged,
    };
    let c = cpu.forward(&whole).unwrap();
    let g = cuda.forward(&whole).unwrap();
    let (rel, max) = errors(&c.logits[0].1, &g.logits[0].1);
    eprintln!(
        "prefill of 4100 tokens: relative L2 error {rel:.2e}, max diff {max:.2e} of max |logit|"
    );
    assert!(rel < 5e-2 && max < 0.1, "prefill: rel {rel}, max {max}");
    let next = argmax(&c.logits[0].1);
    let decode = ForwardBatch {
        entries: vec![entry(1, 4100, &[next], &table, true, true)],
        shape: BatchShape::Ragged,
    };
    let c = cpu.forward(&decode).unwrap();
    let g = cuda.forward(&decode).unwrap();
    let (rel, max) = errors(&c.logits[0].1, &g.logits[0].1);
    eprintln!(
        "decode at position 4100: relative L2 error {rel:.2e}, max diff {max:.2e} of max |logit|"
    );
    assert!(rel < 5e-2 && max < 0.1, "decode: rel {rel}, max {max}");
    assert_eq!(g.sampled[0].1, argmax(&g.logits[0].1), "greedy sample");
}

fn requests() -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    (0..10)
        .map(|id| RequestSpec {
            id,
            arrival_s: 0.0,
            prompt_len: rng.random_range(3..300),
            output_len: rng.random_range(4..24),
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter: None,
        })
        .collect()
}

#[test]
fn the_engine_runs_all_five_policies_on_tiny_on_cuda() {
    let test = "the_engine_runs_all_five_policies_on_tiny_on_cuda";
    if !gpu_or_skip(test) {
        return;
    }
    let reqs = requests();
    for kind in [
        PolicyKind::Static,
        PolicyKind::Continuous,
        PolicyKind::Chunked,
        PolicyKind::SplitFuse,
        PolicyKind::Prepack,
    ] {
        let opts = CudaOptions {
            kv_budget_bytes: Some(32 << 20),
            ..CudaOptions::default()
        };
        let Some(backend) = cuda_or_skip(test, || {
            CudaBackend::random(ModelShape::tiny_128(), 42, opts)
        }) else {
            return;
        };
        let knobs: &[&str] = match kind {
            PolicyKind::Static | PolicyKind::Prepack => &["batch=4"],
            // A small budget forces prompt chunks next to decodes (mixed steps).
            PolicyKind::Chunked | PolicyKind::SplitFuse => &["budget=128"],
            _ => &[],
        };
        let policy = PolicyConfig::with_knobs(kind, knobs.iter().copied()).unwrap();
        let mut engine = NativeEngine::new(backend, policy).unwrap();
        for r in &reqs {
            engine.submit(r, 0.0);
        }
        let (mut now, mut finished, mut steps) = (0.0, 0, 0);
        let (mut prefill, mut decode) = (0u64, 0u64);
        let mut tokens: BTreeMap<RequestId, u32> = BTreeMap::new();
        while engine.has_work() {
            let report = engine.step(now).unwrap();
            now += report.duration_s();
            steps += 1;
            if let Some(rec) = &report.record {
                assert_eq!(
                    rec.preemptions, 0,
                    "{kind}: the KV cache holds every request"
                );
                prefill += u64::from(rec.prefill_tokens);
                decode += u64::from(rec.decode_tokens);
            }
            for e in &report.events {
                *tokens.entry(e.request).or_default() += e.n_tokens;
            }
            for f in &report.finished {
                assert_eq!(f.status, fuselab_core::RequestStatus::Ok, "{kind}: {f:?}");
                finished += 1;
            }
            engine.check_kv().unwrap();
        }
        engine.check_drained().unwrap();
        assert_eq!(finished, reqs.len(), "{kind}");
        for r in &reqs {
            assert_eq!(tokens[&r.id], r.output_len, "{kind}: request {}", r.id);
        }
        // Every prompt token prefilled once and every later token decoded once.
        let prompts: u64 = reqs.iter().map(|r| u64::from(r.prompt_len)).sum();
        let decodes: u64 = reqs.iter().map(|r| u64::from(r.output_len) - 1).sum();
        assert_eq!(
            (prefill, decode),
            (prompts, decodes),
            "{kind}: tokens computed"
        );
        assert!(now > 0.0, "{kind}: the engine measured wall time");
        eprintln!("{kind}: {steps} steps, {now:.3} s of device time");
    }
}

/// Worst relative error of `got` against `want` (max |Δ| over max |want|).
fn rel_error(want: &[f32], got: &[f32]) -> f32 {
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs())).max(1e-6);
    want.iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()))
        / scale
}

/// A seeded tiny-128 backend that keeps its logits, over a 64 MiB KV budget, with `opts`
/// otherwise (`None` where the GPU is missing, with the reason printed).
fn tiny_logging(test: &str, opts: CudaOptions) -> Option<CudaBackend> {
    cuda_or_skip(test, || {
        CudaBackend::random(
            ModelShape::tiny_128(),
            7,
            CudaOptions {
                kv_budget_bytes: Some(64 << 20),
                keep_logits: true,
                ..opts
            },
        )
    })
}

/// [`tiny_logging`] backends with `opts(true)` and `opts(false)` (`None` where the GPU
/// is missing).
fn tiny_pair(test: &str, opts: impl Fn(bool) -> CudaOptions) -> Option<(CudaBackend, CudaBackend)> {
    Some((
        tiny_logging(test, opts(true))?,
        tiny_logging(test, opts(false))?,
    ))
}

#[test]
fn decode_steps_replayed_from_cuda_graphs_match_kernel_by_kernel_steps() {
    let test = "decode_steps_replayed_from_cuda_graphs_match_kernel_by_kernel_steps";
    if !gpu_or_skip(test) {
        return;
    }
    let Some((with, without)) = tiny_pair(test, |graphs| CudaOptions {
        graphs,
        ..CudaOptions::default()
    }) else {
        return;
    };
    same_logits_over_mixed_steps(with, without, Compare::GraphsAgainstEager);
}

#[test]
fn tuned_decode_gemms_change_the_algorithms_not_the_logits() {
    let test = "tuned_decode_gemms_change_the_algorithms_not_the_logits";
    if !gpu_or_skip(test) {
        return;
    }
    let Some((with, without)) = tiny_pair(test, |gemm_tuning| CudaOptions {
        gemm_tuning,
        ..CudaOptions::default()
    }) else {
        return;
    };
    same_logits_over_mixed_steps(with, without, Compare::Close);
}

#[test]
fn skinny_decode_gemms_keep_the_logits() {
    let test = "skinny_decode_gemms_keep_the_logits";
    if !gpu_or_skip(test) {
        return;
    }
    let Some((with, without)) = tiny_pair(test, |skinny_gemm| CudaOptions {
        skinny_gemm,
        ..CudaOptions::default()
    }) else {
        return;
    };
    let shape = ModelShape::tiny_128();
    let (with_on, without_on) = (
        with.device().skinny_applies(1, shape.hidden, 2 * shape.ffn),
        without
            .device()
            .skinny_applies(1, shape.hidden, 2 * shape.ffn),
    );
    if !with.device().has_wgmma() {
        eprintln!("skip {test}: the skinny GEMM needs sm_90a");
        return;
    }
    assert!(
        with_on && !without_on,
        "the option switches the skinny path"
    );
    let tiled = with.device().skinny_tiled_bytes();
    eprintln!("{test}: {tiled} bytes of weights tiled for the skinny GEMM");
    assert!(
        tiled > 0 && without.device().skinny_tiled_bytes() == 0,
        "the skinny path streams tiled copies of the weights (with {tiled} bytes, without {})",
        without.device().skinny_tiled_bytes()
    );
    same_logits_over_mixed_steps(with, without, Compare::Close);
}

#[test]
fn programmatic_launch_keeps_the_decode_graphs_logits() {
    let test = "programmatic_launch_keeps_the_decode_graphs_logits";
    if !gpu_or_skip(test) {
        return;
    }
    for skinny_gemm in [false, true] {
        let Some((with, without)) = tiny_pair(test, |pdl| CudaOptions {
            pdl,
            skinny_gemm,
            ..CudaOptions::default()
        }) else {
            return;
        };
        if !with.device().has_wgmma() {
            eprintln!("skip {test}: programmatic launch and the skinny GEMM need sm_90a");
            return;
        }
        eprintln!("{test}: skinny GEMM {skinny_gemm}");
        // The same kernels in the same order, only allowed to overlap: equal logits.
        same_logits_over_mixed_steps(with, without, Compare::Identical);
    }
}

/// A tuning table of this GPU with non-default prefill and decode configurations.
fn tuning_table_for_this_gpu() -> fuselab_kernels::tunable::TuningTable {
    use fuselab_kernels::tunable::{TUNING_TABLE_SCHEMA, TuningEntry, TuningTable};
    let dev = fuselab_kernels::cuda::CudaDevice::new(0).unwrap();
    let info = dev.info();
    let entry = |kernel: &str, config: &[(&str, i64)]| TuningEntry {
        device: info.name.clone(),
        driver: info.driver_release.clone(),
        kernel: kernel.into(),
        bucket: None,
        shapes: Vec::new(),
        config: config.iter().map(|(k, v)| ((*k).to_string(), *v)).collect(),
        ms: 1.0,
        default_ms: None,
    };
    TuningTable {
        schema: TUNING_TABLE_SCHEMA,
        entries: vec![
            entry(
                "prefill_attention",
                &[
                    ("warpgroups", 1),
                    ("kv_tile", 128),
                    ("stages", 3),
                    ("min_blocks", 1),
                    ("paired", 0),
                ],
            ),
            entry(
                "decode_attention",
                &[("warps", 8), ("stages", 2), ("splits", 3)],
            ),
        ],
    }
}

#[test]
fn a_tuning_table_changes_the_kernels_not_the_logits() {
    let test = "a_tuning_table_changes_the_kernels_not_the_logits";
    if !gpu_or_skip(test) {
        return;
    }
    let Some((tuned, plain)) = tiny_pair(test, |on| CudaOptions {
        tuning: on.then(tuning_table_for_this_gpu),
        ..CudaOptions::default()
    }) else {
        return;
    };
    same_logits_over_mixed_steps(tuned, plain, Compare::Close);
    // A table of another GPU applies to nothing: an error naming the field.
    let mut other = tuning_table_for_this_gpu();
    for e in &mut other.entries {
        e.device = "NVIDIA B200".into();
    }
    let e = CudaBackend::random(
        ModelShape::tiny_128(),
        7,
        CudaOptions {
            kv_budget_bytes: Some(64 << 20),
            tuning: Some(other),
            ..CudaOptions::default()
        },
    )
    .map(drop)
    .unwrap_err()
    .to_string();
    assert!(e.contains("tuning_table") && e.contains("B200"), "{e}");
}

/// What [`same_logits_over_mixed_steps`] checks beyond close logits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Compare {
    /// `with` replays decode graphs, `without` runs its decode steps kernel by kernel.
    GraphsAgainstEager,
    /// Other kernels or algorithms: close logits only.
    Close,
    /// The same kernels in the same order, both replaying decode graphs: equal logits.
    Identical,
}

/// Prefill, decodes (graph-replayed where `with` has graphs), a padded step
/// that grows the buffers and more decodes: `with` and `without` give the same
/// logits (bf16 tolerance; equal with [`Compare::Identical`]) and sample their argmax.
fn same_logits_over_mixed_steps(mut with: CudaBackend, mut without: CudaBackend, compare: Compare) {
    let graphs = compare != Compare::Close;
    let geo = KvGeometry {
        block_size: 16,
        num_blocks: 256,
    };
    with.init_kv(geo).unwrap();
    without.init_kv(geo).unwrap();
    eprintln!(
        "decode GEMM shapes through a tuned cuBLASLt algorithm: {} with, {} without",
        with.device().tuned_gemm_shapes(),
        without.device().tuned_gemm_shapes()
    );
    let warm = with.graph_replays();
    if graphs {
        assert!(warm > 0, "the warm-up captures and replays the graphs");
    }
    match compare {
        Compare::GraphsAgainstEager => assert_eq!(without.graph_replays(), 0),
        Compare::Identical => assert!(without.graph_replays() > 0, "both replay graphs"),
        Compare::Close => {}
    }
    let exact = compare == Compare::Identical;

    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut seqs: Vec<(u32, Vec<u32>)> = Vec::new(); // (context, block table)
    let mut next_block = 0u32;
    let mut prefill = Vec::new();
    for id in 0..21u64 {
        let len: u32 = rng.random_range(1..300);
        let blocks = (len + 8).div_ceil(16);
        let table: Vec<u32> = (next_block..next_block + blocks).collect();
        next_block += blocks;
        let prompt: Vec<u32> = (0..len).map(|_| rng.random_range(0..4096)).collect();
        if id < 20 {
            prefill.push(entry(id, 0, &prompt, &table, true, false));
        }
        seqs.push((len, table));
    }
    let mut last: BTreeMap<RequestId, u32> = BTreeMap::new();
    fn run(
        pair: (&mut CudaBackend, &mut CudaBackend),
        last: &mut BTreeMap<RequestId, u32>,
        batch: &ForwardBatch,
        label: &str,
        exact: bool,
    ) {
        let a = pair.0.forward(batch).unwrap();
        let b = pair.1.forward(batch).unwrap();
        assert_eq!(a.logits.len(), b.logits.len(), "{label}");
        for ((ra, la), (rb, lb)) in a.logits.iter().zip(&b.logits) {
            assert_eq!(ra, rb, "{label}: entry order");
            let e = rel_error(lb, la);
            assert!(e < 2e-2, "{label}: request {ra}: logits differ by {e}");
            if exact {
                assert!(
                    la == lb,
                    "{label}: request {ra}: logits not identical ({e})"
                );
            }
        }
        for (r, t) in &a.sampled {
            let l = &a.logits.iter().find(|(id, _)| id == r).unwrap().1;
            assert_eq!(*t, argmax(l), "{label}: request {r} samples its argmax");
            last.insert(*r, *t);
        }
    }
    run(
        (&mut with, &mut without),
        &mut last,
        &ForwardBatch {
            entries: prefill,
            shape: BatchShape::Ragged,
        },
        "prefill",
        exact,
    );
    let decode = |seqs: &mut Vec<(u32, Vec<u32>)>, last: &BTreeMap<RequestId, u32>, n: usize| {
        let entries = seqs[..n]
            .iter_mut()
            .enumerate()
            .map(|(id, (ctx, table))| {
                let e = entry(id as u64, *ctx, &[last[&(id as u64)]], table, true, true);
                *ctx += 1;
                e
            })
            .collect();
        ForwardBatch {
            entries,
            shape: BatchShape::Ragged,
        }
    };
    for step in 0..3 {
        let batch = decode(&mut seqs, &last, 20);
        run(
            (&mut with, &mut without),
            &mut last,
            &batch,
            &format!("decode {step} of 20"),
            exact,
        );
    }
    if graphs {
        assert_eq!(
            with.graph_replays(),
            warm + 3,
            "the 20-row decodes replay graphs"
        );
    }
    // A padded step larger than the warm-up grows the activation buffers, which
    // the captured graphs pointed at: they must be captured again, not replayed.
    let (len, table) = seqs[20].clone();
    let prompt: Vec<u32> = (0..len).map(|_| rng.random_range(0..4096)).collect();
    run(
        (&mut with, &mut without),
        &mut last,
        &ForwardBatch {
            entries: vec![entry(20, 0, &prompt, &table, true, false)],
            shape: BatchShape::Padded {
                rows: 8,
                row_len: 1024,
            },
        },
        "padded prefill",
        exact,
    );
    for step in 0..2 {
        let batch = decode(&mut seqs, &last, 21);
        run(
            (&mut with, &mut without),
            &mut last,
            &batch,
            &format!("decode {step} of 21"),
            exact,
        );
    }
    if graphs {
        assert_eq!(with.graph_replays(), warm + 5);
    }
}

#[test]
fn without_a_driver_the_backend_says_so_and_does_not_panic() {
    if fuselab_cuda::probe().is_ok() {
        // Only a machine without a driver can check this.
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED without_a_driver_the_backend_says_so_and_does_not_panic: a CUDA driver is present"
        );
        return;
    }
    let e = CudaBackend::random(ModelShape::tiny_128(), 1, CudaOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("no CUDA driver found ("), "{e}");
    let e = CudaBackend::load("llama3-8b", 1).unwrap_err().to_string();
    assert!(e.contains("no CUDA driver found ("), "{e}");
}

/// Keeps the logits of each request's first sampled position (the end of its
/// prompt), which depend on the prompt alone, and counts the requests whose
/// first prefill starts past position 0 (after cached blocks).
struct FirstLogits<B> {
    inner: B,
    first: BTreeMap<RequestId, Vec<f32>>,
    seen: std::collections::BTreeSet<RequestId>,
    hit_entries: usize,
}

impl<B: Backend> Backend for FirstLogits<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn needs_tokens(&self) -> bool {
        self.inner.needs_tokens()
    }
    fn kv_bytes_per_token(&self) -> u64 {
        self.inner.kv_bytes_per_token()
    }
    fn vocab_size(&self) -> u32 {
        self.inner.vocab_size()
    }
    fn kv_budget_bytes(&self) -> u64 {
        self.inner.kv_budget_bytes()
    }
    fn init_kv(&mut self, g: KvGeometry) -> Result<(), BackendError> {
        self.inner.init_kv(g)
    }
    fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
        for e in &b.entries {
            // A later chunk of a chunked prompt also starts past 0: only the
            // first entry of a request tells a cache hit.
            if self.seen.insert(e.request) && e.start_pos > 0 {
                self.hit_entries += 1;
            }
        }
        let out = self.inner.forward(b)?;
        for (id, l) in &out.logits {
            self.first.entry(*id).or_insert_with(|| l.clone());
        }
        Ok(out)
    }
}

fn sharing_requests() -> Vec<RequestSpec> {
    let group = |id, prompt_len| RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len,
        output_len: 4,
        prefix_group: Some(0),
        prefix_len: 64,
        conversation: None,
        adapter: None,
    };
    let turn = |id, turn, prompt_len| RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len,
        output_len: 6,
        prefix_group: None,
        prefix_len: 0,
        conversation: Some(fuselab_core::Turn {
            id: 1,
            turn,
            think_s: 0.0,
        }),
        adapter: None,
    };
    // Turn 1 carries turn 0's 70 prompt tokens and 6 answer tokens.
    vec![
        group(0, 90),
        turn(1, 0, 70),
        group(2, 77),
        group(3, 120),
        turn(4, 1, 96),
    ]
}

#[test]
fn prefix_cache_hits_on_cuda_give_the_logits_of_a_cold_prefill() {
    let test = "prefix_cache_hits_on_cuda_give_the_logits_of_a_cold_prefill";
    if !gpu_or_skip(test) {
        return;
    }
    let reqs = sharing_requests();
    for (kind, knobs) in [
        (PolicyKind::Continuous, &[][..]),
        (PolicyKind::Chunked, &["budget=48"][..]),
    ] {
        let mut firsts = Vec::new();
        for cache in [false, true] {
            let opts = CudaOptions {
                kv_budget_bytes: Some(32 << 20),
                keep_logits: true,
                ..CudaOptions::default()
            };
            let Some(backend) = cuda_or_skip(test, || {
                CudaBackend::random(ModelShape::tiny_128(), 42, opts)
            }) else {
                return;
            };
            let mut knobs: Vec<String> = knobs.iter().map(|k| k.to_string()).collect();
            knobs.push(format!("prefix_cache={cache}"));
            let policy = PolicyConfig::with_knobs(kind, knobs).unwrap();
            let tap = FirstLogits {
                inner: backend,
                first: BTreeMap::new(),
                seen: std::collections::BTreeSet::new(),
                hit_entries: 0,
            };
            let mut engine = NativeEngine::new(tap, policy).unwrap();
            // Requests 0 and 1 first; the others once those finished.
            engine.submit(&reqs[0], 0.0);
            engine.submit(&reqs[1], 0.0);
            let (mut now, mut finished) = (0.0, 0);
            while engine.has_work() {
                let report = engine.step(now).unwrap();
                now += report.duration_s();
                for f in &report.finished {
                    assert_eq!(f.status, fuselab_core::RequestStatus::Ok, "{kind}: {f:?}");
                    finished += 1;
                    if f.id == 1 {
                        for r in &reqs[2..] {
                            engine.submit(r, now);
                        }
                    }
                }
                engine.check_kv().unwrap();
            }
            engine.check_drained().unwrap();
            assert_eq!(finished, reqs.len(), "{kind}");
            let (_, hits) = engine.prefix_cache_tokens();
            let tap = engine.backend();
            if cache {
                // 2 and 3 reuse the group's 64 tokens, turn 1 turn 0's 64 full-block tokens.
                assert_eq!(hits, 3 * 64, "{kind}");
                assert_eq!(tap.hit_entries, 3, "{kind}");
            } else {
                assert_eq!((hits, tap.hit_entries), (0, 0), "{kind}");
            }
            assert_eq!(tap.first.len(), reqs.len(), "{kind}");
            firsts.push(tap.first.clone());
        }
        for r in &reqs {
            let (cold, hit) = (&firsts[0][&r.id], &firsts[1][&r.id]);
            let max_ref = cold.iter().fold(0f32, |m, v| m.max(v.abs()));
            let max_diff = cold
                .iter()
                .zip(hit)
                .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
            eprintln!(
                "{kind} request {}: max |cold - hit| {max_diff:.3e} of {max_ref:.3e}",
                r.id
            );
            // bf16 activations: the cached K/V were computed in another batch.
            assert!(
                max_diff <= 0.02 * max_ref,
                "{kind} request {}: max diff {max_diff}",
                r.id
            );
        }
    }
}

/// A second `init_kv` on the same backend (one backend serving several
/// engines, as `fuselab calibrate` does) re-captures the decode graphs over
/// the new cache and block size: a graph-replayed decode step then gives the
/// logits of a backend that only ever had the second cache.
#[test]
fn a_reallocated_cache_replays_no_stale_decode_graph() {
    let test = "a_reallocated_cache_replays_no_stale_decode_graph";
    if !gpu_or_skip(test) {
        return;
    }
    let opts = CudaOptions {
        keep_logits: true,
        kv_budget_bytes: Some(64 << 20),
        ..CudaOptions::default()
    };
    let make = || CudaBackend::random(ModelShape::tiny_128(), 5, opts.clone());
    let Some(mut reused) = cuda_or_skip(test, make) else {
        return;
    };
    let Some(mut fresh) = cuda_or_skip(test, make) else {
        return;
    };
    reused
        .init_kv(KvGeometry {
            block_size: 16,
            num_blocks: 64,
        })
        .unwrap();
    let geo = KvGeometry {
        block_size: 64,
        num_blocks: 16,
    };
    reused.init_kv(geo).unwrap();
    fresh.init_kv(geo).unwrap();
    let prompt: Vec<u32> = (0..90).map(|i| (i * 37 + 11) % 4096).collect();
    let steps = [
        ForwardBatch {
            entries: vec![entry(1, 0, &prompt, &[3, 7], true, false)],
            shape: BatchShape::Ragged,
        },
        ForwardBatch {
            entries: vec![entry(1, 90, &[42], &[3, 7], true, true)],
            shape: BatchShape::Ragged,
        },
    ];
    let mut logits = Vec::new();
    for b in [&mut reused, &mut fresh] {
        let before = b.graph_replays();
        let outs: Vec<StepOutput> = steps.iter().map(|s| b.forward(s).unwrap()).collect();
        assert_eq!(
            b.graph_replays(),
            before + 1,
            "the decode step replays a graph"
        );
        logits.push(outs);
    }
    for (a, f) in logits[0].iter().zip(&logits[1]) {
        let (la, lf) = (&a.logits[0].1, &f.logits[0].1);
        let worst = la
            .iter()
            .zip(lf)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0f32, f32::max);
        assert!(worst <= 1e-3, "logits differ by {worst}");
        assert_eq!(a.sampled, f.sampled);
    }
}
