// NVRTC compilation of the kernel sources. build.rs pulls this file in with `include!` and the
// `cuda` module declares it as a submodule, so the PTX embedded at build time and the code
// compiled at run time come from the same compiler options.
//
// This file may use only `std` and `cudarc`, the only build dependencies, and no inner
// attributes or inner doc comments, which `include!` rejects.

use std::ffi::{c_char, CString};

use cudarc::nvrtc::result as nvrtc_result;

/// Virtual GPU architecture of the PTX that build.rs embeds when `SINGAN_CUDA_ARCH` is unset.
/// The driver JIT-compiles `compute_80` PTX for every GPU of compute capability 8.0 or newer.
pub const DEFAULT_PTX_ARCH: &str = "compute_80";

/// PTX text and compiler log of one successful compilation.
pub struct CompiledPtx {
    pub ptx: String,
    pub log: String,
}

/// CUBIN (device machine code) and compiler log of one successful compilation.
#[allow(dead_code)] // build.rs embeds PTX only; the run-time loader uses CUBIN.
pub struct CompiledCubin {
    pub cubin: Vec<u8>,
    pub log: String,
}

/// Failure of one NVRTC compilation.
#[derive(Debug)]
pub enum NvrtcFailure {
    /// The source or its file name contains a NUL byte, which NVRTC cannot accept.
    ContainsNul,
    /// `nvrtcCompileProgram` rejected the source, and `log` is the compiler output.
    Rejected { log: String },
    /// An NVRTC call other than the compilation itself failed with status `code`.
    Call { call: &'static str, code: String },
}

/// Returns whether libnvrtc can be loaded. cudarc panics on the first NVRTC call when the
/// library is missing, so every caller checks this first.
pub fn nvrtc_library_present() -> bool {
    // SAFETY: the probe only tries to open the library with `dlopen` and closes it again.
    unsafe { cudarc::nvrtc::sys::is_culib_present() }
}

/// Returns the (major, minor) version of the loaded NVRTC library.
/// The caller must have checked `nvrtc_library_present()`.
pub fn nvrtc_version() -> Result<(i32, i32), NvrtcFailure> {
    let mut major = 0;
    let mut minor = 0;
    // SAFETY: both pointers are valid for writes of one c_int each.
    unsafe { cudarc::nvrtc::sys::nvrtcVersion(&mut major, &mut minor) }
        .result()
        .map_err(|error| NvrtcFailure::Call {
            call: "nvrtcVersion",
            code: format!("{:?}", error.0),
        })?;
    Ok((major, minor))
}

/// Validates a virtual GPU architecture name and returns it as `compute_XY`.
///
/// Accepts `compute_XY` and `sm_XY`, where XY is the compute capability written as digits and
/// may end in one letter, as in `compute_90a`. An `sm_XY` value is read as `compute_XY`,
/// because NVRTC produces PTX only for virtual architectures.
pub fn normalize_arch(value: &str) -> Result<String, String> {
    let trimmed = value.trim();
    let digits = trimmed
        .strip_prefix("compute_")
        .or_else(|| trimmed.strip_prefix("sm_"))
        .ok_or_else(|| "expected compute_XY or sm_XY, for example compute_80".to_string())?;
    let number_len = digits.chars().take_while(char::is_ascii_digit).count();
    let suffix = &digits[number_len..];
    let suffix_ok =
        suffix.is_empty() || (suffix.len() == 1 && suffix.as_bytes()[0].is_ascii_lowercase());
    if number_len < 2 || !suffix_ok {
        return Err("expected compute_XY or sm_XY, for example compute_80".to_string());
    }
    Ok(format!("compute_{digits}"))
}

/// Returns the NVRTC options used for every kernel module. `arch` is `compute_XY` for PTX
/// output or `sm_XY` for CUBIN output.
pub fn nvrtc_options(arch: &str) -> Vec<String> {
    vec![
        format!("--gpu-architecture={arch}"),
        "--std=c++17".to_string(),
        // Adds source line information for profilers and compute-sanitizer reports.
        "--generate-line-info".to_string(),
    ]
}

/// Compiles one CUDA source file to PTX for the virtual architecture `arch` (`compute_XY`).
///
/// `file_name` is only used in compiler messages. The caller must have checked
/// `nvrtc_library_present()`, because cudarc panics when the library is missing.
pub fn compile_to_ptx(
    file_name: &str,
    source: &str,
    arch: &str,
) -> Result<CompiledPtx, NvrtcFailure> {
    let (raw, log) = compile_with(file_name, source, arch, |program| {
        // SAFETY: `program` is a compiled, live program.
        unsafe { nvrtc_result::get_ptx(program) }.map_err(|error| NvrtcFailure::Call {
            call: "nvrtcGetPTX",
            code: format!("{:?}", error.0),
        })
    })?;
    Ok(CompiledPtx {
        ptx: c_chars_to_string(&raw),
        log,
    })
}

/// Compiles one CUDA source file to CUBIN for the real architecture `arch` (`sm_XY`).
///
/// A CUBIN needs no JIT compilation, so any driver of the same CUDA major version can load it,
/// while PTX needs a driver at least as new as the NVRTC that produced it. Same contract as
/// `compile_to_ptx` otherwise.
#[allow(dead_code)] // build.rs embeds PTX only; the run-time loader uses CUBIN.
pub fn compile_to_cubin(
    file_name: &str,
    source: &str,
    arch: &str,
) -> Result<CompiledCubin, NvrtcFailure> {
    let (cubin, log) = compile_with(file_name, source, arch, |program| {
        let call_failed =
            |call: &'static str, status: cudarc::nvrtc::sys::nvrtcResult| NvrtcFailure::Call {
                call,
                code: format!("{status:?}"),
            };
        let mut size = 0usize;
        // SAFETY: `program` is a compiled, live program and `size` is valid for one write.
        let status = unsafe { cudarc::nvrtc::sys::nvrtcGetCUBINSize(program, &mut size) };
        status
            .result()
            .map_err(|_| call_failed("nvrtcGetCUBINSize", status))?;
        let mut cubin = vec![0u8; size];
        // SAFETY: `cubin` has the size NVRTC reported for this program.
        let status =
            unsafe { cudarc::nvrtc::sys::nvrtcGetCUBIN(program, cubin.as_mut_ptr().cast()) };
        status
            .result()
            .map_err(|_| call_failed("nvrtcGetCUBIN", status))?;
        Ok(cubin)
    })?;
    Ok(CompiledCubin { cubin, log })
}

