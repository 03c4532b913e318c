//! Errors of the harness.

/// What can stop a harness run from starting or finishing.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HarnessError {
    /// The plan is invalid (names the field and how to fix it).
    #[error(transparent)]
    Invalid(#[from] fuselab_core::Error),
    /// The engine could not be started.
    #[error("engine {engine} failed to start: {message}")]
    EngineStart {
        /// The engine's name.
        engine: String,
        /// Why.
        message: String,
    },
    /// The async runtime or the sender thread could not be started.
    #[error("cannot start the async runtime or the sender thread: {0}")]
    Runtime(#[source] std::io::Error),
}
