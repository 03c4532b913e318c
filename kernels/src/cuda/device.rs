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
    // SAFETY: as above, a `dlopen` probe only.
    if !unsafe { cudarc::cublaslt::sys::is_culib_present() } {
        return Err(CudaError::MissingLibrary {
            lib: "cublasLt",
            hint: "install the CUDA 13 toolkit's libcublasLt.so.13 or add its folder to LD_LIBRARY_PATH"
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
    pub(crate) flash_prefill_wg128x2u: CudaFunction,
    pub(crate) flash_prefill_wg128x2s: CudaFunction,
    pub(crate) flash_prefill_wg128n: CudaFunction,
    pub(crate) flash_prefill_wg192: CudaFunction,
    pub(crate) flash_prefill_wg128pp: CudaFunction,
    pub(crate) flash_prefill_wg128ppu: CudaFunction,
    /// The skinny GEMM in clusters of 1, 2, 4 and 8 k splits.
    pub(crate) skinny_gemm: [CudaFunction; 4],
    pub(crate) skinny_tile_weight: CudaFunction,
    pub(crate) paged_decode: CudaFunction,
    pub(crate) decode_merge: CudaFunction,
    pub(crate) embed_gather: CudaFunction,
    pub(crate) gather_rows: CudaFunction,
    pub(crate) add_inplace: CudaFunction,
    pub(crate) argmax_rows: CudaFunction,
    pub(crate) lora_shrink: CudaFunction,
    pub(crate) lora_expand: CudaFunction,
    pub(crate) lora_gate: CudaFunction,
}

/// One GPU with its stream, cuBLAS handle and compiled kernels.
pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    pub(crate) blas: CudaBlas,
    pub(crate) k: Kernels,
    /// Work counter of the persistent prefill kernel (one i32).
    pub(crate) counter: std::sync::Mutex<cudarc::driver::CudaSlice<i32>>,
    /// Clusters of the skinny GEMM's [`super::ops::SKINNY_SPLITS`] that can be resident
    /// at once as planned (0 where the driver would not say).
    pub(crate) skinny_clusters: [usize; 4],
    /// TMA descriptors of the skinny GEMM's operands by (address, columns, rows, box rows).
    pub(crate) tma_maps:
        std::sync::Mutex<std::collections::HashMap<(u64, usize, usize, usize), super::ops::TmaMap>>,
    /// The split prefill's partials and tickets, allocated on first use.
    pub(crate) prefill_split_ws: std::sync::Mutex<Option<super::ops::SplitWorkspace>>,
    /// Whether [`CudaDevice::gemm`] takes the skinny path for ≤ 64 rows.
    pub(crate) skinny: std::sync::atomic::AtomicBool,
    /// Weights in the skinny GEMM's tiled layout by the address and `(n, k)` of the
    /// row-major weight they copy ([`CudaDevice::tile_for_skinny`]).
    pub(crate) skinny_tiles:
        std::sync::Mutex<std::collections::HashMap<(u64, usize, usize), CudaSlice<half::bf16>>>,
    /// Whether the kernels that wait for their predecessor launch as its programmatic
    /// dependents ([`CudaDevice::set_programmatic_launch`]).
    pub(crate) programmatic: std::sync::atomic::AtomicBool,
    /// cuBLAS's workspace, set explicitly so that GEMMs never allocate (graph capture).
    _blas_workspace: CudaSlice<u8>,
    /// cuBLASLt with the GEMM algorithms picked by [`CudaDevice::tune_gemm`].
    pub(crate) lt: super::lt::Lt,
    /// Kernels of a tuning table ([`CudaDevice::use_tuning`]), tried before the defaults.
    pub(crate) tuned: super::tuned::TunedKernels,
    /// The experimental prefill tiles' module and kernels, compiled on first use.
    experimental: std::sync::Mutex<ExperimentalPrefill>,
    info: DeviceInfo,
}

/// The module of [`PrefillTile::experimental_kernel`]s and the kernels loaded from it.
#[derive(Default)]
struct ExperimentalPrefill {
    module: Option<Arc<cudarc::driver::CudaModule>>,
    kernels: Vec<(PrefillTile, CudaFunction)>,
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
        let lt = super::lt::Lt::new(&stream)?;
        let skinny_clusters = super::ops::skinny_cluster_capacity(&k, &stream, info.sm_count);
        Ok(Self {
            ctx,
            stream,
            blas,
            k,
            counter: std::sync::Mutex::new(counter),
            skinny_clusters,
            tma_maps: std::sync::Mutex::default(),
            prefill_split_ws: std::sync::Mutex::new(None),
            skinny: std::sync::atomic::AtomicBool::new(false),
            skinny_tiles: std::sync::Mutex::default(),
            programmatic: std::sync::atomic::AtomicBool::new(false),
            _blas_workspace: blas_workspace,
            lt,
            tuned: super::tuned::TunedKernels::default(),
            experimental: std::sync::Mutex::default(),
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

impl CudaDevice {
    /// The kernel of an experimental prefill tile, compiling their module (about 10 s) on
    /// the first call.
    pub(crate) fn experimental_prefill(
        &self,
        tile: PrefillTile,
    ) -> Result<CudaFunction, CudaError> {
        let name = tile.experimental_kernel().ok_or_else(|| {
            CudaError::invalid("tile", format!("{} is in the main module", tile.label()))
        })?;
        let mut e = self
            .experimental
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some((_, f)) = e.kernels.iter().find(|(t, _)| *t == tile) {
            return Ok(f.clone());
        }
        if e.module.is_none() {
            let defines = [
                "FUSELAB_TUNE_ONLY=1".into(),
                "FUSELAB_PREFILL_EXPERIMENTS=1".into(),
            ];
            e.module = Some(compile_module(&self.ctx, &self.info.arch, &defines)?);
        }
        let module = e.module.as_ref().expect("compiled above");
        let func = module
            .load_function(name)
            .map_err(CudaError::driver(format!("loading kernel `{name}`")))?;
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            tile.smem_bytes() as i32,
        )
        .map_err(CudaError::driver(format!(
            "raising the shared memory of `{name}`"
        )))?;
        e.kernels.push((tile, func.clone()));
        Ok(func)
    }
}

/// Compiles [`KERNEL_SOURCE`] for `arch` with the preprocessor `defines`
/// (`NAME=VALUE`) and loads it.
pub(crate) fn compile_module(
    ctx: &Arc<CudaContext>,
    arch: &str,
    defines: &[String],
) -> Result<Arc<cudarc::driver::CudaModule>, CudaError> {
    let include = cuda_include_dir()?;
    let mut options = vec![format!("--gpu-architecture={arch}"), "--std=c++17".into()];
    if arch == "sm_90a" {
        options.push("-DFUSELAB_WGMMA=1".into());
    }
    options.extend(defines.iter().map(|d| format!("-D{d}")));
    let opts = CompileOptions {
        include_paths: vec![include.display().to_string()],
        options,
        name: Some("fuselab_kernels.cu".into()),
        ..Default::default()
    };
    let ptx = cudarc::nvrtc::compile_ptx_with_opts(KERNEL_SOURCE, opts).map_err(|e| match e {
        cudarc::nvrtc::CompileError::CompileError { log, options, .. } => {
            CudaError::Compile(format!("options {options:?}: {}", log.to_string_lossy()))
        }
        other => CudaError::Compile(other.to_string()),
    })?;
    ctx.load_module(ptx)
        .map_err(CudaError::driver("loading the compiled module"))
}

fn compile_kernels(ctx: &Arc<CudaContext>, arch: &str) -> Result<Kernels, CudaError> {
    let module = compile_module(ctx, arch, &[])?;
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
        flash_prefill_wg128x2u: f("flash_prefill_wg128x2u")?,
        flash_prefill_wg128x2s: f("flash_prefill_wg128x2s")?,
        flash_prefill_wg128n: f("flash_prefill_wg128n")?,
        flash_prefill_wg192: f("flash_prefill_wg192")?,
        flash_prefill_wg128pp: f("flash_prefill_wg128pp")?,
        flash_prefill_wg128ppu: f("flash_prefill_wg128ppu")?,
        skinny_gemm: [
            f("skinny_gemm_c1")?,
            f("skinny_gemm_c2")?,
            f("skinny_gemm_c4")?,
            f("skinny_gemm_c8")?,
        ],
        skinny_tile_weight: f("skinny_tile_weight")?,
        paged_decode: f("paged_decode")?,
        decode_merge: f("decode_merge")?,
        embed_gather: f("embed_gather")?,
        gather_rows: f("gather_rows")?,
        add_inplace: f("add_inplace")?,
        argmax_rows: f("argmax_rows")?,
        lora_shrink: f("lora_shrink")?,
        lora_expand: f("lora_expand")?,
        lora_gate: f("lora_gate")?,
    };
    let big_smem = [
        (&k.flash_prefill_r64, PrefillTile::Rows64),
        (&k.flash_prefill_r128, PrefillTile::Rows128),
        (&k.flash_prefill_r128w8, PrefillTile::Rows128W8),
        (&k.flash_prefill_r128p, PrefillTile::Rows128Persistent),
        (&k.flash_prefill_r256, PrefillTile::Rows256),
        (&k.flash_prefill_r256s3, PrefillTile::Rows256Stages3),
        (&k.flash_prefill_wg128, PrefillTile::Wgmma128),
        (&k.flash_prefill_wg128x2, PrefillTile::Wgmma128Occ2),
        (&k.flash_prefill_wg128x2u, PrefillTile::Wgmma128Occ2Unpaired),
        (&k.flash_prefill_wg128x2s, PrefillTile::Wgmma128Occ2Split),
        (&k.flash_prefill_wg128n, PrefillTile::Wgmma128Keys128),
        (&k.flash_prefill_wg192, PrefillTile::Wgmma192),
        (&k.flash_prefill_wg128pp, PrefillTile::Wgmma128PingPong),
        (
            &k.flash_prefill_wg128ppu,
            PrefillTile::Wgmma128PingPongUnpaired,
        ),
    ]
    .map(|(f, t)| (f, t.smem_bytes()))
    .into_iter()
    .chain([(&k.paged_decode, super::ops::DECODE_SMEM_BYTES)])
    .chain(
        k.skinny_gemm
            .iter()
            .map(|f| (f, super::ops::SKINNY_SMEM_BYTES)),
    );
    for (func, bytes) in big_smem {
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            bytes as i32,
        )
        .map_err(CudaError::driver("raising a kernel's shared-memory limit"))?;
    }
    Ok(k)
}

/// The spread of one timed kernel: per-launch times over repeated samples, each
/// sample `launches` back-to-back launches between two CUDA events divided by
/// `launches` (see [`CudaDevice::time_launches`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TimeStats {
    /// Median per-launch time over the samples, milliseconds.
    pub median_ms: f64,
    /// 10th percentile, milliseconds.
    pub p10_ms: f64,
    /// 90th percentile, milliseconds.
    pub p90_ms: f64,
    /// Launches per sample (N).
    pub launches: usize,
    /// Samples (R).
    pub repeats: usize,
    /// Samples in which the host took longer to enqueue the N launches than the
    /// GPU was held plus the sample's GPU time (the GPU may have waited for the host).
    pub host_limited: usize,
}

