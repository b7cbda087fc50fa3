//! AVX-512 versions of the three Winograd F(4x2, 3x3) transforms in `f32`: the input transform
//! `B^T d B`, the output transform `A^T M A` of the forward pass, and the output-gradient
//! transform `A dY A^T` of the weight gradient.
//!
//! Each call handles one block of 16 tiles, one tile per vector lane, in the block layout of
//! `winograd.rs`. A block's tiles lie in one or more tile rows (its parts). For every channel,
//! the pixels of all parts are merged into the same vectors with masked loads, whose masks
//! also supply the zero padding. Two permutes split them into even and odd columns, every
//! transformed value stays in a register, and the 24 positions are stored as 24 whole vectors,
//! one after the other. Each function performs the same additions, subtractions and exact
//! multiplications by powers of two in the same order as the portable loops in `winograd.rs`,
//! so both give the same bits for every tile.
//! Lanes past a group's last tile hold the transform of zeros, which may be -0 where the
//! portable loops write +0.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __m512i, __mmask16, _mm512_add_ps, _mm512_castps_si512, _mm512_castsi512_ps,
    _mm512_loadu_ps, _mm512_loadu_si512, _mm512_mask_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_mul_ps, _mm512_permutex2var_ps, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
    _mm512_storeu_ps, _mm512_sub_ps, _mm512_xor_si512,
};

use super::winograd::{Part, BLOCK as LANES, BLOCK_VALUES, INPUT_ROWS, POSITIONS, TILE_ROWS};

/// Reports whether this CPU runs these kernels.
pub fn available() -> bool {
    crate::ops::avx512_available()
}

/// Shapes of the image a transform reads or writes: `channels` planes of `height x width`.
#[derive(Clone, Copy)]
pub struct Planes {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
}

impl Planes {
    fn len(&self) -> usize {
        self.channels * self.height * self.width
    }
}

/// Permute indices that pick the even columns of 32 consecutive values.
const EVEN: [i32; 16] = [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30];
/// Permute indices that pick the odd columns of 32 consecutive values.
const ODD: [i32; 16] = [1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31];
/// Interleaves the first eight lanes of two vectors: a0, b0, a1, b1, ...
const INTERLEAVE_LOW: [i32; 16] = [0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23];
/// Interleaves the last eight lanes of two vectors: a8, b8, a9, b9, ...
const INTERLEAVE_HIGH: [i32; 16] = [8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31];

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn indices(values: &[i32; 16]) -> __m512i {
    // SAFETY: the array is exactly the 64 bytes that the unaligned load reads.
    unsafe { _mm512_loadu_si512(values.as_ptr().cast()) }
}

/// Mask of the lanes of a 16-column window that a part may read or write: lane `w` holds
/// column `start + w` of a row `width` columns wide and belongs to tile `first_tile + w / 2`
/// of the block. The lane is set when that tile is one of the part's lanes and the column lies
/// inside the row. The other lanes are zero padding or another part's pixels.
#[cfg(target_arch = "x86_64")]
fn window_mask(part: &Part, first_tile: usize, start: isize, width: usize) -> __mmask16 {
    // Both conditions hold on a run of lanes: the part's tiles cover lanes
    // 2 (first_lane - first_tile)..2 (end_lane - first_tile), and the row's columns cover lanes
    // -start..width - start. The mask is their overlap inside 0..16.
    let first_tile = first_tile as isize;
    let low = (2 * (part.first_lane as isize - first_tile))
        .max(-start)
        .max(0);
    let high = (2 * (part.end_lane as isize - first_tile))
        .min(width as isize - start)
        .min(LANES as isize);
    if low >= high {
        return 0;
    }
    ((1u32 << high) - (1u32 << low)) as __mmask16
}

/// Location of one part's pixels in a plane: the offset of the window's first column in the
/// part's first row (possibly negative), which of its rows exist, and the masks of its windows.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct PartWindows<const ROWS: usize, const WINDOWS: usize> {
    offset: isize,
    rows: [bool; ROWS],
    masks: [__mmask16; WINDOWS],
}

