//! The application commands: `harmonize`, `edit`, `paint2image`, `sr` and `animate`.
//!
//! Each command resolves `--device` as the other commands do and runs the model's generators on
//! the device it picks. Image loading, resizing of the inputs and output, and the masks stay
//! on the host.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::Args;

use super::output_folder::{check_output_folder, output_folder, prepare_output_folder, run_folder};
use super::run_folder::{check_new_run_name, create_run_folder};
use super::train::{now_seconds, report_interrupt, timestamp, ConsoleReporter};
use super::{parse_seed, resolve_device, DeviceChoice};
use singan::rng::Rng;
use singan::singan::apps::animate::{animate, check_fps, encode_gif, AnimationOptions};
use singan::singan::apps::inject::{
    blend, fit_to_size, inject, run_from_scale, training_size_text,
};
use singan::singan::apps::quantize::{quantized_input, retrain_scale, Palette, PAINT_CLUSTERS};
use singan::singan::apps::super_resolution::{
    sr_setting_differences, super_resolve, SrPlan, SR_MIN_SIZE, SR_RECONSTRUCTION_WEIGHT,
};
use singan::singan::apps::{check_start_scale, finest_scale};
use singan::singan::config::TrainConfig;
use singan::singan::image_io::{
    load_image, prepare_mask, save_png, write_atomic, AlphaBackground, MaskOptions,
};
use singan::singan::imresize::Planes;
use singan::singan::pyramid::Pyramid;
use singan::singan::run::{load_model, Model};
use singan::singan::shell::quote_path;
use singan::singan::train::{train, TrainJob};
use singan::Device;

