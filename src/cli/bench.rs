//! `singan bench iteration`: time one training iteration per scale.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::train::PyramidArgs;
use super::{resolve_device, DeviceChoice};
use singan::singan::bench::time_iterations;
use singan::singan::config::TrainConfig;
use singan::singan::image_io::{load_image, AlphaBackground};
use singan::singan::pyramid::Pyramid;
use singan::singan::sample_image::sample_image;

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Time one training iteration (critic step with gradient penalty, then generator step) at
    /// each scale of an image's pyramid, with fresh networks, after one warm-up iteration.
    Iteration(IterationArgs),
}

#[derive(Args, Debug)]
pub struct IterationArgs {
    /// Image whose pyramid gives the sizes (default: the built-in sample image).
    pub image: Option<PathBuf>,
    /// Scales to time, as a comma-separated list such as 0,1,9 (default: all).
    #[arg(long, value_delimiter = ',', value_parser = parse_scale, allow_negative_numbers = true)]
    pub scales: Option<Vec<usize>>,
    /// Timed iterations per scale, from 1 to 1000000, after one warm-up iteration.
    #[arg(long, default_value_t = 5, value_parser = parse_steps, allow_negative_numbers = true)]
    pub steps: usize,
    #[command(flatten)]
    pub pyramid: PyramidArgs,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Most timed iterations per scale that `--steps` takes: a million, far more than any
/// benchmark needs, whose times (8 bytes each) must all be kept for the median.
const MAX_STEPS: usize = 1_000_000;

/// Parses one entry of `--scales`: a scale number, 0 or more.
fn parse_scale(text: &str) -> Result<usize, String> {
    let text = text.trim();
    match text.parse::<i64>() {
        Ok(scale) if scale < 0 => Err(format!(
            "scale {scale} does not exist; scales are numbered from 0 (coarsest)"
        )),
        Ok(scale) => usize::try_from(scale).map_err(|_| format!("scale {scale} is too large")),
        Err(_) => Err(format!(
            "{text:?} is not a scale number; give a comma-separated list such as 0,1,9"
        )),
    }
}

/// Parses `--steps`: a count from 1 to [`MAX_STEPS`].
fn parse_steps(text: &str) -> Result<usize, String> {
    match text.trim().parse::<i128>() {
        Ok(steps) if (1..=MAX_STEPS as i128).contains(&steps) => Ok(steps as usize),
        Ok(steps) => Err(format!("{steps} must be from 1 to {MAX_STEPS}")),
        Err(_) => Err(format!("{text:?} is not a whole number of iterations")),
    }
}

pub fn run(command: BenchCommand) -> Result<ExitCode, String> {
    let BenchCommand::Iteration(args) = command;
    let config = TrainConfig {
        min_size: args.pyramid.min_size,
        max_size: args.pyramid.max_size,
        scale_factor_init: args.pyramid.scale_factor_init,
        ..TrainConfig::default()
    };
    config.validate()?;
    let device = resolve_device(args.device)?;
    let image = match &args.image {
        Some(path) => load_image(path, AlphaBackground::White).map_err(|e| e.to_string())?,
        None => sample_image(),
    };
    let pyramid = Pyramid::new((image.height, image.width), &config.pyramid_config())
        .map_err(|e| e.to_string())?;
    super::warn_if_scale_repeats(&pyramid);
    let mut scales = args
        .scales
        .clone()
        .unwrap_or_else(|| (0..pyramid.sizes.len()).collect());
    // Each scale is timed once, in increasing order, however the list was written.
    scales.sort_unstable();
    scales.dedup();
    if let Some(&bad) = scales.iter().find(|&&k| k >= pyramid.sizes.len()) {
        return Err(format!(
            "--scales: scale {bad} does not exist; this pyramid has scales 0 to {}",
            pyramid.sizes.len() - 1
        ));
    }
    println!("threads: {}", rayon::current_num_threads());
    println!(
        "{:<6} {:>9} {:>6} {:>10} {:>10} {:>8} {:>8}",
        "scale", "size", "width", "median ms", "min ms", "GFLOP", "GFLOP/s"
    );
    let timings = time_iterations(&config, &pyramid.sizes, &scales, args.steps, &device)
        .map_err(|e| e.to_string())?;
    for t in timings {
        println!(
            "{:<6} {:>9} {:>6} {:>10.1} {:>10.1} {:>8.2} {:>8.1}",
            t.scale,
            format!("{}x{}", t.size.0, t.size.1),
            t.width,
            t.median_ms,
            t.min_ms,
            t.gflop,
            t.gflop / (t.median_ms / 1e3)
        );
    }
    if let singan::Device::Cuda(ordinal) = device {
        let stats = singan::cuda::CudaDevice::shared(ordinal)
            .map_err(|e| e.to_string())?
            .pool_stats();
        println!(
            "GPU buffer pool: {:.1} MiB in use, {:.1} MiB in {} free blocks; {} driver allocations, {} reuses",
            stats.in_use_bytes as f64 / (1 << 20) as f64,
            stats.pooled_bytes as f64 / (1 << 20) as f64,
            stats.pooled_blocks,
            stats.fresh_allocations,
            stats.reuses
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{IterationArgs, MAX_STEPS};
    use clap::Args;

    #[test]
    fn steps_help_states_range() {
        let command = IterationArgs::augment_args(clap::Command::new("iteration"));
        let steps = command
            .get_arguments()
            .find(|arg| arg.get_id() == "steps")
            .expect("--steps is an option of bench iteration");
        let help = steps.get_help().expect("--steps has help text").to_string();
        assert!(help.contains(&format!("from 1 to {MAX_STEPS}")), "{help}");
    }
}
