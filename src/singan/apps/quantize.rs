//! Paint-to-image with colour quantisation.
//!
//! A painting has flat regions of a few colours, unlike the blurred real images that the
//! generator of scale n was trained to refine. Quantisation closes that gap. K-means finds a
//! small palette of the real image at scale n, and the painting is mapped to that palette.
//! Generator n is then retrained from scratch with every coarser-scale input mapped to the
//! same palette, so that it learns to turn flat palette regions into texture.

use crate::autograd::{no_grad, Var};
use crate::error::{Error, Result};
use crate::nn::Module;
use crate::ops::random::draw;
use crate::optim::{Adam, AdamConfig, StepLr};
use crate::rng::{DrawKind, Rng};
use crate::singan::apps::{check_start_scale, finest_scale};
use crate::singan::cascade::{
    draw_noise, planes_to_tensor, tensor_to_planes, Cascade, NoiseSource,
};
use crate::singan::imresize::{resize, Planes, Resize};
use crate::singan::model::{Discriminator, Generator, NetConfig};
use crate::singan::run::Model;
use crate::singan::step::{critic_step, generator_step, CriticLosses, GeneratorLosses, StepInputs};
use crate::tensor::Tensor;

/// Palette size for paint-to-image.
pub const PAINT_CLUSTERS: usize = 5;
/// Upper bound on the Lloyd iterations of [`Palette::kmeans`]; it stops earlier once no pixel
/// changes its cluster.
pub const MAX_KMEANS_ITERATIONS: usize = 300;

/// A set of RGB colours in [-1, 1].
#[derive(Clone, Debug, PartialEq)]
pub struct Palette {
    pub centres: Vec<[f32; 3]>,
}

fn squared_distance(a: [f32; 3], b: [f32; 3]) -> f64 {
    (0..3)
        .map(|c| {
            let d = f64::from(a[c]) - f64::from(b[c]);
            d * d
        })
        .sum()
}

/// Collects the pixels of 3-channel planes as RGB triples, in row-major order.
fn pixels(image: &Planes<f32>) -> Result<Vec<[f32; 3]>> {
    image.check_len()?;
    if image.channels != 3 {
        return Err(Error::Message(format!(
            "colour quantisation needs 3-channel planes, not {}",
            image.channels
        )));
    }
    let plane = image.plane_len();
    Ok((0..plane)
        .map(|i| {
            [
                image.data[i],
                image.data[plane + i],
                image.data[2 * plane + i],
            ]
        })
        .collect())
}

impl Palette {
    /// Clusters the pixel colours of `image` with k-means into at most `clusters` colours.
    ///
    /// Seeding is k-means++ with a [`Rng`] seeded by `seed`, so the palette is a function of the
    /// image, `clusters` and `seed`. An image with fewer distinct colours than `clusters` gets
    /// one centre per distinct colour. A cluster that loses all its pixels keeps its centre.
    pub fn kmeans(image: &Planes<f32>, clusters: usize, seed: u64) -> Result<Self> {
        let points = pixels(image)?;
        if points.is_empty() || clusters == 0 {
            return Err(Error::Message(format!(
                "k-means needs at least one pixel and one cluster, not {} pixels and {clusters} \
                 clusters",
                points.len()
            )));
        }
        let mut rng = Rng::new(seed);
        let pick = |rng: &mut Rng, n: usize| ((rng.uniform_f64() * n as f64) as usize).min(n - 1);

        // k-means++: each new centre is a pixel drawn with probability proportional to its
        // squared distance from the nearest centre so far.
        let mut centres = vec![points[pick(&mut rng, points.len())]];
        let mut nearest: Vec<f64> = points
            .iter()
            .map(|&p| squared_distance(p, centres[0]))
            .collect();
        while centres.len() < clusters {
            let total: f64 = nearest.iter().sum();
            if total <= 0.0 {
                break;
            }
            let mut target = rng.uniform_f64() * total;
            let mut chosen = points.len() - 1;
            for (i, &d) in nearest.iter().enumerate() {
                if target < d {
                    chosen = i;
                    break;
                }
                target -= d;
            }
            let centre = points[chosen];
            centres.push(centre);
            for (d, &p) in nearest.iter_mut().zip(&points) {
                *d = d.min(squared_distance(p, centre));
            }
        }

        // Lloyd iterations.
        let mut palette = Palette { centres };
        let mut labels = vec![usize::MAX; points.len()];
        for _ in 0..MAX_KMEANS_ITERATIONS {
            let mut changed = false;
            for (label, &p) in labels.iter_mut().zip(&points) {
                let nearest = palette.nearest(p);
                if *label != nearest {
                    *label = nearest;
                    changed = true;
                }
            }
            if !changed {
                break;
            }
            let mut sums = vec![[0.0f64; 3]; palette.centres.len()];
            let mut counts = vec![0usize; palette.centres.len()];
            for (&label, &p) in labels.iter().zip(&points) {
                for c in 0..3 {
                    sums[label][c] += f64::from(p[c]);
                }
                counts[label] += 1;
            }
            for (centre, (sum, &count)) in palette.centres.iter_mut().zip(sums.iter().zip(&counts))
            {
                if count > 0 {
                    *centre = [
                        (sum[0] / count as f64) as f32,
                        (sum[1] / count as f64) as f32,
                        (sum[2] / count as f64) as f32,
                    ];
                }
            }
        }
        Ok(palette)
    }