#[cfg(target_arch = "x86_64")]
impl<const ROWS: usize, const WINDOWS: usize> PartWindows<ROWS, WINDOWS> {
    const EMPTY: Self = PartWindows {
        offset: 0,
        rows: [false; ROWS],
        masks: [0; WINDOWS],
    };
}

/// Computes the windows of every part: `origin` gives a part's first row and the column of its
/// lane 0, and window `k` starts `shifts[k]` columns right of that, covering tiles from 8 on
/// when the shift is 16 or more.
#[cfg(target_arch = "x86_64")]
fn part_windows<const ROWS: usize, const WINDOWS: usize>(
    parts: &[Part],
    planes: Planes,
    origin: impl Fn(&Part) -> (isize, isize),
    shifts: [isize; WINDOWS],
) -> [PartWindows<ROWS, WINDOWS>; LANES] {
    assert!(parts.len() <= LANES && parts.iter().all(|part| part.end_lane <= LANES));
    let mut windows = [PartWindows::EMPTY; LANES];
    for (window, part) in windows.iter_mut().zip(parts) {
        let (row, col) = origin(part);
        window.offset = row * planes.width as isize + col;
        window.rows =
            std::array::from_fn(|r| (0..planes.height as isize).contains(&(row + r as isize)));
        window.masks = shifts.map(|shift| {
            let first_tile = if shift >= 16 { 8 } else { 0 };
            window_mask(part, first_tile, col + shift, planes.width)
        });
    }
    windows
}

/// Flips the sign bit of every lane, as scalar negation does (`0 - x` would turn -0 into +0).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn negate(x: __m512) -> __m512 {
    let sign = _mm512_set1_epi32(i32::MIN);
    _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(x), sign))
}

