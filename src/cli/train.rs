//! `singan train`: learn a model from one image, coarse scale to fine.

use std::collections::hash_map::RandomState;
use std::collections::BTreeMap;
use std::hash::BuildHasher;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};

use super::run_folder::{check_new_run_name, create_run_folder};
use super::{resolve_device, DeviceChoice};
use singan::singan::config::TrainConfig;
use singan::singan::image_io::{load_image, AlphaBackground};
use singan::singan::pyramid::PyramidRule;
use singan::singan::run::{
    image_passed_as_run, no_finished_scale_error, stopped_before_first_scale, MODEL_FILE,
};
use singan::singan::sample_image::sample_image;
use singan::singan::shell::quote_path;
use singan::singan::step::LossKind;
use singan::singan::train::{train, Reporter, TrainJob};

/// The adversarial loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossChoice {
    /// Wasserstein loss with gradient penalty.
    Wgan,
    /// Binary cross-entropy with the non-saturating generator loss.
    Bce,
}

/// Background that transparent pixels are composited on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum BackgroundChoice {
    White,
    Black,
}

/// The options that set an image's pyramid, shared by `train` and `bench iteration`.
#[derive(Args, Debug)]
pub struct PyramidArgs {
    /// Shorter side of the coarsest scale, in pixels.
    #[arg(long, default_value_t = 25)]
    pub min_size: usize,
    /// Longer side of the finest scale, in pixels; larger images are resized down.
    #[arg(long, default_value_t = 250)]
    pub max_size: usize,
    /// Initial per-scale resize factor, strictly between 0 and 1, from which the number of
    /// scales follows.
    #[arg(
        long,
        default_value_t = 0.75,
        value_parser = parse_scale_factor_init,
        allow_negative_numbers = true
    )]
    pub scale_factor_init: f64,
}

