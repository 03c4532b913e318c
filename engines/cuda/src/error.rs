//! Errors of the CUDA backend.

use std::path::PathBuf;

use fuselab_kernels::cuda::CudaError;

/// What can go wrong building or running the CUDA model.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaBackendError {
    /// A model configuration value is invalid.
    #[error("invalid model config {field}: {problem}")]
    Config {
        /// The field, e.g. `n_kv_heads`.
        field: &'static str,
        /// What is wrong with it.
        problem: String,
    },
    /// The model shape is invalid or unknown.
    #[error("{0}")]
    Shape(#[from] fuselab_core::Error),
    /// The device, a kernel or cuBLAS failed (includes `no CUDA driver found (...)`).
    #[error(transparent)]
    Cuda(#[from] CudaError),
    /// A weights file is unreadable, invalid, or lacks or mis-shapes a tensor.
    #[error("{path}: {message}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A batch cannot be executed (missing tokens, KV not allocated, ids out of range).
    #[error("invalid batch: {0}")]
    Batch(String),
    /// The device has too little memory for the model.
    #[error("out of device memory: {0}")]
    OutOfMemory(String),
}

impl CudaBackendError {
    pub(crate) fn driver(context: &str, e: cudarc::driver::DriverError) -> Self {
        CudaError::Driver {
            context: context.into(),
            source: e,
        }
        .into()
    }
}
