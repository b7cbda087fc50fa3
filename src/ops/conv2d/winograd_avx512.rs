//! AVX-512 kernel for the per-position matrix products of the Winograd forward pass in `f32`.
//!
//! For each position, `m = u v` multiplies the transformed weights (`c_out x c_in`) by the
//! transformed inputs (`c_in x len`, one column per tile). A general GEMM packs both operands
//! on every call, which cost about a third of its time at these sizes. Here the weights are
//! packed once per convolution, in blocks of [`CHANNEL_BLOCK`] output channels, and the
//! transformed inputs are read in place: 32 consecutive tiles of one input channel are two
//! vector loads. Each step of the inner loop then does 16 fused multiply-adds into 16
//! accumulator registers (8 output channels by 32 tiles).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __mmask16, _mm512_fmadd_ps, _mm512_loadu_ps, _mm512_mask_storeu_ps,
    _mm512_maskz_loadu_ps, _mm512_set1_ps, _mm512_setzero_ps, _mm512_storeu_ps,
};

/// Output channels per block of packed weights and per kernel call.
pub const CHANNEL_BLOCK: usize = 8;

/// Tiles per kernel call: two 16-lane vectors.
const TILE_BLOCK: usize = 32;
const LANES: usize = 16;

/// Reports whether this CPU runs the kernel, and whether `c_out` fits its channel blocks.
pub fn applies(c_out: usize) -> bool {
    c_out.is_multiple_of(CHANNEL_BLOCK) && cpu_has_avx512()
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx512() -> bool {
    false
}

/// Rearranges position-major weights `u[(position * c_out + o) * c_in + i]` into blocks of
/// [`CHANNEL_BLOCK`] output channels:
/// `packed[((position * blocks + block) * c_in + i) * CHANNEL_BLOCK + j]` for `o = block * 8 + j`.
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
    let blocks = c_out / CHANNEL_BLOCK;
    let mut packed = vec![0.0f32; u.len()];
    for position in 0..positions {
        for o in 0..c_out {
            let (block, j) = (o / CHANNEL_BLOCK, o % CHANNEL_BLOCK);
            for i in 0..c_in {
                packed[((position * blocks + block) * c_in + i) * CHANNEL_BLOCK + j] =
                    u[(position * c_out + o) * c_in + i];
            }
        }
    }
    packed
}

/// Computes `m[(position * c_out + o) * len + t] = sum over i of
/// u[position, o, i] * v[(position * c_in + i) * len + t]` for every position, with `packed`
/// from [`pack_weights`].
///
/// # Panics
///
/// If [`applies`] is false for `c_out`, or a buffer does not match the shapes.
#[cfg(target_arch = "x86_64")]
pub fn multiply(
    packed: &[f32],
    v: &[f32],
    m: &mut [f32],
    (c_out, c_in, len): (usize, usize, usize),
) {
    assert!(
        applies(c_out),
        "the AVX-512 kernel does not apply to {c_out} output channels"
    );
    let positions = packed.len() / (c_out * c_in).max(1);
    assert_eq!(packed.len(), positions * c_out * c_in);
    assert_eq!(v.len(), positions * c_in * len);
    assert_eq!(m.len(), positions * c_out * len);
    // SAFETY: `applies` checked that the CPU has AVX-512F, and the assertions above that every
    // index the kernel forms lies inside its buffer.
    unsafe { multiply_avx512(packed, v, m, (c_out, c_in, len), positions) }
}

#[cfg(not(target_arch = "x86_64"))]
pub fn multiply(_: &[f32], _: &[f32], _: &mut [f32], (c_out, _, _): (usize, usize, usize)) {
    panic!("the AVX-512 kernel does not apply to {c_out} output channels on this CPU");
}

