//! Bayesian optimisation: GP surrogates, constrained log-EI, candidate
//! search, Kriging-believer batches, ParEGO for several objectives, and the
//! final recommendation.
//!
//! # How a suggestion is made
//!
//! 1. The first `n_init` trials (default `2k + 1` for `k` knobs) come from a
//!    seeded maximin Latin-hypercube design, repaired to respect the knob
//!    constraints and never to repeat a point.
//! 2. Then three kinds of model are fitted on the trials told so far:
//!    * the **objective GP** on every trial that ran (minimisation-oriented;
//!      with several objectives, the ParEGO scalarisation below);
//!    * one **constraint GP** per outcome constraint (e.g. an SLO on p99
//!      latency), on the constraint value of every trial that ran;
//!    * a **success model** when some trials failed (crash, OOM, timeout):
//!      least-squares GP classification (Rasmussen & Williams §6.5) — a GP
//!      regression on labels +1 (ran) / −1 (failed) over *all* trials,
//!      with a fixed small noise, squashed with a probit link,
//!      `P(success) = Φ(μ/√(0.27² + σ²))`. Failed trials never enter the
//!      constraint GPs; they enter the objective GP imputed at the worst
//!      observed value (as SMAC and egobox's "impute" failsafe do), so the
//!      objective model stops promising improvement where trials crash.
//! 3. The acquisition is `log EI(x) + Σ_k ln P(c_k(x) ≤ t_k) + ln P(success)`,
//!    with the numerically stable log-EI of Ament et al. (2023). EI is taken
//!    against the incumbent **best posterior mean** among observed feasible
//!    points, not the best raw observation, so a lucky noisy measurement does
//!    not freeze the search (this, the learned noise variance and the
//!    posterior-mean recommendation are how noise is handled). Until some
//!    trial is feasible the acquisition is the feasibility term alone.
//! 4. Candidates: when the space is finite and small (≤ `enumerate_limit`
//!    points) every unevaluated point is scored; otherwise random feasible
//!    samples plus perturbations of the best observed points are scored and
//!    the top few are polished by an adaptive-step stochastic local search in
//!    the encoded cube (each step snapped to a legal configuration).
//! 5. Batches of `K` (`--parallel K`): after each pick the models are
//!    conditioned on their own posterior mean at the pick (Kriging
//!    believer) without refitting, and the next point is chosen.
//!
//! **Multi-objective (ParEGO, Knowles 2006).** Every suggestion draws
//! weights `λ` uniformly from the simplex (from that trial's seeded stream),
//! normalises each minimisation-oriented objective to `[0, 1]` over the
//! observed trials and models the augmented Chebyshev scalarisation
//! `max_i λ_i f_i + 0.05 Σ_i λ_i f_i`; over many trials the weights sweep
//! the front, and [`crate::pareto_trials`] reports it.

use std::collections::HashSet;

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

use crate::acq::{log_ei, log_norm_cdf, log_prob_below};
use crate::error::Result;
use crate::gp::{Gp, GpOptions};
use crate::space::Config;
use crate::tuner::{Problem, Status, Trial, Tuner, config_key, fresh_sample, trial_rng};

/// Options of the BO tuner.
#[derive(Debug, Clone)]
pub struct BoOptions {
    /// Size of the initial design; `None` = `2k + 1` for `k` knobs.
    pub n_init: Option<usize>,
    /// GP fitting options.
    pub gp: GpOptions,
    /// Random candidates scored per suggestion (non-enumerable spaces).
    pub n_random: usize,
    /// Number of best candidates polished by local search.
    pub n_local: usize,
    /// Local-search steps per start.
    pub local_steps: usize,
    /// Finite spaces with at most this many points are scored exhaustively.
    pub enumerate_limit: u64,
}

impl Default for BoOptions {
    fn default() -> Self {
        Self {
            n_init: None,
            gp: GpOptions::default(),
            n_random: 2000,
            n_local: 5,
            local_steps: 60,
            enumerate_limit: 20_000,
        }
    }
}

/// The Bayesian-optimisation tuner.
#[derive(Debug, Clone)]
pub struct BoTuner {
    problem: Problem,
    seed: u64,
    opts: BoOptions,
    trials: Vec<Trial>,
    design: Option<Vec<Config>>,
    enumerated: Option<Option<Vec<Config>>>,
}

