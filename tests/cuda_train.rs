//! The trainer on a CUDA GPU against the CPU: one small run with the same seed on both
//! devices, and the caching allocator over repeated training iterations.
//!
//! The real images, the reconstruction noises and the random generator state must be
//! identical, because the GPU draws the same Philox stream. Losses and weights are compared
//! in f32 within [`TOLERANCE`] of `max(1, max |CPU value|)`. Without a usable GPU every test
//! prints `skipped: no CUDA device` and passes.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Mutex, PoisonError};

use singan::autograd::Var;
use singan::cuda::CudaDevice;
use singan::nn::Module;
use singan::ops::random::draw;
use singan::optim::{Adam, AdamConfig};
use singan::rng::{DrawKind, Rng};
use singan::singan::cascade::{draw_noise, upsample};
use singan::singan::config::TrainConfig;
use singan::singan::imresize::Planes;
use singan::singan::loss_log::LossLog;
use singan::singan::model::{Discriminator, Generator, NetConfig};
use singan::singan::pyramid::UpsamplePlan;
use singan::singan::run::{load_model, LossRecord, Model};
use singan::singan::sample::{sample, SampleOptions};
use singan::singan::step::{critic_step, generator_step, StepInputs};
use singan::singan::train::{train, TrainJob};
use singan::Device;

mod common;
use common::{distance, gpu, read_losses, Quiet, TestFolder};

/// Relative tolerance of f32 losses and weights, as for the f32 trace replay.
const TOLERANCE: f64 = 1e-3;
/// Tolerance of batch-norm running means. A running mean includes the convolution bias before
/// it, and that bias drifts by Adam-amplified rounding noise on either device, so running means
/// are allowed the drift that the trace replay allows.
const RUNNING_MEAN_TOLERANCE: f64 = 1e-2;

/// Serialises the tests of this file, so the allocation counters of one are not moved by the
/// other.
static GPU_LOCK: Mutex<()> = Mutex::new(());

/// Draws a 36x48 image of diagonal stripes and a bright square, in [-1, 1].
fn stripes() -> Planes<f32> {
    let (h, w) = (36, 48);
    let mut data = vec![0.0f32; 3 * h * w];
    for c in 0..3 {
        for y in 0..h {
            for x in 0..w {
                let stripe = (((x + 2 * y + 5 * c) / 6) % 2) as f32;
                let square = (8..20).contains(&y) && (24..36).contains(&x);
                data[(c * h + y) * w + x] = if square { 0.9 } else { stripe - 0.5 };
            }
        }
    }
    Planes::new(3, h, w, data).unwrap()
}

fn small_config() -> TrainConfig {
    TrainConfig {
        num_steps: 5,
        max_features: 8,
        min_features: 8,
        print_every: 2,
        eval_every: 3,
        seed: 17,
        ..TrainConfig::default()
    }
}

/// Trains a run on `device` in a new test folder named `name`, and returns the folder with the
/// run folder inside it.
fn train_on(device: Device, name: &str) -> (TestFolder, PathBuf) {
    let folder = TestFolder::new(name);
    let dir = folder.join("run");
    let job = TrainJob {
        config: small_config(),
        image: stripes(),
        image_name: None,
        run_dir: dir.clone(),
        device,
    };
    train(&job, false, &mut Quiet, &AtomicBool::new(false))
        .unwrap_or_else(|error| panic!("training on {device} failed: {error}"));
    (folder, dir)
}

/// Compares the generator states of two models scale by scale. Convolution biases that feed a
/// training-mode batch norm change no output, so their values are rounding noise amplified by
/// Adam and are not compared.
fn assert_generators_close(gpu: &Model<f32>, cpu: &Model<f32>) {
    assert_eq!(gpu.generators.len(), cpu.generators.len());
    for (k, (g, c)) in gpu.generators.iter().zip(&cpu.generators).enumerate() {
        for ((name, ours), (_, reference)) in g.state().iter().zip(c.state()) {
            if name.starts_with("features.") && name.ends_with(".conv.bias") {
                continue;
            }
            let tolerance = if name.ends_with(".running_mean") {
                RUNNING_MEAN_TOLERANCE
            } else {
                TOLERANCE
            };
            let error = distance(&ours.to_f64_vec(), &reference.to_f64_vec());
            assert!(
                error <= tolerance,
                "scale {k} {name}: the GPU run differs from the CPU run by {error:.3e} \
                 (tolerance {tolerance:.0e})"
            );
        }
    }
}