/// Parses `--scale-factor-init`: a factor strictly between 0 and 1.
fn parse_scale_factor_init(text: &str) -> Result<f64, String> {
    let factor = text
        .trim()
        .parse::<f64>()
        .map_err(|_| format!("{text:?} is not a number; pass a factor such as 0.75"))?;
    if factor > 0.0 && factor < 1.0 {
        Ok(factor)
    } else {
        Err(format!(
            "{factor} must be strictly between 0 and 1, such as 0.75"
        ))
    }
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    /// Training image (PNG or JPEG). Without it, a built-in sample image drawn by code is used.
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub pyramid: PyramidArgs,
    /// Noise amplitude per scale, relative to the RMSE of the coarser scales' reconstruction.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub noise_weight: f64,
    /// Last iteration index per scale; iterations 0 to this value run.
    #[arg(long, default_value_t = 4000)]
    pub num_steps: usize,
    /// Adam learning rate of both networks.
    #[arg(long, default_value_t = 5e-4, allow_negative_numbers = true)]
    pub lr: f64,
    /// Adam betas of the generator, as B1,B2.
    #[arg(
        long,
        value_name = "B1,B2",
        num_args = 1,
        value_delimiter = ',',
        default_value = "0.5,0.9",
        allow_negative_numbers = true
    )]
    pub gen_betas: Vec<f64>,
    /// Adam betas of the discriminator, as B1,B2.
    #[arg(
        long,
        value_name = "B1,B2",
        num_args = 1,
        value_delimiter = ',',
        default_value = "0.5,0.9",
        allow_negative_numbers = true
    )]
    pub dis_betas: Vec<f64>,
    /// Discriminator steps per generator step.
    #[arg(long, default_value_t = 1)]
    pub num_critic: usize,
    /// Iterations between learning-rate drops.
    #[arg(long, default_value_t = 2000)]
    pub step_size: usize,
    /// Factor applied to the learning rate at each drop.
    #[arg(long, default_value_t = 0.1, allow_negative_numbers = true)]
    pub gamma: f64,
    /// Weight of the gradient penalty (default 0.1 with --loss wgan, 0 with --loss bce).
    #[arg(long, allow_negative_numbers = true)]
    pub penalty_weight: Option<f64>,
    /// Weight of the reconstruction MSE in the generator loss.
    #[arg(long, default_value_t = 10.0, allow_negative_numbers = true)]
    pub reconstruction_weight: f64,
    /// Weight of the adversarial term in the generator loss.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub adversarial_weight: f64,
    /// Lower bound on hidden feature counts at the coarsest scales (doubled every 4 scales, at most 128).
    #[arg(long, default_value_t = 32)]
    pub min_features: usize,
    /// Feature count of the first layer at the coarsest scales (doubled every 4 scales, at most 128).
    #[arg(long, default_value_t = 32)]
    pub max_features: usize,
    /// Convolutions per network, the last one included.
    #[arg(long, default_value_t = 5)]
    pub num_blocks: usize,
    /// Convolution kernel size, in pixels (odd).
    #[arg(long, default_value_t = 3)]
    pub kernel_size: usize,
    /// Zero padding of every convolution, in pixels.
    #[arg(long, default_value_t = 0)]
    pub padding: usize,
    /// Random seed; -1 picks a random seed in [0, 12345] and prints it.
    #[arg(long, default_value_t = -1, allow_negative_numbers = true)]
    pub seed: i64,
    /// Iterations between progress lines.
    #[arg(long, default_value_t = 200)]
    pub print_every: usize,
    /// Iterations between saved reconstruction and sample images.
    #[arg(long, default_value_t = 100)]
    pub eval_every: usize,
    /// Folder that run folders are created in.
    #[arg(long, default_value = "results")]
    pub results_dir: PathBuf,
    /// Name of the run folder, which must not exist yet (default: the UTC start time,
    /// YYYY-MM-DD_HH-MM-SS, with -2, -3 and so on appended when a folder of that name exists).
    #[arg(long)]
    pub save: Option<String>,
    /// Adversarial loss.
    #[arg(long, value_enum, default_value = "wgan")]
    pub loss: LossChoice,
    /// Background for transparent pixels of the training image.
    #[arg(long, value_enum, default_value = "white")]
    pub background: BackgroundChoice,
    /// Continue the run in this folder after its last finished scale, with its saved settings.
    #[arg(long, value_name = "RUN_DIR", conflicts_with = "image")]
    pub resume: Option<PathBuf>,
    /// Backend to run the ops on.
    #[arg(long, value_enum, default_value = "auto")]
    pub device: DeviceChoice,
}

/// Largest seed that `--seed -1` picks.
const MAX_RANDOM_SEED: u64 = 12_345;

/// Picks a seed in [0, MAX_RANDOM_SEED] that differs between processes, also between runs
/// started in the same second.
fn random_seed() -> u64 {
    // std documents that `RandomState::new` is initialised with random keys, so the hash of a
    // constant differs between processes.
    RandomState::new().hash_one(0u8) % (MAX_RANDOM_SEED + 1)
}

/// Formats a UTC time as YYYY-MM-DD_HH-MM-SS.
pub(super) fn timestamp(seconds_since_epoch: u64) -> String {
    let days = (seconds_since_epoch / 86_400) as i64;
    let rest = seconds_since_epoch % 86_400;
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}_{:02}-{:02}-{:02}",
        rest / 3600,
        (rest / 60) % 60,
        rest % 60
    )
}

