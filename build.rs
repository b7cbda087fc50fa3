//! Build script: embeds the CUDA kernel sources under `kernels/` and, when the NVRTC library
//! can be loaded, their PTX, and generates `$OUT_DIR/kernels.rs` with the `KernelModule` enum
//! that `src/cuda/mod.rs` includes.
//!
//! Environment variables:
//! - `SINGAN_CUDA_ARCH`: virtual GPU architecture of the embedded PTX, `compute_XY` (an
//!   `sm_XY` value is read as `compute_XY`). Defaults to `compute_80`, whose PTX the driver
//!   JIT-compiles for any GPU of compute capability 8.0 or newer. Set a higher value to use
//!   newer instructions, at the cost of older GPUs falling back to run-time NVRTC.
//! - `LD_LIBRARY_PATH`: searched for `libnvrtc.so.13` (cudarc 0.19 with the `cuda-13000`
//!   feature). `.ci/nvrtc-install` installs the library from PyPI and prints this setting.
//!
//! Without NVRTC the build still succeeds with a warning, and the crate compiles the embedded
//! sources at run time instead. With NVRTC, a kernel that fails to compile fails the build and
//! the compiler log is printed.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};

include!("src/cuda/nvrtc_compile.rs");

/// One `kernels/*.cu` file.
struct KernelFile {
    /// File stem, for example `conv2d`.
    stem: String,
    /// Enum variant name, for example `Conv2d`.
    variant: String,
    /// Copy of the source under `$OUT_DIR/kernels/`.
    source_path: PathBuf,
    /// PTX under `$OUT_DIR/kernels/`, when NVRTC was available.
    ptx_path: Option<PathBuf>,
}

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/cuda/nvrtc_compile.rs");
    println!("cargo:rerun-if-env-changed=SINGAN_CUDA_ARCH");
    println!("cargo:rerun-if-env-changed=LD_LIBRARY_PATH");

    let manifest_dir =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let kernel_out_dir = out_dir.join("kernels");
    // Stale files of deleted kernels must not survive in OUT_DIR.
    if kernel_out_dir.exists() {
        fs::remove_dir_all(&kernel_out_dir).unwrap_or_else(|error| {
            panic!("failed to clear {}: {error}", kernel_out_dir.display())
        });
    }
    fs::create_dir_all(&kernel_out_dir)
        .unwrap_or_else(|error| panic!("failed to create {}: {error}", kernel_out_dir.display()));

    let arch = target_arch();
    let nvrtc_present = nvrtc_library_present();
    if !nvrtc_present {
        println!(
            "cargo:warning=NVRTC library (libnvrtc.so.13) not found, so no PTX is embedded and kernels will be compiled at run time. Install it with `source .ci/nvrtc-install` (pip package nvidia-cuda-nvrtc) and rebuild."
        );
    }

    let mut kernels = Vec::new();
    for source_file in list_kernel_sources(&manifest_dir.join("kernels")) {
        let stem = source_file
            .file_stem()
            .and_then(|stem| stem.to_str())
            .expect("kernel file names are UTF-8")
            .to_string();
        let variant = variant_name(&stem);
        let source = fs::read_to_string(&source_file)
            .unwrap_or_else(|error| panic!("failed to read {}: {error}", source_file.display()));
        let source_path = kernel_out_dir.join(format!("{stem}.cu"));
        write_file(&source_path, &source);

        let ptx_path = if nvrtc_present {
            let ptx = compile_kernel(&stem, &source, &arch);
            let path = kernel_out_dir.join(format!("{stem}.ptx"));
            write_file(&path, &ptx);
            Some(path)
        } else {
            None
        };
        kernels.push(KernelFile {
            stem,
            variant,
            source_path,
            ptx_path,
        });
    }

    let ptx_arch = if nvrtc_present {
        Some(arch.as_str())
    } else {
        None
    };
    let nvrtc_version = if nvrtc_present {
        nvrtc_version().ok()
    } else {
        None
    };
    write_file(
        &out_dir.join("kernels.rs"),
        &generate_module_enum(&kernels, ptx_arch, nvrtc_version),
    );
}

/// Reads `SINGAN_CUDA_ARCH` and returns it as `compute_XY`, or the default.
fn target_arch() -> String {
    match std::env::var("SINGAN_CUDA_ARCH") {
        Ok(value) if !value.trim().is_empty() => normalize_arch(&value)
            .unwrap_or_else(|reason| panic!("invalid SINGAN_CUDA_ARCH {value:?}: {reason}")),
        _ => DEFAULT_PTX_ARCH.to_string(),
    }
}

/// Returns the `*.cu` files directly under `dir`, sorted by name.
fn list_kernel_sources(dir: &Path) -> Vec<PathBuf> {
    let entries = fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("failed to list {}: {error}", dir.display()));
    let mut files: Vec<PathBuf> = entries
        .map(|entry| {
            entry
                .unwrap_or_else(|error| panic!("failed to list {}: {error}", dir.display()))
                .path()
        })
        .filter(|path| {
            path.is_file() && path.extension().is_some_and(|extension| extension == "cu")
        })
        .collect();
    files.sort();
    files
}

