//! Comparing tuners on one problem: each tuner's campaign with the same
//! budget and seed, the best configuration each found, and how many
//! evaluations each needed to come within a tolerance of the best any of them
//! found — the grid's best, when the grid enumerated the whole space, is then
//! the true optimum of the space.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::journal::TrialRecord;
use crate::space::Value;
use crate::tuner::{Direction, Problem, Status};

/// One tuner's campaign, as its journal recorded it.
#[derive(Debug, Clone, Copy)]
pub struct TunerRun<'a> {
    /// The tuner's name (`bo`, `grid`, `random`).
    pub tuner: &'a str,
    /// Its trials in journal order.
    pub trials: &'a [TrialRecord],
}

/// What one tuner reached.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TunerRow {
    /// The tuner.
    pub tuner: String,
    /// Trials it evaluated.
    pub evaluations: usize,
    /// Of those, the feasible ones (ran, met every outcome constraint).
    pub feasible: usize,
    /// Its best feasible objective value.
    pub best: Option<f64>,
    /// The knobs of that trial.
    pub best_knobs: Option<BTreeMap<String, Value>>,
    /// Evaluations until its first trial within the tolerance of the
    /// reference (`None`: never).
    pub to_target: Option<usize>,
}

/// Tuners side by side on one problem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Comparison {
    /// The (first) objective.
    pub objective: String,
    /// `minimize` or `maximize`.
    pub direction: String,
    /// The tolerance, relative to the reference (0.02: within 2 %).
    pub within: f64,
    /// The best feasible value any tuner found.
    pub reference: Option<f64>,
    /// The tuner that found it first.
    pub reference_tuner: Option<String>,
    /// Configurations in the space, when it is finite (and small enough to count).
    pub space_size: Option<u64>,
    /// Whether some tuner evaluated every configuration of the space, so the
    /// reference is the space's optimum.
    pub exhaustive: bool,
    /// One row a tuner, in the order given.
    pub rows: Vec<TunerRow>,
}

/// Spaces up to this size are counted for [`Comparison::space_size`].
const COUNT_LIMIT: u64 = 1_000_000;

/// A space this small is evaluated exhaustively for about what a model-based
/// search needs to start (its initial design), so searching it is moot.
pub const TOO_SMALL_TO_SEARCH: u64 = 8;

