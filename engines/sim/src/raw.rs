//! The raw measurements a calibration is fitted to, as `fuselab calibrate
//! --engine cuda` writes them (`RAW_DIR/calibration-raw.json`).
//!
//! One file holds everything measured on the GPU in one command:
//! * [`OpSample`]s: per-operator kernel times at the model's shapes (the
//!   method of `fuselab kernels`: N ≥ 32 back-to-back launches between two
//!   CUDA events, median of R samples);
//! * [`StepSample`]s: whole engine steps through the real CUDA backend, each
//!   with its batch's composition (per sequence: new tokens, prior context,
//!   decode or prompt, sampled) and its measured wall time (the backend
//!   synchronises before returning, so this is the step's real duration).
//!   [`StepSample::set`] says where a step came from: `grid` (a synthetic grid
//!   of mixed batches built for the fit), `policy:NAME` (the engine serving a
//!   workload with that policy) or `chunked:BUDGET` (one long prompt prefilled
//!   in chunks of that budget);
//! * [`PolicyRun`]s: the whole runs the `policy:` and `chunked:` steps came from.
//!
//! The Poisson serving runs live beside it as ordinary run folders
//! (`RAW_DIR/serving/NAME/`), with the trace each one replayed.
//!
//! Every struct refuses unknown fields, so a file from a different schema
//! fails loudly, naming the field.

use std::collections::BTreeMap;
use std::path::Path;

use fuselab_engine::{BatchEntry, BatchShape, ForwardBatch};
use serde::{Deserialize, Serialize};

/// Version of the raw format.
pub const RAW_SCHEMA: u32 = 2;
/// File name of the raw measurements inside a raw folder.
pub const RAW_FILE: &str = "calibration-raw.json";

/// Everything one `fuselab calibrate --engine cuda` measured.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCalibration {
    /// [`RAW_SCHEMA`].
    pub schema: u32,
    /// The command line that measured it.
    pub command: String,
    /// UTC time of the measurement (RFC 3339).
    pub date: String,
    /// fuselab's version.
    pub fuselab_version: String,
    /// Git commit of the build, where known.
    pub git_commit: Option<String>,
    /// The GPU.
    pub device: RawDevice,
    /// Model shape name (`llama3-8b`).
    pub model: String,
    /// How kernels and steps were timed, in words.
    pub method: String,
    /// Per-operator kernel times.
    pub ops: Vec<OpSample>,
    /// Whole engine steps.
    pub steps: Vec<StepSample>,
    /// The runs the `policy:` and `chunked:` steps came from.
    pub runs: Vec<PolicyRun>,
    /// Anything worth knowing about the measurement.
    #[serde(default)]
    pub notes: Vec<String>,
}

/// The GPU a calibration was measured on.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDevice {
    /// Marketing name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Kernel driver release, e.g. `580.159.04` (where readable).
    pub driver: Option<String>,
    /// CUDA driver API version, e.g. `13.0`.
    pub cuda_driver_api: String,
    /// The kernels' NVRTC target, e.g. `sm_90a`.
    pub arch: String,
    /// Streaming multiprocessors.
    pub sm_count: u32,
    /// L2 cache, bytes.
    pub l2_bytes: u64,
    /// Device memory, bytes.
    pub memory_bytes: u64,
    /// Measured read-only probe, GB/s.
    pub read_gbs: f64,
    /// Measured device copy (read + write), GB/s.
    pub copy_gbs: f64,
    /// Measured cuBLAS bf16 GEMM 8192³, TFLOP/s.
    pub gemm_tflops: f64,
}

/// Per-launch time of a kernel, microseconds.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Timing {
    /// Median over the samples.
    pub median_us: f64,
    /// 10th percentile.
    pub p10_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// Back-to-back launches per sample.
    pub launches: u32,
    /// Samples.
    pub repeats: u32,
    /// Samples in which the host may have kept the GPU waiting.
    pub host_limited: u32,
}

