//! Direct convolution kernels (stride 1, any kernel size) for convolutions with few channels on
//! one side, in `f32` and `f64`.
//!
//! Winograd and im2col pay a cost per channel (an input or output transform, an unfolded copy)
//! that a wide convolution spreads over many channels. With one to four output channels that
//! cost dominates, so these kernels multiply shifted input rows by each tap in place. The
//! weight-gradient kernel takes few channels on either side, but [`is_thin`] sends it only
//! 3x3 convolutions with one output channel.
//! [`is_thin`] decides which convolutions `cpu.rs` sends here.
//!
//! Each output value is summed in the order (input channel, kernel row, kernel column), the
//! order of `reference::forward`, and each weight-gradient value in an order fixed by the
//! shapes. Work is split by shape alone, so results are bit-identical for any thread count.
//! On x86-64 CPUs with AVX the kernels run a copy of themselves compiled for AVX. Rust never
//! fuses a multiply and an add, so that copy performs the same operations on wider vectors and
//! returns the same bits as the SSE2 baseline the crate is built for.

use rayon::prelude::*;

use super::ConvGeometry;
use crate::element::Element;

/// Max channels on the thin side of a convolution that these kernels compute.
const MAX_THIN_CHANNELS: usize = 4;

/// Multiply-adds that one rayon task should do at least, a few microseconds of work, so that
/// small convolutions do not pay a task's overhead many times over.
const MIN_TASK_WORK: usize = 1 << 16;

/// Min output rows per forward task, so that the `k_h - 1` extra input rows under a block of
/// output rows are few next to the rows it reads anyway. With one row per task, 128 input
/// channels at 186x248 pixels ran about 1.3 times slower.
const MIN_TASK_ROWS: usize = 8;

/// Input channels whose taps a forward register block adds between its load and its store.
/// They are enough taps to pay for the load and the store, and their input rows under one
/// output row (24 for a 3x3 kernel, 24 KiB at 250 columns) fit a 32 KiB L1 cache. Chunks of
/// 32 channels, or all of them, ran up to 1.3 times slower at 186x248 pixels.
const CHANNEL_CHUNK: usize = 8;

/// Output channels that one forward register block computes at once, so that each input
/// vector loaded serves up to four of them.
const CHANNEL_GROUP: usize = 4;

/// Lanes of one accumulator vector of a forward register block: one AVX register of `f32`.
const VECTOR: usize = 8;

/// Max accumulator vectors (output channels times vectors of columns) of one forward register
/// block, 6 of the 16 AVX registers. With 8 or more and more than one channel, rustc 1.95 left
/// the block unvectorized, and it ran about 8 times slower in a micro-benchmark.
const MAX_BLOCK_VECTORS: usize = 6;

/// Max partial weight gradients that the rows of one (output, input) channel pair are split
/// into. Each is `k_h * k_w` values.
const MAX_WEIGHT_GRAD_PARTIALS: usize = 16;

/// Independent accumulators of a weight-gradient dot product. They let the compiler vectorize
/// the sum without reordering it, and 16 fill two AVX registers of `f32`.
const LANES: usize = 16;

/// The two kernels of this module: the forward pass, which also computes input gradients (a
/// forward pass with `c_in` and `c_out` swapped), and the weight gradient.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Forward,
    WeightGrad,
}

/// Reports whether the direct kernels compute `pass` of a convolution, which they do for thin
/// convolutions:
///
/// - forward pass: `c_out <= 4`, any kernel size;
/// - weight gradient: a 3x3 kernel and `c_out == 1` (a critic's last layer).
///
/// The rule comes from timing `f32` convolutions through the public ops against the kernels
/// they replace, at SinGAN's layer sizes from 25x34 to 186x248 pixels with 32 to 128 channels
/// on the wide side. Each time is the min of repeated calls on a shared 2-core AMD EPYC
/// (Zen 4, AVX-512), on 1 and 2 threads:
///
/// - 3x3 forward, `c_out` of 1 to 4: 1.2 to 4 times as fast as Winograd with 2 threads. The
///   input gradient of a convolution with `c_in = 3` is such a forward pass, and was 1.7 to 4
///   times as fast. A first measurement against an older Winograd kernel found 1.3 to 2.3
///   times with 5 or 6 output channels and 0.5 to 1.1 times with 8; 4 keeps a margin.
/// - 3x3 forward, `c_in` of 1 to 4 and a wide `c_out`: 0.5 to 1.1 times as fast at 64x81
///   pixels and more. Winograd needs 16 multiplications per 2x2 output tile where these
///   kernels need 36, and its transforms cost little when the thin side is the input, so
///   these stay on Winograd. These measurements were made with Winograd F(2x2, 3x3); F(4x2,
///   3x3) needs 3 multiplications per output pixel instead of 4, which favours it further.
/// - 3x3 weight gradient with 3 channels on one side: Winograd was 1.1 to 4.5 times as fast
///   (except 128 to 3 channels at 196x258 pixels, 0.7 times). With `c_out = 1`, Winograd's 4
///   by 4 channel steps compute three zero rows. There the direct kernel was 0.6 to 0.9 times
///   as fast up to 88x117 pixels, and 2.1 times at 186x248 with 128 channels, the size that
///   weighs most in a training run.
/// - 1x1 and 5x5 kernels at 64x81 pixels, against im2col: the forward pass with `c_out <= 4`
///   was 1.4 to 12 times as fast, but the weight gradient with a thin `c_in` up to 6 times
///   slower.
pub fn is_thin(g: &ConvGeometry, pass: Pass) -> bool {
    match pass {
        Pass::Forward => g.c_out <= MAX_THIN_CHANNELS,
        Pass::WeightGrad => g.k_h == 3 && g.k_w == 3 && g.c_out == 1,
    }
}

