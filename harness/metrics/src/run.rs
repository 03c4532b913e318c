//! Run-level metrics: latency distributions, throughput, goodput, SLO
//! attainment, FastGen effective throughput and engine-side aggregates.

use std::collections::BTreeMap;

use fuselab_core::{
    EngineStats, LatencyStats, Metrics, RequestRecord, RequestStatus, Slo, StepRecord,
};

use crate::request::{FASTGEN_RATES, RequestMetrics, meets_fastgen_sla, request_metrics};
use crate::stats::{clustered_latency_stats, latency_stats};

/// Whether a completed request meets every objective given in `slo`
/// (vLLM/DistServe goodput, research/anchors.md §b.2, plus the FastGen SLA when
/// `fastgen_rate` is set). TPOT counts as 0 for single-token responses, as in
/// vLLM. Requests that did not complete never meet an SLO; with an empty SLO
/// every completed request with at least one token does.
pub fn meets_slo(r: &RequestRecord, slo: &Slo) -> bool {
    match request_metrics(r) {
        Some(m) => meets_slo_with(r, &m, slo),
        None => false,
    }
}

fn meets_slo_with(r: &RequestRecord, m: &RequestMetrics, slo: &Slo) -> bool {
    let within = |limit: Option<f64>, v: f64| limit.is_none_or(|l| v <= l);
    within(slo.ttft_s, m.ttft_s)
        && within(slo.tpot_s, m.tpot_s.unwrap_or(0.0))
        && within(slo.e2e_s, m.e2e_s)
        && slo
            .fastgen_rate
            .is_none_or(|rate| meets_fastgen_sla(r, rate))
}

/// The key of a generation rate in [`Metrics::effective_throughput`]: `2.0` →
/// `"2"`, `2.5` → `"2.5"`.
pub fn fastgen_key(rate: f64) -> String {
    format!("{rate}")
}

/// Engine-side aggregates of a run's steps. Tokens per step counts computed
/// prompt and decode tokens, not padding; KV utilisation is `used/total` after
/// each step (steps with an empty cache are skipped).
///
/// # Example
/// ```
/// use fuselab_core::StepRecord;
/// let s = [
///     StepRecord { prefill_tokens: 500, decode_tokens: 12, padding_tokens: 4, kv_blocks_used: 30,
///                  kv_blocks_total: 100, duration_s: 0.05, ..Default::default() },
///     StepRecord { step: 1, decode_tokens: 16, kv_blocks_used: 50, kv_blocks_total: 100,
///                  preemptions: 1, duration_s: 0.01, ..Default::default() },
/// ];
/// let e = fuselab_metrics::engine_stats(&s);
/// assert_eq!((e.steps, e.prefill_tokens, e.decode_tokens, e.padding_tokens, e.preemptions), (2, 500, 28, 4, 1));
/// assert_eq!((e.kv_utilisation_mean, e.kv_utilisation_peak, e.tokens_per_step_mean), (0.4, 0.5, 264.0));
/// ```
pub fn engine_stats(steps: &[StepRecord]) -> EngineStats {
    let sum = |f: fn(&StepRecord) -> u32| steps.iter().map(|s| u64::from(f(s))).sum::<u64>();
    let prefill_tokens = sum(|s| s.prefill_tokens);
    let decode_tokens = sum(|s| s.decode_tokens);
    let utils: Vec<f64> = steps
        .iter()
        .filter(|s| s.kv_blocks_total > 0)
        .map(|s| f64::from(s.kv_blocks_used) / f64::from(s.kv_blocks_total))
        .collect();
    let n = steps.len() as u64;
    let query = sum(|s| s.prefix_query_tokens);
    let hits = sum(|s| s.prefix_hit_tokens);
    let adapter_loads = sum(|s| s.adapter_loads);
    let span = match (steps.first(), steps.last()) {
        (Some(a), Some(b)) => b.t_start + b.duration_s - a.t_start,
        _ => 0.0,
    };
    let slot_use: Vec<f64> = steps
        .iter()
        .filter(|s| s.adapter_slots > 0)
        .map(|s| f64::from(s.adapter_slots_used) / f64::from(s.adapter_slots))
        .collect();
    EngineStats {
        steps: n,
        prefill_tokens,
        decode_tokens,
        padding_tokens: sum(|s| s.padding_tokens),
        preemptions: sum(|s| s.preemptions),
        kv_utilisation_mean: mean(&utils),
        kv_utilisation_peak: utils.iter().copied().fold(0.0, f64::max),
        tokens_per_step_mean: if n == 0 {
            0.0
        } else {
            (prefill_tokens + decode_tokens) as f64 / n as f64
        },
        busy_s: steps.iter().map(|s| s.duration_s).sum(),
        prefix_query_tokens: query,
        prefix_hit_tokens: hits,
        prefix_cache_hit_rate: if query == 0 {
            0.0
        } else {
            hits as f64 / query as f64
        },
        adapter_loads,
        adapter_loads_per_s: if span > 0.0 {
            adapter_loads as f64 / span
        } else {
            0.0
        },
        adapter_slot_utilisation: mean(&slot_use),
        adapters_per_step_mean: if n == 0 {
            0.0
        } else {
            sum(|s| s.adapters_in_batch) as f64 / n as f64
        },
        spec: spec_stats(steps),
    }
}

