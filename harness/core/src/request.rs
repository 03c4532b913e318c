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
    /// The request's place in a multi-turn conversation, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversation: Option<Turn>,
    /// The LoRA adapter the request is served with; `None` is the base model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adapter: Option<u32>,
}

/// Where a request sits in a multi-turn conversation. Turn `k`'s prompt is the
/// conversation so far (every earlier prompt and output) plus a new user
/// message; it is sent `think_s` after turn `k − 1` completed, and no earlier
/// than its `arrival_s`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Turn {
    /// The conversation; its turns share token ids (see [`RequestSpec::token_at`]).
    pub id: u64,
    /// 0-based turn index.
    pub turn: u32,
    /// Seconds between the previous turn's completion and this turn's send (0 for turn 0).
    pub think_s: f64,
}

impl Turn {
    /// Whether this turn waits for an earlier one.
    pub fn is_follow_up(&self) -> bool {
        self.turn > 0
    }
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
    /// let a = RequestSpec { id: 1, arrival_s: 0.0, prompt_len: 8, output_len: 4, prefix_group: Some(3), prefix_len: 5, conversation: None, adapter: None };
    /// let b = RequestSpec { id: 2, ..a.clone() };
    /// let (ta, tb) = (a.prompt_tokens(4096), b.prompt_tokens(4096));
    /// assert_eq!(ta.len(), 8);
    /// assert_eq!(ta[..5], tb[..5]); // shared prefix
    /// assert_ne!(ta[5..], tb[5..]);
    /// ```
    pub fn prompt_tokens(&self, vocab: u32) -> Vec<u32> {
        (0..self.prompt_len)
            .map(|pos| self.token_at(pos, vocab))
            .collect()
    }

    /// The token id at position `pos` in `[0, vocab)`: from the prefix group
    /// below [`Self::prefix_len`], else from the conversation (so every turn of
    /// a conversation sees the same ids for the conversation so far), else
    /// from the request id. Positions past the prompt give the synthetic
    /// continuation an engine without real sampling emits, which is what the
    /// next turn of a conversation carries as the previous answer.
    ///
    /// # Example
    /// ```
    /// use fuselab_core::{RequestSpec, Turn};
    /// let t0 = RequestSpec { id: 0, arrival_s: 0.0, prompt_len: 6, output_len: 3, prefix_group: None,
    ///                        prefix_len: 0, conversation: Some(Turn { id: 7, turn: 0, think_s: 0.0 }), adapter: None };
    /// let t1 = RequestSpec { id: 5, prompt_len: 14, conversation: Some(Turn { id: 7, turn: 1, think_s: 2.0 }), ..t0.clone() };
    /// let (a, b) = (t0.prompt_tokens(1000), t1.prompt_tokens(1000));
    /// assert_eq!(a[..], b[..6]); // turn 1 starts with turn 0's prompt ...
    /// assert_eq!(b[6..9], [t0.token_at(6, 1000), t0.token_at(7, 1000), t0.token_at(8, 1000)]); // ... and answer
    /// ```
    pub fn token_at(&self, pos: u32, vocab: u32) -> u32 {
        let shared = if self.prefix_group.is_some() {
            self.prefix_len.min(self.prompt_len)
        } else {
            0
        };
        let key = if pos < shared {
            (1u64 << 63) | (u64::from(self.prefix_group.unwrap_or(0)) << 32)
        } else if let Some(c) = &self.conversation {
            (1u64 << 62) | (c.id << 24)
        } else {
            self.id << 20
        };
        token_hash(key ^ u64::from(pos), vocab)
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

/// How the turns of a workload's conversations depend on each other: for
/// each request (by index), the index of its conversation's next turn, and
/// whether it waits for a previous turn that the workload holds. A turn whose
/// previous turn is missing (a truncated trace) goes at its `arrival_s`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TurnLinks {
    /// `next[i]`: the index of the turn after request `i`, if any.
    pub next: Vec<Option<usize>>,
    /// `waits[i]`: request `i` is sent only after its previous turn ends.
    pub waits: Vec<bool>,
}

impl TurnLinks {
    /// The links of `specs`.
    ///
    /// # Example
    /// ```
    /// use fuselab_core::{RequestSpec, Turn, TurnLinks};
    /// let turn = |id, t| RequestSpec { id, arrival_s: 0.0, prompt_len: 4, output_len: 1, prefix_group: None,
    ///     prefix_len: 0, conversation: Some(Turn { id: 9, turn: t, think_s: 1.0 }), adapter: None };
    /// let links = TurnLinks::of(&[turn(0, 0), turn(1, 2), turn(2, 1)]);
    /// assert_eq!(links.next, [Some(2), None, Some(1)]);
    /// assert_eq!(links.waits, [false, true, true]);
    /// assert!(links.any());
    /// ```
    pub fn of(specs: &[RequestSpec]) -> Self {
        let index: std::collections::HashMap<(u64, u32), usize> = specs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.conversation.as_ref().map(|c| ((c.id, c.turn), i)))
            .collect();
        let mut links = Self {
            next: vec![None; specs.len()],
            waits: vec![false; specs.len()],
        };
        for (i, s) in specs.iter().enumerate() {
            if let Some(c) = &s.conversation
                && let Some(&j) = c.turn.checked_add(1).and_then(|t| index.get(&(c.id, t)))
            {
                links.next[i] = Some(j);
                links.waits[j] = true;
            }
        }
        links
    }

    /// Whether any request waits for another.
    pub fn any(&self) -> bool {
        self.waits.iter().any(|&w| w)
    }
}
