//! Rayon kernels for reductions.

use rayon::prelude::*;

use super::avx512;
use crate::element::{as_f32, Element};
use crate::tensor::Shape;

/// Number of summed elements per task when one output element has many inputs.
///
/// Partial sums of fixed-size chunks are added in chunk order, so the result does not depend on
/// the thread count.
const REDUCE_CHUNK: usize = 1 << 13;

/// Independent partial sums in [`lane_sum`]: enough to hide the latency of f64 additions and to
/// fill a vector register.
pub(crate) const LANES: usize = 32;

/// Sums `f(v)` over `values` in f64, in [`LANES`] interleaved partial sums that are added at the
/// end. One running sum would make every addition wait for the previous one; the order here is
/// fixed by the length alone, so results stay deterministic.
#[inline]
pub(crate) fn lane_sum<T: Element>(values: &[T], f: impl Fn(T) -> f64) -> f64 {
    let mut lanes = [0.0f64; LANES];
    let chunks = values.chunks_exact(LANES);
    let tail = chunks.remainder();
    for chunk in chunks {
        for (lane, &v) in lanes.iter_mut().zip(chunk) {
            *lane += f(v);
        }
    }
    for (lane, &v) in lanes.iter_mut().zip(tail) {
        *lane += f(v);
    }
    lanes.iter().sum()
}

/// Sums the `K` values of `f(a[i], b[i], c[i])` over three equally long buffers in one pass,
/// each in [`LANES`] partial sums added in the same order as [`lane_sum`]'s.
#[inline]
pub(crate) fn lane_sums<T: Element, const K: usize>(
    a: &[T],
    b: &[T],
    c: &[T],
    f: impl Fn(T, T, T) -> [f64; K],
) -> [f64; K] {
    debug_assert!(a.len() == b.len() && a.len() == c.len());
    let mut lanes = [[0.0f64; LANES]; K];
    let mut add = |a: &[T], b: &[T], c: &[T]| {
        for (lane, ((&a, &b), &c)) in a.iter().zip(b).zip(c).enumerate() {
            for (sums, value) in lanes.iter_mut().zip(f(a, b, c)) {
                sums[lane] += value;
            }
        }
    };
    let tail = a.len() - a.len() % LANES;
    let blocks = a[..tail].chunks_exact(LANES).zip(b.chunks_exact(LANES));
    for ((a, b), c) in blocks.zip(c.chunks_exact(LANES)) {
        add(a, b, c);
    }
    add(&a[tail..], &b[tail..], &c[tail..]);
    lanes.map(|sums| sums.iter().sum())
}

/// Sums `x` (dims `x_dims`) down to `target` dims, which have the same rank and are 1 on every
/// reduced axis.
pub fn sum_to<T: Element>(x: &[T], x_dims: &[usize], target: &[usize]) -> Vec<T> {
    debug_assert_eq!(x_dims.len(), target.len());
    let x_strides = Shape::from(x_dims).strides();
    let kept: Vec<(usize, usize)> = (0..x_dims.len())
        .filter(|&axis| target[axis] == x_dims[axis])
        .map(|axis| (x_dims[axis], x_strides[axis]))
        .collect();
    // Reduced axes that are contiguous in memory merge into one, so that runs along the
    // innermost axis are as long as possible (a channel's whole plane for a bias gradient).
    // The flat order of the reduced elements stays the same.
    let mut reduced: Vec<(usize, usize)> = Vec::new();
    for axis in (0..x_dims.len()).filter(|&axis| target[axis] != x_dims[axis]) {
        let (dim, stride) = (x_dims[axis], x_strides[axis]);
        match reduced.last_mut() {
            Some(outer) if outer.1 == dim * stride => *outer = (outer.0 * dim, stride),
            _ => reduced.push((dim, stride)),
        }
    }
    let out_numel: usize = target.iter().product();
    let reduce_count: usize = reduced.iter().map(|&(dim, _)| dim).product();
    let chunks = reduce_count.div_ceil(REDUCE_CHUNK).max(1);

    // One task per (output element, chunk of its inputs).
    let partials: Vec<T> = (0..out_numel * chunks)
        .into_par_iter()
        .map(|task| {
            let (out_index, chunk) = (task / chunks, task % chunks);
            let base = offset_of(out_index, &kept);
            let start = chunk * REDUCE_CHUNK;
            let end = (start + REDUCE_CHUNK).min(reduce_count);
            sum_range(x, base, &reduced, start, end)
        })
        .collect();
    partials
        .chunks(chunks)
        .map(|chunk_sums| T::from_f64(chunk_sums.iter().map(|v| v.to_f64()).sum()))
        .collect()
}

