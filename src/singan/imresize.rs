//! MATLAB-compatible bicubic resize on planar (CHW) buffers.
//!
//! The kernel is the cubic convolution kernel with a = -0.5. Downscaling widens the kernel by
//! the inverse of the effective scale m/n (antialiasing), and out-of-range taps read the array
//! through symmetric reflection that repeats the edge sample. The resize is separable: every
//! channel plane is resized along the height first, then along the width. Weights and sums are
//! computed in f64 for both f32 and f64 data.
//!
//! Two entry points exist, as in MATLAB's `imresize`:
//! * [`Resize::Sides`] resizes each axis to the requested length with the general path.
//! * [`Resize::Scale`] takes the integer-downscale path when `1.0 / scale` is an exact integer
//!   s. That path outputs `floor(n / s)` samples per axis and applies a fixed kernel of 4s or
//!   4s - 1 taps with stride s. Other scales resize each axis to `ceil(n * scale)` with the
//!   general path.
//!
//! A [`ResizePlan`] contains the per-axis [`WeightTable`]s, so a caller that resizes many images of
//! the same size can build the plan once and apply it repeatedly.

use thiserror::Error;

/// Errors from building or applying a resize.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ResizeError {
    #[error(
        "planes buffer has {actual} values but {channels}x{height}x{width} (CHW) needs \
         {expected}; pass a buffer of exactly channels*height*width values"
    )]
    DataLength {
        channels: usize,
        height: usize,
        width: usize,
        expected: usize,
        actual: usize,
    },

    #[error(
        "cannot resize an empty {height}x{width} image; the input needs at least one row \
         and one column"
    )]
    EmptyInput { height: usize, width: usize },

    #[error("resize scale {scale} is invalid; use a finite value greater than 0")]
    InvalidScale { scale: f64 },

    #[error(
        "resize target {height}x{width} is invalid; both sides must be at least 1 and the \
         output must fit in memory"
    )]
    InvalidSides { height: usize, width: usize },

    #[error(
        "1-D resize from {in_len} to {out_len} samples is invalid; both lengths must be at \
         least 1"
    )]
    InvalidAxis { in_len: usize, out_len: usize },

    #[error("integer-downscale factor {factor} is invalid; use a factor of at least 1")]
    InvalidFactor { factor: usize },

    #[error(
        "resizing {in_height}x{in_width} by scale {scale} gives an empty \
         {out_height}x{out_width} output; use a larger scale or a larger image"
    )]
    EmptyOutput {
        in_height: usize,
        in_width: usize,
        scale: f64,
        out_height: usize,
        out_width: usize,
    },

    #[error(
        "resize of {in_height}x{in_width} by scale {scale} gives an output too large to \
         allocate; use a smaller scale"
    )]
    OutputTooLarge {
        in_height: usize,
        in_width: usize,
        scale: f64,
    },

    #[error(
        "resize plan was built for {expected_height}x{expected_width} input but got \
         {actual_height}x{actual_width}; build a new plan for this size"
    )]
    PlanSizeMismatch {
        expected_height: usize,
        expected_width: usize,
        actual_height: usize,
        actual_width: usize,
    },

    #[error(
        "cannot crop {height}x{width} planes to {crop_height}x{crop_width}; the crop must \
         not be larger than the input"
    )]
    CropTooLarge {
        height: usize,
        width: usize,
        crop_height: usize,
        crop_width: usize,
    },

    #[error(
        "cannot broadcast {channels}-channel planes to {requested} channels; only \
         single-channel planes can be broadcast"
    )]
    Broadcast { channels: usize, requested: usize },
}

/// Image or feature planes in CHW layout: `data[(c * height + y) * width + x]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Planes<T = f32> {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub data: Vec<T>,
}

