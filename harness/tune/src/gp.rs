//! Gaussian-process regression on nalgebra: Matérn-5/2 kernel with one
//! length-scale per input (ARD), a signal variance and a learned Gaussian
//! noise variance, on standardised outputs.
//!
//! Hyperparameters `θ = (ln ℓ₁ … ln ℓ_d, ln σ_f², ln σ_n²)` are fitted by
//! minimising the negative log marginal likelihood plus weak priors with
//! argmin's L-BFGS (More–Thuente line search) and an analytic gradient,
//! from several seeded starts (the previous optimum when warm-starting, a
//! default, and random draws, each scored once; the best two are polished).
//! The priors are weak Gamma priors on the natural scale, after BoTorch's
//! classic `SingleTaskGP`: ℓ ~ Γ(3, 3) (BoTorch uses Γ(3, 6); the longer
//! length-scales explore more and escaped Hartmann-6's local optimum in more
//! seeds), σ_f² ~ Γ(2, 0.15), and for the noise only the rate term
//! `0.05·σ_n²` (no shape term, so noise-free functions can fit a noise near
//! the floor) — plus steep quadratic walls outside
//! generous box bounds, so L-BFGS (which is unbounded) cannot run away to
//! degenerate length-scales. The noise variance has a floor of 1e-6 (in
//! standardised units) that keeps the kernel matrix well conditioned; the
//! Cholesky factorisation retries with growing jitter when it still fails.

use std::cell::{Cell, RefCell};

use argmin::core::{CostFunction, Executor, Gradient, State};
use argmin::solver::linesearch::MoreThuenteLineSearch;
use argmin::solver::quasinewton::LBFGS;
use nalgebra::{DMatrix, DVector};
use rand::Rng;

use crate::error::{Error, Result};

type Chol = nalgebra::Cholesky<f64, nalgebra::Dyn>;

const SQRT5: f64 = 2.236_067_977_499_79;
/// Noise variance floor, in standardised output units.
const NOISE_FLOOR: f64 = 1e-6;
/// Gamma(shape, rate) priors for length-scale, signal variance and noise.
const PRIOR_LS: (f64, f64) = (3.0, 3.0);
const PRIOR_SF2: (f64, f64) = (2.0, 0.15);
const PRIOR_SN2: (f64, f64) = (0.0, 0.05);
/// Box bounds on the log hyperparameters (enforced by quadratic walls).
const BOUND_LS: (f64, f64) = (-5.3, 3.9); // ℓ in [0.005, 50]
const BOUND_SF2: (f64, f64) = (-3.0, 3.0); // σ_f² in [0.05, 20]
const BOUND_SN2: (f64, f64) = (-16.0, 1.0); // σ_n² in [1e-7, 2.7] above the floor
const WALL: f64 = 50.0;

/// Fitting options.
#[derive(Debug, Clone)]
pub struct GpOptions {
    /// Number of random starting points (in addition to the default start
    /// and the warm start, if any); each is scored once.
    pub restarts: usize,
    /// How many of the best-scoring starts L-BFGS polishes.
    pub polish: usize,
    /// L-BFGS iteration limit per start.
    pub max_iters: u64,
    /// Fix the noise variance (standardised units, above the floor) instead
    /// of learning it.
    pub fixed_noise: Option<f64>,
}

impl Default for GpOptions {
    fn default() -> Self {
        Self {
            restarts: 8,
            polish: 2,
            max_iters: 60,
            fixed_noise: None,
        }
    }
}

/// Fitted hyperparameters, natural log scale (`θ` in the module docs).
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper(pub Vec<f64>);

impl Hyper {
    /// The length-scales (unit-cube units).
    pub fn lengthscales(&self) -> Vec<f64> {
        let d = self.0.len() - 2;
        self.0[..d].iter().map(|x| x.exp()).collect()
    }
    /// Signal variance (standardised units).
    pub fn signal_var(&self) -> f64 {
        self.0[self.0.len() - 2].exp()
    }
    /// Noise variance (standardised units, including the floor).
    pub fn noise_var(&self) -> f64 {
        self.0[self.0.len() - 1].exp() + NOISE_FLOOR
    }
}

