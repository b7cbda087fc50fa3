//! Winograd F(2x2, 3x3) kernels for 3x3 convolutions with stride 1.
//!
//! Each 2x2 block of output pixels (a tile) is computed from the 4x4 input patch under it as
//! `Y = A^T [(G w G^T) . (B^T d B)] A`, where `.` multiplies element-wise. Summed over input
//! channels, the element-wise products become 16 independent matrix products, one per position
//! of the 4x4 transformed tile. A tile then costs 16 multiply-adds per channel pair instead of
//! the 36 of a direct convolution. The method is from Lavin and Gray, "Fast Algorithms for
//! Convolutional Neural Networks" (CVPR 2016). The transforms only add, subtract and halve, so the results differ
//! from a direct convolution by a few rounding steps.
//!
//! The weight gradient runs the same algorithm backwards: with `Z = U . V` for `U = G w G^T`
//! and `V = B^T d B`, the gradient `dZ = A dY A^T` gives `dU = sum over tiles of dZ . V` (16
//! matrix products reduced over tiles) and `dw = G^T dU G`.
//!
//! Tiles are processed in fixed-size groups whose transformed inputs and products stay in the
//! L2 cache. The grouping depends only on the shapes, so results are bit-identical for any
//! thread count.

use std::any::TypeId;

use rayon::prelude::*;

use super::winograd_avx512 as avx512;
use super::ConvGeometry;
use crate::element::Element;

/// Positions of a transformed 4x4 tile.
const POSITIONS: usize = 16;

/// Tiles per group, and the max bytes of transformed inputs and products that a group may
/// hold. 128 tiles measured fastest for 32 to 128 channels on a 2 MiB L2 cache (`cargo bench
/// --bench conv2d`). Fewer tiles make the matrix products too narrow, and more spill the group
/// out of the cache.
const GROUP_TILES: usize = 128;
const MAX_GROUP_BYTES: usize = 4 << 20;

/// Most partial weight gradients per image; each is `16 * c_out * c_in` values.
const MAX_WEIGHT_GRAD_PARTIALS: usize = 16;

/// Reports whether the Winograd kernels compute this convolution.
pub fn supports(g: &ConvGeometry) -> bool {
    g.k_h == 3 && g.k_w == 3
}

/// The grid of 2x2 output tiles of one image.
#[derive(Clone, Copy)]
struct TileGrid {
    rows: usize,
    cols: usize,
}

impl TileGrid {
    fn new(g: &ConvGeometry) -> Self {
        TileGrid {
            rows: g.h_out().div_ceil(2),
            cols: g.w_out().div_ceil(2),
        }
    }

    fn len(&self) -> usize {
        self.rows * self.cols
    }
}

/// Tiles per group: [`GROUP_TILES`], or fewer (a multiple of 16, the GEMM kernel's width, and
/// at least 16) when the transformed inputs (`c_in` rows) and products (`c_out` rows) of that
/// many tiles would exceed [`MAX_GROUP_BYTES`].
fn group_len<T>(g: &ConvGeometry) -> usize {
    let per_tile = POSITIONS * (g.c_in + g.c_out) * std::mem::size_of::<T>();
    let fitting = (MAX_GROUP_BYTES / per_tile.max(1)) / 16 * 16;
    fitting.clamp(16, GROUP_TILES)
}

/// Computes `G w G^T` for every (output, input) channel pair, stored position-major:
/// `u[(position * c_out + o) * c_in + i]`, so each position is a row-major `c_out x c_in` matrix.
fn transform_weights<T: Element>(weight: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let mut u = vec![T::ZERO; POSITIONS * c_out * c_in];
    for o in 0..c_out {
        for i in 0..c_in {
            let w = &weight[(o * c_in + i) * 9..(o * c_in + i + 1) * 9];
            // G w: 4x3, rows of G are (1, 0, 0), (1/2, 1/2, 1/2), (1/2, -1/2, 1/2), (0, 0, 1).
            let mut gw = [[T::ZERO; 3]; 4];
            for col in 0..3 {
                let (top, middle, bottom) = (w[col], w[3 + col], w[6 + col]);
                gw[0][col] = top;
                gw[1][col] = half * (top + middle + bottom);
                gw[2][col] = half * (top - middle + bottom);
                gw[3][col] = bottom;
            }
            // (G w) G^T: the same combination along the rows.
            for (row, values) in gw.iter().enumerate() {
                let [left, middle, right] = *values;
                let transformed = [
                    left,
                    half * (left + middle + right),
                    half * (left - middle + right),
                    right,
                ];
                for (col, &value) in transformed.iter().enumerate() {
                    u[((row * 4 + col) * c_out + o) * c_in + i] = value;
                }
            }
        }
    }
    u
}