impl<T: Copy> Planes<T> {
    /// Wraps `data` after checking that it has `channels * height * width` values.
    pub fn new(
        channels: usize,
        height: usize,
        width: usize,
        data: Vec<T>,
    ) -> Result<Self, ResizeError> {
        let expected = channels
            .checked_mul(height)
            .and_then(|n| n.checked_mul(width));
        if expected != Some(data.len()) {
            return Err(ResizeError::DataLength {
                channels,
                height,
                width,
                expected: expected.unwrap_or(usize::MAX),
                actual: data.len(),
            });
        }
        Ok(Self {
            channels,
            height,
            width,
            data,
        })
    }

    /// Creates planes with every value set to `value`.
    pub fn filled(channels: usize, height: usize, width: usize, value: T) -> Self {
        Self {
            channels,
            height,
            width,
            data: vec![value; channels * height * width],
        }
    }

    /// Number of values in one channel plane (`height * width`).
    pub fn plane_len(&self) -> usize {
        self.height * self.width
    }

    /// Returns channel `c` as a row-major `height * width` slice.
    ///
    /// Panics if `c >= channels`.
    pub fn plane(&self, c: usize) -> &[T] {
        let len = self.plane_len();
        &self.data[c * len..(c + 1) * len]
    }

    /// Returns the value at channel `c`, row `y`, column `x`.
    ///
    /// Panics if an index is out of range.
    pub fn get(&self, c: usize, y: usize, x: usize) -> T {
        assert!(
            c < self.channels,
            "channel {c} out of range 0..{}",
            self.channels
        );
        assert!(y < self.height, "row {y} out of range 0..{}", self.height);
        assert!(x < self.width, "column {x} out of range 0..{}", self.width);
        self.data[(c * self.height + y) * self.width + x]
    }

    /// Checks that the buffer length matches the declared shape. The fields are public, so a
    /// caller can break this.
    pub fn check_len(&self) -> Result<(), ResizeError> {
        let expected = self
            .channels
            .checked_mul(self.height)
            .and_then(|n| n.checked_mul(self.width));
        if expected == Some(self.data.len()) {
            Ok(())
        } else {
            Err(ResizeError::DataLength {
                channels: self.channels,
                height: self.height,
                width: self.width,
                expected: expected.unwrap_or(usize::MAX),
                actual: self.data.len(),
            })
        }
    }

    /// Keeps rows `[0, height)` and columns `[0, width)` of every channel.
    pub fn crop_top_left(&self, height: usize, width: usize) -> Result<Self, ResizeError> {
        self.check_len()?;
        if height > self.height || width > self.width {
            return Err(ResizeError::CropTooLarge {
                height: self.height,
                width: self.width,
                crop_height: height,
                crop_width: width,
            });
        }
        if height == self.height && width == self.width {
            return Ok(self.clone());
        }
        let mut data = Vec::with_capacity(self.channels * height * width);
        for c in 0..self.channels {
            let plane = self.plane(c);
            for y in 0..height {
                let row = &plane[y * self.width..y * self.width + width];
                data.extend_from_slice(row);
            }
        }
        Ok(Self {
            channels: self.channels,
            height,
            width,
            data,
        })
    }

    /// Repeats a single-channel plane `channels` times (for example a mask applied to RGB).
    pub fn broadcast_channels(&self, channels: usize) -> Result<Self, ResizeError> {
        self.check_len()?;
        if self.channels != 1 {
            return Err(ResizeError::Broadcast {
                channels: self.channels,
                requested: channels,
            });
        }
        let mut data = Vec::with_capacity(channels * self.data.len());
        for _ in 0..channels {
            data.extend_from_slice(&self.data);
        }
        Ok(Self {
            channels,
            height: self.height,
            width: self.width,
            data,
        })
    }
}

/// Element types that the resize reads and writes. Arithmetic is always done in f64.
pub trait Sample: Copy {
    fn to_f64(self) -> f64;
    fn from_f64(value: f64) -> Self;
}

