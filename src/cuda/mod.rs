//! CUDA back end: the kernel modules built from `kernels/*.cu`, NVRTC compilation, a device
//! handle that loads the modules and looks up their entry points, and the device buffers that
//! GPU tensors hold, which come from a caching allocator ([`pool`]). The launchers that run ops on a GPU live beside the CPU kernels of each op
//! family, in `src/ops/*/cuda.rs`.
//!
//! Kernel entry points are named `<op>_<fwd|bwd>_<dtype>` (for example `conv2d_fwd_f32`), or
//! `<op>_<dtype>` for kernels outside the forward/backward pairs (for example `fill_f64`);
//! [`entry_name`] builds these names. The comment block at the top of each `kernels/*.cu` file
//! lists its entry points, their parameters and the launch shape they expect.
//!
//! Nothing here panics when the CUDA libraries are missing: [`nvrtc_available`] and
//! [`driver_available`] probe for them, and the other functions return [`CudaError`].
//! NOTE: cudarc still panics when a present library lacks a symbol that it looks up. That can
//! happen with a driver or NVRTC older than CUDA 11.2, an estimate that no test covers.

mod buffer;
mod device;
pub(crate) mod launch;
mod nvrtc_compile;
pub mod params;
pub mod pool;

#[cfg(test)]
mod tests;

use std::sync::{Arc, OnceLock};

pub use buffer::CudaBuffer;
pub use cudarc::driver::{CudaFunction, DriverError, LaunchConfig};
pub use device::CudaDevice;
pub use pool::PoolStats;

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

/// Virtual GPU architecture that build.rs uses when `SINGAN_CUDA_ARCH` is unset.
pub const DEFAULT_PTX_ARCH: &str = nvrtc_compile::DEFAULT_PTX_ARCH;

/// Errors of the CUDA back end.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error(
        "NVRTC library (libnvrtc.so.13) not found: install it with `pip install nvidia-cuda-nvrtc` and add <site-packages>/nvidia/cu13/lib to LD_LIBRARY_PATH (`source .ci/nvrtc-install` does both)"
    )]
    NvrtcNotFound,

    #[error(
        "CUDA driver library (libcuda.so) not found: install the NVIDIA driver, or add the folder that contains libcuda.so.1 to LD_LIBRARY_PATH"
    )]
    DriverNotFound,

    #[error("invalid GPU architecture {value:?}: {reason}")]
    InvalidArch { value: String, reason: String },

    #[error("NVRTC failed to compile kernel module {module} for {arch}:\n{log}")]
    CompileFailed {
        module: &'static str,
        arch: String,
        log: String,
    },

    #[error("NVRTC call {call} failed for kernel module {module}: {code}")]
    NvrtcCall {
        module: &'static str,
        call: &'static str,
        code: String,
    },

    #[error("kernel module {module} source contains a NUL byte")]
    SourceContainsNul { module: &'static str },

    #[error("CUDA device {ordinal} not found: the driver reports {count} device(s)")]
    DeviceNotFound { ordinal: usize, count: usize },

    #[error("CUDA driver call failed while {action}: {source}")]
    Driver {
        action: String,
        #[source]
        source: DriverError,
    },

    #[error("loading the {format} of kernel module {module} failed: {source}{hint}")]
    ModuleLoadFailed {
        module: &'static str,
        /// `PTX` or `CUBIN`.
        format: &'static str,
        /// Advice appended to the message: empty, or starting with "; ".
        hint: String,
        #[source]
        source: DriverError,
    },

    #[error("kernel entry point {entry:?} not found in kernel module {module}")]
    EntryPointNotFound { module: &'static str, entry: String },

    #[error("kernel {entry} failed: {source}")]
    KernelFailed {
        entry: String,
        #[source]
        source: DriverError,
    },
}

/// Returns whether the NVRTC library can be loaded. The result is computed once.
pub fn nvrtc_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(nvrtc_compile::nvrtc_library_present)
}

/// Returns the (major, minor) version of the NVRTC library, or `None` when it cannot be loaded.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_available() {
        return None;
    }
    nvrtc_compile::nvrtc_version().ok()
}

/// Returns whether the CUDA driver library can be loaded. The result is computed once.
///
/// A loadable driver does not mean that a GPU is present, which [`CudaDevice::open`] checks.
pub fn driver_available() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    // SAFETY: the probe only tries to open the library with `dlopen` and closes it again.
    *PRESENT.get_or_init(|| unsafe { cudarc::driver::sys::is_culib_present() })
}

/// Opens GPU `ordinal` for tensors and loads every kernel module, and returns the shared
/// handle ([`CudaDevice::shared`]).
///
/// Loading the modules JIT-compiles the embedded PTX, or compiles the sources with NVRTC when
/// the build embedded none or the GPU is older than its architecture, so a success means that
/// ops can run. The error names what is missing: the driver library, a GPU, or NVRTC.
pub fn probe_device(ordinal: usize) -> Result<Arc<CudaDevice>, CudaError> {
    let device = CudaDevice::shared(ordinal)?;
    device.load_all_modules()?;
    Ok(device)
}