/// How a decode-attention kernel was launched.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecodePath {
    /// Split for the batch's longest context (eager steps: mixed, > 256 rows).
    Eager,
    /// Balanced split of the captured decode graphs (decode-only steps).
    Graph,
}

/// One timed operator shape.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum OpSample {
    /// A GEMM `[tokens, k] · [k, n]`.
    Gemm {
        /// `qkv`, `o`, `gate_up`, `down` or `lm_head`.
        name: String,
        /// Token rows.
        tokens: u32,
        /// Input features.
        k: u32,
        /// Output features.
        n: u32,
        /// Added into the output (β = 1).
        accumulate: bool,
        /// Per-launch time.
        time: Timing,
    },
    /// One ragged prefill-attention call (one layer).
    PrefillAttn {
        /// `[new tokens, prior context]` per sequence.
        chunks: Vec<[u32; 2]>,
        /// The kernel tile the engine picks for this call.
        tile: String,
        /// Per-launch time.
        time: Timing,
    },
    /// One decode-attention call (one layer).
    DecodeAttn {
        /// Sequences.
        batch: u32,
        /// Keys attended, summed over the sequences.
        kv_tokens: u64,
        /// Longest context.
        max_ctx: u32,
        /// How it was launched.
        path: DecodePath,
        /// Splits per sequence.
        splits: u32,
        /// `uniform`, or how the mixed contexts were drawn.
        contexts: String,
        /// Per-launch time.
        time: Timing,
    },
    /// An element-wise or gather kernel.
    Elementwise {
        /// `rms_norm`, `qkv_rope_cache`, `silu_mul`, `embed_gather`, `gather_rows`, `argmax`.
        name: String,
        /// Token rows.
        tokens: u32,
        /// Bytes read plus written.
        bytes: f64,
        /// Per-launch time.
        time: Timing,
    },
}

impl OpSample {
    /// The operator class, for errors per class: `gemm`, `lm_head`,
    /// `prefill_attn`, `decode_attn` or `elementwise`.
    pub fn class(&self) -> &'static str {
        match self {
            OpSample::Gemm { name, .. } if name == "lm_head" => "lm_head",
            OpSample::Gemm { .. } => "gemm",
            OpSample::PrefillAttn { .. } => "prefill_attn",
            OpSample::DecodeAttn { .. } => "decode_attn",
            OpSample::Elementwise { .. } => "elementwise",
        }
    }

    /// The measured time.
    pub fn time(&self) -> &Timing {
        match self {
            OpSample::Gemm { time, .. }
            | OpSample::PrefillAttn { time, .. }
            | OpSample::DecodeAttn { time, .. }
            | OpSample::Elementwise { time, .. } => time,
        }
    }
}

/// One sequence's part of a measured step.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepEntry {
    /// Tokens computed.
    pub n: u32,
    /// Tokens already in the KV cache before them.
    pub start: u32,
    /// A decode (its token was generated), not a prompt chunk.
    pub decode: bool,
    /// A token is sampled from its last position.
    pub sample: bool,
}

/// One engine step measured through the CUDA backend.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepSample {
    /// Where the step came from: `grid`, `policy:NAME` or `chunked:BUDGET`.
    pub set: String,
    /// `[rows, row_len]` of a padded batch (static, prepack); `None`: ragged.
    pub padded: Option<[u32; 2]>,
    /// The batch, in the scheduler's entry order.
    pub entries: Vec<StepEntry>,
    /// KV block size of the cache the step ran on, tokens.
    pub block: u32,
    /// Replayed from a CUDA graph (a decode-only step of at most 256 rows).
    pub graph: bool,
    /// Wall time of the backend's forward, microseconds, once per repeat
    /// (grid steps are repeated; a served step ran once).
    pub wall_us: Vec<f64>,
}

