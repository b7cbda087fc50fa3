//! `singan check`: gradient checks and fixture comparisons.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Subcommand;

use super::{resolve_device, DeviceChoice};
use singan::gradcheck::{all_cases, check, CaseDims, CheckSettings};

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
        /// Backend to run the ops on.
        #[arg(long, value_enum, default_value = "auto")]
        device: DeviceChoice,
    },
}

pub fn run(command: CheckCommand) -> Result<ExitCode, String> {
    match command {
        CheckCommand::Grad { device } => {
            resolve_device(device)?;
            check_grad()
        }
        CheckCommand::Fixtures { dir, device } => {
            resolve_device(device)?;
            check_fixtures(&dir)
        }
        CheckCommand::Trace { file, device } => {
            resolve_device(device)?;
            let report = singan::fixtures::trace::check_trace(&file).map_err(|e| e.to_string())?;
            print!("{}", report.render());
            Ok(exit_status(report.passed()))
        }
    }
}

fn check_grad() -> Result<ExitCode, String> {
    let dims = CaseDims::default();
    let settings = CheckSettings::default();
    println!(
        "{:<22} {:>5}  {:<44} {:>11} {:>11}  result",
        "op", "order", "input shapes", "max abs err", "max rel err"
    );
    let mut failures = 0;
    for case in all_cases() {
        let setup = case.setup(&dims);
        let shapes = case.shape_label(&dims);
        let (abs, rel, verdict) = match check(&setup, &settings) {
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
            "{:<22} {:>5}  {:<44} {:>11} {:>11}  {}",
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

fn check_fixtures(dir: &std::path::Path) -> Result<ExitCode, String> {
    let report = singan::fixtures::check_dir(dir).map_err(|e| e.to_string())?;
    print!("{}", report.render());
    Ok(exit_status(report.passed()))
}

fn exit_status(passed: bool) -> ExitCode {
    if passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
