//! The error type shared by fuselab's libraries for invalid input and I/O.

use std::path::PathBuf;

/// Errors about user input and files. Every variant names what is wrong and,
/// where possible, how to fix it; the CLI maps all of them to exit code 2.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A value given by the user (flag, config key, file field) is not valid.
    #[error("invalid {field}: {problem} ({hint})")]
    Invalid {
        /// The flag, key or field that is wrong, e.g. `--rate` or `workload.n`.
        field: String,
        /// What is wrong with it, quoting the bad value.
        problem: String,
        /// How to fix it.
        hint: String,
    },
    /// A line of a text file (JSONL trace, TOML config) could not be parsed.
    #[error("{path}:{line}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong, naming the field.
        message: String,
    },
    /// A file or folder could not be read or written.
    #[error("cannot access {path}")]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A stored file was written by an incompatible version of fuselab.
    #[error(
        "{path} has schema version {found}, but this fuselab reads version {expected}; re-run it with this version"
    )]
    SchemaMismatch {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads.
        expected: u32,
    },
}

impl Error {
    /// Shorthand for [`Error::Invalid`].
    ///
    /// # Example
    /// ```
    /// let e = fuselab_core::Error::invalid("--rate", "-1 is negative", "give a rate > 0 in requests/s");
    /// assert!(e.to_string().contains("--rate"));
    /// ```
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
