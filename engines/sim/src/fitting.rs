//! Fits a [`Calibration`] to the raw measurements of `fuselab calibrate
//! --engine cuda` ([`RawCalibration`]) and validates it on what the fit never
//! saw.
//!
//! * **Operator curves**: each operator's sweep (a GEMM, prefill attention,
//!   each decode path, each element-wise kernel) is split in the order it was
//!   measured: every third shape is held out, the curve is fitted to the rest
//!   by minimising the squared log error (Nelder–Mead), and what it misses at
//!   the fitted shapes becomes its [`Corrections`].
//! * **Step overhead**: on the `grid` steps of 16-token blocks, a weighted
//!   linear least-squares fit of `measured = gpu_scale · Σ kernels + graph_s |
//!   eager_s + per_entry_s · entries` (weights `1/measured²`: relative errors).
//! * **Block factors**: for the `grid` steps of every other block size, the
//!   factor on attention time that minimises their squared log error.
//! * **Validation**: the held-out shapes per operator class, every `policy:`
//!   and `chunked:` step (the schedulers' own batches, priced as the simulator
//!   would price them), and one long prompt per chunk budget. The Poisson
//!   serving runs are compared by the caller (they need the engine).

use std::collections::BTreeMap;

use fuselab_engine::ModelShape;

use crate::calib::{
    CALIBRATION_SCHEMA, Calibration, ChunkedCheck, Corrections, DECODE_PATHS, DecodeAttnCurve,
    ElementwiseCurve, ErrorStat, GEMMS, GemmCurve, Heads, PrefillAttnCurve, Source, StepOverhead,
    Target, Validation, decode_features, decode_key, elementwise_features, elementwise_key,
    gemm_key, gemm_work, prefill_features, rows_features,
};
use crate::fit::nelder_mead;
use crate::hardware::{HARDWARE, Hardware};
use crate::raw::{DecodePath, OpSample, RawCalibration, StepSample};

/// The block size of the operator sweep's caches (block factor 1).
pub const SWEEP_BLOCK: u32 = 16;

/// Errors of a fit.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FitError {
    /// The raw file cannot be fitted (what is missing, and how to get it).
    #[error("{0}")]
    Raw(String),
}

fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

fn logit(p: f64) -> f64 {
    (p / (1.0 - p)).ln()
}

fn log_loss(pairs: impl Iterator<Item = (f64, f64)>) -> f64 {
    pairs
        .map(|(m, p)| (p.max(1e-15).ln() - m.ln()).powi(2))
        .sum()
}

/// The hardware profile of a measured device name.
pub fn profile_of(device: &str) -> Option<&'static Hardware> {
    let d = device.to_ascii_lowercase();
    let name = if d.contains("h200") {
        "h200"
    } else if d.contains("h100") {
        "h100-sxm"
    } else if d.contains("a100") {
        "a100-80g"
    } else if d.contains("l40s") {
        "l40s"
    } else {
        return None;
    };
    HARDWARE.iter().find(|h| h.name == name)
}

/// Whether the `i`-th shape of an operator's sweep is held out.
pub fn held_out(i: usize) -> bool {
    i % 3 == 1
}

/// The operator samples, keyed by curve, each with its held-out flag.
fn split_ops(raw: &RawCalibration) -> BTreeMap<String, Vec<(&OpSample, bool)>> {
    let mut by: BTreeMap<String, Vec<(&OpSample, bool)>> = BTreeMap::new();
    for op in &raw.ops {
        let key = match op {
            OpSample::Gemm { name, .. } => format!("gemm:{name}"),
            OpSample::PrefillAttn { .. } => "prefill_attn".into(),
            OpSample::DecodeAttn { path, .. } => decode_key(path_key(*path)).into(),
            OpSample::Elementwise { name, .. } => format!("elementwise:{name}"),
        };
        let v = by.entry(key).or_default();
        let i = v.len();
        v.push((op, held_out(i)));
    }
    by
}

