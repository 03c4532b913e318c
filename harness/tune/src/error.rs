//! The error type of fuselab-tune.

use std::path::PathBuf;

/// Errors raised while parsing search spaces, fitting models or keeping a
/// campaign journal. Every variant names what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // === user input ===
    /// A search-space or constraint specification is malformed.
    #[error("invalid search space at `{item}`: {problem} (valid syntax: {example})")]
    Space {
        /// The offending item, usually the knob name or the raw text.
        item: String,
        /// What is wrong, quoting the bad value.
        problem: String,
        /// An example of valid syntax.
        example: String,
    },
    /// Some other user-supplied setting is invalid.
    #[error("invalid {field}: {problem} ({hint})")]
    Invalid {
        /// The flag or field that is wrong.
        field: String,
        /// What is wrong with it.
        problem: String,
        /// How to fix it.
        hint: String,
    },

    // === files ===
    /// A file or folder could not be read or written.
    #[error("cannot access {path}: {source}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A journal line could not be parsed.
    #[error("{path}:{line}: {message}")]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },

    // === executors ===
    /// A scheduler refused or failed a request (submit, poll, cancel).
    #[error("{executor}: {message}")]
    Executor {
        /// The executor (`local`, `slurm`, `ray`).
        executor: String,
        /// What failed, with the scheduler's own words.
        message: String,
    },

    // === numerics ===
    /// A numerical routine failed (e.g. the kernel matrix is not positive
    /// definite even with the largest jitter).
    #[error("numerical failure in {what}: {detail}")]
    Numerical {
        /// The routine.
        what: &'static str,
        /// Details.
        detail: String,
    },
}

impl Error {
    /// Shorthand for [`Error::Space`].
    pub fn space(
        item: impl Into<String>,
        problem: impl Into<String>,
        example: impl Into<String>,
    ) -> Self {
        Self::Space {
            item: item.into(),
            problem: problem.into(),
            example: example.into(),
        }
    }

    /// Shorthand for [`Error::Invalid`].
    pub fn invalid(
        field: impl Into<String>,
        problem: impl Into<String>,
        hint: impl Into<String>,
    ) -> Self {
        Self::Invalid {
            field: field.into(),
            problem: problem.into(),
            hint: hint.into(),
        }
    }

    /// Shorthand for [`Error::Executor`].
    pub fn executor(executor: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Executor {
            executor: executor.into(),
            message: message.into(),
        }
    }

    /// Shorthand for [`Error::Io`].
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