/// Computes the convolution `y = conv(x, weight)` with no bias. Padding may be negative.
pub fn forward<T: Element>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let mut y = vec![T::ZERO; g.n * g.c_out * h_out * w_out];
    if y.is_empty() {
        return y;
    }
    // One task computes a block of output rows of one image in every output channel, so each
    // input row it reads serves all output channels while it is in the cache.
    let row_work = g.c_out * g.c_in * g.k_h * g.k_w * w_out;
    let rows_per_task = MIN_TASK_WORK
        .div_ceil(row_work.max(1))
        .max(MIN_TASK_ROWS)
        .min(h_out);
    let blocks = h_out.div_ceil(rows_per_task);
    let image_len = g.c_in * g.h_in * g.w_in;
    let packed = pack_weights(weight, g);
    let width = padded_width(w_out);

    let outputs: Vec<Vec<T>> = (0..g.n * blocks)
        .into_par_iter()
        .map(|task| {
            let (image, block) = (task / blocks, task % blocks);
            let first_row = block * rows_per_task;
            let rows = rows_per_task.min(h_out - first_row);
            let mut out = vec![T::ZERO; g.c_out * rows * width];
            forward_rows(x, image * image_len, &packed, g, first_row, &mut out);
            out
        })
        .collect();

    for (task, out) in outputs.iter().enumerate() {
        let (image, block) = (task / blocks, task % blocks);
        let first_row = block * rows_per_task;
        let rows = out.len() / (g.c_out * width);
        for (index, row) in out.chunks_exact(width).enumerate() {
            let (o, r) = (index / rows, index % rows);
            let start = ((image * g.c_out + o) * h_out + first_row + r) * w_out;
            y[start..start + w_out].copy_from_slice(&row[..w_out]);
        }
    }
    y
}

/// Returns the first output channel and the channel count of group `group` of
/// [`CHANNEL_GROUP`] channels.
fn channel_group(c_out: usize, group: usize) -> (usize, usize) {
    let first = group * CHANNEL_GROUP;
    (first, CHANNEL_GROUP.min(c_out - first))
}

/// Rearranges the weight `(c_out, c_in, k_h, k_w)` so that the taps of each group of output
/// channels are interleaved. The group of `len` channels from `first` starts at
/// `first * c_in * k_h * k_w` and contains the `len` values of tap `t` (an index into
/// `(c_in, k_h, k_w)`) at `t * len`.
fn pack_weights<T: Element>(weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let kernel_len = g.c_in * g.k_h * g.k_w;
    let mut packed = vec![T::ZERO; weight.len()];
    for group in 0..g.c_out.div_ceil(CHANNEL_GROUP) {
        let (first, len) = channel_group(g.c_out, group);
        for j in 0..len {
            let kernel = &weight[(first + j) * kernel_len..(first + j + 1) * kernel_len];
            for (tap, &value) in kernel.iter().enumerate() {
                packed[first * kernel_len + tap * len + j] = value;
            }
        }
    }
    packed
}

/// Returns the row width of the forward pass's output blocks: `w_out` rounded up to a
/// multiple of [`VECTOR`], so that every register block is whole.
fn padded_width(w_out: usize) -> usize {
    w_out.next_multiple_of(VECTOR)
}