/// Compares `runs` on `problem` with tolerance `within` (relative).
pub fn compare(problem: &Problem, runs: &[TunerRun<'_>], within: f64) -> Comparison {
    let objective = &problem.objectives[0];
    let sign = objective.direction.sign();
    let better = |a: f64, b: f64| sign * a < sign * b;
    let ok = |t: &&TrialRecord| t.status == Status::Ok && t.objective.is_some_and(f64::is_finite);
    let mut reference: Option<(f64, String)> = None;
    for run in runs {
        for t in run.trials.iter().filter(ok) {
            let v = t.objective.unwrap_or(f64::NAN);
            if reference.as_ref().is_none_or(|(r, _)| better(v, *r)) {
                reference = Some((v, run.tuner.to_string()));
            }
        }
    }
    let reached = |v: f64| {
        reference
            .as_ref()
            .is_some_and(|(r, _)| sign * (v - r) <= within * r.abs())
    };
    let space_size = problem
        .space
        .enumerate(COUNT_LIMIT)
        .map(|all| all.len() as u64);
    let rows: Vec<TunerRow> = runs
        .iter()
        .map(|run| {
            let best = run
                .trials
                .iter()
                .filter(ok)
                .fold(None::<&TrialRecord>, |b, t| match b {
                    Some(b)
                        if !better(
                            t.objective.unwrap_or(f64::NAN),
                            b.objective.unwrap_or(f64::NAN),
                        ) =>
                    {
                        Some(b)
                    }
                    _ => Some(t),
                });
            TunerRow {
                tuner: run.tuner.to_string(),
                evaluations: run.trials.len(),
                feasible: run.trials.iter().filter(ok).count(),
                best: best.and_then(|t| t.objective),
                best_knobs: best.map(|t| t.knobs.clone()),
                to_target: run
                    .trials
                    .iter()
                    .position(|t| ok(&t) && reached(t.objective.unwrap_or(f64::NAN)))
                    .map(|i| i + 1),
            }
        })
        .collect();
    let exhaustive = space_size.is_some_and(|n| {
        runs.iter().any(|r| {
            let distinct: std::collections::BTreeSet<String> = r
                .trials
                .iter()
                .filter(|t| t.status.ran())
                .map(|t| format!("{:?}", t.knobs))
                .collect();
            distinct.len() as u64 >= n
        })
    });
    Comparison {
        objective: objective.name.clone(),
        direction: match objective.direction {
            Direction::Minimize => "minimize",
            Direction::Maximize => "maximize",
        }
        .into(),
        within,
        reference: reference.as_ref().map(|r| r.0),
        reference_tuner: reference.map(|r| r.1),
        space_size,
        exhaustive,
        rows,
    }
}

impl Comparison {
    /// The row of `tuner`.
    pub fn row(&self, tuner: &str) -> Option<&TunerRow> {
        self.rows.iter().find(|r| r.tuner == tuner)
    }

    /// The verdict on `tuner` against the grid: whether it came within the
    /// tolerance in at most `fraction` of the evaluations the grid made (or
    /// that the space is too small for a search to matter).
    pub fn verdict(&self, tuner: &str, fraction: f64) -> String {
        let pct = 100.0 * self.within;
        if let Some(n) = self.space_size.filter(|&n| n <= TOO_SMALL_TO_SEARCH) {
            return format!(
                "the space has only {n} configurations: an exhaustive grid costs {n} evaluations, \
                 about what a model-based search spends on its initial design, so searching it does not matter"
            );
        }
        let (Some(row), Some(grid)) = (self.row(tuner), self.row("grid")) else {
            return format!("no {tuner} or grid campaign to compare");
        };
        let reference = if self.exhaustive {
            "the space's optimum (a grid covered all of it)"
        } else {
            "the best any tuner found (no grid covered the whole space)"
        };
        match row.to_target {
            Some(k) => {
                let share = k as f64 / grid.evaluations.max(1) as f64;
                format!(
                    "{tuner} came within {pct:.0} % of {reference} after {k} of its {} evaluations, \
                     {share:.2} of the grid's {} ({}: at most {fraction})",
                    row.evaluations,
                    grid.evaluations,
                    if share <= fraction { "met" } else { "not met" }
                )
            }
            None => format!(
                "{tuner} did not come within {pct:.0} % of {reference} in {} evaluations (not met)",
                row.evaluations
            ),
        }
    }

    /// A markdown table of the rows.
    pub fn markdown(&self) -> String {
        let mut s = format!(
            "Objective `{}` ({}); reference {} ({}{}); space {}.\n\n| tuner | evaluations | feasible | best | evaluations to within {:.0} % |\n|---|---:|---:|---:|---:|\n",
            self.objective,
            self.direction,
            self.reference.map_or("none".into(), |v| format!("{v:.6}")),
            self.reference_tuner.as_deref().unwrap_or("-"),
            if self.exhaustive { ", exhaustive" } else { "" },
            self.space_size
                .map_or("continuous or too large to count".into(), |n| format!(
                    "of {n} configurations"
                )),
            100.0 * self.within
        );
        for r in &self.rows {
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} |",
                r.tuner,
                r.evaluations,
                r.feasible,
                r.best.map_or("-".into(), |v| format!("{v:.6}")),
                r.to_target.map_or("never".into(), |k| k.to_string())
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;

    fn rec(i: usize, x: i64, v: Option<f64>) -> TrialRecord {
        TrialRecord {
            trial: i,
            knobs: BTreeMap::from([("x".to_string(), Value::Int(x))]),
            objective: v,
            objectives: Vec::new(),
            constraints: BTreeMap::new(),
            status: if v.is_some() {
                Status::Ok
            } else {
                Status::Infeasible
            },
            run: None,
            duration_s: 0.0,
            message: None,
            slot: None,
            job: None,
        }
    }

    #[test]
    fn counts_evaluations_to_the_grids_exhaustive_optimum() {
        let space = SearchSpace::parse("x=0..15").unwrap();
        let problem = Problem::single(space, "ms", Direction::Minimize);
        // The grid covers all 16 values; the optimum 1.0 is at x = 9.
        let grid: Vec<TrialRecord> = (0..16)
            .map(|x| rec(x as usize, x, Some(1.0 + (x as f64 - 9.0).abs())))
            .collect();
        // x = 3 is infeasible (a broken configuration); 1.01 is within 2 %.
        let bo = vec![
            rec(0, 0, Some(10.0)),
            rec(1, 3, None),
            rec(2, 8, Some(2.0)),
            rec(3, 10, Some(1.01)),
        ];
        let c = compare(
            &problem,
            &[
                TunerRun {
                    tuner: "bo",
                    trials: &bo,
                },
                TunerRun {
                    tuner: "grid",
                    trials: &grid,
                },
            ],
            0.02,
        );
        assert_eq!(
            (c.reference, c.space_size, c.exhaustive),
            (Some(1.0), Some(16), true)
        );
        assert_eq!(c.reference_tuner.as_deref(), Some("grid"));
        let bo_row = c.row("bo").unwrap();
        assert_eq!(
            (bo_row.to_target, bo_row.feasible, bo_row.best),
            (Some(4), 3, Some(1.01))
        );
        assert_eq!(c.row("grid").unwrap().to_target, Some(10));
        let v = c.verdict("bo", 0.25);
        assert!(
            v.contains("after 4 of its 4 evaluations, 0.25 of the grid's 16 (met"),
            "{v}"
        );
        assert!(
            c.markdown().contains("| bo | 4 | 3 | 1.010000 | 4 |"),
            "{}",
            c.markdown()
        );
        // Within 0.5 % the bo campaign never gets there.
        let strict = compare(
            &problem,
            &[
                TunerRun {
                    tuner: "bo",
                    trials: &bo,
                },
                TunerRun {
                    tuner: "grid",
                    trials: &grid,
                },
            ],
            0.005,
        );
        assert!(strict.verdict("bo", 0.25).contains("did not come within"));
    }

    #[test]
    fn maximising_and_a_space_too_small_to_search() {
        let space = SearchSpace::parse("x=0..3").unwrap();
        let problem = Problem::single(space, "tok_s", Direction::Maximize);
        let runs = vec![
            rec(0, 0, Some(50.0)),
            rec(1, 1, Some(99.0)),
            rec(2, 2, Some(100.0)),
        ];
        let c = compare(
            &problem,
            &[TunerRun {
                tuner: "random",
                trials: &runs,
            }],
            0.02,
        );
        assert_eq!(c.reference, Some(100.0));
        assert!(!c.exhaustive, "3 of 4 configurations");
        assert_eq!(c.row("random").unwrap().to_target, Some(2));
        assert!(c.verdict("random", 0.25).contains("only 4 configurations"));
    }
}