/// Returns the buffer offset of flat index `index` over the axes `(dim, stride)`.
fn offset_of(mut index: usize, axes: &[(usize, usize)]) -> usize {
    let mut offset = 0;
    for &(dim, stride) in axes.iter().rev() {
        offset += (index % dim) * stride;
        index /= dim;
    }
    offset
}

/// Sums the elements with reduce indices `start..end` over `reduced` axes, from `base`.
fn sum_range<T: Element>(
    x: &[T],
    base: usize,
    reduced: &[(usize, usize)],
    start: usize,
    end: usize,
) -> T {
    if reduced.is_empty() {
        return x[base];
    }
    let rank = reduced.len();
    let mut index = vec![0usize; rank];
    let mut rest = start;
    for axis in (0..rank).rev() {
        index[axis] = rest % reduced[axis].0;
        rest /= reduced[axis].0;
    }
    let mut offset = base + offset_of(start, reduced);
    let (inner_dim, inner_stride) = reduced[rank - 1];
    // Accumulate in f64 so a long f32 reduction keeps f32 accuracy in its result.
    let mut total = 0.0f64;
    let mut remaining = end - start;
    while remaining > 0 {
        // Run along the innermost reduced axis, then carry into the outer ones.
        let run = (inner_dim - index[rank - 1]).min(remaining);
        if inner_stride == 1 {
            let values = &x[offset..offset + run];
            total += match as_f32(values) {
                Some(values) if avx512::available() => avx512::sum(values),
                _ => lane_sum(values, |v| v.to_f64()),
            };
        } else {
            for step in 0..run {
                total += x[offset + step * inner_stride].to_f64();
            }
        }
        remaining -= run;
        offset += run * inner_stride;
        index[rank - 1] += run;
        let mut axis = rank - 1;
        while index[axis] == reduced[axis].0 && axis > 0 {
            index[axis] = 0;
            offset -= reduced[axis].0 * reduced[axis].1;
            index[axis - 1] += 1;
            offset += reduced[axis - 1].1;
            axis -= 1;
        }
    }
    T::from_f64(total)
}

/// Computes the L2 norm over axis 1 of an `(n, c, h, w)` buffer, giving `(n, 1, h, w)`.
pub fn channel_norm<T: Element>(x: &[T], dims: [usize; 4]) -> Vec<T> {
    let [n, c, h, w] = dims;
    let plane = h * w;
    let mut out = vec![T::ZERO; n * plane];
    out.par_chunks_mut(plane.max(1))
        .enumerate()
        .for_each(|(batch, out)| {
            let sample = &x[batch * c * plane..(batch + 1) * c * plane];
            for channel in 0..c {
                let values = &sample[channel * plane..(channel + 1) * plane];
                for (o, &v) in out.iter_mut().zip(values) {
                    *o += v * v;
                }
            }
            for o in out.iter_mut() {
                *o = o.sqrt();
            }
        });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums `x` (dims `dims`) down to `target` with one f64 sum per output element.
    fn naive_sum_to(x: &[f64], dims: [usize; 4], target: [usize; 4]) -> Vec<f64> {
        let mut out = vec![0.0; target.iter().product()];
        let strides = Shape::from(&target[..]).strides();
        for (flat, &value) in x.iter().enumerate() {
            let mut rest = flat;
            let mut index = 0;
            for axis in (0..4).rev() {
                let i = rest % dims[axis];
                rest /= dims[axis];
                if target[axis] == dims[axis] {
                    index += i * strides[axis];
                }
            }
            out[index] += value;
        }
        out
    }

    #[test]
    fn sum_to_matches_naive_sums() {
        let dims = [2, 3, 4, 5];
        let x: Vec<f64> = (0..120).map(|i| ((i * 37) % 11) as f64 - 5.0).collect();
        // Contiguous reduced axes (merged), a kept axis between two reduced ones, and every
        // axis reduced.
        let targets = [
            [1, 3, 1, 1],
            [2, 3, 1, 1],
            [1, 1, 4, 5],
            [2, 1, 4, 1],
            [1, 1, 1, 1],
        ];
        for target in targets {
            let expected = naive_sum_to(&x, dims, target);
            assert_eq!(sum_to(&x, &dims, &target), expected, "target {target:?}");
            // In f32 the runs go through the AVX-512 sum where the CPU has it. The values are
            // small integers, so every sum is exact in both types.
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let sums: Vec<f64> = sum_to(&x32, &dims, &target)
                .into_iter()
                .map(f64::from)
                .collect();
            assert_eq!(sums, expected, "f32, target {target:?}");
        }
    }
}
