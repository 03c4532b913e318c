//! RMSNorm: `y = x / sqrt(mean(x²) + eps) * weight`, row by row.

use crate::KernelError;
use crate::error::check_len;

/// RMSNorm of every row of `x` (`[rows, weight.len()]`) into `out`.
pub fn rms_norm(x: &[f32], weight: &[f32], eps: f32, out: &mut [f32]) -> Result<(), KernelError> {
    let h = weight.len();
    if h == 0 {
        return Err(KernelError::Config("RMSNorm weight is empty".into()));
    }
    let rows = x.len() / h;
    check_len("rms_norm input", x.len(), rows * h)?;
    check_len("rms_norm output", out.len(), x.len())?;
    for (xr, or) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let ss: f32 = xr.iter().map(|v| v * v).sum();
        let inv = 1.0 / (ss / h as f32 + eps).sqrt();
        for ((o, v), w) in or.iter_mut().zip(xr).zip(weight) {
            *o = v * inv * w;
        }
    }
    Ok(())
}

/// Reference RMSNorm in f64.
pub fn rms_norm_ref(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let h = weight.len().max(1);
    x.chunks(h)
        .flat_map(|xr| {
            let ms: f64 = xr.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / h as f64;
            let inv = 1.0 / (ms + f64::from(eps)).sqrt();
            xr.iter()
                .zip(weight)
                .map(move |(v, w)| (f64::from(*v) * inv * f64::from(*w)) as f32)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rms_norm_matches_reference_and_checks_shapes() {
        let x: Vec<f32> = (0..24).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let w: Vec<f32> = (0..8).map(|i| 0.5 + i as f32 * 0.1).collect();
        let mut out = vec![f32::NAN; 24];
        rms_norm(&x, &w, 1e-5, &mut out).unwrap();
        for (a, b) in out.iter().zip(rms_norm_ref(&x, &w, 1e-5)) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
        assert!(rms_norm(&x[..20], &w, 1e-5, &mut out[..20]).is_err());
    }
}
