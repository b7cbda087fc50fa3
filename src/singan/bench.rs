//! Timing of one training iteration per scale: a critic step with the gradient penalty and a
//! generator step, with freshly initialised networks of that scale's width.
//!
//! The inputs of the coarser scales (the previous images) are random tensors here, so each
//! scale is timed on its own; the cascade through the frozen coarser generators, which real
//! training adds, is not included.
//!
//! FLOPs are counted from the layer shapes, two per multiply-add of every convolution:
//! `2 * C_out * C_in * K^2 * H_out * W_out`. One iteration runs, for each network forward
//! pass, one forward convolution per layer; each backward pass adds an input gradient (none
//! for the first layer) and, where parameters are differentiated, a weight gradient. The
//! gradient penalty's double backward counts as one more forward and two more backward passes
//! of the critic. Batch norm and element-wise work are not counted. The count is that of a
//! direct convolution: the CPU's Winograd kernels do fewer multiplications for the same
//! result, so their GFLOP/s is an effective rate and can exceed the machine's peak.

use std::time::Instant;

use crate::autograd::Var;
use crate::error::Result;
use crate::nn::Module;
use crate::optim::{Adam, AdamConfig};
use crate::rng::Rng;
use crate::singan::cascade::draw_noise;
use crate::singan::config::TrainConfig;
use crate::singan::model::{Discriminator, Generator, NetConfig};
use crate::singan::step::{critic_step, generator_step, StepInputs};
use crate::tensor::{Device, Tensor};

/// Timing of one scale.
#[derive(Clone, Debug)]
pub struct IterationTiming {
    pub scale: usize,
    pub size: (usize, usize),
    pub width: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub gflop: f64,
}

/// Returns the convolution FLOPs of one iteration at `size` with `config`'s networks at `scale`.
pub fn iteration_gflop(config: &TrainConfig, scale: usize, size: (usize, usize)) -> f64 {
    let (max_features, min_features) = config.features_at(scale);
    let net = NetConfig {
        max_features,
        min_features,
        num_blocks: config.num_blocks,
        kernel_size: config.kernel_size,
        padding: config.padding,
    };
    let (blocks, last) = net.block_channels();
    let k2 = (net.kernel_size * net.kernel_size) as f64;
    let shrink = net.kernel_size - 1 - 2 * net.padding;
    // FLOPs of each convolution of a network whose input is `input` pixels.
    let conv_flops = |input: (usize, usize), out_channels: usize| -> Vec<f64> {
        let mut flops = Vec::new();
        let (mut h, mut w) = input;
        let mut channels: Vec<(usize, usize)> = blocks.clone();
        channels.push((last, out_channels));
        for (c_in, c_out) in channels {
            h -= shrink;
            w -= shrink;
            flops.push(2.0 * (c_in * c_out) as f64 * k2 * (h * w) as f64);
        }
        flops
    };
    let (h, w) = size;
    let border = net.border();
    let generator = conv_flops((h + 2 * border, w + 2 * border), 3);
    let critic = conv_flops((h, w), 1);
    let sum = |v: &[f64]| v.iter().sum::<f64>();
    let first_input_free = |v: &[f64]| sum(v) - v[0];

    let forward_g = sum(&generator);
    let forward_d = sum(&critic);
    // Critic step: G forward (fake), D forward on real and fake with weight gradients and input
    // gradients for all but the first layer, and the penalty: D forward, input gradient with
    // create_graph, then its double backward (about two backward passes).
    let critic_step = forward_g
        + 2.0 * forward_d
        + 2.0 * (forward_d + first_input_free(&critic))
        + forward_d
        + sum(&critic)
        + 2.0 * (forward_d + sum(&critic));
    // Generator step: G forward (reconstruction), D forward on fake, backward through D (input
    // gradients only) and through G twice (weight gradients, input gradients but the first).
    let generator_step =
        forward_g + forward_d + sum(&critic) + 2.0 * (forward_g + first_input_free(&generator));
    (critic_step + generator_step) / 1e9
}

/// Times `steps` iterations (after one warm-up) at each listed scale of the pyramid `sizes`,
/// on `device`.
///
/// The clock is read only after [`Device::synchronize`], so on a GPU each sample covers the
/// kernels of its iteration and not only their queueing. The inputs are drawn before the
/// clock starts.
pub fn time_iterations(
    config: &TrainConfig,
    sizes: &[(usize, usize)],
    scales: &[usize],
    steps: usize,
    device: &Device,
) -> Result<Vec<IterationTiming>> {
    let mut rng = Rng::new(config.seed);
    let mut timings = Vec::new();
    for &scale in scales {
        let (h, w) = sizes[scale];
        let (max_features, min_features) = config.features_at(scale);
        let net = NetConfig {
            max_features,
            min_features,
            num_blocks: config.num_blocks,
            kernel_size: config.kernel_size,
            padding: config.padding,
        };
        let mut generator = Generator::<f32>::new(&net);
        generator.init(&mut || rng.normal_f64())?;
        generator.to_device(device)?;
        let mut critic = Discriminator::<f32>::new(&net);
        critic.init(&mut || rng.normal_f64())?;
        critic.to_device(device)?;
        let adam = AdamConfig::default();
        let mut generator_optimizer = Adam::new(adam, &generator.params());
        generator_optimizer.to_device(device)?;
        let mut critic_optimizer = Adam::new(adam, &critic.params());
        critic_optimizer.to_device(device)?;
        let weights = config.step_weights();
        let inputs = |rng: &mut Rng| -> Result<StepInputs<f32>> {
            let mut noise = |kind| -> Result<Var<f32>> {
                Ok(Var::constant(draw_noise(rng, kind, (h, w), device)?))
            };
            Ok(StepInputs {
                real: noise(1)?,
                prev_random: noise(1)?,
                noise: noise(scale)?,
                prev_reconstruction: noise(1)?,
                fixed_noise: noise(scale)?,
                amplitude: 0.1,
                alpha: Var::constant(Tensor::full_on([1, 1, 1, 1], 0.5, device)?),
            })
        };
        let mut samples = Vec::with_capacity(steps);
        for step in 0..=steps {
            let step_inputs = inputs(&mut rng)?;
            device.synchronize()?;
            let started = Instant::now();
            let (_, fake) = critic_step(
                &mut generator,
                &mut critic,
                &mut critic_optimizer,
                &step_inputs,
                &weights,
            )?;
            generator_step(
                &mut generator,
                &mut critic,
                &mut generator_optimizer,
                &step_inputs,
                &fake,
                &weights,
            )?;
            drop(fake);
            device.synchronize()?;
            if step > 0 {
                samples.push(started.elapsed().as_secs_f64() * 1e3);
            }
        }
        samples.sort_by(|a, b| a.total_cmp(b));
        timings.push(IterationTiming {
            scale,
            size: (h, w),
            width: generator.width(),
            median_ms: samples[samples.len() / 2],
            min_ms: samples[0],
            gflop: iteration_gflop(config, scale, (h, w)),
        });
    }
    Ok(timings)
}