/// What one curve predicts for one sample.
struct Fitted<'a> {
    cal: &'a Calibration,
    heads: Heads,
    peak: f64,
    bw: f64,
}

impl Fitted<'_> {
    fn op_s(&self, op: &OpSample) -> f64 {
        let (peak, bw) = (self.peak, self.bw);
        match op {
            OpSample::Gemm {
                name, tokens, k, n, ..
            } => self.cal.gemm_s(
                name,
                f64::from(*tokens),
                f64::from(*k),
                f64::from(*n),
                peak,
                bw,
            ),
            OpSample::PrefillAttn { chunks, .. } => {
                self.cal
                    .prefill_s(&chunk_pairs(chunks), self.heads, peak, bw)
            }
            OpSample::DecodeAttn {
                batch,
                kv_tokens,
                path,
                ..
            } => self.cal.decode_s(
                path_key(*path),
                f64::from(*batch),
                *kv_tokens as f64,
                self.heads,
                bw,
                self.resident(*kv_tokens as f64 * self.heads.kv_bytes()),
            ),
            OpSample::Elementwise {
                name,
                tokens,
                bytes,
                ..
            } => self.cal.elementwise_s(name, f64::from(*tokens), *bytes, bw),
        }
    }
}

impl Fitted<'_> {
    fn resident(&self, bytes: f64) -> bool {
        bytes < self.cal.l2_bytes as f64
    }

    /// The correction features of a sample.
    fn features(&self, op: &OpSample) -> Vec<f64> {
        match op {
            OpSample::Gemm { tokens, .. } => rows_features(f64::from(*tokens)),
            OpSample::Elementwise { tokens, bytes, .. } => {
                elementwise_features(f64::from(*tokens), self.resident(*bytes))
            }
            OpSample::PrefillAttn { chunks, .. } => prefill_features(&chunk_pairs(chunks)),
            OpSample::DecodeAttn {
                batch, kv_tokens, ..
            } => decode_features(
                f64::from(*batch),
                *kv_tokens as f64,
                self.resident(*kv_tokens as f64 * self.heads.kv_bytes()),
            ),
        }
    }
}

fn chunk_pairs(chunks: &[[u32; 2]]) -> Vec<(f64, f64)> {
    chunks
        .iter()
        .map(|&[c, k]| (f64::from(c), f64::from(k)))
        .collect()
}

fn path_key(path: DecodePath) -> &'static str {
    match path {
        DecodePath::Eager => "eager",
        DecodePath::Graph => "graph",
    }
}

fn measured_s(op: &OpSample) -> f64 {
    op.time().median_us * 1e-6
}

fn fit_gemm(samples: &[&OpSample], peak: f64, bw: f64) -> GemmCurve {
    let pts: Vec<(f64, f64, f64)> = samples
        .iter()
        .filter_map(|o| match o {
            OpSample::Gemm { tokens, k, n, .. } => {
                let (f, b) = gemm_work(f64::from(*tokens), f64::from(*k), f64::from(*n));
                Some((f, b, measured_s(o)))
            }
            _ => None,
        })
        .collect();
    let curve = |x: &[f64]| GemmCurve {
        eta_c: sigmoid(x[0]),
        eta_m: sigmoid(x[1]),
        floor_s: x[2].exp(),
        p: 1.0 + x[3].exp(),
    };
    let obj = |x: &[f64]| {
        let c = curve(x);
        log_loss(pts.iter().map(|&(f, b, m)| (m, c.time(f, b, peak, bw))))
    };
    curve(&nelder_mead(
        &obj,
        &[logit(0.75), logit(0.8), 5e-6f64.ln(), 1.0],
        1.0,
        1500,
        4,
    ))
}

