//! The run-to-run noise floor of real-time engines.
//!
//! A bootstrap over the requests of one run sees how much the metrics would
//! move with other requests, not how much they move when the same requests
//! run again: on a real machine the second run differs by CPU frequency,
//! caches, other processes. Two back-to-back runs of identical code can then
//! differ by more than the within-run interval, and a single-run gate raises
//! false alarms. The floor is that missing term: the coefficient of variation
//! of each metric over repeated runs of one configuration, measured once on
//! the machine (`fuselab gate --measure-noise`) and stored beside the
//! baselines as `noise.json`.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use fuselab_core::Slo;
use serde::{Deserialize, Serialize};

use super::compare::{DEFAULT_FASTGEN_RATE, check_compatible};
use super::metric::GateMetric;
use super::samples::RunSamples;
use crate::{Error, Result, RunData};

/// Name of the noise-floor file in the baselines directory.
pub const NOISE_FILE: &str = "noise.json";

/// Version of [`NoiseFile`]'s schema.
pub const NOISE_SCHEMA: u32 = 1;

/// Fewest runs a floor is measured from: the spread of two runs is one number.
pub const MIN_NOISE_RUNS: usize = 3;

/// `noise.json`: one floor per engine, hardware and host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseFile {
    /// [`NOISE_SCHEMA`].
    pub schema_version: u32,
    /// Measured floors; at most one per (engine, hardware, host CPU).
    pub floors: Vec<NoiseFloor>,
}

/// The run-to-run noise of one engine on one machine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoiseFloor {
    /// Engine kind (`cpu`, `cuda`, `null`, …).
    pub engine: String,
    /// The engine's hardware.
    #[serde(default)]
    pub hardware: Option<String>,
    /// The host CPU.
    pub host_cpu: String,
    /// Policy of the measured runs.
    #[serde(default)]
    pub policy: Option<String>,
    /// Workload digest of the measured runs.
    pub workload_digest: String,
    /// Number of runs the floor was measured from.
    pub runs: usize,
    /// When it was measured (Unix seconds).
    #[serde(default)]
    pub measured_unix_s: Option<u64>,
    /// The measured run folders' names.
    #[serde(default)]
    pub sources: Vec<String>,
    /// Run-to-run coefficient of variation (sample sd / mean over the runs)
    /// per metric name; metrics undefined in some run are absent.
    pub cv: BTreeMap<String, f64>,
}

impl NoiseFloor {
    /// Whether the floor was measured on the same engine, hardware and host as `run`.
    pub fn matches(&self, run: &RunData) -> bool {
        let p = &run.summary.provenance;
        self.engine == p.engine.engine
            && self.hardware == p.engine.hardware
            && self.host_cpu == p.host_cpu
    }

    /// The coefficient of variation of `m` (0 when unmeasured).
    pub fn cv_of(&self, m: GateMetric) -> f64 {
        self.cv.get(m.name()).copied().unwrap_or(0.0)
    }
}

/// Whether runs of `engine` are timed by a real clock, so that two runs of
/// the same configuration differ (the simulator and synthetic runs are
/// deterministic for a seed).
pub fn is_real_time(engine: &str) -> bool {
    !matches!(engine, "sim" | "synthetic")
}

/// Point values of every gate metric in one run (all requests once).
pub(crate) fn point_values(samples: &RunSamples) -> [Option<f64>; 13] {
    samples.eval_all(&vec![1; samples.len()])
}

/// Sample coefficient of variation of `values` per metric, `None` where a
/// value is missing or the mean is not positive.
pub(crate) fn cv_per_metric(values: &[[Option<f64>; 13]]) -> [Option<f64>; 13] {
    std::array::from_fn(|j| {
        let v: Option<Vec<f64>> = values.iter().map(|r| r[j]).collect();
        let v = v?;
        if v.len() < 2 {
            return None;
        }
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        if !(mean > 0.0 && mean.is_finite()) {
            return None;
        }
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
        Some(var.sqrt() / mean)
    })
}

