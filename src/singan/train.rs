//! The training driver: builds the pyramid, then trains one generator and critic per scale,
//! coarse to fine, saving the model after each scale.
//!
//! Per scale `k`, the networks are created, or carried over from scale `k - 1` when the width
//! is unchanged. The noise amplitude is set from the reconstruction error of the coarser scales.
//! The reconstruction input is computed once and cached, because the coarser generators are
//! frozen. Then `num_steps + 1` iterations of critic and generator steps run.
//!
//! Everything runs on [`TrainJob::device`]: the networks, the Adam moments, the real images,
//! the noise draws and the cascade. On a GPU an iteration only queues work, and the losses are
//! read in batches (see [`LossLog`]): at every progress line, at every image evaluation, at the
//! end of each scale and at least every [`GPU_LOSS_READ_INTERVAL`] iterations. The log files
//! get the same lines either way, but on a GPU a loss that turns NaN stops training at the
//! next read, which names the first iteration whose loss was not finite.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::autograd::{no_grad, Var};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::ops::random::draw;
use crate::optim::{Adam, AdamConfig, StepLr};
use crate::rng::{DrawKind, Rng};
use crate::singan::cascade::{
    draw_noise, planes_to_tensor, tensor_to_planes, Cascade, NoiseSource,
};
use crate::singan::config::TrainConfig;
use crate::singan::image_io::{save_png, tile_grid};
use crate::singan::imresize::Planes;
use crate::singan::loss_log::{IterationLosses, LossLog};
use crate::singan::model::{Discriminator, Generator, NetConfig};
use crate::singan::pyramid::Pyramid;
use crate::singan::run::{
    load_critic, load_model, new_model_info, save_critic, save_model, LossRecord, Model,
};
use crate::singan::step::{critic_step, generator_step, StepInputs};
use crate::tensor::{Device, Tensor};

/// Random samples in the grid saved after each scale.
pub const SAMPLES_PER_SCALE: usize = 8;

/// Largest number of iterations whose losses wait on a GPU before the trainer reads them. On
/// the CPU every iteration's losses are read right after it.
pub const GPU_LOSS_READ_INTERVAL: usize = 25;

/// Progress callbacks of the trainer.
pub trait Reporter {
    /// Reports that a scale started, with its index, size, feature count, noise amplitude and
    /// iteration count.
    fn scale_started(
        &mut self,
        scale: usize,
        size: (usize, usize),
        width: usize,
        amplitude: f64,
        iterations: usize,
    );
    /// Reports a finished iteration and its losses.
    fn iteration(&mut self, scale: usize, iteration: usize, losses: &BTreeMap<String, f64>);
    /// Reports a progress line, which is also written to `log.txt`.
    fn line(&mut self, text: &str);
    /// Reports that a scale finished after `seconds`.
    fn scale_finished(&mut self, scale: usize, seconds: f64);
}

/// The training image and where the run goes.
pub struct TrainJob {
    pub config: TrainConfig,
    /// The image as RGB planes in [-1, 1] and its path (`None` for the built-in image).
    pub image: Planes<f32>,
    pub image_name: Option<String>,
    pub run_dir: PathBuf,
    /// Device of the networks, the images and the noises.
    pub device: Device,
}

/// Per-scale timing and amplitude, for the closing table.
#[derive(Clone, Debug)]
pub struct ScaleSummary {
    pub scale: usize,
    pub size: (usize, usize),
    pub width: usize,
    pub amplitude: f64,
    pub seconds: f64,
}

/// Appends a line to a file in the run folder.
fn append_line(path: &Path, line: &str) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::file(path, format!("cannot append: {e}")))?;
    writeln!(file, "{line}").map_err(|e| Error::file(path, format!("cannot append: {e}")))
}

/// Network sizes at `scale`.
fn net_config(config: &TrainConfig, scale: usize) -> NetConfig {
    let (max_features, min_features) = config.features_at(scale);
    NetConfig {
        max_features,
        min_features,
        num_blocks: config.num_blocks,
        kernel_size: config.kernel_size,
        padding: config.padding,
    }
}

