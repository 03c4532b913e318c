//! Acquisition functions and the normal-distribution helpers they need:
//! numerically stable log expected improvement (Ament et al., 2023,
//! "Unexpected improvements to expected improvement") and log probability
//! of feasibility.
//!
//! Everything here is for *minimisation*: improvement means going below the
//! incumbent.

use std::f64::consts::{PI, SQRT_2};

/// `ln(2π)/2`.
const C1: f64 = 0.918_938_533_204_672_8;
/// `ln(π/2)/2`.
const C2: f64 = 0.225_791_352_644_727_4;

/// Scaled complementary error function `erfcx(x) = exp(x²)·erfc(x)` for
/// `x ≥ 0` (Chebyshev fit of Numerical Recipes §6.2, relative error
/// < 1.2e-7); for `x < 0` uses `2·exp(x²) − erfcx(−x)`.
pub fn erfcx(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 * (x * x).exp() - erfcx(-x);
    }
    let t = 1.0 / (1.0 + 0.5 * x);
    let poly = -1.265_512_23
        + t * (1.000_023_68
            + t * (0.374_091_96
                + t * (0.096_784_18
                    + t * (-0.186_288_06
                        + t * (0.278_868_07
                            + t * (-1.135_203_98
                                + t * (1.488_515_87 + t * (-0.822_152_23 + t * 0.170_872_77))))))));
    t * poly.exp()
}

/// Complementary error function.
pub fn erfc(x: f64) -> f64 {
    if x >= 0.0 {
        erfcx(x) * (-x * x).exp()
    } else {
        2.0 - erfc(-x)
    }
}

/// Standard normal density.
pub fn norm_pdf(z: f64) -> f64 {
    (-0.5 * z * z).exp() / (2.0 * PI).sqrt()
}

/// Standard normal distribution function.
pub fn norm_cdf(z: f64) -> f64 {
    0.5 * erfc(-z / SQRT_2)
}

/// `ln Φ(z)`, accurate far into the lower tail.
pub fn log_norm_cdf(z: f64) -> f64 {
    if z > -1.0 {
        norm_cdf(z).ln()
    } else {
        // Φ(z) = erfc(-z/√2)/2 = erfcx(-z/√2)·exp(-z²/2)/2
        (0.5 * erfcx(-z / SQRT_2)).ln() - 0.5 * z * z
    }
}

/// `ln(1 − e^x)` for `x < 0`, accurate for `x` near 0 and very negative.
fn log1mexp(x: f64) -> f64 {
    if x > -std::f64::consts::LN_2 {
        (-x.exp_m1()).ln()
    } else {
        (-x.exp()).ln_1p()
    }
}

/// `ln h(z)` where `h(z) = φ(z) + z·Φ(z)`, so that `EI = σ·h((best − μ)/σ)`.
/// Follows the three branches of Ament et al. (2023), eq. (9).
pub fn log_h(z: f64) -> f64 {
    if z > -1.0 {
        (norm_pdf(z) + z * norm_cdf(z)).max(f64::MIN_POSITIVE).ln()
    } else if z > -100.0 {
        -0.5 * z * z - C1 + log1mexp((erfcx(-z / SQRT_2) * z.abs()).ln() + C2)
    } else {
        // Asymptotic h(z) = φ(z)/z²·(1 − 3/z² + O(z⁻⁴)) for z → −∞; the
        // erfcx form loses precision here because 1 − |z|·√(π/2)·erfcx ≈ 1/z².
        -0.5 * z * z - C1 - 2.0 * z.abs().ln() + (-3.0 / (z * z)).ln_1p()
    }
}

/// Log expected improvement below `best` of a Gaussian prediction
/// `N(mean, sd²)`; finite for every input with `sd > 0`.
pub fn log_ei(mean: f64, sd: f64, best: f64) -> f64 {
    let sd = sd.max(1e-12);
    log_h((best - mean) / sd) + sd.ln()
}

/// `ln P(Y ≤ threshold)` for `Y ~ N(mean, sd²)`.
pub fn log_prob_below(mean: f64, sd: f64, threshold: f64) -> f64 {
    log_norm_cdf((threshold - mean) / sd.max(1e-12))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn erfc_matches_reference_values() {
        // Reference values from Abramowitz & Stegun Table 7.1.
        for (x, want) in [
            (0.0, 1.0),
            (0.5, 0.479_500_122),
            (1.0, 0.157_299_207),
            (2.0, 0.004_677_735),
            (-1.0, 1.842_700_793),
        ] {
            assert!(
                (erfc(x) - want).abs() < 2e-7 * want.max(1e-3),
                "erfc({x}) = {}",
                erfc(x)
            );
        }
        // erfcx(x)·x·√π → 1 as x → ∞.
        assert!((erfcx(1e3) * 1e3 * PI.sqrt() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn log_h_is_continuous_and_matches_the_direct_formula() {
        for z in [-0.999, -0.5, 0.0, 0.7, 3.0] {
            let direct = (norm_pdf(z) + z * norm_cdf(z)).ln();
            assert!((log_h(z) - direct).abs() < 1e-6, "z = {z}");
        }
        // Across the branch boundaries the function must be continuous.
        for b in [-1.0, -100.0] {
            let (l, r) = (log_h(b - 1e-9), log_h(b + 1e-9));
            assert!((l - r).abs() < 1e-3 * l.abs().max(1.0), "{b}: {l} vs {r}");
        }
        // Monotone increasing and finite far into the tail, where plain EI is 0.
        let mut prev = f64::NEG_INFINITY;
        for i in 0..700 {
            let z = -130.0 + 0.2 * i as f64;
            let v = log_h(z);
            assert!(v.is_finite() && v > prev, "z = {z}: {v}");
            prev = v;
        }
        assert!(log_h(-40.0) < -800.0);
    }

    #[test]
    fn log_norm_cdf_tail() {
        assert!((log_norm_cdf(0.0) - 0.5f64.ln()).abs() < 1e-7);
        // ln Φ(−30) ≈ −z²/2 − ln(−z√(2π))
        let z: f64 = -30.0;
        let approx = -0.5 * z * z - (-z * (2.0 * PI).sqrt()).ln();
        assert!((log_norm_cdf(z) - approx).abs() < 1e-2);
    }

    #[test]
    fn log_ei_prefers_lower_mean_and_higher_sd() {
        assert!(log_ei(0.0, 1.0, 0.5) > log_ei(1.0, 1.0, 0.5));
        assert!(log_ei(1.0, 2.0, 0.5) > log_ei(1.0, 1.0, 0.5));
    }
}