/// Computes output rows `first_row..` of the image at `x[image_start..]` into `out`, laid out
/// `(c_out, rows, padded_width(w_out))` and zero on entry, with the weight packed by
/// [`pack_weights`]. The columns past `w_out` get values that callers must drop.
fn forward_rows<T: Element>(
    x: &[T],
    image_start: usize,
    packed: &[T],
    g: &ConvGeometry,
    first_row: usize,
    out: &mut [T],
) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, the one feature the function is compiled for.
        unsafe { forward_rows_avx(x, image_start, packed, g, first_row, out) };
        return;
    }
    forward_rows_portable(x, image_start, packed, g, first_row, out);
}

/// [`forward_rows_portable`] compiled for AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn forward_rows_avx<T: Element>(
    x: &[T],
    image_start: usize,
    packed: &[T],
    g: &ConvGeometry,
    first_row: usize,
    out: &mut [T],
) {
    forward_rows_portable(x, image_start, packed, g, first_row, out);
}

#[inline(always)]
fn forward_rows_portable<T: Element>(
    x: &[T],
    image_start: usize,
    packed: &[T],
    g: &ConvGeometry,
    first_row: usize,
    out: &mut [T],
) {
    let width = padded_width(g.w_out());
    let rows = out.len() / (g.c_out * width);
    let plane_len = g.h_in * g.w_in;
    let taps = g.k_h * g.k_w;
    let kernel_len = g.c_in * taps;
    let mut bands: Vec<PlaneBand<T>> = (0..CHANNEL_CHUNK.min(g.c_in))
        .map(|_| PlaneBand::new(g, width + g.k_w - 1, x))
        .collect();
    for first_channel in (0..g.c_in).step_by(CHANNEL_CHUNK) {
        let channels = CHANNEL_CHUNK.min(g.c_in - first_channel);
        for (band, i) in bands
            .iter_mut()
            .zip(first_channel..first_channel + channels)
        {
            band.load(
                image_start + i * plane_len,
                first_row as isize - g.pad_h,
                rows + g.k_h - 1,
            );
        }
        // The input rows under one output row, each with its kernel row counted from the
        // chunk's first channel (`(i - first_channel) * k_h + ky`). Rows in the vertical
        // padding are left out.
        let mut sources: Vec<(&[T], usize)> = Vec::with_capacity(channels * g.k_h);
        for r in 0..rows {
            sources.clear();
            for (c, band) in bands[..channels].iter().enumerate() {
                for ky in 0..g.k_h {
                    if let Some(row) = band.row(r + ky) {
                        sources.push((row, c * g.k_h + ky));
                    }
                }
            }
            for group in 0..g.c_out.div_ceil(CHANNEL_GROUP) {
                let (first, len) = channel_group(g.c_out, group);
                let kernels_start = first * kernel_len + first_channel * taps * len;
                let kernels = &packed[kernels_start..kernels_start + channels * taps * len];
                let group_rows = OutputRows {
                    values: &mut out[(first * rows + r) * width..],
                    stride: rows * width,
                    width,
                };
                let (sources, k_w) = (&sources, g.k_w);
                match len {
                    1 => accumulate_row::<T, 1>(group_rows, sources, kernels, k_w),
                    2 => accumulate_row::<T, 2>(group_rows, sources, kernels, k_w),
                    3 => accumulate_row::<T, 3>(group_rows, sources, kernels, k_w),
                    _ => accumulate_row::<T, CHANNEL_GROUP>(group_rows, sources, kernels, k_w),
                }
            }
        }
    }
}

/// One output row in each channel of a group: row `j` is `values[j * stride..][..width]`.
struct OutputRows<'a, T> {
    values: &'a mut [T],
    stride: usize,
    width: usize,
}

/// Adds, for the `G` output channels `j` of a group, `sum over (row, kernel_row) in sources
/// and kx of kernels[(kernel_row * k_w + kx) * G + j] * row[x + kx]` to `out[j][x]` for every
/// column `x`. The row width must be a multiple of [`VECTOR`].
///
/// Each block of output columns stays in registers while every tap is added to it, in the
/// order of `sources` and then `kx`. A block keeps one dependency chain of additions per
/// vector, so wide blocks keep the adders busier than narrow ones.
#[inline(always)]
fn accumulate_row<T: Element, const G: usize>(
    mut out: OutputRows<'_, T>,
    sources: &[(&[T], usize)],
    kernels: &[T],
    k_w: usize,
) {
    debug_assert_eq!(out.width % VECTOR, 0);
    let max_vectors = (MAX_BLOCK_VECTORS / G).max(1);
    let mut x = 0;
    while x < out.width {
        let vectors = ((out.width - x) / VECTOR).min(max_vectors);
        match vectors {
            1 => accumulate_block::<T, G, 1>(&mut out, x, sources, kernels, k_w),
            2 => accumulate_block::<T, G, 2>(&mut out, x, sources, kernels, k_w),
            3 => accumulate_block::<T, G, 3>(&mut out, x, sources, kernels, k_w),
            4 => accumulate_block::<T, G, 4>(&mut out, x, sources, kernels, k_w),
            5 => accumulate_block::<T, G, 5>(&mut out, x, sources, kernels, k_w),
            _ => accumulate_block::<T, G, MAX_BLOCK_VECTORS>(&mut out, x, sources, kernels, k_w),
        }
        x += vectors * VECTOR;
    }
}

