//! LoRA pricing: kernels, adapter loads, memory, and their effect end to end.

use fuselab_core::{LoraSpec, Popularity};
use fuselab_engine::{
    AdapterStep, BatchEntry, BatchShape, ForwardBatch, LoraConfig, LoraMode, NativeEngine,
    PolicyConfig, PolicyKind, adapter_params, simulate,
};
use fuselab_sim::SimBackend;

fn decode_batch(b: u32) -> ForwardBatch {
    ForwardBatch {
        entries: (0..b)
            .map(|i| BatchEntry {
                request: u64::from(i),
                start_pos: 1024,
                n_tokens: 1,
                sample: true,
                is_decode: true,
                ..BatchEntry::default()
            })
            .collect(),
        shape: BatchShape::Ragged,
    }
}

fn sim(adapters: u32, rank: u32, mode: LoraMode) -> SimBackend {
    SimBackend::from_names("h200", "llama3-8b", 1)
        .unwrap()
        .with_lora(LoraConfig {
            adapters,
            rank,
            mode,
        })
        .unwrap()
}

fn step(adapters: impl IntoIterator<Item = Option<u32>>, loads: Vec<u32>) -> AdapterStep {
    AdapterStep {
        entries: adapters.into_iter().collect(),
        loads,
        evictions: Vec::new(),
    }
}

#[test]
fn adapter_loads_follow_the_host_bandwidth_model() {
    let s16 = sim(64, 16, LoraMode::Slots { slots: 8 });
    let s32 = sim(64, 32, LoraMode::Slots { slots: 8 });
    let m = s16.model().clone();
    // llama3-8b, rank 16 over qkv/o/gate_up/down: 16 · 69 632 · 32 parameters, bf16.
    assert_eq!(adapter_params(&m, 16), 16 * 69_632 * 32);
    assert_eq!(s16.adapter_bytes(), 2.0 * 35_651_584.0);
    let per_byte = 1.0 / (0.8 * 64e9);
    let fixed = 2.0 * 4.0 * 32.0 * 5e-6;
    assert!((s16.adapter_load_s() - (s16.adapter_bytes() * per_byte + fixed)).abs() < 1e-12);
    assert!(
        (s32.adapter_load_s() - s16.adapter_load_s() - s16.adapter_bytes() * per_byte).abs()
            < 1e-12
    );
    // Two loads cost two load times on top of the same step.
    let b = decode_batch(4);
    let none = s16.step_cost_with_adapters(&b, &step([Some(0); 4], vec![]));
    let two = s16.step_cost_with_adapters(&b, &step([Some(0); 4], vec![1, 2]));
    assert!((two.total_s() - none.total_s() - 2.0 * s16.adapter_load_s()).abs() < 1e-12);
    assert_eq!(none.adapter_load_s, 0.0);
}

#[test]
fn lora_kernels_cost_more_with_more_distinct_adapters_and_nothing_without() {
    let s = sim(64, 16, LoraMode::Slots { slots: 64 });
    let b = decode_batch(64);
    let base = s.step_cost(&b);
    let plain = s.step_cost_with_adapters(&b, &step([None; 64], vec![]));
    assert_eq!(plain, base);
    let one = s.step_cost_with_adapters(&b, &step([Some(3); 64], vec![]));
    let many = s.step_cost_with_adapters(&b, &step((0..64).map(Some), vec![]));
    assert!(
        one.lora_s > 0.0 && many.lora_s > one.lora_s,
        "{one:?} {many:?}"
    );
    // Decode LoRA is bandwidth bound: 64 distinct rank-16 adapters read ≥ 64 · 71 MB.
    assert!(
        many.lora_s > 64.0 * s.adapter_bytes() / 4.8e12,
        "{}",
        many.lora_s
    );
    // MeteoRA runs a gate and top-k adapters on every token: dearer than one adapter.
    let meteora = sim(64, 16, LoraMode::Meteora { top_k: 2 });
    let m = meteora.step_cost_with_adapters(&b, &AdapterStep::default());
    assert!(m.lora_s > one.lora_s && m.adapter_load_s == 0.0, "{m:?}");
}

#[test]
fn resident_adapters_come_off_the_kv_budget_and_bad_configs_are_refused() {
    use fuselab_engine::Backend;
    let plain = SimBackend::from_names("h200", "llama3-8b", 1).unwrap();
    let slots = sim(512, 16, LoraMode::Slots { slots: 16 });
    let meteora = sim(512, 16, LoraMode::Meteora { top_k: 1 });
    let d = |b: &SimBackend| plain.kv_budget_bytes() - b.kv_budget_bytes();
    assert!((d(&slots) as f64 - 16.0 * slots.adapter_bytes()).abs() < 2.0);
    assert!((d(&meteora) as f64 - 512.0 * meteora.adapter_bytes()).abs() < 2.0);
    assert_eq!(slots.lora_adapters(), 512);
    assert_eq!(meteora.lora_adapters(), 0);
    let base = SimBackend::from_names("h200", "llama3-8b", 1).unwrap();
    let e = base
        .clone()
        .with_lora(LoraConfig {
            adapters: 4,
            rank: 16,
            mode: LoraMode::Meteora { top_k: 5 },
        })
        .unwrap_err();
    assert!(e.to_string().contains("--meteora-top-k"), "{e}");
    let e = base
        .with_lora(LoraConfig {
            adapters: 8192,
            rank: 64,
            mode: LoraMode::Meteora { top_k: 1 },
        })
        .unwrap_err();
    assert!(e.to_string().contains("no memory for the KV cache"), "{e}");
}

fn throughput(adapters: u32, s: f64, slots: u32) -> (f64, u64) {
    let mut spec = fuselab_workloads::preset("fastgen-1200").unwrap();
    spec.n = 300;
    spec.arrivals = fuselab_core::Arrivals::Burst;
    spec.lora = Some(LoraSpec {
        adapters,
        rank: 16,
        popularity: Popularity::Zipf { s },
    });
    let specs = fuselab_workloads::generate(&spec).unwrap();
    let backend = sim(adapters, 16, LoraMode::Slots { slots });
    let policy =
        PolicyConfig::with_knobs(PolicyKind::Chunked, [format!("max_loras={slots}")]).unwrap();
    let mut engine = NativeEngine::new(backend, policy).unwrap();
    let run = simulate(&specs, None, &mut engine).unwrap();
    let loads = run.steps.iter().map(|s| u64::from(s.adapter_loads)).sum();
    let tokens: u64 = specs.iter().map(|r| u64::from(r.output_len)).sum();
    (tokens as f64 / run.makespan_s(), loads)
}

#[test]
fn many_uniform_adapters_in_few_slots_cost_throughput_and_skew_wins_it_back() {
    let (few, few_loads) = throughput(4, 0.0, 8);
    let (many, many_loads) = throughput(256, 0.0, 8);
    let (skewed, skewed_loads) = throughput(256, 1.1, 8);
    assert_eq!(few_loads, 4);
    assert!(many_loads > few_loads && skewed_loads < many_loads);
    println!(
        "tok/s: 4 adapters {few:.0}, 256 uniform {many:.0}, 256 zipf 1.1 {skewed:.0}; loads {few_loads} {many_loads} {skewed_loads}"
    );
    assert!(many < 0.9 * few, "{few} {many}");
    assert!(skewed > many, "{skewed} {many}");
}
