//! SM clock and board power through NVML (`libnvidia-ml.so.1`), loaded at run
//! time with `libloading` so that a machine without it still runs everything:
//! a missing library or a failing call is an [`NvmlError`], which the
//! benchmarks turn into a note.
//!
//! [`Sampler`] reads the SM clock (MHz) and the power draw (W) of one GPU on a
//! background thread every [`SAMPLE_PERIOD`] until it is stopped.
#![allow(unsafe_code)]

use std::os::raw::{c_int, c_uint, c_void};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often [`Sampler`] reads the clock and the power.
pub const SAMPLE_PERIOD: Duration = Duration::from_millis(20);

/// The library names tried by [`Nvml::open`], in order.
pub const NVML_LIBRARIES: [&str; 2] = ["libnvidia-ml.so.1", "libnvidia-ml.so"];

/// `NVML_CLOCK_SM`.
const NVML_CLOCK_SM: c_int = 1;

/// Why NVML cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NvmlError {
    /// None of the candidate libraries could be loaded.
    #[error("NVML could not be loaded (tried {tried}): {reason}")]
    Missing {
        /// The names tried.
        tried: String,
        /// The loader's last message.
        reason: String,
    },
    /// The library lacks a function fuselab needs.
    #[error("NVML has no `{0}`")]
    Symbol(&'static str),
    /// A call returned a non-zero `nvmlReturn_t`.
    #[error("NVML `{call}` returned error {code}")]
    Call {
        /// The function.
        call: &'static str,
        /// Its `nvmlReturn_t`.
        code: c_int,
    },
}

type InitFn = unsafe extern "C" fn() -> c_int;
type HandleFn = unsafe extern "C" fn(c_uint, *mut *mut c_void) -> c_int;
type ClockFn = unsafe extern "C" fn(*mut c_void, c_int, *mut c_uint) -> c_int;
type PowerFn = unsafe extern "C" fn(*mut c_void, *mut c_uint) -> c_int;
/// `nvmlDeviceGetUtilizationRates`: writes `nvmlUtilization_t { gpu, memory }`.
type UtilFn = unsafe extern "C" fn(*mut c_void, *mut [c_uint; 2]) -> c_int;

/// An initialised NVML session with the handle of one GPU; shuts NVML down when dropped.
pub struct Nvml {
    // Keeps the library mapped while the function pointers below are used.
    _lib: libloading::Library,
    shutdown: InitFn,
    clock: ClockFn,
    power: PowerFn,
    util: UtilFn,
    device: *mut c_void,
}

// SAFETY: NVML's API is thread-safe; the device handle is an opaque pointer that
// NVML allows to be used from any thread.
unsafe impl Send for Nvml {}
// SAFETY: as above; `Nvml` holds no interior mutability of its own.
unsafe impl Sync for Nvml {}

impl std::fmt::Debug for Nvml {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nvml").finish_non_exhaustive()
    }
}

impl Nvml {
    /// Loads NVML from [`NVML_LIBRARIES`] and opens GPU `index` (NVML's numbering).
    pub fn open(index: u32) -> Result<Self, NvmlError> {
        Self::open_from(&NVML_LIBRARIES, index)
    }

    /// [`Self::open`] trying the library names `names` in order.
    pub fn open_from(names: &[&str], index: u32) -> Result<Self, NvmlError> {
        let mut reason = String::from("no library names given");
        let mut lib = None;
        for name in names {
            // SAFETY: loading NVML runs no initialisers with preconditions of ours.
            match unsafe { libloading::Library::new(*name) } {
                Ok(l) => {
                    lib = Some(l);
                    break;
                }
                Err(e) => reason = e.to_string(),
            }
        }
        let lib = lib.ok_or_else(|| NvmlError::Missing {
            tried: names.join(", "),
            reason,
        })?;
        // SAFETY: each symbol is looked up with the C signature NVML documents.
        let (init, shutdown, handle, clock, power, util) = unsafe {
            (
                sym::<InitFn>(&lib, "nvmlInit_v2")?,
                sym::<InitFn>(&lib, "nvmlShutdown")?,
                sym::<HandleFn>(&lib, "nvmlDeviceGetHandleByIndex_v2")?,
                sym::<ClockFn>(&lib, "nvmlDeviceGetClockInfo")?,
                sym::<PowerFn>(&lib, "nvmlDeviceGetPowerUsage")?,
                sym::<UtilFn>(&lib, "nvmlDeviceGetUtilizationRates")?,
            )
        };
        // SAFETY: nvmlInit_v2 takes no arguments.
        check("nvmlInit_v2", unsafe { init() })?;
        let mut device: *mut c_void = std::ptr::null_mut();
        // SAFETY: writes one handle through a valid pointer.
        if let Err(e) = check("nvmlDeviceGetHandleByIndex_v2", unsafe {
            handle(index, &mut device)
        }) {
            // SAFETY: balances the successful nvmlInit_v2 above.
            unsafe { shutdown() };
            return Err(e);
        }
        Ok(Self {
            _lib: lib,
            shutdown,
            clock,
            power,
            util,
            device,
        })
    }

    /// The percentage of the last sample period (NVML's, about 1/6 s to 1 s) during
    /// which a kernel ran on the GPU.
    pub fn utilization_percent(&self) -> Result<u32, NvmlError> {
        let mut v: [c_uint; 2] = [0, 0];
        // SAFETY: a valid device handle and the two-word nvmlUtilization_t.
        check("nvmlDeviceGetUtilizationRates", unsafe {
            (self.util)(self.device, &mut v)
        })?;
        Ok(v[0])
    }

