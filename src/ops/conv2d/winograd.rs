//! Winograd F(4x2, 3x3) kernels for 3x3 convolutions with stride 1.
//!
//! Each block of 4 rows by 2 columns of output pixels (a tile) is computed from the 6x4 input
//! patch under it as `Y = A^T [(G w G^T) . (B^T d B)] A`, where `.` multiplies element-wise and
//! each matrix pair is F(4, 3) along the rows and F(2, 3) along the columns. Summed over input
//! channels, the element-wise products become 24 independent matrix products, one per position
//! of the 6x4 transformed tile. A tile then costs 24 multiply-adds per channel pair, 3 per
//! output pixel, where F(2x2, 3x3) needs 4 and a direct convolution 9. The method is from
//! Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016), with their
//! F(4, 3) matrices (points 0, 1, -1, 2, -2). The F(4, 3) factors scale values by up to 8, so
//! f32 results differ from a direct convolution by about 1e-6 of the largest output. That is
//! 2.5 times as much as F(2x2, 3x3), and F(4, 3) along both axes would add as much again.
//!
//! The weight gradient runs the same algorithm backwards: with `Z = U . V` for `U = G w G^T`
//! and `V = B^T d B`, the gradient `dZ = A dY A^T` gives `dU = sum over tiles of dZ . V` (24
//! matrix products reduced over tiles) and `dw = G^T dU G`.
//!
//! Tiles are processed in fixed-size groups whose transformed values stay in the L2 cache.
//! Inside a group they are stored in blocks of 16 tiles, channel by channel:
//! `[block][channel][position][lane]`, tile `t` of the group being lane `t % 16` of block
//! `t / 16`. One channel's 24 positions of one block are then 384 consecutive values, which
//! the AVX-512 kernels (`winograd_transforms_avx512.rs`, `winograd_avx512.rs`) write and read
//! as whole vectors, and which the portable loops here run over with unit stride. Lanes past
//! the group's last tile hold zeros. The grouping depends only on the shapes, so results are
//! bit-identical for any thread count.

use std::any::TypeId;

use rayon::prelude::*;

use super::winograd_avx512 as avx512;
use super::winograd_transforms_avx512 as transforms_avx512;
use super::ConvGeometry;
use crate::element::{as_f32, as_f32_mut, Element};
use crate::ops::vectorized;

/// Output rows and columns of a tile.
pub(super) const TILE_ROWS: usize = 4;
pub(super) const TILE_COLS: usize = 2;

/// Input rows and columns under a tile, and the positions of a transformed tile: 6 rows of 4.
pub(super) const INPUT_ROWS: usize = TILE_ROWS + 2;
pub(super) const INPUT_COLS: usize = TILE_COLS + 2;
pub(super) const POSITIONS: usize = INPUT_ROWS * INPUT_COLS;

/// Tiles per block: the lanes of one 512-bit vector of `f32`.
pub(super) const BLOCK: usize = 16;

/// Values of one channel in one block: 24 positions of 16 lanes.
pub(super) const BLOCK_VALUES: usize = POSITIONS * BLOCK;

/// Tiles per group, and the max bytes of transformed inputs and products that a group may
/// hold. 128 tiles measured fastest for 32 to 128 channels on a 2 MiB L2 cache (`cargo bench
/// --bench conv2d`). Fewer tiles make the matrix products too narrow, and more spill the group
/// out of the cache. On a Zen 4 core (1 MiB of L2), 2 MiB and 4 MiB groups timed the same at
/// 64 and 128 channels, and 1 MiB made the 128-channel weight gradient 20% slower.
///
/// NOTE: these sizes were measured with F(2x2, 3x3) tiles of 16 positions. With 24 positions a
/// group of 128 tiles at 128 input and 128 output channels takes 3 MiB, more than the L2.
const GROUP_TILES: usize = 128;
const MAX_GROUP_BYTES: usize = 4 << 20;

/// Most partial weight gradients per image; each is `24 * c_out * c_in` values.
const MAX_WEIGHT_GRAD_PARTIALS: usize = 16;

/// Minimum tasks per image of the forward pass when the image is small enough to need fewer
/// than [`GROUP_TILES`] tiles per task for it, so that both of two threads get work and
/// finish close together. An image of 48 tiles (the coarsest critic layers) splits into three
/// tasks of 16 tiles, and one of 455 tiles (scale 3 of a 250-pixel pyramid) into 15 tasks of
/// 32. With 2x2 tiles (twice as many), 15 tasks of 64 had been 4% faster there than 8 of 128.
const MIN_FORWARD_TASKS: usize = 16;

/// Minimum tasks per image of the weight gradient, for the same reason. Fewer than for the
/// forward pass, because each task pays a fixed cost to add up its sums' lanes.
const MIN_WEIGHT_GRAD_TASKS: usize = 4;

/// Values per task when the weight gradient adds up its partial sums.
const SUM_CHUNK: usize = 1 << 13;

/// Minimum tiles per weight-gradient task: four blocks.
const MIN_WEIGHT_GRAD_CHUNK: usize = 4 * BLOCK;

/// Reports whether the Winograd kernels compute this convolution.
pub fn supports(g: &ConvGeometry) -> bool {
    g.k_h == 3 && g.k_w == 3
}

/// The grid of 4x2 output tiles of one image.
#[derive(Clone, Copy)]
struct TileGrid {
    rows: usize,
    cols: usize,
}

