//! The ask/tell interface shared by every tuner, the problem description
//! (objectives, outcome constraints), trial outcomes, the random and grid
//! baselines, and Pareto-front helpers.
//!
//! *Why ask/tell?* The caller owns the loop: it can evaluate a batch in
//! parallel, journal every trial before telling it, and rebuild a tuner
//! from the journal after a crash. Suggestions are a pure function of the
//! seed, the trial index and the trials told so far (the random stream for
//! trial `i` is `ChaCha8(seed)` on stream `i`), so the same seed replays the
//! same campaign.

use std::collections::HashSet;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::space::{Config, SearchSpace};

/// Whether an objective is minimised or maximised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Smaller is better.
    Minimize,
    /// Larger is better.
    Maximize,
}

impl Direction {
    /// Factor that turns the objective into one to minimise.
    pub fn sign(self) -> f64 {
        match self {
            Direction::Minimize => 1.0,
            Direction::Maximize => -1.0,
        }
    }
}

/// A named objective.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectiveDef {
    /// Name (e.g. `goodput`, `p99_e2e_s`).
    pub name: String,
    /// Direction.
    pub direction: Direction,
}

/// An outcome constraint (e.g. an SLO): outcome `name` must be `≤ threshold`
/// (`upper`) or `≥ threshold`. Each gets its own GP in the BO tuner.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutcomeConstraint {
    /// Name of the measured outcome.
    pub name: String,
    /// `true`: value must be ≤ threshold; `false`: ≥ threshold.
    pub upper: bool,
    /// Threshold.
    pub threshold: f64,
}

impl OutcomeConstraint {
    /// Whether `value` meets the constraint.
    pub fn met(&self, value: f64) -> bool {
        if self.upper {
            value <= self.threshold
        } else {
            value >= self.threshold
        }
    }

    /// The value and threshold mapped so that feasible means `g ≤ t`.
    pub fn as_upper(&self, value: f64) -> (f64, f64) {
        if self.upper {
            (value, self.threshold)
        } else {
            (-value, -self.threshold)
        }
    }
}

/// What is being tuned: the space, one or more objectives, and outcome
/// constraints. With two or more objectives the BO tuner runs ParEGO and
/// the campaign reports the Pareto front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    /// The knobs.
    pub space: SearchSpace,
    /// The objectives (at least one).
    pub objectives: Vec<ObjectiveDef>,
    /// Outcome constraints.
    pub constraints: Vec<OutcomeConstraint>,
}

impl Problem {
    /// A single-objective problem without outcome constraints.
    pub fn single(space: SearchSpace, name: &str, direction: Direction) -> Self {
        Self {
            space,
            objectives: vec![ObjectiveDef {
                name: name.into(),
                direction,
            }],
            constraints: Vec::new(),
        }
    }

    /// Sets the final status of a trial that ran: `Infeasible` when an
    /// outcome constraint is missed.
    pub fn classify(&self, mut outcome: Outcome) -> Outcome {
        if outcome.status == Status::Ok
            && self
                .constraints
                .iter()
                .zip(&outcome.constraints)
                .any(|(c, v)| !c.met(*v))
        {
            outcome.status = Status::Infeasible;
        }
        outcome
    }
}

/// The status of a finished trial.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Ran and met every outcome constraint.
    Ok,
    /// Ran but missed an outcome constraint (e.g. an SLO).
    Infeasible,
    /// Did not produce a result (bad exit status, no number, out of memory).
    Failed,
    /// Passed its time limit and was killed.
    Timeout,
    /// Crashed (killed by a signal, panicked).
    Crashed,
    /// Lost to the cluster, not to the configuration: the job was cancelled
    /// (`scancel`, `ray job stop`), preempted, or its node died. Says nothing
    /// about the configuration, so the models ignore it.
    Lost,
}

impl Status {
    /// Whether the trial produced objective values.
    pub fn ran(self) -> bool {
        matches!(self, Status::Ok | Status::Infeasible)
    }
}

