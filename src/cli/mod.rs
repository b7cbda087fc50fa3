//! Command-line parsing and dispatch.

mod apps;
mod bench;
mod check;
mod sample;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

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

/// Which backend runs the ops.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DeviceChoice {
    /// The GPU when one works, otherwise the CPU.
    Auto,
    /// The rayon CPU backend.
    Cpu,
    /// An NVIDIA GPU through CUDA.
    Cuda,
}

/// Resolves `--device` to a backend, printing which one runs.
pub fn resolve_device(choice: DeviceChoice) -> Result<singan::Device, String> {
    match choice {
        DeviceChoice::Cpu => Ok(singan::Device::Cpu),
        DeviceChoice::Auto => {
            eprintln!("device: cpu (this build runs ops on the CPU backend)");
            Ok(singan::Device::Cpu)
        }
        DeviceChoice::Cuda => Err(
            "--device cuda: this build's ops run on the CPU backend only; use --device cpu"
                .to_string(),
        ),
    }
}

/// Parses the arguments, runs the command and maps its outcome to an exit status.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Train(args) => train::run(*args),
        Command::Sample(args) => sample::run(args),
        Command::Harmonize(args) => apps::run_masked(args, false),
        Command::Edit(args) => apps::run_masked(args, true),
        Command::Paint2image(args) => apps::run_paint(args),
        Command::Sr(args) => apps::run_sr(args),
        Command::Animate(args) => apps::run_animate(args),
        Command::Check(command) => check::run(command),
        Command::Bench(command) => bench::run(command),
    };
    match outcome {
        Ok(code) => code,
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}
