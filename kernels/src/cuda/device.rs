//! The device handle: driver probe, context, stream, cuBLAS and the NVRTC-compiled kernels.
#![allow(unsafe_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cudarc::cublas::CudaBlas;
use cudarc::driver::sys::{CUdevice_attribute, CUevent_flags, CUfunction_attribute};
use cudarc::driver::{CudaContext, CudaFunction, CudaGraph, CudaSlice, CudaStream, DevicePtr};
use cudarc::nvrtc::CompileOptions;

use super::{CudaError, KERNEL_SOURCE, PrefillTile};

/// Whether `libcuda` can be loaded on this machine (no panic when it cannot).
pub fn driver_present() -> bool {
    probe_driver().is_ok()
}

/// The environment variable that turns a GPU test's skip into a failure.
pub const REQUIRE_GPU_ENV: &str = "FUSELAB_REQUIRE_GPU";

/// Whether `FUSELAB_REQUIRE_GPU=1`: on a machine that must have a GPU, GPU
/// tests fail instead of skipping.
pub fn gpu_required() -> bool {
    std::env::var(REQUIRE_GPU_ENV).is_ok_and(|v| v.trim() == "1")
}

/// For GPU tests: `true` when the driver, NVRTC and cuBLAS load. Otherwise
/// fails the test when [`gpu_required`], else calls [`skip`] and returns
/// `false`.
pub fn gpu_or_skip(test: &str) -> bool {
    match probe_driver() {
        Ok(()) => true,
        Err(e) => {
            skip(test, &e);
            false
        }
    }
}

/// A GPU test that cannot run: panics naming the test and `reason` when
/// [`gpu_required`]; otherwise writes `SKIPPED <test>: <reason>` straight to
/// the process's stderr, which `cargo test` shows even for passing tests (it
/// captures only `print!` and `eprint!`).
pub fn skip(test: &str, reason: &dyn std::fmt::Display) {
    assert!(
        !gpu_required(),
        "{test}: {REQUIRE_GPU_ENV}=1 but no GPU is usable: {reason}"
    );
    use std::io::Write as _;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// Checks, without panicking, that the CUDA driver, NVRTC and cuBLAS libraries load.
///
/// cudarc panics on first use of a library it cannot `dlopen`; call this first.
pub fn probe_driver() -> Result<(), CudaError> {
    // SAFETY: `is_culib_present` only tries `dlopen` on the candidate library
    // names and drops the handle; it calls no function from the library.
    if !unsafe { cudarc::driver::sys::is_culib_present() } {
        return Err(CudaError::NoDriver(
            "libcuda.so could not be loaded: no NVIDIA driver is installed on this machine, \
             or it is not on the loader path (LD_LIBRARY_PATH)"
                .into(),
        ));
    }
    // SAFETY: as above, a `dlopen` probe only.
    if !unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            lib: "nvrtc",
            hint:
                "install the CUDA 13 toolkit's libnvrtc.so.13 or add its folder to LD_LIBRARY_PATH"
                    .into(),
        });
    }
    // SAFETY: as above, a `dlopen` probe only.
    if !unsafe { cudarc::cublas::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            lib: "cublas",
            hint:
                "install the CUDA 13 toolkit's libcublas.so.13 or add its folder to LD_LIBRARY_PATH"
                    .into(),
        });
    }
    Ok(())
}

/// What the device reports about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceInfo {
    /// Marketing name, e.g. `NVIDIA H200`.
    pub name: String,
    /// Compute capability (major, minor).
    pub compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    pub sm_count: usize,
    /// L2 cache size in bytes.
    pub l2_bytes: usize,
    /// Device memory in bytes.
    pub total_mem: usize,
    /// Driver API version, e.g. `13000` for 13.0.
    pub driver_version: i32,
    /// The kernel module's release (e.g. `580.159.04`) from
    /// `/proc/driver/nvidia/version`, where readable.
    pub driver_release: Option<String>,
    /// The NVRTC target the kernels were compiled for, e.g. `sm_90a`.
    pub arch: String,
}