impl TileGrid {
    fn new(g: &ConvGeometry) -> Self {
        TileGrid {
            rows: g.h_out().div_ceil(TILE_ROWS),
            cols: g.w_out().div_ceil(TILE_COLS),
        }
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// Tiles per group: [`GROUP_TILES`], or fewer (a multiple of [`BLOCK`], at least one block)
/// when the transformed inputs (`c_in` channels) and products (`c_out` channels) of that many
/// tiles would exceed [`MAX_GROUP_BYTES`].
fn group_len<T>(g: &ConvGeometry) -> usize {
    let per_tile = POSITIONS * (g.c_in + g.c_out) * std::mem::size_of::<T>();
    let fitting = (MAX_GROUP_BYTES / per_tile.max(1)) / BLOCK * BLOCK;
    fitting.clamp(BLOCK, GROUP_TILES)
}

/// Tiles per task of the forward pass: [`group_len`], or fewer for small images, so that
/// each image splits into at least [`MIN_FORWARD_TASKS`] tasks of whole blocks.
fn forward_group_len<T>(g: &ConvGeometry, tiles: usize) -> usize {
    let even_split = tiles.div_ceil(MIN_FORWARD_TASKS).next_multiple_of(BLOCK);
    even_split.clamp(BLOCK, group_len::<T>(g))
}

/// Tiles per weight-gradient task: enough for at most [`MAX_WEIGHT_GRAD_PARTIALS`] partial
/// sums, and for small images fewer than [`group_len`] but at least
/// [`MIN_WEIGHT_GRAD_CHUNK`], aiming at [`MIN_WEIGHT_GRAD_TASKS`] tasks.
fn weight_grad_chunk_len<T>(g: &ConvGeometry, tiles: usize) -> usize {
    let even_split = tiles
        .div_ceil(MIN_WEIGHT_GRAD_TASKS)
        .next_multiple_of(BLOCK);
    // Not `clamp`: with thousands of channels `group_len` is below the minimum, and wins.
    let small_image_chunk = even_split.max(MIN_WEIGHT_GRAD_CHUNK).min(group_len::<T>(g));
    small_image_chunk.max(tiles.div_ceil(MAX_WEIGHT_GRAD_PARTIALS))
}

/// Index of the first lane of `position` of `channel` (of `channels`) in block `block`.
pub(super) fn block_index(block: usize, channel: usize, channels: usize, position: usize) -> usize {
    ((block * channels + channel) * POSITIONS + position) * BLOCK
}

/// A buffer of a group's transformed values, whose first element is 64-byte aligned so that
/// the 16 lanes of an `f32` block row fill one cache line.
///
/// Its storage comes from a per-thread pool and goes back there on drop, so the convolutions
/// of a training step reuse the same memory instead of allocating and zero-filling their
/// buffers again. The contents are therefore unspecified (zeros, or values of an earlier
/// op), and every user writes the values it reads first.
struct GroupBuffer<T> {
    storage: Vec<f64>,
    start: usize,
    len: usize,
    element: std::marker::PhantomData<T>,
}

thread_local! {
    /// Storage of the [`GroupBuffer`]s this thread has dropped.
    static GROUP_STORAGE: std::cell::RefCell<Vec<Vec<f64>>> = const {
        std::cell::RefCell::new(Vec::new())
    };
}

/// Maximum storage buffers a thread's pool keeps. A convolution uses at most three at once on
/// one thread. The rest of the limit covers buffers dropped on another thread than the one
/// that took them.
const MAX_POOLED_BUFFERS: usize = 8;

/// Removes from `pool` the smallest storage of at least `words` values, or else the largest.
fn take_storage(pool: &mut Vec<Vec<f64>>, words: usize) -> Option<Vec<f64>> {
    let fitting = (0..pool.len())
        .filter(|&index| pool[index].len() >= words)
        .min_by_key(|&index| pool[index].len());
    let largest = (0..pool.len()).max_by_key(|&index| pool[index].len());
    fitting.or(largest).map(|index| pool.swap_remove(index))
}

impl<T: Element> GroupBuffer<T> {
    const ALIGN_BYTES: usize = 64;

    fn new(len: usize) -> Self {
        // `T` is `f32` or `f64`: its size divides 8 and its alignment is at most 8, so the
        // `f64` storage can hold `len` of them, and any bit pattern is a valid value of both.
        assert_eq!(8 % std::mem::size_of::<T>(), 0);
        assert!(std::mem::align_of::<T>() <= 8);
        let words = (len * std::mem::size_of::<T>()).div_ceil(8) + Self::ALIGN_BYTES / 8;
        let mut storage = GROUP_STORAGE
            .with(|pool| take_storage(&mut pool.borrow_mut(), words))
            .unwrap_or_default();
        if storage.len() < words {
            storage.resize(words, 0.0);
        }
        // `align_offset` may report that it cannot align (usize::MAX); the buffer then starts
        // unaligned, which costs speed only.
        let words_to_align = storage.as_ptr().align_offset(Self::ALIGN_BYTES);
        let words_to_align = if words_to_align < Self::ALIGN_BYTES / 8 {
            words_to_align
        } else {
            0
        };
        let start = words_to_align * 8 / std::mem::size_of::<T>();
        GroupBuffer {
            storage,
            start,
            len,
            element: std::marker::PhantomData,
        }
    }

    fn as_mut_slice(&mut self) -> &mut [T] {
        let values = self.storage.as_mut_ptr().cast::<T>();
        // SAFETY: `new` sized the storage for `start + len` values of `T` (the alignment
        // slack covers `start`), the pointer is aligned for `T`, every bit pattern is a valid
        // `T`, and the slice borrows `self` mutably.
        unsafe { std::slice::from_raw_parts_mut(values.add(self.start), self.len) }
    }
}

impl<T> Drop for GroupBuffer<T> {
    fn drop(&mut self) {
        let storage = std::mem::take(&mut self.storage);
        // After the thread's pool is destroyed (at thread exit) the storage is freed instead,
        // and so is storage beyond the pool's size limit.
        let _ = GROUP_STORAGE.try_with(|pool| {
            let mut pool = pool.borrow_mut();
            if pool.len() < MAX_POOLED_BUFFERS {
                pool.push(storage);
            }
        });
    }
}

/// Computes `G w G^T` of one 3x3 kernel `w` (row-major), in position order `row * 4 + col`.
fn transform_kernel<T: Element>(w: &[T]) -> [T; POSITIONS] {
    let taps: [[T; 1]; 9] = std::array::from_fn(|tap| [w[tap]]);
    transform_kernels(&taps).map(|[value]| value)
}

/// Computes the rows' factor `G w` of F(4, 3) for one column `(top, middle, bottom)` of a
/// kernel: the rows of `G` are (1/4, 0, 0), (-1/6, -1/6, -1/6), (-1/6, 1/6, -1/6),
/// (1/24, 1/12, 1/6), (1/24, -1/12, 1/6) and (0, 0, 1).
#[inline]
fn kernel_rows<T: Element>(top: T, middle: T, bottom: T) -> [T; INPUT_ROWS] {
    let quarter = T::from_f64(0.25);
    let sixth = T::from_f64(1.0 / 6.0);
    let twenty_fourth = T::from_f64(1.0 / 24.0);
    let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
    let outer = top + bottom;
    let weighted = top + four * bottom;
    [
        quarter * top,
        -(sixth * (outer + middle)),
        -(sixth * (outer - middle)),
        twenty_fourth * (weighted + two * middle),
        twenty_fourth * (weighted - two * middle),
        bottom,
    ]
}

/// Computes the columns' factor of F(2, 3) for one row `(left, middle, right)`: the rows of
/// its `G` are (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2) and (0, 0, 1).
#[inline]
fn kernel_cols<T: Element>(left: T, middle: T, right: T) -> [T; INPUT_COLS] {
    let half = T::from_f64(0.5);
    [
        left,
        half * (left + middle + right),
        half * (left - middle + right),
        right,
    ]
}

/// Computes `G w G^T` of `L` 3x3 kernels at once, lane `l` of every array belonging to kernel
/// `l`: `taps[t]` contains tap `t` (row-major) and the result position `row * 4 + col`. The
/// rows take [`kernel_rows`] and the columns [`kernel_cols`]. Each lane performs the same
/// operations in the same order for any `L`, and the lane loops vectorise.
#[inline]
fn transform_kernels<T: Element, const L: usize>(taps: &[[T; L]; 9]) -> [[T; L]; POSITIONS] {
    // G w: 6x3.
    let mut gw = [[[T::ZERO; L]; 3]; INPUT_ROWS];
    for col in 0..3 {
        for l in 0..L {
            let rows = kernel_rows(taps[col][l], taps[3 + col][l], taps[6 + col][l]);
            for (row, value) in rows.into_iter().enumerate() {
                gw[row][col][l] = value;
            }
        }
    }
    // (G w) G^T: 6x4.
    let mut u = [[T::ZERO; L]; POSITIONS];
    for (row, values) in gw.iter().enumerate() {
        for l in 0..L {
            let cols = kernel_cols(values[0][l], values[1][l], values[2][l]);
            for (col, value) in cols.into_iter().enumerate() {
                u[row * INPUT_COLS + col][l] = value;
            }
        }
    }
    u
}

/// Kernels transformed per step of [`transform_weights`] and [`packed_weights`], whose 24
/// positions are then stored as 24 runs of consecutive values rather than 24 scattered ones.
const KERNEL_TILE: usize = 16;

/// Computes `G w G^T` for every (output, input) channel pair, stored position-major:
/// `u[(position * c_out + o) * c_in + i]`, so each position is a row-major `c_out x c_in` matrix.
fn transform_weights<T: Element>(weight: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    let pairs = c_out * c_in;
    let mut u: Vec<T> = Vec::with_capacity(POSITIONS * pairs);
    let values = &mut u.spare_capacity_mut()[..POSITIONS * pairs];
    // Pair k is (o, i) = (k / c_in, k % c_in), so position p of pair k goes to p * pairs + k.
    for first in (0..pairs).step_by(KERNEL_TILE) {
        let count = KERNEL_TILE.min(pairs - first);
        let kernels: Vec<[T; POSITIONS]> = (first..first + count)
            .map(|pair| transform_kernel(&weight[pair * 9..(pair + 1) * 9]))
            .collect();
        for position in 0..POSITIONS {
            let run = &mut values[position * pairs + first..][..count];
            for (value, kernel) in run.iter_mut().zip(&kernels) {
                value.write(kernel[position]);
            }
        }
    }
    // SAFETY: the steps cover pairs 0..pairs, and each wrote all 24 positions of its pairs,
    // so every one of the `POSITIONS * pairs` values is initialised.
    unsafe { u.set_len(POSITIONS * pairs) };
    u
}

/// Computes `G w G^T` for every (output, input) channel pair in the packed layout of the
/// AVX-512 forward kernel (`avx512::pack_weights` of the output of [`transform_weights`]), one
/// rayon task per block of 8 output channels.
fn packed_weights(weight: &[f32], c_out: usize, c_in: usize) -> Vec<f32> {
    const CHANNELS: usize = avx512::CHANNEL_BLOCK;
    assert_eq!(
        c_out % CHANNELS,
        0,
        "c_out must be a multiple of the channel block"
    );
    let len = POSITIONS * c_out * c_in;
    // Inputs per step: with 8 output channels each, 16 kernels.
    let inputs_per_step = KERNEL_TILE / CHANNELS;
    let mut packed: Vec<f32> = Vec::with_capacity(len);
    packed.spare_capacity_mut()[..len]
        .par_chunks_mut(POSITIONS * c_in * CHANNELS)
        .enumerate()
        .for_each(|(block, values)| {
            for first in (0..c_in).step_by(inputs_per_step) {
                let count = inputs_per_step.min(c_in - first);
                // Lane k * 8 + j: input channel first + k, output channel block * 8 + j, in
                // the packed order of those values. Lanes past `count` inputs transform zeros.
                let mut taps = [[0.0f32; KERNEL_TILE]; 9];
                for k in 0..count {
                    for j in 0..CHANNELS {
                        let pair = (block * CHANNELS + j) * c_in + first + k;
                        for (tap, &value) in weight[pair * 9..(pair + 1) * 9].iter().enumerate() {
                            taps[tap][k * CHANNELS + j] = value;
                        }
                    }
                }
                let kernels = vectorized(|| transform_kernels(&taps));
                for (position, lanes) in kernels.iter().enumerate() {
                    let start = (position * c_in + first) * CHANNELS;
                    let run = &mut values[start..start + count * CHANNELS];
                    for (value, &lane) in run.iter_mut().zip(lanes) {
                        value.write(lane);
                    }
                }
            }
        });
    // SAFETY: the tasks cover every block, and each wrote all 8 values of every (position,
    // input channel) of its block, so every one of the `len` values is initialised.
    unsafe { packed.set_len(len) };
    packed
}

/// The tiles of one block that lie in one tile row: lanes `first_lane..end_lane`, where lane
/// `j` is the tile at tile row `row` and tile column `col + j`. `col` is negative when the
/// part starts after lane 0 near the left edge.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Part {
    pub first_lane: usize,
    pub end_lane: usize,
    pub row: usize,
    pub col: isize,
}

impl Part {
    fn len(&self) -> usize {
        self.end_lane - self.first_lane
    }