impl Sample for f32 {
    #[inline]
    fn to_f64(self) -> f64 {
        f64::from(self)
    }

    #[inline]
    fn from_f64(value: f64) -> Self {
        value as f32
    }
}

impl Sample for f64 {
    #[inline]
    fn to_f64(self) -> f64 {
        self
    }

    #[inline]
    fn from_f64(value: f64) -> Self {
        value
    }
}

/// Evaluates the cubic convolution kernel with a = -0.5.
///
/// `c(x) = 1.5|x|^3 - 2.5|x|^2 + 1` for `|x| <= 1`, `-0.5|x|^3 + 2.5|x|^2 - 4|x| + 2` for
/// `1 < |x| <= 2`, and 0 otherwise. Both pieces are exactly 0 at `|x| = 1` and `|x| = 2`.
pub fn cubic(x: f64) -> f64 {
    let ax = x.abs();
    let ax2 = ax * ax;
    let ax3 = ax2 * ax;
    if ax <= 1.0 {
        1.5 * ax3 - 2.5 * ax2 + 1.0
    } else if ax <= 2.0 {
        -0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0
    } else {
        0.0
    }
}

/// Maps any index onto `[0, len)` by symmetric reflection that repeats the edge sample.
///
/// The mapping has period `2 * len`: `p = index mod 2*len` (non-negative), then `p` if
/// `p < len`, else `2*len - 1 - p`. For `[a b c d]`, indices -2..=5 read `b a a b c d d c`.
///
/// Panics if `len == 0`.
pub fn reflect_index(index: i64, len: usize) -> usize {
    assert!(len > 0, "reflect_index needs a non-empty axis");
    let len = len as i64;
    let p = index.rem_euclid(2 * len);
    if p < len {
        p as usize
    } else {
        (2 * len - 1 - p) as usize
    }
}

/// Returns the integer factor s when `1.0 / scale` is an exact integer, which selects the
/// integer-downscale path in scale mode. Returns `None` for other scales, including invalid
/// ones.
pub fn integer_factor(scale: f64) -> Option<usize> {
    if !(scale.is_finite() && scale > 0.0) {
        return None;
    }
    let inverse = 1.0 / scale;
    if inverse.is_finite() && inverse >= 1.0 && inverse.fract() == 0.0 && inverse <= u32::MAX as f64
    {
        Some(inverse as usize)
    } else {
        None
    }
}

/// Returns the normalised 1-D kernel of the integer-downscale path for factor `factor`.
///
/// The kernel has `L = 4s` taps for even s and `4s - 1` for odd s, with tap i at kernel
/// argument `(i - (L - 1) / 2) / s`. Factor 1 gives `[0, 1, 0]`.
///
/// Panics if `factor == 0`.
pub fn integer_kernel(factor: usize) -> Vec<f64> {
    assert!(factor > 0, "integer_kernel needs a factor of at least 1");
    let taps = if factor.is_multiple_of(2) {
        4 * factor
    } else {
        4 * factor - 1
    };
    let centre = (taps - 1) as f64 / 2.0;
    let mut kernel: Vec<f64> = (0..taps)
        .map(|i| cubic((i as f64 - centre) / factor as f64))
        .collect();
    let sum: f64 = kernel.iter().sum();
    for weight in &mut kernel {
        *weight /= sum;
    }
    kernel
}

/// Per-output-sample taps of a 1-D resize from `in_len` to `out_len` samples.
///
/// Row j contains `taps` entries at `j * taps .. (j + 1) * taps` of `indices` and `weights`.
/// Indices are already reflected into `[0, in_len)`, so two entries of a row may name the same
/// source sample, and their weights then add up. Each row's weights sum to 1. Some weights are
/// exactly 0 (taps beyond the kernel support), and [`WeightTable::row_nonzero`] skips them. The
/// flat layout is the one a GPU kernel can upload unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct WeightTable {
    pub in_len: usize,
    pub out_len: usize,
    pub taps: usize,
    pub indices: Vec<usize>,
    pub weights: Vec<f64>,
}