/// The compiled kernels of one module.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub(crate) copy_f4: CudaFunction,
    pub(crate) fill_uniform_bf16: CudaFunction,
    pub(crate) rms_norm: CudaFunction,
    pub(crate) rope: CudaFunction,
    pub(crate) silu_mul: CudaFunction,
    pub(crate) kv_write: CudaFunction,
    pub(crate) qkv_rope_cache: CudaFunction,
    pub(crate) read_probe_f4: CudaFunction,
    pub(crate) flash_prefill_r64: CudaFunction,
    pub(crate) flash_prefill_r128: CudaFunction,
    pub(crate) flash_prefill_r128w8: CudaFunction,
    pub(crate) flash_prefill_r128p: CudaFunction,
    pub(crate) flash_prefill_r256: CudaFunction,
    pub(crate) flash_prefill_r256s3: CudaFunction,
    pub(crate) flash_prefill_wg128: CudaFunction,
    pub(crate) flash_prefill_wg128x2: CudaFunction,
    pub(crate) paged_decode: CudaFunction,
    pub(crate) decode_merge: CudaFunction,
    pub(crate) embed_gather: CudaFunction,
    pub(crate) gather_rows: CudaFunction,
    pub(crate) add_inplace: CudaFunction,
    pub(crate) argmax_rows: CudaFunction,
}

/// One GPU with its stream, cuBLAS handle and compiled kernels.
pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) k: Kernels,
    /// Work counter of the persistent prefill kernel (one i32).
    pub(crate) counter: std::sync::Mutex<cudarc::driver::CudaSlice<i32>>,
    /// cuBLAS's workspace, set explicitly so that GEMMs never allocate (graph capture).
    _blas_workspace: CudaSlice<u8>,
    info: DeviceInfo,
}

/// Bytes of the cuBLAS workspace (what cuBLAS uses by default on Hopper).
const BLAS_WORKSPACE_BYTES: usize = 32 << 20;

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CudaDevice")
            .field("info", &self.info)
            .finish_non_exhaustive()
    }
}

/// The NVIDIA kernel module's version, e.g. `580.159.04`.
fn driver_release() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    let line = text.lines().next()?;
    line.split_whitespace()
        .find(|w| {
            w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.matches('.').count() >= 1
        })
        .map(str::to_string)
}