/// Builds the pyramid, real images and fixed noises of a new run, on the job's device.
fn new_model(job: &TrainJob, rng: &mut Rng) -> Result<Model<f32>> {
    let pyramid = Pyramid::new(
        (job.image.height, job.image.width),
        &job.config.pyramid_config(),
    )?;
    let reals = pyramid
        .real_images(&job.image)?
        .iter()
        .map(|real| planes_to_tensor::<f32>(real).to_device(&job.device))
        .collect::<Result<Vec<_>>>()?;
    let fixed_noises = pyramid
        .sizes
        .iter()
        .enumerate()
        .map(|(k, &size)| draw_noise(rng, k, size, &job.device))
        .collect::<Result<Vec<_>>>()?;
    Ok(Model {
        info: new_model_info(&job.config, &pyramid, job.image_name.clone()),
        generators: Vec::new(),
        reals,
        fixed_noises,
    })
}

/// Trains every scale not yet finished in `job.run_dir` (all of them for a new run) and returns
/// the model and a summary of the scales trained now. Stops between iterations when `stop` is
/// set, keeping the finished scales.
pub fn train(
    job: &TrainJob,
    resume: bool,
    reporter: &mut dyn Reporter,
    stop: &AtomicBool,
) -> Result<(Model<f32>, Vec<ScaleSummary>)> {
    let run_dir = &job.run_dir;
    std::fs::create_dir_all(run_dir)
        .map_err(|e| Error::file(run_dir, format!("cannot create the run folder: {e}")))?;

    let device = job.device;
    let (mut model, mut rng, mut critic) = if resume {
        let mut model = load_model::<f32>(run_dir)?;
        model.to_device(&device)?;
        drop_unfinished_records(run_dir, model.info.finished_scales)?;
        let rng = Rng::from_state(model.info.rng_state);
        // A finished run has nothing left to train, so it needs no critic.
        let critic = match model.info.finished_scales {
            0 => None,
            _ if model.is_complete() => None,
            finished => {
                let (mut critic, scale) = load_critic::<f32>(run_dir, model.info.config.padding)?;
                critic.to_device(&device)?;
                (scale + 1 == finished).then_some(critic)
            }
        };
        (model, rng, critic)
    } else {
        let mut rng = Rng::new(job.config.seed);
        let model = new_model(job, &mut rng)?;
        let config_text = serde_json::to_string_pretty(&model.info.config)
            .map_err(|e| Error::Message(e.to_string()))?;
        append_line(
            &run_dir.join("log.txt"),
            &format!("configuration:\n{config_text}"),
        )?;
        (model, rng, None)
    };
    let config = model.info.config.clone();
    let sizes = model.info.pyramid.sizes.clone();
    let scale_factor = model.info.pyramid.scale_factor;
    let mut summaries = Vec::new();

    for k in model.info.finished_scales..sizes.len() {
        let started = Instant::now();
        let net = net_config(&config, k);
        let carry = k > 0 && config.features_at(k) == config.features_at(k - 1);
        let mut generator = if carry {
            let mut g = model.generators[k - 1].clone();
            g.set_training(true);
            g.set_requires_grad(true);
            g
        } else {
            let mut g = Generator::<f32>::new(&net);
            g.init(&mut || rng.normal_f64())?;
            g.to_device(&device)?;
            g
        };
        let mut critic_net = match critic.take() {
            Some(previous) if carry => previous,
            _ => {
                let mut d = Discriminator::<f32>::new(&net);
                d.init(&mut || rng.normal_f64())?;
                d.to_device(&device)?;
                d
            }
        };

        // The reconstruction input and amplitude, from the frozen coarser scales.
        let real = Var::constant(model.reals[k].clone());
        let (prev_reconstruction, amplitude) = {
            let mut cascade = Cascade {
                generators: &mut model.generators[..k],
                amplitudes: &model.info.amplitudes,
                sizes: &sizes,
                scale_factor,
                device,
            };
            let prev = cascade.input_at(k, &mut NoiseSource::Fixed(&model.fixed_noises))?;
            let amplitude = if k == 0 {
                1.0
            } else {
                let mse = no_grad(|| Var::constant(prev.clone()).mse(&real))?.item()? as f64;
                config.noise_weight * mse.sqrt()
            };
            (Var::constant(prev), amplitude)
        };

        let (h, w) = sizes[k];
        reporter.scale_started(
            k,
            (h, w),
            generator.width(),
            amplitude,
            config.num_steps + 1,
        );
        let header = format!(
            "Scale {k}: {h}x{w}, {} features, noise amplitude {amplitude:.4}",
            generator.width()
        );
        append_line(&run_dir.join("log.txt"), &header)?;

        let adam = |betas: (f64, f64)| AdamConfig {
            lr: config.lr,
            beta1: betas.0,
            beta2: betas.1,
            eps: 1e-8,
        };
        let mut generator_optimizer = Adam::new(adam(config.gen_betas), &generator.params());
        generator_optimizer.to_device(&device)?;
        let mut critic_optimizer = Adam::new(adam(config.dis_betas), &critic_net.params());
        critic_optimizer.to_device(&device)?;
        let schedule = StepLr {
            base_lr: config.lr,
            step_size: config.step_size as u64,
            gamma: config.gamma,
        };
        let weights = config.step_weights();
        let scale_dir = run_dir.join(format!("s{k}"));
        std::fs::create_dir_all(&scale_dir)
            .map_err(|e| Error::file(&scale_dir, format!("cannot create: {e}")))?;
        let mut history: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        let read_interval = if device.is_cpu() {
            1
        } else {
            GPU_LOSS_READ_INTERVAL
        };
        let mut loss_log = LossLog::new(read_interval, &device)?;
        let mut log_context = LogContext {
            run_dir,
            scale: k,
            config: &config,
            history: &mut history,
            reporter: &mut *reporter,
        };

        for t in 0..=config.num_steps {
            if stop.load(Ordering::SeqCst) {
                log_context.write_all(loss_log.read()?)?;
                return Err(Error::Interrupted {
                    finished: k,
                    run_dir: run_dir.display().to_string(),
                });
            }
            let lr = schedule.lr_for_iteration(t as u64);
            generator_optimizer.config.lr = lr;
            critic_optimizer.config.lr = lr;

            let prev_random = {
                let mut cascade = Cascade {
                    generators: &mut model.generators[..k],
                    amplitudes: &model.info.amplitudes,
                    sizes: &sizes,
                    scale_factor,
                    device,
                };
                cascade.input_at(k, &mut NoiseSource::Random(&mut rng))?
            };
            let alpha = draw::<f32>(&mut rng, DrawKind::UniformF32, [1, 1, 1, 1], &device)?;
            let inputs = StepInputs {
                real: real.clone(),
                prev_random: Var::constant(prev_random),
                noise: Var::constant(draw_noise(&mut rng, k, (h, w), &device)?),
                prev_reconstruction: prev_reconstruction.clone(),
                fixed_noise: Var::constant(model.fixed_noises[k].clone()),
                amplitude,
                alpha: Var::constant(alpha),
            };

            let (critic_losses, fake) = critic_step(
                &mut generator,
                &mut critic_net,
                &mut critic_optimizer,
                &inputs,
                &weights,
            )?;
            let generator_losses = if t % config.num_critic == 0 {
                Some(generator_step(
                    &mut generator,
                    &mut critic_net,
                    &mut generator_optimizer,
                    &inputs,
                    &fake,
                    &weights,
                )?)
            } else {
                None
            };
            drop(fake);
            loss_log.push(t, lr, &critic_losses, generator_losses.as_ref())?;

            let progress = t % config.print_every == 0 || t == config.num_steps;
            let evaluation = t % config.eval_every == 0 || t == config.num_steps;
            if progress || evaluation || loss_log.is_full() {
                log_context.write_all(loss_log.read()?)?;
            }
            if evaluation {
                save_eval_images(
                    &mut generator,
                    &model,
                    k,
                    &prev_reconstruction,
                    amplitude,
                    &scale_dir,
                    t,
                    &mut rng,
                    scale_factor,
                )?;
            }
        }

        // Freeze the scale, then write its artefacts and the model.
        generator.set_training(false);
        generator.set_requires_grad(false);
        model.generators.push(generator);
        model.info.amplitudes.push(amplitude);
        model.info.finished_scales = k + 1;
        save_scale_images(&mut model, k, &scale_dir, &mut rng, scale_factor)?;
        let series: Vec<(&str, &[f64])> = history
            .iter()
            .map(|(name, values)| (name.as_str(), values.as_slice()))
            .collect();
        crate::singan::plot::plot_losses(
            &scale_dir.join("losses.png"),
            &format!("scale {k} losses"),
            &series,
        )?;
        model.info.rng_state = rng.save_state();
        save_critic(run_dir, &critic_net, k)?;
        save_model(run_dir, &model)?;
        critic = Some(critic_net);

        let seconds = started.elapsed().as_secs_f64();
        reporter.scale_finished(k, seconds);
        summaries.push(ScaleSummary {
            scale: k,
            size: (h, w),
            width: model.generators[k].width(),
            amplitude,
            seconds,
        });
    }
    Ok((model, summaries))
}