/// A fitted Gaussian process.
#[derive(Debug, Clone)]
pub struct Gp {
    d: usize,
    /// Training inputs, row-major `n × d`.
    x: Vec<f64>,
    /// Standardised training outputs.
    ys: DVector<f64>,
    y_mean: f64,
    y_std: f64,
    hyper: Hyper,
    inv_ls2: Vec<f64>,
    sf2: f64,
    l: DMatrix<f64>,
    alpha: DVector<f64>,
}

fn matern(r: f64) -> f64 {
    (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * (-SQRT5 * r).exp()
}

fn sq_dist(a: &[f64], b: &[f64], inv_ls2: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .zip(inv_ls2)
        .map(|((p, q), w)| (p - q) * (p - q) * w)
        .sum()
}

/// Cholesky with a jitter fallback: tries `K`, then `K + j·I` for
/// `j = 1e-8 … 1e-2` times the mean diagonal.
fn cholesky(k: DMatrix<f64>) -> Result<Chol> {
    if let Some(c) = k.clone().cholesky() {
        return Ok(c);
    }
    let scale = k.diagonal().mean().abs().max(1e-12);
    let mut j = 1e-8;
    while j <= 1e-2 {
        let mut kj = k.clone();
        for i in 0..kj.nrows() {
            kj[(i, i)] += j * scale;
        }
        if let Some(c) = kj.cholesky() {
            return Ok(c);
        }
        j *= 10.0;
    }
    Err(Error::Numerical {
        what: "Cholesky factorisation",
        detail: "the kernel matrix is not positive definite even with jitter 1e-2".into(),
    })
}

/// `K⁻¹ = L⁻ᵀL⁻¹` from the Cholesky factor, filling only the lower
/// triangle (about n³/3 flops instead of the 2n³ of solving against the
/// identity; this is the hot spot of the hyperparameter fit).
fn spd_inverse_lower(l: &DMatrix<f64>) -> DMatrix<f64> {
    let n = l.nrows();
    // M = L⁻¹ (lower triangular), column by column with column-oriented
    // forward substitution (contiguous access to L's columns).
    let mut m = DMatrix::<f64>::zeros(n, n);
    for j in 0..n {
        let mut x = m.column_mut(j);
        x[j] = 1.0;
        for k in j..n {
            let xk = x[k] / l[(k, k)];
            x[k] = xk;
            if xk != 0.0 {
                let lk = l.column(k);
                for i in k + 1..n {
                    x[i] -= lk[i] * xk;
                }
            }
        }
    }
    // K⁻¹[a, b] = Σ_{k ≥ a} M[k, a]·M[k, b] for a ≥ b.
    let mut out = DMatrix::<f64>::zeros(n, n);
    for b in 0..n {
        let cb = m.column(b);
        for a in b..n {
            let ca = m.column(a);
            let mut s = 0.0;
            for k in a..n {
                s += ca[k] * cb[k];
            }
            out[(a, b)] = s;
        }
    }
    out
}

/// A cached evaluation: `(θ, cost, gradient)`.
type Cached = (Vec<f64>, f64, Vec<f64>);

/// Negative log marginal likelihood plus negative log prior and walls, with gradient.
struct Nll<'a> {
    x: &'a [f64],
    y: &'a DVector<f64>,
    n: usize,
    d: usize,
    cache: RefCell<Option<Cached>>,
    evals: Cell<usize>,
    /// Fixed `ln σ_n²`, if the noise is not learned.
    fixed_noise: Option<f64>,
}

/// Evaluation cap per L-BFGS run: a guard against a line search that never
/// converges (argmin's More–Thuente search has no iteration limit of its own).
const MAX_EVALS: usize = 400;