/// The folder holding `cuda_bf16.h`: `$CUDA_HOME/include`, `$CUDA_PATH/include`,
/// then `/usr/local/cuda/include`.
fn cuda_include_dir() -> Result<PathBuf, CudaError> {
    let mut candidates: Vec<PathBuf> = Vec::new();
    for var in ["CUDA_HOME", "CUDA_PATH", "CUDA_ROOT"] {
        if let Some(v) = std::env::var_os(var) {
            candidates.push(Path::new(&v).join("include"));
        }
    }
    candidates.push(PathBuf::from("/usr/local/cuda/include"));
    candidates.push(PathBuf::from("/opt/cuda/include"));
    candidates
        .iter()
        .find(|d| d.join("cuda_bf16.h").is_file())
        .cloned()
        .ok_or_else(|| {
            CudaError::Compile(format!(
                "cuda_bf16.h not found in any of {}; set CUDA_HOME to the CUDA toolkit folder",
                candidates
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

impl CudaDevice {
    /// Opens GPU `ordinal`, compiles the kernels with NVRTC and creates a cuBLAS handle.
    ///
    /// Fails with [`CudaError::NoDriver`] (never a panic) where there is no driver or GPU.
    pub fn new(ordinal: usize) -> Result<Self, CudaError> {
        probe_driver()?;
        let ctx = std::panic::catch_unwind(|| CudaContext::new(ordinal))
            .map_err(|_| {
                CudaError::NoDriver("the CUDA driver library panicked while initialising".into())
            })?
            .map_err(|e| CudaError::NoDriver(format!("cuInit / device {ordinal} failed: {e}")))?;
        // SAFETY: fuselab uses a single stream per device, so cudarc's cross-stream
        // event tracking is not needed; every buffer is used on `stream` only.
        unsafe { ctx.disable_event_tracking() };
        // Its own stream, not the legacy default one, which CUDA graphs cannot capture.
        let stream = ctx
            .new_stream()
            .map_err(CudaError::driver("creating the stream"))?;
        let cc = ctx
            .compute_capability()
            .map_err(CudaError::driver("reading the compute capability"))?;
        if cc.0 < 8 {
            return Err(CudaError::NoDriver(format!(
                "device {ordinal} has compute capability {}.{}; the bf16 tensor-core kernels need 8.0 or newer",
                cc.0, cc.1
            )));
        }
        let attr = |a: CUdevice_attribute, what: &str| {
            ctx.attribute(a)
                .map_err(CudaError::driver(format!("reading {what}")))
        };
        let sm_count = attr(
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
            "the SM count",
        )?;
        let l2 = attr(
            CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE,
            "the L2 size",
        )?;
        let mut driver_version = 0i32;
        // SAFETY: cuDriverGetVersion writes one int through a valid pointer.
        unsafe { cudarc::driver::sys::cuDriverGetVersion(&mut driver_version) }
            .result()
            .map_err(CudaError::driver("reading the driver version"))?;
        let arch = if cc == (9, 0) {
            "sm_90a".to_string()
        } else {
            format!("sm_{}{}", cc.0, cc.1)
        };
        let info = DeviceInfo {
            name: ctx
                .name()
                .map_err(CudaError::driver("reading the device name"))?,
            compute_capability: cc,
            sm_count: sm_count.max(1) as usize,
            l2_bytes: l2.max(0) as usize,
            total_mem: ctx
                .total_mem()
                .map_err(CudaError::driver("reading the memory size"))?,
            driver_version,
            driver_release: driver_release(),
            arch: arch.clone(),
        };
        let k = compile_kernels(&ctx, &arch)?;
        let blas = CudaBlas::new(stream.clone()).map_err(|source| CudaError::Blas {
            context: "creating the cuBLAS handle".into(),
            source,
        })?;
        let counter = stream
            .alloc_zeros::<i32>(1)
            .map_err(CudaError::driver("allocating the prefill work counter"))?;
        let blas_workspace = stream
            .alloc_zeros::<u8>(BLAS_WORKSPACE_BYTES)
            .map_err(CudaError::driver("allocating the cuBLAS workspace"))?;
        {
            let (ptr, _sync) = blas_workspace.device_ptr(&stream);
            // SAFETY: the handle is live and bound to `stream`; the buffer holds
            // BLAS_WORKSPACE_BYTES and lives as long as the handle (both in `Self`,
            // the workspace declared after `blas` so it is dropped after it).
            let status = unsafe {
                cudarc::cublas::sys::cublasSetWorkspace_v2(
                    *blas.handle(),
                    ptr as *mut std::ffi::c_void,
                    BLAS_WORKSPACE_BYTES,
                )
            };
            status.result().map_err(|source| CudaError::Blas {
                context: "setting the cuBLAS workspace".into(),
                source,
            })?;
        }
        Ok(Self {
            ctx,
            stream,
            blas,
            k,
            counter: std::sync::Mutex::new(counter),
            _blas_workspace: blas_workspace,
            info,
        })
    }

    /// What the device reports about itself.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The stream every launch goes to.
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// Captures what `f` launches on the stream into a CUDA graph (nothing runs
    /// until [`CudaGraph::launch`]). `f` must not allocate, copy from the host or
    /// synchronise; whatever it fails with, the capture is ended and the stream
    /// left usable.
    pub fn capture<E: From<CudaError>>(
        &self,
        f: impl FnOnce() -> Result<(), E>,
    ) -> Result<CudaGraph, E> {
        use cudarc::driver::sys::{CUgraphInstantiate_flags, CUstreamCaptureMode};
        self.stream
            .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
            .map_err(CudaError::driver("beginning a graph capture"))?;
        let body = f();
        let end = self
            .stream
            .end_capture(CUgraphInstantiate_flags(0))
            .map_err(CudaError::driver("ending a graph capture"));
        body?;
        let graph =
            end?.ok_or_else(|| CudaError::invalid("capture", "the captured graph is empty"))?;
        graph
            .upload()
            .map_err(CudaError::driver("uploading a captured graph"))?;
        Ok(graph)
    }

    /// Waits for all queued work.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream
            .synchronize()
            .map_err(CudaError::driver("synchronising the stream"))
    }

    /// Median time in milliseconds of `reps` runs of `f` after `warmup` runs,
    /// each run bracketed by CUDA events created with timing enabled.
    pub fn time_ms(
        &self,
        warmup: usize,
        reps: usize,
        mut f: impl FnMut() -> Result<(), CudaError>,
    ) -> Result<f64, CudaError> {
        for _ in 0..warmup {
            f()?;
        }
        self.synchronize()?;
        let mut times = Vec::with_capacity(reps.max(1));
        for _ in 0..reps.max(1) {
            let new = || {
                self.ctx
                    .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                    .map_err(CudaError::driver("creating a timing event"))
            };
            let (start, end) = (new()?, new()?);
            start
                .record(&self.stream)
                .map_err(CudaError::driver("recording an event"))?;
            f()?;
            end.record(&self.stream)
                .map_err(CudaError::driver("recording an event"))?;
            let ms = start
                .elapsed_ms(&end)
                .map_err(CudaError::driver("reading an event time"))?;
            times.push(f64::from(ms));
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }
}

fn compile_kernels(ctx: &Arc<CudaContext>, arch: &str) -> Result<Kernels, CudaError> {
    let include = cuda_include_dir()?;
    let opts = CompileOptions {
        include_paths: vec![include.display().to_string()],
        options: {
            let mut o = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()];
            if arch == "sm_90a" {
                o.push("-DFUSELAB_WGMMA=1".into());
            }
            o
        },
        name: Some("fuselab_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, options, .. } => {
            CudaError::Compile(format!("options {options:?}: {}", log.to_string_lossy()))
        }
        other => CudaError::Compile(other.to_string()),
    })?;
    let module = ctx
        .load_module(ptx)
        .map_err(CudaError::driver("loading the compiled module"))?;
    let f = |name: &str| {
        module
            .load_function(name)
            .map_err(CudaError::driver(format!("loading kernel `{name}`")))
    };
    let k = Kernels {
        copy_f4: f("copy_f4")?,
        fill_uniform_bf16: f("fill_uniform_bf16")?,
        rms_norm: f("rms_norm")?,
        rope: f("rope")?,
        silu_mul: f("silu_mul")?,
        kv_write: f("kv_write")?,
        qkv_rope_cache: f("qkv_rope_cache")?,
        read_probe_f4: f("read_probe_f4")?,
        flash_prefill_r64: f("flash_prefill_r64")?,
        flash_prefill_r128: f("flash_prefill_r128")?,
        flash_prefill_r128w8: f("flash_prefill_r128w8")?,
        flash_prefill_r128p: f("flash_prefill_r128p")?,
        flash_prefill_r256: f("flash_prefill_r256")?,
        flash_prefill_r256s3: f("flash_prefill_r256s3")?,
        flash_prefill_wg128: f("flash_prefill_wg128")?,
        flash_prefill_wg128x2: f("flash_prefill_wg128x2")?,
        paged_decode: f("paged_decode")?,
        decode_merge: f("decode_merge")?,
        embed_gather: f("embed_gather")?,
        gather_rows: f("gather_rows")?,
        add_inplace: f("add_inplace")?,
        argmax_rows: f("argmax_rows")?,
    };
    let big_smem = [
        (&k.flash_prefill_r64, PrefillTile::Rows64.smem_bytes()),
        (&k.flash_prefill_r128, PrefillTile::Rows128.smem_bytes()),
        (&k.flash_prefill_r128w8, PrefillTile::Rows128W8.smem_bytes()),
        (
            &k.flash_prefill_r128p,
            PrefillTile::Rows128Persistent.smem_bytes(),
        ),
        (&k.flash_prefill_r256, PrefillTile::Rows256.smem_bytes()),
        (
            &k.flash_prefill_r256s3,
            PrefillTile::Rows256Stages3.smem_bytes(),
        ),
        (&k.flash_prefill_wg128, PrefillTile::Wgmma128.smem_bytes()),
        (
            &k.flash_prefill_wg128x2,
            PrefillTile::Wgmma128Occ2.smem_bytes(),
        ),
        (&k.paged_decode, super::ops::DECODE_SMEM_BYTES),
    ];
    for (func, bytes) in big_smem {
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(CudaError::driver("raising a kernel's shared-memory limit"))?;
    }
    Ok(k)
}