impl WeightTable {
    /// Builds the identity table: output j reads input j with weight 1.
    pub fn identity(len: usize) -> Self {
        Self {
            in_len: len,
            out_len: len,
            taps: 1,
            indices: (0..len).collect(),
            weights: vec![1.0; len],
        }
    }

    /// Builds the general-path table for `in_len -> out_len`.
    ///
    /// With `m = out_len`, `n = in_len`: `sigma = m / n` when downscaling (else 1), `K =
    /// ceil(4 / sigma) + 2` taps (6 when upscaling), source centre `p_j = (j + 0.5) * n / m -
    /// 0.5`, first tap `b_j = floor(p_j) - floor(K / 2) + 1`, and tap t weighted by `c(sigma *
    /// (p_j - b_j - t))`, normalised per row. Equal lengths give the identity table.
    pub fn general(in_len: usize, out_len: usize) -> Result<Self, ResizeError> {
        if in_len == 0 || out_len == 0 {
            return Err(ResizeError::InvalidAxis { in_len, out_len });
        }
        if in_len == out_len {
            return Ok(Self::identity(in_len));
        }

        let n = in_len as f64;
        let m = out_len as f64;
        let downscale = out_len < in_len;
        let sigma = if downscale { m / n } else { 1.0 };
        let taps = if downscale {
            (4.0 / sigma).ceil() as usize + 2
        } else {
            4 + 2
        };
        let half = (taps / 2) as i64;

        let mut indices = Vec::with_capacity(out_len * taps);
        let mut weights = Vec::with_capacity(out_len * taps);
        let mut raw = vec![0.0f64; taps];
        for j in 0..out_len {
            let centre = (j as f64 + 0.5) * n / m - 0.5;
            let first = centre.floor() as i64 - half + 1;
            let offset = centre - first as f64;
            let mut sum = 0.0;
            for (t, value) in raw.iter_mut().enumerate() {
                *value = cubic(sigma * (offset - t as f64));
                sum += *value;
            }
            for (t, value) in raw.iter().enumerate() {
                indices.push(reflect_index(first + t as i64, in_len));
                weights.push(value / sum);
            }
        }
        Ok(Self {
            in_len,
            out_len,
            taps,
            indices,
            weights,
        })
    }

    /// Builds the integer-downscale table for factor `factor`: `floor(in_len / factor)` outputs,
    /// output j reading inputs `j * s - P + i` (reflected) with kernel tap i, where `P =
    /// floor((L - s) / 2)` and L is the kernel length of [`integer_kernel`].
    pub fn integer(in_len: usize, factor: usize) -> Result<Self, ResizeError> {
        if factor == 0 {
            return Err(ResizeError::InvalidFactor { factor });
        }
        if in_len == 0 {
            return Err(ResizeError::InvalidAxis { in_len, out_len: 0 });
        }
        let out_len = in_len / factor;
        let kernel = integer_kernel(factor);
        let taps = kernel.len();
        let pad = ((taps - factor) / 2) as i64;

        let mut indices = Vec::with_capacity(out_len * taps);
        let mut weights = Vec::with_capacity(out_len * taps);
        for j in 0..out_len {
            let first = (j * factor) as i64 - pad;
            for (i, &weight) in kernel.iter().enumerate() {
                indices.push(reflect_index(first + i as i64, in_len));
                weights.push(weight);
            }
        }
        Ok(Self {
            in_len,
            out_len,
            taps,
            indices,
            weights,
        })
    }

    /// Returns whether the table maps every output j to input j with weight 1.
    pub fn is_identity(&self) -> bool {
        self.in_len == self.out_len && self.taps == 1
    }

