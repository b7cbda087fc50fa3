//! Applications of a trained model.
//!
//! - [`inject`]: harmonization, editing and paint-to-image. A reference image is downscaled to
//!   an intermediate scale and the finer generators redraw it in the style of the training
//!   image.
//! - [`quantize`]: the colour quantisation and single-scale retraining of paint-to-image.
//! - [`super_resolution`]: upscaling by repeated application of the finest generator.
//! - [`animate`]: a random walk in noise space, rendered as the frames of a looping GIF.
//!
//! Every application needs a complete model, because each one works at the finest scale, the
//! size of the training image.

pub mod animate;
pub mod inject;
pub mod quantize;
pub mod super_resolution;

use crate::error::{Error, Result};
use crate::singan::run::Model;

/// Returns N, the index of the finest scale, after checking that every scale is trained.
pub fn finest_scale(model: &Model<f32>, command: &'static str) -> Result<usize> {
    let scales = model.info.pyramid.sizes.len();
    let finished = model.generators.len();
    if finished == 0 || finished < scales {
        return Err(Error::invalid(
            command,
            format!(
                "the run finished {finished} of its {scales} scales, and {command} needs all of \
                 them; finish the training first with `singan train --resume <run folder>`"
            ),
        ));
    }
    Ok(scales - 1)
}

/// Checks that `start` lies in `first..=last`, naming `--start-scale` and the range.
pub fn check_start_scale(
    command: &'static str,
    start: usize,
    first: usize,
    last: usize,
) -> Result<()> {
    if (first..=last).contains(&start) {
        return Ok(());
    }
    let hint = if start < first {
        format!(" ({command} starts from the scale below the start scale, and scale 0 has none)")
    } else {
        String::new()
    };
    Err(Error::invalid(
        command,
        format!(
            "--start-scale {start} is out of range; this model has scales 0 to {last}, so pass \
             a start scale from {first} to {last}{hint}"
        ),
    ))
}