fn wall(t: f64, (lo, hi): (f64, f64)) -> (f64, f64) {
    if t < lo {
        (WALL * (lo - t).powi(2), -2.0 * WALL * (lo - t))
    } else if t > hi {
        (WALL * (t - hi).powi(2), 2.0 * WALL * (t - hi))
    } else {
        (0.0, 0.0)
    }
}

/// −ln Γ(a, b) density of `x = e^t` including the Jacobian, and its derivative in `t`.
fn gamma_prior(t: f64, (a, b): (f64, f64)) -> (f64, f64) {
    (-(a * t - b * t.exp()), -(a - b * t.exp()))
}

impl Nll<'_> {
    fn eval(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        if let Some((t, c, g)) = self.cache.borrow().as_ref()
            && t.as_slice() == theta
        {
            return (*c, g.clone());
        }
        let out = self.compute(theta);
        self.evals.set(self.evals.get() + 1);
        *self.cache.borrow_mut() = Some((theta.to_vec(), out.0, out.1.clone()));
        out
    }

    fn compute(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        if let Some(t) = self.fixed_noise {
            let mut th = theta.to_vec();
            th[self.d + 1] = t;
            let (c, mut g) = self.compute_free(&th);
            g[self.d + 1] = 0.0;
            return (c, g);
        }
        self.compute_free(theta)
    }

    fn compute_free(&self, theta: &[f64]) -> (f64, Vec<f64>) {
        let (n, d) = (self.n, self.d);
        let mut cost = 0.0;
        let mut grad = vec![0.0; d + 2];
        // Priors and walls first; they are also what steers a start that
        // wandered into a region where the likelihood cannot be evaluated.
        for i in 0..d + 2 {
            let (prior, bounds) = if i < d {
                (PRIOR_LS, BOUND_LS)
            } else if i == d {
                (PRIOR_SF2, BOUND_SF2)
            } else {
                (PRIOR_SN2, BOUND_SN2)
            };
            let t = theta[i].clamp(-30.0, 30.0);
            let (pc, pg) = gamma_prior(t, prior);
            let (wc, wg) = wall(theta[i], bounds);
            cost += pc + wc;
            grad[i] += pg + wg;
        }
        let th: Vec<f64> = theta.iter().map(|t| t.clamp(-30.0, 30.0)).collect();
        let inv_ls2: Vec<f64> = th[..d].iter().map(|t| (-2.0 * t).exp()).collect();
        let sf2 = th[d].exp();
        let sn2_free = th[d + 1].exp();
        let sn2 = sn2_free + NOISE_FLOOR;
        let mut k = DMatrix::<f64>::zeros(n, n);
        // Per pair (a > b): the distance r and e^{−√5 r}, reused by the gradient.
        let mut rr = DMatrix::<f64>::zeros(n, n);
        for a in 0..n {
            k[(a, a)] = sf2 + sn2;
            for b in 0..a {
                let r = sq_dist(
                    &self.x[a * d..a * d + d],
                    &self.x[b * d..b * d + d],
                    &inv_ls2,
                )
                .sqrt();
                let e = (-SQRT5 * r).exp();
                let v = sf2 * (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * e;
                k[(a, b)] = v;
                k[(b, a)] = v;
                rr[(a, b)] = r;
                rr[(b, a)] = e;
            }
        }
        let Ok(chol) = cholesky(k) else {
            // Infeasible point: a large cost that grows away from the origin
            // keeps the line search backing off.
            let big = 1e10 + theta.iter().map(|t| t * t).sum::<f64>();
            return (big, theta.iter().map(|t| 2.0 * t).collect());
        };
        let alpha = chol.solve(self.y);
        let logdet: f64 = chol
            .l_dirty()
            .diagonal()
            .iter()
            .map(|v| v.ln())
            .sum::<f64>();
        cost +=
            0.5 * self.y.dot(&alpha) + logdet + 0.5 * n as f64 * (2.0 * std::f64::consts::PI).ln();
        // W = K⁻¹ − ααᵀ; ∂nll/∂θ = ½ tr(W ∂K/∂θ).
        let kinv = spd_inverse_lower(chol.l_dirty());
        let mut g_sf2 = 0.0;
        let mut g_sn2 = 0.0;
        for a in 0..n {
            let waa = kinv[(a, a)] - alpha[a] * alpha[a];
            g_sf2 += 0.5 * waa * sf2;
            g_sn2 += 0.5 * waa * sn2_free;
            let xa = &self.x[a * d..a * d + d];
            for b in 0..a {
                let w = kinv[(a, b)] - alpha[a] * alpha[b];
                let xb = &self.x[b * d..b * d + d];
                let (r, e) = (rr[(a, b)], rr[(b, a)]);
                g_sf2 += w * sf2 * (1.0 + SQRT5 * r + 5.0 / 3.0 * r * r) * e;
                // ∂k/∂ln ℓ_i = σ_f²·(5/3)(1+√5 r)e^{−√5 r}·δ_i²/ℓ_i²  (pairs counted twice: ×2·½)
                let common = w * sf2 * 5.0 / 3.0 * (1.0 + SQRT5 * r) * e;
                for i in 0..d {
                    let dx = xa[i] - xb[i];
                    grad[i] += common * dx * dx * inv_ls2[i];
                }
            }
        }
        grad[d] += g_sf2;
        grad[d + 1] += g_sn2;
        if !cost.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            let big = 1e10 + theta.iter().map(|t| t * t).sum::<f64>();
            return (big, theta.iter().map(|t| 2.0 * t).collect());
        }
        (cost, grad)
    }
}

