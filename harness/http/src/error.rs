//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong setting up HTTP benchmarking.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A tokenizer file could not be read or parsed.
    #[error("tokenizer {path}: {message}")]
    Tokenizer {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Text could not be tokenized or token ids decoded.
    #[error("tokenizing: {0}")]
    Encode(String),
    /// The server could not be reached or answered unexpectedly.
    #[error("server {url}: {message}")]
    Server {
        /// The URL asked.
        url: String,
        /// What went wrong.
        message: String,
    },
    /// A configuration value is invalid.
    #[error("{field}: {problem}")]
    Config {
        /// The flag or field.
        field: &'static str,
        /// What is wrong and how to fix it.
        problem: String,
    },
}