impl TimeStats {
    /// Statistics of per-launch sample times (milliseconds); `None` when `samples`
    /// is empty or holds a non-finite value.
    pub fn from_samples(samples: &[f64], launches: usize) -> Option<Self> {
        if samples.is_empty() || samples.iter().any(|v| !v.is_finite()) {
            return None;
        }
        let mut s = samples.to_vec();
        s.sort_by(f64::total_cmp);
        Some(Self {
            median_ms: percentile(&s, 50.0),
            p10_ms: percentile(&s, 10.0),
            p90_ms: percentile(&s, 90.0),
            launches,
            repeats: s.len(),
            host_limited: 0,
        })
    }
}

/// The `p`-th percentile (0–100) of ascending `sorted` values, linearly
/// interpolated between closest ranks (NaN when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    match sorted.len() {
        0 => f64::NAN,
        1 => sorted[0],
        n => {
            let rank = (p.clamp(0.0, 100.0) / 100.0) * (n - 1) as f64;
            let lo = rank.floor() as usize;
            let hi = (lo + 1).min(n - 1);
            let frac = rank - lo as f64;
            sorted[lo] + (sorted[hi] - sorted[lo]) * frac
        }
    }
}

/// Bytes the [`LaunchTimer`]'s hold buffer reads per probe launch (256 MiB).
const HOLD_BYTES: usize = 256 << 20;
/// At most this many hold launches before one sample.
const MAX_HOLD_LAUNCHES: usize = 64;

