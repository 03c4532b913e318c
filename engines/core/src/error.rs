//! The error type of the engine crate.

use crate::BackendError;

/// Everything that can go wrong while building or running a [`crate::NativeEngine`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// Bad user input: an unknown policy or knob, a knob out of range. The CLI
    /// maps it to exit code 2.
    #[error(transparent)]
    Input(#[from] fuselab_core::Error),
    /// The backend failed outside a step (e.g. while allocating the KV cache).
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The KV memory budget cannot hold a single block.
    #[error(
        "the KV cache budget of {budget_bytes} bytes cannot hold one block of {block_bytes} bytes; \
         use a smaller model, a larger device or a smaller `block` knob"
    )]
    KvTooSmall {
        /// Bytes the backend offers for the KV cache.
        budget_bytes: u64,
        /// Bytes of one block (`block_size × kv_bytes_per_token`).
        block_bytes: u64,
    },
    /// An internal KV-cache invariant does not hold (a bug, reported instead of a panic).
    #[error("KV cache invariant violated: {0}")]
    KvInvariant(String),
    /// The scheduler could not make progress although work is pending (a bug).
    #[error("engine stalled: {0}")]
    Stalled(String),
}

/// `Result` with [`EngineError`].
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
