//! Rayon kernels for 2-D convolution (stride 1) through im2col and a blocked GEMM.
//!
//! In `f32`, two other kernel families take over:
//!
//! - thin convolutions go to the direct kernels in `direct.rs`: forward passes with at most 4
//!   output channels, and 3x3 weight gradients with one output channel (the rule and its
//!   measurements are at `direct::is_thin`);
//! - the other 3x3 convolutions go to the Winograd kernels in `winograd.rs`, which need 24
//!   multiply-adds per 4x2 output tile and channel pair where im2col needs 72.
//!
//! The input gradient runs as a forward pass with the channels swapped, so it takes the
//! direct kernels when the forward convolution has at most 4 input channels. `f64` always
//! runs im2col.
//!
//! The output columns of each image are split into fixed-size chunks. One task unfolds the input
//! patches of its chunk (im2col) and multiplies them by the weight matrix with
//! `matrixmultiply`'s cache-blocked GEMM, so no buffer ever holds the whole unfolded input. The
//! chunk sizes depend only on the shapes, so results are bit-identical for any thread count.

use rayon::prelude::*;

use super::{direct, winograd};
use crate::element::{DType, Element};

/// Output columns per im2col task.
const COLUMNS_PER_TASK: usize = 256;

/// Upper bound on the partial weight gradients per image; each is `c_out * c_in * k_h * k_w`.
const MAX_WEIGHT_GRAD_PARTIALS: usize = 16;

/// Shapes of one convolution: input `(n, c_in, h_in, w_in)`, weight `(c_out, c_in, k_h, k_w)`,
/// output `(n, c_out, h_out, w_out)`. Padding may be negative, which crops the input instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeometry {
    pub n: usize,
    pub c_in: usize,
    pub c_out: usize,
    pub h_in: usize,
    pub w_in: usize,
    pub k_h: usize,
    pub k_w: usize,
    pub pad_h: isize,
    pub pad_w: isize,
}

impl ConvGeometry {
    pub fn h_out(&self) -> usize {
        (self.h_in as isize + 2 * self.pad_h - self.k_h as isize + 1) as usize
    }

    pub fn w_out(&self) -> usize {
        (self.w_in as isize + 2 * self.pad_w - self.k_w as isize + 1) as usize
    }

    /// Rows of the unfolded input: `c_in * k_h * k_w`.
    fn patch_len(&self) -> usize {
        self.c_in * self.k_h * self.k_w
    }
}

/// Unfolds the patches of output columns `first..first + len` of one image into
/// `col` (`patch_len` rows of `len` columns).
fn im2col<T: Element>(image: &[T], g: &ConvGeometry, first: usize, len: usize, col: &mut [T]) {
    let w_out = g.w_out();
    let (h_in, w_in) = (g.h_in as isize, g.w_in as isize);
    let mut row = 0;
    for channel in 0..g.c_in {
        let plane = &image[channel * g.h_in * g.w_in..(channel + 1) * g.h_in * g.w_in];
        for ki in 0..g.k_h {
            for kj in 0..g.k_w {
                let dst = &mut col[row * len..(row + 1) * len];
                let mut column = first;
                let mut filled = 0;
                while filled < len {
                    let (out_row, out_col) = (column / w_out, column % w_out);
                    let run = (w_out - out_col).min(len - filled);
                    let in_row = out_row as isize + ki as isize - g.pad_h;
                    let target = &mut dst[filled..filled + run];
                    if in_row < 0 || in_row >= h_in {
                        target.fill(T::ZERO);
                    } else {
                        let source =
                            &plane[in_row as usize * g.w_in..(in_row as usize + 1) * g.w_in];
                        // Output column b reads input column b + offset; copy the run of
                        // columns that land inside the input and zero the rest.
                        let offset = kj as isize - g.pad_w;
                        let first_col = out_col as isize;
                        let valid_start = (-offset).clamp(first_col, first_col + run as isize);
                        let valid_end =
                            (w_in - offset).clamp(valid_start, first_col + run as isize);
                        let (lead, tail) = (
                            (valid_start - first_col) as usize,
                            (valid_end - first_col) as usize,
                        );
                        target[..lead].fill(T::ZERO);
                        if tail > lead {
                            let src_start = (valid_start + offset) as usize;
                            target[lead..tail]
                                .copy_from_slice(&source[src_start..src_start + (tail - lead)]);
                        }
                        target[tail..].fill(T::ZERO);
                    }
                    filled += run;
                    column += run;
                }
                row += 1;
            }
        }
    }
}