impl StepSample {
    /// The step's composition from a [`ForwardBatch`].
    pub fn from_batch(
        set: &str,
        batch: &ForwardBatch,
        block: u32,
        graph: bool,
        wall_us: Vec<f64>,
    ) -> Self {
        Self {
            set: set.to_string(),
            padded: match batch.shape {
                BatchShape::Ragged => None,
                BatchShape::Padded { rows, row_len } => Some([rows, row_len]),
            },
            entries: batch
                .entries
                .iter()
                .map(|e| StepEntry {
                    n: e.n_tokens,
                    start: e.start_pos,
                    decode: e.is_decode,
                    sample: e.sample,
                })
                .collect(),
            block,
            graph,
            wall_us,
        }
    }

    /// The batch as the simulator prices it (no token ids or block tables).
    pub fn batch(&self) -> ForwardBatch {
        ForwardBatch {
            entries: self
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| BatchEntry {
                    request: i as u64,
                    start_pos: e.start,
                    n_tokens: e.n,
                    sample: e.sample,
                    is_decode: e.decode,
                    ..BatchEntry::default()
                })
                .collect(),
            shape: match self.padded {
                None => BatchShape::Ragged,
                Some([rows, row_len]) => BatchShape::Padded { rows, row_len },
            },
        }
    }

    /// The median of the repeats, seconds (`None` without one).
    pub fn wall_s(&self) -> Option<f64> {
        let mut v: Vec<f64> = self
            .wall_us
            .iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let m = if n % 2 == 1 {
            v[n / 2]
        } else {
            0.5 * (v[n / 2 - 1] + v[n / 2])
        };
        Some(m * 1e-6)
    }
}

/// A whole run of the engine whose steps are in [`RawCalibration::steps`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRun {
    /// The [`StepSample::set`] of its steps.
    pub set: String,
    /// Scheduling policy.
    pub policy: String,
    /// What it served, e.g. `h200-64` or `one 8191-token prompt`.
    pub workload: String,
    /// Requests served.
    pub requests: u32,
    /// Requests that completed.
    pub completed: u32,
    /// Sum of the step times (the run on a clock advanced by measured steps), seconds.
    pub makespan_s: f64,
    /// Steps.
    pub steps: u32,
    /// Every knob in effect.
    pub knobs: BTreeMap<String, serde_json::Value>,
}

/// Errors reading a raw folder.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RawError {
    /// The file could not be read.
    #[error(
        "cannot read {path}: {source}; give the folder `fuselab calibrate --engine cuda --out DIR` wrote"
    )]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not a raw calibration of this schema.
    #[error("{path}: {message}")]
    Parse {
        /// The file.
        path: String,
        /// What is wrong (serde names the field).
        message: String,
    },
}

impl RawCalibration {
    /// Reads `dir/`[`RAW_FILE`] (or `dir` itself when it is a file).
    ///
    /// # Errors
    /// [`RawError::Io`] when it cannot be read; [`RawError::Parse`] naming the
    /// bad field, or a schema other than [`RAW_SCHEMA`].
    pub fn read(dir: &Path) -> Result<Self, RawError> {
        let path = if dir.is_dir() {
            dir.join(RAW_FILE)
        } else {
            dir.to_path_buf()
        };
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(&path).map_err(|source| RawError::Io {
            path: shown.clone(),
            source,
        })?;
        let raw: RawCalibration = serde_json::from_str(&text).map_err(|e| RawError::Parse {
            path: shown.clone(),
            message: e.to_string(),
        })?;
        if raw.schema != RAW_SCHEMA {
            return Err(RawError::Parse {
                path: shown,
                message: format!(
                    "field `schema` is {} but this fuselab reads schema {RAW_SCHEMA}; re-measure with this build",
                    raw.schema
                ),
            });
        }
        Ok(raw)
    }

    /// The steps of one set.
    pub fn steps_of<'a>(&'a self, set: &'a str) -> impl Iterator<Item = &'a StepSample> + 'a {
        self.steps.iter().filter(move |s| s.set == set)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timing(us: f64) -> Timing {
        Timing {
            median_us: us,
            // Whole numbers: serde_json's float parsing is not exactly round-trip.
            p10_us: us - 1.0,
            p90_us: us + 2.0,
            launches: 32,
            repeats: 5,
            host_limited: 0,
        }
    }

