//! SinGAN scale pyramid: the size table, the per-scale factor r, the real images x_0..x_N and
//! the between-scale upsampling.
//!
//! With H, W the loaded image size, m0 = `min_size`, M = `max_size`, r0 = `scale_factor_init`
//! and `log_b(x) = ln(x) / ln(b)`:
//!
//! ```text
//! num_scales = ceil(log_r0(m0 / min(H, W))) + 1
//! stop_first = num_scales - ceil(log_r0(min(M, max(H, W)) / max(H, W)))
//! scale_one  = min(M / max(H, W), 1)
//! H1 x W1    = output size of resize(image, scale_one)   (scale mode, may take the integer path)
//! r          = (m0 / min(H1, W1)) ^ (1 / stop_first)
//! N          = stop_first                                 (PyramidRule::Spec)
//!            = num_scales - ceil(log_r0(min(M, max(H1, W1)) / max(H1, W1)))   (PyramidRule::Fork)
//! x_k        = resize(x_top, r ^ (N - k)), k = 0..=N, x_top = resize(image, scale_one)
//! ```
//!
//! Everything is evaluated in f64 with `ln(x) / ln(b)` and `powf`, in exactly this order. Sizes
//! are sensitive to it: for a 188x250 image, `188 * r^9` is 25.00000000000001, so the coarsest
//! height is 26. Every size comes from [`imresize::output_size`], the function that the resize
//! itself uses, so a resized image always has the size in the table.
//!
//! A table may repeat a size: r = 1 (`min(H1, W1) = min_size`) gives one size at every scale,
//! and r just below 1 can round a step away. Such a table is valid but pointless, because the
//! repeated scales train nothing new. [`Pyramid::repeated_scale`] finds the first repeat, and
//! the `--min-size` and `--max-size` values that errors suggest never give one.

use serde::{Deserialize, Serialize};
use std::fmt;
use thiserror::Error;

use super::imresize::{self, Planes, Resize, ResizeError, ResizePlan, Sample};

/// Image size as `(height, width)`.
pub type Size = (usize, usize);

/// Rule that chooses the number of scales N.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PyramidRule {
    /// N = stop_first, computed from the loaded image.
    #[default]
    Spec,
    /// N recomputed from the image after the first resize, as the SinGAN fork that this mode
    /// is named after does. For images larger than `max_size` this gives more scales than
    /// `Spec`, and the extra coarse scales fall below `min_size` (a 683x1024 image gets 8x12 at
    /// scale 0). Use only for parity tests.
    Fork,
}

/// Settings that determine the pyramid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PyramidConfig {
    /// Target length in pixels of the shorter side at the coarsest scale (default 25).
    pub min_size: usize,
    /// Maximum length in pixels of the longer side at the finest scale (default 250).
    pub max_size: usize,
    /// Initial per-scale factor r0 in (0, 1) from which the number of scales is derived
    /// (default 0.75).
    pub scale_factor_init: f64,
    pub rule: PyramidRule,
    /// Conv layers per network (default 5). With `kernel_size` it sets the minimum scale side.
    pub num_blocks: usize,
    /// Conv kernel size (default 3).
    pub kernel_size: usize,
}

impl Default for PyramidConfig {
    fn default() -> Self {
        Self {
            min_size: 25,
            max_size: 250,
            scale_factor_init: 0.75,
            rule: PyramidRule::Spec,
            num_blocks: 5,
            kernel_size: 3,
        }
    }
}

impl PyramidConfig {
    /// Smallest height or width a scale may have: `2 * num_blocks * floor(kernel_size / 2) + 1`
    /// (11 by default). Each unpadded conv layer of the discriminator removes
    /// `2 * floor(kernel_size / 2)` pixels, and at least one output pixel must remain.
    pub fn min_scale_side(&self) -> usize {
        2 * self.num_blocks * (self.kernel_size / 2) + 1
    }

