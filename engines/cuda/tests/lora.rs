//! GPU tests of LoRA on the CUDA backend. Where no GPU is usable (CPU CI)
//! each test writes `SKIPPED <test>: <reason>` and returns; with
//! `FUSELAB_REQUIRE_GPU=1` it fails instead.
//!
//! * the BGMV shrink/expand and MeteoRA gate kernels match their f64
//!   references on random inputs (mixtures of two adapters, rows without one);
//! * batched multi-LoRA through the engine (four adapters in two slots, so
//!   adapters are loaded and evicted; a request without an adapter among
//!   them) gives each request the logits of that request run alone on the
//!   CPU with its adapter merged into the weights, and of the CPU backend
//!   serving the same batch, within bf16 tolerance (same bf16-exact weights
//!   and adapters on both backends);
//! * MeteoRA with top-k = 1 and a one-hot gate reproduces serving that
//!   adapter in a slot bit for bit, eager and graph-replayed, and a learned
//!   top-k = all gate matches the CPU's mixture;
//! * 16 adapters through 4 slots with Zipf-like reuse run to completion,
//!   every token accounted for, with loads and evictions recorded.

use std::collections::BTreeMap;

use fuselab_core::{RequestId, RequestSpec};
use fuselab_cpu::{CpuBackend, CpuOptions, LoraWeights};
use fuselab_cuda::{CudaBackend, CudaOptions, ModelShape};
use fuselab_engine::{
    Backend, BackendError, ForwardBatch, LoraConfig, LoraMode, NativeEngine, PolicyConfig,
    PolicyKind, StepOutput,
};
use fuselab_kernels::cuda::lora::{LoraShape, bgmv_reference, gate_reference};
use fuselab_kernels::cuda::{CudaDevice, gpu_or_skip};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

mod common;
use common::{cuda_or_skip, write_bf16_weights};

const ADAPTERS: u32 = 4;
const RANK: u32 = 8;
const WEIGHTS_SEED: u64 = 7;
const LORA_SEED: u64 = 11;

/// Each request's sampled positions in order: (logits, sampled token).
type Trace = BTreeMap<RequestId, Vec<(Vec<f32>, u32)>>;

/// Records every sampled position's logits and token; forwards the rest.
struct Tap<B> {
    inner: B,
    trace: Trace,
}

impl<B: Backend> Backend for Tap<B> {
    fuselab_engine::forward_backend_to_inner!();

    fn forward(&mut self, b: &ForwardBatch) -> Result<StepOutput, BackendError> {
        let out = self.inner.forward(b)?;
        assert_eq!(out.logits.len(), out.sampled.len(), "keep_logits is on");
        for ((id, l), (sid, tok)) in out.logits.iter().zip(&out.sampled) {
            assert_eq!(id, sid);
            self.trace.entry(*id).or_default().push((l.clone(), *tok));
        }
        Ok(out)
    }
}

/// What one engine run saw: the trace, the most distinct adapters in a
/// step, the loads and the evictions.
struct Run {
    trace: Trace,
    most: u32,
    loads: u32,
    evictions: u32,
}

fn run<B: Backend>(backend: B, knobs: &[&str], reqs: &[RequestSpec]) -> Run {
    let policy = PolicyConfig::with_knobs(PolicyKind::Chunked, knobs.iter().copied()).unwrap();
    let tap = Tap {
        inner: backend,
        trace: Trace::new(),
    };
    let mut engine = NativeEngine::new(tap, policy).unwrap();
    for r in reqs {
        engine.submit(r, 0.0);
    }
    let (mut now, mut most, mut loads, mut evictions) = (0.0, 0, 0, 0);
    let mut tokens: BTreeMap<RequestId, u32> = BTreeMap::new();
    while engine.has_work() {
        let r = engine.step(now).unwrap();
        now += r.duration_s();
        if let Some(rec) = &r.record {
            most = most.max(rec.adapters_in_batch);
            loads += rec.adapter_loads;
            evictions += rec.adapter_evictions;
        }
        for e in &r.events {
            *tokens.entry(e.request).or_default() += e.n_tokens;
        }
        for f in &r.finished {
            assert_eq!(f.status, fuselab_core::RequestStatus::Ok, "{f:?}");
        }
        engine.check_kv().unwrap();
    }
    engine.check_drained().unwrap();
    for r in reqs {
        assert_eq!(tokens[&r.id], r.output_len, "request {}", r.id);
    }
    Run {
        trace: std::mem::take(&mut engine.backend_mut().trace),
        most,
        loads,
        evictions,
    }
}