impl Nll<'_> {
    fn checked(&self, p: &[f64]) -> std::result::Result<(f64, Vec<f64>), argmin::core::Error> {
        if self.evals.get() >= MAX_EVALS {
            return Err(argmin::core::Error::msg(
                "evaluation budget of the hyperparameter fit spent",
            ));
        }
        if p.iter().any(|t| !t.is_finite()) {
            return Err(argmin::core::Error::msg("non-finite hyperparameters"));
        }
        Ok(self.eval(p))
    }
}

impl CostFunction for Nll<'_> {
    type Param = Vec<f64>;
    type Output = f64;
    fn cost(&self, p: &Vec<f64>) -> std::result::Result<f64, argmin::core::Error> {
        Ok(self.checked(p)?.0)
    }
}

impl Gradient for Nll<'_> {
    type Param = Vec<f64>;
    type Gradient = Vec<f64>;
    fn gradient(&self, p: &Vec<f64>) -> std::result::Result<Vec<f64>, argmin::core::Error> {
        Ok(self.checked(p)?.1)
    }
}

impl Gp {
    /// Fits a GP to inputs `x` (points of the unit cube, all of length `d`)
    /// and outputs `y`. `warm` is a previous optimum to start from; `rng`
    /// seeds the random restarts.
    pub fn fit<R: Rng>(
        x: &[Vec<f64>],
        y: &[f64],
        opts: &GpOptions,
        warm: Option<&Hyper>,
        rng: &mut R,
    ) -> Result<Gp> {
        let (flat, ys, y_mean, y_std, d) = prepare(x, y)?;
        let n = y.len();
        let fixed_noise = opts.fixed_noise.map(|v| v.max(1e-12).ln());
        let mut starts: Vec<Vec<f64>> = Vec::new();
        if let Some(w) = warm.filter(|w| w.0.len() == d + 2) {
            starts.push(w.0.clone());
        }
        let mut default = vec![(0.4f64).ln(); d];
        default.extend([0.0, (1e-3f64).ln()]);
        starts.push(default);
        for _ in 0..opts.restarts {
            let mut s: Vec<f64> = (0..d)
                .map(|_| rng.random_range((0.05f64).ln()..(2.0f64).ln()))
                .collect();
            s.push(rng.random_range((0.3f64).ln()..(3.0f64).ln()));
            s.push(rng.random_range((1e-6f64).ln()..(0.1f64).ln()));
            starts.push(s);
        }
        let mut best: Option<(f64, Vec<f64>)> = None;
        let consider = |best: &mut Option<(f64, Vec<f64>)>, c: f64, p: Vec<f64>| {
            if c.is_finite() && best.as_ref().is_none_or(|(bc, _)| c < *bc) {
                *best = Some((c, p));
            }
        };
        // Score every start once, then polish the most promising ones.
        let mut scored: Vec<(f64, Vec<f64>)> = starts
            .into_iter()
            .map(|s| {
                let p = Nll {
                    x: &flat,
                    y: &ys,
                    n,
                    d,
                    cache: RefCell::new(None),
                    evals: Cell::new(0),
                    fixed_noise,
                };
                (p.eval(&s).0, s)
            })
            .filter(|(c, _)| c.is_finite())
            .collect();
        scored.sort_by(|a, b| a.0.total_cmp(&b.0));
        for (start_cost, s) in scored.into_iter().take(opts.polish.max(1)) {
            let problem = Nll {
                x: &flat,
                y: &ys,
                n,
                d,
                cache: RefCell::new(None),
                evals: Cell::new(0),
                fixed_noise,
            };
            consider(&mut best, start_cost, s.clone());
            let linesearch = MoreThuenteLineSearch::new()
                .with_bounds(1e-10, 10.0)
                .map_err(|e| Error::Numerical {
                    what: "GP fit",
                    detail: e.to_string(),
                })?;
            let solver = LBFGS::new(linesearch, 7)
                .with_tolerance_grad(1e-6)
                .and_then(|s| s.with_tolerance_cost(1e-10))
                .map_err(|e| Error::Numerical {
                    what: "GP fit",
                    detail: e.to_string(),
                })?;
            let result = Executor::new(problem, solver)
                .configure(|st| st.param(s).max_iters(opts.max_iters))
                .run();
            match result {
                Ok(res) => {
                    let st = res.state();
                    if let Some(p) = st.get_best_param() {
                        consider(&mut best, st.get_best_cost(), p.clone());
                    }
                }
                Err(e) => tracing::debug!("GP hyperparameter start failed: {e}"),
            }
        }
        let (_, mut theta) = best.ok_or(Error::Numerical {
            what: "GP fit",
            detail: "no start gave a finite likelihood".into(),
        })?;
        if let Some(t) = fixed_noise {
            theta[d + 1] = t;
        }
        Self::assemble(flat, ys, y_mean, y_std, d, Hyper(theta))
    }

