//! Prefix caching on the simulator: a prefix-sharing workload and the
//! multi-turn preset get a lower TTFT with the cache on than off, a hit rate
//! above 0 with it and exactly 0 without; cached tokens are not prefilled;
//! later turns are sent a think time after the previous turn completed.

use fuselab_core::{PrefixSpec, RequestSpec, RequestStatus};
use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind, SimRun, simulate};
use fuselab_sim::SimBackend;

fn run(specs: &[RequestSpec], kind: PolicyKind, cache: bool) -> (SimRun, f64) {
    let sim = SimBackend::from_names("h200", "llama3-8b", 1).unwrap();
    let policy = PolicyConfig::with_knobs(kind, [format!("prefix_cache={cache}")]).unwrap();
    let mut engine = NativeEngine::new(sim, policy).unwrap();
    let run = simulate(specs, None, &mut engine).unwrap();
    engine.check_drained().unwrap();
    assert!(run.records.iter().all(|r| r.status == RequestStatus::Ok));
    (run, engine.prefix_cache_hit_rate())
}

fn mean_ttft(run: &SimRun) -> f64 {
    let t: Vec<f64> = run
        .records
        .iter()
        .map(|r| r.tokens[0].t - r.t_sent)
        .collect();
    t.iter().sum::<f64>() / t.len() as f64
}

fn compare(specs: &[RequestSpec], what: &str) {
    for kind in [
        PolicyKind::Continuous,
        PolicyKind::Chunked,
        PolicyKind::SplitFuse,
    ] {
        let (on, rate_on) = run(specs, kind, true);
        let (off, rate_off) = run(specs, kind, false);
        let (t_on, t_off) = (mean_ttft(&on), mean_ttft(&off));
        println!(
            "{what} {kind}: mean TTFT {:.2} ms with the cache, {:.2} ms without; hit rate {rate_on:.3}",
            t_on * 1e3,
            t_off * 1e3
        );
        assert!(rate_on > 0.3, "{what} {kind}: hit rate {rate_on}");
        assert_eq!(rate_off, 0.0, "{what} {kind}");
        assert!(t_on < 0.9 * t_off, "{what} {kind}: TTFT {t_on} vs {t_off}");
        // Cached tokens are not prefilled.
        let prefill = |r: &SimRun| {
            r.steps
                .iter()
                .map(|s| u64::from(s.prefill_tokens))
                .sum::<u64>()
        };
        let hits: u64 = on
            .steps
            .iter()
            .map(|s| u64::from(s.prefix_hit_tokens))
            .sum();
        let queried: u64 = on
            .steps
            .iter()
            .map(|s| u64::from(s.prefix_query_tokens))
            .sum();
        assert!((hits as f64 / queried as f64 - rate_on).abs() < 1e-12);
        if on.steps.iter().all(|s| s.preemptions == 0)
            && off.steps.iter().all(|s| s.preemptions == 0)
        {
            assert_eq!(prefill(&on) + hits, prefill(&off), "{what} {kind}");
        }
    }
}

#[test]
fn shared_prefixes_cut_ttft_with_the_cache() {
    let mut spec = fuselab_workloads::preset("fastgen-1200").unwrap();
    spec.n = 300;
    spec.arrivals = fuselab_core::Arrivals::Poisson { rate: 8.0 };
    spec.prefix = Some(PrefixSpec {
        groups: 4,
        len: 1024,
    });
    compare(
        &fuselab_workloads::generate(&spec).unwrap(),
        "prefix groups",
    );
}

#[test]
fn multiturn_chat_cuts_ttft_with_the_cache() {
    let mut spec = fuselab_workloads::preset("multiturn-chat").unwrap();
    spec.n = 400;
    spec.arrivals = fuselab_core::Arrivals::Poisson { rate: 2.0 };
    compare(
        &fuselab_workloads::generate(&spec).unwrap(),
        "multiturn-chat",
    );
}

#[test]
fn a_turn_is_sent_its_think_time_after_the_previous_one_completed() {
    let spec = fuselab_workloads::preset("multiturn-chat").unwrap();
    let specs = fuselab_workloads::generate(&fuselab_core::WorkloadSpec { n: 80, ..spec }).unwrap();
    let (run, _) = run(&specs, PolicyKind::Chunked, true);
    let links = fuselab_core::TurnLinks::of(&specs);
    let mut followed = 0;
    for (i, next) in links.next.iter().enumerate() {
        let Some(j) = *next else { continue };
        let (prev, rec) = (&run.records[i], &run.records[j]);
        assert_eq!((prev.id, rec.id), (specs[i].id, specs[j].id));
        let think = specs[j].conversation.as_ref().unwrap().think_s;
        let due = (prev.t_done.unwrap() + think).max(specs[j].arrival_s);
        assert!(
            (rec.t_sent - due).abs() < 1e-9,
            "turn {j}: sent {} due {due}",
            rec.t_sent
        );
        assert!(rec.t_sent > prev.t_done.unwrap() || think == 0.0);
        followed += 1;
    }
    assert!(followed >= 50, "{followed} follow-up turns");
}