/// Speculative-decoding aggregates of a run's steps; `None` when no step
/// verified a draft token.
///
/// # Example
/// ```
/// use fuselab_core::StepRecord;
/// let s = [
///     StepRecord { duration_s: 0.010, draft_s: 0.002, decode_seqs: 2, spec_seqs: 2,
///                  spec_proposed: 8, spec_accepted: 5, ..Default::default() },
///     StepRecord { duration_s: 0.010, decode_seqs: 1, ..Default::default() },
/// ];
/// let x = fuselab_metrics::spec_stats(&s).unwrap();
/// assert_eq!((x.rounds, x.proposed, x.accepted), (2, 8, 5));
/// assert_eq!((x.acceptance_rate, x.mean_accepted_len), (0.625, 2.5));
/// assert_eq!(x.block_efficiency, (3.0 + 5.0) / 3.0); // 3 decode entries emitted 3 + 5 tokens
/// assert!((x.draft_time_share - 0.1).abs() < 1e-12 && (x.verify_time_share - 0.9).abs() < 1e-12);
/// assert!(fuselab_metrics::spec_stats(&s[1..]).is_none());
/// ```
pub fn spec_stats(steps: &[StepRecord]) -> Option<fuselab_core::SpecStats> {
    let sum = |f: fn(&StepRecord) -> u32| steps.iter().map(|s| u64::from(f(s))).sum::<u64>();
    let proposed = sum(|s| s.spec_proposed);
    if proposed == 0 {
        return None;
    }
    let rounds = sum(|s| s.spec_seqs);
    let accepted = sum(|s| s.spec_accepted);
    let decodes = sum(|s| s.decode_seqs);
    let busy: f64 = steps.iter().map(|s| s.duration_s).sum();
    let draft: f64 = steps.iter().map(|s| s.draft_s).sum();
    let share = |x: f64| if busy > 0.0 { x / busy } else { 0.0 };
    Some(fuselab_core::SpecStats {
        rounds,
        proposed,
        accepted,
        acceptance_rate: accepted as f64 / proposed as f64,
        mean_accepted_len: if rounds == 0 {
            0.0
        } else {
            accepted as f64 / rounds as f64
        },
        block_efficiency: if decodes == 0 {
            0.0
        } else {
            (decodes + accepted) as f64 / decodes as f64
        },
        draft_time_share: share(draft),
        verify_time_share: share(busy - draft),
        source: String::new(),
    })
}

fn mean(x: &[f64]) -> f64 {
    if x.is_empty() {
        0.0
    } else {
        x.iter().sum::<f64>() / x.len() as f64
    }
}

/// `count / span`, or 0 when the span is empty (never NaN or infinite, so the
/// result is always valid JSON).
fn rate(count: f64, span: f64) -> f64 {
    if span > 0.0 && span.is_finite() {
        count / span
    } else {
        0.0
    }
}