/// Adds the taps to output columns `x..x + V * VECTOR` of the `G` rows of `out` for
/// [`accumulate_row`].
#[inline(always)]
fn accumulate_block<T: Element, const G: usize, const V: usize>(
    out: &mut OutputRows<'_, T>,
    x: usize,
    sources: &[(&[T], usize)],
    kernels: &[T],
    k_w: usize,
) {
    let mut acc = [[[T::ZERO; VECTOR]; V]; G];
    for (j, channel) in acc.iter_mut().enumerate() {
        let start = j * out.stride + x;
        let stored = out.values[start..start + V * VECTOR].chunks_exact(VECTOR);
        for (lanes, values) in channel.iter_mut().zip(stored) {
            lanes.copy_from_slice(values);
        }
    }
    for &(row, kernel_row) in sources {
        let taps = &kernels[kernel_row * k_w * G..(kernel_row + 1) * k_w * G];
        for (kx, weights) in taps.chunks_exact(G).enumerate() {
            let weights: &[T; G] = weights.try_into().expect("G weights");
            let values = &row[x + kx..x + kx + V * VECTOR];
            for (channel, &w) in acc.iter_mut().zip(weights) {
                for (lanes, chunk) in channel.iter_mut().zip(values.chunks_exact(VECTOR)) {
                    let chunk: &[T; VECTOR] = chunk.try_into().expect("VECTOR values");
                    for (total, &value) in lanes.iter_mut().zip(chunk) {
                        *total += w * value;
                    }
                }
            }
        }
    }
    for (j, channel) in acc.iter().enumerate() {
        let start = j * out.stride + x;
        let stored = out.values[start..start + V * VECTOR].chunks_exact_mut(VECTOR);
        for (values, lanes) in stored.zip(channel) {
            values.copy_from_slice(lanes);
        }
    }
}

/// Rows of one input plane, each `width` columns from input column `-pad_w`, with the
/// columns in the horizontal padding read as zero.
///
/// Where `pad_w <= 0`, a row is read in place even when `width` reaches past the row's last
/// column. The columns beyond then contain whatever follows the row in the input buffer (the
/// next row, plane or image), and callers must drop every result that depends on them. Rows
/// that would reach past the end of the buffer, and all rows where `pad_w > 0`, are
/// zero-padded copies.
struct PlaneBand<'a, T> {
    g: ConvGeometry,
    width: usize,
    /// The whole input, `(n, c, h_in, w_in)`.
    data: &'a [T],
    rows: Vec<BandRow>,
    copies: Vec<T>,
}

/// Source of a band row.
#[derive(Clone, Copy)]
enum BandRow {
    /// The row lies in the vertical padding.
    Padding,
    /// `data[start..start + width]`.
    InPlace(usize),
    /// Row `r` of the band at `copies[r * width..]`.
    Copied,
}

impl<'a, T: Element> PlaneBand<'a, T> {
    fn new(g: &ConvGeometry, width: usize, data: &'a [T]) -> Self {
        PlaneBand {
            g: *g,
            width,
            data,
            rows: Vec::new(),
            copies: Vec::new(),
        }
    }