/// The result of evaluating one configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// Status.
    pub status: Status,
    /// Objective values in the problem's order (empty unless the trial ran).
    pub objectives: Vec<f64>,
    /// Outcome-constraint values in the problem's order (empty unless the trial ran).
    pub constraints: Vec<f64>,
    /// Run folder of the trial, if it wrote one.
    pub run_dir: Option<String>,
    /// Wall-clock duration of the trial in seconds.
    pub duration_s: f64,
    /// Why a trial failed, or other notes.
    pub message: Option<String>,
}

impl Outcome {
    /// A successful outcome.
    pub fn ok(objectives: Vec<f64>, constraints: Vec<f64>) -> Self {
        Self {
            status: Status::Ok,
            objectives,
            constraints,
            run_dir: None,
            duration_s: 0.0,
            message: None,
        }
    }

    /// A failed outcome with a reason.
    pub fn failed(status: Status, message: impl Into<String>) -> Self {
        Self {
            status,
            objectives: Vec::new(),
            constraints: Vec::new(),
            run_dir: None,
            duration_s: 0.0,
            message: Some(message.into()),
        }
    }
}

/// A configuration and its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Trial {
    /// 0-based trial index within the campaign.
    pub index: usize,
    /// The configuration evaluated.
    pub config: Config,
    /// What happened.
    pub outcome: Outcome,
}

/// An ask/tell tuner.
pub trait Tuner {
    /// Short name (`bo`, `random`, `grid`).
    fn name(&self) -> &'static str;
    /// Up to `n` new configurations to evaluate next (fewer, possibly none,
    /// when a finite space or grid is exhausted). Deterministic given the
    /// seed and the trials told so far.
    fn ask(&mut self, n: usize) -> Result<Vec<Config>> {
        self.ask_pending(n, &[])
    }
    /// Like [`Tuner::ask`], with `pending` configurations already being
    /// evaluated (asynchronous batches: trials in flight whose results are
    /// not in yet). Suggestions never repeat a pending point, and the BO
    /// tuner conditions its models on them (Kriging believer), so a freed
    /// slot gets a new point without waiting for the others. Deterministic
    /// given the seed, the trials told and `pending`.
    fn ask_pending(&mut self, n: usize, pending: &[Config]) -> Result<Vec<Config>>;
    /// Records a finished trial.
    fn tell(&mut self, trial: Trial);
    /// The trials told so far.
    fn trials(&self) -> &[Trial];
}

/// The random stream for trial `index` of a campaign with `seed`.
pub fn trial_rng(seed: u64, index: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(index as u64);
    rng
}

/// A key identifying a configuration (for de-duplication).
pub(crate) fn config_key(c: &Config) -> String {
    serde_json::to_string(&c.0).unwrap_or_default()
}

/// Draws a feasible random configuration not in `seen` (when the space is
/// finite a few hundred retries avoid duplicates; continuous spaces never
/// repeat).
pub(crate) fn fresh_sample(
    space: &SearchSpace,
    rng: &mut ChaCha8Rng,
    seen: &HashSet<String>,
) -> Result<Option<Config>> {
    let mut last = None;
    for _ in 0..500 {
        let Some(c) = space.sample(rng) else {
            return Err(Error::invalid(
                "constraints",
                "no random configuration satisfies the knob constraints",
                "check the --constraint expressions against the knob ranges",
            ));
        };
        if !seen.contains(&config_key(&c)) {
            return Ok(Some(c));
        }
        last = Some(c);
    }
    // A finite space that is (almost) exhausted: enumerate to find what is left.
    if let Some(all) = space.enumerate(1_000_000) {
        return Ok(all.into_iter().find(|c| !seen.contains(&config_key(c))));
    }
    Ok(last)
}

/// Uniform random search (without repetition on finite spaces).
#[derive(Debug, Clone)]
pub struct RandomTuner {
    problem: Problem,
    seed: u64,
    trials: Vec<Trial>,
}

impl RandomTuner {
    /// A random tuner.
    pub fn new(problem: Problem, seed: u64) -> Self {
        Self {
            problem,
            seed,
            trials: Vec::new(),
        }
    }
}