    fn validate(&self) -> Result<(), PyramidError> {
        if self.min_size == 0 {
            return Err(PyramidError::InvalidConfig {
                name: "min_size",
                value: self.min_size.to_string(),
                expected: "a side length of at least 1 pixel",
            });
        }
        if self.max_size == 0 {
            return Err(PyramidError::InvalidConfig {
                name: "max_size",
                value: self.max_size.to_string(),
                expected: "a side length of at least 1 pixel",
            });
        }
        let r0 = self.scale_factor_init;
        if !(r0.is_finite() && r0 > 0.0 && r0 < 1.0) {
            return Err(PyramidError::InvalidConfig {
                name: "scale_factor_init",
                value: r0.to_string(),
                expected: "a factor strictly between 0 and 1, such as 0.75",
            });
        }
        Ok(())
    }
}

/// `--min-size` and `--max-size` values that would make a rejected image valid, each the
/// closest working value to the current setting with the other setting unchanged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SizeSuggestion {
    pub min_size: Option<usize>,
    pub max_size: Option<usize>,
}

impl fmt::Display for SizeSuggestion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.min_size, self.max_size) {
            (Some(min_size), Some(max_size)) => {
                write!(f, "try --min-size {min_size} or --max-size {max_size}")
            }
            (Some(min_size), None) => write!(f, "try --min-size {min_size}"),
            (None, Some(max_size)) => write!(f, "try --max-size {max_size}"),
            (None, None) => write!(
                f,
                "no --min-size or --max-size value alone gives this image a pyramid that \
                 shrinks at every scale; use a larger or less elongated image"
            ),
        }
    }
}

/// Maximum number of scales that [`Pyramid::new`] accepts. The default settings give 9 for a
/// 250-pixel image and super-resolution about a dozen. A `scale_factor_init` just below 1
/// requests thousands or millions, each a network to train, which would exhaust memory.
pub const MAX_SCALES: usize = 128;

/// Errors from building a pyramid or resizing images with it.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum PyramidError {
    #[error("invalid pyramid setting {name} = {value}; use {expected}")]
    InvalidConfig {
        name: &'static str,
        value: String,
        expected: &'static str,
    },

    #[error("image size {height}x{width} is empty; load an image with at least one pixel")]
    EmptyImage { height: usize, width: usize },

    #[error(
        "image {height}x{width} leaves no room for a pyramid: with scale_factor_init \
         {scale_factor_init}, the steps that take its shorter side down to min_size {min_size} \
         are no more than the steps that shrink its longer side to max_size {max_size}, so \
         fewer than 2 scales remain; {suggestion}"
    )]
    TooFewScales {
        height: usize,
        width: usize,
        stop_scale: i64,
        min_size: usize,
        max_size: usize,
        scale_factor_init: f64,
        suggestion: SizeSuggestion,
    },

    #[error(
        "image {height}x{width}{} has a shorter side below min_size {min_size}, so the \
         per-scale factor would exceed 1; {suggestion}",
        resize_clause((*.height, *.width), (*.resized_height, *.resized_width), *.max_size)
    )]
    ResizedBelowMinSize {
        height: usize,
        width: usize,
        resized_height: usize,
        resized_width: usize,
        min_size: usize,
        max_size: usize,
        suggestion: SizeSuggestion,
    },

    #[error(
        "image {height}x{width}: scale {scale} of 0 to {stop_scale} (factor {factor:.4}) is \
         {scale_height}x{scale_width}, below the minimum side {min_side} needed by \
         {num_blocks} unpadded conv layers of kernel {kernel_size}; {suggestion}"
    )]
    ScaleTooSmall {
        height: usize,
        width: usize,
        scale: usize,
        stop_scale: usize,
        factor: f64,
        scale_height: usize,
        scale_width: usize,
        min_side: usize,
        num_blocks: usize,
        kernel_size: usize,
        suggestion: SizeSuggestion,
    },

    #[error(
        "image {height}x{width} would have {scales} scales with scale_factor_init \
         {scale_factor_init}, more than the {max_scales} that a pyramid may have; use a \
         smaller --scale-factor-init, such as the default 0.75"
    )]
    TooManyScales {
        height: usize,
        width: usize,
        scales: u64,
        scale_factor_init: f64,
        max_scales: usize,
    },

    #[error(
        "image is {actual_height}x{actual_width} but the pyramid was built for \
         {expected_height}x{expected_width}; build the pyramid from this image's size"
    )]
    ImageSizeMismatch {
        expected_height: usize,
        expected_width: usize,
        actual_height: usize,
        actual_width: usize,
    },

    #[error("scale index {scale} is out of range; valid scales are {first} to {last}")]
    ScaleOutOfRange {
        scale: usize,
        first: usize,
        last: usize,
    },

    #[error("per-scale factor {factor} is invalid for upsampling; use a finite value above 0")]
    InvalidFactor { factor: f64 },

    #[error(transparent)]
    Resize(#[from] ResizeError),
}