/// Scale of the probit link of the success model: `P(success) = Φ(μ/√(s² + σ²))`
/// on ±1 labels, so a point the classifier is sure will fail (μ ≈ −1) gets
/// P ≈ 1e-4 and a point on the boundary (μ ≈ 0) gets ½.
const SUCCESS_LINK: f64 = 0.27;

/// The fitted surrogates behind one suggestion.
struct Models {
    obj: Gp,
    /// One GP per outcome constraint on `g`, with its threshold `t` (feasible: `g ≤ t`).
    cons: Vec<(Gp, f64)>,
    success: Option<Gp>,
    /// Incumbent: lowest posterior mean among (believed) feasible points; `None` if none.
    best: Option<f64>,
}

impl Models {
    fn feasibility(&self, u: &[f64]) -> f64 {
        let mut s = 0.0;
        for (gp, t) in &self.cons {
            let (m, sd) = gp.predict(u);
            s += log_prob_below(m, sd, *t);
        }
        if let Some(gp) = &self.success {
            let (m, sd) = gp.predict(u);
            s += log_norm_cdf(m / (SUCCESS_LINK * SUCCESS_LINK + sd * sd).sqrt());
        }
        s
    }

    fn acq(&self, u: &[f64]) -> f64 {
        let f = self.feasibility(u);
        match self.best {
            Some(best) => {
                let (m, sd) = self.obj.predict(u);
                log_ei(m, sd, best) + f
            }
            None => f,
        }
    }

    /// Kriging believer: condition every model on its own mean at `u`.
    fn believe(&mut self, u: &[f64]) -> Result<()> {
        let (m, _) = self.obj.predict(u);
        self.obj = self.obj.condition(u, m)?;
        let mut feasible = true;
        for (gp, t) in &mut self.cons {
            let (mc, _) = gp.predict(u);
            feasible &= mc <= *t;
            *gp = gp.condition(u, mc)?;
        }
        if let Some(gp) = &mut self.success {
            let (ms, _) = gp.predict(u);
            feasible &= ms > 0.0;
            *gp = gp.condition(u, ms)?;
        }
        if feasible {
            self.best = Some(self.best.map_or(m, |b| b.min(m)));
        }
        Ok(())
    }
}

/// Minimisation-oriented scalar objective of every trial that ran (ParEGO
/// scalarisation with weights `lambda` when there are several objectives).
fn scalar_objective(problem: &Problem, ran: &[&Trial], lambda: &[f64]) -> Vec<f64> {
    let k = problem.objectives.len();
    let raw: Vec<Vec<f64>> = ran
        .iter()
        .map(|t| {
            t.outcome
                .objectives
                .iter()
                .zip(&problem.objectives)
                .map(|(v, o)| v * o.direction.sign())
                .collect()
        })
        .collect();
    if k == 1 {
        return raw.into_iter().map(|r| r[0]).collect();
    }
    let lo: Vec<f64> = (0..k)
        .map(|i| raw.iter().map(|r| r[i]).fold(f64::INFINITY, f64::min))
        .collect();
    let hi: Vec<f64> = (0..k)
        .map(|i| raw.iter().map(|r| r[i]).fold(f64::NEG_INFINITY, f64::max))
        .collect();
    raw.iter()
        .map(|r| {
            let f: Vec<f64> = (0..k)
                .map(|i| {
                    if hi[i] > lo[i] {
                        (r[i] - lo[i]) / (hi[i] - lo[i])
                    } else {
                        0.0
                    }
                })
                .collect();
            let wf: Vec<f64> = f.iter().zip(lambda).map(|(a, b)| a * b).collect();
            wf.iter().cloned().fold(f64::NEG_INFINITY, f64::max) + 0.05 * wf.iter().sum::<f64>()
        })
        .collect()
}

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    let z: f64 = StandardNormal.sample(rng);
    z
}

/// Uniform weights on the simplex.
fn simplex_weights(k: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let e: Vec<f64> = (0..k).map(|_| -(1.0 - rng.random::<f64>()).ln()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|x| x / s).collect()
}

fn ran_trials<'a>(trials: &'a [Trial], problem: &Problem) -> Vec<&'a Trial> {
    trials
        .iter()
        .filter(|t| {
            t.outcome.status.ran()
                && t.outcome.objectives.len() == problem.objectives.len()
                && t.outcome.constraints.len() == problem.constraints.len()
                && t.outcome
                    .objectives
                    .iter()
                    .chain(&t.outcome.constraints)
                    .all(|v| v.is_finite())
        })
        .collect()
}

