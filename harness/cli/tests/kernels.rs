//! `fuselab kernels`: the no-GPU error path (what CI sees) and the CPU references' run.

use assert_cmd::Command;
use predicates::prelude::*;

fn fuselab() -> Command {
    Command::cargo_bin("fuselab").expect("the fuselab binary is built for tests")
}

#[test]
fn cuda_without_a_driver_says_so_and_exits_2() {
    if fuselab_kernels::cuda::driver_present() {
        use std::io::Write as _;
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED cuda_without_a_driver_says_so_and_exits_2: this machine has a CUDA driver"
        );
        return;
    }
    // Whether or not a GPU is required, `--device cuda` fails: it never skips.
    for required in ["0", "1"] {
        fuselab()
            .args(["kernels", "--device", "cuda", "--quick"])
            .env("FUSELAB_REQUIRE_GPU", required)
            .assert()
            .code(2)
            .stderr(predicate::str::starts_with("error: no CUDA driver found ("));
    }
}

#[test]
fn cpu_quick_prints_a_table_and_writes_json() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("k.json");
    fuselab()
        .args(["kernels", "--device", "cpu", "--quick", "--json"])
        .arg(&json)
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "| prefill_attention | causal S=64",
        ))
        .stdout(predicate::str::contains("GFLOP/s"));
    let text = std::fs::read_to_string(&json).expect("json written");
    let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(v["device_kind"], "cpu");
    assert!(v["command"].as_str().is_some_and(|c| c.contains("kernels")));
    assert!(v["rows"].as_array().is_some_and(|r| r.len() == 6));
}

#[test]
fn bad_baseline_and_bad_config_key_are_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let base = dir.path().join("b.txt");
    std::fs::write(&base, "copy_gbs fast\n").expect("write");
    fuselab()
        .args(["kernels", "--device", "cpu", "--quick", "--baseline"])
        .arg(&base)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--baseline")
                .and(predicate::str::contains("`fast` is not a number")),
        );
    let cfg = dir.path().join("k.toml");
    std::fs::write(&cfg, "device = \"cpu\"\nspeed = 3\n").expect("write");
    fuselab()
        .args(["kernels", "--config"])
        .arg(&cfg)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("speed"));
}

#[test]
fn own_checks_only_is_for_cuda_and_says_so_on_the_cpu() {
    fuselab()
        .args(["kernels", "--device", "cpu", "--quick", "--own-checks-only"])
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--own-checks-only")
                .and(predicate::str::contains("--device cuda")),
        );
}

#[test]
fn check_tiles_names_a_bad_label_and_is_for_cuda() {
    for (tiles, says) in [
        (
            "wg999",
            "`wg999` is not a prefill tile; use labels from r64",
        ),
        ("wg128pp", "applies to --device cuda"),
    ] {
        fuselab()
            .args([
                "kernels",
                "--device",
                "cpu",
                "--quick",
                "--check-tiles",
                tiles,
            ])
            .assert()
            .code(2)
            .stderr(predicate::str::contains("--check-tiles").and(predicate::str::contains(says)));
    }
}