/// Describes the resize of an image of `size` to `resized` for `max_size`, or nothing when the
/// image kept its size.
fn resize_clause(size: Size, resized: Size, max_size: usize) -> String {
    if size == resized {
        String::new()
    } else {
        format!(
            " resized to {}x{} for max_size {max_size}",
            resized.0, resized.1
        )
    }
}

impl PyramidError {
    fn set_suggestion(&mut self, value: SizeSuggestion) {
        match self {
            PyramidError::TooFewScales { suggestion, .. }
            | PyramidError::ResizedBelowMinSize { suggestion, .. }
            | PyramidError::ScaleTooSmall { suggestion, .. } => *suggestion = value,
            _ => {}
        }
    }

    /// Returns whether the error rejects the image size for the current `min_size` and
    /// `max_size`, so that another value of one of them may help.
    fn is_size_rejection(&self) -> bool {
        matches!(
            self,
            PyramidError::TooFewScales { .. }
                | PyramidError::ResizedBelowMinSize { .. }
                | PyramidError::ScaleTooSmall { .. }
        )
    }
}

/// Size table and factors of one pyramid. Scale 0 is the coarsest and scale `stop_scale` the
/// finest (the image after the first resize).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pyramid {
    /// Loaded image size.
    pub input_size: Size,
    pub num_scales: i64,
    pub stop_scale_first: i64,
    /// Factor of the first resize, from the loaded image to x_top.
    pub scale_one: f64,
    /// Size of x_top, the finest scale.
    pub resized_size: Size,
    /// Per-scale factor r.
    pub scale_factor: f64,
    /// N: index of the finest scale, so there are N + 1 scales.
    pub stop_scale: usize,
    pub rule: PyramidRule,
    /// Size of scale k at index k, for k = 0..=N.
    pub sizes: Vec<Size>,
}

fn log_base(x: f64, base: f64) -> f64 {
    x.ln() / base.ln()
}

impl Pyramid {
    /// Computes the pyramid of an image of `input_size` and checks that it can be trained:
    /// `stop_first >= 1`, `min(H1, W1) >= min_size`, and every scale side at least
    /// [`PyramidConfig::min_scale_side`]. A rejection suggests a `--min-size` or `--max-size`
    /// value that passes these checks and gives a table without repeated sizes.
    pub fn new(input_size: Size, config: &PyramidConfig) -> Result<Self, PyramidError> {
        match Self::compute(input_size, config, true) {
            Ok(pyramid) => Ok(pyramid),
            Err(mut error) => {
                if error.is_size_rejection() {
                    error.set_suggestion(suggest_sizes(input_size, config));
                }
                Err(error)
            }
        }
    }

    /// Computes the pyramid without the `min_size` and minimum-side checks, for parity tests
    /// of [`PyramidRule::Fork`]. Invalid settings, empty images and `stop_first < 1` (which
    /// leaves r undefined) are still rejected.
    pub fn new_unvalidated(input_size: Size, config: &PyramidConfig) -> Result<Self, PyramidError> {
        Self::compute(input_size, config, false)
    }

