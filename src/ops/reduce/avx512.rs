//! AVX-512 versions of the `f32` lane sums of batch normalisation: [`LANES`] partial sums in
//! f64, element `i` of a run going to lane `i % LANES`, as in [`super::cpu::lane_sums`].
//!
//! Each step loads one vector of 16 values, which feeds one half of the 32 lanes, and computes
//! the summed terms with the same operations in the same order as the portable closures. It
//! widens each vector of terms to two f64 vectors and adds them to two of the four
//! accumulators of each sum. The tail is loaded and added under a mask, so lanes past the end
//! keep their sums. The lanes are then added in lane order, so both versions give the same
//! bits for every result that is not NaN. A NaN result is NaN in both, but its sign and
//! payload may differ, because the processor keeps the NaN of whichever operand comes first.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::{
    __m512, __m512d, __mmask16, _mm256_castpd_ps, _mm512_add_pd, _mm512_castps512_ps256,
    _mm512_castps_pd, _mm512_cvtps_pd, _mm512_extractf64x4_pd, _mm512_mask_add_pd,
    _mm512_maskz_loadu_ps, _mm512_mul_pd, _mm512_mul_ps, _mm512_set1_ps, _mm512_setzero_pd,
    _mm512_storeu_pd, _mm512_sub_ps,
};

#[cfg(target_arch = "x86_64")]
use super::cpu::LANES;

/// Values per vector of `f32`.
#[cfg(target_arch = "x86_64")]
const WIDTH: usize = 16;

/// Reports whether this CPU runs these kernels.
pub fn available() -> bool {
    crate::ops::avx512_available()
}

/// Returns the sum of `values`.
///
/// # Panics
///
/// If the CPU lacks AVX-512F.
pub fn sum(values: &[f32]) -> f64 {
    assert!(available(), "this CPU has no AVX-512F");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present, and the loads stay inside `values`.
    unsafe {
        sum_avx512(values)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = values;
        unreachable!()
    }
}

/// Returns the sums of `values` and of their squares, with the squares taken in f64.
///
/// # Panics
///
/// If the CPU lacks AVX-512F.
pub fn value_sums(values: &[f32]) -> [f64; 2] {
    assert!(available(), "this CPU has no AVX-512F");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present, and the loads stay inside `values`.
    unsafe {
        value_sums_avx512(values)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = values;
        unreachable!()
    }
}

/// Returns the sums of `g` and of `g * (x - mean) * inv_std`, the products in `f32`.
///
/// # Panics
///
/// If the CPU lacks AVX-512F or the buffers differ in length.
pub fn gradient_sums(g: &[f32], x: &[f32], mean: f32, inv_std: f32) -> [f64; 2] {
    assert!(available(), "this CPU has no AVX-512F");
    assert_eq!(g.len(), x.len(), "buffers differ in length");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present, and the loads stay inside the equally long buffers.
    unsafe {
        gradient_sums_avx512(g, x, mean, inv_std)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mean, inv_std);
        unreachable!()
    }
}

/// Returns the sums of `r`, of `r * (x - mean) * inv_std` and of `r * g`, the products in
/// `f32`.
///
/// # Panics
///
/// If the CPU lacks AVX-512F or the buffers differ in length.
pub fn upstream_sums(r: &[f32], x: &[f32], g: &[f32], mean: f32, inv_std: f32) -> [f64; 3] {
    assert!(available(), "this CPU has no AVX-512F");
    assert!(
        r.len() == x.len() && r.len() == g.len(),
        "buffers differ in length"
    );
    #[cfg(target_arch = "x86_64")]
    // SAFETY: AVX-512F is present, and the loads stay inside the equally long buffers.
    unsafe {
        upstream_sums_avx512(r, x, g, mean, inv_std)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mean, inv_std);
        unreachable!()
    }
}

/// Partial sums of `K` quantities: four vectors of 8 f64 lanes each, lane `j` of vector `q`
/// containing lane `8 q + j` of [`LANES`].
#[cfg(target_arch = "x86_64")]
struct Lanes<const K: usize>([[__m512d; 4]; K]);

#[cfg(target_arch = "x86_64")]
impl<const K: usize> Lanes<K> {
    #[target_feature(enable = "avx512f")]
    fn new() -> Self {
        Lanes([[_mm512_setzero_pd(); 4]; K])
    }