    fn sample() -> RawCalibration {
        RawCalibration {
            schema: RAW_SCHEMA,
            command: "fuselab calibrate --engine cuda".into(),
            date: "2026-12-01T00:00:00Z".into(),
            fuselab_version: "0.1.0".into(),
            git_commit: None,
            device: RawDevice {
                name: "NVIDIA H200".into(),
                driver: Some("580.159.04".into()),
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
            method: "test".into(),
            ops: vec![
                OpSample::Gemm {
                    name: "qkv".into(),
                    tokens: 64,
                    k: 4096,
                    n: 6144,
                    accumulate: false,
                    time: timing(20.0),
                },
                OpSample::PrefillAttn {
                    chunks: vec![[512, 2048]],
                    tile: "wg128x2".into(),
                    time: timing(90.0),
                },
                OpSample::DecodeAttn {
                    batch: 64,
                    kv_tokens: 64 * 4096,
                    max_ctx: 4096,
                    path: DecodePath::Graph,
                    splits: 2,
                    contexts: "uniform".into(),
                    time: timing(260.0),
                },
                OpSample::Elementwise {
                    name: "rms_norm".into(),
                    tokens: 64,
                    bytes: 1e6,
                    time: timing(3.0),
                },
            ],
            steps: vec![StepSample {
                set: "grid".into(),
                padded: Some([2, 8]),
                entries: vec![
                    StepEntry {
                        n: 5,
                        start: 0,
                        decode: false,
                        sample: true,
                    },
                    StepEntry {
                        n: 8,
                        start: 0,
                        decode: false,
                        sample: true,
                    },
                ],
                block: 16,
                graph: false,
                wall_us: vec![3000.0, 2000.0, 2500.0, 2600.0],
            }],
            runs: vec![],
            notes: vec![],
        }
    }

    #[test]
    fn raw_files_round_trip_and_refuse_unknown_fields() {
        let raw = sample();
        let dir = std::env::temp_dir().join(format!("fuselab-raw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let text = serde_json::to_string_pretty(&raw).unwrap();
        std::fs::write(dir.join(RAW_FILE), &text).unwrap();
        assert_eq!(RawCalibration::read(&dir).unwrap(), raw);
        assert_eq!(raw.ops[0].class(), "gemm");
        assert_eq!(raw.ops[2].class(), "decode_attn");
        assert_eq!(raw.ops[1].time().median_us, 90.0);

        let bad = text.replacen("\"tile\"", "\"tiles\"", 1);
        std::fs::write(dir.join(RAW_FILE), bad).unwrap();
        let e = RawCalibration::read(&dir).unwrap_err().to_string();
        assert!(e.contains("tiles") && e.contains(RAW_FILE), "{e}");

        let old = text.replacen("\"schema\": 2", "\"schema\": 7", 1);
        std::fs::write(dir.join(RAW_FILE), old).unwrap();
        let e = RawCalibration::read(&dir).unwrap_err().to_string();
        assert!(e.contains("schema") && e.contains('7'), "{e}");

        let e = RawCalibration::read(&dir.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot read") && e.contains("--out DIR"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_step_sample_gives_back_its_batch_and_median() {
        let s = &sample().steps[0];
        let b = s.batch();
        assert_eq!(
            b.shape,
            BatchShape::Padded {
                rows: 2,
                row_len: 8
            }
        );
        assert_eq!(b.real_tokens(), 13);
        assert_eq!(b.padding_tokens(), 3);
        let again = StepSample::from_batch("grid", &b, 16, false, s.wall_us.clone());
        assert_eq!(&again, s);
        assert!((s.wall_s().unwrap() - 2550e-6).abs() < 1e-12);
        let none = StepSample {
            wall_us: vec![],
            ..s.clone()
        };
        assert_eq!(none.wall_s(), None);
    }
}
