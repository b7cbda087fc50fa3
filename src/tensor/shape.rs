//! Shapes and NumPy-style broadcasting.

use crate::error::{Error, Result};

/// The dims of a tensor, outermost first.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Shape(Vec<usize>);

impl Shape {
    pub fn new(dims: Vec<usize>) -> Self {
        Shape(dims)
    }

    pub fn dims(&self) -> &[usize] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn numel(&self) -> usize {
        numel(&self.0)
    }

    /// Returns the row-major strides, in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1; self.0.len()];
        for axis in (0..self.0.len().saturating_sub(1)).rev() {
            strides[axis] = strides[axis + 1] * self.0[axis + 1];
        }
        strides
    }
}

impl From<Vec<usize>> for Shape {
    fn from(dims: Vec<usize>) -> Self {
        Shape(dims)
    }
}

impl From<&[usize]> for Shape {
    fn from(dims: &[usize]) -> Self {
        Shape(dims.to_vec())
    }
}

impl<const R: usize> From<[usize; R]> for Shape {
    fn from(dims: [usize; R]) -> Self {
        Shape(dims.to_vec())
    }
}

impl From<&Shape> for Shape {
    fn from(shape: &Shape) -> Self {
        shape.clone()
    }
}

impl std::fmt::Display for Shape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// Returns the number of elements of a tensor with `dims` (1 for rank 0).
pub fn numel(dims: &[usize]) -> usize {
    dims.iter().product()
}

/// Returns the shape that `a` and `b` broadcast to under NumPy's rules.
///
/// Dims are aligned from the right; each pair must be equal or contain a 1.
pub fn broadcast_shape(op: &'static str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let rank = a.len().max(b.len());
    let mut out = vec![0; rank];
    for (axis, dim) in out.iter_mut().enumerate() {
        let da = dim_from_right(a, rank - 1 - axis);
        let db = dim_from_right(b, rank - 1 - axis);
        *dim = match (da, db) {
            (x, y) if x == y => x,
            (1, y) => y,
            (x, 1) => x,
            _ => {
                return Err(Error::shape(
                    op,
                    "operands cannot be broadcast together",
                    &[a, b],
                ))
            }
        };
    }
    Ok(out)
}

/// Returns dim `from_right` counted from the last axis, or 1 past the front.
fn dim_from_right(dims: &[usize], from_right: usize) -> usize {
    if from_right < dims.len() {
        dims[dims.len() - 1 - from_right]
    } else {
        1
    }
}

/// Returns the strides that read a tensor of `dims` as if it had `out_dims` (0 on broadcast axes).
pub fn broadcast_strides(dims: &[usize], out_dims: &[usize]) -> Vec<usize> {
    let own = Shape::from(dims).strides();
    let offset = out_dims.len() - dims.len();
    (0..out_dims.len())
        .map(|axis| {
            if axis < offset || dims[axis - offset] == 1 {
                0
            } else {
                own[axis - offset]
            }
        })
        .collect()
}
