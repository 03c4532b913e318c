//! Per-request latency metrics derived from the raw chunk timestamps.
//!
//! Definitions (research/anchors.md §b.1), for a request sent at `t_sent`
//! whose `N` output tokens arrive in chunks `(t_c, n_c)`:
//!
//! * **TTFT** = `t_1 − t_sent` (first chunk).
//! * **E2E** = `t_last − t_sent` (last token-bearing chunk, not `t_done`).
//! * **TPOT** = `(E2E − TTFT)/(N − 1)` for `N > 1`; undefined for `N ≤ 1`.
//! * **ITL, per token**: every output token after the first contributes one
//!   gap, `N − 1` in all. A chunk of `n` tokens arriving `Δ` after the previous
//!   chunk contributes `n` gaps of `Δ/n`. The first chunk's extra tokens
//!   (`n_1 − 1` of them) arrive together with the first token and contribute
//!   gaps of 0. Then the gaps sum to `t_last − t_1`, and their mean per request
//!   equals TPOT. This is the vLLM/SGLang chunk-gap ITL (anchors.md §b.1, def. 1),
//!   corrected for multi-token chunks as vllm#42661 asks.
//! * **ITL, per chunk**: the raw `t_c − t_{c−1}` for `c ≥ 2`, i.e. vLLM's
//!   uncorrected definition, kept for comparison with vLLM's numbers.

use fuselab_core::{RequestId, RequestRecord, RequestStatus};

/// Latency figures of one completed request, in seconds.
#[derive(Clone, Debug, PartialEq)]
pub struct RequestMetrics {
    /// The request.
    pub id: RequestId,
    /// Prompt tokens.
    pub prompt_len: u32,
    /// Output tokens received (Σ chunk sizes).
    pub output_tokens: u64,
    /// Time to first token.
    pub ttft_s: f64,
    /// End-to-end latency to the last token.
    pub e2e_s: f64,
    /// Time per output token after the first; `None` when fewer than 2 tokens.
    pub tpot_s: Option<f64>,
    /// One gap per output token after the first (`output_tokens − 1` values).
    pub itl_s: Vec<f64>,
    /// One gap per chunk after the first.
    pub chunk_gaps_s: Vec<f64>,
    /// `t_sent − t_scheduled`.
    pub schedule_lag_s: f64,
}

/// Latency metrics of a request, or `None` if it did not complete
/// ([`RequestStatus::Ok`]) or received no token.
///
/// # Example
/// ```
/// use fuselab_core::{RequestRecord, RequestStatus, TokenChunk};
/// let r = RequestRecord {
///     id: 0, prompt_len: 100, output_len: 4, t_scheduled: 0.0, t_sent: 0.5,
///     tokens: vec![
///         TokenChunk { index: 0, t: 1.5, n_tokens: 1 },
///         TokenChunk { index: 1, t: 2.1, n_tokens: 3 }, // Δ = 0.6 over 3 tokens
///     ],
///     t_done: Some(2.1), status: RequestStatus::Ok, error: None,
///     server: None,
/// };
/// let m = fuselab_metrics::request_metrics(&r).unwrap();
/// assert_eq!(m.ttft_s, 1.0);
/// assert!((m.tpot_s.unwrap() - 0.2).abs() < 1e-12);
/// assert_eq!(m.itl_s.len(), 3);
/// assert!((m.chunk_gaps_s[0] - 0.6).abs() < 1e-12);
/// ```
pub fn request_metrics(r: &RequestRecord) -> Option<RequestMetrics> {
    if r.status != RequestStatus::Ok {
        return None;
    }
    let first = r.tokens.first()?;
    let last = r.tokens.last()?;
    let output_tokens = r.tokens_received();
    let ttft_s = first.t - r.t_sent;
    let e2e_s = last.t - r.t_sent;
    let tpot_s = (output_tokens > 1).then(|| (e2e_s - ttft_s) / (output_tokens - 1) as f64);
    let mut itl_s = Vec::with_capacity(output_tokens.saturating_sub(1) as usize);
    itl_s.extend(std::iter::repeat_n(
        0.0,
        first.n_tokens.saturating_sub(1) as usize,
    ));
    let mut chunk_gaps_s = Vec::with_capacity(r.tokens.len().saturating_sub(1));
    for pair in r.tokens.windows(2) {
        let gap = pair[1].t - pair[0].t;
        chunk_gaps_s.push(gap);
        let n = pair[1].n_tokens;
        if n > 0 {
            itl_s.extend(std::iter::repeat_n(gap / f64::from(n), n as usize));
        }
    }
    Some(RequestMetrics {
        id: r.id,
        prompt_len: r.prompt_len,
        output_tokens,
        ttft_s,
        e2e_s,
        tpot_s,
        itl_s,
        chunk_gaps_s,
        schedule_lag_s: r.t_sent - r.t_scheduled,
    })
}