fn fit_prefill(samples: &[&OpSample], heads: Heads, peak: f64, bw: f64) -> PrefillAttnCurve {
    let pts: Vec<(Vec<(f64, f64)>, f64)> = samples
        .iter()
        .filter_map(|o| match o {
            OpSample::PrefillAttn { chunks, .. } => Some((
                chunks
                    .iter()
                    .map(|&[c, k]| (f64::from(c), f64::from(k)))
                    .collect(),
                measured_s(o),
            )),
            _ => None,
        })
        .collect();
    let curve = |x: &[f64]| PrefillAttnCurve {
        eta_causal: sigmoid(x[0]),
        eta_prefix: sigmoid(x[1]),
        q_half: x[2].exp(),
        eta_m: sigmoid(x[3]),
        floor_s: x[4].exp(),
        p: 1.0 + x[5].exp(),
    };
    let obj = |x: &[f64]| {
        let c = curve(x);
        log_loss(pts.iter().map(|(ch, m)| (*m, c.time(ch, heads, peak, bw))))
    };
    curve(&nelder_mead(
        &obj,
        &[
            logit(0.4),
            logit(0.5),
            256f64.ln(),
            logit(0.7),
            5e-6f64.ln(),
            1.0,
        ],
        1.0,
        2500,
        5,
    ))
}

fn fit_decode(samples: &[&OpSample], heads: Heads, bw: f64) -> DecodeAttnCurve {
    let pts: Vec<(f64, f64, f64)> = samples
        .iter()
        .filter_map(|o| match o {
            OpSample::DecodeAttn {
                batch, kv_tokens, ..
            } => Some((
                f64::from(*batch),
                *kv_tokens as f64 * heads.kv_bytes(),
                measured_s(o),
            )),
            _ => None,
        })
        .collect();
    let curve = |x: &[f64]| DecodeAttnCurve {
        eta_m: sigmoid(x[0]),
        batch_half: x[1].exp(),
        per_row_s: x[2].exp(),
        floor_s: x[3].exp(),
    };
    let obj = |x: &[f64]| {
        let c = curve(x);
        log_loss(pts.iter().map(|&(b, by, m)| (m, c.time(b, by, bw))))
    };
    curve(&nelder_mead(
        &obj,
        &[logit(0.8), 0.0, 1e-8f64.ln(), 5e-6f64.ln()],
        1.0,
        1500,
        4,
    ))
}

fn fit_elementwise(samples: &[&OpSample], bw: f64) -> ElementwiseCurve {
    let pts: Vec<(f64, f64)> = samples
        .iter()
        .filter_map(|o| match o {
            OpSample::Elementwise { bytes, .. } => Some((*bytes, measured_s(o))),
            _ => None,
        })
        .collect();
    let curve = |x: &[f64]| ElementwiseCurve {
        eta_m: sigmoid(x[0]),
        floor_s: x[1].exp(),
        p: 1.0 + x[2].exp(),
    };
    let obj = |x: &[f64]| {
        let c = curve(x);
        log_loss(pts.iter().map(|&(by, m)| (m, c.time(by, bw))))
    };
    curve(&nelder_mead(
        &obj,
        &[logit(0.7), 3e-6f64.ln(), 0.0],
        1.0,
        1200,
        3,
    ))
}

