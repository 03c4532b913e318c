//! Errors of the kernels: shapes and indices that do not fit together.

/// A kernel was called with inconsistent shapes or out-of-range indices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KernelError {
    /// A buffer has the wrong length for the shape the call describes.
    #[error("{what} has {found} elements but the shape needs {expected}")]
    Shape {
        /// Which buffer.
        what: &'static str,
        /// Elements needed.
        expected: usize,
        /// Elements given.
        found: usize,
    },
    /// A sequence's block table does not cover its positions or names a block
    /// outside the cache.
    #[error("block table: {0}")]
    BlockTable(String),
    /// A configuration value is out of range (e.g. heads not divisible).
    #[error("invalid kernel configuration: {0}")]
    Config(String),
}

pub(crate) fn check_len(
    what: &'static str,
    buf: usize,
    expected: usize,
) -> Result<(), KernelError> {
    if buf == expected {
        Ok(())
    } else {
        Err(KernelError::Shape {
            what,
            expected,
            found: buf,
        })
    }
}