    /// Makes the band rows `first_row..first_row + rows` of the plane at `plane_start`.
    fn load(&mut self, plane_start: usize, first_row: isize, rows: usize) {
        let (g, width) = (self.g, self.width);
        self.rows.clear();
        for r in 0..rows {
            let row = first_row + r as isize;
            if row < 0 || row >= g.h_in as isize {
                self.rows.push(BandRow::Padding);
                continue;
            }
            let row_start = plane_start + row as usize * g.w_in;
            let in_place_start = (row_start as isize - g.pad_w) as usize;
            if g.pad_w <= 0 && in_place_start + width <= self.data.len() {
                self.rows.push(BandRow::InPlace(in_place_start));
                continue;
            }
            // Band column c is input column c - pad_w.
            self.copies.resize(rows * width, T::ZERO);
            let copy = &mut self.copies[r * width..(r + 1) * width];
            let first = g.pad_w.clamp(0, width as isize) as usize;
            let end = (g.pad_w + g.w_in as isize).clamp(first as isize, width as isize) as usize;
            let source_start = (row_start as isize + first as isize - g.pad_w) as usize;
            copy[..first].fill(T::ZERO);
            copy[first..end].copy_from_slice(&self.data[source_start..source_start + end - first]);
            copy[end..].fill(T::ZERO);
            self.rows.push(BandRow::Copied);
        }
    }

    /// Returns band row `r`, or `None` where it lies in the vertical padding.
    fn row(&self, r: usize) -> Option<&[T]> {
        match self.rows[r] {
            BandRow::Padding => None,
            BandRow::InPlace(start) => Some(&self.data[start..start + self.width]),
            BandRow::Copied => Some(&self.copies[r * self.width..(r + 1) * self.width]),
        }
    }
}

/// Computes the gradient of the convolution with respect to its weight:
/// `grad_weight[o, i, ky, kx] = sum over images and output pixels (y, x) of
/// grad_output[o, y, x] * x[i, y + ky - pad_h, x + kx - pad_w]`. Padding may be negative.
pub fn weight_grad<T: Element>(x: &[T], grad_output: &[T], g: &ConvGeometry) -> Vec<T> {
    let taps = g.k_h * g.k_w;
    let pairs = g.c_out * g.c_in;
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let rows = g.n * h_out;
    if pairs == 0 || rows == 0 || w_out == 0 {
        return vec![T::ZERO; pairs * taps];
    }
    // The output rows of all images, flattened, are split into chunks. Each task sums the
    // partial gradients of a block of consecutive channel pairs over one chunk: one pair when
    // a pair has enough work, else as many as make up a task's worth together.
    let chunk_rows = MIN_TASK_WORK
        .div_ceil(taps * w_out)
        .max(rows.div_ceil(MAX_WEIGHT_GRAD_PARTIALS))
        .min(rows);
    let chunks = rows.div_ceil(chunk_rows);
    let pairs_per_task = (MIN_TASK_WORK / (rows * w_out * taps)).clamp(1, pairs);
    let blocks = pairs.div_ceil(pairs_per_task);
    // Pairs are numbered with the thin side fastest, so that the tasks of consecutive pairs
    // read the same plane of the wide side, which then stays in the cache. Reading the
    // 128-channel input of a 128 -> 3 convolution at 186x248 pixels in (o, i) order instead
    // took 1.3 to 2 times as long.
    let channels_of = |pair: usize| {
        if g.c_out <= g.c_in {
            (pair % g.c_out, pair / g.c_out)
        } else {
            (pair / g.c_in, pair % g.c_in)
        }
    };

    let partials: Vec<Vec<T>> = (0..blocks * chunks)
        .into_par_iter()
        .map(|task| {
            let (block, chunk) = (task / chunks, task % chunks);
            let first_row = chunk * chunk_rows;
            let end_row = (first_row + chunk_rows).min(rows);
            let block_pairs = block * pairs_per_task..((block + 1) * pairs_per_task).min(pairs);
            block_pairs
                .flat_map(|pair| {
                    pair_weight_grad(x, grad_output, g, channels_of(pair), first_row..end_row)
                })
                .collect()
        })
        .collect();

    let mut grad_weight = vec![T::ZERO; pairs * taps];
    for (block, block_partials) in partials.chunks_exact(chunks).enumerate() {
        for partial in block_partials {
            for (j, pair_partial) in partial.chunks_exact(taps).enumerate() {
                let (o, i) = channels_of(block * pairs_per_task + j);
                let start = (o * g.c_in + i) * taps;
                let total = &mut grad_weight[start..start + taps];
                for (sum, &value) in total.iter_mut().zip(pair_partial) {
                    *sum += value;
                }
            }
        }
    }
    grad_weight
}

/// Sums the weight gradient of channel pair `(o, i)` over the flattened output rows `rows`
/// (`image * h_out + y`), returning `k_h * k_w` values.
fn pair_weight_grad<T: Element>(
    x: &[T],
    grad_output: &[T],
    g: &ConvGeometry,
    pair: (usize, usize),
    rows: std::ops::Range<usize>,
) -> Vec<T> {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx") {
        // SAFETY: the CPU supports AVX, the one feature the function is compiled for.
        return unsafe { pair_weight_grad_avx(x, grad_output, g, pair, rows) };
    }
    pair_weight_grad_portable(x, grad_output, g, pair, rows)
}