    fn compute(
        input_size: Size,
        config: &PyramidConfig,
        validate: bool,
    ) -> Result<Self, PyramidError> {
        config.validate()?;
        let (height, width) = input_size;
        if height == 0 || width == 0 {
            return Err(PyramidError::EmptyImage { height, width });
        }
        let too_few_scales = |stop_scale: i64| PyramidError::TooFewScales {
            height,
            width,
            stop_scale,
            min_size: config.min_size,
            max_size: config.max_size,
            scale_factor_init: config.scale_factor_init,
            suggestion: SizeSuggestion::default(),
        };

        let r0 = config.scale_factor_init;
        let min_size = config.min_size as f64;
        let max_size = config.max_size as f64;
        let short_side = height.min(width) as f64;
        let long_side = height.max(width) as f64;

        let num_scales = log_base(min_size / short_side, r0).ceil() as i64 + 1;
        let stop_first =
            num_scales - log_base(max_size.min(long_side) / long_side, r0).ceil() as i64;
        if stop_first < 1 {
            return Err(too_few_scales(stop_first));
        }

        let scale_one = (max_size / long_side).min(1.0);
        let resized_size = imresize::output_size(height, width, Resize::Scale(scale_one))?;
        let (resized_height, resized_width) = resized_size;
        if validate && resized_height.min(resized_width) < config.min_size {
            return Err(PyramidError::ResizedBelowMinSize {
                height,
                width,
                resized_height,
                resized_width,
                min_size: config.min_size,
                max_size: config.max_size,
                suggestion: SizeSuggestion::default(),
            });
        }

        let resized_short = resized_height.min(resized_width) as f64;
        let scale_factor = (min_size / resized_short).powf(1.0 / stop_first as f64);

        let stop_scale = match config.rule {
            PyramidRule::Spec => stop_first,
            PyramidRule::Fork => {
                let resized_long = resized_height.max(resized_width) as f64;
                let ratio = max_size.min(resized_long) / resized_long;
                num_scales - log_base(ratio, r0).ceil() as i64
            }
        };
        if stop_scale < 1 {
            return Err(too_few_scales(stop_scale));
        }
        if validate && stop_scale >= MAX_SCALES as i64 {
            return Err(PyramidError::TooManyScales {
                height,
                width,
                scales: stop_scale as u64 + 1,
                scale_factor_init: config.scale_factor_init,
                max_scales: MAX_SCALES,
            });
        }
        let stop_scale = stop_scale as usize;

        let mut sizes = Vec::with_capacity(stop_scale + 1);
        for k in 0..=stop_scale {
            let factor = scale_factor.powf((stop_scale - k) as f64);
            let size = imresize::output_size(resized_height, resized_width, Resize::Scale(factor))?;
            sizes.push(size);
        }

        let pyramid = Self {
            input_size,
            num_scales,
            stop_scale_first: stop_first,
            scale_one,
            resized_size,
            scale_factor,
            stop_scale,
            rule: config.rule,
            sizes,
        };
        if validate {
            pyramid.check_min_side(config)?;
        }
        Ok(pyramid)
    }

    fn check_min_side(&self, config: &PyramidConfig) -> Result<(), PyramidError> {
        let min_side = config.min_scale_side();
        for (k, &(scale_height, scale_width)) in self.sizes.iter().enumerate() {
            if scale_height < min_side || scale_width < min_side {
                return Err(PyramidError::ScaleTooSmall {
                    height: self.input_size.0,
                    width: self.input_size.1,
                    scale: k,
                    stop_scale: self.stop_scale,
                    factor: self.level_factor(k),
                    scale_height,
                    scale_width,
                    min_side,
                    num_blocks: config.num_blocks,
                    kernel_size: config.kernel_size,
                    suggestion: SizeSuggestion::default(),
                });
            }
        }
        Ok(())
    }

    /// Returns the first scale `k` that is not smaller than scale `k + 1` in both height and
    /// width, or `None` when every scale shrinks. A repeated size comes from r = 1
    /// (`min(H1, W1) = min_size`) or from r so close to 1 that rounding up cancels a step.
    /// Training accepts such a table, but the repeated scale adds no detail.
    pub fn repeated_scale(&self) -> Option<usize> {
        self.sizes
            .windows(2)
            .position(|pair| pair[0].0 >= pair[1].0 || pair[0].1 >= pair[1].1)
    }

    /// Number of scales, N + 1.
    pub fn len(&self) -> usize {
        self.sizes.len()
    }

    /// Returns whether the size table is empty, which is never true for a pyramid from
    /// [`Pyramid::new`] or [`Pyramid::new_unvalidated`] (they give at least two scales).
    pub fn is_empty(&self) -> bool {
        self.sizes.is_empty()
    }