/// Reports whether a convolution runs on the Winograd kernels: 3x3 kernels in `f32`. `f64`
/// keeps im2col, whose sums match a plain loop's to the last few bits, because it is the
/// precision that gradient checks and reference comparisons run in.
fn use_winograd<T: Element>(g: &ConvGeometry) -> bool {
    T::DTYPE == DType::F32 && winograd::supports(g)
}

/// Reports whether `pass` of a convolution runs on the direct kernels: thin convolutions (see
/// [`direct::is_thin`]) in `f32`. `f64` stays on im2col for the reason given at
/// [`use_winograd`].
fn use_direct<T: Element>(g: &ConvGeometry, pass: direct::Pass) -> bool {
    T::DTYPE == DType::F32 && direct::is_thin(g, pass)
}

/// Computes the convolution `y = conv(x, weight)` with no bias.
pub fn forward<T: Element>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    forward_with_bias(x, weight, None, g)
}

/// Computes `y = conv(x, weight) + bias`, with `bias` (one value per output channel) added to
/// each finished sum, as a separate add of the bias would.
pub fn forward_with_bias<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeometry,
) -> Vec<T> {
    if let Some(bias) = bias {
        assert_eq!(bias.len(), g.c_out, "one bias value per output channel");
    }
    let mut y = if use_direct::<T>(g, direct::Pass::Forward) {
        direct::forward(x, weight, g)
    } else if use_winograd::<T>(g) {
        // The Winograd output transform adds the bias itself.
        return winograd::forward(x, weight, bias, g);
    } else {
        im2col_forward(x, weight, g)
    };
    if let Some(bias) = bias {
        add_bias(&mut y, bias, g.h_out() * g.w_out());
    }
    y
}

/// Adds `bias[c]` to every value of output plane `c` of `y`, planes of `plane_len` values.
fn add_bias<T: Element>(y: &mut [T], bias: &[T], plane_len: usize) {
    if plane_len == 0 {
        return;
    }
    y.par_chunks_mut(plane_len)
        .enumerate()
        .for_each(|(plane, values)| {
            let value = bias[plane % bias.len()];
            for y in values {
                *y += value;
            }
        });
}

/// Computes `conv(x, weight)` through im2col and a GEMM.
fn im2col_forward<T: Element>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let columns = h_out * w_out;
    let patch_len = g.patch_len();
    let mut y = vec![T::ZERO; g.n * g.c_out * columns];
    if columns == 0 || g.n == 0 {
        return y;
    }
    let chunks = columns.div_ceil(COLUMNS_PER_TASK);
    let image_len = g.c_in * g.h_in * g.w_in;

    let blocks: Vec<Vec<T>> = (0..g.n * chunks)
        .into_par_iter()
        .map(|task| {
            let (image, chunk) = (task / chunks, task % chunks);
            let first = chunk * COLUMNS_PER_TASK;
            let len = COLUMNS_PER_TASK.min(columns - first);
            let mut col = vec![T::ZERO; patch_len * len];
            im2col(
                &x[image * image_len..(image + 1) * image_len],
                g,
                first,
                len,
                &mut col,
            );
            let mut block = vec![T::ZERO; g.c_out * len];
            T::gemm(
                g.c_out,
                patch_len,
                len,
                T::ONE,
                weight,
                (patch_len as isize, 1),
                &col,
                (len as isize, 1),
                T::ZERO,
                &mut block,
                (len as isize, 1),
            );
            block
        })
        .collect();

    for (task, block) in blocks.iter().enumerate() {
        let (image, chunk) = (task / chunks, task % chunks);
        let first = chunk * COLUMNS_PER_TASK;
        let len = block.len() / g.c_out;
        for channel in 0..g.c_out {
            let dst = (image * g.c_out + channel) * columns + first;
            y[dst..dst + len].copy_from_slice(&block[channel * len..(channel + 1) * len]);
        }
    }
    y
}

