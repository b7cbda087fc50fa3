//! The `singan` command-line tool.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    end_quietly_on_closed_pipe();
    singan::tensor::keep_freed_memory();
    cli::run()
}

/// Restores the default action of SIGPIPE, which ends the process, in place of the `SIG_IGN`
/// that the Rust runtime installs.
///
/// With SIGPIPE ignored, a write to a closed pipe (`singan sample RUN | head -1`) fails with
/// EPIPE and `println!` panics. With the default action the process ends at that write without
/// a message, as `cat` and `head` do, and the shell reports status 141. No model or image file
/// is left half-written, because each is written to a temporary file that is then renamed over
/// the target.
#[cfg(unix)]
fn end_quietly_on_closed_pipe() {
    // SAFETY: SIG_DFL installs no handler, so no code runs in signal context, and this runs
    // before the program starts any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// NOTE: Windows has no SIGPIPE, so there a closed pipe still makes `println!` panic.
#[cfg(not(unix))]
fn end_quietly_on_closed_pipe() {}