    /// Resize factor from x_top to scale k: `r ^ (N - k)` (1 at the finest scale).
    pub fn level_factor(&self, k: usize) -> f64 {
        self.scale_factor
            .powf(self.stop_scale.saturating_sub(k) as f64)
    }

    /// Size of scale k.
    pub fn size(&self, k: usize) -> Result<Size, PyramidError> {
        self.sizes
            .get(k)
            .copied()
            .ok_or(PyramidError::ScaleOutOfRange {
                scale: k,
                first: 0,
                last: self.stop_scale,
            })
    }

    /// Size of `U_{k+1}` applied to scale k before the crop to scale k + 1, for k < N.
    pub fn upsampled_size(&self, k: usize) -> Result<Size, PyramidError> {
        if k >= self.stop_scale {
            return Err(PyramidError::ScaleOutOfRange {
                scale: k,
                first: 0,
                last: self.stop_scale.saturating_sub(1),
            });
        }
        upsampled_size(self.sizes[k], self.scale_factor, self.sizes[k + 1])
    }

    /// Builds a reusable plan for `U_k`, from the size of scale k - 1 to scale k (k in 1..=N).
    pub fn upsample_plan(&self, k: usize) -> Result<UpsamplePlan, PyramidError> {
        if k == 0 || k > self.stop_scale {
            return Err(PyramidError::ScaleOutOfRange {
                scale: k,
                first: 1,
                last: self.stop_scale,
            });
        }
        UpsamplePlan::new(self.sizes[k - 1], self.scale_factor, self.sizes[k])
    }

    /// Applies `U_k` to `image`, a scale-(k - 1) image, giving a scale-k image (k in 1..=N).
    pub fn upsample<T: Sample>(
        &self,
        image: &Planes<T>,
        k: usize,
    ) -> Result<Planes<T>, PyramidError> {
        if k == 0 || k > self.stop_scale {
            return Err(PyramidError::ScaleOutOfRange {
                scale: k,
                first: 1,
                last: self.stop_scale,
            });
        }
        upsample_to(image, self.scale_factor, self.sizes[k])
    }

    /// Resizes the loaded image to x_top, the finest scale (`resize(image, scale_one)`).
    pub fn top_image<T: Sample>(&self, image: &Planes<T>) -> Result<Planes<T>, PyramidError> {
        if (image.height, image.width) != self.input_size {
            return Err(PyramidError::ImageSizeMismatch {
                expected_height: self.input_size.0,
                expected_width: self.input_size.1,
                actual_height: image.height,
                actual_width: image.width,
            });
        }
        let top = imresize::resize(image, Resize::Scale(self.scale_one))?;
        debug_assert_eq!((top.height, top.width), self.resized_size);
        Ok(top)
    }

    /// Builds the real images x_0..=x_N from the loaded image (see
    /// [`Pyramid::real_images_from_top`]).
    pub fn real_images<T: Sample>(
        &self,
        image: &Planes<T>,
    ) -> Result<Vec<Planes<T>>, PyramidError> {
        let top = self.top_image(image)?;
        self.real_images_from_top(top)
    }

    /// Builds the real images x_0..=x_N from x_top, which becomes x_N. Each x_k is resized
    /// directly from x_top by `r ^ (N - k)`, not chained from the next finer scale.
    pub fn real_images_from_top<T: Sample>(
        &self,
        top: Planes<T>,
    ) -> Result<Vec<Planes<T>>, PyramidError> {
        if (top.height, top.width) != self.resized_size {
            return Err(PyramidError::ImageSizeMismatch {
                expected_height: self.resized_size.0,
                expected_width: self.resized_size.1,
                actual_height: top.height,
                actual_width: top.width,
            });
        }
        let mut images = Vec::with_capacity(self.len());
        for k in 0..self.stop_scale {
            let scaled = imresize::resize(&top, Resize::Scale(self.level_factor(k)))?;
            debug_assert_eq!((scaled.height, scaled.width), self.sizes[k]);
            images.push(scaled);
        }
        images.push(top);
        Ok(images)
    }
}

/// Computes the pyramid for `image` and its real images x_0..=x_N.
pub fn build_real_pyramid<T: Sample>(
    image: &Planes<T>,
    config: &PyramidConfig,
) -> Result<(Pyramid, Vec<Planes<T>>), PyramidError> {
    let pyramid = Pyramid::new((image.height, image.width), config)?;
    let images = pyramid.real_images(image)?;
    Ok((pyramid, images))
}