    /// Returns all `(source index, weight)` taps of output `j`, including zero weights.
    ///
    /// Panics if `j >= out_len`.
    pub fn row(&self, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        let range = j * self.taps..(j + 1) * self.taps;
        self.indices[range.clone()]
            .iter()
            .copied()
            .zip(self.weights[range].iter().copied())
    }

    /// Returns the taps of output `j` whose weight is not exactly 0.
    pub fn row_nonzero(&self, j: usize) -> impl Iterator<Item = (usize, f64)> + '_ {
        self.row(j).filter(|&(_, weight)| weight != 0.0)
    }

    /// Returns the source indices as u32. The resize kernels take them as i32 and the weights
    /// in f64 (see `src/ops/resize/cuda.rs`).
    pub fn indices_u32(&self) -> Vec<u32> {
        self.indices.iter().map(|&i| i as u32).collect()
    }

    /// Returns the weights rounded to f32.
    pub fn weights_f32(&self) -> Vec<f32> {
        self.weights.iter().map(|&w| w as f32).collect()
    }
}

/// Requested output of a resize.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Resize {
    /// Scale mode: the integer path when `1.0 / scale` is an exact integer, otherwise the
    /// general path to `ceil(height * scale) x ceil(width * scale)`.
    Scale(f64),
    /// Sides mode: the general path to exactly `height x width`.
    Sides { height: usize, width: usize },
}

/// Resize algorithm chosen by a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ResizePath {
    General,
    /// Integer-downscale path with this factor on both axes.
    Integer(usize),
}

/// Output size of resizing `in_height x in_width` to `target`, as `(height, width)`, without
/// building weight tables. [`ResizePlan::new`] gives the same size.
pub fn output_size(
    in_height: usize,
    in_width: usize,
    target: Resize,
) -> Result<(usize, usize), ResizeError> {
    let (height, width, _) = output_size_and_path(in_height, in_width, target)?;
    Ok((height, width))
}

fn output_size_and_path(
    in_height: usize,
    in_width: usize,
    target: Resize,
) -> Result<(usize, usize, ResizePath), ResizeError> {
    if in_height == 0 || in_width == 0 {
        return Err(ResizeError::EmptyInput {
            height: in_height,
            width: in_width,
        });
    }
    match target {
        Resize::Sides { height, width } => {
            if height == 0 || width == 0 || height.checked_mul(width).is_none() {
                return Err(ResizeError::InvalidSides { height, width });
            }
            Ok((height, width, ResizePath::General))
        }
        Resize::Scale(scale) => {
            if !(scale.is_finite() && scale > 0.0) {
                return Err(ResizeError::InvalidScale { scale });
            }
            let (height, width, path) = match integer_factor(scale) {
                Some(factor) => (
                    in_height / factor,
                    in_width / factor,
                    ResizePath::Integer(factor),
                ),
                None => {
                    let height = (in_height as f64 * scale).ceil();
                    let width = (in_width as f64 * scale).ceil();
                    // Sizes up to 2^52 convert from f64 to usize exactly, and larger outputs
                    // could not be allocated anyway.
                    let limit = (1u64 << 52) as f64;
                    if height > limit || width > limit || height * width > limit {
                        return Err(ResizeError::OutputTooLarge {
                            in_height,
                            in_width,
                            scale,
                        });
                    }
                    (height as usize, width as usize, ResizePath::General)
                }
            };
            if height == 0 || width == 0 {
                return Err(ResizeError::EmptyOutput {
                    in_height,
                    in_width,
                    scale,
                    out_height: height,
                    out_width: width,
                });
            }
            Ok((height, width, path))
        }
    }
}

/// Weight tables for resizing one input size to one output size.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizePlan {
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub path: ResizePath,
    /// Table along the height axis (applied first).
    pub rows: WeightTable,
    /// Table along the width axis (applied second).
    pub cols: WeightTable,
}

