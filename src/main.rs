//! The `singan` command-line tool.

mod cli;

use std::io::Write;
use std::process::ExitCode;

fn main() -> ExitCode {
    end_quietly_on_closed_pipe();
    report_failed_output_writes();
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

/// Turns a failed write to standard output or standard error, such as `> /dev/full` on a full
/// disk, into one error line and exit status 1, in place of a panic with a backtrace.
///
/// `println!` and `eprintln!` panic when the write fails. The hook recognises their message,
/// writes it to standard error if that still works, and ends the process. Every other panic
/// goes to the default hook. As with a closed pipe, model and image files are never left
/// half-written, because each is renamed into place only when complete.
fn report_failed_output_writes() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let message = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.starts_with("failed printing to std") {
            let _ = writeln!(std::io::stderr(), "error: {message}");
            std::process::exit(1);
        }
        default_hook(info);
    }));
}

/// NOTE: Windows has no SIGPIPE, so there a closed pipe still makes `println!` panic.
#[cfg(not(unix))]
fn end_quietly_on_closed_pipe() {}
