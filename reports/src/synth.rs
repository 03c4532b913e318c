//! Synthetic runs for tests, examples and demos: a closed-loop client
//! population against an engine whose prefill and per-token times are
//! jittered. Not a simulator of any real engine (use `fuselab-sim` for that);
//! it exists so that reports and the gate's statistics can be exercised on
//! data with known properties.

use std::collections::BTreeMap;

use fuselab_core::{
    Arrivals, EngineInfo, LengthDist, Provenance, RequestRecord, RequestStatus, RunSummary,
    SCHEMA_VERSION, Slo, StepRecord, TokenChunk, WorkloadSpec,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

use crate::RunData;

/// What to synthesise.
#[derive(Clone, Debug, PartialEq)]
pub struct SynthConfig {
    /// Requests in the run.
    pub requests: usize,
    /// Closed-loop clients (concurrent requests).
    pub clients: usize,
    /// Seed of the workload (prompt and output lengths): the same seed gives
    /// the same requests, as for a seeded fuselab workload.
    pub workload_seed: u64,
    /// Seed of the timing noise: differs between repeated runs.
    pub noise_seed: u64,
    /// Mean seconds per output token.
    pub tpot_s: f64,
    /// Seconds of prefill per prompt token.
    pub prefill_s_per_token: f64,
    /// Log-normal sigma of each token gap and each prefill (per-event jitter).
    pub jitter: f64,
    /// Standard deviation of a run-wide speed factor (machine noise between runs).
    pub run_noise: f64,
    /// Mean prompt length (normal, σ = 0.3 mean).
    pub prompt_mean: f64,
    /// Mean output length (normal, σ = 0.3 mean).
    pub output_mean: f64,
    /// Fraction of requests that fail without output.
    pub failure_rate: f64,
    /// Record engine steps every this many seconds (0 = none).
    pub step_s: f64,
    /// Policy name written into the provenance.
    pub policy: String,
    /// Compute the summary's metrics with `fuselab_metrics::compute_metrics`
    /// (off: all-zero metrics, faster for statistical tests that only use the
    /// records).
    pub summary_metrics: bool,
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self {
            requests: 300,
            clients: 16,
            workload_seed: 42,
            noise_seed: 1,
            tpot_s: 0.03,
            prefill_s_per_token: 0.0002,
            jitter: 0.15,
            run_noise: 0.005,
            prompt_mean: 1000.0,
            output_mean: 64.0,
            failure_rate: 0.0,
            step_s: 0.0,
            policy: "splitfuse".into(),
            summary_metrics: true,
        }
    }
}

fn normal_len(rng: &mut ChaCha8Rng, mean: f64, min: u32, max: u32) -> u32 {
    let d = Normal::new(mean, 0.3 * mean).unwrap_or_else(|_| Normal::new(1.0, 0.0).expect("valid"));
    (d.sample(rng).round() as i64).clamp(i64::from(min), i64::from(max)) as u32
}

