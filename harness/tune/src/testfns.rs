//! Standard optimisation test functions (Branin, Hartmann-6) and a small
//! driver that measures a tuner's simple regret on them — used by the unit
//! tests, the `regret` example and the `suggest` benchmark.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::bo::{BoOptions, BoTuner, recommend};
use crate::error::Result;
use crate::space::{Config, SearchSpace};
use crate::tuner::{Direction, Outcome, Problem, RandomTuner, Trial, Tuner};

/// A test function on a box.
#[derive(Debug, Clone, Copy)]
pub struct TestFn {
    /// Name.
    pub name: &'static str,
    /// `--space` text of its domain.
    pub space: &'static str,
    /// Global minimum value.
    pub optimum: f64,
    /// The function.
    pub f: fn(&[f64]) -> f64,
}

/// Branin on `[−5, 10] × [0, 15]`, minimum 0.397887.
pub fn branin(x: &[f64]) -> f64 {
    let (a, b, c) = (
        1.0,
        5.1 / (4.0 * std::f64::consts::PI.powi(2)),
        5.0 / std::f64::consts::PI,
    );
    let (r, s, t) = (6.0, 10.0, 1.0 / (8.0 * std::f64::consts::PI));
    a * (x[1] - b * x[0] * x[0] + c * x[0] - r).powi(2) + s * (1.0 - t) * x[0].cos() + s
}

/// Hartmann-6 on `[0, 1]^6`, minimum −3.32237.
pub fn hartmann6(x: &[f64]) -> f64 {
    const ALPHA: [f64; 4] = [1.0, 1.2, 3.0, 3.2];
    const A: [[f64; 6]; 4] = [
        [10.0, 3.0, 17.0, 3.5, 1.7, 8.0],
        [0.05, 10.0, 17.0, 0.1, 8.0, 14.0],
        [3.0, 3.5, 1.7, 10.0, 17.0, 8.0],
        [17.0, 8.0, 0.05, 10.0, 0.1, 14.0],
    ];
    const P: [[f64; 6]; 4] = [
        [0.1312, 0.1696, 0.5569, 0.0124, 0.8283, 0.5886],
        [0.2329, 0.4135, 0.8307, 0.3736, 0.1004, 0.9991],
        [0.2348, 0.1451, 0.3522, 0.2883, 0.3047, 0.6650],
        [0.4047, 0.8828, 0.8732, 0.5743, 0.1091, 0.0381],
    ];
    -(0..4)
        .map(|i| {
            ALPHA[i]
                * (-(0..6)
                    .map(|j| A[i][j] * (x[j] - P[i][j]).powi(2))
                    .sum::<f64>())
                .exp()
        })
        .sum::<f64>()
}

/// Branin as a [`TestFn`].
pub const BRANIN: TestFn = TestFn {
    name: "branin",
    space: "x1=-5.0..10.0,x2=0.0..15.0",
    optimum: 0.397_887_357_729_738,
    f: branin,
};
/// Hartmann-6 as a [`TestFn`].
pub const HARTMANN6: TestFn = TestFn {
    name: "hartmann6",
    space: "x1=0.0..1.0,x2=0.0..1.0,x3=0.0..1.0,x4=0.0..1.0,x5=0.0..1.0,x6=0.0..1.0",
    optimum: -3.322_368_011_391_339,
    f: hartmann6,
};

/// Which tuner to benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    /// [`BoTuner`] with default options.
    Bo,
    /// [`RandomTuner`].
    Random,
}

fn coords(c: &Config) -> Vec<f64> {
    c.0.iter().map(|v| v.as_f64().unwrap_or(f64::NAN)).collect()
}

/// Runs `which` on `tf` for `budget` evaluations with observation noise
/// `noise_sd` and returns the simple regret after each evaluation.
///
/// Noise-free: regret of the best observation so far. Noisy: the *true*
/// regret of the recommended point, chosen by GP posterior mean (for BO
/// every 10 evaluations and at the end; random search recommends its best
/// noisy observation).
pub fn regret_curve(
    tf: &TestFn,
    which: Which,
    budget: usize,
    noise_sd: f64,
    seed: u64,
) -> Result<Vec<f64>> {
    let space = SearchSpace::parse(tf.space)?;
    let problem = Problem::single(space, tf.name, Direction::Minimize);
    let mut tuner: Box<dyn Tuner> = match which {
        Which::Bo => Box::new(BoTuner::new(problem.clone(), seed, BoOptions::default())),
        Which::Random => Box::new(RandomTuner::new(problem.clone(), seed)),
    };
    let mut noise_rng = ChaCha8Rng::seed_from_u64(seed ^ 0x005E_ED0F_F00D);
    let noise = Normal::new(0.0, noise_sd.max(1e-300))
        .map_err(|e| crate::Error::invalid("noise_sd", e.to_string(), "give a finite sd ≥ 0"))?;
    let mut curve = Vec::with_capacity(budget);
    let mut best_true = f64::INFINITY;
    let mut best_obs = (f64::INFINITY, f64::INFINITY);
    let mut last_rec = f64::INFINITY;
    for i in 0..budget {
        let Some(c) = tuner.ask(1)?.pop() else { break };
        let truth = (tf.f)(&coords(&c));
        let y = if noise_sd > 0.0 {
            truth + noise.sample(&mut noise_rng)
        } else {
            truth
        };
        best_true = best_true.min(truth);
        if y < best_obs.0 {
            best_obs = (y, truth);
        }
        tuner.tell(Trial {
            index: i,
            config: c,
            outcome: Outcome::ok(vec![y], vec![]),
        });
        let regret = if noise_sd == 0.0 {
            best_true - tf.optimum
        } else if which == Which::Bo && ((i + 1) % 10 == 0 || i + 1 == budget) {
            // Under noise the model's pick is the one to trust, where it has one.
            last_rec = recommend(&problem, tuner.trials(), seed).map_or(best_obs.1, |r| {
                let config = r.model.map_or(r.config, |m| m.config);
                (tf.f)(&coords(&config))
            });
            last_rec - tf.optimum
        } else if which == Which::Bo && last_rec.is_finite() {
            last_rec - tf.optimum
        } else {
            best_obs.1 - tf.optimum
        };
        curve.push(regret);
    }
    Ok(curve)
}

