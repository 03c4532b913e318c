//! Property tests: seeding, clamping and the export round trip hold for any spec.

use fuselab_core::{Arrivals, LengthDist, PrefixSpec, WorkloadSpec};
use fuselab_workloads::{digest, export_jsonl, generate, parse_trace};
use proptest::prelude::*;

fn length_dist() -> impl Strategy<Value = LengthDist> {
    let range = (1u32..5000, 0u32..5000).prop_map(|(min, extra)| (min, min + extra));
    prop_oneof![
        (1u32..10_000).prop_map(|value| LengthDist::Fixed { value }),
        range
            .clone()
            .prop_map(|(min, max)| LengthDist::Uniform { min, max }),
        (range.clone(), -1e4f64..1e5, 0f64..1e4).prop_map(|((min, max), mean, std)| {
            LengthDist::Normal {
                mean,
                std,
                min,
                max,
            }
        }),
        (range, 0.01f64..1e5, 0f64..4.0).prop_map(|((min, max), median, sigma)| {
            LengthDist::Lognormal {
                median,
                sigma,
                min,
                max,
            }
        }),
    ]
}

fn arrivals() -> impl Strategy<Value = Arrivals> {
    prop_oneof![
        (0.001f64..1e4).prop_map(|rate| Arrivals::Poisson { rate }),
        (0.001f64..1e4, 0.01f64..20.0)
            .prop_map(|(rate, burstiness)| Arrivals::Gamma { rate, burstiness }),
        (0.001f64..1e4).prop_map(|rate| Arrivals::Constant { rate }),
        (0.001f64..1e4, 0.001f64..1e4).prop_map(|(start_rate, end_rate)| Arrivals::Ramp {
            start_rate,
            end_rate
        }),
        Just(Arrivals::Burst),
        (1u32..64).prop_map(|clients| Arrivals::ClosedLoop { clients }),
    ]
}

fn spec() -> impl Strategy<Value = WorkloadSpec> {
    (
        1u64..300,
        any::<u64>(),
        length_dist(),
        length_dist(),
        arrivals(),
        proptest::option::of(
            (1u32..16, 1u32..4096).prop_map(|(groups, len)| PrefixSpec { groups, len }),
        ),
    )
        .prop_map(|(n, seed, prompt, output, arrivals, prefix)| WorkloadSpec {
            name: "custom".into(),
            n,
            seed,
            prompt,
            output,
            arrivals,
            prefix,
            trace: None,
            conversation: None,
            lora: None,
        })
}

fn bounds(d: &LengthDist) -> (u32, u32) {
    match *d {
        LengthDist::Fixed { value } => (value, value),
        LengthDist::Uniform { min, max }
        | LengthDist::Normal { min, max, .. }
        | LengthDist::Lognormal { min, max, .. } => (min, max),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn same_seed_same_bytes(s in spec()) {
        let a = export_jsonl(&generate(&s).unwrap());
        let b = export_jsonl(&generate(&s).unwrap());
        prop_assert_eq!(a, b);
    }

    #[test]
    fn different_seed_different_bytes(
        seed in any::<u64>(), n in 20u64..300, a in arrivals(), std in 50f64..1000.0,
    ) {
        let s = WorkloadSpec {
            name: "custom".into(),
            n,
            seed,
            prompt: LengthDist::Normal { mean: 2000.0, std, min: 1, max: 10_000 },
            output: LengthDist::Fixed { value: 1 },
            arrivals: a,
            prefix: None,
            trace: None,
            conversation: None, lora: None,
        };
        let other = WorkloadSpec { seed: seed.wrapping_add(1), ..s.clone() };
        prop_assert_ne!(digest(&generate(&s).unwrap()), digest(&generate(&other).unwrap()));
    }

    #[test]
    fn invariants_hold(s in spec()) {
        let reqs = generate(&s).unwrap();
        prop_assert_eq!(reqs.len() as u64, s.n);
        let (pmin, pmax) = bounds(&s.prompt);
        let (omin, omax) = bounds(&s.output);
        let mut last = 0.0;
        for (i, r) in reqs.iter().enumerate() {
            prop_assert_eq!(r.id, i as u64);
            prop_assert!(r.prompt_len >= pmin && r.prompt_len <= pmax, "prompt {} not in [{pmin}, {pmax}]", r.prompt_len);
            prop_assert!(r.output_len >= omin && r.output_len <= omax, "output {} not in [{omin}, {omax}]", r.output_len);
            prop_assert!(r.arrival_s.is_finite() && r.arrival_s >= last);
            last = r.arrival_s;
            match &s.prefix {
                Some(p) => {
                    prop_assert_eq!(r.prefix_group, Some((i as u32) % p.groups));
                    prop_assert_eq!(r.prefix_len, p.len.min(r.prompt_len));
                }
                None => prop_assert_eq!((r.prefix_group, r.prefix_len), (None, 0)),
            }
        }
        if matches!(s.arrivals, Arrivals::Burst | Arrivals::ClosedLoop { .. }) {
            prop_assert!(reqs.iter().all(|r| r.arrival_s == 0.0));
        }
    }

    #[test]
    fn export_import_export_identity(s in spec()) {
        let reqs = generate(&s).unwrap();
        let bytes = export_jsonl(&reqs);
        let back = parse_trace(std::str::from_utf8(&bytes).unwrap(), "p.jsonl".as_ref()).unwrap();
        prop_assert_eq!(&back, &reqs);
        prop_assert_eq!(export_jsonl(&back), bytes);
    }

    #[test]
    fn changing_arrivals_keeps_lengths(s in spec(), a in arrivals()) {
        let other = WorkloadSpec { arrivals: a, ..s.clone() };
        let x = generate(&s).unwrap();
        let y = generate(&other).unwrap();
        for (p, q) in x.iter().zip(&y) {
            prop_assert_eq!((p.prompt_len, p.output_len), (q.prompt_len, q.output_len));
        }
    }
}
