//! Adapter ids for multi-LoRA workloads: validation of a [`LoraSpec`] and the
//! seeded draw of each request's adapter from its popularity law.
//!
//! Adapters come from their own ChaCha12 stream, so adding adapters to a
//! workload leaves its lengths and arrivals untouched. Adapter `k` has
//! probability proportional to `(k + 1)^-s` under Zipf (uniform is `s = 0`);
//! samples are drawn by inverting the cumulative weights, which is exact for
//! every `s` and every number of adapters. All turns of one conversation use
//! the adapter of its first turn.

use fuselab_core::{Error, LoraSpec, Popularity, RequestSpec, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;

/// Stream number of the adapter draws (fixed forever, like the others).
const STREAM_ADAPTER: u64 = 5;

/// Most adapters one workload may name.
pub const MAX_ADAPTERS: u32 = 1 << 16;

/// Largest LoRA rank accepted.
pub const MAX_RANK: u32 = 1024;

/// Largest Zipf exponent accepted (beyond it virtually every request uses adapter 0).
pub const MAX_ZIPF_S: f64 = 10.0;

/// Checks a [`LoraSpec`]; every error names the field and how to fix it.
///
/// # Errors
/// [`Error::Invalid`] for 0 or too many adapters, a rank out of range, or a
/// Zipf exponent that is negative, not finite or too large.
pub fn validate_lora(l: &LoraSpec) -> Result<()> {
    if l.adapters == 0 || l.adapters > MAX_ADAPTERS {
        return Err(Error::invalid(
            "lora.adapters",
            format!("{} adapters", l.adapters),
            format!("give between 1 and {MAX_ADAPTERS} adapters (--adapters N)"),
        ));
    }
    if l.rank == 0 || l.rank > MAX_RANK {
        return Err(Error::invalid(
            "lora.rank",
            format!("rank {}", l.rank),
            format!("give a LoRA rank between 1 and {MAX_RANK} (--lora-rank R), e.g. 16"),
        ));
    }
    if let Popularity::Zipf { s } = l.popularity
        && !(s.is_finite() && (0.0..=MAX_ZIPF_S).contains(&s))
    {
        return Err(Error::invalid(
            "lora.popularity.s",
            format!("Zipf exponent {s} is not in [0, {MAX_ZIPF_S}]"),
            "give --zipf S with 0 <= S <= 10 (0 is uniform, 1.1 is typical skew)",
        ));
    }
    Ok(())
}

/// Draws adapter ids from a popularity law by inverse CDF.
#[derive(Clone, Debug)]
pub struct AdapterSampler {
    cdf: Vec<f64>,
    rng: ChaCha12Rng,
}

impl AdapterSampler {
    /// A sampler for `spec`, seeded from the workload seed on the adapter stream.
    pub fn new(spec: &LoraSpec, seed: u64) -> Self {
        let s = match spec.popularity {
            Popularity::Uniform => 0.0,
            Popularity::Zipf { s } => s,
        };
        let mut total = 0.0;
        let cdf = (0..spec.adapters)
            .map(|k| {
                total += f64::from(k + 1).powf(-s);
                total
            })
            .collect::<Vec<_>>();
        let cdf = cdf.into_iter().map(|c| c / total).collect();
        let mut rng = ChaCha12Rng::seed_from_u64(seed);
        rng.set_stream(STREAM_ADAPTER);
        Self { cdf, rng }
    }

    /// The probability of adapter `k`.
    pub fn probability(&self, k: u32) -> f64 {
        let k = k as usize;
        match k {
            0 => self.cdf.first().copied().unwrap_or(0.0),
            _ if k < self.cdf.len() => self.cdf[k] - self.cdf[k - 1],
            _ => 0.0,
        }
    }

    /// The next adapter id.
    pub fn sample(&mut self) -> u32 {
        let u: f64 = self.rng.random();
        let k = self.cdf.partition_point(|&c| c <= u);
        u32::try_from(k.min(self.cdf.len().saturating_sub(1))).unwrap_or(0)
    }
}

/// Gives every request an adapter drawn from `spec` (in id order; the turns
/// of a conversation share the first turn's draw).
pub(crate) fn assign_adapters(spec: &LoraSpec, seed: u64, requests: &mut [RequestSpec]) {
    let mut sampler = AdapterSampler::new(spec, seed);
    let mut by_conversation = std::collections::HashMap::new();
    for r in requests.iter_mut() {
        r.adapter = Some(match &r.conversation {
            Some(c) => *by_conversation
                .entry(c.id)
                .or_insert_with(|| sampler.sample()),
            None => sampler.sample(),
        });
    }
}

/// Checks that every adapter a trace names is below `spec.adapters`.
pub(crate) fn check_trace_adapters(spec: &LoraSpec, requests: &[RequestSpec]) -> Result<()> {
    if let Some(r) = requests
        .iter()
        .find(|r| r.adapter.is_some_and(|a| a >= spec.adapters))
    {
        return Err(Error::invalid(
            "adapter",
            format!(
                "request {} names adapter {} but the workload has only {} adapters (ids 0..{})",
                r.id,
                r.adapter.unwrap_or(0),
                spec.adapters,
                spec.adapters
            ),
            "raise --adapters or fix the trace's `adapter` field",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(adapters: u32, popularity: Popularity) -> LoraSpec {
        LoraSpec {
            adapters,
            rank: 16,
            popularity,
        }
    }

    #[test]
    fn zipf_frequencies_match_the_law() {
        let l = spec(8, Popularity::Zipf { s: 1.1 });
        let mut s = AdapterSampler::new(&l, 3);
        let n = 200_000;
        let mut counts = [0u32; 8];
        for _ in 0..n {
            counts[s.sample() as usize] += 1;
        }
        for (k, &c) in counts.iter().enumerate() {
            let p = s.probability(k as u32);
            let sd = (p * (1.0 - p) / f64::from(n)).sqrt();
            let got = f64::from(c) / f64::from(n);
            assert!((got - p).abs() < 5.0 * sd, "adapter {k}: {got} vs {p}");
        }
        assert!(counts[0] > 3 * counts[7]);
    }

    #[test]
    fn uniform_and_zipf_zero_agree() {
        let a: Vec<u32> = {
            let mut s = AdapterSampler::new(&spec(64, Popularity::Uniform), 9);
            (0..1000).map(|_| s.sample()).collect()
        };
        let mut z = AdapterSampler::new(&spec(64, Popularity::Zipf { s: 0.0 }), 9);
        let b: Vec<u32> = (0..1000).map(|_| z.sample()).collect();
        assert_eq!(a, b);
        assert!(a.iter().all(|&k| k < 64));
        assert!((z.probability(5) - 1.0 / 64.0).abs() < 1e-12);
    }

    #[test]
    fn bad_specs_name_the_field() {
        let e = validate_lora(&spec(0, Popularity::Uniform)).unwrap_err();
        assert!(e.to_string().contains("lora.adapters"), "{e}");
        let mut l = spec(4, Popularity::Zipf { s: -1.0 });
        assert!(
            validate_lora(&l)
                .unwrap_err()
                .to_string()
                .contains("lora.popularity.s")
        );
        l.popularity = Popularity::Zipf { s: f64::NAN };
        assert!(validate_lora(&l).is_err());
        l = spec(4, Popularity::Uniform);
        l.rank = 0;
        assert!(
            validate_lora(&l)
                .unwrap_err()
                .to_string()
                .contains("lora.rank")
        );
        assert!(validate_lora(&spec(512, Popularity::Zipf { s: 1.1 })).is_ok());
    }
}