/// Computes a run's [`Metrics`] from its request records (DESIGN.md §5).
///
/// * Requests with status `ok` are `completed`; all others are `failed` and
///   appear in no latency statistic.
/// * Latency statistics pool every completed request (ITL pools every
///   per-token gap, see [`request_metrics`]). Schedule lag covers all requests.
///   Intervals resample requests: TTFT, TPOT, E2E and lag have one value per
///   request, and ITL's interval comes from a per-request cluster bootstrap
///   ([`crate::clustered_latency_stats`]), since one request's gaps are not
///   independent. Each statistic's bootstrap uses its own stream derived from
///   `seed`.
/// * The window runs from the first `t_sent` to the last token of any request;
///   request, output-token and total-token throughput count completed
///   requests over it.
/// * Goodput is good requests per second over the window and SLO attainment is
///   good / all requests (a request is good when [`meets_slo`] holds). With an
///   empty SLO, goodput is completed / window and attainment completed / all.
/// * Effective throughput at 2, 4 and 6 tok/s follows FastGen:
///   `N/(max t_done − min t_sent) × fraction meeting the SLA`, where `t_done`
///   falls back to the last token when it is missing.
/// * `engine` is [`engine_stats`] of `steps` when given.
///
/// Every number is finite (0 when undefined).
pub fn compute_metrics(
    records: &[RequestRecord],
    steps: Option<&[StepRecord]>,
    slo: &Slo,
    seed: u64,
) -> Metrics {
    let per_req: Vec<(&RequestRecord, Option<RequestMetrics>)> =
        records.iter().map(|r| (r, request_metrics(r))).collect();
    let completed: Vec<&RequestRecord> = records
        .iter()
        .filter(|r| r.status == RequestStatus::Ok)
        .collect();
    let done: Vec<(&RequestRecord, &RequestMetrics)> = per_req
        .iter()
        .filter_map(|(r, m)| m.as_ref().map(|m| (*r, m)))
        .collect();

    let t0 = records
        .iter()
        .map(|r| r.t_sent)
        .fold(f64::INFINITY, f64::min);
    let t_last = records
        .iter()
        .filter_map(RequestRecord::t_last_token)
        .fold(f64::NEG_INFINITY, f64::max);
    let window_s = if t_last.is_finite() && t0.is_finite() {
        (t_last - t0).max(0.0)
    } else {
        0.0
    };

    let collect = |f: fn(&RequestMetrics) -> Option<f64>| -> Vec<f64> {
        done.iter().filter_map(|(_, m)| f(m)).collect()
    };
    let ttft = collect(|m| Some(m.ttft_s));
    let tpot = collect(|m| m.tpot_s);
    let e2e = collect(|m| Some(m.e2e_s));
    let itl: Vec<&[f64]> = done.iter().map(|(_, m)| m.itl_s.as_slice()).collect();
    let lag: Vec<f64> = records.iter().map(|r| r.t_sent - r.t_scheduled).collect();
    let sub_seed = |i: u64| seed ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);

    let output_tokens: u64 = completed.iter().map(|r| r.tokens_received()).sum();
    let prompt_tokens: u64 = completed.iter().map(|r| u64::from(r.prompt_len)).sum();

    let good = done
        .iter()
        .filter(|(r, m)| meets_slo_with(r, m, slo))
        .count();
    let n_all = records.len();
    let t_end = records
        .iter()
        .filter_map(|r| r.t_done.or_else(|| r.t_last_token()))
        .fold(f64::NEG_INFINITY, f64::max);
    let fastgen_span = if t_end.is_finite() && t0.is_finite() {
        t_end - t0
    } else {
        0.0
    };
    let effective_throughput: BTreeMap<String, f64> = FASTGEN_RATES
        .iter()
        .map(|&g| {
            let ok = done.iter().filter(|(r, _)| meets_fastgen_sla(r, g)).count();
            (fastgen_key(g), rate(ok as f64, fastgen_span))
        })
        .collect();

    Metrics {
        requests: n_all as u64,
        completed: completed.len() as u64,
        failed: (n_all - completed.len()) as u64,
        window_s,
        ttft_s: latency_stats(&ttft, sub_seed(1)),
        tpot_s: latency_stats(&tpot, sub_seed(2)),
        itl_s: clustered_latency_stats(&itl, sub_seed(3)),
        e2e_s: latency_stats(&e2e, sub_seed(4)),
        schedule_lag_s: latency_stats(&lag, sub_seed(5)),
        request_throughput: rate(completed.len() as f64, window_s),
        output_token_throughput: rate(output_tokens as f64, window_s),
        total_token_throughput: rate((output_tokens + prompt_tokens) as f64, window_s),
        slo: slo.clone(),
        goodput: rate(good as f64, window_s),
        slo_attainment: if n_all == 0 {
            0.0
        } else {
            good as f64 / n_all as f64
        },
        effective_throughput,
        engine: steps.map(engine_stats),
        lengths: length_check(records),
    }
}

