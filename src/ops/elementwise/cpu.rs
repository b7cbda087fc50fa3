//! Rayon kernels for element-wise and broadcasting binary ops.

use rayon::prelude::*;

use crate::element::Element;
use crate::ops::CHUNK;
use crate::tensor::shape::broadcast_strides;

/// Applies `f` to every element.
pub fn map<T: Element>(input: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    let mut out = vec![T::ZERO; input.len()];
    out.par_chunks_mut(CHUNK)
        .zip(input.par_chunks(CHUNK))
        .for_each(|(out, input)| {
            for (o, &x) in out.iter_mut().zip(input) {
                *o = f(x);
            }
        });
    out
}

/// Applies `f` to pairs of elements of two equally long buffers.
pub fn zip_map<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    debug_assert_eq!(a.len(), b.len());
    let mut out = vec![T::ZERO; a.len()];
    out.par_chunks_mut(CHUNK)
        .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
        .for_each(|(out, (a, b))| {
            for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                *o = f(x, y);
            }
        });
    out
}

/// Applies `f` with broadcasting: `a` has `a_dims`, `b` has `b_dims`, the output `out_dims`.
///
/// The output is walked row by row along its last axis, where each operand advances by 1 or,
/// when broadcast along that axis, by 0.
pub fn broadcast_map<T: Element>(
    a: &[T],
    a_dims: &[usize],
    b: &[T],
    b_dims: &[usize],
    out_dims: &[usize],
    f: impl Fn(T, T) -> T + Sync,
) -> Vec<T> {
    let numel: usize = out_dims.iter().product();
    let mut out = vec![T::ZERO; numel];
    if numel == 0 {
        return out;
    }
    let a_strides = broadcast_strides(a_dims, out_dims);
    let b_strides = broadcast_strides(b_dims, out_dims);
    let rank = out_dims.len();
    let row_len = out_dims[rank - 1];
    let a_step = a_strides[rank - 1];
    let b_step = b_strides[rank - 1];
    let rows_per_task = (CHUNK / row_len.max(1)).max(1);

    out.par_chunks_mut(rows_per_task * row_len)
        .enumerate()
        .for_each(|(task, out)| {
            let first_row = task * rows_per_task;
            for (local_row, out_row) in out.chunks_mut(row_len).enumerate() {
                // Decompose the row index into the outer dims to find each operand's offset.
                let mut row = first_row + local_row;
                let (mut a_offset, mut b_offset) = (0, 0);
                for axis in (0..rank - 1).rev() {
                    let index = row % out_dims[axis];
                    row /= out_dims[axis];
                    a_offset += index * a_strides[axis];
                    b_offset += index * b_strides[axis];
                }
                for (j, o) in out_row.iter_mut().enumerate() {
                    *o = f(a[a_offset + j * a_step], b[b_offset + j * b_step]);
                }
            }
        });
    out
}
