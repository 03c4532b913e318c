//! `fuselab calibrate`: the flags are checked before anything runs, and without
//! a GPU the measurement says so, exits 2 and writes nothing (what CI sees).

mod common;

use predicates::prelude::*;

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("raw");
    common::fuselab(dir.path())
        .args(["calibrate", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--engine cuda"));
    common::fuselab(dir.path())
        .args(["calibrate", "--engine", "cuda"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--out DIR is missing"));
    common::fuselab(dir.path())
        .args(["calibrate", "--engine", "cuda", "--model", "tiny", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--model tiny").and(predicate::str::contains("llama3-8b")),
        );
    common::fuselab(dir.path())
        .args(["calibrate", "--engine", "cuda", "--launches", "8", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--launches 8"));
    assert!(!out.exists());
}

#[test]
fn cuda_without_a_driver_says_so_and_writes_nothing() {
    if fuselab_kernels::cuda::driver_present() {
        eprintln!(
            "SKIPPED cuda_without_a_driver_says_so_and_writes_nothing: this machine has a CUDA driver"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("raw");
    common::fuselab(dir.path())
        .args(["calibrate", "--engine", "cuda", "--quick", "--out"])
        .arg(&out)
        .assert()
        .code(2)
        .stderr(predicate::str::starts_with(
            "error: calibrate --engine cuda needs a GPU: no CUDA driver found (",
        ));
    assert!(!out.exists());
}