fn requests(adapters: &[Option<u32>], seed: u64) -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    adapters
        .iter()
        .enumerate()
        .map(|(id, &adapter)| RequestSpec {
            id: id as u64,
            arrival_s: 0.0,
            prompt_len: rng.random_range(5..40),
            output_len: rng.random_range(4..10),
            prefix_group: None,
            prefix_len: 0,
            conversation: None,
            adapter,
        })
        .collect()
}

/// Relative L2 error and max |diff| / max |reference| of `got` against `want`.
fn errors(want: &[f32], got: &[f32]) -> (f32, f32) {
    let norm = want.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
    let diff = want
        .iter()
        .zip(got)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f32>()
        .sqrt();
    let max_ref = want.iter().fold(1e-12f32, |m, v| m.max(v.abs()));
    let max_diff = want
        .iter()
        .zip(got)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (diff / norm, max_diff / max_ref)
}

/// Compares `got` with `want` position by position while both sampled the
/// same tokens before (greedy paths can part at a near tie); returns the
/// positions compared. The first position (the prompt's end) always counts.
fn compare(what: &str, want: &Trace, got: &Trace) -> usize {
    let mut compared = 0;
    for (id, w) in want {
        let g = &got[id];
        assert_eq!(w.len(), g.len(), "{what}: request {id}: sampled positions");
        for (i, ((lw, tw), (lg, tg))) in w.iter().zip(g).enumerate() {
            let (rel, max) = errors(lw, lg);
            assert!(
                rel < 3e-2 && max < 0.08,
                "{what}: request {id} position {i}: relative L2 {rel:.2e}, max {max:.2e}"
            );
            compared += 1;
            if tw != tg {
                eprintln!("{what}: request {id} parts at position {i} (a near tie)");
                break;
            }
        }
    }
    compared
}

fn cuda_opts() -> CudaOptions {
    CudaOptions {
        keep_logits: true,
        kv_budget_bytes: Some(64 << 20),
        ..CudaOptions::default()
    }
}

fn cpu_opts() -> CpuOptions {
    CpuOptions {
        keep_logits: true,
        ..CpuOptions::default()
    }
}

fn slots(n: u32) -> LoraConfig {
    LoraConfig {
        adapters: ADAPTERS,
        rank: RANK,
        mode: LoraMode::Slots { slots: n },
    }
}

fn bf16_vec(rng: &mut ChaCha8Rng, n: usize, bound: f32) -> Vec<f32> {
    (0..n)
        .map(|_| half::bf16::from_f32(rng.random_range(-bound..bound)).to_f32())
        .collect()
}

fn to_dev(dev: &CudaDevice, v: &[f32]) -> cudarc::driver::CudaSlice<half::bf16> {
    let b: Vec<half::bf16> = v.iter().map(|&x| half::bf16::from_f32(x)).collect();
    dev.upload(&b).unwrap()
}

