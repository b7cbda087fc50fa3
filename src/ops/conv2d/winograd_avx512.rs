//! AVX-512 kernels for the per-position matrix products of the Winograd kernels in `f32`.
//!
//! Both read the transformed values in the block layout of `winograd.rs`
//! (`[block][channel][position][lane]`, 16 tiles per block), where the 16 tiles of one channel
//! and position are one vector load.
//!
//! - [`multiply`] (forward pass): for each position, `m = u v` multiplies the transformed
//!   weights (`c_out x c_in`) by the transformed inputs (`c_in` values per tile). A general
//!   GEMM packs both operands on every call, which cost about a third of its time at these
//!   sizes. Here the weights are packed once per convolution, in blocks of [`CHANNEL_BLOCK`]
//!   output channels, and the inputs are read in place. Each step of the inner loop does 16
//!   fused multiply-adds into 16 accumulator registers (8 output channels by 32 tiles).
//! - [`accumulate_weight_grad`] (weight gradient): for each position, `dU += dZ V^T` sums over
//!   tiles. With input channels in multiples of 16, the inputs of one position are transposed
//!   so that a vector contains 16 channels of one tile. Each step then multiplies a broadcast
//!   output-gradient value of each of 8 output channels by 32 input channels, and the 16
//!   accumulators sum over every tile of the call. At 64 and 128 channels this is twice as
//!   fast as the lane-sum form below, which loads more per multiply-add and spends shuffles on
//!   adding up lanes.
//!   Other input-channel counts (3, for the first layer) multiply the tiles of 4 output
//!   channels by those of 4 input channels into 16 accumulators, lane by lane, and add up the
//!   lanes once per call. Counts that are not multiples of 4 end with a partial step.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m128, __m512, _mm512_add_ps, _mm512_extractf32x4_ps, _mm512_fmadd_ps, _mm512_loadu_ps,
    _mm512_set1_ps, _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm512_shuffle_ps, _mm512_storeu_ps,
    _mm512_unpackhi_ps, _mm512_unpacklo_ps, _mm_add_ps, _mm_loadu_ps, _mm_storeu_ps,
};

use super::winograd::{block_index, BLOCK, BLOCK_VALUES, POSITIONS};

/// Output channels per block of packed weights and per kernel call.
pub const CHANNEL_BLOCK: usize = 8;

/// Channels of each side of one step of the lane-sum weight-gradient kernel.
const GRAD_BLOCK: usize = 4;

/// Input channels of one step of the broadcast weight-gradient kernel: two vectors.
const GRAD_COLUMNS: usize = 2 * BLOCK;

/// Output channels of one step of the broadcast weight-gradient kernel.
const GRAD_ROWS: usize = 8;

/// Reports whether this CPU runs the forward kernel, and whether `c_out` fits its channel
/// blocks.
pub fn applies(c_out: usize) -> bool {
    c_out.is_multiple_of(CHANNEL_BLOCK) && cpu_has_avx512()
}

/// Reports whether this CPU runs the weight-gradient kernel, which takes any channel counts.
pub fn weight_grad_applies() -> bool {
    cpu_has_avx512()
}

fn cpu_has_avx512() -> bool {
    crate::ops::avx512_available()
}

/// Rearranges position-major weights `u[(position * c_out + o) * c_in + i]` into blocks of
/// [`CHANNEL_BLOCK`] output channels:
/// `packed[((block * POSITIONS + position) * c_in + i) * CHANNEL_BLOCK + j]` for
/// `o = block * 8 + j`,
/// so that each block's weights are one contiguous run.
///
/// The convolutions build this layout directly from the weights (`packed_weights` in
/// `winograd.rs`); the tests use this form as its definition.
#[cfg(test)]
pub fn pack_weights(u: &[f32], positions: usize, c_out: usize, c_in: usize) -> Vec<f32> {
    assert_eq!(
        c_out % CHANNEL_BLOCK,
        0,
        "c_out must be a multiple of the channel block"
    );
    assert_eq!(
        u.len(),
        positions * c_out * c_in,
        "weights do not match their shape"
    );
    let mut packed = vec![0.0f32; u.len()];
    for position in 0..positions {
        for o in 0..c_out {
            let (block, j) = (o / CHANNEL_BLOCK, o % CHANNEL_BLOCK);
            for i in 0..c_in {
                packed[((block * positions + position) * c_in + i) * CHANNEL_BLOCK + j] =
                    u[(position * c_out + o) * c_in + i];
            }
        }
    }
    packed
}