    /// Tile column of the part's first lane.
    fn first_col(&self) -> usize {
        (self.col + self.first_lane as isize) as usize
    }
}

/// The parts of one block, at most one per lane.
struct Parts {
    parts: [Part; BLOCK],
    len: usize,
}

impl Parts {
    /// Splits the `count` tiles from tile `first` (row-major over the image's tile grid) at
    /// the ends of tile rows.
    fn new(grid: TileGrid, first: usize, count: usize) -> Self {
        debug_assert!(count <= BLOCK);
        let mut parts = Parts {
            parts: [Part::default(); BLOCK],
            len: 0,
        };
        let mut lane = 0;
        while lane < count {
            let tile = first + lane;
            let (row, col) = (tile / grid.cols, tile % grid.cols);
            let run = (count - lane).min(grid.cols - col);
            parts.parts[parts.len] = Part {
                first_lane: lane,
                end_lane: lane + run,
                row,
                col: col as isize - lane as isize,
            };
            parts.len += 1;
            lane += run;
        }
        parts
    }

    fn as_slice(&self) -> &[Part] {
        &self.parts[..self.len]
    }
}

/// Copies row `row` of `plane` from column `first_col` on into `even` and `odd`: `even[x]`
/// gets column `first_col + 2x` and `odd[x]` column `first_col + 2x + 1`. Columns and rows
/// outside the plane (padding) read as zero.
fn load_row<T: Element>(
    plane: &[T],
    (height, width): (usize, usize),
    (row, first_col): (isize, isize),
    even: &mut [T],
    odd: &mut [T],
) {
    if row < 0 || row >= height as isize {
        even.fill(T::ZERO);
        odd.fill(T::ZERO);
        return;
    }
    let source = &plane[row as usize * width..(row as usize + 1) * width];
    let read = |col: isize| {
        if col >= 0 && col < width as isize {
            source[col as usize]
        } else {
            T::ZERO
        }
    };
    // Pairs (2x, 2x + 1) that lie wholly inside the row are copied without bounds tests.
    let inside_start = (((-first_col).max(0) as usize).div_ceil(2)).min(even.len());
    let inside_end = (((width as isize - first_col) / 2).max(0) as usize)
        .min(even.len())
        .max(inside_start);
    for x in (0..inside_start).chain(inside_end..even.len()) {
        let col = first_col + 2 * x as isize;
        even[x] = read(col);
        odd[x] = read(col + 1);
    }
    let start = (first_col + 2 * inside_start as isize) as usize;
    let pairs = source[start..start + 2 * (inside_end - inside_start)].chunks_exact(2);
    for ((e, o), pair) in even[inside_start..inside_end]
        .iter_mut()
        .zip(&mut odd[inside_start..inside_end])
        .zip(pairs)
    {
        *e = pair[0];
        *o = pair[1];
    }
}

/// Per-task scratch rows of the portable transforms, allocated on first use: the AVX-512
/// transforms need none, and their tasks would otherwise pay for the allocations.
struct Scratch<T>(Option<ScratchRows<T>>);

impl<T: Element> Scratch<T> {
    fn new() -> Self {
        Scratch(None)
    }

    fn rows(&mut self) -> &mut ScratchRows<T> {
        self.0.get_or_insert_with(ScratchRows::new)
    }
}

/// Scratch rows of the portable transforms, split into even and odd columns.
struct ScratchRows<T> {
    even: [Vec<T>; INPUT_ROWS],
    odd: [Vec<T>; INPUT_ROWS],
    combined_even: [Vec<T>; INPUT_ROWS],
    combined_odd: [Vec<T>; INPUT_ROWS],
    /// `A^T M` of the forward pass's inverse transform, the four columns of a row one after
    /// the other.
    sums: [Vec<T>; TILE_ROWS],
    /// The output rows of the forward pass's inverse transform.
    lines: [Vec<T>; TILE_ROWS],
}

impl<T: Element> ScratchRows<T> {
    fn new() -> Self {
        let rows = || std::array::from_fn(|_| vec![T::ZERO; BLOCK + 1]);
        ScratchRows {
            even: rows(),
            odd: rows(),
            combined_even: rows(),
            combined_odd: rows(),
            sums: std::array::from_fn(|_| vec![T::ZERO; INPUT_COLS * BLOCK]),
            lines: std::array::from_fn(|_| vec![T::ZERO; TILE_COLS * BLOCK]),
        }
    }
}

/// Splits `n` values at `start`, `start + spacing`, `start + 2 spacing` and
/// `start + 3 spacing` of `values` into four slices.
fn four_streams<T>(values: &mut [T], start: usize, spacing: usize, n: usize) -> [&mut [T]; 4] {
    debug_assert!(n <= spacing);
    let (_, rest) = values.split_at_mut(start);
    let (first, rest) = rest.split_at_mut(spacing);
    let (second, rest) = rest.split_at_mut(spacing);
    let (third, rest) = rest.split_at_mut(spacing);
    [
        &mut first[..n],
        &mut second[..n],
        &mut third[..n],
        &mut rest[..n],
    ]
}

/// The implementation that runs the transforms and products of one op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kernels {
    /// Plain loops, for any element type and CPU.
    Portable,
    /// The AVX-512 kernels, for `f32`. Products whose channel counts do not fit their register
    /// blocks still take the portable loops.
    Avx512,
}