/// The FastGen SLA (research/anchors.md §b.3, "cum" variant): the prompt SLA
/// `TTFT ≤ prompt_len / 512 s`, and for every generated token `k = 1..N−1`
/// after the first, `Σ_{j≤k} gap_j ≤ k / gen_rate`.
///
/// The sum of the first `k` gaps telescopes to `t(token k) − t_1`, measured
/// from the first token. A token becomes visible to the client when its chunk
/// arrives, so every token of a chunk gets the chunk's time. The binding token
/// of a chunk is therefore its first one (the smallest `k` at that time). This
/// is stricter than reading the deadline off the `Δ/n`-spread ITL gaps, which
/// would credit a chunk's early tokens with times before they were delivered.
/// Single-token responses need only the prompt SLA. Requests that did not
/// complete never meet it.
///
/// # Example
/// ```
/// use fuselab_core::{RequestRecord, RequestStatus, TokenChunk};
/// // 512-token prompt answered in 1 s, then 1 token every 0.3 s (≈3.3 tok/s).
/// let tokens = (0..5).map(|i| TokenChunk { index: i, t: 1.0 + 0.3 * f64::from(i), n_tokens: 1 }).collect();
/// let r = RequestRecord { id: 0, prompt_len: 512, output_len: 5, t_scheduled: 0.0, t_sent: 0.0,
///     tokens, t_done: Some(2.2), status: RequestStatus::Ok, error: None, server: None };
/// assert!(fuselab_metrics::meets_fastgen_sla(&r, 2.0));
/// assert!(!fuselab_metrics::meets_fastgen_sla(&r, 4.0));
/// ```
pub fn meets_fastgen_sla(r: &RequestRecord, gen_rate: f64) -> bool {
    if r.status != RequestStatus::Ok {
        return false;
    }
    let Some(first) = r.tokens.first() else {
        return false;
    };
    if first.t - r.t_sent > f64::from(r.prompt_len) / FASTGEN_PROMPT_RATE {
        return false;
    }
    // `k` = tokens delivered before this chunk = 1-based generation index of
    // the chunk's first token counted after the first output token.
    let mut k = u64::from(first.n_tokens);
    for c in &r.tokens[1..] {
        if c.n_tokens > 0 && c.t - first.t > k as f64 / gen_rate {
            return false;
        }
        k += u64::from(c.n_tokens);
    }
    true
}

/// The FastGen prompt SLA rate: prompts are processed at 512 tokens/s.
pub const FASTGEN_PROMPT_RATE: f64 = 512.0;

/// The generation SLA rates (tokens/s) reported in
/// [`fuselab_core::Metrics::effective_throughput`], as in the FastGen blog.
pub const FASTGEN_RATES: [f64; 3] = [2.0, 4.0, 6.0];

#[cfg(test)]
mod tests {
    use super::*;
    use fuselab_core::TokenChunk;

