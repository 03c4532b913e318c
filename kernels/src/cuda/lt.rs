//! cuBLASLt GEMMs whose algorithm is picked by timing, for the decode shapes.
//!
//! [`CudaDevice::tune_gemm`] asks cuBLASLt's heuristic for its candidate
//! algorithms for one shape, times each and cuBLAS's default over the weights of
//! every layer in turn (as a decode step reads them, from DRAM rather than L2;
//! launches queued behind a [`LaunchTimer`] hold, so that the events time the GPU,
//! not the host's enqueueing), and keeps the fastest; [`CudaDevice::gemm_ex`] then
//! runs that shape through it.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::{Arc, Mutex};

use cudarc::cublaslt::sys as lt;
use cudarc::driver::{CudaSlice, CudaStream, DevicePtr, DevicePtrMut};
use half::bf16;

use super::ops::GemmOut;
use super::{CudaDevice, CudaError, LaunchTimer};

/// Candidate algorithms asked of cuBLASLt's heuristic per shape.
const CANDIDATES: usize = 16;
/// cuBLASLt's workspace (split-K partials), as NVIDIA recommends on Hopper.
const LT_WORKSPACE_BYTES: usize = 32 << 20;
/// Timed samples per candidate; each is one GEMM per weight matrix given (at least
/// [`MIN_LAUNCHES`]), after one such untimed pass.
const SAMPLES: usize = 3;
/// Fewest GEMMs per timed sample.
const MIN_LAUNCHES: usize = 4;

/// The shape a tuned algorithm is for: `y[tokens, n] (+)= x[tokens, k] · w[n, k]ᵀ`,
/// rows of `y` `ld` apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GemmKey {
    pub(crate) tokens: usize,
    pub(crate) k: usize,
    pub(crate) n: usize,
    pub(crate) ld: usize,
    pub(crate) accumulate: bool,
}

/// What [`CudaDevice::tune_gemm`] measured for one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct GemmTuning {
    /// Median µs per GEMM with cuBLAS's default algorithm.
    pub default_us: f64,
    /// Median µs per GEMM of the fastest cuBLASLt candidate, if any ran.
    pub best_us: Option<f64>,
    /// cuBLASLt candidates timed.
    pub candidates: usize,
    /// Whether [`CudaDevice::gemm_ex`] now runs this shape through the fastest
    /// candidate (it beat the default).
    pub adopted: bool,
    /// Why cuBLASLt offered no candidate (its heuristic's error), if it failed.
    pub unavailable: Option<String>,
}

/// A matmul descriptor, its layouts and one algorithm.
struct Plan {
    desc: lt::cublasLtMatmulDesc_t,
    w: lt::cublasLtMatrixLayout_t,
    x: lt::cublasLtMatrixLayout_t,
    y: lt::cublasLtMatrixLayout_t,
    algo: lt::cublasLtMatmulAlgo_t,
}

// SAFETY: the descriptors are host objects that cuBLASLt only reads at a call;
// they are created and destroyed by their owner and never mutated after creation.
unsafe impl Send for Plan {}
// SAFETY: as above.
unsafe impl Sync for Plan {}

impl Drop for Plan {
    fn drop(&mut self) {
        // SAFETY: created by `Plan::new` and destroyed once, here.
        unsafe {
            lt::cublasLtMatmulDescDestroy(self.desc);
            for l in [self.w, self.x, self.y] {
                lt::cublasLtMatrixLayoutDestroy(l);
            }
        }
    }
}

fn lt_err(context: &str) -> impl FnOnce(cudarc::cublaslt::result::CublasError) -> CudaError + '_ {
    move |source| CudaError::BlasLt {
        context: context.to_string(),
        source,
    }
}