#[test]
fn training_on_gpu_matches_cpu() {
    let Some(device) = gpu() else { return };
    let _serial = GPU_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let (_cpu_folder, cpu_dir) = train_on(Device::Cpu, "cpu");
    let (_gpu_folder, gpu_dir) = train_on(device, "gpu");

    let cpu_losses = read_losses(&cpu_dir);
    let gpu_losses = read_losses(&gpu_dir);
    assert_eq!(gpu_losses.len(), cpu_losses.len(), "losses.jsonl records");
    for (ours, reference) in gpu_losses.iter().zip(&cpu_losses) {
        let at = format!(
            "scale {} iteration {}",
            reference.scale, reference.iteration
        );
        assert_eq!(
            (ours.scale, ours.iteration),
            (reference.scale, reference.iteration)
        );
        assert_eq!(ours.lr, reference.lr, "{at}: learning rate");
        let names = |record: &LossRecord| record.values.keys().cloned().collect::<Vec<_>>();
        assert_eq!(names(ours), names(reference), "{at}: logged losses");
        for (name, value) in &reference.values {
            let error = distance(&[ours.values[name]], &[*value]);
            assert!(
                error <= TOLERANCE,
                "{at}: {name} is {} on the GPU and {value} on the CPU",
                ours.values[name]
            );
        }
    }

    // Both runs load on the CPU, whichever device wrote them.
    let gpu_model = load_model::<f32>(&gpu_dir).unwrap();
    let cpu_model = load_model::<f32>(&cpu_dir).unwrap();
    assert!(gpu_model.is_complete());
    assert_eq!(gpu_model.info.rng_state, cpu_model.info.rng_state);
    for k in 0..cpu_model.reals.len() {
        assert!(
            gpu_model.reals[k].bitwise_eq(&cpu_model.reals[k]),
            "real image of scale {k}"
        );
        assert!(
            gpu_model.fixed_noises[k].bitwise_eq(&cpu_model.fixed_noises[k]),
            "reconstruction noise of scale {k}"
        );
    }
    let amplitudes = |model: &Model<f32>| model.info.amplitudes.clone();
    let error = distance(&amplitudes(&gpu_model), &amplitudes(&cpu_model));
    assert!(error <= TOLERANCE, "noise amplitudes differ by {error:.3e}");
    assert_generators_close(&gpu_model, &cpu_model);

    // The CPU-trained model samples on the GPU like on the CPU.
    let mut on_cpu = load_model::<f32>(&cpu_dir).unwrap();
    let mut on_gpu = load_model::<f32>(&cpu_dir).unwrap();
    on_gpu.to_device(&device).unwrap();
    let options = SampleOptions::default();
    let cpu_sample = sample(&mut on_cpu, &options, &mut Rng::new(4)).unwrap();
    let gpu_sample = sample(&mut on_gpu, &options, &mut Rng::new(4)).unwrap();
    assert_eq!(gpu_sample.device(), device);
    let error = distance(&gpu_sample.to_f64_vec(), &cpu_sample.to_f64_vec());
    assert!(error <= TOLERANCE, "samples differ by {error:.3e}");
}

/// Runs `iterations` training iterations of one scale on the GPU the way the trainer does.
/// Each has an upsampled input from below, fresh noise and interpolation weight, and both
/// steps, and its losses go into a loss log that is read every third iteration. Returns the
/// number of driver allocations counted after each iteration.
fn allocations_per_iteration(device: Device, iterations: usize) -> Vec<u64> {
    let Device::Cuda(ordinal) = device else {
        panic!("{device} is not a GPU")
    };
    let handle = CudaDevice::shared(ordinal).unwrap();
    let net = NetConfig {
        max_features: 8,
        min_features: 8,
        num_blocks: 5,
        kernel_size: 3,
        padding: 0,
    };
    let mut rng = Rng::new(2);
    let mut generator = Generator::<f32>::new(&net);
    generator.init(&mut || rng.normal_f64()).unwrap();
    generator.to_device(&device).unwrap();
    let mut critic = Discriminator::<f32>::new(&net);
    critic.init(&mut || rng.normal_f64()).unwrap();
    critic.to_device(&device).unwrap();
    let mut generator_optimizer = Adam::new(AdamConfig::default(), &generator.params());
    generator_optimizer.to_device(&device).unwrap();
    let mut critic_optimizer = Adam::new(AdamConfig::default(), &critic.params());
    critic_optimizer.to_device(&device).unwrap();
    let weights = small_config().step_weights();
    let (below, size) = ((24, 32), (32, 42));
    let plan = UpsamplePlan::new(below, 0.75, size).unwrap();
    let real = Var::constant(draw_noise::<f32>(&mut rng, 1, size, &device).unwrap());
    let mut loss_log = LossLog::new(3, &device).unwrap();

    let mut fresh = Vec::with_capacity(iterations);
    for t in 0..iterations {
        let coarse = draw_noise::<f32>(&mut rng, 1, below, &device).unwrap();
        let prev = Var::constant(upsample(&coarse, &plan).unwrap());
        let alpha = draw::<f32>(&mut rng, DrawKind::UniformF32, [1, 1, 1, 1], &device).unwrap();
        let inputs = StepInputs {
            real: real.clone(),
            prev_random: prev.clone(),
            noise: Var::constant(draw_noise(&mut rng, 1, size, &device).unwrap()),
            prev_reconstruction: prev,
            fixed_noise: Var::constant(draw_noise(&mut rng, 1, size, &device).unwrap()),
            amplitude: 0.1,
            alpha: Var::constant(alpha),
        };
        let (critic_losses, fake) = critic_step(
            &mut generator,
            &mut critic,
            &mut critic_optimizer,
            &inputs,
            &weights,
        )
        .unwrap();
        let generator_losses = generator_step(
            &mut generator,
            &mut critic,
            &mut generator_optimizer,
            &inputs,
            &fake,
            &weights,
        )
        .unwrap();
        drop(fake);
        loss_log
            .push(t, 1e-3, &critic_losses, Some(&generator_losses))
            .unwrap();
        if loss_log.is_full() {
            for read in loss_log.read().unwrap() {
                assert!(
                    read.critic.critic.is_finite(),
                    "iteration {}",
                    read.iteration
                );
            }
        }
        drop((inputs, critic_losses, generator_losses));
        fresh.push(handle.pool_stats().fresh_allocations);
    }
    fresh
}

#[test]
fn training_iterations_allocate_only_in_the_first() {
    let Some(device) = gpu() else { return };
    let _serial = GPU_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let fresh = allocations_per_iteration(device, 7);
    assert_eq!(
        fresh[0],
        fresh[fresh.len() - 1],
        "driver allocations counted after each iteration: {fresh:?}; only the first \
         iteration may allocate"
    );
}
