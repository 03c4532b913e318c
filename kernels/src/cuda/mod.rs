//! CUDA kernels for the H200 path: CUDA C compiled at run time by NVRTC
//! (`sm_90a` on Hopper), launched through cudarc, with GEMMs through cuBLAS.
//!
//! * [`CudaDevice`] probes for a driver before touching cudarc (which panics
//!   when `libcuda` is missing) and answers `no CUDA driver found (...)`;
//! * its methods launch RMSNorm, RoPE, SiLU·mul, the paged KV write, ragged
//!   flash prefill attention and split-KV paged decode attention (both on
//!   `mma.sync` bf16 tensor-core instructions), and bf16 GEMMs;
//! * [`bench`] checks every kernel against a CPU reference on fresh random
//!   inputs and times it at the Llama-3-8B shapes (`fuselab kernels`);
//! * [`reference`] holds the small f64 references the checks use;
//! * [`sweep`] times every kernel over the shapes of serving steps for the
//!   simulator's calibration (`fuselab calibrate --engine cuda`);
//! * [`lora`]: batched LoRA (BGMV shrink and expand) and MeteoRA's gate;
//! * [`nvml`] reads the SM clock and power for the sustained benchmarks;
//! * [`tuned`]: the attention kernels' configuration spaces, compiled per
//!   configuration, and the tuned kernels a device uses;
//! * [`tune`]: one tuning trial (check against the CPU reference, then timing).
//!
//! Layouts: activations `[tokens, width]`; queries and attention outputs
//! `[tokens, heads, 128]`; the paged cache `[num_blocks, block_size,
//! kv_heads, 128]` (as in [`crate::cpu::paged`]), all bf16.

pub mod bench;
mod device;
mod launch;
pub mod lora;
mod lt;
pub mod nvml;
mod ops;
pub mod reference;
pub(crate) mod rng;
pub mod sweep;
pub mod tune;
pub mod tuned;

pub use device::{
    CudaDevice, DeviceInfo, LaunchTimer, REQUIRE_GPU_ENV, TimeStats, driver_present, gpu_or_skip,
    gpu_required, percentile, probe_driver, skip,
};
pub use lt::GemmTuning;
pub use ops::{
    DEFAULT_PREFILL_TILE, DecodeWorkspace, GemmOut, LARGE_PREFILL_MIN_Q_LEN, LARGE_PREFILL_TILE,
    PREFILL_MAX_SPLITS, PREFILL_SPLIT_MIN_KEYS, PagedAttention, PrefillTile, SKINNY_MAX_TOKENS,
    SKINNY_SPLITS, SkinnyPlan, WGMMA_PREFILL_TILE,
};

/// The CUDA C source of every kernel (compiled by NVRTC at start-up): the
/// core kernels, then the LoRA ones ([`lora`]).
pub const KERNEL_SOURCE: &str = concat!(include_str!("source.cu"), include_str!("lora.cu"));

/// Elements per attention head that the attention kernels support.
pub const HEAD_DIM: usize = 128;

/// Errors of the CUDA path.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CudaError {
    /// No usable driver or device: `libcuda` is missing or reports no GPU.
    #[error("no CUDA driver found ({0})")]
    NoDriver(String),
    /// A CUDA library besides the driver could not be loaded.
    #[error("CUDA library `{lib}` could not be loaded ({hint})")]
    MissingLibrary {
        /// Library name (nvrtc, cublas).
        lib: &'static str,
        /// How to fix it.
        hint: String,
    },
    /// A driver call failed.
    #[error("CUDA driver call failed while {context}: {source}")]
    Driver {
        /// What was being done.
        context: String,
        /// The driver's error.
        #[source]
        source: cudarc::driver::DriverError,
    },
    /// NVRTC could not compile the kernels.
    #[error("NVRTC could not compile the kernels: {0}")]
    Compile(String),
    /// A cuBLAS call failed.
    #[error("cuBLAS call failed while {context}: {source}")]
    Blas {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: cudarc::cublas::result::CublasError,
    },
    /// A cuBLASLt call failed.
    #[error("cuBLASLt call failed while {context}: {source}")]
    BlasLt {
        /// What was being done.
        context: String,
        /// The library's error.
        #[source]
        source: cudarc::cublaslt::result::CublasError,
    },
    /// A kernel was called with arguments that do not fit together.
    #[error("invalid argument `{field}`: {reason}")]
    InvalidArgument {
        /// The offending argument.
        field: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A kernel's output did not match its CPU reference.
    #[error("correctness check failed: {0}")]
    CheckFailed(String),
}

impl CudaError {
    pub(crate) fn driver(
        context: impl Into<String>,
    ) -> impl FnOnce(cudarc::driver::DriverError) -> Self {
        let context = context.into();
        move |source| CudaError::Driver { context, source }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        CudaError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }
}
