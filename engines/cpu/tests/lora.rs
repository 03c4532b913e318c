//! LoRA numerics through the real engine: batched multi-LoRA (every token
//! with its own adapter, adapters swapped through too few slots) equals each
//! request run alone on the model with its adapter merged into the weights;
//! MeteoRA with a one-hot top-1 gate equals serving that adapter exactly.

use std::collections::BTreeMap;

use fuselab_core::{RequestId, RequestSpec};
use fuselab_cpu::{CpuBackend, CpuOptions, LoraWeights, ModelShape};
use fuselab_engine::{LoraConfig, LoraMode, NativeEngine, PolicyConfig, PolicyKind};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

type Logits = BTreeMap<(RequestId, u32), Vec<f32>>;

const ADAPTERS: u32 = 4;
const RANK: u32 = 8;

fn requests(adapters: &[Option<u32>]) -> Vec<RequestSpec> {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
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

fn options() -> CpuOptions {
    CpuOptions {
        keep_logits: true,
        ..CpuOptions::default()
    }
}

/// Runs `reqs` together; returns every sampled logits vector and the most
/// distinct adapters in one step and the evictions.
fn run(backend: CpuBackend, knobs: &[&str], reqs: &[RequestSpec]) -> (Logits, u32, u32) {
    let policy = PolicyConfig::with_knobs(PolicyKind::Chunked, knobs.iter().copied()).unwrap();
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    for r in reqs {
        engine.submit(r, 0.0);
    }
    let (mut now, mut logits, mut most, mut evictions) = (0.0, Logits::new(), 0, 0);
    while engine.has_work() {
        let r = engine.step(now).unwrap();
        assert!(
            r.finished.iter().all(|f| f.error.is_none()),
            "{:?}",
            r.finished
        );
        now += r.duration_s();
        if let Some(rec) = &r.record {
            most = most.max(rec.adapters_in_batch);
            evictions += rec.adapter_evictions;
        }
        for l in engine.backend_mut().take_logits() {
            logits.insert((l.request, l.pos), l.logits);
        }
    }
    engine.check_drained().unwrap();
    (logits, most, evictions)
}

fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(1f32, |m, x| m.max(x.abs()));
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
        / scale
}

fn slots_config(slots: u32) -> LoraConfig {
    LoraConfig {
        adapters: ADAPTERS,
        rank: RANK,
        mode: LoraMode::Slots { slots },
    }
}

#[test]
fn batched_multi_lora_equals_each_request_alone_with_its_adapter_merged() {
    let adapters = [Some(0), Some(1), None, Some(2), Some(1), Some(3), Some(0)];
    let reqs = requests(&adapters);
    let base = CpuBackend::random(ModelShape::tiny(), 7)
        .unwrap()
        .with_options(options());
    let lora = LoraWeights::random(base.model().config(), slots_config(2), 11).unwrap();
    let batched = base.with_lora_weights(lora.clone());
    let (together, most, evictions) = run(batched, &["budget=48", "max_loras=2"], &reqs);
    assert_eq!(most, 2, "steps should mix two adapters");
    assert!(evictions > 0, "two slots for four adapters must evict");

    let model = CpuBackend::random(ModelShape::tiny(), 7)
        .unwrap()
        .model()
        .clone();
    let mut checked = 0;
    for r in &reqs {
        let m = match r.adapter {
            Some(a) => model.merged(&lora, a).unwrap(),
            None => model.clone(),
        };
        let mut solo = r.clone();
        solo.adapter = None;
        let (alone, _, _) = run(CpuBackend::new(m, options()), &[], &[solo]);
        assert_eq!(alone.len(), r.output_len as usize);
        for (key, want) in &alone {
            let got = &together[key];
            let d = max_rel_diff(got, want);
            assert!(
                d < 1e-4,
                "request {} pos {}: relative difference {d}",
                key.0,
                key.1
            );
            checked += 1;
        }
    }
    assert_eq!(checked, together.len());

    // The adapters matter: the base model's logits are far from adapter 0's.
    let r0 = &reqs[0];
    let (plain, _, _) = run(
        CpuBackend::new(model, options()),
        &[],
        &[RequestSpec {
            adapter: None,
            ..r0.clone()
        }],
    );
    let key = (0, r0.prompt_len - 1);
    assert!(max_rel_diff(&plain[&key], &together[&key]) > 1e-2);
}

#[test]
fn meteora_top1_with_a_one_hot_gate_reproduces_the_single_adapter_exactly() {
    let reqs = requests(&[None; 5]);
    let model = CpuBackend::random(ModelShape::tiny(), 3)
        .unwrap()
        .model()
        .clone();
    let meteora = LoraConfig {
        adapters: ADAPTERS,
        rank: RANK,
        mode: LoraMode::Meteora { top_k: 1 },
    };
    let mut gated = LoraWeights::random(model.config(), meteora, 17).unwrap();
    gated.set_one_hot_gate(2).unwrap();
    let backend = CpuBackend::new(model.clone(), options()).with_lora_weights(gated);
    let (mixed, _, _) = run(backend, &["budget=32"], &reqs);

    let single = LoraWeights::random(model.config(), slots_config(1), 17).unwrap();
    let backend = CpuBackend::new(model.clone(), options()).with_lora_weights(single);
    let on_two: Vec<RequestSpec> = reqs
        .iter()
        .map(|r| RequestSpec {
            adapter: Some(2),
            ..r.clone()
        })
        .collect();
    let (served, _, _) = run(backend, &["budget=32", "max_loras=1"], &on_two);
    assert_eq!(mixed.len(), served.len());
    assert_eq!(mixed, served, "bit-exact equality expected");

    // A learned top-2 gate mixes adapters: different logits.
    let top2 = LoraConfig {
        mode: LoraMode::Meteora { top_k: 2 },
        ..meteora
    };
    let backend = CpuBackend::new(model, options())
        .with_lora(top2, 17)
        .unwrap();
    let (learned, _, _) = run(backend, &["budget=32"], &reqs);
    let key = (0, reqs[0].prompt_len - 1);
    assert!(max_rel_diff(&learned[&key], &served[&key]) > 1e-3);
}

#[test]
fn bad_lora_configs_and_unknown_adapters_are_refused() {
    let model = CpuBackend::tiny(1).unwrap().model().clone();
    let e = LoraWeights::random(
        model.config(),
        LoraConfig {
            adapters: 2,
            rank: 4,
            mode: LoraMode::Meteora { top_k: 3 },
        },
        1,
    )
    .unwrap_err();
    assert!(e.to_string().contains("top-k 3"), "{e}");
    let lora = LoraWeights::random(model.config(), slots_config(1), 1).unwrap();
    assert!(model.merged(&lora, ADAPTERS).is_err());
    let mut not_gated = lora.clone();
    assert!(not_gated.set_one_hot_gate(0).is_err());
}
