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

/// The repository root (the shipped calibration and its raw data live under it).
fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn the_shipped_calibration_is_the_fit_of_its_committed_raw_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    let raw = repo().join("engines/sim/calibration/h200/raw");
    let out = dir.path().join("refit.json");
    let assert = common::fuselab(dir.path())
        .args(["calibrate", "--fit"])
        .arg(&raw)
        .arg("--out")
        .arg(&out)
        .assert()
        .success();
    let report = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    println!("{report}");
    let read = |p: &std::path::Path| -> serde_json::Value {
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(p).expect("calibration file"))
                .expect("JSON");
        let src = v["source"].as_object_mut().expect("source");
        src.remove("fitted");
        src.remove("raw");
        v
    };
    let shipped = read(&repo().join("engines/sim/calibration/h200-llama3-8b.json"));
    assert_eq!(
        read(&out),
        shipped,
        "refit differs from the shipped calibration: refit with `fuselab calibrate --fit \
         engines/sim/calibration/h200/raw --out engines/sim/calibration/h200-llama3-8b.json`"
    );
    for section in [
        "Held-out operator shapes",
        "policy:splitfuse (held out)",
        "One long prompt prefilled in chunks",
        "splitfuse-85",
    ] {
        assert!(report.contains(section), "{section} missing:\n{report}");
    }
}

#[test]
fn show_prints_the_shipped_calibration_and_its_scaling() {
    let dir = tempfile::tempdir().expect("temp dir");
    let assert = common::fuselab(dir.path())
        .args([
            "calibrate",
            "--show",
            "--hardware",
            "h200",
            "--model",
            "llama3-8b",
        ])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    insta::assert_snapshot!("calibrate_show_h200", text);
    let assert = common::fuselab(dir.path())
        .args(["calibrate", "--show", "--hardware", "a100-80g"])
        .assert()
        .success();
    let text = String::from_utf8_lossy(&assert.get_output().stdout).into_owned();
    assert!(
        text.contains("a100-80g: the calibration scaled by peaks"),
        "{text}"
    );
    assert!(text.contains("(Vidur)"), "{text}");
    let text = String::from_utf8_lossy(
        &common::fuselab(dir.path())
            .args(["calibrate", "--show", "--hardware", "l40s"])
            .assert()
            .success()
            .get_output()
            .stdout,
    )
    .into_owned();
    assert!(
        text.contains("No published per-operator measurements"),
        "{text}"
    );
}

#[test]
fn bad_calibration_input_exits_2_naming_what_is_wrong() {
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"schema": 1, "hardware": "h200"}"#).unwrap();
    common::fuselab(dir.path())
        .args(["calibrate", "--show", "--calibration"])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("bad.json").and(predicate::str::contains("missing field")),
        );
    common::fuselab(dir.path())
        .args([
            "bench",
            "--engine",
            "sim",
            "--preset",
            "fastgen-1200",
            "--n",
            "4",
            "--calibration",
        ])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(
            predicate::str::contains("--calibration")
                .and(predicate::str::contains("calibrate --fit")),
        );
    common::fuselab(dir.path())
        .args(["bench", "--engine", "cpu", "--calibration"])
        .arg(&bad)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--calibration").and(predicate::str::contains("sim")));
    common::fuselab(dir.path())
        .args(["calibrate", "--fit"])
        .arg(dir.path().join("nothing"))
        .args(["--out", "x.json"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("cannot read"));
    common::fuselab(dir.path())
        .args(["calibrate", "--show", "--hardware", "b200"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("valid hardware profiles"));
}

#[test]
fn bench_on_the_simulator_prices_with_a_given_calibration() {
    let dir = tempfile::tempdir().expect("temp dir");
    let shipped = repo().join("engines/sim/calibration/h200-llama3-8b.json");
    let mut slow: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&shipped).unwrap()).unwrap();
    let scale = slow["step"]["gpu_scale"].as_f64().unwrap();
    slow["step"]["gpu_scale"] = serde_json::json!(2.0 * scale);
    let slow_file = dir.path().join("slow.json");
    std::fs::write(&slow_file, serde_json::to_string(&slow).unwrap()).unwrap();
    let run = |name: &str, extra: &[&std::ffi::OsStr]| -> f64 {
        let out = dir.path().join(name);
        common::fuselab(dir.path())
            .args([
                "bench", "--engine", "sim", "--preset", "h200-64", "--n", "16", "--out",
            ])
            .arg(&out)
            .args(extra)
            .assert()
            .success();
        let s: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap())
                .unwrap();
        s["metrics"]["window_s"].as_f64().unwrap()
    };
    let default = run("default", &[]);
    let same = run("same", &["--calibration".as_ref(), shipped.as_os_str()]);
    let slower = run("slow", &["--calibration".as_ref(), slow_file.as_os_str()]);
    assert_eq!(default, same, "the default is the shipped calibration");
    assert!(slower > 1.6 * default, "{slower} vs {default}");
}
