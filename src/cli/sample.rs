//! `singan sample`: draw new images from a trained run.

use std::ffi::OsStr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use super::output_folder::{output_folder, prepare_output_folder};
use super::{parse_seed, resolve_device, DeviceChoice};
use singan::rng::Rng;
use singan::singan::cascade::tensor_to_planes;
use singan::singan::image_io::save_png;
use singan::singan::run::load_model;
use singan::singan::sample::{check_options, sample, SampleOptions};

#[derive(Args, Debug)]
pub struct SampleArgs {
    /// Run folder written by `singan train` (or its model.safetensors).
    pub run_dir: PathBuf,
    /// Number of images to draw.
    #[arg(long, default_value_t = 1)]
    pub num_samples: usize,
    /// Height of the samples as a factor of the trained height (not a pixel count).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub scale_h: f64,
    /// Width of the samples as a factor of the trained width (not a pixel count).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub scale_w: f64,
    /// First scale that draws fresh noise; above 0 it starts from the upsampled real image of
    /// the scale below, which keeps the training image's layout.
    #[arg(long, default_value_t = 0)]
    pub start_scale: usize,
    /// Output folder (default: RUN_DIR/samples).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random seed of the samples.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

pub fn run(args: SampleArgs) -> Result<ExitCode, String> {
    if args.num_samples == 0 {
        return Err("--num-samples must be at least 1".to_string());
    }
    let device = resolve_device(args.device)?;
    let mut model = load_model::<f32>(&args.run_dir).map_err(|e| e.to_string())?;
    model.to_device(&device).map_err(|e| e.to_string())?;
    if !model.is_complete() {
        eprintln!(
            "note: training of this run did not finish; sampling from its {} trained scales of {} (size {}x{})",
            model.generators.len(),
            model.info.pyramid.sizes.len(),
            model.info.pyramid.sizes[model.generators.len().saturating_sub(1)].0,
            model.info.pyramid.sizes[model.generators.len().saturating_sub(1)].1,
        );
    }
    let options = SampleOptions {
        scale_h: args.scale_h,
        scale_w: args.scale_w,
        start_scale: args.start_scale,
    };
    // The options are checked before the output folder is created, so a rejected option leaves
    // no empty folder behind.
    check_options(&model, &options).map_err(|e| e.to_string())?;
    let out = output_folder(args.out.as_deref(), &args.run_dir, "samples");
    prepare_output_folder(&out, &|name| is_sample_file_name(name, args.num_samples))?;

    // Ctrl-C stops between two images, so no image file is left half-written and no temporary
    // file is left behind.
    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping after the current image");
    });

    let mut rng = Rng::new(args.seed);
    for index in 0..args.num_samples {
        if stop.load(Ordering::SeqCst) {
            eprintln!(
                "interrupted: {index} of {} samples written to {}",
                args.num_samples,
                out.display()
            );
            return Ok(ExitCode::from(130));
        }
        let image = sample(&mut model, &options, &mut rng).map_err(|e| e.to_string())?;
        let planes = tensor_to_planes(&image).map_err(|e| e.to_string())?;
        let path = out.join(sample_file_name(index));
        save_png(&path, &planes).map_err(|e| e.to_string())?;
        println!("{} ({}x{})", path.display(), planes.height, planes.width);
    }
    Ok(ExitCode::SUCCESS)
}

fn sample_file_name(index: usize) -> String {
    format!("sample_{index:03}.png")
}

/// Returns true when `name` is the file name of one of the first `num_samples` samples.
fn is_sample_file_name(name: &OsStr, num_samples: usize) -> bool {
    let index = name.to_str().and_then(|name| {
        let digits = name.strip_prefix("sample_")?.strip_suffix(".png")?;
        digits.parse::<usize>().ok()
    });
    // The comparison rejects other spellings of the index, such as 0001 or +1.
    index.is_some_and(|index| index < num_samples && name == sample_file_name(index).as_str())
}

#[cfg(test)]
mod tests {
    use super::is_sample_file_name;
    use std::ffi::OsStr;

    #[test]
    fn sample_file_names_recognised() {
        for (name, expected) in [
            ("sample_000.png", true),
            ("sample_002.png", true),
            ("sample_003.png", false),
            ("sample_0001.png", false),
            ("sample_+01.png", false),
            ("sample_001.jpg", false),
            ("samples", false),
        ] {
            assert_eq!(is_sample_file_name(OsStr::new(name), 3), expected, "{name}");
        }
        assert!(is_sample_file_name(OsStr::new("sample_1234.png"), 1235));
    }
}
