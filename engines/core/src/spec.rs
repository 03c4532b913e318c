//! Speculative decoding: the acceptance model, the acceptance rules and the
//! closed forms the engine's measurements are checked against.
//!
//! Each decode step of a speculating engine (`spec_k > 0`) runs the backend's
//! draft model `k` times per sequence to propose `k` tokens, then the target
//! verifies them in one ragged forward: a decode entry of `k + 1` positions
//! (the last generated token and the `k` drafts; see [`crate::BatchEntry`]).
//! The longest prefix of drafts equal to the target's own greedy tokens is
//! kept, plus the target's token after it, so greedy output is exactly the
//! output without speculation. The KV of rejected positions is rolled back
//! ([`crate::BlockManager::truncate`]).
//!
//! Where acceptance comes from is recorded with every run:
//! * **measured**: a backend with real numerics runs a real draft model (the
//!   CPU backend's perturbed copy of its target) and acceptance is whatever
//!   the two models agree on;
//! * **modelled**: an [`AcceptanceModel`] decides each draft token's fate by
//!   a seeded coin of probability α, independent across tokens (the i.i.d.
//!   model of Leviathan et al., under which the mean tokens per target
//!   forward is [`expected_block_efficiency`]). The simulator, which has no
//!   tokens, always uses it.
//!
//! The engine samples greedily unless its backend samples at a temperature
//! ([`Sampler`], the CPU backend's `--temperature`). Then the standard rule
//! is [`rejection_sample`] (accept draft token x with probability
//! min(1, p(x)/q(x)), else sample from norm(max(0, p − q))), applied by
//! [`Sampler::verify`]; the modelled acceptance is that rule with
//! E[min(1, p/q)] = α, which is what the coin draws.

use fuselab_core::{Error, RequestId};

/// A seeded model of draft-token acceptance: every draft token is accepted
/// with probability `alpha`, independently, decided by a hash of the seed,
/// the request and the token's position (so the outcome does not depend on
/// batch composition, timing or policy).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AcceptanceModel {
    /// Per-token acceptance probability, in `[0, 1]`.
    pub alpha: f64,
    /// Seed of the coin.
    pub seed: u64,
}

impl AcceptanceModel {
    /// A model of per-token acceptance `alpha`.
    ///
    /// # Errors
    /// An input error naming `--spec-alpha` when `alpha` is not in `[0, 1]`.
    pub fn new(alpha: f64, seed: u64) -> Result<Self, Error> {
        if !(0.0..=1.0).contains(&alpha) {
            return Err(Error::invalid(
                "--spec-alpha",
                format!("{alpha} is not a probability"),
                "give the per-token acceptance probability in [0, 1], e.g. --spec-alpha 0.7",
            ));
        }
        Ok(Self { alpha, seed })
    }

    /// Whether the draft token proposed for position `pos` of `request` is accepted.
    ///
    /// # Example
    /// ```
    /// let m = fuselab_engine::AcceptanceModel::new(0.7, 1).unwrap();
    /// let n = (0..10_000).filter(|&p| m.accepts(3, p)).count();
    /// assert!((6_800..7_200).contains(&n));
    /// assert_eq!(m.accepts(3, 17), m.accepts(3, 17));
    /// ```
    pub fn accepts(&self, request: RequestId, pos: u32) -> bool {
        let x =
            mix(mix(self.seed ^ 0x9e37_79b9_7f4a_7c15) ^ request.rotate_left(17) ^ u64::from(pos));
        // 53 uniform bits in [0, 1).
        ((x >> 11) as f64) * (1.0 / (1u64 << 53) as f64) < self.alpha
    }

    /// Drafts accepted out of `k` proposed for positions `first_pos ..`: the
    /// number of leading accepted tokens.
    pub fn accepted_prefix(&self, request: RequestId, first_pos: u32, k: u32) -> u32 {
        (0..k)
            .take_while(|&i| self.accepts(request, first_pos + i))
            .count() as u32
    }
}

/// The independent random streams of [`Sampler`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SamplerStream {
    /// The target's samples.
    Target = 1,
    /// The draft's proposals.
    Draft = 2,
    /// The acceptance draw of a draft token.
    Accept = 3,
    /// The residual draw after a rejection.
    Residual = 4,
}

/// Sampling at a temperature: the Gumbel-max trick over `logits / T`, with
/// counter-based noise keyed by the seed, the stream, the request and the
/// position of the token drawn, so a draw does not depend on batch
/// composition, timing or policy (the same request samples the same tokens
/// from the same logits in any run).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sampler {
    /// Temperature, > 0.
    pub temperature: f64,
    /// Seed of the noise.
    pub seed: u64,
}

