//! The gate's outputs: a Markdown table (for a CI step summary) and JUnit XML.

use std::fmt::Write as _;

use super::compare::{GateReport, MetricComparison, Verdict};
use super::metric::Better;
use crate::escape_html;

/// Escapes a user string for a Markdown table cell: HTML characters become
/// entities and `|` / backticks are backslash-escaped.
fn md_escape(s: &str) -> String {
    escape_html(s)
        .replace('|', "\\|")
        .replace('`', "\\`")
        .replace('\n', " ")
}

fn fmt_value(c: &MetricComparison, v: Option<f64>) -> String {
    match v {
        Some(v) => {
            let v = v * c.metric.display_scale();
            if v.abs() >= 100.0 {
                format!("{v:.1}")
            } else if v.abs() >= 1.0 {
                format!("{v:.2}")
            } else {
                format!("{v:.4}")
            }
        }
        None => "–".into(),
    }
}

fn pct(x: f64) -> String {
    format!("{:+.1}%", 100.0 * x)
}

fn fmt_ci(c: &MetricComparison) -> String {
    match c.ci {
        Some((lo, hi)) => format!("[{}, {}]", pct(lo), pct(hi)),
        None => "–".into(),
    }
}

impl GateReport {
    /// One line for the terminal or a log: `PASS`, `FAIL` (what regressed)
    /// or `INCONCLUSIVE` (what changed beyond its threshold but cannot be
    /// told from run-to-run noise).
    pub fn headline(&self) -> String {
        let reg = self.regressions();
        let unsure = self.inconclusive();
        let names = |v: &[super::metric::GateMetric]| {
            v.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
        };
        if reg.is_empty() && !unsure.is_empty() {
            return format!(
                "INCONCLUSIVE: {} of {} metrics changed beyond their threshold but cannot be told from run-to-run noise: {}",
                unsure.len(),
                self.comparisons.len(),
                names(&unsure)
            );
        }
        if reg.is_empty() {
            let improved = self
                .comparisons
                .iter()
                .filter(|c| c.verdict == Verdict::Improved)
                .count();
            format!(
                "PASS: no regression in {} metrics ({improved} improved)",
                self.comparisons.len()
            )
        } else {
            format!(
                "FAIL: {} of {} metrics regressed: {}",
                reg.len(),
                self.comparisons.len(),
                names(&reg)
            )
        }
    }

    /// A Markdown report: headline, what was compared and how, and one table
    /// row per metric. User strings are escaped.
    pub fn to_markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "## fuselab gate: {}\n", md_escape(&self.headline()));
        let names = |v: &[String]| {
            v.iter()
                .map(|n| format!("`{}`", md_escape(n)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            s,
            "Baseline: {} · candidate: {}  ",
            names(&self.baseline),
            names(&self.candidate)
        );
        let _ = writeln!(
            s,
            "{} bootstrap over requests ({} resamples, {:.0}% intervals){}.\n",
            if self.paired { "Paired" } else { "Unpaired" },
            self.resamples,
            100.0 * self.confidence,
            if self.baseline.len() > 1 || self.candidate.len() > 1 {
                ", runs resampled too"
            } else {
                ""
            }
        );
        for w in &self.warnings {
            let _ = writeln!(s, "> **warning:** {}\n", md_escape(w));
        }
        let _ = writeln!(
            s,
            "| metric | unit | better | baseline | candidate | change | {:.0}% CI | threshold | verdict |",
            100.0 * self.confidence
        );
        let _ = writeln!(s, "|---|---|---|---:|---:|---:|---:|---:|---|");
        for c in &self.comparisons {
            let verdict = match c.verdict {
                Verdict::Regressed => "**regressed**".to_string(),
                Verdict::Inconclusive => "*inconclusive*".to_string(),
                v => v.as_str().to_string(),
            };
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | ±{:.1}% | {} |",
                c.metric.name(),
                c.metric.unit(),
                match c.metric.better() {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                },
                fmt_value(c, c.baseline),
                fmt_value(c, c.candidate),
                c.change.map(pct).unwrap_or_else(|| "–".into()),
                fmt_ci(c),
                100.0 * c.threshold,
                verdict
            );
        }
        s
    }

    /// JUnit XML: one test case per metric, a `<failure>` for each regression,
    /// an `<error>` for each inconclusive metric and `<skipped>` for metrics
    /// undefined on one side.
    pub fn to_junit(&self) -> String {
        let failures = self.regressions().len();
        let errors = self.inconclusive().len();
        let skipped = self
            .comparisons
            .iter()
            .filter(|c| c.verdict == Verdict::NotApplicable)
            .count();
        let suite = format!(
            "fuselab gate: {} vs {}",
            self.candidate.join("+"),
            self.baseline.join("+")
        );
        let mut s = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let _ = writeln!(
            s,
            "<testsuites name=\"fuselab gate\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">",
            self.comparisons.len()
        );
        let _ = writeln!(
            s,
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{errors}\" skipped=\"{skipped}\">",
            escape_html(&suite),
            self.comparisons.len()
        );
        for c in &self.comparisons {
            let detail = format!(
                "{}: baseline {} {unit}, candidate {} {unit}, change {}, {:.0}% CI {}, threshold ±{:.1}%, {} is better",
                c.metric.name(),
                fmt_value(c, c.baseline),
                fmt_value(c, c.candidate),
                c.change.map(pct).unwrap_or_else(|| "–".into()),
                100.0 * self.confidence,
                fmt_ci(c),
                100.0 * c.threshold,
                match c.metric.better() {
                    Better::Lower => "lower",
                    Better::Higher => "higher",
                },
                unit = c.metric.unit(),
            );
            let _ = write!(
                s,
                "    <testcase classname=\"fuselab.gate\" name=\"{}\" time=\"0\"",
                c.metric.name()
            );
            match c.verdict {
                Verdict::Regressed => {
                    let _ = writeln!(
                        s,
                        ">\n      <failure type=\"regression\" message=\"{} regressed\">{}</failure>\n    </testcase>",
                        c.metric.name(),
                        escape_html(&detail)
                    );
                }
                Verdict::Inconclusive => {
                    let _ = writeln!(
                        s,
                        ">\n      <error type=\"inconclusive\" message=\"{} cannot be told from run-to-run noise\">{}</error>\n    </testcase>",
                        c.metric.name(),
                        escape_html(&detail)
                    );
                }
                Verdict::NotApplicable => {
                    let _ = writeln!(
                        s,
                        ">\n      <skipped message=\"{}\"/>\n    </testcase>",
                        escape_html(&detail)
                    );
                }
                _ => {
                    let _ = writeln!(
                        s,
                        ">\n      <system-out>{}: {}</system-out>\n    </testcase>",
                        c.verdict.as_str(),
                        escape_html(&detail)
                    );
                }
            }
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(
                s,
                "    <system-err>{}</system-err>",
                escape_html(&self.warnings.join("\n"))
            );
        }
        s.push_str("  </testsuite>\n</testsuites>\n");
        s
    }
}
