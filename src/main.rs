//! The `singan` command-line tool.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    singan::tensor::keep_freed_memory();
    cli::run()
}