/// Solves the `n × n` system `a·x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Option<Vec<f64>> {
    let n = b.len();
    for col in 0..n {
        let piv = (col..n).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[piv][col].abs() < 1e-30 {
            return None;
        }
        a.swap(col, piv);
        b.swap(col, piv);
        let (top, rest) = a.split_at_mut(col + 1);
        let pivot = &top[col];
        for (r, row) in rest.iter_mut().enumerate() {
            let f = row[col] / pivot[col];
            for (x, p) in row[col..].iter_mut().zip(&pivot[col..]) {
                *x -= f * p;
            }
            b[col + 1 + r] -= f * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for r in (0..n).rev() {
        let s: f64 = (r + 1..n).map(|c| a[r][c] * x[c]).sum();
        x[r] = (b[r] - s) / a[r][r];
    }
    Some(x)
}

/// Weighted least squares of `measured = x · features` (weights `1/measured²`:
/// relative errors), with every coefficient but the first (the kernels'
/// scale) kept non-negative: a host cost cannot be negative. A coefficient
/// that comes out negative is fixed at 0 and the rest refitted.
fn nonnegative_host_costs(rows: &[([f64; 4], f64)]) -> Option<[f64; 4]> {
    let mut active: Vec<usize> = (0..4).collect();
    loop {
        let n = active.len();
        let mut ata = vec![vec![0.0; n]; n];
        let mut atb = vec![0.0; n];
        for (x, m) in rows {
            let w = 1.0 / (m * m);
            for (i, &a) in active.iter().enumerate() {
                for (j, &b) in active.iter().enumerate() {
                    ata[i][j] += w * x[a] * x[b];
                }
                atb[i] += w * x[a] * m;
            }
        }
        let sol = solve(ata, atb)?;
        let worst = active
            .iter()
            .zip(&sol)
            .filter(|&(&a, &v)| a > 0 && v < 0.0)
            .min_by(|a, b| a.1.total_cmp(b.1))
            .map(|(&a, _)| a);
        match worst {
            Some(a) => active.retain(|&i| i != a),
            None => {
                let mut out = [0.0; 4];
                for (&a, v) in active.iter().zip(sol) {
                    out[a] = v;
                }
                return Some(out);
            }
        }
    }
}

/// Minimises `f` over `[lo, hi]` by golden-section search.
fn golden(f: impl Fn(f64) -> f64, mut lo: f64, mut hi: f64) -> f64 {
    let g = (5f64.sqrt() - 1.0) / 2.0;
    for _ in 0..80 {
        let (a, b) = (hi - g * (hi - lo), lo + g * (hi - lo));
        if f(a) < f(b) {
            hi = b;
        } else {
            lo = a;
        }
    }
    0.5 * (lo + hi)
}

/// The measured and priced seconds of each step of `steps`.
pub fn step_pairs<'s>(
    cal: &Calibration,
    hw: &Hardware,
    model: &ModelShape,
    steps: impl Iterator<Item = &'s StepSample>,
) -> Vec<(f64, f64)> {
    steps
        .filter_map(|s| {
            let m = s.wall_s()?;
            let p = cal.step_s(&s.batch(), Target::on(hw, model, 1, s.block), true);
            Some((m, p))
        })
        .collect()
}

