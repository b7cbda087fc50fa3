//! Super-resolution by repeated application of the finest generator.
//!
//! A factor F is split into `steps = max(1, round(ln(1 / F) / ln(u0)))` upscaling steps of
//! `u = F^(1 / steps)` each, with `u0 = (1/2)^(1/3)`: F = 4 gives 6 steps of 4^(1/6), about
//! 1.26. The model is trained with the per-scale factor close to `1 / u` so that the finest
//! generator has learnt to add the detail that one such step removes. Inference then upscales
//! the finest real image by `u` and refines it with the finest generator, `steps` times, and
//! crops the result to `floor(F H) x floor(F W)`.

use crate::autograd::{no_grad, Var};
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::singan::apps::finest_scale;
use crate::singan::cascade::{draw_noise, planes_to_tensor, tensor_to_planes};
use crate::singan::config::TrainConfig;
use crate::singan::imresize::{resize, Planes, Resize};
use crate::singan::run::Model;

/// Shorter side of the coarsest scale when training for super-resolution, in pixels.
pub const SR_MIN_SIZE: usize = 18;
/// Reconstruction weight when training for super-resolution.
pub const SR_RECONSTRUCTION_WEIGHT: f64 = 100.0;
/// Largest output side, in pixels. It only guards against typing a pixel count as the
/// factor, which would otherwise try to allocate far more memory than any machine has.
pub const MAX_OUTPUT_SIDE: usize = 16384;

/// The upscaling steps that make up one factor.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SrPlan {
    /// The overall factor F.
    pub factor: f64,
    /// Number of upscaling steps.
    pub steps: usize,
    /// Upscaling per step, `F^(1 / steps)`.
    pub step_factor: f64,
}

impl SrPlan {
    /// Splits `factor` (greater than 1) into steps of about `2^(1/3)`.
    pub fn new(factor: f64) -> Result<Self> {
        if !(factor.is_finite() && factor > 1.0) {
            return Err(Error::invalid(
                "sr",
                format!(
                    "--factor {factor} is invalid; pass an upscaling factor greater than 1, \
                     for example --factor 4"
                ),
            ));
        }
        let base = 0.5f64.powf(1.0 / 3.0);
        let steps = ((1.0 / factor).ln() / base.ln()).round().max(1.0) as usize;
        Ok(SrPlan {
            factor,
            steps,
            step_factor: factor.powf(1.0 / steps as f64),
        })
    }

    /// Returns the `scale_factor_init` to train with: `1 / step_factor`.
    pub fn scale_factor_init(&self) -> f64 {
        1.0 / self.step_factor
    }

    /// Returns the output size for an input of `size` after checking that neither of its sides
    /// is over [`MAX_OUTPUT_SIDE`].
    ///
    /// NOTE: every step rounds the size up, so the last step refines an image a few percent
    /// larger than the output before the crop: 16789x16789 for a 64x64 input at factor 256,
    /// whose output is 16384x16384. The limit applies to the output only.
    pub fn checked_output_size(&self, size: (usize, usize)) -> Result<(usize, usize)> {
        let target = self.output_size(size);
        if target.0.max(target.1) <= MAX_OUTPUT_SIDE {
            return Ok(target);
        }
        let largest_factor = MAX_OUTPUT_SIDE as f64 / size.0.max(size.1) as f64;
        let fix = if largest_factor > 1.0 {
            // Rounded down to 4 decimals, so that the suggested factor passes this check.
            let suggested = (largest_factor * 1e4).floor() / 1e4;
            format!("pass a factor of at most {suggested} (it multiplies each side)")
        } else {
            format!("train on an image at most {MAX_OUTPUT_SIDE} pixels per side")
        };
        Err(Error::invalid(
            "sr",
            format!(
                "--factor {} would make a {}x{} image from {}x{}, over the limit of \
                 {MAX_OUTPUT_SIDE} pixels per side; {fix}",
                self.factor, target.0, target.1, size.0, size.1
            ),
        ))
    }