/// Returns the weight rearranged for the input gradient: `(c_in, c_out, k_h, k_w)`, each kernel
/// rotated by 180 degrees.
pub(super) fn flip_transpose<T: Element>(
    weight: &[T],
    c_out: usize,
    c_in: usize,
    k_h: usize,
    k_w: usize,
) -> Vec<T> {
    // Rotating a kernel by 180 degrees reverses its row-major taps.
    let taps = k_h * k_w;
    let mut out = vec![T::ZERO; weight.len()];
    for (index, kernel) in out.chunks_exact_mut(taps.max(1)).enumerate() {
        let (i, o) = (index / c_out, index % c_out);
        let source = &weight[(o * c_in + i) * taps..][..taps];
        for (value, &tap) in kernel.iter_mut().zip(source.iter().rev()) {
            *value = tap;
        }
    }
    out
}

/// Computes the gradient of the convolution with respect to its input: a full convolution of
/// `grad_output` with the rotated, transposed weight. `g` describes the forward convolution.
pub fn input_grad<T: Element>(grad_output: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let rotated = flip_transpose(weight, g.c_out, g.c_in, g.k_h, g.k_w);
    forward(grad_output, &rotated, &transposed_geometry(g))
}

/// Returns the geometry of the forward convolution that computes the input gradient of `g`:
/// channels swapped, `grad_output` as the input, and padding `k - 1 - pad`, which is negative
/// where `g` pads by more than `k - 1`.
pub(super) fn transposed_geometry(g: &ConvGeometry) -> ConvGeometry {
    let transposed = ConvGeometry {
        n: g.n,
        c_in: g.c_out,
        c_out: g.c_in,
        h_in: g.h_out(),
        w_in: g.w_out(),
        k_h: g.k_h,
        k_w: g.k_w,
        pad_h: g.k_h as isize - 1 - g.pad_h,
        pad_w: g.k_w as isize - 1 - g.pad_w,
    };
    debug_assert_eq!((transposed.h_out(), transposed.w_out()), (g.h_in, g.w_in));
    transposed
}

/// Computes the gradient of the convolution with respect to its weight:
/// `grad_weight[o, (i, ki, kj)] = sum over images and output pixels of grad_output * patch`.
pub fn weight_grad<T: Element>(x: &[T], grad_output: &[T], g: &ConvGeometry) -> Vec<T> {
    if use_direct::<T>(g, direct::Pass::WeightGrad) {
        return direct::weight_grad(x, grad_output, g);
    }
    if use_winograd::<T>(g) {
        return winograd::weight_grad(x, grad_output, g);
    }
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let columns = h_out * w_out;
    let patch_len = g.patch_len();
    let weight_len = g.c_out * patch_len;
    if columns == 0 || g.n == 0 {
        return vec![T::ZERO; weight_len];
    }
    let chunk_len = COLUMNS_PER_TASK.max(columns.div_ceil(MAX_WEIGHT_GRAD_PARTIALS));
    let chunks = columns.div_ceil(chunk_len);
    let image_len = g.c_in * g.h_in * g.w_in;

    let partials: Vec<Vec<T>> = (0..g.n * chunks)
        .into_par_iter()
        .map(|task| {
            let (image, chunk) = (task / chunks, task % chunks);
            let first = chunk * chunk_len;
            let len = chunk_len.min(columns - first);
            let mut col = vec![T::ZERO; patch_len * len];
            im2col(
                &x[image * image_len..(image + 1) * image_len],
                g,
                first,
                len,
                &mut col,
            );
            let grad_block = &grad_output[image * g.c_out * columns + first..];
            let mut partial = vec![T::ZERO; weight_len];
            T::gemm(
                g.c_out,
                len,
                patch_len,
                T::ONE,
                grad_block,
                (columns as isize, 1),
                &col,
                (1, len as isize),
                T::ZERO,
                &mut partial,
                (patch_len as isize, 1),
            );
            partial
        })
        .collect();

    let mut grad_weight = vec![T::ZERO; weight_len];
    for partial in &partials {
        for (total, &value) in grad_weight.iter_mut().zip(partial) {
            *total += value;
        }
    }
    grad_weight
}