/// Fits a calibration to `raw` (measured in the folder `raw_dir`) and
/// validates it on the held-out shapes and steps; `now` is the fit's date.
///
/// # Errors
/// [`FitError::Raw`] when the device has no hardware profile, the model is
/// unknown, or an operator or step set the fit needs is missing.
pub fn fit(raw: &RawCalibration, raw_dir: &str, now: &str) -> Result<Calibration, FitError> {
    let hw = profile_of(&raw.device.name).ok_or_else(|| {
        FitError::Raw(format!(
            "device `{}`: no hardware profile matches it (profiles: {}); add one to the simulator's hardware table first",
            raw.device.name,
            HARDWARE.map(|h| h.name).join(", ")
        ))
    })?;
    let model =
        ModelShape::preset(&raw.model).map_err(|e| FitError::Raw(format!("field `model`: {e}")))?;
    let heads = Heads::of(&model, 1);
    let (peak, bw) = (hw.peak_flops, hw.mem_bw);
    let ops = split_ops(raw);
    let train = |key: &str| -> Result<Vec<&OpSample>, FitError> {
        let v: Vec<&OpSample> = ops
            .get(key)
            .map(|v| v.iter().filter(|(_, h)| !h).map(|(o, _)| *o).collect())
            .unwrap_or_default();
        if v.len() < 3 {
            return Err(FitError::Raw(format!(
                "operator `{key}`: {} fitted shapes, at least 3 are needed; re-measure with `fuselab calibrate --engine cuda` (not --quick)",
                v.len()
            )));
        }
        Ok(v)
    };
    let mut gemm = BTreeMap::new();
    for g in GEMMS {
        gemm.insert(g.to_string(), fit_gemm(&train(gemm_key(g))?, peak, bw));
    }
    let prefill_attn = fit_prefill(&train("prefill_attn")?, heads, peak, bw);
    let mut decode_attn = BTreeMap::new();
    for p in DECODE_PATHS {
        decode_attn.insert(p.to_string(), fit_decode(&train(decode_key(p))?, heads, bw));
    }
    let mut elementwise = BTreeMap::new();
    for e in crate::calib::ELEMENTWISE {
        elementwise.insert(
            e.to_string(),
            fit_elementwise(&train(elementwise_key(e))?, bw),
        );
    }
    let mut cal = Calibration {
        schema: CALIBRATION_SCHEMA,
        hardware: hw.name.into(),
        model: raw.model.clone(),
        l2_bytes: raw.device.l2_bytes,
        source: Source {
            device: raw.device.name.clone(),
            driver: raw.device.driver.clone(),
            measured: raw.date.clone(),
            command: raw.command.clone(),
            build: format!(
                "fuselab {} ({})",
                raw.fuselab_version,
                raw.git_commit.as_deref().unwrap_or("commit unknown")
            ),
            raw: raw_dir.into(),
            fitted: now.into(),
            ceilings: [
                raw.device.read_gbs,
                raw.device.copy_gbs,
                raw.device.gemm_tflops,
            ],
        },
        gemm,
        prefill_attn,
        decode_attn,
        block_factor: BTreeMap::new(),
        elementwise,
        corrections: BTreeMap::new(),
        step: StepOverhead {
            gpu_scale: 1.0,
            graph_s: 0.0,
            eager_s: 0.0,
            per_entry_s: 0.0,
        },
        validation: Validation::default(),
    };

    // What each curve misses at its fitted shapes.
    let mut corrections = BTreeMap::new();
    {
        let bare = Fitted {
            cal: &cal,
            heads,
            peak,
            bw,
        };
        for (key, samples) in &ops {
            let points = samples
                .iter()
                .filter(|(_, held)| !held)
                .map(|(op, _)| (bare.features(op), (measured_s(op) / bare.op_s(op)).ln()))
                .collect();
            corrections.insert(key.clone(), Corrections { points });
        }
    }
    cal.corrections = corrections;

    // The step overhead, on the grid of the sweep's block size.
    let grid: Vec<&StepSample> = raw
        .steps_of("grid")
        .filter(|s| s.block == SWEEP_BLOCK && s.wall_s().is_some())
        .collect();
    if grid.len() < 8 {
        return Err(FitError::Raw(format!(
            "{} grid steps at block {SWEEP_BLOCK}; the step overhead needs at least 8 (re-measure without --quick)",
            grid.len()
        )));
    }
    let rows: Vec<([f64; 4], f64)> = grid
        .iter()
        .map(|s| {
            let m = s.wall_s().unwrap_or(0.0);
            let p = cal.price(&s.batch(), Target::on(hw, &model, 1, s.block), true);
            let entries = s.entries.iter().filter(|e| e.n > 0).count() as f64;
            (
                [
                    p.kernels_s(),
                    f64::from(u8::from(p.graph)),
                    f64::from(u8::from(!p.graph)),
                    entries,
                ],
                m,
            )
        })
        .collect();
    let x = nonnegative_host_costs(&rows).ok_or_else(|| {
        FitError::Raw("the grid steps do not determine the step overhead (need graph and eager steps of several sizes)".into())
    })?;
    cal.step = StepOverhead {
        gpu_scale: x[0],
        graph_s: x[1],
        eager_s: x[2],
        per_entry_s: x[3],
    };
    let blocks: std::collections::BTreeSet<u32> = raw
        .steps_of("grid")
        .map(|s| s.block)
        .filter(|&b| b != SWEEP_BLOCK)
        .collect();
    for b in blocks {
        let steps: Vec<&StepSample> = raw.steps_of("grid").filter(|s| s.block == b).collect();
        let loss = |f: f64| {
            let mut c = cal.clone();
            c.block_factor.insert(b, f);
            log_loss(step_pairs(&c, hw, &model, steps.iter().copied()).into_iter())
        };
        cal.block_factor.insert(b, golden(loss, 0.3, 3.0));
    }

    // Validation.
    let f = Fitted {
        cal: &cal,
        heads,
        peak,
        bw,
    };
    let mut held: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let mut fitted: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for samples in ops.values() {
        for &(op, is_held) in samples {
            let into = if is_held { &mut held } else { &mut fitted };
            into.entry(op.class().to_string())
                .or_default()
                .push((measured_s(op), f.op_s(op)));
        }
    }
    let stat = |m: BTreeMap<String, Vec<(f64, f64)>>| {
        m.into_iter()
            .map(|(k, v)| (k, ErrorStat::of(v)))
            .collect::<BTreeMap<_, _>>()
    };
    let mut v = Validation {
        ops_held_out: stat(held),
        ops_fitted: stat(fitted),
        grid_steps: ErrorStat::of(step_pairs(&cal, hw, &model, raw.steps_of("grid"))),
        ..Validation::default()
    };
    for run in &raw.runs {
        let pairs = step_pairs(&cal, hw, &model, raw.steps_of(&run.set));
        if let Some(budget) = run.set.strip_prefix("chunked:") {
            let n = f64::from(run.requests.max(1));
            v.chunked.push(ChunkedCheck {
                budget: budget.parse().unwrap_or(0),
                prompt: raw
                    .steps_of(&run.set)
                    .flat_map(|s| &s.entries)
                    .map(|e| e.start + e.n)
                    .max()
                    .unwrap_or(0),
                measured_s: pairs.iter().map(|p| p.0).sum::<f64>() / n,
                simulated_s: pairs.iter().map(|p| p.1).sum::<f64>() / n,
            });
        }
        v.steps.insert(run.set.clone(), ErrorStat::of(pairs));
    }
    cal.validation = v;
    Ok(cal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn solve_and_golden_find_known_answers() {
        let x = solve(
            vec![
                vec![2.0, 1.0, 0.0],
                vec![1.0, 3.0, 1.0],
                vec![0.0, 1.0, 4.0],
            ],
            vec![3.0, 5.0, 5.0],
        )
        .unwrap();
        for xi in x {
            assert!((xi - 1.0).abs() < 1e-12, "{xi}");
        }
        assert!(solve(vec![vec![1.0, 2.0], vec![2.0, 4.0]], vec![1.0, 2.0]).is_none());
        let m = golden(|x| (x - 1.7).powi(2), 0.3, 3.0);
        assert!((m - 1.7).abs() < 1e-6, "{m}");
    }

    /// The sweep's keys (any name) and the pricing's (its own names) agree.
    #[test]
    fn curve_keys_are_the_same_in_the_fit_and_the_pricing() {
        for g in GEMMS {
            assert_eq!(gemm_key(g), format!("gemm:{g}"));
        }
        for e in crate::calib::ELEMENTWISE {
            assert_eq!(elementwise_key(e), format!("elementwise:{e}"));
        }
        for p in DECODE_PATHS {
            assert_eq!(decode_key(p), format!("decode:{p}"));
        }
    }

    #[test]
    fn every_third_shape_is_held_out_and_devices_map_to_profiles() {
        let h: Vec<bool> = (0..6).map(held_out).collect();
        assert_eq!(h, [false, true, false, false, true, false]);
        assert_eq!(profile_of("NVIDIA H200").unwrap().name, "h200");
        assert_eq!(
            profile_of("NVIDIA H100 80GB HBM3").unwrap().name,
            "h100-sxm"
        );
        assert!(profile_of("NVIDIA B200").is_none());
    }
}
