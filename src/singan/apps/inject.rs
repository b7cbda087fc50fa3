//! Injection at scale n: harmonization, editing and paint-to-image.
//!
//! A reference image at the training size is downscaled to scale n - 1, upsampled into scale n
//! with the between-scale upsampling `U_n`, and run through generators n..=N with fresh noise.
//! The coarse layout and colours of the reference survive, and the generators replace its fine
//! texture with that of the training image. A lower n changes more of the reference.
//!
//! Harmonization and editing then blend the output into the reference with a soft mask:
//! `(1 - m) * reference + m * output`. Where `m` is exactly 0 the blend is the reference itself,
//! so those pixels keep the reference's bytes in the written PNG.

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::singan::apps::{check_start_scale, finest_scale};
use crate::singan::cascade::{planes_to_tensor, tensor_to_planes, Cascade, NoiseSource};
use crate::singan::imresize::{resize, Planes, Resize};
use crate::singan::pyramid::{Size, UpsamplePlan};
use crate::singan::run::Model;
use crate::tensor::Tensor;

/// Largest accepted aspect-ratio mismatch when a reference or mask is resized to the training
/// size: some one scale factor must bring both sides of the image within this many pixels of
/// the target's, or within [`ASPECT_TOLERANCE_FRACTION`] of the side, whichever is larger. The
/// slack accepts images at the original size of a training image that the pyramid shrank with
/// rounding.
pub const ASPECT_TOLERANCE_PIXELS: f64 = 1.0;
/// Relative form of [`ASPECT_TOLERANCE_PIXELS`].
pub const ASPECT_TOLERANCE_FRACTION: f64 = 0.01;

/// An image brought to the training size.
#[derive(Clone, Debug)]
pub struct Fitted {
    pub planes: Planes<f32>,
    /// The size before the resize, or `None` when the image already had the training size.
    pub resized_from: Option<Size>,
}

/// Describes the training size of `model` for messages: `HxW`, plus the loaded image's size
/// when the pyramid resized it.
pub fn training_size_text(model: &Model<f32>) -> String {
    let pyramid = &model.info.pyramid;
    let (h, w) = pyramid.resized_size;
    let (input_h, input_w) = pyramid.input_size;
    if (h, w) == (input_h, input_w) {
        format!("{h}x{w}")
    } else {
        format!("{h}x{w} (resized from a {input_h}x{input_w} image)")
    }
}

/// Checks whether an image of `size` can be resized to `target` without visibly changing its aspect
/// ratio (see [`ASPECT_TOLERANCE_PIXELS`]).
///
/// Each side accepts the scale factors that bring it within its slack of the target side, and
/// the two ranges must overlap. Fixing the factor at the width's exact ratio instead would
/// move a rounding error of the shorter side to the longer one, enlarged: a 366x585 image
/// shrunk to 41x64 (40.04 rounded up) predicts a width of 65.5 from the height.
pub fn aspect_ratio_matches(size: Size, target: Size) -> bool {
    let (h, w) = (size.0 as f64, size.1 as f64);
    let (th, tw) = (target.0 as f64, target.1 as f64);
    let slack = |side: f64| ASPECT_TOLERANCE_PIXELS.max(ASPECT_TOLERANCE_FRACTION * side);
    let lowest = ((th - slack(th)) / h).max((tw - slack(tw)) / w);
    let highest = ((th + slack(th)) / h).min((tw + slack(tw)) / w);
    lowest <= highest
}

/// Resizes `image` to `target` (height, width) with the bicubic resize, or rejects it when its
/// aspect ratio differs. `label` names the image in the error, for example
/// `"reference pasted.png"`, and `training` describes the training size.
pub fn fit_to_size(
    command: &'static str,
    image: Planes<f32>,
    target: Size,
    label: &str,
    training: &str,
) -> Result<Fitted> {
    let size = (image.height, image.width);
    if size == target {
        return Ok(Fitted {
            planes: image,
            resized_from: None,
        });
    }
    if !aspect_ratio_matches(size, target) {
        return Err(Error::invalid(
            command,
            format!(
                "{label} is {}x{} (height x width) but the model was trained at {training}; \
                 resizing it to {}x{} would change its aspect ratio (width / height) from {:.3} \
                 to {:.3}; crop or pad it to that aspect ratio, for example to exactly {}x{} \
                 pixels",
                size.0,
                size.1,
                target.0,
                target.1,
                size.1 as f64 / size.0 as f64,
                target.1 as f64 / target.0 as f64,
                target.0,
                target.1
            ),
        ));
    }
    let planes = resize(
        &image,
        Resize::Sides {
            height: target.0,
            width: target.1,
        },
    )?;
    Ok(Fitted {
        planes,
        resized_from: Some(size),
    })
}

