//! `singan check`: gradient checks and fixture comparisons.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{resolve_device, DeviceChoice};
use singan::gradcheck::{all_cases, check_on, CaseDims, CheckSettings};
use singan::Device;

#[derive(Subcommand, Debug)]
pub enum CheckCommand {
    /// Compare every op's analytic gradients, first and second order, with central differences
    /// in f64.
    Grad {
        /// Backend to run the ops on.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Compare the engine with PyTorch reference values stored as safetensors files.
    Fixtures {
        /// Folder holding the `.safetensors` fixture files.
        dir: PathBuf,
        /// Backend to run the ops on.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Replay a recorded training trace through this trainer and compare every logged loss
    /// and final tensor.
    Trace {
        /// The trace's `.safetensors` file.
        file: PathBuf,
        /// Ignored, because the replay always runs on the CPU.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
    /// Compile every CUDA kernel module with NVRTC and list its entry points; needs the NVRTC
    /// library but no GPU.
    Kernels {
        /// Virtual GPU architecture to compile for, compute_XY or sm_XY.
        #[arg(long, default_value = singan::cuda::DEFAULT_PTX_ARCH)]
        arch: String,
    },
}

pub fn run(command: CheckCommand) -> Result<ExitCode, String> {
    match command {
        CheckCommand::Grad { device } => {
            let device = resolve_device(device)?;
            check_grad(&device)
        }
        CheckCommand::Fixtures { dir, device } => {
            let device = resolve_device(device)?;
            check_fixtures(&dir, &device)
        }
        CheckCommand::Kernels { arch } => Ok(check_kernels(&arch)),
        CheckCommand::Trace { file, device: _ } => {
            // `check_trace` builds its tensors on the host and takes no device, so no GPU is
            // probed here, whatever the value of --device.
            eprintln!("device: cpu (check trace replays on the CPU only)");
            let report = singan::fixtures::trace::check_trace(&file).map_err(|e| e.to_string())?;
            print!("{}", report.render());
            Ok(exit_status(report.passed()))
        }
    }
}

fn check_grad(device: &Device) -> Result<ExitCode, String> {
    let dims = CaseDims::default();
    let settings = CheckSettings::default();
    println!(
        "{:<22} {:>5}  {:<44} {:>12} {:>12}  result",
        "op", "order", "input shapes", "max abs err", "max rel err"
    );
    let mut failures = 0;
    for case in all_cases() {
        let setup = case.setup(&dims);
        let shapes = case.shape_label(&dims);
        let (abs, rel, verdict) = match check_on(&setup, &settings, device) {
            Ok(report) => {
                let verdict = if report.passed() { "pass" } else { "FAIL" };
                if !report.passed() {
                    failures += 1;
                }
                (
                    format!("{:.2e}", report.max_abs_error()),
                    format!("{:.2e}", report.max_rel_error()),
                    verdict.to_string(),
                )
            }
            Err(error) => {
                failures += 1;
                ("-".to_string(), "-".to_string(), format!("ERROR: {error}"))
            }
        };
        println!(
            "{:<22} {:>5}  {:<44} {:>12} {:>12}  {}",
            case.name, case.order, shapes, abs, rel, verdict
        );
    }
    if failures > 0 {
        println!("{failures} checks failed");
        return Ok(ExitCode::from(1));
    }
    println!("all gradient checks passed");
    Ok(ExitCode::SUCCESS)
}

fn check_fixtures(dir: &std::path::Path, device: &Device) -> Result<ExitCode, String> {
    let report = singan::fixtures::check_dir_on(dir, device).map_err(|e| e.to_string())?;
    print!("{}", report.render());
    Ok(exit_status(report.passed()))
}

/// Compiles every kernel module for `arch` and prints one row per module, with any compiler
/// log below its row. Returns exit status 1 when NVRTC is missing or a module fails.
fn check_kernels(arch: &str) -> ExitCode {
    let report = match singan::cuda::compile_all_kernels(arch) {
        Ok(report) => report,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(1);
        }
    };
    let version = match singan::cuda::nvrtc_version() {
        Some((major, minor)) => format!("NVRTC {major}.{minor}"),
        None => "NVRTC".to_string(),
    };
    println!("compiled for {} with {version}", report.arch);
    println!("{:<14} {:>12}  log", "module", "entry points");
    for module in &report.modules {
        let log = if module.log.trim().is_empty() {
            "-"
        } else {
            "see below"
        };
        println!(
            "{:<14} {:>12}  {log}",
            module.name, module.entry_point_count
        );
        for line in module.log.lines().filter(|line| !line.trim().is_empty()) {
            println!("    {line}");
        }
    }
    println!("all {} kernel modules compiled", report.modules.len());
    ExitCode::SUCCESS
}

fn exit_status(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
