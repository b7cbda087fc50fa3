//! Drawing new images from a trained model: at the trained size, at other sizes and aspect
//! ratios, and from an intermediate scale whose input is the upsampled real image.

use crate::element::Element;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::singan::cascade::{planes_to_tensor, tensor_to_planes, upsample, Cascade, NoiseSource};
use crate::singan::imresize::{resize, Resize};
use crate::singan::pyramid::{Size, UpsamplePlan};
use crate::singan::run::Model;
use crate::tensor::Tensor;

/// Largest accepted size factor; larger values are taken for pixel counts and rejected.
pub const MAX_SIZE_FACTOR: f64 = 10.0;

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SampleOptions {
    /// Height factor relative to the trained size.
    pub scale_h: f64,
    /// Width factor relative to the trained size.
    pub scale_w: f64,
    /// First scale that draws fresh noise; above 0 its input is the real image of the scale
    /// below, upsampled, so the output keeps the training image's layout.
    pub start_scale: usize,
}

impl Default for SampleOptions {
    fn default() -> Self {
        SampleOptions {
            scale_h: 1.0,
            scale_w: 1.0,
            start_scale: 0,
        }
    }
}

/// Rounds half to even, as the reference implementation's size rounding does.
fn round_half_even(x: f64) -> usize {
    let floor = x.floor();
    let fraction = x - floor;
    let rounded = if fraction > 0.5 || (fraction == 0.5 && floor % 2.0 != 0.0) {
        floor + 1.0
    } else {
        floor
    };
    rounded.max(0.0) as usize
}

/// Checks a size factor, rejecting values that look like pixel counts.
fn check_factor(option: &str, value: f64, trained: usize) -> Result<()> {
    if !(value.is_finite() && value > 0.0) {
        return Err(Error::invalid(
            "sample",
            format!("{option} {value} must be a positive factor of the trained size"),
        ));
    }
    if value > MAX_SIZE_FACTOR {
        return Err(Error::invalid(
            "sample",
            format!(
                "{option} {value} looks like a pixel count; it is a factor of the trained size ({trained} pixels), \
                 so for {value} pixels use {option} {:.4}",
                value / trained as f64
            ),
        ));
    }
    Ok(())
}

/// Returns the per-scale sizes for `options`: `(round(scale_h H_k), round(scale_w W_k))`.
pub fn target_sizes(sizes: &[Size], options: &SampleOptions) -> Result<Vec<Size>> {
    let (top_h, top_w) = *sizes
        .last()
        .ok_or_else(|| Error::Message("the model has no scales".into()))?;
    check_factor("--scale-h", options.scale_h, top_h)?;
    check_factor("--scale-w", options.scale_w, top_w)?;
    let targets: Vec<Size> = sizes
        .iter()
        .map(|&(h, w)| {
            (
                round_half_even(options.scale_h * h as f64),
                round_half_even(options.scale_w * w as f64),
            )
        })
        .collect();
    if let Some((k, size)) = targets
        .iter()
        .enumerate()
        .find(|(_, &(h, w))| h < 1 || w < 1)
    {
        return Err(Error::invalid(
            "sample",
            format!(
                "the size factors make scale {k} empty ({}x{}); use larger --scale-h and --scale-w",
                size.0, size.1
            ),
        ));
    }
    Ok(targets)
}

/// Checks `options` against the finished scales of `model`, and returns the target size of
/// every finished scale.
pub fn check_options<T: Element>(
    model: &Model<T>,
    options: &SampleOptions,
) -> Result<Vec<(usize, usize)>> {
    let finished = model.generators.len();
    if finished == 0 {
        return Err(Error::Message(
            "the model has no finished scale to sample from".into(),
        ));
    }
    let last = finished - 1;
    if options.start_scale > last {
        return Err(Error::invalid(
            "sample",
            format!(
                "--start-scale {} is past the last trained scale {last}",
                options.start_scale
            ),
        ));
    }
    target_sizes(&model.info.pyramid.sizes[..finished], options)
}

/// Draws one image through the finished scales of `model`, on the model's device.
pub fn sample<T: Element>(
    model: &mut Model<T>,
    options: &SampleOptions,
    rng: &mut Rng,
) -> Result<Tensor<T>> {
    let sizes = check_options(model, options)?;
    let last = model.generators.len() - 1;
    let scale_factor = model.info.pyramid.scale_factor;
    let device = model.device();
    let start = options.start_scale;
    let prev = if start == 0 {
        None
    } else {
        // The real image of scale start - 1, brought to that scale's target size, upsampled.
        let below = tensor_to_planes(&model.reals[start - 1])?;
        let (h, w) = sizes[start - 1];
        let below = resize(
            &below,
            Resize::Sides {
                height: h,
                width: w,
            },
        )?;
        let plan = UpsamplePlan::new(sizes[start - 1], scale_factor, sizes[start])?;
        Some(upsample(
            &planes_to_tensor::<T>(&below).to_device(&device)?,
            &plan,
        )?)
    };
    let mut cascade = Cascade {
        generators: &mut model.generators,
        amplitudes: &model.info.amplitudes,
        sizes: &sizes,
        scale_factor,
        device,
    };
    let mut noise = NoiseSource::Random(rng);
    match prev {
        None => cascade.run(last, &mut noise),
        Some(prev) => cascade.run_from(start, last, prev, &mut noise),
    }
}
