//! Requests as a workload describes them.

use serde::{Deserialize, Serialize};

/// Identifies a request within one run.
pub type RequestId = u64;

/// One request of a workload: when it arrives and exactly how many tokens it
/// carries in and asks for out.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestSpec {
    /// Unique within the workload, in arrival order.
    pub id: RequestId,
    /// Scheduled arrival, seconds from the run's start (absolute schedule).
    /// For closed-loop workloads this is 0 and the harness decides.
    pub arrival_s: f64,
    /// Exact number of prompt tokens.
    pub prompt_len: u32,
    /// Exact number of tokens to generate (EOS is ignored).
    pub output_len: u32,
    /// Requests of the same group share their first [`Self::prefix_len`] tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_group: Option<u32>,
    /// Length of the shared prefix (0 when there is no group).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prefix_len: u32,
}

fn is_zero(v: &u32) -> bool {
    *v == 0
}

impl RequestSpec {
    /// The request's prompt token ids in `[0, vocab)`, derived deterministically
    /// from the request id, or from the prefix group for the shared prefix.
    ///
    /// # Example
    /// ```
    /// use fuselab_core::RequestSpec;
    /// let a = RequestSpec { id: 1, arrival_s: 0.0, prompt_len: 8, output_len: 4, prefix_group: Some(3), prefix_len: 5 };
    /// let b = RequestSpec { id: 2, ..a.clone() };
    /// let (ta, tb) = (a.prompt_tokens(4096), b.prompt_tokens(4096));
    /// assert_eq!(ta.len(), 8);
    /// assert_eq!(ta[..5], tb[..5]); // shared prefix
    /// assert_ne!(ta[5..], tb[5..]);
    /// ```
    pub fn prompt_tokens(&self, vocab: u32) -> Vec<u32> {
        let shared = if self.prefix_group.is_some() {
            self.prefix_len.min(self.prompt_len)
        } else {
            0
        };
        (0..self.prompt_len)
            .map(|pos| {
                let key = if pos < shared {
                    (1u64 << 63) | (u64::from(self.prefix_group.unwrap_or(0)) << 32)
                } else {
                    self.id << 20
                };
                token_hash(key ^ u64::from(pos), vocab)
            })
            .collect()
    }
}

fn token_hash(x: u64, vocab: u32) -> u32 {
    // splitmix64 finaliser: cheap, stable across platforms and versions.
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    u32::try_from(z % u64::from(vocab.max(1))).unwrap_or(0)
}