pub(super) fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl TrainArgs {
    fn config(&self) -> Result<TrainConfig, String> {
        for (option, betas) in [
            ("--gen-betas", &self.gen_betas),
            ("--dis-betas", &self.dis_betas),
        ] {
            if betas.len() != 2 {
                return Err(format!(
                    "{option} needs two values written as B1,B2 (for example 0.5,0.9), got {}",
                    betas.len()
                ));
            }
        }
        let seed = match self.seed {
            -1 => random_seed(),
            s if s < 0 => {
                return Err(format!(
                    "--seed {s} must be -1 (random) or a non-negative integer"
                ))
            }
            s => s as u64,
        };
        let loss = match self.loss {
            LossChoice::Wgan => LossKind::Wgan,
            LossChoice::Bce => LossKind::Bce,
        };
        let default_penalty = if loss == LossKind::Wgan { 0.1 } else { 0.0 };
        let config = TrainConfig {
            min_size: self.pyramid.min_size,
            max_size: self.pyramid.max_size,
            scale_factor_init: self.pyramid.scale_factor_init,
            noise_weight: self.noise_weight,
            num_steps: self.num_steps,
            lr: self.lr,
            gen_betas: (self.gen_betas[0], self.gen_betas[1]),
            dis_betas: (self.dis_betas[0], self.dis_betas[1]),
            num_critic: self.num_critic,
            step_size: self.step_size,
            gamma: self.gamma,
            penalty_weight: self.penalty_weight.unwrap_or(default_penalty),
            reconstruction_weight: self.reconstruction_weight,
            adversarial_weight: self.adversarial_weight,
            min_features: self.min_features,
            max_features: self.max_features,
            num_blocks: self.num_blocks,
            kernel_size: self.kernel_size,
            padding: self.padding,
            seed,
            print_every: self.print_every,
            eval_every: self.eval_every,
            loss,
            pyramid_rule: PyramidRule::Spec,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Shows one progress bar per scale and prints log lines above it.
pub(super) struct ConsoleReporter {
    pub(super) bar: Option<ProgressBar>,
}

impl Reporter for ConsoleReporter {
    fn scale_started(
        &mut self,
        scale: usize,
        size: (usize, usize),
        width: usize,
        amplitude: f64,
        iterations: usize,
    ) {
        eprintln!(
            "scale {scale}: {}x{} pixels, {width} features, noise amplitude {amplitude:.4}",
            size.0, size.1
        );
        let bar = ProgressBar::new(iterations as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {pos}/{len} {elapsed_precise} eta {eta} {msg}",
            )
            .expect("progress template is valid")
            .progress_chars("=> "),
        );
        bar.set_prefix(format!("scale {scale}"));
        self.bar = Some(bar);
    }

    fn iteration(&mut self, _scale: usize, _iteration: usize, losses: &BTreeMap<String, f64>) {
        if let Some(bar) = &self.bar {
            let d = losses.get("D").copied().unwrap_or(f64::NAN);
            let g = losses
                .get("G")
                .map(|g| format!("{g:.4}"))
                .unwrap_or_else(|| "-".into());
            bar.set_message(format!("D {d:.4} G {g}"));
            bar.inc(1);
        }
    }

    fn line(&mut self, text: &str) {
        match &self.bar {
            Some(bar) if !bar.is_hidden() => bar.println(text),
            _ => eprintln!("{text}"),
        }
    }

    fn scale_finished(&mut self, scale: usize, seconds: f64) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
        eprintln!("scale {scale}: finished in {seconds:.1} s");
    }
}

/// Returns the long names (`--num-steps`) of the `train` options whose values came from the
/// command line, in declaration order. Defaults do not count, but a default value typed out does.
pub fn options_given_on_command_line(matches: &ArgMatches) -> Vec<String> {
    let command = TrainArgs::augment_args(clap::Command::new("train"));
    command
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(|long| format!("--{long}")))
        .collect()
}

/// Returns the options in `command_line_options` other than `--resume` and `--device`. A resumed
/// run ignores them because it continues with the settings saved in its model file.
fn ignored_on_resume(command_line_options: &[String]) -> Vec<&str> {
    command_line_options
        .iter()
        .map(String::as_str)
        .filter(|option| !matches!(*option, "--resume" | "--device"))
        .collect()
}