/// Destinations of the losses of one scale: `losses.jsonl`, the progress lines of `log.txt`,
/// the reporter and the history for the loss plot.
struct LogContext<'a> {
    run_dir: &'a Path,
    scale: usize,
    config: &'a TrainConfig,
    history: &'a mut BTreeMap<String, Vec<f64>>,
    reporter: &'a mut dyn Reporter,
}

impl LogContext<'_> {
    /// Writes the losses of each iteration in order, and stops with an error at the first
    /// iteration whose critic or generator loss is not finite, before writing it.
    fn write_all(&mut self, iterations: Vec<IterationLosses>) -> Result<()> {
        for losses in iterations {
            self.write(&losses)?;
        }
        Ok(())
    }

    fn write(&mut self, read: &IterationLosses) -> Result<()> {
        let (k, t) = (self.scale, read.iteration);
        let non_finite = |name: &str, value: f64| Error::NonFinite {
            scale: k,
            iteration: t,
            message: format!("the {name} loss is {value}"),
        };
        let critic = &read.critic;
        if !critic.critic.is_finite() {
            return Err(non_finite("critic", critic.critic));
        }
        let mut losses = BTreeMap::from([
            ("D".to_string(), critic.critic),
            ("D_r".to_string(), critic.real),
            ("D_f".to_string(), critic.fake),
            ("D_gp".to_string(), critic.gradient_penalty),
        ]);
        if let Some(g) = &read.generator {
            if !g.generator.is_finite() {
                return Err(non_finite("generator", g.generator));
            }
            losses.insert("G".to_string(), g.generator);
            losses.insert("G_recon".to_string(), g.reconstruction);
            losses.insert("G_adv".to_string(), g.adversarial);
        }

        for (name, value) in &losses {
            self.history.entry(name.clone()).or_default().push(*value);
        }
        let record = LossRecord {
            scale: k,
            iteration: t,
            lr: read.lr,
            values: losses.clone(),
        };
        let json = serde_json::to_string(&record).map_err(|e| Error::Message(e.to_string()))?;
        append_line(&self.run_dir.join("losses.jsonl"), &json)?;
        self.reporter.iteration(k, t, &losses);

        if t % self.config.print_every == 0 || t == self.config.num_steps {
            let line = progress_line(t, &losses);
            append_line(&self.run_dir.join("log.txt"), &line)?;
            self.reporter.line(&format!("scale {k}: {line}"));
        }
        Ok(())
    }
}

