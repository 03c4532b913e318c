//! The crate's error type.

use std::path::PathBuf;

/// What can go wrong in the terminal UI.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    // === I/O ===
    /// Reading or writing a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The terminal could not be set up, drawn or restored.
    #[error("terminal: {0}")]
    Terminal(#[source] std::io::Error),

    // === folders ===
    /// A folder is none of run, repeat, sweep or campaign.
    #[error("{}: not a run, sweep, repeat or campaign folder", path.display())]
    NotAFolder {
        /// The folder.
        path: PathBuf,
    },
    /// Reading a run, sweep or campaign through the reports crate failed.
    #[error(transparent)]
    Reports(#[from] fuselab_reports::Error),
    /// Reading a folder through the store failed.
    #[error(transparent)]
    Store(#[from] fuselab_store::Error),
    /// Rebuilding a campaign's tuner failed.
    #[error(transparent)]
    Tune(#[from] fuselab_tune::Error),
    /// A JSON file of the TUI's own (`tui-job.json`) is malformed.
    #[error("{}: {source}", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parse error.
        source: serde_json::Error,
    },

    // === new work ===
    /// The new-work form holds a value that cannot be run.
    #[error("{field}: {problem}")]
    Form {
        /// The form field.
        field: &'static str,
        /// What is wrong, and how to fix it.
        problem: String,
    },
    /// Starting a child `fuselab` process failed.
    #[error("starting `{command}`: {source}")]
    Spawn {
        /// The command line.
        command: String,
        /// The underlying error.
        source: std::io::Error,
    },
}

impl Error {
    /// An I/O error naming `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