/// Lane mask of the first `count` lanes (at most 16).
#[cfg(target_arch = "x86_64")]
fn first_lanes(count: usize) -> __mmask16 {
    if count >= LANES {
        0xffff
    } else {
        ((1u32 << count) - 1) as __mmask16
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn multiply_avx512(
    packed: &[f32],
    v: &[f32],
    m: &mut [f32],
    (c_out, c_in, len): (usize, usize, usize),
    positions: usize,
) {
    let blocks = c_out / CHANNEL_BLOCK;
    for position in 0..positions {
        let weights = packed[position * c_out * c_in..].as_ptr();
        let inputs = v[position * c_in * len..].as_ptr();
        let outputs = m[position * c_out * len..].as_mut_ptr();
        for first_tile in (0..len).step_by(TILE_BLOCK) {
            let count = (len - first_tile).min(TILE_BLOCK);
            for block in 0..blocks {
                // SAFETY (for the whole block): tiles first_tile..first_tile + count lie in
                // 0..len, channels in 0..c_in and outputs in 0..c_out, which are inside the
                // buffers that `multiply` checked. Masked lanes are neither read nor written.
                unsafe {
                    let block_weights = weights.add(block * c_in * CHANNEL_BLOCK);
                    let mut sums = [[_mm512_setzero_ps(); 2]; CHANNEL_BLOCK];
                    if count == TILE_BLOCK {
                        for i in 0..c_in {
                            let row = inputs.add(i * len + first_tile);
                            let low = _mm512_loadu_ps(row);
                            let high = _mm512_loadu_ps(row.add(LANES));
                            accumulate(&mut sums, block_weights.add(i * CHANNEL_BLOCK), low, high);
                        }
                    } else {
                        let low_mask = first_lanes(count);
                        let high_mask = first_lanes(count.saturating_sub(LANES));
                        for i in 0..c_in {
                            let row = inputs.add(i * len + first_tile);
                            let low = _mm512_maskz_loadu_ps(low_mask, row);
                            let high = if high_mask != 0 {
                                _mm512_maskz_loadu_ps(high_mask, row.add(LANES))
                            } else {
                                _mm512_setzero_ps()
                            };
                            accumulate(&mut sums, block_weights.add(i * CHANNEL_BLOCK), low, high);
                        }
                    }
                    for (j, [low, high]) in sums.into_iter().enumerate() {
                        let row = outputs.add((block * CHANNEL_BLOCK + j) * len + first_tile);
                        if count == TILE_BLOCK {
                            _mm512_storeu_ps(row, low);
                            _mm512_storeu_ps(row.add(LANES), high);
                        } else {
                            _mm512_mask_storeu_ps(row, first_lanes(count), low);
                            let high_mask = first_lanes(count.saturating_sub(LANES));
                            if high_mask != 0 {
                                _mm512_mask_storeu_ps(row.add(LANES), high_mask, high);
                            }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Compares the kernel with a plain triple loop for tile counts around the block sizes.
    #[test]
    fn multiply_matches_plain_loops() {
        if !cpu_has_avx512() {
            eprintln!("skipped: this CPU has no AVX-512F");
            return;
        }
        let (positions, c_out, c_in) = (3, 16, 5);
        for len in [1, 15, 16, 17, 31, 32, 33, 64, 70] {
            let value = |index: usize| ((index * 7919) % 13) as f32 - 6.0;
            let u: Vec<f32> = (0..positions * c_out * c_in).map(value).collect();
            let v: Vec<f32> = (0..positions * c_in * len).map(|i| value(i + 3)).collect();
            let mut m = vec![f32::NAN; positions * c_out * len];
            let packed = pack_weights(&u, positions, c_out, c_in);
            multiply(&packed, &v, &mut m, (c_out, c_in, len));
            for position in 0..positions {
                for o in 0..c_out {
                    for t in 0..len {
                        let expected: f32 = (0..c_in)
                            .map(|i| {
                                u[(position * c_out + o) * c_in + i]
                                    * v[(position * c_in + i) * len + t]
                            })
                            .sum();
                        let actual = m[(position * c_out + o) * len + t];
                        assert_eq!(
                            actual, expected,
                            "len {len}, position {position}, o {o}, t {t}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn applies_needs_channel_blocks() {
        assert!(!applies(3));
        assert!(!applies(12));
    }
}