    /// Returns the output size for an input of `size`: `(floor(F H), floor(F W))`.
    pub fn output_size(&self, size: (usize, usize)) -> (usize, usize) {
        (
            (self.factor * size.0 as f64).floor() as usize,
            (self.factor * size.1 as f64).floor() as usize,
        )
    }
}

/// Applies the super-resolution settings to a training configuration: min size 18,
/// reconstruction weight 100 and `scale_factor_init = 1 / u`.
pub fn sr_train_config(base: TrainConfig, plan: &SrPlan) -> TrainConfig {
    TrainConfig {
        min_size: SR_MIN_SIZE,
        reconstruction_weight: SR_RECONSTRUCTION_WEIGHT,
        scale_factor_init: plan.scale_factor_init(),
        ..base
    }
}

/// Lists the settings of `config` that differ from those [`sr_train_config`] sets for `plan`,
/// as `name value (expected value)` texts.
pub fn sr_setting_differences(config: &TrainConfig, plan: &SrPlan) -> Vec<String> {
    let mut differences = Vec::new();
    if config.min_size != SR_MIN_SIZE {
        differences.push(format!(
            "min_size {} (expected {SR_MIN_SIZE})",
            config.min_size
        ));
    }
    if config.reconstruction_weight != SR_RECONSTRUCTION_WEIGHT {
        differences.push(format!(
            "reconstruction_weight {} (expected {SR_RECONSTRUCTION_WEIGHT})",
            config.reconstruction_weight
        ));
    }
    if (config.scale_factor_init - plan.scale_factor_init()).abs() > 1e-6 {
        differences.push(format!(
            "scale_factor_init {:.4} (expected {:.4} for factor {})",
            config.scale_factor_init,
            plan.scale_factor_init(),
            plan.factor
        ));
    }
    differences
}

/// Upscales the finest real image of `model` by `plan.factor` with its finest generator.
///
/// `prev_1 = resize(x_N, u)`, `out_j = G_N(prev_j + a_N n_j, prev_j)` and
/// `prev_(j+1) = resize(out_j, u)`, where each resize is in scale mode (sides `ceil(n u)`).
/// The noise `n_1` is one channel repeated over RGB and later noises have three channels.
/// `on_step` is called with each step number and size before the step runs. The generator
/// runs on the model's device, and the resizes between steps on the host.
pub fn super_resolve(
    model: &mut Model<f32>,
    plan: &SrPlan,
    rng: &mut Rng,
    on_step: &mut dyn FnMut(usize, (usize, usize)),
) -> Result<Planes<f32>> {
    let last = finest_scale(model, "sr")?;
    let target = plan.checked_output_size(model.info.pyramid.sizes[last])?;

    let amplitude = model.info.amplitudes[last];
    let device = model.device();
    let generator = &mut model.generators[last];
    let mut prev = resize(
        &tensor_to_planes(&model.reals[last])?,
        Resize::Scale(plan.step_factor),
    )?;
    let mut output = prev.clone();
    for step in 1..=plan.steps {
        on_step(step, (prev.height, prev.width));
        // The noise of the first step is single-channel, as at scale 0, and later ones are not.
        let noise_kind = if step == 1 { 0 } else { 1 };
        let noise = draw_noise::<f32>(rng, noise_kind, (prev.height, prev.width), &device)?;
        let refined = no_grad(|| -> Result<_> {
            let prev_var = Var::constant(planes_to_tensor::<f32>(&prev).to_device(&device)?);
            let z = prev_var.add(&Var::constant(noise).mul_scalar(amplitude)?)?;
            Ok(generator.forward(&z, &prev_var)?.value().clone())
        })?;
        output = tensor_to_planes(&refined)?;
        if step < plan.steps {
            prev = resize(&output, Resize::Scale(plan.step_factor))?;
        }
    }
    if output.height < target.0 || output.width < target.1 {
        // The chained ceil sizes are never below F H in exact arithmetic; this only catches
        // float rounding of u^steps below F.
        output = resize(
            &output,
            Resize::Sides {
                height: target.0.max(output.height),
                width: target.1.max(output.width),
            },
        )?;
    }
    Ok(output.crop_top_left(target.0, target.1)?)
}