/// Turns a file stem such as `conv2d` or `batch_norm` into a variant name such as `Conv2d` or
/// `BatchNorm`. Rejects stems that would not give a valid identifier.
fn variant_name(stem: &str) -> String {
    let valid = stem.starts_with(|c: char| c.is_ascii_lowercase())
        && stem
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        panic!("invalid kernel file name kernels/{stem}.cu: use lowercase letters, digits and underscores, starting with a letter");
    }
    let mut variant = String::new();
    for word in stem.split('_').filter(|word| !word.is_empty()) {
        let mut chars = word.chars();
        if let Some(first) = chars.next() {
            variant.push(first.to_ascii_uppercase());
            variant.extend(chars);
        }
    }
    variant
}

/// Compiles one kernel file, failing the build with the compiler log when NVRTC rejects it.
fn compile_kernel(stem: &str, source: &str, arch: &str) -> String {
    let file_name = format!("kernels/{stem}.cu");
    match compile_to_ptx(&file_name, source, arch) {
        Ok(compiled) => {
            for line in compiled.log.lines().filter(|line| !line.trim().is_empty()) {
                println!("cargo:warning=NVRTC: {line}");
            }
            compiled.ptx
        }
        Err(NvrtcFailure::Rejected { log }) => {
            panic!("NVRTC failed to compile {file_name} for {arch}:\n{log}")
        }
        Err(NvrtcFailure::ContainsNul) => panic!("{file_name} contains a NUL byte"),
        Err(NvrtcFailure::Call { call, code }) => {
            panic!("NVRTC call {call} failed for {file_name}: {code}")
        }
    }
}

fn write_file(path: &Path, contents: &str) {
    fs::write(path, contents)
        .unwrap_or_else(|error| panic!("failed to write {}: {error}", path.display()));
}

/// Generates the Rust source of the `KernelModule` enum.
fn generate_module_enum(
    kernels: &[KernelFile],
    ptx_arch: Option<&str>,
    nvrtc_version: Option<(i32, i32)>,
) -> String {
    let mut out = String::new();
    out.push_str("// Generated by build.rs from the files in kernels/. Do not edit.\n\n");
    out.push_str("/// One CUDA source file under `kernels/`, loaded as one CUDA module.\n");
    out.push_str("#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]\n");
    out.push_str("pub enum KernelModule {\n");
    for kernel in kernels {
        writeln!(out, "    /// `kernels/{}.cu`", kernel.stem).unwrap();
        writeln!(out, "    {},", kernel.variant).unwrap();
    }
    out.push_str("}\n\n");

    out.push_str("impl KernelModule {\n");
    out.push_str("    /// Every kernel module, sorted by file name.\n");
    out.push_str("    pub const ALL: &'static [KernelModule] = &[\n");
    for kernel in kernels {
        writeln!(out, "        KernelModule::{},", kernel.variant).unwrap();
    }
    out.push_str("    ];\n\n");

    push_match_fn(
        &mut out,
        "Returns the position of this module in [`KernelModule::ALL`].",
        "index",
        "usize",
        kernels,
        |position, _| position.to_string(),
    );
    push_match_fn(
        &mut out,
        "Returns the file stem, for example `\"conv2d\"` for `kernels/conv2d.cu`.",
        "name",
        "&'static str",
        kernels,
        |_, kernel| format!("{:?}", kernel.stem),
    );
    push_match_fn(
        &mut out,
        "Returns the CUDA source, as embedded at build time.",
        "source",
        "&'static str",
        kernels,
        |_, kernel| {
            format!(
                "include_str!({:?})",
                kernel.source_path.display().to_string()
            )
        },
    );
    push_match_fn(
        &mut out,
        "Returns the PTX compiled at build time for [`PTX_ARCH`], or `None` when the build had no NVRTC library.",
        "ptx",
        "Option<&'static str>",
        kernels,
        |_, kernel| match &kernel.ptx_path {
            Some(path) => format!("Some(include_str!({:?}))", path.display().to_string()),
            None => "None".to_string(),
        },
    );
    out.push_str("}\n\n");

    out.push_str(
        "/// Virtual GPU architecture of the embedded PTX (`SINGAN_CUDA_ARCH` at build time), or\n",
    );
    out.push_str("/// `None` when the build had no NVRTC library and embedded no PTX.\n");
    writeln!(out, "pub const PTX_ARCH: Option<&str> = {ptx_arch:?};\n").unwrap();
    out.push_str(
        "/// (major, minor) version of the NVRTC library that compiled the embedded PTX.\n",
    );
    writeln!(
        out,
        "pub const PTX_NVRTC_VERSION: Option<(i32, i32)> = {nvrtc_version:?};"
    )
    .unwrap();
    out
}

/// Appends `pub fn NAME(self) -> RETURN_TYPE` with one match arm per kernel file.
fn push_match_fn(
    out: &mut String,
    doc: &str,
    name: &str,
    return_type: &str,
    kernels: &[KernelFile],
    arm: impl Fn(usize, &KernelFile) -> String,
) {
    writeln!(out, "    /// {doc}").unwrap();
    writeln!(out, "    pub fn {name}(self) -> {return_type} {{").unwrap();
    out.push_str("        match self {\n");
    for (position, kernel) in kernels.iter().enumerate() {
        writeln!(
            out,
            "            KernelModule::{} => {},",
            kernel.variant,
            arm(position, kernel)
        )
        .unwrap();
    }
    out.push_str("        }\n    }\n\n");
}
