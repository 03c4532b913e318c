//! The CI regression gate: candidate runs against baseline runs, per metric,
//! with a bootstrap noise model (requests, repeated runs, and a measured
//! run-to-run noise floor for single runs of real-time engines), a verdict
//! per metric, Markdown and JUnit XML output, and a store of named baselines.
//!
//! ```
//! use fuselab_reports::gate::{GateMetric, Better};
//! assert_eq!(GateMetric::parse("TTFT-p99").unwrap(), GateMetric::TtftP99);
//! assert_eq!(GateMetric::OutputThroughput.better(), Better::Higher);
//! assert_eq!(GateMetric::TtftP99.default_threshold(), 0.10);
//! ```

mod baselines;
mod compare;
mod metric;
mod noise;
mod output;
mod samples;

pub use baselines::{baselines_dir, resolve_baseline, run_folders, save_baseline, validate_name};
pub use compare::{
    DEFAULT_FASTGEN_RATE, GateConfig, GateReport, MetricComparison, Verdict, check_compatible,
    compare, verdict,
};
pub use metric::{Better, GateMetric, parse_threshold};
pub use noise::{
    MIN_NOISE_RUNS, NOISE_FILE, NOISE_SCHEMA, NoiseFile, NoiseFloor, is_real_time, load_noise,
    measure_noise, save_noise,
};
