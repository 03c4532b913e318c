//! The metrics the gate compares, their direction and default thresholds.

use std::fmt;

use crate::{Error, Result};

/// Which direction is better for a metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Better {
    /// Latencies: smaller is better.
    Lower,
    /// Throughputs: larger is better.
    Higher,
}

/// A metric the gate compares.
///
/// | metric | better | default threshold |
/// |---|---|---|
/// | `ttft_p50`, `tpot_p50`, `itl_p50`, `e2e_p50` | lower | 5% |
/// | `ttft_p99`, `tpot_p99`, `itl_p99`, `e2e_p99` | lower | 10% (tails are noisier) |
/// | `request_throughput`, `output_throughput`, `total_throughput` | higher | 3% |
/// | `goodput`, `effective_throughput` | higher | 5% |
///
/// A threshold is the relative change that counts as noise (criterion's
/// noise threshold): a metric regresses only when the whole confidence
/// interval of its relative change lies beyond it in the bad direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GateMetric {
    /// Median time to first token.
    TtftP50,
    /// 99th-percentile time to first token.
    TtftP99,
    /// Median time per output token.
    TpotP50,
    /// 99th-percentile time per output token.
    TpotP99,
    /// Median inter-token latency (pooled over all gaps).
    ItlP50,
    /// 99th-percentile inter-token latency.
    ItlP99,
    /// Median end-to-end latency.
    E2eP50,
    /// 99th-percentile end-to-end latency.
    E2eP99,
    /// Completed requests per second.
    RequestThroughput,
    /// Output tokens per second.
    OutputThroughput,
    /// Prompt plus output tokens per second.
    TotalThroughput,
    /// Requests meeting the baseline's SLO per second.
    Goodput,
    /// FastGen effective throughput at the baseline's SLA rate (4 tok/s when unset).
    EffectiveThroughput,
}

impl GateMetric {
    /// Every metric, in table order.
    pub const ALL: [GateMetric; 13] = [
        Self::TtftP50,
        Self::TtftP99,
        Self::TpotP50,
        Self::TpotP99,
        Self::ItlP50,
        Self::ItlP99,
        Self::E2eP50,
        Self::E2eP99,
        Self::RequestThroughput,
        Self::OutputThroughput,
        Self::TotalThroughput,
        Self::Goodput,
        Self::EffectiveThroughput,
    ];

    /// The name used on the command line and in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Self::TtftP50 => "ttft_p50",
            Self::TtftP99 => "ttft_p99",
            Self::TpotP50 => "tpot_p50",
            Self::TpotP99 => "tpot_p99",
            Self::ItlP50 => "itl_p50",
            Self::ItlP99 => "itl_p99",
            Self::E2eP50 => "e2e_p50",
            Self::E2eP99 => "e2e_p99",
            Self::RequestThroughput => "request_throughput",
            Self::OutputThroughput => "output_throughput",
            Self::TotalThroughput => "total_throughput",
            Self::Goodput => "goodput",
            Self::EffectiveThroughput => "effective_throughput",
        }
    }

    /// The unit values are shown in (latencies are stored in seconds and shown in ms).
    pub fn unit(self) -> &'static str {
        match self {
            Self::RequestThroughput | Self::Goodput | Self::EffectiveThroughput => "req/s",
            Self::OutputThroughput | Self::TotalThroughput => "tok/s",
            _ => "ms",
        }
    }

    /// Factor from the stored value to the shown unit.
    pub fn display_scale(self) -> f64 {
        if self.better() == Better::Lower {
            1e3
        } else {
            1.0
        }
    }

    /// Which direction is better.
    pub fn better(self) -> Better {
        match self {
            Self::RequestThroughput
            | Self::OutputThroughput
            | Self::TotalThroughput
            | Self::Goodput
            | Self::EffectiveThroughput => Better::Higher,
            _ => Better::Lower,
        }
    }

    /// The documented default threshold, as a fraction (0.05 = 5%).
    pub fn default_threshold(self) -> f64 {
        match self {
            Self::TtftP99 | Self::TpotP99 | Self::ItlP99 | Self::E2eP99 => 0.10,
            Self::RequestThroughput | Self::OutputThroughput | Self::TotalThroughput => 0.03,
            _ => 0.05,
        }
    }

    /// Parses a name (case-insensitive, `-` or `_`); the error lists every valid name.
    pub fn parse(s: &str) -> Result<Self> {
        let norm = s.trim().to_ascii_lowercase().replace('-', "_");
        Self::ALL
            .into_iter()
            .find(|m| m.name() == norm)
            .ok_or_else(|| {
                Error::invalid(
                    "--threshold",
                    format!("unknown metric {s:?}"),
                    format!("valid metrics: {}", Self::valid_names()),
                )
            })
    }

    /// Every valid name, comma-separated.
    pub fn valid_names() -> String {
        Self::ALL.map(Self::name).join(", ")
    }
}

impl fmt::Display for GateMetric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Parses `metric=5%` or `metric=0.05` into a metric and a fraction.
///
/// # Example
/// ```
/// use fuselab_reports::gate::{GateMetric, parse_threshold};
/// assert_eq!(parse_threshold("ttft_p99=7.5%").unwrap(), (GateMetric::TtftP99, 0.075));
/// assert_eq!(parse_threshold("goodput=0.02").unwrap(), (GateMetric::Goodput, 0.02));
/// assert!(parse_threshold("latency=5%").unwrap_err().to_string().contains("ttft_p50"));
/// ```
pub fn parse_threshold(s: &str) -> Result<(GateMetric, f64)> {
    let Some((name, value)) = s.split_once('=') else {
        return Err(Error::invalid(
            "--threshold",
            format!("{s:?} has no '='"),
            "write METRIC=PERCENT, e.g. ttft_p99=10%",
        ));
    };
    let metric = GateMetric::parse(name)?;
    let v = value.trim();
    let (num, percent) = match v.strip_suffix('%') {
        Some(n) => (n.trim(), true),
        None => (v, false),
    };
    let parsed: f64 = num.parse().map_err(|_| {
        Error::invalid(
            "--threshold",
            format!("{value:?} for {metric} is not a number"),
            "write a percentage like 5% or a fraction like 0.05",
        )
    })?;
    let frac = if percent { parsed / 100.0 } else { parsed };
    if !frac.is_finite() || frac < 0.0 {
        return Err(Error::invalid(
            "--threshold",
            format!("{value:?} for {metric} is negative or not finite"),
            "give a threshold ≥ 0, e.g. 5%",
        ));
    }
    if !percent && frac > 1.0 {
        return Err(Error::invalid(
            "--threshold",
            format!("{value:?} for {metric} is more than 100% as a fraction"),
            format!("write it with a percent sign ({value}%) or as a fraction ≤ 1"),
        ));
    }
    Ok((metric, frac))
}
