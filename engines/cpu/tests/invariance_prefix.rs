//! Prefix caching through the real engine: requests that share a prompt
//! prefix (a prefix group, and the turns of a conversation) run with the
//! prefix cache on and off under continuous, chunked and splitfuse batching.
//! With the cache on, later requests start their prefill after the cached
//! blocks and attend over K/V another request computed; every sampled logits
//! vector must equal the one without the cache and the dense oracle's within
//! 1e-4 relative, and the generated tokens must be the same.

mod common;

use std::collections::BTreeMap;

use common::{OracleCache, REL_TOL, Recorder, backends, check_against_oracle, rel_err};
use fuselab_core::{RequestId, RequestSpec, RequestStatus, Turn};
use fuselab_engine::{NativeEngine, PolicyConfig, PolicyKind};

/// `(request, the step before which it is submitted)`; `None`: after the
/// request it follows (turn 0 of its conversation) finished.
fn requests() -> Vec<(RequestSpec, Option<usize>)> {
    let group = |id, prompt_len, output_len| RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len,
        output_len,
        prefix_group: Some(1),
        prefix_len: 24,
        conversation: None,
        adapter: None,
    };
    let turn = |id, turn, prompt_len, output_len| RequestSpec {
        id,
        arrival_s: 0.0,
        prompt_len,
        output_len,
        prefix_group: None,
        prefix_len: 0,
        conversation: Some(Turn {
            id: 3,
            turn,
            think_s: 0.0,
        }),
        adapter: None,
    };
    vec![
        (group(0, 30, 5), Some(0)),
        (group(1, 37, 4), Some(6)),
        (group(2, 26, 6), Some(6)),
        (group(3, 24, 3), Some(9)),
        (turn(4, 0, 21, 6), Some(0)),
        // The conversation so far (21 + 6) and a new message of 9 tokens.
        (turn(5, 1, 36, 5), None),
    ]
}

struct Outcome {
    tokens: BTreeMap<RequestId, Vec<u32>>,
    logits: BTreeMap<(RequestId, u32), Vec<f32>>,
    hit_tokens: u64,
    recorded_hits: usize,
}

fn run(kind: PolicyKind, knobs: &[&str], cache: bool, oracle: &mut OracleCache) -> Outcome {
    let (_, make) = backends()[0];
    let mut knobs: Vec<String> = knobs.iter().map(|k| k.to_string()).collect();
    knobs.push(format!("prefix_cache={cache}"));
    let policy = PolicyConfig::with_knobs(kind, knobs).unwrap();
    let mut engine = NativeEngine::new(Recorder::new(make(64 << 20, 4)), policy).unwrap();
    let vocab = engine.backend().inner.vocab_size();
    let reqs = requests();
    for (r, _) in &reqs {
        let prompt = r.prompt_tokens(vocab);
        engine.backend_mut().prompts.insert(r.id, prompt);
    }
    let mut step = 0usize;
    let mut submitted = vec![false; reqs.len()];
    let mut done = 0;
    while done < reqs.len() {
        for (i, (r, at)) in reqs.iter().enumerate() {
            if !submitted[i] && at.is_some_and(|s| s <= step) {
                engine.submit(r, 0.0);
                submitted[i] = true;
            }
        }
        let report = engine.step(0.0).unwrap();
        for f in &report.finished {
            assert_eq!(f.status, RequestStatus::Ok, "{f:?}");
            done += 1;
            if f.id == 4 {
                engine.submit(&reqs[5].0, 0.0);
                submitted[5] = true;
            }
        }
        engine.check_kv().unwrap();
        step += 1;
        assert!(step < 10_000, "no convergence");
    }
    engine.check_drained().unwrap();
    let hit_tokens = engine.prefix_cache_tokens().1;
    let rec = engine.backend_mut();
    let kept = rec.inner.take_logits();
    let what = format!("{kind} cache {cache}");
    check_against_oracle(rec.inner.as_ref(), oracle, &kept, &rec.tokens, &what);
    Outcome {
        tokens: rec.tokens.clone(),
        logits: kept
            .into_iter()
            .map(|l| ((l.request, l.pos), l.logits))
            .collect(),
        hit_tokens,
        recorded_hits: rec.cache_hits,
    }
}

#[test]
fn cache_hits_give_the_logits_of_a_cold_prefill() {
    let mut oracle = OracleCache::new();
    let cases: [(PolicyKind, &[&str]); 3] = [
        (PolicyKind::Continuous, &["block=4"]),
        (PolicyKind::Chunked, &["block=4", "budget=7"]),
        (PolicyKind::SplitFuse, &["block=8", "budget=16"]),
    ];
    for (kind, knobs) in cases {
        let off = run(kind, knobs, false, &mut oracle);
        let on = run(kind, knobs, true, &mut oracle);
        println!(
            "{kind}: {} prompt tokens from the cache, {} entries started after a hit",
            on.hit_tokens, on.recorded_hits
        );
        assert_eq!((off.hit_tokens, off.recorded_hits), (0, 0), "{kind}");
        // Requests 1, 2 and 3 reuse the group's first 24 tokens (whole blocks,
        // all but the last prompt token), turn 1 the blocks of turn 0's prompt.
        assert!(
            on.hit_tokens >= 3 * 16 + 16,
            "{kind}: {} hit tokens",
            on.hit_tokens
        );
        assert!(
            on.recorded_hits >= 4,
            "{kind}: {} entries started after a hit",
            on.recorded_hits
        );
        assert_eq!(on.tokens, off.tokens, "{kind}: other tokens with the cache");
        assert_eq!(
            on.logits.keys().collect::<Vec<_>>(),
            off.logits.keys().collect::<Vec<_>>(),
            "{kind}"
        );
        for (key, want) in &off.logits {
            let err = rel_err(&on.logits[key], want);
            assert!(
                err <= REL_TOL,
                "{kind}: request {} position {}: relative error {err:e} with the cache",
                key.0,
                key.1
            );
        }
    }
}
