//! The error type of fuselab-reports.

use std::path::PathBuf;

/// Errors of reports and the gate. Every variant says what is wrong and how to
/// fix it; the CLI maps all of them to exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === shared with the rest of fuselab ===
    /// Invalid user input or an I/O failure.
    #[error(transparent)]
    Core(#[from] fuselab_core::Error),

    /// A run or sweep folder could not be read.
    #[error(transparent)]
    Store(#[from] fuselab_store::Error),

    // === charts ===
    /// Plotters failed to draw a chart.
    #[error("cannot draw chart {chart}: {message}")]
    Chart {
        /// The chart's id.
        chart: String,
        /// What plotters said.
        message: String,
    },
    /// A PNG could not be encoded.
    #[error("cannot encode PNG for chart {chart}: {message}")]
    Png {
        /// The chart's id.
        chart: String,
        /// What the encoder said.
        message: String,
    },

    // === gate ===
    /// Runs that cannot be compared meaningfully.
    #[error("cannot compare {what}: {problem} ({hint})")]
    Incompatible {
        /// What differs, e.g. `schema_version`.
        what: String,
        /// Both values, quoted.
        problem: String,
        /// How to fix it.
        hint: String,
    },
    /// A side of the comparison has no usable data.
    #[error("{side} has no usable data: {problem}")]
    Empty {
        /// `baseline` or `candidate`.
        side: String,
        /// What is missing.
        problem: String,
    },
    /// A baseline name or folder could not be resolved.
    #[error("no baseline {name:?}: {path} does not exist ({hint})")]
    NoBaseline {
        /// The name asked for.
        name: String,
        /// Where it was looked up.
        path: PathBuf,
        /// How to fix it.
        hint: String,
    },
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for an invalid-input error ([`fuselab_core::Error::Invalid`]).
    pub(crate) fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::Core(fuselab_core::Error::invalid(field, problem, hint))
    }

    /// Shorthand for an I/O error naming the path.
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Core(fuselab_core::Error::io(path, source))
    }
}