#[test]
fn bgmv_and_gate_kernels_match_their_references() {
    let test = "bgmv_and_gate_kernels_match_their_references";
    if !gpu_or_skip(test) {
        return;
    }
    let dev = CudaDevice::new(0).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let shape = LoraShape {
        rows: 37,
        d_in: 512,
        d_out: 392,
        rank: 16,
        k_mix: 2,
        slots: 3,
    };
    let s = shape;
    let x = bf16_vec(&mut rng, s.rows * s.d_in, 1.0);
    let a = bf16_vec(&mut rng, s.slots * s.rank * s.d_in, 0.08);
    let b = bf16_vec(&mut rng, s.slots * s.d_out * s.rank, 0.2);
    let y = bf16_vec(&mut rng, s.rows * s.d_out, 1.0);
    // Two entries a row: runs of one slot over several rows (as a prompt chunk's),
    // second adapters on some rows, and rows without any (row 2 among them); 37 rows
    // span three tiles of the expand kernel.
    let idx: Vec<i32> = (0..s.rows)
        .flat_map(|r| {
            let first = if r % 5 == 2 { -1 } else { ((r / 8) % 3) as i32 };
            let second = if r % 4 == 1 { ((r / 3) % 3) as i32 } else { -1 };
            [first, second]
        })
        .collect();
    assert_eq!(idx[4..6], [-1, -1]);
    let w: Vec<f32> = (0..s.rows * s.k_mix)
        .map(|_| rng.random_range(0.1..1.0))
        .collect();
    let (dx, da, db) = (to_dev(&dev, &x), to_dev(&dev, &a), to_dev(&dev, &b));
    let mut dy = to_dev(&dev, &y);
    let didx = dev.upload(&idx).unwrap();
    let dw = dev.upload(&w).unwrap();
    let mut dt = dev.upload(&vec![0f32; s.rows * s.k_mix * s.rank]).unwrap();
    dev.lora_shrink(&dx, &da, &didx, &mut dt, &shape).unwrap();
    dev.lora_expand(&dt, &db, &didx, &dw, &mut dy, &shape, 0.5)
        .unwrap();
    let got: Vec<f32> = dev
        .download(&dy)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect();
    let want = bgmv_reference(&x, &a, &b, &idx, &w, &y, &shape, 0.5);
    let (rel, max) = errors(&want, &got);
    eprintln!("bgmv: relative L2 {rel:.2e}, max {max:.2e}");
    assert!(rel < 1e-2 && max < 2e-2, "bgmv: {rel} {max}");
    // Row 2 has no adapter: it is untouched, bit for bit.
    assert_eq!(got[2 * s.d_out..3 * s.d_out], y[2 * s.d_out..3 * s.d_out]);

    // The gate: 12 adapters, top 3, logits spread by the bias.
    let (rows, n, k) = (5, 12, 3);
    let xg = bf16_vec(&mut rng, rows * s.d_in, 1.0);
    let wg = bf16_vec(&mut rng, n * s.d_in, 0.05);
    let bias: Vec<f32> = (0..n).map(|a| ((a * 7) % n) as f32 * 0.3).collect();
    let mut gidx = dev.upload(&vec![0i32; rows * k]).unwrap();
    let mut gw = dev.upload(&vec![0f32; rows * k]).unwrap();
    dev.lora_gate(
        &to_dev(&dev, &xg),
        &to_dev(&dev, &wg),
        &dev.upload(&bias).unwrap(),
        &mut gidx,
        &mut gw,
        rows,
        s.d_in,
        n,
        k,
    )
    .unwrap();
    let (gi, gwv) = (dev.download(&gidx).unwrap(), dev.download(&gw).unwrap());
    for r in 0..rows {
        let want = gate_reference(&xg[r * s.d_in..(r + 1) * s.d_in], &wg, &bias, k);
        for (e, (a, wt)) in want.iter().enumerate() {
            assert_eq!(gi[r * k + e], *a as i32, "row {r} entry {e}");
            assert!((gwv[r * k + e] - wt).abs() < 1e-3, "row {r} entry {e}");
        }
    }
}