/// Times kernels as N back-to-back launches between two CUDA events.
///
/// Before each sample the stream is held busy by read-probe launches over a
/// 256 MiB buffer, long enough (1.5× the host's measured enqueue time of the N
/// launches) that the host has queued all N launches before the first starts:
/// the events then bracket GPU work only, not host launch latency.
#[derive(Debug)]
pub struct LaunchTimer {
    hold: cudarc::driver::CudaSlice<half::bf16>,
    sink: cudarc::driver::CudaSlice<u32>,
    hold_ms: f64,
}

impl LaunchTimer {
    /// Allocates the hold buffer and measures one hold launch.
    pub fn new(dev: &CudaDevice) -> Result<Self, CudaError> {
        let mut hold = dev.alloc_bf16(HOLD_BYTES / 2)?;
        dev.fill_uniform(&mut hold, 0x5eed, 1.0)?;
        let sink = dev
            .stream
            .alloc_zeros::<u32>(dev.read_probe_blocks())
            .map_err(CudaError::driver("allocating the hold probe's sink"))?;
        let mut t = Self {
            hold,
            sink,
            hold_ms: 0.0,
        };
        let ms = {
            let (hold, sink) = (&t.hold, &mut t.sink);
            dev.time_ms(2, 5, || dev.read_probe(hold, sink))?
        };
        t.hold_ms = ms.max(1e-3);
        Ok(t)
    }