    /// Adds the widened terms of one vector of 16 values: `half` 0 covers lanes 0 to 15, 1
    /// covers 16 to 31. Only the lanes set in `mask` change.
    #[target_feature(enable = "avx512f")]
    fn add(&mut self, half: usize, terms: [[__m512d; 2]; K], mask: __mmask16) {
        let (low_mask, high_mask) = (mask as u8, (mask >> 8) as u8);
        for (sums, [low, high]) in self.0.iter_mut().zip(terms) {
            let (a, b) = (2 * half, 2 * half + 1);
            sums[a] = if low_mask == u8::MAX {
                _mm512_add_pd(sums[a], low)
            } else {
                _mm512_mask_add_pd(sums[a], low_mask, sums[a], low)
            };
            sums[b] = if high_mask == u8::MAX {
                _mm512_add_pd(sums[b], high)
            } else {
                _mm512_mask_add_pd(sums[b], high_mask, sums[b], high)
            };
        }
    }

    /// Adds each quantity's lanes in lane order.
    #[target_feature(enable = "avx512f")]
    fn totals(&self) -> [f64; K] {
        self.0.map(|sums| {
            let mut lanes = [0.0f64; LANES];
            for (chunk, vector) in lanes.chunks_exact_mut(8).zip(sums) {
                // SAFETY: each chunk has exactly the 8 values that the store writes.
                unsafe { _mm512_storeu_pd(chunk.as_mut_ptr(), vector) };
            }
            lanes.iter().sum()
        })
    }
}

/// Widens the 16 values of `v` to two f64 vectors: values 0 to 7, then 8 to 15.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn widen(v: __m512) -> [__m512d; 2] {
    let high = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
    [
        _mm512_cvtps_pd(_mm512_castps512_ps256(v)),
        _mm512_cvtps_pd(high),
    ]
}