/// Computes `m[block][o][position][lane] = sum over i of u[position, o, i] *
/// v[block][i][position][lane]` for every block, position and lane, with `packed` in the layout
/// of `pack_weights`.
///
/// # Panics
///
/// If [`applies`] is false for `c_out`, or a buffer does not match the shapes.
#[cfg(target_arch = "x86_64")]
pub fn multiply(
    packed: &[f32],
    v: &[f32],
    m: &mut [f32],
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    assert!(
        applies(c_out),
        "the AVX-512 kernel does not apply to {c_out} output channels"
    );
    assert_eq!(packed.len(), POSITIONS * c_out * c_in);
    assert!(v.len() >= blocks * c_in * BLOCK_VALUES);
    assert!(m.len() >= blocks * c_out * BLOCK_VALUES);
    // SAFETY: `applies` checked that the CPU has AVX-512F, and the assertions above that every
    // index the kernel forms lies inside its buffer.
    unsafe { multiply_avx512(packed, v, m, (c_out, c_in, blocks)) }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn multiply(_: &[f32], _: &[f32], _: &mut [f32], (c_out, _, _): (usize, usize, usize)) {
    panic!("the AVX-512 kernel does not apply to {c_out} output channels on this CPU");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn multiply_avx512(
    packed: &[f32],
    v: &[f32],
    m: &mut [f32],
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    let channel_blocks = c_out / CHANNEL_BLOCK;
    let (inputs, outputs) = (v.as_ptr(), m.as_mut_ptr());
    for position in 0..POSITIONS {
        let weights = packed.as_ptr().add(position * c_in * CHANNEL_BLOCK);
        // Two blocks (32 tiles) per step; an odd last block runs alone.
        for first_block in (0..blocks).step_by(2) {
            let pair = first_block + 1 < blocks;
            for channel_block in 0..channel_blocks {
                // SAFETY (for the whole step): blocks first_block..first_block + 2 (the second
                // only when `pair`), input channels 0..c_in and output channels 0..c_out lie
                // inside the buffers that `multiply` checked.
                unsafe {
                    let block_weights =
                        weights.add(channel_block * POSITIONS * c_in * CHANNEL_BLOCK);
                    let mut sums = [[_mm512_setzero_ps(); 2]; CHANNEL_BLOCK];
                    let low_inputs = inputs.add(block_index(first_block, 0, c_in, position));
                    if pair {
                        let high_inputs = low_inputs.add(c_in * BLOCK_VALUES);
                        for i in 0..c_in {
                            let low = _mm512_loadu_ps(low_inputs.add(i * BLOCK_VALUES));
                            let high = _mm512_loadu_ps(high_inputs.add(i * BLOCK_VALUES));
                            accumulate(&mut sums, block_weights.add(i * CHANNEL_BLOCK), low, high);
                        }
                    } else {
                        let mut single = [_mm512_setzero_ps(); CHANNEL_BLOCK];
                        for i in 0..c_in {
                            let low = _mm512_loadu_ps(low_inputs.add(i * BLOCK_VALUES));
                            accumulate_single(
                                &mut single,
                                block_weights.add(i * CHANNEL_BLOCK),
                                low,
                            );
                        }
                        for (sum, value) in sums.iter_mut().zip(single) {
                            sum[0] = value;
                        }
                    }
                    let first_channel = channel_block * CHANNEL_BLOCK;
                    for (j, [low, high]) in sums.into_iter().enumerate() {
                        let at = block_index(first_block, first_channel + j, c_out, position);
                        _mm512_storeu_ps(outputs.add(at), low);
                        if pair {
                            _mm512_storeu_ps(outputs.add(at + c_out * BLOCK_VALUES), high);
                        }
                    }
                }
            }
        }
    }
}

/// Adds `weights[j] * (low, high)` to the sums of output channel `j` of the block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate(
    sums: &mut [[__m512; 2]; CHANNEL_BLOCK],
    weights: *const f32,
    low: __m512,
    high: __m512,
) {
    for (j, [sum_low, sum_high]) in sums.iter_mut().enumerate() {
        // SAFETY: the caller passes a pointer to CHANNEL_BLOCK packed weights.
        let weight = _mm512_set1_ps(unsafe { *weights.add(j) });
        *sum_low = _mm512_fmadd_ps(weight, low, *sum_low);
        *sum_high = _mm512_fmadd_ps(weight, high, *sum_high);
    }
}

/// Adds `weights[j] * values` to the sum of output channel `j` of the block: the one-block
/// form of [`accumulate`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
unsafe fn accumulate_single(
    sums: &mut [__m512; CHANNEL_BLOCK],
    weights: *const f32,
    values: __m512,
) {
    for (j, sum) in sums.iter_mut().enumerate() {
        // SAFETY: the caller passes a pointer to CHANNEL_BLOCK packed weights.
        let weight = _mm512_set1_ps(unsafe { *weights.add(j) });
        *sum = _mm512_fmadd_ps(weight, values, *sum);
    }
}

/// Adds to the position-major `partial[(position * c_out + o) * c_in + i]`, or stores there
/// when `overwrite` is set, the sum over every lane of `blocks` blocks of
/// `z[block][o][position][lane] * v[block][i][position][lane]`.
///
/// Each sum is accumulated per lane over the blocks, then its 16 lanes are added in a fixed
/// tree order, so the result depends only on the shapes.
///
/// # Panics
///
/// If [`weight_grad_applies`] is false, or a buffer does not match the shapes.
#[cfg(target_arch = "x86_64")]
pub fn accumulate_weight_grad(
    z: &[f32],
    v: &[f32],
    (partial, overwrite): (&mut [f32], bool),
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    assert!(weight_grad_applies(), "this CPU has no AVX-512F");
    assert!(z.len() >= blocks * c_out * BLOCK_VALUES);
    assert!(v.len() >= blocks * c_in * BLOCK_VALUES);
    assert_eq!(partial.len(), POSITIONS * c_out * c_in);
    // SAFETY: `weight_grad_applies` confirmed that the CPU has AVX-512F, and the assertions
    // above that every index the kernel forms lies inside its buffer.
    let shapes = (c_out, c_in, blocks);
    unsafe {
        if c_in.is_multiple_of(BLOCK) {
            accumulate_weight_grad_broadcast(z, v, (partial, overwrite), shapes);
        } else {
            accumulate_weight_grad_avx512(z, v, (partial, overwrite), shapes);
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn accumulate_weight_grad(
    _: &[f32],
    _: &[f32],
    _: (&mut [f32], bool),
    (c_out, c_in, _): (usize, usize, usize),
) {
    panic!("the AVX-512 kernel does not apply to {c_out} by {c_in} channels on this CPU");
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_weight_grad_avx512(
    z: &[f32],
    v: &[f32],
    (partial, overwrite): (&mut [f32], bool),
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    let (z_stride, v_stride) = (c_out * BLOCK_VALUES, c_in * BLOCK_VALUES);
    for position in 0..POSITIONS {
        for first_o in (0..c_out).step_by(GRAD_BLOCK) {
            // The last step of each side may have fewer than 4 channels; its missing rows
            // are zero vectors, and their sums are not stored.
            let rows_o = (c_out - first_o).min(GRAD_BLOCK);
            for first_i in (0..c_in).step_by(GRAD_BLOCK) {
                let rows_i = (c_in - first_i).min(GRAD_BLOCK);
                let mut sums = [[_mm512_setzero_ps(); GRAD_BLOCK]; GRAD_BLOCK];
                let zero = _mm512_setzero_ps();
                // SAFETY: blocks 0..blocks, channels first_o..first_o + rows_o of `z` and
                // first_i..first_i + rows_i of `v` lie inside the buffers that the caller
                // checked, and no other rows are read.
                unsafe {
                    let mut z_rows = z.as_ptr().add(block_index(0, first_o, c_out, position));
                    let mut v_rows = v.as_ptr().add(block_index(0, first_i, c_in, position));
                    let full = rows_o == GRAD_BLOCK && rows_i == GRAD_BLOCK;
                    for _ in 0..blocks {
                        let load = |rows: *const f32, count: usize, a: usize| {
                            if full || a < count {
                                _mm512_loadu_ps(rows.add(a * BLOCK_VALUES))
                            } else {
                                zero
                            }
                        };
                        let dz: [__m512; GRAD_BLOCK] =
                            std::array::from_fn(|a| load(z_rows, rows_o, a));
                        let values: [__m512; GRAD_BLOCK] =
                            std::array::from_fn(|b| load(v_rows, rows_i, b));
                        for (row, &dz) in sums.iter_mut().zip(&dz) {
                            for (sum, &value) in row.iter_mut().zip(&values) {
                                *sum = _mm512_fmadd_ps(dz, value, *sum);
                            }
                        }
                        z_rows = z_rows.add(z_stride);
                        v_rows = v_rows.add(v_stride);
                    }
                }
                let totals = sum_lanes(&sums);
                for (a, row) in totals.iter().enumerate().take(rows_o) {
                    let at = (position * c_out + first_o + a) * c_in + first_i;
                    let target = &mut partial[at..at + rows_i];
                    if rows_i == GRAD_BLOCK {
                        // SAFETY: `target` is the four values that the 128-bit load and store
                        // touch.
                        unsafe {
                            let sum = if overwrite {
                                *row
                            } else {
                                _mm_add_ps(_mm_loadu_ps(target.as_ptr()), *row)
                            };
                            _mm_storeu_ps(target.as_mut_ptr(), sum);
                        }
                    } else {
                        let mut lanes = [0.0f32; GRAD_BLOCK];
                        // SAFETY: `lanes` is the four values that the 128-bit store writes.
                        unsafe { _mm_storeu_ps(lanes.as_mut_ptr(), *row) };
                        for (value, lane) in target.iter_mut().zip(lanes) {
                            *value = if overwrite { lane } else { *value + lane };
                        }
                    }
                }
            }
        }
    }
}

/// Adds `dZ V^T` to `partial` like [`accumulate_weight_grad_avx512`], for input-channel counts
/// that are multiples of 16.
///
/// For each position and each run of up to [`GRAD_COLUMNS`] input channels, it first
/// transposes the inputs of every block into `columns` (`[block][tile][channel]`, which stays
/// in L1), so that one vector holds 16 channels of one tile. Each step then broadcasts one
/// output-gradient value per output channel and multiplies it by those vectors, so the sums
/// over tiles stay in registers and need no lane additions at the end.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn accumulate_weight_grad_broadcast(
    z: &[f32],
    v: &[f32],
    (partial, overwrite): (&mut [f32], bool),
    (c_out, c_in, blocks): (usize, usize, usize),
) {
    let mut columns = vec![0.0f32; blocks * BLOCK * GRAD_COLUMNS];
    for position in 0..POSITIONS {
        for first_i in (0..c_in).step_by(GRAD_COLUMNS) {
            let width = (c_in - first_i).min(GRAD_COLUMNS);
            for block in 0..blocks {
                for half in 0..width / BLOCK {
                    let first = first_i + half * BLOCK;
                    // SAFETY: channels first..first + 16 of block `block` lie inside `v`,
                    // which the caller checked, and `columns` has room for every block's
                    // 16 tiles of GRAD_COLUMNS channels.
                    unsafe {
                        let rows: [__m512; BLOCK] = std::array::from_fn(|r| {
                            _mm512_loadu_ps(v.as_ptr().add(block_index(
                                block,
                                first + r,
                                c_in,
                                position,
                            )))
                        });
                        let tiles = transpose_16x16(rows);
                        for (tile, values) in tiles.into_iter().enumerate() {
                            let at = (block * BLOCK + tile) * GRAD_COLUMNS + half * BLOCK;
                            _mm512_storeu_ps(columns.as_mut_ptr().add(at), values);
                        }
                    }
                }
            }
            let step = BroadcastStep {
                z,
                columns: &columns,
                position,
                first_i,
                c_out,
                c_in,
                blocks,
            };
            let mut first_o = 0;
            while first_o < c_out {
                let rows = c_out - first_o;
                let target = &mut *partial;
                // SAFETY: each call reads `rows` (or fewer) output channels from first_o and
                // writes their sums at first_i..first_i + width, all inside the buffers.
                first_o += unsafe {
                    match (rows, width == GRAD_COLUMNS) {
                        (GRAD_ROWS.., true) => step.run::<GRAD_ROWS, 2>(target, first_o, overwrite),
                        (GRAD_ROWS.., false) => {
                            step.run::<GRAD_ROWS, 1>(target, first_o, overwrite)
                        }
                        (4.., true) => step.run::<4, 2>(target, first_o, overwrite),
                        (4.., false) => step.run::<4, 1>(target, first_o, overwrite),
                        (2.., true) => step.run::<2, 2>(target, first_o, overwrite),
                        (2.., false) => step.run::<2, 1>(target, first_o, overwrite),
                        (_, true) => step.run::<1, 2>(target, first_o, overwrite),
                        (_, false) => step.run::<1, 1>(target, first_o, overwrite),
                    }
                };
            }
        }
    }
}

/// Operands and shapes shared by the steps of one position and run of input channels.
#[cfg(target_arch = "x86_64")]
struct BroadcastStep<'a> {
    z: &'a [f32],
    columns: &'a [f32],
    position: usize,
    first_i: usize,
    c_out: usize,
    c_in: usize,
    blocks: usize,
}

#[cfg(target_arch = "x86_64")]
impl BroadcastStep<'_> {
    /// Sums `ROWS` output channels from `first_o` by `VECTORS` * 16 input channels over every
    /// tile, adds them to `partial` (or stores them when `overwrite` is set) and returns
    /// `ROWS`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn run<const ROWS: usize, const VECTORS: usize>(
        &self,
        partial: &mut [f32],
        first_o: usize,
        overwrite: bool,
    ) -> usize {
        let mut sums = [[_mm512_setzero_ps(); VECTORS]; ROWS];
        // SAFETY: the caller guarantees that output channels first_o..first_o + ROWS and
        // input channels first_i..first_i + 16 * VECTORS exist, and `columns` contains every
        // block's tiles.
        unsafe {
            for block in 0..self.blocks {
                let z_rows =
                    self.z
                        .as_ptr()
                        .add(block_index(block, first_o, self.c_out, self.position));
                let tiles = self.columns.as_ptr().add(block * BLOCK * GRAD_COLUMNS);
                for tile in 0..BLOCK {
                    let values: [__m512; VECTORS] = std::array::from_fn(|h| {
                        _mm512_loadu_ps(tiles.add(tile * GRAD_COLUMNS + h * BLOCK))
                    });
                    for (j, row) in sums.iter_mut().enumerate() {
                        let dz = _mm512_set1_ps(*z_rows.add(j * BLOCK_VALUES + tile));
                        for (sum, &value) in row.iter_mut().zip(&values) {
                            *sum = _mm512_fmadd_ps(dz, value, *sum);
                        }
                    }
                }
            }
            for (j, row) in sums.iter().enumerate() {
                let at = (self.position * self.c_out + first_o + j) * self.c_in + self.first_i;
                let target = partial.as_mut_ptr().add(at);
                for (h, &sum) in row.iter().enumerate() {
                    let slot = target.add(h * BLOCK);
                    let total = if overwrite {
                        sum
                    } else {
                        _mm512_add_ps(_mm512_loadu_ps(slot), sum)
                    };
                    _mm512_storeu_ps(slot, total);
                }
            }
        }
        ROWS
    }
}

/// Transposes 16 rows of 16 values: lane `r` of result `c` is lane `c` of `rows[r]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn transpose_16x16(rows: [__m512; 16]) -> [__m512; 16] {
    // Within each 128-bit lane L: pairs[2k] contains rows 2k, 2k + 1 at columns 4L and 4L + 1,
    // pairs[2k + 1] the same rows at columns 4L + 2 and 4L + 3.
    let pairs: [__m512; 16] = std::array::from_fn(|index| {
        let (first, second) = (rows[index & !1], rows[index | 1]);
        if index % 2 == 0 {
            _mm512_unpacklo_ps(first, second)
        } else {
            _mm512_unpackhi_ps(first, second)
        }
    });
    // quads[4m + c], 128-bit lane L: rows 4m..4m + 4 at column 4L + c.
    let quads: [__m512; 16] = std::array::from_fn(|index| {
        let (m, c) = (index / 4, index % 4);
        let (first, second) = (pairs[4 * m + c / 2], pairs[4 * m + 2 + c / 2]);
        if c % 2 == 0 {
            _mm512_shuffle_ps::<0b01_00_01_00>(first, second)
        } else {
            _mm512_shuffle_ps::<0b11_10_11_10>(first, second)
        }
    });
    // Column 4L + c gathers 128-bit lane L of quads[c], quads[4 + c], quads[8 + c] and
    // quads[12 + c].
    let mut columns = [_mm512_setzero_ps(); 16];
    for c in 0..4 {
        let low = _mm512_shuffle_f32x4::<0b01_00_01_00>(quads[c], quads[4 + c]);
        let high = _mm512_shuffle_f32x4::<0b11_10_11_10>(quads[c], quads[4 + c]);
        let low_rest = _mm512_shuffle_f32x4::<0b01_00_01_00>(quads[8 + c], quads[12 + c]);
        let high_rest = _mm512_shuffle_f32x4::<0b11_10_11_10>(quads[8 + c], quads[12 + c]);
        columns[c] = _mm512_shuffle_f32x4::<0b10_00_10_00>(low, low_rest);
        columns[4 + c] = _mm512_shuffle_f32x4::<0b11_01_11_01>(low, low_rest);
        columns[8 + c] = _mm512_shuffle_f32x4::<0b10_00_10_00>(high, high_rest);
        columns[12 + c] = _mm512_shuffle_f32x4::<0b11_01_11_01>(high, high_rest);
    }
    columns
}