impl Kernels {
    /// Picks the AVX-512 kernels for `f32` on a CPU with AVX-512F.
    fn detect<T: 'static>() -> Self {
        if TypeId::of::<T>() == TypeId::of::<f32>() && transforms_avx512::available() {
            Kernels::Avx512
        } else {
            Kernels::Portable
        }
    }
}

/// Returns the input planes of one image of `g`.
fn input_planes(g: &ConvGeometry) -> transforms_avx512::Planes {
    transforms_avx512::Planes {
        channels: g.c_in,
        height: g.h_in,
        width: g.w_in,
    }
}

/// Returns the output planes of one image of `g`.
fn output_planes(g: &ConvGeometry) -> transforms_avx512::Planes {
    transforms_avx512::Planes {
        channels: g.c_out,
        height: g.h_out(),
        width: g.w_out(),
    }
}

/// Writes `B^T d B` of the `count` tiles from tile `first` of one image into `v_block`, the
/// block's `[channel][position][lane]` values. Along the rows `B^T` is that of F(4, 3)
/// ([`input_column`]). Along the columns it is that of F(2, 3), whose rows are
/// (1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0) and (0, 1, 0, -1).
fn transform_input_block<T: Element>(
    image: &[T],
    g: &ConvGeometry,
    grid: TileGrid,
    (first, count): (usize, usize),
    v_block: &mut [T],
    (kernels, scratch): (Kernels, &mut Scratch<T>),
) {
    let parts = Parts::new(grid, first, count);
    if kernels == Kernels::Avx512 {
        if let (Some(image), Some(v_block)) = (as_f32(image), as_f32_mut(v_block)) {
            transforms_avx512::transform_input_block(
                image,
                input_planes(g),
                (g.pad_h, g.pad_w),
                parts.as_slice(),
                v_block,
            );
            return;
        }
    }
    if count < BLOCK {
        v_block.fill(T::ZERO);
    }
    for part in parts.as_slice() {
        transform_input_part(image, g, part, v_block, scratch.rows());
    }
}

/// Computes the portable input transform of one part, for every input channel.
fn transform_input_part<T: Element>(
    image: &[T],
    g: &ConvGeometry,
    part: &Part,
    v_block: &mut [T],
    scratch: &mut ScratchRows<T>,
) {
    let plane_len = g.h_in * g.w_in;
    let n = part.len();
    let first_row = (TILE_ROWS * part.row) as isize - g.pad_h;
    let first_col = 2 * part.first_col() as isize - g.pad_w;
    for i in 0..g.c_in {
        let plane = &image[i * plane_len..(i + 1) * plane_len];
        for r in 0..INPUT_ROWS {
            load_row(
                plane,
                (g.h_in, g.w_in),
                (first_row + r as isize, first_col),
                &mut scratch.even[r][..n + 1],
                &mut scratch.odd[r][..n + 1],
            );
        }
        // B^T d: combine the six input rows, all columns at once.
        combine_rows(
            &scratch.even,
            &mut scratch.combined_even,
            n + 1,
            input_column,
        );
        combine_rows(&scratch.odd, &mut scratch.combined_odd, n + 1, input_column);
        // (B^T d) B: tile t reads columns 2t..2t+4 of each combined row, which are
        // even[t], odd[t], even[t + 1] and odd[t + 1].
        for k in 0..INPUT_ROWS {
            let (even, odd) = (&scratch.combined_even[k], &scratch.combined_odd[k]);
            let start = block_index(0, i, g.c_in, INPUT_COLS * k) + part.first_lane;
            let [out0, out1, out2, out3] = four_streams(v_block, start, BLOCK, n);
            for t in 0..n {
                out0[t] = even[t] - even[t + 1];
                out1[t] = odd[t] + even[t + 1];
                out2[t] = even[t + 1] - odd[t];
                out3[t] = odd[t] - odd[t + 1];
            }
        }
    }
}

/// Applies `column` to the first `N` rows of `d` in each of `width` columns, writing the six
/// results of column `x` to `out[..][x]`.
fn combine_rows<T: Element, const N: usize>(
    d: &[Vec<T>; INPUT_ROWS],
    out: &mut [Vec<T>; INPUT_ROWS],
    width: usize,
    column: impl Fn([T; N]) -> [T; INPUT_ROWS],
) {
    for x in 0..width {
        let values = column(std::array::from_fn(|r| d[r][x]));
        for (row, value) in out.iter_mut().zip(values) {
            row[x] = value;
        }
    }
}

/// Computes `B^T d` of F(4, 3) for one column `d` of six values. The rows of `B^T` are
/// (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0), (0, -2, -1, 2, 1, 0),
/// (0, 2, -1, -2, 1, 0) and (0, 4, 0, -5, 0, 1). The AVX-512 transform performs these
/// operations in this order too. Multiplying by 2 or 4 is exact, so a fused multiply-add of
/// these terms gives the same bits.
#[inline]
fn input_column<T: Element>(d: [T; INPUT_ROWS]) -> [T; INPUT_ROWS] {
    let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
    let a = d[4] - four * d[2];
    let b = d[3] - four * d[1];
    let c = d[4] - d[2];
    let e = two * (d[3] - d[1]);
    [
        four * (d[0] - d[2]) + c,
        a + b,
        a - b,
        c + e,
        c - e,
        four * (d[1] - d[3]) + (d[5] - d[3]),
    ]
}

/// Writes `A dY A^T` of the output-gradient tiles `first..first + count` of one image into
/// `z_block`, the block's `[channel][position][lane]` values; pixels past the output are zero.
/// Along the rows `A` is that of F(4, 3) ([`gradient_column`]). Along the columns it is that
/// of F(2, 3), whose rows are (1, 0), (1, 1), (1, -1) and (0, -1).
fn transform_gradient_block<T: Element>(
    grad_output: &[T],
    g: &ConvGeometry,
    grid: TileGrid,
    (first, count): (usize, usize),
    z_block: &mut [T],
    (kernels, scratch): (Kernels, &mut Scratch<T>),
) {
    let parts = Parts::new(grid, first, count);
    if kernels == Kernels::Avx512 {
        if let (Some(grad_output), Some(z_block)) = (as_f32(grad_output), as_f32_mut(z_block)) {
            transforms_avx512::transform_gradient_block(
                grad_output,
                output_planes(g),
                parts.as_slice(),
                z_block,
            );
            return;
        }
    }
    if count < BLOCK {
        z_block.fill(T::ZERO);
    }
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let out_plane = h_out * w_out;
    let scratch = scratch.rows();
    for part in parts.as_slice() {
        let n = part.len();
        let row = (TILE_ROWS * part.row) as isize;
        let col = (TILE_COLS * part.first_col()) as isize;
        for o in 0..g.c_out {
            let plane = &grad_output[o * out_plane..(o + 1) * out_plane];
            for r in 0..TILE_ROWS {
                load_row(
                    plane,
                    (h_out, w_out),
                    (row + r as isize, col),
                    &mut scratch.even[r][..n],
                    &mut scratch.odd[r][..n],
                );
            }
            // A dY: combine the four gradient rows, all columns at once.
            combine_rows(
                &scratch.even,
                &mut scratch.combined_even,
                n,
                gradient_column,
            );
            combine_rows(&scratch.odd, &mut scratch.combined_odd, n, gradient_column);
            // (A dY) A^T: tile t reads columns 2t (even) and 2t + 1 (odd) of each combined row.
            for k in 0..INPUT_ROWS {
                let (even, odd) = (&scratch.combined_even[k], &scratch.combined_odd[k]);
                let start = block_index(0, o, g.c_out, INPUT_COLS * k) + part.first_lane;
                let [out0, out1, out2, out3] = four_streams(z_block, start, BLOCK, n);
                for t in 0..n {
                    let (p, q) = (even[t], odd[t]);
                    out0[t] = p;
                    out1[t] = p + q;
                    out2[t] = p - q;
                    out3[t] = -q;
                }
            }
        }
    }
}

