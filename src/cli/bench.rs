//! `singan bench iteration`: time one training iteration per scale.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

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
    #[arg(long, value_delimiter = ',')]
    pub scales: Option<Vec<usize>>,
    /// Timed iterations per scale.
    #[arg(long, default_value_t = 5)]
    pub steps: usize,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

pub fn run(command: BenchCommand) -> Result<ExitCode, String> {
    let BenchCommand::Iteration(args) = command;
    if args.steps == 0 {
        return Err("--steps must be at least 1".to_string());
    }
    let device = resolve_device(args.device)?;
    let image = match &args.image {
        Some(path) => load_image(path, AlphaBackground::White).map_err(|e| e.to_string())?,
        None => sample_image(),
    };
    let config = TrainConfig::default();
    let pyramid = Pyramid::new((image.height, image.width), &config.pyramid_config())
        .map_err(|e| e.to_string())?;
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