    /// Milliseconds one hold launch keeps the GPU busy.
    pub fn hold_ms(&self) -> f64 {
        self.hold_ms
    }

    /// Per-launch statistics of `f`: `warmup` single calls, then `repeats`
    /// samples of `launches` back-to-back calls between two events (each
    /// divided by `launches`), each sample after a hold.
    pub fn time(
        &mut self,
        dev: &CudaDevice,
        warmup: usize,
        repeats: usize,
        launches: usize,
        mut f: impl FnMut() -> Result<(), CudaError>,
    ) -> Result<TimeStats, CudaError> {
        let launches = launches.max(1);
        for _ in 0..warmup {
            f()?;
        }
        dev.synchronize()?;
        // One untimed batch to measure how long the host takes to enqueue N launches.
        let t0 = std::time::Instant::now();
        for _ in 0..launches {
            f()?;
        }
        let mut host_ms = t0.elapsed().as_secs_f64() * 1e3;
        dev.synchronize()?;
        let new = || {
            dev.ctx
                .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
                .map_err(CudaError::driver("creating a timing event"))
        };
        let (start, end) = (new()?, new()?);
        let mut samples = Vec::with_capacity(repeats.max(1));
        let mut host_limited = 0;
        for _ in 0..repeats.max(1) {
            let holds = ((1.5 * host_ms + 0.02) / self.hold_ms)
                .ceil()
                .clamp(1.0, MAX_HOLD_LAUNCHES as f64) as usize;
            for _ in 0..holds {
                dev.read_probe(&self.hold, &mut self.sink)?;
            }
            start
                .record(&dev.stream)
                .map_err(CudaError::driver("recording the start event"))?;
            let t0 = std::time::Instant::now();
            for _ in 0..launches {
                f()?;
            }
            host_ms = t0.elapsed().as_secs_f64() * 1e3;
            end.record(&dev.stream)
                .map_err(CudaError::driver("recording the end event"))?;
            let ms = f64::from(
                start
                    .elapsed_ms(&end)
                    .map_err(CudaError::driver("reading an event time"))?,
            );
            if host_ms > holds as f64 * self.hold_ms + ms {
                host_limited += 1;
            }
            samples.push(ms / launches as f64);
        }
        let mut stats = TimeStats::from_samples(&samples, launches).ok_or_else(|| {
            CudaError::CheckFailed(format!("timing produced no finite samples: {samples:?}"))
        })?;
        stats.host_limited = host_limited;
        Ok(stats)
    }
}