/// Writes `B^T d B` of one block's tiles for every input channel into `v_block`
/// (`[channel][position][lane]`). Lane `j` of `part` covers image rows
/// `4 row - pad_h..+6` and columns `2 (col + j) - pad_w..+4`. Rows and columns outside the
/// image read as zero, and lanes outside every part hold the transform of zeros.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, a part lies past the block, or a buffer does not match the
/// shapes.
#[cfg(target_arch = "x86_64")]
pub fn transform_input_block(
    image: &[f32],
    planes: Planes,
    (pad_h, pad_w): (isize, isize),
    parts: &[Part],
    v_block: &mut [f32],
) {
    assert!(available(), "this CPU has no AVX-512F");
    assert!(image.len() >= planes.len(), "image smaller than its planes");
    assert_eq!(v_block.len(), planes.channels * BLOCK_VALUES, "block size");
    // Own columns 2j, 2j + 1 in two windows, then the next pair 2j + 2, 2j + 3 in two more.
    let origin = |part: &Part| {
        (
            (TILE_ROWS * part.row) as isize - pad_h,
            2 * part.col - pad_w,
        )
    };
    let windows = part_windows::<INPUT_ROWS, 4>(parts, planes, origin, INPUT_SHIFTS);
    // SAFETY: AVX-512F is present, the assertions bound the stores, and the masks admit only
    // pixels inside the image.
    unsafe { transform_input_avx512(image, planes, &windows[..parts.len()], v_block) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_input_avx512(
    image: &[f32],
    planes: Planes,
    windows: &[PartWindows<INPUT_ROWS, 4>],
    v_block: &mut [f32],
) {
    let (even_index, odd_index) = (indices(&EVEN), indices(&ODD));
    let plane_len = planes.height * planes.width;
    let zero = _mm512_setzero_ps();
    for i in 0..planes.channels {
        let plane = image.as_ptr().wrapping_add(i * plane_len);
        if i + PREFETCH_CHANNELS < planes.channels {
            prefetch_rows(
                plane.wrapping_add(PREFETCH_CHANNELS * plane_len),
                planes,
                windows,
            );
        }
        // even[r], odd[r]: columns 2j and 2j + 1 of lane j's input row r; even_next[r],
        // odd_next[r]: columns 2j + 2 and 2j + 3.
        let mut even = [zero; INPUT_ROWS];
        let mut odd = [zero; INPUT_ROWS];
        let mut even_next = [zero; INPUT_ROWS];
        let mut odd_next = [zero; INPUT_ROWS];
        for r in 0..INPUT_ROWS {
            let mut loaded = [zero; 4];
            for window in windows {
                if !window.rows[r] {
                    continue;
                }
                let row = plane.wrapping_offset(window.offset + (r * planes.width) as isize);
                for (value, (mask, shift)) in
                    loaded.iter_mut().zip(window.masks.iter().zip(INPUT_SHIFTS))
                {
                    // SAFETY: the mask admits only columns inside this existing row.
                    *value =
                        unsafe { _mm512_mask_loadu_ps(*value, *mask, row.wrapping_offset(shift)) };
                }
            }
            even[r] = _mm512_permutex2var_ps(loaded[0], even_index, loaded[1]);
            odd[r] = _mm512_permutex2var_ps(loaded[0], odd_index, loaded[1]);
            even_next[r] = _mm512_permutex2var_ps(loaded[2], even_index, loaded[3]);
            odd_next[r] = _mm512_permutex2var_ps(loaded[2], odd_index, loaded[3]);
        }
        // B^T d for each of the four column streams, then (B^T d) B along the columns.
        let (even, odd) = (input_column(&even), input_column(&odd));
        let (even_next, odd_next) = (input_column(&even_next), input_column(&odd_next));
        let mut out = v_block.as_mut_ptr().wrapping_add(i * BLOCK_VALUES);
        for k in 0..INPUT_ROWS {
            let values = [
                _mm512_sub_ps(even[k], even_next[k]),
                _mm512_add_ps(odd[k], even_next[k]),
                _mm512_sub_ps(even_next[k], odd[k]),
                _mm512_sub_ps(odd[k], odd_next[k]),
            ];
            for value in values {
                // SAFETY: channel i's 24 positions lie inside `v_block`, whose length the
                // caller checked.
                unsafe { _mm512_storeu_ps(out, value) };
                out = out.wrapping_add(LANES);
            }
        }
    }
}

/// Number of channels between the current one and the one whose rows [`prefetch_rows`] loads.
#[cfg(target_arch = "x86_64")]
const PREFETCH_CHANNELS: usize = 4;

/// Prefetches the rows that the input transform will load from `plane`. A block reads 6 short
/// rows from each of dozens of planes, too many streams for the hardware prefetcher, and the
/// input of a weight gradient is usually no longer in the L2 cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn prefetch_rows(plane: *const f32, planes: Planes, windows: &[PartWindows<INPUT_ROWS, 4>]) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for window in windows {
        for r in 0..INPUT_ROWS {
            if !window.rows[r] {
                continue;
            }
            let row = plane.wrapping_offset(window.offset + (r * planes.width) as isize);
            // The windows span columns 0 to 33 from the row's start, 136 bytes, which touch up
            // to four cache lines: these columns lie on every one of them.
            for shift in [0, 16, 32, 33] {
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_offset(shift).cast());
            }
        }
    }
}

/// Column shifts of the input transform's four windows: the tiles' own column pairs in the
/// first two, and the pairs one tile to the right in the last two.
const INPUT_SHIFTS: [isize; 4] = [0, 16, 2, 18];

/// Returns the first output row and the output column of lane 0 of `part`.
#[cfg(target_arch = "x86_64")]
fn output_origin(part: &Part) -> (isize, isize) {
    ((TILE_ROWS * part.row) as isize, 2 * part.col)
}

