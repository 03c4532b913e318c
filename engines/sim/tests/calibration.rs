//! The calibration fit, on data whose truth is known: raw measurements made
//! from a calibration's curves (with ±1.5 % of deterministic noise) must give
//! that calibration back, within the noise, on shapes and steps the fit never
//! saw; and a correction reproduces the sweep point it was made from.

use std::collections::BTreeMap;

use fuselab_engine::{BatchEntry, BatchShape, ForwardBatch, ModelShape};
use fuselab_sim::raw::{
    DecodePath, OpSample, PolicyRun, RAW_SCHEMA, RawCalibration, RawDevice, StepSample, Timing,
};
use fuselab_sim::{Calibration, Heads, Target, fitting, hardware};

/// Deterministic noise in [-1.5 %, +1.5 %].
fn noise(i: usize) -> f64 {
    let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11;
    1.0 + 0.03 * ((x as f64 / (1u64 << 53) as f64) - 0.5)
}

fn timing(s: f64) -> Timing {
    Timing {
        median_us: s * 1e6,
        p10_us: s * 1e6,
        p90_us: s * 1e6,
        launches: 32,
        repeats: 5,
        host_limited: 0,
    }
}

fn entry(n: u32, start: u32, decode: bool) -> BatchEntry {
    BatchEntry {
        request: u64::from(start) * 131 + u64::from(n),
        start_pos: start,
        n_tokens: n,
        sample: true,
        is_decode: decode,
        ..BatchEntry::default()
    }
}

fn ragged(entries: Vec<BatchEntry>) -> ForwardBatch {
    ForwardBatch {
        entries,
        shape: BatchShape::Ragged,
    }
}

/// Raw measurements priced by `truth`, with noise.
fn synthetic(truth: &Calibration) -> RawCalibration {
    let m = ModelShape::preset("llama3-8b").unwrap();
    let hw = hardware("h200").unwrap();
    let (peak, bw) = (hw.peak_flops, hw.mem_bw);
    let heads = Heads::of(&m, 1);
    let mut i = 0;
    let mut noisy = |t: f64| {
        i += 1;
        t * noise(i)
    };
    let mut ops = Vec::new();
    let tokens = [
        1u32, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384,
    ];
    for name in fuselab_sim::GEMMS {
        let (k, n) = fuselab_sim::gemm_shape(name, &m, 1);
        for &t in &tokens {
            let (f, b) = (
                2.0 * f64::from(t) * k * n,
                2.0 * (k * n + f64::from(t) * (k + n)),
            );
            ops.push(OpSample::Gemm {
                name: name.into(),
                tokens: t,
                k: k as u32,
                n: n as u32,
                accumulate: name == "o" || name == "down",
                time: timing(noisy(truth.gemm[name].time(f, b, peak, bw))),
            });
        }
    }
    for c in [16u32, 64, 256, 1024, 2048, 4096, 8192] {
        for k in [0u32, 512, 2048, 8192, 16384] {
            let ch = [(f64::from(c), f64::from(k))];
            ops.push(OpSample::PrefillAttn {
                chunks: vec![[c, k]],
                tile: "t".into(),
                time: timing(noisy(truth.prefill_attn.time(&ch, heads, peak, bw))),
            });
        }
    }
    for (path, key) in [(DecodePath::Eager, "eager"), (DecodePath::Graph, "graph")] {
        for b in [1u32, 4, 16, 64, 256] {
            for ctx in [128u32, 1024, 4096] {
                let kv = u64::from(b) * u64::from(ctx);
                ops.push(OpSample::DecodeAttn {
                    batch: b,
                    kv_tokens: kv,
                    max_ctx: ctx,
                    path,
                    splits: 1,
                    contexts: "uniform".into(),
                    time: timing(noisy(truth.decode_attn[key].time(
                        f64::from(b),
                        kv as f64 * heads.kv_bytes(),
                        bw,
                    ))),
                });
            }
        }
    }
    for name in fuselab_sim::ELEMENTWISE {
        for t in [1u32, 16, 64, 256, 1024, 4096, 16384] {
            let bytes = fuselab_sim::elementwise_bytes(name, f64::from(t), &m, 1);
            ops.push(OpSample::Elementwise {
                name: name.into(),
                tokens: t,
                bytes,
                time: timing(noisy(truth.elementwise[name].time(bytes, bw))),
            });
        }
    }
    let mut grid = Vec::new();
    for b in [1u32, 4, 16, 64, 128, 256, 320] {
        for ctx in [512u32, 2048] {
            grid.push(ragged((0..b).map(|_| entry(1, ctx - 1, true)).collect()));
        }
    }
    for c in [64u32, 256, 1024, 4096] {
        for k in [0u32, 2048] {
            grid.push(ragged(vec![entry(c, k, false)]));
        }
    }
    for b in [8u32, 32, 128] {
        let mut e: Vec<BatchEntry> = (0..b).map(|_| entry(1, 2047, true)).collect();
        e.push(entry(512, 0, false));
        grid.push(ragged(e));
    }
    let mut steps = Vec::new();
    for block in [16u32, 64] {
        for g in &grid {
            let t = Target::on(hw, &m, 1, block);
            let wall: Vec<f64> = (0..3)
                .map(|_| noisy(truth.step_s(g, t, true)) * 1e6)
                .collect();
            steps.push(StepSample::from_batch("grid", g, block, false, wall));
        }
    }
    // A held-out "policy": mixed chunks and decodes of other sizes.
    for b in [3u32, 24, 90] {
        let mut e: Vec<BatchEntry> = (0..b).map(|_| entry(1, 1500, true)).collect();
        e.push(entry(700, 300, false));
        let g = ragged(e);
        let t = Target::on(hw, &m, 1, 64);
        let wall = vec![noisy(truth.step_s(&g, t, true)) * 1e6];
        steps.push(StepSample::from_batch("policy:mixed", &g, 64, false, wall));
    }
    RawCalibration {
        schema: RAW_SCHEMA,
        command: "synthetic".into(),
        date: "2026-12-02T00:00:00Z".into(),
        fuselab_version: "test".into(),
        git_commit: None,
        device: RawDevice {
            name: "NVIDIA H200".into(),
            driver: None,
            cuda_driver_api: "13.0".into(),
            arch: "sm_90a".into(),
            sm_count: 132,
            l2_bytes: 60 << 20,
            memory_bytes: 150_000_000_000,
            read_gbs: 4100.0,
            copy_gbs: 3950.0,
            gemm_tflops: 790.0,
        },
        model: "llama3-8b".into(),
        method: "synthetic".into(),
        ops,
        steps,
        runs: vec![PolicyRun {
            set: "policy:mixed".into(),
            policy: "mixed".into(),
            workload: "synthetic".into(),
            requests: 3,
            completed: 3,
            makespan_s: 0.1,
            steps: 3,
            knobs: BTreeMap::new(),
        }],
        notes: vec![],
    }
}