    /// A GP with the given hyperparameters (no fitting).
    pub fn with_hyper(x: &[Vec<f64>], y: &[f64], hyper: Hyper) -> Result<Gp> {
        let (flat, ys, y_mean, y_std, d) = prepare(x, y)?;
        if hyper.0.len() != d + 2 {
            return Err(Error::Numerical {
                what: "GP",
                detail: format!("{} hyperparameters for {d} inputs", hyper.0.len()),
            });
        }
        Self::assemble(flat, ys, y_mean, y_std, d, hyper)
    }

    fn assemble(
        x: Vec<f64>,
        ys: DVector<f64>,
        y_mean: f64,
        y_std: f64,
        d: usize,
        hyper: Hyper,
    ) -> Result<Gp> {
        let th: Vec<f64> = hyper.0.iter().map(|t| t.clamp(-30.0, 30.0)).collect();
        let inv_ls2: Vec<f64> = th[..d].iter().map(|t| (-2.0 * t).exp()).collect();
        let sf2 = th[d].exp();
        let sn2 = th[d + 1].exp() + NOISE_FLOOR;
        let n = ys.len();
        let mut k = DMatrix::<f64>::zeros(n, n);
        for a in 0..n {
            k[(a, a)] = sf2 + sn2;
            for b in 0..a {
                let v = sf2
                    * matern(sq_dist(&x[a * d..a * d + d], &x[b * d..b * d + d], &inv_ls2).sqrt());
                k[(a, b)] = v;
                k[(b, a)] = v;
            }
        }
        let chol = cholesky(k)?;
        let alpha = chol.solve(&ys);
        let l = chol.l();
        Ok(Gp {
            d,
            x,
            ys,
            y_mean,
            y_std,
            hyper,
            inv_ls2,
            sf2,
            l,
            alpha,
        })
    }