/// Checks that `--resume` names a run folder with a model file, warns about the options that
/// the resumed run ignores and resolves the device. `train` reads the settings, image and
/// state from the model file, so the job's other fields are placeholders.
fn resume_job(
    run_dir: &Path,
    command_line_options: &[String],
    device: DeviceChoice,
) -> Result<TrainJob, String> {
    if !run_dir.join(MODEL_FILE).exists() {
        if let Some(error) = image_passed_as_run(run_dir) {
            return Err(format!("--resume {error}"));
        }
        if stopped_before_first_scale(run_dir) {
            return Err(format!("--resume {}", no_finished_scale_error(run_dir)));
        }
        return Err(format!(
            "--resume {}: no model.safetensors there; pass a run folder that `singan train` created",
            run_dir.display()
        ));
    }
    let ignored = ignored_on_resume(command_line_options);
    if !ignored.is_empty() {
        eprintln!(
            "warning: ignoring {} because --resume continues with the settings saved in {}",
            ignored.join(", "),
            run_dir.display()
        );
    }
    eprintln!("resuming {} with its saved settings", run_dir.display());
    Ok(TrainJob {
        config: TrainConfig::default(),
        image: singan::singan::imresize::Planes::filled(3, 1, 1, 0.0),
        image_name: None,
        run_dir: run_dir.to_path_buf(),
        device: resolve_device(device)?,
    })
}

/// Checks the options and the image of a new run, resolves the device and creates the run
/// folder, in that order, so that a rejected run leaves nothing on disk and the cheap checks
/// come before the device probe.
fn new_job(args: &TrainArgs) -> Result<TrainJob, String> {
    let config = args.config()?;
    let trained_hint =
        |run_dir: &Path| format!("continue it with --resume {}", quote_path(run_dir));
    if let Some(name) = &args.save {
        check_new_run_name(&args.results_dir, name, &trained_hint)?;
    }
    let (image, image_name) = match &args.image {
        Some(path) => {
            let background = match args.background {
                BackgroundChoice::White => AlphaBackground::White,
                BackgroundChoice::Black => AlphaBackground::Black,
            };
            let image = load_image(path, background).map_err(|e| e.to_string())?;
            (image, Some(path.display().to_string()))
        }
        None => {
            eprintln!("no image given: training on the built-in sample image");
            (sample_image(), None)
        }
    };
    let pyramid = singan::singan::pyramid::Pyramid::new(
        (image.height, image.width),
        &config.pyramid_config(),
    )
    .map_err(|e| match &image_name {
        Some(path) => format!("{path}: {e}"),
        None => e.to_string(),
    })?;
    super::warn_if_scale_repeats(&pyramid);

    let device = resolve_device(args.device)?;
    if args.seed == -1 {
        eprintln!(
            "seed: {} (pass --seed {} to repeat this run)",
            config.seed, config.seed
        );
    }
    let run_dir = create_run_folder(
        &args.results_dir,
        args.save.as_deref(),
        &timestamp(now_seconds()),
        &trained_hint,
    )?;
    Ok(TrainJob {
        config,
        image,
        image_name,
        run_dir,
        device,
    })
}

/// Prints how to go on after an interrupt that kept `finished` scales in `run_dir`.
/// `then` is appended to the `--resume` advice, for commands that continue after the training.
pub(super) fn report_interrupt(finished: usize, run_dir: &str, then: &str) {
    if finished == 0 {
        eprintln!(
            "interrupted before the first scale finished, so {run_dir} contains no model to \
             resume; train again to start over"
        );
    } else {
        eprintln!(
            "interrupted: {finished} finished {} saved in {run_dir}; continue with \
             `singan train --resume {}`{then}",
            if finished == 1 {
                "scale is"
            } else {
                "scales are"
            },
            quote_path(run_dir)
        );
    }
}