/// Calls `step(offset, mask, half)` for every vector of a run of `len` values: `offset` is the
/// index of its first value, `mask` marks the values inside the run, and `half` is the half of
/// the lanes that the vector covers.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn for_each_vector(len: usize, mut step: impl FnMut(usize, __mmask16, usize)) {
    let full = len - len % WIDTH;
    let mut offset = 0;
    while offset < full {
        step(offset, __mmask16::MAX, (offset / WIDTH) % 2);
        offset += WIDTH;
    }
    if offset < len {
        let mask = (1u32 << (len - offset)) as u16 - 1;
        step(offset, mask, (offset / WIDTH) % 2);
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_avx512(values: &[f32]) -> f64 {
    let mut lanes = Lanes::<1>::new();
    for_each_vector(values.len(), |offset, mask, half| {
        // SAFETY: the mask admits only values inside the buffer.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, values.as_ptr().add(offset)) };
        lanes.add(half, [widen(v)], mask);
    });
    lanes.totals()[0]
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn value_sums_avx512(values: &[f32]) -> [f64; 2] {
    let mut lanes = Lanes::<2>::new();
    for_each_vector(values.len(), |offset, mask, half| {
        // SAFETY: the mask admits only values inside the buffer.
        let v = unsafe { _mm512_maskz_loadu_ps(mask, values.as_ptr().add(offset)) };
        let [low, high] = widen(v);
        let squares = [_mm512_mul_pd(low, low), _mm512_mul_pd(high, high)];
        lanes.add(half, [[low, high], squares], mask);
    });
    lanes.totals()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn gradient_sums_avx512(g: &[f32], x: &[f32], mean: f32, inv_std: f32) -> [f64; 2] {
    let (mean, inv_std) = (_mm512_set1_ps(mean), _mm512_set1_ps(inv_std));
    let mut lanes = Lanes::<2>::new();
    for_each_vector(g.len(), |offset, mask, half| {
        // SAFETY: the mask admits only values inside the buffers.
        let (g, x) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, g.as_ptr().add(offset)),
                _mm512_maskz_loadu_ps(mask, x.as_ptr().add(offset)),
            )
        };
        let g_xhat = _mm512_mul_ps(_mm512_mul_ps(g, _mm512_sub_ps(x, mean)), inv_std);
        lanes.add(half, [widen(g), widen(g_xhat)], mask);
    });
    lanes.totals()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn upstream_sums_avx512(
    r: &[f32],
    x: &[f32],
    g: &[f32],
    mean: f32,
    inv_std: f32,
) -> [f64; 3] {
    let (mean, inv_std) = (_mm512_set1_ps(mean), _mm512_set1_ps(inv_std));
    let mut lanes = Lanes::<3>::new();
    for_each_vector(r.len(), |offset, mask, half| {
        // SAFETY: the mask admits only values inside the buffers.
        let (r, x, g) = unsafe {
            (
                _mm512_maskz_loadu_ps(mask, r.as_ptr().add(offset)),
                _mm512_maskz_loadu_ps(mask, x.as_ptr().add(offset)),
                _mm512_maskz_loadu_ps(mask, g.as_ptr().add(offset)),
            )
        };
        let r_xhat = _mm512_mul_ps(_mm512_mul_ps(r, _mm512_sub_ps(x, mean)), inv_std);
        let r_g = _mm512_mul_ps(r, g);
        lanes.add(half, [widen(r), widen(r_xhat), widen(r_g)], mask);
    });
    lanes.totals()
}

#[cfg(test)]
mod tests {
    use super::super::cpu::{lane_sum, lane_sums};
    use super::*;
    use crate::gradcheck::SeededNormal;

    /// Run lengths around every vector and lane boundary, and whole channel planes.
    const LENGTHS: [usize; 14] = [0, 1, 7, 8, 15, 16, 17, 31, 32, 33, 63, 65, 884, 1419];

    fn values(len: usize, seed: u64) -> Vec<f32> {
        let mut normal = SeededNormal::new(seed);
        (0..len).map(|_| (3.0 * normal.normal()) as f32).collect()
    }

    /// Returns false, with a note, when this CPU cannot run the kernels.
    fn runs_here() -> bool {
        if !available() {
            eprintln!("skipped: this CPU has no AVX-512F");
        }
        available()
    }

    fn assert_same_bits<const K: usize>(avx512: [f64; K], portable: [f64; K], len: usize) {
        let bits = |sums: [f64; K]| sums.map(f64::to_bits);
        assert_eq!(bits(avx512), bits(portable), "length {len}");
    }

    #[test]
    fn sums_match_portable_bits() {
        if !runs_here() {
            return;
        }
        let (mean, inv_std) = (0.25f32, 1.75f32);
        for len in LENGTHS {
            let (r, x, g) = (values(len, 1), values(len, 2), values(len, 3));
            assert_same_bits([sum(&x)], [lane_sum(&x, f64::from)], len);
            let squares = lane_sums(&x, &x, &x, |v, _, _| {
                let v = f64::from(v);
                [v, v * v]
            });
            assert_same_bits(value_sums(&x), squares, len);
            let gradient = lane_sums(&g, &x, &x, |g, x, _| {
                [f64::from(g), f64::from(g * (x - mean) * inv_std)]
            });
            assert_same_bits(gradient_sums(&g, &x, mean, inv_std), gradient, len);
            let upstream = lane_sums(&r, &x, &g, |r, x, g| {
                [
                    f64::from(r),
                    f64::from(r * (x - mean) * inv_std),
                    f64::from(r * g),
                ]
            });
            assert_same_bits(upstream_sums(&r, &x, &g, mean, inv_std), upstream, len);
        }
    }

    #[test]
    fn sums_close_to_exact() {
        if !runs_here() {
            return;
        }
        let x = values(1419, 4);
        let exact: f64 = x.iter().map(|&v| f64::from(v)).sum();
        let exact_squares: f64 = x.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        let [total, squares] = value_sums(&x);
        assert!((total - exact).abs() < 1e-9, "{total} vs {exact}");
        assert!((squares - exact_squares).abs() < 1e-9 * exact_squares);
    }

    #[test]
    fn padding_ignored_with_infinite_mean() {
        if !runs_here() {
            return;
        }
        // Past the end of a run the loads give zeros, whose term 0 (0 - inf) is NaN. Only the
        // lanes inside the run may take it in: each real term is -inf, so the sum is -inf.
        let (g, x) = (vec![1.0f32; 20], vec![0.5f32; 20]);
        let [_, g_xhat] = gradient_sums(&g, &x, f32::INFINITY, 1.0);
        assert_eq!(g_xhat, f64::NEG_INFINITY);
    }
}