/// Requested vs served lengths of the completed requests that carry server
/// information (HTTP engines); `None` when none does.
///
/// # Example
/// ```
/// use fuselab_core::{RequestRecord, RequestStatus, ServerSide, TokenChunk};
/// let rec = |id, served_prompt| RequestRecord {
///     id, prompt_len: 8, output_len: 2, t_scheduled: 0.0, t_sent: 0.0,
///     tokens: vec![TokenChunk { index: 0, t: 0.1, n_tokens: 2 }], t_done: Some(0.1),
///     status: RequestStatus::Ok, error: None,
///     server: Some(ServerSide { request_id: format!("r{id}"), prompt_tokens: Some(served_prompt),
///                               completion_tokens: Some(2), cached_tokens: None, prompt_exact: true }),
/// };
/// let check = fuselab_metrics::length_check(&[rec(0, 8), rec(1, 9)]).unwrap();
/// assert_eq!((check.checked, check.prompt_mismatches, check.output_mismatches), (2, 1, 0));
/// assert_eq!(check.mismatch_rate, 0.5);
/// ```
pub fn length_check(records: &[RequestRecord]) -> Option<fuselab_core::LengthCheck> {
    let served: Vec<(&RequestRecord, &fuselab_core::ServerSide)> = records
        .iter()
        .filter(|r| r.status == RequestStatus::Ok)
        .filter_map(|r| r.server.as_ref().map(|s| (r, s)))
        .collect();
    if served.is_empty() {
        return records
            .iter()
            .any(|r| r.server.is_some())
            .then(fuselab_core::LengthCheck::default);
    }
    let mut check = fuselab_core::LengthCheck {
        checked: served.len() as u64,
        ..Default::default()
    };
    let (mut any, mut diff_sum, mut diff_n) = (0u64, 0.0, 0u64);
    for (r, s) in &served {
        if s.prompt_tokens.is_none() && s.completion_tokens.is_none() {
            check.without_usage += 1;
        }
        let prompt_bad = s.prompt_exact && s.prompt_tokens.is_some_and(|p| p != r.prompt_len);
        if let Some(p) = s.prompt_tokens {
            diff_sum += f64::from(p) - f64::from(r.prompt_len);
            diff_n += 1;
        }
        let want = u64::from(r.output_len);
        let output_bad = r.tokens_received() != want
            || s.completion_tokens.is_some_and(|c| u64::from(c) != want);
        check.prompt_mismatches += u64::from(prompt_bad);
        check.output_mismatches += u64::from(output_bad);
        any += u64::from(prompt_bad || output_bad);
    }
    check.mismatch_rate = any as f64 / served.len() as f64;
    check.prompt_diff_mean = if diff_n == 0 {
        0.0
    } else {
        diff_sum / diff_n as f64
    };
    Some(check)
}