/// Floating-point type that a kernel entry point is stamped for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KernelDtype {
    F32,
    F64,
}

impl KernelDtype {
    /// Returns the entry-point suffix, `f32` or `f64`.
    pub fn suffix(self) -> &'static str {
        match self {
            KernelDtype::F32 => "f32",
            KernelDtype::F64 => "f64",
        }
    }
}

/// Direction of a kernel in a forward/backward pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pass {
    Forward,
    Backward,
}

/// Builds a kernel entry-point name: `<op>_fwd_<dtype>` or `<op>_bwd_<dtype>` for a pass, and
/// `<op>_<dtype>` for kernels outside the forward/backward pairs (`pass` = `None`).
///
/// For example `entry_name("conv2d_input", Some(Pass::Backward), KernelDtype::F32)` returns
/// `conv2d_input_bwd_f32`.
pub fn entry_name(op: &str, pass: Option<Pass>, dtype: KernelDtype) -> String {
    match pass {
        Some(Pass::Forward) => format!("{op}_fwd_{}", dtype.suffix()),
        Some(Pass::Backward) => format!("{op}_bwd_{}", dtype.suffix()),
        None => format!("{op}_{}", dtype.suffix()),
    }
}

/// Result of compiling one kernel module with NVRTC.
#[derive(Clone, Debug)]
pub struct ModuleReport {
    /// Module name, the file stem under `kernels/`.
    pub name: &'static str,
    /// Number of `.entry` lines in the PTX, one per `extern "C"` kernel.
    pub entry_point_count: usize,
    /// Entry-point names in PTX order.
    pub entry_points: Vec<String>,
    /// NVRTC log, empty unless the compiler printed warnings.
    pub log: String,
}

/// Result of [`compile_all_kernels`], one report per module in [`KernelModule::ALL`] order.
#[derive(Clone, Debug)]
pub struct KernelReport {
    /// Virtual architecture the modules were compiled for, as `compute_XY`.
    pub arch: String,
    pub modules: Vec<ModuleReport>,
}

/// Compiles every kernel module with NVRTC for the virtual architecture `arch` (`compute_XY`
/// or `sm_XY`). Needs the NVRTC library but no GPU.
pub fn compile_all_kernels(arch: &str) -> Result<KernelReport, CudaError> {
    let arch = nvrtc_compile::normalize_arch(arch).map_err(|reason| CudaError::InvalidArch {
        value: arch.to_string(),
        reason,
    })?;
    if !nvrtc_available() {
        return Err(CudaError::NvrtcNotFound);
    }
    let mut modules = Vec::with_capacity(KernelModule::ALL.len());
    for &module in KernelModule::ALL {
        let compiled = compile_module(module, &arch)?;
        let entry_points = ptx_entry_points(&compiled.ptx);
        modules.push(ModuleReport {
            name: module.name(),
            entry_point_count: entry_points.len(),
            entry_points,
            log: compiled.log,
        });
    }
    Ok(KernelReport { arch, modules })
}

/// Compiles one module's embedded source to PTX with NVRTC. `arch` must already be normalised
/// (`compute_XY`) and the caller must have checked [`nvrtc_available`].
fn compile_module(
    module: KernelModule,
    arch: &str,
) -> Result<nvrtc_compile::CompiledPtx, CudaError> {
    nvrtc_compile::compile_to_ptx(&module_file_name(module), module.source(), arch)
        .map_err(|failure| compile_error(module, arch, failure))
}

/// Compiles one module's embedded source to CUBIN with NVRTC for `arch` (`sm_XY`). The caller
/// must have checked [`nvrtc_available`].
fn compile_module_cubin(
    module: KernelModule,
    arch: &str,
) -> Result<nvrtc_compile::CompiledCubin, CudaError> {
    nvrtc_compile::compile_to_cubin(&module_file_name(module), module.source(), arch)
        .map_err(|failure| compile_error(module, arch, failure))
}

fn module_file_name(module: KernelModule) -> String {
    format!("kernels/{}.cu", module.name())
}

fn compile_error(
    module: KernelModule,
    arch: &str,
    failure: nvrtc_compile::NvrtcFailure,
) -> CudaError {
    match failure {
        nvrtc_compile::NvrtcFailure::Rejected { log } => CudaError::CompileFailed {
            module: module.name(),
            arch: arch.to_string(),
            log,
        },
        nvrtc_compile::NvrtcFailure::ContainsNul => CudaError::SourceContainsNul {
            module: module.name(),
        },
        nvrtc_compile::NvrtcFailure::Call { call, code } => CudaError::NvrtcCall {
            module: module.name(),
            call,
            code,
        },
    }
}

/// Returns the kernel names declared by `.entry` directives in PTX text, in order.
pub fn ptx_entry_points(ptx: &str) -> Vec<String> {
    ptx.lines()
        .filter_map(|line| {
            let mut tokens = line.split_whitespace();
            tokens.position(|token| token == ".entry")?;
            let name = tokens.next()?;
            let name = name.split('(').next().unwrap_or(name);
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}