impl CudaDevice {
    /// Runs `f` in batches of `batch` launches for at least `seconds` of wall
    /// time, keeping at most two batches queued (each batch waits for the one
    /// before it through an event, so the GPU never runs dry); returns the
    /// launches made and the GPU milliseconds between the first and the last,
    /// measured by two CUDA events.
    pub fn run_for(
        &self,
        seconds: f64,
        batch: usize,
        mut f: impl FnMut() -> Result<(), CudaError>,
    ) -> Result<(usize, f64), CudaError> {
        let batch = batch.max(1);
        for _ in 0..batch {
            f()?;
        }
        self.synchronize()?;
        let event = |flags| {
            self.ctx
                .new_event(flags)
                .map_err(CudaError::driver("creating an event"))
        };
        let (start, end) = (
            event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
            event(Some(CUevent_flags::CU_EVENT_DEFAULT))?,
        );
        let marks = [event(None)?, event(None)?];
        start
            .record(&self.stream)
            .map_err(CudaError::driver("recording the start event"))?;
        let t0 = std::time::Instant::now();
        let (mut launches, mut k) = (0usize, 0usize);
        while t0.elapsed().as_secs_f64() < seconds {
            for _ in 0..batch {
                f()?;
            }
            launches += batch;
            marks[k % 2]
                .record(&self.stream)
                .map_err(CudaError::driver("recording a batch event"))?;
            // The previous batch (an event never recorded returns at once).
            marks[(k + 1) % 2]
                .synchronize()
                .map_err(CudaError::driver("waiting for the previous batch"))?;
            k += 1;
        }
        end.record(&self.stream)
            .map_err(CudaError::driver("recording the end event"))?;
        let ms = start
            .elapsed_ms(&end)
            .map_err(CudaError::driver("reading an event time"))?;
        Ok((launches, f64::from(ms)))
    }
}

#[cfg(test)]
mod timing_tests {
    use super::*;

    #[test]
    fn percentiles_interpolate_between_ranks() {
        let s = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0];
        assert_eq!(percentile(&s, 50.0), 6.0);
        assert!((percentile(&s, 10.0) - 2.0).abs() < 1e-12);
        assert!((percentile(&s, 90.0) - 10.0).abs() < 1e-12);
        assert!((percentile(&[1.0, 2.0], 50.0) - 1.5).abs() < 1e-12);
        assert_eq!(percentile(&[3.0], 90.0), 3.0);
        assert!(percentile(&[], 50.0).is_nan());
        assert_eq!(percentile(&s, 150.0), 11.0);
    }

    #[test]
    fn stats_sort_their_samples_and_refuse_nan() {
        let t = TimeStats::from_samples(&[5.0, 1.0, 3.0, 2.0, 4.0], 32).unwrap();
        assert_eq!(t.median_ms, 3.0);
        assert!((t.p10_ms - 1.4).abs() < 1e-12, "{t:?}");
        assert!((t.p90_ms - 4.6).abs() < 1e-12, "{t:?}");
        assert_eq!((t.launches, t.repeats, t.host_limited), (32, 5, 0));
        assert!(TimeStats::from_samples(&[], 32).is_none());
        assert!(TimeStats::from_samples(&[1.0, f64::NAN], 32).is_none());
    }
}