    /// Returns the index of the centre closest to `colour` (the first one on ties).
    pub fn nearest(&self, colour: [f32; 3]) -> usize {
        let mut best = 0;
        let mut best_distance = f64::INFINITY;
        for (i, &centre) in self.centres.iter().enumerate() {
            let d = squared_distance(colour, centre);
            if d < best_distance {
                best = i;
                best_distance = d;
            }
        }
        best
    }

    /// Replaces every pixel of 3-channel planes by its nearest centre.
    pub fn quantize(&self, image: &Planes<f32>) -> Result<Planes<f32>> {
        let plane = image.plane_len();
        let mut data = vec![0.0f32; image.data.len()];
        for (i, p) in pixels(image)?.into_iter().enumerate() {
            let centre = self.centres[self.nearest(p)];
            for c in 0..3 {
                data[c * plane + i] = centre[c];
            }
        }
        Ok(Planes::new(3, image.height, image.width, data)?)
    }

    /// Quantises a `(1, 3, H, W)` tensor on the host and returns the result on the tensor's
    /// device.
    pub fn quantize_tensor(&self, image: &Tensor<f32>) -> Result<Tensor<f32>> {
        planes_to_tensor(&self.quantize(&tensor_to_planes(image)?)?).to_device(&image.device())
    }
}

/// Builds the input of scale `start` for quantised paint-to-image: the painting (at the finest
/// size) mapped to `palette`, resized by `r^(N - start)` and cropped to scale `start`, on the
/// model's device.
pub fn quantized_input(
    model: &Model<f32>,
    painting: &Planes<f32>,
    palette: &Palette,
    start: usize,
) -> Result<Tensor<f32>> {
    let last = finest_scale(model, "paint2image")?;
    check_start_scale("paint2image", start, 1, last)?;
    let pyramid = &model.info.pyramid;
    let size = pyramid.sizes[start];
    let quantized = palette.quantize(painting)?;
    let scaled = resize(&quantized, Resize::Scale(pyramid.level_factor(start)))?;
    planes_to_tensor(&scaled.crop_top_left(size.0, size.1)?).to_device(&model.device())
}

/// Progress of [`retrain_scale`], reported after every iteration. Unlike
/// [`crate::singan::train::train`], the retraining reads and checks every iteration's losses
/// before it runs the next, so on a GPU it waits for each iteration.
pub struct RetrainProgress<'a> {
    pub iteration: usize,
    pub num_steps: usize,
    pub critic: &'a CriticLosses,
    /// `None` on iterations without a generator step.
    pub generator: Option<&'a GeneratorLosses>,
}