/// The mean of several runs' metrics, field by field (counts rounded), for
/// repeated runs of one configuration (`bench --repeat N`). The SLO is the
/// first run's; bootstrap intervals are dropped (the spread between the runs
/// is the uncertainty that matters, and the gate measures it). `None` for no
/// runs.
///
/// # Example
/// ```
/// use fuselab_core::Metrics;
/// let a = Metrics { goodput: 1.0, requests: 10, ..Default::default() };
/// let b = Metrics { goodput: 2.0, requests: 11, ..Default::default() };
/// let m = fuselab_metrics::mean_metrics(&[a, b]).unwrap();
/// assert_eq!((m.goodput, m.requests), (1.5, 11));
/// ```
pub fn mean_metrics(runs: &[Metrics]) -> Option<Metrics> {
    let first = runs.first()?;
    let k = runs.len() as f64;
    let f = |get: &dyn Fn(&Metrics) -> f64| runs.iter().map(get).sum::<f64>() / k;
    let u = |get: &dyn Fn(&Metrics) -> u64| {
        (runs.iter().map(|m| get(m) as f64).sum::<f64>() / k).round() as u64
    };
    let lat = |get: &dyn Fn(&Metrics) -> &LatencyStats| {
        let g = |h: &dyn Fn(&LatencyStats) -> f64| runs.iter().map(|m| h(get(m))).sum::<f64>() / k;
        LatencyStats {
            count: (runs.iter().map(|m| get(m).count as f64).sum::<f64>() / k).round() as u64,
            mean: g(&|s| s.mean),
            min: g(&|s| s.min),
            max: g(&|s| s.max),
            p50: g(&|s| s.p50),
            p90: g(&|s| s.p90),
            p95: g(&|s| s.p95),
            p99: g(&|s| s.p99),
            ci95: BTreeMap::new(),
        }
    };
    let engine = runs
        .iter()
        .map(|m| m.engine.clone())
        .collect::<Option<Vec<EngineStats>>>()
        .map(|e| {
            let g = |h: &dyn Fn(&EngineStats) -> f64| e.iter().map(h).sum::<f64>() / k;
            let c = |h: &dyn Fn(&EngineStats) -> u64| (g(&|s| h(s) as f64)).round() as u64;
            EngineStats {
                steps: c(&|s| s.steps),
                prefill_tokens: c(&|s| s.prefill_tokens),
                decode_tokens: c(&|s| s.decode_tokens),
                padding_tokens: c(&|s| s.padding_tokens),
                preemptions: c(&|s| s.preemptions),
                kv_utilisation_mean: g(&|s| s.kv_utilisation_mean),
                kv_utilisation_peak: g(&|s| s.kv_utilisation_peak),
                tokens_per_step_mean: g(&|s| s.tokens_per_step_mean),
                busy_s: g(&|s| s.busy_s),
                prefix_query_tokens: c(&|s| s.prefix_query_tokens),
                prefix_hit_tokens: c(&|s| s.prefix_hit_tokens),
                prefix_cache_hit_rate: g(&|s| s.prefix_cache_hit_rate),
                adapter_loads: c(&|s| s.adapter_loads),
                adapter_loads_per_s: g(&|s| s.adapter_loads_per_s),
                adapter_slot_utilisation: g(&|s| s.adapter_slot_utilisation),
                adapters_per_step_mean: g(&|s| s.adapters_per_step_mean),
                spec: mean_spec(&e),
            }
        });
    Some(Metrics {
        requests: u(&|m| m.requests),
        completed: u(&|m| m.completed),
        failed: u(&|m| m.failed),
        window_s: f(&|m| m.window_s),
        ttft_s: lat(&|m| &m.ttft_s),
        tpot_s: lat(&|m| &m.tpot_s),
        itl_s: lat(&|m| &m.itl_s),
        e2e_s: lat(&|m| &m.e2e_s),
        schedule_lag_s: lat(&|m| &m.schedule_lag_s),
        request_throughput: f(&|m| m.request_throughput),
        output_token_throughput: f(&|m| m.output_token_throughput),
        total_token_throughput: f(&|m| m.total_token_throughput),
        slo: first.slo.clone(),
        goodput: f(&|m| m.goodput),
        slo_attainment: f(&|m| m.slo_attainment),
        effective_throughput: first
            .effective_throughput
            .keys()
            .map(|key| {
                let v = f(&|m| m.effective_throughput.get(key).copied().unwrap_or(0.0));
                (key.clone(), v)
            })
            .collect(),
        engine,
        lengths: pooled_lengths(runs),
    })
}

/// The length checks of several runs pooled: counts summed, rates recomputed.
fn pooled_lengths(runs: &[Metrics]) -> Option<fuselab_core::LengthCheck> {
    let checks: Vec<&fuselab_core::LengthCheck> =
        runs.iter().filter_map(|m| m.lengths.as_ref()).collect();
    if checks.is_empty() {
        return None;
    }
    let sum = |f: fn(&fuselab_core::LengthCheck) -> u64| checks.iter().map(|c| f(c)).sum::<u64>();
    let checked = sum(|c| c.checked);
    let weighted = |f: fn(&fuselab_core::LengthCheck) -> f64| {
        if checked == 0 {
            0.0
        } else {
            checks.iter().map(|c| f(c) * c.checked as f64).sum::<f64>() / checked as f64
        }
    };
    Some(fuselab_core::LengthCheck {
        checked,
        prompt_mismatches: sum(|c| c.prompt_mismatches),
        output_mismatches: sum(|c| c.output_mismatches),
        mismatch_rate: weighted(|c| c.mismatch_rate),
        without_usage: sum(|c| c.without_usage),
        prompt_diff_mean: weighted(|c| c.prompt_diff_mean),
    })
}