/// Computes `A dY` of F(4, 3) for one column of four gradient values. The rows of `A` are
/// (1, 0, 0, 0), (1, 1, 1, 1), (1, -1, 1, -1), (1, 2, 4, 8), (1, -2, 4, -8) and (0, 0, 0, 1).
#[inline]
fn gradient_column<T: Element>(d: [T; TILE_ROWS]) -> [T; INPUT_ROWS] {
    let (two, four) = (T::from_f64(2.0), T::from_f64(4.0));
    let even = d[0] + d[2];
    let odd = d[1] + d[3];
    let even_weighted = d[0] + four * d[2];
    let odd_weighted = two * (d[1] + four * d[3]);
    [
        d[0],
        even + odd,
        even - odd,
        even_weighted + odd_weighted,
        even_weighted - odd_weighted,
        d[3],
    ]
}

/// Computes `A^T m` of F(4, 3) for one column of six products. The rows of `A^T` are
/// (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0) and (0, 1, -1, 8, -8, 1).
#[inline]
fn output_column<T: Element>(m: [T; INPUT_ROWS]) -> [T; TILE_ROWS] {
    let (two, four, eight) = (T::from_f64(2.0), T::from_f64(4.0), T::from_f64(8.0));
    let (inner_sum, inner_difference) = (m[1] + m[2], m[1] - m[2]);
    let (outer_sum, outer_difference) = (m[3] + m[4], m[3] - m[4]);
    [
        m[0] + inner_sum + outer_sum,
        inner_difference + two * outer_difference,
        inner_sum + four * outer_sum,
        inner_difference + eight * outer_difference + m[5],
    ]
}

/// Writes `A^T M A` of the products `m_block` (the block's `[channel][position][lane]` values)
/// of tiles `first..first + count` of one image into that image's output planes at `output`,
/// plus `bias[o]` in plane `o` when a bias is given. Along the rows `A^T` is that of F(4, 3)
/// ([`output_column`]). Along the columns it is that of F(2, 3), whose rows are (1, 1, 1, 0)
/// and (0, 1, -1, -1).
///
/// # Safety
///
/// `output` must point to the image's `c_out * h_out * w_out` writable values, and no other
/// thread may access the pixels of these tiles while this runs.
unsafe fn untransform_output_block<T: Element>(
    m_block: &[T],
    g: &ConvGeometry,
    grid: TileGrid,
    (first, count): (usize, usize),
    (output, bias): (*mut T, Option<&[T]>),
    (kernels, scratch): (Kernels, &mut Scratch<T>),
) {
    let parts = Parts::new(grid, first, count);
    if kernels == Kernels::Avx512 {
        let bias = match bias {
            None => Some(None),
            Some(bias) => as_f32(bias).map(Some),
        };
        if let (Some(m_block), Some(bias)) = (as_f32(m_block), bias) {
            // SAFETY: the caller vouches for `output`, and `T` is `f32`.
            unsafe {
                transforms_avx512::untransform_output_block(
                    m_block,
                    parts.as_slice(),
                    (output.cast(), bias),
                    output_planes(g),
                );
            }
            return;
        }
    }
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let out_plane = h_out * w_out;
    let scratch = scratch.rows();
    for part in parts.as_slice() {
        let n = part.len();
        let (row, col) = (TILE_ROWS * part.row, TILE_COLS * part.first_col());
        let columns = (TILE_COLS * n).min(w_out - col);
        for o in 0..g.c_out {
            let streams: [&[T]; POSITIONS] = std::array::from_fn(|position| {
                let start = block_index(0, o, g.c_out, position) + part.first_lane;
                &m_block[start..start + n]
            });
            untransform_outputs(&streams, n, &mut scratch.sums, &mut scratch.lines);
            if let Some(bias) = bias {
                for line in &mut scratch.lines {
                    for value in &mut line[..TILE_COLS * n] {
                        *value += bias[o];
                    }
                }
            }
            for (r, line) in scratch.lines.iter().enumerate() {
                if row + r < h_out {
                    // SAFETY: the row segment lies inside the image's output planes, and
                    // only this task writes these tiles' pixels.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            line.as_ptr(),
                            output.add(o * out_plane + (row + r) * w_out + col),
                            columns,
                        );
                    }
                }
            }
        }
    }
}

/// Writes the four output rows of `n` tiles from the products `m` of one channel into `lines`
/// (`2n` values each): `A^T M A`. `rows` are scratch rows of at least `4n` values.
fn untransform_outputs<T: Element>(
    m: &[&[T]; POSITIONS],
    n: usize,
    rows: &mut [Vec<T>; TILE_ROWS],
    lines: &mut [Vec<T>; TILE_ROWS],
) {
    // A^T M: four rows of four, kept in rows[r][c * n + t].
    for c in 0..INPUT_COLS {
        for t in 0..n {
            let column = output_column(std::array::from_fn(|r| m[r * INPUT_COLS + c][t]));
            for (r, value) in column.into_iter().enumerate() {
                rows[r][c * n + t] = value;
            }
        }
    }
    // (A^T M) A: the F(2, 3) combination along each row, interleaving the two output columns.
    for (sums, line) in rows.iter().zip(lines.iter_mut()) {
        let (r0, rest) = sums.split_at(n);
        let (r1, rest) = rest.split_at(n);
        let (r2, r3) = rest.split_at(n);
        let pairs = line[..TILE_COLS * n].chunks_exact_mut(TILE_COLS);
        for ((((pair, &a), &b), &c), &d) in pairs.zip(r0).zip(r1).zip(r2).zip(&r3[..n]) {
            pair[0] = a + b + c;
            pair[1] = b - c - d;
        }
    }
}

/// The transformed weights of one forward pass, in the layout of the kernel that multiplies
/// them: position-major for the portable loops, or packed for the AVX-512 kernel (`f32`,
/// output channels a multiple of 8, and a CPU with AVX-512F).
enum Weights<T> {
    Portable(Vec<T>),
    Avx512(Vec<f32>),
}

impl<T: Element> Weights<T> {
    /// Transforms the `(c_out, c_in, 3, 3)` weight of `g` for the kernel that will multiply it.
    fn new(weight: &[T], g: &ConvGeometry, kernels: Kernels) -> Self {
        match as_f32(weight) {
            Some(weight) if kernels == Kernels::Avx512 && avx512::applies(g.c_out) => {
                Weights::Avx512(packed_weights(weight, g.c_out, g.c_in))
            }
            _ => Weights::Portable(transform_weights(weight, g.c_out, g.c_in)),
        }
    }

    /// Computes the products of `blocks` blocks: for every position, block and lane,
    /// `m[o] = sum over i of u[position, o, i] * v[i]`.
    fn multiply(&self, g: &ConvGeometry, v: &[T], blocks: usize, m: &mut [T]) {
        match self {
            Weights::Portable(u) => multiply_blocks(u, v, m, (g.c_out, g.c_in, blocks)),
            Weights::Avx512(packed) => {
                let (v, m) = match (as_f32(v), as_f32_mut(m)) {
                    (Some(v), Some(m)) => (v, m),
                    _ => unreachable!("packed AVX-512 weights exist only for f32"),
                };
                avx512::multiply(packed, v, m, (g.c_out, g.c_in, blocks));
            }
        }
    }
}

/// Computes the portable forward products: `m[block][o][position][lane] = sum over i of
/// u[(position * c_out + o) * c_in + i] * v[block][i][position][lane]`. The lane loop is the
/// innermost one, so the compiler vectorises it.
fn multiply_blocks<T: Element>(
    u: &[T],
    v: &[T],
    m: &mut [T],
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    for block in 0..blocks {
        for o in 0..c_out {
            for position in 0..POSITIONS {
                let start = block_index(block, o, c_out, position);
                let sums = &mut m[start..start + BLOCK];
                sums.fill(T::ZERO);
                for i in 0..c_in {
                    let weight = u[(position * c_out + o) * c_in + i];
                    let start = block_index(block, i, c_in, position);
                    for (sum, &value) in sums.iter_mut().zip(&v[start..start + BLOCK]) {
                        *sum += weight * value;
                    }
                }
            }
        }
    }
}