/// Computes `B^T d` of F(4, 3) along six input rows, with the operations of the portable
/// `input_column` in `winograd.rs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn input_column(d: &[__m512; INPUT_ROWS]) -> [__m512; INPUT_ROWS] {
    let (two, four) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0));
    let a = _mm512_sub_ps(d[4], _mm512_mul_ps(four, d[2]));
    let b = _mm512_sub_ps(d[3], _mm512_mul_ps(four, d[1]));
    let c = _mm512_sub_ps(d[4], d[2]);
    let e = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
    [
        _mm512_add_ps(_mm512_mul_ps(four, _mm512_sub_ps(d[0], d[2])), c),
        _mm512_add_ps(a, b),
        _mm512_sub_ps(a, b),
        _mm512_add_ps(c, e),
        _mm512_sub_ps(c, e),
        _mm512_add_ps(
            _mm512_mul_ps(four, _mm512_sub_ps(d[1], d[3])),
            _mm512_sub_ps(d[5], d[3]),
        ),
    ]
}

/// Writes `A dY A^T` of one block's tiles for every output channel into `z_block`
/// (`[channel][position][lane]`). Lane `j` of `part` covers gradient rows `4 row..4 row + 4`
/// and columns `2 (col + j)..+2`. Pixels past the gradient read as zero, and lanes outside
/// every part hold the transform of zeros.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, a part lies past the block, or a buffer does not match the
/// shapes.
#[cfg(target_arch = "x86_64")]
pub fn transform_gradient_block(
    grad_output: &[f32],
    planes: Planes,
    parts: &[Part],
    z_block: &mut [f32],
) {
    assert!(available(), "this CPU has no AVX-512F");
    assert!(
        grad_output.len() >= planes.len(),
        "gradient smaller than its planes"
    );
    assert_eq!(z_block.len(), planes.channels * BLOCK_VALUES, "block size");
    let windows = part_windows::<TILE_ROWS, 2>(parts, planes, output_origin, [0, 16]);
    // SAFETY: AVX-512F is present, the assertions bound the stores, and the masks admit only
    // pixels inside the gradient.
    unsafe { transform_gradient_avx512(grad_output, planes, &windows[..parts.len()], z_block) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transform_gradient_avx512(
    grad_output: &[f32],
    planes: Planes,
    windows: &[PartWindows<TILE_ROWS, 2>],
    z_block: &mut [f32],
) {
    let (even_index, odd_index) = (indices(&EVEN), indices(&ODD));
    let plane_len = planes.height * planes.width;
    let zero = _mm512_setzero_ps();
    for o in 0..planes.channels {
        let plane = grad_output.as_ptr().wrapping_add(o * plane_len);
        let mut even = [zero; TILE_ROWS];
        let mut odd = [zero; TILE_ROWS];
        for r in 0..TILE_ROWS {
            let (mut low, mut high) = (zero, zero);
            for window in windows {
                if !window.rows[r] {
                    continue;
                }
                let row = plane.wrapping_offset(window.offset + (r * planes.width) as isize);
                // SAFETY: the masks admit only columns inside this existing row.
                unsafe {
                    low = _mm512_mask_loadu_ps(low, window.masks[0], row);
                    high = _mm512_mask_loadu_ps(high, window.masks[1], row.wrapping_add(16));
                }
            }
            even[r] = _mm512_permutex2var_ps(low, even_index, high);
            odd[r] = _mm512_permutex2var_ps(low, odd_index, high);
        }
        // A dY along the rows, then (A dY) A^T along the columns.
        let (even, odd) = (gradient_column(&even), gradient_column(&odd));
        let mut out = z_block.as_mut_ptr().wrapping_add(o * BLOCK_VALUES);
        for k in 0..INPUT_ROWS {
            let (p, q) = (even[k], odd[k]);
            for value in [p, _mm512_add_ps(p, q), _mm512_sub_ps(p, q), negate(q)] {
                // SAFETY: channel o's 24 positions lie inside `z_block`, whose length the
                // caller checked.
                unsafe { _mm512_storeu_ps(out, value) };
                out = out.wrapping_add(LANES);
            }
        }
    }
}

/// Computes `A dY` of F(4, 3) along four gradient rows, with the operations of the portable
/// `gradient_column` in `winograd.rs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn gradient_column(d: &[__m512; TILE_ROWS]) -> [__m512; INPUT_ROWS] {
    let (two, four) = (_mm512_set1_ps(2.0), _mm512_set1_ps(4.0));
    let even = _mm512_add_ps(d[0], d[2]);
    let odd = _mm512_add_ps(d[1], d[3]);
    let even_weighted = _mm512_add_ps(d[0], _mm512_mul_ps(four, d[2]));
    let odd_weighted = _mm512_mul_ps(two, _mm512_add_ps(d[1], _mm512_mul_ps(four, d[3])));
    [
        d[0],
        _mm512_add_ps(even, odd),
        _mm512_sub_ps(even, odd),
        _mm512_add_ps(even_weighted, odd_weighted),
        _mm512_sub_ps(even_weighted, odd_weighted),
        d[3],
    ]
}

/// Computes `A^T m` of F(4, 3) along six product rows, with the operations of the portable
/// `output_column` in `winograd.rs`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn output_column(m: [__m512; INPUT_ROWS]) -> [__m512; TILE_ROWS] {
    let (two, four, eight) = (
        _mm512_set1_ps(2.0),
        _mm512_set1_ps(4.0),
        _mm512_set1_ps(8.0),
    );
    let (inner_sum, inner_difference) = (_mm512_add_ps(m[1], m[2]), _mm512_sub_ps(m[1], m[2]));
    let (outer_sum, outer_difference) = (_mm512_add_ps(m[3], m[4]), _mm512_sub_ps(m[3], m[4]));
    [
        _mm512_add_ps(_mm512_add_ps(m[0], inner_sum), outer_sum),
        _mm512_add_ps(inner_difference, _mm512_mul_ps(two, outer_difference)),
        _mm512_add_ps(inner_sum, _mm512_mul_ps(four, outer_sum)),
        _mm512_add_ps(
            _mm512_add_ps(inner_difference, _mm512_mul_ps(eight, outer_difference)),
            m[5],
        ),
    ]
}