    fn rec(t_sent: f64, prompt_len: u32, chunks: &[(f64, u32)]) -> RequestRecord {
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
            id: 7,
            prompt_len,
            output_len: index,
            t_scheduled: t_sent - 0.25,
            t_sent,
            t_done: tokens.last().map(|c| c.t),
            tokens,
            status: RequestStatus::Ok,
            error: None,
            server: None,
        }
    }

    fn close(a: &[f64], b: &[f64]) -> bool {
        a.len() == b.len() && a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12)
    }

    #[test]
    fn single_token_chunks() {
        // sent 1.0; tokens at 1.5, 1.6, 1.8, 2.1
        let m = request_metrics(&rec(1.0, 10, &[(1.5, 1), (1.6, 1), (1.8, 1), (2.1, 1)])).unwrap();
        assert_eq!(m.output_tokens, 4);
        assert!((m.ttft_s - 0.5).abs() < 1e-12);
        assert!((m.e2e_s - 1.1).abs() < 1e-12);
        assert!((m.tpot_s.unwrap() - 0.2).abs() < 1e-12); // (1.1 − 0.5)/3
        assert!(close(&m.itl_s, &[0.1, 0.2, 0.3]));
        assert!(close(&m.chunk_gaps_s, &[0.1, 0.2, 0.3]));
        assert!((m.schedule_lag_s - 0.25).abs() < 1e-12);
    }

    #[test]
    fn multi_token_chunks_spread_their_gap() {
        // sent 0; first chunk 3 tokens at 2.0; then 2 tokens at 2.4; then 4 at 3.2.
        let m = request_metrics(&rec(0.0, 10, &[(2.0, 3), (2.4, 2), (3.2, 4)])).unwrap();
        assert_eq!(m.output_tokens, 9);
        assert_eq!(m.ttft_s, 2.0);
        assert!((m.e2e_s - 3.2).abs() < 1e-12);
        assert!((m.tpot_s.unwrap() - 1.2 / 8.0).abs() < 1e-12);
        assert!(close(&m.itl_s, &[0.0, 0.0, 0.2, 0.2, 0.2, 0.2, 0.2, 0.2]));
        assert!(close(&m.chunk_gaps_s, &[0.4, 0.8]));
        let mean = m.itl_s.iter().sum::<f64>() / m.itl_s.len() as f64;
        assert!(
            (mean - m.tpot_s.unwrap()).abs() < 1e-12,
            "mean ITL equals TPOT"
        );
    }

    #[test]
    fn one_token_has_no_tpot_and_incomplete_has_no_metrics() {
        let m = request_metrics(&rec(0.0, 10, &[(0.7, 1)])).unwrap();
        assert_eq!((m.ttft_s, m.e2e_s, m.tpot_s), (0.7, 0.7, None));
        assert!(m.itl_s.is_empty() && m.chunk_gaps_s.is_empty());
        let mut r = rec(0.0, 10, &[(0.7, 1), (0.9, 1)]);
        r.status = RequestStatus::Failed;
        assert_eq!(request_metrics(&r), None);
        assert_eq!(request_metrics(&rec(0.0, 10, &[])), None);
    }

    #[test]
    fn fastgen_prompt_sla_scales_with_prompt() {
        // 1024-token prompt: TTFT budget 2 s.
        assert!(meets_fastgen_sla(&rec(1.0, 1024, &[(3.0, 1)]), 4.0));
        assert!(!meets_fastgen_sla(&rec(1.0, 1024, &[(3.01, 1)]), 4.0));
        // 256-token prompt: budget 0.5 s.
        assert!(!meets_fastgen_sla(&rec(0.0, 256, &[(0.6, 1)]), 2.0));
    }

    #[test]
    fn fastgen_cumulative_sla_meets_2_not_4() {
        // Steady 0.4 s per token = 2.5 tok/s: deadline k/2 met, k/4 missed.
        let r = rec(0.0, 512, &[(0.5, 1), (0.9, 1), (1.3, 1), (1.7, 1)]);
        assert!(meets_fastgen_sla(&r, 2.0));
        assert!(!meets_fastgen_sla(&r, 4.0));
        assert!(!meets_fastgen_sla(&r, 6.0));
    }

    #[test]
    fn fastgen_cumulative_sla_tolerates_being_ahead_then_a_stall() {
        // Four tokens fast (0.1 s apart), then a 0.5 s stall before token 5.
        // Rate 4: deadlines 0.25, 0.5, 0.75, 1.0 for k = 1..4; token 4 at 0.3+0.5 = 0.8 ≤ 1.0: ok.
        // Rate 6: deadline for k = 4 is 0.667 < 0.8: missed.
        let r = rec(
            0.0,
            512,
            &[(1.0, 1), (1.1, 1), (1.2, 1), (1.3, 1), (1.8, 1)],
        );
        assert!(meets_fastgen_sla(&r, 4.0));
        assert!(!meets_fastgen_sla(&r, 6.0));
        // A per-gap check would have failed rate 4 (0.5 s gap > 0.25 s).
    }

    #[test]
    fn fastgen_chunk_tokens_arrive_with_their_chunk() {
        // First token at 1.0, then a chunk of 4 tokens at 1.5 (tokens k = 1..4).
        // Binding deadline is k = 1: 0.5 ≤ 1/2 meets rate 2; 0.5 > 1/4 misses rate 4,
        // although the spread gaps (0.125 each) would have met it.
        let r = rec(0.0, 512, &[(1.0, 1), (1.5, 4)]);
        assert!(meets_fastgen_sla(&r, 2.0));
        assert!(!meets_fastgen_sla(&r, 4.0));
        // A multi-token first chunk counts as k already delivered: tokens k = 1, 2 at
        // time 0, next chunk's first token is k = 3 with deadline 3/4 = 0.75 at rate 4.
        let r = rec(0.0, 512, &[(1.0, 3), (1.7, 1)]);
        assert!(meets_fastgen_sla(&r, 4.0));
        assert!(!meets_fastgen_sla(&r, 6.0)); // 0.7 > 3/6
    }

    #[test]
    fn fastgen_single_token_needs_only_prompt_sla_and_failures_never_meet() {
        assert!(meets_fastgen_sla(&rec(0.0, 512, &[(1.0, 1)]), 6.0));
        let mut r = rec(0.0, 512, &[(0.5, 1)]);
        r.status = RequestStatus::Timeout;
        assert!(!meets_fastgen_sla(&r, 2.0));
        assert!(!meets_fastgen_sla(&rec(0.0, 512, &[]), 2.0));
    }
}