/// Adds `dZ . V` of `blocks` blocks to the position-major partial weight gradient, or stores
/// it there when `overwrite` is set: `partial[(position * c_out + o) * c_in + i] += sum over
/// tiles of z[o] * v[i]` at that position.
fn accumulate_weight_grad<T: Element>(
    z: &[T],
    v: &[T],
    (partial, overwrite): (&mut [T], bool),
    (c_out, c_in, blocks): (usize, usize, usize),
    kernels: Kernels,
) {
    if let (Some(z), Some(v), Some(partial)) = (as_f32(z), as_f32(v), as_f32_mut(partial)) {
        if kernels == Kernels::Avx512 && avx512::weight_grad_applies() {
            avx512::accumulate_weight_grad(z, v, (partial, overwrite), (c_out, c_in, blocks));
            return;
        }
    }
    for position in 0..POSITIONS {
        for o in 0..c_out {
            for i in 0..c_in {
                let mut lanes = [T::ZERO; BLOCK];
                for block in 0..blocks {
                    let z_start = block_index(block, o, c_out, position);
                    let v_start = block_index(block, i, c_in, position);
                    let pairs = z[z_start..z_start + BLOCK]
                        .iter()
                        .zip(&v[v_start..v_start + BLOCK]);
                    for (lane, (&dz, &value)) in lanes.iter_mut().zip(pairs) {
                        *lane += dz * value;
                    }
                }
                let total = lanes.into_iter().sum::<T>();
                let target = &mut partial[(position * c_out + o) * c_in + i];
                *target = if overwrite { total } else { *target + total };
            }
        }
    }
}

/// A raw pointer to the output that tasks write through, each to the pixels of its own tiles.
#[derive(Clone, Copy)]
struct OutputPtr<T>(*mut T);

// SAFETY: the pointer is only used to write pixels of disjoint tiles, one task per tile, while
// the owning buffer (allocated with room for every pixel) outlives the parallel loop.
unsafe impl<T: Send> Send for OutputPtr<T> {}
unsafe impl<T: Send> Sync for OutputPtr<T> {}

impl<T> OutputPtr<T> {
    /// Returns the pointer. Closures that call this capture the whole wrapper, which is `Send`,
    /// rather than the bare pointer field, which is not.
    fn get(self) -> *mut T {
        self.0
    }
}

/// Computes `y = conv(x, weight) + bias` for a 3x3 kernel, with `bias` (one value per output
/// channel, or none) added to each finished sum.
pub fn forward<T: Element>(x: &[T], weight: &[T], bias: Option<&[T]>, g: &ConvGeometry) -> Vec<T> {
    forward_with(x, weight, bias, g, Kernels::detect::<T>())
}

fn forward_with<T: Element>(
    x: &[T],
    weight: &[T],
    bias: Option<&[T]>,
    g: &ConvGeometry,
    kernels: Kernels,
) -> Vec<T> {
    let out_plane = g.h_out() * g.w_out();
    let y_len = g.n * g.c_out * out_plane;
    let grid = TileGrid::new(g);
    if grid.len() == 0 || g.n == 0 {
        return vec![T::ZERO; y_len];
    }
    // The tasks write every pixel exactly once, so `y` is not zero-filled first.
    let mut y: Vec<T> = Vec::with_capacity(y_len);
    let u = Weights::new(weight, g, kernels);
    let group = forward_group_len::<T>(g, grid.len());
    let groups = grid.len().div_ceil(group);
    let group_blocks = group / BLOCK;
    let image_len = g.c_in * g.h_in * g.w_in;
    let output = OutputPtr(y.as_mut_ptr());

    (0..g.n * groups).into_par_iter().for_each_init(
        || {
            (
                GroupBuffer::new(group_blocks * g.c_in * BLOCK_VALUES),
                GroupBuffer::new(group_blocks * g.c_out * BLOCK_VALUES),
                Scratch::new(),
            )
        },
        |(v, m, scratch), task| {
            let (image, index) = (task / groups, task % groups);
            let first = index * group;
            let len = group.min(grid.len() - first);
            let blocks = len.div_ceil(BLOCK);
            let (v, m) = (
                &mut v.as_mut_slice()[..blocks * g.c_in * BLOCK_VALUES],
                &mut m.as_mut_slice()[..blocks * g.c_out * BLOCK_VALUES],
            );
            let x_image = &x[image * image_len..(image + 1) * image_len];
            for (block, v_block) in v.chunks_exact_mut(g.c_in * BLOCK_VALUES).enumerate() {
                let tiles = (first + block * BLOCK, BLOCK.min(len - block * BLOCK));
                transform_input_block(x_image, g, grid, tiles, v_block, (kernels, scratch));
            }
            u.multiply(g, v, blocks, m);
            for (block, m_block) in m.chunks_exact(g.c_out * BLOCK_VALUES).enumerate() {
                let tiles = (first + block * BLOCK, BLOCK.min(len - block * BLOCK));
                // SAFETY: the image's output planes lie inside the capacity of `y`, and only
                // this task writes the pixels of its tiles.
                unsafe {
                    let image_output = output.get().add(image * g.c_out * out_plane);
                    let with = (kernels, &mut *scratch);
                    let target = (image_output, bias);
                    untransform_output_block(m_block, g, grid, tiles, target, with);
                }
            }
        },
    );
    // SAFETY: the tiles of every (image, group) task cover all output pixels of every channel,
    // and each task wrote its pixels through `output`, so all `y_len` elements are initialized.
    unsafe { y.set_len(y_len) };
    y
}

/// Computes the weight gradient of a 3x3 convolution:
/// `grad_weight[o, i, ki, kj] = sum over images and output pixels of grad_output * x`.
pub fn weight_grad<T: Element>(x: &[T], grad_output: &[T], g: &ConvGeometry) -> Vec<T> {
    weight_grad_with(x, grad_output, g, Kernels::detect::<T>())
}

fn weight_grad_with<T: Element>(
    x: &[T],
    grad_output: &[T],
    g: &ConvGeometry,
    kernels: Kernels,
) -> Vec<T> {
    let (c_in, c_out) = (g.c_in, g.c_out);
    let weight_len = c_out * c_in * 9;
    let grid = TileGrid::new(g);
    if grid.len() == 0 || g.n == 0 {
        return vec![T::ZERO; weight_len];
    }
    let group = group_len::<T>(g);
    let group_blocks = group / BLOCK;
    let chunk = weight_grad_chunk_len::<T>(g, grid.len());
    let chunks = grid.len().div_ceil(chunk);
    let image_len = c_in * g.h_in * g.w_in;
    let out_image_len = c_out * g.h_out() * g.w_out();

    // Each task sums `dZ . V` over its chunk of tiles into its own partial `dU`, its part of
    // `partials`; the first group overwrites whatever the pooled buffer held.
    let partial_len = POSITIONS * c_out * c_in;
    let mut partials = GroupBuffer::new(g.n * chunks * partial_len);
    partials
        .as_mut_slice()
        .par_chunks_mut(partial_len)
        .enumerate()
        .for_each(|(task, partial)| {
            let (image, index) = (task / chunks, task % chunks);
            let end = ((index + 1) * chunk).min(grid.len());
            let x_image = &x[image * image_len..(image + 1) * image_len];
            let dy_image = &grad_output[image * out_image_len..(image + 1) * out_image_len];
            let mut v = GroupBuffer::new(group_blocks * c_in * BLOCK_VALUES);
            let mut z = GroupBuffer::new(group_blocks * c_out * BLOCK_VALUES);
            let mut scratch = Scratch::new();
            let mut first = index * chunk;
            let mut overwrite = true;
            while first < end {
                let len = group.min(end - first);
                let blocks = len.div_ceil(BLOCK);
                let (v, z) = (
                    &mut v.as_mut_slice()[..blocks * c_in * BLOCK_VALUES],
                    &mut z.as_mut_slice()[..blocks * c_out * BLOCK_VALUES],
                );
                let v_blocks = v.chunks_exact_mut(c_in * BLOCK_VALUES);
                let z_blocks = z.chunks_exact_mut(c_out * BLOCK_VALUES);
                for (block, (v_block, z_block)) in v_blocks.zip(z_blocks).enumerate() {
                    let tiles = (first + block * BLOCK, BLOCK.min(len - block * BLOCK));
                    let with = (kernels, &mut scratch);
                    transform_input_block(x_image, g, grid, tiles, v_block, with);
                    let with = (kernels, &mut scratch);
                    transform_gradient_block(dy_image, g, grid, tiles, z_block, with);
                }
                let shapes = (c_out, c_in, blocks);
                accumulate_weight_grad(z, v, (partial, overwrite), shapes, kernels);
                overwrite = false;
                first += len;
            }
        });

    // Add the partials into the first, in task order, in parallel over ranges of values.
    let (total, others) = partials.as_mut_slice().split_at_mut(partial_len);
    total
        .par_chunks_mut(SUM_CHUNK)
        .enumerate()
        .for_each(|(index, sums)| {
            vectorized(|| {
                for partial in others.chunks_exact(partial_len) {
                    let values = &partial[index * SUM_CHUNK..][..sums.len()];
                    for (sum, &value) in sums.iter_mut().zip(values) {
                        *sum += value;
                    }
                }
            })
        });
    // Transform the kernels back, output channels in parallel.
    let total = &*total;
    let mut grad_weight = vec![T::ZERO; weight_len];
    grad_weight
        .par_chunks_mut(c_in * 9)
        .enumerate()
        .for_each(|(o, kernels)| {
            let rows: [&[T]; POSITIONS] =
                std::array::from_fn(|position| &total[(position * c_out + o) * c_in..][..c_in]);
            for (i, kernel) in kernels.chunks_exact_mut(9).enumerate() {
                let du = std::array::from_fn(|position| rows[position][i]);
                kernel.copy_from_slice(&untransform_kernel_grad(&du));
            }
        });
    grad_weight
}