/// Writes `A^T M A` of one block's products `m_block` (`[channel][position][lane]`) into the
/// output planes at `output`, plus `bias[o]` in plane `o` when a bias is given: lane `j` of
/// `part` gives rows `4 row..4 row + 4` and columns `2 (col + j)..+2`, those that lie inside
/// the planes.
///
/// # Safety
///
/// `output` must point to `planes.len()` writable values, and no other thread may access the
/// pixels of these tiles while this runs.
///
/// # Panics
///
/// If the CPU lacks AVX-512F, a part lies past the block, or `m_block` does not match the
/// shapes.
#[cfg(target_arch = "x86_64")]
pub unsafe fn untransform_output_block(
    m_block: &[f32],
    parts: &[Part],
    (output, bias): (*mut f32, Option<&[f32]>),
    planes: Planes,
) {
    assert!(available(), "this CPU has no AVX-512F");
    assert_eq!(m_block.len(), planes.channels * BLOCK_VALUES, "block size");
    if let Some(bias) = bias {
        assert_eq!(bias.len(), planes.channels, "one bias value per channel");
    }
    let windows = part_windows::<TILE_ROWS, 2>(parts, planes, output_origin, [0, 16]);
    // SAFETY: AVX-512F is present, the assertion bounds the loads, the masks admit only pixels
    // inside the planes, and the caller vouches for `output`.
    unsafe { untransform_output_avx512(m_block, &windows[..parts.len()], (output, bias), planes) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn untransform_output_avx512(
    m_block: &[f32],
    windows: &[PartWindows<TILE_ROWS, 2>],
    (output, bias): (*mut f32, Option<&[f32]>),
    planes: Planes,
) {
    let (low_index, high_index) = (indices(&INTERLEAVE_LOW), indices(&INTERLEAVE_HIGH));
    let plane_len = planes.height * planes.width;
    for o in 0..planes.channels {
        let products = m_block.as_ptr().wrapping_add(o * BLOCK_VALUES);
        // SAFETY: channel o's 24 positions lie inside `m_block`, whose length the caller
        // checked.
        let values: [__m512; POSITIONS] = std::array::from_fn(|position| unsafe {
            _mm512_loadu_ps(products.add(position * LANES))
        });
        // A^T M along the rows, per column c: rows[r][c].
        let mut rows = [[_mm512_setzero_ps(); 4]; TILE_ROWS];
        for c in 0..4 {
            let column = output_column(std::array::from_fn(|r| values[r * 4 + c]));
            for (row, value) in rows.iter_mut().zip(column) {
                row[c] = value;
            }
        }
        // Columns: (s0 + s1 + s2, s1 - s2 - s3) for each tile, interleaved into a row.
        let plane = output.wrapping_add(o * plane_len);
        for (r, sums) in rows.iter().enumerate() {
            let mut left = _mm512_add_ps(_mm512_add_ps(sums[0], sums[1]), sums[2]);
            let mut right = _mm512_sub_ps(_mm512_sub_ps(sums[1], sums[2]), sums[3]);
            if let Some(bias) = bias {
                let value = _mm512_set1_ps(bias[o]);
                left = _mm512_add_ps(left, value);
                right = _mm512_add_ps(right, value);
            }
            let first_half = _mm512_permutex2var_ps(left, low_index, right);
            let second_half = _mm512_permutex2var_ps(left, high_index, right);
            for window in windows {
                if !window.rows[r] {
                    continue;
                }
                let row = plane.wrapping_offset(window.offset + (r * planes.width) as isize);
                // SAFETY: the masks admit only pixels of this part inside this existing row,
                // which the caller lets this task write.
                unsafe {
                    _mm512_mask_storeu_ps(row, window.masks[0], first_half);
                    _mm512_mask_storeu_ps(row.wrapping_add(16), window.masks[1], second_half);
                }
            }
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn transform_input_block(_: &[f32], _: Planes, _: (isize, isize), _: &[Part], _: &mut [f32]) {
    panic!("the AVX-512 transforms need an x86-64 CPU");
}

#[cfg(not(target_arch = "x86_64"))]
pub fn transform_gradient_block(_: &[f32], _: Planes, _: &[Part], _: &mut [f32]) {
    panic!("the AVX-512 transforms need an x86-64 CPU");
}

/// # Safety
///
/// Never runs: it panics on this architecture.
#[cfg(not(target_arch = "x86_64"))]
pub unsafe fn untransform_output_block(
    _: &[f32],
    _: &[Part],
    _: (*mut f32, Option<&[f32]>),
    _: Planes,
) {
    panic!("the AVX-512 transforms need an x86-64 CPU");
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    /// Computes [`window_mask`] from its definition, one lane at a time.
    fn lane_by_lane(part: &Part, first_tile: usize, start: isize, width: usize) -> __mmask16 {
        let mut mask = 0;
        for w in 0..LANES {
            let tile = first_tile + w / 2;
            let col = start + w as isize;
            if (part.first_lane..part.end_lane).contains(&tile)
                && (0..width as isize).contains(&col)
            {
                mask |= 1 << w;
            }
        }
        mask
    }

    #[test]
    fn window_mask_matches_lane_loop() {
        for first_lane in 0..LANES {
            for end_lane in first_lane..=LANES {
                let part = Part {
                    first_lane,
                    end_lane,
                    row: 0,
                    col: 0,
                };
                for first_tile in [0, 8] {
                    for start in -20..40 {
                        for width in [0, 1, 5, 16, 33] {
                            assert_eq!(
                                window_mask(&part, first_tile, start, width),
                                lane_by_lane(&part, first_tile, start, width),
                                "lanes {first_lane}..{end_lane}, tile {first_tile}, \
                                 start {start}, width {width}"
                            );
                        }
                    }
                }
            }
        }
    }
}