    /// The fitted hyperparameters.
    pub fn hyper(&self) -> &Hyper {
        &self.hyper
    }

    /// Number of training points.
    pub fn len(&self) -> usize {
        self.ys.len()
    }

    /// Whether the GP has no training points (never true for a fitted GP).
    pub fn is_empty(&self) -> bool {
        self.ys.is_empty()
    }

    /// Posterior mean and standard deviation of the latent function at `u`,
    /// in the original output units (observation noise excluded).
    pub fn predict(&self, u: &[f64]) -> (f64, f64) {
        let n = self.ys.len();
        let d = self.d;
        let mut kv = DVector::<f64>::zeros(n);
        for a in 0..n {
            kv[a] = self.sf2 * matern(sq_dist(&self.x[a * d..a * d + d], u, &self.inv_ls2).sqrt());
        }
        let mean = kv.dot(&self.alpha);
        let v = self
            .l
            .solve_lower_triangular(&kv)
            .unwrap_or_else(|| DVector::zeros(n));
        let var = (self.sf2 - v.norm_squared()).max(1e-12);
        (self.y_mean + self.y_std * mean, self.y_std * var.sqrt())
    }

    /// The observation noise standard deviation, original units.
    pub fn noise_sd(&self) -> f64 {
        self.y_std * self.hyper.noise_var().sqrt()
    }

    /// The GP with one more (fantasy) observation and the same
    /// hyperparameters and standardisation — the Kriging-believer update.
    pub fn condition(&self, u: &[f64], y: f64) -> Result<Gp> {
        let mut x = self.x.clone();
        x.extend_from_slice(u);
        let mut ys = self.ys.as_slice().to_vec();
        ys.push((y - self.y_mean) / self.y_std);
        Self::assemble(
            x,
            DVector::from_vec(ys),
            self.y_mean,
            self.y_std,
            self.d,
            self.hyper.clone(),
        )
    }

    /// The training inputs.
    pub fn inputs(&self) -> impl Iterator<Item = &[f64]> {
        self.x.chunks(self.d)
    }
}

type Prepared = (Vec<f64>, DVector<f64>, f64, f64, usize);