/// Adds up the 16 lanes of each of the 4 by 4 accumulators. Row `a` of the result contains
/// the totals of `sums[a][0..4]`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn sum_lanes(sums: &[[__m512; GRAD_BLOCK]; GRAD_BLOCK]) -> [__m128; GRAD_BLOCK] {
    // Pair (x, y): each 128-bit lane of the result contains x0 + x2, y0 + y2, x1 + x3, y1 + y3
    // of the matching lane of x and y.
    let pair =
        |x: __m512, y: __m512| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    // Row a: each 128-bit lane contains one partial sum of each of sums[a][0..4].
    let rows: [__m512; GRAD_BLOCK] = std::array::from_fn(|a| {
        let [s0, s1, s2, s3] = sums[a];
        let (first, second) = (pair(s0, s1), pair(s2, s3));
        _mm512_add_ps(
            _mm512_shuffle_ps::<0b01_00_01_00>(first, second),
            _mm512_shuffle_ps::<0b11_10_11_10>(first, second),
        )
    });
    // Add the four 128-bit lanes: rows 0 and 1 into one vector, rows 2 and 3 into another,
    // then each 128-bit lane of `total` is one row's four totals.
    let halves = |x: __m512, y: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(x, y),
        )
    };
    let (upper, lower) = (halves(rows[0], rows[1]), halves(rows[2], rows[3]));
    let total = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0b10_00_10_00>(upper, lower),
        _mm512_shuffle_f32x4::<0b11_01_11_01>(upper, lower),
    );
    [
        _mm512_extractf32x4_ps::<0>(total),
        _mm512_extractf32x4_ps::<1>(total),
        _mm512_extractf32x4_ps::<2>(total),
        _mm512_extractf32x4_ps::<3>(total),
    ]
}