impl Tuner for RandomTuner {
    fn name(&self) -> &'static str {
        "random"
    }
    fn ask_pending(&mut self, n: usize, pending: &[Config]) -> Result<Vec<Config>> {
        let mut seen: HashSet<String> = self
            .trials
            .iter()
            .map(|t| &t.config)
            .chain(pending)
            .map(config_key)
            .collect();
        let mut out = Vec::new();
        for j in 0..n {
            let mut rng = trial_rng(self.seed, self.trials.len() + pending.len() + j);
            if let Some(c) = fresh_sample(&self.problem.space, &mut rng, &seen)? {
                seen.insert(config_key(&c));
                out.push(c);
            }
        }
        Ok(out)
    }
    fn tell(&mut self, trial: Trial) {
        self.trials.push(trial);
    }
    fn trials(&self) -> &[Trial] {
        &self.trials
    }
}

/// Grid search: every knob gets `L` evenly spaced levels (all values when
/// it has fewer), with `L` the largest number whose full grid fits the
/// budget; the grid is walked in lexicographic order, skipping points that
/// violate constraints.
#[derive(Debug, Clone)]
pub struct GridTuner {
    grid: Vec<Config>,
    trials: Vec<Trial>,
}

impl GridTuner {
    /// A grid sized for `budget` evaluations.
    pub fn new(problem: Problem, budget: usize) -> Self {
        let space = &problem.space;
        let k = space.params().len();
        let size = |l: usize| -> u128 {
            (0..k)
                .map(|i| space.grid_values(i, l).len() as u128)
                .product()
        };
        let mut levels = 2;
        while levels < 1 << 16
            && size(levels + 1) <= budget.max(1) as u128
            && size(levels + 1) > size(levels)
        {
            levels += 1;
        }
        let axes: Vec<Vec<_>> = (0..k).map(|i| space.grid_values(i, levels)).collect();
        let mut grid = Vec::new();
        let mut idx = vec![0usize; k];
        'outer: loop {
            let c = space.canonical(Config(
                idx.iter().zip(&axes).map(|(&i, a)| a[i].clone()).collect(),
            ));
            if space.feasible(&c) && !grid.contains(&c) {
                grid.push(c);
            }
            for j in (0..k).rev() {
                idx[j] += 1;
                if idx[j] < axes[j].len() {
                    continue 'outer;
                }
                idx[j] = 0;
            }
            break;
        }
        Self {
            grid,
            trials: Vec::new(),
        }
    }

    /// The grid points, in visiting order.
    pub fn points(&self) -> &[Config] {
        &self.grid
    }
}

impl Tuner for GridTuner {
    fn name(&self) -> &'static str {
        "grid"
    }
    fn ask_pending(&mut self, n: usize, pending: &[Config]) -> Result<Vec<Config>> {
        let seen: HashSet<String> = self
            .trials
            .iter()
            .map(|t| &t.config)
            .chain(pending)
            .map(config_key)
            .collect();
        Ok(self
            .grid
            .iter()
            .filter(|c| !seen.contains(&config_key(c)))
            .take(n)
            .cloned()
            .collect())
    }
    fn tell(&mut self, trial: Trial) {
        self.trials.push(trial);
    }
    fn trials(&self) -> &[Trial] {
        &self.trials
    }
}

/// Indices of the non-dominated points, every coordinate minimised. A point
/// dominates another when it is no worse in every coordinate and better in
/// one; duplicates are all kept.
///
/// # Example
/// ```
/// let pts = vec![vec![1.0, 5.0], vec![2.0, 2.0], vec![3.0, 3.0], vec![5.0, 1.0]];
/// assert_eq!(fuselab_tune::pareto_front(&pts), vec![0, 1, 3]);
/// ```
pub fn pareto_front(points: &[Vec<f64>]) -> Vec<usize> {
    let dominates = |a: &[f64], b: &[f64]| {
        a.iter().zip(b).all(|(x, y)| x <= y) && a.iter().zip(b).any(|(x, y)| x < y)
    };
    (0..points.len())
        .filter(|&i| !points.iter().any(|q| dominates(q, &points[i])))
        .collect()
}

