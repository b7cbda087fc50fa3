//! Rayon kernels for zero padding and cropping of NCHW buffers.

use rayon::prelude::*;

use crate::element::Element;

/// Spatial offsets of a padding or crop: rows removed or added above and below, columns left
/// and right.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Margins {
    pub top: usize,
    pub bottom: usize,
    pub left: usize,
    pub right: usize,
}

/// Zero-pads every `(h, w)` plane of an `(n, c, h, w)` buffer by `margins`.
pub fn pad<T: Element>(x: &[T], dims: [usize; 4], margins: Margins) -> Vec<T> {
    let [n, c, h, w] = dims;
    let (h_out, w_out) = (
        h + margins.top + margins.bottom,
        w + margins.left + margins.right,
    );
    let mut out = vec![T::ZERO; n * c * h_out * w_out];
    if h_out * w_out == 0 {
        return out;
    }
    out.par_chunks_mut(h_out * w_out)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, x)| {
            for row in 0..h {
                let dst = (row + margins.top) * w_out + margins.left;
                out[dst..dst + w].copy_from_slice(&x[row * w..(row + 1) * w]);
            }
        });
    out
}

/// Copies the `(h_out, w_out)` window at `(top, left)` out of every plane of an `(n, c, h, w)`
/// buffer.
pub fn crop<T: Element>(
    x: &[T],
    dims: [usize; 4],
    top: usize,
    left: usize,
    h_out: usize,
    w_out: usize,
) -> Vec<T> {
    let [n, c, h, w] = dims;
    let mut out = vec![T::ZERO; n * c * h_out * w_out];
    if h_out * w_out == 0 {
        return out;
    }
    out.par_chunks_mut(h_out * w_out)
        .zip(x.par_chunks(h * w))
        .for_each(|(out, x)| {
            for row in 0..h_out {
                let src = (row + top) * w + left;
                out[row * w_out..(row + 1) * w_out].copy_from_slice(&x[src..src + w_out]);
            }
        });
    out
}