/// Options of `harmonize` and `edit`.
#[derive(Args, Debug)]
pub struct MaskedArgs {
    /// Run folder written by `singan train` (or its model.safetensors).
    pub run_dir: PathBuf,
    /// Reference image (PNG or JPEG): the training image with an object pasted in (harmonize)
    /// or with a region changed (edit). Another size with the same aspect ratio is resized to
    /// the training size.
    #[arg(long = "ref", value_name = "IMAGE")]
    pub reference: PathBuf,
    /// Mask image (PNG or JPEG), resized like the reference: pixels whose red channel is above
    /// 0 mark the region to redraw. It is dilated with a disk (radius 7 pixels for harmonize,
    /// 20 for edit), blurred with a Gaussian of sigma 5 pixels and scaled to [0, 1], giving m.
    /// The written blend is (1 - m) * reference + m * output, so pixels where m is 0 keep the
    /// reference's values.
    #[arg(long, value_name = "IMAGE")]
    pub mask: PathBuf,
    /// Scale at which the reference is injected, from 1 to N (the finest scale). Lower values
    /// redraw more of the reference.
    #[arg(long)]
    pub start_scale: usize,
    /// Output folder (default: RUN_DIR/harmonize or RUN_DIR/edit).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random seed of the noise.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Options of `paint2image`.
#[derive(Args, Debug)]
pub struct PaintArgs {
    /// Run folder written by `singan train` (or its model.safetensors).
    pub run_dir: PathBuf,
    /// Painting (PNG or JPEG): flat colour regions laid out like the scene to create. Another
    /// size with the training image's aspect ratio is resized to the training size.
    #[arg(long = "ref", value_name = "IMAGE")]
    pub reference: PathBuf,
    /// Scale at which the painting is injected, from 1 to N (the finest scale). Lower values
    /// redraw more of the painting.
    #[arg(long)]
    pub start_scale: usize,
    /// Map the painting to a palette of 5 colours of the real image at the start scale
    /// (k-means) and retrain the start scale's generator on palette-mapped inputs first.
    #[arg(long)]
    pub quantize: bool,
    /// Last iteration index of the retraining with --quantize; iterations 0 to this value run
    /// (default: the run's own --num-steps).
    #[arg(long, requires = "quantize")]
    pub num_steps: Option<usize>,
    /// Output folder (default: RUN_DIR/paint2image).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random seed of the noise, the k-means seeding and the retraining.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Options of `sr`.
#[derive(Args, Debug)]
pub struct SrArgs {
    /// A run folder (or its model.safetensors): upscale its training image. An image file (PNG
    /// or JPEG): train a new run on it with the super-resolution settings, then upscale it.
    #[arg(value_name = "RUN_DIR|IMAGE")]
    pub input: PathBuf,
    /// Upscaling factor of each side, greater than 1. The output is floor(F*H) x floor(F*W).
    #[arg(long, default_value_t = 4.0, allow_negative_numbers = true)]
    pub factor: f64,
    /// Output folder (default: RUN_DIR/sr).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random seed of the training and of the noise.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
    #[command(flatten)]
    pub training: SrTrainingArgs,
}

/// Training options of `sr`, used only when its input is an image.
#[derive(Args, Debug)]
#[command(next_help_heading = "Training (only when the input is an image)")]
pub struct SrTrainingArgs {
    /// Last iteration index per scale; iterations 0 to this value run [default: 4000].
    #[arg(long)]
    pub num_steps: Option<usize>,
    /// Shorter side of the coarsest scale, in pixels [default: 18].
    #[arg(long)]
    pub min_size: Option<usize>,
    /// Longer side of the finest scale, in pixels; larger images are resized down first, and
    /// the upscaling starts from that size [default: 250].
    #[arg(long)]
    pub max_size: Option<usize>,
    /// Weight of the reconstruction MSE in the generator loss [default: 100].
    #[arg(long)]
    pub reconstruction_weight: Option<f64>,
    /// Feature count of the first layer at the coarsest scales (doubled every 4 scales, at
    /// most 128) [default: 32].
    #[arg(long)]
    pub max_features: Option<usize>,
    /// Lower bound on hidden feature counts at the coarsest scales [default: 32].
    #[arg(long)]
    pub min_features: Option<usize>,
    /// Folder that the new run folder is created in [default: results].
    #[arg(long)]
    pub results_dir: Option<PathBuf>,
    /// Name of the new run folder, which must not exist yet [default: the UTC start time,
    /// YYYY-MM-DD_HH-MM-SS, with -2, -3 and so on appended when a folder of that name exists].
    #[arg(long)]
    pub save: Option<String>,
}

impl SrTrainingArgs {
    /// Names of the options that were given, for rejecting them with a run folder.
    fn given(&self) -> Vec<&'static str> {
        let flags = [
            ("--num-steps", self.num_steps.is_some()),
            ("--min-size", self.min_size.is_some()),
            ("--max-size", self.max_size.is_some()),
            (
                "--reconstruction-weight",
                self.reconstruction_weight.is_some(),
            ),
            ("--max-features", self.max_features.is_some()),
            ("--min-features", self.min_features.is_some()),
            ("--results-dir", self.results_dir.is_some()),
            ("--save", self.save.is_some()),
        ];
        flags
            .iter()
            .filter(|(_, given)| *given)
            .map(|(name, _)| *name)
            .collect()
    }
}

/// Options of `animate`.
#[derive(Args, Debug)]
pub struct AnimateArgs {
    /// Run folder written by `singan train` (or its model.safetensors).
    pub run_dir: PathBuf,
    /// First scale whose noise moves, from 0 to N; coarser scales keep the reconstruction noise,
    /// so a higher value keeps more of the training image's layout still.
    #[arg(long, default_value_t = 0)]
    pub start_scale: usize,
    /// Number of frames of the GIF.
    #[arg(long, default_value_t = 100)]
    pub frames: usize,
    /// Pull of every step back towards the reconstruction noise, from 0 to 1.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub alpha: f64,
    /// Momentum of the walk (weight of its previous step), from 0 to 1; higher values move
    /// more smoothly.
    #[arg(long, default_value_t = 0.9, allow_negative_numbers = true)]
    pub beta: f64,
    /// Frames per second of the GIF, from 1 to 50.
    #[arg(long, default_value_t = 10)]
    pub fps: u32,
    /// Output folder (default: RUN_DIR/animate).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Random seed of the walk.
    #[arg(long, default_value_t = 0, value_parser = parse_seed, allow_negative_numbers = true)]
    pub seed: u64,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Prepares the output folder, `out` or else `RUN_DIR/<command>`, for the files named in
/// `file_names` (see [`prepare_output_folder`]) and returns its path.
fn ready_output_folder(
    out: &Option<PathBuf>,
    run: &Path,
    command: &str,
    file_names: &[&str],
) -> Result<PathBuf, String> {
    let folder = output_folder(out.as_deref(), run, command);
    prepare_output_folder(&folder, &|name| file_names.iter().any(|file| name == *file))?;
    Ok(folder)
}

/// Loads a complete model onto `device`, naming the fix when its training did not finish.
fn load_complete(
    run: &Path,
    command: &'static str,
    device: &Device,
) -> Result<(Model<f32>, usize), String> {
    let mut model = load_model::<f32>(run).map_err(|e| e.to_string())?;
    let last = finest_scale(&model, command).map_err(|e| {
        // A model file in the current folder has the empty path as its run folder.
        let folder = run_folder(run);
        let folder = if folder.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            folder
        };
        e.to_string().replace("<run folder>", &quote_path(folder))
    })?;
    model.to_device(device).map_err(|e| e.to_string())?;
    Ok((model, last))
}

/// Loads an image and brings it to the training size, printing a note when it is resized.
fn load_fitted(
    command: &'static str,
    model: &Model<f32>,
    path: &Path,
    label: &str,
    background: AlphaBackground,
) -> Result<Planes<f32>, String> {
    let image = load_image(path, background).map_err(|e| format!("{label}: {e}"))?;
    let target = *model.info.pyramid.sizes.last().expect("a model has scales");
    let name = format!("{label} {}", path.display());
    let fitted = fit_to_size(command, image, target, &name, &training_size_text(model))
        .map_err(|e| e.to_string())?;
    if let Some((h, w)) = fitted.resized_from {
        eprintln!(
            "note: {name} is {h}x{w}; resized to {}x{}, the size of the finest scale",
            target.0, target.1
        );
    }
    Ok(fitted.planes)
}

fn save(path: &Path, image: &Planes<f32>) -> Result<(), String> {
    save_png(path, image).map_err(|e| e.to_string())?;
    println!("{} ({}x{})", path.display(), image.height, image.width);
    Ok(())
}

/// Runs `harmonize` (`editing == false`) or `edit`.
pub fn run_masked(args: MaskedArgs, editing: bool) -> Result<ExitCode, String> {
    let command = if editing { "edit" } else { "harmonize" };
    let device = resolve_device(args.device)?;
    let (mut model, last) = load_complete(&args.run_dir, command, &device)?;
    check_start_scale(command, args.start_scale, 1, last).map_err(|e| e.to_string())?;
    let reference = load_fitted(
        command,
        &model,
        &args.reference,
        "reference",
        AlphaBackground::White,
    )?;
    let mask_image = load_fitted(command, &model, &args.mask, "mask", AlphaBackground::Black)?;
    let options = if editing {
        MaskOptions::EDITING
    } else {
        MaskOptions::HARMONIZATION
    };
    let mask = prepare_mask(
        &mask_image,
        &options,
        &format!("mask file {}", args.mask.display()),
    )
    .map_err(|e| e.to_string())?;
    let stem = format!("start_scale={}", args.start_scale);
    let image_name = format!("{stem}.png");
    let masked_name = format!("{stem}_masked.png");
    let file_names: &[&str] = if editing {
        &[&image_name, &masked_name]
    } else {
        &[&image_name]
    };
    let out = ready_output_folder(&args.out, &args.run_dir, command, file_names)?;

    let mut rng = Rng::new(args.seed);
    let output = inject(&mut model, &reference, args.start_scale, &mut rng, command)
        .map_err(|e| e.to_string())?;
    let blended = blend(&reference, &output, &mask).map_err(|e| e.to_string())?;
    if editing {
        save(&out.join(&image_name), &output)?;
        save(&out.join(&masked_name), &blended)?;
    } else {
        save(&out.join(&image_name), &blended)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `paint2image`.
pub fn run_paint(args: PaintArgs) -> Result<ExitCode, String> {
    let device = resolve_device(args.device)?;
    let command = "paint2image";
    let (mut model, last) = load_complete(&args.run_dir, command, &device)?;
    let start = args.start_scale;
    check_start_scale(command, start, 1, last).map_err(|e| e.to_string())?;
    let painting = load_fitted(
        command,
        &model,
        &args.reference,
        "painting",
        AlphaBackground::White,
    )?;
    let stem = format!("start_scale={start}");
    let plain_name = format!("{stem}.png");
    let painting_name = format!("{stem}_painting_quantized.png");
    let quantized_name = format!("{stem}_quantized.png");
    let file_names: &[&str] = if args.quantize {
        &[&painting_name, &quantized_name]
    } else {
        &[&plain_name]
    };
    let out = ready_output_folder(&args.out, &args.run_dir, command, file_names)?;
    let mut rng = Rng::new(args.seed);

    if !args.quantize {
        let output =
            inject(&mut model, &painting, start, &mut rng, command).map_err(|e| e.to_string())?;
        return save(&out.join(&plain_name), &output).map(|_| ExitCode::SUCCESS);
    }

    let palette = Palette::kmeans(
        &singan::singan::cascade::tensor_to_planes(&model.reals[start])
            .map_err(|e| e.to_string())?,
        PAINT_CLUSTERS,
        args.seed,
    )
    .map_err(|e| e.to_string())?;
    let quantized = palette.quantize(&painting).map_err(|e| e.to_string())?;
    save(&out.join(&painting_name), &quantized)?;

    let num_steps = args.num_steps.unwrap_or(model.info.config.num_steps);
    let print_every = model.info.config.print_every.max(1);
    eprintln!(
        "retraining scale {start} ({}x{}) on a {}-colour palette for {} iterations",
        model.info.pyramid.sizes[start].0,
        model.info.pyramid.sizes[start].1,
        palette.centres.len(),
        num_steps + 1
    );
    let amplitude = retrain_scale(
        &mut model,
        start,
        &palette,
        num_steps,
        &mut rng,
        &mut |progress| {
            let t = progress.iteration;
            if t % print_every == 0 || t == progress.num_steps {
                let generator = progress
                    .generator
                    .map(|g| format!(", G: {:.5}, G_recon: {:.5}", g.generator, g.reconstruction))
                    .unwrap_or_default();
                eprintln!(
                    "retraining scale {start}: iteration {t}/{}, D: {:.6}{generator}",
                    progress.num_steps, progress.critic.critic
                );
            }
        },
    )
    .map_err(|e| e.to_string())?;
    eprintln!("retrained scale {start}: noise amplitude {amplitude:.4}");
    let prev = quantized_input(&model, &painting, &palette, start).map_err(|e| e.to_string())?;
    let output = run_from_scale(&mut model, start, prev, &mut rng).map_err(|e| e.to_string())?;
    save(&out.join(&quantized_name), &output)?;
    Ok(ExitCode::SUCCESS)
}

/// Returns the `singan sr` command that upscales with the run `run_dir` as `args` asked:
/// the same factor and seed, and the same output folder when one was given.
fn sr_command(run_dir: &Path, args: &SrArgs) -> String {
    let mut command = format!("singan sr {} --factor {}", quote_path(run_dir), args.factor);
    if args.seed != 0 {
        command.push_str(&format!(" --seed {}", args.seed));
    }
    if let Some(out) = &args.out {
        command.push_str(&format!(" --out {}", quote_path(out)));
    }
    command
}

/// Trains a new run on `image` with the super-resolution settings for `plan`.
fn train_for_sr(
    image_path: &Path,
    plan: &SrPlan,
    args: &SrArgs,
    device: &Device,
) -> Result<Option<(Model<f32>, PathBuf)>, String> {
    let options = &args.training;
    let results_dir = options
        .results_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("results"));
    let trained_hint =
        |run_dir: &Path| format!("upscale with that run: {}", sr_command(run_dir, args));
    if let Some(name) = &options.save {
        check_new_run_name(&results_dir, name, &trained_hint)?;
    }
    let config = TrainConfig {
        num_steps: options.num_steps.unwrap_or(4000),
        min_size: options.min_size.unwrap_or(SR_MIN_SIZE),
        max_size: options.max_size.unwrap_or(250),
        reconstruction_weight: options
            .reconstruction_weight
            .unwrap_or(SR_RECONSTRUCTION_WEIGHT),
        max_features: options.max_features.unwrap_or(32),
        min_features: options.min_features.unwrap_or(32),
        scale_factor_init: plan.scale_factor_init(),
        seed: args.seed,
        ..TrainConfig::default()
    };
    config.validate()?;
    let image = load_image(image_path, AlphaBackground::White).map_err(|e| e.to_string())?;
    let pyramid = Pyramid::new((image.height, image.width), &config.pyramid_config())
        .map_err(|e| format!("{}: {e}", image_path.display()))?;
    // Checks the output size before the training, which takes far longer than the check.
    plan.checked_output_size(pyramid.resized_size)
        .map_err(|e| e.to_string())?;
    eprintln!(
        "training for super-resolution by {} ({} steps of {:.4}): scale factor {:.4}, min size \
         {}, reconstruction weight {}",
        plan.factor,
        plan.steps,
        plan.step_factor,
        config.scale_factor_init,
        config.min_size,
        config.reconstruction_weight
    );
    let run_dir = create_run_folder(
        &results_dir,
        options.save.as_deref(),
        &timestamp(now_seconds()),
        &trained_hint,
    )?;
    eprintln!("run folder: {}", run_dir.display());
    let job = TrainJob {
        config,
        image,
        image_name: Some(image_path.display().to_string()),
        run_dir: run_dir.clone(),
        device: *device,
    };

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping after the current iteration; finished scales are kept");
    });
    let mut reporter = ConsoleReporter { bar: None };
    match train(&job, false, &mut reporter, &stop) {
        Ok((model, _)) => Ok(Some((model, run_dir))),
        Err(singan::Error::Interrupted { finished, run_dir }) => {
            let then = format!(", then run `{}`", sr_command(Path::new(&run_dir), args));
            report_interrupt(finished, &run_dir, &then);
            Ok(None)
        }
        Err(error) => Err(error.to_string()),
    }
}

