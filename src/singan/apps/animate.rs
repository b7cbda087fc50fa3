//! Animation: a random walk in noise space, one noise map per scale, rendered frame by frame
//! and encoded as a looping GIF.
//!
//! At every scale k the walk starts near the reconstruction noise `Z_k` and moves with
//! momentum `beta`, while `alpha` pulls every step back towards `Z_k`:
//!
//! ```text
//! z_prev1 = 0.95 Z_k + 0.05 xi,  z_prev2 = Z_k
//! per frame:  d = beta (z_prev1 - z_prev2) + (1 - beta) xi_i
//!             z_i = alpha Z_k + (1 - alpha) (z_prev1 + d),  z_prev2 = z_prev1,  z_prev1 = z_i
//! ```
//!
//! with fresh standard normal noise `xi` (one channel repeated over RGB at scale 0). Scales
//! below the start scale use `z_i = Z_k` in every frame, so they keep the reconstruction's
//! layout. Frame i runs the cascade with noise `z_i` at every scale.
//!
//! The models here are trained with the noise zero-padded inside the generator, not with noise
//! drawn over the padded size, so the walk covers the image but not the padding border.

use std::io::Cursor;

use image::codecs::gif::{GifEncoder, Repeat};
use image::{Delay, Frame, RgbaImage};

use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::singan::apps::{check_start_scale, finest_scale};
use crate::singan::cascade::{draw_noise, tensor_to_planes, Cascade, NoiseSource};
use crate::singan::image_io::encode_byte;
use crate::singan::imresize::Planes;
use crate::singan::pyramid::Size;
use crate::singan::run::Model;
use crate::tensor::{Device, Tensor};

/// Largest accepted frame rate. GIF delays count hundredths of a second, and browsers show
/// delays below 2 of them (faster than 50 frames per second) at 10 frames per second.
pub const MAX_FPS: u32 = 50;
/// GIF encoder speed, from 1 (best palette, slowest) to 30 (fastest).
const GIF_SPEED: i32 = 10;

/// Settings of an animation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnimationOptions {
    /// First scale whose noise walks; scales below it keep the reconstruction noise.
    pub start_scale: usize,
    /// Number of frames.
    pub frames: usize,
    /// Pull towards the reconstruction noise, in [0, 1].
    pub alpha: f64,
    /// Momentum of the walk, in [0, 1].
    pub beta: f64,
}

impl Default for AnimationOptions {
    fn default() -> Self {
        AnimationOptions {
            start_scale: 0,
            frames: 100,
            alpha: 0.1,
            beta: 0.9,
        }
    }
}

impl AnimationOptions {
    /// Checks the frame count and the walk weights, naming the option to fix.
    pub fn validate(&self) -> Result<()> {
        if self.frames == 0 {
            return Err(Error::invalid(
                "animate",
                "--frames 0 is invalid; pass at least 1 frame, for example --frames 100",
            ));
        }
        for (option, value) in [("--alpha", self.alpha), ("--beta", self.beta)] {
            if !(value.is_finite() && (0.0..=1.0).contains(&value)) {
                return Err(Error::invalid(
                    "animate",
                    format!("{option} {value} is invalid; pass a weight from 0 to 1"),
                ));
            }
        }
        Ok(())
    }
}

/// The walk state of one scale.
struct Walk {
    anchor: Vec<f32>,
    previous: Vec<f32>,
    before_previous: Vec<f32>,
}

impl Walk {
    fn new(anchor: &Tensor<f32>, rng: &mut Rng, scale: usize, size: Size) -> Result<Self> {
        let anchor = anchor.to_cpu()?.to_vec();
        let xi = draw_noise::<f32>(rng, scale, size, &Device::Cpu)?.to_vec();
        let previous = anchor
            .iter()
            .zip(&xi)
            .map(|(&z, &x)| 0.95 * z + 0.05 * x)
            .collect();
        Ok(Walk {
            before_previous: anchor.clone(),
            anchor,
            previous,
        })
    }

    fn step(&mut self, xi: &[f32], alpha: f32, beta: f32) -> Vec<f32> {
        let next: Vec<f32> = (0..self.anchor.len())
            .map(|i| {
                let d = beta * (self.previous[i] - self.before_previous[i]) + (1.0 - beta) * xi[i];
                alpha * self.anchor[i] + (1.0 - alpha) * (self.previous[i] + d)
            })
            .collect();
        self.before_previous = std::mem::replace(&mut self.previous, next.clone());
        next
    }
}

