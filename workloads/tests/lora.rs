//! Multi-LoRA workloads: seeded adapter ids, popularity, trace round trips and errors.

use std::path::Path;

use fuselab_workloads::{
    LoraSpec, Popularity, export_jsonl, generate, parse_trace, preset, trace_spec,
};

fn lora(adapters: u32, s: f64) -> LoraSpec {
    LoraSpec {
        adapters,
        rank: 8,
        popularity: Popularity::Zipf { s },
    }
}

#[test]
fn adapters_are_seeded_and_leave_other_columns_alone() {
    let mut spec = preset("fastgen-1200").unwrap();
    spec.n = 500;
    let plain = generate(&spec).unwrap();
    spec.lora = Some(lora(64, 1.1));
    let a = generate(&spec).unwrap();
    assert_eq!(a, generate(&spec).unwrap());
    for (p, r) in plain.iter().zip(&a) {
        assert_eq!(
            (p.prompt_len, p.output_len, p.arrival_s),
            (r.prompt_len, r.output_len, r.arrival_s)
        );
        assert!(r.adapter.is_some_and(|k| k < 64));
        assert_eq!(p.adapter, None);
    }
    let hot = a.iter().filter(|r| r.adapter == Some(0)).count();
    let cold = a.iter().filter(|r| r.adapter == Some(63)).count();
    assert!(
        hot > 10 * cold.max(1),
        "zipf 1.1: adapter 0 {hot}, adapter 63 {cold}"
    );
    spec.seed += 1;
    assert_ne!(
        a.iter().map(|r| r.adapter).collect::<Vec<_>>(),
        generate(&spec)
            .unwrap()
            .iter()
            .map(|r| r.adapter)
            .collect::<Vec<_>>()
    );
}

#[test]
fn conversation_turns_share_an_adapter() {
    let mut spec = preset("fastgen-1200").unwrap();
    spec.n = 60;
    spec.conversation = Some(fuselab_core::ConversationSpec {
        turns: 3,
        think_s: 1.0,
    });
    spec.lora = Some(lora(512, 0.0));
    let rs = generate(&spec).unwrap();
    let mut seen = std::collections::HashMap::new();
    for r in &rs {
        let c = r.conversation.as_ref().unwrap().id;
        assert_eq!(*seen.entry(c).or_insert(r.adapter), r.adapter);
    }
}

#[test]
fn traces_carry_adapters_and_bad_ones_are_named() {
    let mut spec = preset("fastgen-1200").unwrap();
    spec.n = 20;
    spec.lora = Some(lora(8, 1.1));
    let rs = generate(&spec).unwrap();
    let text = String::from_utf8(export_jsonl(&rs)).unwrap();
    assert!(text.lines().all(|l| l.contains("\"adapter\":")));
    let back = parse_trace(&text, Path::new("t.jsonl")).unwrap();
    assert_eq!(back, rs);
    let ts = trace_spec(Path::new("t.jsonl"), &back);
    let max = rs.iter().filter_map(|r| r.adapter).max().unwrap();
    assert_eq!(ts.lora.unwrap().adapters, max + 1);

    let bad = r#"{"arrival_s":0,"prompt_len":4,"output_len":2,"adapter":-1}"#;
    let e = parse_trace(bad, Path::new("t.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("field `adapter`") && e.contains("t.jsonl:1"),
        "{e}"
    );
    let typo = r#"{"arrival_s":0,"prompt_len":4,"output_len":2,"adaptor":1}"#;
    let e = parse_trace(typo, Path::new("t.jsonl"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("unknown field `adaptor`") && e.contains("`adapter`"),
        "{e}"
    );
}

#[test]
fn workload_toml_rejects_unknown_lora_fields() {
    let mut spec = preset("fastgen-1200").unwrap();
    spec.lora = Some(lora(8, 1.1));
    let json = serde_json::to_string(&spec).unwrap();
    let back: fuselab_core::WorkloadSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, spec);
    let typo = json.replace("\"rank\"", "\"rnak\"");
    let e = serde_json::from_str::<fuselab_core::WorkloadSpec>(&typo)
        .unwrap_err()
        .to_string();
    assert!(e.contains("rnak"), "{e}");
}