/// Runs `sr`.
pub fn run_sr(args: SrArgs) -> Result<ExitCode, String> {
    let plan = SrPlan::new(args.factor).map_err(|e| e.to_string())?;
    let file_name = format!("factor={}.png", plan.factor);
    let input = &args.input;
    if !input.exists() {
        return Err(format!(
            "{} not found; pass a run folder from `singan train` or an image file",
            input.display()
        ));
    }
    let is_model_file = input.extension().is_some_and(|e| e == "safetensors");
    let device = resolve_device(args.device)?;
    let (mut model, run_dir) = if input.is_dir() || is_model_file {
        let given = args.training.given();
        if !given.is_empty() {
            return Err(format!(
                "the training options apply only when the input is an image, not a run folder \
                 (given: {}); drop them, or pass the image to train a new run",
                given.join(", ")
            ));
        }
        let (model, last) = load_complete(input, "sr", &device)?;
        plan.checked_output_size(model.info.pyramid.sizes[last])
            .map_err(|e| e.to_string())?;
        let differences = sr_setting_differences(&model.info.config, &plan);
        if !differences.is_empty() {
            eprintln!(
                "note: this run was not trained with the super-resolution settings for factor {} \
                 ({}); the result may be blurrier",
                plan.factor,
                differences.join(", ")
            );
        }
        (model, run_folder(input))
    } else {
        // An explicit output folder is checked before the training, which takes minutes. It is
        // created only afterwards, so an interrupted training leaves no empty folder.
        if let Some(out) = &args.out {
            check_output_folder(out, &|name| name == file_name.as_str())?;
        }
        match train_for_sr(input, &plan, &args, &device)? {
            Some(trained) => trained,
            None => return Ok(ExitCode::from(130)),
        }
    };

    let out = ready_output_folder(&args.out, &run_dir, "sr", &[&file_name])?;
    let mut rng = Rng::new(args.seed);
    let output = super_resolve(&mut model, &plan, &mut rng, &mut |step, (h, w)| {
        eprintln!("step {step}/{}: refining {h}x{w}", plan.steps)
    })
    .map_err(|e| e.to_string())?;
    save(&out.join(&file_name), &output)?;
    Ok(ExitCode::SUCCESS)
}