impl ResizePlan {
    /// Builds the tables for resizing `in_height x in_width` to `target`.
    pub fn new(in_height: usize, in_width: usize, target: Resize) -> Result<Self, ResizeError> {
        let (out_height, out_width, path) = output_size_and_path(in_height, in_width, target)?;
        let (rows, cols) = match path {
            ResizePath::General => (
                WeightTable::general(in_height, out_height)?,
                WeightTable::general(in_width, out_width)?,
            ),
            ResizePath::Integer(factor) => (
                WeightTable::integer(in_height, factor)?,
                WeightTable::integer(in_width, factor)?,
            ),
        };
        Ok(Self {
            in_height,
            in_width,
            out_height,
            out_width,
            path,
            rows,
            cols,
        })
    }

    /// Resizes every channel of `input`, which must be `in_height x in_width`.
    pub fn apply<T: Sample>(&self, input: &Planes<T>) -> Result<Planes<T>, ResizeError> {
        input.check_len()?;
        if input.height != self.in_height || input.width != self.in_width {
            return Err(ResizeError::PlanSizeMismatch {
                expected_height: self.in_height,
                expected_width: self.in_width,
                actual_height: input.height,
                actual_width: input.width,
            });
        }
        let out_plane = self.out_height * self.out_width;
        let mut output = vec![T::from_f64(0.0); input.channels * out_plane];
        let mut between = vec![0.0f64; self.out_height * self.in_width];
        for c in 0..input.channels {
            resize_columns_of_rows(input.plane(c), self.in_width, &self.rows, &mut between);
            let out = &mut output[c * out_plane..(c + 1) * out_plane];
            resize_within_rows(&between, self.in_width, &self.cols, out);
        }
        Ok(Planes {
            channels: input.channels,
            height: self.out_height,
            width: self.out_width,
            data: output,
        })
    }
}

/// Resizes along the height: output row j is the weighted sum of whole input rows, which lets
/// the inner loop run over contiguous memory.
fn resize_columns_of_rows<T: Sample>(
    input: &[T],
    width: usize,
    table: &WeightTable,
    output: &mut [f64],
) {
    for j in 0..table.out_len {
        let out_row = &mut output[j * width..(j + 1) * width];
        out_row.fill(0.0);
        for (source, weight) in table.row_nonzero(j) {
            let in_row = &input[source * width..(source + 1) * width];
            for (out, &value) in out_row.iter_mut().zip(in_row) {
                *out += weight * value.to_f64();
            }
        }
    }
}

/// Resizes along the width, one row at a time.
fn resize_within_rows<T: Sample>(
    input: &[f64],
    in_width: usize,
    table: &WeightTable,
    output: &mut [T],
) {
    let out_width = table.out_len;
    let rows = input.len() / in_width;
    for y in 0..rows {
        let in_row = &input[y * in_width..(y + 1) * in_width];
        let out_row = &mut output[y * out_width..(y + 1) * out_width];
        for (j, out) in out_row.iter_mut().enumerate() {
            let mut sum = 0.0;
            for (source, weight) in table.row_nonzero(j) {
                sum += weight * in_row[source];
            }
            *out = T::from_f64(sum);
        }
    }
}

/// Resizes `input` to `target`. Builds a [`ResizePlan`] for this call only.
pub fn resize<T: Sample>(input: &Planes<T>, target: Resize) -> Result<Planes<T>, ResizeError> {
    input.check_len()?;
    ResizePlan::new(input.height, input.width, target)?.apply(input)
}

/// Resizes `input` in scale mode (see [`Resize::Scale`]).
pub fn resize_scale<T: Sample>(input: &Planes<T>, scale: f64) -> Result<Planes<T>, ResizeError> {
    resize(input, Resize::Scale(scale))
}

/// Resizes `input` to exactly `height x width` with the general path.
pub fn resize_sides<T: Sample>(
    input: &Planes<T>,
    height: usize,
    width: usize,
) -> Result<Planes<T>, ResizeError> {
    resize(input, Resize::Sides { height, width })
}