/// Builds the input `y_n` of scale `start` from a reference at the finest size:
/// `resize(reference, r^(N - start + 1))`, cropped to scale `start - 1`, then `U_start`. The
/// resizes run on the host, and the result is on the model's device.
pub fn injection_input(
    model: &Model<f32>,
    reference: &Planes<f32>,
    start: usize,
    command: &'static str,
) -> Result<Tensor<f32>> {
    let last = finest_scale(model, command)?;
    check_start_scale(command, start, 1, last)?;
    let pyramid = &model.info.pyramid;
    let top = pyramid.sizes[last];
    if (reference.height, reference.width) != top || reference.channels != 3 {
        return Err(Error::invalid(
            command,
            format!(
                "the reference must be 3x{}x{} (the finest scale), not {}x{}x{}",
                top.0, top.1, reference.channels, reference.height, reference.width
            ),
        ));
    }
    let below = pyramid.sizes[start - 1];
    let scaled = resize(reference, Resize::Scale(pyramid.level_factor(start - 1)))?;
    let scaled = scaled.crop_top_left(below.0, below.1)?;
    let plan = UpsamplePlan::new(below, pyramid.scale_factor, pyramid.sizes[start])?;
    planes_to_tensor(&plan.apply(&scaled)?).to_device(&model.device())
}

/// Runs generators `start..=N` from the scale-`start` input `prev` with fresh noise and returns
/// the finest output.
pub fn run_from_scale(
    model: &mut Model<f32>,
    start: usize,
    prev: Tensor<f32>,
    rng: &mut Rng,
) -> Result<Planes<f32>> {
    let last = model.generators.len().saturating_sub(1);
    let sizes = model.info.pyramid.sizes.clone();
    let device = model.device();
    let mut cascade = Cascade {
        generators: &mut model.generators,
        amplitudes: &model.info.amplitudes,
        sizes: &sizes,
        scale_factor: model.info.pyramid.scale_factor,
        device,
    };
    let output = cascade.run_from(start, last, prev, &mut NoiseSource::Random(rng))?;
    tensor_to_planes(&output)
}

/// Injects `reference` (at the finest size) at scale `start` and returns the finest output.
pub fn inject(
    model: &mut Model<f32>,
    reference: &Planes<f32>,
    start: usize,
    rng: &mut Rng,
    command: &'static str,
) -> Result<Planes<f32>> {
    let prev = injection_input(model, reference, start, command)?;
    run_from_scale(model, start, prev, rng)
}

/// Blends `output` into `reference` with a one-channel soft mask:
/// `(1 - m) * reference + m * output`, channel by channel.
pub fn blend(
    reference: &Planes<f32>,
    output: &Planes<f32>,
    mask: &Planes<f32>,
) -> Result<Planes<f32>> {
    let size = (reference.height, reference.width);
    if (output.height, output.width) != size
        || (mask.height, mask.width) != size
        || output.channels != reference.channels
        || mask.channels != 1
    {
        return Err(Error::Message(format!(
            "cannot blend: reference {}x{}x{}, output {}x{}x{} and mask {}x{}x{} need one size \
             and a one-channel mask",
            reference.channels,
            reference.height,
            reference.width,
            output.channels,
            output.height,
            output.width,
            mask.channels,
            mask.height,
            mask.width
        )));
    }
    let plane = reference.plane_len();
    let data = reference
        .data
        .iter()
        .zip(&output.data)
        .enumerate()
        .map(|(i, (&r, &o))| {
            let m = mask.data[i % plane];
            (1.0 - m) * r + m * o
        })
        .collect();
    Ok(Planes::new(reference.channels, size.0, size.1, data)?)
}