/// Plain nested-loop convolutions that the fast kernels are tested against.
pub mod reference {
    use super::ConvGeometry;
    use crate::element::Element;

    /// Reads `x[image, channel, row, col]`, or 0 outside the image.
    fn at<T: Element>(
        x: &[T],
        g: &ConvGeometry,
        image: usize,
        channel: usize,
        row: isize,
        col: isize,
    ) -> T {
        if row < 0 || col < 0 || row >= g.h_in as isize || col >= g.w_in as isize {
            return T::ZERO;
        }
        x[((image * g.c_in + channel) * g.h_in + row as usize) * g.w_in + col as usize]
    }

    /// Computes `y[n, o, a, b] = sum_{i, ki, kj} x[n, i, a + ki - p, b + kj - p] w[o, i, ki, kj]`.
    pub fn forward<T: Element>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
        let (h_out, w_out) = (g.h_out(), g.w_out());
        let mut y = vec![T::ZERO; g.n * g.c_out * h_out * w_out];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for a in 0..h_out {
                    for b in 0..w_out {
                        let mut total = T::ZERO;
                        for i in 0..g.c_in {
                            for ki in 0..g.k_h {
                                for kj in 0..g.k_w {
                                    let row = a as isize + ki as isize - g.pad_h;
                                    let col = b as isize + kj as isize - g.pad_w;
                                    let w = weight[((o * g.c_in + i) * g.k_h + ki) * g.k_w + kj];
                                    total += at(x, g, n, i, row, col) * w;
                                }
                            }
                        }
                        y[((n * g.c_out + o) * h_out + a) * w_out + b] = total;
                    }
                }
            }
        }
        y
    }

    /// Computes the input gradient by scattering each output gradient over its patch.
    pub fn input_grad<T: Element>(grad_output: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
        let (h_out, w_out) = (g.h_out(), g.w_out());
        let mut grad_input = vec![T::ZERO; g.n * g.c_in * g.h_in * g.w_in];
        for n in 0..g.n {
            for o in 0..g.c_out {
                for a in 0..h_out {
                    for b in 0..w_out {
                        let gy = grad_output[((n * g.c_out + o) * h_out + a) * w_out + b];
                        for i in 0..g.c_in {
                            for ki in 0..g.k_h {
                                for kj in 0..g.k_w {
                                    let row = a as isize + ki as isize - g.pad_h;
                                    let col = b as isize + kj as isize - g.pad_w;
                                    if row < 0
                                        || col < 0
                                        || row >= g.h_in as isize
                                        || col >= g.w_in as isize
                                    {
                                        continue;
                                    }
                                    let w = weight[((o * g.c_in + i) * g.k_h + ki) * g.k_w + kj];
                                    let index = ((n * g.c_in + i) * g.h_in + row as usize) * g.w_in
                                        + col as usize;
                                    grad_input[index] += gy * w;
                                }
                            }
                        }
                    }
                }
            }
        }
        grad_input
    }

    /// Computes the weight gradient as a direct sum over images and output pixels.
    pub fn weight_grad<T: Element>(x: &[T], grad_output: &[T], g: &ConvGeometry) -> Vec<T> {
        let (h_out, w_out) = (g.h_out(), g.w_out());
        let mut grad_weight = vec![T::ZERO; g.c_out * g.c_in * g.k_h * g.k_w];
        for o in 0..g.c_out {
            for i in 0..g.c_in {
                for ki in 0..g.k_h {
                    for kj in 0..g.k_w {
                        let mut total = T::ZERO;
                        for n in 0..g.n {
                            for a in 0..h_out {
                                for b in 0..w_out {
                                    let row = a as isize + ki as isize - g.pad_h;
                                    let col = b as isize + kj as isize - g.pad_w;
                                    let gy =
                                        grad_output[((n * g.c_out + o) * h_out + a) * w_out + b];
                                    total += gy * at(x, g, n, i, row, col);
                                }
                            }
                        }
                        grad_weight[((o * g.c_in + i) * g.k_h + ki) * g.k_w + kj] = total;
                    }
                }
            }
        }
        grad_weight
    }
}