/// Size before cropping in `U_{k+1}`: `(max(ceil(h * (1 / r)), target_h), max(ceil(w * (1 /
/// r)), target_w))`, with the ceil sizes from the scale-mode rule of the resize. The max only
/// guards against float rounding, because `ceil(H_k / r) >= H_{k+1}` in exact arithmetic.
pub fn upsampled_size(size: Size, factor: f64, target: Size) -> Result<Size, PyramidError> {
    if !(factor.is_finite() && factor > 0.0) {
        return Err(PyramidError::InvalidFactor { factor });
    }
    let (height, width) = imresize::output_size(size.0, size.1, Resize::Scale(1.0 / factor))?;
    Ok((height.max(target.0), width.max(target.1)))
}

/// Between-scale upsampling `U`: resize by `1 / factor` (sides mode, to
/// [`upsampled_size`]), then keep the top-left `target` rows and columns.
pub fn upsample_to<T: Sample>(
    image: &Planes<T>,
    factor: f64,
    target: Size,
) -> Result<Planes<T>, PyramidError> {
    UpsamplePlan::new((image.height, image.width), factor, target)?.apply(image)
}

/// Precomputed `U` from one size to a target size, for repeated use during training.
#[derive(Debug, Clone, PartialEq)]
pub struct UpsamplePlan {
    pub resize: ResizePlan,
    pub target: Size,
}

impl UpsamplePlan {
    /// Builds the resize tables of `U` from `size` to `target` with per-scale factor `factor`.
    pub fn new(size: Size, factor: f64, target: Size) -> Result<Self, PyramidError> {
        let (height, width) = upsampled_size(size, factor, target)?;
        let resize = ResizePlan::new(size.0, size.1, Resize::Sides { height, width })?;
        Ok(Self { resize, target })
    }

    /// Upsamples `image` and crops it to the target size.
    pub fn apply<T: Sample>(&self, image: &Planes<T>) -> Result<Planes<T>, PyramidError> {
        let upsampled = self.resize.apply(image)?;
        Ok(upsampled.crop_top_left(self.target.0, self.target.1)?)
    }
}

/// Finds the `min_size` and `max_size` values closest to the current ones for which
/// [`Pyramid::new`] accepts `input_size` with a table that repeats no size, changing one
/// setting at a time.
///
/// `min_size` above the shorter image side can never work, and every `max_size` at or above
/// the longer side behaves like the longer side, so the search covers `1..=shorter side` and
/// `1..=longer side`.
fn suggest_sizes(input_size: Size, config: &PyramidConfig) -> SizeSuggestion {
    let short_side = input_size.0.min(input_size.1);
    let long_side = input_size.0.max(input_size.1);
    let accepts = |candidate: &PyramidConfig| {
        Pyramid::compute(input_size, candidate, true)
            .is_ok_and(|pyramid| pyramid.repeated_scale().is_none())
    };

    let min_size = nearest_accepted(config.min_size, short_side, |value| {
        accepts(&PyramidConfig {
            min_size: value,
            ..config.clone()
        })
    });
    let max_size = nearest_accepted(config.max_size.min(long_side), long_side, |value| {
        value != config.max_size
            && accepts(&PyramidConfig {
                max_size: value,
                ..config.clone()
            })
    });
    SizeSuggestion { min_size, max_size }
}

/// Returns the value in `1..=upper` closest to `start` for which `accepts` holds, preferring
/// the smaller value on ties.
fn nearest_accepted(start: usize, upper: usize, accepts: impl Fn(usize) -> bool) -> Option<usize> {
    let start = start.clamp(1, upper.max(1));
    for distance in 0..upper {
        let below = start.checked_sub(distance).filter(|&value| value >= 1);
        let above = start
            .checked_add(distance)
            .filter(|&value| value <= upper && distance > 0);
        for candidate in [below, above].into_iter().flatten() {
            if accepts(candidate) {
                return Some(candidate);
            }
        }
        if below.is_none() && start + distance > upper {
            break;
        }
    }
    None
}
