//! Kernel launches through `cuLaunchKernelEx`, which cudarc's launch builder does not
//! reach, so that a launch can carry programmatic stream serialisation (programmatic
//! dependent launch, sm_90+): the kernel may start while the one before it on the
//! stream finishes, and waits for that kernel's memory in its own code
//! (`grid_dependency_wait` in source.cu). Only kernels that make that wait before
//! touching a buffer are launched through here.
#![allow(unsafe_code)]

use std::ffi::c_void;
use std::marker::PhantomData;

use cudarc::driver::{CudaFunction, CudaStream, DevicePtr, DeviceRepr, LaunchConfig, sys};

/// One kernel argument: a device address, or a borrowed host value passed by value.
enum Arg {
    Ptr(sys::CUdeviceptr),
    Val(*const c_void),
}

/// The arguments of one launch, in the kernel's parameter order; the values they
/// borrow live at least as long as `'a`.
pub(crate) struct KernelArgs<'a> {
    stream: &'a CudaStream,
    args: Vec<Arg>,
    _borrows: PhantomData<&'a ()>,
}

impl<'a> KernelArgs<'a> {
    /// No arguments yet, for a launch on `stream`.
    pub(crate) fn new(stream: &'a CudaStream) -> Self {
        Self {
            stream,
            args: Vec::with_capacity(16),
            _borrows: PhantomData,
        }
    }

    /// A device buffer, passed as its address (the kernel may read or write it, as
    /// the caller's borrow says).
    pub(crate) fn buf<T, B: DevicePtr<T>>(&mut self, b: &'a B) -> &mut Self {
        // Event tracking is off on the device's context, so the guard records nothing.
        let (ptr, _sync) = b.device_ptr(self.stream);
        self.args.push(Arg::Ptr(ptr));
        self
    }

    /// A device buffer the kernel writes.
    pub(crate) fn buf_mut<T, B: DevicePtr<T>>(&mut self, b: &'a mut B) -> &mut Self {
        self.buf(&*b)
    }

    /// A value passed by value (an integer, a float, a TMA descriptor).
    pub(crate) fn val<T: DeviceRepr>(&mut self, v: &'a T) -> &mut Self {
        self.args.push(Arg::Val(v as *const T as *const c_void));
        self
    }

    /// Launches `func` with these arguments; with `programmatic`, as a programmatic
    /// dependent of the stream's previous kernel.
    ///
    /// # Safety
    /// As for any kernel launch: the arguments must be the kernel's parameters in
    /// order and type, and the kernel must stay inside the buffers it is given. With
    /// `programmatic`, the kernel must wait (`griddepcontrol.wait`) before it touches
    /// memory an earlier kernel reads or writes.
    pub(crate) unsafe fn launch(
        &self,
        func: &CudaFunction,
        cfg: LaunchConfig,
        programmatic: bool,
    ) -> Result<(), cudarc::driver::DriverError> {
        let mut params: Vec<*mut c_void> = self
            .args
            .iter()
            .map(|a| match a {
                Arg::Ptr(p) => p as *const sys::CUdeviceptr as *mut c_void,
                Arg::Val(v) => *v as *mut c_void,
            })
            .collect();
        // SAFETY: an all-zero launch attribute is a valid "ignore" value.
        let mut attr: sys::CUlaunchAttribute = unsafe { std::mem::zeroed() };
        attr.id = sys::CUlaunchAttributeID::CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION;
        attr.value.programmaticStreamSerializationAllowed = 1;
        let config = sys::CUlaunchConfig {
            gridDimX: cfg.grid_dim.0,
            gridDimY: cfg.grid_dim.1,
            gridDimZ: cfg.grid_dim.2,
            blockDimX: cfg.block_dim.0,
            blockDimY: cfg.block_dim.1,
            blockDimZ: cfg.block_dim.2,
            sharedMemBytes: cfg.shared_mem_bytes,
            hStream: self.stream.cu_stream(),
            attrs: if programmatic {
                &mut attr
            } else {
                std::ptr::null_mut()
            },
            numAttrs: u32::from(programmatic),
        };
        self.stream.context().bind_to_thread()?;
        // SAFETY: `params` points at one value per kernel parameter (the caller's
        // contract), each alive for this call; the config and attribute outlive it.
        unsafe {
            sys::cuLaunchKernelEx(
                &config,
                func.cu_function(),
                params.as_mut_ptr(),
                std::ptr::null_mut(),
            )
        }
        .result()
    }
}
