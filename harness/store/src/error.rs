//! The run store's error type.

use std::path::PathBuf;

/// Errors reading or writing run and sweep folders. Every variant names the
/// path involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === shared with the rest of fuselab ===
    /// An I/O failure ([`fuselab_core::Error::Io`]) or a file written by another
    /// schema version ([`fuselab_core::Error::SchemaMismatch`]).
    #[error(transparent)]
    Core(#[from] fuselab_core::Error),

    // === folders ===
    /// The output folder exists and holds files.
    #[error(
        "{path} already exists and is not empty; pass --force to overwrite it, or choose another output folder"
    )]
    Exists {
        /// The folder.
        path: PathBuf,
    },
    /// The folder holds neither `summary.json` nor `sweep.json`.
    #[error(
        "{path} is not a fuselab run folder (no summary.json), sweep folder (no sweep.json) or repeat folder (no repeat.json)"
    )]
    NotAFolderOfRuns {
        /// The folder.
        path: PathBuf,
    },

    // === file contents ===
    /// A JSON file could not be parsed or written.
    #[error("{path}")]
    Json {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: serde_json::Error,
    },
    /// A Parquet file could not be read or written.
    #[error("{path}")]
    Parquet {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: polars::error::PolarsError,
    },
    /// A table's content is not what fuselab writes (missing column, wrong type,
    /// unexpected null, unknown status, token rows for an unknown request).
    #[error("{path}: {problem}")]
    Table {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the column or row.
        problem: String,
    },
    /// Records given to a writer cannot be stored faithfully.
    #[error("cannot store {what}: {problem}")]
    InvalidRecords {
        /// What was being written, e.g. `requests`.
        what: &'static str,
        /// What is wrong.
        problem: String,
    },
}

impl Error {
    /// The [`fuselab_core::Error`] inside, if this is one (e.g. to match
    /// [`fuselab_core::Error::SchemaMismatch`]).
    pub fn as_core(&self) -> Option<&fuselab_core::Error> {
        match self {
            Self::Core(e) => Some(e),
            _ => None,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
