//! Rotary position embeddings in the Hugging Face Llama layout ("rotate half":
//! element `i` pairs with `i + head_dim/2`), with Llama-3 frequency scaling.

use crate::KernelError;

/// Llama-3 frequency scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Llama3Scaling {
    /// Divides low frequencies (8 for Llama-3.1).
    pub factor: f64,
    /// Wavelengths above `original_max_position / low_freq_factor` are scaled fully (1).
    pub low_freq_factor: f64,
    /// Wavelengths below `original_max_position / high_freq_factor` are kept (4).
    pub high_freq_factor: f64,
    /// Context length the model was pretrained with (8192).
    pub original_max_position: f64,
}

/// Rotary embedding parameters.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RopeConfig {
    /// Elements per head (even).
    pub head_dim: usize,
    /// Base of the frequencies (`rope_theta`; 500000 for Llama-3).
    pub theta: f64,
    /// Optional Llama-3 scaling of the frequencies.
    pub scaling: Option<Llama3Scaling>,
}

/// Precomputed inverse frequencies for applying RoPE.
#[derive(Clone, Debug)]
pub struct Rope {
    head_dim: usize,
    inv_freq: Vec<f64>,
}

impl Rope {
    /// Computes the frequencies `theta^(−2i/head_dim)`, scaled when asked.
    pub fn new(cfg: RopeConfig) -> Result<Self, KernelError> {
        if cfg.head_dim == 0 || !cfg.head_dim.is_multiple_of(2) {
            return Err(KernelError::Config(format!(
                "RoPE needs an even, positive head_dim, got {}",
                cfg.head_dim
            )));
        }
        if cfg.theta.is_nan() || cfg.theta <= 1.0 {
            return Err(KernelError::Config(format!(
                "RoPE theta must be > 1, got {}",
                cfg.theta
            )));
        }
        let half = cfg.head_dim / 2;
        let mut inv_freq: Vec<f64> = (0..half)
            .map(|i| cfg.theta.powf(-(2.0 * i as f64) / cfg.head_dim as f64))
            .collect();
        if let Some(s) = cfg.scaling {
            let low_wl = s.original_max_position / s.low_freq_factor;
            let high_wl = s.original_max_position / s.high_freq_factor;
            for f in &mut inv_freq {
                let wl = 2.0 * std::f64::consts::PI / *f;
                if wl > low_wl {
                    *f /= s.factor;
                } else if wl >= high_wl {
                    let smooth = (s.original_max_position / wl - s.low_freq_factor)
                        / (s.high_freq_factor - s.low_freq_factor);
                    *f = (1.0 - smooth) * *f / s.factor + smooth * *f;
                }
            }
        }
        Ok(Self {
            head_dim: cfg.head_dim,
            inv_freq,
        })
    }

    /// The inverse frequencies (`head_dim / 2` of them).
    pub fn inv_freq(&self) -> &[f64] {
        &self.inv_freq
    }

    /// Rotates `x` (`[positions.len(), n_heads * head_dim]`) in place, token `t`
    /// at position `positions[t]`.
    pub fn apply(
        &self,
        x: &mut [f32],
        n_heads: usize,
        positions: &[u32],
    ) -> Result<(), KernelError> {
        let d = self.head_dim;
        crate::error::check_len("rope input", x.len(), positions.len() * n_heads * d)?;
        let half = d / 2;
        let mut cs = vec![(0f32, 0f32); half];
        for (row, &pos) in x.chunks_exact_mut(n_heads * d).zip(positions) {
            for (c, f) in cs.iter_mut().zip(&self.inv_freq) {
                let a = f64::from(pos) * f;
                *c = (a.cos() as f32, a.sin() as f32);
            }
            for head in row.chunks_exact_mut(d) {
                let (lo, hi) = head.split_at_mut(half);
                for ((a, b), (cos, sin)) in lo.iter_mut().zip(hi.iter_mut()).zip(&cs) {
                    let (x1, x2) = (*a, *b);
                    *a = x1 * cos - x2 * sin;
                    *b = x2 * cos + x1 * sin;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(scaling: Option<Llama3Scaling>) -> RopeConfig {
        RopeConfig {
            head_dim: 8,
            theta: 500_000.0,
            scaling,
        }
    }

    #[test]
    fn rotation_keeps_norms_and_scores_depend_on_relative_position_only() {
        let rope = Rope::new(cfg(None)).unwrap();
        let q0: Vec<f32> = (0..8).map(|i| (i as f32 * 0.7).cos()).collect();
        let k0: Vec<f32> = (0..8).map(|i| (i as f32 * 1.3).sin()).collect();
        let score = |pq: u32, pk: u32| {
            let (mut q, mut k) = (q0.clone(), k0.clone());
            rope.apply(&mut q, 1, &[pq]).unwrap();
            rope.apply(&mut k, 1, &[pk]).unwrap();
            let n: f32 = q.iter().map(|v| v * v).sum();
            let n0: f32 = q0.iter().map(|v| v * v).sum();
            assert!((n - n0).abs() < 1e-5);
            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f32>()
        };
        assert!((score(10, 3) - score(107, 100)).abs() < 1e-4);
        assert!((score(5, 5) - q0.iter().zip(&k0).map(|(a, b)| a * b).sum::<f32>()).abs() < 1e-5);
        // position 0 is the identity
        let mut x = q0.clone();
        rope.apply(&mut x, 1, &[0]).unwrap();
        assert_eq!(x, q0);
    }

    #[test]
    fn llama3_scaling_divides_low_frequencies_and_keeps_high_ones() {
        let s = Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 8192.0,
        };
        let plain = Rope::new(RopeConfig {
            head_dim: 128,
            ..cfg(None)
        })
        .unwrap();
        let scaled = Rope::new(RopeConfig {
            head_dim: 128,
            ..cfg(Some(s))
        })
        .unwrap();
        assert_eq!(plain.inv_freq()[0], scaled.inv_freq()[0]);
        let last = plain.inv_freq().len() - 1;
        assert!((scaled.inv_freq()[last] - plain.inv_freq()[last] / 8.0).abs() < 1e-15);
        assert!(
            Rope::new(RopeConfig {
                head_dim: 7,
                ..cfg(None)
            })
            .is_err()
        );
    }
}
