//! Validation of a [`WorkloadSpec`] and seeded generation of its requests.

use fuselab_core::{
    Arrivals, ConversationSpec, Error, LengthDist, PrefixSpec, RequestSpec, Result, Turn,
    WorkloadSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha12Rng;
use rand_distr::{Distribution, Exp, Gamma, StandardNormal};

/// Seed used by presets when none is given (DeepSpeed-MII's benchmark default).
pub const DEFAULT_SEED: u64 = 42;

/// Largest number of requests one workload may hold (about 400 MB in memory).
pub const MAX_REQUESTS: u64 = 10_000_000;

/// Highest arrival rate in requests per second: arrival times have microsecond
/// resolution, so faster rates would collapse gaps to zero.
pub const MAX_RATE: f64 = 1_000_000.0;

// Stream numbers of the ChaCha12 generators derived from the seed. Fixed
// forever: changing one changes every workload ever generated.
const STREAM_PROMPT: u64 = 1;
const STREAM_OUTPUT: u64 = 2;
const STREAM_ARRIVALS: u64 = 3;
const STREAM_THINK: u64 = 4;

/// Most turns one conversation may have.
pub const MAX_TURNS: u32 = 1000;

/// Checks a spec without generating anything. Every error names the field,
/// quotes the bad value and says how to fix it.
///
/// # Example
/// ```
/// let mut spec = fuselab_workloads::preset("fastgen-1200")?;
/// spec.n = 0;
/// let err = fuselab_workloads::validate(&spec).unwrap_err();
/// assert!(err.to_string().contains("n"));
/// # Ok::<(), fuselab_core::Error>(())
/// ```
pub fn validate(spec: &WorkloadSpec) -> Result<()> {
    if spec.n == 0 {
        return Err(Error::invalid(
            "n",
            "0 requests",
            "give at least 1 request (--n N)",
        ));
    }
    if spec.n > MAX_REQUESTS {
        return Err(Error::invalid(
            "n",
            format!(
                "{} requests is more than the limit of {MAX_REQUESTS}",
                spec.n
            ),
            "split the workload into several smaller ones",
        ));
    }
    if spec.arrivals == Arrivals::Trace {
        if spec.trace.is_none() {
            return Err(Error::invalid(
                "trace",
                "arrivals are `trace` but no trace file is given",
                "give the JSONL file with --trace FILE",
            ));
        }
        // The lengths of a trace come from the file; its prompt/output fields
        // only record the observed range.
        if let Some(l) = &spec.lora {
            crate::lora::validate_lora(l)?;
        }
        return Ok(());
    }
    validate_length("prompt", &spec.prompt)?;
    validate_length("output", &spec.output)?;
    validate_arrivals(&spec.arrivals)?;
    if let Some(prefix) = &spec.prefix {
        validate_prefix(prefix)?;
    }
    if let Some(c) = &spec.conversation {
        validate_conversation(c, &spec.arrivals)?;
    }
    if let Some(l) = &spec.lora {
        crate::lora::validate_lora(l)?;
    }
    Ok(())
}

fn validate_conversation(c: &ConversationSpec, arrivals: &Arrivals) -> Result<()> {
    if c.turns == 0 || c.turns > MAX_TURNS {
        return Err(Error::invalid(
            "turns",
            format!("{} turns per conversation", c.turns),
            format!("give between 1 and {MAX_TURNS} turns (--turns K)"),
        ));
    }
    if !c.think_s.is_finite() || c.think_s < 0.0 {
        return Err(Error::invalid(
            "think-time",
            format!("{} is not a finite number of seconds >= 0", c.think_s),
            "give the mean think time between turns in seconds, e.g. --think-time 5",
        ));
    }
    if matches!(arrivals, Arrivals::ClosedLoop { .. }) && c.turns > 1 {
        return Err(Error::invalid(
            "turns",
            "multi-turn conversations with closed-loop arrivals",
            "each turn already waits for the previous one; use an open-loop arrival process (e.g. --arrivals poisson --rate R) for conversation starts",
        ));
    }
    Ok(())
}

fn validate_length(field: &str, dist: &LengthDist) -> Result<()> {
    let min_max = |min: u32, max: u32| -> Result<()> {
        if min == 0 {
            return Err(Error::invalid(
                format!("{field}.min"),
                "0 tokens",
                "every request needs at least 1 token; use min >= 1",
            ));
        }
        if min > max {
            return Err(Error::invalid(
                format!("{field}.min"),
                format!("min {min} is greater than max {max}"),
                "swap them or widen the range",
            ));
        }
        Ok(())
    };
    match *dist {
        LengthDist::Fixed { value } => {
            if value == 0 {
                return Err(Error::invalid(
                    format!("{field}.value"),
                    "0 tokens",
                    "every request needs at least 1 token",
                ));
            }
        }
        LengthDist::Uniform { min, max } => min_max(min, max)?,
        LengthDist::Normal {
            mean,
            std,
            min,
            max,
        } => {
            if !mean.is_finite() {
                return Err(Error::invalid(
                    format!("{field}.mean"),
                    format!("{mean} is not a finite number"),
                    "give a mean length in tokens",
                ));
            }
            if !std.is_finite() || std < 0.0 {
                return Err(Error::invalid(
                    format!("{field}.std"),
                    format!("{std} is negative or not finite"),
                    "give a standard deviation >= 0 (0 means fixed)",
                ));
            }
            min_max(min, max)?;
        }
        LengthDist::Lognormal {
            median,
            sigma,
            min,
            max,
        } => {
            if !median.is_finite() || median <= 0.0 {
                return Err(Error::invalid(
                    format!("{field}.median"),
                    format!("{median} is not a positive finite number"),
                    "give the median length in tokens (> 0)",
                ));
            }
            if !sigma.is_finite() || sigma < 0.0 {
                return Err(Error::invalid(
                    format!("{field}.sigma"),
                    format!("{sigma} is negative or not finite"),
                    "give the log-space standard deviation (>= 0; about 1 for chat traffic)",
                ));
            }
            min_max(min, max)?;
        }
    }
    Ok(())
}

fn validate_rate(field: &str, rate: f64) -> Result<()> {
    if rate.is_nan() {
        return Err(Error::invalid(
            field,
            "NaN is not a rate",
            "give a rate > 0 in requests/s",
        ));
    }
    if rate <= 0.0 {
        return Err(Error::invalid(
            field,
            format!("{rate} is not positive"),
            "give a rate > 0 in requests/s, or use burst arrivals (--arrivals burst) to send everything at once",
        ));
    }
    if rate > MAX_RATE {
        return Err(Error::invalid(
            field,
            format!("{rate} requests/s is above the limit of {MAX_RATE}"),
            "arrival times have microsecond resolution; use burst arrivals for everything at once",
        ));
    }
    Ok(())
}

fn validate_arrivals(arrivals: &Arrivals) -> Result<()> {
    match *arrivals {
        Arrivals::Poisson { rate } | Arrivals::Constant { rate } => validate_rate("rate", rate),
        Arrivals::Gamma { rate, burstiness } => {
            validate_rate("rate", rate)?;
            if !burstiness.is_finite() || burstiness <= 0.0 {
                return Err(Error::invalid(
                    "burstiness",
                    format!("{burstiness} is not a positive finite number"),
                    "give the gamma shape > 0: 1 is Poisson, below 1 is burstier, above 1 smoother",
                ));
            }
            Ok(())
        }
        Arrivals::Ramp {
            start_rate,
            end_rate,
        } => {
            validate_rate("start-rate", start_rate)?;
            validate_rate("end-rate", end_rate)
        }
        Arrivals::Burst | Arrivals::Trace => Ok(()),
        Arrivals::ClosedLoop { clients } => {
            if clients == 0 {
                return Err(Error::invalid(
                    "clients",
                    "0 clients",
                    "give at least 1 concurrent client (--clients C)",
                ));
            }
            Ok(())
        }
    }
}

fn validate_prefix(prefix: &PrefixSpec) -> Result<()> {
    if prefix.groups == 0 {
        return Err(Error::invalid(
            "prefix-groups",
            "0 groups",
            "give at least 1 group, or leave prefix sharing out",
        ));
    }
    if prefix.len == 0 {
        return Err(Error::invalid(
            "prefix-len",
            "a shared prefix of 0 tokens",
            "give the shared prefix length in tokens (>= 1), or leave prefix sharing out",
        ));
    }
    Ok(())
}

/// Generates the requests of a spec: ids `0..n` in arrival order, arrival
/// times absolute (seconds from the run's start, rounded to microseconds).
///
/// Same spec, same output, on every platform. A spec with
/// [`Arrivals::Trace`] reads its trace file and keeps its first `n` requests.
///
/// # Errors
/// [`Error::Invalid`] for a bad spec (see [`validate`]); trace errors for a
/// trace spec.
///
/// # Example
/// ```
/// use fuselab_core::{Arrivals, LengthDist, WorkloadSpec};
/// let spec = WorkloadSpec {
///     name: "custom".into(), n: 3, seed: 1,
///     prompt: LengthDist::Fixed { value: 10 },
///     output: LengthDist::Uniform { min: 1, max: 4 },
///     arrivals: Arrivals::Constant { rate: 2.0 },
///     prefix: None, trace: None, conversation: None, lora: None,
/// };
/// let reqs = fuselab_workloads::generate(&spec)?;
/// let arrivals: Vec<f64> = reqs.iter().map(|r| r.arrival_s).collect();
/// assert_eq!(arrivals, [0.0, 0.5, 1.0]);
/// # Ok::<(), fuselab_core::Error>(())
/// ```
pub fn generate(spec: &WorkloadSpec) -> Result<Vec<RequestSpec>> {
    validate(spec)?;
    if spec.arrivals == Arrivals::Trace {
        return generate_from_trace(spec);
    }
    let n = usize::try_from(spec.n).map_err(|_| {
        Error::invalid(
            "n",
            format!("{} does not fit in memory", spec.n),
            "use fewer requests",
        )
    })?;
    let mut requests = match &spec.conversation {
        Some(c) => generate_conversations(spec, c, n)?,
        None => generate_single(spec, n)?,
    };
    if let Some(l) = &spec.lora {
        crate::lora::assign_adapters(l, spec.seed, &mut requests);
    }
    Ok(requests)
}

fn generate_single(spec: &WorkloadSpec, n: usize) -> Result<Vec<RequestSpec>> {
    let mut prompt_rng = stream(spec.seed, STREAM_PROMPT);
    let mut output_rng = stream(spec.seed, STREAM_OUTPUT);
    let mut arrival_rng = stream(spec.seed, STREAM_ARRIVALS);
    let mut arrivals = ArrivalSampler::new(&spec.arrivals, spec.n)?;

    let mut requests = Vec::with_capacity(n);
    for i in 0..spec.n {
        let prompt_len = sample_length(&spec.prompt, &mut prompt_rng);
        let output_len = sample_length(&spec.output, &mut output_rng);
        let arrival_s = arrivals.next(i, &mut arrival_rng);
        let (prefix_group, prefix_len) = match &spec.prefix {
            Some(p) => {
                // `validate` guarantees groups >= 1; the group index fits u32.
                let group = u32::try_from(i % u64::from(p.groups)).unwrap_or(0);
                (Some(group), p.len.min(prompt_len))
            }
            None => (None, 0),
        };
        requests.push(RequestSpec {
            id: i,
            arrival_s,
            prompt_len,
            output_len,
            prefix_group,
            prefix_len,
            conversation: None,
            adapter: None,
        });
    }
    Ok(requests)
}

/// Multi-turn conversations: conversation `c` starts at the `c`-th arrival;
/// turn `k` carries the whole conversation so far (earlier prompts and
/// outputs) plus a new user message, and its `arrival_s` is the earliest it
/// could go (the previous turn's arrival plus the think time; the harness
/// sends it `think_s` after the previous turn completes). Conversation `c` is
/// in prefix group `c mod groups`, with one prefix length for all its turns.
/// Ids follow arrival order.
fn generate_conversations(
    spec: &WorkloadSpec,
    c: &ConversationSpec,
    n: usize,
) -> Result<Vec<RequestSpec>> {
    let conversations = spec.n.div_ceil(u64::from(c.turns));
    let mut prompt_rng = stream(spec.seed, STREAM_PROMPT);
    let mut output_rng = stream(spec.seed, STREAM_OUTPUT);
    let mut arrival_rng = stream(spec.seed, STREAM_ARRIVALS);
    let mut think_rng = stream(spec.seed, STREAM_THINK);
    let mut arrivals = ArrivalSampler::new(&spec.arrivals, conversations)?;
    let think =
        if c.think_s > 0.0 {
            Some(Exp::new(1.0 / c.think_s).map_err(|e| {
                Error::invalid("think-time", e.to_string(), "give a think time >= 0")
            })?)
        } else {
            None
        };
    let mut requests = Vec::with_capacity(n);
    for conv in 0..conversations {
        let start = arrivals.next(conv, &mut arrival_rng);
        let (mut t, mut context, mut prefix_len) = (start, 0u32, 0u32);
        let group = spec
            .prefix
            .as_ref()
            .map(|p| u32::try_from(conv % u64::from(p.groups)).unwrap_or(0));
        for turn in 0..c.turns {
            if requests.len() == n {
                break;
            }
            let user = sample_length(&spec.prompt, &mut prompt_rng);
            let output_len = sample_length(&spec.output, &mut output_rng);
            let think_s = match (&think, turn) {
                (Some(d), k) if k > 0 => quantise(d.sample(&mut think_rng)),
                _ => 0.0,
            };
            t = quantise(t + think_s);
            let prompt_len = context.saturating_add(user);
            if turn == 0 {
                prefix_len = spec.prefix.as_ref().map_or(0, |p| p.len.min(prompt_len));
            }
            requests.push(RequestSpec {
                id: 0,
                arrival_s: t,
                prompt_len,
                output_len,
                prefix_group: group,
                prefix_len,
                conversation: Some(Turn {
                    id: conv,
                    turn,
                    think_s,
                }),
                adapter: None,
            });
            context = prompt_len.saturating_add(output_len);
        }
    }
    // Stable: a conversation's turns keep their order at equal times.
    requests.sort_by(|a, b| a.arrival_s.total_cmp(&b.arrival_s));
    for (i, r) in requests.iter_mut().enumerate() {
        r.id = i as u64;
    }
    Ok(requests)
}

fn generate_from_trace(spec: &WorkloadSpec) -> Result<Vec<RequestSpec>> {
    let path = std::path::Path::new(spec.trace.as_deref().unwrap_or_default());
    let mut requests = crate::read_trace(path)?;
    crate::trace::truncate(&mut requests, spec.n, path)?;
    match &spec.lora {
        Some(l) => crate::lora::check_trace_adapters(l, &requests)?,
        None => {
            if let Some(r) = requests.iter().find(|r| r.adapter.is_some()) {
                return Err(Error::invalid(
                    "lora",
                    format!(
                        "trace request {} names an adapter but the workload has no LoRA adapters",
                        r.id
                    ),
                    "give the adapters (--adapters N --lora-rank R) or drop the trace's `adapter` fields",
                ));
            }
        }
    }
    Ok(requests)
}

/// A ChaCha12 generator for one purpose: seeded from the workload seed, on its
/// own stream, so that the purposes never share random numbers.
fn stream(seed: u64, stream: u64) -> ChaCha12Rng {
    let mut rng = ChaCha12Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// One length sample: rounded to the nearest integer, clamped to the range.
fn sample_length(dist: &LengthDist, rng: &mut ChaCha12Rng) -> u32 {
    let clamp = |x: f64, min: u32, max: u32| -> u32 {
        // Clamping in f64 first makes the cast exact (no NaN: inputs validated).
        x.round().clamp(f64::from(min), f64::from(max)) as u32
    };
    match *dist {
        LengthDist::Fixed { value } => value,
        LengthDist::Uniform { min, max } => rng.random_range(min..=max),
        LengthDist::Normal {
            mean,
            std,
            min,
            max,
        } => {
            let z: f64 = StandardNormal.sample(rng);
            clamp(mean + std * z, min, max)
        }
        LengthDist::Lognormal {
            median,
            sigma,
            min,
            max,
        } => {
            let z: f64 = StandardNormal.sample(rng);
            clamp((median.ln() + sigma * z).exp(), min, max)
        }
    }
}

/// Produces absolute arrival times, request by request.
enum ArrivalSampler {
    Exp {
        t: f64,
        dist: Exp<f64>,
    },
    Gamma {
        t: f64,
        dist: Gamma<f64>,
    },
    Constant {
        gap: f64,
    },
    Ramp {
        t: f64,
        start: f64,
        end: f64,
        n: u64,
    },
    Zero,
}

impl ArrivalSampler {
    fn new(arrivals: &Arrivals, n: u64) -> Result<Self> {
        let bad = |e: &dyn std::fmt::Display| {
            Error::invalid("arrivals", e.to_string(), "check rate and burstiness")
        };
        Ok(match *arrivals {
            Arrivals::Poisson { rate } => Self::Exp {
                t: 0.0,
                dist: Exp::new(rate).map_err(|e| bad(&e))?,
            },
            Arrivals::Gamma { rate, burstiness } => Self::Gamma {
                t: 0.0,
                // vLLM's convention: shape b, scale 1/(rate·b), so the mean gap is 1/rate.
                dist: Gamma::new(burstiness, 1.0 / (rate * burstiness)).map_err(|e| bad(&e))?,
            },
            Arrivals::Constant { rate } => Self::Constant { gap: 1.0 / rate },
            Arrivals::Ramp {
                start_rate,
                end_rate,
            } => Self::Ramp {
                t: 0.0,
                start: start_rate,
                end: end_rate,
                n,
            },
            Arrivals::Burst | Arrivals::ClosedLoop { .. } | Arrivals::Trace => Self::Zero,
        })
    }

    /// Arrival time of request `i`. Request 0 arrives at 0; request `i > 0`
    /// one gap after request `i − 1`.
    fn next(&mut self, i: u64, rng: &mut ChaCha12Rng) -> f64 {
        let t = match self {
            Self::Exp { t, dist } => {
                if i > 0 {
                    *t += dist.sample(rng);
                }
                *t
            }
            Self::Gamma { t, dist } => {
                if i > 0 {
                    *t += dist.sample(rng);
                }
                *t
            }
            // Multiplying instead of summing keeps long schedules free of drift.
            Self::Constant { gap } => i as f64 * *gap,
            Self::Ramp { t, start, end, n } => {
                if i > 0 {
                    // vLLM's linear ramp: λ(i) = λ0 + (λ1 − λ0)·i/(N−1), Poisson at λ(i).
                    let frac = i as f64 / (*n - 1).max(1) as f64;
                    let rate = *start + (*end - *start) * frac;
                    let u: f64 = rand_distr::Exp1.sample(rng);
                    *t += u / rate;
                }
                *t
            }
            Self::Zero => 0.0,
        };
        quantise(t)
    }
}

/// Rounds a time to whole microseconds (see the crate docs for why).
pub(crate) fn quantise(t: f64) -> f64 {
    (t * 1e6).round() / 1e6
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats;

    fn spec(prompt: LengthDist, output: LengthDist, arrivals: Arrivals, n: u64) -> WorkloadSpec {
        WorkloadSpec {
            name: "custom".into(),
            n,
            seed: 7,
            prompt,
            output,
            arrivals,
            prefix: None,
            trace: None,
            conversation: None,
            lora: None,
        }
    }

    fn gaps(reqs: &[RequestSpec]) -> Vec<f64> {
        reqs.windows(2)
            .map(|w| w[1].arrival_s - w[0].arrival_s)
            .collect()
    }

    #[test]
    fn normal_mean_and_std_at_10000() {
        let s = spec(
            LengthDist::Normal {
                mean: 2600.0,
                std: 780.0,
                min: 16,
                max: 7800,
            },
            LengthDist::Normal {
                mean: 60.0,
                std: 18.0,
                min: 1,
                max: 180,
            },
            Arrivals::Burst,
            10_000,
        );
        let reqs = generate(&s).unwrap();
        let p: Vec<f64> = reqs.iter().map(|r| f64::from(r.prompt_len)).collect();
        let o: Vec<f64> = reqs.iter().map(|r| f64::from(r.output_len)).collect();
        let (pm, ps) = (stats::mean(&p), stats::std_dev(&p));
        let (om, os) = (stats::mean(&o), stats::std_dev(&o));
        assert!((pm / 2600.0 - 1.0).abs() < 0.02, "prompt mean {pm}");
        assert!((ps / 780.0 - 1.0).abs() < 0.05, "prompt std {ps}");
        assert!((om / 60.0 - 1.0).abs() < 0.02, "output mean {om}");
        assert!((os / 18.0 - 1.0).abs() < 0.05, "output std {os}");
    }

    #[test]
    fn poisson_rate_4_mean_gap_and_ks() {
        let s = spec(
            LengthDist::Fixed { value: 8 },
            LengthDist::Fixed { value: 8 },
            Arrivals::Poisson { rate: 4.0 },
            10_000,
        );
        let reqs = generate(&s).unwrap();
        assert_eq!(reqs[0].arrival_s, 0.0);
        let g = gaps(&reqs);
        let m = stats::mean(&g);
        assert!((m / 0.25 - 1.0).abs() < 0.03, "mean gap {m}");
        let d = stats::ks_statistic(&g, |x| stats::exponential_cdf(x, 4.0));
        let crit = stats::ks_critical_value(g.len(), 0.01);
        assert!((crit * (g.len() as f64).sqrt() - 1.628).abs() < 1e-3);
        assert!(d < crit, "KS D = {d} >= {crit}");
    }

    #[test]
    fn ks_rejects_the_wrong_rate() {
        // The test must be able to fail: Poisson(4) gaps against Exp(3).
        let s = spec(
            LengthDist::Fixed { value: 8 },
            LengthDist::Fixed { value: 8 },
            Arrivals::Poisson { rate: 4.0 },
            10_000,
        );
        let g = gaps(&generate(&s).unwrap());
        let d = stats::ks_statistic(&g, |x| stats::exponential_cdf(x, 3.0));
        assert!(d > stats::ks_critical_value(g.len(), 0.01), "D = {d}");
    }

    #[test]
    fn gamma_cv() {
        for (b, cv_expected) in [(0.5, 2f64.sqrt()), (1.0, 1.0), (4.0, 0.5)] {
            let s = spec(
                LengthDist::Fixed { value: 8 },
                LengthDist::Fixed { value: 8 },
                Arrivals::Gamma {
                    rate: 4.0,
                    burstiness: b,
                },
                10_000,
            );
            let g = gaps(&generate(&s).unwrap());
            let cv = stats::std_dev(&g) / stats::mean(&g);
            assert!(
                (cv / cv_expected - 1.0).abs() < 0.05,
                "burstiness {b}: CV {cv}"
            );
            assert!((stats::mean(&g) / 0.25 - 1.0).abs() < 0.05);
        }
    }

    #[test]
    fn constant_and_ramp() {
        let c = generate(&spec(
            LengthDist::Fixed { value: 8 },
            LengthDist::Fixed { value: 8 },
            Arrivals::Constant { rate: 3.0 },
            4,
        ))
        .unwrap();
        assert_eq!(
            c.iter().map(|r| r.arrival_s).collect::<Vec<_>>(),
            [0.0, 0.333333, 0.666667, 1.0]
        );

        let r = generate(&spec(
            LengthDist::Fixed { value: 8 },
            LengthDist::Fixed { value: 8 },
            Arrivals::Ramp {
                start_rate: 1.0,
                end_rate: 20.0,
            },
            2000,
        ))
        .unwrap();
        let g = gaps(&r);
        let first = stats::mean(&g[..200]);
        let last = stats::mean(&g[g.len() - 200..]);
        // Rates near 1.9 and 19.8 at the two ends: gaps shrink about tenfold.
        assert!(first > 5.0 * last, "first {first} last {last}");
        assert!(g.iter().all(|&x| x >= 0.0));
    }

    #[test]
    fn burst_and_closed_loop_arrive_at_zero() {
        for a in [Arrivals::Burst, Arrivals::ClosedLoop { clients: 4 }] {
            let r = generate(&spec(
                LengthDist::Fixed { value: 8 },
                LengthDist::Fixed { value: 8 },
                a,
                10,
            ))
            .unwrap();
            assert!(r.iter().all(|x| x.arrival_s == 0.0));
        }
    }

    #[test]
    fn rate_does_not_change_lengths() {
        let mk = |rate| {
            spec(
                LengthDist::Normal {
                    mean: 100.0,
                    std: 30.0,
                    min: 1,
                    max: 300,
                },
                LengthDist::Uniform { min: 1, max: 50 },
                Arrivals::Poisson { rate },
                500,
            )
        };
        let a = generate(&mk(1.0)).unwrap();
        let b = generate(&mk(9.0)).unwrap();
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.prompt_len == y.prompt_len && x.output_len == y.output_len)
        );
        assert_ne!(a[5].arrival_s, b[5].arrival_s);
    }

    #[test]
    fn prefix_groups_round_robin_and_capped() {
        let mut s = spec(
            LengthDist::Uniform { min: 10, max: 100 },
            LengthDist::Fixed { value: 4 },
            Arrivals::Burst,
            50,
        );
        s.prefix = Some(PrefixSpec { groups: 3, len: 40 });
        for (i, r) in generate(&s).unwrap().iter().enumerate() {
            assert_eq!(r.prefix_group, Some((i % 3) as u32));
            assert_eq!(r.prefix_len, 40.min(r.prompt_len));
        }
    }

    #[test]
    fn validation_names_the_field() {
        let base = spec(
            LengthDist::Fixed { value: 8 },
            LengthDist::Fixed { value: 8 },
            Arrivals::Poisson { rate: 1.0 },
            10,
        );
        let cases: Vec<(WorkloadSpec, &str)> = vec![
            (
                WorkloadSpec {
                    n: 0,
                    ..base.clone()
                },
                "invalid n",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Poisson { rate: -1.0 },
                    ..base.clone()
                },
                "invalid rate: -1",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Poisson { rate: 0.0 },
                    ..base.clone()
                },
                "invalid rate: 0",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Constant { rate: f64::NAN },
                    ..base.clone()
                },
                "invalid rate: NaN",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Gamma {
                        rate: 1.0,
                        burstiness: 0.0,
                    },
                    ..base.clone()
                },
                "invalid burstiness",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::ClosedLoop { clients: 0 },
                    ..base.clone()
                },
                "invalid clients",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Ramp {
                        start_rate: 1.0,
                        end_rate: -2.0,
                    },
                    ..base.clone()
                },
                "invalid end-rate",
            ),
            (
                WorkloadSpec {
                    prompt: LengthDist::Uniform { min: 9, max: 3 },
                    ..base.clone()
                },
                "invalid prompt.min: min 9 is greater than max 3",
            ),
            (
                WorkloadSpec {
                    output: LengthDist::Normal {
                        mean: 5.0,
                        std: -1.0,
                        min: 1,
                        max: 9,
                    },
                    ..base.clone()
                },
                "invalid output.std",
            ),
            (
                WorkloadSpec {
                    prompt: LengthDist::Lognormal {
                        median: 0.0,
                        sigma: 1.0,
                        min: 1,
                        max: 9,
                    },
                    ..base.clone()
                },
                "invalid prompt.median",
            ),
            (
                WorkloadSpec {
                    prompt: LengthDist::Fixed { value: 0 },
                    ..base.clone()
                },
                "invalid prompt.value",
            ),
            (
                WorkloadSpec {
                    prefix: Some(PrefixSpec { groups: 0, len: 4 }),
                    ..base.clone()
                },
                "invalid prefix-groups",
            ),
            (
                WorkloadSpec {
                    arrivals: Arrivals::Trace,
                    ..base.clone()
                },
                "invalid trace",
            ),
        ];
        for (s, want) in cases {
            let msg = generate(&s).unwrap_err().to_string();
            assert!(
                msg.starts_with(want),
                "{msg:?} does not start with {want:?}"
            );
        }
    }
}
