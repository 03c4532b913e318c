//! Multi-LoRA from the command line: the adapters × Zipf sweep axis on the
//! simulator (its table is a snapshot, virtual time makes it exact), and the
//! refusals: LoRA on the null engine, popularity without adapters, a
//! half-given axis; MeteoRA (`--meteora K`) on cpu and sim, and its bad values.

use std::path::Path;

use predicates::prelude::*;
use predicates::str::contains;

mod common;
use common::fuselab;

#[test]
fn the_adapter_axis_sweeps_adapters_times_zipf_and_tabulates_them() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args([
            "sweep",
            "--engine",
            "sim",
            "--hardware",
            "h200",
            "--model",
            "llama3-8b",
        ])
        .args([
            "--policies",
            "chunked",
            "--knob",
            "max_loras=4",
            "--rates",
            "8",
        ])
        .args([
            "--preset",
            "sharegpt-like",
            "--n",
            "80",
            "--lora-rank",
            "16",
        ])
        .args([
            "--sweep-adapters",
            "1,32",
            "--sweep-zipf",
            "0,1.1",
            "--out",
            "s",
        ])
        .assert()
        .success();
    let table = std::fs::read_to_string(dir.path().join("s/lora.txt")).unwrap();
    for cell in [
        "adapters-1-zipf-0",
        "adapters-32-zipf-0",
        "adapters-1-zipf-1.1",
        "adapters-32-zipf-1.1",
    ] {
        assert!(
            dir.path().join("s").join(cell).join("sweep.json").exists(),
            "{cell}"
        );
    }
    insta::assert_snapshot!(table);
}

#[test]
fn lora_on_cuda_is_accepted_and_on_the_null_engine_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    // Without a GPU the run stops at the driver probe, never at a LoRA refusal.
    fuselab(dir.path())
        .args(["bench", "--engine", "cuda", "--model", "tiny-128"])
        .args(["--preset", "cpu-small", "--n", "2", "--adapters", "4"])
        .args(["--out", "cuda"])
        .assert()
        .stderr(contains("not supported").not());
    fuselab(dir.path())
        .args(["bench", "--engine", "null", "--preset", "sharegpt-like"])
        .args(["--n", "4", "--adapters", "4"])
        .assert()
        .code(2)
        .stderr(contains("--adapters").and(contains("multi-LoRA is not supported on null yet")));
}

fn knobs(dir: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("summary.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["provenance"]["engine"]["knobs"].clone()
}

#[test]
fn meteora_runs_on_cpu_and_sim_and_records_its_top_k() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args(["bench", "--engine", "cpu", "--preset", "cpu-small"])
        .args(["--n", "3", "--rate", "20", "--seed", "5"])
        .args(["--adapters", "4", "--lora-rank", "4", "--meteora", "2"])
        .args(["--out", "cpu"])
        .assert()
        .success();
    let k = knobs(&dir.path().join("cpu"));
    assert_eq!(k["meteora_top_k"], 2, "{k}");
    assert_eq!(k["lora_adapters"], 4, "{k}");
    fuselab(dir.path())
        .args(["bench", "--engine", "sim", "--preset", "sharegpt-like"])
        .args(["--n", "20", "--adapters", "8", "--meteora", "1"])
        .args(["--out", "sim"])
        .assert()
        .success();
    assert_eq!(knobs(&dir.path().join("sim"))["meteora_top_k"], 1);
}

#[test]
fn bad_meteora_values_name_the_flag_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&[&str], &str); 4] = [
        (&["--adapters", "4", "--meteora", "0"], "0 is not a top-k"),
        (
            &["--adapters", "4", "--meteora", "5"],
            "top-k 5 is not between 1 and the 4 adapters",
        ),
        (&["--meteora", "1"], "the workload has no LoRA adapters"),
        (&["--adapters", "4", "--meteora", "x"], "invalid value"),
    ];
    for (args, message) in cases {
        fuselab(dir.path())
            .args(["bench", "--engine", "sim", "--preset", "sharegpt-like"])
            .args(["--n", "4"])
            .args(args)
            .assert()
            .code(2)
            .stderr(contains("--meteora").and(contains(message)));
    }
    fuselab(dir.path())
        .args(["bench", "--engine", "null", "--preset", "sharegpt-like"])
        .args(["--n", "4", "--adapters", "4", "--meteora", "1"])
        .assert()
        .code(2)
        .stderr(contains("--meteora").and(contains("sim, cpu or cuda")));
}

#[test]
fn bad_lora_flags_name_the_flag_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args(["workload", "--preset", "sharegpt-like", "--zipf", "1.1"])
        .assert()
        .code(2)
        .stderr(contains("--zipf").and(contains("--adapters N")));
    fuselab(dir.path())
        .args(["workload", "--preset", "sharegpt-like", "--adapters", "0"])
        .assert()
        .code(2)
        .stderr(contains("lora.adapters"));
    fuselab(dir.path())
        .args([
            "sweep",
            "--engine",
            "sim",
            "--rates",
            "1",
            "--preset",
            "sharegpt-like",
        ])
        .args(["--sweep-zipf", "0,1.1"])
        .assert()
        .code(2)
        .stderr(contains("--sweep-zipf").and(contains("--sweep-adapters")));
    std::fs::write(
        dir.path().join("t.jsonl"),
        "{\"arrival_s\":0,\"prompt_len\":4,\"output_len\":2,\"adaptor\":1}\n",
    )
    .unwrap();
    fuselab(dir.path())
        .args(["workload", "--trace", "t.jsonl"])
        .assert()
        .code(2)
        .stderr(contains("unknown field `adaptor`"));
}
