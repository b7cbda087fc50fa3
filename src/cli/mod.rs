//! Command-line parsing and dispatch.

mod apps;
mod bench;
mod check;
mod output_folder;
mod run_folder;
mod sample;
mod train;

#[cfg(test)]
mod test_folder;

use std::io::Write;
use std::process::ExitCode;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

/// A SinGAN trainer and the deep-learning engine under it.
#[derive(Parser, Debug)]
#[command(name = "singan", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Train a model on one image, coarse scale to fine.
    Train(Box<train::TrainArgs>),
    /// Draw new images from a trained run.
    Sample(sample::SampleArgs),
    /// Blend an object pasted into the training image into the image's style (harmonization).
    Harmonize(apps::MaskedArgs),
    /// Redraw an edited region of the training image so that it matches the rest (editing).
    Edit(apps::MaskedArgs),
    /// Turn a rough painting into an image in the style of the training image.
    #[command(name = "paint2image")]
    Paint2image(apps::PaintArgs),
    /// Upscale an image with a model trained on it (super-resolution).
    Sr(apps::SrArgs),
    /// Render a looping GIF of a random walk in the noise of a trained run.
    Animate(apps::AnimateArgs),
    /// Measure the engine's speed.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Verify the engine: numeric gradient checks, PyTorch reference fixtures, training traces.
    #[command(subcommand)]
    Check(check::CheckCommand),
}

/// The backend that runs the ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one works, otherwise the CPU.
    Auto,
    /// The rayon CPU backend.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

/// Parses the `--seed` of the commands other than `train`: a whole number from 0 to
/// `u64::MAX`. A negative value gets its own message because `train` takes -1 for a random seed.
pub fn parse_seed(text: &str) -> Result<u64, String> {
    let text = text.trim();
    match text.parse::<i128>() {
        Ok(seed) if seed < 0 => Err(format!(
            "{seed} is negative; pass a seed from 0 to {} (only `singan train` takes -1, to \
             pick a random seed)",
            u64::MAX
        )),
        Ok(seed) => u64::try_from(seed)
            .map_err(|_| format!("{seed} is too large; pass a seed from 0 to {}", u64::MAX)),
        Err(_) => Err(format!(
            "{text:?} is not a seed; pass a whole number from 0 to {}",
            u64::MAX
        )),
    }
}

/// Resolves `--device` to a backend, printing which one runs.
///
/// `auto` picks GPU 0 when it opens and its kernel modules load, and the CPU otherwise, printing
/// why. `cuda` without a usable GPU is an error that names what is missing: the driver library,
/// a GPU, or NVRTC (with the command that installs it). Probing never panics.
pub fn resolve_device(choice: DeviceChoice) -> Result<singan::Device, String> {
    match choice {
        DeviceChoice::Cpu => Ok(singan::Device::Cpu),
        DeviceChoice::Auto => match probe_cuda() {
            Ok((device, description)) => {
                eprintln!("device: {device} ({description})");
                Ok(device)
            }
            Err(reason) => {
                eprintln!("device: cpu (no usable CUDA GPU: {reason})");
                Ok(singan::Device::Cpu)
            }
        },
        DeviceChoice::Cuda => match probe_cuda() {
            Ok((device, description)) => {
                eprintln!("device: {device} ({description})");
                Ok(device)
            }
            Err(reason) => Err(format!(
                "--device cuda: no usable CUDA GPU: {reason}; use --device cpu to run on the CPU"
            )),
        },
    }
}

/// Warns on stderr when a scale of `pyramid` is not smaller than the next finer one, which
/// `min_size` at (or just below) the image's shorter side gives. The finer scale then trains
/// on nearly the same image again.
pub fn warn_if_scale_repeats(pyramid: &singan::singan::pyramid::Pyramid) {
    if let Some(k) = pyramid.repeated_scale() {
        let (coarse, finer) = (pyramid.sizes[k], pyramid.sizes[k + 1]);
        eprintln!(
            "warning: scale {k} ({}x{}) is not smaller than scale {} ({}x{}) in both sides, so \
             scale {} adds little detail; a smaller --min-size or --scale-factor-init gives a \
             pyramid that shrinks at every scale",
            coarse.0,
            coarse.1,
            k + 1,
            finer.0,
            finer.1,
            k + 1
        );
    }
}

/// Opens GPU 0 and loads every kernel module. Returns the device and a description such as
/// `NVIDIA H200, compute capability 9.0`, or the reason the GPU cannot run ops.
fn probe_cuda() -> Result<(singan::Device, String), String> {
    let gpu = singan::cuda::probe_device(0).map_err(|error| error.to_string())?;
    let (major, minor) = gpu.compute_capability();
    let name = gpu
        .name()
        .unwrap_or_else(|error| format!("unnamed GPU ({error})"));
    Ok((
        singan::Device::Cuda(gpu.ordinal()),
        format!("{name}, compute capability {major}.{minor}"),
    ))
}

/// Parses the arguments, runs the command and maps its outcome to an exit status.
pub fn run() -> ExitCode {
    // The matches are kept next to the parsed arguments because `train --resume` warns about the
    // options given on the command line.
    let matches = match Cli::command().try_get_matches() {
        Ok(matches) => matches,
        Err(error) => return print_parse_outcome(&error),
    };
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => return print_parse_outcome(&error.format(&mut Cli::command())),
    };
    // The CPU kernels run fastest when called from a rayon worker thread.
    let outcome = singan::ops::run_on_worker_thread(move || dispatch(cli.command, &matches))
        .map_err(|error| error.to_string())
        .and_then(|outcome| outcome);
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Prints clap's help, version or usage error and returns its exit status, or status 1 when
/// the text cannot be written: clap's own `exit` ignores a failed write, so `singan --help >
/// /dev/full` ended with status 0.
fn print_parse_outcome(outcome: &clap::Error) -> ExitCode {
    match outcome.print() {
        Ok(()) => ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(2)),
        Err(error) => {
            let stream = if outcome.use_stderr() {
                "stderr"
            } else {
                "stdout"
            };
            let _ = writeln!(
                std::io::stderr(),
                "error: failed printing to {stream}: {error}"
            );
            ExitCode::from(1)
        }
    }
}

fn dispatch(command: Command, matches: &ArgMatches) -> Result<ExitCode, String> {
    match command {
        Command::Train(args) => {
            let command_line_options = matches
                .subcommand_matches("train")
                .map(train::options_given_on_command_line)
                .unwrap_or_default();
            train::run(*args, &command_line_options)
        }
        Command::Sample(args) => sample::run(args),
        Command::Harmonize(args) => apps::run_masked(args, false),
        Command::Edit(args) => apps::run_masked(args, true),
        Command::Paint2image(args) => apps::run_paint(args),
        Command::Sr(args) => apps::run_sr(args),
        Command::Animate(args) => apps::run_animate(args),
        Command::Check(command) => check::run(command),
        Command::Bench(command) => bench::run(command),
    }
}