impl BoTuner {
    /// A BO tuner for `problem`, seeded.
    pub fn new(problem: Problem, seed: u64, opts: BoOptions) -> Self {
        Self {
            problem,
            seed,
            opts,
            trials: Vec::new(),
            design: None,
            enumerated: None,
        }
    }

    fn n_init(&self) -> usize {
        self.opts
            .n_init
            .unwrap_or(2 * self.problem.space.params().len() + 1)
            .max(1)
    }

    /// The seeded maximin Latin-hypercube initial design.
    fn design(&mut self) -> &[Config] {
        if self.design.is_none() {
            let n = self.n_init();
            let space = &self.problem.space;
            let dim = space.dim();
            let mut rng = trial_rng(self.seed, usize::MAX);
            let mut best: Option<(f64, Vec<Vec<f64>>)> = None;
            for _ in 0..20 {
                let cols: Vec<Vec<usize>> = (0..dim)
                    .map(|_| {
                        let mut p: Vec<usize> = (0..n).collect();
                        for i in (1..n).rev() {
                            p.swap(i, rng.random_range(0..=i));
                        }
                        p
                    })
                    .collect();
                let pts: Vec<Vec<f64>> = (0..n)
                    .map(|i| {
                        (0..dim)
                            .map(|j| (cols[j][i] as f64 + rng.random::<f64>()) / n as f64)
                            .collect()
                    })
                    .collect();
                let pts: Vec<Vec<f64>> = pts.iter().map(|p| space.snap(p)).collect();
                let mut mind = f64::INFINITY;
                for a in 0..n {
                    for b in 0..a {
                        mind = mind.min(
                            pts[a]
                                .iter()
                                .zip(&pts[b])
                                .map(|(x, y)| (x - y) * (x - y))
                                .sum(),
                        );
                    }
                }
                if best.as_ref().is_none_or(|(d, _)| mind > *d) {
                    best = Some((mind, pts));
                }
            }
            let pts = best.map(|b| b.1).unwrap_or_default();
            let mut seen = HashSet::new();
            let mut design = Vec::new();
            for p in pts {
                let c = space.decode(&p);
                let c = if space.feasible(&c) && !seen.contains(&config_key(&c)) {
                    Some(c)
                } else {
                    fresh_sample(space, &mut rng, &seen).ok().flatten()
                };
                if let Some(c) = c {
                    seen.insert(config_key(&c));
                    design.push(c);
                }
            }
            self.design = Some(design);
        }
        self.design.as_deref().unwrap_or(&[])
    }

    fn enumerated(&mut self) -> Option<&Vec<Config>> {
        if self.enumerated.is_none() {
            self.enumerated = Some(self.problem.space.enumerate(self.opts.enumerate_limit));
        }
        self.enumerated.as_ref().and_then(|e| e.as_ref())
    }

    fn fit(&self, rng: &mut ChaCha8Rng) -> Result<Option<Models>> {
        let p = &self.problem;
        // A trial lost to the cluster (cancelled, preempted, node died) says
        // nothing about its configuration: no model sees it.
        let told: Vec<&Trial> = self
            .trials
            .iter()
            .filter(|t| t.outcome.status != Status::Lost)
            .collect();
        let ran = ran_trials(&self.trials, p);
        if ran.len() < 2 {
            return Ok(None);
        }
        let lambda = simplex_weights(p.objectives.len(), rng);
        let xs: Vec<Vec<f64>> = ran.iter().map(|t| p.space.encode(&t.config)).collect();
        let y = scalar_objective(p, &ran, &lambda);
        // Failed trials enter the objective GP imputed at the worst observed
        // value, so its optimism cannot keep pulling the search back into a
        // region that crashes; the success model below does the rest.
        let worst = y.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut xo = xs.clone();
        let mut yo = y.clone();
        for t in told.iter().filter(|t| !t.outcome.status.ran()) {
            xo.push(p.space.encode(&t.config));
            yo.push(worst);
        }
        let obj = Gp::fit(&xo, &yo, &self.opts.gp, None, rng)?;
        let mut cons = Vec::new();
        for (k, c) in p.constraints.iter().enumerate() {
            let g: Vec<f64> = ran
                .iter()
                .map(|t| c.as_upper(t.outcome.constraints[k]).0)
                .collect();
            cons.push((
                Gp::fit(&xs, &g, &self.opts.gp, None, rng)?,
                c.as_upper(0.0).1,
            ));
        }
        let n_fail = told.iter().filter(|t| !t.outcome.status.ran()).count();
        let success = if n_fail > 0 {
            let xa: Vec<Vec<f64>> = told.iter().map(|t| p.space.encode(&t.config)).collect();
            let labels: Vec<f64> = told
                .iter()
                .map(|t| if t.outcome.status.ran() { 1.0 } else { -1.0 })
                .collect();
            // Labels are not noisy measurements: fix the noise so the
            // classifier cannot explain failures away as noise.
            let opts = GpOptions {
                fixed_noise: Some(0.01),
                ..self.opts.gp.clone()
            };
            Some(Gp::fit(&xa, &labels, &opts, None, rng)?)
        } else {
            None
        };
        let best = ran
            .iter()
            .zip(&xs)
            .filter(|(t, _)| t.outcome.status == Status::Ok)
            .map(|(_, x)| obj.predict(x).0)
            .fold(None, |b: Option<f64>, m| Some(b.map_or(m, |b| b.min(m))));
        Ok(Some(Models {
            obj,
            cons,
            success,
            best,
        }))
    }