fn prepare(x: &[Vec<f64>], y: &[f64]) -> Result<Prepared> {
    if x.is_empty() || x.len() != y.len() {
        return Err(Error::Numerical {
            what: "GP",
            detail: format!(
                "{} inputs for {} outputs (need at least one)",
                x.len(),
                y.len()
            ),
        });
    }
    let d = x[0].len();
    if x.iter().any(|r| r.len() != d) || y.iter().any(|v| !v.is_finite()) {
        return Err(Error::Numerical {
            what: "GP",
            detail: "ragged inputs or non-finite outputs".into(),
        });
    }
    let n = y.len() as f64;
    let mean = y.iter().sum::<f64>() / n;
    let var = y.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n;
    let std = if var.sqrt() > 1e-12 * mean.abs().max(1.0) {
        var.sqrt()
    } else {
        1.0
    };
    let ys = DVector::from_iterator(y.len(), y.iter().map(|v| (v - mean) / std));
    Ok((x.concat(), ys, mean, std, d))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn data(n: usize, noise: f64, seed: u64) -> (Vec<Vec<f64>>, Vec<f64>) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let x: Vec<Vec<f64>> = (0..n)
            .map(|_| vec![rng.random::<f64>(), rng.random::<f64>()])
            .collect();
        // Depends strongly on x0 and not at all on x1.
        let y = x
            .iter()
            .map(|p| (6.0 * p[0]).sin() + noise * (rng.random::<f64>() - 0.5) * 3.46)
            .collect();
        (x, y)
    }

    #[test]
    fn triangular_inverse_matches_nalgebra() {
        let (x, y) = data(15, 0.0, 9);
        let gp = Gp::with_hyper(&x, &y, Hyper(vec![-1.0, -0.5, 0.0, -5.0])).unwrap();
        let ours = spd_inverse_lower(&gp.l);
        let full = (&gp.l * gp.l.transpose()).try_inverse().unwrap();
        for a in 0..15 {
            for b in 0..=a {
                assert!((ours[(a, b)] - full[(a, b)]).abs() < 1e-6 * full[(a, b)].abs().max(1.0));
            }
        }
    }

    #[test]
    fn analytic_gradient_matches_finite_differences() {
        let (x, y) = data(12, 0.1, 1);
        let (flat, ys, _, _, d) = prepare(&x, &y).unwrap();
        let p = Nll {
            x: &flat,
            y: &ys,
            n: 12,
            d,
            cache: RefCell::new(None),
            evals: Cell::new(0),
            fixed_noise: None,
        };
        let theta = vec![-0.7, 0.3, 0.2, -3.0];
        let (_, g) = p.compute(&theta);
        for i in 0..theta.len() {
            let h = 1e-5;
            let mut tp = theta.clone();
            tp[i] += h;
            let mut tm = theta.clone();
            tm[i] -= h;
            let fd = (p.compute(&tp).0 - p.compute(&tm).0) / (2.0 * h);
            assert!(
                (fd - g[i]).abs() < 1e-4 * fd.abs().max(1.0),
                "θ{i}: analytic {} vs numeric {fd}",
                g[i]
            );
        }
    }

    #[test]
    fn fit_learns_relevance_and_interpolates() {
        let (x, y) = data(30, 0.0, 2);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let gp = Gp::fit(&x, &y, &GpOptions::default(), None, &mut rng).unwrap();
        let ls = gp.hyper().lengthscales();
        assert!(
            ls[1] > 3.0 * ls[0],
            "irrelevant input should get a longer length-scale: {ls:?}"
        );
        for (xi, yi) in x.iter().zip(&y) {
            let (m, _) = gp.predict(xi);
            assert!((m - yi).abs() < 0.05, "{m} vs {yi}");
        }
        let (m, s) = gp.predict(&[0.25, 0.5]);
        assert!((m - 1.5f64.sin()).abs() < 0.1 && s < 0.1, "{m} ± {s}");
        assert!(gp.noise_sd() < 0.05);
    }

    #[test]
    fn fit_learns_noise() {
        let (x, y) = data(60, 0.3, 4);
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let gp = Gp::fit(&x, &y, &GpOptions::default(), None, &mut rng).unwrap();
        let sd = gp.noise_sd();
        assert!(
            (0.15..0.5).contains(&sd),
            "noise sd {sd} should be near 0.3"
        );
    }

    #[test]
    fn believer_shrinks_uncertainty_at_the_fantasy() {
        let (x, y) = data(10, 0.0, 6);
        let gp = Gp::with_hyper(&x, &y, Hyper(vec![-1.0, 0.0, 0.0, -8.0])).unwrap();
        let u = [0.9, 0.9];
        let (m, s) = gp.predict(&u);
        let g2 = gp.condition(&u, m).unwrap();
        let (m2, s2) = g2.predict(&u);
        assert!(
            (m2 - m).abs() < 1e-3 && s2 < 0.2 * s,
            "{m},{s} -> {m2},{s2}"
        );
        assert_eq!(g2.len(), 11);
    }

    #[test]
    fn duplicate_points_do_not_break_the_factorisation() {
        let x = vec![vec![0.5, 0.5]; 5];
        let y = vec![1.0, 1.1, 0.9, 1.0, 1.05];
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let gp = Gp::fit(&x, &y, &GpOptions::default(), None, &mut rng).unwrap();
        let (m, _) = gp.predict(&[0.5, 0.5]);
        assert!((m - 1.01).abs() < 0.1, "{m}");
    }
}
