//! Ragged forward batches: what one step computes.

use fuselab_core::RequestId;

/// One sequence's slice of a forward step: tokens `start_pos .. start_pos + n_tokens`.
///
/// A decode entry of more than one token is a speculative *verify*: its first
/// token is the sequence's last generated token and the other `n_tokens − 1`
/// are draft tokens; a backend with real tokens returns the target's greedy
/// token after every one of its positions in [`crate::StepOutput::verified`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BatchEntry {
    /// The request (sequence).
    pub request: RequestId,
    /// Position of the chunk's first token; positions before it are already in the KV cache.
    pub start_pos: u32,
    /// Tokens computed for this sequence in this step (1 for a decode).
    pub n_tokens: u32,
    /// Whether a token is sampled from the chunk's last position.
    pub sample: bool,
    /// Whether the chunk is a decode (its first token was generated, not prompted).
    pub is_decode: bool,
    /// The chunk's token ids; filled only when [`crate::Backend::needs_tokens`] is true.
    pub tokens: Vec<u32>,
    /// The sequence's KV block ids covering positions `0 .. start_pos + n_tokens`;
    /// filled only when [`crate::Backend::needs_tokens`] is true.
    pub block_table: Vec<u32>,
    /// Row of a padded batch this entry is packed into (static and prepack).
    pub row: Option<u32>,
}

/// The geometry the batch is executed with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BatchShape {
    /// Entries are packed back to back with no padding (varlen).
    #[default]
    Ragged,
    /// Entries sit in `rows` rows of `row_len` tokens each; unused slots are
    /// padding that a padded engine computes and throws away.
    Padded {
        /// Number of rows.
        rows: u32,
        /// Tokens per row.
        row_len: u32,
    },
}

/// A step's work: a ragged (or padded) batch of sequence chunks.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ForwardBatch {
    /// The chunks, one per sequence.
    pub entries: Vec<BatchEntry>,
    /// How they are laid out.
    pub shape: BatchShape,
}

impl ForwardBatch {
    /// Tokens of prompt (prefill or recompute) computed in this step.
    pub fn prefill_tokens(&self) -> u32 {
        self.entries
            .iter()
            .filter(|e| !e.is_decode)
            .map(|e| e.n_tokens)
            .sum()
    }

    /// Decode tokens computed in this step.
    pub fn decode_tokens(&self) -> u32 {
        self.entries
            .iter()
            .filter(|e| e.is_decode)
            .map(|e| e.n_tokens)
            .sum()
    }

    /// Useful tokens in this step.
    pub fn real_tokens(&self) -> u32 {
        self.entries.iter().map(|e| e.n_tokens).sum()
    }

    /// Draft tokens verified in this step (decode entries' tokens beyond their first).
    pub fn draft_tokens(&self) -> u32 {
        self.entries
            .iter()
            .filter(|e| e.is_decode)
            .map(|e| e.n_tokens.saturating_sub(1))
            .sum()
    }

    /// Padding tokens computed and wasted (0 for ragged batches).
    pub fn padding_tokens(&self) -> u32 {
        match self.shape {
            BatchShape::Ragged => 0,
            BatchShape::Padded { rows, row_len } => {
                (rows * row_len).saturating_sub(self.real_tokens())
            }
        }
    }

    /// True when the step has nothing to compute.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
