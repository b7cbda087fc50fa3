//! Rayon kernels for element-wise and broadcasting binary ops.
//!
//! Outputs are written into fresh allocations that are not zero-filled first, because each
//! kernel here writes every output element once (its SAFETY comment says why).

use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::element::Element;
use crate::ops::{vectorized, CHUNK};
use crate::tensor::shape::broadcast_strides;

/// Allocates `len` elements and passes them, uninitialised, to `fill`.
///
/// # Safety
///
/// `fill` must write every element of the slice it receives.
pub(crate) unsafe fn filled_vec<T: Element>(
    len: usize,
    fill: impl FnOnce(&mut [MaybeUninit<T>]),
) -> Vec<T> {
    let mut out = Vec::with_capacity(len);
    fill(&mut out.spare_capacity_mut()[..len]);
    // SAFETY: the caller guarantees that `fill` initialised all `len` elements.
    unsafe { out.set_len(len) };
    out
}

/// Applies `f` to every element, [`CHUNK`] elements per task.
pub fn map<T: Element>(input: &[T], f: impl Fn(T) -> T + Sync) -> Vec<T> {
    map_in_chunks(input, CHUNK, f)
}

/// Elements per task of [`map_in_chunks`] for functions that call the C math library, such as
/// `tanh`, which take several nanoseconds per element: a generator's 3-channel output then
/// splits into tasks for both threads instead of running as one.
pub const LIBM_CHUNK: usize = 1024;

/// Applies `f` to every element, `chunk` elements per task.
pub fn map_in_chunks<T: Element>(input: &[T], chunk: usize, f: impl Fn(T) -> T + Sync) -> Vec<T> {
    // SAFETY: the chunks of `out` and `input` have equal lengths, so every element is written.
    unsafe {
        filled_vec(input.len(), |out| {
            out.par_chunks_mut(chunk)
                .zip(input.par_chunks(chunk))
                .for_each(|(out, input)| {
                    vectorized(|| {
                        for (o, &x) in out.iter_mut().zip(input) {
                            o.write(f(x));
                        }
                    })
                })
        })
    }
}

/// Applies `f` to pairs of elements of two equally long buffers.
pub fn zip_map<T: Element>(a: &[T], b: &[T], f: impl Fn(T, T) -> T + Sync) -> Vec<T> {
    assert_eq!(a.len(), b.len(), "zip_map operands differ in length");
    // SAFETY: the chunks of `out`, `a` and `b` have equal lengths, so every element is written.
    unsafe {
        filled_vec(a.len(), |out| {
            out.par_chunks_mut(CHUNK)
                .zip(a.par_chunks(CHUNK).zip(b.par_chunks(CHUNK)))
                .for_each(|(out, (a, b))| {
                    vectorized(|| {
                        for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
                            o.write(f(x, y));
                        }
                    })
                })
        })
    }
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
    if numel == 0 {
        return Vec::new();
    }
    let a_strides = broadcast_strides(a_dims, out_dims);
    let b_strides = broadcast_strides(b_dims, out_dims);
    let rank = out_dims.len();
    let row_len = out_dims[rank - 1];
    let (a_step, b_step) = (a_strides[rank - 1], b_strides[rank - 1]);
    let rows_per_task = (CHUNK / row_len.max(1)).max(1);

    // SAFETY: the tasks split `out` into whole rows of `row_len`, and each row loop below writes
    // all `row_len` elements of its row.
    unsafe {
        filled_vec(numel, |out| {
            out.par_chunks_mut(rows_per_task * row_len)
                .enumerate()
                .for_each(|(task, out)| {
                    let first_row = task * rows_per_task;
                    for (local_row, out_row) in out.chunks_mut(row_len).enumerate() {
                        // Decompose the row index into the outer dims to find each operand's
                        // offset.
                        let mut row = first_row + local_row;
                        let (mut a_offset, mut b_offset) = (0, 0);
                        for axis in (0..rank - 1).rev() {
                            let index = row % out_dims[axis];
                            row /= out_dims[axis];
                            a_offset += index * a_strides[axis];
                            b_offset += index * b_strides[axis];
                        }
                        // Each operand either runs along the row (step 1) or repeats one value
                        // (step 0); one loop per case lets the compiler vectorise it.
                        match (a_step, b_step) {
                            (1, 1) => {
                                let (a, b) = (
                                    &a[a_offset..a_offset + row_len],
                                    &b[b_offset..b_offset + row_len],
                                );
                                for ((o, &x), &y) in out_row.iter_mut().zip(a).zip(b) {
                                    o.write(f(x, y));
                                }
                            }
                            (1, 0) => {
                                let (a, y) = (&a[a_offset..a_offset + row_len], b[b_offset]);
                                for (o, &x) in out_row.iter_mut().zip(a) {
                                    o.write(f(x, y));
                                }
                            }
                            (0, 1) => {
                                let (x, b) = (a[a_offset], &b[b_offset..b_offset + row_len]);
                                for (o, &y) in out_row.iter_mut().zip(b) {
                                    o.write(f(x, y));
                                }
                            }
                            _ => {
                                for (j, o) in out_row.iter_mut().enumerate() {
                                    o.write(f(a[a_offset + j * a_step], b[b_offset + j * b_step]));
                                }
                            }
                        }
                    }
                })
        })
    }
}