/// Measures the run-to-run noise floor from repeated runs of one
/// configuration (at least [`MIN_NOISE_RUNS`]): same engine, hardware, host,
/// workload, policy and knobs.
///
/// # Errors
/// Too few runs, runs of different configurations, or runs without completed
/// requests; each error names what differs and how to fix it.
pub fn measure_noise(runs: &[RunData]) -> Result<NoiseFloor> {
    if runs.len() < MIN_NOISE_RUNS {
        return Err(Error::invalid(
            "--measure-noise",
            format!(
                "needs at least {MIN_NOISE_RUNS} runs of one configuration, got {}",
                runs.len()
            ),
            "write them with `fuselab bench --repeat 5 --out DIR ...` and pass --candidate DIR",
        ));
    }
    check_compatible(&runs[..1], &runs[1..], false)?;
    let first = &runs[0];
    let p0 = &first.summary.provenance;
    for r in &runs[1..] {
        let p = &r.summary.provenance;
        let differs = if p.workload_digest != p0.workload_digest {
            Some("workload")
        } else if p.engine.policy != p0.engine.policy || p.engine.knobs != p0.engine.knobs {
            Some("policy or knobs")
        } else {
            None
        };
        if let Some(what) = differs {
            return Err(Error::invalid(
                "--measure-noise",
                format!(
                    "runs {} and {} differ in {what}: the floor must come from repeats of one configuration",
                    first.name(),
                    r.name()
                ),
                "pass the runs of one `fuselab bench --repeat N` folder",
            ));
        }
    }
    let slo: Slo = first.summary.metrics.slo.clone();
    let rate = slo.fastgen_rate.unwrap_or(DEFAULT_FASTGEN_RATE);
    let mut values = Vec::with_capacity(runs.len());
    for r in runs {
        let s = RunSamples::new(&r.requests, &slo, rate);
        if !s.has_latencies() {
            return Err(Error::Empty {
                side: "--measure-noise".into(),
                problem: format!("run {} has no completed request with tokens", r.name()),
            });
        }
        values.push(point_values(&s));
    }
    let cv = cv_per_metric(&values);
    Ok(NoiseFloor {
        engine: p0.engine.engine.clone(),
        hardware: p0.engine.hardware.clone(),
        host_cpu: p0.host_cpu.clone(),
        policy: p0.engine.policy.clone(),
        workload_digest: p0.workload_digest.clone(),
        runs: runs.len(),
        measured_unix_s: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs()),
        sources: runs.iter().map(|r| r.name().to_string()).collect(),
        cv: GateMetric::ALL
            .iter()
            .zip(cv)
            .filter_map(|(m, v)| Some((m.name().to_string(), v?)))
            .collect(),
    })
}

/// Reads `dir/noise.json`; an absent file is an empty set of floors.
pub fn load_noise(dir: &Path) -> Result<NoiseFile> {
    let path = dir.join(NOISE_FILE);
    let text = match fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(NoiseFile {
                schema_version: NOISE_SCHEMA,
                floors: Vec::new(),
            });
        }
        Err(e) => return Err(Error::io(&path, e)),
    };
    let file: NoiseFile = serde_json::from_str(&text).map_err(|e| {
        Error::invalid(
            path.display().to_string(),
            format!("is not a valid noise floor file: {e}"),
            "re-create it with `fuselab gate --measure-noise --candidate DIR`",
        )
    })?;
    if file.schema_version != NOISE_SCHEMA {
        return Err(Error::invalid(
            path.display().to_string(),
            format!(
                "has schema_version {} but this fuselab reads {NOISE_SCHEMA}",
                file.schema_version
            ),
            "re-measure it with `fuselab gate --measure-noise --candidate DIR`",
        ));
    }
    Ok(file)
}

/// Stores `floor` in `dir/noise.json`, replacing the floor of the same
/// engine, hardware and host. Returns the file's path.
pub fn save_noise(dir: &Path, floor: &NoiseFloor) -> Result<PathBuf> {
    let mut file = load_noise(dir)?;
    file.floors.retain(|f| {
        !(f.engine == floor.engine && f.hardware == floor.hardware && f.host_cpu == floor.host_cpu)
    });
    file.floors.push(floor.clone());
    fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let path = dir.join(NOISE_FILE);
    let tmp = dir.join(format!(".{NOISE_FILE}.tmp"));
    let text = serde_json::to_string_pretty(&file).map_err(|e| {
        Error::invalid(
            "noise floor",
            e.to_string(),
            "this is a bug; please report it",
        )
    })?;
    fs::write(&tmp, text + "\n").map_err(|e| Error::io(&tmp, e))?;
    fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cv_is_sample_sd_over_mean() {
        let mut rows = vec![[None; 13]; 3];
        for (r, v) in rows.iter_mut().zip([1.0, 2.0, 3.0]) {
            r[0] = Some(v);
            r[1] = Some(-v);
        }
        rows[2][2] = Some(1.0);
        let cv = cv_per_metric(&rows);
        assert!((cv[0].unwrap() - 0.5).abs() < 1e-12);
        assert_eq!((cv[1], cv[2]), (None, None));
    }
}