impl Plan {
    /// The descriptor and layouts of `key` (column-major, as `gemm_ex`'s cuBLAS call:
    /// `y` is `n × tokens` = `wᵀ` (`k × n`, transposed) times `x` (`k × tokens`)).
    fn new(key: GemmKey) -> Result<Self, CudaError> {
        let mut desc = std::ptr::null_mut();
        // SAFETY: out-pointers to locals; the enums are valid cuBLASLt values.
        unsafe {
            lt::cublasLtMatmulDescCreate(
                &mut desc,
                lt::cublasComputeType_t::CUBLAS_COMPUTE_32F,
                lt::cudaDataType_t::CUDA_R_32F,
            )
        }
        .result()
        .map_err(lt_err("creating a cuBLASLt matmul descriptor"))?;
        let mut plan = Plan {
            desc,
            w: std::ptr::null_mut(),
            x: std::ptr::null_mut(),
            y: std::ptr::null_mut(),
            algo: lt::cublasLtMatmulAlgo_t { data: [0; 8] },
        };
        let op_t = cudarc::cublas::sys::cublasOperation_t::CUBLAS_OP_T;
        // SAFETY: `desc` is live; the attribute takes a cublasOperation_t.
        unsafe {
            lt::cublasLtMatmulDescSetAttribute(
                desc,
                lt::cublasLtMatmulDescAttributes_t::CUBLASLT_MATMUL_DESC_TRANSA,
                (&op_t as *const cudarc::cublas::sys::cublasOperation_t).cast(),
                std::mem::size_of::<cudarc::cublas::sys::cublasOperation_t>(),
            )
        }
        .result()
        .map_err(lt_err("setting the transpose of a cuBLASLt matmul"))?;
        let layout = |rows: usize, cols: usize, ld: usize| {
            let mut l = std::ptr::null_mut();
            // SAFETY: out-pointer to a local.
            unsafe {
                lt::cublasLtMatrixLayoutCreate(
                    &mut l,
                    lt::cudaDataType_t::CUDA_R_16BF,
                    rows as u64,
                    cols as u64,
                    ld as i64,
                )
            }
            .result()
            .map(|()| l)
            .map_err(lt_err("creating a cuBLASLt matrix layout"))
        };
        plan.w = layout(key.k, key.n, key.k)?;
        plan.x = layout(key.k, key.tokens, key.k)?;
        plan.y = layout(key.n, key.tokens, key.ld)?;
        Ok(plan)
    }
}

/// The cuBLASLt handle, its workspace and the algorithms tuned so far.
pub(crate) struct Lt {
    handle: lt::cublasLtHandle_t,
    workspace: CudaSlice<u8>,
    plans: Mutex<HashMap<GemmKey, Arc<Plan>>>,
}

// SAFETY: the handle is used under the plans' lock or on the device's one stream,
// whose calls the device serialises; cuBLASLt handles are thread-safe for that.
unsafe impl Send for Lt {}
// SAFETY: as above.
unsafe impl Sync for Lt {}

impl Drop for Lt {
    fn drop(&mut self) {
        if let Ok(mut plans) = self.plans.lock() {
            plans.clear();
        }
        // SAFETY: created in `Lt::new`, destroyed once, after every plan.
        unsafe { lt::cublasLtDestroy(self.handle) };
    }
}

impl std::fmt::Debug for Lt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let tuned = self.plans.lock().map(|p| p.len()).unwrap_or(0);
        f.debug_struct("Lt").field("tuned_shapes", &tuned).finish()
    }
}

impl Lt {
    pub(crate) fn new(stream: &Arc<CudaStream>) -> Result<Self, CudaError> {
        let mut handle = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        unsafe { lt::cublasLtCreate(&mut handle) }
            .result()
            .map_err(lt_err("creating the cuBLASLt handle"))?;
        let workspace = stream.alloc_zeros::<u8>(LT_WORKSPACE_BYTES);
        let workspace = match workspace {
            Ok(w) => w,
            Err(e) => {
                // SAFETY: created above and not used elsewhere.
                unsafe { lt::cublasLtDestroy(handle) };
                return Err(CudaError::driver("allocating the cuBLASLt workspace")(e));
            }
        };
        Ok(Lt {
            handle,
            workspace,
            plans: Mutex::default(),
        })
    }

    /// The tuned algorithm of `key`, if [`CudaDevice::tune_gemm`] adopted one.
    fn plan(&self, key: &GemmKey) -> Option<Arc<Plan>> {
        self.plans.lock().ok()?.get(key).cloned()
    }