    fn select(
        &mut self,
        models: &Models,
        rng: &mut ChaCha8Rng,
        seen: &HashSet<String>,
    ) -> Result<Option<Config>> {
        let opts = self.opts.clone();
        let space = self.problem.space.clone();
        if let Some(all) = self.enumerated() {
            let mut best: Option<(f64, &Config)> = None;
            for c in all {
                if seen.contains(&config_key(c)) {
                    continue;
                }
                let v = models.acq(&space.encode(c));
                if best.is_none_or(|(b, _)| v > b) {
                    best = Some((v, c));
                }
            }
            return Ok(best.map(|(_, c)| c.clone()));
        }
        // Random candidates plus perturbations of the best observed points.
        let mut cands: Vec<(f64, Vec<f64>)> = Vec::new();
        let push = |u: Vec<f64>, cands: &mut Vec<(f64, Vec<f64>)>| {
            let c = space.decode(&u);
            if space.feasible(&c) && !seen.contains(&config_key(&c)) {
                let u = space.encode(&c);
                cands.push((models.acq(&u), u));
            }
        };
        for _ in 0..opts.n_random {
            let u: Vec<f64> = (0..space.dim()).map(|_| rng.random::<f64>()).collect();
            push(u, &mut cands);
        }
        let mut ranked: Vec<(f64, Vec<f64>)> = models
            .obj
            .inputs()
            .map(|x| (models.obj.predict(x).0, x.to_vec()))
            .collect();
        ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (_, x) in ranked.iter().take(3) {
            for s in [0.01, 0.05, 0.15] {
                for _ in 0..10 {
                    let u: Vec<f64> = x.iter().map(|v| v + s * gauss(rng)).collect();
                    push(u, &mut cands);
                }
            }
        }
        if cands.is_empty() {
            return fresh_sample(&space, rng, seen);
        }
        cands.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut best = cands[0].clone();
        for (v0, u0) in cands.into_iter().take(opts.n_local) {
            let (mut u, mut v) = (u0, v0);
            let mut step = 0.05;
            for _ in 0..opts.local_steps {
                let one = rng.random_bool(0.5);
                let j = rng.random_range(0..u.len());
                let prop: Vec<f64> = u
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        if !one || i == j {
                            x + step * gauss(rng)
                        } else {
                            *x
                        }
                    })
                    .collect();
                let c = space.decode(&prop);
                let pu = space.encode(&c);
                if pu == u {
                    step = (step * 1.5).min(0.5);
                    continue;
                }
                if !space.feasible(&c) || seen.contains(&config_key(&c)) {
                    step = (step * 0.7).max(1e-5);
                    continue;
                }
                let pv = models.acq(&pu);
                if pv > v {
                    u = pu;
                    v = pv;
                    step = (step * 1.3).min(0.5);
                } else {
                    step = (step * 0.7).max(1e-5);
                }
            }
            if v > best.0 {
                best = (v, u);
            }
        }
        Ok(Some(space.decode(&best.1)))
    }
}