#[test]
fn batched_multi_lora_on_cuda_equals_each_request_alone_with_its_adapter_merged() {
    let test = "batched_multi_lora_on_cuda_equals_each_request_alone_with_its_adapter_merged";
    if !gpu_or_skip(test) {
        return;
    }
    let cfg = ModelShape::tiny_128();
    let dir = tempfile::tempdir().unwrap();
    let path = write_bf16_weights(&cfg, WEIGHTS_SEED, dir.path());
    let Some(cuda) = cuda_or_skip(test, || {
        CudaBackend::from_safetensors(cfg.clone(), &path, cuda_opts())?
            .with_lora(slots(2), LORA_SEED)
    }) else {
        return;
    };
    let adapters = [Some(0), Some(1), None, Some(2), Some(1), Some(3), Some(0)];
    let reqs = requests(&adapters, 21);
    let knobs = ["budget=48", "max_loras=2"];
    let batched = run(cuda, &knobs, &reqs);
    assert_eq!(batched.most, 2, "steps should mix two adapters");
    assert!(
        batched.evictions > 0,
        "two slots for four adapters must evict"
    );

    // The CPU backend serving the same batch (same bf16-exact adapters).
    let cpu = CpuBackend::from_safetensors(cfg.clone(), &path)
        .unwrap()
        .with_options(cpu_opts())
        .with_lora(slots(2), LORA_SEED)
        .unwrap();
    let on_cpu = run(cpu, &knobs, &reqs);
    let n = compare("cuda vs cpu, batched", &on_cpu.trace, &batched.trace);
    assert!(n >= reqs.len());

    // Each request alone on the CPU with its adapter merged into the weights.
    let model = CpuBackend::from_safetensors(cfg.clone(), &path)
        .unwrap()
        .model()
        .clone();
    let lora = LoraWeights::random(&cfg, slots(2), LORA_SEED).unwrap();
    let mut compared = 0;
    for r in &reqs {
        let m = match r.adapter {
            Some(a) => model.merged(&lora, a).unwrap(),
            None => model.clone(),
        };
        let solo = RequestSpec {
            adapter: None,
            ..r.clone()
        };
        let alone = run(CpuBackend::new(m, cpu_opts()), &[], &[solo]);
        let mine: Trace = [(r.id, batched.trace[&r.id].clone())].into();
        compared += compare(
            &format!("request {} alone, merged", r.id),
            &alone.trace,
            &mine,
        );
    }
    assert!(compared >= reqs.len());

    // The adapters matter: request 0's first logits without its adapter differ.
    let plain = run(
        CpuBackend::new(model, cpu_opts()),
        &[],
        &[RequestSpec {
            adapter: None,
            ..reqs[0].clone()
        }],
    );
    let (rel, _) = errors(&plain.trace[&0][0].0, &batched.trace[&0][0].0);
    assert!(rel > 2e-2, "adapter 0 barely changes the logits: {rel}");
}

#[test]
fn meteora_top1_with_a_one_hot_gate_reproduces_the_single_adapter_on_cuda_exactly() {
    let test = "meteora_top1_with_a_one_hot_gate_reproduces_the_single_adapter_on_cuda_exactly";
    if !gpu_or_skip(test) {
        return;
    }
    let cfg = ModelShape::tiny_128();
    let reqs = requests(&[None; 5], 3);
    let meteora = LoraConfig {
        adapters: ADAPTERS,
        rank: RANK,
        mode: LoraMode::Meteora { top_k: 1 },
    };
    for graphs in [false, true] {
        let opts = CudaOptions {
            graphs,
            ..cuda_opts()
        };
        let Some(mut gated) = cuda_or_skip(test, || {
            CudaBackend::random(cfg.clone(), 42, opts.clone())?.with_lora(meteora, LORA_SEED)
        }) else {
            return;
        };
        gated.set_one_hot_gate(2).unwrap();
        assert_eq!(gated.lora_adapters(), 0, "MeteoRA requests name no adapter");
        let mixed = run(gated, &["budget=32"], &reqs);

        let single = CudaBackend::random(cfg.clone(), 42, opts.clone())
            .unwrap()
            .with_lora(slots(1), LORA_SEED)
            .unwrap();
        let on_two: Vec<RequestSpec> = reqs
            .iter()
            .map(|r| RequestSpec {
                adapter: Some(2),
                ..r.clone()
            })
            .collect();
        let served = run(single, &["budget=32", "max_loras=1"], &on_two);
        assert_eq!(served.loads, 1, "graphs {graphs}");
        assert_eq!(mixed.trace.len(), served.trace.len());
        assert!(
            mixed.trace == served.trace,
            "graphs {graphs}: bit-exact equality expected"
        );
    }

    // A learned gate with every adapter picked (no selection to flip at a
    // near tie) mixes like the CPU's, within bf16 tolerance.
    let dir = tempfile::tempdir().unwrap();
    let path = write_bf16_weights(&cfg, WEIGHTS_SEED, dir.path());
    let all = LoraConfig {
        mode: LoraMode::Meteora { top_k: ADAPTERS },
        ..meteora
    };
    let cuda = CudaBackend::from_safetensors(cfg.clone(), &path, cuda_opts())
        .unwrap()
        .with_lora(all, LORA_SEED)
        .unwrap();
    let cpu = CpuBackend::from_safetensors(cfg, &path)
        .unwrap()
        .with_options(cpu_opts())
        .with_lora(all, LORA_SEED)
        .unwrap();
    let on_cuda = run(cuda, &["budget=32"], &reqs);
    let on_cpu = run(cpu, &["budget=32"], &reqs);
    assert!(compare("meteora top-4, cuda vs cpu", &on_cpu.trace, &on_cuda.trace) >= reqs.len());
}