/// Creates an NVRTC program, compiles it with `nvrtc_options(arch)`, passes the compiled
/// program to `extract` and destroys the program. Returns what `extract` returned and the
/// compiler log.
fn compile_with<T>(
    file_name: &str,
    source: &str,
    arch: &str,
    extract: impl FnOnce(cudarc::nvrtc::sys::nvrtcProgram) -> Result<T, NvrtcFailure>,
) -> Result<(T, String), NvrtcFailure> {
    let source_c = CString::new(source).map_err(|_| NvrtcFailure::ContainsNul)?;
    let name_c = CString::new(file_name).map_err(|_| NvrtcFailure::ContainsNul)?;
    let program = nvrtc_result::create_program(&source_c, Some(&name_c)).map_err(|error| {
        NvrtcFailure::Call {
            call: "nvrtcCreateProgram",
            code: format!("{:?}", error.0),
        }
    })?;

    let options = nvrtc_options(arch);
    // SAFETY: `program` was created above and is destroyed only at the end of this function.
    // `source_c` and `name_c` outlive it.
    let compiled = unsafe { nvrtc_result::compile_program(program, &options) };
    let log = unsafe { nvrtc_result::get_program_log(program) }
        .map(|raw| c_chars_to_string(&raw).trim_end().to_string())
        .unwrap_or_default();
    let result = match compiled {
        Ok(()) => extract(program).map(|output| (output, log)),
        Err(_) => Err(NvrtcFailure::Rejected { log }),
    };
    // SAFETY: `program` is valid and not used after this call. A failure here leaks one
    // program object and does not affect the result.
    let _ = unsafe { nvrtc_result::destroy_program(program) };
    result
}

/// Converts a buffer returned by NVRTC into a String, stopping at the first NUL byte.
fn c_chars_to_string(raw: &[c_char]) -> String {
    let bytes: Vec<u8> = raw.iter().map(|&c| c as u8).collect();
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}