/// Retrains generator `scale` of `model` from a fresh initialisation, with every input from the
/// coarser scales (random and reconstruction) quantised to `palette`, and replaces the
/// generator and its noise amplitude in `model`. The model file on disk is not changed.
///
/// The training follows the run's own settings (learning rate, betas, loss weights, critic
/// steps, schedule) except for the iteration count: iterations `0..=num_steps` run. The noise
/// amplitude is recomputed from the quantised reconstruction input. Returns the amplitude.
pub fn retrain_scale(
    model: &mut Model<f32>,
    scale: usize,
    palette: &Palette,
    num_steps: usize,
    rng: &mut Rng,
    progress: &mut dyn FnMut(RetrainProgress<'_>),
) -> Result<f64> {
    let last = finest_scale(model, "paint2image")?;
    check_start_scale("paint2image", scale, 1, last)?;
    let config = model.info.config.clone();
    let sizes = model.info.pyramid.sizes.clone();
    let scale_factor = model.info.pyramid.scale_factor;

    let (max_features, min_features) = config.features_at(scale);
    let net = NetConfig {
        max_features,
        min_features,
        num_blocks: config.num_blocks,
        kernel_size: config.kernel_size,
        padding: config.padding,
    };
    let device = model.device();
    let mut generator = Generator::<f32>::new(&net);
    generator.init(&mut || rng.normal_f64())?;
    generator.to_device(&device)?;
    let mut critic = Discriminator::<f32>::new(&net);
    critic.init(&mut || rng.normal_f64())?;
    critic.to_device(&device)?;

    let real = Var::constant(model.reals[scale].clone());
    let prev_reconstruction = {
        let mut cascade = Cascade {
            generators: &mut model.generators[..scale],
            amplitudes: &model.info.amplitudes,
            sizes: &sizes,
            scale_factor,
            device,
        };
        let prev = cascade.input_at(scale, &mut NoiseSource::Fixed(&model.fixed_noises))?;
        Var::constant(palette.quantize_tensor(&prev)?)
    };
    let mse = no_grad(|| prev_reconstruction.mse(&real))?.item()? as f64;
    let amplitude = config.noise_weight * mse.sqrt();

    let adam = |betas: (f64, f64)| AdamConfig {
        lr: config.lr,
        beta1: betas.0,
        beta2: betas.1,
        eps: 1e-8,
    };
    let mut generator_optimizer = Adam::new(adam(config.gen_betas), &generator.params());
    generator_optimizer.to_device(&device)?;
    let mut critic_optimizer = Adam::new(adam(config.dis_betas), &critic.params());
    critic_optimizer.to_device(&device)?;
    let schedule = StepLr {
        base_lr: config.lr,
        step_size: config.step_size as u64,
        gamma: config.gamma,
    };
    let weights = config.step_weights();
    let fixed_noise = Var::constant(model.fixed_noises[scale].clone());

    for t in 0..=num_steps {
        let lr = schedule.lr_for_iteration(t as u64);
        generator_optimizer.config.lr = lr;
        critic_optimizer.config.lr = lr;

        let prev_random = {
            let mut cascade = Cascade {
                generators: &mut model.generators[..scale],
                amplitudes: &model.info.amplitudes,
                sizes: &sizes,
                scale_factor,
                device,
            };
            cascade.input_at(scale, &mut NoiseSource::Random(rng))?
        };
        let alpha = draw::<f32>(rng, DrawKind::UniformF32, [1, 1, 1, 1], &device)?;
        let inputs = StepInputs {
            real: real.clone(),
            prev_random: Var::constant(palette.quantize_tensor(&prev_random)?),
            noise: Var::constant(draw_noise(rng, scale, sizes[scale], &device)?),
            prev_reconstruction: prev_reconstruction.clone(),
            fixed_noise: fixed_noise.clone(),
            amplitude,
            alpha: Var::constant(alpha),
        };

        let non_finite = |name: &str, value: f64| Error::NonFinite {
            scale,
            iteration: t,
            message: format!("the {name} loss of the quantised retraining is {value}"),
        };
        let (critic_losses, fake) = critic_step(
            &mut generator,
            &mut critic,
            &mut critic_optimizer,
            &inputs,
            &weights,
        )?;
        let critic_losses = critic_losses.read()?;
        if !critic_losses.critic.is_finite() {
            return Err(non_finite("critic", critic_losses.critic));
        }
        let mut generator_losses = None;
        if t % config.num_critic == 0 {
            let losses = generator_step(
                &mut generator,
                &mut critic,
                &mut generator_optimizer,
                &inputs,
                &fake,
                &weights,
            )?
            .read()?;
            if !losses.generator.is_finite() {
                return Err(non_finite("generator", losses.generator));
            }
            generator_losses = Some(losses);
        }
        drop(fake);
        progress(RetrainProgress {
            iteration: t,
            num_steps,
            critic: &critic_losses,
            generator: generator_losses.as_ref(),
        });
    }

    generator.set_training(false);
    generator.set_requires_grad(false);
    model.generators[scale] = generator;
    model.info.amplitudes[scale] = amplitude;
    Ok(amplitude)
}