/// A run of tiles of one tile row inside a group: tile columns `first_col..end_col` of tile
/// row `row`, stored from column `offset` of the group's matrices.
#[derive(Clone, Copy)]
struct Segment {
    row: usize,
    first_col: usize,
    end_col: usize,
    offset: usize,
}

impl Segment {
    fn len(&self) -> usize {
        self.end_col - self.first_col
    }
}

/// Splits the tiles `first..first + len` (in row-major order) into runs along tile rows.
fn segments(grid: TileGrid, first: usize, len: usize) -> impl Iterator<Item = Segment> {
    let end = first + len;
    let mut tile = first;
    std::iter::from_fn(move || {
        if tile >= end {
            return None;
        }
        let (row, first_col) = (tile / grid.cols, tile % grid.cols);
        let end_col = grid.cols.min(first_col + end - tile);
        let segment = Segment {
            row,
            first_col,
            end_col,
            offset: tile - first,
        };
        tile += end_col - first_col;
        Some(segment)
    })
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

/// Asks the CPU to start loading rows `first_row..first_row + 4` of `plane`, columns
/// `first_col..first_col + width`, into its caches. Each channel's rows are a few kilobytes a
/// whole plane apart, a jump the hardware prefetcher does not follow, so the input transform
/// issues this for the next channel while it works on the current one.
fn prefetch_rows<T>(
    plane: &[T],
    g: &ConvGeometry,
    first_row: isize,
    first_col: isize,
    width: usize,
) {
    const LINE_BYTES: usize = 64;
    let step = (LINE_BYTES / std::mem::size_of::<T>()).max(1);
    let start_col = first_col.max(0) as usize;
    let end_col = ((first_col + width as isize).max(0) as usize).min(g.w_in);
    for row in first_row.max(0)..(first_row + 4).min(g.h_in as isize) {
        let line = &plane[row as usize * g.w_in..(row as usize + 1) * g.w_in];
        for col in (start_col..end_col).step_by(step) {
            prefetch(&line[col]);
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch<T>(value: &T) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    // SAFETY: prefetching has no effect on program state, and the pointer comes from a
    // reference, so it is valid.
    unsafe { _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast()) };
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn prefetch<T>(_: &T) {}

/// Per-task scratch rows of the transforms, split into even and odd columns.
struct Scratch<T> {
    even: [Vec<T>; 4],
    odd: [Vec<T>; 4],
    combined_even: [Vec<T>; 4],
    combined_odd: [Vec<T>; 4],
    /// Two output rows of the forward pass's inverse transform.
    lines: [Vec<T>; 2],
}

impl<T: Element> Scratch<T> {
    fn new(grid: TileGrid) -> Self {
        let width = grid.cols + 1;
        let rows = || std::array::from_fn(|_| vec![T::ZERO; width]);
        Scratch {
            even: rows(),
            odd: rows(),
            combined_even: rows(),
            combined_odd: rows(),
            lines: std::array::from_fn(|_| vec![T::ZERO; 2 * width]),
        }
    }
}

/// Writes `B^T d B` of the input patches of tiles `first..first + len` of one image into `v`,
/// position-major: `v[(position * c_in + i) * len + t]`. Rows of `B^T` are (1, 0, -1, 0),
/// (0, 1, 1, 0), (0, -1, 1, 0) and (0, 1, 0, -1).
fn transform_inputs<T: Element>(
    image: &[T],
    g: &ConvGeometry,
    grid: TileGrid,
    (first, len): (usize, usize),
    v: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let plane_len = g.h_in * g.w_in;
    for segment in segments(grid, first, len) {
        let n = segment.len();
        let first_row = 2 * segment.row as isize - g.pad_h;
        let first_col = 2 * segment.first_col as isize - g.pad_w;
        for i in 0..g.c_in {
            let plane = &image[i * plane_len..(i + 1) * plane_len];
            if i + 1 < g.c_in {
                let next = &image[(i + 1) * plane_len..(i + 2) * plane_len];
                prefetch_rows(next, g, first_row, first_col, 2 * n + 2);
            }
            for r in 0..4 {
                load_row(
                    plane,
                    (g.h_in, g.w_in),
                    (first_row + r as isize, first_col),
                    &mut scratch.even[r][..n + 1],
                    &mut scratch.odd[r][..n + 1],
                );
            }
            // B^T d: combine the four input rows, all columns at once.
            combine_input_rows(&scratch.even, &mut scratch.combined_even, n + 1);
            combine_input_rows(&scratch.odd, &mut scratch.combined_odd, n + 1);
            // (B^T d) B: tile t reads columns 2t..2t+4 of each combined row, which are
            // even[t], odd[t], even[t + 1] and odd[t + 1].
            for k in 0..4 {
                let (even, odd) = (&scratch.combined_even[k], &scratch.combined_odd[k]);
                let start = (4 * k * g.c_in + i) * len + segment.offset;
                let [out0, out1, out2, out3] = four_streams(v, start, g.c_in * len, n);
                for t in 0..n {
                    out0[t] = even[t] - even[t + 1];
                    out1[t] = odd[t] + even[t + 1];
                    out2[t] = even[t + 1] - odd[t];
                    out3[t] = odd[t] - odd[t + 1];
                }
            }
        }
    }
}

/// Computes `B^T d` for `width` columns: `out` gets the rows d0 - d2, d1 + d2, d2 - d1 and
/// d1 - d3.
fn combine_input_rows<T: Element>(d: &[Vec<T>; 4], out: &mut [Vec<T>; 4], width: usize) {
    let [d0, d1, d2, d3] = d;
    let [b0, b1, b2, b3] = out;
    for x in 0..width {
        b0[x] = d0[x] - d2[x];
        b1[x] = d1[x] + d2[x];
        b2[x] = d2[x] - d1[x];
        b3[x] = d1[x] - d3[x];
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

/// Computes, for every position, `m = u v`: `(c_out x c_in)` by `(c_in x len)`.
fn multiply_positions<T: Element>(g: &ConvGeometry, u: &[T], v: &[T], len: usize, m: &mut [T]) {
    let (c_in, c_out) = (g.c_in, g.c_out);
    for position in 0..POSITIONS {
        T::gemm(
            c_out,
            c_in,
            len,
            T::ONE,
            &u[position * c_out * c_in..(position + 1) * c_out * c_in],
            (c_in as isize, 1),
            &v[position * c_in * len..(position + 1) * c_in * len],
            (len as isize, 1),
            T::ZERO,
            &mut m[position * c_out * len..(position + 1) * c_out * len],
            (len as isize, 1),
        );
    }
}

/// Reinterprets `values` as `f32` when `T` is `f32`.
fn as_f32<T: 'static>(values: &[T]) -> Option<&[f32]> {
    // SAFETY: the type ids match, so `T` is `f32` and the slice is unchanged.
    (TypeId::of::<T>() == TypeId::of::<f32>())
        .then(|| unsafe { std::slice::from_raw_parts(values.as_ptr().cast(), values.len()) })
}

/// Reinterprets `values` as `f32` when `T` is `f32`.
fn as_f32_mut<T: 'static>(values: &mut [T]) -> Option<&mut [f32]> {
    // SAFETY: the type ids match, so `T` is `f32` and the slice is unchanged.
    (TypeId::of::<T>() == TypeId::of::<f32>()).then(|| unsafe {
        std::slice::from_raw_parts_mut(values.as_mut_ptr().cast(), values.len())
    })
}

/// The transformed weights of one forward pass, in the layout of the kernel that multiplies
/// them: position-major for the general GEMM, or packed for the AVX-512 kernel (`f32`, output
/// channels a multiple of 8, and a CPU with AVX-512F).
enum Weights<T> {
    Gemm(Vec<T>),
    Avx512(Vec<f32>),
}

impl<T: Element> Weights<T> {
    fn new(u: Vec<T>, g: &ConvGeometry) -> Self {
        match as_f32(&u) {
            Some(u32) if avx512::applies(g.c_out) => {
                Weights::Avx512(avx512::pack_weights(u32, POSITIONS, g.c_out, g.c_in))
            }
            _ => Weights::Gemm(u),
        }
    }

    /// Computes, for every position, `m = u v`: `(c_out x c_in)` by `(c_in x len)`.
    fn multiply(&self, g: &ConvGeometry, v: &[T], len: usize, m: &mut [T]) {
        match self {
            Weights::Gemm(u) => multiply_positions(g, u, v, len, m),
            Weights::Avx512(packed) => {
                let (v, m) = match (as_f32(v), as_f32_mut(m)) {
                    (Some(v), Some(m)) => (v, m),
                    _ => unreachable!("packed AVX-512 weights exist only for f32"),
                };
                avx512::multiply(packed, v, m, (g.c_out, g.c_in, len));
            }
        }
    }
}

/// Gathers the 16 position streams of channel `channel` in `m` (rows of `rows` values per
/// position, position-major) for the `n` tiles from column `offset`.
fn position_streams<T>(
    m: &[T],
    rows: usize,
    channel: usize,
    len: usize,
    offset: usize,
    n: usize,
) -> [&[T]; POSITIONS] {
    std::array::from_fn(|position| {
        let start = (position * rows + channel) * len + offset;
        &m[start..start + n]
    })
}

/// Writes the two output rows of `n` tiles from the products `m` of one channel into `top` and
/// `bottom` (`2n` values each): `A^T M A`, where rows of `A^T` are (1, 1, 1, 0) and
/// (0, 1, -1, -1). `upper` and `lower` are scratch rows of at least `n` values.
fn untransform_outputs<T: Element>(
    m: &[&[T]; POSITIONS],
    n: usize,
    (upper, lower): (&mut [Vec<T>; 4], &mut [Vec<T>; 4]),
    (top, bottom): (&mut [T], &mut [T]),
) {
    // A^T M: two rows of four, each loop over all tiles at once.
    for c in 0..4 {
        let (first, second, third, fourth) = (m[c], m[4 + c], m[8 + c], m[12 + c]);
        let (upper, lower) = (&mut upper[c][..n], &mut lower[c][..n]);
        for t in 0..n {
            upper[t] = first[t] + second[t] + third[t];
            lower[t] = second[t] - third[t] - fourth[t];
        }
    }
    // (A^T M) A: the same combination along each row, interleaving the two output columns.
    for (rows, line) in [(&*upper, &mut *top), (&*lower, &mut *bottom)] {
        let [r0, r1, r2, r3] = rows;
        let pairs = line[..2 * n].chunks_exact_mut(2);
        for ((((pair, &a), &b), &c), &d) in pairs
            .zip(&r0[..n])
            .zip(&r1[..n])
            .zip(&r2[..n])
            .zip(&r3[..n])
        {
            pair[0] = a + b + c;
            pair[1] = b - c - d;
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

/// Computes `y = conv(x, weight)` with no bias for a 3x3 kernel.
pub fn forward<T: Element>(x: &[T], weight: &[T], g: &ConvGeometry) -> Vec<T> {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let out_plane = h_out * w_out;
    let y_len = g.n * g.c_out * out_plane;
    let grid = TileGrid::new(g);
    if grid.len() == 0 || g.n == 0 {
        return vec![T::ZERO; y_len];
    }
    // The tasks write every pixel exactly once, so `y` is not zero-filled first.
    let mut y: Vec<T> = Vec::with_capacity(y_len);
    let u = Weights::new(transform_weights(weight, g.c_out, g.c_in), g);
    let group = group_len::<T>(g);
    let groups = grid.len().div_ceil(group);
    let image_len = g.c_in * g.h_in * g.w_in;
    let output = OutputPtr(y.as_mut_ptr());

    (0..g.n * groups).into_par_iter().for_each_init(
        || {
            (
                vec![T::ZERO; POSITIONS * g.c_in * group],
                vec![T::ZERO; POSITIONS * g.c_out * group],
                Scratch::new(grid),
            )
        },
        |(v, m, scratch), task| {
            let (image, index) = (task / groups, task % groups);
            let first = index * group;
            let len = group.min(grid.len() - first);
            let (v, m) = (
                &mut v[..POSITIONS * g.c_in * len],
                &mut m[..POSITIONS * g.c_out * len],
            );
            transform_inputs(
                &x[image * image_len..(image + 1) * image_len],
                g,
                grid,
                (first, len),
                v,
                scratch,
            );
            u.multiply(g, v, len, m);
            let [top, bottom] = &mut scratch.lines;
            let rows = (&mut scratch.combined_even, &mut scratch.combined_odd);
            for segment in segments(grid, first, len) {
                let n = segment.len();
                let (row, col) = (2 * segment.row, 2 * segment.first_col);
                let columns = (2 * segment.end_col).min(w_out) - col;
                for o in 0..g.c_out {
                    let streams = position_streams(m, g.c_out, o, len, segment.offset, n);
                    untransform_outputs(&streams, n, (&mut *rows.0, &mut *rows.1), (top, bottom));
                    let plane = (image * g.c_out + o) * out_plane;
                    for (r, line) in [&top, &bottom].into_iter().enumerate() {
                        if row + r < h_out {
                            // SAFETY: the row segment lies inside the capacity of `y`, and
                            // only this task writes this tile's pixels.
                            unsafe {
                                std::ptr::copy_nonoverlapping(
                                    line.as_ptr(),
                                    output.get().add(plane + (row + r) * w_out + col),
                                    columns,
                                );
                            }
                        }
                    }
                }
            }
        },
    );
    // SAFETY: the tiles of every (image, group) task cover all output pixels of every channel,
    // and each task wrote its pixels through `output`, so all `y_len` elements are initialized.
    unsafe { y.set_len(y_len) };
    y
}

/// Writes `A dY A^T` of the output-gradient tiles `first..first + len` of one image into `z`,
/// position-major: `z[(position * c_out + o) * len + t]`; pixels past the output are zero.
/// Rows of `A` are (1, 0), (1, 1), (1, -1) and (0, -1).
fn transform_output_grads<T: Element>(
    grad_output: &[T],
    g: &ConvGeometry,
    grid: TileGrid,
    (first, len): (usize, usize),
    z: &mut [T],
    scratch: &mut Scratch<T>,
) {
    let (h_out, w_out) = (g.h_out(), g.w_out());
    let out_plane = h_out * w_out;
    for segment in segments(grid, first, len) {
        let n = segment.len();
        let (row, col) = (2 * segment.row as isize, 2 * segment.first_col as isize);
        for o in 0..g.c_out {
            let plane = &grad_output[o * out_plane..(o + 1) * out_plane];
            for r in 0..2 {
                load_row(
                    plane,
                    (h_out, w_out),
                    (row + r as isize, col),
                    &mut scratch.even[r][..n],
                    &mut scratch.odd[r][..n],
                );
            }
            // A dY: combine the two gradient rows, all columns at once.
            combine_gradient_rows(&scratch.even, &mut scratch.combined_even, n);
            combine_gradient_rows(&scratch.odd, &mut scratch.combined_odd, n);
            // (A dY) A^T: tile t reads columns 2t (even) and 2t + 1 (odd) of each combined row.
            for k in 0..4 {
                let (even, odd) = (&scratch.combined_even[k], &scratch.combined_odd[k]);
                let start = (4 * k * g.c_out + o) * len + segment.offset;
                let [out0, out1, out2, out3] = four_streams(z, start, g.c_out * len, n);
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

/// Computes `A dY` for `width` columns of the two rows in `d[0]` and `d[1]`: `out` gets the
/// rows d0, d0 + d1, d0 - d1 and -d1.
fn combine_gradient_rows<T: Element>(d: &[Vec<T>; 4], out: &mut [Vec<T>; 4], width: usize) {
    let [d0, d1, ..] = d;
    let [r0, r1, r2, r3] = out;
    for x in 0..width {
        r0[x] = d0[x];
        r1[x] = d0[x] + d1[x];
        r2[x] = d0[x] - d1[x];
        r3[x] = -d1[x];
    }
}

/// Computes the weight gradient of a 3x3 convolution:
/// `grad_weight[o, i, ki, kj] = sum over images and output pixels of grad_output * x`.
pub fn weight_grad<T: Element>(x: &[T], grad_output: &[T], g: &ConvGeometry) -> Vec<T> {
    let (c_in, c_out) = (g.c_in, g.c_out);
    let weight_len = c_out * c_in * 9;
    let grid = TileGrid::new(g);
    if grid.len() == 0 || g.n == 0 {
        return vec![T::ZERO; weight_len];
    }
    let group = group_len::<T>(g);
    let chunk = group.max(grid.len().div_ceil(MAX_WEIGHT_GRAD_PARTIALS));
    let chunks = grid.len().div_ceil(chunk);
    let image_len = c_in * g.h_in * g.w_in;
    let out_image_len = c_out * g.h_out() * g.w_out();

    // Each task sums `dZ . V` over its chunk of tiles into its own partial `dU`.
    let partials: Vec<Vec<T>> = (0..g.n * chunks)
        .into_par_iter()
        .map(|task| {
            let (image, index) = (task / chunks, task % chunks);
            let end = ((index + 1) * chunk).min(grid.len());
            let x_image = &x[image * image_len..(image + 1) * image_len];
            let dy_image = &grad_output[image * out_image_len..(image + 1) * out_image_len];
            let mut v = vec![T::ZERO; POSITIONS * c_in * group];
            let mut z = vec![T::ZERO; POSITIONS * c_out * group];
            let mut partial = vec![T::ZERO; POSITIONS * c_out * c_in];
            let mut scratch = Scratch::new(grid);
            let mut first = index * chunk;
            while first < end {
                let len = group.min(end - first);
                let (v, z) = (
                    &mut v[..POSITIONS * c_in * len],
                    &mut z[..POSITIONS * c_out * len],
                );
                transform_inputs(x_image, g, grid, (first, len), v, &mut scratch);
                transform_output_grads(dy_image, g, grid, (first, len), z, &mut scratch);
                for position in 0..POSITIONS {
                    T::gemm(
                        c_out,
                        len,
                        c_in,
                        T::ONE,
                        &z[position * c_out * len..(position + 1) * c_out * len],
                        (len as isize, 1),
                        &v[position * c_in * len..(position + 1) * c_in * len],
                        (1, len as isize),
                        T::ONE,
                        &mut partial[position * c_out * c_in..(position + 1) * c_out * c_in],
                        (c_in as isize, 1),
                    );
                }
                first += len;
            }
            partial
        })
        .collect();

    let mut sum = vec![T::ZERO; POSITIONS * c_out * c_in];
    for partial in &partials {
        for (total, &value) in sum.iter_mut().zip(partial) {
            *total += value;
        }
    }
    untransform_weight_grad(&sum, c_out, c_in)
}

/// Computes `G^T dU G` for every channel pair of the position-major `du`. The rows of `G^T`
/// are (1, 1/2, 1/2, 0), (0, 1/2, -1/2, 0) and (0, 1/2, 1/2, 1).
fn untransform_weight_grad<T: Element>(du: &[T], c_out: usize, c_in: usize) -> Vec<T> {
    let half = T::from_f64(0.5);
    let combine = |v: [T; 4]| -> [T; 3] {
        [
            v[0] + half * (v[1] + v[2]),
            half * (v[1] - v[2]),
            half * (v[1] + v[2]) + v[3],
        ]
    };
    let mut grad_weight = vec![T::ZERO; c_out * c_in * 9];
    for o in 0..c_out {
        for i in 0..c_in {
            let at = |r: usize, c: usize| du[((r * 4 + c) * c_out + o) * c_in + i];
            let rows: [[T; 3]; 4] =
                std::array::from_fn(|r| combine([at(r, 0), at(r, 1), at(r, 2), at(r, 3)]));
            let target = &mut grad_weight[(o * c_in + i) * 9..(o * c_in + i + 1) * 9];
            for c in 0..3 {
                let column = combine([rows[0][c], rows[1][c], rows[2][c], rows[3][c]]);
                for (r, &value) in column.iter().enumerate() {
                    target[r * 3 + c] = value;
                }
            }
        }
    }
    grad_weight
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
    const CASES: [(usize, usize, usize, usize, usize, isize); 5] = [
        (1, 1, 1, 3, 3, 0),
        (2, 3, 5, 7, 6, 1),
        (1, 4, 2, 9, 11, 2),
        (2, 32, 16, 12, 13, 0),
        (1, 2, 3, 60, 70, 1),
    ];

    #[test]
    fn forward_matches_reference() {
        for (n, c_in, c_out, h, w, pad) in CASES {
            let g = geometry(n, c_in, c_out, h, w, pad);
            let x = values(n * c_in * h * w, 1);
            let weight = values(c_out * c_in * 9, 2);
            assert_close(
                &forward(&x, &weight, &g),
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

    #[test]
    fn group_len_is_kernel_multiple() {
        for channels in [1, 3, 32, 64, 128, 4096] {
            let g = geometry(1, channels, channels, 8, 8, 0);
            let len = group_len::<f32>(&g);
            assert!(len >= 16);
            assert_eq!(len % 16, 0);
        }
    }
}