#[test]
fn a_fit_gives_back_the_calibration_its_data_came_from() {
    // The shipped curves without their corrections: data the curves can fit exactly.
    let mut truth = Calibration::default_h200().clone();
    truth.corrections.clear();
    let raw = synthetic(&truth);
    let cal = fitting::fit(&raw, "synthetic", "now").unwrap();
    let v = &cal.validation;
    for (class, e) in &v.ops_held_out {
        println!(
            "{class}: held-out MAPE {:.2} % over {}",
            e.mape * 100.0,
            e.points
        );
        assert!(e.points > 0 && e.mape < 0.02, "{class}: {e:?}");
    }
    assert_eq!(v.ops_held_out.len(), 5);
    println!("grid {:?}\nsteps {:?}", v.grid_steps, v.steps);
    assert!(v.grid_steps.mape < 0.02, "{:?}", v.grid_steps);
    assert!(v.steps["policy:mixed"].mape < 0.03, "{:?}", v.steps);
    let f = cal.block_factor(64) / truth.block_factor(64);
    assert!((f - 1.0).abs() < 0.05, "block factor {f}");
    assert!(
        (cal.step.gpu_scale / truth.step.gpu_scale - 1.0).abs() < 0.05,
        "{:?} vs {:?}",
        cal.step,
        truth.step
    );
    // Written and read back (to the last digit serde_json keeps); unknown
    // fields are refused by name.
    let text = serde_json::to_string(&cal).unwrap();
    let back = Calibration::parse(&text).unwrap();
    assert_eq!(back.corrections.len(), cal.corrections.len());
    assert!((back.step.gpu_scale / cal.step.gpu_scale - 1.0).abs() < 1e-12);
    let bad = text.replacen("\"gpu_scale\"", "\"gpu_scal\"", 1);
    let e = Calibration::parse(&bad).unwrap_err();
    assert!(e.contains("gpu_scal"), "{e}");
}

#[test]
fn a_fit_refuses_what_it_cannot_fit() {
    let truth = Calibration::default_h200().clone();
    let mut raw = synthetic(&truth);
    raw.device.name = "NVIDIA B300".into();
    let e = fitting::fit(&raw, "x", "now").unwrap_err().to_string();
    assert!(e.contains("B300") && e.contains("h200"), "{e}");
    let mut raw = synthetic(&truth);
    raw.ops.retain(|o| o.class() != "decode_attn");
    let e = fitting::fit(&raw, "x", "now").unwrap_err().to_string();
    assert!(
        e.contains("decode:eager") && e.contains("not --quick"),
        "{e}"
    );
}

#[test]
fn corrections_reproduce_their_points_and_interpolate_between_them() {
    let c = fuselab_sim::Corrections {
        points: vec![(vec![0.0], 0.0), (vec![1.0], 0.2f64.ln()), (vec![2.0], 0.0)],
    };
    assert!((c.factor(&[1.0]) - 0.2).abs() < 1e-12);
    let mid = c.factor(&[0.5]);
    assert!(mid > 0.2 && mid < 1.0, "{mid}");
    assert_eq!(fuselab_sim::Corrections::default().factor(&[3.0]), 1.0);
}