/// Indices (into `trials`) of the feasible trials on the Pareto front of the
/// problem's objectives, respecting each objective's direction.
pub fn pareto_trials(problem: &Problem, trials: &[Trial]) -> Vec<usize> {
    let feasible: Vec<usize> = (0..trials.len())
        .filter(|&i| {
            trials[i].outcome.status == Status::Ok
                && trials[i].outcome.objectives.len() == problem.objectives.len()
        })
        .collect();
    let pts: Vec<Vec<f64>> = feasible
        .iter()
        .map(|&i| {
            trials[i]
                .outcome
                .objectives
                .iter()
                .zip(&problem.objectives)
                .map(|(v, o)| v * o.direction.sign())
                .collect()
        })
        .collect();
    pareto_front(&pts)
        .into_iter()
        .map(|j| feasible[j])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(spec: &str) -> Problem {
        Problem::single(SearchSpace::parse(spec).unwrap(), "y", Direction::Minimize)
    }

    #[test]
    fn grid_fits_the_budget_and_covers_corners() {
        let mut g = GridTuner::new(problem("x=-3.0..3,y=-2.0..2"), 30);
        assert_eq!(g.points().len(), 25);
        let first = g.ask(3).unwrap();
        assert_eq!(first.len(), 3);
        let all = g.ask(100).unwrap();
        assert_eq!(all.len(), 25);
        // A small discrete knob is enumerated completely.
        let g2 = GridTuner::new(problem("b=16|32|64,x=0.0..1"), 9);
        assert_eq!(g2.points().len(), 9);
    }

    #[test]
    fn random_tuner_is_reproducible_and_never_repeats_on_finite_spaces() {
        let p = problem("a=1..4,b=1..3");
        let mut t1 = RandomTuner::new(p.clone(), 9);
        let mut t2 = RandomTuner::new(p, 9);
        let mut seen = HashSet::new();
        for i in 0..12 {
            let c = t1.ask(1).unwrap();
            assert_eq!(c, t2.ask(1).unwrap());
            assert!(seen.insert(config_key(&c[0])), "repeat at {i}");
            for t in [&mut t1, &mut t2] {
                t.tell(Trial {
                    index: i,
                    config: c[0].clone(),
                    outcome: Outcome::ok(vec![0.0], vec![]),
                });
            }
        }
        assert!(t1.ask(1).unwrap().is_empty(), "space of 12 is exhausted");
    }

    #[test]
    fn pareto_front_handles_ties_and_directions() {
        assert_eq!(
            pareto_front(&[vec![1.0, 1.0], vec![1.0, 1.0], vec![1.0, 2.0]]),
            vec![0, 1]
        );
        assert!(pareto_front(&[]).is_empty());
        let mut p = problem("a=1..4");
        p.objectives = vec![
            ObjectiveDef {
                name: "tput".into(),
                direction: Direction::Maximize,
            },
            ObjectiveDef {
                name: "p99".into(),
                direction: Direction::Minimize,
            },
        ];
        let mk = |i, t: f64, l: f64, s| Trial {
            index: i,
            config: Config(vec![]),
            outcome: Outcome {
                status: s,
                ..Outcome::ok(vec![t, l], vec![])
            },
        };
        let trials = vec![
            mk(0, 10.0, 1.0, Status::Ok),
            mk(1, 20.0, 2.0, Status::Ok),
            mk(2, 15.0, 3.0, Status::Ok),
            mk(3, 30.0, 0.5, Status::Infeasible),
        ];
        assert_eq!(pareto_trials(&p, &trials), vec![0, 1]);
    }

    #[test]
    fn classify_marks_missed_constraints() {
        let mut p = problem("a=1..4");
        p.constraints = vec![OutcomeConstraint {
            name: "p99".into(),
            upper: true,
            threshold: 2.0,
        }];
        assert_eq!(
            p.classify(Outcome::ok(vec![1.0], vec![3.0])).status,
            Status::Infeasible
        );
        assert_eq!(
            p.classify(Outcome::ok(vec![1.0], vec![1.0])).status,
            Status::Ok
        );
        assert_eq!(
            p.classify(Outcome::failed(Status::Timeout, "x")).status,
            Status::Timeout
        );
    }
}