/// How a parallel campaign hands out points ([`batch_regret`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One trial at a time.
    Sequential,
    /// K at a time, the next K only once all K have finished.
    Synchronous,
    /// K in flight; a freed slot gets a new point at once, suggested with
    /// the others pending (Kriging believer).
    Asynchronous,
}

/// Result of [`batch_regret`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BatchRun {
    /// Simple regret of the best observation after the budget.
    pub regret: f64,
    /// Virtual wall time: when the last trial finished.
    pub makespan: f64,
}

/// BO on `tf` (noise-free) for `budget` evaluations, `k` in flight with
/// `batching`, on a virtual clock: trial `i` takes a seeded log-normal
/// duration (median 1, σ = 0.5, from `seed` and `i` alone, so every mode
/// sees the same durations). Completion order follows the clock, so the
/// asynchronous mode is exercised exactly as a cluster would, but
/// deterministically.
pub fn batch_regret(
    tf: &TestFn,
    batching: Batching,
    k: usize,
    budget: usize,
    seed: u64,
) -> Result<BatchRun> {
    let space = SearchSpace::parse(tf.space)?;
    let problem = Problem::single(space, tf.name, Direction::Minimize);
    let mut tuner = BoTuner::new(problem, seed, BoOptions::default());
    let k = if batching == Batching::Sequential {
        1
    } else {
        k.max(1)
    };
    let duration = |i: usize| -> f64 {
        let mut rng = crate::tuner::trial_rng(seed ^ 0xD0_0D, i);
        let z: f64 = rand_distr::StandardNormal.sample(&mut rng);
        (0.5 * z).exp()
    };
    // (finish time, submission number, config)
    let mut flight: Vec<(f64, usize, Config)> = Vec::new();
    let (mut now, mut submitted, mut best) = (0.0_f64, 0usize, f64::INFINITY);
    while tuner.trials().len() < budget {
        let room = k - flight.len();
        let may_submit = match batching {
            Batching::Synchronous => flight.is_empty(),
            _ => room > 0,
        };
        if may_submit && submitted < budget {
            let n = room.min(budget - submitted);
            let pending: Vec<Config> = flight.iter().map(|f| f.2.clone()).collect();
            for c in tuner.ask_pending(n, &pending)? {
                flight.push((now + duration(submitted), submitted, c));
                submitted += 1;
            }
        }
        if flight.is_empty() {
            break;
        }
        let (pos, _) = flight
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.0.total_cmp(&b.1.0).then(a.1.1.cmp(&b.1.1)))
            .expect("flight is not empty");
        let (t, _, c) = flight.remove(pos);
        now = t;
        let y = (tf.f)(&coords(&c));
        best = best.min(y);
        let index = tuner.trials().len();
        tuner.tell(Trial {
            index,
            config: c,
            outcome: Outcome::ok(vec![y], vec![]),
        });
    }
    Ok(BatchRun {
        regret: best - tf.optimum,
        makespan: now,
    })
}

/// Median of a slice (NaN when empty).
pub fn median(v: &[f64]) -> f64 {
    quantile(v, 0.5)
}

/// Linear-interpolated quantile of a slice (NaN when empty).
pub fn quantile(v: &[f64], q: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let pos = q * (s.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    s[lo] + (s[hi] - s[lo]) * (pos - lo as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn functions_attain_their_known_minima() {
        let pi = std::f64::consts::PI;
        for x in [[-pi, 12.275], [pi, 2.275], [9.42478, 2.475]] {
            assert!((branin(&x) - BRANIN.optimum).abs() < 1e-5);
        }
        let xs = [0.20169, 0.150011, 0.476874, 0.275332, 0.311652, 0.6573];
        assert!((hartmann6(&xs) - HARTMANN6.optimum).abs() < 1e-4);
    }

    /// Acceptance (cheap CI version): 2 seeds of Branin, 30 evaluations,
    /// regret ≤ 0.05 — the full 10-seed study is `examples/regret.rs`.
    #[test]
    fn bo_solves_branin_in_30_evaluations() {
        for seed in [1, 2] {
            let curve = regret_curve(&BRANIN, Which::Bo, 30, 0.0, seed).unwrap();
            let r = *curve.last().unwrap();
            assert!(r <= 0.05, "seed {seed}: regret {r} after 30 evaluations");
            let rnd = *regret_curve(&BRANIN, Which::Random, 30, 0.0, seed)
                .unwrap()
                .last()
                .unwrap();
            assert!(rnd > 10.0 * r, "random {rnd} vs bo {r}");
        }
    }

    #[test]
    fn same_seed_same_suggestions() {
        let a = regret_curve(&BRANIN, Which::Bo, 12, 0.0, 7).unwrap();
        let b = regret_curve(&BRANIN, Which::Bo, 12, 0.0, 7).unwrap();
        assert_eq!(a, b);
    }
}
