//! Prefix caching and multi-turn workloads through the binary: `fuselab bench`
//! on the simulator reports the prefix-cache hit rate (in the terminal table
//! and in `summary.json`), `fuselab workload` summarises conversations, a
//! multi-turn trace replays, and bad input exits with code 2 and a clear message.

use std::path::Path;

use predicates::prelude::*;
use predicates::str::contains;

mod common;
use common::fuselab;

fn engine_stats(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).expect("summary.json written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("summary.json is JSON");
    v["metrics"]["engine"].clone()
}

/// The value of the `cache hit %` column in the bench table's first data row.
fn hit_column(stdout: &str) -> f64 {
    let mut lines = stdout.lines();
    let header = lines.next().expect("a header");
    assert!(header.ends_with("cache hit %"), "{header}");
    let row = lines.nth(1).expect("a data row");
    row.split_whitespace().last().unwrap().parse().unwrap()
}

#[test]
fn bench_on_the_multiturn_preset_reports_the_hit_rate() {
    let tmp = tempfile::tempdir().unwrap();
    let mut hit = Vec::new();
    for (cache, out) in [("true", "runs/on"), ("false", "runs/off")] {
        let o = fuselab(tmp.path())
            .args(["bench", "--engine", "sim", "--policy", "chunked"])
            .args(["--preset", "multiturn-chat", "--n", "200", "--rate", "1"])
            .args(["--knob", &format!("prefix_cache={cache}"), "--out", out])
            .assert()
            .success()
            .stdout(contains("cache hit %"))
            .get_output()
            .stdout
            .clone();
        let stdout = String::from_utf8(o).unwrap();
        let e = engine_stats(&tmp.path().join(out));
        let rate = e["prefix_cache_hit_rate"].as_f64().unwrap();
        assert!(
            (hit_column(&stdout) - 100.0 * rate).abs() < 0.06,
            "{stdout}"
        );
        assert!(e["prefix_query_tokens"].as_u64().unwrap() > 0);
        hit.push((rate, e["prefix_hit_tokens"].as_u64().unwrap()));
    }
    assert!(hit[0].0 > 0.5, "hit rate with the cache {}", hit[0].0);
    assert_eq!(hit[1], (0.0, 0));
}

#[test]
fn the_knob_is_reported_and_bad_values_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--policy", "continuous"])
        .args(["--preset", "fastgen-1200", "--n", "40", "--out", "runs/c"])
        .args(["--prefix-groups", "2", "--prefix-len", "512"])
        .assert()
        .success();
    let text = std::fs::read_to_string(tmp.path().join("runs/c/summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["provenance"]["engine"]["knobs"]["prefix_cache"], true);
    assert!(
        v["metrics"]["engine"]["prefix_cache_hit_rate"]
            .as_f64()
            .unwrap()
            > 0.2
    );
    let cases: [(&[&str], &str); 4] = [
        (
            &["--policy", "chunked", "--knob", "prefix_cache=maybe"],
            "invalid --knob prefix_cache: `maybe` is not a boolean",
        ),
        (
            &["--policy", "static", "--knob", "prefix_cache=true"],
            "policy static has no knob `prefix_cache`",
        ),
        (&["--turns", "0"], "invalid turns: 0 turns per conversation"),
        (
            &["--turns", "3", "--clients", "4"],
            "invalid turns: multi-turn conversations with closed-loop arrivals",
        ),
    ];
    for (args, want) in cases {
        fuselab(tmp.path())
            .args([
                "bench",
                "--engine",
                "sim",
                "--preset",
                "fastgen-1200",
                "--n",
                "8",
            ])
            .args(args)
            .assert()
            .code(2)
            .stderr(contains(want).and(contains("panicked").not()));
    }
}

#[test]
fn workload_summarises_conversations_and_flags_combine() {
    let tmp = tempfile::tempdir().unwrap();
    fuselab(tmp.path())
        .args(["workload", "--preset", "multiturn-chat"])
        .assert()
        .success()
        .stdout(
            contains("arrivals   poisson 0.5 req/s (conversation starts)")
                .and(contains(
                    "turns      4 per conversation, think time exp(mean 10 s)",
                ))
                .and(contains("conversations   250 (up to 4 turns)"))
                .and(contains("repeat the conversation so far")),
        );
    fuselab(tmp.path())
        .args(["workload", "--preset", "sharegpt-like", "--n", "30"])
        .args(["--turns", "3", "--think-time", "2"])
        .assert()
        .success()
        .stdout(contains("conversations   10 (up to 3 turns)"));
    for (args, want) in [
        (
            &["--preset", "sharegpt-like", "--think-time", "2"][..],
            "invalid --think-time: given, but preset sharegpt-like has no conversations",
        ),
        (
            &["--preset", "multiturn-chat", "--think-time", "-1"][..],
            "invalid think-time: -1 is not a finite number of seconds >= 0",
        ),
    ] {
        fuselab(tmp.path())
            .arg("workload")
            .args(args)
            .assert()
            .code(2)
            .stderr(contains(want));
    }
}

#[test]
fn a_multi_turn_trace_replays_with_cache_hits_and_bad_turns_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let trace = tmp.path().join("chat.jsonl");
    let mut text = String::new();
    for conv in 0..8u64 {
        let (mut context, t0) = (0u32, conv as f64 * 0.5);
        for turn in 0..3u32 {
            let prompt = context + 120;
            text.push_str(&format!(
                "{{\"arrival_s\":{t0},\"prompt_len\":{prompt},\"output_len\":40,\"conversation_id\":{conv},\"turn\":{turn},\"think_s\":1.5}}\n"
            ));
            context = prompt + 40;
        }
    }
    std::fs::write(&trace, &text).unwrap();
    fuselab(tmp.path())
        .args([
            "bench", "--engine", "sim", "--policy", "chunked", "--out", "runs/t",
        ])
        .arg("--trace")
        .arg(&trace)
        .assert()
        .success();
    let e = engine_stats(&tmp.path().join("runs/t"));
    // Turns 1 and 2 of each conversation reuse the full blocks of the one before.
    assert!(e["prefix_cache_hit_rate"].as_f64().unwrap() > 0.4, "{e}");

    std::fs::write(
        &trace,
        "{\"arrival_s\":0,\"prompt_len\":5,\"output_len\":1,\"conversation_id\":1,\"turn\":1}\n",
    )
    .unwrap();
    fuselab(tmp.path())
        .args(["bench", "--engine", "sim", "--trace"])
        .arg(&trace)
        .assert()
        .code(2)
        .stderr(contains(
            "chat.jsonl:1: field `turn`: turn 1 of conversation 1 has no turn 0 in the trace",
        ));
}