/// [`pair_weight_grad_portable`] compiled for AVX.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn pair_weight_grad_avx<T: Element>(
    x: &[T],
    grad_output: &[T],
    g: &ConvGeometry,
    pair: (usize, usize),
    rows: std::ops::Range<usize>,
) -> Vec<T> {
    pair_weight_grad_portable(x, grad_output, g, pair, rows)
}

#[inline(always)]
fn pair_weight_grad_portable<T: Element>(
    x: &[T],
    grad_output: &[T],
    g: &ConvGeometry,
    (o, i): (usize, usize),
    rows: std::ops::Range<usize>,
) -> Vec<T> {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let plane_len = g.h_in * g.w_in;
    let taps = g.k_h * g.k_w;
    // Products of whole chunks of LANES columns go to `lanes`, those of the last
    // `w_out % LANES` columns to `tails`, in separate arrays so that the compiler can keep
    // `lanes` in registers while the tails are indexed at run time.
    let mut lanes = vec![[T::ZERO; LANES]; taps];
    let mut tails = vec![[T::ZERO; LANES]; taps];
    let mut band = PlaneBand::new(g, w_out + g.k_w - 1, x);

    // One pass per image that the rows cover, with that image's input rows as the band.
    let mut flat_row = rows.start;
    while flat_row < rows.end {
        let (image, first_y) = (flat_row / h_out, flat_row % h_out);
        let end_y = h_out.min(first_y + rows.end - flat_row);
        band.load(
            (image * g.c_in + i) * plane_len,
            first_y as isize - g.pad_h,
            end_y - first_y + g.k_h - 1,
        );
        let gy_start = (image * g.c_out + o) * h_out * w_out;
        let gy_rows =
            grad_output[gy_start + first_y * w_out..gy_start + end_y * w_out].chunks_exact(w_out);
        for (r, gy_row) in gy_rows.enumerate() {
            let in_rows = |ky: usize| band.row(r + ky);
            add_row_products(&mut lanes, &mut tails, gy_row, in_rows, g.k_w);
        }
        flat_row += end_y - first_y;
    }

    lanes
        .iter()
        .zip(&tails)
        .map(|(tap_lanes, tap_tail)| sum_lanes(tap_lanes, tap_tail))
        .collect()
}

/// Adds the products of one output-gradient row with the input rows under it to the lanes
/// and tails of every tap, `(k_h, k_w)`. `in_rows(ky)` returns the `w_out + k_w - 1` input
/// columns under kernel row `ky`, or `None` in the vertical padding.
#[inline(always)]
fn add_row_products<'a, T: Element + 'a>(
    lanes: &mut [[T; LANES]],
    tails: &mut [[T; LANES]],
    gy_row: &[T],
    in_rows: impl Fn(usize) -> Option<&'a [T]>,
    k_w: usize,
) {
    let kernel_rows = lanes.chunks_exact_mut(k_w).zip(tails.chunks_exact_mut(k_w));
    for (ky, (row_lanes, row_tails)) in kernel_rows.enumerate() {
        let Some(in_row) = in_rows(ky) else {
            continue;
        };
        let three = (
            <&mut [[T; LANES]; 3]>::try_from(&mut *row_lanes),
            <&mut [[T; LANES]; 3]>::try_from(&mut *row_tails),
        );
        if let (Ok(lanes), Ok(tails)) = three {
            dot_three(lanes, tails, gy_row, in_row);
            continue;
        }
        for (kx, (tap_lanes, tap_tail)) in row_lanes.iter_mut().zip(row_tails).enumerate() {
            dot_one(tap_lanes, tap_tail, gy_row, &in_row[kx..kx + gy_row.len()]);
        }
    }
}

/// Adds `a[j] * b[j]` for every `j` (`a.len() == b.len()`) to `lanes[j % LANES]`, or to
/// `tail[j % LANES]` for the last `a.len() % LANES` values.
#[inline(always)]
fn dot_one<T: Element>(lanes: &mut [T; LANES], tail: &mut [T; LANES], a: &[T], b: &[T]) {
    // A local copy lets the compiler keep the lanes in registers across the loop.
    let mut acc = *lanes;
    let chunks = a.len() / LANES;
    for chunk in 0..chunks {
        let start = chunk * LANES;
        let p: &[T; LANES] = a[start..start + LANES].try_into().expect("LANES values");
        let q: &[T; LANES] = b[start..start + LANES].try_into().expect("LANES values");
        for lane in 0..LANES {
            acc[lane] += p[lane] * q[lane];
        }
    }
    *lanes = acc;
    let start = chunks * LANES;
    for ((sum, &p), &q) in tail.iter_mut().zip(&a[start..]).zip(&b[start..]) {
        *sum += p * q;
    }
}

