//! The CUDA attention kernels' configuration spaces on the GPU: configurations
//! across each space are checked against the f64 CPU reference and timed; one
//! too large for shared memory, and one whose output is deliberately corrupted,
//! come back infeasible and the evaluator goes on. Skips (with the reason
//! printed) where there is no GPU, unless `FUSELAB_REQUIRE_GPU=1`.

use fuselab_kernels::cuda::gpu_or_skip;
use fuselab_kernels::tunable::{Evaluation, Fault, TunableKernel};

fn config(pairs: &[(&str, i64)]) -> Vec<(String, i64)> {
    pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
}

fn timed(e: &Evaluation, what: &str) -> f64 {
    match e {
        Evaluation::Timed { ms, per_shape } => {
            for (ms, err) in per_shape {
                println!("{what}: {ms:.4} ms, worst row's relative error {err:.1e}");
            }
            *ms
        }
        other => panic!("{what}: {other:?}"),
    }
}

#[test]
fn prefill_configurations_are_correct_and_bad_ones_infeasible() {
    if !gpu_or_skip("prefill_configurations_are_correct_and_bad_ones_infeasible") {
        return;
    }
    let k = TunableKernel::parse("prefill_attention", "cuda").unwrap();
    let ev = k.evaluator().unwrap();
    if ev
        .gpu()
        .is_some_and(|g| !g.0.contains("H100") && !g.0.contains("H200"))
    {
        fuselab_kernels::cuda::skip(
            "prefill_configurations_are_correct_and_bad_ones_infeasible",
            &"the wgmma prefill kernel needs sm_90a",
        );
        return;
    }
    // Ragged, a chunk after a prefix, and odd lengths over several tiles.
    let shapes: Vec<_> = ["batch=3,q=700,ctx=700", "q=300,ctx=1333", "q=2049,ctx=2049"]
        .iter()
        .map(|s| k.parse_shape(s).unwrap())
        .collect();
    for c in [
        [2, 64, 2, 2, 1],
        [2, 64, 2, 2, 0],
        [1, 64, 3, 1, 1],
        [3, 64, 2, 1, 0],
        [4, 64, 2, 1, 1],
        [2, 128, 2, 1, 1],
        [2, 128, 3, 1, 0],
        [1, 128, 3, 2, 1],
    ] {
        let cfg = config(&[
            ("warpgroups", c[0]),
            ("kv_tile", c[1]),
            ("stages", c[2]),
            ("min_blocks", c[3]),
            ("paired", c[4]),
        ]);
        timed(&ev.evaluate(&cfg, &shapes, None, 7), &format!("{cfg:?}"));
    }
    let too_big = config(&[
        ("warpgroups", 4),
        ("kv_tile", 128),
        ("stages", 4),
        ("min_blocks", 1),
        ("paired", 1),
    ]);
    match ev.evaluate(&too_big, &shapes, None, 7) {
        Evaluation::Invalid(m) => assert!(m.contains("shared memory"), "{m}"),
        other => panic!("{other:?}"),
    }
    let fault = Fault::parse("stages=3").unwrap();
    let cfg = config(&[
        ("warpgroups", 2),
        ("kv_tile", 64),
        ("stages", 3),
        ("min_blocks", 2),
        ("paired", 1),
    ]);
    match ev.evaluate(&cfg, &shapes, Some(&fault), 7) {
        Evaluation::Wrong(m) => assert!(m.contains("relative error"), "{m}"),
        other => panic!("{other:?}"),
    }
    // The campaign goes on: the same evaluator still times a good configuration,
    // and the built-in default path.
    timed(&ev.evaluate(&cfg, &shapes, None, 7), "after the fault");
    timed(&ev.evaluate_default(&shapes, 7), "default path");
    assert!(ev.compiles() >= 8, "{} modules", ev.compiles());
}

#[test]
fn decode_configurations_are_correct_and_bad_ones_infeasible() {
    if !gpu_or_skip("decode_configurations_are_correct_and_bad_ones_infeasible") {
        return;
    }
    let k = TunableKernel::parse("decode_attention", "cuda").unwrap();
    let ev = k.evaluator().unwrap();
    let shapes: Vec<_> = [
        "batch=5,ctx=1000",
        "batch=2,ctx=77,heads=16/16x128",
        "batch=64,ctx=2664",
    ]
    .iter()
    .map(|s| k.parse_shape(s).unwrap())
    .collect();
    for (warps, stages, splits) in [
        (4, 3, 1),
        (2, 2, 3),
        (2, 6, 16),
        (8, 2, 4),
        (8, 3, 1),
        (4, 5, 8),
    ] {
        let cfg = config(&[("warps", warps), ("stages", stages), ("splits", splits)]);
        timed(&ev.evaluate(&cfg, &shapes, None, 3), &format!("{cfg:?}"));
    }
    let too_big = config(&[("warps", 8), ("stages", 6), ("splits", 1)]);
    match ev.evaluate(&too_big, &shapes, None, 3) {
        Evaluation::Invalid(m) => assert!(m.contains("shared memory"), "{m}"),
        other => panic!("{other:?}"),
    }
    let fault = Fault::parse("splits=2").unwrap();
    let cfg = config(&[("warps", 4), ("stages", 3), ("splits", 2)]);
    assert!(matches!(
        ev.evaluate(&cfg, &shapes, Some(&fault), 3),
        Evaluation::Wrong(_)
    ));
    timed(&ev.evaluate_default(&shapes, 3), "default path");
}