impl Sampler {
    /// A sampler at `temperature`.
    ///
    /// # Errors
    /// An input error naming `--temperature` unless it is finite and > 0.
    pub fn new(temperature: f64, seed: u64) -> Result<Self, Error> {
        if !(temperature.is_finite() && temperature > 0.0) {
            return Err(Error::invalid(
                "--temperature",
                format!("{temperature} is not a temperature > 0"),
                "give a temperature > 0, e.g. --temperature 0.8, or leave it out for greedy decoding",
            ));
        }
        Ok(Self { temperature, seed })
    }

    fn key(&self, stream: SamplerStream, request: RequestId, pos: u32) -> u64 {
        mix(
            mix(mix(self.seed ^ 0x5a4d_u64.rotate_left(40)) ^ stream as u64)
                ^ request.rotate_left(23)
                ^ u64::from(pos),
        )
    }

    /// A uniform draw in `[0, 1)` of `stream` for the token at `pos` of `request`.
    pub fn uniform(&self, stream: SamplerStream, request: RequestId, pos: u32) -> f64 {
        unit(mix(self.key(stream, request, pos)))
    }

    /// `softmax(logits / T)`.
    pub fn probs(&self, logits: &[f32]) -> Vec<f32> {
        let t = self.temperature;
        let max = logits.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        let e: Vec<f64> = logits
            .iter()
            .map(|&v| ((f64::from(v) - f64::from(max)) / t).exp())
            .collect();
        let sum: f64 = e.iter().sum();
        e.iter().map(|v| (v / sum) as f32).collect()
    }

    /// A token drawn from `softmax(logits / T)`: the largest `logit / T + g`
    /// with `g` Gumbel noise of `stream` per token id.
    pub fn sample(
        &self,
        logits: &[f32],
        stream: SamplerStream,
        request: RequestId,
        pos: u32,
    ) -> u32 {
        let key = self.key(stream, request, pos);
        let mut best = (f64::NEG_INFINITY, 0u32);
        for (i, &v) in logits.iter().enumerate() {
            let u = unit(mix(key ^ (i as u64).wrapping_mul(0xd6e8_feb8_6659_fd93)));
            let g = -(-(u.max(f64::MIN_POSITIVE)).ln()).ln();
            let score = f64::from(v) / self.temperature + g;
            if score > best.0 {
                best = (score, i as u32);
            }
        }
        best.1
    }

    /// The standard speculative-sampling verdicts on one verify entry of
    /// `request`: `drafts[j]` (proposed for position `first_pos + j`, drawn
    /// from `draft_probs[j]`) against the target's `logits[j]` at that
    /// position, `logits` holding one more row (the position after the last
    /// draft). Returns `drafts.len() + 1` tokens in the shape greedy
    /// verification reads (see [`greedy_accepted`]): the accepted drafts, then
    /// the replacement drawn from the residual at the first rejection, or the
    /// target's own sample after the last draft when all are accepted; the
    /// kept tokens are distributed exactly as the target's.
    pub fn verify(
        &self,
        logits: &[Vec<f32>],
        drafts: &[u32],
        draft_probs: &[Vec<f32>],
        request: RequestId,
        first_pos: u32,
    ) -> Vec<u32> {
        let mut out = Vec::with_capacity(drafts.len() + 1);
        for (j, (&d, q)) in drafts.iter().zip(draft_probs).enumerate() {
            let pos = first_pos + j as u32;
            let p = self.probs(&logits[j]);
            match rejection_sample(
                &p,
                q,
                d,
                self.uniform(SamplerStream::Accept, request, pos),
                self.uniform(SamplerStream::Residual, request, pos),
            ) {
                Verdict::Accept(t) => out.push(t),
                Verdict::Reject(t) => {
                    // The rest is never read: greedy verification stops here.
                    out.resize(drafts.len() + 1, t);
                    return out;
                }
            }
        }
        let last = first_pos + drafts.len() as u32;
        out.push(self.sample(&logits[drafts.len()], SamplerStream::Target, request, last));
        out
    }
}

/// 53 uniform bits of `x` in `[0, 1)`.
fn unit(x: u64) -> f64 {
    ((x >> 11) as f64) * (1.0 / (1u64 << 53) as f64)
}

fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Greedy verification: how many leading `drafts` equal the target's tokens
/// `target` (its greedy token at each verified position, `drafts.len() + 1`
/// of them).
///
/// # Example
/// ```
/// assert_eq!(fuselab_engine::greedy_accepted(&[5, 6, 7], &[5, 6, 9, 1]), 2);
/// ```
pub fn greedy_accepted(drafts: &[u32], target: &[u32]) -> u32 {
    drafts
        .iter()
        .zip(target)
        .take_while(|(d, t)| d == t)
        .count() as u32
}

/// Expected tokens per target forward of one sequence when each of `k` draft
/// tokens is accepted independently with probability `alpha`:
/// `(1 − α^(k+1)) / (1 − α)` (`k + 1` at α = 1).
///
/// # Example
/// ```
/// let e = fuselab_engine::expected_block_efficiency(0.7, 4);
/// assert!((e - 2.7731).abs() < 1e-4);
/// assert_eq!(fuselab_engine::expected_block_efficiency(1.0, 4), 5.0);
/// ```
pub fn expected_block_efficiency(alpha: f64, k: u32) -> f64 {
    if (1.0 - alpha).abs() < 1e-12 {
        return f64::from(k) + 1.0;
    }
    (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha)
}

/// The outcome of [`rejection_sample`] for one draft token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The draft token is kept.
    Accept(u32),
    /// The draft token is rejected and replaced by this one (drawn from the residual).
    Reject(u32),
}

/// The speculative-sampling rule (Leviathan et al. 2023, Chen et al. 2023)
/// for one draft token `x` drawn from the draft's distribution `q`, with the
/// target's distribution `p` (both over the vocabulary, summing to 1): accept
/// when `u_accept < min(1, p(x)/q(x))`, else return a token drawn with
/// `u_residual` from `norm(max(0, p − q))`. The kept tokens are distributed
/// exactly as `p`. `u_accept` and `u_residual` are uniform in `[0, 1)`.
///
/// # Example
/// ```
/// use fuselab_engine::{Verdict, rejection_sample};
/// let (p, q) = ([0.5, 0.5], [0.9, 0.1]);
/// assert_eq!(rejection_sample(&p, &q, 0, 0.5, 0.0), Verdict::Accept(0)); // 0.5 < 0.5/0.9
/// assert_eq!(rejection_sample(&p, &q, 0, 0.6, 0.0), Verdict::Reject(1)); // the residual is all on 1
/// ```
pub fn rejection_sample(p: &[f32], q: &[f32], x: u32, u_accept: f64, u_residual: f64) -> Verdict {
    let i = x as usize;
    let (px, qx) = (
        f64::from(p.get(i).copied().unwrap_or(0.0)),
        f64::from(q.get(i).copied().unwrap_or(0.0)),
    );
    let ratio = if qx > 0.0 { (px / qx).min(1.0) } else { 1.0 };
    if u_accept < ratio {
        return Verdict::Accept(x);
    }
    let residual: Vec<f64> = p
        .iter()
        .zip(q.iter().chain(std::iter::repeat(&0.0)))
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).max(0.0))
        .collect();
    let total: f64 = residual.iter().sum();
    let weights: Vec<f64> = if total > 0.0 {
        residual
    } else {
        p.iter().map(|&a| f64::from(a)).collect()
    };
    let total: f64 = weights.iter().sum();
    let mut acc = 0.0;
    let target = u_residual * total;
    for (t, w) in weights.iter().enumerate() {
        acc += w;
        if target < acc {
            return Verdict::Reject(t as u32);
        }
    }
    Verdict::Reject(weights.iter().rposition(|&w| w > 0.0).unwrap_or(0) as u32)
}

/// The `spec_k` knob's largest value.
pub const MAX_SPEC_K: u32 = 16;