impl Tuner for BoTuner {
    fn name(&self) -> &'static str {
        "bo"
    }

    fn ask_pending(&mut self, n: usize, pending: &[Config]) -> Result<Vec<Config>> {
        let base = self.trials.len() + pending.len();
        let mut seen: HashSet<String> = self
            .trials
            .iter()
            .map(|t| &t.config)
            .chain(pending)
            .map(config_key)
            .collect();
        let n_init = self.n_init();
        let mut models: Option<Models> = None;
        let mut fitted = false;
        let mut out = Vec::new();
        for j in 0..n {
            let idx = base + j;
            let mut rng = trial_rng(self.seed, idx);
            let pick = if idx < n_init {
                let d = self.design().get(idx).cloned();
                match d.filter(|c| !seen.contains(&config_key(c))) {
                    Some(c) => Some(c),
                    None => fresh_sample(&self.problem.space, &mut rng, &seen)?,
                }
            } else {
                if !fitted {
                    models = self.fit(&mut rng)?;
                    fitted = true;
                    // Asynchronous batches: believe the points in flight.
                    if let Some(m) = models.as_mut() {
                        for c in pending {
                            m.believe(&self.problem.space.encode(c))?;
                        }
                    }
                }
                match models.take() {
                    Some(mut m) => {
                        let pick = self.select(&m, &mut rng, &seen)?;
                        if let Some(c) = &pick {
                            m.believe(&self.problem.space.encode(c))?;
                        }
                        models = Some(m);
                        pick
                    }
                    // Fewer than two trials ran (everything failed so far): explore at random.
                    None => fresh_sample(&self.problem.space, &mut rng, &seen)?,
                }
            };
            let Some(c) = pick else { break };
            seen.insert(config_key(&c));
            out.push(c);
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

/// The outcome of a single-objective campaign ([`recommend`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Recommendation {
    /// Index of the best observed feasible trial: the campaign's "best".
    pub trial: usize,
    /// Its configuration.
    pub config: Config,
    /// The observed objective value(s).
    pub observed: Vec<f64>,
    /// GP posterior mean of the objective there (original units and direction).
    pub mean: Option<f64>,
    /// GP posterior standard deviation there.
    pub sd: Option<f64>,
    /// The model's own pick, given only where the learned observation noise is
    /// material (see [`MATERIAL_NOISE`]) and it picks another trial than the
    /// best observed one: under noise the best observation is optimistic.
    pub model: Option<ModelPick>,
}

/// The GP's recommendation: the feasible trial with the best posterior mean.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelPick {
    /// Index of the trial.
    pub trial: usize,
    /// Its configuration.
    pub config: Config,
    /// The observed objective value(s).
    pub observed: Vec<f64>,
    /// GP posterior mean there (original units and direction).
    pub mean: f64,
    /// GP posterior standard deviation there.
    pub sd: f64,
    /// The learned observation-noise standard deviation (original units).
    pub noise_sd: f64,
}

/// Learned noise standard deviation, as a fraction of the observed
/// objective's standard deviation, from which the model's pick is reported
/// beside the best observation.
pub const MATERIAL_NOISE: f64 = 0.1;