/// The mean of the runs' speculative-decoding figures (`None` unless every run speculated).
fn mean_spec(runs: &[EngineStats]) -> Option<fuselab_core::SpecStats> {
    let all: Vec<&fuselab_core::SpecStats> = runs
        .iter()
        .map(|e| e.spec.as_ref())
        .collect::<Option<_>>()?;
    let k = all.len() as f64;
    let g = |h: &dyn Fn(&fuselab_core::SpecStats) -> f64| all.iter().map(|s| h(s)).sum::<f64>() / k;
    let c = |h: &dyn Fn(&fuselab_core::SpecStats) -> u64| g(&|s| h(s) as f64).round() as u64;
    Some(fuselab_core::SpecStats {
        rounds: c(&|s| s.rounds),
        proposed: c(&|s| s.proposed),
        accepted: c(&|s| s.accepted),
        acceptance_rate: g(&|s| s.acceptance_rate),
        mean_accepted_len: g(&|s| s.mean_accepted_len),
        block_efficiency: g(&|s| s.block_efficiency),
        draft_time_share: g(&|s| s.draft_time_share),
        verify_time_share: g(&|s| s.verify_time_share),
        source: all[0].source.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fuselab_core::TokenChunk;

    fn rec(id: u64, t_sent: f64, prompt_len: u32, chunks: &[(f64, u32)]) -> RequestRecord {
        let mut index = 0;
        let tokens = chunks
            .iter()
            .map(|&(t, n)| {
                let c = TokenChunk {
                    index,
                    t,
                    n_tokens: n,
                };
                index += n;
                c
            })
            .collect::<Vec<_>>();
        RequestRecord {
            id,
            prompt_len,
            output_len: index,
            t_scheduled: t_sent,
            t_sent,
            t_done: tokens.last().map(|c| c.t),
            tokens,
            status: RequestStatus::Ok,
            error: None,
            server: None,
        }
    }

    fn approx(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    /// Three requests over a 4 s window, one failed:
    /// * A: sent 0, prompt 512, tokens at 0.5 (1), 0.7 (1), 1.1 (2) → 4 tokens,
    ///   TTFT 0.5, E2E 1.1, TPOT 0.2, ITL [0.2, 0.2, 0.2].
    /// * B: sent 1, prompt 1024, tokens at 3.0 (1), 4.0 (1) → 2 tokens,
    ///   TTFT 2.0, E2E 3.0, TPOT 1.0, ITL [1.0].
    /// * C: sent 2, failed after one token at 2.5, t_done 3.0.
    fn timeline() -> Vec<RequestRecord> {
        let a = rec(0, 0.0, 512, &[(0.5, 1), (0.7, 1), (1.1, 2)]);
        let b = rec(1, 1.0, 1024, &[(3.0, 1), (4.0, 1)]);
        let mut c = rec(2, 2.0, 100, &[(2.5, 1)]);
        c.status = RequestStatus::Failed;
        c.t_done = Some(3.0);
        c.error = Some("engine error".into());
        c.t_scheduled = 1.5;
        vec![a, b, c]
    }

    #[test]
    fn hand_computed_timeline() {
        let m = compute_metrics(&timeline(), None, &Slo::default(), 1);
        assert_eq!((m.requests, m.completed, m.failed), (3, 2, 1));
        assert!(approx(m.window_s, 4.0));
        assert_eq!(m.ttft_s.count, 2);
        assert!(approx(m.ttft_s.mean, 1.25) && approx(m.ttft_s.p50, 1.25));
        assert!(approx(m.ttft_s.p90, 0.5 + 0.9 * 1.5));
        assert!(approx(m.e2e_s.mean, 2.05) && approx(m.e2e_s.max, 3.0));
        assert!(approx(m.tpot_s.mean, 0.6) && approx(m.tpot_s.min, 0.2));
        assert_eq!(m.itl_s.count, 4);
        assert!(approx(m.itl_s.p50, 0.2) && approx(m.itl_s.max, 1.0));
        // ITL sorted [0.2, 0.2, 0.2, 1.0]: p90 at rank 2.7 → 0.2 + 0.7·0.8.
        assert!(approx(m.itl_s.p90, 0.76));
        assert!(approx(m.schedule_lag_s.max, 0.5) && approx(m.schedule_lag_s.mean, 0.5 / 3.0));
        assert!(approx(m.request_throughput, 0.5));
        assert!(approx(m.output_token_throughput, 6.0 / 4.0));
        assert!(approx(m.total_token_throughput, (6.0 + 1536.0) / 4.0));
        // No SLO: goodput = completed / window, attainment = completed / all.
        assert!(approx(m.goodput, 0.5));
        assert!(approx(m.slo_attainment, 2.0 / 3.0));
        assert_eq!(m.engine, None);
    }

    #[test]
    fn goodput_under_slos() {
        let recs = timeline();
        let m = |s: &str| compute_metrics(&recs, None, &crate::parse_slo(s).unwrap(), 1);
        // TTFT ≤ 1 s: only A.
        let g = m("ttft=1s");
        assert!(approx(g.goodput, 0.25) && approx(g.slo_attainment, 1.0 / 3.0));
        assert_eq!(g.slo.ttft_s, Some(1.0));
        // TPOT ≤ 0.5 s: A (0.2); B has 1.0.
        assert!(approx(m("tpot=500ms").slo_attainment, 1.0 / 3.0));
        // E2E ≤ 3 s: both completed (A 1.1, B 3.0 exactly).
        assert!(approx(m("e2e=3s").slo_attainment, 2.0 / 3.0));
        // Everything tight: none.
        assert_eq!(m("ttft=100ms,e2e=30s").goodput, 0.0);
    }

    #[test]
    fn single_token_response_has_tpot_zero_for_goodput() {
        // vLLM treats TPOT as 0 when N_out ≤ 1, so a tight TPOT SLO admits it.
        let one = rec(0, 0.0, 10, &[(0.3, 1)]);
        let m = compute_metrics(
            std::slice::from_ref(&one),
            None,
            &crate::parse_slo("tpot=1ms").unwrap(),
            1,
        );
        assert_eq!((m.slo_attainment, m.tpot_s.count), (1.0, 0));
        assert!(meets_slo(
            &one,
            &crate::parse_slo("ttft=300ms,tpot=1us").unwrap()
        ));
        assert!(!meets_slo(&one, &crate::parse_slo("ttft=299ms").unwrap()));
    }

    #[test]
    fn fastgen_effective_throughput() {
        // A: prompt 512 → TTFT budget 1 s (0.5 ok); tokens k=1 at +0.2, k=2,3 at +0.6.
        //    rate 2: 0.2 ≤ 0.5, 0.6 ≤ 1 ok. rate 4: 0.2 ≤ 0.25, 0.6 ≤ 0.5? no → fails 4 and 6.
        // B: prompt 1024 → budget 2 s (2.0 ok); k=1 at +1.0: rate 2 needs ≤ 0.5 → fails.
        // C failed. Span = max t_done (4.0) − min t_sent (0) = 4.
        let m = compute_metrics(&timeline(), None, &Slo::default(), 1);
        assert!(approx(m.effective_throughput["2"], 0.25));
        assert_eq!(m.effective_throughput["4"], 0.0);
        assert_eq!(m.effective_throughput["6"], 0.0);
        assert_eq!(m.effective_throughput.len(), 3);
        // As an SLO: fastgen:2 admits only A.
        let g = compute_metrics(
            &timeline(),
            None,
            &crate::parse_slo("fastgen:2").unwrap(),
            1,
        );
        assert!(approx(g.slo_attainment, 1.0 / 3.0));
    }

    #[test]
    fn effective_throughput_span_uses_t_done() {
        // One request meeting every rate, t_done 1 s after its last token.
        let mut r = rec(0, 0.0, 512, &[(0.5, 1), (0.6, 1)]);
        r.t_done = Some(1.6);
        let m = compute_metrics(&[r], None, &Slo::default(), 1);
        assert!(approx(m.effective_throughput["6"], 1.0 / 1.6));
        assert!(approx(m.request_throughput, 1.0 / 0.6));
    }

    #[test]
    fn empty_and_degenerate_inputs_are_finite() {
        let m = compute_metrics(&[], Some(&[]), &Slo::default(), 1);
        assert_eq!(
            (m.requests, m.window_s, m.goodput, m.slo_attainment),
            (0, 0.0, 0.0, 0.0)
        );
        assert_eq!(m.engine, Some(EngineStats::default()));
        let mut r = rec(0, 0.0, 1, &[]);
        r.status = RequestStatus::Cancelled;
        let m = compute_metrics(&[r], None, &Slo::default(), 1);
        assert_eq!(
            (m.failed, m.request_throughput, m.ttft_s.count),
            (1, 0.0, 0)
        );
        assert!(serde_json::to_string(&m).is_ok());
    }

    /// Issue item 6: one request's gaps are all large, the others' small. The
    /// iid bootstrap over pooled gaps sees 5% large gaps in every resample and
    /// pins p99 to them; resampling requests leaves that request out about a
    /// third of the time, so p99's interval must reach down to the small gaps.
    #[test]
    fn itl_interval_resamples_requests_not_gaps() {
        let mut recs = Vec::new();
        for id in 0..20u64 {
            let gap = if id == 7 { 1.0 } else { 0.01 };
            let chunks: Vec<(f64, u32)> = (0..=50)
                .map(|k| (0.1 + f64::from(k) * gap * (1.0 + 0.001 * id as f64), 1))
                .collect();
            recs.push(rec(id, 0.0, 64, &chunks));
        }
        let m = compute_metrics(&recs, None, &Slo::default(), 3);
        let pooled: Vec<f64> = recs
            .iter()
            .flat_map(|r| request_metrics(r).unwrap().itl_s)
            .collect();
        let iid = latency_stats(&pooled, 3);
        assert_eq!((m.itl_s.count, m.itl_s.p99), (iid.count, iid.p99));
        let width = |ci: [f64; 2]| ci[1] - ci[0];
        let (cluster_w, iid_w) = (width(m.itl_s.ci95["p99"]), width(iid.ci95["p99"]));
        eprintln!(
            "ITL p99 {:.4}: request-level CI {:?} (width {cluster_w:.4}), iid CI {:?} (width {iid_w:.4})",
            m.itl_s.p99, m.itl_s.ci95["p99"], iid.ci95["p99"]
        );
        assert!(m.itl_s.ci95["p99"][0] < 0.02, "{:?}", m.itl_s.ci95["p99"]);
        assert!(iid.ci95["p99"][0] > 0.9, "{:?}", iid.ci95["p99"]);
        assert!(cluster_w > 20.0 * iid_w.max(1e-3), "{cluster_w} vs {iid_w}");
        // p90 lies among the small gaps, but drawing the slow request 3+ times
        // (≈ 8% of resamples) lifts it: only the request-level upper bound sees that.
        assert!(m.itl_s.ci95["p90"][1] > 0.5 && iid.ci95["p90"][1] < 0.05);
    }

    #[test]
    fn deterministic_per_seed() {
        let recs = timeline();
        let a = compute_metrics(&recs, None, &Slo::default(), 9);
        assert_eq!(a, compute_metrics(&recs, None, &Slo::default(), 9));
    }

    #[test]
    fn engine_stats_hand_computed() {
        let steps = [
            StepRecord {
                step: 0,
                duration_s: 0.25,
                prefill_tokens: 700,
                padding_tokens: 100,
                kv_blocks_used: 10,
                kv_blocks_total: 40,
                ..Default::default()
            },
            StepRecord {
                step: 1,
                duration_s: 0.5,
                decode_tokens: 8,
                preemptions: 2,
                kv_blocks_used: 40,
                kv_blocks_total: 40,
                ..Default::default()
            },
            StepRecord {
                step: 2,
                duration_s: 0.25,
                decode_tokens: 4,
                ..Default::default()
            },
        ];
        let e = compute_metrics(&timeline(), Some(&steps), &Slo::default(), 1)
            .engine
            .unwrap();
        assert_eq!(e.steps, 3);
        assert_eq!(
            (
                e.prefill_tokens,
                e.decode_tokens,
                e.padding_tokens,
                e.preemptions
            ),
            (700, 12, 100, 2)
        );
        assert!(approx(e.kv_utilisation_mean, 0.625) && approx(e.kv_utilisation_peak, 1.0));
        assert!(approx(e.tokens_per_step_mean, 712.0 / 3.0));
        assert!(approx(e.busy_s, 1.0));
    }
}