/// Maximum memory that the frames of one animation may take. Every frame is kept, as three f32
/// planes, until the GIF is encoded at the end.
const MAX_FRAME_BYTES: usize = 4 << 30;

/// Rejects a frame count whose frames of `size` would not fit [`MAX_FRAME_BYTES`].
fn check_frame_memory(frames: usize, (height, width): (usize, usize)) -> Result<(), String> {
    let frame_bytes = 3 * height * width * std::mem::size_of::<f32>();
    let max_frames = MAX_FRAME_BYTES / frame_bytes.max(1);
    if frames > max_frames {
        return Err(format!(
            "--frames {frames}: frames of {height}x{width} are kept in memory until the GIF is \
             written, and {frames} of them would take {:.1} GB; use at most {max_frames} frames",
            frames as f64 * frame_bytes as f64 / 1e9
        ));
    }
    Ok(())
}

/// Runs `animate`.
pub fn run_animate(args: AnimateArgs) -> Result<ExitCode, String> {
    let options = AnimationOptions {
        start_scale: args.start_scale,
        frames: args.frames,
        alpha: args.alpha,
        beta: args.beta,
    };
    options.validate().map_err(|e| e.to_string())?;
    check_fps(args.fps).map_err(|e| e.to_string())?;
    let device = resolve_device(args.device)?;
    let (mut model, last) = load_complete(&args.run_dir, "animate", &device)?;
    check_start_scale("animate", args.start_scale, 0, last).map_err(|e| e.to_string())?;
    check_frame_memory(args.frames, model.info.pyramid.sizes[last])?;
    let parent = output_folder(args.out.as_deref(), &args.run_dir, "animate");
    let subfolder = format!("start_scale={}", args.start_scale);
    let out = parent.join(&subfolder);
    let file_name = format!("alpha={}_beta={}.gif", args.alpha, args.beta);
    prepare_output_folder(&out, &|name| name == file_name.as_str()).map_err(|error| {
        format!(
            "{error} (animate writes {file_name} into the {subfolder} subfolder of {})",
            parent.display()
        )
    })?;

    let mut rng = Rng::new(args.seed);
    let frames = animate(&mut model, &options, &mut rng, &mut |index| {
        if (index + 1) % 10 == 0 || index + 1 == args.frames {
            eprintln!("frame {}/{}", index + 1, args.frames);
        }
    })
    .map_err(|e| e.to_string())?;
    let bytes = encode_gif(&frames, args.fps).map_err(|e| e.to_string())?;
    let path = out.join(&file_name);
    write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    println!(
        "{} ({} frames of {}x{}, {} fps)",
        path.display(),
        frames.len(),
        frames[0].height,
        frames[0].width,
        args.fps
    );
    Ok(ExitCode::SUCCESS)
}