#[cfg(test)]
mod tests {
    use super::super::winograd::BLOCK as LANES;
    use super::*;

    /// Small integers, so that every product and sum below is exact in `f32` and the kernels
    /// must match plain loops bit for bit whatever their summation order.
    fn value(index: usize) -> f32 {
        ((index * 7919) % 13) as f32 - 6.0
    }

    /// Compares the forward kernel with plain loops for block counts around its pairs.
    #[test]
    fn multiply_matches_plain_loops() {
        if !cpu_has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let (c_out, c_in) = (16, 5);
        for blocks in [1, 2, 3, 4] {
            let u: Vec<f32> = (0..POSITIONS * c_out * c_in).map(value).collect();
            let v: Vec<f32> = (0..blocks * c_in * BLOCK_VALUES)
                .map(|i| value(i + 3))
                .collect();
            let mut m = vec![f32::NAN; blocks * c_out * BLOCK_VALUES];
            let packed = pack_weights(&u, POSITIONS, c_out, c_in);
            multiply(&packed, &v, &mut m, (c_out, c_in, blocks));
            for block in 0..blocks {
                for position in 0..POSITIONS {
                    for o in 0..c_out {
                        for lane in 0..LANES {
                            let expected: f32 = (0..c_in)
                                .map(|i| {
                                    u[(position * c_out + o) * c_in + i]
                                        * v[block_index(block, i, c_in, position) + lane]
                                })
                                .sum();
                            let actual = m[block_index(block, o, c_out, position) + lane];
                            assert_eq!(
                                actual, expected,
                                "blocks {blocks}, block {block}, position {position}, o {o}, lane {lane}"
                            );
                        }
                    }
                }
            }
        }
    }