/// Computes `G^T dU G` of one channel pair's 24 positions (in order `row * 4 + col`), the
/// 3x3 kernel gradient in row-major order. Along the columns the rows of `G^T` are
/// (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0) and (0, 1/2, 1/2, 1). Along the rows they are
/// (1/4, -1/6, -1/6, 1/24, 1/24, 0), (0, -1/6, 1/6, 1/12, -1/12, 0) and
/// (0, -1/6, -1/6, 1/6, 1/6, 1).
fn untransform_kernel_grad<T: Element>(du: &[T; POSITIONS]) -> [T; 9] {
    let half = T::from_f64(0.5);
    let quarter = T::from_f64(0.25);
    let sixth = T::from_f64(1.0 / 6.0);
    let twelfth = T::from_f64(1.0 / 12.0);
    let twenty_fourth = T::from_f64(1.0 / 24.0);
    let columns = |v: &[T]| -> [T; 3] {
        [
            v[0] + half * (v[1] + v[2]),
            half * (v[1] - v[2]),
            half * (v[1] + v[2]) + v[3],
        ]
    };
    let rows: [[T; 3]; INPUT_ROWS] =
        std::array::from_fn(|r| columns(&du[r * INPUT_COLS..(r + 1) * INPUT_COLS]));
    let mut kernel = [T::ZERO; 9];
    for c in 0..3 {
        let v: [T; INPUT_ROWS] = std::array::from_fn(|r| rows[r][c]);
        let (inner, outer) = (v[1] + v[2], v[3] + v[4]);
        kernel[c] = quarter * v[0] - sixth * inner + twenty_fourth * outer;
        kernel[3 + c] = sixth * (v[2] - v[1]) + twelfth * (v[3] - v[4]);
        kernel[6 + c] = sixth * (outer - inner) + v[5];
    }
    kernel
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::conv2d::reference;

    fn values(len: usize, seed: u64) -> Vec<f64> {
        let mut state = seed;
        (0..len)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 33) as f64 / (1u64 << 31) as f64) - 0.5
            })
            .collect()
    }

    fn geometry(
        n: usize,
        c_in: usize,
        c_out: usize,
        h: usize,
        w: usize,
        pad: isize,
    ) -> ConvGeometry {
        ConvGeometry {
            n,
            c_in,
            c_out,
            h_in: h,
            w_in: w,
            k_h: 3,
            k_w: 3,
            pad_h: pad,
            pad_w: pad,
        }
    }

    fn assert_close(actual: &[f64], expected: &[f64]) {
        assert_eq!(actual.len(), expected.len());
        for (index, (a, e)) in actual.iter().zip(expected).enumerate() {
            assert!(
                (a - e).abs() <= 1e-12 * (1.0 + e.abs()),
                "index {index}: {a} vs {e}"
            );
        }
    }

    /// Odd and even sizes, padding 0, 1 and 2, and several groups per image.
    /// Output heights 1, 7, 11, 10, 60 and 17 leave 1, 3, 3, 2, 0 and 1 rows in the last tile
    /// row.
    const CASES: [(usize, usize, usize, usize, usize, isize); 6] = [
        (1, 1, 1, 3, 3, 0),
        (2, 3, 5, 7, 6, 1),
        (1, 4, 2, 9, 11, 2),
        (2, 32, 16, 12, 13, 0),
        (1, 2, 3, 60, 70, 1),
        (1, 8, 16, 15, 9, 2),
    ];

    #[test]
    fn forward_matches_reference() {
        for (n, c_in, c_out, h, w, pad) in CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let x = values(n * c_in * h * w, 1);
            let weight = values(c_out * c_in * 9, 2);
            assert_close(
                &forward(&x, &weight, None, &g),
                &reference::forward(&x, &weight, &g),
            );
        }
    }

    #[test]
    fn weight_grad_matches_reference() {
        for (n, c_in, c_out, h, w, pad) in CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let x = values(n * c_in * h * w, 3);
            let dy = values(n * c_out * g.h_out() * g.w_out(), 4);
            assert_close(
                &weight_grad(&x, &dy, &g),
                &reference::weight_grad(&x, &dy, &g),
            );
        }
    }

    /// Runs `body` once per block of every group of every image of `g`, with the block's
    /// image index, first tile and tile count.
    fn for_each_block(g: &ConvGeometry, mut body: impl FnMut(usize, usize, usize)) {
        let grid = TileGrid::new(g);
        let group = forward_group_len::<f32>(g, grid.len());
        for image in 0..g.n {
            for first in (0..grid.len()).step_by(group) {
                let len = group.min(grid.len() - first);
                for block_first in (first..first + len).step_by(BLOCK) {
                    body(image, block_first, BLOCK.min(first + len - block_first));
                }
            }
        }
    }

    fn f32_values(len: usize, seed: u64) -> Vec<f32> {
        values(len, seed).into_iter().map(|v| v as f32).collect()
    }

    fn assert_same_bits(portable: &[f32], avx512: &[f32], what: &str) {
        assert_eq!(portable.len(), avx512.len());
        for (index, (p, a)) in portable.iter().zip(avx512).enumerate() {
            assert_eq!(
                p.to_bits(),
                a.to_bits(),
                "{what}, index {index}: {p} vs {a}"
            );
        }
    }

    /// Compares two blocks bit for bit in the lanes of the first `count` tiles, and checks
    /// that both hold zeros in the other lanes (whose sign may differ: the AVX-512 kernels
    /// transform zeros there, and the portable loops write them).
    fn assert_same_block(portable: &[f32], avx512: &[f32], count: usize, what: &str) {
        assert_eq!(portable.len(), avx512.len());
        let rows = portable.chunks_exact(BLOCK).zip(avx512.chunks_exact(BLOCK));
        for (row, (p, a)) in rows.enumerate() {
            assert_same_bits(&p[..count], &a[..count], &format!("{what}, row {row}"));
            let padding = p[count..].iter().chain(&a[count..]);
            assert!(
                padding.into_iter().all(|&v| v == 0.0),
                "{what}, row {row}: lanes past the last tile"
            );
        }
    }

    /// Shapes whose blocks span one, two and many tile rows, with padding 0, 1 and 2.
    const TRANSFORM_CASES: [(usize, usize, usize, usize, usize, isize); 5] = [
        (1, 3, 2, 5, 4, 1),
        (2, 2, 3, 9, 7, 2),
        (1, 4, 5, 40, 37, 0),
        (1, 2, 2, 11, 70, 1),
        (1, 1, 1, 30, 3, 0),
    ];

    /// The AVX-512 transforms must give exactly the portable loops' bits for every tile.
    #[test]
    fn avx512_transforms_match_portable() {
        if Kernels::detect::<f32>() != Kernels::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for (n, c_in, c_out, h, w, pad) in TRANSFORM_CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let grid = TileGrid::new(&g);
            let x = f32_values(n * c_in * h * w, 5);
            let out_image_len = c_out * g.h_out() * g.w_out();
            let dy = f32_values(n * out_image_len, 6);
            let image_len = c_in * h * w;
            let mut scratch = Scratch::new();
            for_each_block(&g, |image, first, count| {
                let x_image = &x[image * image_len..(image + 1) * image_len];
                let dy_image = &dy[image * out_image_len..(image + 1) * out_image_len];
                let mut blocks = [f32::NAN, f32::NAN].map(|fill| vec![fill; c_in * BLOCK_VALUES]);
                for (kernels, block) in [Kernels::Portable, Kernels::Avx512].iter().zip(&mut blocks)
                {
                    let with = (*kernels, &mut scratch);
                    transform_input_block(x_image, &g, grid, (first, count), block, with);
                }
                assert_same_block(&blocks[0], &blocks[1], count, "input transform");
                let mut blocks = [f32::NAN, f32::NAN].map(|fill| vec![fill; c_out * BLOCK_VALUES]);
                for (kernels, block) in [Kernels::Portable, Kernels::Avx512].iter().zip(&mut blocks)
                {
                    let with = (*kernels, &mut scratch);
                    transform_gradient_block(dy_image, &g, grid, (first, count), block, with);
                }
                assert_same_block(&blocks[0], &blocks[1], count, "gradient transform");
            });
        }
    }

    /// The AVX-512 output transform must write exactly the portable loops' bits, every pixel
    /// once, and nothing outside the output.
    #[test]
    fn avx512_output_transform_matches_portable() {
        if Kernels::detect::<f32>() != Kernels::Avx512 {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        for (n, c_in, c_out, h, w, pad) in TRANSFORM_CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let grid = TileGrid::new(&g);
            let out_image_len = c_out * g.h_out() * g.w_out();
            let mut scratch = Scratch::new();
            // One guard value after the image shows a write past its end.
            let mut outputs = [
                vec![f32::NAN; out_image_len + 1],
                vec![f32::NAN; out_image_len + 1],
            ];
            for (seed, kernels) in [Kernels::Portable, Kernels::Avx512].into_iter().enumerate() {
                for_each_block(&g, |_, first, count| {
                    let m_block = f32_values(c_out * BLOCK_VALUES, first as u64);
                    let output = outputs[seed].as_mut_ptr();
                    // SAFETY: `output` contains the image's output planes, and this loop is the
                    // only writer.
                    unsafe {
                        let with = (kernels, &mut scratch);
                        let target = (output, None);
                        untransform_output_block(&m_block, &g, grid, (first, count), target, with);
                    }
                });
            }
            assert_same_bits(&outputs[0], &outputs[1], "output transform");
            assert!(
                outputs[1][..out_image_len].iter().all(|v| !v.is_nan()),
                "unwritten pixel"
            );
            assert!(outputs[1][out_image_len].is_nan(), "write past the output");
        }
    }

    /// Both implementations in `f32` against the reference loops in `f64`.
    #[test]
    fn f32_kernels_match_reference() {
        for (n, c_in, c_out, h, w, pad) in CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let x = values(n * c_in * h * w, 7);
            let weight = values(c_out * c_in * 9, 8);
            let dy = values(n * c_out * g.h_out() * g.w_out(), 9);
            let forward_expected = reference::forward(&x, &weight, &g);
            let weight_grad_expected = reference::weight_grad(&x, &dy, &g);
            let narrow = |values: &[f64]| values.iter().map(|&v| v as f32).collect::<Vec<f32>>();
            let (x32, weight32, dy32) = (narrow(&x), narrow(&weight), narrow(&dy));
            for kernels in [Kernels::Portable, Kernels::detect::<f32>()] {
                let checks = [
                    (
                        forward_with(&x32, &weight32, None, &g, kernels),
                        &forward_expected,
                    ),
                    (
                        weight_grad_with(&x32, &dy32, &g, kernels),
                        &weight_grad_expected,
                    ),
                ];
                for (index, (actual, expected)) in checks.iter().enumerate() {
                    assert_eq!(actual.len(), expected.len());
                    for (a, e) in actual.iter().zip(expected.iter()) {
                        assert!(
                            (*a as f64 - e).abs() <= 1e-5 * (1.0 + e.abs()) * (c_in as f64).sqrt(),
                            "{kernels:?}, output {index}, case {:?}: {a} vs {e}",
                            (n, c_in, c_out, h, w, pad)
                        );
                    }
                }
            }
        }
    }

    /// Adding the bias inside the output transform gives the bits of adding it afterwards.
    #[test]
    fn bias_matches_separate_add() {
        for (n, c_in, c_out, h, w, pad) in CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let x = f32_values(n * c_in * h * w, 11);
            let weight = f32_values(c_out * c_in * 9, 12);
            let bias = f32_values(c_out, 13);
            let plane = g.h_out() * g.w_out();
            for kernels in [Kernels::Portable, Kernels::detect::<f32>()] {
                let mut expected = forward_with(&x, &weight, None, &g, kernels);
                for (index, value) in expected.iter_mut().enumerate() {
                    *value += bias[(index / plane) % c_out];
                }
                let actual = forward_with(&x, &weight, Some(&bias), &g, kernels);
                assert_same_bits(&expected, &actual, &format!("{kernels:?}, {g:?}"));
            }
        }
    }

    #[test]
    fn group_len_is_kernel_multiple() {
        for channels in [1, 3, 32, 64, 128, 4096] {
            let g = geometry(1, channels, channels, 8, 8, 0);
            let len = group_len::<f32>(&g);
            assert!(len >= 16);
            assert_eq!(len % 16, 0);
        }
    }

    /// The packed weights are the position-major transform in the AVX-512 kernel's order.
    #[test]
    fn packed_weights_match_packing() {
        for (c_out, c_in) in [(8, 1), (8, 3), (16, 5), (32, 32)] {
            let weight = f32_values(c_out * c_in * 9, 14);
            let u = transform_weights(&weight, c_out, c_in);
            let expected = avx512::pack_weights(&u, POSITIONS, c_out, c_in);
            assert_same_bits(&expected, &packed_weights(&weight, c_out, c_in), "packed");
        }
    }

    /// Task sizes stay whole blocks within the group size for any image and channel count.
    #[test]
    fn task_lengths_fit_groups() {
        for channels in [1, 3, 32, 128, 4096] {
            let g = geometry(1, channels, channels, 8, 8, 0);
            let group = group_len::<f32>(&g);
            for tiles in [1, 16, 96, 357, 972, 12416, 1 << 20] {
                let forward = forward_group_len::<f32>(&g, tiles);
                assert!(forward <= group, "{channels} channels, {tiles} tiles");
                assert_eq!(forward % BLOCK, 0, "{channels} channels, {tiles} tiles");
                let chunk = weight_grad_chunk_len::<f32>(&g, tiles);
                assert!(
                    chunk >= group.min(MIN_WEIGHT_GRAD_CHUNK),
                    "{channels}, {tiles}"
                );
                assert!(
                    tiles.div_ceil(chunk) <= MAX_WEIGHT_GRAD_PARTIALS,
                    "{channels}, {tiles}"
                );
            }
        }
    }
}
