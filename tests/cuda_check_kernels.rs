//! `singan check kernels`: compiles every kernel module with NVRTC, or fails with install
//! instructions when the NVRTC library is missing.

use std::path::PathBuf;
use std::process::Command;

/// Returns the `singan` binary: where cargo built it, or, when this test binary was copied to
/// another machine (scripts/gpu-check), the `singan` one folder above this binary's `deps/`.
fn singan_binary() -> PathBuf {
    let built = PathBuf::from(env!("CARGO_BIN_EXE_singan"));
    if built.exists() {
        return built;
    }
    let this = std::env::current_exe().expect("the test binary has a path");
    let beside = this
        .parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("singan"));
    match beside {
        Some(path) if path.exists() => path,
        _ => panic!(
            "singan binary not found at {} or beside {}",
            built.display(),
            this.display()
        ),
    }
}

fn check_kernels(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(singan_binary())
        .args(["check", "kernels"])
        .args(args)
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_kernels_compiles_every_module() {
    let (code, stdout, stderr) = check_kernels(&[]);
    if !singan::cuda::nvrtc_available() {
        println!("skipped: NVRTC library not found, so only the failure message is checked");
        assert_eq!(code, 1, "{stdout}{stderr}");
        assert!(stderr.contains("nvrtc-install"), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        return;
    }
    assert_eq!(code, 0, "{stdout}{stderr}");
    for module in singan::cuda::KernelModule::ALL {
        let row = stdout
            .lines()
            .find(|line| line.split_whitespace().next() == Some(module.name()))
            .unwrap_or_else(|| panic!("no row for module {}:\n{stdout}", module.name()));
        let count: usize = row
            .split_whitespace()
            .nth(1)
            .and_then(|count| count.parse().ok())
            .unwrap_or_else(|| panic!("no entry-point count in {row:?}"));
        assert!(count > 0, "module {} has no entry points", module.name());
        assert_eq!(
            count % 2,
            0,
            "module {} lacks an f32 or f64 twin",
            module.name()
        );
    }
    assert!(stdout.contains("compute_80"), "{stdout}");
    assert!(stdout.contains("kernel modules compiled"), "{stdout}");
}

#[test]
fn check_kernels_rejects_invalid_arch() {
    let (code, stdout, stderr) = check_kernels(&["--arch", "volta"]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(stderr.contains("invalid GPU architecture"), "{stderr}");
}