/// Runs `train`. `command_line_options` lists the options typed on the command line (see
/// [`options_given_on_command_line`]), which a resumed run warns about.
pub fn run(args: TrainArgs, command_line_options: &[String]) -> Result<ExitCode, String> {
    let (job, resume) = match &args.resume {
        Some(run_dir) => (
            resume_job(run_dir, command_line_options, args.device)?,
            true,
        ),
        None => (new_job(&args)?, false),
    };

    let stop = Arc::new(AtomicBool::new(false));
    let handler_stop = Arc::clone(&stop);
    let _ = ctrlc::set_handler(move || {
        if handler_stop.swap(true, Ordering::SeqCst) {
            eprintln!("second interrupt: exiting now; the last finished scale is saved");
            std::process::exit(130);
        }
        eprintln!("interrupt: stopping after the current iteration; finished scales are kept");
    });

    eprintln!("run folder: {}", job.run_dir.display());
    let mut reporter = ConsoleReporter { bar: None };
    let (model, summaries) = match train(&job, resume, &mut reporter, &stop) {
        Ok(result) => result,
        Err(singan::Error::Interrupted { finished, run_dir }) => {
            report_interrupt(finished, &run_dir, "");
            return Ok(ExitCode::from(130));
        }
        Err(error) => return Err(error.to_string()),
    };

    if summaries.is_empty() {
        println!(
            "nothing to resume: all {} scales of {} are trained",
            model.info.pyramid.sizes.len(),
            job.run_dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<6} {:>11} {:>9} {:>10} {:>10}",
        "scale", "size", "features", "amplitude", "seconds"
    );
    for s in &summaries {
        println!(
            "s{:<5} {:>11} {:>9} {:>10.3} {:>10.1}",
            s.scale,
            format!("{}x{}", s.size.0, s.size.1),
            s.width,
            s.amplitude,
            s.seconds
        );
    }
    println!(
        "trained {} of {} scales; model saved in {}",
        model.info.finished_scales,
        model.info.pyramid.sizes.len(),
        job.run_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::{
        ignored_on_resume, options_given_on_command_line, parse_scale_factor_init, random_seed,
        timestamp, TrainArgs, MAX_RANDOM_SEED,
    };
    use clap::Args;

    fn command_line_options(arguments: &[&str]) -> Vec<String> {
        let matches = TrainArgs::augment_args(clap::Command::new("train"))
            .try_get_matches_from(std::iter::once("train").chain(arguments.iter().copied()))
            .unwrap();
        options_given_on_command_line(&matches)
    }

    #[test]
    fn command_line_options_skip_defaults() {
        assert!(command_line_options(&[]).is_empty());
        assert!(command_line_options(&["picture.png"]).is_empty());
        assert_eq!(
            command_line_options(&["--lr", "0.001", "--min-size", "20", "--penalty-weight", "0"]),
            ["--min-size", "--lr", "--penalty-weight"]
        );
        // A default typed out counts, because the user asked for that value.
        assert_eq!(
            command_line_options(&["--num-steps", "4000"]),
            ["--num-steps"]
        );
    }

    #[test]
    fn resume_keeps_device_option() {
        let options =
            command_line_options(&["--resume", "run", "--device", "cpu", "--gamma", "0.5"]);
        assert_eq!(options, ["--gamma", "--resume", "--device"]);
        assert_eq!(ignored_on_resume(&options), ["--gamma"]);
    }

    #[test]
    fn random_seed_in_range() {
        let seeds: Vec<u64> = (0..200).map(|_| random_seed()).collect();
        assert!(
            seeds.iter().all(|&seed| seed <= MAX_RANDOM_SEED),
            "{seeds:?}"
        );
        // Two hundred draws from 12346 values take at least 150 distinct ones, unless the
        // draws are not random (a clock in seconds would give one or two).
        let distinct: std::collections::BTreeSet<_> = seeds.iter().collect();
        assert!(distinct.len() > 150, "{} distinct seeds", distinct.len());
    }

    #[test]
    fn scale_factor_init_range() {
        assert_eq!(parse_scale_factor_init("0.75"), Ok(0.75));
        assert_eq!(parse_scale_factor_init(" 0.5 "), Ok(0.5));
        for text in ["0", "1", "1.5", "-0.5", "NaN", "inf"] {
            let error = parse_scale_factor_init(text).unwrap_err();
            assert!(
                error.ends_with("must be strictly between 0 and 1, such as 0.75"),
                "{text}: {error}"
            );
        }
        let error = parse_scale_factor_init("three quarters").unwrap_err();
        assert!(error.contains("is not a number"), "{error}");
    }

    #[test]
    fn timestamp_formats_utc() {
        assert_eq!(timestamp(0), "1970-01-01_00-00-00");
        // 2026-12-04 14:43:16 UTC.
        assert_eq!(timestamp(1_796_395_396), "2026-12-04_14-43-16");
        // 2024-02-29 (leap day) 23:59:59 UTC.
        assert_eq!(timestamp(1_709_251_199), "2024-02-29_23-59-59");
    }
}