/// Removes the `losses.jsonl` records of scales that did not finish, so a resumed scale is
/// logged once. The file is rewritten atomically.
fn drop_unfinished_records(run_dir: &Path, finished: usize) -> Result<()> {
    let path = run_dir.join("losses.jsonl");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(());
    };
    let mut kept = String::with_capacity(text.len());
    for line in text.lines() {
        let finished_scale =
            serde_json::from_str::<LossRecord>(line).is_ok_and(|record| record.scale < finished);
        if finished_scale {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    Ok(crate::singan::image_io::write_atomic(
        &path,
        kept.as_bytes(),
    )?)
}

/// Formats a progress line with 6 decimals for critic terms and 5 for generator terms.
fn progress_line(t: usize, losses: &BTreeMap<String, f64>) -> String {
    let mut line = format!("Iteration {t}");
    for (name, decimals) in [
        ("D", 6),
        ("D_r", 6),
        ("D_f", 6),
        ("D_gp", 6),
        ("G", 5),
        ("G_recon", 5),
        ("G_adv", 5),
    ] {
        if let Some(value) = losses.get(name) {
            line.push_str(&format!(", {name}: {value:.decimals$}"));
        }
    }
    line
}

/// Runs `generator` in inference mode on `prev + amplitude * noise` and returns the image.
fn generate(
    generator: &mut Generator<f32>,
    prev: &Tensor<f32>,
    noise: &Tensor<f32>,
    amplitude: f64,
) -> Result<Tensor<f32>> {
    generator.set_training(false);
    let out = no_grad(|| -> Result<Tensor<f32>> {
        let prev = Var::constant(prev.clone());
        let z = prev.add(&Var::constant(noise.clone()).mul_scalar(amplitude)?)?;
        Ok(generator.forward(&z, &prev)?.value().clone())
    });
    generator.set_training(true);
    out
}

/// Saves `s<t>_fixed.png` (reconstruction) and `s<t>_sampled.png` (a random sample) of the
/// scale being trained.
#[allow(clippy::too_many_arguments)]
fn save_eval_images(
    generator: &mut Generator<f32>,
    model: &Model<f32>,
    k: usize,
    prev_reconstruction: &Var<f32>,
    amplitude: f64,
    scale_dir: &Path,
    t: usize,
    rng: &mut Rng,
    scale_factor: f64,
) -> Result<()> {
    let fixed = generate(
        generator,
        prev_reconstruction.value(),
        &model.fixed_noises[k],
        amplitude,
    )?;
    save_png(
        scale_dir.join(format!("s{t}_fixed.png")),
        &tensor_to_planes(&fixed)?,
    )?;

    let mut frozen = model.generators[..k].to_vec();
    let sizes = &model.info.pyramid.sizes;
    let device = prev_reconstruction.value().device();
    let prev = Cascade {
        generators: &mut frozen,
        amplitudes: &model.info.amplitudes,
        sizes,
        scale_factor,
        device,
    }
    .input_at(k, &mut NoiseSource::Random(rng))?;
    let noise = draw_noise(rng, k, sizes[k], &device)?;
    let sample = generate(generator, &prev, &noise, amplitude)?;
    save_png(
        scale_dir.join(format!("s{t}_sampled.png")),
        &tensor_to_planes(&sample)?,
    )?;
    Ok(())
}

/// Saves the final reconstruction and a grid of random samples of a finished scale.
fn save_scale_images(
    model: &mut Model<f32>,
    k: usize,
    scale_dir: &Path,
    rng: &mut Rng,
    scale_factor: f64,
) -> Result<()> {
    let sizes = model.info.pyramid.sizes.clone();
    let amplitudes = model.info.amplitudes.clone();
    let device = model.device();
    let mut cascade = Cascade {
        generators: &mut model.generators,
        amplitudes: &amplitudes,
        sizes: &sizes,
        scale_factor,
        device,
    };
    let reconstruction = cascade.run(k, &mut NoiseSource::Fixed(&model.fixed_noises))?;
    save_png(
        scale_dir.join("reconstruction.png"),
        &tensor_to_planes(&reconstruction)?,
    )?;
    let mut samples = Vec::with_capacity(SAMPLES_PER_SCALE);
    for _ in 0..SAMPLES_PER_SCALE {
        samples.push(tensor_to_planes(
            &cascade.run(k, &mut NoiseSource::Random(rng))?,
        )?);
    }
    save_png(scale_dir.join("samples.png"), &tile_grid(&samples)?)?;
    Ok(())
}