/// [`dot_one`] for three shifts of `b` in one pass over `a`: adds `a[j] * b[j + kx]` for
/// every `j` and `kx < 3` to `lanes[kx]` or `tails[kx]`, with `b.len() == a.len() + 2`.
#[inline(always)]
fn dot_three<T: Element>(
    lanes: &mut [[T; LANES]; 3],
    tails: &mut [[T; LANES]; 3],
    a: &[T],
    b: &[T],
) {
    let [mut acc0, mut acc1, mut acc2] = *lanes;
    let chunks = a.len() / LANES;
    for chunk in 0..chunks {
        let start = chunk * LANES;
        let p: &[T; LANES] = a[start..start + LANES].try_into().expect("LANES values");
        let q0: &[T; LANES] = b[start..start + LANES].try_into().expect("LANES values");
        let q1: &[T; LANES] = b[start + 1..start + 1 + LANES]
            .try_into()
            .expect("LANES values");
        let q2: &[T; LANES] = b[start + 2..start + 2 + LANES]
            .try_into()
            .expect("LANES values");
        for lane in 0..LANES {
            acc0[lane] += p[lane] * q0[lane];
            acc1[lane] += p[lane] * q1[lane];
            acc2[lane] += p[lane] * q2[lane];
        }
    }
    *lanes = [acc0, acc1, acc2];
    let start = chunks * LANES;
    for (kx, tail) in tails.iter_mut().enumerate() {
        for ((sum, &p), &q) in tail.iter_mut().zip(&a[start..]).zip(&b[start + kx..]) {
            *sum += p * q;
        }
    }
}