/// Synthesises a run named `name`.
pub fn synth_run(name: &str, cfg: &SynthConfig) -> RunData {
    let mut wl = ChaCha8Rng::seed_from_u64(cfg.workload_seed);
    let lens: Vec<(u32, u32)> = (0..cfg.requests)
        .map(|_| {
            let p = normal_len(&mut wl, cfg.prompt_mean, 16, (3.0 * cfg.prompt_mean) as u32);
            let o = normal_len(&mut wl, cfg.output_mean, 2, (3.0 * cfg.output_mean) as u32);
            (p, o)
        })
        .collect();
    let mut rng = ChaCha8Rng::seed_from_u64(cfg.noise_seed ^ 0xa5a5_5a5a);
    let z: f64 = Normal::new(0.0, 1.0)
        .map(|n| n.sample(&mut rng))
        .unwrap_or(0.0);
    let speed = (1.0 + cfg.run_noise * z).max(0.5);
    let jit =
        Normal::new(-cfg.jitter * cfg.jitter / 2.0, cfg.jitter.max(1e-12)).expect("valid sigma");
    let mut client_free = vec![0.0f64; cfg.clients.max(1)];
    let mut requests = Vec::with_capacity(cfg.requests);
    for (i, &(prompt_len, output_len)) in lens.iter().enumerate() {
        // FCFS over clients: the one free first sends next.
        let (c, &t_sent) = client_free
            .iter()
            .enumerate()
            .min_by(|a, b| a.1.total_cmp(b.1))
            .unwrap_or((0, &0.0));
        let failed = rng.random::<f64>() < cfg.failure_rate;
        let mut t = t_sent
            + speed * cfg.prefill_s_per_token * f64::from(prompt_len) * jit.sample(&mut rng).exp();
        let mut tokens = Vec::new();
        if !failed {
            for k in 0..output_len {
                if k > 0 {
                    t += speed * cfg.tpot_s * jit.sample(&mut rng).exp();
                }
                tokens.push(TokenChunk {
                    index: k,
                    t,
                    n_tokens: 1,
                });
            }
        }
        client_free[c] = t;
        requests.push(RequestRecord {
            id: i as u64,
            prompt_len,
            output_len,
            t_scheduled: t_sent,
            t_sent,
            tokens,
            t_done: Some(t),
            status: if failed {
                RequestStatus::Failed
            } else {
                RequestStatus::Ok
            },
            error: failed.then(|| "synthetic failure".to_string()),
            server: None,
        });
    }
    let steps = if cfg.step_s > 0.0 {
        synth_steps(&requests, cfg.step_s)
    } else {
        Vec::new()
    };
    let slo = Slo::default();
    let metrics = if !cfg.summary_metrics {
        fuselab_core::Metrics::default()
    } else {
        let mut m = fuselab_metrics::compute_metrics(&requests, Some(&steps), &slo, 7);
        if steps.is_empty() {
            m.engine = None;
        }
        m
    };
    let workload = WorkloadSpec {
        name: "synthetic".into(),
        n: cfg.requests as u64,
        seed: cfg.workload_seed,
        prompt: LengthDist::Normal {
            mean: cfg.prompt_mean,
            std: 0.3 * cfg.prompt_mean,
            min: 16,
            max: (3.0 * cfg.prompt_mean) as u32,
        },
        output: LengthDist::Normal {
            mean: cfg.output_mean,
            std: 0.3 * cfg.output_mean,
            min: 2,
            max: (3.0 * cfg.output_mean) as u32,
        },
        arrivals: Arrivals::ClosedLoop {
            clients: cfg.clients as u32,
        },
        prefix: None,
        trace: None,
        conversation: None,
        lora: None,
    };
    let mut knobs = BTreeMap::new();
    knobs.insert("tpot_s".to_string(), serde_json::json!(cfg.tpot_s));
    let summary = RunSummary {
        schema_version: SCHEMA_VERSION,
        name: name.to_string(),
        provenance: Provenance {
            fuselab_version: env!("CARGO_PKG_VERSION").into(),
            git_commit: None,
            host_cpu: "synthetic".into(),
            host_gpu: None,
            engine: EngineInfo {
                engine: "synthetic".into(),
                hardware: Some("none".into()),
                model: None,
                policy: Some(cfg.policy.clone()),
                knobs,
            },
            workload,
            workload_digest: format!("synthetic-{}-{}", cfg.workload_seed, cfg.requests),
            seed: cfg.noise_seed,
            command: None,
            started_unix_s: None,
        },
        metrics,
    };
    RunData::new(summary, requests, steps)
}

/// Steps every `dt` seconds: decode tokens of requests producing tokens in the
/// step, prefill tokens of requests whose first token lands in it, KV in use
/// from the in-flight requests' tokens (blocks of 16, cache sized to the peak).
fn synth_steps(requests: &[RequestRecord], dt: f64) -> Vec<StepRecord> {
    let t_end = requests
        .iter()
        .filter_map(|r| r.t_done)
        .fold(0.0f64, f64::max);
    let n_steps = (t_end / dt).ceil() as usize;
    let mut prefill = vec![0u64; n_steps + 1];
    let mut decode = vec![0u64; n_steps + 1];
    let mut kv = vec![0u64; n_steps + 1];
    let bin = |t: f64| ((t / dt) as usize).min(n_steps);
    for r in requests {
        let Some(first) = r.tokens.first() else {
            continue;
        };
        prefill[bin(first.t)] += u64::from(r.prompt_len);
        for c in &r.tokens[1..] {
            decode[bin(c.t)] += u64::from(c.n_tokens);
        }
        let end = r.t_done.unwrap_or(first.t);
        let (a, b) = (bin(r.t_sent), bin(end));
        for (k, slot) in kv.iter_mut().enumerate().take(b + 1).skip(a) {
            let t = k as f64 * dt;
            let done = r.tokens.partition_point(|c| c.t <= t) as u64;
            *slot += (u64::from(r.prompt_len) + done).div_ceil(16);
        }
    }
    let total = kv.iter().copied().max().unwrap_or(1).max(1);
    (0..=n_steps)
        .map(|k| StepRecord {
            step: k as u64,
            t_start: k as f64 * dt,
            duration_s: dt,
            n_seqs: 0,
            prefill_tokens: prefill[k] as u32,
            decode_tokens: decode[k] as u32,
            padding_tokens: 0,
            kv_blocks_used: kv[k] as u32,
            kv_blocks_total: total as u32,
            preemptions: 0,
            waiting: 0,
            running: 0,
            prefix_query_tokens: 0,
            prefix_hit_tokens: 0,
            ..StepRecord::default()
        })
        .collect()
}