/// The result of a single-objective campaign: the best observed feasible
/// trial, with the GP posterior there, and the GP's own pick where the
/// learned noise is material. With fewer than three trials that ran there is
/// no model. `None` when no trial is feasible or the problem has several
/// objectives (use [`crate::pareto_trials`]).
pub fn recommend(problem: &Problem, trials: &[Trial], seed: u64) -> Option<Recommendation> {
    if problem.objectives.len() != 1 {
        return None;
    }
    let sign = problem.objectives[0].direction.sign();
    let ran = ran_trials(trials, problem);
    let feasible: Vec<&Trial> = ran
        .iter()
        .copied()
        .filter(|t| t.outcome.status == Status::Ok)
        .collect();
    let best_obs = feasible.iter().min_by(|a, b| {
        (sign * a.outcome.objectives[0]).total_cmp(&(sign * b.outcome.objectives[0]))
    })?;
    let mut best = Recommendation {
        trial: best_obs.index,
        config: best_obs.config.clone(),
        observed: best_obs.outcome.objectives.clone(),
        mean: None,
        sd: None,
        model: None,
    };
    if ran.len() < 3 {
        return Some(best);
    }
    let xs: Vec<Vec<f64>> = ran
        .iter()
        .map(|t| problem.space.encode(&t.config))
        .collect();
    let y: Vec<f64> = ran.iter().map(|t| sign * t.outcome.objectives[0]).collect();
    let mut rng = trial_rng(seed, usize::MAX - 1);
    let Ok(gp) = Gp::fit(&xs, &y, &GpOptions::default(), None, &mut rng) else {
        return Some(best);
    };
    let (m, sd) = gp.predict(&problem.space.encode(&best.config));
    best.mean = Some(sign * m);
    best.sd = Some(sd);
    let mean_y = y.iter().sum::<f64>() / y.len() as f64;
    let spread = (y.iter().map(|v| (v - mean_y).powi(2)).sum::<f64>() / y.len() as f64).sqrt();
    let noise_sd = gp.noise_sd();
    if spread > 0.0 && noise_sd >= MATERIAL_NOISE * spread {
        best.model = feasible
            .iter()
            .map(|t| (t, gp.predict(&problem.space.encode(&t.config))))
            .min_by(|a: &(&&Trial, (f64, f64)), b| a.1.0.total_cmp(&b.1.0))
            .filter(|(t, _)| t.index != best.trial)
            .map(|(t, (m, s))| ModelPick {
                trial: t.index,
                config: t.config.clone(),
                observed: t.outcome.objectives.clone(),
                mean: sign * m,
                sd: s,
                noise_sd,
            });
    }
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::space::SearchSpace;
    use crate::tuner::{Direction, ObjectiveDef, Outcome, OutcomeConstraint, pareto_trials};

    fn x_of(c: &Config) -> f64 {
        c.0[0].as_f64().unwrap_or(f64::NAN)
    }

    fn run(problem: &Problem, budget: usize, eval: impl Fn(f64) -> Outcome) -> BoTuner {
        let mut t = BoTuner::new(
            problem.clone(),
            4,
            BoOptions {
                n_random: 300,
                ..BoOptions::default()
            },
        );
        for i in 0..budget {
            let c = t.ask(1).unwrap().pop().unwrap();
            let o = problem.classify(eval(x_of(&c)));
            t.tell(Trial {
                index: i,
                config: c,
                outcome: o,
            });
        }
        t
    }

    #[test]
    fn outcome_constraint_steers_to_the_feasible_optimum() {
        // Minimise x subject to c(x) = 1 − x ≤ 0.5, i.e. x ≥ 0.5.
        let mut p = Problem::single(
            SearchSpace::parse("x=0.0..1").unwrap(),
            "f",
            Direction::Minimize,
        );
        p.constraints = vec![OutcomeConstraint {
            name: "c".into(),
            upper: true,
            threshold: 0.5,
        }];
        let t = run(&p, 14, |x| Outcome::ok(vec![x], vec![1.0 - x]));
        let best = recommend(&p, t.trials(), 4).unwrap();
        assert!((x_of(&best.config) - 0.5).abs() < 0.03, "{:?}", best.config);
        // Converging on a boundary optimum probes both sides of it; what must
        // not happen is wasting trials deep in the infeasible region.
        let xs: Vec<f64> = t.trials()[3..].iter().map(|t| x_of(&t.config)).collect();
        let deep = xs.iter().filter(|x| **x < 0.45).count();
        assert_eq!(deep, 0, "trials deep in the infeasible region: {xs:?}");
        let near = xs.iter().filter(|x| (**x - 0.5).abs() < 0.01).count();
        assert!(
            near >= 6,
            "the search should converge on the boundary: {xs:?}"
        );
    }

    #[test]
    fn hidden_failures_are_learned_and_avoided() {
        // Trials with x < 0.3 crash; minimise x.
        let p = Problem::single(
            SearchSpace::parse("x=0.0..1").unwrap(),
            "f",
            Direction::Minimize,
        );
        let t = run(&p, 14, |x| {
            if x < 0.3 {
                Outcome::failed(Status::Crashed, "oom")
            } else {
                Outcome::ok(vec![x], vec![])
            }
        });
        let best = recommend(&p, t.trials(), 4).unwrap();
        assert!(x_of(&best.config) < 0.36, "{:?}", best.config);
        let failed_late = t.trials()[3..]
            .iter()
            .filter(|t| !t.outcome.status.ran())
            .count();
        let xs: Vec<String> = t
            .trials()
            .iter()
            .map(|t| {
                format!(
                    "{:.3}{}",
                    x_of(&t.config),
                    if t.outcome.status.ran() { "" } else { "!" }
                )
            })
            .collect();
        assert!(
            failed_late <= 5,
            "{failed_late} failures after the design: {xs:?}"
        );
    }

    #[test]
    fn batches_are_distinct_and_discrete_spaces_are_never_repeated() {
        let p = Problem::single(
            SearchSpace::parse("a=1..6,b=16|32|64").unwrap(),
            "f",
            Direction::Maximize,
        );
        let mut t = BoTuner::new(p.clone(), 1, BoOptions::default());
        let mut seen = HashSet::new();
        for round in 0..4 {
            let batch = t.ask(4).unwrap();
            assert_eq!(batch.len(), 4);
            for (j, c) in batch.into_iter().enumerate() {
                assert!(seen.insert(config_key(&c)), "round {round}: repeat {c:?}");
                let v = c.0[0].as_f64().unwrap() * c.0[1].as_f64().unwrap();
                t.tell(Trial {
                    index: round * 4 + j,
                    config: c,
                    outcome: Outcome::ok(vec![v], vec![]),
                });
            }
        }
        // 18 points in all: the rest of the space comes out, then nothing.
        assert_eq!(t.ask(10).unwrap().len(), 2);
    }

    #[test]
    fn parego_spreads_along_the_pareto_front() {
        let mut p = Problem::single(
            SearchSpace::parse("x=0.0..1").unwrap(),
            "f1",
            Direction::Minimize,
        );
        p.objectives.push(ObjectiveDef {
            name: "f2".into(),
            direction: Direction::Minimize,
        });
        // f1 = x, f2 = (1 − x)²: every x is Pareto-optimal; a good front covers [0, 1].
        let t = run(&p, 12, |x| Outcome::ok(vec![x, (1.0 - x).powi(2)], vec![]));
        let front = pareto_trials(&p, t.trials());
        assert_eq!(front.len(), 12);
        let xs: Vec<f64> = front.iter().map(|&i| x_of(&t.trials()[i].config)).collect();
        let lo = xs.iter().cloned().fold(1.0, f64::min);
        let hi = xs.iter().cloned().fold(0.0, f64::max);
        assert!(lo < 0.2 && hi > 0.8, "front covers [{lo}, {hi}]");
        assert!(recommend(&p, t.trials(), 1).is_none());
    }

    fn trials_of(ys: &[(f64, f64)]) -> Vec<Trial> {
        ys.iter()
            .enumerate()
            .map(|(i, &(x, y))| Trial {
                index: i,
                config: Config(vec![crate::space::Value::Float(x)]),
                outcome: Outcome::ok(vec![y], vec![]),
            })
            .collect()
    }

    #[test]
    fn best_is_the_best_observation_and_the_model_speaks_up_only_under_noise() {
        let p = Problem::single(
            SearchSpace::parse("x=0.0..1").unwrap(),
            "f",
            Direction::Maximize,
        );
        let xs: Vec<f64> = (0..21).map(|i| f64::from(i) * 0.05).collect();
        // Noise-free: the best observation wins, even where a smooth model
        // would predict more elsewhere; no model pick is reported.
        let exact: Vec<(f64, f64)> = xs.iter().map(|&x| (x, -(x - 0.5f64).powi(2))).collect();
        let r = recommend(&p, &trials_of(&exact), 3).unwrap();
        assert_eq!(r.trial, 10, "x = 0.5 is the observed maximum");
        assert_eq!(r.observed, vec![0.0]);
        assert!(r.model.is_none(), "{:?}", r.model);
        // Noisy, with one lucky observation far from the optimum: "best" is
        // still that observation, and the model's pick is the smooth optimum.
        let mut rng = trial_rng(11, 0);
        let mut noisy: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| {
                (
                    x,
                    -(x - 0.5f64).powi(2) + 0.03 * rng.random_range(-1.0..1.0),
                )
            })
            .collect();
        noisy[1].1 = 0.08;
        let r = recommend(&p, &trials_of(&noisy), 3).unwrap();
        assert_eq!(r.trial, 1);
        let m = r.model.expect("noise this large is material");
        assert!((x_of(&m.config) - 0.5).abs() <= 0.15, "{:?}", m.config);
        assert!(m.noise_sd > 0.0);
    }
}
