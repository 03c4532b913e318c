//! SiLU·mul, the SwiGLU gate: `out = silu(gate) * up` with `silu(x) = x / (1 + e^{−x})`.

use crate::KernelError;
use crate::error::check_len;

/// `out[i] = silu(gate[i]) * up[i]`.
pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) -> Result<(), KernelError> {
    check_len("silu_mul up", up.len(), gate.len())?;
    check_len("silu_mul output", out.len(), gate.len())?;
    for ((o, g), u) in out.iter_mut().zip(gate).zip(up) {
        *o = g / (1.0 + (-g).exp()) * u;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silu_mul_known_values() {
        let mut out = [0f32; 3];
        silu_mul(&[0.0, 1.0, -2.0], &[5.0, 2.0, 1.0], &mut out).unwrap();
        let s = |x: f64| x / (1.0 + (-x).exp());
        assert_eq!(out[0], 0.0);
        assert!((f64::from(out[1]) - 2.0 * s(1.0)).abs() < 1e-6);
        assert!((f64::from(out[2]) - s(-2.0)).abs() < 1e-6);
        assert!(silu_mul(&[1.0], &[1.0, 2.0], &mut out[..1]).is_err());
    }
}
