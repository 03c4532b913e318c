//! Multi-LoRA from the command line: the adapters × Zipf sweep axis on the
//! simulator (its table is a snapshot, virtual time makes it exact), and the
//! refusals: LoRA on cuda, popularity without adapters, a half-given axis.

use std::path::Path;

use assert_cmd::Command;
use predicates::prelude::*;
use predicates::str::contains;

fn fuselab(dir: &Path) -> Command {
    let mut c = Command::cargo_bin("fuselab").expect("the fuselab binary is built");
    c.current_dir(dir);
    c
}

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
fn lora_on_cuda_is_refused_with_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    fuselab(dir.path())
        .args([
            "bench",
            "--engine",
            "cuda",
            "--preset",
            "sharegpt-like",
            "--n",
            "4",
        ])
        .args(["--adapters", "4"])
        .assert()
        .code(2)
        .stderr(contains("multi-LoRA is not supported on cuda yet"));
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