#[test]
fn more_adapters_than_slots_load_and_evict_through_the_engine_to_completion() {
    let test = "more_adapters_than_slots_load_and_evict_through_the_engine_to_completion";
    if !gpu_or_skip(test) {
        return;
    }
    let cfg = ModelShape::tiny_128();
    let many = LoraConfig {
        adapters: 16,
        rank: 16,
        mode: LoraMode::Slots { slots: 4 },
    };
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    // Skewed: low ids come back often, high ids once.
    let adapters: Vec<Option<u32>> = (0..40)
        .map(|i| {
            if i % 9 == 8 {
                None
            } else {
                Some((rng.random_range(0.0f64..1.0).powi(3) * 16.0) as u32)
            }
        })
        .collect();
    let reqs = requests(&adapters, 13);
    for graphs in [true, false] {
        let opts = CudaOptions {
            graphs,
            kv_budget_bytes: Some(64 << 20),
            ..CudaOptions::default()
        };
        let Some(cuda) = cuda_or_skip(test, || {
            CudaBackend::random(cfg.clone(), 42, opts)?.with_lora(many, LORA_SEED)
        }) else {
            return;
        };
        let policy =
            PolicyConfig::with_knobs(PolicyKind::Chunked, ["budget=64", "max_loras=4"]).unwrap();
        let mut engine = NativeEngine::new(cuda, policy).unwrap();
        for r in &reqs {
            engine.submit(r, 0.0);
        }
        let (mut now, mut finished, mut loads, mut evictions, mut most) = (0.0, 0, 0, 0, 0);
        let mut tokens: BTreeMap<RequestId, u32> = BTreeMap::new();
        while engine.has_work() {
            let r = engine.step(now).unwrap();
            now += r.duration_s();
            if let Some(rec) = &r.record {
                loads += rec.adapter_loads;
                evictions += rec.adapter_evictions;
                most = most.max(rec.adapters_in_batch);
            }
            for e in &r.events {
                *tokens.entry(e.request).or_default() += e.n_tokens;
            }
            for f in &r.finished {
                assert_eq!(f.status, fuselab_core::RequestStatus::Ok, "{f:?}");
                finished += 1;
            }
            engine.check_kv().unwrap();
        }
        engine.check_drained().unwrap();
        assert_eq!(finished, reqs.len());
        for r in &reqs {
            assert_eq!(tokens[&r.id], r.output_len, "request {}", r.id);
        }
        let distinct: std::collections::BTreeSet<u32> =
            adapters.iter().flatten().copied().collect();
        assert!(
            loads as usize >= distinct.len(),
            "every adapter loaded at least once"
        );
        assert!(
            evictions > 0,
            "4 slots for {} adapters must evict",
            distinct.len()
        );
        assert!(most <= 4);
        assert_eq!(
            u64::from(loads),
            engine.backend().lora_loads(),
            "graphs {graphs}"
        );
        eprintln!(
            "graphs {graphs}: {loads} loads, {evictions} evictions, {} graph replays",
            engine.backend().graph_replays()
        );
    }
}