/// Renders the frames of an animation at the finest scale. `on_frame` is called with each
/// frame index after the frame is rendered.
///
/// The walk runs on the host, and each frame's noise maps are copied to the model's device
/// for the cascade. Noise drawn on the host has the same values as on a GPU.
pub fn animate(
    model: &mut Model<f32>,
    options: &AnimationOptions,
    rng: &mut Rng,
    on_frame: &mut dyn FnMut(usize),
) -> Result<Vec<Planes<f32>>> {
    options.validate()?;
    let last = finest_scale(model, "animate")?;
    check_start_scale("animate", options.start_scale, 0, last)?;
    let sizes = model.info.pyramid.sizes.clone();
    let device = model.device();
    let mut walks = (0..=last)
        .map(|k| Walk::new(&model.fixed_noises[k], rng, k, sizes[k]))
        .collect::<Result<Vec<Walk>>>()?;
    let (alpha, beta) = (options.alpha as f32, options.beta as f32);

    let mut frames = Vec::with_capacity(options.frames);
    for index in 0..options.frames {
        let mut noises = Vec::with_capacity(last + 1);
        for (k, walk) in walks.iter_mut().enumerate() {
            let xi = draw_noise::<f32>(rng, k, sizes[k], &Device::Cpu)?.to_vec();
            let z = walk.step(&xi, alpha, beta);
            if k < options.start_scale {
                noises.push(model.fixed_noises[k].clone());
            } else {
                noises.push(Tensor::from_vec_on(
                    [1, 3, sizes[k].0, sizes[k].1],
                    z,
                    &device,
                )?);
            }
        }
        let mut cascade = Cascade {
            generators: &mut model.generators,
            amplitudes: &model.info.amplitudes,
            sizes: &sizes,
            scale_factor: model.info.pyramid.scale_factor,
            device,
        };
        let frame = cascade.run(last, &mut NoiseSource::Fixed(&noises))?;
        frames.push(tensor_to_planes(&frame)?);
        on_frame(index);
    }
    Ok(frames)
}

/// Checks a GIF frame rate: 1 to [`MAX_FPS`] frames per second.
pub fn check_fps(fps: u32) -> Result<()> {
    if fps == 0 || fps > MAX_FPS {
        return Err(Error::invalid(
            "animate",
            format!(
                "--fps {fps} is invalid; pass 1 to {MAX_FPS} frames per second (GIF viewers \
                 slow down faster animations)"
            ),
        ));
    }
    Ok(())
}

/// Encodes 3-channel frames as a GIF that loops forever, showing `fps` frames per second.
///
/// Each frame gets its own 256-colour palette. The delay is `1000 / fps` milliseconds, which
/// the GIF format stores rounded down to hundredths of a second.
pub fn encode_gif(frames: &[Planes<f32>], fps: u32) -> Result<Vec<u8>> {
    check_fps(fps)?;
    let first = frames
        .first()
        .ok_or_else(|| Error::invalid("animate", "an animation needs at least one frame"))?;
    let (height, width) = (first.height, first.width);
    if height > usize::from(u16::MAX) || width > usize::from(u16::MAX) {
        return Err(Error::invalid(
            "animate",
            format!(
                "frames of {height}x{width} are too large for GIF, whose sides are at most {}",
                u16::MAX
            ),
        ));
    }
    let mut bytes = Vec::new();
    {
        let mut encoder = GifEncoder::new_with_speed(Cursor::new(&mut bytes), GIF_SPEED);
        encoder
            .set_repeat(Repeat::Infinite)
            .map_err(|e| Error::Message(format!("cannot encode GIF: {e}")))?;
        let delay = Delay::from_numer_denom_ms(1000, fps);
        for (index, frame) in frames.iter().enumerate() {
            if (frame.channels, frame.height, frame.width) != (3, height, width) {
                return Err(Error::invalid(
                    "animate",
                    format!(
                        "frame {index} is {}x{}x{} but frame 0 is 3x{height}x{width}",
                        frame.channels, frame.height, frame.width
                    ),
                ));
            }
            let plane = frame.plane_len();
            let mut rgba = Vec::with_capacity(4 * plane);
            for i in 0..plane {
                for c in 0..3 {
                    rgba.push(encode_byte(frame.data[c * plane + i]));
                }
                rgba.push(u8::MAX);
            }
            let buffer = RgbaImage::from_raw(width as u32, height as u32, rgba)
                .expect("an RGBA buffer of 4 * height * width bytes");
            encoder
                .encode_frame(Frame::from_parts(buffer, 0, 0, delay))
                .map_err(|e| Error::Message(format!("cannot encode GIF frame {index}: {e}")))?;
        }
    }
    Ok(bytes)
}