/// The next draft length of a sequence under the `spec_adaptive` knob, from
/// its current one `k`, the knob's `k_max` and the last round's `accepted`:
/// one longer after a fully accepted round, one shorter (never below 1)
/// when fewer than half the drafts were accepted, else unchanged.
///
/// # Example
/// ```
/// use fuselab_engine::adapt_k;
/// assert_eq!(adapt_k(4, 8, 4), 5);
/// assert_eq!(adapt_k(8, 8, 8), 8);
/// assert_eq!(adapt_k(4, 8, 1), 3);
/// assert_eq!(adapt_k(1, 8, 0), 1);
/// assert_eq!(adapt_k(4, 8, 2), 4);
/// ```
pub fn adapt_k(k: u32, k_max: u32, accepted: u32) -> u32 {
    if accepted >= k {
        (k + 1).min(k_max)
    } else if 2 * accepted < k {
        k.saturating_sub(1).max(1)
    } else {
        k
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn rejection_sampling_preserves_the_target_distribution() {
        let p = [0.1f32, 0.4, 0.3, 0.2];
        let q = [0.4f32, 0.1, 0.1, 0.4];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let n = 200_000;
        let mut counts = [0u32; 4];
        let mut accepted = 0u32;
        for _ in 0..n {
            // Draw the draft token from q.
            let u: f64 = rng.random();
            let mut acc = 0.0;
            let mut x = 3;
            for (i, w) in q.iter().enumerate() {
                acc += f64::from(*w);
                if u < acc {
                    x = i as u32;
                    break;
                }
            }
            let v = rejection_sample(&p, &q, x, rng.random(), rng.random());
            let t = match v {
                Verdict::Accept(t) => {
                    accepted += 1;
                    t
                }
                Verdict::Reject(t) => t,
            };
            counts[t as usize] += 1;
        }
        for (c, want) in counts.iter().zip(p) {
            let got = f64::from(*c) / f64::from(n);
            assert!((got - f64::from(want)).abs() < 0.005, "{got} vs {want}");
        }
        // The acceptance rate is Σ min(p, q) = 0.1 + 0.1 + 0.1 + 0.2.
        let rate = f64::from(accepted) / f64::from(n);
        assert!((rate - 0.5).abs() < 0.005, "{rate}");
    }

    #[test]
    fn gumbel_max_samples_follow_the_softmax_at_the_temperature() {
        let logits = [1.0f32, 0.0, 2.0, -1.0];
        let s = Sampler::new(0.7, 3).unwrap();
        let p = s.probs(&logits);
        let n = 100_000u32;
        let mut counts = [0u32; 4];
        for r in 0..n {
            counts[s.sample(&logits, SamplerStream::Target, u64::from(r), 5) as usize] += 1;
        }
        for (c, want) in counts.iter().zip(&p) {
            let got = f64::from(*c) / f64::from(n);
            assert!((got - f64::from(*want)).abs() < 0.005, "{got} vs {want}");
        }
        assert!(Sampler::new(0.0, 0).is_err() && Sampler::new(f64::NAN, 0).is_err());
        // The same key draws the same token; another stream draws independently.
        assert_eq!(
            s.sample(&logits, SamplerStream::Target, 9, 1),
            s.sample(&logits, SamplerStream::Target, 9, 1)
        );
    }

    #[test]
    fn sampler_verify_keeps_the_target_distribution_and_the_greedy_shape() {
        let target = vec![vec![0.5f32, 1.5, 0.0], vec![1.0, 0.0, 0.2]];
        let s = Sampler::new(1.0, 8).unwrap();
        let q = vec![0.6f32, 0.1, 0.3];
        let p = s.probs(&target[0]);
        let n = 100_000u32;
        let mut counts = [0u32; 3];
        for r in 0..n {
            // The draft token drawn from q with the draft's stream.
            let u = s.uniform(SamplerStream::Draft, u64::from(r), 4);
            let d = if u < 0.6 {
                0
            } else if u < 0.7 {
                1
            } else {
                2
            };
            let out = s.verify(&target, &[d], std::slice::from_ref(&q), u64::from(r), 4);
            assert_eq!(out.len(), 2);
            counts[out[0] as usize] += 1;
        }
        for (c, want) in counts.iter().zip(&p) {
            let got = f64::from(*c) / f64::from(n);
            assert!((got - f64::from(*want)).abs() < 0.005, "{got} vs {want}");
        }
    }

    #[test]
    fn the_coin_is_iid_at_its_rate_and_block_efficiency_follows() {
        let m = AcceptanceModel::new(0.6, 11).unwrap();
        let k = 4;
        let rounds = 50_000u32;
        let tokens: u32 = (0..rounds)
            .map(|r| m.accepted_prefix(u64::from(r % 97), r * 8, k) + 1)
            .sum();
        let got = f64::from(tokens) / f64::from(rounds);
        let want = expected_block_efficiency(0.6, k);
        assert!((got / want - 1.0).abs() < 0.01, "{got} vs {want}");
        assert!(AcceptanceModel::new(1.5, 0).is_err());
        assert_eq!(
            AcceptanceModel::new(0.0, 0)
                .unwrap()
                .accepted_prefix(1, 0, 4),
            0
        );
        assert_eq!(
            AcceptanceModel::new(1.0, 0)
                .unwrap()
                .accepted_prefix(1, 0, 4),
            4
        );
    }
}