    /// Up to [`CANDIDATES`] algorithms cuBLASLt's heuristic offers for `key`.
    fn candidates(&self, key: GemmKey) -> Result<Vec<Plan>, CudaError> {
        let probe = Plan::new(key)?;
        let mut pref = std::ptr::null_mut();
        // SAFETY: out-pointer to a local.
        unsafe { lt::cublasLtMatmulPreferenceCreate(&mut pref) }
            .result()
            .map_err(lt_err("creating a cuBLASLt preference"))?;
        let bytes = LT_WORKSPACE_BYTES as u64;
        // SAFETY: `pref` is live; the attribute takes a u64.
        let set = unsafe {
            lt::cublasLtMatmulPreferenceSetAttribute(
                pref,
                lt::cublasLtMatmulPreferenceAttributes_t::CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES,
                (&bytes as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        let mut results: Vec<lt::cublasLtMatmulHeuristicResult_t> = Vec::with_capacity(CANDIDATES);
        let mut found = 0i32;
        // SAFETY: the descriptors are live; `results` has room for CANDIDATES entries,
        // of which cuBLASLt fills `found`.
        let heuristic = set.result().and_then(|()| unsafe {
            lt::cublasLtMatmulAlgoGetHeuristic(
                self.handle,
                probe.desc,
                probe.w,
                probe.x,
                probe.y,
                probe.y,
                pref,
                CANDIDATES as i32,
                results.as_mut_ptr(),
                &mut found,
            )
            .result()
        });
        // SAFETY: created above, destroyed once.
        unsafe { lt::cublasLtMatmulPreferenceDestroy(pref) };
        heuristic.map_err(lt_err("asking cuBLASLt for GEMM algorithms"))?;
        // SAFETY: cuBLASLt initialised the first `found` entries.
        unsafe { results.set_len((found.max(0) as usize).min(CANDIDATES)) };
        let mut plans = Vec::with_capacity(results.len());
        for r in results {
            if r.state.result().is_err() || r.workspaceSize > LT_WORKSPACE_BYTES {
                continue;
            }
            let mut p = Plan::new(key)?;
            p.algo = r.algo;
            plans.push(p);
        }
        Ok(plans)
    }

    /// `y = w·x (+ y)` through `plan` on `stream`.
    ///
    /// # Safety
    /// `w`, `x` and `y` are device pointers to buffers of the plan's shape.
    unsafe fn run(
        &self,
        plan: &Plan,
        stream: &CudaStream,
        w: u64,
        x: u64,
        y: u64,
        accumulate: bool,
    ) -> Result<(), CudaError> {
        let (alpha, beta) = (1.0f32, if accumulate { 1.0f32 } else { 0.0 });
        let (ws, _sync) = self.workspace.device_ptr(stream);
        // SAFETY: the caller guarantees the buffers; the workspace is this handle's own.
        unsafe {
            lt::cublasLtMatmul(
                self.handle,
                plan.desc,
                (&alpha as *const f32).cast(),
                w as *const c_void,
                plan.w,
                x as *const c_void,
                plan.x,
                (&beta as *const f32).cast(),
                y as *const c_void,
                plan.y,
                y as *mut c_void,
                plan.y,
                &plan.algo,
                ws as *mut c_void,
                LT_WORKSPACE_BYTES,
                stream.cu_stream() as lt::cudaStream_t,
            )
        }
        .result()
        .map_err(lt_err("running a tuned cuBLASLt GEMM"))
    }
}

impl CudaDevice {
    /// Times cuBLASLt's candidate algorithms for `y[tokens, n] (+)= x · wᵀ` (placed by
    /// `out`, which must start at column 0) against cuBLAS's default, each over every
    /// matrix of `weights` in turn, and from then on runs the shape through the
    /// fastest where it beat the default. `y`'s contents are overwritten.
    #[allow(clippy::too_many_arguments)]
    pub fn tune_gemm<W: DevicePtr<bf16>>(
        &self,
        timer: &mut LaunchTimer,
        x: &CudaSlice<bf16>,
        weights: &[&W],
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
        out: GemmOut,
    ) -> Result<GemmTuning, CudaError> {
        self.tune_gemm_adopting(timer, x, weights, y, tokens, k, n, out, false)
    }

    /// [`Self::tune_gemm`], adopting the fastest candidate even where the default was
    /// faster when `always` is set (the checks, so that they run a cuBLASLt algorithm).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tune_gemm_adopting<W: DevicePtr<bf16>>(
        &self,
        timer: &mut LaunchTimer,
        x: &CudaSlice<bf16>,
        weights: &[&W],
        y: &mut CudaSlice<bf16>,
        tokens: usize,
        k: usize,
        n: usize,
        out: GemmOut,
        always: bool,
    ) -> Result<GemmTuning, CudaError> {
        if weights.is_empty() {
            return Err(CudaError::invalid(
                "weights",
                "give at least one weight matrix",
            ));
        }
        if out.offset != 0 {
            return Err(CudaError::invalid(
                "out",
                format!("tuned GEMMs write from column 0, not {}", out.offset),
            ));
        }
        let key = GemmKey {
            tokens,
            k,
            n,
            ld: out.ld,
            accumulate: out.accumulate,
        };
        if let Ok(mut plans) = self.lt.plans.lock() {
            plans.remove(&key);
        }
        let launches = weights.len().max(MIN_LAUNCHES);
        let mut turn = 0;
        let mut next = || {
            turn = (turn + 1) % weights.len();
            weights[turn]
        };
        let default_us = timer
            .time(self, 1, SAMPLES, launches, || {
                self.gemm_ex(x, next(), y, tokens, k, n, out)
            })?
            .median_ms
            * 1e3;
        let candidates = match self.lt.candidates(key) {
            Ok(c) => c,
            Err(e) => {
                return Ok(GemmTuning {
                    default_us,
                    best_us: None,
                    candidates: 0,
                    adopted: false,
                    unavailable: Some(e.to_string()),
                });
            }
        };
        let mut best: Option<(f64, usize)> = None;
        for (i, plan) in candidates.iter().enumerate() {
            let stats = timer.time(self, 1, SAMPLES, launches, || {
                self.lt_gemm(plan, x, next(), y, key)
            });
            // A candidate that does not run is skipped, as its heuristic allows.
            let Ok(stats) = stats else { continue };
            let us = stats.median_ms * 1e3;
            if best.is_none_or(|(b, _)| us < b) {
                best = Some((us, i));
            }
        }
        let adopted = best.is_some_and(|(us, _)| always || us < default_us);
        let count = candidates.len();
        if let Some((_, i)) = best.filter(|_| adopted) {
            let plan = candidates.into_iter().nth(i).expect("index of a candidate");
            self.lt
                .plans
                .lock()
                .map_err(|_| CudaError::invalid("device", "the GEMM plans' lock was poisoned"))?
                .insert(key, Arc::new(plan));
        }
        Ok(GemmTuning {
            default_us,
            best_us: best.map(|(us, _)| us),
            candidates: count,
            adopted,
            unavailable: None,
        })
    }

    /// Forgets every tuned GEMM algorithm: [`Self::gemm_ex`] takes cuBLAS's default again.
    pub fn clear_gemm_tuning(&self) {
        if let Ok(mut plans) = self.lt.plans.lock() {
            plans.clear();
        }
    }

    /// Shapes whose GEMMs run through a tuned cuBLASLt algorithm.
    pub fn tuned_gemm_shapes(&self) -> usize {
        self.lt.plans.lock().map(|p| p.len()).unwrap_or(0)
    }

    /// `gemm_ex` through the tuned algorithm of its shape, if there is one: `Some`
    /// with the launch's result, else `None` (the caller takes cuBLAS).
    pub(crate) fn tuned_gemm<W: DevicePtr<bf16>>(
        &self,
        x: &CudaSlice<bf16>,
        w: &W,
        y: &mut CudaSlice<bf16>,
        key: GemmKey,
    ) -> Option<Result<(), CudaError>> {
        let plan = self.lt.plan(&key)?;
        Some(self.lt_gemm(&plan, x, w, y, key))
    }

    fn lt_gemm<W: DevicePtr<bf16>>(
        &self,
        plan: &Plan,
        x: &CudaSlice<bf16>,
        w: &W,
        y: &mut CudaSlice<bf16>,
        key: GemmKey,
    ) -> Result<(), CudaError> {
        let (wp, _sw) = w.device_ptr(&self.stream);
        let (xp, _sx) = x.device_ptr(&self.stream);
        let (yp, _sy) = y.device_ptr_mut(&self.stream);
        // SAFETY: gemm_ex and tune_gemm checked the extents of all three buffers for
        // `key`'s shape before calling.
        unsafe { self.lt.run(plan, &self.stream, wp, xp, yp, key.accumulate) }
    }
}