    /// The current SM clock in MHz.
    pub fn sm_clock_mhz(&self) -> Result<u32, NvmlError> {
        let mut v: c_uint = 0;
        // SAFETY: a valid device handle and one output word.
        check("nvmlDeviceGetClockInfo", unsafe {
            (self.clock)(self.device, NVML_CLOCK_SM, &mut v)
        })?;
        Ok(v)
    }

    /// The board's power draw in watts.
    pub fn power_w(&self) -> Result<f64, NvmlError> {
        let mut mw: c_uint = 0;
        // SAFETY: a valid device handle and one output word (milliwatts).
        check("nvmlDeviceGetPowerUsage", unsafe {
            (self.power)(self.device, &mut mw)
        })?;
        Ok(f64::from(mw) / 1e3)
    }
}

impl Drop for Nvml {
    fn drop(&mut self) {
        // SAFETY: balances the nvmlInit_v2 of `open_from`; the library is still mapped.
        unsafe { (self.shutdown)() };
    }
}

/// # Safety
/// `T` must be the function's C signature.
unsafe fn sym<T: Copy>(lib: &libloading::Library, name: &'static str) -> Result<T, NvmlError> {
    // SAFETY: the caller names the right signature; the pointer is copied out and
    // used only while `lib` is kept alive by `Nvml`.
    unsafe { lib.get::<T>(name.as_bytes()) }
        .map(|s| *s)
        .map_err(|_| NvmlError::Symbol(name))
}

fn check(call: &'static str, code: c_int) -> Result<(), NvmlError> {
    if code == 0 {
        Ok(())
    } else {
        Err(NvmlError::Call { call, code })
    }
}

/// What a [`Sampler`] saw between its start and its stop.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// SM clock readings, MHz.
    pub sm_clock_mhz: Vec<f64>,
    /// Power readings, W.
    pub power_w: Vec<f64>,
    /// GPU utilisation readings (% of time a kernel ran), where NVML reports them.
    pub utilization_pct: Vec<f64>,
    /// The first error a reading returned, if any.
    pub error: Option<String>,
}

impl Samples {
    /// Median SM clock in MHz (`None` without readings).
    pub fn median_clock_mhz(&self) -> Option<f64> {
        median(&self.sm_clock_mhz)
    }

    /// Fraction of utilisation readings above zero, and their mean (`None` without
    /// readings).
    pub fn busy(&self) -> Option<(f64, f64)> {
        let n = self.utilization_pct.len();
        (n > 0).then(|| {
            let busy = self.utilization_pct.iter().filter(|&&u| u > 0.0).count();
            (
                busy as f64 / n as f64,
                self.utilization_pct.iter().sum::<f64>() / n as f64,
            )
        })
    }

    /// Median power in W (`None` without readings).
    pub fn median_power_w(&self) -> Option<f64> {
        median(&self.power_w)
    }
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    Some(super::device::percentile(&s, 50.0))
}

/// Reads the SM clock and the power on a background thread every [`SAMPLE_PERIOD`].
#[derive(Debug)]
pub struct Sampler {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Samples>>,
}

impl Sampler {
    /// Starts sampling through `nvml`.
    pub fn start(nvml: Arc<Nvml>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut s = Samples::default();
            while !flag.load(Ordering::Relaxed) {
                if let Ok(u) = nvml.utilization_percent() {
                    s.utilization_pct.push(f64::from(u));
                }
                match (nvml.sm_clock_mhz(), nvml.power_w()) {
                    (Ok(c), Ok(p)) => {
                        s.sm_clock_mhz.push(f64::from(c));
                        s.power_w.push(p);
                    }
                    (Err(e), _) | (_, Err(e)) => {
                        if s.error.is_none() {
                            s.error = Some(e.to_string());
                        }
                    }
                }
                std::thread::sleep(SAMPLE_PERIOD);
            }
            s
        });
        Self {
            stop,
            thread: Some(thread),
        }
    }

    /// Stops the thread and returns its readings (a panicked thread reads as an error).
    pub fn stop(mut self) -> Samples {
        self.stop.store(true, Ordering::Relaxed);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(s)) => s,
            _ => Samples {
                error: Some("the NVML sampling thread panicked".into()),
                ..Samples::default()
            },
        }
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_an_error_not_a_panic() {
        let e = Nvml::open_from(&["/nonexistent/libnvidia-ml.so.1"], 0).unwrap_err();
        assert!(matches!(e, NvmlError::Missing { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.starts_with("NVML could not be loaded (tried /nonexistent"),
            "{msg}"
        );
        let e = Nvml::open_from(&[], 0).unwrap_err().to_string();
        assert!(e.contains("no library names given"), "{e}");
    }

    #[test]
    fn sample_medians() {
        let s = Samples {
            sm_clock_mhz: vec![1500.0, 1980.0, 1400.0],
            power_w: vec![690.0, 700.0],
            utilization_pct: vec![0.0, 100.0, 50.0, 0.0],
            error: None,
        };
        assert_eq!(s.busy(), Some((0.5, 37.5)));
        assert_eq!(Samples::default().busy(), None);
        assert_eq!(s.median_clock_mhz(), Some(1500.0));
        assert_eq!(s.median_power_w(), Some(695.0));
        assert_eq!(Samples::default().median_clock_mhz(), None);
    }
}