    /// Compares the weight-gradient kernel with plain loops, adding to a nonzero partial.
    #[test]
    fn weight_grad_matches_plain_loops() {
        if !cpu_has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        // The first five shapes take the lane-sum kernel. The last four have input channels in
        // multiples of 16, so they take the broadcast kernel, with every step shape: 8, 4, 2
        // and 1 output channels by 32 and 16 input channels.
        let shapes = [
            (4, 4, 1),
            (8, 12, 3),
            (12, 4, 2),
            (32, 3, 2),
            (1, 6, 3),
            (32, 32, 2),
            (15, 48, 3),
            (3, 16, 1),
            (8, 64, 1),
        ];
        for (c_out, c_in, blocks) in shapes {
            let z: Vec<f32> = (0..blocks * c_out * BLOCK_VALUES).map(value).collect();
            let v: Vec<f32> = (0..blocks * c_in * BLOCK_VALUES)
                .map(|i| value(i + 5))
                .collect();
            let initial: Vec<f32> = (0..POSITIONS * c_out * c_in)
                .map(|i| value(i + 7))
                .collect();
            let mut partial = initial.clone();
            accumulate_weight_grad(&z, &v, (&mut partial, false), (c_out, c_in, blocks));
            let mut stored = vec![f32::NAN; initial.len()];
            accumulate_weight_grad(&z, &v, (&mut stored, true), (c_out, c_in, blocks));
            for position in 0..POSITIONS {
                for o in 0..c_out {
                    for i in 0..c_in {
                        let mut expected = initial[(position * c_out + o) * c_in + i];
                        for block in 0..blocks {
                            for lane in 0..LANES {
                                expected += z[block_index(block, o, c_out, position) + lane]
                                    * v[block_index(block, i, c_in, position) + lane];
                            }
                        }
                        let at = (position * c_out + o) * c_in + i;
                        assert_eq!(
                            partial[at], expected,
                            "{c_out}x{c_in}, blocks {blocks}, position {position}, o {o}, i {i}"
                        );
                        assert_eq!(
                            stored[at],
                            expected - initial[at],
                            "overwritten: {c_out}x{c_in}, position {position}, o {o}, i {i}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn transpose_16x16_swaps_rows_and_lanes() {
        if !cpu_has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let values: Vec<f32> = (0..256).map(|i| i as f32).collect();
        let mut transposed = vec![f32::NAN; 256];
        // SAFETY: AVX-512F is present, and every load and store covers 16 values of a
        // 256-value buffer.
        unsafe {
            let rows = std::array::from_fn(|r| _mm512_loadu_ps(values.as_ptr().add(r * 16)));
            for (c, column) in transpose_16x16(rows).into_iter().enumerate() {
                _mm512_storeu_ps(transposed.as_mut_ptr().add(c * 16), column);
            }
        }
        for r in 0..16 {
            for c in 0..16 {
                assert_eq!(
                    transposed[c * 16 + r],
                    values[r * 16 + c],
                    "row {r}, column {c}"
                );
            }
        }
    }

    #[test]
    fn applies_needs_channel_blocks() {
        assert!(!applies(3));
        assert!(!applies(12));
    }
}
