//! Errors of the CPU backend.

use std::path::PathBuf;

/// What can go wrong building or running the CPU model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CpuError {
    /// The model shape is invalid or unknown.
    #[error("{0}")]
    Shape(#[from] fuselab_core::Error),
    /// A weights file lacks a tensor the model needs.
    #[error(
        "{path}: tensor {name} is missing (expected shape {expected:?}); the file must use Hugging Face Llama names"
    )]
    MissingTensor {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model config needs.
        expected: Vec<usize>,
    },
    /// A tensor in a weights file has the wrong shape for the model config.
    #[error(
        "{path}: tensor {name} has shape {found:?} but the model config needs {expected:?}; check --model against the file"
    )]
    TensorShape {
        /// The file.
        path: PathBuf,
        /// The tensor name.
        name: String,
        /// The shape the model config needs.
        expected: Vec<usize>,
        /// The shape in the file.
        found: Vec<usize>,
    },
    /// A weights file is unreadable or is not a valid safetensors file.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The dense math failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
    /// A kernel refused its arguments.
    #[error("kernel: {0}")]
    Kernel(#[from] fuselab_kernels::KernelError),
    /// A batch cannot be executed (missing tokens, KV not allocated, token id out of range).
    #[error("invalid batch: {0}")]
    Batch(String),
}