/// Adds each lane to its tail and the results pairwise, the same order for every call.
fn sum_lanes<T: Element>(lanes: &[T; LANES], tail: &[T; LANES]) -> T {
    let mut values: [T; LANES] = std::array::from_fn(|lane| lanes[lane] + tail[lane]);
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for j in 0..width {
            values[j] += values[j + width];
        }
    }
    values[0]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::SeededNormal;
    use crate::ops::conv2d::cpu::{flip_transpose, transposed_geometry};
    use crate::ops::conv2d::reference;

    /// A convolution case: (n, c_in, c_out, h_in, w_in, k_h, k_w, padding).
    type Case = (usize, usize, usize, usize, usize, usize, usize, isize);

    /// Thin convolutions with 1 to 4 channels on one side, odd sizes, batch 1 and 2, padding
    /// -1 to 2 and kernels other than 3x3. The 32-channel cases span several channel chunks,
    /// channel groups or blocks of channel pairs, and the large cases several row blocks
    /// (forward) or row chunks (weight gradient).
    const CASES: [Case; 14] = [
        (1, 1, 1, 3, 3, 3, 3, 0),
        (1, 1, 1, 1, 1, 3, 3, 1),
        (2, 3, 1, 7, 9, 3, 3, 0),
        (1, 2, 5, 9, 11, 3, 3, 1),
        (2, 4, 2, 13, 5, 3, 3, 2),
        (1, 3, 32, 17, 23, 3, 3, 0),
        (2, 32, 3, 21, 19, 3, 3, 2),
        (1, 32, 1, 44, 61, 3, 3, 0),
        (2, 1, 4, 5, 7, 1, 1, 0),
        (1, 2, 3, 9, 8, 5, 5, 2),
        (2, 3, 2, 6, 11, 2, 4, 1),
        (1, 3, 4, 8, 9, 3, 3, -1),
        (2, 1, 1, 130, 131, 3, 3, 1),
        (1, 2, 2, 3, 150, 3, 3, 2),
    ];

    fn geometry((n, c_in, c_out, h_in, w_in, k_h, k_w, pad): Case) -> ConvGeometry {
        ConvGeometry {
            n,
            c_in,
            c_out,
            h_in,
            w_in,
            k_h,
            k_w,
            pad_h: pad,
            pad_w: pad,
        }
    }

    /// Inputs of one case: `x`, `weight` and `grad_output`, standard normal.
    fn operands(g: &ConvGeometry, seed: u64) -> [Vec<f64>; 3] {
        let mut rng = SeededNormal::new(seed);
        let mut draw = |len: usize| (0..len).map(|_| rng.normal()).collect::<Vec<_>>();
        [
            draw(g.n * g.c_in * g.h_in * g.w_in),
            draw(g.c_out * g.c_in * g.k_h * g.k_w),
            draw(g.n * g.c_out * g.h_out() * g.w_out()),
        ]
    }

    /// Largest of `|actual - expected| / (1 + |expected|)`.
    fn max_error<T: Element>(actual: &[T], expected: &[f64]) -> f64 {
        assert_eq!(actual.len(), expected.len(), "result length");
        actual
            .iter()
            .zip(expected)
            .map(|(&a, &e)| (a.to_f64() - e).abs() / (1.0 + e.abs()))
            .fold(0.0, f64::max)
    }

    /// Runs the direct forward, input gradient and weight gradient in `T` and returns their
    /// errors against the `f64` reference loops.
    fn errors<T: Element>(g: &ConvGeometry, seed: u64) -> [f64; 3] {
        let [x, weight, gy] = operands(g, seed);
        let cast = |values: &[f64]| values.iter().map(|&v| T::from_f64(v)).collect::<Vec<T>>();
        let (x_t, weight_t, gy_t) = (cast(&x), cast(&weight), cast(&gy));

        let y = forward(&x_t, &weight_t, g);
        let rotated = flip_transpose(&weight_t, g.c_out, g.c_in, g.k_h, g.k_w);
        let gx = forward(&gy_t, &rotated, &transposed_geometry(g));
        let gw = weight_grad(&x_t, &gy_t, g);
        [
            max_error(&y, &reference::forward(&x, &weight, g)),
            max_error(&gx, &reference::input_grad(&gy, &weight, g)),
            max_error(&gw, &reference::weight_grad(&x, &gy, g)),
        ]
    }

    #[test]
    fn f64_matches_reference() {
        for (index, case) in CASES.into_iter().enumerate() {
            let g = geometry(case);
            let [forward, input_grad, weight_grad] = errors::<f64>(&g, index as u64);
            assert!(forward < 1e-12, "{g:?}: forward error {forward}");
            assert!(
                input_grad < 1e-12,
                "{g:?}: input gradient error {input_grad}"
            );
            assert!(
                weight_grad < 1e-12,
                "{g:?}: weight gradient error {weight_grad}"
            );
        }
    }

    #[test]
    fn f32_matches_f64_reference() {
        for (index, case) in CASES.into_iter().enumerate() {
            let g = geometry(case);
            let [forward, input_grad, weight_grad] = errors::<f32>(&g, index as u64);
            assert!(forward < 1e-4, "{g:?}: forward error {forward}");
            assert!(
                input_grad < 1e-4,
                "{g:?}: input gradient error {input_grad}"
            );
            assert!(
                weight_grad < 1e-4,
                "{g:?}: weight gradient error {weight_grad}"
            );
        }
    }

    #[test]
    fn results_identical_across_thread_counts() {
        let run = |threads: usize, g: &ConvGeometry| {
            let [x, weight, gy] = operands(g, 5);
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("rayon pool")
                .install(|| [forward(&x, &weight, g), weight_grad(&x, &gy, g)])
        };
        for case in CASES {
            let g = geometry(case);
            let [y_one, gw_one] = run(1, &g);
            let [y_three, gw_three] = run(3, &g);
            assert_eq!(
                y_one, y_three,
                "{g:?}: forward differs between 1 and 3 threads"
            );
            assert_eq!(
                gw_one, gw_three,
                "{g:?}: weight gradient differs between 1 and 3 threads"
            );
        }
    }

    #[test]
    fn thinness_rule() {
        let with_channels = |c_in, c_out| geometry((1, c_in, c_out, 8, 8, 3, 3, 0));
        assert!(is_thin(&with_channels(32, 1), Pass::Forward));
        assert!(is_thin(&with_channels(128, 4), Pass::Forward));
        assert!(!is_thin(&with_channels(3, 32), Pass::Forward));
        assert!(!is_thin(&with_channels(32, 5), Pass::Forward));
        assert!(is_thin(&with_channels(32, 1), Pass::WeightGrad));
        assert!(!is_thin(&with_channels(3, 32), Pass::WeightGrad));
        assert!(!is_thin(&with_channels(32, 3), Pass::WeightGrad));
        let five_by_five = geometry((1, 32, 1, 8, 8, 5, 5, 0));
        assert!(is_thin(&five_by_five, Pass::Forward));
        assert!(!is_thin(&five_by_five, Pass::WeightGrad));
    }
}
